//! The durable fan-out: every matching subscriber gets one push per alert, across crashes and
//! across processes.
//!
//! Progress lives in PostgreSQL. A published alert queues a job; any process plans it into
//! batches (ranges of subscription ids); workers in every process claim batches with a lease
//! (`for update skip locked`). A batch's subscribers who already have an outcome in the log are
//! skipped, so a batch taken over after a crash (lease expired) resumes where it stopped. Outcomes
//! are written in multi-row statements every `FLUSH_EVERY` or `FLUSH_ROWS`: a crash can repeat
//! only the pushes in flight or finished within that window.
//!
//! Within a batch: encryption runs on the encryption threads in chunks (CPU work off the async
//! threads; see [`super::encryptor`]), a chunk's pushes are queued for sending together, sends
//! are bounded globally and per push-service origin, and retries back off with
//! jitter while the alert's TTL lasts. A retraction seen by the hub stops a batch within a
//! second; what was not sent is logged `skipped`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use http::HeaderValue;
use rand::Rng;
use sqlx::PgPool;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    PushSettings, ece,
    encryptor::Encryptor,
    payload,
    sender::{Attempt, Headers, Push, Sender},
    store::{self, Batch, Outcome, Target},
};
use crate::{
    alerts::store as alerts,
    stream::{hub::Hub, protocol::EventKind},
    telemetry::metrics,
};

const FLUSH_EVERY: Duration = Duration::from_millis(100);
const FLUSH_ROWS: usize = 500;
/// Targets encrypted per trip to an encryption thread.
const CRYPTO_CHUNK: usize = 64;
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// What every send of one alert shares, built once per process.
struct AlertPush {
    /// Each subscriber's payload differs only in its receipt token.
    payload: Arc<payload::Template>,
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
    encryptor: Encryptor,
}

impl Fanout {
    pub fn new(pool: PgPool, sender: Arc<Sender>, settings: PushSettings) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            pool,
            sender,
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            encryptor: Encryptor::new()?,
            settings,
            alerts: Mutex::new(HashMap::new()),
        }))
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
            payload: Arc::new(payload::Template::new(&alert, self.settings.receipts.clone())),
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

        // Outcomes go to one writer that flushes them in batches. The channel closes when the
        // batch's last push is done (each holds the run, which holds the sending half).
        let (results, rx) = mpsc::unbounded_channel::<Finished>();
        let writer = tokio::spawn(write_outcomes(self.pool.clone(), batch.clone(), rx));
        let lease = tokio::spawn(keep_lease(self.pool.clone(), batch.clone(), self.settings.lease));
        let run = Arc::new(BatchRun {
            alert: alert.clone(),
            sender: self.sender.clone(),
            results,
            shutdown: shutdown.clone(),
            max_attempts: self.settings.max_attempts,
            topic: self.settings.topic.as_deref().and_then(|t| HeaderValue::from_str(t).ok()),
        });

        let stop = alert.cancelled.clone();
        // Targets are moved to an encryption thread and on into their push, never cloned.
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
            let encrypted = self
                .encryptor
                .run(move || encrypt_chunk(chunk, &payload))
                .await
                .ok_or_else(|| anyhow::anyhow!("encrypting a chunk of pushes panicked"))?;
            // Submitted together (see `Sender::submit_all`); when the in-flight limit stops us
            // midway, what is gathered goes first, since waiting on permits while holding
            // unsent pushes could wait forever under a small limit.
            let mut ready: Vec<Box<dyn Push>> = Vec::with_capacity(CRYPTO_CHUNK);
            for (target, body) in encrypted {
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
                let mut delivery = Box::new(Delivery {
                    run: run.clone(),
                    target,
                    body: bytes::Bytes::new(),
                    attempts: 0,
                    started: Instant::now(),
                    permit,
                });
                match body {
                    Ok(b) => {
                        delivery.body = b;
                        ready.push(delivery);
                    }
                    Err(e) => delivery.record("failed", None, None, Some(format!("encryption: {e}"))),
                }
            }
            self.sender.submit_all(ready);
        }
        drop(run);
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

