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
use tokio_util::sync::CancellationToken;

pub use answer::Attempt;

use super::{subscription::Allowlist, vapid::Vapid};
use crate::telemetry::metrics;

/// How long an origin stays stopped after rejecting our VAPID credentials.
const VAPID_BLOCK: Duration = Duration::from_secs(600);

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
    /// Cancels the push while it waits or is in flight (a retraction).
    fn cancelled(&self) -> &CancellationToken;
    /// The end of one try: `Some` with what the push service said (or why it could not be
    /// reached), `None` when it was not sent or not confirmed (see [`Push::headers`],
    /// [`Push::cancelled`]). Runs on the worker's task: it must not block; a retry is a new
    /// [`Sender::submit`] after a delay.
    fn finish(self: Box<Self>, attempt: Option<Attempt>);
}

pub struct Sender {
    shared: Arc<Shared>,
    origins: Mutex<HashMap<String, Arc<Origin>>>,
}

/// What every worker needs.
struct Shared {
    connector: connect::Connector,
    vapid: Arc<Vapid>,
    timeout: Duration,
    per_origin: usize,
    http2_connections: usize,
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
            connect::Connector::new(settings.allow, &settings.extra_roots, settings.connect_timeout)?;
        Ok(Self {
            shared: Arc::new(Shared {
                connector,
                vapid,
                timeout: settings.timeout,
                per_origin: settings.per_origin.max(1),
                http2_connections: settings.http2_connections.max(1),
            }),
            origins: Mutex::new(HashMap::new()),
        })
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
                None => groups.push((self.origin(push.origin(), push.host()), vec![push])),
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
    /// path of every push).
    fn origin(&self, origin: &str, host: &str) -> Arc<Origin> {
        let mut origins = self.origins.lock().expect("origins lock");
        if let Some(o) = origins.get(origin) {
            return o.clone();
        }
        let o = Arc::new(Origin {
            name: origin.to_string(),
            host: host.to_string(),
            place: connect::Place::parse(origin),
            attempts: Attempt::LABELS.map(|result| metrics::push_attempts(host, result)),
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            workers: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            protocol: AtomicU8::new(UNKNOWN),
            paused_until: Mutex::new(None),
            blocked_until: Mutex::new(None),
            logged_block: AtomicBool::new(false),
        });
        origins.insert(origin.to_string(), o.clone());
        o
    }
}

const UNKNOWN: u8 = 0;
const HTTP1: u8 = 1;
const HTTP2: u8 = 2;

/// One push service (`scheme://host[:port]`): its queue, workers and state.
struct Origin {
    name: String,
    host: String,
    /// `None` for an origin that cannot be parsed (its pushes fail; validation keeps them out).
    place: Option<connect::Place>,
    /// `sondakika_push_attempts_total{push_host, result}`, registered once per origin (a
    /// labelled lookup per push showed in the profile), indexed by [`Attempt::index`].
    attempts: [::metrics::Counter; Attempt::LABELS.len()],
    queue: Mutex<VecDeque<Box<dyn Push>>>,
    notify: Notify,
    workers: AtomicUsize,
    /// Workers waiting for work (with room for another request).
    waiting: AtomicUsize,
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

    /// Counts an attempt and applies what it means for the whole origin.
    fn observe(&self, attempt: &Attempt) {
        self.attempts[attempt.index()].increment(1);
        match attempt {
            Attempt::Retry { status: Some(429), after, .. } => {
                let wait = after.unwrap_or(Duration::from_secs(5));
                *self.paused_until.lock().expect("origin lock") = Some(Instant::now() + wait);
                metrics::push_throttled(&self.host);
                tracing::info!(push_host = %self.host, wait_secs = wait.as_secs(), "push service asked us to slow down");
            }
            Attempt::VapidRejected { status, error } => {
                *self.blocked_until.lock().expect("origin lock") = Some(Instant::now() + VAPID_BLOCK);
                metrics::vapid_rejected(&self.host);
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
}
