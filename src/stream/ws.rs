//! `GET /ws`: the WebSocket ticker stream. One task per connection.
//!
//! The task sends `hello`, the replay, then live events. Every write has a deadline and every
//! connection lags on its own broadcast receiver, so a slow reader is closed (4001) without ever
//! delaying the hub or other readers.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

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
use futures_util::{
    SinkExt, StreamExt,
    stream::{SplitSink, SplitStream},
};
use tokio::sync::broadcast::{self, error::RecvError};

use super::{
    Slot, StreamQuery, StreamRequest, admit,
    hub::{StreamEvent, Subscription},
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

type Sink = SplitSink<WebSocket, Message>;

/// One ticker connection: the greeting and replay, the live loop, the farewell. Each part ends
/// the connection by returning why ([`End`]); only the farewell writes after that.
async fn run(socket: WebSocket, state: AppState, request: StreamRequest, _slot: Slot) {
    let (mut sink, mut stream) = socket.split();
    let Subscription { receiver, replay, head, truncated } = state.hub.subscribe(request.since);
    // Everything up to the hub's head comes from the replay; the channel only carries newer
    // events (the hub guarantees both under one lock). Live events at or below `since` were
    // already seen by the client: this process's hub may be behind the one the client last
    // talked to, or behind the database.
    let seen = head.max(request.since.unwrap_or(0));
    let end = match greet(&mut sink, &state, &request, replay, head, truncated).await {
        Err(end) => end,
        Ok(()) => live(&mut sink, &mut stream, &state, receiver, request.topics, seen).await,
    };
    farewell(&mut sink, end, state.settings.write_timeout()).await;
}

/// `hello`, then the replay: the events after the client's `since` that the hub still holds,
/// on the client's topics. `head` is the hub's head when we subscribed, which `hello` reports.
async fn greet(
    sink: &mut Sink,
    state: &AppState,
    request: &StreamRequest,
    replay: Vec<Arc<StreamEvent>>,
    head: i64,
    truncated: bool,
) -> Result<(), End> {
    let write_timeout = state.settings.write_timeout();
    let replay: Vec<Arc<StreamEvent>> =
        replay.into_iter().filter(|e| request.topics.wants(&e.topics)).collect();
    let hello = protocol::hello(
        head,
        &request.topics.to_strings(),
        request.replay(replay.len(), truncated),
        &state.limits,
    );
    send(sink, Message::Text(hello.into()), write_timeout).await?;
    for event in &replay {
        send_event(sink, event, write_timeout).await?;
    }
    Ok(())
}

/// Live events, the client's messages and our pings, until one of them ends the connection
/// (or shutdown does). Events at or below `seen` came with the replay.
async fn live(
    sink: &mut Sink,
    stream: &mut SplitStream<WebSocket>,
    state: &AppState,
    mut receiver: broadcast::Receiver<Arc<StreamEvent>>,
    mut topics: Topics,
    seen: i64,
) -> End {
    let write_timeout = state.settings.write_timeout();
    let ping_every = state.settings.ping_interval();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    let mut last_heard = Instant::now();
    loop {
        let step = tokio::select! {
            _ = state.shutdown.cancelled() => Err(End::Shutdown),
            event = receiver.recv() => on_event(sink, event, seen, &topics, write_timeout).await,
            message = stream.next() => {
                last_heard = Instant::now();
                on_client_frame(sink, message, &mut topics, write_timeout).await
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > ping_every * 2 {
                    Err(End::Dead)
                } else {
                    send(sink, Message::Ping(Default::default()), write_timeout).await
                }
            }
        };
        if let Err(end) = step {
            return end;
        }
    }
}

/// One event from the hub: sent when it is new to the client and on its topics. A receiver
/// that lagged behind the broadcast has missed events: the client is too slow.
async fn on_event(
    sink: &mut Sink,
    event: Result<Arc<StreamEvent>, RecvError>,
    seen: i64,
    topics: &Topics,
    write_timeout: Duration,
) -> Result<(), End> {
    match event {
        Ok(event) if event.seq <= seen || !topics.wants(&event.topics) => Ok(()),
        Ok(event) => send_event(sink, &event, write_timeout).await,
        Err(RecvError::Lagged(missed)) => {
            metrics::frames_dropped(missed);
            Err(End::TooSlow)
        }
        Err(RecvError::Closed) => Err(End::Shutdown),
    }
}

/// One frame from the client: a topic change is answered (a bad one with an error, and the
/// connection stays); binary and malformed frames end it; pings and pongs only show liveness.
async fn on_client_frame(
    sink: &mut Sink,
    message: Option<Result<Message, axum::Error>>,
    topics: &mut Topics,
    write_timeout: Duration,
) -> Result<(), End> {
    match message {
        Some(Ok(Message::Text(text))) => match handle_client_message(&text, topics) {
            Ok(reply) => send(sink, Message::Text(reply.into()), write_timeout).await,
            Err(problem) => {
                let _ = send(sink, Message::Text(protocol::error(&problem).into()), write_timeout).await;
                Ok(())
            }
        },
        Some(Ok(Message::Binary(_))) => Err(End::Protocol("binary frames are not part of the protocol")),
        Some(Ok(Message::Close(_))) | None => Err(End::Closed),
        Some(Ok(_)) => Ok(()), // ping/pong: liveness already noted
        Some(Err(_)) => Err(End::Protocol("malformed or oversized frame")),
    }
}

/// Tells the client why the connection ends, with the close code that tells it how to come
/// back (docs/stream-protocol.md). Best effort, bounded: a peer that cannot take the close
/// frame is simply dropped. A client that closed itself gets nothing.
async fn farewell(sink: &mut Sink, end: End, write_timeout: Duration) {
    let close = |code: u16, reason: &'static str| {
        Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }))
    };
    let frame = match end {
        End::Closed => return,
        End::TooSlow => {
            metrics::slow_client_disconnect();
            close(protocol::CLOSE_TOO_SLOW, "too slow: reconnect with since=<last seq>")
        }
        End::Dead => {
            metrics::dead_peer_disconnect();
            close(protocol::CLOSE_DEAD_PEER, "no answer to pings")
        }
        End::Shutdown => {
            close(protocol::CLOSE_GOING_AWAY, "server shutting down: reconnect with since=<last seq>")
        }
        End::Protocol(reason) => close(protocol::CLOSE_PROTOCOL, reason),
    };
    let _ = send(sink, frame, write_timeout).await;
    let _ = tokio::time::timeout(write_timeout, sink.close()).await;
}

/// Writes one event's frame and counts it as delivered.
async fn send_event(sink: &mut Sink, event: &StreamEvent, write_timeout: Duration) -> Result<(), End> {
    send(sink, Message::Text(event.frame.clone()), write_timeout).await?;
    event.mark_sent();
    metrics::frames_sent(1);
    Ok(())
}

/// Writes one frame within the deadline. A frame that cannot be written in time means the
/// client is not reading: it is too slow.
async fn send(sink: &mut Sink, message: Message, deadline: Duration) -> Result<(), End> {
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
