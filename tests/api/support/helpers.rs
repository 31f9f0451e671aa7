//! Test harness: a real PostgreSQL, a real server on port 0, real HTTP and WebSocket clients.
//!
//! The PostgreSQL server is `DATABASE_URL` when given (it must allow `create database`), else a
//! throwaway cluster this process starts once, from the installed server binaries, in
//! `$TMPDIR/sondakika-test-postgres/<pid>`. Every test gets its own database in it.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    sync::OnceLock,
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sondakika::{
    app::{AppState, Application},
    auth,
    config::Settings,
    db::local::LocalPostgres,
};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::{io::AsyncBufReadExt, net::TcpStream};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Headline and summary from the real Turkish news article (a copy of
/// ../shared/samples/son-dakika-article.txt kept in tests/fixtures so a bare clone can test).
pub fn sample_article() -> (String, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/son-dakika-article.txt");
    let text = std::fs::read_to_string(path).expect("sample article");
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    // Line 1 is the page title, line 2 the "SON DAKİKA" label, line 3 the headline.
    let headline = lines[2].to_string();
    let paragraph = lines.iter().find(|l| l.chars().count() > 200).expect("a paragraph");
    let summary: String = paragraph.chars().take(500).collect();
    (headline, summary)
}

/// Admin URL of the PostgreSQL server all tests share.
pub fn server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return url;
        }
        // Under /tmp, not target/: as root the server runs as `postgres`, which must be able to
        // reach the directory, and a checkout under /root would not let it.
        let root = std::env::temp_dir().join("sondakika-test-postgres");
        clean_stale_clusters(&root);
        let dir = root.join(std::process::id().to_string());
        let port = free_port();
        let (tx, rx) = std::sync::mpsc::channel();
        // The cluster's parent thread lives as long as the test process: when the process ends,
        // the kernel kills the server (PR_SET_PDEATHSIG), so none is left behind.
        std::thread::spawn(move || {
            let started = LocalPostgres::start_with(&dir, None, Some(port), true);
            match started {
                Ok(pg) => {
                    tx.send(Ok(pg.url().expect("tcp cluster has a url"))).unwrap();
                    let _keep = pg;
                    loop {
                        std::thread::park();
                    }
                }
                Err(e) => tx.send(Err(format!("{e:#}"))).unwrap(),
            }
        });
        rx.recv().unwrap().expect("start a throwaway PostgreSQL")
    })
}

