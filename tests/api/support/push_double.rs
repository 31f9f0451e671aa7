//! A push service double: a real HTTP server on loopback that checks us as strictly as FCM or
//! autopush would, and decrypts every message with the subscriber's private key.
//!
//! It verifies the VAPID JWT's ES256 signature against the server's public key and its `aud`
//! (the origin, with port), `exp` (future, ≤ 24 h) and `sub` claims; the `TTL`, `Urgency`,
//! `Topic` and `Content-Encoding: aes128gcm` headers; and decrypts the body with the `ece` crate
//! (an implementation independent of ours). Each subscriber can be told how to answer.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aws_lc_rs::{
    agreement::{ECDH_P256, PrivateKey},
    encoding::{AsBigEndian, EcPrivateKeyBin},
    rand::{SecureRandom, SystemRandom},
    signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey},
};
use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use serde_json::{Value, json};

/// The benchmark sink's TLS listener, compiled in here: the service does not carry bench code,
/// and the tests do not depend on the bench package.
#[path = "../../../bench/src/tls.rs"]
mod tls;
use tls::TlsListener;

/// How a subscriber's push service answers.
#[derive(Clone, Debug)]
pub enum Behaviour {
    Accept,
    Status(u16),
    /// Answer `status` (with `Retry-After` if given) the first `times` requests, then accept.
    FailFirst {
        times: u32,
        status: u16,
        retry_after: Option<u32>,
    },
    /// Accept after a delay.
    Slow(Duration),
    /// Take the message at once (a real push service then delivers it, whatever becomes of
    /// the connection), and answer `201` after a delay.
    TakeThenAnswerAfter(Duration),
    /// Accept, and close the connection after the answer (`Connection: close`, as a load
    /// balancer draining connections does).
    AcceptAndClose,
}

pub struct Subscriber {
    pub private: Vec<u8>,
    pub public: Vec<u8>,
    pub auth: Vec<u8>,
    pub behaviour: Behaviour,
}

/// One message the double accepted or refused after checking it.
#[derive(Clone, Debug)]
pub struct Received {
    pub subscriber: u64,
    pub payload: Value,
    pub ttl: u32,
    pub urgency: String,
    pub topic: Option<String>,
    pub at: Instant,
    pub answered: u16,
    pub version: axum::http::Version,
}

#[derive(Default)]
pub struct Inner {
    pub subscribers: HashMap<u64, Subscriber>,
    pub attempts: HashMap<u64, u32>,
    pub received: Vec<Received>,
    /// Checks that failed: the server sent something a real push service would refuse.
    pub violations: Vec<String>,
    pub vapid_public_key: Vec<u8>,
    pub subject: String,
    /// Answer every request 401 as if our VAPID token were bad.
    pub reject_vapid: bool,
    /// The scheme the double is reached by (the `aud` claim must carry it).
    pub scheme: &'static str,
}

#[derive(Clone)]
pub struct PushDouble {
    pub addr: SocketAddr,
    /// TLS connections accepted (always 0 without TLS).
    pub tls_handshakes: Arc<std::sync::atomic::AtomicU64>,
    pub inner: Arc<Mutex<Inner>>,
}

impl PushDouble {
    /// The double's state and routes, reached by `scheme`.
    fn app(subject: &str, scheme: &'static str) -> (Arc<Mutex<Inner>>, Router) {
        let inner =
            Arc::new(Mutex::new(Inner { subject: subject.to_string(), scheme, ..Default::default() }));
        (inner.clone(), Router::new().route("/push/{id}", post(receive)).with_state(inner))
    }

