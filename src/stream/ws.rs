//! `GET /ws`: the WebSocket ticker stream. One task per connection.
//!
//! The task sends `hello`, the replay, then live events. Every write has a deadline and every
//! connection lags on its own broadcast receiver, so a slow reader is closed (4001) without ever
//! delaying the hub or other readers.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use axum::{
    extract::{
        ConnectInfo, State,
        ws::{
            CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
        },
    },
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use futures_util::{SinkExt, StreamExt, stream::SplitSink};
use tokio::sync::broadcast::error::RecvError;

use super::{
    Slot, StreamQuery, StreamRequest, admit,
    hub::StreamEvent,
    protocol::{self, ClientMessage},
};
use crate::{
    alerts::domain::Topics,
    app::AppState,
    server::{error::ApiError, extract::Query},
    telemetry::metrics,
};

/// Largest frame a client may send (topic changes are small).
pub const MAX_CLIENT_MESSAGE: usize = 4096;
const READ_BUFFER: usize = 1024;

pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<StreamQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return ApiError::field(
                "Upgrade",
                format!("this endpoint speaks WebSocket only ({e}); use /sse for Server-Sent Events"),
            )
            .into_response();
        }
    };
    let (request, slot) = match admit(&state, &headers, peer, query, "ws") {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let mut request = request;
    super::check_since(&state, &mut request).await;
    // tungstenite's default read buffer is 128 KiB, zero-filled before every read: resident per
    // connection and cleared on every wake-up. Client frames are small (≤ MAX_CLIENT_MESSAGE), so
    // 1 KiB suffices and grows when a larger frame comes (BENCHMARKS.md: 135 → 4.4 KiB per idle
    // ticker, and a quarter less CPU per delivery).
    ws.read_buffer_size(READ_BUFFER)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| {
            let tracker = state.tracker.clone();
            // Tracked so that shutdown waits for the close frame to go out.
            tracker.track_future(run(socket, state, request, slot))
        })
}

enum End {
    Closed,
    TooSlow,
    Dead,
    Shutdown,
    Protocol(&'static str),
}

async fn run(socket: WebSocket, state: AppState, request: StreamRequest, _slot: Slot) {
    let (mut sink, mut stream) = socket.split();
    let sub = state.hub.subscribe(request.since);
    let since = request.since;
    let mut receiver = sub.receiver;
    let write_timeout = state.settings.write_timeout();
    // Everything up to the hub's head comes from the replay; the channel only carries newer
    // events (the hub guarantees both under one lock). Live events at or below `since` were
    // already seen by the client: this process's hub may be behind the one the client last
    // talked to, or behind the database.
    let head = sub.head.max(since.unwrap_or(0));

    let replay: Vec<Arc<StreamEvent>> =
        sub.replay.into_iter().filter(|e| request.topics.wants(&e.topics)).collect();
    let hello = protocol::hello(
        sub.head,
        &request.topics.to_strings(),
        request.replay(replay.len(), sub.truncated),
        &state.limits,
    );
    let mut topics = request.topics;
    let mut end = send(&mut sink, Message::Text(hello.into()), write_timeout).await.err();
    if end.is_none() {
        for event in &replay {
            if let Err(e) = send(&mut sink, Message::Text(event.frame.clone()), write_timeout).await {
                end = Some(e);
                break;
            }
            event.mark_sent();
            metrics::frames_sent(1);
        }
    }

    let ping_every = state.settings.ping_interval();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    let mut last_heard = Instant::now();

    let end = match end {
        Some(e) => e,
        None => loop {
            tokio::select! {
                _ = state.shutdown.cancelled() => break End::Shutdown,
                event = receiver.recv() => match event {
                    Ok(event) => {
                        if event.seq <= head || !topics.wants(&event.topics) {
                            continue;
                        }
                        if let Err(e) = send(&mut sink, Message::Text(event.frame.clone()), write_timeout).await {
                            break e;
                        }
                        event.mark_sent();
                        metrics::frames_sent(1);
                    }
                    Err(RecvError::Lagged(missed)) => {
                        metrics::frames_dropped(missed);
                        break End::TooSlow;
                    }
                    Err(RecvError::Closed) => break End::Shutdown,
                },
                message = stream.next() => {
                    last_heard = Instant::now();
                    match message {
                        Some(Ok(Message::Text(text))) => match handle_client_message(&text, &mut topics) {
                            Ok(reply) => {
                                if let Err(e) = send(&mut sink, Message::Text(reply.into()), write_timeout).await {
                                    break e;
                                }
                            }
                            Err(problem) => {
                                let _ = send(&mut sink, Message::Text(protocol::error(&problem).into()), write_timeout).await;
                            }
                        },
                        Some(Ok(Message::Binary(_))) => break End::Protocol("binary frames are not part of the protocol"),
                        Some(Ok(Message::Close(_))) | None => break End::Closed,
                        Some(Ok(_)) => {} // ping/pong: liveness already noted
                        Some(Err(_)) => break End::Protocol("malformed or oversized frame"),
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > ping_every * 2 {
                        break End::Dead;
                    }
                    if let Err(e) = send(&mut sink, Message::Ping(Default::default()), write_timeout).await {
                        break e;
                    }
                }
            }
        },
    };

    let close = |code: u16, reason: &'static str| {
        Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }))
    };
    let farewell = match end {
        End::Closed => None,
        End::TooSlow => {
            metrics::slow_client_disconnect();
            Some(close(protocol::CLOSE_TOO_SLOW, "too slow: reconnect with since=<last seq>"))
        }
        End::Dead => {
            metrics::dead_peer_disconnect();
            Some(close(protocol::CLOSE_DEAD_PEER, "no answer to pings"))
        }
        End::Shutdown => {
            Some(close(protocol::CLOSE_GOING_AWAY, "server shutting down: reconnect with since=<last seq>"))
        }
        End::Protocol(reason) => Some(close(protocol::CLOSE_PROTOCOL, reason)),
    };
    if let Some(frame) = farewell {
        // Best effort, bounded: a peer that cannot take the close frame is simply dropped.
        let _ = send(&mut sink, frame, write_timeout).await;
        let _ = tokio::time::timeout(write_timeout, sink.close()).await;
    }
}

/// Writes one frame within the deadline. A frame that cannot be written in time means the
/// client is not reading: it is too slow.
async fn send(
    sink: &mut SplitSink<WebSocket, Message>,
    message: Message,
    deadline: std::time::Duration,
) -> Result<(), End> {
    match tokio::time::timeout(deadline, sink.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Closed),
        Err(_) => Err(End::TooSlow),
    }
}

fn handle_client_message(text: &str, topics: &mut Topics) -> Result<String, String> {
    let message: ClientMessage = serde_json::from_str(text).map_err(|e| {
        format!("could not understand the message ({e}); send {{\"type\":\"subscribe\",\"topics\":[...]}}")
    })?;
    match message {
        ClientMessage::Subscribe { topics: wanted } => {
            *topics = Topics::parse("topics", &wanted).map_err(|e| e.to_string())?;
            Ok(protocol::subscribed(&topics.to_strings()))
        }
    }
}
