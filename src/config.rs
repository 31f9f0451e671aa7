//! Settings: defaults, then an optional TOML file, then the environment.
//!
//! Every setting is a field of [`Settings`], documented here and in the README's table. Nothing
//! else in the crate reads the environment: the settings are loaded once in `main` and passed down.
//! A bad value stops start-up with a message that names the setting.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Deserializer, Serialize};
use url::Url;

use crate::telemetry::LogFormat;

/// A string that must never be printed: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// All settings of a `sondakika` process.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// PostgreSQL connection URL (`DATABASE_URL`). Unset: a private PostgreSQL under `data_dir`.
    pub database_url: Option<Secret>,
    /// PostgreSQL URL for the connections that need a session of their own: LISTEN and the
    /// migrations' advisory lock. Set it when `database_url` leads to a pooler that hands out
    /// transactions (PgBouncer's `pool_mode = transaction`). Unset: `database_url`.
    pub database_direct_url: Option<Secret>,
    /// Where the private PostgreSQL keeps its files when `database_url` is unset.
    pub data_dir: PathBuf,
    /// Directory of the PostgreSQL server binaries (`initdb`, `postgres`). Unset: the newest
    /// `/usr/lib/postgresql/*/bin`.
    pub pg_bin_dir: Option<PathBuf>,
    /// Size of the database connection pool of this process.
    pub db_pool_size: u32,
    /// Threads of the async runtime; 0: one per CPU core. Push encryption runs on threads of
    /// its own (`push::encryptor`), not on these.
    pub worker_threads: usize,

    /// Address the HTTP server listens on.
    pub bind: SocketAddr,
    /// The URL readers and editors reach this service at (used in links and the default origin).
    pub public_url: Option<Url>,
    /// Browser origins allowed to open streams and call the public API. Empty: the origin of
    /// `public_url` only.
    #[serde(deserialize_with = "list_from_str_or_seq")]
    pub allowed_origins: Vec<String>,
    /// Take the client address from `X-Forwarded-For` (only behind a trusted reverse proxy).
    pub trust_forwarded_for: bool,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Time limit for one API request.
    pub request_timeout_secs: u64,
    /// Seconds a connection on the main port has to send a complete request head, counted from
    /// when it opens and again from the end of each answer on a kept-alive connection: it bounds
    /// half-sent requests and idle keep-alive connections alike. Beyond, the connection is
    /// closed without an answer.
    pub header_read_timeout_secs: u64,
    /// Most TCP connections (requests, keep-alive and tickers together) this process holds on
    /// the main port; at the cap, accepting pauses until one closes. 0: the open-file limit minus
    /// a reserve for the database pool, push connections and files. Must stay below that.
    pub max_tcp_connections: usize,
    /// Most TCP connections to the main port from one client address (IPv6: one /64); beyond,
    /// a connection is answered 429 at once and closed. Behind `trust_forwarded_for` the peer
    /// is the proxy, so this caps the proxy: set it to `max_tcp_connections` there.
    pub max_tcp_connections_per_ip: usize,

    /// Kernel send buffer per accepted connection, in bytes (0: the kernel's autotuning, which
    /// lets a stalled reader pin up to 4 MiB). Bounds memory held for slow readers and lets them
    /// be detected after a few frames rather than megabytes.
    pub tcp_send_buffer_bytes: usize,
    /// Most ticker connections (WebSocket and SSE together) this process holds; more get 503.
    pub max_connections: usize,
    /// Most ticker connections from one client address.
    pub max_connections_per_ip: usize,
    /// Events a ticker connection may fall behind before it is closed as too slow (code 4001).
    pub client_queue: usize,
    /// Seconds one frame may take to be written to a ticker before it is closed as too slow.
    pub write_timeout_secs: u64,
    /// Seconds between server pings; a peer silent for two intervals is dropped.
    pub ping_interval_secs: u64,
    /// Most events replayed to a reconnecting ticker (`since`).
    pub replay_max_count: usize,
    /// Oldest event replayed to a reconnecting ticker, in seconds.
    pub replay_max_age_secs: u64,

    /// How long an alert stays worth delivering when the editor does not say (`ttl_seconds`).
    pub default_ttl_secs: u32,
    /// Seconds given to open requests, streams and workers to finish on shutdown.
    pub shutdown_grace_secs: u64,

    /// Contact for push services (`mailto:` or `https:`), required for Web Push; unset: push off.
    pub vapid_subject: Option<String>,
    /// The VAPID private key (raw P-256 scalar, base64url). Unset: generated once and stored in
    /// the database for every process.
    pub vapid_private_key: Option<Secret>,
    /// Accept a VAPID key that differs from the one subscriptions were made with.
    pub vapid_rotate: bool,
    /// Push-service hosts allowed besides the browsers' own (e.g. a self-hosted push service).
    #[serde(deserialize_with = "list_from_str_or_seq")]
    pub push_extra_hosts: Vec<String>,
    /// Allow http and private addresses for `push_extra_hosts`.
    pub push_extra_hosts_allow_http: bool,
    /// PEM file of extra root certificates trusted for push services (a self-hosted push
    /// service behind a private CA). The public roots stay trusted.
    pub push_ca_file: Option<std::path::PathBuf>,
    pub push_connect_timeout_secs: u64,
    /// Time limit for one push request.
    pub push_timeout_secs: u64,
    /// Concurrent requests to one push-service origin, per process.
    pub push_concurrency_per_origin: usize,
    /// HTTP/2 connections to one push-service origin, per process (requests are spread over
    /// them): a push service caps the concurrent streams on one connection.
    pub push_http2_connections: usize,
    /// Pushes in flight per process, all origins together.
    pub push_max_in_flight: usize,
    /// Fan-out batches worked on at once per process.
    pub push_workers: usize,
    /// Subscription ids per fan-out batch.
    pub push_batch_size: usize,
    /// Attempts per push before it is logged as failed.
    pub push_max_attempts: u32,
    /// A subscription whose push service failed it (unreachable, timing out, or erring until the
    /// push gave up) for this many alerts in a row is deactivated (`unreachable`)...
    pub push_deactivate_after_alerts: u32,
    /// ...once the first of those failures is at least this many hours old.
    pub push_deactivate_after_hours: u32,
    /// Seconds a fan-out batch stays claimed without renewal (a crashed worker's batch is taken
    /// over after this).
    pub push_lease_secs: u64,
    /// Milliseconds a correction's push waits for further corrections of the same alert, which
    /// join it (one fan-out for a burst of fixes, carrying the last). 0 to 60,000.
    pub push_correction_coalesce_ms: u64,
    /// Subscriptions not re-posted for this many days are dropped.
    pub subscription_max_idle_days: u32,
    /// Days of delivery logs kept.
    pub delivery_retention_days: u32,
    /// Requests per minute per client (IPv4 address or IPv6 /64) to the public push endpoints,
    /// besides subscription refreshes and receipts; new subscriptions also count here.
    pub public_rate_per_minute: u32,
    /// `POST /api/v1/push/subscriptions` per minute per client: a subscribed reader's page load
    /// refreshes its subscription, so this is about page loads behind one address.
    pub public_subscribe_rate_per_minute: u32,
    /// `POST /api/v1/push/receipts` per minute per client (one `shown`, maybe one `clicked`, per
    /// push and reader).
    pub public_receipt_rate_per_minute: u32,
    /// Fraction (0–1) of `shown`/`clicked` receipts service workers report.
    pub receipt_sample_rate: f64,

    /// Hosts that URLs admins register (feeds, webhook endpoints) may reach although they resolve
    /// to private, loopback or link-local addresses: `cms.intra.example`, `*.intra.example`,
    /// `127.0.0.1`. Empty: only public addresses are ever fetched. Push services have their own
    /// list (`push_extra_hosts`).
    #[serde(deserialize_with = "list_from_str_or_seq")]
    pub outbound_private_hosts: Vec<String>,
    /// Seconds one outbound fetch (a feed poll, a webhook delivery) may take in all: every
    /// redirect, the connect, the headers and the body. 1 to 300.
    pub outbound_timeout_secs: u64,
    /// The shortest poll interval a feed may have, in seconds (1 to 86,400). A feed registered
    /// with a shorter one is refused; the default interval of a new feed is the larger of this
    /// and 120 s.
    pub feed_min_interval_secs: u64,
    /// Largest feed document read, in bytes (1 KiB to 64 MiB); a larger answer is a per-feed
    /// error and reading stops at the bound.
    pub feed_max_bytes: usize,
    /// Items published more than this many hours ago never fire (1 to 720), nor do items older
    /// than the feed's registration.
    pub feed_max_item_age_hours: u32,
    /// Feeds one process fetches at once (1 to 64); others wait for their turn.
    pub feed_concurrency: usize,

    /// Time limit for one webhook request, connecting included (1–60 s). Beyond, the attempt
    /// counts as failed and is retried.
    pub webhook_timeout_secs: u64,
    /// Webhook requests one process has in flight at once (1–1000); at most
    /// `webhook_per_endpoint` of them to one endpoint.
    pub webhook_max_in_flight: usize,
    /// Webhook requests one process has in flight to one endpoint (1–1000): a slow endpoint holds
    /// at most this many of the places, and a receiver is not flooded after an outage.
    pub webhook_per_endpoint: usize,
    /// Wait before the first retry of a failed webhook delivery (1–3600 s); it doubles with each
    /// further try, to at most an hour between tries.
    pub webhook_retry_first_secs: u64,
    /// How long after its event a webhook delivery is retried (10 s – 30 days); then it is
    /// given up (`failed`).
    pub webhook_retry_window_secs: u64,
    /// An endpoint whose every attempt failed for this long is disabled (1 s – 30 days); an
    /// admin enables it again.
    pub webhook_disable_after_secs: u64,
    /// After a secret rotation, how long the previous secret also signs (0 – 7 days; 0: the old
    /// secret stops at once).
    pub webhook_secret_grace_secs: u64,

    /// Serve the browser assets from this directory (the repo's `assets/`) instead of the copies
    /// embedded in the binary: for front-end work without rebuilding.
    pub dev_assets_dir: Option<PathBuf>,

    /// `text` or `json` logs on standard error.
    pub log_format: LogFormat,
    /// Log filter (`info`, `sondakika=debug`, ...). `RUST_LOG` wins when set.
    pub log_level: String,
    /// Serve Prometheus metrics on this separate address instead of `/metrics` on `bind`.
    pub metrics_bind: Option<SocketAddr>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: None,
            database_direct_url: None,
            data_dir: PathBuf::from("./data"),
            pg_bin_dir: None,
            db_pool_size: 16,
            worker_threads: 0,
            bind: "127.0.0.1:8080".parse().expect("valid default address"),
            public_url: None,
            allowed_origins: Vec::new(),
            trust_forwarded_for: false,
            max_body_bytes: 64 * 1024,
            request_timeout_secs: 30,
            header_read_timeout_secs: 20,
            max_tcp_connections: 0,
            max_tcp_connections_per_ip: 256,
            tcp_send_buffer_bytes: 128 * 1024,
            max_connections: 15_000,
            max_connections_per_ip: 64,
            client_queue: 128,
            write_timeout_secs: 10,
            ping_interval_secs: 20,
            replay_max_count: 500,
            replay_max_age_secs: 24 * 3600,
            default_ttl_secs: 3600,
            shutdown_grace_secs: 10,
            vapid_subject: None,
            vapid_private_key: None,
            vapid_rotate: false,
            push_extra_hosts: Vec::new(),
            push_extra_hosts_allow_http: false,
            push_ca_file: None,
            push_connect_timeout_secs: 5,
            push_timeout_secs: 15,
            push_concurrency_per_origin: 400,
            push_http2_connections: 4,
            push_max_in_flight: 1000,
            push_workers: 2,
            push_batch_size: 1000,
            push_max_attempts: 5,
            push_deactivate_after_alerts: 3,
            push_deactivate_after_hours: 24,
            push_lease_secs: 30,
            push_correction_coalesce_ms: 2000,
            subscription_max_idle_days: 60,
            delivery_retention_days: 30,
            // A newsroom or a campus behind one NAT: ~100 readers each loading a page a minute
            // while news breaks (each load reads /live once; the key is cached for an hour),
            // while new subscriptions (a reader's click, once per browser) stay at 2 a second.
            public_rate_per_minute: 120,
            // Every page load of a subscribed reader: 600 page loads a minute behind one address,
            // 10 upserts a second at most, which PostgreSQL does not notice.
            public_subscribe_rate_per_minute: 600,
            // One `shown` per push and reader, arriving within seconds of an alert: 600 readers
            // behind one address each get their receipt counted.
            public_receipt_rate_per_minute: 600,
            receipt_sample_rate: 1.0,
            outbound_private_hosts: Vec::new(),
            outbound_timeout_secs: 20,
            feed_min_interval_secs: 60,
            feed_max_bytes: 5 * 1024 * 1024,
            feed_max_item_age_hours: 24,
            feed_concurrency: 4,
            webhook_timeout_secs: 10,
            webhook_max_in_flight: 64,
            webhook_per_endpoint: 4,
            webhook_retry_first_secs: 5,
            // A day of tries: a receiver down overnight still gets the night's events.
            webhook_retry_window_secs: 24 * 3600,
            // Five days of nothing but failures: the receiver is gone, not down.
            webhook_disable_after_secs: 5 * 24 * 3600,
            webhook_secret_grace_secs: 24 * 3600,
            dev_assets_dir: None,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            metrics_bind: None,
        }
    }
}

