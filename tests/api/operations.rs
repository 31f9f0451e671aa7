//! The operations kit against a real Prometheus (Debian's `prometheus`): it scrapes a real
//! `sondakika serve` process while a short scripted load runs (an alert pushed to the
//! push-service double, tickers, a webhook), loads the alert rules, and then answers every
//! query of the Grafana dashboard. A panel whose query errors or finds nothing fails the test:
//! that is a panel watching a metric that does not exist, or not under that name or label.
//! The static checks (promtool, kustomize, systemd) are in scripts/test-operations.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sondakika::auth;
use sqlx::PgPool;

use crate::{
    helpers::{ServerProcess, Ticker, eventually, free_port, new_database, test_client},
    push::{PROCESS_PUSH_ENV, SUBJECT},
    push_double::{Behaviour, PushDouble},
};

/// What the dashboard's variables become here; scripts/lib/check-dashboard.py substitutes the
/// same. Two minutes of rate window covers the whole load.
const SUBSTITUTE: &[(&str, &str)] = &[("$__rate_interval", "2m"), ("$instance", ".*")];

/// Generous bound for everything that waits: scrapes, gauges (read every 15 s), the fan-out.
const PATIENCE: Duration = Duration::from_secs(90);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A Prometheus of our own: a free port, a throwaway storage directory, a one-second scrape of
/// `targets`, and the service's rules.
struct Prometheus {
    child: tokio::process::Child,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(targets: &[SocketAddr]) -> Self {
        let binary = which("prometheus").unwrap_or_else(|| {
            panic!(
                "Prometheus is not installed: the dashboard test needs Debian's `prometheus` package \
                 (scripts/setup --test installs it)"
            )
        });
        let dir = tempfile::tempdir().unwrap();
        let rules = root().join("deploy/prometheus/sondakika.rules.yml");
        let targets: Vec<String> = targets.iter().map(|a| format!("'{a}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - '{}'\n\
             scrape_configs:\n  - job_name: sondakika\n    static_configs:\n      - targets: [{}]\n",
            rules.display(),
            targets.join(", "),
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let port = free_port();
        let child = tokio::process::Command::new(binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start prometheus");
        let p = Self { child, base: format!("http://127.0.0.1:{port}"), http: test_client(), _dir: dir };
        eventually(Duration::from_secs(60), "Prometheus is ready", || async {
            matches!(p.http.get(format!("{}/-/ready", p.base)).send().await, Ok(r) if r.status() == 200)
        })
        .await;
        p
    }

    /// An instant query: `Ok(result)` or `Err(what Prometheus said)`.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let r = self
            .http
            .get(format!("{}/api/v1/query", self.base))
            .query(&[("query", expr)])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = r.json().await.map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        Ok(body["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    async fn api(&self, path: &str) -> Value {
        self.http.get(format!("{}{path}", self.base)).send().await.unwrap().json().await.unwrap()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// Every query of the dashboard, with the panel it belongs to, variables substituted.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("deploy/grafana/sondakika.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let mut expr = target["expr"].as_str().expect("every target has an expr").to_string();
            for (var, value) in SUBSTITUTE {
                expr = expr.replace(var, value);
            }
            assert!(
                !expr.contains('$'),
                "panel {}: {expr} has a variable this test does not know",
                panel["title"]
            );
            out.push((panel["title"].as_str().unwrap().to_string(), expr));
        }
    }
    out
}

/// A webhook receiver that takes every delivery (signatures are the webhooks tests' subject).
async fn webhook_sink() -> (SocketAddr, Arc<AtomicUsize>) {
    let received = Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, received)
}

async fn scrape(http: &reqwest::Client, metrics: SocketAddr) -> String {
    http.get(format!("http://{metrics}/metrics")).send().await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_and_alert_rule_works_against_a_real_prometheus() {
    let db = new_database().await;
    let double = PushDouble::start(SUBJECT).await;
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let metrics_bind = metrics.to_string();
    let env = [
        PROCESS_PUSH_ENV,
        &[
            ("SONDAKIKA_METRICS_BIND", metrics_bind.as_str()),
            ("SONDAKIKA_OUTBOUND_PRIVATE_HOSTS", "127.0.0.1"),
        ],
    ]
    .concat();
    let server = ServerProcess::start(&db, &env).await;
    let base = format!("http://{}", server.addr);
    let http = test_client();
    let pool = PgPool::connect(&db).await.unwrap();
    let (_, editor) = auth::create(&pool, "Ayşe Yılmaz", auth::Role::Editor).await.unwrap();
    let (_, admin) = auth::create(&pool, "Nöbetçi", auth::Role::Admin).await.unwrap();

    // Before any load: series with known labels are there at 0, so that the first event is an
    // increase Prometheus can see.
    let before = scrape(&http, metrics).await;
    for line in [
        "sondakika_slow_client_disconnects_total 0",
        "sondakika_frames_dropped_total 0",
        "sondakika_stream_connections_rejected_total{reason=\"origin\"} 0",
        "sondakika_db_pool_connections{state=\"max\"} 16",
    ] {
        assert!(before.lines().any(|l| l == line), "/metrics lacks `{line}` before any load:\n{before}");
    }

    let prometheus = Prometheus::start(&[metrics]).await;

    // The load: tickers, subscribers on the push-service double, a webhook endpoint, an alert.
    let mut tickers = Vec::new();
    for _ in 0..3 {
        let mut t = Ticker::connect(&format!("ws://{}/ws", server.addr)).await;
        t.expect("hello").await;
        tickers.push(t);
    }
    let (_, key) = {
        let r = http.get(format!("{base}/api/v1/push/vapid-public-key")).send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    double.set_vapid_key(key["publicKey"].as_str().unwrap());
    for id in 0..20 {
        let r = http
            .post(format!("{base}/api/v1/push/subscriptions"))
            .json(&json!({ "subscription": double.subscriber(id, Behaviour::Accept), "topics": [], "locale": "tr" }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "subscribe: {}", r.status());
    }
    let (sink, hooks) = webhook_sink().await;
    let r = http
        .post(format!("{base}/api/v1/webhooks"))
        .bearer_auth(&admin)
        .json(&json!({ "url": format!("http://{sink}/hook"), "event_types": ["alert.flagged"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "register the webhook: {}", r.text().await.unwrap());
    let r = http
        .post(format!("{base}/api/v1/alerts"))
        .bearer_auth(&editor)
        .json(&json!({ "headline": "Deprem: İzmir'de 5,1 büyüklüğünde sarsıntı", "url": "https://x.example/deprem" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "flag the alert");
    for t in &mut tickers {
        t.expect("alert").await;
    }
    eventually(PATIENCE, "every subscriber got the push", || async { double.accepted_counts().len() == 20 })
        .await;
    eventually(PATIENCE, "the webhook was delivered", || async { hooks.load(Ordering::SeqCst) >= 1 }).await;
    assert_eq!(double.violations(), Vec::<String>::new());

    // Per push service, the rare events' counters exist from the first push on.
    let after = scrape(&http, metrics).await;
    for line in [
        "sondakika_push_vapid_rejected_total{push_service=\"other\"} 0",
        "sondakika_push_service_down_total{push_service=\"other\"} 0",
    ] {
        assert!(after.lines().any(|l| l == line), "/metrics lacks `{line}` after a push:\n{after}");
    }

    // Every panel's query answers something once Prometheus has scraped the end of the load
    // (the service-wide gauges are read every 15 s, hence the patience).
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "the dashboard has its panels ({})", queries.len());
    let deadline = Instant::now() + PATIENCE;
    let failures = loop {
        let mut failures = Vec::new();
        for (panel, expr) in &queries {
            match prometheus.query(expr).await {
                Ok(result) if result.is_empty() => {
                    failures.push(format!("{panel}: `{expr}` returned nothing"))
                }
                Ok(_) => {}
                Err(e) => failures.push(format!("{panel}: `{expr}` failed: {e}")),
            }
        }
        if failures.is_empty() || Instant::now() > deadline {
            break failures;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    assert!(failures.is_empty(), "dashboard queries against a real Prometheus:\n{}", failures.join("\n"));

    // The rules load and evaluate on real data without an error.
    let rules = prometheus.api("/api/v1/rules").await;
    let mut count = 0;
    for group in rules["data"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            count += 1;
            assert_eq!(rule["health"], "ok", "rule {} in Prometheus: {}", rule["name"], rule["lastError"]);
        }
    }
    assert!(count >= 15, "Prometheus loaded the rules ({count})");
    let in_use = prometheus.query("sondakika:db_pool_in_use:ratio").await.unwrap();
    assert_eq!(in_use.len(), 1, "one process's pool: {in_use:?}");
    // The load was healthy: nothing pages.
    let firing = prometheus.query("ALERTS{alertstate=\"firing\"}").await.unwrap();
    assert!(firing.is_empty(), "alerts firing after a healthy load: {firing:?}");
    drop(server);
}

/// Without Web Push, alerts still queue push steps that nobody works: the process must not
/// report them as a stalled push backlog, or a push-less installation would page every 15
/// minutes for each alert (SondakikaAlertNotDelivered).
#[tokio::test]
async fn a_process_without_web_push_reports_no_push_backlog() {
    let db = new_database().await;
    // An alert flagged before the process starts, so that the gauges' first reading sees it.
    let helper = crate::helpers::TestApp::spawn_on(&db, |_| {}).await;
    helper.flag("Burdur'da deprem", &[]).await;
    helper.stop().await;
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let metrics_bind = metrics.to_string();
    let server = ServerProcess::start(&db, &[("SONDAKIKA_METRICS_BIND", metrics_bind.as_str())]).await;
    let http = test_client();
    let deadline = Instant::now() + PATIENCE;
    let page = loop {
        let page = scrape(&http, metrics).await;
        if page.contains("sondakika_feeds{state=\"healthy\"}") {
            break page;
        }
        assert!(Instant::now() < deadline, "the service gauges were never read:\n{page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        !page.contains("sondakika_push_steps_unfinished")
            && !page.contains("sondakika_push_oldest_unfinished"),
        "a process without Web Push reports a push backlog:\n{page}"
    );
    drop(server);
}
