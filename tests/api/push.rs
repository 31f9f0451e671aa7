//! Web Push against the push-service double: fan-out, topics, answer classes, crashes,
//! several processes, retraction, and every kind of bad subscription.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use serde_json::{Value, json};
use sondakika::config::Settings;

use crate::{
    helpers::{ServerProcess, TestApp, eventually, new_database},
    push_double::{Behaviour, PushDouble},
};

pub(crate) const SUBJECT: &str = "mailto:teknik@burdurweb.com";

/// `push_settings` as the environment of a `sondakika serve` child process.
pub(crate) const PROCESS_PUSH_ENV: &[(&str, &str)] = &[
    ("SONDAKIKA_VAPID_SUBJECT", SUBJECT),
    ("SONDAKIKA_PUSH_EXTRA_HOSTS", "localhost"),
    ("SONDAKIKA_PUSH_EXTRA_HOSTS_ALLOW_HTTP", "true"),
];

pub(crate) fn push_settings(s: &mut Settings) {
    s.vapid_subject = Some(SUBJECT.into());
    s.push_extra_hosts = vec!["localhost".into()];
    s.push_extra_hosts_allow_http = true;
    s.public_rate_per_minute = 100_000;
    s.push_lease_secs = 3;
    s.push_batch_size = 250;
}

pub(crate) async fn push_app(configure: impl FnOnce(&mut Settings)) -> (TestApp, PushDouble) {
    let app = TestApp::spawn_with(|s| {
        push_settings(s);
        configure(s);
    })
    .await;
    let double = PushDouble::start(SUBJECT).await;
    let (_, key) = app.get_json("/api/v1/push/vapid-public-key").await;
    double.set_vapid_key(key["publicKey"].as_str().unwrap());
    (app, double)
}

/// Subscribes through the public API, as the site's JavaScript does.
pub(crate) async fn subscribe(app: &TestApp, subscription: Value, topics: &[&str]) -> reqwest::Response {
    app.http
        .post(app.url("/api/v1/push/subscriptions"))
        .json(&json!({ "subscription": subscription, "topics": topics, "locale": "tr" }))
        .send()
        .await
        .unwrap()
}

pub(crate) async fn stored_vapid_key(app: &TestApp) -> String {
    stored_vapid_key_in(&app.pool).await
}

pub(crate) async fn stored_vapid_key_in(pool: &sqlx::PgPool) -> String {
    let key: Vec<u8> = sqlx::query_scalar("select public_key from vapid_keys").fetch_one(pool).await.unwrap();
    B64.encode(key)
}

/// Many subscribers at once, straight into the table (the API path is tested separately).
pub(crate) async fn bulk_subscribe(
    app: &TestApp,
    double: &PushDouble,
    ids: std::ops::Range<u64>,
    topics: &[&str],
    behaviour: Behaviour,
) {
    bulk_subscribe_in(&app.pool, double, ids, topics, behaviour).await
}

/// [`bulk_subscribe`] into the database behind `pool`.
pub(crate) async fn bulk_subscribe_in(
    pool: &sqlx::PgPool,
    double: &PushDouble,
    ids: std::ops::Range<u64>,
    topics: &[&str],
    behaviour: Behaviour,
) {
    let vapid = B64.decode(stored_vapid_key_in(pool).await).unwrap();
    let origin = double.origin();
    let mut endpoints = Vec::new();
    let mut p256dh = Vec::new();
    let mut auth = Vec::new();
    for id in ids {
        let s = double.subscriber(id, behaviour.clone());
        endpoints.push(s["endpoint"].as_str().unwrap().to_string());
        p256dh.push(B64.decode(s["keys"]["p256dh"].as_str().unwrap()).unwrap());
        auth.push(B64.decode(s["keys"]["auth"].as_str().unwrap()).unwrap());
    }
    let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    sqlx::query(
        "insert into push_subscriptions (endpoint, origin, host, p256dh, auth, topics, vapid_key)
         select e, $4, 'localhost', p, a, $5, $6 from unnest($1::text[], $2::bytea[], $3::bytea[]) as t(e, p, a)",
    )
    .bind(&endpoints)
    .bind(&p256dh)
    .bind(&auth)
    .bind(&origin)
    .bind(&topics)
    .bind(&vapid)
    .execute(pool)
    .await
    .unwrap();
}

/// Publishes an alert through a `sondakika serve` child process, with the helper app's token.
async fn publish_on(
    app: &TestApp,
    server: std::net::SocketAddr,
    headline: &str,
    url: &str,
) -> reqwest::Response {
    app.http
        .post(format!("http://{server}/api/v1/alerts"))
        .bearer_auth(&app.token)
        .json(&json!({ "headline": headline, "url": url }))
        .send()
        .await
        .unwrap()
}

pub(crate) async fn figures(app: &TestApp, id: &str) -> Value {
    app.get_json(&format!("/api/v1/alerts/{id}")).await.1["push"].clone()
}

pub(crate) async fn wait_done(app: &TestApp, id: &str, limit: Duration) -> Value {
    let mut last = Value::Null;
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        last = figures(app, id).await;
        if last["pending"] == 0 && last["targeted"].as_i64().is_some() && last["state"] != "planning" {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the fan-out did not finish: {last}");
}

/// The receipt each subscriber's push of an alert carried, as the double decrypted it.
pub(crate) fn receipts_of(double: &PushDouble, alert_id: &str) -> HashMap<u64, String> {
    double
        .received()
        .iter()
        .filter(|r| r.payload["notification"]["data"]["id"] == alert_id)
        .map(|r| {
            let receipt = r.payload["notification"]["data"]["receipt"].as_str();
            (r.subscriber, receipt.expect("every push carries a receipt").to_string())
        })
        .collect()
}

/// Posts a receipt as a service worker does; `receipt: None` leaves the field out.
async fn post_receipt(
    app: &TestApp,
    alert_id: &str,
    event: &str,
    receipt: Option<&str>,
) -> reqwest::Response {
    let mut body = json!({ "alert_id": alert_id, "event": event });
    if let Some(r) = receipt {
        body["receipt"] = json!(r);
    }
    app.http.post(app.url("/api/v1/push/receipts")).json(&body).send().await.unwrap()
}

/// The status of an answer, and the field a 422 names.
async fn refusal(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body["field"].clone())
}

