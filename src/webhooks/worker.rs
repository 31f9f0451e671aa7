//! The delivery worker of one process: claims due deliveries, sends each as a signed POST, and
//! records the attempt. Its places (`webhook_max_in_flight`), its time limit
//! (`webhook_timeout_secs`) and its HTTP client are its own: a receiver that hangs costs this
//! worker a place for at most the time limit, and nothing else in the process waits for it.
//!
//! Requests go through [`Outbound`], the SSRF-safe client for URLs admins give us: an endpoint
//! that resolves to a private address is refused unless the operator allowed its host
//! (`outbound_private_hosts`), and a redirect is never followed (the answer to a POST).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::Utc;
use http::{HeaderName, HeaderValue};
use rand::Rng;
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    net::{OutRequest, Outbound},
    untrusted::SafeText,
};

use super::{
    signature,
    store::{self, AttemptOutcome, Claimed, Policy},
};
use crate::config::Settings;

/// How often the worker looks for due deliveries: bounds how long after its commit an event
/// waits before its first try.
const POLL: Duration = Duration::from_millis(200);
/// Events expanded into deliveries per statement: each makes one row per subscribed endpoint.
const EXPAND_BATCH: i64 = 16;
/// Statements of [`EXPAND_BATCH`] events per look; the rest wait for the next look.
const EXPAND_ROUNDS: usize = 8;
/// The longest wait between two tries of one delivery.
const MAX_BACKOFF_SECS: f64 = 3600.0;
/// How much of a receiver's error answer is kept with the attempt.
const MAX_ERROR_CHARS: usize = 300;
/// Most bytes of a receiver's answer read. Receivers answer with a few bytes; a longer answer
/// counts as a failed attempt (the reading stops at the bound).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What the worker needs from the settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub max_in_flight: usize,
    /// Attempts in flight to one endpoint, per process.
    pub per_endpoint: usize,
    pub retry_first_secs: f64,
    pub retry_window_secs: f64,
    pub disable_after_secs: f64,
}

impl Limits {
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            timeout: Duration::from_secs(s.webhook_timeout_secs),
            max_in_flight: s.webhook_max_in_flight,
            per_endpoint: s.webhook_per_endpoint,
            retry_first_secs: s.webhook_retry_first_secs as f64,
            retry_window_secs: s.webhook_retry_window_secs as f64,
            disable_after_secs: s.webhook_disable_after_secs as f64,
        }
    }

    /// A claim outlives the attempt's time limit (and the write of its outcome): a delivery is
    /// claimed again only once the process that claimed it has certainly given up on it.
    fn lease_secs(&self) -> f64 {
        self.timeout.as_secs_f64() + 5.0
    }

    /// Seconds before try `attempts + 1`: the first retry after `retry_first_secs`, doubling,
    /// at most an hour, with ±10 % jitter so that a receiver back from an outage is not hit by
    /// every queued event at the same instant.
    fn backoff_secs(&self, attempts: i32) -> f64 {
        let exp = (attempts.max(1) - 1).min(30);
        let base = (self.retry_first_secs * 2f64.powi(exp)).min(MAX_BACKOFF_SECS);
        base * rand::rng().random_range(0.9..1.1)
    }
}

pub struct Worker {
    pool: PgPool,
    limits: Limits,
    http: Outbound,
    tracker: TaskTracker,
    /// Attempts in flight per endpoint in this process.
    in_flight: Arc<Mutex<HashMap<i64, usize>>>,
    places: Arc<Semaphore>,
    /// Rung when an attempt ends: its endpoint may take another delivery now, not at the next
    /// look (which would hold every endpoint to `webhook_per_endpoint` deliveries per `POLL`).
    freed: Notify,
}

