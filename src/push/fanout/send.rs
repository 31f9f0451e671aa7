//! A batch's (and a retry round's) way from its targets to pushes queued with the sender:
//! encrypted in chunks on the encryption threads, each push holding an in-flight permit.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    AlertPush, CRYPTO_CHUNK, Fanout, RETRY_CLAIM, RETRY_POLL,
    delivery::{BatchRun, Finished, SubscriberPush},
    writer::write_outcomes,
};
use crate::{
    push::{
        ece, payload,
        sender::{Push, SendResult},
        store::{self, DeliveryStatus, PushOutcome, Target},
    },
    telemetry::metrics,
};

impl Fanout {
    /// A run of pushes of one alert (a batch, or a round of retries) and its outcome writer.
    pub(super) fn start_run(
        &self,
        alert: &Arc<AlertPush>,
        job: store::JobKey,
        step: store::Step,
        shutdown: &CancellationToken,
    ) -> (Arc<BatchRun>, tokio::task::JoinHandle<anyhow::Result<()>>) {
        let (results, rx) = mpsc::unbounded_channel::<Finished>();
        let deactivation = self.settings.deactivation;
        let writer =
            tokio::spawn(write_outcomes(self.pool.clone(), self.flushes.clone(), job, rx, deactivation));
        let run = Arc::new(BatchRun {
            alert: alert.clone(),
            job,
            step,
            results,
            shutdown: shutdown.clone(),
            max_attempts: self.settings.max_attempts,
        });
        (run, writer)
    }

    /// Encrypts and submits the pushes of one run until they are all on their way, the alert is
    /// retracted or the process stops. Waits only for CPU (encryption) and for in-flight
    /// permits, which pushes to push services that are down, paused or on probation never hold.
    pub(super) async fn send(
        &self,
        run: &Arc<BatchRun>,
        targets: impl Iterator<Item = (Target, Prior)>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let stop = run.alert.cancelled.clone();
        // Targets are moved to an encryption thread and on into their push, never cloned.
        let mut targets = targets.into_iter();
        let mut text = run.alert.clone();
        'chunks: loop {
            if stop.is_cancelled() || shutdown.is_cancelled() {
                break;
            }
            let chunk: Vec<(Target, Prior)> = targets.by_ref().take(CRYPTO_CHUNK).collect();
            if chunk.is_empty() {
                break;
            }
            // Corrected since the run began: the rest of it carries the new text, so a reader
            // whose push was still pending never sees the original.
            if text.outdated()
                && let Some(newer) = self.alert(&run.job, &run.step).await?
            {
                text = newer;
            }
            let (payload, revision) = (text.payload.clone(), text.revision);
            let encrypted = self
                .encryptor
                .run(move || encrypt_chunk(chunk, &payload))
                .await
                .ok_or_else(|| anyhow::anyhow!("encrypting a chunk of pushes panicked"))?;
            // Submitted together (see `Sender::submit_all`); when the in-flight limit stops us
            // midway, what is gathered goes first, since waiting on permits while holding
            // unsent pushes could wait forever under a small limit.
            let mut ready: Vec<Box<dyn Push>> = Vec::with_capacity(CRYPTO_CHUNK);
            for ((target, prior), body) in encrypted {
                let permit = match self.in_flight.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        self.sender.submit_all(ready.drain(..));
                        tokio::select! {
                            p = self.in_flight.clone().acquire_owned() => p.expect("semaphore never closes"),
                            _ = stop.cancelled() => break 'chunks,
                            _ = shutdown.cancelled() => break 'chunks,
                        }
                    }
                };
                let mut delivery = Box::new(SubscriberPush {
                    run: run.clone(),
                    target,
                    body: bytes::Bytes::new(),
                    attempts: prior.attempts,
                    deferrals: prior.deferrals,
                    from_retry: prior.from_retry,
                    revision,
                    started: Instant::now(),
                    permit: Some(permit),
                });
                let body = match body {
                    Ok(b) => b,
                    Err(e) => {
                        delivery.record(DeliveryStatus::Failed, None, None, Some(format!("encryption: {e}")));
                        continue;
                    }
                };
                // Asked last, so that an admitted push is always submitted.
                match self.sender.admit(&delivery.target.origin, &delivery.target.host) {
                    Ok(()) => {
                        delivery.body = body;
                        ready.push(delivery);
                    }
                    Err(wait) => {
                        let error = format!("{} is unreachable or asked us to wait", delivery.target.host);
                        delivery.finish(Some(SendResult::Deferred { after: wait, error }));
                    }
                }
            }
            self.sender.submit_all(ready);
        }
        Ok(())
    }

    /// The retry worker: claims due retries (of any alert, queued by any process) and sends
    /// them as runs per alert, without waiting for their answers before the next claim.
    pub(super) async fn retry_due(self: Arc<Self>, shutdown: CancellationToken) {
        // Longer than one try can take, so that a claim outlives its pushes in flight.
        let lease = self.settings.lease.max(self.settings.try_time + Duration::from_secs(10));
        while !shutdown.is_cancelled() {
            let due = match store::claim_retries(&self.pool, RETRY_CLAIM, lease).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming push retries failed; trying again");
                    Vec::new()
                }
            };
            let full = due.len() as i64 == RETRY_CLAIM;
            let mut by_step: HashMap<store::JobKey, Vec<store::DueRetry>> = HashMap::new();
            for d in due {
                by_step.entry(d.job).or_default().push(d);
            }
            for (job, due) in by_step {
                if let Err(e) = self.retry_step(job, due, &shutdown).await {
                    tracing::warn!(error = %e, alert_id = %job.alert_id, step = job.step, "sending push retries failed; they are taken up again after their lease");
                }
            }
            if !full {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_POLL) => {}
                }
            }
        }
    }

    /// Sends one step's claimed retries (and follow-ups), or ends them all when the step no
    /// longer goes out.
    pub(super) async fn retry_step(
        &self,
        job: store::JobKey,
        due: Vec<store::DueRetry>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let (alert_id, this_step) = (job.alert_id, store::RetriesOf::Step(job.step));
        // The newest revision any of them saw: the claim read it with the rows.
        let step = due.iter().map(|d| d.step).max_by_key(|s| s.alert_revision).expect("claimed retries");
        let Some(alert) = self.alert(&job, &step).await? else {
            store::close_retries(
                &self.pool,
                alert_id,
                this_step,
                DeliveryStatus::Skipped,
                "the alert no longer exists",
            )
            .await?;
            return Ok(());
        };
        if alert.cancelled.is_cancelled() {
            let why = "the alert was retracted";
            store::close_retries(
                &self.pool,
                alert_id,
                store::RetriesOf::AllButRetraction,
                DeliveryStatus::Skipped,
                why,
            )
            .await?;
            return Ok(());
        }
        if alert.expires_at <= Utc::now() {
            let why = "the alert's TTL passed before the next try";
            store::close_retries(&self.pool, alert_id, this_step, DeliveryStatus::Expired, why).await?;
            return Ok(());
        }
        let (run, writer) = self.start_run(&alert, job, step, shutdown);
        let mut targets = Vec::with_capacity(due.len());
        for d in due {
            let prior = Prior { attempts: d.attempts, deferrals: d.deferrals, from_retry: true };
            match d.target {
                Some(t) => targets.push((t, prior)),
                // Unsubscribed or deactivated while it waited.
                None => {
                    let outcome = PushOutcome {
                        subscription_id: d.subscription_id,
                        status: DeliveryStatus::Skipped.into(),
                        attempts: d.attempts,
                        error: Some("the subscription was removed before the next try".into()),
                        from_retry: true,
                        revision: run.alert.revision,
                        ..PushOutcome::default()
                    };
                    let _ = run.results.send(Finished { outcome, _permit: None });
                }
            }
        }
        let sent = self.send(&run, targets.into_iter(), shutdown).await;
        drop(run);
        // The answers are not waited for: the claim's lease covers them.
        self.finishing.spawn(async move {
            if let Ok(Err(e)) = writer.await {
                tracing::warn!(error = %e, "writing push retry outcomes failed");
            }
        });
        sent
    }
}

