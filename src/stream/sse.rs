//! `GET /sse`: the same events as Server-Sent Events, for networks that block WebSockets.
//!
//! Each event's SSE bytes (`id:`, `event:`, `data:`) are built once by the hub and shared by
//! every connection, like the WebSocket frames. Hyper polls this stream only when the socket can
//! take more, so a slow reader lags on its own receiver and is ended as too slow.

use std::{collections::VecDeque, net::SocketAddr, sync::Arc};

use axum::{
    body::Bytes,
    extract::{ConnectInfo, State},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use super::{Slot, StreamQuery, StreamRequest, admit, hub::StreamEvent, protocol};
use crate::{
    alerts::domain::Topics,
    app::AppState,
    server::{event_stream, extract::Query},
    telemetry::metrics,
};

/// The SSE encoding of one stream event.
pub fn encode_event(seq: i64, kind: &str, json: &str) -> Bytes {
    // Frames are single-line JSON (serde_json never emits raw newlines), so one `data:` line.
    Bytes::from(format!("id: {seq}\nevent: {kind}\ndata: {json}\n\n"))
}

fn control(kind: &str, json: &str) -> Bytes {
    Bytes::from(format!("event: {kind}\ndata: {json}\n\n"))
}

pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<StreamQuery>,
) -> Response {
    let (mut request, slot) = match admit(&state, &headers, peer, query, "sse") {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    super::check_since(&state, &mut request).await;
    let sub = state.hub.subscribe(request.since);
    let replay: VecDeque<_> = sub.replay.into_iter().filter(|e| request.topics.wants(&e.topics)).collect();
    let hello = protocol::hello(
        sub.head,
        &request.topics.to_strings(),
        request.replay(replay.len(), sub.truncated),
        &state.limits,
    );
    let StreamRequest { topics, since, .. } = request;
    // `retry:` tells the browser's EventSource how long to wait before reconnecting.
    let first = Bytes::from(format!("retry: 3000\n{}", String::from_utf8_lossy(&control("hello", &hello))));
    let keepalive = state.settings.ping_interval();
    let conn = Conn {
        pending: VecDeque::from([first]),
        replay,
        receiver: sub.receiver,
        // Nothing at or below what the client has seen, even if this hub is behind.
        head: sub.head.max(since.unwrap_or(0)),
        topics,
        shutdown: state.shutdown.clone(),
        keepalive: tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive),
        done: false,
        _slot: slot,
    };
    event_stream::response(futures_util::stream::unfold(conn, |mut c| async move {
        c.next().await.map(|b| (b, c))
    }))
}

struct Conn {
    pending: VecDeque<Bytes>,
    replay: VecDeque<Arc<StreamEvent>>,
    receiver: broadcast::Receiver<Arc<StreamEvent>>,
    head: i64,
    topics: Topics,
    shutdown: CancellationToken,
    keepalive: tokio::time::Interval,
    done: bool,
    _slot: Slot,
}

impl Conn {
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(b) = self.pending.pop_front() {
            return Some(b);
        }
        if let Some(e) = self.replay.pop_front() {
            e.mark_sent();
            metrics::frames_sent(1);
            return Some(e.sse.clone());
        }
        if self.done {
            return None;
        }
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    self.done = true;
                    return Some(close(protocol::CLOSE_GOING_AWAY, "server shutting down: reconnect"));
                }
                event = self.receiver.recv() => match event {
                    Ok(e) => {
                        if e.seq <= self.head || !self.topics.wants(&e.topics) {
                            continue;
                        }
                        e.mark_sent();
                        metrics::frames_sent(1);
                        return Some(e.sse.clone());
                    }
                    Err(RecvError::Lagged(missed)) => {
                        metrics::frames_dropped(missed);
                        metrics::slow_client_disconnect();
                        self.done = true;
                        return Some(close(protocol::CLOSE_TOO_SLOW, "too slow: reconnect with Last-Event-ID"));
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = self.keepalive.tick() => return Some(Bytes::from_static(b": keep-alive\n\n")),
            }
        }
    }
}

fn close(code: u16, reason: &str) -> Bytes {
    control("close", &serde_json::json!({ "type": "close", "code": code, "reason": reason }).to_string())
}
