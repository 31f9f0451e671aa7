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
//!
//! The parts: this file holds the loops (planner, batch workers, the hub watch, the retry
//! worker's claims); [`send`] a batch's and a retry round's way from targets to queued pushes;
//! [`delivery`] one subscriber's push and its outcome; [`writer`] the outcome flushes;
//! [`leases`] the lease renewals of the batches this process holds.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use http::HeaderValue;
use sqlx::PgPool;
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use self::{
    leases::{LeaseHold, Leases},
    send::Prior,
};
use super::{
    PushSettings,
    encryptor::Encryptor,
    payload,
    sender::Sender,
    store::{self, Batch, DeliveryStatus},
};
use crate::{
    alerts::{domain::AlertStatus, events::EventKind, store as alerts, view::StepKind},
    stream::hub::Hub,
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
    /// PushOutcome flushes running at once. Flushes of one alert queue on its job's row anyway,
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

mod delivery;
mod leases;
mod send;
mod writer;