/// What a push brings from earlier tries (nothing, for a batch's first try).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Prior {
    pub(super) attempts: i16,
    pub(super) deferrals: i16,
    pub(super) from_retry: bool,
}

/// Encrypts a chunk's bodies (on an encryption thread). They share one allocation, each a
/// `Bytes` view of it freed with the last: one malloc per chunk instead of one ~1 KiB malloc per
/// push. A body kept for a retry keeps its chunk's allocation, ~70 KiB, alive; the in-flight
/// limit bounds how many. Each subscriber's plaintext (its own receipt in the shared payload) is
/// written into one reused buffer.
pub(super) fn encrypt_chunk(
    chunk: Vec<(Target, Prior)>,
    payload: &payload::Template,
) -> Vec<((Target, Prior), Result<bytes::Bytes, String>)> {
    let cpu = thread_cpu_time();
    let mut plaintext = Vec::with_capacity(payload.max_len());
    let mut bodies = bytes::BytesMut::with_capacity(ece::body_len(payload.max_len()) * chunk.len());
    let encrypted = chunk
        .into_iter()
        .map(|item| {
            let t = &item.0;
            let keys = (<[u8; 65]>::try_from(t.p256dh.as_slice()), <[u8; 16]>::try_from(t.auth.as_slice()));
            let body = match keys {
                (Ok(p), Ok(a)) => {
                    payload.write(t.id, &mut plaintext);
                    bodies.resize(ece::body_len(plaintext.len()), 0);
                    match ece::encrypt_to(&p, &a, &plaintext, &mut bodies) {
                        Ok(()) => Ok(bodies.split().freeze()),
                        Err(e) => {
                            bodies.clear();
                            Err(e.to_string())
                        }
                    }
                }
                _ => Err("stored keys have the wrong length".to_string()),
            };
            (item, body)
        })
        .collect();
    if let (Some(before), Some(after)) = (cpu, thread_cpu_time()) {
        metrics::push_encryption_cpu(after.saturating_sub(before));
    }
    encrypted
}

/// CPU time this thread has used (not wall time: a preempted thread is not charged).
fn thread_cpu_time() -> Option<Duration> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).ok()?;
    Some(Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32))
}
