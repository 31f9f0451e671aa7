//! The delivery worker of one process: claims due deliveries, sends each as a signed POST, and
//! records the attempt. Its places (`webhook_max_in_flight`), its time limit
//! (`webhook_timeout_secs`) and its HTTP client are its own: a receiver that hangs costs this
//! worker a place for at most the time limit, and nothing else in the process waits for it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::Utc;
use rand::Rng;
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    signature,
    store::{self, Claimed, Outcome, Policy},
};
use crate::config::Settings;

/// How often the worker looks for due deliveries: bounds how long after its commit an event
/// waits before its first try.
const POLL: Duration = Duration::from_millis(200);
/// Attempts in flight to one endpoint, per process: a slow endpoint holds at most this many of
/// the worker's places, and a receiver is not flooded after an outage.
pub const PER_ENDPOINT: usize = 4;
/// The longest wait between two tries of one delivery.
const MAX_BACKOFF_SECS: f64 = 3600.0;
/// How much of a receiver's error answer is kept with the attempt.
const MAX_ERROR_CHARS: usize = 300;

/// What the worker needs from the settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub max_in_flight: usize,
    pub retry_first_secs: f64,
    pub retry_window_secs: f64,
    pub disable_after_secs: f64,
}

impl Limits {
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            timeout: Duration::from_secs(s.webhook_timeout_secs),
            max_in_flight: s.webhook_max_in_flight,
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
    http: reqwest::Client,
    tracker: TaskTracker,
    /// Attempts in flight per endpoint in this process.
    in_flight: Arc<Mutex<HashMap<i64, usize>>>,
    places: Arc<Semaphore>,
}

impl Worker {
    pub fn new(pool: PgPool, settings: &Settings, tracker: TaskTracker) -> anyhow::Result<Self> {
        let limits = Limits::from_settings(settings);
        let http = reqwest::Client::builder()
            .timeout(limits.timeout)
            .connect_timeout(limits.timeout)
            // A receiver's redirect is not followed: the URL an admin registered is the one
            // events go to (and a redirect could point anywhere, a private address included).
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sondakika-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            pool,
            http,
            tracker,
            in_flight: Arc::default(),
            places: Arc::new(Semaphore::new(limits.max_in_flight)),
            limits,
        })
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        loop {
            let free = this.places.available_permits();
            let mut more = false;
            if free > 0 {
                let busy: Vec<i64> = {
                    let m = this.in_flight.lock().expect("not poisoned");
                    m.iter().filter(|(_, n)| **n >= PER_ENDPOINT).map(|(id, _)| *id).collect()
                };
                match store::claim(
                    &this.pool,
                    free as i64,
                    PER_ENDPOINT as i64,
                    &busy,
                    this.limits.lease_secs(),
                )
                .await
                {
                    Ok(claimed) => {
                        more = claimed.len() == free;
                        for c in claimed {
                            this.start(c).await;
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
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    async fn start(self: &Arc<Self>, c: Claimed) {
        let permit = self.places.clone().acquire_owned().await.expect("the semaphore is never closed");
        *self.in_flight.lock().expect("not poisoned").entry(c.endpoint_id).or_default() += 1;
        let this = self.clone();
        self.tracker.spawn(async move {
            let outcome = this.attempt(&c).await;
            this.finish(&c, &outcome).await;
            let mut m = this.in_flight.lock().expect("not poisoned");
            if let Some(n) = m.get_mut(&c.endpoint_id) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&c.endpoint_id);
                }
            }
            drop(permit);
        });
    }

    /// One signed POST.
    async fn attempt(&self, c: &Claimed) -> Outcome {
        let timestamp = Utc::now().timestamp();
        let mut secrets = vec![c.secret.as_str()];
        secrets.extend(c.previous_secret.as_deref());
        let sig = signature::header(&secrets, &c.message_id, timestamp, c.body.as_bytes());
        let started = Instant::now();
        let sent = self
            .http
            .post(&c.url)
            .header("content-type", "application/json")
            .header("webhook-id", &c.message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", sig)
            .body(c.body.clone())
            .send()
            .await;
        let (http_status, error) = match sent {
            Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None),
            Ok(r) => {
                let status = r.status();
                // A little of the receiver's answer helps whoever runs it; bounded in time and size.
                let text =
                    tokio::time::timeout(Duration::from_secs(1), r.text()).await.ok().and_then(Result::ok);
                let snippet: String = text.unwrap_or_default().chars().take(MAX_ERROR_CHARS).collect();
                let snippet = snippet.trim();
                let mut error = format!("answered HTTP {}", status.as_u16());
                if !snippet.is_empty() {
                    error.push_str(": ");
                    error.push_str(snippet);
                }
                (Some(status.as_u16()), Some(error))
            }
            Err(e) => (None, Some(describe(e, self.limits.timeout))),
        };
        let latency_ms = started.elapsed().as_millis().min(u32::MAX as u128) as u32;
        let result = if error.is_none() { "delivered" } else { "failed" };
        ::metrics::counter!("sondakika_webhook_attempts_total", "result" => result).increment(1);
        Outcome { http_status, latency_ms, error }
    }

    async fn finish(&self, c: &Claimed, o: &Outcome) {
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

/// A failure in words, without the URL (a receiver's URL often holds a secret token).
fn describe(e: reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", timeout.as_secs());
    }
    if e.is_connect() {
        let mut cause = std::error::Error::source(&e);
        let mut deepest = None;
        while let Some(c) = cause {
            deepest = Some(c.to_string());
            cause = c.source();
        }
        return format!("could not connect: {}", deepest.unwrap_or_else(|| "connection failed".into()));
    }
    if e.is_redirect() {
        return "answered with a redirect, which is not followed: register the final URL".into();
    }
    e.without_url().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let l = Limits {
            timeout: Duration::from_secs(10),
            max_in_flight: 1,
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
