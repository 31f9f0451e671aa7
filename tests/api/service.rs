//! The service as operators run it: schedules, several processes, database restarts, shutdown,
//! migrations, settings and the CLI.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sondakika::{app::Application, db::local::LocalPostgres};
use tokio_util::sync::CancellationToken;

use crate::helpers::{ServerProcess, TestApp, Ticker, free_port, new_database, test_settings};

fn in_secs(s: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(s)).to_rfc3339()
}

#[tokio::test]
async fn a_scheduled_alert_fires_on_time() {
    let app = TestApp::spawn().await;
    let mut t = app.ticker("").await;
    t.expect("hello").await;
    let due = chrono::Utc::now() + chrono::Duration::milliseconds(2500);
    let r = app
        .post_alert(
            json!({ "headline": "Zamanlı", "url": "https://x.example/z", "send_at": due.to_rfc3339() }),
        )
        .await;
    assert_eq!(r.status(), 201);
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["status"], "scheduled");
    assert_eq!(a["seq"], Value::Null);
    assert!(t.next_within(Duration::from_millis(1500)).await.is_none(), "not before its time");
    let frame = t.next_within(Duration::from_secs(10)).await.expect("fires");
    let fired = chrono::Utc::now();
    assert_eq!(frame["id"], a["id"]);
    // The scheduler looks every 250 ms; the bound is loose because a loaded machine is slow, not
    // because the scheduler may be.
    let late = fired - due;
    assert!(late < chrono::Duration::seconds(5) && late > chrono::Duration::zero(), "fired {late} after due");
}

#[tokio::test]
async fn a_scheduled_alert_fires_after_a_restart() {
    let app = TestApp::spawn().await;
    let r = app
        .post_alert(
            json!({ "headline": "Yeniden başlatma", "url": "https://x.example/r", "send_at": in_secs(2) }),
        )
        .await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].clone();
    let db_url = app.db_url.clone();
    app.stop().await;
    tokio::time::sleep(Duration::from_secs(3)).await; // due while nothing runs

    let app = TestApp::spawn_on(&db_url, |_| {}).await;
    let mut t = app.ticker("?since=0").await;
    let hello = t.expect("hello").await;
    let frame = if hello["replay"]["count"] == 1 { t.next().await } else { t.expect("alert").await };
    assert_eq!(frame["id"], id);
    let status: String = sqlx::query_scalar("select status from alerts").fetch_one(&app.pool).await.unwrap();
    assert_eq!(status, "live");
}

#[tokio::test]
async fn tickers_miss_nothing_when_the_database_restarts() {
    // This test restarts PostgreSQL, so it runs its own private cluster.
    let dir = tempfile::Builder::new().prefix("sondakika-restart-").tempdir_in("/tmp").unwrap();
    let port = free_port();
    let mut pg = tokio::task::spawn_blocking({
        let path = dir.path().to_path_buf();
        move || LocalPostgres::start(&path, None, Some(port))
    })
    .await
    .unwrap()
    .unwrap();
    let url = pg.url().unwrap();
    let app = TestApp::spawn_on(&url, |_| {}).await;
    let mut t = app.ticker("").await;
    t.expect("hello").await;
    app.flag("Önce", &[]).await;
    let last = t.expect("alert").await["seq"].as_i64().unwrap();

    pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    // While the database is down, flagging fails cleanly and the ticker stays connected.
    let r = app.post_alert(json!({ "headline": "Kesinti", "url": "https://x.example/k" })).await;
    assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());
    assert_eq!(app.get_json("/readyz").await.0, 503);
    let pg = tokio::task::spawn_blocking(move || {
        pg.restart(None).unwrap();
        pg
    })
    .await
    .unwrap();

    // The service recovers on its own: the next alert reaches the same ticker.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = app.post_alert(json!({ "headline": "Sonra", "url": "https://x.example/s" })).await;
        if r.status() == 201 {
            break;
        }
        assert!(Instant::now() < deadline, "flagging did not recover: {}", r.status());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let frame = t.next_within(Duration::from_secs(5)).await.expect("the ticker gets the new alert");
    assert_eq!(frame["headline"], "Sonra");
    assert!(frame["seq"].as_i64().unwrap() > last);
    app.stop().await;
    drop(pg);
}