/// A setting that could not be used; the message names it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(String);

/// The error for setting `name`, saying why its value cannot be used.
fn invalid(name: &str, why: impl fmt::Display) -> SettingsError {
    SettingsError(format!("invalid setting `{name}`: {why}"))
}

impl Settings {
    /// Loads defaults, then `file` (TOML) if given, then `SONDAKIKA_*` and `DATABASE_URL`.
    pub fn load(file: Option<&std::path::Path>) -> Result<Self, SettingsError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(SettingsError(format!("config file {} does not exist", path.display())));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment
            .merge(Env::prefixed("SONDAKIKA_").ignore(&["CONFIG", "SERVER", "TOKEN"]))
            .merge(Env::raw().only(&["DATABASE_URL"]));
        let settings: Settings = figment.extract().map_err(|e| {
            // figment names the key in its message; make the env spelling visible too.
            let e = e.into_iter().next().expect("figment error has at least one entry");
            let key = e.path.join(".");
            if key.is_empty() {
                SettingsError(format!("invalid settings: {e}"))
            } else {
                SettingsError(format!(
                    "invalid setting `{key}` (env SONDAKIKA_{}): {}",
                    key.to_uppercase(),
                    e.kind
                ))
            }
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every setting, group by group, and reports the first that is wrong (always the
    /// same one for the same settings: the order is fixed).
    fn validate(&self) -> Result<(), SettingsError> {
        self.check_urls()?;
        self.check_positive()?;
        self.check_caps()?;
        self.check_push()?;
        self.check_outbound_and_feeds()?;
        if !(0.0..=1.0).contains(&self.receipt_sample_rate) {
            return Err(invalid("receipt_sample_rate", "must be between 0 and 1"));
        }
        self.check_webhooks()?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return Err(invalid("log_level", e));
        }
        Ok(())
    }

    /// The addresses: the database, our public URL, the browser origins we serve.
    fn check_urls(&self) -> Result<(), SettingsError> {
        if let Some(url) = &self.database_url
            && !(url.expose().starts_with("postgres://") || url.expose().starts_with("postgresql://"))
        {
            return Err(invalid("database_url", "must start with postgres:// or postgresql://"));
        }
        if let Some(url) = &self.database_direct_url {
            if !(url.expose().starts_with("postgres://") || url.expose().starts_with("postgresql://")) {
                return Err(invalid("database_direct_url", "must start with postgres:// or postgresql://"));
            }
            if self.database_url.is_none() {
                return Err(invalid(
                    "database_direct_url",
                    "is a second way to the database of `database_url`, which is unset",
                ));
            }
        }
        if let Some(url) = &self.public_url
            && !matches!(url.scheme(), "http" | "https")
        {
            return Err(invalid("public_url", format!("must be an http or https URL, got `{url}`")));
        }
        for origin in &self.allowed_origins {
            if origin == "*" {
                continue;
            }
            match Url::parse(origin) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.path() == "/" => {}
                _ => {
                    return Err(invalid(
                        "allowed_origins",
                        format!("`{origin}` is not an origin like https://www.example.com.tr"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Sizes, counts, timeouts and rates where zero would mean "nothing ever happens" (no
    /// connection, no push, a timeout that fires at once), never "unlimited".
    fn check_positive(&self) -> Result<(), SettingsError> {
        let positive = [
            ("db_pool_size", self.db_pool_size as u64),
            ("max_body_bytes", self.max_body_bytes as u64),
            ("request_timeout_secs", self.request_timeout_secs),
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("max_tcp_connections_per_ip", self.max_tcp_connections_per_ip as u64),
            ("max_connections", self.max_connections as u64),
            ("max_connections_per_ip", self.max_connections_per_ip as u64),
            ("client_queue", self.client_queue as u64),
            ("write_timeout_secs", self.write_timeout_secs),
            ("ping_interval_secs", self.ping_interval_secs),
            ("default_ttl_secs", self.default_ttl_secs as u64),
            ("push_connect_timeout_secs", self.push_connect_timeout_secs),
            ("push_timeout_secs", self.push_timeout_secs),
            ("push_concurrency_per_origin", self.push_concurrency_per_origin as u64),
            ("push_http2_connections", self.push_http2_connections as u64),
            ("push_max_in_flight", self.push_max_in_flight as u64),
            ("push_workers", self.push_workers as u64),
            ("push_batch_size", self.push_batch_size as u64),
            ("push_max_attempts", self.push_max_attempts as u64),
            ("push_deactivate_after_alerts", self.push_deactivate_after_alerts as u64),
            ("push_lease_secs", self.push_lease_secs),
            ("subscription_max_idle_days", self.subscription_max_idle_days as u64),
            ("delivery_retention_days", self.delivery_retention_days as u64),
            ("public_rate_per_minute", self.public_rate_per_minute as u64),
            ("public_subscribe_rate_per_minute", self.public_subscribe_rate_per_minute as u64),
            ("public_receipt_rate_per_minute", self.public_receipt_rate_per_minute as u64),
        ];
        match positive.into_iter().find(|(_, value)| *value == 0) {
            Some((name, _)) => Err(invalid(name, "must be greater than zero")),
            None => Ok(()),
        }
    }

    /// Upper bounds of what the process holds per connection, per ticker and per push service:
    /// beyond them a setting would cost memory or time out of proportion, or break a promise
    /// (dead peers dropped within a minute, every ticker counted as a TCP connection).
    fn check_caps(&self) -> Result<(), SettingsError> {
        if self.worker_threads > 1024 {
            return Err(invalid("worker_threads", "must be at most 1024 (0: one per CPU core)"));
        }
        if self.header_read_timeout_secs > 300 {
            return Err(invalid("header_read_timeout_secs", "must be at most 300"));
        }
        if self.max_tcp_connections_per_ip < self.max_connections_per_ip {
            return Err(invalid(
                "max_tcp_connections_per_ip",
                format!(
                    "must be at least max_connections_per_ip ({}): every ticker is a TCP connection",
                    self.max_connections_per_ip
                ),
            ));
        }
        if self.push_http2_connections > 64 {
            return Err(invalid("push_http2_connections", "must be at most 64"));
        }
        if self.ping_interval_secs > 30 {
            return Err(invalid(
                "ping_interval_secs",
                "must be at most 30, so that dead peers are dropped within a minute",
            ));
        }
        if !(60..=crate::alerts::MAX_TTL_SECS).contains(&self.default_ttl_secs) {
            let why = format!("must be between 60 and {}", crate::alerts::MAX_TTL_SECS);
            return Err(invalid("default_ttl_secs", why));
        }
        if self.client_queue > 65_536 {
            return Err(invalid("client_queue", "must be at most 65536"));
        }
        if self.max_body_bytes > 16 * 1024 * 1024 {
            return Err(invalid("max_body_bytes", "must be at most 16 MiB"));
        }
        Ok(())
    }

    /// Web Push: the VAPID identity push services will see, and which push services we send to.
    fn check_push(&self) -> Result<(), SettingsError> {
        if let Some(subject) = &self.vapid_subject
            && let Err(why) = check_vapid_subject(subject)
        {
            return Err(invalid("vapid_subject", why));
        }
        if let Some(key) = &self.vapid_private_key
            && vapid_public_key(key.expose().trim().trim_end_matches('=')).is_err()
        {
            return Err(invalid(
                "vapid_private_key",
                "must be a raw P-256 private key (32 bytes, base64url)",
            ));
        }
        if self.push_correction_coalesce_ms > 60_000 {
            let why = format!("must be at most 60000 (one minute), got {}", self.push_correction_coalesce_ms);
            return Err(invalid("push_correction_coalesce_ms", why));
        }
        for host in &self.push_extra_hosts {
            if crate::net::HostRule::parse(host).is_none() {
                return Err(invalid(
                    "push_extra_hosts",
                    format!(
                        "`{host}` is not a host name (write `push.example.net`, or `*.push.example.net` for its subdomains)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Outbound HTTP (what it may reach, how long it may take) and the feeds fetched with it.
    fn check_outbound_and_feeds(&self) -> Result<(), SettingsError> {
        for host in &self.outbound_private_hosts {
            if crate::net::HostRule::parse(host).is_none() {
                return Err(invalid(
                    "outbound_private_hosts",
                    format!(
                        "`{host}` is not a host name or IP address (write `cms.intra.example`, \
                         `*.intra.example` or `127.0.0.1`)"
                    ),
                ));
            }
        }
        let ranges = [
            ("outbound_timeout_secs", self.outbound_timeout_secs, 1, 300),
            ("feed_min_interval_secs", self.feed_min_interval_secs, 1, 86_400),
            ("feed_max_bytes", self.feed_max_bytes as u64, 1024, 64 * 1024 * 1024),
            ("feed_max_item_age_hours", self.feed_max_item_age_hours as u64, 1, 720),
            ("feed_concurrency", self.feed_concurrency as u64, 1, 64),
        ];
        for (name, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(invalid(name, format!("must be between {min} and {max} (got {value})")));
            }
        }
        Ok(())
    }

    /// Webhook delivery: per-request time, concurrency, and how long a failing endpoint is
    /// retried before it is disabled.
    fn check_webhooks(&self) -> Result<(), SettingsError> {
        const DAY: u64 = 24 * 3600;
        let webhook_bounds = [
            ("webhook_timeout_secs", self.webhook_timeout_secs, 1, 60),
            ("webhook_max_in_flight", self.webhook_max_in_flight as u64, 1, 1000),
            ("webhook_per_endpoint", self.webhook_per_endpoint as u64, 1, 1000),
            ("webhook_retry_first_secs", self.webhook_retry_first_secs, 1, 3600),
            ("webhook_retry_window_secs", self.webhook_retry_window_secs, 10, 30 * DAY),
            ("webhook_disable_after_secs", self.webhook_disable_after_secs, 1, 30 * DAY),
            ("webhook_secret_grace_secs", self.webhook_secret_grace_secs, 0, 7 * DAY),
        ];
        for (name, value, min, max) in webhook_bounds {
            if !(min..=max).contains(&value) {
                return Err(invalid(name, format!("must be between {min} and {max}, got {value}")));
            }
        }
        Ok(())
    }

    /// The base URL links are made from.
    pub fn public_url(&self) -> Url {
        self.public_url.clone().unwrap_or_else(|| {
            Url::parse(&format!("http://{}/", self.bind)).expect("a socket address makes a URL")
        })
    }

    /// Origins allowed for browsers, in `scheme://host[:port]` form.
    pub fn origins(&self) -> Vec<String> {
        if self.allowed_origins.is_empty() {
            vec![self.public_url().origin().ascii_serialization()]
        } else {
            self.allowed_origins.iter().map(|o| o.trim_end_matches('/').to_string()).collect()
        }
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout_secs)
    }
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs)
    }
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// Lists may be given as TOML arrays or as comma-separated strings (handy in the environment).
/// The public key (65-byte uncompressed point) of a VAPID private key (`vapid_private_key`: the
/// raw 32-byte P-256 scalar, base64url without padding). Here, beside the settings, because it
/// is how `vapid_private_key` is checked at start-up; `push::vapid` uses it for the keys it
/// generates and loads.
pub fn vapid_public_key(private_b64: &str) -> anyhow::Result<[u8; 65]> {
    use anyhow::Context;
    let builder = web_push::VapidSignatureBuilder::from_base64_no_sub(private_b64)
        .map_err(|_| anyhow::anyhow!("not a P-256 private key (32 bytes, base64url)"))?;
    builder.get_public_key().as_slice().try_into().context("unexpected public key length")
}

/// `vapid_subject` must be a contact push services accept: `mailto:` or `https:`, not a
/// placeholder and not localhost (Apple rejects those).
pub fn check_vapid_subject(subject: &str) -> Result<(), String> {
    let lower = subject.to_ascii_lowercase();
    let host = if let Some(addr) = lower.strip_prefix("mailto:") {
        match addr.rsplit_once('@') {
            Some((user, host)) if !user.is_empty() && host.contains('.') => host.to_string(),
            _ => {
                return Err(format!("`{subject}` is not a mailto: address like mailto:haber@example.com.tr"));
            }
        }
    } else if lower.starts_with("https://") {
        match Url::parse(&lower).ok().and_then(|u| u.host_str().map(String::from)) {
            Some(h) => h,
            None => return Err(format!("`{subject}` is not a valid https URL")),
        }
    } else {
        return Err("must start with mailto: or https:".into());
    };
    let placeholder = ["example.com", "example.org", "example.net", "localhost", "yourdomain", "domain.com"];
    if placeholder.iter().any(|p| host == *p || host.ends_with(&format!(".{p}")))
        || host.ends_with(".localhost")
        || host.ends_with(".local")
        || host.parse::<std::net::IpAddr>().is_ok()
    {
        return Err(format!(
            "`{subject}` is a placeholder or local address; push services (Apple's in particular) reject it"
        ));
    }
    Ok(())
}

fn list_from_str_or_seq<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Either::deserialize(d)? {
        Either::One(s) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect(),
        Either::Many(v) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_must_be_real_contacts() {
        assert!(check_vapid_subject("mailto:haber@burdurweb.com").is_ok());
        assert!(check_vapid_subject("https://www.burdurweb.com/iletisim").is_ok());
        for bad in [
            "haber@burdurweb.com",
            "mailto:you@example.com",
            "mailto:root@localhost",
            "https://localhost:8080",
            "https://127.0.0.1",
            "http://www.burdurweb.com",
            "mailto:",
        ] {
            assert!(check_vapid_subject(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_direct_url_is_a_postgresql_url_beside_database_url() {
        let url = |s: &str| Some(Secret::new(s));
        let with = |database_url, database_direct_url| Settings {
            database_url,
            database_direct_url,
            ..Settings::default()
        };
        assert!(
            with(url("postgres://a@pgbouncer:6432/db"), url("postgres://a@db:5432/db")).validate().is_ok()
        );
        for bad in [
            with(url("postgres://a@pgbouncer:6432/db"), url("mysql://a@db/db")),
            with(None, url("postgres://a@db:5432/db")),
        ] {
            let e = bad.validate().unwrap_err();
            assert!(e.to_string().contains("database_direct_url"), "{e}");
        }
    }
}
