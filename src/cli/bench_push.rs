//! Web Push benchmarks for BENCHMARKS.md (`sondakika bench push ...`).
//!
//! - `sink`: an accept-everything push-service double (answers 201 to any POST, counts), over
//!   plain HTTP/1.1 and, with `--tls-bind`, over TLS with HTTP/2 (a stream limit per
//!   connection) and HTTP/1.1 like the real push services; `--delay-ms` makes it far away;
//! - `crypto`: the per-message cost of encryption and VAPID, in process, against the floor
//!   (one P-256 key generation + one ECDH + HKDF + AES-128-GCM with aws-lc-rs directly);
//! - `seed`: bulk-inserts M subscriptions pointing at a sink;
//! - `fanout`: publishes one alert to a running server and measures the fan-out to 100 %: wall
//!   time, pushes/s and the CPU time the server (and PostgreSQL, and the sink) spent per push.
//!
//! `scripts/bench-push` runs them in order, then the Node `web-push` reference
//! (bench/node-webpush) against the same sink.

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

use anyhow::{Context, bail};
use aws_lc_rs::{
    aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey},
    agreement::{self, ECDH_P256, EphemeralPrivateKey, UnparsedPublicKey},
    hkdf::{self, HKDF_SHA256, KeyType, Salt},
    rand::{SecureRandom, SystemRandom},
};
use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode},
    response::IntoResponse,
    routing::get,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::{
    alerts::{
        domain::{AlertStatus, Urgency},
        store::Alert,
        view::StepKind,
    },
    config::{Secret, Settings},
    db::{self, Database},
    push::{ece, payload, vapid},
};

#[derive(Debug, Subcommand)]
pub enum PushBench {
    /// An accept-everything push-service double: 201 to any POST, `GET /stats` for the counts.
    Sink(SinkArgs),
    /// Per-message cost of encryption and VAPID signing, in process, against the floor.
    Crypto(CryptoArgs),
    /// Bulk-inserts subscriptions whose endpoints point at a sink (uses the server's settings
    /// to find the database, like `sondakika token`).
    Seed(SeedArgs),
    /// Publishes one alert to a running server and measures its Web Push fan-out to 100 %.
    Fanout(FanoutArgs),
}

pub async fn run(cmd: PushBench) -> anyhow::Result<()> {
    match cmd {
        PushBench::Sink(a) => sink(a).await,
        PushBench::Crypto(a) => crypto(a).await,
        PushBench::Seed(a) => seed(a).await,
        PushBench::Fanout(a) => fanout(a).await,
    }
}

/// Linux reports process CPU times in USER_HZ ticks, which the kernel ABI fixes at 100.
const USER_HZ: f64 = 100.0;

// ---------------------------------------------------------------------------------------------
// The alert every run sends: a realistic breaking-news alert, ~1 KB of payload.

const HEADLINE: &str =
    "Burdur'da 5,1 büyüklüğünde deprem: AFAD ilk belirlemeleri açıkladı, okullar yarın tatil edildi";
const SUMMARY: &str = "Burdur merkezli 5,1 büyüklüğündeki deprem saat 14.32'de kaydedildi ve çevre illerde de \
hissedildi. AFAD, şu ana kadar can kaybı ya da ağır hasar bildirilmediğini, ekiplerin köylerde tespit \
çalışmalarını sürdürdüğünü açıkladı. Valilik, tedbir amacıyla il genelindeki okulların yarın tatil \
edildiğini duyurdu. Vatandaşların hasar gören binalara girmemesi ve resmi açıklamaları takip etmesi istendi.";
const URL_BASE: &str =
    "https://www.burdurweb.com/haber/burdurda-5-1-buyuklugunde-deprem-afad-ilk-belirlemeleri-acikladi";
const IMAGE: &str = "https://img.burdurweb.com/2025/11/burdur-deprem-afad-ekipleri-sahada-1200x675.jpg";
/// The correction `bench push fanout --correct` publishes: the magnitude revised, as AFAD often
/// does within the hour (the same length, so the payload costs what the original's did).
const CORRECTED_HEADLINE: &str =
    "Burdur'da 5,3 büyüklüğünde deprem: AFAD ilk belirlemeleri açıkladı, okullar yarın tatil edildi";
const TTL_SECS: i32 = 3600;

/// The `POST /api/v1/alerts` body (a unique URL per run: the same URL would be deduplicated).
fn alert_request(run: &str) -> Value {
    json!({
        "headline": HEADLINE,
        "summary": SUMMARY,
        "url": format!("{URL_BASE}-{run}"),
        "image": IMAGE,
        "topics": ["gundem", "deprem"],
        "label": "SON DAKİKA",
        "ttl_seconds": TTL_SECS,
        "urgency": "high",
    })
}

