//! The durable fan-out: every matching subscriber gets one push per alert, across crashes and
//! across processes.
//!
//! Progress lives in PostgreSQL. A published alert queues a job; any process plans it into
//! batches (ranges of subscription ids); workers in every process claim batches with a lease
//! (`for update skip locked`). A batch's subscribers who already have an outcome in the log are
//! skipped, so a batch taken over after a crash (lease expired) resumes where it stopped. Outcomes
//! are written in multi-row statements every [`FLUSH_EVERY`] or [`FLUSH_ROWS`]: a crash can repeat
//! only the pushes in flight or finished within that window.
//!
//! Within a batch: encryption runs on the blocking pool in chunks (CPU work off the async
//! threads), sends are bounded globally and per push-service origin, and retries back off with
//! jitter while the alert's TTL lasts. A retraction seen by the hub stops a batch within a
//! second; what was not sent is logged `skipped`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use rand::Rng;
use sqlx::PgPool;
use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    PushSettings, ece, payload,
    sender::{Attempt, Message, Sender},
    store::{self, Batch, Outcome, Target},
};
use crate::{
    alerts::store as alerts,
    stream::{hub::Hub, protocol::EventKind},
    telemetry::metrics,
};

const FLUSH_EVERY: Duration = Duration::from_millis(100);
const FLUSH_ROWS: usize = 500;
/// Targets encrypted per trip to the blocking pool.
const CRYPTO_CHUNK: usize = 64;
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// What every send of one alert shares, built once per process.
struct AlertPush {
    payload: bytes::Bytes,
    topics: Vec<String>,
    urgency: &'static str,
    expires_at: DateTime<Utc>,
    cancelled: CancellationToken,
}

impl AlertPush {
    fn ttl_now(&self) -> u32 {
        (self.expires_at - Utc::now()).num_seconds().max(0) as u32
    }
}

pub struct Fanout {
    pool: PgPool,
    sender: Arc<Sender>,
    settings: PushSettings,
    /// Bounds pushes in flight in this process (memory: one encrypted body each).
    in_flight: Arc<Semaphore>,
    alerts: Mutex<HashMap<Uuid, Arc<AlertPush>>>,
}

impl Fanout {
    pub fn new(pool: PgPool, sender: Arc<Sender>, settings: PushSettings) -> Arc<Self> {
        Arc::new(Self {
            pool,
            sender,
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            settings,
            alerts: Mutex::new(HashMap::new()),
        })
    }

