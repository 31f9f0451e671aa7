//! Building and running one `sondakika serve` process.
//!
//! [`Application::build`] connects (starting the private PostgreSQL if no URL is set), migrates,
//! binds, and assembles the one [`AppState`]. [`Application::run`] serves until the shutdown
//! token is cancelled, then: stops accepting, closes every ticker with 1001, lets requests and
//! workers finish (bounded by `shutdown_grace_secs`), flushes figures, and returns.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use axum::{
    Extension, Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{HeaderMap, HeaderName, HeaderValue, Method, header},
    middleware,
};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    sensitive_headers::SetSensitiveRequestHeadersLayer,
    timeout::TimeoutLayer,
    trace::TraceLayer,
};

use crate::{
    api,
    config::Settings,
    db::{self, Database},
    net,
    server::{self, edge, error::ApiError, extract::BodyLimit, limits::ConnectionLimits},
    stream::{self, Admission, hub::Hub, protocol::Limits},
    workers,
};

/// How often the stream follower reads the log even without a NOTIFY.
/// LISTEN channels of a process: the stream's, the drafts', and the fan-out's (with Web Push on).
const LISTEN_CHANNELS: u32 = 3;
const STREAM_POLL: Duration = Duration::from_secs(1);
/// How often this process's ticker counts are written.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// Connections `metrics_bind` holds at once (part of the open-file reserve).
const METRICS_MAX_CONNECTIONS: usize = 16;

/// Everything a request handler or a connection task may need. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    /// The LISTEN connections, apart from `db` ([`db::listeners`]).
    pub listen_db: PgPool,
    pub settings: Arc<Settings>,
    pub hub: Arc<Hub>,
    pub admission: Arc<Admission>,
    pub limits: Arc<Limits>,
    pub origins: Arc<Vec<String>>,
    /// Cancelled once, on SIGTERM/SIGINT (or by a test): every task watches it.
    pub shutdown: CancellationToken,
    /// Connection tasks and workers, so that shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Web Push, when `vapid_subject` is set.
    pub push: Option<Arc<crate::push::Push>>,
    pub public_limiter: Arc<server::rate_limits::PublicLimits>,
    /// The SSRF-safe client for URLs admins register (feeds, webhook endpoints).
    pub outbound: crate::net::Outbound,
    /// Wakes this process's feed poller at once (a feed registered or asked to poll now).
    pub feeds_wake: Arc<tokio::sync::Notify>,
    /// The drafts list the consoles' live streams share.
    pub drafts: crate::feeds::live::LiveDrafts,
}

impl AppState {
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o == "*" || o == origin)
    }

    /// The client's address: the peer, or behind a trusted proxy the address it appended last
    /// to `X-Forwarded-For` (earlier entries are whatever the client claimed).
    pub fn client_ip(&self, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
        let peer_ip = peer.ip();
        if !self.settings.trust_forwarded_for {
            return peer_ip;
        }
        headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|ip| ip.trim().parse().ok())
            .unwrap_or(peer_ip)
    }
}

pub struct Application {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: AppState,
    connection_limits: Arc<ConnectionLimits>,
    /// Keeps the private PostgreSQL running for as long as the application lives.
    database: Database,
}

impl Application {
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let open_files = server::limits::open_file_limit();
        let max_tcp = server::limits::total_cap(&settings, open_files).map_err(anyhow::Error::msg)?;
        if settings.max_connections > max_tcp {
            tracing::warn!(
                max_connections = settings.max_connections,
                max_tcp,
                "max_connections is above the TCP connection cap, which then bounds tickers first"
            );
        }
        if settings.trust_forwarded_for && settings.max_tcp_connections_per_ip < max_tcp {
            tracing::warn!(
                max_tcp_connections_per_ip = settings.max_tcp_connections_per_ip,
                "behind a proxy (trust_forwarded_for) every connection comes from the proxy, and this \
                 caps the proxy's connections: set max_tcp_connections_per_ip to max_tcp_connections \
                 and limit each client at the proxy"
            );
        }
        let connection_limits = ConnectionLimits::new("main", max_tcp, settings.max_tcp_connections_per_ip);
        let database = Database::locate(&settings).await?;
        db::migrate_directly(&database.direct).await?;
        let pool = db::connect(database.options.clone(), settings.db_pool_size).await?;
        let listen_db = db::listeners(database.direct.clone(), LISTEN_CHANNELS);

