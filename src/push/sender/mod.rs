//! Sending encrypted messages to push services, safely and cheaply.
//!
//! Endpoints are URLs strangers gave us, so: redirects are never followed (nothing here follows
//! them); names are resolved here and only public addresses are connected to unless the operator
//! added the host (`connect.rs`); connects and exchanges have timeouts; at most a few KiB of any
//! answer are read. Logs and errors name the push service's host, never the endpoint (a secret
//! capability).
//!
//! Each push-service origin has a queue and a few workers (`worker.rs`). A worker owns one
//! connection and drives it in its own task together with the requests on it: HTTP/1.1 carries
//! one request at a time, so an origin gets up to `push_concurrency_per_origin` workers; HTTP/2
//! (chosen by ALPN) carries many, so an origin gets `push_http2_connections` workers sharing the
//! per-origin concurrency as streams. Pushes wait in the queue, not in tasks of their own: a push
//! costs no task, no pool checkout and no hand-off between tasks (measured in the server: 10–20 %
//! less CPU per push than sending each with reqwest; BENCHMARKS.md, "Third pass"). HTTP/1.1 goes
//! through hyper's client connection; HTTP/2 through the h2 crate directly, with bodies cut into
//! frames that h2 gathers, so that the pushes a worker starts together share one socket write
//! (BENCHMARKS.md, "Fourth pass").
//!
//! A 429 pauses that origin's workers, not the others'; a VAPID rejection stops only that origin.
//! What to do with an answer (log it, retry it later) is the caller's: see [`Push::finish`].
//!
//! A push service that cannot be reached slows only the pushes addressed to it:
//! - an origin whose connection fails or times out is put *down* for a while (5 s, doubling with
//!   each failure in a row, at most 10 min); its queued pushes and any new ones end at once as
//!   [`SendResult::Deferred`], so they hold no worker, no in-flight permit and no fan-out range
//!   while it is down (the caller keeps them durably for later);
//! - a 429 *pauses* an origin the same way for its `Retry-After`;
//! - an origin matched by a wildcard (a name anyone can make up, e.g. `*.notify.windows.com`)
//!   is on probation until it first answers: at most [`PROBE_PER_ORIGIN`] of its pushes at a
//!   time, and all such origins together at most [`PROBE_TOTAL`]; the rest is deferred. A
//!   stranger's thousand made-up names thus hold at most that many pushes, never the fan-out;
//! - the state kept per origin is bounded ([`MAX_ORIGINS`]) and idle origins are forgotten after
//!   [`ORIGIN_IDLE`]; metric labels name the push service from a fixed set, never the host.
//!
//! [`Sender::admit`] tells the caller, before it spends an in-flight permit, whether a push may
//! go now.

mod answer;
mod connect;
mod worker;

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::HeaderValue;
use tokio::sync::Notify;
use tokio_rustls::rustls::pki_types::CertificateDer;

pub use answer::SendResult;

use super::{subscription::Allowlist, vapid::Vapid};
use crate::telemetry::metrics;

/// How long an origin stays stopped after rejecting our VAPID credentials.
const VAPID_BLOCK: Duration = Duration::from_secs(600);
/// How long an origin stays down after its first connection failure or timeout; doubled with
/// each further one in a row, up to [`DOWN_MAX`].
const DOWN_FIRST: Duration = Duration::from_secs(5);
const DOWN_MAX: Duration = Duration::from_secs(600);
/// Connection failures or timeouts in a row that put a named origin down (a minted one goes
/// down at its first: it has never answered).
const DOWN_AFTER: u32 = 3;
/// Pushes one origin on probation may have queued or in flight.
pub const PROBE_PER_ORIGIN: usize = 8;
/// Pushes all origins on probation together may have queued or in flight.
pub const PROBE_TOTAL: usize = 64;
/// How long a push turned away by probation waits before it is tried again (plus jitter).
const PROBE_DEFER: Duration = Duration::from_secs(2);
/// Origins this process keeps state for; beyond, idle ones are forgotten first, and pushes to
/// a new origin are deferred while every origin is busy.
pub const MAX_ORIGINS: usize = 10_000;
/// An origin without pushes for this long is forgotten (its workers have ended long before).
const ORIGIN_IDLE: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct SenderSettings {
    pub connect_timeout: Duration,
    /// Limit on one exchange: request sent, answer read.
    pub timeout: Duration,
    pub per_origin: usize,
    /// HTTP/2 connections per push-service origin.
    pub http2_connections: usize,
    pub allow: Allowlist,
    /// Root certificates trusted besides the public ones (`push_ca_file`).
    pub extra_roots: Vec<CertificateDer<'static>>,
}

/// The headers that depend on the alert and the moment of sending.
pub struct Headers {
    pub ttl: u32,
    pub urgency: &'static str,
    pub topic: Option<HeaderValue>,
}

