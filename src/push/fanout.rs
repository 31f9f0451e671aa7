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
//! threads; see [`super::encryptor`]), a chunk's pushes are queued for sending together, and
//! sends are bounded globally and per push-service origin. A retraction seen by the hub stops a
//! batch within a second; what was not sent is logged `skipped`.
//!
//! Retries are off the batch's path: a batch is done once each of its pushes has had its first
//! try. A push that must be tried again (5xx, 429, timeout, connection error) or that its push
//! service's state put off (down, paused, on probation: [`Sender::admit`]) goes to the retry
//! queue in PostgreSQL with the time of its next try (jittered exponential backoff, or the
//! push service's `Retry-After`), and any process's retry worker (`Fanout::retry_due`) takes
//! it from there: an unreachable push service never holds a range, a fan-out worker or another
//! alert. Tries are bounded by `push_max_attempts` and the alert's TTL, put-offs by
//! [`MAX_DEFERRALS`] and the TTL.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use http::HeaderValue;
use rand::Rng;
use sqlx::{ConnectOptions, PgConnection, PgPool};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    task::JoinSet,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use super::{
    PushSettings, ece,
    encryptor::Encryptor,
    payload,
    sender::{Attempt, Headers, Push, Sender},
    store::{self, Batch, Deactivation, DeliveryStatus, Outcome, Target, Verdict},
};
use crate::{
    alerts::{domain::AlertStatus, events::EventKind, store as alerts, view::StepKind},
    stream::hub::Hub,
    telemetry::metrics,
};

const FLUSH_EVERY: Duration = Duration::from_millis(100);
const FLUSH_ROWS: usize = 500;
/// Targets encrypted per trip to an encryption thread.
const CRYPTO_CHUNK: usize = 64;
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// Times one push may be put off without a try (its push service down, paused or on
/// probation) before it is logged failed; the alert's TTL bounds it too.
pub const MAX_DEFERRALS: i16 = 30;
/// Due retries claimed at a time.
const RETRY_CLAIM: i64 = 500;
/// How often the retry worker looks for due retries when there were none.
const RETRY_POLL: Duration = Duration::from_millis(250);

/// What every push of one step of an alert shares, built once per process and revision.
struct AlertPush {
    /// Each subscriber's payload differs only in its receipt token.
    payload: Arc<payload::Template>,
    /// The alert's revision the payload carries.
    revision: i32,
    topics: Vec<String>,
    urgency: &'static str,
    /// The original's TTL counts from publication, a correction's or the retraction's from
    /// when the editor made it.
    expires_at: DateTime<Utc>,
    /// RFC 8030 `Topic`, one per alert: a correction or the retraction replaces a push of the
    /// same alert still waiting at the push service for an offline device.
    topic: HeaderValue,
    /// The alert's retraction (never cancelled for the retraction's own step).
    cancelled: CancellationToken,
    /// What the hub has heard of the alert, and how many corrections it had heard of when
    /// this was built: a range that sees more encrypts its next chunk with the new text.
    watch: Arc<AlertWatch>,
    corrections_seen: u64,
}

/// What the hub tells this process about one alert being sent.
#[derive(Default)]
struct AlertWatch {
    retracted: CancellationToken,
    corrections: std::sync::atomic::AtomicU64,
}

impl AlertPush {
    /// Whether the alert was corrected after this was built.
    fn outdated(&self) -> bool {
        self.watch.corrections.load(std::sync::atomic::Ordering::Acquire) != self.corrections_seen
    }
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
    alerts: Mutex<HashMap<(Uuid, i16), Arc<AlertPush>>>,
    /// Per alert being sent: what the hub has heard of it (corrections, retraction).
    watched: Mutex<HashMap<Uuid, Arc<AlertWatch>>>,
    encryptor: Encryptor,
    /// Batches and retry rounds whose pushes are on their way: awaited at shutdown.
    finishing: TaskTracker,
    leases: Arc<Leases>,
    /// Outcome flushes running at once. Flushes of one alert queue on its job's row anyway,
    /// each holding a database connection while it waits: with many ranges finishing together
    /// they took the whole pool, lease renewals starved, and ranges were taken over and sent
    /// twice. A quarter of the pool is plenty.
    flushes: Arc<Semaphore>,
}

impl Fanout {
    pub fn new(pool: PgPool, sender: Arc<Sender>, settings: PushSettings) -> std::io::Result<Arc<Self>> {
        let flush_slots = settings.flush_slots.max(1);
        Ok(Arc::new(Self {
            pool,
            sender,
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            encryptor: Encryptor::new()?,
            settings,
            alerts: Mutex::new(HashMap::new()),
            watched: Mutex::new(HashMap::new()),
            finishing: TaskTracker::new(),
            leases: Arc::default(),
            flushes: Arc::new(Semaphore::new(flush_slots)),
        }))
    }

