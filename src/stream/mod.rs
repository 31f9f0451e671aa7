//! Live tickers: the WebSocket and SSE endpoints and the hub that feeds them.
//!
//! - [`hub`]: follows the event log in PostgreSQL and fans each event out to this process's
//!   connections, sharing one serialised frame;
//! - [`ws`] and [`sse`]: one task per connection, each with its own bounded lag;
//! - [`protocol`]: the frames, and the close codes clients rely on.
//!
//! Admission (connection caps, origin check, query parsing) is shared by both transports here.

pub mod hub;
pub mod protocol;
pub mod sse;
pub mod ws;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{
    Router,
    http::{HeaderMap, header},
    routing::get,
};
use serde::Deserialize;

use crate::{
    alerts::domain::Topics, app::AppState, server::error::ApiError, server::rate_limits::AddressKey,
    telemetry::metrics,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/ws", get(ws::upgrade)).route("/sse", get(sse::stream))
}

/// Counts open ticker connections, in total and per client address.
pub struct Admission {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<AddressKey, usize>>,
}

/// A held connection slot; dropping it frees the slot.
pub struct Slot {
    admission: Arc<Admission>,
    ip: AddressKey,
    transport: &'static str,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.total.fetch_sub(1, Ordering::AcqRel);
        let mut per_ip = self.admission.per_ip.lock().expect("admission lock");
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
        metrics::connection_closed(self.transport);
    }
}

impl Admission {
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self { max_total, max_per_ip, total: AtomicUsize::new(0), per_ip: Mutex::new(HashMap::new()) }
    }

    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    fn admit(self: &Arc<Self>, ip: AddressKey, transport: &'static str) -> Result<Slot, ApiError> {
        let mut per_ip = self.per_ip.lock().expect("admission lock");
        if self.total.load(Ordering::Acquire) >= self.max_total {
            metrics::connection_rejected("server_full");
            return Err(ApiError::Unavailable(format!(
                "this server holds its maximum of {} live connections; retry shortly",
                self.max_total
            )));
        }
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            metrics::connection_rejected("per_ip");
            return Err(ApiError::TooManyRequests {
                retry_after_secs: 10,
                detail: format!("at most {} live connections per client address", self.max_per_ip),
            });
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::AcqRel);
        metrics::connection_opened(transport);
        Ok(Slot { admission: self.clone(), ip, transport })
    }
}

/// Query of `/ws` and `/sse`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    pub topics: Option<String>,
    pub since: Option<String>,
}

/// What a connection asked for, parsed.
pub struct StreamRequest {
    pub topics: Topics,
    pub since: Option<i64>,
    /// The `since` the client sent when it was above the service's head (a different or
    /// restored database, or a made-up number): the connection starts afresh instead, with
    /// `replay.reset` in its hello. `since` is then `None`.
    pub reset_from: Option<i64>,
}

impl StreamRequest {
    /// The hello's `replay`: present when the client sent `since`.
    pub fn replay(&self, count: usize, truncated: bool) -> Option<protocol::Replay> {
        match (self.reset_from, self.since) {
            (Some(asked), _) => {
                Some(protocol::Replay { since: asked, count: 0, truncated: true, reset: true })
            }
            (None, Some(since)) => Some(protocol::Replay { since, count, truncated, reset: false }),
            (None, None) => None,
        }
    }
}

/// Treats a `since` above the head as a reset. A client cannot have seen an event above the
/// newest one; left as it was, the connection would skip every event up to that number, which
/// for a made-up `since` means forever. This process's hub may lag the database by a moment
/// (another process just published), so a `since` above the local head is checked against the
/// database's sequence before it counts as above the head. If the database cannot be asked, the
/// client is trusted, as before: tickers keep working while the database is away.
pub async fn check_since(state: &AppState, request: &mut StreamRequest) {
    let Some(since) = request.since else { return };
    if since <= state.hub.head() {
        return;
    }
    let head = sqlx::query_scalar!(
        r#"select case when is_called then last_value else 0 end as "head!" from stream_seq"#
    )
    .fetch_one(&state.db)
    .await;
    match head {
        Ok(head) if since > head => {
            tracing::debug!(since, head, "since above the head: starting afresh");
            request.reset_from = Some(since);
            request.since = None;
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "cannot check since against the database; trusting it"),
    }
}

impl StreamQuery {
    fn parse(self, last_event_id: Option<&str>) -> Result<StreamRequest, ApiError> {
        let topics = match &self.topics {
            Some(csv) => Topics::parse_csv("topics", csv).map_err(|e| ApiError::Validation(vec![e]))?,
            None => Topics::default(),
        };
        // SSE's Last-Event-ID (sent by the browser on reconnect) wins over the query.
        let since = last_event_id.or(self.since.as_deref());
        let since = since
            .map(|s| {
                s.trim().parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    ApiError::field(
                        "since",
                        "must be the seq of the last event you received (a whole number)",
                    )
                })
            })
            .transpose()?;
        Ok(StreamRequest { topics, since, reset_from: None })
    }
}

/// Checks origin and caps, parses the query. Runs before any upgrade: a refused client gets a
/// plain HTTP answer (403, 422, 429, 503) it can act on.
fn admit(
    state: &AppState,
    headers: &HeaderMap,
    peer: SocketAddr,
    query: StreamQuery,
    transport: &'static str,
) -> Result<(StreamRequest, Slot), ApiError> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        if !state.origin_allowed(origin) {
            metrics::connection_rejected("origin");
            return Err(ApiError::Forbidden(format!(
                "origin `{origin}` is not allowed; add it to the `allowed_origins` setting"
            )));
        }
    }
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let request = query.parse(last_event_id)?;
    if state.shutdown.is_cancelled() {
        return Err(ApiError::Unavailable("the server is shutting down; reconnect".into()));
    }
    // Counted per network like the public API: one IPv6 /64 is one client.
    let ip = crate::server::rate_limits::client_key(state.client_ip(headers, peer));
    let slot = state.admission.admit(ip, transport)?;
    Ok((request, slot))
}