/// One message on its way: what the sender needs of it, and where its result goes.
pub trait Push: Send + 'static {
    /// The subscription's endpoint: a secret, never logged.
    fn endpoint(&self) -> &str;
    /// `scheme://host[:port]` of the endpoint: the push service's origin.
    fn origin(&self) -> &str;
    fn host(&self) -> &str;
    /// The encrypted body.
    fn body(&self) -> Bytes;
    /// Asked right before sending: the headers, or `None` when the push must not go any more
    /// (retracted, expired, shutting down).
    fn headers(&self) -> Option<Headers>;
    /// The end of one try: `Some` with what the push service said (or why it could not be
    /// reached), `None` when it was not sent (see [`Push::headers`]). Runs on the worker's
    /// task: it must not block; a retry is a new [`Sender::submit`] after a delay.
    fn finish(self: Box<Self>, attempt: Option<SendResult>);
}

pub struct Sender {
    shared: Arc<Shared>,
    origins: Mutex<HashMap<String, Arc<Origin>>>,
    allow: Allowlist,
}

/// What every worker needs.
struct Shared {
    connector: connect::Connector,
    vapid: Arc<Vapid>,
    timeout: Duration,
    per_origin: usize,
    http2_connections: usize,
    /// Pushes queued or in flight to origins on probation, all together.
    probing: AtomicUsize,
}

impl Shared {
    /// Requests one worker's connection may carry at once.
    fn room(&self, h2: bool) -> usize {
        if h2 { self.per_origin.div_ceil(self.http2_connections).max(1) } else { 1 }
    }
}

impl Sender {
    pub fn new(settings: SenderSettings, vapid: Arc<Vapid>) -> anyhow::Result<Self> {
        let connector =
            connect::Connector::new(settings.allow.clone(), &settings.extra_roots, settings.connect_timeout)?;
        Ok(Self {
            shared: Arc::new(Shared {
                connector,
                vapid,
                timeout: settings.timeout,
                per_origin: settings.per_origin.max(1),
                http2_connections: settings.http2_connections.max(1),
                probing: AtomicUsize::new(0),
            }),
            origins: Mutex::new(HashMap::new()),
            allow: settings.allow,
        })
    }

