//! Logs and metrics.
//!
//! Logs are `tracing` events on standard error, as text or JSON. Spans carry ids (`alert_id`,
//! `request_id`), never tokens or push endpoints.
//!
//! Every metric name lives in [`metrics`] below, so the full list is in one place and matches the
//! README.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use serde::{Deserialize, Serialize};

/// How log lines are written (the `log_format` setting).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the log subscriber: `level` is the filter (`log_level`; `RUST_LOG` wins when set),
/// `format` the line format (`log_format`). Two plain values, not the settings: telemetry sits
/// below everything, config included, so that anything may log and count. Safe to call more
/// than once (later calls do nothing).
pub fn init_logs(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => {
            registry.with(fmt::layer().json().flatten_event(true).with_writer(std::io::stderr)).try_init()
        }
        LogFormat::Text => registry.with(fmt::layer().with_writer(std::io::stderr)).try_init(),
    };
}

/// The process-wide Prometheus recorder (the `metrics` facade allows one per process).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed, e.g. by an embedding program: then our
        // figures go to theirs and /metrics shows an empty page rather than crashing.
        let _ = ::metrics::set_global_recorder(recorder);
        describe();
        metrics::start_at_zero();
        handle
    })
}

fn describe() {
    use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("sondakika_stream_connections", "Open ticker connections (WebSocket and SSE)");
    describe_counter!("sondakika_stream_connections_rejected_total", "Ticker connections refused, by reason");
    describe_gauge!(
        "sondakika_http_connections",
        "Open TCP connections, by port (main: tickers included; metrics: metrics_bind)"
    );
    describe_counter!(
        "sondakika_http_connections_refused_total",
        "TCP connections refused at accept, by port and reason"
    );
    describe_counter!(
        "sondakika_http_accept_paused_total",
        "Times accepting paused because a port held its connection cap (main: max_tcp_connections)"
    );
    describe_counter!(
        "sondakika_alerts_published_total",
        "Alerts published through the API or the scheduler"
    );
    describe_counter!("sondakika_stream_events_total", "Stream events broadcast by this process");
    describe_counter!(
        "sondakika_push_encryption_cpu_microseconds_total",
        "CPU time spent encrypting pushes (RFC 8291), on the encrypting threads"
    );
    describe_counter!("sondakika_frames_sent_total", "Event frames written to tickers");
    describe_counter!("sondakika_frames_dropped_total", "Event frames a too-slow ticker missed");
    describe_counter!("sondakika_slow_client_disconnects_total", "Tickers closed for falling behind");
    describe_counter!("sondakika_dead_peer_disconnects_total", "Tickers dropped for not answering pings");
    describe_histogram!(
        "sondakika_fanout_latency_seconds",
        Unit::Seconds,
        "From the publishing transaction to this process broadcasting the event"
    );
    describe_histogram!("sondakika_event_fetch_seconds", Unit::Seconds, "Reading new events from the log");
    describe_gauge!(
        "sondakika_stream_listener_connected",
        "1 while the LISTEN connection is up, by channel (stream events, push work)"
    );
    describe_gauge!(
        "sondakika_db_pool_connections",
        "Database pool connections, by state (open, idle, max: db_pool_size)"
    );
    describe_gauge!(
        "sondakika_push_steps_unfinished",
        "Push steps (alerts, corrections, retractions) due and not yet answered for every target, service-wide"
    );
    describe_gauge!(
        "sondakika_push_oldest_unfinished_step_seconds",
        Unit::Seconds,
        "Age of the oldest push step due and not finished, service-wide (0: none)"
    );
    describe_gauge!(
        "sondakika_push_last_milestone_seconds",
        Unit::Seconds,
        "Time the newest push step to reach a milestone (50, 95, 100 % of its targets answered) took"
    );
    describe_gauge!(
        "sondakika_webhook_endpoints",
        "Webhook endpoints, by state (healthy, failing, disabled: after failing too long, disabled_by_admin)"
    );
    describe_gauge!(
        "sondakika_feeds",
        "Feeds, by state (healthy, failing: 3 or more polls in a row failed, disabled)"
    );
    describe_counter!("sondakika_webhook_attempts_total", "Webhook delivery attempts, by result");
    describe_counter!(
        "sondakika_push_attempts_total",
        "Push requests, by push service (fcm, mozilla, apple, wns, other) and result"
    );
    describe_counter!(
        "sondakika_push_vapid_rejected_total",
        "Push services rejecting our VAPID credentials (our fault!)"
    );
    describe_counter!("sondakika_push_throttled_total", "429 answers from push services");
    describe_counter!(
        "sondakika_push_service_down_total",
        "Push services put down for a while after failing to connect or answer"
    );
    describe_gauge!("sondakika_push_origins", "Push-service origins this process keeps state for");
    describe_counter!(
        "sondakika_vapid_tokens_signed_total",
        "VAPID tokens signed (once per origin per 11 h)"
    );
    describe_counter!("sondakika_push_deliveries_logged_total", "Delivery-log rows written");
    describe_histogram!(
        "sondakika_push_latency_seconds",
        Unit::Seconds,
        "From a push's first attempt to its acceptance"
    );
}