    /// Runs the planner and `workers` batch workers until shutdown.
    pub async fn run(self: Arc<Self>, hub: Arc<Hub>, listen_db: PgPool, shutdown: CancellationToken) {
        let wake = Arc::new(tokio::sync::Notify::new());
        let mut tasks = JoinSet::new();
        // Wakes the workers on NOTIFY (new steps, planned ranges); they also look every 500 ms.
        let notify = wake.clone();
        let on_notify = move || notify.notify_waiters();
        tasks.spawn(crate::db::listen::listen(listen_db, store::PUSH_CHANNEL, on_notify, shutdown.clone()));
        tasks.spawn(self.clone().watch_alerts(hub, shutdown.clone()));
        tasks.spawn(self.clone().retry_due(shutdown.clone()));
        tasks.spawn(forget_idle_origins(self.sender.clone(), shutdown.clone()));
        tasks.spawn(self.leases.clone().renew(self.pool.clone(), self.settings.lease, shutdown.clone()));
        for _ in 0..self.settings.workers {
            tasks.spawn(self.clone().work(wake.clone(), shutdown.clone()));
        }
        while tasks.join_next().await.is_some() {}
        // Pushes in flight end at shutdown (not confirmed, left for whoever resumes); their
        // batches are handed back before the database goes.
        self.finishing.close();
        self.finishing.wait().await;
    }