    /// Whether a push to `origin` may go now, asked before the caller spends an in-flight permit
    /// on it: `Err(wait)` when its push service is down, paused, or on probation with no room
    /// left (see the module docs). An `Ok` push must be submitted: it holds a place in the
    /// origin's count until it is finished.
    pub fn admit(&self, origin: &str, host: &str) -> Result<(), Duration> {
        let Some(o) = self.origin(origin, host) else {
            return Err(PROBE_DEFER);
        };
        o.touch();
        if let Some(wait) = o.down_left().or_else(|| o.pause_left()) {
            return Err(wait);
        }
        if o.on_probation() {
            let total = &self.shared.probing;
            let room = o.outstanding.load(Ordering::Acquire) < PROBE_PER_ORIGIN
                && total
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < PROBE_TOTAL).then_some(n + 1))
                    .is_ok();
            if !room {
                return Err(PROBE_DEFER + Duration::from_millis(rand::random_range(0..2000)));
            }
            o.probing.fetch_add(1, Ordering::AcqRel);
        }
        o.outstanding.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Forgets origins idle for [`ORIGIN_IDLE`] and VAPID tokens nobody needs; call now and then.
    pub fn forget_idle(&self) {
        let mut origins = self.origins.lock().expect("origins lock");
        origins.retain(|_, o| !o.is_idle(ORIGIN_IDLE));
        metrics::push_origins(origins.len());
        let keep: std::collections::HashSet<&str> = origins.keys().map(String::as_str).collect();
        self.shared.vapid.forget_tokens_except(&keep);
    }

    /// Origins this process keeps state for.
    pub fn origin_count(&self) -> usize {
        self.origins.lock().expect("origins lock").len()
    }

    /// Queues a push for its origin; a worker of that origin sends it and calls
    /// [`Push::finish`]. Never waits: callers bound what they submit (the fan-out's in-flight
    /// limit), so the queues are bounded by that.
    pub fn submit(&self, push: Box<dyn Push>) {
        self.submit_all(std::iter::once(push));
    }

    /// [`Sender::submit`] for many pushes at once: each origin's share is queued under one
    /// lock before any worker is woken, so a worker finds them together and sends them
    /// together (over HTTP/2, in one write) instead of racing the producer one by one.
    pub fn submit_all(&self, pushes: impl IntoIterator<Item = Box<dyn Push>>) {
        // Pushes of one origin mostly come in runs (subscribers are not sorted by push
        // service, but most are on one or two), so a short list beats a map here.
        type Group = (Arc<Origin>, Vec<Box<dyn Push>>);
        let mut groups: Vec<Group> = Vec::new();
        for push in pushes {
            match groups.iter_mut().find(|(o, _)| o.name == push.origin()) {
                Some((_, group)) => group.push(push),
                None => match self.origin(push.origin(), push.host()) {
                    Some(origin) => groups.push((origin, vec![push])),
                    // Admitted moments ago, so it exists unless it was just forgotten as idle
                    // and every slot is busy: try later.
                    None => {
                        let error = "not sent: too many push services are busy".to_string();
                        push.finish(Some(SendResult::Deferred { after: PROBE_DEFER, error }));
                    }
                },
            }
        }
        for (origin, group) in groups {
            let n = group.len();
            origin.queue.lock().expect("push queue").extend(group);
            // One wake-up per push, as many workers as are waiting (the rest is a stored permit).
            for _ in 0..n.min(origin.max_workers(&self.shared)) {
                origin.notify.notify_one();
            }
            // New workers when none is waiting for work, up to one per push and the origin's
            // limit (its HTTP/2 connections, or its concurrency over HTTP/1.1).
            if origin.waiting.load(Ordering::Acquire) == 0 {
                for _ in 0..n {
                    if !origin.add_worker(&self.shared) {
                        break;
                    }
                    tokio::spawn(worker::run(self.shared.clone(), origin.clone()));
                }
            }
        }
    }

    /// The origin's state; allocates only the first time an origin is seen (this is on the
    /// path of every push). `None` when [`MAX_ORIGINS`] are kept and none is idle.
    fn origin(&self, origin: &str, host: &str) -> Option<Arc<Origin>> {
        let mut origins = self.origins.lock().expect("origins lock");
        if let Some(o) = origins.get(origin) {
            return Some(o.clone());
        }
        if origins.len() >= MAX_ORIGINS {
            // Forget what nobody is using right now rather than refuse a new push service.
            origins.retain(|_, o| !o.is_idle(Duration::ZERO));
            if origins.len() >= MAX_ORIGINS {
                return None;
            }
        }
        let minted = self.allow.matches(host).is_none_or(|m| m.minted);
        let service = super::subscription::service_label(host);
        metrics::push_service_seen(service);
        let o = Arc::new(Origin {
            name: origin.to_string(),
            host: host.to_string(),
            service,
            minted,
            place: connect::Place::parse(origin),
            attempts: SendResult::LABELS.map(|result| metrics::push_attempts(service, result)),
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            workers: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            outstanding: AtomicUsize::new(0),
            probing: AtomicUsize::new(0),
            protocol: AtomicU8::new(UNKNOWN),
            health: Mutex::new(Health::default()),
            last_used: Mutex::new(Instant::now()),
            paused_until: Mutex::new(None),
            blocked_until: Mutex::new(None),
            logged_block: AtomicBool::new(false),
        });
        origins.insert(origin.to_string(), o.clone());
        metrics::push_origins(origins.len());
        Some(o)
    }
}

/// Whether an origin's push service has answered, and whether it is down.
#[derive(Default)]
struct Health {
    /// It answered (any HTTP status) since this process began keeping its state.
    answered: bool,
    /// Connection failures and timeouts since its last answer.
    failures: u32,
    /// Times it was put down since its last answer (the next down lasts twice as long).
    downs: u32,
    down_until: Option<Instant>,
}

const UNKNOWN: u8 = 0;
const HTTP1: u8 = 1;
const HTTP2: u8 = 2;

/// One push service (`scheme://host[:port]`): its queue, workers and state.
struct Origin {
    name: String,
    host: String,
    /// The push service, as a metric label (`fcm`, `mozilla`, `apple`, `wns`, `other`).
    service: &'static str,
    /// Matched by a wildcard of the allowlist: on probation until it answers.
    minted: bool,
    /// `None` for an origin that cannot be parsed (its pushes fail; validation keeps them out).
    place: Option<connect::Place>,
    /// `sondakika_push_attempts_total{push_host, result}`, registered once per origin (a
    /// labelled lookup per push showed in the profile), indexed by [`SendResult::index`].
    attempts: [::metrics::Counter; SendResult::LABELS.len()],
    queue: Mutex<VecDeque<Box<dyn Push>>>,
    notify: Notify,
    workers: AtomicUsize,
    /// Workers waiting for work (with room for another request).
    waiting: AtomicUsize,
    /// Pushes admitted and not yet finished (queued or in flight).
    outstanding: AtomicUsize,
    /// Of those, admitted while on probation (they count in [`Shared::probing`]).
    probing: AtomicUsize,
    health: Mutex<Health>,
    last_used: Mutex<Instant>,
    /// What the last connection negotiated: how many workers the origin gets.
    protocol: AtomicU8,
    paused_until: Mutex<Option<Instant>>,
    blocked_until: Mutex<Option<Instant>>,
    logged_block: AtomicBool,
}