/// Encrypts a chunk's bodies (on an encryption thread). They share one allocation, each a
/// `Bytes` view of it freed with the last: one malloc per chunk instead of one ~1 KiB malloc per
/// push. A body kept for a retry keeps its chunk's allocation, ~70 KiB, alive; the in-flight
/// limit bounds how many. Each subscriber's plaintext (its own receipt in the shared payload) is
/// written into one reused buffer.
fn encrypt_chunk(
    chunk: Vec<Target>,
    payload: &payload::Template,
) -> Vec<(Target, Result<bytes::Bytes, String>)> {
    let cpu = thread_cpu_time();
    let mut plaintext = Vec::with_capacity(payload.max_len());
    let mut bodies = bytes::BytesMut::with_capacity(ece::body_len(payload.max_len()) * chunk.len());
    let encrypted = chunk
        .into_iter()
        .map(|t| {
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
            (t, body)
        })
        .collect();
    if let (Some(before), Some(after)) = (cpu, thread_cpu_time()) {
        metrics::push_encryption_cpu(after.saturating_sub(before));
    }
    encrypted
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

/// What the pushes of one batch share.
struct BatchRun {
    alert: Arc<AlertPush>,
    sender: Arc<Sender>,
    /// To the batch's outcome writer. Unbounded, yet bounded: every message carries one of the
    /// process's `push_max_in_flight` permits, released when the writer takes it.
    results: mpsc::UnboundedSender<Finished>,
    shutdown: CancellationToken,
    max_attempts: u32,
    topic: Option<HeaderValue>,
}

struct Finished {
    outcome: Outcome,
    _permit: OwnedSemaphorePermit,
}

/// One subscriber's push, from encryption to its outcome, across retries.
struct Delivery {
    run: Arc<BatchRun>,
    target: Target,
    body: bytes::Bytes,
    attempts: i16,
    started: Instant,
    permit: OwnedSemaphorePermit,
}

impl Push for Delivery {
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
        (ttl > 0).then(|| Headers { ttl, urgency: alert.urgency, topic: self.run.topic.clone() })
    }

    fn cancelled(&self) -> &CancellationToken {
        &self.run.alert.cancelled
    }

    /// Logs the outcome, or tries again later what can be retried while the alert is worth
    /// delivering.
    fn finish(mut self: Box<Self>, attempt: Option<Attempt>) {
        let Some(attempt) = attempt else {
            // Not sent, or not confirmed: why decides what the log says.
            if self.run.alert.cancelled.is_cancelled() {
                return self.record("skipped", None, None, Some("the alert was retracted".into()));
            }
            if self.run.shutdown.is_cancelled() {
                // No outcome: whoever resumes the batch sends it.
                return;
            }
            return self.record("expired", None, None, Some("the alert's TTL passed".into()));
        };
        self.attempts += 1;
        let latency = Some(self.started.elapsed());
        match attempt {
            Attempt::Sent(code) => {
                metrics::push_latency(self.started.elapsed());
                self.record("sent", Some(code), latency, None)
            }
            Attempt::Gone(code) => {
                self.record("gone", Some(code), latency, Some("the subscription no longer exists".into()))
            }
            Attempt::Failed { status, error } => self.record("failed", status, latency, Some(error)),
            Attempt::VapidRejected { status, error } => {
                self.record("failed", Some(status), latency, Some(error))
            }
            Attempt::Retry { status, after, error } => {
                let attempts = self.attempts;
                if attempts as u32 >= self.run.max_attempts {
                    let error = format!("{error} (gave up after {attempts} attempts)");
                    return self.record("failed", status, latency, Some(error));
                }
                let delay = after.unwrap_or_else(|| backoff(attempts as u32));
                if Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default()
                    >= self.run.alert.expires_at
                {
                    let error = format!("{error}; the TTL ends before the next try");
                    return self.record("expired", status, latency, Some(error));
                }
                // Waits in a timer, not in the sender: the origin's workers go on meanwhile.
                tokio::spawn(async move {
                    let run = self.run.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = run.alert.cancelled.cancelled() => {}
                        _ = run.shutdown.cancelled() => {}
                    }
                    run.sender.submit(self);
                });
            }
        }
    }
}

impl Delivery {
    fn record(
        self: Box<Self>,
        status: &'static str,
        http: Option<u16>,
        latency: Option<Duration>,
        error: Option<String>,
    ) {
        let Delivery { run, target, attempts, permit, .. } = *self;
        let outcome = outcome(target, status, http, attempts, latency, error);
        // Fails only when the writer has stopped on a database error; the batch then ends in
        // error and its lease hands it to another try.
        let _ = run.results.send(Finished { outcome, _permit: permit });
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

async fn write_outcomes(
    pool: PgPool,
    batch: Batch,
    mut rx: mpsc::UnboundedReceiver<Finished>,
) -> anyhow::Result<()> {
    let mut pending: Vec<Outcome> = Vec::with_capacity(FLUSH_ROWS);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    let mut last_flush = Instant::now();
    loop {
        let closed = tokio::select! {
            o = rx.recv() => match o {
                Some(f) => { pending.push(f.outcome); false }
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