/// Named metric updates. Call sites stay one line and names cannot drift.
pub mod metrics {
    use std::time::Duration;

    use ::metrics::{counter, gauge, histogram};

    /// Exports at 0 every series whose labels are known in advance. A counter that first
    /// appears at 1 is invisible to `rate()` and `increase()`, which need a sample before the
    /// event: an alert on the first slow-client disconnect or the one VAPID rejection that stops
    /// an origin would never fire. Series labelled by push service start at 0 when the sender
    /// first meets the service ([`push_service_seen`]).
    pub(super) fn start_at_zero() {
        for name in [
            "sondakika_alerts_published_total",
            "sondakika_stream_events_total",
            "sondakika_frames_sent_total",
            "sondakika_frames_dropped_total",
            "sondakika_slow_client_disconnects_total",
            "sondakika_dead_peer_disconnects_total",
            "sondakika_push_encryption_cpu_microseconds_total",
            "sondakika_push_deliveries_logged_total",
            "sondakika_vapid_tokens_signed_total",
        ] {
            counter!(name).increment(0);
        }
        for reason in ["server_full", "per_ip", "origin"] {
            counter!("sondakika_stream_connections_rejected_total", "reason" => reason).increment(0);
        }
        for transport in ["ws", "sse"] {
            gauge!("sondakika_stream_connections", "transport" => transport).increment(0.0);
        }
        counter!("sondakika_http_connections_refused_total", "port" => "main", "reason" => "per_address")
            .increment(0);
        counter!("sondakika_http_accept_paused_total", "port" => "main").increment(0);
    }

    /// The per-push-service counters that count rare events, at 0 from the first push to it.
    pub fn push_service_seen(service: &'static str) {
        counter!("sondakika_push_vapid_rejected_total", "push_service" => service).increment(0);
        counter!("sondakika_push_throttled_total", "push_service" => service).increment(0);
        counter!("sondakika_push_service_down_total", "push_service" => service).increment(0);
    }