#[tokio::test]
async fn sigterm_closes_tickers_with_1001_and_exits_zero() {
    let db = new_database().await;
    let mut server = ServerProcess::start(&db, &[]).await;
    let mut tickers = Vec::new();
    for _ in 0..5 {
        let mut t = Ticker::connect(&format!("ws://{}/ws", server.addr)).await;
        t.expect("hello").await;
        tickers.push(t);
    }
    let sse = reqwest::get(format!("http://{}/sse", server.addr)).await.unwrap();
    assert_eq!(sse.status(), 200);
    let status = server.terminate().await;
    assert!(status.success(), "exit status {status:?}");
    for t in &mut tickers {
        assert_eq!(t.close_code_within(Duration::from_secs(5)).await, Some(1001));
    }
    let text = sse.text().await.unwrap();
    assert!(text.contains("event: close") && text.contains("1001"), "{text}");
}

#[tokio::test]
async fn in_process_shutdown_finishes_and_refuses_new_streams() {
    let app = TestApp::spawn().await;
    let mut t = app.ticker("").await;
    t.expect("hello").await;
    app.shutdown.cancel();
    assert_eq!(t.close_code_within(Duration::from_secs(5)).await, Some(1001));
    app.stop().await;
}

#[tokio::test]
async fn a_database_with_a_newer_schema_is_refused() {
    let db = new_database().await;
    let app = TestApp::spawn_on(&db, |_| {}).await;
    sqlx::query("insert into _sqlx_migrations (version, description, success, checksum, execution_time) values (99990101000000, 'from the future', true, '\\x00', 0)")
        .execute(&app.pool)
        .await
        .unwrap();
    app.stop().await;
    let err = Application::build(test_settings(&db), CancellationToken::new()).await.err().expect("refused");
    let msg = format!("{err:#}");
    assert!(msg.contains("newer than this sondakika"), "{msg}");
}

/// `worker_threads` sizes the server's async runtime, counted from the child's thread names.
/// tokio gives its blocking-pool threads the same name as its async workers, but starts them
/// only for blocking work (file or DNS I/O), which a server just started with push off has not
/// done: every `tokio-rt-worker` there is an async worker.
#[tokio::test]
async fn worker_threads_sizes_the_async_runtime() {
    let db = new_database().await;
    let workers = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.trim_end() == "tokio-rt-worker")
            .count()
    };
    let mut three = ServerProcess::start(&db, &[("SONDAKIKA_WORKER_THREADS", "3")]).await;
    let mut one = ServerProcess::start(&db, &[("SONDAKIKA_WORKER_THREADS", "1")]).await;
    let (n3, n1) = (workers(three.child.id().unwrap()), workers(one.child.id().unwrap()));
    three.terminate().await;
    one.terminate().await;
    assert_eq!((n3, n1), (3, 1));
}

#[tokio::test]
async fn a_bad_setting_stops_start_up_naming_it() {
    for (var, value, named) in [
        ("SONDAKIKA_MAX_CONNECTIONS", "lots", "max_connections"),
        ("SONDAKIKA_BIND", "nowhere", "bind"),
        ("SONDAKIKA_ALLOWED_ORIGINS", "example.com", "allowed_origins"),
        ("SONDAKIKA_PING_INTERVAL_SECS", "90", "ping_interval_secs"),
        ("SONDAKIKA_COLOUR", "red", "colour"),
        ("SONDAKIKA_WORKER_THREADS", "5000", "worker_threads"),
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sondakika"))
            .arg("serve")
            .env("DATABASE_URL", "postgres://unused@127.0.0.1:1/x")
            .env(var, value)
            .output()
            .await
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(named), "{var}={value}: {stderr}");
    }
}

