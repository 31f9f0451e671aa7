//! HTTP plumbing shared by every handler (`api/`, `stream/`, `auth`, `web`): the main port's
//! accept loop, and what stands between a request and a handler. Handlers import from here;
//! nothing here imports a handler, the application state or a domain's store.
//!
//! The accept loop is our own, on hyper, because a public port must bound what a stranger can
//! hold open and `axum::serve` bounds nothing (no header-read timeout, no cap per address or in
//! total). `metrics_bind` is served by the same loop, with small caps of its own.
//!
//! - [`limits`]: the process-wide connection cap, kept below the open-file limit (at the cap,
//!   accepting pauses), and the per-address cap (over it, an immediate 429 and close);
//! - [`parse_errors`]: the socket wrapper that turns hyper's own bodiless answers to
//!   unparseable requests into problem+json;
//! - [`error`]: [`ApiError`](error::ApiError), the one way a request fails, answered as
//!   `application/problem+json`;
//! - [`extract`]: extractors whose rejections are those problem+json answers and name the field;
//! - [`rate_limits`]: the public push API's per-client request budgets;
//! - [`edge`]: the layers around every route (request ids, URI bounds, problem+json for every
//!   error, including those of axum and tower);
//! - [`event_stream`]: the headers of a Server-Sent Events answer.
//!
//! Connections speak HTTP/1.1, upgraded to WebSocket at `/ws`. Not HTTP/2: no browser speaks it
//! without TLS (h2c), TLS ends at the operator's proxy, which talks HTTP/1.1 to us (deploy/),
//! and hyper's header-read timeout, our bound on idle and half-sent connections, is HTTP/1's.
//!
//! hyper's `header_read_timeout` covers both halves of a lingering connection: it starts when
//! a connection opens and again the moment a kept-alive one has finished an answer (hyper
//! 1.x `proto::h1::conn::State::idle` re-arms it), and closes the connection, without an
//! answer, unless a complete request head arrives in time. So one setting bounds half-sent
//! requests and idle keep-alive alike; a request's body and handler are bounded by
//! `request_timeout_secs`, and an upgraded WebSocket by its pings.
//!
//! It must never: let a connection live without its [`limits::ConnectionSlot`] (the slot
//! travels inside the socket wrapper, so an upgraded WebSocket keeps counting), or wait on the
//! client before refusing it.

pub mod edge;
pub mod error;
pub mod event_stream;
pub mod extract;
pub mod limits;
pub mod parse_errors;
pub mod rate_limits;

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, body::Body, extract::ConnectInfo, http::Request};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

use self::error::problem_for_status;
use self::{
    limits::{ConnectionLimits, ConnectionSlot},
    parse_errors::EdgeIo,
};

/// Largest request head (request line and headers) hyper reads; beyond it hyper answers 431
/// (made problem+json by [`parse_errors`]). Bounds the memory a half-sent request can pin.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How long a refused connection may take to receive its 429 before it is dropped.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// What the accept loop needs besides the router.
pub struct Edge {
    pub limits: Arc<ConnectionLimits>,
    pub header_read_timeout: Duration,
    /// Kernel send buffer per connection; 0 leaves the kernel's autotuning.
    pub send_buffer: usize,
}

/// Serves `router` on `listener` until `shutdown` is cancelled; then stops accepting, lets each
/// open request finish (hyper's graceful shutdown: no new request on a kept-alive connection)
/// and returns when every connection task has ended. Upgraded WebSockets are not waited for
/// here: they watch `shutdown` themselves and close with 1001.
pub async fn serve(listener: TcpListener, router: Router, edge: Edge, shutdown: CancellationToken) {
    let mut http = http1::Builder::new();
    // max_header_size checks a complete head too; max_buf_size alone lets a head that arrives in
    // one large read through.
    http.timer(TokioTimer::new())
        .header_read_timeout(edge.header_read_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_HEAD_BYTES);
    let http = Arc::new(http);
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            permit = edge.limits.reserve() => permit,
            _ = shutdown.cancelled() => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        // Alerts are small and must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        if edge.send_buffer > 0 {
            let _ = socket2::SockRef::from(&tcp).set_send_buffer_size(edge.send_buffer);
        }
        match edge.limits.admit(permit, peer.ip()) {
            Ok(slot) => {
                let task = connection(tcp, slot, peer, router.clone(), http.clone(), shutdown.clone());
                connections.spawn(task);
            }
            Err(permit) => {
                let max = edge.limits.max_per_address();
                connections.spawn(async move {
                    refuse(tcp, max).await;
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// One HTTP/1.1 connection, until it closes or shutdown has let its open request finish.
async fn connection(
    tcp: TcpStream,
    slot: ConnectionSlot,
    peer: SocketAddr,
    router: Router,
    http: Arc<http1::Builder>,
    shutdown: CancellationToken,
) {
    let service = router.map_request(move |request: Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let io = TokioIo::new(EdgeIo::new(tcp, slot));
    let conn = http.serve_connection(io, TowerToHyperService::new(service)).with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Timeouts, resets and unparseable requests are the client's business.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Answers a connection over the per-address cap with 429 at once, without reading its request:
/// waiting for it would let the client hold the connection (and a place in the process's
/// total) as long as it likes. The short linger reads what the client sent meanwhile, so that
/// closing does not reset the connection before the client has read the answer.
async fn refuse(mut tcp: TcpStream, max_per_address: usize) {
    let body = problem_for_status(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        format!(
            "at most {max_per_address} connections per client address are served at once; close some and retry"
        ),
    );
    let mut answer = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\n\
         retry-after: 5\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        tcp.write_all(&answer).await?;
        tcp.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < 64 * 1024 {
            match tcp.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<_, io::Error>(())
    })
    .await;
}

/// Resets and aborts are the client's; anything else (EMFILE above all, if files ran out
/// elsewhere in the process) is ours: say so and give closing connections a moment.
async fn accept_failed(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