impl Origin {
    fn max_workers(&self, shared: &Shared) -> usize {
        match self.protocol.load(Ordering::Relaxed) {
            HTTP2 => shared.http2_connections,
            HTTP1 => shared.per_origin,
            // Until the first connection says: as for HTTP/2 where TLS may offer it.
            _ if self.place.as_ref().is_some_and(|p| p.tls) => shared.http2_connections,
            _ => shared.per_origin,
        }
    }

    /// Counts a new worker if there is room for one.
    fn add_worker(&self, shared: &Shared) -> bool {
        let max = self.max_workers(shared);
        self.workers.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).is_ok()
    }

    fn pop(&self) -> Option<Box<dyn Push>> {
        self.queue.lock().expect("push queue").pop_front()
    }

    fn has_queued(&self) -> bool {
        !self.queue.lock().expect("push queue").is_empty()
    }

    fn is_blocked(&self) -> bool {
        let until = *self.blocked_until.lock().expect("origin lock");
        until.is_some_and(|t| t > Instant::now())
    }

    /// How much longer the origin is paused (after a 429).
    fn pause_left(&self) -> Option<Duration> {
        let until = (*self.paused_until.lock().expect("origin lock"))?;
        until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }

    fn touch(&self) {
        *self.last_used.lock().expect("origin lock") = Instant::now();
    }

    /// Nothing queued, in flight or running, not down, and unused for `idle`.
    fn is_idle(&self, idle: Duration) -> bool {
        self.outstanding.load(Ordering::Acquire) == 0
            && self.workers.load(Ordering::Acquire) == 0
            && self.down_left().is_none()
            && self.pause_left().is_none()
            && !self.is_blocked()
            && self.last_used.lock().expect("origin lock").elapsed() >= idle
    }

    fn on_probation(&self) -> bool {
        self.minted && !self.health.lock().expect("origin lock").answered
    }

    /// How much longer the origin is down.
    fn down_left(&self) -> Option<Duration> {
        let until = self.health.lock().expect("origin lock").down_until?;
        until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }

    /// Finishes a push of this origin, releasing its place in the counts.
    fn finish(&self, shared: &Shared, push: Box<dyn Push>, attempt: Option<SendResult>) {
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
        if self.probing.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok() {
            shared.probing.fetch_sub(1, Ordering::AcqRel);
        }
        push.finish(attempt);
    }

    /// Counts an attempt and applies what it means for the whole origin.
    fn observe(&self, attempt: &SendResult) {
        self.attempts[attempt.index()].increment(1);
        match attempt {
            // No answer: the push service could not be reached, or did not answer in time.
            SendResult::Retry { status: None, .. } => self.failed(),
            SendResult::Deferred { .. } => {}
            _ => {
                let mut h = self.health.lock().expect("origin lock");
                h.answered = true;
                h.failures = 0;
                h.downs = 0;
            }
        }
        match attempt {
            SendResult::Retry { status: Some(429), after, .. } => {
                let wait = after.unwrap_or(Duration::from_secs(5));
                *self.paused_until.lock().expect("origin lock") = Some(Instant::now() + wait);
                metrics::push_throttled(self.service);
                tracing::info!(push_host = %self.host, wait_secs = wait.as_secs(), "push service asked us to slow down");
            }
            SendResult::VapidRejected { status, error } => {
                *self.blocked_until.lock().expect("origin lock") = Some(Instant::now() + VAPID_BLOCK);
                metrics::vapid_rejected(self.service);
                if !self.logged_block.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        push_host = %self.host, status, error = %error,
                        "push service rejected our VAPID credentials: stopped sending to it for {} s; \
                         subscriptions are kept. Check vapid_subject and the VAPID key",
                        VAPID_BLOCK.as_secs()
                    );
                }
            }
            _ => {}
        }
    }

    /// A connection failure or timeout: enough of them in a row put the origin down.
    fn failed(&self) {
        let mut h = self.health.lock().expect("origin lock");
        h.failures += 1;
        let threshold = if self.minted && !h.answered { 1 } else { DOWN_AFTER };
        if h.failures < threshold || h.down_until.is_some_and(|t| t > Instant::now()) {
            return;
        }
        let down = DOWN_FIRST.saturating_mul(1 << h.downs.min(10)).min(DOWN_MAX);
        h.downs += 1;
        h.failures = 0;
        h.down_until = Some(Instant::now() + down);
        drop(h);
        metrics::push_service_down(self.service);
        tracing::info!(push_host = %self.host, down_secs = down.as_secs(), "push service unreachable: its pushes wait");
    }
}