    /// Cancels in-process work on an alert as soon as the hub hears of its retraction (all but
    /// the retraction's own step), and tells ranges being sent of its corrections.
    async fn watch_alerts(self: Arc<Self>, hub: Arc<Hub>, shutdown: CancellationToken) {
        let mut rx = hub.subscribe(None).receiver;
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = rx.recv() => e,
            };
            match event {
                Ok(e) if e.kind == EventKind::Update => {
                    if let Some(w) = self.watched.lock().expect("watched lock").get(&e.alert_id) {
                        w.corrections.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    }
                }
                Ok(e) if e.kind == EventKind::Retract => {
                    if let Some(w) = self.watched.lock().expect("watched lock").get(&e.alert_id) {
                        w.retracted.cancel();
                    }
                    // Its retries end now, not when they come due (every process does this;
                    // the first does the work).
                    let (which, why) = (store::RetriesOf::AllButRetraction, "the alert was retracted");
                    if let Err(err) =
                        store::close_retries(&self.pool, e.alert_id, which, DeliveryStatus::Skipped, why)
                            .await
                    {
                        tracing::warn!(error = %err, alert_id = %e.alert_id, "could not close a retracted alert's retries");
                    }
                }
                Ok(_) => {}
                // Missed events: ask the database which of the alerts being sent were retracted,
                // and have ranges being sent re-read the others.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    for w in self.watched.lock().expect("watched lock").values() {
                        w.corrections.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    }
                    self.recheck_retractions(&shutdown).await;
                }
                Err(_) => return,
            }
        }
    }

    /// Cancels the alerts being sent that were retracted. Tries until the database answers: not
    /// knowing must not mean "keep pushing" (every range also checks when it is claimed, but a
    /// running one would go on).
    async fn recheck_retractions(&self, shutdown: &CancellationToken) {
        let mut pause = Duration::from_millis(100);
        loop {
            let ids: Vec<Uuid> = self.watched.lock().expect("watched lock").keys().copied().collect();
            match alerts::retracted_among(&self.pool, &ids).await {
                Ok(retracted) => {
                    let watched = self.watched.lock().expect("watched lock");
                    for id in retracted {
                        if let Some(w) = watched.get(&id) {
                            w.retracted.cancel();
                        }
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not check for retractions the hub missed; trying again");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
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
    async fn step(self: &Arc<Self>, shutdown: &CancellationToken) -> anyhow::Result<bool> {
        if let Some(alert_id) = store::plan_next_job(&self.pool, self.settings.batch_size as i64).await? {
            tracing::info!(%alert_id, "push fan-out planned");
            return Ok(true);
        }
        let held = self.leases.held();
        let Some(batch) = store::claim_batch(&self.pool, self.settings.lease, &held).await? else {
            return Ok(false);
        };
        // Renewed from the moment it is claimed: under load, loading the alert and the targets
        // can take longer than the lease.
        let lease = self.leases.hold(&batch);
        self.process(batch, lease, shutdown).await?;
        Ok(true)
    }

    /// What the pushes of one step share, with the alert as it reads at `step.alert_revision`
    /// (or later): built once per revision, so a range claimed after a correction sends the
    /// corrected text.
    async fn alert(&self, job: &store::JobKey, step: &store::Step) -> anyhow::Result<Option<Arc<AlertPush>>> {
        let key = (job.alert_id, job.step);
        if let Some(a) = self.alerts.lock().expect("alerts lock").get(&key)
            && a.revision >= step.alert_revision
            && !a.outdated()
        {
            return Ok(Some(a.clone()));
        }
        let watch = self.watched.lock().expect("watched lock").entry(job.alert_id).or_default().clone();
        // Read before the alert: a correction heard of while it loads makes this outdated at
        // once rather than missed.
        let corrections_seen = watch.corrections.load(std::sync::atomic::Ordering::Acquire);
        let mut conn = self.pool.acquire().await?;
        let Some(alert) = alerts::get(&mut conn, job.alert_id).await? else { return Ok(None) };
        drop(conn);
        let cancelled = if step.kind == StepKind::Retraction {
            CancellationToken::new()
        } else {
            if alert.status == AlertStatus::Retracted {
                watch.retracted.cancel();
            }
            watch.retracted.clone()
        };
        let expires_at = match step.kind {
            StepKind::Alert => alert.expires_at(),
            _ => step.requested_at + chrono::Duration::seconds(alert.ttl_seconds as i64),
        };
        let template = payload::Template::new(&alert, step.kind, step.quiet, self.settings.receipts.clone());
        let push = Arc::new(AlertPush {
            payload: Arc::new(template),
            revision: alert.revision,
            urgency: alert.urgency.as_str(),
            expires_at,
            topics: alert.topics.clone(),
            topic: topic_of(alert.id),
            cancelled,
            watch,
            corrections_seen,
        });
        let mut cache = self.alerts.lock().expect("alerts lock");
        // Forget steps past their TTL: their batches close as expired without a payload.
        cache.retain(|_, a| a.expires_at > Utc::now() - chrono::Duration::hours(1));
        let entry = cache.entry(key).or_insert_with(|| push.clone());
        if entry.revision < push.revision || entry.corrections_seen < push.corrections_seen {
            *entry = push;
        }
        let current = entry.clone();
        let mut watched = self.watched.lock().expect("watched lock");
        watched.retain(|id, _| cache.keys().any(|(a, _)| a == id));
        Ok(Some(current))
    }

    async fn process(
        self: &Arc<Self>,
        batch: Batch,
        lease: LeaseHold,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let Some(alert) = self.alert(&batch.job, &batch.step).await? else {
            store::finish_batch(&self.pool, &batch).await?;
            return Ok(());
        };
        if self.close_unsent(&batch, &alert).await? {
            return Ok(store::finish_batch(&self.pool, &batch).await?);
        }
        let targets = store::targets(&self.pool, &batch, &alert.topics).await?;
        let count = targets.len();

        // Outcomes go to one writer that flushes them in batches. The channel closes when the
        // batch's last push is done (each holds the run, which holds the sending half).
        let (run, writer) = self.start_run(&alert, batch.job, batch.step, shutdown);
        let sent = self.send(&run, targets.into_iter().map(|t| (t, Prior::default())), shutdown).await;
        drop(run);
        self.finish_apart(batch, alert, lease, writer, count, shutdown.clone());
        sent
    }

    /// Closes a range without sending when its alert was retracted (`skipped`) or its TTL has
    /// passed (`expired`). True when it did.
    async fn close_unsent(&self, batch: &Batch, alert: &AlertPush) -> sqlx::Result<bool> {
        let (status, why) = if alert.cancelled.is_cancelled() {
            (DeliveryStatus::Skipped, "the alert was retracted")
        } else if alert.expires_at <= Utc::now() {
            (DeliveryStatus::Expired, "the alert's TTL passed before sending")
        } else {
            return Ok(false);
        };
        store::close_remaining(&self.pool, batch, &alert.topics, status, why).await?;
        Ok(true)
    }

    /// Waits for a range's answers apart, then marks it done. Every push is on its way: a push
    /// service that is slow to answer (up to `push_timeout_secs`) holds neither this worker nor
    /// the next range; the in-flight limit bounds how many ranges are finishing at once.
    fn finish_apart(
        self: &Arc<Self>,
        batch: Batch,
        alert: Arc<AlertPush>,
        lease: LeaseHold,
        writer: tokio::task::JoinHandle<anyhow::Result<()>>,
        count: usize,
        shutdown: CancellationToken,
    ) {
        let started = Instant::now();
        let this = self.clone();
        self.finishing.spawn(async move {
            let written = writer.await;
            drop(lease);
            let done = match written {
                Ok(Ok(())) => this.complete(&batch, &alert, &shutdown).await,
                Ok(Err(e)) => Err(e),
                Err(e) => Err(e.into()),
            };
            match done {
                Ok(()) => tracing::debug!(alert_id = %batch.job.alert_id, step = batch.job.step, first_id = batch.first_id, count, elapsed_ms = started.elapsed().as_millis() as u64, "push batch done"),
                // Its lease runs out and another worker resumes it.
                Err(e) => tracing::warn!(error = %e, alert_id = %batch.job.alert_id, "finishing a push batch failed"),
            }
        });
    }

    /// Closes a batch whose pushes have all had their first try.
    async fn complete(
        &self,
        batch: &Batch,
        alert: &AlertPush,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        if alert.cancelled.is_cancelled() {
            store::close_remaining(
                &self.pool,
                batch,
                &alert.topics,
                DeliveryStatus::Skipped,
                "the alert was retracted",
            )
            .await?;
        } else if shutdown.is_cancelled() {
            // Hand the rest back at once rather than after the lease runs out.
            return Ok(store::release_batch(&self.pool, batch).await?);
        }
        store::finish_batch(&self.pool, batch).await?;
        Ok(())
    }
}

impl Fanout {
    /// A run of pushes of one alert (a batch, or a round of retries) and its outcome writer.
    fn start_run(
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
    async fn send(
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
                let mut delivery = Box::new(Delivery {
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
                        delivery.finish(Some(Attempt::Deferred { after: wait, error }));
                    }
                }
            }
            self.sender.submit_all(ready);
        }
        Ok(())
    }

    /// The retry worker: claims due retries (of any alert, queued by any process) and sends
    /// them as runs per alert, without waiting for their answers before the next claim.
    async fn retry_due(self: Arc<Self>, shutdown: CancellationToken) {
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
    async fn retry_step(
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
                    let outcome = Outcome {
                        subscription_id: d.subscription_id,
                        status: DeliveryStatus::Skipped.into(),
                        attempts: d.attempts,
                        error: Some("the subscription was removed before the next try".into()),
                        from_retry: true,
                        revision: run.alert.revision,
                        ..Outcome::default()
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
struct Prior {
    attempts: i16,
    deferrals: i16,
    from_retry: bool,
}

/// Encrypts a chunk's bodies (on an encryption thread). They share one allocation, each a
/// `Bytes` view of it freed with the last: one malloc per chunk instead of one ~1 KiB malloc per
/// push. A body kept for a retry keeps its chunk's allocation, ~70 KiB, alive; the in-flight
/// limit bounds how many. Each subscriber's plaintext (its own receipt in the shared payload) is
/// written into one reused buffer.
fn encrypt_chunk(
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

/// What the pushes of one batch share.
struct BatchRun {
    alert: Arc<AlertPush>,
    job: store::JobKey,
    step: store::Step,
    /// To the batch's outcome writer. Unbounded, yet bounded: every message carries one of the
    /// process's `push_max_in_flight` permits, released when the writer takes it.
    results: mpsc::UnboundedSender<Finished>,
    shutdown: CancellationToken,
    max_attempts: u32,
}

struct Finished {
    outcome: Outcome,
    /// Released when the writer takes the outcome (none for a push never sent).
    _permit: Option<OwnedSemaphorePermit>,
}

/// One subscriber's push, from encryption to its outcome, across retries.
struct Delivery {
    run: Arc<BatchRun>,
    target: Target,
    body: bytes::Bytes,
    attempts: i16,
    deferrals: i16,
    from_retry: bool,
    /// The alert's revision its body carries.
    revision: i32,
    started: Instant,
    permit: Option<OwnedSemaphorePermit>,
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
        (ttl > 0).then(|| Headers { ttl, urgency: alert.urgency, topic: Some(alert.topic.clone()) })
    }

    /// Logs the outcome, or queues another try of what can be retried while the alert is worth
    /// delivering.
    fn finish(mut self: Box<Self>, attempt: Option<Attempt>) {
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
        if let Attempt::Deferred { after, error } = attempt {
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
            Attempt::Sent(code) => {
                metrics::push_latency(self.started.elapsed());
                self.record(DeliveryStatus::Sent, Some(code), latency, None)
            }
            Attempt::Gone(code) => self.record(
                DeliveryStatus::Gone,
                Some(code),
                latency,
                Some("the subscription no longer exists".into()),
            ),
            Attempt::Failed { status, error } => {
                self.record(DeliveryStatus::Failed, status, latency, Some(error))
            }
            Attempt::VapidRejected { status, error } => {
                self.record(DeliveryStatus::Failed, Some(status), latency, Some(error))
            }
            Attempt::Retry { status, after, error } => {
                let attempts = self.attempts;
                if attempts as u32 >= self.run.max_attempts {
                    let error = format!("{error} (gave up after {attempts} attempts)");
                    return self.give_up(DeliveryStatus::Failed, status, latency, error);
                }
                self.retry_after(after.unwrap_or_else(|| backoff(attempts as u32)), status, error)
            }
            Attempt::Deferred { .. } => unreachable!("handled above"),
        }
    }
}

impl Delivery {
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

    fn record(
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
    ) -> Outcome {
        Outcome {
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

    fn send_outcome(self: Box<Self>, outcome: Outcome) {
        let Delivery { run, permit, .. } = *self;
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
    flushes: Arc<Semaphore>,
    job: store::JobKey,
    mut rx: mpsc::UnboundedReceiver<Finished>,
    deactivation: Deactivation,
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
            let _slot = flushes.acquire().await.expect("semaphore never closes");
            flush(&pool, &job, &mut pending, &deactivation).await?;
            last_flush = Instant::now();
        }
        if closed {
            return Ok(());
        }
    }
}

async fn flush(
    pool: &PgPool,
    job: &store::JobKey,
    pending: &mut Vec<Outcome>,
    deactivation: &Deactivation,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match store::record(pool, job, pending, deactivation).await {
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

/// The batches this process holds, all renewed together by one task in one statement, on a
/// connection of its own. (A renewal per batch competed with the outcome writers for connections,
/// and a renewal that waited for the pool behind the fan-out's own work let leases run out while
/// their batches were still being sent: another worker took them over and sent them again.)
#[derive(Default)]
struct Leases {
    held: Mutex<HashMap<store::BatchKey, usize>>,
}

/// A batch's place in [`Leases`]; dropping it stops the renewals.
struct LeaseHold {
    leases: Arc<Leases>,
    key: store::BatchKey,
}

impl Leases {
    fn hold(self: &Arc<Self>, batch: &Batch) -> LeaseHold {
        let key = (batch.job.alert_id, batch.job.step, batch.first_id);
        *self.held.lock().expect("leases lock").entry(key).or_default() += 1;
        LeaseHold { leases: self.clone(), key }
    }

    fn held(&self) -> Vec<store::BatchKey> {
        self.held.lock().expect("leases lock").keys().copied().collect()
    }

    async fn renew(self: Arc<Self>, pool: PgPool, lease: Duration, shutdown: CancellationToken) {
        let every_third = lease / 3;
        let mut every = tokio::time::interval(every_third);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Opened when there is something to renew and closed when there is not: an idle
        // process keeps no extra connection.
        let mut own: Option<PgConnection> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let held = self.held();
            if held.is_empty() {
                own = None;
                continue;
            }
            if own.is_none() {
                let options = (*pool.connect_options()).clone().application_name(crate::db::app_name::LEASE);
                match tokio::time::timeout(every_third, options.connect()).await {
                    Ok(Ok(c)) => own = Some(c),
                    Ok(Err(e)) => tracing::warn!(error = %e, "could not connect to renew push batch leases"),
                    Err(_) => tracing::warn!("connecting to renew push batch leases timed out"),
                }
            }
            let Some(conn) = own.as_mut() else { continue };
            // Bounded, so that a renewal stuck on a dead connection gives way to a new one
            // before the leases run out.
            match tokio::time::timeout(every_third, store::renew_leases(conn, &held, lease)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not renew push batch leases");
                    own = None;
                }
                Err(_) => {
                    tracing::warn!("renewing push batch leases timed out");
                    own = None;
                }
            }
        }
    }
}

impl Drop for LeaseHold {
    fn drop(&mut self) {
        let mut held = self.leases.held.lock().expect("leases lock");
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// Keeps the sender's per-origin state bounded: origins nobody has pushed to for a while are
/// forgotten (with their VAPID tokens).
async fn forget_idle_origins(sender: Arc<Sender>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => sender.forget_idle(),
        }
    }
}

/// The `Topic` of every push of one alert: its 16 id bytes in base64url, 22 characters (RFC 8030
/// allows 32 of that alphabet).
fn topic_of(alert_id: Uuid) -> HeaderValue {
    use base64::Engine as _;
    let topic = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(alert_id.as_bytes());
    HeaderValue::from_str(&topic).expect("base64url is a valid header value")
}