        let listener = TcpListener::bind(settings.bind)
            .await
            .with_context(|| format!("invalid setting `bind`: cannot listen on {}", settings.bind))?;
        let metrics_listener = match settings.metrics_bind {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("invalid setting `metrics_bind`: cannot listen on {addr}"))?,
            ),
            None => None,
        };
        crate::telemetry::prometheus();

        let hub = Arc::new(Hub::new(
            settings.client_queue,
            settings.replay_max_count,
            Duration::from_secs(settings.replay_max_age_secs),
        ));
        stream::hub::load_window(&hub, &pool).await.context("loading recent stream events")?;
        let limits = Limits {
            max_replay: settings.replay_max_count,
            max_replay_age_seconds: settings.replay_max_age_secs,
            queue: settings.client_queue,
            ping_interval_seconds: settings.ping_interval_secs,
            max_message_bytes: stream::ws::MAX_CLIENT_MESSAGE,
        };
        let push = crate::push::Push::build(&settings, &pool).await?.map(Arc::new);
        let outbound = net::Outbound::new(
            net::PrivateHosts::new(&settings.outbound_private_hosts),
            Duration::from_secs(settings.outbound_timeout_secs),
            &net::user_agent(&settings.public_url()),
        )
        .context("building the outbound HTTP client")?;
        let state = AppState {
            outbound,
            feeds_wake: Arc::new(tokio::sync::Notify::new()),
            drafts: Default::default(),
            push,
            public_limiter: Arc::new(server::rate_limits::PublicLimits::new(&settings)),
            db: pool,
            listen_db,
            admission: Arc::new(Admission::new(settings.max_connections, settings.max_connections_per_ip)),
            origins: Arc::new(settings.origins()),
            settings: Arc::new(settings),
            hub,
            limits: Arc::new(limits),
            shutdown,
            tracker: TaskTracker::new(),
        };
        Ok(Self { listener, metrics_listener, state, connection_limits, database })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub async fn run(self) -> anyhow::Result<()> {
        let Self { listener, metrics_listener, state, connection_limits, database } = self;
        let shutdown = state.shutdown.clone();
        spawn_workers(&state);

        let app = router(state.clone());
        if let Some(metrics_listener) = metrics_listener {
            let metrics_app = Router::new()
                .route("/metrics", axum::routing::get(api::health::metrics))
                .with_state(state.clone());
            // The same loop as the main port's, with caps of its own: a scraper needs one or two
            // connections, and these are outside max_tcp_connections (in the file reserve).
            let edge = server::Edge {
                limits: ConnectionLimits::new("metrics", METRICS_MAX_CONNECTIONS, METRICS_MAX_CONNECTIONS),
                header_read_timeout: state.settings.header_read_timeout(),
                send_buffer: 0,
            };
            state.tracker.spawn(server::serve(metrics_listener, metrics_app, edge, shutdown.clone()));
        }
        tracing::info!(
            addr = %listener.local_addr()?,
            max_tcp_connections = connection_limits.max_total(),
            "sondakika is listening"
        );
        let grace = state.settings.shutdown_grace();
        let edge = server::Edge {
            limits: connection_limits,
            header_read_timeout: state.settings.header_read_timeout(),
            send_buffer: state.settings.tcp_send_buffer_bytes,
        };
        let server = server::serve(listener, app, edge, shutdown.clone());
        // Shutdown is bounded as a whole: once the signal comes, requests, streams and workers
        // share one deadline of `shutdown_grace_secs`.
        let deadline = async {
            shutdown.cancelled().await;
            tokio::time::Instant::now() + grace
        };
        tokio::pin!(server, deadline);
        let mut ends_at = None;
        loop {
            tokio::select! {
                () = &mut server => break,
                at = &mut deadline, if ends_at.is_none() => ends_at = Some(at),
                _ = tokio::time::sleep_until(ends_at.unwrap_or_else(tokio::time::Instant::now)), if ends_at.is_some() => {
                    tracing::warn!(?grace, "requests still open at the end of the grace period; closing them");
                    break;
                }
            }
        }
        let ends_at = ends_at.unwrap_or_else(|| tokio::time::Instant::now() + grace);

        // Accepting has stopped and plain requests are done; tickers are being closed with 1001
        // and workers are finishing their current step.
        state.tracker.close();
        if tokio::time::timeout_at(ends_at, state.tracker.wait()).await.is_err() {
            tracing::warn!(?grace, "some connections or workers did not finish in time");
        }
        workers::flush_stats(&state.hub, &state.db).await;
        state.db.close().await;
        database.shutdown().await;
        tracing::info!("sondakika stopped");
        Ok(())
    }
}

