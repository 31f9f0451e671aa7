//! Sending one encrypted message to a push service, safely.
//!
//! Endpoints are URLs strangers gave us, so the HTTP client: never follows redirects; resolves
//! names itself and refuses loopback, private, link-local and other non-public addresses (unless
//! the host is one the operator added); has connect and total timeouts; reads at most a few KiB of
//! any answer. Logs name the push service's host, never the endpoint (a secret capability).
//!
//! Each push-service origin has its own concurrency limit and its own pause: a 429 slows that
//! origin, not the others, and a VAPID rejection stops only that origin.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use reqwest::{
    StatusCode,
    dns::{Name, Resolve, Resolving},
    header::{self, HeaderMap, HeaderValue},
};
use tokio::sync::Semaphore;

use super::{subscription::Allowlist, vapid::Vapid};
use crate::telemetry::metrics;

/// Most bytes of a push service's answer we read (error texts are short).
const MAX_ANSWER_BYTES: usize = 4096;
/// How long an origin stays stopped after rejecting our VAPID credentials.
const VAPID_BLOCK: Duration = Duration::from_secs(600);
/// The longest Retry-After we honour as given.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct SenderSettings {
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub per_origin: usize,
    /// Clients (so HTTP/2 connections) per push-service origin.
    pub http2_connections: usize,
    pub allow: Allowlist,
    /// Root certificates trusted besides the public ones (`push_ca_file`).
    pub extra_roots: Vec<reqwest::Certificate>,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Sent(u16),
    /// 404/410: the subscription no longer exists.
    Gone(u16),
    /// 5xx, 429, a connection error or a timeout: try again later.
    Retry {
        status: Option<u16>,
        after: Option<Duration>,
        error: String,
    },
    /// 400, 413 and other refusals: retrying would not help.
    Failed {
        status: Option<u16>,
        error: String,
    },
    /// 401/403 about our VAPID token: our fault, this origin is stopped.
    VapidRejected {
        status: u16,
        error: String,
    },
}

/// One message, ready to go.
pub struct Message<'a> {
    pub endpoint: &'a str,
    pub origin: &'a str,
    pub host: &'a str,
    pub body: bytes::Bytes,
    pub ttl: u32,
    pub urgency: &'static str,
    pub topic: Option<&'a str>,
}

struct Origin {
    /// `sondakika_push_attempts_total{push_host, result}`, registered once per origin (a
    /// labelled lookup per push showed in the profile), indexed by [`Attempt::index`].
    attempts: [::metrics::Counter; Attempt::LABELS.len()],
    permits: Semaphore,
    paused_until: Mutex<Option<Instant>>,
    blocked_until: Mutex<Option<Instant>>,
    logged_block: AtomicBool,
}

impl Origin {
    fn is_blocked(&self) -> bool {
        let until = *self.blocked_until.lock().expect("origin lock");
        until.is_some_and(|t| t > Instant::now())
    }
}

pub struct Sender {
    /// Several clients, each with its own connection pool, used in turn: under HTTP/2 a client
    /// keeps one connection per origin, and a push service caps the concurrent streams on a
    /// connection, which would cap `per_origin` there whatever its setting.
    clients: Vec<reqwest::Client>,
    next_client: std::sync::atomic::AtomicUsize,
    vapid: Arc<Vapid>,
    per_origin: usize,
    origins: Mutex<HashMap<String, Arc<Origin>>>,
}

impl Sender {
    pub fn new(settings: SenderSettings, vapid: Arc<Vapid>) -> anyhow::Result<Self> {
        let count = settings.http2_connections.max(1);
        let resolver = Arc::new(SafeResolver { allow: settings.allow.clone() });
        let clients = (0..count)
            .map(|_| {
                let mut builder = reqwest::Client::builder();
                for root in &settings.extra_roots {
                    builder = builder.add_root_certificate(root.clone());
                }
                builder
                    .redirect(reqwest::redirect::Policy::none())
                    .connect_timeout(settings.connect_timeout)
                    .timeout(settings.timeout)
                    .pool_idle_timeout(Duration::from_secs(90))
                    .pool_max_idle_per_host(settings.per_origin.div_ceil(count))
                    .user_agent(concat!("sondakika/", env!("CARGO_PKG_VERSION")))
                    .dns_resolver(resolver.clone())
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            clients,
            next_client: std::sync::atomic::AtomicUsize::new(0),
            vapid,
            per_origin: settings.per_origin,
            origins: Mutex::new(HashMap::new()),
        })
    }

