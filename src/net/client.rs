//! [`Outbound`]: the one HTTP client for URLs an admin hands us (feeds, webhook endpoints).
//!
//! Such a URL is chosen by a person, not by us, and is fetched from inside the newsroom's
//! network, so every request is held to the same rules:
//!
//! - only `http`/`https`, without user name or password;
//! - every address connected to is public (see [`is_public`]), checked on the addresses the
//!   name actually resolves to at connect time (our own resolver, so DNS rebinding between a
//!   check and the connect cannot happen) and on literal-IP URLs, unless the operator allowed
//!   the host in `outbound_private_hosts`;
//! - redirects are followed by hand, at most [`MAX_REDIRECTS`], only for GET and HEAD, each hop
//!   checked like the first (a public feed that redirects to `http://169.254.169.254/` is
//!   refused);
//! - the whole exchange (every hop, connect, headers and body) has one deadline;
//! - the body is read as a stream and reading stops at the request's byte bound, so a 50 MB
//!   answer costs at most the bound in memory;
//! - no proxy from the environment, no decompression (a gzip bomb cannot grow past the bound).
//!
//! Errors are [`NetError`], written for the admin who registered the URL.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use url::{Host, Url};

use super::addr::{PrivateHosts, is_public};
use crate::validation::{FieldError, WebUrl};

/// Most redirects followed for one request.
pub const MAX_REDIRECTS: usize = 5;
/// The default bound on an answer's body, for callers that do not set one.
pub const DEFAULT_MAX_BYTES: usize = 1024 * 1024;

/// Why an outbound request failed, in words for the admin who registered the URL. Never
/// contains the URL's query string or a secret: only host names and addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("the URL cannot be fetched: {0}")]
    BadUrl(String),
    #[error(
        "{host} points to a private or local address ({addr}), which is refused so that a URL \
         cannot reach the internal network; an operator can allow this host with the \
         `outbound_private_hosts` setting"
    )]
    PrivateAddress { host: String, addr: IpAddr },
    #[error("the name {host} does not resolve (DNS lookup failed)")]
    Resolve { host: String },
    #[error("could not connect to {host}: {detail}")]
    Connect { host: String, detail: String },
    #[error("{host} did not answer completely within {secs} seconds")]
    Timeout { host: String, secs: u64 },
    #[error("more than {MAX_REDIRECTS} redirects, last to {host}")]
    TooManyRedirects { host: String },
    #[error("{host} answered a redirect without a usable Location header")]
    BadRedirect { host: String },
    #[error("the answer from {host} is larger than {limit} bytes; stopped reading")]
    TooLarge { host: String, limit: usize },
    #[error("{host} broke off the exchange: {detail}")]
    Broken { host: String, detail: String },
}

/// One request. Redirects are followed only for GET and HEAD; any other method gets the
/// redirect answer itself (a webhook must not be replayed elsewhere with its body).
#[derive(Debug, Clone)]
pub struct OutRequest {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<Bytes>,
    max_bytes: usize,
    timeout: Option<Duration>,
}

impl OutRequest {
    pub fn get(url: Url) -> Self {
        Self::new(Method::GET, url, None)
    }

    pub fn post(url: Url, body: impl Into<Bytes>) -> Self {
        Self::new(Method::POST, url, Some(body.into()))
    }

    pub fn new(method: Method, url: Url, body: Option<Bytes>) -> Self {
        Self { method, url, headers: HeaderMap::new(), body, max_bytes: DEFAULT_MAX_BYTES, timeout: None }
    }

    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Most bytes of body read; beyond, [`NetError::TooLarge`].
    pub fn max_bytes(mut self, max: usize) -> Self {
        self.max_bytes = max;
        self
    }

