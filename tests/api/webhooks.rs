//! Webhooks out, against a receiver that verifies every delivery with the official Standard
//! Webhooks library (PyPI `standardwebhooks`, tests/webhooks/receiver.py), not with our code:
//! every alert event arrives signed, failures are retried with backoff, a rotated secret signs
//! alongside the old one for the grace period, an endpoint that keeps failing is disabled, a
//! slow receiver never delays an alert, and a process killed mid-delivery loses nothing.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Stdio,
    time::{Duration, Instant},
};

use reqwest::Method;
use serde_json::{Value, json};
use sondakika::auth::{self, Role};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{
    helpers::{ServerProcess, TestApp, Ticker, eventually, new_database, test_client},
    push::{bulk_subscribe, push_app, wait_done},
    push_double::Behaviour,
};

static SETUP: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// The receiver process (Python with the official library).
struct Receiver {
    child: tokio::process::Child,
    port: u16,
    http: reqwest::Client,
}

impl Receiver {
    async fn start() -> Self {
        let root = env!("CARGO_MANIFEST_DIR");
        SETUP
            .get_or_init(|| async {
                let status = tokio::process::Command::new(format!("{root}/scripts/setup-webhook-receiver"))
                    .status()
                    .await
                    .expect("run scripts/setup-webhook-receiver");
                assert!(status.success(), "scripts/setup-webhook-receiver failed");
            })
            .await;
        let mut child =
            tokio::process::Command::new(format!("{root}/target/webhook-receiver-venv/bin/python"))
                .arg(format!("{root}/tests/webhooks/receiver.py"))
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("start the receiver");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the receiver prints its port")
            .unwrap()
            .expect("the receiver started");
        let port = first.trim().parse().expect("a port");
        Self { child, port, http: reqwest::Client::new() }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn control(&self, v: Value) {
        let r = self.http.put(self.url("/_control")).json(&v).send().await.unwrap();
        assert_eq!(r.status(), 204);
    }

    async fn log(&self) -> Vec<Value> {
        self.http.get(self.url("/_log")).send().await.unwrap().json().await.unwrap()
    }

    /// Waits until `n` deliveries came; returns them all.
    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log().await;
            if log.len() >= n {
                return log;
            }
            assert!(Instant::now() < deadline, "{} of {n} deliveries within {within:?}: {log:#?}", log.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn body(delivery: &Value) -> Value {
    serde_json::from_str(delivery["body"].as_str().unwrap()).expect("the body is JSON")
}

async fn admin_token(pool: &sqlx::PgPool) -> String {
    auth::create(pool, "Yönetici", Role::Admin).await.unwrap().1
}

/// Registers an endpoint; returns (id, secret).
async fn register(app: &TestApp, admin: &str, url: &str, types: &[&str]) -> (i64, String) {
    let r = app
        .http
        .post(app.url("/api/v1/webhooks"))
        .bearer_auth(admin)
        .json(&json!({ "url": url, "event_types": types, "description": "Telegram kanalı" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let v: Value = r.json().await.unwrap();
    (v["id"].as_i64().unwrap(), v["secret"].as_str().unwrap().to_string())
}

async fn endpoint(app: &TestApp, admin: &str, id: i64) -> Value {
    let r = app.http.get(app.url(&format!("/api/v1/webhooks/{id}"))).bearer_auth(admin).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The receivers listen on loopback, which webhook URLs may reach only when the operator
/// allows it (`outbound_private_hosts`), as here.
fn receivers_allowed(s: &mut sondakika::config::Settings) {
    s.outbound_private_hosts = vec!["127.0.0.1".into()];
}

async fn spawn(configure: impl FnOnce(&mut sondakika::config::Settings)) -> TestApp {
    TestApp::spawn_with(|s| {
        receivers_allowed(s);
        configure(s);
    })
    .await
}

fn fast_retries(s: &mut sondakika::config::Settings) {
    s.webhook_retry_first_secs = 1;
    s.webhook_timeout_secs = 2;
}

#[tokio::test]
async fn every_alert_event_arrives_signed_per_standard_webhooks_with_the_alert_as_the_api_shows_it() {
    let app = spawn(|_| {}).await;
    let admin = admin_token(&app.pool).await;
    let rx = Receiver::start().await;
    let only_retractions = Receiver::start().await;
    let (id, secret) =
        register(&app, &admin, &rx.url("/hook"), &["alert.flagged", "alert.corrected", "alert.retracted"])
            .await;
    let (_, secret2) = register(&app, &admin, &only_retractions.url("/hook"), &["alert.retracted"]).await;
    assert!(secret.starts_with("whsec_") && secret != secret2);
    rx.control(json!({ "secrets": [secret] })).await;
    only_retractions.control(json!({ "secrets": [secret2] })).await;

    let headline = "İzmir'de 4,9 büyüklüğünde deprem: “Şiddetli sallandı” — Ağrı, Çığ, Ünye";
    let r = app
        .post_alert(json!({ "headline": headline, "url": "https://www.example.com.tr/haber/izmir",
                             "summary": "AFAD açıkladı.\nCan kaybı yok.", "topics": ["izmir"] }))
        .await;
    assert_eq!(r.status(), 201);
    let alert: Value = r.json().await.unwrap();
    let alert_id = alert["id"].as_str().unwrap();
    let r = app
        .editor(
            Method::PATCH,
            &format!("/api/v1/alerts/{alert_id}"),
            Some(json!({"headline": "Düzeltme: İzmir"})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .editor(
            Method::POST,
            &format!("/api/v1/alerts/{alert_id}/retract"),
            Some(json!({"reason": "Yanlış"})),
        )
        .await;
    assert_eq!(r.status(), 200);

    let log = rx.wait_for(3, Duration::from_secs(30)).await;
    assert_eq!(log.len(), 3, "{log:#?}");
    let mut seen = BTreeMap::new();
    for d in &log {
        assert_eq!(d["verified_with"], json!([0]), "the official library verifies it: {d}");
        assert_eq!(d["content_type"], "application/json");
        let id = d["webhook_id"].as_str().unwrap();
        assert!(id.starts_with("msg_"), "{id}");
        let sig = d["webhook_signature"].as_str().unwrap();
        assert!(sig.starts_with("v1,") && !sig.contains(' '), "one signature: {sig}");
        let b = body(d);
        assert_eq!(b["data"]["id"], alert_id);
        assert!(b["timestamp"].as_str().unwrap().ends_with('Z'), "{b}");
        seen.insert(b["type"].as_str().unwrap().to_string(), (id.to_string(), b));
    }
    let kinds: Vec<&str> = seen.keys().map(String::as_str).collect();
    assert_eq!(kinds, ["alert.corrected", "alert.flagged", "alert.retracted"]);
    let ids: BTreeSet<&str> = seen.values().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), 3, "every event has its own webhook-id");
    let flagged = &seen["alert.flagged"].1["data"];
    assert_eq!(flagged["headline"], headline, "Turkish text byte-exact");
    assert_eq!(flagged["summary"], "AFAD açıkladı.\nCan kaybı yok.");
    assert_eq!(flagged["status"], "live");
    assert_eq!(flagged["seq"], alert["seq"]);
    assert_eq!(flagged["links"]["self"], format!("/api/v1/alerts/{alert_id}"), "as the API shows it");
    assert_eq!(seen["alert.corrected"].1["data"]["headline"], "Düzeltme: İzmir");
    assert_eq!(seen["alert.retracted"].1["data"]["status"], "retracted");
    assert_eq!(seen["alert.retracted"].1["data"]["retract_reason"], "Yanlış");

    // The endpoint subscribed to retractions only got that one.
    only_retractions.wait_for(1, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let other = only_retractions.log().await;
    assert_eq!(other.len(), 1, "{other:#?}");
    assert_eq!(body(&other[0])["type"], "alert.retracted");
    assert_eq!(other[0]["verified_with"], json!([0]));
    assert_eq!(
        other[0]["webhook_id"], seen["alert.retracted"].0,
        "one event, one webhook-id, for every endpoint"
    );

    // The endpoint's page shows each attempt with its status and latency.
    let mut ep = endpoint(&app, &admin, id).await;
    for _ in 0..40 {
        if ep["recent_attempts"].as_array().unwrap().len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        ep = endpoint(&app, &admin, id).await;
    }
    assert_eq!(ep["enabled"], true);
    assert_eq!(ep["pending"], 0);
    assert!(ep.get("secret").is_none(), "the secret is shown once: {ep}");
    assert!(ep["last_success_at"].is_string());
    let attempts = ep["recent_attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{ep}");
    for a in attempts {
        assert_eq!(a["http_status"], 200);
        assert_eq!(a["attempt"], 1);
        assert_eq!(a["delivery_state"], "delivered");
        assert!(a["latency_ms"].as_i64().unwrap() >= 0);
        assert_eq!(a["error"], Value::Null);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_failed_delivery_is_retried_with_backoff_after_500s_and_timeouts_with_the_same_webhook_id() {
    let app = spawn(fast_retries).await;
    let admin = admin_token(&app.pool).await;
    let rx = Receiver::start().await;
    let (id, secret) = register(&app, &admin, &rx.url("/hook"), &["alert.flagged"]).await;
    // 500, no answer within the 2 s limit, 503, then accepted.
    rx.control(json!({ "secrets": [secret], "answers": [500, "timeout", 503, 200], "timeout_secs": 4 }))
        .await;
    app.flag("Yeniden deneme", &[]).await;

    let log = rx.wait_for(4, Duration::from_secs(30)).await;
    let ids: BTreeSet<&str> = log.iter().map(|d| d["webhook_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "every try carries the same webhook-id: {ids:?}");
    let bodies: BTreeSet<&str> = log.iter().map(|d| d["body"].as_str().unwrap()).collect();
    assert_eq!(bodies.len(), 1, "every try sends the same body");
    for d in &log {
        assert_eq!(d["verified_with"], json!([0]), "each try is signed afresh: {d}");
    }
    // Backoff: a second or more between tries (1 s, then 2 s, then 4 s, ±10 %).
    let at: Vec<f64> = log.iter().map(|d| d["received_at"].as_f64().unwrap()).collect();
    assert!(at[1] - at[0] >= 0.85, "first retry after about 1 s: {at:?}");
    assert!(at[3] - at[2] >= 3.5, "the third retry waits about 4 s: {at:?}");

    eventually(Duration::from_secs(30), "the fourth attempt is recorded", || {
        let app = &app;
        let admin = &admin;
        async move { endpoint(app, admin, id).await["recent_attempts"].as_array().unwrap().len() == 4 }
    })
    .await;
    let ep = endpoint(&app, &admin, id).await;
    let attempts: Vec<(Value, Value, Value)> = ep["recent_attempts"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|a| (a["attempt"].clone(), a["http_status"].clone(), a["error"].clone()))
        .collect();
    assert_eq!(attempts[0].0, 1);
    assert_eq!(attempts[0].1, 500);
    assert!(attempts[0].2.as_str().unwrap().contains("HTTP 500"), "{attempts:?}");
    assert_eq!(attempts[1].1, Value::Null, "no answer: {attempts:?}");
    assert!(
        attempts[1].2.as_str().unwrap().contains("did not answer completely within 2 seconds"),
        "{attempts:?}"
    );
    assert_eq!(attempts[2].1, 503);
    assert_eq!(
        (attempts[3].0.clone(), attempts[3].1.clone(), attempts[3].2.clone()),
        (json!(4), json!(200), Value::Null)
    );
    assert_eq!(ep["failing_since"], Value::Null, "a success ends the failure streak");
    assert_eq!(ep["enabled"], true);
    app.stop().await;
}

#[tokio::test]
async fn a_rotated_secret_signs_alongside_the_old_one_for_the_grace_period_only() {
    let app = spawn(|s| s.webhook_secret_grace_secs = 3).await;
    let admin = admin_token(&app.pool).await;
    let rx = Receiver::start().await;
    let (id, old) = register(&app, &admin, &rx.url("/hook"), &["alert.flagged"]).await;

    let r = app
        .http
        .post(app.url(&format!("/api/v1/webhooks/{id}/rotate-secret")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let rotated: Value = r.json().await.unwrap();
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert!(new.starts_with("whsec_") && new != old);
    assert!(rotated["previous_secret_valid_until"].is_string(), "{rotated}");
    // Verify with each secret on its own: during the grace period both verify.
    rx.control(json!({ "secrets": [old, new] })).await;
    app.flag("Anahtar değişti", &[]).await;
    let log = rx.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(log[0]["verified_with"], json!([0, 1]), "old and new both verify: {}", log[0]);
    assert_eq!(log[0]["webhook_signature"].as_str().unwrap().split(' ').count(), 2);

    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(endpoint(&app, &admin, id).await["previous_secret_valid_until"], Value::Null);
    app.flag("Eski anahtar geçersiz", &[]).await;
    let log = rx.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(log[1]["verified_with"], json!([1]), "only the new secret verifies: {}", log[1]);
    assert_eq!(log[1]["webhook_signature"].as_str().unwrap().split(' ').count(), 1);
    app.stop().await;
}

#[tokio::test]
async fn an_endpoint_that_keeps_failing_is_disabled_until_an_admin_enables_it_again() {
    let app = spawn(|s| {
        fast_retries(s);
        s.webhook_disable_after_secs = 3;
    })
    .await;
    let admin = admin_token(&app.pool).await;
    let rx = Receiver::start().await;
    let (id, secret) = register(&app, &admin, &rx.url("/hook"), &["alert.flagged"]).await;
    rx.control(json!({ "secrets": [secret], "answers": vec![500; 1000] })).await;
    app.flag("Hep hata", &[]).await;
    eventually(Duration::from_secs(30), "the endpoint is disabled", || {
        let app = &app;
        let admin = &admin;
        async move { endpoint(app, admin, id).await["enabled"] == false }
    })
    .await;
    let ep = endpoint(&app, &admin, id).await;
    let reason = ep["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("every attempt failed since") && reason.contains("HTTP 500"), "{reason}");
    assert_eq!(ep["pending"], 0, "its queued events are given up with it");
    assert!(
        ep["recent_attempts"].as_array().unwrap().iter().all(|a| a["delivery_state"] == "failed"),
        "{ep}"
    );

    // Disabled: nothing is queued for it.
    app.flag("Kapalıyken", &[]).await;
    let tries = rx.log().await.len();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(rx.log().await.len(), tries, "nothing is sent to a disabled endpoint");

    rx.control(json!({ "answers": [] })).await;
    let r = app
        .http
        .patch(app.url(&format!("/api/v1/webhooks/{id}")))
        .bearer_auth(&admin)
        .json(&json!({ "enabled": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ep: Value = r.json().await.unwrap();
    assert_eq!(ep["enabled"], true);
    assert_eq!(ep["disabled_reason"], Value::Null);
    assert_eq!(ep["failing_since"], Value::Null);
    app.flag("Yeniden açıldı", &[]).await;
    let log = rx.wait_for(tries + 1, Duration::from_secs(30)).await;
    let last = log.last().unwrap();
    assert_eq!(body(last)["data"]["headline"], "Yeniden açıldı");
    assert_eq!(last["answer"], 200);
    app.stop().await;
}

/// PostgreSQL's own count of deadlocks in the test's database.
async fn deadlocks(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("select deadlocks from pg_stat_database where datname = current_database()")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn many_failing_attempts_to_one_endpoint_at_once_are_all_recorded_without_a_deadlock() {
    const ALERTS: usize = 50;
    // Every delivery tried at once, and no retry within the test: each is called once, so each
    // call must leave one attempt row.
    let app = spawn(|s| {
        s.webhook_per_endpoint = ALERTS;
        s.webhook_retry_first_secs = 3600;
    })
    .await;
    let admin = admin_token(&app.pool).await;
    let rx = Receiver::start().await;
    let (id, secret) = register(&app, &admin, &rx.url("/hook"), &["alert.flagged"]).await;
    // Answers held a little, so that the failures come back together.
    rx.control(json!({ "secrets": [secret], "answers": vec![500; ALERTS * 4], "hold_secs": 0.5 })).await;
    let before = deadlocks(&app.pool).await;
    let flags = (0..ALERTS).map(|i| {
        let app = &app;
        async move { app.flag(&format!("Eşzamanlı hata {i}"), &[]).await }
    });
    futures_util::future::join_all(flags).await;

    let attempts = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from webhook_attempts where endpoint_id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap() as usize
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (calls, rows) = (rx.log().await.len(), attempts().await);
        if calls >= ALERTS && calls == rows {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the receiver saw {calls} calls, {rows} attempts are recorded (a lost one is tried \
             again when its lease runs out)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rx.log().await.len(), ALERTS, "each delivery was tried once, and only once");
    assert_eq!(deadlocks(&app.pool).await, before, "PostgreSQL counted deadlocks");
    app.stop().await;
}

#[tokio::test]
async fn a_receiver_that_hangs_never_slows_the_alert_itself() {
    let app = spawn(|s| s.webhook_timeout_secs = 30).await;
    let admin = admin_token(&app.pool).await;
    let rx = Receiver::start().await;
    let (_, secret) = register(&app, &admin, &rx.url("/hook"), &["alert.flagged"]).await;
    rx.control(json!({ "secrets": [secret], "hold_secs": 20 })).await;
    let mut ticker = Ticker::connect(&format!("ws://{}/ws", app.addr)).await;
    ticker.expect("hello").await;
    for i in 0..6 {
        let started = Instant::now();
        let a = app.flag(&format!("Yavaş alıcı {i}"), &[]).await;
        let frame = ticker.expect("alert").await;
        assert_eq!(frame["id"], a["id"]);
        // Were the alert waiting on its webhook, it would take the receiver's 20 s.
        assert!(started.elapsed() < Duration::from_secs(10), "alert {i} took {:?}", started.elapsed());
    }
    // The receiver is holding at most 4 of them (the per-endpoint cap); the rest wait queued.
    let log = rx.wait_for(1, Duration::from_secs(30)).await;
    assert!(log.len() <= 4, "{} in flight to one endpoint", log.len());
    app.stop().await;
}

#[tokio::test]
async fn a_process_killed_during_delivery_loses_no_event_and_a_duplicate_keeps_its_webhook_id() {
    let db = new_database().await;
    let env = [
        ("SONDAKIKA_WEBHOOK_TIMEOUT_SECS", "3"),
        ("SONDAKIKA_WEBHOOK_RETRY_FIRST_SECS", "1"),
        ("SONDAKIKA_OUTBOUND_PRIVATE_HOSTS", "127.0.0.1"),
    ];
    let mut a = ServerProcess::start(&db, &env).await;
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    let admin = admin_token(&pool).await;
    let (_, editor) = auth::create(&pool, "Editör", Role::Editor).await.unwrap();
    let rx = Receiver::start().await;
    let http = test_client();
    let r = http
        .post(format!("http://{}/api/v1/webhooks", a.addr))
        .bearer_auth(&admin)
        .json(&json!({ "url": rx.url("/hook"), "event_types": ["alert.flagged", "alert.retracted"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let secret = r.json::<Value>().await.unwrap()["secret"].as_str().unwrap().to_string();
    // The receiver holds every delivery 2 s: the kill comes while some are in flight.
    rx.control(json!({ "secrets": [secret], "hold_secs": 2 })).await;

    let mut alert_ids = Vec::new();
    for i in 0..6 {
        let r = http
            .post(format!("http://{}/api/v1/alerts", a.addr))
            .bearer_auth(&editor)
            .json(&json!({ "headline": format!("Kesinti {i}"), "url": format!("https://x.example/k{i}") }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        alert_ids.push(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string());
    }
    rx.wait_for(1, Duration::from_secs(30)).await;
    a.child.start_kill().unwrap(); // SIGKILL
    a.child.wait().await.unwrap();
    // Received, but the killed process never heard the answer: these must come again.
    let in_flight_at_kill: BTreeSet<String> =
        rx.log().await.iter().map(|d| d["webhook_id"].as_str().unwrap().to_string()).collect();
    assert!(!in_flight_at_kill.is_empty());
    // Events made while no process runs are queued too (the queue is the database).
    rx.control(json!({ "hold_secs": 0 })).await;

    let b = ServerProcess::start(&db, &env).await;
    let r = http
        .post(format!("http://{}/api/v1/alerts/{}/retract", b.addr, alert_ids[0]))
        .bearer_auth(&editor)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // 6 flagged + 1 retracted, each at least once; the lease of the killed process's claims
    // (3 s + 5 s) runs out before they are tried again.
    let deadline = Instant::now() + Duration::from_secs(120);
    let by_id = loop {
        let log = rx.log().await;
        let mut by_id: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for d in log {
            by_id.entry(d["webhook_id"].as_str().unwrap().to_string()).or_default().push(d);
        }
        let all_arrived = by_id.len() == 7
            && by_id
                .values()
                .all(|ds| ds.iter().any(|d| d["answer"] == 200 && d["verified_with"] == json!([0])));
        let resent = in_flight_at_kill.iter().all(|id| by_id.get(id).is_some_and(|ds| ds.len() >= 2));
        if all_arrived && resent {
            break by_id;
        }
        assert!(Instant::now() < deadline, "every event delivered: {by_id:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut flagged = BTreeSet::new();
    let mut duplicates = 0;
    for (id, deliveries) in &by_id {
        let first = body(&deliveries[0]);
        for d in deliveries {
            assert_eq!(d["webhook_id"], id.as_str());
            assert_eq!(body(d), first, "a duplicate is the same event, byte for byte");
            assert_eq!(d["verified_with"], json!([0]));
        }
        duplicates += deliveries.len() - 1;
        if first["type"] == "alert.flagged" {
            flagged.insert(first["data"]["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(flagged, alert_ids.iter().cloned().collect::<BTreeSet<_>>(), "every alert's event arrived");
    assert!(
        duplicates >= in_flight_at_kill.len(),
        "what was in flight at the kill was sent again, with its id"
    );
    drop(b);
}

#[tokio::test]
async fn webhook_endpoints_are_for_admins_and_bad_input_names_the_field() {
    let app = TestApp::spawn().await;
    let admin = admin_token(&app.pool).await;
    // An editor's token is refused.
    let r = app.editor(Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(r.status(), 403);
    let r = app
        .editor(
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": "https://h.example/", "event_types": ["alert.flagged"]})),
        )
        .await;
    assert_eq!(r.status(), 403);

    let post = |body: Value| {
        let app = &app;
        let admin = &admin;
        async move {
            let r = app
                .http
                .post(app.url("/api/v1/webhooks"))
                .bearer_auth(admin)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    for (body, field) in [
        (json!({"event_types": ["alert.flagged"]}), "url"),
        (json!({"url": "ftp://h.example/", "event_types": ["alert.flagged"]}), "url"),
        (json!({"url": "https://h.example/"}), "event_types"),
        (json!({"url": "https://h.example/", "event_types": []}), "event_types"),
        (
            json!({"url": "https://h.example/", "event_types": ["alert.flagged", "alert.deleted"]}),
            "event_types[1]",
        ),
        (
            json!({"url": "https://h.example/", "event_types": ["alert.flagged"], "description": " x"}),
            "description",
        ),
        (json!({"url": "https://h.example/", "event_types": ["alert.flagged"], "secret": "x"}), "secret"),
    ] {
        let (status, problem) = post(body.clone()).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(problem["field"], field, "{body}: {problem}");
    }
    let (status, created) = post(json!({"url": "https://h.example/", "event_types": ["alert.retracted", "alert.flagged", "alert.flagged"]})).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created["event_types"],
        json!(["alert.flagged", "alert.retracted"]),
        "sorted, without repeats"
    );
    let id = created["id"].as_i64().unwrap();

    let list: Value = app
        .http
        .get(app.url("/api/v1/webhooks"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(list["items"][0].get("secret").is_none());

    for path in ["/api/v1/webhooks/999999", "/api/v1/webhooks/abc", "/api/v1/webhooks/0"] {
        let r = app.http.get(app.url(path)).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    let r = app
        .http
        .patch(app.url(&format!("/api/v1/webhooks/{id}")))
        .bearer_auth(&admin)
        .json(&json!({"event_types": ["nope"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = app
        .http
        .patch(app.url(&format!("/api/v1/webhooks/{id}")))
        .bearer_auth(&admin)
        .json(&json!({"description": null, "enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ep: Value = r.json().await.unwrap();
    assert_eq!((ep["enabled"].clone(), ep["description"].clone()), (json!(false), Value::Null));
    assert_eq!(ep["disabled_reason"], "disabled by an admin");
    let r =
        app.http.delete(app.url(&format!("/api/v1/webhooks/{id}"))).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r =
        app.http.delete(app.url(&format!("/api/v1/webhooks/{id}"))).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn webhook_urls_follow_the_outbound_rules_no_private_address_unless_the_operator_allows_it() {
    let app = TestApp::spawn_with(fast_retries).await;
    let admin = admin_token(&app.pool).await;
    let rx = Receiver::start().await;
    // A literal private address is refused at once, naming the setting that would allow it.
    for url in [rx.url("/hook"), "http://10.0.0.5/hook".to_string(), "http://[::1]/hook".to_string()] {
        let r = app
            .http
            .post(app.url("/api/v1/webhooks"))
            .bearer_auth(&admin)
            .json(&json!({ "url": url, "event_types": ["alert.flagged"] }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{url}");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["field"], "url");
        assert!(problem["detail"].as_str().unwrap().contains("outbound_private_hosts"), "{problem}");
    }
    // A name that resolves to one is checked where it is connected to: every attempt is refused,
    // and the receiver behind it never hears a thing.
    let (id, secret) =
        register(&app, &admin, &format!("http://localhost:{}/hook", rx.port), &["alert.flagged"]).await;
    rx.control(json!({ "secrets": [secret] })).await;
    app.flag("İç ağa istek yok", &[]).await;
    eventually(Duration::from_secs(30), "an attempt is recorded", || {
        let app = &app;
        let admin = &admin;
        async move { !endpoint(app, admin, id).await["recent_attempts"].as_array().unwrap().is_empty() }
    })
    .await;
    let ep = endpoint(&app, &admin, id).await;
    let error = ep["recent_attempts"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("private or local address") && error.contains("outbound_private_hosts"),
        "{error}"
    );
    assert_eq!(ep["recent_attempts"][0]["http_status"], Value::Null);
    assert!(rx.log().await.is_empty(), "nothing reached the private address");
    app.stop().await;
}

#[tokio::test]
async fn alert_delivered_reports_each_finished_fan_out_with_its_step_and_figures() {
    let (app, double) = push_app(|s| {
        receivers_allowed(s);
        s.push_correction_coalesce_ms = 100;
    })
    .await;
    let admin = admin_token(&app.pool).await;
    let rx = Receiver::start().await;
    let (_, secret) = register(&app, &admin, &rx.url("/hook"), &["alert.delivered"]).await;
    rx.control(json!({ "secrets": [secret] })).await;
    bulk_subscribe(&app, &double, 0..5, &[], Behaviour::Accept).await;

    let alert = app.flag("Teslim edildi: Çeşme'de fırtına", &[]).await;
    let id = alert["id"].as_str().unwrap();
    wait_done(&app, id, Duration::from_secs(20)).await;
    let log = rx.wait_for(1, Duration::from_secs(30)).await;
    let b = body(&log[0]);
    assert_eq!(log[0]["verified_with"], json!([0]));
    assert_eq!(b["type"], "alert.delivered");
    assert_eq!(b["data"]["id"], id);
    assert_eq!(b["data"]["headline"], "Teslim edildi: Çeşme'de fırtına");
    assert_eq!(b["data"]["step"]["step"], 0);
    assert_eq!(b["data"]["step"]["kind"], "alert");
    assert_eq!(b["data"]["step"]["state"], "done");
    assert_eq!(b["data"]["step"]["targeted"], 5);
    assert_eq!(b["data"]["step"]["sent"], 5);
    assert_eq!(b["data"]["push"]["sent"], 5, "the alert's figures, as the API shows them");

    // A correction's fan-out is a step of its own, and reports itself.
    let r = app
        .editor(
            Method::PATCH,
            &format!("/api/v1/alerts/{id}"),
            Some(json!({"headline": "Düzeltildi: Çeşme"})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let log = rx.wait_for(2, Duration::from_secs(20)).await;
    let b = body(&log[1]);
    assert_eq!(b["type"], "alert.delivered");
    assert_eq!(b["data"]["step"]["step"], 1);
    assert_eq!(b["data"]["step"]["kind"], "correction");
    assert_eq!(b["data"]["step"]["targeted"], 5);
    assert_eq!(b["data"]["headline"], "Düzeltildi: Çeşme");
    assert_ne!(log[0]["webhook_id"], log[1]["webhook_id"]);
    app.stop().await;
}