    /// Runs the planner and `workers` batch workers until shutdown.
    pub async fn run(self: Arc<Self>, hub: Arc<Hub>, shutdown: CancellationToken) {
        let wake = Arc::new(tokio::sync::Notify::new());
        let mut tasks = JoinSet::new();
        tasks.spawn(listen(self.pool.clone(), wake.clone(), shutdown.clone()));
        tasks.spawn(self.clone().watch_retractions(hub, shutdown.clone()));
        for _ in 0..self.settings.workers {
            tasks.spawn(self.clone().work(wake.clone(), shutdown.clone()));
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Cancels in-process work on an alert as soon as the hub hears of its retraction.
    async fn watch_retractions(self: Arc<Self>, hub: Arc<Hub>, shutdown: CancellationToken) {
        let mut rx = hub.subscribe(None).receiver;
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = rx.recv() => e,
            };
            match event {
                Ok(e) if e.kind == EventKind::Retract => {
                    if let Some(a) = self.alerts.lock().expect("alerts lock").get(&e.alert_id) {
                        a.cancelled.cancel();
                    }
                }
                Ok(_) => {}
                // Missed events: ask the database which of the alerts being sent were retracted.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let ids: Vec<Uuid> = self.alerts.lock().expect("alerts lock").keys().copied().collect();
                    let retracted: Vec<Uuid> = sqlx::query_scalar(
                        "select id from alerts where id = any($1) and status = 'retracted'",
                    )
                    .bind(&ids)
                    .fetch_all(&self.pool)
                    .await
                    .unwrap_or_default();
                    let cache = self.alerts.lock().expect("alerts lock");
                    for id in retracted {
                        if let Some(a) = cache.get(&id) {
                            a.cancelled.cancel();
                        }
                    }
                }
                Err(_) => return,
            }
        }
    }

    async fn work(self: Arc<Self>, wake: Arc<tokio::sync::Notify>, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let did = match self.step(&shutdown).await {
                Ok(did) => did,
                Err(e) => {
                    tracing::warn!(error = %e, "push fan-out step failed; retrying");
                    false
                }
            };
            if !did {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }

    /// Plans a queued job or works one batch. False when there was nothing to do.
    async fn step(&self, shutdown: &CancellationToken) -> anyhow::Result<bool> {
        if let Some(alert_id) = store::plan_next_job(&self.pool, self.settings.batch_size as i64).await? {
            tracing::info!(%alert_id, "push fan-out planned");
            return Ok(true);
        }
        let Some(batch) = store::claim_batch(&self.pool, self.settings.lease).await? else {
            return Ok(false);
        };
        self.process(batch, shutdown).await?;
        Ok(true)
    }

    async fn alert(&self, id: Uuid) -> anyhow::Result<Option<Arc<AlertPush>>> {
        if let Some(a) = self.alerts.lock().expect("alerts lock").get(&id) {
            return Ok(Some(a.clone()));
        }
        let mut conn = self.pool.acquire().await?;
        let Some(alert) = alerts::get(&mut conn, id).await? else { return Ok(None) };
        let push = Arc::new(AlertPush {
            payload: payload::build(&alert).into(),
            urgency: match alert.urgency.as_str() {
                "very-low" => "very-low",
                "low" => "low",
                "normal" => "normal",
                _ => "high",
            },
            expires_at: alert.expires_at(),
            topics: alert.topics.clone(),
            cancelled: CancellationToken::new(),
        });
        if alert.status == "retracted" {
            push.cancelled.cancel();
        }
        let mut cache = self.alerts.lock().expect("alerts lock");
        // Forget alerts past their TTL: their batches close as expired without a payload.
        cache.retain(|_, a| a.expires_at > Utc::now() - chrono::Duration::hours(1));
        Ok(Some(cache.entry(id).or_insert(push).clone()))
    }

    async fn process(&self, batch: Batch, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let Some(alert) = self.alert(batch.alert_id).await? else {
            store::finish_batch(&self.pool, &batch).await?;
            return Ok(());
        };
        if alert.cancelled.is_cancelled() {
            store::close_remaining(&self.pool, &batch, &alert.topics, "skipped", "the alert was retracted")
                .await?;
            return Ok(store::finish_batch(&self.pool, &batch).await?);
        }
        if alert.expires_at <= Utc::now() {
            store::close_remaining(
                &self.pool,
                &batch,
                &alert.topics,
                "expired",
                "the alert's TTL passed before sending",
            )
            .await?;
            return Ok(store::finish_batch(&self.pool, &batch).await?);
        }
        let targets = store::targets(&self.pool, &batch, &alert.topics).await?;
        let started = Instant::now();
        let count = targets.len();

        // Outcomes go to one writer that flushes them in batches.
        let (tx, rx) = mpsc::channel::<Outcome>(FLUSH_ROWS * 2);
        let writer = tokio::spawn(write_outcomes(self.pool.clone(), batch.clone(), rx));
        let lease = tokio::spawn(keep_lease(self.pool.clone(), batch.clone(), self.settings.lease));

        let mut sends = JoinSet::new();
        let stop = alert.cancelled.clone();
        let topic: Option<Arc<str>> = self.settings.topic.as_deref().map(Arc::from);
        // Targets are moved into the blocking pool and on into their send task, never cloned.
        let mut targets = targets.into_iter();
        'chunks: loop {
            if stop.is_cancelled() || shutdown.is_cancelled() {
                break;
            }
            let chunk: Vec<Target> = targets.by_ref().take(CRYPTO_CHUNK).collect();
            if chunk.is_empty() {
                break;
            }
            let payload = alert.payload.clone();
            let encrypted = tokio::task::spawn_blocking(move || {
                let cpu = thread_cpu_time();
                let encrypted = chunk
                    .into_iter()
                    .map(|t| {
                        let body = match (
                            <[u8; 65]>::try_from(t.p256dh.as_slice()),
                            <[u8; 16]>::try_from(t.auth.as_slice()),
                        ) {
                            (Ok(p), Ok(a)) => ece::encrypt(&p, &a, &payload).map_err(|e| e.to_string()),
                            _ => Err("stored keys have the wrong length".to_string()),
                        };
                        (t, body)
                    })
                    .collect::<Vec<_>>();
                if let (Some(before), Some(after)) = (cpu, thread_cpu_time()) {
                    metrics::push_encryption_cpu(after.saturating_sub(before));
                }
                encrypted
            })
            .await?;
            for (target, body) in encrypted {
                let permit = tokio::select! {
                    p = self.in_flight.clone().acquire_owned() => p.expect("semaphore never closes"),
                    _ = stop.cancelled() => break 'chunks,
                    _ = shutdown.cancelled() => break 'chunks,
                };
                let body = match body {
                    Ok(b) => bytes::Bytes::from(b),
                    Err(e) => {
                        let _ = tx
                            .send(outcome(target, "failed", None, 0, None, Some(format!("encryption: {e}"))))
                            .await;
                        continue;
                    }
                };
                let sender = self.sender.clone();
                let alert = alert.clone();
                let tx = tx.clone();
                let max_attempts = self.settings.max_attempts;
                let topic = topic.clone();
                sends.spawn(async move {
                    let o = deliver(&sender, &alert, target, body, max_attempts, topic.as_deref()).await;
                    drop(permit);
                    let _ = tx.send(o).await;
                });
            }
        }
        while sends.join_next().await.is_some() {}
        drop(tx);
        writer.await??;
        lease.abort();

        if alert.cancelled.is_cancelled() {
            store::close_remaining(&self.pool, &batch, &alert.topics, "skipped", "the alert was retracted")
                .await?;
        } else if shutdown.is_cancelled() {
            // Hand the rest back at once rather than after the lease runs out.
            sqlx::query("update push_batches set state = 'pending', lease_until = null where alert_id = $1 and first_id = $2")
                .bind(batch.alert_id)
                .bind(batch.first_id)
                .execute(&self.pool)
                .await?;
            return Ok(());
        }
        store::finish_batch(&self.pool, &batch).await?;
        tracing::debug!(alert_id = %batch.alert_id, first_id = batch.first_id, count, elapsed_ms = started.elapsed().as_millis() as u64, "push batch done");
        Ok(())
    }
}