async fn shown_clicked(app: &TestApp, id: &str) -> (i64, i64) {
    let f = figures(app, id).await;
    (f["shown"].as_i64().unwrap(), f["clicked"].as_i64().unwrap())
}

pub(crate) async fn delivery_counts(app: &TestApp, alert_id: &str) -> HashMap<String, i64> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "select status, count(*) from push_deliveries where alert_id = $1::uuid group by status",
    )
    .bind(alert_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    rows.into_iter().collect()
}

#[tokio::test]
async fn an_alert_reaches_thousands_of_subscribers_once_each_with_an_exact_log() {
    // The double verifies and decrypts every push on the test's one thread: on a loaded machine
    // (the whole suite on two cores) its answers can come later than the 15 s default timeout,
    // and a push that timed out is rightly sent again (at least once). This test is about the
    // fan-out's own bookkeeping, so only a push it sent twice by itself may fail it.
    let (app, double) = push_app(|s| s.push_timeout_secs = 120).await;
    bulk_subscribe(&app, &double, 0..3000, &[], Behaviour::Accept).await;
    let (headline, summary) = crate::helpers::sample_article();
    let r = app
        .post_alert(json!({ "headline": headline, "summary": summary, "url": "https://www.burdurweb.com/haber/putin", "ttl_seconds": 1800 }))
        .await;
    assert_eq!(r.status(), 201);
    let alert: Value = r.json().await.unwrap();
    let id = alert["id"].as_str().unwrap();
    let f = wait_done(&app, id, Duration::from_secs(120)).await;
    assert_eq!(double.violations(), Vec::<String>::new());
    assert_eq!(
        (f["targeted"].as_i64(), f["sent"].as_i64(), f["failed"].as_i64()),
        (Some(3000), Some(3000), Some(0))
    );
    assert!(f["ms_to_50"].as_i64().unwrap() <= f["ms_to_95"].as_i64().unwrap());
    assert!(f["ms_to_95"].as_i64().unwrap() <= f["ms_to_100"].as_i64().unwrap());
    let counts = double.accepted_counts();
    assert_eq!(counts.len(), 3000);
    assert!(counts.values().all(|n| *n == 1), "each subscriber exactly once");
    assert_eq!(delivery_counts(&app, id).await, HashMap::from([("sent".to_string(), 3000)]));

    // The payload is what the service worker and Declarative Web Push need, byte-exact Turkish.
    let r = &double.received()[0];
    let n = &r.payload["notification"];
    assert_eq!(r.payload["web_push"], 8030);
    assert_eq!(n["title"], format!("SON DAKİKA: {headline}"));
    assert_eq!(n["navigate"], "https://www.burdurweb.com/haber/putin");
    assert_eq!(n["data"]["id"], alert["id"]);
    assert!(summary.starts_with(n["body"].as_str().unwrap().trim_end_matches('…')));
    assert!(r.ttl > 1700 && r.ttl <= 1800, "TTL from the alert, not a default: {}", r.ttl);
    assert_eq!(r.urgency, "high");
    assert_eq!(r.topic.as_deref(), Some(topic_of(id).as_str()), "one Topic per alert");
}

/// A range's lease is renewed on a connection of its own. With every connection of the process's
/// pool taken (here by the test; in a newsroom's rush by the fan-out's own flushes and claims), a
/// range still being sent keeps its lease, so no other process takes it over and sends it again.
#[tokio::test]
async fn a_range_being_sent_keeps_its_lease_while_the_pool_is_exhausted() {
    // Leases of 3 s, renewed every second; the push service answers after 9 s.
    let (app, double) = push_app(|_| {}).await;
    bulk_subscribe(&app, &double, 0..1, &[], Behaviour::TakeThenAnswerAfter(Duration::from_secs(9))).await;
    let alert = app.flag("Havuz tükendi: kiralar yenileniyor mu?", &[]).await;
    let id = alert["id"].as_str().unwrap();
    eventually(Duration::from_secs(30), "the push service took the push", || async {
        !double.received().is_empty()
    })
    .await;

    // Every connection the server's pool can hand out (its own tasks hold some for longer).
    let pool = &app.state.db;
    let mut taken = Vec::new();
    while let Ok(c) = tokio::time::timeout(Duration::from_secs(1), pool.acquire()).await {
        taken.push(c.unwrap());
    }
    assert_eq!(pool.size(), pool.options().get_max_connections(), "the pool is at its size");
    assert_eq!(pool.num_idle(), 0, "and nothing in it is free");
    // Two lease lengths with nothing left in the pool.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        let ahead: Option<bool> = sqlx::query_scalar(
            "select bool_and(lease_until > now()) from push_batches where alert_id = $1::uuid and state = 'running'",
        )
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(ahead, Some(true), "the range being sent is running and its lease is ahead of now");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(taken);
    let f = wait_done(&app, id, Duration::from_secs(30)).await;
    assert_eq!((f["sent"].as_i64(), f["failed"].as_i64()), (Some(1), Some(0)));
    assert_eq!(double.accepted_counts(), HashMap::from([(0, 1)]));
}

/// The `Topic` every push of one alert carries: its id's 16 bytes in base64url.
pub(crate) fn topic_of(alert_id: &str) -> String {
    B64.encode(alert_id.parse::<uuid::Uuid>().unwrap().as_bytes())
}

/// A self-hosted push service behind a private CA: trusted through `push_ca_file`, refused
/// without it (the sender checks certificates; it does not skip verification for extra hosts).
/// Over TLS the sender speaks HTTP/2, as with FCM, autopush and Apple.
#[tokio::test]
async fn a_push_service_behind_a_private_ca_is_reached_only_when_its_ca_is_configured() {
    for trusted in [true, false] {
        let app = TestApp::spawn_with(|s| {
            push_settings(s);
            // The double listens on loopback and another port than 443, which only this allows;
            // certificates are checked all the same.
            s.push_extra_hosts_allow_http = true;
            s.push_max_attempts = 1;
            if trusted {
                s.push_ca_file = Some(crate::push_double::fixture("tls/ca.pem"));
            }
        })
        .await;
        let double = PushDouble::start_tls(SUBJECT).await;
        let (_, key) = app.get_json("/api/v1/push/vapid-public-key").await;
        double.set_vapid_key(key["publicKey"].as_str().unwrap());
        let r = subscribe(&app, double.subscriber(1, Behaviour::Accept), &[]).await;
        assert_eq!(r.status(), 201, "an https endpoint on an allowed extra host is accepted");

        let alert = app.flag("Özel push servisi", &[]).await;
        let id = alert["id"].as_str().unwrap();
        let f = wait_done(&app, id, Duration::from_secs(30)).await;
        let error: Option<String> =
            sqlx::query_scalar("select error from push_deliveries where alert_id = $1::uuid")
                .bind(id)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        if trusted {
            assert_eq!((f["sent"].as_i64(), f["failed"].as_i64()), (Some(1), Some(0)), "{error:?}");
            assert_eq!(double.violations(), Vec::<String>::new());
            let r = &double.received()[0];
            assert_eq!(r.payload["notification"]["title"], "SON DAKİKA: Özel push servisi");
            assert_eq!(r.version, axum::http::Version::HTTP_2, "HTTP/2 where the push service offers it");
        } else {
            assert_eq!((f["sent"].as_i64(), f["failed"].as_i64()), (Some(0), Some(1)));
            assert!(double.received().is_empty());
            let error = error.unwrap_or_default();
            assert!(error.contains("localhost"), "the log names the host, not the endpoint: {error}");
            assert!(!error.contains("/push/"), "{error}");
        }
    }
}