fn clean_stale_clusters(root: &std::path::Path) {
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let pid: Option<i32> = entry.file_name().to_str().and_then(|s| s.parse().ok());
        if let Some(pid) = pid
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A fresh, empty database for one test; returns its URL.
pub async fn new_database() -> String {
    let admin = server_url();
    let name = format!("t_{}", Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(admin).await.expect("connect to the test server");
    sqlx::query(&format!("create database {name}")).execute(&mut conn).await.unwrap();
    let mut url = url::Url::parse(admin).unwrap();
    url.set_path(&name);
    url.to_string()
}

pub fn test_settings(database_url: &str) -> Settings {
    Settings {
        database_url: Some(sondakika::config::Secret::new(database_url)),
        bind: "127.0.0.1:0".parse().unwrap(),
        // Small, to keep the shared test server's connections in check, but not so small that a
        // process's background workers (fan-out, retries, webhooks, feeds, the hub) starve
        // each other on a loaded two-core machine (5 did).
        db_pool_size: 8,
        allowed_origins: vec!["https://www.example.com.tr".into()],
        log_level: "warn".into(),
        shutdown_grace_secs: 5,
        ..Settings::default()
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub db_url: String,
    pub pool: PgPool,
    pub token: String,
    pub http: reqwest::Client,
    pub shutdown: CancellationToken,
    /// The running server's state (to build its router again and look at it).
    pub state: AppState,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> Self {
        let db_url = new_database().await;
        Self::spawn_on(&db_url, configure).await
    }

    /// A server on an existing database (e.g. a second server, or a restart).
    pub async fn spawn_on(db_url: &str, configure: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = test_settings(db_url);
        configure(&mut settings);
        sondakika::telemetry::init_logs(&settings.log_level, settings.log_format);
        let shutdown = CancellationToken::new();
        let app = Application::build(settings, shutdown.clone()).await.expect("application builds");
        let addr = app.local_addr();
        let state = app.state().clone();
        let pool = PgPool::connect(db_url).await.unwrap();
        let handle = tokio::spawn(app.run());
        let (_, token) = auth::create(&pool, "Ayşe Yılmaz", auth::Role::Editor).await.unwrap();
        Self {
            addr,
            base: format!("http://{addr}"),
            db_url: db_url.to_string(),
            pool,
            token,
            http: test_client(),
            shutdown,
            state,
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post_alert(&self, body: Value) -> reqwest::Response {
        self.http.post(self.url("/api/v1/alerts")).bearer_auth(&self.token).json(&body).send().await.unwrap()
    }

    /// Posts an alert that must be created; returns its JSON.
    pub async fn flag(&self, headline: &str, topics: &[&str]) -> Value {
        let r = self
            .post_alert(json!({
                "headline": headline,
                "url": format!("https://www.example.com.tr/haber/{}", Uuid::new_v4()),
                "topics": topics,
            }))
            .await;
        assert_eq!(r.status(), 201, "flagging failed: {}", r.text().await.unwrap());
        r.json().await.unwrap()
    }

    /// An editor request with this app's token (and a JSON body when given).
    pub async fn editor(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).bearer_auth(&self.token).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `/metrics` on the main port, read with an admin token (it requires one).
    pub async fn metrics(&self) -> String {
        let (_, admin) = auth::create(&self.pool, "Metrics", auth::Role::Admin).await.unwrap();
        let r = self.http.get(self.url("/metrics")).bearer_auth(admin).send().await.unwrap();
        assert_eq!(r.status(), 200, "/metrics with an admin token");
        r.text().await.unwrap()
    }

    pub async fn ticker(&self, query: &str) -> Ticker {
        Ticker::connect(&format!("ws://{}/ws{query}", self.addr)).await
    }

    /// Stops the server as SIGTERM would, and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The tests' HTTP client. It lets go of an idle connection after 5 s, well before the server
/// closes one (`header_read_timeout_secs`, 20 s): a request written on a kept-alive connection
/// at the moment the server closes it fails with hyper's `IncompleteMessage` (a race any HTTP
/// client has, hyperium/hyper#2136), and a test with long waits between requests met it under
/// load.
pub fn test_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// A WebSocket ticker client.
pub struct Ticker {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ticker {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connects");
        Self { ws }
    }

    /// The next JSON text frame, within `limit`.
    pub async fn next_within(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()??;
            match msg {
                Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).expect("frames are JSON")),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    pub async fn next(&mut self) -> Value {
        // A bound for a failing test, not a speed target: a loaded machine can take seconds.
        self.next_within(Duration::from_secs(30)).await.expect("a frame within 30 s")
    }

    /// The next frame of the given type, skipping none: asserts the type.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let frame = self.next().await;
        assert_eq!(frame["type"], kind, "expected a {kind} frame, got {frame}");
        frame
    }

    pub async fn send(&mut self, value: Value) {
        self.ws.send(Message::Text(value.to_string().into())).await.unwrap();
    }

    /// Reads until the server closes; returns the close code if a close frame came.
    pub async fn close_code_within(&mut self, limit: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("the server did not close the connection within {limit:?}"),
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| f.code.into()),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

/// A `sondakika serve` child process (for tests that need real processes and signals).
pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    /// Its last log lines, to show when it misbehaves.
    log: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
}

impl ServerProcess {
    pub async fn start(db_url: &str, extra_env: &[(&str, &str)]) -> Self {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sondakika"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", db_url)
            .env("SONDAKIKA_BIND", "127.0.0.1:0")
            .env("SONDAKIKA_LOG_FORMAT", "json")
            .env("SONDAKIKA_LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn sondakika serve");
        let stderr = child.stderr.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            assert!(Instant::now() < deadline, "server did not report its address");
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .expect("server log line")
                .unwrap()
                .expect("server exited before listening");
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["message"] == "sondakika is listening"
            {
                break v["addr"].as_str().unwrap().parse().unwrap();
            }
        };
        // Keep draining the log so the child never blocks on a full pipe; keep its tail.
        let log = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let tail = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut tail = tail.lock().unwrap();
                if tail.len() == 40 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        Self { child, addr, log }
    }

    /// Its last 40 log lines.
    #[allow(dead_code)] // the tests that assert how it ends use it
    pub fn log_tail(&self) -> String {
        self.log.lock().unwrap().iter().cloned().collect::<Vec<_>>().join("\n")
    }

    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("server exits after SIGTERM")
            .unwrap()
    }
}

/// Waits until `check` holds, polling; fails the test after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
