//! One subscriber's push, from its encrypted body to its outcome, across retries; and what the
//! pushes of one batch share.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;
use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;

use super::{AlertPush, BACKOFF_BASE, BACKOFF_CAP, MAX_DEFERRALS};
use crate::{
    push::{
        sender::{Headers, Push, SendResult},
        store::{self, DeliveryStatus, PushOutcome, Target, Verdict},
    },
    telemetry::metrics,
};

/// What the pushes of one batch share.
pub(super) struct BatchRun {
    pub(super) alert: Arc<AlertPush>,
    pub(super) job: store::JobKey,
    pub(super) step: store::Step,
    /// To the batch's outcome writer. Unbounded, yet bounded: every message carries one of the
    /// process's `push_max_in_flight` permits, released when the writer takes it.
    pub(super) results: mpsc::UnboundedSender<Finished>,
    pub(super) shutdown: CancellationToken,
    pub(super) max_attempts: u32,
}

pub(super) struct Finished {
    pub(super) outcome: PushOutcome,
    /// Released when the writer takes the outcome (none for a push never sent).
    pub(super) _permit: Option<OwnedSemaphorePermit>,
}

/// One subscriber's push, from encryption to its outcome, across retries.
pub(super) struct SubscriberPush {
    pub(super) run: Arc<BatchRun>,
    pub(super) target: Target,
    pub(super) body: bytes::Bytes,
    pub(super) attempts: i16,
    pub(super) deferrals: i16,
    pub(super) from_retry: bool,
    /// The alert's revision its body carries.
    pub(super) revision: i32,
    pub(super) started: Instant,
    pub(super) permit: Option<OwnedSemaphorePermit>,
}

impl Push for SubscriberPush {
    fn endpoint(&self) -> &str {
        &self.target.endpoint
    }

    fn origin(&self) -> &str {
        &self.target.origin
    }

    fn host(&self) -> &str {
        &self.target.host
    }

    fn body(&self) -> bytes::Bytes {
        self.body.clone()
    }

    fn headers(&self) -> Option<Headers> {
        let alert = &self.run.alert;
        if alert.cancelled.is_cancelled() || self.run.shutdown.is_cancelled() {
            return None;
        }
        let ttl = alert.ttl_now();
        (ttl > 0).then(|| Headers { ttl, urgency: alert.urgency, topic: Some(alert.topic.clone()) })
    }

    /// Logs the outcome, or queues another try of what can be retried while the alert is worth
    /// delivering.
    fn finish(mut self: Box<Self>, attempt: Option<SendResult>) {
        let Some(attempt) = attempt else {
            // Not sent, or not confirmed: why decides what the log says.
            if self.run.alert.cancelled.is_cancelled() {
                return self.record(
                    DeliveryStatus::Skipped,
                    None,
                    None,
                    Some("the alert was retracted".into()),
                );
            }
            if self.run.shutdown.is_cancelled() {
                // No outcome: whoever resumes the batch (or the retry, after its lease) sends it.
                return;
            }
            return self.record(DeliveryStatus::Expired, None, None, Some("the alert's TTL passed".into()));
        };
        if let SendResult::Deferred { after, error } = attempt {
            self.deferrals += 1;
            if self.deferrals > MAX_DEFERRALS {
                let error = format!("{error} (gave up after {MAX_DEFERRALS} put-offs)");
                return self.give_up(DeliveryStatus::Failed, None, None, error);
            }
            return self.retry_after(after, None, error);
        }
        self.attempts += 1;
        let latency = Some(self.started.elapsed());
        match attempt {
            SendResult::Sent(code) => {
                metrics::push_latency(self.started.elapsed());
                self.record(DeliveryStatus::Sent, Some(code), latency, None)
            }
            SendResult::Gone(code) => self.record(
                DeliveryStatus::Gone,
                Some(code),
                latency,
                Some("the subscription no longer exists".into()),
            ),
            SendResult::Failed { status, error } => {
                self.record(DeliveryStatus::Failed, status, latency, Some(error))
            }
            SendResult::VapidRejected { status, error } => {
                self.record(DeliveryStatus::Failed, Some(status), latency, Some(error))
            }
            SendResult::Retry { status, after, error } => {
                let attempts = self.attempts;
                if attempts as u32 >= self.run.max_attempts {
                    let error = format!("{error} (gave up after {attempts} attempts)");
                    return self.give_up(DeliveryStatus::Failed, status, latency, error);
                }
                self.retry_after(after.unwrap_or_else(|| backoff(attempts as u32)), status, error)
            }
            SendResult::Deferred { .. } => unreachable!("handled above"),
        }
    }
}

impl SubscriberPush {
    /// Queues the next try in `delay`, or logs `expired` when the alert's TTL ends first.
    fn retry_after(self: Box<Self>, delay: Duration, http: Option<u16>, error: String) {
        let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        if at >= self.run.alert.expires_at {
            let error = format!("{error}; the TTL ends before the next try");
            return self.give_up(DeliveryStatus::Expired, http, None, error);
        }
        let mut outcome = self.outcome(Verdict::Retry, http, None, Some(error));
        outcome.retry_at = Some(at);
        self.send_outcome(outcome);
    }

    /// Logs a final `failed` or `expired` that the push service caused: it counts toward
    /// deactivating the subscription.
    fn give_up(
        self: Box<Self>,
        status: DeliveryStatus,
        http: Option<u16>,
        latency: Option<Duration>,
        error: String,
    ) {
        let mut outcome = self.outcome(status.into(), http, latency, Some(error));
        outcome.service_failure = true;
        self.send_outcome(outcome);
    }

    pub(super) fn record(
        self: Box<Self>,
        status: DeliveryStatus,
        http: Option<u16>,
        latency: Option<Duration>,
        error: Option<String>,
    ) {
        let outcome = self.outcome(status.into(), http, latency, error);
        self.send_outcome(outcome);
    }

    fn outcome(
        &self,
        status: Verdict,
        http: Option<u16>,
        latency: Option<Duration>,
        error: Option<String>,
    ) -> PushOutcome {
        PushOutcome {
            subscription_id: self.target.id,
            status,
            http_status: http.map(|h| h as i16),
            attempts: self.attempts,
            push_host: self.target.host.clone(),
            latency_ms: latency.map(|l| l.as_millis().min(i32::MAX as u128) as i32),
            error,
            retry_at: None,
            deferrals: self.deferrals,
            service_failure: false,
            from_retry: self.from_retry,
            revision: self.revision,
            answered_at: Some(Utc::now()),
        }
    }

    fn send_outcome(self: Box<Self>, outcome: PushOutcome) {
        let SubscriberPush { run, permit, .. } = *self;
        // Fails only when the writer has stopped on a database error; the batch then ends in
        // error and its lease hands it to another try.
        let _ = run.results.send(Finished { outcome, _permit: permit });
    }
}

/// Exponential backoff with full jitter: uniformly up to base·2ⁿ, capped.
pub(super) fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE.saturating_mul(1 << attempt.min(10)).min(BACKOFF_CAP);
    let ms = rand::rng().random_range(ceiling.as_millis() as u64 / 2..=ceiling.as_millis() as u64);
    Duration::from_millis(ms)
}
