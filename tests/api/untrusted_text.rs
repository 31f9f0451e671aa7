//! Text from strangers: feeds whose text would cost naive code quadratic time (megabytes of `&`
//! without `;`, `<head></head>` repeated), and answers holding bytes PostgreSQL refuses (a NUL)
//! from a feed or a webhook receiver. Each must end in a recorded outcome, and no feed may stop
//! the others or a process's shutdown.

use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use reqwest::Method;
use serde_json::{Value, json};
use sondakika::auth::{self, Role};

use crate::{
    feeds::{RSS, admin_call, alerts_for, app, feed, first_poll, register, rss},
    helpers::{ServerProcess, TestApp, eventually, new_database, test_client},
    origin::{Origin, Route},
};

const JSON_FEED: &str = "application/feed+json";

/// A JSON Feed with one item per (id, title), dated now.
fn json_feed(items: &[(&str, &str)]) -> String {
    let items: Vec<Value> = items
        .iter()
        .map(|(id, title)| {
            json!({"id": id, "url": format!("https://www.example.com.tr/haber/{id}"), "title": title,
                   "date_published": Utc::now().to_rfc3339()})
        })
        .collect();
    json!({"version": "https://jsonfeed.org/version/1.1", "title": "Saldırgan", "items": items}).to_string()
}