    /// The deadline for the whole exchange, instead of `outbound_timeout_secs`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// A complete answer (any status: the caller decides what a 304 or a 500 means).
#[derive(Debug, Clone)]
pub struct Fetched {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Where the answer came from, after redirects: relative links resolve against it.
    pub url: Url,
}

/// The `User-Agent` of our outbound requests: our name and version, and the installation's
/// public URL, so that whoever runs a polled feed or a webhook receiver can tell who calls.
pub fn user_agent(public_url: &Url) -> String {
    format!("sondakika/{} (+{public_url})", env!("CARGO_PKG_VERSION"))
}

/// The SSRF-safe client. Cheap to clone (one connection pool inside).
#[derive(Clone)]
pub struct Outbound {
    client: reqwest::Client,
    private: Arc<PrivateHosts>,
    timeout: Duration,
}

impl Outbound {
    /// `private_hosts`: `outbound_private_hosts`; `timeout`: `outbound_timeout_secs`.
    pub fn new(private_hosts: PrivateHosts, timeout: Duration, user_agent: &str) -> anyhow::Result<Self> {
        let private = Arc::new(private_hosts);
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(SafeResolver { private: private.clone() }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            // Under the shortest keep-alive servers commonly keep (Node and Apache: 5 s). A
            // request written on an idle connection just as the server closes it fails
            // (hyper's IncompleteMessage), which would show a webhook receiver a needless
            // failed attempt; a burst of deliveries still reuses its connections.
            .pool_idle_timeout(Duration::from_secs(4))
            .pool_max_idle_per_host(2)
            .user_agent(user_agent)
            .build()?;
        Ok(Self { client, private, timeout })
    }

    /// Whether a URL may be fetched, judged without DNS: scheme, user-info, and a literal IP
    /// address's publicness. Names are judged when they resolve.
    pub fn check_url(&self, url: &Url) -> Result<(), NetError> {
        check_url(url, &self.private)
    }

    /// Validates a URL an admin types (`field` names it in the error): an http(s) URL as
    /// [`WebUrl`] takes it, and not a literal private address unless allowed.
    pub fn parse_url(&self, field: &str, value: &str) -> Result<Url, FieldError> {
        let web = WebUrl::parse(field, value, false)?;
        let url = Url::parse(web.as_str()).map_err(|e| FieldError::new(field, e.to_string()))?;
        check_url(&url, &self.private).map_err(|e| FieldError::new(field, e.to_string()))?;
        Ok(url)
    }

    /// Sends the request, follows redirects (GET/HEAD), reads the body up to its bound, all
    /// within the deadline.
    pub async fn fetch(&self, req: OutRequest) -> Result<Fetched, NetError> {
        let timeout = req.timeout.unwrap_or(self.timeout);
        let host = host_of(&req.url);
        match tokio::time::timeout(timeout, self.exchange(req)).await {
            Ok(r) => r,
            Err(_) => Err(NetError::Timeout { host, secs: timeout.as_secs().max(1) }),
        }
    }

    async fn exchange(&self, req: OutRequest) -> Result<Fetched, NetError> {
        let follow = req.method == Method::GET || req.method == Method::HEAD;
        let mut url = req.url;
        let mut hops = 0;
        loop {
            check_url(&url, &self.private)?;
            let host = host_of(&url);
            let mut builder =
                self.client.request(req.method.clone(), url.clone()).headers(req.headers.clone());
            if let Some(body) = &req.body {
                builder = builder.body(body.clone());
            }
            let mut resp = builder.send().await.map_err(|e| classify(&host, &e))?;
            let status = resp.status();
            if follow && status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let next = resp
                    .headers()
                    .get(http::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|loc| url.join(loc).ok())
                    .ok_or_else(|| NetError::BadRedirect { host: host.clone() })?;
                hops += 1;
                if hops > MAX_REDIRECTS {
                    return Err(NetError::TooManyRedirects { host: host_of(&next) });
                }
                url = next;
                continue;
            }
            if let Some(len) = resp.content_length()
                && len > req.max_bytes as u64
            {
                return Err(NetError::TooLarge { host, limit: req.max_bytes });
            }
            let mut body = BytesMut::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| classify(&host, &e))? {
                if body.len() + chunk.len() > req.max_bytes {
                    return Err(NetError::TooLarge { host, limit: req.max_bytes });
                }
                body.extend_from_slice(&chunk);
            }
            return Ok(Fetched { status, headers: resp.headers().clone(), body: body.freeze(), url });
        }
    }
}

fn host_of(url: &Url) -> String {
    url.host_str().unwrap_or("?").to_string()
}

fn check_url(url: &Url, private: &PrivateHosts) -> Result<(), NetError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(NetError::BadUrl(format!("only http and https are fetched, not `{}:`", url.scheme())));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(NetError::BadUrl("a URL with a user name or password is not fetched".into()));
    }
    let addr = match url.host() {
        None => return Err(NetError::BadUrl("the URL has no host".into())),
        Some(Host::Domain(_)) => return Ok(()),
        Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
    };
    if is_public(addr) || private.allows(&addr.to_string()) {
        Ok(())
    } else {
        Err(NetError::PrivateAddress { host: addr.to_string(), addr })
    }
}

/// The resolver reqwest connects through: names resolve with the system's resolver, and only
/// public addresses (or any, for an allowed host) come back.
struct SafeResolver {
    private: Arc<PrivateHosts>,
}