impl Worker {
    pub fn new(pool: PgPool, settings: &Settings, http: Outbound, tracker: TaskTracker) -> Self {
        let limits = Limits::from_settings(settings);
        Self {
            pool,
            http,
            tracker,
            in_flight: Arc::default(),
            places: Arc::new(Semaphore::new(limits.max_in_flight)),
            limits,
            freed: Notify::new(),
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let shutdown = &shutdown;
        loop {
            // Events first: their deliveries are due at once. Bounded per look, so that a stream
            // of events never keeps the worker from its deliveries or from noticing shutdown.
            for _ in 0..EXPAND_ROUNDS {
                if shutdown.is_cancelled() {
                    break;
                }
                match store::expand(&this.pool, EXPAND_BATCH).await {
                    Ok(n) if n == EXPAND_BATCH => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook worker could not expand events; retrying");
                        break;
                    }
                }
            }
            let free = this.places.available_permits();
            let mut more = false;
            if free > 0 {
                let in_flight: Vec<(i64, i64)> = {
                    let m = this.in_flight.lock().expect("not poisoned");
                    m.iter().map(|(id, n)| (*id, *n as i64)).collect()
                };
                match store::claim(
                    &this.pool,
                    free as i64,
                    this.limits.per_endpoint as i64,
                    &in_flight,
                    this.limits.lease_secs(),
                )
                .await
                {
                    Ok(claimed) => {
                        more = claimed.len() == free;
                        for c in claimed {
                            this.start(c, shutdown.clone()).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook worker could not claim deliveries; retrying")
                    }
                }
            }
            if more {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = this.freed.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    async fn start(self: &Arc<Self>, c: Claimed, shutdown: CancellationToken) {
        let permit = self.places.clone().acquire_owned().await.expect("the semaphore is never closed");
        *self.in_flight.lock().expect("not poisoned").entry(c.endpoint_id).or_default() += 1;
        let this = self.clone();
        self.tracker.spawn(async move {
            // On shutdown an attempt in flight is dropped and handed back at once (not when the
            // lease runs out), so that shutting down never waits for a slow receiver; the
            // receiver may then get it twice, with the same webhook-id.
            tokio::select! {
                outcome = this.attempt(&c) => this.finish(&c, &outcome).await,
                _ = shutdown.cancelled() => {
                    if let Err(e) = store::release(&this.pool, c.id).await {
                        tracing::warn!(error = %e, "could not hand back a webhook delivery; its lease will");
                    }
                }
            }
            let mut m = this.in_flight.lock().expect("not poisoned");
            if let Some(n) = m.get_mut(&c.endpoint_id) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&c.endpoint_id);
                }
            }
            drop(permit);
            // A permit is stored when the loop is not waiting yet: no end goes unnoticed.
            this.freed.notify_one();
        });
    }

    /// One signed POST.
    async fn attempt(&self, c: &Claimed) -> AttemptOutcome {
        let timestamp = Utc::now().timestamp();
        let mut secrets = vec![c.secret.as_str()];
        secrets.extend(c.previous_secret.as_deref());
        let sig = signature::header(&secrets, &c.message_id, timestamp, c.body.as_bytes());
        let header = |v: &str| HeaderValue::from_str(v).expect("ASCII we made");
        let started = Instant::now();
        let Ok(url) = url::Url::parse(&c.url) else {
            return AttemptOutcome {
                http_status: None,
                latency_ms: 0,
                error: Some(SafeText::new("the stored URL does not parse")),
            };
        };
        let req = OutRequest::post(url, c.body.clone())
            .header(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(HeaderName::from_static("webhook-id"), header(&c.message_id))
            .header(HeaderName::from_static("webhook-timestamp"), header(&timestamp.to_string()))
            .header(HeaderName::from_static("webhook-signature"), header(&sig))
            .max_bytes(MAX_ANSWER_BYTES)
            .timeout(self.limits.timeout);
        let (http_status, error) = match self.http.fetch(req).await {
            Ok(r) if r.status.is_success() => (Some(r.status.as_u16()), None),
            Ok(r) => {
                // A little of the receiver's answer helps whoever runs it; made safe, since a
                // NUL in it would keep the attempt from being recorded at all.
                let snippet = SafeText::from_bytes(&r.body, MAX_ERROR_CHARS);
                let mut error = format!("answered HTTP {}", r.status.as_u16());
                if r.status.is_redirection() {
                    error.push_str(" (a redirect, which is not followed: register the final URL)");
                } else if !snippet.is_empty() {
                    error.push_str(": ");
                    error.push_str(snippet.as_str());
                }
                (Some(r.status.as_u16()), Some(SafeText::bounded(&error, MAX_ERROR_CHARS + 100)))
            }
            Err(e) => (None, Some(SafeText::new(e.to_string()))),
        };
        let latency_ms = started.elapsed().as_millis().min(u32::MAX as u128) as u32;
        let result = if error.is_none() { "delivered" } else { "failed" };
        ::metrics::counter!("sondakika_webhook_attempts_total", "result" => result).increment(1);
        AttemptOutcome { http_status, latency_ms, error }
    }

    async fn finish(&self, c: &Claimed, o: &AttemptOutcome) {
        let policy = Policy {
            retry_in_secs: self.limits.backoff_secs(c.attempts),
            retry_window_secs: self.limits.retry_window_secs,
            disable_after_secs: self.limits.disable_after_secs,
        };
        match store::record(&self.pool, c, o, policy).await {
            Ok(true) => tracing::warn!(
                endpoint_id = c.endpoint_id,
                "webhook endpoint disabled: every attempt failed for webhook_disable_after_secs"
            ),
            Ok(false) => {}
            // The lease runs out and the delivery is tried again: at least once, never lost.
            Err(e) => {
                tracing::warn!(error = %e, endpoint_id = c.endpoint_id, "could not record a webhook attempt")
            }
        }
        if let Some(error) = &o.error {
            tracing::info!(endpoint_id = c.endpoint_id, message_id = %c.message_id, attempt = c.attempts, %error, "webhook attempt failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let l = Limits {
            timeout: Duration::from_secs(10),
            max_in_flight: 1,
            per_endpoint: 1,
            retry_first_secs: 5.0,
            retry_window_secs: 86400.0,
            disable_after_secs: 1.0,
        };
        for (attempts, base) in [(1, 5.0), (2, 10.0), (3, 20.0), (20, 3600.0), (i32::MAX, 3600.0)] {
            let b = l.backoff_secs(attempts);
            assert!(b >= base * 0.9 && b <= base * 1.1, "try {attempts}: {b} s, want about {base}");
        }
    }
}