/// 2 MiB of `&` without a `;`, and `<head></head>` repeated to 2 MiB: each took a poll minutes
/// of CPU when every `&` looked for its `;` to the end of the text and every hidden element
/// lowercased the rest of the text to find its end.
fn hostile_titles() -> [(&'static str, String); 2] {
    [("amp", "&".repeat(2 << 20)), ("head", "<head></head>".repeat((2 << 20) / 13))]
}

#[tokio::test]
async fn hostile_feed_text_is_read_like_any_other_and_never_starves_a_good_feed() {
    let (app, admin) = app().await;
    let origin = Origin::start().await;
    // More hostile feeds than a process polls at once (`feed_concurrency`, 4).
    let mut hostile = Vec::new();
    for n in 0..4 {
        let (kind, title) = &hostile_titles()[n % 2];
        let path = format!("/{kind}-{n}");
        origin.set(&path, Route::doc(JSON_FEED, json_feed(&[(&format!("{kind}-old-{n}"), title)])));
        let f = register(&app, &admin, json!({"url": origin.url(&path), "mode": "auto", "interval_secs": 1}))
            .await;
        hostile.push((path, f["id"].as_str().unwrap().to_string()));
    }
    origin.set("/good", Route::doc(RSS, rss("")));
    let good = register(&app, &admin, json!({"url": origin.url("/good"), "interval_secs": 1})).await;
    let polled = first_poll(&app, &admin, good["id"].as_str().unwrap()).await;
    assert!(polled["last_success_at"].is_string(), "the good feed is polled beside them: {polled}");

    for (path, id) in &hostile {
        let f = first_poll(&app, &admin, id).await;
        assert_eq!(f["last_error"], Value::Null, "{path}: the text is read: {f}");
    }
    // A new hostile item becomes an alert whose headline is the text, decoded and shortened.
    let (path, id) = &hostile[0];
    let amp = &hostile_titles()[0].1;
    origin.set(path, Route::doc(JSON_FEED, json_feed(&[("amp-new", amp), ("amp-old-0", amp)])));
    eventually(Duration::from_secs(30), "the hostile item alerted", || async {
        alerts_for(&app, "amp-new").await == 1
    })
    .await;
    let headline: String = sqlx::query_scalar("select headline from alerts where article_id = 'amp-new'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(headline, format!("{}…", "&".repeat(199)));
    assert_eq!(feed(&app, &admin, id).await["last_error"], Value::Null);
}

/// SIGTERM while a feed of megabytes of hostile text is being read: the process exits within
/// its grace (`ServerProcess::terminate` fails the test past 30 s), however long parsing takes.
#[tokio::test]
async fn serve_exits_within_its_grace_while_a_hostile_feed_is_being_parsed() {
    let db = new_database().await;
    let origin = Origin::start().await;
    // Under `feed_max_bytes` (5 MiB).
    origin.set("/amp", Route::doc(JSON_FEED, json_feed(&[("amp", &"&".repeat(4 << 20))])));
    let env = [
        ("SONDAKIKA_OUTBOUND_PRIVATE_HOSTS", "127.0.0.1"),
        ("SONDAKIKA_FEED_MIN_INTERVAL_SECS", "1"),
        ("SONDAKIKA_SHUTDOWN_GRACE_SECS", "5"),
    ];
    let mut server = ServerProcess::start(&db, &env).await;
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    let (_, admin) = auth::create(&pool, "Yönetici", Role::Admin).await.unwrap();
    let r = test_client()
        .post(format!("http://{}/api/v1/feeds", server.addr))
        .bearer_auth(&admin)
        .json(&json!({"url": origin.url("/amp"), "mode": "auto", "interval_secs": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    eventually(Duration::from_secs(30), "the hostile feed was fetched", || async {
        !origin.hits("/amp").is_empty()
    })
    .await;
    let status = server.terminate().await;
    assert!(status.success(), "exit status {status:?}");
}

/// A feed whose answer holds a NUL (and an ESC sequence): the poll's error is recorded, made
/// safe, and the feed backs off like any failing feed.
#[tokio::test]
async fn a_feed_answering_a_nul_byte_shows_its_error_and_backs_off() {
    let (app, admin) = app().await;
    let origin = Origin::start().await;
    let doc = "<rss version=\"2.0\"><channel><title>x</title><item><title>a</title></item></chan\0nel>\
               </ch\u{1b}[31mannel></rss>";
    origin.set("/nul", Route::doc(RSS, doc));
    let f =
        register(&app, &admin, json!({"url": origin.url("/nul"), "mode": "auto", "interval_secs": 1})).await;
    let id = f["id"].as_str().unwrap();
    let polled = first_poll(&app, &admin, id).await;
    let error = polled["last_error"].as_str().unwrap_or_else(|| panic!("the error is shown: {polled}"));
    assert!(error.contains("not well-formed XML") || error.contains("not an RSS"), "{error}");
    assert!(!error.chars().any(|c| c.is_control()), "{error:?}");
    assert!(polled["failures"].as_i64().unwrap() >= 1, "{polled}");
    let next: chrono::DateTime<Utc> = polled["next_poll_at"].as_str().unwrap().parse().unwrap();
    let at: chrono::DateTime<Utc> = polled["last_polled_at"].as_str().unwrap().parse().unwrap();
    assert!(next - at >= chrono::Duration::milliseconds(1900), "it backs off: {polled}");
    // And keeps backing off: the failures count up, each try further apart.
    eventually(Duration::from_secs(60), "a second failure recorded", || async {
        feed(&app, &admin, id).await["failures"].as_i64().unwrap() >= 2
    })
    .await;
    let f = feed(&app, &admin, id).await;
    let next: chrono::DateTime<Utc> = f["next_poll_at"].as_str().unwrap().parse().unwrap();
    let at: chrono::DateTime<Utc> = f["last_polled_at"].as_str().unwrap().parse().unwrap();
    assert!(next - at >= chrono::Duration::milliseconds(3900), "the backoff doubles: {f}");
}

async fn webhook_endpoint(app: &TestApp, admin: &str, id: i64) -> Value {
    let (status, ep) = admin_call(app, admin, Method::GET, &format!("/api/v1/webhooks/{id}"), None).await;
    assert_eq!(status, 200, "{ep}");
    ep
}

/// A receiver answering 500 with `bad\0gateway`: every attempt is recorded with the answer made
/// safe, retries follow the backoff (1 s, then 2 s), and the endpoint is disabled once it has
/// failed for `webhook_disable_after_secs`, as for any failing receiver.
#[tokio::test]
async fn a_webhook_receiver_answering_a_nul_byte_has_its_attempts_recorded_and_is_disabled() {
    let app = TestApp::spawn_with(|s| {
        s.outbound_private_hosts = vec!["127.0.0.1".into()];
        s.webhook_retry_first_secs = 1;
        s.webhook_timeout_secs = 2;
        s.webhook_disable_after_secs = 3;
    })
    .await;
    let (_, admin) = auth::create(&app.pool, "Yönetici", Role::Admin).await.unwrap();
    let receiver = Origin::start().await;
    receiver.set(
        "/hook",
        Route::Answer { status: 500, body: Bytes::from_static(b"bad\0gateway \x1b[2J\xe2\x80\xae") },
    );
    let (status, created) = admin_call(
        &app,
        &admin,
        Method::POST,
        "/api/v1/webhooks",
        Some(json!({"url": receiver.url("/hook"), "event_types": ["alert.flagged"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let since = Utc::now();
    app.flag("Alıcı bozuk", &[]).await;

    eventually(Duration::from_secs(30), "the endpoint is disabled", || async {
        webhook_endpoint(&app, &admin, id).await["enabled"] == false
    })
    .await;
    let ep = webhook_endpoint(&app, &admin, id).await;
    let attempts = ep["recent_attempts"].as_array().unwrap();
    assert!(attempts.len() >= 2, "every attempt is recorded: {ep}");
    for a in attempts {
        assert_eq!(a["http_status"], 500, "{a}");
        assert_eq!(a["error"], "answered HTTP 500: badgateway", "{a}");
    }
    let reason = ep["disabled_reason"].as_str().unwrap();
    assert!(reason.ends_with("the last: answered HTTP 500: badgateway"), "{reason}");
    // Tries follow the backoff, not the lease: about 1 s, then about 2 s apart.
    let tries = receiver.hit_times("/hook", since);
    assert_eq!(tries.len(), attempts.len(), "each try recorded once: {tries:?}");
    let gaps: Vec<i64> = tries.windows(2).map(|w| (w[1] - w[0]).num_milliseconds()).collect();
    assert!(gaps[0] >= 850, "{gaps:?}");
    if let Some(&second) = gaps.get(1) {
        assert!(second >= 1750, "{gaps:?}");
    }
}