pub fn router(state: AppState) -> Router {
    let limit = state.settings.max_body_bytes;
    let origins: Vec<HeaderValue> =
        state.origins.iter().filter(|o| *o != "*").filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    let allow_origin =
        if state.origins.iter().any(|o| o == "*") { AllowOrigin::any() } else { AllowOrigin::list(origins) };
    let cors = CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("last-event-id"),
        ])
        // Retry-After: a service worker on a news site's origin waits as told (429, and a
        // receipt that beat the delivery log).
        .expose_headers([header::LOCATION, header::RETRY_AFTER, HeaderName::from_static("x-request-id")])
        .max_age(Duration::from_secs(3600));
    let timeout = Duration::from_secs(state.settings.request_timeout_secs);

    let x_request_id = edge::X_REQUEST_ID;
    let (api, openapi) = api::routes(state.clone());
    Router::new()
        .merge(api)
        .merge(stream::router())
        .merge(crate::web::router())
        .fallback(|| async { ApiError::NotFound("there is nothing at this address".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(Extension(BodyLimit(limit)))
        .layer(Extension(api::openapi::Document::new(&openapi)))
        .layer(DefaultBodyLimit::max(limit))
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, timeout))
        .layer(middleware::map_request(edge::bound_uri))
        .layer(cors)
        .layer(middleware::map_response(edge::problem_json_errors))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                // Route templates, not raw paths: low cardinality, and no ids or tokens in names.
                let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str());
                let request_id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                tracing::info_span!("request", method = %req.method(), route, request_id, editor_id = tracing::field::Empty)
            }),
        )
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid))
        .layer(middleware::map_request(edge::bound_request_id))
        .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION]))
        .with_state(state)
}

/// Starts this process's background workers (listed in [`workers`]).
fn spawn_workers(state: &AppState) {
    let t = &state.tracker;
    t.spawn(stream::hub::follow(
        state.hub.clone(),
        state.db.clone(),
        state.listen_db.clone(),
        STREAM_POLL,
        state.shutdown.clone(),
    ));
    t.spawn(workers::scheduler::run(state.db.clone(), state.shutdown.clone()));
    let keep = workers::housekeeping::Retention {
        delivery_retention_days: state.settings.delivery_retention_days,
        subscription_max_idle_days: state.settings.subscription_max_idle_days,
    };
    t.spawn(workers::housekeeping::run(state.db.clone(), keep, state.shutdown.clone()));
    t.spawn(workers::gauges::run(state.db.clone(), state.push.is_some(), state.shutdown.clone()));
    let webhooks = crate::webhooks::worker::Worker::new(
        state.db.clone(),
        &state.settings,
        state.outbound.clone(),
        t.clone(),
    );
    t.spawn(webhooks.run(state.shutdown.clone()));
    let feeds = crate::feeds::poller::Poller {
        pool: state.db.clone(),
        outbound: state.outbound.clone(),
        settings: state.settings.clone(),
        wake: state.feeds_wake.clone(),
        parsing: crate::feeds::bounded::Threads::new(state.settings.feed_concurrency, "feed-parse"),
    };
    t.spawn(feeds.run(state.shutdown.clone()));
    t.spawn(state.drafts.clone().run(state.db.clone(), state.listen_db.clone(), state.shutdown.clone()));
    if let Some(push) = &state.push {
        t.spawn(push.fanout.clone().run(state.hub.clone(), state.listen_db.clone(), state.shutdown.clone()));
    }
    let s = state.clone();
    t.spawn(async move {
        let mut every = tokio::time::interval(crate::server::rate_limits::SWEEP_EVERY);
        loop {
            tokio::select! {
                _ = s.shutdown.cancelled() => return,
                _ = every.tick() => s.public_limiter.retain_recent(),
            }
        }
    });
    let s = state.clone();
    t.spawn(async move {
        let mut every = tokio::time::interval(STATS_EVERY);
        loop {
            tokio::select! {
                _ = s.shutdown.cancelled() => return,
                _ = every.tick() => workers::flush_stats(&s.hub, &s.db).await,
            }
        }
    });
}