    /// The origin's state; allocates only the first time an origin is seen (this is on the
    /// path of every push).
    fn origin(&self, origin: &str, host: &str) -> Arc<Origin> {
        let mut origins = self.origins.lock().expect("origins lock");
        if let Some(o) = origins.get(origin) {
            return o.clone();
        }
        let o = Arc::new(Origin {
            attempts: Attempt::LABELS.map(|result| metrics::push_attempts(host, result)),
            permits: Semaphore::new(self.per_origin),
            paused_until: Mutex::new(None),
            blocked_until: Mutex::new(None),
            logged_block: AtomicBool::new(false),
        });
        origins.insert(origin.to_string(), o.clone());
        o
    }

    /// One attempt: waits for the origin's pause and a concurrency slot, then sends. Counted
    /// in `sondakika_push_attempts_total`.
    pub async fn send(&self, m: &Message<'_>) -> Attempt {
        let origin = self.origin(m.origin, m.host);
        let attempt = self.attempt(&origin, m).await;
        origin.attempts[attempt.index()].increment(1);
        attempt
    }

    async fn attempt(&self, origin: &Origin, m: &Message<'_>) -> Attempt {
        if origin.is_blocked() {
            return Attempt::Failed {
                status: None,
                error: format!("not sent: {} rejected our VAPID credentials; fix the VAPID settings", m.host),
            };
        }
        let pause = *origin.paused_until.lock().expect("origin lock");
        if let Some(until) = pause {
            tokio::time::sleep_until(until.into()).await;
        }
        let _permit = origin.permits.acquire().await.expect("origin semaphore never closes");
        let authorization = match self.vapid.authorization(m.origin) {
            Ok(a) => a,
            Err(e) => {
                return Attempt::Failed {
                    status: None,
                    error: format!("signing the VAPID token failed: {e}"),
                };
            }
        };
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert("ttl", HeaderValue::from(m.ttl));
        headers.insert("urgency", HeaderValue::from_static(m.urgency));
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("aes128gcm"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        if let Some(topic) = m.topic
            && let Ok(v) = HeaderValue::from_str(topic)
        {
            headers.insert("topic", v);
        }
        headers.insert(header::AUTHORIZATION, authorization);
        let client = &self.clients[self.next_client.fetch_add(1, Ordering::Relaxed) % self.clients.len()];
        let result = client.post(m.endpoint).headers(headers).body(m.body.clone()).send().await;
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                // Timeouts and refused connections are normal weather on the internet.
                let kind = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect"
                } else {
                    "request"
                };
                return Attempt::Retry {
                    status: None,
                    after: None,
                    error: format!("{kind} error talking to {}", m.host),
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = read_capped(response).await;
        let attempt = classify(status, retry_after, &text);
        match &attempt {
            Attempt::Retry { status: Some(429), after, .. } => {
                let wait = after.unwrap_or(Duration::from_secs(5));
                *origin.paused_until.lock().expect("origin lock") = Some(Instant::now() + wait);
                metrics::push_throttled(m.host);
                tracing::info!(push_host = %m.host, wait_secs = wait.as_secs(), "push service asked us to slow down");
            }
            Attempt::VapidRejected { status, error } => {
                *origin.blocked_until.lock().expect("origin lock") = Some(Instant::now() + VAPID_BLOCK);
                metrics::vapid_rejected(m.host);
                if !origin.logged_block.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        push_host = %m.host, status, error = %error,
                        "push service rejected our VAPID credentials: stopped sending to it for {} s; \
                         subscriptions are kept. Check vapid_subject and the VAPID key",
                        VAPID_BLOCK.as_secs()
                    );
                }
            }
            _ => {}
        }
        attempt
    }
}