    pub async fn start(subject: &str) -> Self {
        let (inner, app) = Self::app(subject, "http");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, tls_handshakes: Arc::default(), inner }
    }

    /// The same double behind TLS (HTTP/2 or HTTP/1.1 by ALPN, as the real push services), with
    /// the certificate for `localhost` in tests/fixtures/tls, signed by the CA there.
    pub async fn start_tls(subject: &str) -> Self {
        let (inner, app) = Self::app(subject, "https");
        let tls = fixture("tls");
        let listener = TlsListener::bind(
            "127.0.0.1:0".parse().unwrap(),
            &tls.join("localhost.pem"),
            &tls.join("localhost-key.pem"),
        )
        .await
        .unwrap();
        let addr = axum::serve::Listener::local_addr(&listener).unwrap();
        let tls_handshakes = listener.handshakes();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, tls_handshakes, inner }
    }

    pub fn set_vapid_key(&self, b64: &str) {
        self.inner.lock().unwrap().vapid_public_key = B64.decode(b64).unwrap();
    }

    /// A new subscriber with fresh keys; returns its id and `PushSubscription.toJSON()`.
    pub fn subscriber(&self, id: u64, behaviour: Behaviour) -> Value {
        let key = PrivateKey::generate(&ECDH_P256).unwrap();
        let public = key.compute_public_key().unwrap().as_ref().to_vec();
        let private: EcPrivateKeyBin = key.as_be_bytes().unwrap();
        let mut auth = vec![0u8; 16];
        SystemRandom::new().fill(&mut auth).unwrap();
        let json = json!({
            "endpoint": self.endpoint(id),
            "expirationTime": null,
            "keys": { "p256dh": B64.encode(&public), "auth": B64.encode(&auth) },
        });
        self.inner
            .lock()
            .unwrap()
            .subscribers
            .insert(id, Subscriber { private: private.as_ref().to_vec(), public, auth, behaviour });
        json
    }

    /// `http://localhost:PORT`, or `https://…` for [`PushDouble::start_tls`].
    pub fn origin(&self) -> String {
        format!("{}://localhost:{}", self.inner.lock().unwrap().scheme, self.addr.port())
    }

    pub fn endpoint(&self, id: u64) -> String {
        format!("{}/push/{id}", self.origin())
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// Accepted messages per subscriber.
    pub fn accepted_counts(&self) -> HashMap<u64, usize> {
        let mut m = HashMap::new();
        for r in self.inner.lock().unwrap().received.iter().filter(|r| r.answered < 300) {
            *m.entry(r.subscriber).or_insert(0) += 1;
        }
        m
    }

    pub fn violations(&self) -> Vec<String> {
        self.inner.lock().unwrap().violations.clone()
    }
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(id): Path<u64>,
    uri: axum::http::Uri,
    version: axum::http::Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // HTTP/1.1 names the origin in `Host`, HTTP/2 in `:authority` (the request URI).
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .or(uri.authority().map(|a| a.as_str()))
        .unwrap_or_default()
        .to_string();
    let (behaviour, verdict) = {
        let mut g = inner.lock().unwrap();
        let verdict = check(&g, id, &host, &headers, &body);
        let attempt = {
            let n = g.attempts.entry(id).or_insert(0);
            *n += 1;
            *n
        };
        let behaviour = g.subscribers.get(&id).map(|s| s.behaviour.clone());
        (behaviour.map(|b| (b, attempt)), verdict)
    };
    let (payload, ttl, urgency, topic) = match verdict {
        Ok(v) => v,
        Err(why) => {
            let mut g = inner.lock().unwrap();
            if why.starts_with("VAPID-REJECTED") {
                return (StatusCode::UNAUTHORIZED, "Invalid Authorization: VAPID token rejected")
                    .into_response();
            }
            g.violations.push(format!("subscriber {id}: {why}"));
            return (StatusCode::BAD_REQUEST, why).into_response();
        }
    };
    let Some((behaviour, attempt)) = behaviour else {
        return (StatusCode::NOT_FOUND, "no such subscription").into_response();
    };
    let (status, retry_after) = match behaviour {
        Behaviour::Accept | Behaviour::AcceptAndClose => (201, None),
        Behaviour::Status(s) => (s, None),
        Behaviour::FailFirst { times, status, retry_after } if attempt <= times => (status, retry_after),
        Behaviour::FailFirst { .. } => (201, None),
        Behaviour::Slow(d) => {
            tokio::time::sleep(d).await;
            (201, None)
        }
        Behaviour::TakeThenAnswerAfter(_) => (201, None),
    };
    inner.lock().unwrap().received.push(Received {
        subscriber: id,
        payload,
        ttl,
        urgency,
        topic,
        at: Instant::now(),
        answered: status,
        version,
    });
    if let Behaviour::TakeThenAnswerAfter(d) = behaviour {
        tokio::time::sleep(d).await;
    }
    let mut r = (StatusCode::from_u16(status).unwrap(), "").into_response();
    if let Some(s) = retry_after {
        r.headers_mut().insert("retry-after", s.into());
    }
    if matches!(behaviour, Behaviour::AcceptAndClose) {
        r.headers_mut().insert("connection", axum::http::HeaderValue::from_static("close"));
    }
    r
}