fn outcome(
    t: Target,
    status: &'static str,
    http: Option<u16>,
    attempts: i16,
    latency: Option<Duration>,
    error: Option<String>,
) -> Outcome {
    Outcome {
        subscription_id: t.id,
        status,
        http_status: http.map(|h| h as i16),
        attempts,
        push_host: t.host,
        latency_ms: latency.map(|l| l.as_millis().min(i32::MAX as u128) as i32),
        error,
    }
}

/// Sends one push, retrying what can be retried while the alert is worth delivering.
async fn deliver(
    sender: &Sender,
    alert: &AlertPush,
    t: Target,
    body: bytes::Bytes,
    max_attempts: u32,
    topic: Option<&str>,
) -> Outcome {
    let started = Instant::now();
    let mut attempts: i16 = 0;
    loop {
        if alert.cancelled.is_cancelled() {
            return outcome(t, "skipped", None, attempts, None, Some("the alert was retracted".into()));
        }
        let ttl = alert.ttl_now();
        if ttl == 0 {
            return outcome(t, "expired", None, attempts, None, Some("the alert's TTL passed".into()));
        }
        attempts += 1;
        let m = Message {
            endpoint: &t.endpoint,
            origin: &t.origin,
            host: &t.host,
            body: body.clone(),
            ttl,
            urgency: alert.urgency,
            topic,
        };
        // A retraction also stops requests waiting for a slot or in flight: what was not
        // confirmed is logged as skipped.
        let result = tokio::select! {
            r = sender.send(&m) => Some(r),
            _ = alert.cancelled.cancelled() => None,
        };
        let Some(result) = result else {
            return outcome(t, "skipped", None, attempts, None, Some("the alert was retracted".into()));
        };
        let latency = Some(started.elapsed());
        match result {
            Attempt::Sent(code) => {
                metrics::push_latency(started.elapsed());
                return outcome(t, "sent", Some(code), attempts, latency, None);
            }
            Attempt::Gone(code) => {
                return outcome(
                    t,
                    "gone",
                    Some(code),
                    attempts,
                    latency,
                    Some("the subscription no longer exists".into()),
                );
            }
            Attempt::Failed { status, error } => {
                return outcome(t, "failed", status, attempts, latency, Some(error));
            }
            Attempt::VapidRejected { status, error } => {
                return outcome(t, "failed", Some(status), attempts, latency, Some(error));
            }
            Attempt::Retry { status, after, error } => {
                if attempts as u32 >= max_attempts {
                    return outcome(
                        t,
                        "failed",
                        status,
                        attempts,
                        latency,
                        Some(format!("{error} (gave up after {attempts} attempts)")),
                    );
                }
                let delay = after.unwrap_or_else(|| backoff(attempts as u32));
                if Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default() >= alert.expires_at {
                    return outcome(
                        t,
                        "expired",
                        status,
                        attempts,
                        latency,
                        Some(format!("{error}; the TTL ends before the next try")),
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = alert.cancelled.cancelled() => {}
                }
            }
        }
    }
}

/// CPU time this thread has used (not wall time: a preempted thread is not charged).
fn thread_cpu_time() -> Option<Duration> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).ok()?;
    Some(Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32))
}