#[tokio::test]
async fn settings_come_from_a_toml_file_then_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sondakika.toml");
    std::fs::write(
        &file,
        "bind = \"127.0.0.1:9999\"\nmax_connections = 77\nallowed_origins = [\"https://a.example\"]\n",
    )
    .unwrap();
    let s = sondakika::config::Settings::load(Some(&file)).unwrap();
    assert_eq!(s.max_connections, 77);
    assert_eq!(s.origins(), ["https://a.example"]);
    assert_eq!(s.bind.port(), 9999);
    let missing = sondakika::config::Settings::load(Some(&dir.path().join("nope.toml"))).unwrap_err();
    assert!(missing.to_string().contains("does not exist"));
    std::fs::write(&file, "max_connections = \"many\"\n").unwrap();
    let bad = sondakika::config::Settings::load(Some(&file)).unwrap_err();
    assert!(bad.to_string().contains("max_connections"), "{bad}");
}

#[tokio::test]
async fn the_cli_creates_tokens_and_flags_alerts() {
    let app = TestApp::spawn().await;
    let bin = env!("CARGO_BIN_EXE_sondakika");
    let out = tokio::process::Command::new(bin)
        .args(["token", "create", "--name", "Zeynep Çağlar", "--role", "admin"])
        .env("DATABASE_URL", &app.db_url)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.trim();
    assert_eq!(stdout.lines().count(), 1, "the token alone on stdout");
    assert!(token.starts_with("sdk_"));

    let r = app.http.get(app.url("/api/v1/me")).bearer_auth(token).send().await.unwrap();
    let me: Value = r.json().await.unwrap();
    assert_eq!((me["name"].as_str(), me["role"].as_str()), (Some("Zeynep Çağlar"), Some("admin")));

    let mut t = app.ticker("").await;
    t.expect("hello").await;
    let out = tokio::process::Command::new(bin)
        .args([
            "alert",
            "send",
            "--headline",
            "CLI'dan son dakika",
            "--url",
            "https://x.example/cli",
            "--topic",
            "gundem",
            "--follow-secs",
            "6",
        ])
        .env("SONDAKIKA_SERVER", &app.base)
        .env("SONDAKIKA_TOKEN", token)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("CLI'dan son dakika"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 live tickers reached"), "the follow display ends on the figures: {stderr}");
    let frame = t.expect("alert").await;
    assert_eq!(frame["headline"], "CLI'dan son dakika");

    let id = frame["id"].as_str().unwrap();
    let out = tokio::process::Command::new(bin)
        .args(["alert", "retract", id, "--server", &app.base, "--token", token])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(t.expect("retract").await["id"], id);

    let out = tokio::process::Command::new(bin)
        .args(["token", "list"])
        .env("DATABASE_URL", &app.db_url)
        .output()
        .await
        .unwrap();
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(listing.contains("Zeynep Çağlar") && !listing.contains(token), "{listing}");

    // A wrong token gets a readable error, not a crash.
    let out = tokio::process::Command::new(bin)
        .args(["alert", "list", "--server", &app.base, "--token", "sdk_wrong"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

#[tokio::test]
async fn the_cli_creates_and_shows_the_vapid_key_the_server_then_uses() {
    let db = new_database().await;
    let bin = env!("CARGO_BIN_EXE_sondakika");
    let run = |args: &'static [&'static str]| {
        let db = db.clone();
        async move {
            let out =
                tokio::process::Command::new(bin).args(args).env("DATABASE_URL", &db).output().await.unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        }
    };
    let created = run(&["vapid", "generate"]).await;
    assert_eq!(created.len(), 87, "65 bytes in base64url: {created}");
    assert_eq!(run(&["vapid", "show"]).await, created);
    assert_eq!(run(&["vapid", "generate"]).await, created, "an existing key is never replaced");
    let app = TestApp::spawn_on(&db, |s| s.vapid_subject = Some("mailto:teknik@burdurweb.com".into())).await;
    let (_, key) = app.get_json("/api/v1/push/vapid-public-key").await;
    assert_eq!(key["publicKey"], created.as_str());
}