impl Attempt {
    /// The `result` label of each kind of attempt, in [`Attempt::index`] order.
    pub const LABELS: [&'static str; 6] = ["sent", "gone", "throttled", "retry", "failed", "vapid_rejected"];

    pub fn index(&self) -> usize {
        match self {
            Attempt::Sent(_) => 0,
            Attempt::Gone(_) => 1,
            Attempt::Retry { status: Some(429), .. } => 2,
            Attempt::Retry { .. } => 3,
            Attempt::Failed { .. } => 4,
            Attempt::VapidRejected { .. } => 5,
        }
    }
}

/// Sorts a push service's answer into what to do next.
pub fn classify(status: StatusCode, retry_after: Option<Duration>, body: &str) -> Attempt {
    let code = status.as_u16();
    let error = || {
        let b: String = body.chars().take(300).collect();
        format!("HTTP {code}: {}", b.trim())
    };
    match code {
        200..=299 => Attempt::Sent(code),
        404 | 410 => Attempt::Gone(code),
        429 => Attempt::Retry { status: Some(code), after: retry_after, error: error() },
        401 | 403 if mentions_credentials(body) => Attempt::VapidRejected { status: code, error: error() },
        500..=599 => Attempt::Retry { status: Some(code), after: retry_after, error: error() },
        _ => Attempt::Failed { status: Some(code), error: error() },
    }
}

/// Whether a 401/403 body is about our credentials (Mozilla: "Invalid Authorization", Apple:
/// "BadJwtToken", FCM: "authorization header", a VAPID library: "vapid").
fn mentions_credentials(body: &str) -> bool {
    let b = body.to_ascii_lowercase();
    ["vapid", "jwt", "token", "authorization", "crypto-key", "credential", "unauthorized", "signature"]
        .iter()
        .any(|w| b.contains(w))
        || b.trim().is_empty()
}

/// `Retry-After` as seconds or an HTTP date, capped.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let d = if let Ok(secs) = v.trim().parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = chrono::DateTime::parse_from_rfc2822(v.trim()).ok()?;
        (when.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO)
    };
    Some(d.min(MAX_RETRY_AFTER))
}

async fn read_capped(mut response: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_ANSWER_BYTES.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= MAX_ANSWER_BYTES {
            break; // dropping the response closes or discards the rest
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Resolves push-service names and keeps only public addresses, so that an endpoint whose name
/// points at this machine or the internal network cannot be used to reach it (checked on the
/// addresses actually connected to, which also defeats DNS rebinding).
struct SafeResolver {
    allow: Allowlist,
}

impl Resolve for SafeResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let trusted = self.allow.is_extra(&host);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let usable: Vec<SocketAddr> =
                addrs.into_iter().filter(|a| trusted || is_public(a.ip())).collect();
            if usable.is_empty() {
                return Err(format!("{host} resolves to no public address; refusing to connect").into());
            }
            Ok(Box::new(usable.into_iter()) as Box<dyn Iterator<Item = SocketAddr> + Send>)
        })
    }
}

/// True for addresses on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // carrier-grade NAT
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)   // IETF protocol assignments
                || (o[0] == 198 && (18..20).contains(&o[1])) // benchmarking
                || o[0] >= 240) // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x64 && s[1] == 0xff9b)) // NAT64 (may map to private v4)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        let s = |c| StatusCode::from_u16(c).unwrap();
        assert_eq!(classify(s(201), None, ""), Attempt::Sent(201));
        assert_eq!(classify(s(410), None, ""), Attempt::Gone(410));
        assert_eq!(classify(s(404), None, ""), Attempt::Gone(404));
        assert!(matches!(
            classify(s(429), Some(Duration::from_secs(3)), ""),
            Attempt::Retry { after: Some(_), .. }
        ));
        assert!(matches!(classify(s(503), None, ""), Attempt::Retry { status: Some(503), .. }));
        assert!(matches!(classify(s(413), None, "too big"), Attempt::Failed { status: Some(413), .. }));
        assert!(matches!(classify(s(400), None, ""), Attempt::Failed { .. }));
        assert!(matches!(classify(s(401), None, "Invalid Authorization"), Attempt::VapidRejected { .. }));
        assert!(matches!(classify(s(403), None, "BadJwtToken"), Attempt::VapidRejected { .. }));
        assert!(matches!(classify(s(403), None, "subscription expired for sender"), Attempt::Failed { .. }));
        let label = |a: Attempt| Attempt::LABELS[a.index()];
        assert_eq!(label(classify(s(201), None, "")), "sent");
        assert_eq!(label(classify(s(429), None, "")), "throttled");
        assert_eq!(label(classify(s(503), None, "")), "retry");
        assert_eq!(label(classify(s(401), None, "vapid")), "vapid_rejected");
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date_and_is_capped() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("999999"), Some(MAX_RETRY_AFTER));
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let d = parse_retry_after(&soon).unwrap();
        assert!(d > Duration::from_secs(25) && d <= Duration::from_secs(30));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "224.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["142.250.185.74", "2a00:1450:4001:80b::200a", "63.245.208.195"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_that_point_inside() {
        let allow =
            Allowlist { standard: vec![], extra: vec!["push.internal.test".into()], extra_allow_http: true };
        let r = SafeResolver { allow };
        let err = r.resolve("localhost".parse().unwrap()).await.err().expect("refused");
        assert!(err.to_string().contains("no public address"));
    }
}