/// Exponential backoff with full jitter: uniformly up to base·2ⁿ, capped.
fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE.saturating_mul(1 << attempt.min(10)).min(BACKOFF_CAP);
    let ms = rand::rng().random_range(ceiling.as_millis() as u64 / 2..=ceiling.as_millis() as u64);
    Duration::from_millis(ms)
}

async fn write_outcomes(pool: PgPool, batch: Batch, mut rx: mpsc::Receiver<Outcome>) -> anyhow::Result<()> {
    let mut pending: Vec<Outcome> = Vec::with_capacity(FLUSH_ROWS);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    let mut last_flush = Instant::now();
    loop {
        let closed = tokio::select! {
            o = rx.recv() => match o {
                Some(o) => { pending.push(o); false }
                None => true,
            },
            _ = tick.tick() => false,
        };
        let due = closed || pending.len() >= FLUSH_ROWS || last_flush.elapsed() >= FLUSH_EVERY;
        if !pending.is_empty() && due {
            flush(&pool, &batch, &mut pending).await?;
            last_flush = Instant::now();
        }
        if closed {
            return Ok(());
        }
    }
}

async fn flush(pool: &PgPool, batch: &Batch, pending: &mut Vec<Outcome>) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match store::record(pool, batch.alert_id, batch.alert_day, pending).await {
            Ok(()) => {
                metrics::deliveries_logged(pending.len() as u64);
                pending.clear();
                return Ok(());
            }
            // The database may be briefly away: keep the outcomes and retry, so that nothing is
            // sent twice for want of a log row.
            Err(e) if backoff < Duration::from_secs(30) => {
                tracing::warn!(error = %e, "writing delivery outcomes failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn keep_lease(pool: PgPool, batch: Batch, lease: Duration) {
    let mut every = tokio::time::interval(lease / 3);
    every.tick().await;
    loop {
        every.tick().await;
        if let Err(e) = store::renew_lease(&pool, &batch, lease).await {
            tracing::warn!(error = %e, "could not renew a push batch lease");
        }
    }
}

/// Wakes the workers on NOTIFY (new jobs, planned batches).
async fn listen(pool: PgPool, wake: Arc<tokio::sync::Notify>, shutdown: CancellationToken) {
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(_) => {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if listener.listen(store::PUSH_CHANNEL).await.is_err() {
            continue;
        }
        loop {
            let n = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = listener.try_recv() => n,
            };
            match n {
                Ok(_) => wake.notify_waiters(),
                Err(_) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }
}