/// Requests are spread over `push_http2_connections` clients, so over as many HTTP/2
/// connections: one at a time (one request in flight), every client connects once and is
/// reused after; all pushes on one connection would show one handshake. The alert is the
/// long sample article, so each body goes as several DATA frames, and arrives whole.
#[tokio::test]
async fn pushes_are_spread_over_the_configured_http2_connections() {
    let app = TestApp::spawn_with(|s| {
        push_settings(s);
        s.push_ca_file = Some(crate::push_double::fixture("tls/ca.pem"));
        s.push_http2_connections = 3;
        s.push_concurrency_per_origin = 1;
    })
    .await;
    let double = PushDouble::start_tls(SUBJECT).await;
    let (_, key) = app.get_json("/api/v1/push/vapid-public-key").await;
    double.set_vapid_key(key["publicKey"].as_str().unwrap());
    bulk_subscribe(&app, &double, 0..12, &[], Behaviour::Accept).await;
    let (headline, summary) = crate::helpers::sample_article();
    let image =
        format!("https://www.burdurweb.com/images/haber/{}-buyuk-boy.jpg", "putin-ukrayna-".repeat(12));
    let r = app
        .post_alert(json!({ "headline": headline, "summary": summary, "url": "https://www.burdurweb.com/haber/putin", "image": image }))
        .await;
    assert_eq!(r.status(), 201);
    let alert: Value = r.json().await.unwrap();
    let f = wait_done(&app, alert["id"].as_str().unwrap(), Duration::from_secs(30)).await;
    assert_eq!(f["sent"], 12);
    assert_eq!(double.violations(), Vec::<String>::new());
    assert!(double.received().iter().all(|r| r.version == axum::http::Version::HTTP_2));
    let r = &double.received()[0];
    assert!(serde_json::to_vec(&r.payload).unwrap().len() > 1000, "a body of more than one frame");
    assert_eq!(r.payload["notification"]["title"], format!("SON DAKİKA: {headline}"));
    assert_eq!(r.payload["notification"]["image"], image);
    assert!(summary.starts_with(r.payload["notification"]["body"].as_str().unwrap().trim_end_matches('…')));
    assert_eq!(double.tls_handshakes.load(std::sync::atomic::Ordering::Relaxed), 3);
}

/// A `push_ca_file` that is not a certificate stops the start with the setting named.
#[tokio::test]
async fn a_bad_push_ca_file_is_refused_at_start_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("ca.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let app = TestApp::spawn_with(push_settings).await;
    let mut settings = Settings::default();
    push_settings(&mut settings);
    settings.push_ca_file = Some(bad);
    let err = sondakika::push::Push::build(&settings, &app.pool).await.err().expect("refused");
    assert!(err.to_string().contains("push_ca_file"), "{err}");
}

#[tokio::test]
async fn only_subscribers_of_matching_topics_get_the_push() {
    let (app, double) = push_app(|_| {}).await;
    bulk_subscribe(&app, &double, 0..10, &["spor"], Behaviour::Accept).await;
    bulk_subscribe(&app, &double, 10..20, &["burdur"], Behaviour::Accept).await;
    bulk_subscribe(&app, &double, 20..30, &[], Behaviour::Accept).await;
    let alert = app.flag("Maç sonucu", &["spor"]).await;
    let f = wait_done(&app, alert["id"].as_str().unwrap(), Duration::from_secs(30)).await;
    assert_eq!(f["targeted"], 20);
    let counts = double.accepted_counts();
    let mut got: Vec<u64> = counts.keys().copied().collect();
    got.sort();
    assert_eq!(got, (0..10).chain(20..30).collect::<Vec<_>>());
    let topic = topic_of(alert["id"].as_str().unwrap());
    assert!(double.received().iter().all(|r| r.topic.as_deref() == Some(topic.as_str())));
}