type Checked = (Value, u32, String, Option<String>);

/// Everything a strict push service checks. Err: what was wrong.
fn check(g: &Inner, id: u64, host: &str, headers: &HeaderMap, body: &[u8]) -> Result<Checked, String> {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    // RFC 8292: Authorization: vapid t=<jwt>, k=<public key>
    let auth = h("authorization").ok_or("no Authorization header")?;
    let rest = auth.strip_prefix("vapid ").ok_or("Authorization is not the vapid scheme")?;
    let mut t = None;
    let mut k = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("t=") {
            t = Some(v.to_string());
        } else if let Some(v) = part.strip_prefix("k=") {
            k = Some(v.to_string());
        }
    }
    let (t, k) = (t.ok_or("no t= in Authorization")?, k.ok_or("no k= in Authorization")?);
    let k = B64.decode(k).map_err(|_| "k is not base64url")?;
    if k != g.vapid_public_key {
        return Err(format!("k is not the server's VAPID public key ({} bytes)", k.len()));
    }
    if g.reject_vapid {
        return Err("VAPID-REJECTED".into());
    }
    let parts: Vec<&str> = t.split('.').collect();
    if parts.len() != 3 {
        return Err("the JWT does not have three parts".into());
    }
    let header: Value =
        serde_json::from_slice(&B64.decode(parts[0]).map_err(|_| "JWT header not base64url")?)
            .map_err(|_| "JWT header not JSON")?;
    if header["alg"] != "ES256" {
        return Err(format!("JWT alg is {}", header["alg"]));
    }
    let signature = B64.decode(parts[2]).map_err(|_| "JWT signature not base64url")?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &g.vapid_public_key)
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .map_err(|_| "the JWT signature does not verify with the VAPID public key")?;
    let claims: Value = serde_json::from_slice(&B64.decode(parts[1]).map_err(|_| "claims not base64url")?)
        .map_err(|_| "claims not JSON")?;
    let expected_aud = format!("{}://{host}", g.scheme);
    if claims["aud"] != expected_aud.as_str() {
        return Err(format!("aud is {}, expected {expected_aud}", claims["aud"]));
    }
    let now = chrono::Utc::now().timestamp();
    let exp = claims["exp"].as_i64().ok_or("no exp claim")?;
    if exp <= now || exp > now + 24 * 3600 {
        return Err(format!("exp {exp} is not within the next 24 hours"));
    }
    if claims["sub"] != g.subject.as_str() {
        return Err(format!("sub is {}, expected {}", claims["sub"], g.subject));
    }
    // RFC 8030 headers.
    let ttl: u32 = h("ttl").ok_or("no TTL header")?.parse().map_err(|_| "TTL is not a number")?;
    let urgency = h("urgency").unwrap_or_else(|| "normal".into());
    if !["very-low", "low", "normal", "high"].contains(&urgency.as_str()) {
        return Err(format!("bad Urgency {urgency}"));
    }
    let topic = h("topic");
    if let Some(t) = &topic
        && (t.len() > 32 || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        return Err(format!("bad Topic {t}"));
    }
    if h("content-encoding").as_deref() != Some("aes128gcm") {
        return Err("Content-Encoding is not aes128gcm".into());
    }
    // RFC 8291: decrypt with the subscriber's private key, using the `ece` crate.
    let Some(sub) = g.subscribers.get(&id) else {
        return Ok((Value::Null, ttl, urgency, topic));
    };
    let components = ece::EcKeyComponents::new(sub.private.clone(), sub.public.clone());
    let plain = ece::decrypt(&components, &sub.auth, body).map_err(|e| format!("cannot decrypt: {e}"))?;
    if plain.len() > 2048 {
        return Err(format!("payload of {} bytes exceeds 2 KB", plain.len()));
    }
    let payload: Value = serde_json::from_slice(&plain).map_err(|_| "payload is not JSON")?;
    Ok((payload, ttl, urgency, topic))
}

/// A file or directory under tests/fixtures.
pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}