    pub fn connection_opened(kind: &'static str) {
        gauge!("sondakika_stream_connections", "transport" => kind).increment(1.0);
    }
    pub fn connection_closed(kind: &'static str) {
        gauge!("sondakika_stream_connections", "transport" => kind).decrement(1.0);
    }
    pub fn connection_rejected(reason: &'static str) {
        counter!("sondakika_stream_connections_rejected_total", "reason" => reason).increment(1);
    }
    pub fn http_connection_opened(port: &'static str) {
        gauge!("sondakika_http_connections", "port" => port).increment(1.0);
    }
    pub fn http_connection_closed(port: &'static str) {
        gauge!("sondakika_http_connections", "port" => port).decrement(1.0);
    }
    pub fn http_connection_refused(port: &'static str, reason: &'static str) {
        counter!("sondakika_http_connections_refused_total", "port" => port, "reason" => reason).increment(1);
    }
    pub fn http_accept_paused(port: &'static str) {
        counter!("sondakika_http_accept_paused_total", "port" => port).increment(1);
    }
    pub fn alert_published() {
        counter!("sondakika_alerts_published_total").increment(1);
    }
    pub fn alerts_published(n: u64) {
        counter!("sondakika_alerts_published_total").increment(n);
    }
    pub fn events_broadcast() {
        counter!("sondakika_stream_events_total").increment(1);
    }
    pub fn frames_sent(n: u64) {
        counter!("sondakika_frames_sent_total").increment(n);
    }
    pub fn frames_dropped(n: u64) {
        counter!("sondakika_frames_dropped_total").increment(n);
    }
    pub fn slow_client_disconnect() {
        counter!("sondakika_slow_client_disconnects_total").increment(1);
    }
    pub fn dead_peer_disconnect() {
        counter!("sondakika_dead_peer_disconnects_total").increment(1);
    }
    pub fn event_lag(d: Duration) {
        histogram!("sondakika_fanout_latency_seconds").record(d.as_secs_f64());
    }
    pub fn fetch_time(d: Duration) {
        histogram!("sondakika_event_fetch_seconds").record(d.as_secs_f64());
    }
    pub fn listener_connected(channel: &'static str, up: bool) {
        gauge!("sondakika_stream_listener_connected", "channel" => channel).set(if up { 1.0 } else { 0.0 });
    }
    pub fn vapid_signed() {
        counter!("sondakika_vapid_tokens_signed_total").increment(1);
    }
    // Push metrics are labelled by push service from a fixed set (`push::subscription::
    // service_label`), never by host: hosts are strangers' strings, and a label per host would
    // let them grow /metrics without bound.
    pub fn vapid_rejected(service: &'static str) {
        counter!("sondakika_push_vapid_rejected_total", "push_service" => service).increment(1);
    }
    pub fn push_throttled(service: &'static str) {
        counter!("sondakika_push_throttled_total", "push_service" => service).increment(1);
    }
    /// Push services found unreachable (connection failed or timed out), each time one is put
    /// down for a while.
    pub fn push_service_down(service: &'static str) {
        counter!("sondakika_push_service_down_total", "push_service" => service).increment(1);
    }
    /// The handle of one `(push_service, result)` attempts counter; the sender keeps these per
    /// origin rather than looking the labels up on every push.
    pub fn push_attempts(service: &'static str, result: &'static str) -> ::metrics::Counter {
        counter!("sondakika_push_attempts_total", "push_service" => service, "result" => result)
    }
    pub fn push_origins(n: usize) {
        gauge!("sondakika_push_origins").set(n as f64);
    }
    pub fn push_latency(d: Duration) {
        histogram!("sondakika_push_latency_seconds").record(d.as_secs_f64());
    }
    /// CPU time the encryption of pushes took, measured on the encrypting thread: with the
    /// process's total CPU it shows the share of the fan-out that is crypto, in the same run.
    pub fn push_encryption_cpu(d: Duration) {
        counter!("sondakika_push_encryption_cpu_microseconds_total").increment(d.as_micros() as u64);
    }
    pub fn deliveries_logged(n: u64) {
        counter!("sondakika_push_deliveries_logged_total").increment(n);
    }
    /// The pool as the scrape finds it; `max` is its bound, so that saturation is
    /// `(open - idle) / max` whatever `db_pool_size` a process was given.
    pub fn db_pool(size: u32, idle: usize, max: u32) {
        gauge!("sondakika_db_pool_connections", "state" => "open").set(size as f64);
        gauge!("sondakika_db_pool_connections", "state" => "idle").set(idle as f64);
        gauge!("sondakika_db_pool_connections", "state" => "max").set(max as f64);
    }
    // The gauges below describe the whole service as the database holds it, so every process
    // reports the same figure: aggregate them with `max`, never `sum`.
    pub fn push_unfinished(steps: i64, oldest: Duration) {
        gauge!("sondakika_push_steps_unfinished").set(steps as f64);
        gauge!("sondakika_push_oldest_unfinished_step_seconds").set(oldest.as_secs_f64());
    }
    /// `milestone` is `"50"`, `"95"` or `"100"` (per cent of the step's targets answered).
    pub fn push_last_milestone(milestone: &'static str, took: Duration) {
        gauge!("sondakika_push_last_milestone_seconds", "milestone" => milestone).set(took.as_secs_f64());
    }
    pub fn webhook_endpoints(state: &'static str, n: i64) {
        gauge!("sondakika_webhook_endpoints", "state" => state).set(n as f64);
    }
    pub fn feeds(state: &'static str, n: i64) {
        gauge!("sondakika_feeds", "state" => state).set(n as f64);
    }
}