#[tokio::test]
async fn gone_subscriptions_are_deactivated_and_never_sent_to_again() {
    let (app, double) = push_app(|_| {}).await;
    bulk_subscribe(&app, &double, 0..5, &[], Behaviour::Accept).await;
    bulk_subscribe(&app, &double, 5..7, &[], Behaviour::Status(410)).await;
    bulk_subscribe(&app, &double, 7..8, &[], Behaviour::Status(404)).await;
    bulk_subscribe(&app, &double, 8..9, &[], Behaviour::Status(413)).await;
    let a = app.flag("Bir", &[]).await;
    let f = wait_done(&app, a["id"].as_str().unwrap(), Duration::from_secs(30)).await;
    assert_eq!((f["sent"].as_i64(), f["gone"].as_i64(), f["failed"].as_i64()), (Some(5), Some(3), Some(1)));
    let inactive: i64 = sqlx::query_scalar(
        "select count(*) from push_subscriptions where not active and deactivated_reason = 'gone'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(inactive, 3, "kept for the log, but inactive");
    let failed: (Option<i16>, Option<String>) =
        sqlx::query_as("select http_status, error from push_deliveries where status = 'failed'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(failed.0, Some(413));

    let before = double.received().len();
    let b = app.flag("İki", &[]).await;
    let f = wait_done(&app, b["id"].as_str().unwrap(), Duration::from_secs(30)).await;
    assert_eq!(f["targeted"], 6);
    let to_gone = double.received()[before..].iter().filter(|r| (5..8).contains(&r.subscriber)).count();
    assert_eq!(to_gone, 0);
}

/// A push service that closes every connection after its answer (`Connection: close`, as load
/// balancers do when they drain): every push still goes out exactly once, each on a live
/// connection (one attempt each: none is lost to a connection that was closing).
#[tokio::test]
async fn a_push_service_closing_its_connections_gets_every_push_once() {
    let (app, double) = push_app(|s| s.push_concurrency_per_origin = 4).await;
    bulk_subscribe(&app, &double, 0..200, &[], Behaviour::AcceptAndClose).await;
    let a = app.flag("Bağlantı kapanıyor", &[]).await;
    let id = a["id"].as_str().unwrap();
    let f = wait_done(&app, id, Duration::from_secs(60)).await;
    assert_eq!((f["sent"].as_i64(), f["failed"].as_i64()), (Some(200), Some(0)), "{f}");
    let counts = double.accepted_counts();
    assert!(counts.len() == 200 && counts.values().all(|n| *n == 1), "{counts:?}");
    let most: i16 = sqlx::query_scalar("select max(attempts) from push_deliveries where alert_id = $1::uuid")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(most, 1);
    assert_eq!(double.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_and_retry_after_is_honoured() {
    let (app, double) = push_app(|_| {}).await;
    bulk_subscribe(
        &app,
        &double,
        0..1,
        &[],
        Behaviour::FailFirst { times: 2, status: 500, retry_after: None },
    )
    .await;
    bulk_subscribe(
        &app,
        &double,
        1..2,
        &[],
        Behaviour::FailFirst { times: 1, status: 429, retry_after: Some(2) },
    )
    .await;
    bulk_subscribe(&app, &double, 2..3, &[], Behaviour::Status(503)).await;
    let a = app
        .post_alert(json!({ "headline": "Tekrar", "url": "https://x.example/t", "ttl_seconds": 60 }))
        .await;
    let a: Value = a.json().await.unwrap();
    let id = a["id"].as_str().unwrap();
    eventually(Duration::from_secs(40), "the retried pushes went through", || async {
        let c = double.accepted_counts();
        c.get(&0) == Some(&1) && c.get(&1) == Some(&1)
    })
    .await;
    let times = |sub: u64| -> Vec<Instant> {
        double.received().iter().filter(|r| r.subscriber == sub).map(|r| r.at).collect()
    };
    let t0 = times(0);
    assert_eq!(t0.len(), 3);
    assert!(t0[1] - t0[0] >= Duration::from_millis(500), "backed off: {:?}", t0[1] - t0[0]);
    let t1 = times(1);
    assert_eq!(t1.len(), 2);
    assert!(t1[1] - t1[0] >= Duration::from_secs(2), "Retry-After honoured: {:?}", t1[1] - t1[0]);
    // The log row follows the push within a flush interval.
    let mut attempts: Vec<(i64, i16, String)> = Vec::new();
    for _ in 0..50 {
        attempts = sqlx::query_as(
            "select subscription_id, attempts, status from push_deliveries where alert_id = $1::uuid and status = 'sent' order by 1",
        )
        .bind(id)
        .fetch_all(&app.pool)
        .await
        .unwrap();
        if attempts.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(attempts.iter().map(|a| a.1).collect::<Vec<_>>(), [3, 2]);
    // The always-503 subscriber is retried a bounded number of times, then logged failed or expired.
    let f = wait_done(&app, id, Duration::from_secs(120)).await;
    assert_eq!(f["sent"], 2);
    assert_eq!(f["failed"].as_i64().unwrap() + f["expired"].as_i64().unwrap(), 1);
    let n503 = double.received().iter().filter(|r| r.subscriber == 2).count();
    assert!((2..=5).contains(&n503), "{n503} attempts");
}

#[tokio::test]
async fn a_vapid_rejection_stops_the_origin_and_deletes_no_subscription() {
    let (app, double) = push_app(|s| s.push_concurrency_per_origin = 100).await;
    bulk_subscribe(&app, &double, 0..1000, &[], Behaviour::Accept).await;
    double.inner.lock().unwrap().reject_vapid = true;
    let a = app.flag("Yanlış anahtar", &[]).await;
    let f = wait_done(&app, a["id"].as_str().unwrap(), Duration::from_secs(30)).await;
    assert_eq!(
        (f["sent"].as_i64(), f["failed"].as_i64(), f["gone"].as_i64()),
        (Some(0), Some(1000), Some(0))
    );
    let active: i64 = sqlx::query_scalar("select count(*) from push_subscriptions where active")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(active, 1000, "one misconfiguration must never wipe the subscriber base");
    // Stopped after the first rejections (those already in flight, at most the per-origin
    // concurrency of 100) rather than hammering the push service with all 1000.
    let requests = double.inner.lock().unwrap().attempts.values().sum::<u32>();
    assert!(requests <= 200, "{requests} requests reached the rejecting origin");
    let why: String =
        sqlx::query_scalar("select error from push_deliveries where status = 'failed' limit 1 offset 500")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(why.contains("VAPID"), "{why}");
    let metrics = app.metrics().await;
    assert!(metrics.contains("sondakika_push_vapid_rejected_total"));
}

#[tokio::test]
async fn a_retraction_stops_the_fan_out_within_a_second() {
    let (app, double) = push_app(|s| s.push_concurrency_per_origin = 4).await;
    bulk_subscribe(&app, &double, 0..400, &[], Behaviour::Slow(Duration::from_millis(50))).await;
    let a = app.flag("Geri çekilecek", &[]).await;
    let id = a["id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(30), "some pushes went out", || async { double.received().len() >= 20 })
        .await;
    let r = app.editor(reqwest::Method::POST, &format!("/api/v1/alerts/{id}/retract"), None).await;
    assert_eq!(r.status(), 200);
    // The alert's own pushes stop; those sent it then get the retraction.
    let originals =
        || double.received().iter().filter(|r| r.payload["notification"]["data"]["kind"] == "alert").count();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_a_second = originals();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(originals(), after_a_second, "nothing of the alert sent a second after the retraction");
    let f = wait_done(&app, &id, Duration::from_secs(30)).await;
    assert!(f["skipped"].as_i64().unwrap() > 300, "{f}");
    assert_eq!(f["sent"].as_i64().unwrap() + f["skipped"].as_i64().unwrap(), 400, "{f}");
}

/// A retraction while a push service has asked us to wait (429 with `Retry-After: 30`) ends the
/// fan-out at once: what waits for the pause is logged skipped, not held for 30 seconds.
#[tokio::test]
async fn a_retraction_during_a_retry_after_pause_ends_the_fan_out_at_once() {
    let (app, double) = push_app(|s| s.push_concurrency_per_origin = 2).await;
    let wait = Behaviour::FailFirst { times: 1, status: 429, retry_after: Some(30) };
    bulk_subscribe(&app, &double, 0..50, &[], wait).await;
    let a = app.flag("Beklerken geri çekildi", &[]).await;
    let id = a["id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(30), "the push service asked us to wait", || async {
        double.received().iter().any(|r| r.answered == 429)
    })
    .await;
    let r = app.editor(reqwest::Method::POST, &format!("/api/v1/alerts/{id}/retract"), None).await;
    assert_eq!(r.status(), 200);
    let f = wait_done(&app, &id, Duration::from_secs(5)).await;
    assert_eq!((f["sent"].as_i64(), f["skipped"].as_i64()), (Some(0), Some(50)), "{f}");
}

/// A retraction must not deadlock with a fan-out flushing outcomes: the flush updates the job's
/// row twice in one transaction, and the second update re-checks the row's foreign key to the
/// alert, which an editor's lock on the alert must not block (it did, found by CI: 500).
#[tokio::test]
async fn a_retraction_does_not_deadlock_with_a_flush_of_outcomes() {
    let (app, _double) = push_app(|_| {}).await;
    let alert = app.flag("Kilitlenmesin", &[]).await;
    let id: uuid::Uuid = alert["id"].as_str().unwrap().parse().unwrap();
    eventually(Duration::from_secs(30), "the push job exists", || async {
        sqlx::query_scalar::<_, i64>("select count(*) from push_jobs where alert_id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap()
            == 1
    })
    .await;
    sqlx::query("update push_jobs set state = 'running' where alert_id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();

    // The flush's first statement: the job row is now this transaction's.
    let mut flush = app.pool.begin().await.unwrap();
    sqlx::query("update push_jobs set sent = sent + 1 where alert_id = $1")
        .bind(id)
        .execute(&mut *flush)
        .await
        .unwrap();
    // The editor retracts meanwhile: it locks the alert, then waits for the job row.
    let retract = {
        let app_url = app.url(&format!("/api/v1/alerts/{id}/retract"));
        let (http, token) = (app.http.clone(), app.token.clone());
        tokio::spawn(async move { http.post(app_url).bearer_auth(token).send().await.unwrap().status() })
    };
    eventually(Duration::from_secs(30), "the retraction waits for the job row", || async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from pg_stat_activity
             where datname = current_database() and wait_event_type = 'Lock' and query like 'update push_jobs%'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap()
            == 1
    })
    .await;
    // The flush's second statement (the milestones) re-checks the foreign key to the alert.
    sqlx::query("set local statement_timeout = '5s'").execute(&mut *flush).await.unwrap();
    sqlx::query("update push_jobs set reached_50_at = now() where alert_id = $1")
        .bind(id)
        .execute(&mut *flush)
        .await
        .expect("the flush is not blocked by the editor's lock");
    flush.commit().await.unwrap();
    assert_eq!(retract.await.unwrap(), 200);
}

#[tokio::test]
async fn every_bad_subscription_is_refused_with_422_and_nothing_stored() {
    let (app, double) = push_app(|_| {}).await;
    let good = double.subscriber(1, Behaviour::Accept);
    let key = B64.decode(good["keys"]["p256dh"].as_str().unwrap()).unwrap();
    let mut compressed = vec![0x02 | (key[64] & 1)];
    compressed.extend_from_slice(&key[1..33]);
    let mut off_curve = key.clone();
    off_curve[40] ^= 0x55;
    let with = |path: &[&str], value: Value| {
        let mut s = good.clone();
        let mut cur = &mut s;
        for p in &path[..path.len() - 1] {
            cur = &mut cur[*p];
        }
        cur[path[path.len() - 1]] = value;
        s
    };
    let cases = [
        (with(&["keys", "p256dh"], json!(B64.encode(&compressed))), "subscription.keys.p256dh", "33 bytes"),
        (with(&["keys", "p256dh"], json!(B64.encode(&off_curve))), "subscription.keys.p256dh", "curve"),
        (with(&["keys", "auth"], json!(B64.encode([7u8; 15]))), "subscription.keys.auth", "16 bytes"),
        (
            with(&["endpoint"], json!("http://fcm.googleapis.com/fcm/send/abc")),
            "subscription.endpoint",
            "https",
        ),
        (
            with(&["endpoint"], json!("https://192.168.1.20/push/1")),
            "subscription.endpoint",
            "not a known push service",
        ),
        (
            with(&["endpoint"], json!("https://push.attacker.example/x")),
            "subscription.endpoint",
            "not a known push service",
        ),
        (
            with(&["endpoint"], json!(format!("https://fcm.googleapis.com/fcm/send/{}", "a".repeat(5000)))),
            "subscription.endpoint",
            "at most 1000",
        ),
        (
            with(&["endpoint"], json!("https://ali:veli@fcm.googleapis.com/fcm/send/x")),
            "subscription.endpoint",
            "user name",
        ),
        (with(&["keys", "auth"], json!("not base64 !!")), "subscription.keys.auth", "base64url"),
        (json!({ "endpoint": "https://fcm.googleapis.com/fcm/send/x" }), "subscription.keys", "required"),
    ];
    for (subscription, field, words) in cases {
        let r = subscribe(&app, subscription.clone(), &[]).await;
        assert_eq!(r.status(), 422, "{subscription}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["field"], field, "{body}");
        assert!(body["detail"].as_str().unwrap().contains(words), "{words}: {body}");
    }
    let r = subscribe(&app, good.clone(), &["Spor!"]).await;
    assert_eq!(r.status(), 422);
    let n: i64 =
        sqlx::query_scalar("select count(*) from push_subscriptions").fetch_one(&app.pool).await.unwrap();
    assert_eq!(n, 0, "nothing stored");

    // The server is alive and the good subscription works, created then refreshed.
    assert_eq!(subscribe(&app, good.clone(), &["spor"]).await.status(), 201);
    let r = subscribe(&app, good.clone(), &["spor", "burdur"]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["topics"], json!(["burdur", "spor"]));
    // Padded base64url keys are accepted too.
    let padded = with(&["keys", "auth"], json!(format!("{}==", good["keys"]["auth"].as_str().unwrap())));
    assert_eq!(subscribe(&app, padded, &[]).await.status(), 200);
    // Unsubscribing removes it.
    let r = app
        .http
        .delete(app.url("/api/v1/push/subscriptions"))
        .json(&json!({ "endpoint": good["endpoint"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

#[tokio::test]
async fn the_public_key_receipts_and_rate_limits_work_as_documented() {
    let (app, double) = push_app(|s| {
        s.public_rate_per_minute = 30;
        // Receipts have a budget of their own.
        s.public_receipt_rate_per_minute = 30;
    })
    .await;
    let (status, key) = app.get_json("/api/v1/push/vapid-public-key").await;
    assert_eq!(status, 200);
    let raw = B64.decode(key["publicKey"].as_str().unwrap()).unwrap();
    assert_eq!((raw.len(), raw[0]), (65, 4));

    bulk_subscribe(&app, &double, 0..2, &[], Behaviour::Accept).await;
    let a = app.flag("Okundu mu?", &[]).await;
    let id = a["id"].as_str().unwrap();
    wait_done(&app, id, Duration::from_secs(30)).await;
    let receipts = receipts_of(&double, id);
    let receipt = |event: &str, alert: &str| {
        app.http
            .post(app.url("/api/v1/push/receipts"))
            .json(&json!({ "alert_id": alert, "event": event, "receipt": receipts[&0] }))
            .send()
    };
    assert_eq!(receipt("shown", id).await.unwrap().status(), 202);
    assert_eq!(receipt("shown", id).await.unwrap().status(), 202, "a repeat is answered, not counted");
    assert_eq!(receipt("clicked", id).await.unwrap().status(), 202);
    assert_eq!(receipt("clicked", "01a21e93-0238-74e3-bb0a-bf9f99ed6f40").await.unwrap().status(), 422);
    assert_eq!(receipt("liked", id).await.unwrap().status(), 422);
    let f = figures(&app, id).await;
    assert_eq!((f["shown"].as_i64(), f["clicked"].as_i64()), (Some(1), Some(1)));
    let (_, list) = app.get_json("/api/v1/alerts").await;
    assert_eq!(list["items"][0]["push"]["clicked"], 1, "the list carries push figures too");

    // The delivery log pages by status.
    let (status, page) = app.get_json(&format!("/api/v1/alerts/{id}/deliveries?status=sent&limit=1")).await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["push_host"], "localhost");
    assert!(page["items"][0].get("endpoint").is_none(), "endpoints are never shown");
    let (_, page2) = app.get_json(page["next"].as_str().unwrap()).await;
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);

    // Past the per-address rate: 429 with Retry-After.
    let mut limited = None;
    for _ in 0..40 {
        let r = receipt("shown", id).await.unwrap();
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("rate limited within 40 requests");
    assert!(r.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn the_vapid_key_is_shared_and_never_changes_silently() {
    let db = new_database().await;
    let first = TestApp::spawn_on(&db, push_settings).await;
    let (_, k1) = first.get_json("/api/v1/push/vapid-public-key").await;
    let second = TestApp::spawn_on(&db, push_settings).await;
    let (_, k2) = second.get_json("/api/v1/push/vapid-public-key").await;
    assert_eq!(k1, k2, "every process uses the stored key");
    let double = PushDouble::start(SUBJECT).await;
    assert_eq!(subscribe(&first, double.subscriber(1, Behaviour::Accept), &[]).await.status(), 201);
    first.stop().await;
    second.stop().await;

    let other = sondakika::push::vapid::generate_private_key().unwrap();
    let mut settings = crate::helpers::test_settings(&db);
    push_settings(&mut settings);
    settings.vapid_private_key = Some(sondakika::config::Secret::new(other.clone()));
    let err = sondakika::app::Application::build(settings.clone(), Default::default())
        .await
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("orphan"), "{err:#}");
    settings.vapid_rotate = true;
    let rotated = sondakika::app::Application::build(settings, Default::default())
        .await
        .expect("rotation allowed when asked");
    drop(rotated);
}

#[tokio::test]
async fn a_killed_server_resumes_its_fan_out_without_skipping_or_repeating() {
    let db = new_database().await;
    let double = PushDouble::start(SUBJECT).await;
    let env = [
        PROCESS_PUSH_ENV,
        &[
            ("SONDAKIKA_PUSH_LEASE_SECS", "2"),
            ("SONDAKIKA_PUSH_BATCH_SIZE", "200"),
            ("SONDAKIKA_PUSH_CONCURRENCY_PER_ORIGIN", "8"),
        ],
    ]
    .concat();
    let mut server = ServerProcess::start(&db, &env).await;
    // A helper server without push (it must not take part in the fan-out): token, pool, SQL.
    let app = TestApp::spawn_on(&db, |_| {}).await;
    double.set_vapid_key(&stored_vapid_key(&app).await);
    bulk_subscribe(&app, &double, 0..1500, &[], Behaviour::Slow(Duration::from_millis(10))).await;
    let r = publish_on(&app, server.addr, "Kesinti testi", "https://x.example/kill").await;
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(30), "a third went out", || async { double.received().len() >= 500 })
        .await;
    server.child.start_kill().unwrap(); // SIGKILL: no goodbye, no flush
    server.child.wait().await.unwrap();
    let at_kill = double.received().len();

    let restarted = ServerProcess::start(&db, &env).await;
    eventually(Duration::from_secs(60), "the fan-out finished after the restart", || async {
        let done: Option<String> =
            sqlx::query_scalar("select state from push_jobs where alert_id = $1::uuid")
                .bind(&id)
                .fetch_optional(&app.pool)
                .await
                .unwrap();
        done.as_deref() == Some("done")
    })
    .await;
    assert!(double.received().len() > at_kill);
    assert_eq!(double.violations(), Vec::<String>::new());
    let counts = double.accepted_counts();
    assert_eq!(counts.len(), 1500, "no subscriber skipped");
    let repeated = counts.values().filter(|n| **n > 1).count();
    // Only pushes in flight (8) or finished but not yet logged (≤ 100 ms of sending) at the
    // moment of the kill may repeat; none more than once.
    assert!(repeated <= 8 + 100, "{repeated} subscribers got the alert twice");
    assert!(counts.values().all(|n| *n <= 2));
    let logged: i64 = sqlx::query_scalar("select count(*) from push_deliveries where alert_id = $1::uuid")
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(logged, 1500, "exactly one log row per subscriber");
    drop(restarted);
}

/// The 50/95/100 % milestones follow the order in which flushes of outcomes reach the job, not
/// the order in which their transactions began: here the flush of the last five outcomes begins
/// first and is held up (another writer has an uncommitted outcome for one of its subscribers)
/// while the flush of the first 95 begins later and passes 95 %. Stamped with the start of the
/// transaction, 100 % would come 300 ms before 95 %.
#[tokio::test]
async fn milestones_keep_their_order_when_flushes_overlap() {
    use sondakika::push::store::{self, JobKey, PushOutcome};
    // Push is off in this app: nothing but this test writes the alert's job.
    let app = TestApp::spawn().await;
    let alert = app.flag("Kilometre taşları sırayla", &[]).await;
    let id: uuid::Uuid = alert["id"].as_str().unwrap().parse().unwrap();
    store::maintain_partitions(&app.pool, 30).await.unwrap();
    let day: chrono::NaiveDate = sqlx::query_scalar(
        "update push_jobs set state = 'running', targeted = 100 where alert_id = $1 returning alert_day",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let outcomes = |ids: std::ops::Range<i64>| -> Vec<PushOutcome> {
        ids.map(|i| PushOutcome {
            subscription_id: i,
            status: sondakika::push::store::DeliveryStatus::Sent.into(),
            http_status: Some(201),
            attempts: 1,
            push_host: "fcm.googleapis.com".into(),
            latency_ms: Some(5),
            ..PushOutcome::default()
        })
        .collect()
    };

    // A milestone is stamped when it is reached, not before: at 60 of 100, only 50 %.
    let job = JobKey { alert_id: id, step: 0, alert_day: day };
    store::record(&app.pool, &job, &outcomes(0..60), &Default::default()).await.unwrap();
    let mut conn = app.pool.acquire().await.unwrap();
    let f = store::figures(&mut conn, id).await.unwrap().unwrap().figures;
    drop(conn);
    assert_eq!((f.ms_to_50.is_some(), f.ms_to_95, f.ms_to_100), (true, None, None), "{f:?}");
    sqlx::query("delete from push_deliveries where alert_id = $1").bind(id).execute(&app.pool).await.unwrap();
    sqlx::query("update push_jobs set sent = 0, reached_50_at = null where alert_id = $1 and step = 0")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();

    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query(
        "insert into push_deliveries (alert_day, alert_id, subscription_id, status, push_host)
         values ($1, $2, 99, 'sent', 'fcm.googleapis.com')",
    )
    .bind(day)
    .bind(id)
    .execute(&mut *blocker)
    .await
    .unwrap();
    let late = tokio::spawn({
        let pool = app.pool.clone();
        let job = JobKey { alert_id: id, step: 0, alert_day: day };
        async move { store::record(&pool, &job, &outcomes(95..100), &Default::default()).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!late.is_finished(), "the first flush waits on the uncommitted outcome");
    let job = JobKey { alert_id: id, step: 0, alert_day: day };
    store::record(&app.pool, &job, &outcomes(0..95), &Default::default()).await.unwrap();
    blocker.rollback().await.unwrap();
    late.await.unwrap().unwrap();

    let mut conn = app.pool.acquire().await.unwrap();
    let f = store::figures(&mut conn, id).await.unwrap().unwrap();
    let f = f.figures;
    assert_eq!(f.sent, 100);
    let (m50, m95, m100) = (f.ms_to_50.unwrap(), f.ms_to_95.unwrap(), f.ms_to_100.unwrap());
    assert!(m50 <= m95 && m95 <= m100, "milestones out of order: {m50} / {m95} / {m100} ms");
}

#[tokio::test]
async fn a_sent_pushs_receipt_counts_once_per_event() {
    let (app, double) = push_app(|_| {}).await;
    bulk_subscribe(&app, &double, 0..3, &[], Behaviour::Accept).await;
    let a = app.flag("Okundu mu?", &[]).await;
    let id = a["id"].as_str().unwrap();
    wait_done(&app, id, Duration::from_secs(30)).await;
    let receipts = receipts_of(&double, id);
    assert_eq!(receipts.len(), 3);
    assert_eq!(
        receipts.values().collect::<std::collections::HashSet<_>>().len(),
        3,
        "one receipt per delivery"
    );

    for _ in 0..3 {
        assert_eq!(post_receipt(&app, id, "shown", Some(&receipts[&0])).await.status(), 202);
    }
    assert_eq!(shown_clicked(&app, id).await, (1, 0), "shown once, however often it is reported");
    for _ in 0..3 {
        assert_eq!(post_receipt(&app, id, "clicked", Some(&receipts[&0])).await.status(), 202);
    }
    assert_eq!(post_receipt(&app, id, "shown", Some(&receipts[&1])).await.status(), 202);
    assert_eq!(shown_clicked(&app, id).await, (2, 1));
    // The delivery log says which pushes were shown and clicked.
    let stamped: (i64, i64) = sqlx::query_as(
        "select count(shown_at), count(clicked_at) from push_deliveries where alert_id = $1::uuid",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(stamped, (2, 1));
    let (_, page) = app.get_json(&format!("/api/v1/alerts/{id}/deliveries")).await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.iter().filter(|d| d["shown_at"].is_string()).count(), 2, "{page}");
    assert_eq!(items.iter().filter(|d| d["clicked_at"].is_string()).count(), 1, "{page}");

    // A browser faster than the delivery log (written every 100 ms) is told to come back.
    let third: i64 = receipts[&2].split('.').next().unwrap().parse().unwrap();
    sqlx::query("delete from push_deliveries where alert_id = $1::uuid and subscription_id = $2")
        .bind(id)
        .bind(third)
        .execute(&app.pool)
        .await
        .unwrap();
    let r = post_receipt(&app, id, "shown", Some(&receipts[&2])).await;
    assert_eq!(r.status(), 409);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(shown_clicked(&app, id).await, (2, 1));
}

#[tokio::test]
async fn forged_borrowed_and_missing_receipts_are_refused_naming_the_field() {
    let (app, double) = push_app(|_| {}).await;
    bulk_subscribe(&app, &double, 0..2, &["burdur"], Behaviour::Accept).await;
    bulk_subscribe(&app, &double, 2..3, &["spor"], Behaviour::Accept).await;
    let a = app.flag("Burdur'da deprem", &["burdur"]).await;
    let b = app.flag("Maç ertelendi", &["spor"]).await;
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    wait_done(&app, a, Duration::from_secs(30)).await;
    wait_done(&app, b, Duration::from_secs(30)).await;
    let receipts = receipts_of(&double, a);
    let (id0, token0) = receipts[&0].split_once('.').unwrap();
    let (id1, _) = receipts[&1].split_once('.').unwrap();
    assert_ne!(id0, id1);

    let refused = [
        // What anybody could send before: no receipt at all.
        (a, None),
        // A token made up, of the right shape.
        (a, Some(format!("{id0}.{}", B64.encode([0x5au8; 16])))),
        // Subscriber 0's token presented for subscriber 1.
        (a, Some(format!("{id1}.{token0}"))),
        // Subscriber 0's receipt for an alert it was never sent (another topic).
        (b, Some(receipts[&0].clone())),
        // Not a receipt.
        (a, Some("1".into())),
        (a, Some(format!("{id0}.{token0}x"))),
        (a, Some(format!("-{id0}.{token0}"))),
    ];
    for (alert, receipt) in &refused {
        for event in ["shown", "clicked"] {
            let r = post_receipt(&app, alert, event, receipt.as_deref()).await;
            assert_eq!(r.headers()["content-type"], "application/problem+json");
            assert_eq!(refusal(r).await, (422, json!("receipt")), "{receipt:?} for {alert}");
        }
    }
    assert_eq!(shown_clicked(&app, a).await, (0, 0));
    assert_eq!(shown_clicked(&app, b).await, (0, 0));
    // The genuine receipt still counts.
    assert_eq!(post_receipt(&app, a, "clicked", Some(&receipts[&0])).await.status(), 202);
    assert_eq!(shown_clicked(&app, a).await, (0, 1));
}

#[tokio::test]
async fn receipts_for_a_retracted_alert_are_refused() {
    let (app, double) = push_app(|_| {}).await;
    bulk_subscribe(&app, &double, 0..2, &[], Behaviour::Accept).await;
    let a = app.flag("Yanlış haber", &[]).await;
    let id = a["id"].as_str().unwrap();
    wait_done(&app, id, Duration::from_secs(30)).await;
    let receipts = receipts_of(&double, id);
    assert_eq!(post_receipt(&app, id, "shown", Some(&receipts[&0])).await.status(), 202);
    let r = app.editor(reqwest::Method::POST, &format!("/api/v1/alerts/{id}/retract"), None).await;
    assert_eq!(r.status(), 200);

    for (receipt, event) in
        [(Some(&receipts[&0]), "clicked"), (Some(&receipts[&1]), "shown"), (None, "clicked")]
    {
        let r = post_receipt(&app, id, event, receipt.map(String::as_str)).await;
        assert_ne!(r.status(), 202, "{event} with {receipt:?} after the retraction");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        if receipt.is_some() {
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["status"], 409);
            assert!(body["detail"].as_str().unwrap().contains("retracted"), "{body}");
        }
    }
    assert_eq!(shown_clicked(&app, id).await, (1, 0), "only the receipt from before the retraction");
}

/// The attack (600 `clicked` from ten addresses on an alert nobody was sent) and every
/// receipt a real reader's browser could send, many times over, concurrently.
#[tokio::test]
async fn shown_and_clicked_never_exceed_the_pushes_sent() {
    let (app, double) = push_app(|s| s.trust_forwarded_for = true).await;
    // Published before anybody subscribed: targeted = 0.
    let nobody = app.flag("Kimseye gitmedi", &[]).await;
    let nobody = nobody["id"].as_str().unwrap();
    assert_eq!(wait_done(&app, nobody, Duration::from_secs(30)).await["targeted"], 0);
    bulk_subscribe(&app, &double, 0..20, &[], Behaviour::Accept).await;
    bulk_subscribe(&app, &double, 20..25, &[], Behaviour::Status(410)).await;
    bulk_subscribe(&app, &double, 25..30, &[], Behaviour::Status(400)).await;
    let a = app.flag("Sayılar doğru mu?", &[]).await;
    let id = a["id"].as_str().unwrap();
    let f = wait_done(&app, id, Duration::from_secs(30)).await;
    assert_eq!((f["sent"].as_i64(), f["gone"].as_i64(), f["failed"].as_i64()), (Some(20), Some(5), Some(5)));
    // The double decrypted every push, also those it refused: their receipts are real too.
    let receipts = receipts_of(&double, id);
    assert_eq!(receipts.len(), 30);

    let mut posts = Vec::new();
    for n in 0..600 {
        // Ten addresses, as in the issue.
        let from = format!("198.51.100.{}", n % 10);
        let forged = json!({ "alert_id": nobody, "event": "clicked" });
        posts.push((from.clone(), forged));
        let receipt = &receipts[&(n as u64 % 30)];
        for event in ["shown", "clicked"] {
            posts.push((from.clone(), json!({ "alert_id": id, "event": event, "receipt": receipt })));
        }
    }
    use futures_util::StreamExt;
    let answers: Vec<_> = futures_util::stream::iter(posts.iter().map(|(from, body)| {
        app.http.post(app.url("/api/v1/push/receipts")).header("x-forwarded-for", from).json(body).send()
    }))
    .buffer_unordered(64)
    .collect()
    .await;
    let mut statuses = HashMap::<u16, usize>::new();
    for a in answers {
        *statuses.entry(a.unwrap().status().as_u16()).or_default() += 1;
    }
    assert_eq!(statuses.get(&500), None, "{statuses:?}");
    assert_eq!(shown_clicked(&app, nobody).await, (0, 0), "{statuses:?}");
    let f = figures(&app, id).await;
    let (sent, shown, clicked) =
        (f["sent"].as_i64().unwrap(), f["shown"].as_i64().unwrap(), f["clicked"].as_i64().unwrap());
    assert!(shown <= sent && clicked <= sent, "sent {sent}, shown {shown}, clicked {clicked}: {statuses:?}");
    assert_eq!((shown, clicked), (20, 20), "every push sent was reported, once each");
    // Receipts of pushes that failed or were gone are refused as not sent.
    let r = post_receipt(&app, id, "shown", Some(&receipts[&22])).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], 409);
    assert!(body["detail"].as_str().unwrap().contains("`gone`"), "{body}");
}