/// The same alert as the server stores it, for payloads built in process.
fn sample_alert() -> Alert {
    let now = chrono::Utc::now();
    Alert {
        id: uuid::Uuid::now_v7(),
        seq: Some(1234),
        status: AlertStatus::Live,
        revision: 0,
        label: "SON DAKİKA".into(),
        headline: HEADLINE.into(),
        summary: Some(SUMMARY.into()),
        url: format!("{URL_BASE}-{}", now.timestamp_millis()),
        image: Some(IMAGE.into()),
        article_id: None,
        topics: vec!["deprem".into(), "gundem".into()],
        urgency: Urgency::High,
        ttl_seconds: TTL_SECS,
        send_at: None,
        created_at: now,
        published_at: Some(now),
        updated_at: now,
        retracted_at: None,
        retract_reason: None,
        created_by: Some("bench".into()),
        tickers_reached: 0,
    }
}

/// An alert as `GET /api/v1/alerts/{id}` shows it, back into the stored shape.
fn alert_from_view(v: &Value) -> anyhow::Result<Alert> {
    let s = |k: &str| v[k].as_str().map(String::from);
    let t = |k: &str| -> Option<chrono::DateTime<chrono::Utc>> { v[k].as_str().and_then(|x| x.parse().ok()) };
    Ok(Alert {
        id: s("id").context("alert without id")?.parse()?,
        seq: v["seq"].as_i64(),
        status: serde_json::from_value(v["status"].clone()).context("alert without a status")?,
        revision: v["revision"].as_i64().unwrap_or(0) as i32,
        label: s("label").unwrap_or_default(),
        headline: s("headline").unwrap_or_default(),
        summary: s("summary"),
        url: s("url").unwrap_or_default(),
        image: s("image"),
        article_id: s("article_id"),
        topics: v["topics"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
            .unwrap_or_default(),
        urgency: serde_json::from_value(v["urgency"].clone()).context("alert without an urgency")?,
        ttl_seconds: v["ttl_seconds"].as_i64().unwrap_or(0) as i32,
        send_at: t("send_at"),
        created_at: t("created_at").context("alert without created_at")?,
        published_at: t("published_at"),
        updated_at: t("updated_at").context("alert without updated_at")?,
        retracted_at: t("retracted_at"),
        retract_reason: s("retract_reason"),
        created_by: s("created_by"),
        tickers_reached: 0,
    })
}

// ---------------------------------------------------------------------------------------------
// sink

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

async fn sink(args: SinkArgs) -> anyhow::Result<()> {
    let stats = Arc::new(SinkStats {
        started: Some(Instant::now()),
        delay: Duration::from_millis(args.delay_ms),
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
    match (args.tls_bind, &args.tls_cert, &args.tls_key) {
        (Some(tls_bind), Some(cert), Some(key)) => {
            let mut tls = TlsListener::bind(tls_bind, cert, key).await?;
            eprintln!(
                "push sink listening on https://{tls_bind} (h2 with at most {} streams per connection, http/1.1)",
                args.max_streams
            );
            // hyper-util's builder directly, for the HTTP/2 stream limit axum::serve does not set.
            let mut builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder.http2().max_concurrent_streams(args.max_streams);
            let plain = axum::serve(listener, app.clone()).into_future();
            let secure = async move {
                loop {
                    let (io, _) = axum::serve::Listener::accept(&mut tls).await;
                    let service = hyper_util::service::TowerToHyperService::new(app.clone());
                    let builder = builder.clone();
                    tokio::spawn(async move {
                        let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service).await;
                    });
                }
            };
            tokio::select! {
                r = plain => r?,
                _ = secure => {}
                _ = stop => {}
            }
        }
        _ => axum::serve(listener, app).with_graceful_shutdown(stop).await?,
    }
    Ok(())
}

/// A TLS listener for axum::serve, offering HTTP/2 and HTTP/1.1 by ALPN: the handshake happens
/// in `accept` (push-service doubles see few connections; a failed handshake is dropped and the
/// next connection accepted). Also used by the tests' push-service double.
pub struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handshakes: Arc<AtomicU64>,
}

impl TlsListener {
    pub async fn bind(
        addr: SocketAddr,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> anyhow::Result<Self> {
        use tokio_rustls::rustls::{
            self,
            pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
        };
        let certs = CertificateDer::pem_file_iter(cert)
            .with_context(|| format!("reading {}", cert.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parsing {}", cert.display()))?;
        let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        Ok(Self {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            handshakes: Arc::default(),
        })
    }

    /// Counts the TLS connections accepted (each a completed handshake).
    pub fn handshakes(&self) -> Arc<AtomicU64> {
        self.handshakes.clone()
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            match tokio::time::timeout(Duration::from_secs(10), self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    self.handshakes.fetch_add(1, Ordering::Relaxed);
                    return (tls, addr);
                }
                Ok(Err(e)) => eprintln!("sink: TLS handshake with {addr} failed: {e}"),
                Err(_) => eprintln!("sink: TLS handshake with {addr} timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
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

// ---------------------------------------------------------------------------------------------
// crypto

#[derive(Debug, Args)]
pub struct CryptoArgs {
    /// Messages per round of a measurement (VAPID signing: a fifth as many); each figure is
    /// the fastest of 5 rounds.
    #[arg(long, default_value_t = 2000)]
    iterations: u32,
    /// Skip the measurement of the cached `Vapid::authorization`, which needs the database of
    /// the settings to load the VAPID key (and creates the key there if there is none).
    #[arg(long)]
    no_db: bool,
    /// Print one JSON object on stdout (the table then goes to stderr).
    #[arg(long)]
    json: bool,
}

struct Len(usize);
impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand<const N: usize>(prk: &hkdf::Prk, info: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    prk.expand(info, Len(N)).and_then(|okm| okm.fill(&mut out)).expect("hkdf expand");
    out
}

/// The floor: what RFC 8291 requires per message, done directly with aws-lc-rs and nothing
/// else (an ephemeral key, one ECDH with peer-point validation, four HKDF steps, one seal).
fn floor_encrypt(rng: &SystemRandom, ua_public: &[u8; 65], auth: &[u8; 16], plaintext: &[u8]) -> Vec<u8> {
    let mut salt = [0u8; 16];
    rng.fill(&mut salt).expect("rng");
    let private = EphemeralPrivateKey::generate(&ECDH_P256, rng).expect("keygen");
    let as_public = private.compute_public_key().expect("public key");
    let as_public = as_public.as_ref();
    let peer = UnparsedPublicKey::new(&ECDH_P256, ua_public);
    let ikm: [u8; 32] = agreement::agree_ephemeral(private, peer, (), |z| {
        let prk = Salt::new(HKDF_SHA256, auth).extract(z);
        Ok(expand::<32>(&prk, &[b"WebPush: info\0", ua_public, as_public]))
    })
    .expect("ecdh");
    let prk = Salt::new(HKDF_SHA256, &salt).extract(&ikm);
    let cek: [u8; 16] = expand(&prk, &[b"Content-Encoding: aes128gcm\0"]);
    let nonce: [u8; 12] = expand(&prk, &[b"Content-Encoding: nonce\0"]);
    let mut body = Vec::with_capacity(86 + plaintext.len() + 17);
    body.extend_from_slice(&salt);
    body.extend_from_slice(&4096u32.to_be_bytes());
    body.push(65);
    body.extend_from_slice(as_public);
    body.extend_from_slice(plaintext);
    body.push(2);
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &cek).expect("key"));
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut body[86..])
        .expect("seal");
    body.extend_from_slice(tag.as_ref());
    body
}

/// Rounds per measurement: the machine has two cores shared with everything else, so each
/// figure is the fastest of several rounds (the one least disturbed), not their mean, and the
/// rounds of the functions compared are interleaved so that a disturbance hits them alike.
const ROUNDS: u32 = 7;

/// Functions measured together: `(key, description, calls per round, function)`.
type Measured<'a> = Vec<(&'static str, &'static str, u32, Box<dyn FnMut(u32) + 'a>)>;

/// Microseconds per call of each function: the fastest of [`ROUNDS`] interleaved rounds, after
/// a warm-up of a tenth of a round each.
fn measure(mut fs: Measured<'_>) -> Vec<(&'static str, &'static str, f64)> {
    let mut best = vec![f64::INFINITY; fs.len()];
    for (_, _, n, f) in fs.iter_mut() {
        for i in 0..(*n / 10).max(1) {
            f(i);
        }
    }
    let len = fs.len();
    for r in 0..ROUNDS {
        // Each round starts with a different function: no one always runs first or last.
        for j in 0..len {
            let k = (j + r as usize) % len;
            let (_, _, n, f) = &mut fs[k];
            let n = (*n).max(1);
            let start = Instant::now();
            for i in 0..n {
                f(r * n + i);
            }
            best[k] = best[k].min(start.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
    }
    fs.iter().zip(best).map(|((key, what, _, _), us)| (*key, *what, us)).collect()
}

/// A subscriber key pair as a browser makes one: (public point, auth secret, private scalar).
fn subscriber_keys(rng: &SystemRandom) -> ([u8; 65], [u8; 16]) {
    let private = agreement::PrivateKey::generate(&ECDH_P256).expect("keygen");
    let public: [u8; 65] =
        private.compute_public_key().expect("public").as_ref().try_into().expect("65 bytes");
    let mut auth = [0u8; 16];
    rng.fill(&mut auth).expect("rng");
    (public, auth)
}

async fn crypto(args: CryptoArgs) -> anyhow::Result<()> {
    let n = args.iterations.max(10);
    let rng = SystemRandom::new();
    let plaintext = payload::build(&sample_alert(), StepKind::Alert, false);
    let (ua_public, auth) = subscriber_keys(&rng);

    // The web-push crate's path: `WebPushMessageBuilder::build` → `HttpEce::encrypt` →
    // `ece::encrypt` (OpenSSL). `ece` is not a normal dependency of this crate (only a
    // dev-dependency), so it is reached through web-push's public API: the extra work is two
    // short base64 decodes and one URI parse.
    let info = web_push::SubscriptionInfo::new(
        "https://fcm.googleapis.com/fcm/send/bench".to_string(),
        B64.encode(ua_public),
        B64.encode(auth),
    );
    let subject = "mailto:bench@burdurweb.com";
    let vapid_private = vapid::generate_private_key()?;
    let audience_info = web_push::SubscriptionInfo::new("https://fcm.googleapis.com/fcm/send/bench", "", "");
    let partial = web_push::VapidSignatureBuilder::from_base64_no_sub(&vapid_private).expect("vapid key");
    let (mut ours_vapid, mut db_note) = (None, None);
    if !args.no_db {
        match load_vapid(subject).await {
            Ok(v) => ours_vapid = Some(v),
            Err(e) => db_note = Some(format!("cached VAPID not measured: {e:#}")),
        }
    }

    let mut fs: Measured<'_> = vec![
        (
            "floor",
            "floor: aws-lc-rs direct, P-256 keygen + ECDH + 4×HKDF + AES-128-GCM",
            n,
            Box::new(|_| {
                std::hint::black_box(floor_encrypt(&rng, &ua_public, &auth, &plaintext));
            }),
        ),
        (
            "keygen",
            "  part: P-256 key generation + public point",
            n,
            Box::new(|_| {
                let k = EphemeralPrivateKey::generate(&ECDH_P256, &rng).expect("keygen");
                std::hint::black_box(k.compute_public_key().expect("public"));
            }),
        ),
        (
            "keygen_ecdh",
            "  part: key generation + ECDH with peer-point validation",
            n,
            Box::new(|_| {
                let k = EphemeralPrivateKey::generate(&ECDH_P256, &rng).expect("keygen");
                let peer = UnparsedPublicKey::new(&ECDH_P256, &ua_public);
                std::hint::black_box(agreement::agree_ephemeral(k, peer, (), |z| Ok(z[0])).expect("ecdh"));
            }),
        ),
        (
            "sondakika_ece",
            "sondakika::push::ece::encrypt",
            n,
            Box::new(|_| {
                std::hint::black_box(ece::encrypt(&ua_public, &auth, &plaintext).expect("encrypt"));
            }),
        ),
        (
            "web_push_ece",
            "web-push crate: WebPushMessageBuilder::build (→ ece::encrypt)",
            n,
            Box::new(|_| {
                let mut b = web_push::WebPushMessageBuilder::new(&info);
                b.set_payload(web_push::ContentEncoding::Aes128Gcm, &plaintext);
                std::hint::black_box(b.build().expect("web-push encrypt"));
            }),
        ),
        (
            "vapid_web_push_per_call",
            "VAPID: web_push::VapidSignatureBuilder::from_base64 + sign, per call",
            n / 5,
            Box::new(|_| {
                let mut b = web_push::VapidSignatureBuilder::from_base64(&vapid_private, &audience_info)
                    .expect("vapid key");
                b.add_claim("sub", subject);
                std::hint::black_box(b.build().expect("sign"));
            }),
        ),
        (
            "vapid_web_push_sign_only",
            "VAPID: PartialVapidSignatureBuilder clone + sign (key parsed once)",
            n / 5,
            Box::new(|_| {
                let mut b = partial.clone().add_sub_info(&audience_info);
                b.add_claim("sub", subject);
                std::hint::black_box(b.build().expect("sign"));
            }),
        ),
    ];
    if let Some(v) = &ours_vapid {
        let origin = "https://fcm.googleapis.com";
        v.authorization(origin)?;
        fs.push((
            "vapid_ours_miss",
            "VAPID: Vapid::authorization, a new origin each call (signs)",
            n / 5,
            Box::new(move |i| {
                std::hint::black_box(v.authorization(&format!("https://push{i}.example.net")).expect("sign"));
            }),
        ));
        fs.push((
            "vapid_ours_cached",
            "VAPID: Vapid::authorization, second call (cached)",
            n * 10,
            Box::new(move |_| {
                std::hint::black_box(v.authorization(origin).expect("cached"));
            }),
        ));
    }
    let rows = measure(fs);
    let us = |k: &str| rows.iter().find(|r| r.0 == k).map_or(f64::NAN, |r| r.2);
    let floor = us("floor");

    let mut map: serde_json::Map<String, Value> =
        rows.iter().map(|(k, _, v)| (k.to_string(), json!(round2(*v)))).collect();
    map.insert("ecdh".into(), json!(round2(us("keygen_ecdh") - us("keygen"))));
    map.insert("floor_rest".into(), json!(round2(floor - us("keygen_ecdh"))));
    let out = json!({
        "iterations_per_round": n,
        "rounds": ROUNDS,
        "payload_bytes": plaintext.len(),
        "us_per_op": map,
        "ratio_to_floor": {
            "sondakika_ece": round2(us("sondakika_ece") / floor),
            "web_push_ece": round2(us("web_push_ece") / floor),
        },
        "note": db_note,
    });
    let mut table = format!(
        "crypto, per message of {} bytes of payload (fastest of {ROUNDS} interleaved rounds):\n",
        plaintext.len()
    );
    for (_, what, v) in &rows {
        table.push_str(&format!("  {what:<74} {v:>9.2} µs/op\n"));
    }
    table.push_str(&format!(
        "  (so ECDH alone ≈ {:.2} µs, HKDF + AES-GCM + buffers ≈ {:.2} µs)\n",
        us("keygen_ecdh") - us("keygen"),
        floor - us("keygen_ecdh")
    ));
    table.push_str(&format!(
        "  ratio to floor: ours {:.2}×, web-push crate {:.2}×\n",
        us("sondakika_ece") / floor,
        us("web_push_ece") / floor
    ));
    if let Some(n) = &db_note {
        table.push_str(&format!("  note: {n}\n"));
    }
    if args.json {
        eprint!("{table}");
        println!("{out}");
    } else {
        print!("{table}");
    }
    Ok(())
}

/// The real `Vapid`, loaded from the settings' database (it has no other constructor).
async fn load_vapid(subject: &str) -> anyhow::Result<vapid::Vapid> {
    let settings = Settings::load(None)?;
    let database = Database::locate(&settings).await?;
    let pool = db::connect(database.options.clone(), 2).await?;
    db::migrate(&pool).await?;
    let v = vapid::Vapid::load(&pool, None::<&Secret>, subject, false).await?;
    pool.close().await;
    drop(database);
    Ok(v)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

// ---------------------------------------------------------------------------------------------
// seed

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// Subscriptions to insert.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Port of the sink on localhost: endpoints are `http://localhost:PORT/push/<run>/<n>`.
    #[arg(long)]
    sink_port: u16,
    /// Endpoints use https (the sink's --tls-bind port).
    #[arg(long)]
    tls: bool,
    /// Distinct subscriber key pairs, reused round-robin (generating a million is slow and
    /// changes nothing: every message still gets its own ephemeral key).
    #[arg(long, default_value_t = 1000)]
    key_pool: usize,
    /// Delete every existing subscription first.
    #[arg(long)]
    replace: bool,
    /// Instead, insert this many subscriptions on push services that cannot be reached: half on
    /// made-up names that do not resolve (`nN.unreachable.invalid`, which the server must allow
    /// as `*.unreachable.invalid`), half on a loopback port that refuses connections.
    #[arg(long)]
    unreachable: Option<u64>,
}

async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    let settings = Settings::load(None)?;
    let database = Database::locate(&settings).await?;
    let pool = db::connect(database.options.clone(), 2).await?;
    let vapid_key: Vec<u8> = sqlx::query_scalar("select public_key from vapid_keys where id = 1")
        .fetch_optional(&pool)
        .await?
        .context("no VAPID key yet: start the server with SONDAKIKA_VAPID_SUBJECT set first")?;
    let rng = SystemRandom::new();
    let started = Instant::now();
    let (mut p256dh, mut auth): (Vec<Vec<u8>>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
    for _ in 0..args.key_pool.max(1) {
        let (p, a) = subscriber_keys(&rng);
        p256dh.push(p.to_vec());
        auth.push(a.to_vec());
    }
    if args.replace {
        sqlx::query("delete from push_subscriptions").execute(&pool).await?;
    }
    let run = chrono::Utc::now().timestamp_millis();
    if let Some(n) = args.unreachable {
        sqlx::query(
            "insert into push_subscriptions (endpoint, origin, host, p256dh, auth, topics, vapid_key)
             select e, o, h, ($1::bytea[])[1 + g % $3], ($2::bytea[])[1 + g % $3], '{}', $4
             from generate_series(0::bigint, $5::bigint - 1) g,
             lateral (select case when g % 2 = 0
                 then 'https://n' || g || '-' || $6 || '.unreachable.invalid'
                 else 'http://localhost:1' end as o) origin,
             lateral (select o || '/push/' || $6 || '/' || g as e,
                             case when g % 2 = 0 then substr(o, 9) else 'localhost' end as h) rest",
        )
        .bind(&p256dh)
        .bind(&auth)
        .bind(p256dh.len() as i64)
        .bind(&vapid_key)
        .bind(n as i64)
        .bind(run.to_string())
        .execute(&pool)
        .await?;
        sqlx::query("vacuum analyze push_subscriptions").execute(&pool).await?;
        pool.close().await;
        eprintln!(
            "seeded {n} subscriptions on unreachable push services in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let scheme = if args.tls { "https" } else { "http" };
    let prefix = format!("{scheme}://localhost:{}/push/{run}/", args.sink_port);
    let origin = format!("{scheme}://localhost:{}", args.sink_port);
    const CHUNK: u64 = 50_000;
    let mut done = 0u64;
    while done < args.count {
        let upto = (done + CHUNK).min(args.count);
        sqlx::query(
            "insert into push_subscriptions (endpoint, origin, host, p256dh, auth, topics, vapid_key)
             select $1 || g, $2, 'localhost', ($3::bytea[])[1 + g % $5], ($4::bytea[])[1 + g % $5], '{}', $6
             from generate_series($7::bigint, $8::bigint) g",
        )
        .bind(&prefix)
        .bind(&origin)
        .bind(&p256dh)
        .bind(&auth)
        .bind(p256dh.len() as i64)
        .bind(&vapid_key)
        .bind(done as i64)
        .bind(upto as i64 - 1)
        .execute(&pool)
        .await?;
        done = upto;
    }
    // What autovacuum would do soon anyway: the fan-out's queries are planned on real figures.
    sqlx::query("vacuum analyze push_subscriptions").execute(&pool).await?;
    let active: i64 =
        sqlx::query_scalar("select count(*) from push_subscriptions where active").fetch_one(&pool).await?;
    pool.close().await;
    eprintln!(
        "seeded {} subscriptions ({} key pairs) → {origin} in {:.1} s; {active} active in total",
        args.count,
        p256dh.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// fanout

#[derive(Debug, Args)]
pub struct FanoutArgs {
    /// Base URL of the sondakika server.
    #[arg(long, default_value = "http://127.0.0.1:18282")]
    server: String,
    /// Editor token.
    #[arg(long, env = "SONDAKIKA_TOKEN", hide_env_values = true)]
    token: String,
    /// PID of the server process: its CPU time is read before the publish and at 100 %.
    #[arg(long)]
    server_pid: u32,
    /// PostgreSQL's data directory (its postmaster.pid): PostgreSQL's CPU time is read too.
    #[arg(long)]
    pg_data: Option<PathBuf>,
    /// The server's metrics endpoint (`metrics_bind`): the CPU its encryption took in this
    /// fan-out is read from it, giving crypto's share of the server's CPU in the same run.
    #[arg(long)]
    metrics: Option<String>,
    /// The sink's base URL (`GET /stats`); its PID comes from there.
    #[arg(long)]
    sink: Option<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 1800)]
    timeout_secs: u64,
    /// Write the payload the server sends (rebuilt from the published alert) to this file.
    #[arg(long)]
    payload_out: Option<PathBuf>,
    /// Print one JSON object on stdout (the summary then goes to stderr).
    #[arg(long)]
    json: bool,
    /// Done when this many pushes are sent (the reachable subscribers), not when none is
    /// pending: pushes to unreachable push services go on being retried long after.
    #[arg(long)]
    reachable: Option<i64>,
    /// Instead of publishing a new alert, correct this one (`PATCH`, after its fan-out) and
    /// measure the correction's push step to every device that was sent it.
    #[arg(long, value_name = "ALERT_ID")]
    correct: Option<String>,
    /// How that correction treats the notification already shown: `quiet` or `renotify`.
    #[arg(long, default_value = "quiet", requires = "correct")]
    correct_push: String,
}

/// The figures of the push step a run measures: the original's (`push`), or the correction's
/// step (the newest correction step numbered above `after`).
fn measured_step(view: &Value, correction_after: Option<i64>) -> Value {
    match correction_after {
        None => view["push"].clone(),
        Some(after) => view["push_steps"]
            .as_array()
            .and_then(|steps| {
                steps
                    .iter()
                    .rev()
                    .find(|s| s["kind"] == "correction" && s["step"].as_i64().unwrap_or(-1) > after)
            })
            .cloned()
            .unwrap_or(Value::Null),
    }
}

#[derive(Debug, Clone, Copy)]
struct Cpu {
    user: f64,
    sys: f64,
}

impl Cpu {
    fn total(self) -> f64 {
        self.user + self.sys
    }
}

/// utime and stime of a process (all its threads), from /proc/PID/stat; with `children`, also
/// the times of its waited-for children.
fn proc_cpu(pid: u32, children: bool) -> Option<Cpu> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17.
    let tick = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok()).map(|v| v as f64 / USER_HZ);
    let (mut user, mut sys) = (tick(14)?, tick(15)?);
    if children {
        user += tick(16)?;
        sys += tick(17)?;
    }
    Some(Cpu { user, sys })
}

/// CPU of a PostgreSQL cluster: the postmaster (with reaped children) and its live children.
fn pg_cpu(data: &std::path::Path) -> Option<Cpu> {
    let pid: u32 =
        std::fs::read_to_string(data.join("postmaster.pid")).ok()?.lines().next()?.trim().parse().ok()?;
    let mut cpu = proc_cpu(pid, true)?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        let Some(close) = stat.rfind(')') else { continue };
        let ppid = stat[close + 2..].split_whitespace().nth(1).and_then(|v| v.parse::<u32>().ok());
        if ppid == Some(pid)
            && let Some(c) = proc_cpu(child, false)
        {
            cpu.user += c.user;
            cpu.sys += c.sys;
        }
    }
    Some(cpu)
}

/// Busy (non-idle) CPU seconds of the whole machine, from /proc/stat.
fn machine_busy() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<f64> = s.lines().next()?.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let idle = v.get(3)? + v.get(4)?;
    Some((v.iter().take(8).sum::<f64>() - idle) / USER_HZ)
}

/// `sondakika_push_encryption_cpu_microseconds_total` from a Prometheus text page, in seconds.
async fn encryption_cpu(http: &reqwest::Client, url: Option<&str>) -> Option<f64> {
    let text = http.get(url?).send().await.ok()?.text().await.ok()?;
    let line = text.lines().find(|l| l.starts_with("sondakika_push_encryption_cpu_microseconds_total"))?;
    Some(line.split_whitespace().last()?.parse::<f64>().ok()? / 1e6)
}

async fn fanout(args: FanoutArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    // Absent before the first push: zero.
    let encryption_before = encryption_cpu(&http, args.metrics.as_deref()).await.unwrap_or(0.0);
    let base = args.server.trim_end_matches('/');
    let auth = format!("Bearer {}", args.token);
    let sink_before: Option<Value> = match &args.sink {
        Some(s) => Some(
            http.get(format!("{}/stats", s.trim_end_matches('/')))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?,
        ),
        None => None,
    };
    let sink_pid = sink_before.as_ref().and_then(|v| v["pid"].as_u64()).map(|p| p as u32);

    let run = format!("{}", chrono::Utc::now().timestamp_millis());
    // A correction is measured from the steps the alert has before it.
    let correction_after = match &args.correct {
        Some(id) => {
            let v: Value = http
                .get(format!("{base}/api/v1/alerts/{id}"))
                .header("authorization", &auth)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let steps = v["push_steps"]
                .as_array()
                .context("the server shows no push_steps: too old for --correct")?;
            Some(steps.iter().filter_map(|s| s["step"].as_i64()).max().unwrap_or(-1))
        }
        None => None,
    };
    let server_before = proc_cpu(args.server_pid, false)
        .context("cannot read the server's /proc stat: is --server-pid right?")?;
    let pg_before = args.pg_data.as_deref().and_then(pg_cpu);
    let sink_cpu_before = sink_pid.and_then(|p| proc_cpu(p, false));
    let own_before = proc_cpu(std::process::id(), false);
    let busy_before = machine_busy();
    let t0 = Instant::now();
    let resp = match &args.correct {
        Some(id) => {
            http.patch(format!("{base}/api/v1/alerts/{id}"))
                .header("authorization", &auth)
                .json(&json!({ "headline": CORRECTED_HEADLINE, "push": args.correct_push }))
                .send()
                .await?
        }
        None => {
            http.post(format!("{base}/api/v1/alerts"))
                .header("authorization", &auth)
                .json(&alert_request(&run))
                .send()
                .await?
        }
    };
    let status = resp.status();
    let created: Value = resp.json().await?;
    if !status.is_success() {
        bail!("publishing failed: HTTP {status}: {created}");
    }
    let id = created["id"].as_str().context("no id in the answer")?.to_string();
    let publish_ms = t0.elapsed().as_secs_f64() * 1e3;

    let deadline = t0 + Duration::from_secs(args.timeout_secs);
    let mut last_progress = String::new();
    let mut last_print = Instant::now();
    let (view, complete) = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let v: Value = http
            .get(format!("{base}/api/v1/alerts/{id}"))
            .header("authorization", &auth)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let p = measured_step(&v, correction_after);
        let targeted = p["targeted"].as_i64().unwrap_or(0);
        // A correction step is planned after its coalescing window: until then it targets no one.
        let planned = !matches!(p["state"].as_str(), Some("waiting" | "planning"));
        let done = match args.reachable {
            Some(n) => p["sent"].as_i64().unwrap_or(0) >= n,
            None => targeted > 0 && planned && p["pending"].as_i64() == Some(0),
        };
        if done {
            break (v, true);
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_progress = format!("{:.0} s: {p}", t0.elapsed().as_secs_f64());
            eprintln!("  {last_progress}");
            last_print = Instant::now();
        }
        if Instant::now() > deadline {
            eprintln!("gave up after {} s; last: {last_progress}", args.timeout_secs);
            break (v, false);
        }
    };
    let wall = t0.elapsed().as_secs_f64();
    let server_after = proc_cpu(args.server_pid, false).context("the server exited")?;
    let pg_after = args.pg_data.as_deref().and_then(pg_cpu);
    let sink_cpu_after = sink_pid.and_then(|p| proc_cpu(p, false));
    let own_after = proc_cpu(std::process::id(), false);
    let busy_after = machine_busy();
    let encryption =
        encryption_cpu(&http, args.metrics.as_deref()).await.map(|after| after - encryption_before);

    let p = &measured_step(&view, correction_after);
    let targeted = p["targeted"].as_i64().unwrap_or(0);
    let sent = p["sent"].as_i64().unwrap_or(0);
    let pushes = args.reachable.unwrap_or(targeted).max(1) as f64;
    let server_cpu = server_after.total() - server_before.total();
    let diff = |a: Option<Cpu>, b: Option<Cpu>| match (a, b) {
        (Some(a), Some(b)) => Some(b.total() - a.total()),
        _ => None,
    };
    let pg = diff(pg_before, pg_after);
    let sink_cpu = diff(sink_cpu_before, sink_cpu_after);
    let own = diff(own_before, own_after);
    let busy = match (busy_before, busy_after) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let sink_after: Option<Value> = match &args.sink {
        Some(s) => Some(http.get(format!("{}/stats", s.trim_end_matches('/'))).send().await?.json().await?),
        None => None,
    };
    let sink_delta = match (&sink_before, &sink_after) {
        (Some(a), Some(b)) => {
            let d = |k: &str| b[k].as_i64().unwrap_or(0) - a[k].as_i64().unwrap_or(0);
            Some(json!({
                "requests": d("requests"), "bytes": d("bytes"), "vapid": d("vapid"),
                "aes128gcm": d("aes128gcm"), "ttl": d("ttl"), "urgency_high": d("urgency_high"),
                "distinct_authorization_total": b["distinct_authorization"],
            }))
        }
        _ => None,
    };
    let payload_bytes = match alert_from_view(&view) {
        Ok(alert) => {
            let bytes = payload::build(&alert, StepKind::Alert, false);
            if let Some(path) = &args.payload_out {
                std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
            }
            Some(bytes.len())
        }
        Err(e) => {
            eprintln!("could not rebuild the payload: {e:#}");
            None
        }
    };
    let per_push = |s: Option<f64>| s.map(|s| round2(s * 1e6 / pushes));
    let out = json!({
        "alert_id": id,
        "measured": if args.correct.is_some() { "correction" } else { "alert" },
        "complete": complete,
        "push": p,
        "payload_bytes": payload_bytes,
        "publish_http_ms": round2(publish_ms),
        "wall_secs": (wall * 1000.0).round() / 1000.0,
        "pushes_per_sec": round2(targeted as f64 / wall),
        "server_ms_to_100": p["ms_to_100"],
        "cpu_secs": {
            "server": round2(server_cpu),
            "server_user": round2(server_after.user - server_before.user),
            "server_sys": round2(server_after.sys - server_before.sys),
            "postgres": pg.map(round2),
            "sink": sink_cpu.map(round2),
            "load_generator": own.map(round2),
            "machine_busy": busy.map(round2),
            "server_encryption": encryption.map(round2),
        },
        "cpu_us_per_push": {
            "server": round2(server_cpu * 1e6 / pushes),
            "postgres": per_push(pg),
            "sink": per_push(sink_cpu),
            "machine_busy": per_push(busy),
            "server_encryption": per_push(encryption),
        },
        "sink": sink_delta,
    });
    eprintln!(
        "{} fan-out of {targeted} pushes ({sent} sent): {wall:.2} s to 100 % ({:.0} pushes/s); server CPU {server_cpu:.2} s = {:.1} µs/push (encryption {}); postgres {}; sink {}",
        if args.correct.is_some() { "correction" } else { "alert" },
        targeted as f64 / wall,
        server_cpu * 1e6 / pushes,
        encryption.map_or("-".into(), |s| format!("{:.1} µs/push", s * 1e6 / pushes)),
        pg.map_or("-".into(), |s| format!("{:.1} µs/push", s * 1e6 / pushes)),
        sink_cpu.map_or("-".into(), |s| format!("{:.1} µs/push", s * 1e6 / pushes)),
    );
    if args.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    if !complete {
        bail!("the fan-out did not reach 100 % within {} s", args.timeout_secs);
    }
    Ok(())
}