/// What [`SafeResolver`] fails with; found again in reqwest's error chain by [`classify`].
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("private address")]
    Private { host: String, addr: IpAddr },
    #[error("no address")]
    Unresolvable { host: String },
}

impl reqwest::dns::Resolve for SafeResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let private = self.private.clone();
        let host = name.as_str().to_ascii_lowercase();
        Box::pin(async move {
            let looked_up = tokio::net::lookup_host((host.as_str(), 0)).await.map(|a| a.collect::<Vec<_>>());
            let Ok(all) = looked_up else {
                return Err(Box::new(Refused::Unresolvable { host }) as _);
            };
            let trusted = private.allows(&host);
            let ok: Vec<SocketAddr> = all.iter().copied().filter(|a| trusted || is_public(a.ip())).collect();
            match (ok.is_empty(), all.first()) {
                (false, _) => Ok(Box::new(ok.into_iter()) as reqwest::dns::Addrs),
                (true, Some(first)) => Err(Box::new(Refused::Private { host, addr: first.ip() }) as _),
                (true, None) => Err(Box::new(Refused::Unresolvable { host }) as _),
            }
        })
    }
}

/// Turns reqwest's error into one a person understands, finding our resolver's refusal in the
/// chain of causes.
fn classify(host: &str, e: &reqwest::Error) -> NetError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut innermost = String::new();
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<Refused>() {
            return match r {
                Refused::Private { host, addr } => {
                    NetError::PrivateAddress { host: host.clone(), addr: *addr }
                }
                Refused::Unresolvable { host } => NetError::Resolve { host: host.clone() },
            };
        }
        innermost = c.to_string();
        cause = c.source();
    }
    let host = host.to_string();
    if e.is_timeout() {
        NetError::Connect { host, detail: "the connection timed out".into() }
    } else if e.is_connect() {
        NetError::Connect { host, detail: innermost }
    } else {
        NetError::Broken { host, detail: innermost }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbound(private: &[&str]) -> Outbound {
        Outbound::new(PrivateHosts::new(private), Duration::from_secs(5), "sondakika-test").unwrap()
    }

    #[test]
    fn literal_private_addresses_are_refused_before_any_connect() {
        let o = outbound(&[]);
        for u in [
            "http://127.0.0.1/feed",
            "http://2130706433/feed", // 127.0.0.1 as one number: the URL parser normalises it
            "http://0x7f.1/feed",
            "http://[::1]/feed",
            "http://[::ffff:169.254.169.254]/latest/meta-data",
            "http://10.0.0.5:8080/x",
            "http://169.254.169.254/latest/meta-data",
        ] {
            let err = o.check_url(&Url::parse(u).unwrap()).unwrap_err();
            assert!(matches!(err, NetError::PrivateAddress { .. }), "{u}: {err}");
            assert!(err.to_string().contains("outbound_private_hosts"), "{err}");
        }
        assert!(o.check_url(&Url::parse("https://142.250.185.74/").unwrap()).is_ok());
        assert!(o.check_url(&Url::parse("https://www.example.com.tr/feed/").unwrap()).is_ok());
        assert!(outbound(&["127.0.0.1"]).check_url(&Url::parse("http://127.0.0.1:9/").unwrap()).is_ok());
    }

    #[test]
    fn only_plain_http_urls_without_credentials() {
        let o = outbound(&[]);
        for (u, why) in [
            ("ftp://example.com/feed", "only http and https"),
            ("file:///etc/passwd", "only http and https"),
            ("https://user:pw@example.com/feed", "user name or password"),
        ] {
            let err = o.check_url(&Url::parse(u).unwrap()).unwrap_err();
            assert!(err.to_string().contains(why), "{u}: {err}");
        }
        let e = o.parse_url("url", "gopher://x").unwrap_err();
        assert_eq!(e.field, "url");
        let e = o.parse_url("url", "http://192.168.1.1/rss").unwrap_err();
        assert!(e.message.contains("private"), "{}", e.message);
    }

    #[tokio::test]
    async fn a_name_that_resolves_inside_is_refused_with_the_setting_named() {
        let err = outbound(&[]).fetch(OutRequest::get(Url::parse("http://localhost:9/").unwrap())).await;
        let err = err.unwrap_err();
        assert!(matches!(err, NetError::PrivateAddress { ref host, .. } if host == "localhost"), "{err}");
        assert!(err.to_string().contains("outbound_private_hosts"), "{err}");
    }

    #[tokio::test]
    async fn an_unknown_name_says_so() {
        let err = outbound(&[])
            .fetch(OutRequest::get(Url::parse("http://no-such-host.invalid/").unwrap()))
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::Resolve { .. }), "{err}");
    }
}
