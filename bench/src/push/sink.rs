//! `push sink`: an accept-everything push-service double. It answers 201 to any POST and counts
//! what a real push service would look at (VAPID, encoding, TTL, urgency), for `GET /stats`.

use std::{
    collections::HashSet,
    hash::{Hash, Hasher},
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode},
    response::IntoResponse,
    routing::get,
};
use clap::Args;
use hyper::server::conn::{http1, http2};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    service::TowerToHyperService,
};
use serde_json::{Value, json};

use crate::tls::TlsListener;

#[derive(Debug, Args)]
pub struct SinkArgs {
    /// Plain HTTP/1.1 (and `/stats`).
    #[arg(long, default_value = "127.0.0.1:18290")]
    bind: SocketAddr,
    /// Also serve TLS here, offering HTTP/2 and HTTP/1.1 by ALPN like the real push services
    /// (FCM, autopush, Apple and WNS all speak HTTP/2 over TLS). Needs --tls-cert and --tls-key.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_bind: Option<SocketAddr>,
    /// PEM certificate chain for --tls-bind.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-bind.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Concurrent HTTP/2 streams allowed on one TLS connection (push services cap it; a sender
    /// needs several connections for more requests in flight).
    #[arg(long, default_value_t = 100)]
    max_streams: u32,
    /// Answer each push after this many milliseconds, like a push service across the internet.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
}

#[derive(Default)]
struct SinkStats {
    delay: Duration,
    requests: AtomicU64,
    bytes: AtomicU64,
    /// Requests with a `vapid t=..., k=...` Authorization, `Content-Encoding: aes128gcm`, a TTL
    /// and `Urgency: high`.
    vapid: AtomicU64,
    aes128gcm: AtomicU64,
    ttl: AtomicU64,
    urgency_high: AtomicU64,
    /// Microseconds since the sink started, of the first and last request (+1, 0 = none).
    first_us: AtomicU64,
    last_us: AtomicU64,
    /// Hashes of distinct Authorization values: how many VAPID tokens were signed.
    tokens: Mutex<HashSet<u64>>,
    /// TLS connections accepted since the sink started (not reset): how many connections the
    /// sender opened.
    tls_handshakes: Option<Arc<AtomicU64>>,
    started: Option<Instant>,
}

impl SinkStats {
    fn json(&self) -> Value {
        let first = self.first_us.load(Ordering::Relaxed);
        let last = self.last_us.load(Ordering::Relaxed);
        let span = if first > 0 && last >= first { (last - first) as f64 / 1e6 } else { 0.0 };
        let requests = self.requests.load(Ordering::Relaxed);
        json!({
            "requests": requests,
            "bytes": self.bytes.load(Ordering::Relaxed),
            "vapid": self.vapid.load(Ordering::Relaxed),
            "aes128gcm": self.aes128gcm.load(Ordering::Relaxed),
            "ttl": self.ttl.load(Ordering::Relaxed),
            "urgency_high": self.urgency_high.load(Ordering::Relaxed),
            "distinct_authorization": self.tokens.lock().expect("tokens").len(),
            "tls_handshakes": self.tls_handshakes.as_ref().map(|h| h.load(Ordering::Relaxed)),
            "first_to_last_secs": span,
            "pid": std::process::id(),
        })
    }

    fn reset(&self) {
        for c in [
            &self.requests,
            &self.bytes,
            &self.vapid,
            &self.aes128gcm,
            &self.ttl,
            &self.urgency_high,
            &self.first_us,
            &self.last_us,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.tokens.lock().expect("tokens").clear();
    }
}

pub async fn run(args: SinkArgs) -> anyhow::Result<()> {
    let tls = match (args.tls_bind, &args.tls_cert, &args.tls_key) {
        (Some(tls_bind), Some(cert), Some(key)) => {
            Some((tls_bind, TlsListener::bind(tls_bind, cert, key).await?))
        }
        _ => None,
    };
    let stats = Arc::new(SinkStats {
        started: Some(Instant::now()),
        delay: Duration::from_millis(args.delay_ms),
        tls_handshakes: tls.as_ref().map(|(_, listener)| listener.handshakes()),
        ..Default::default()
    });
    let app = Router::new()
        .route(
            "/stats",
            get(|State(s): State<Arc<SinkStats>>| async move { Json(s.json()) }).delete(
                |State(s): State<Arc<SinkStats>>| async move {
                    s.reset();
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .fallback(accept)
        .with_state(stats);
    let listener =
        tokio::net::TcpListener::bind(args.bind).await.with_context(|| format!("binding {}", args.bind))?;
    eprintln!("push sink listening on http://{}", args.bind);
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match tls {
        Some((tls_bind, mut tls)) => {
            eprintln!(
                "push sink listening on https://{tls_bind} (h2 with at most {} streams per connection, http/1.1)",
                args.max_streams
            );
            // hyper's builders directly, for the HTTP/2 stream limit axum::serve does not set; the
            // protocol is the one ALPN agreed on (a client that offers none gets HTTP/1.1).
            let mut h2 = http2::Builder::new(TokioExecutor::new());
            h2.max_concurrent_streams(args.max_streams);
            let plain = axum::serve(listener, app.clone()).into_future();
            let secure = async move {
                loop {
                    let (io, _) = axum::serve::Listener::accept(&mut tls).await;
                    let is_h2 = io.get_ref().1.alpn_protocol() == Some(b"h2");
                    let (io, service) = (TokioIo::new(io), TowerToHyperService::new(app.clone()));
                    let h2 = h2.clone();
                    tokio::spawn(async move {
                        let _ = if is_h2 {
                            h2.serve_connection(io, service).await
                        } else {
                            http1::Builder::new().serve_connection(io, service).await
                        };
                    });
                }
            };
            tokio::select! {
                r = plain => r?,
                _ = secure => {}
                _ = stop => {}
            }
        }
        None => axum::serve(listener, app).with_graceful_shutdown(stop).await?,
    }
    Ok(())
}

async fn accept(
    State(s): State<Arc<SinkStats>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED;
    }
    if !s.delay.is_zero() {
        tokio::time::sleep(s.delay).await;
    }
    let now = s.started.map_or(0, |t| t.elapsed().as_micros() as u64) + 1;
    s.requests.fetch_add(1, Ordering::Relaxed);
    s.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    let _ = s.first_us.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    s.last_us.fetch_max(now, Ordering::Relaxed);
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(auth) = h("authorization")
        && auth.starts_with("vapid t=")
        && auth.contains(", k=")
    {
        s.vapid.fetch_add(1, Ordering::Relaxed);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        auth.hash(&mut hasher);
        s.tokens.lock().expect("tokens").insert(hasher.finish());
    }
    if h("content-encoding") == Some("aes128gcm") {
        s.aes128gcm.fetch_add(1, Ordering::Relaxed);
    }
    if h("ttl").is_some_and(|t| t.parse::<u32>().is_ok()) {
        s.ttl.fetch_add(1, Ordering::Relaxed);
    }
    if h("urgency") == Some("high") {
        s.urgency_high.fetch_add(1, Ordering::Relaxed);
    }
    StatusCode::CREATED
}
