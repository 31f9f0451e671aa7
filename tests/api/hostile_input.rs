//! Input at the byte level, as a hostile client sends it: every field that reaches the database
//! refuses control characters, bidi overrides, invisible-only text, whitespace at the edges and
//! oversized values with a 422 naming the field; never a 500. Turkish text still round-trips
//! byte-exact, and URLs are stored in their serialised form.

use serde_json::{Value, json};
use sondakika::config::Settings;

use crate::helpers::TestApp;

const SUBJECT: &str = "mailto:teknik@burdurweb.com";
/// The RFC 8291 example's user agent keys: a valid subscription's keys.
const P256DH: &str =
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
const ENDPOINT: &str = "https://fcm.googleapis.com/fcm/send/dKx8:APA91bH";

fn push_settings(s: &mut Settings) {
    s.vapid_subject = Some(SUBJECT.into());
    s.public_rate_per_minute = 100_000;
}

/// Ways to spoil a value: (name, spoil). Each keeps the value otherwise valid, so the only
/// thing wrong is the bytes under test.
type Spoil = Box<dyn Fn(&str) -> String>;

fn spoilers() -> Vec<(&'static str, Spoil)> {
    vec![
        ("NUL", Box::new(|v: &str| format!("{v}\u{0}x"))),
        ("BEL (C0)", Box::new(|v: &str| format!("{v}\u{7}x"))),
        ("ESC (C0)", Box::new(|v: &str| format!("{v}\u{1b}[31mx"))),
        ("NEL (C1)", Box::new(|v: &str| format!("{v}\u{85}x"))),
        ("CSI (C1)", Box::new(|v: &str| format!("{v}\u{9b}x"))),
        ("raw newline", Box::new(|v: &str| format!("{v}\nx"))),
        ("bidi override", Box::new(|v: &str| format!("{v}\u{202E}gpj.exe"))),
        ("bidi isolate", Box::new(|v: &str| format!("{v}\u{2066}x\u{2069}"))),
        ("zero-width only", Box::new(|_: &str| "\u{200B}\u{200C}\u{FEFF}".to_string())),
        ("braille blank only", Box::new(|_: &str| "\u{2800}\u{2800}".to_string())),
        ("hangul filler only", Box::new(|_: &str| "\u{3164}\u{115F}".to_string())),
        ("leading space", Box::new(|v: &str| format!(" {v}"))),
        ("leading tab", Box::new(|v: &str| format!("\t{v}"))),
        ("trailing space", Box::new(|v: &str| format!("{v} "))),
        ("huge", Box::new(|v: &str| format!("{v}{}", "ş".repeat(20_000)))),
    ]
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value, String) {
    let mut req = app.http.request(method, app.url(path)).bearer_auth(&app.token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let content_type =
        r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body, content_type)
}

/// The fields a problem names: `field` and every `errors[].field`.
fn named_fields(body: &Value) -> Vec<String> {
    let mut fields: Vec<String> = body["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["field"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    if let Some(f) = body["field"].as_str() {
        fields.push(f.to_string());
    }
    fields
}

fn subscription(endpoint: &str, p256dh: &str, auth: &str) -> Value {
    json!({ "endpoint": endpoint, "keys": { "p256dh": p256dh, "auth": auth } })
}

#[tokio::test]
async fn byte_level_bad_input_on_every_field_gets_422_naming_it_never_500() {
    let app = TestApp::spawn_with(push_settings).await;
    let alert = app.flag("Burdur'da deprem", &["burdur"]).await;
    let id = alert["id"].as_str().unwrap().to_string();
    let valid_alert = || {
        json!({ "headline": "Göl'de su seviyesi yükseldi", "url": "https://www.example.com.tr/haber/gol",
                "summary": "DSİ açıkladı.", "image": "https://www.example.com.tr/gol.jpg",
                "article_id": "gol-42", "label": "SON DAKİKA", "topics": ["burdur"] })
    };
    let alerts_path = "/api/v1/alerts".to_string();
    let alert_path = format!("/api/v1/alerts/{id}");
    let retract_path = format!("/api/v1/alerts/{id}/retract");

    // (field named in the answer, method, path, the valid value, how to build the request).
    type Build = Box<dyn Fn(String) -> (reqwest::Method, String, Option<Value>)>;
    let mut cases: Vec<(&str, String, Build)> = Vec::new();
    use reqwest::Method;
    for field in ["headline", "summary", "label", "article_id", "url", "image"] {
        let valid = valid_alert()[field].as_str().unwrap().to_string();
        let path = alerts_path.clone();
        cases.push((
            field,
            valid,
            Box::new(move |v| {
                let mut body = valid_alert();
                body[field] = json!(v);
                (Method::POST, path.clone(), Some(body))
            }),
        ));
    }
    for field in ["headline", "summary", "url", "image"] {
        let valid = valid_alert()[field].as_str().unwrap().to_string();
        let path = alert_path.clone();
        cases.push((
            field,
            valid,
            Box::new(move |v| (Method::PATCH, path.clone(), Some(json!({ field: v })))),
        ));
    }
    {
        let path = retract_path.clone();
        cases.push((
            "reason",
            "Yanlış bilgi".into(),
            Box::new(move |v| (Method::POST, path.clone(), Some(json!({ "reason": v })))),
        ));
    }
    let subscribe = "/api/v1/push/subscriptions".to_string();
    for (field, valid) in [
        ("subscription.endpoint", ENDPOINT),
        ("subscription.keys.p256dh", P256DH),
        ("subscription.keys.auth", AUTH),
        ("replaces", "https://fcm.googleapis.com/fcm/send/old:APA91"),
        ("locale", "tr"),
    ] {
        let path = subscribe.clone();
        cases.push((
            field,
            valid.into(),
            Box::new(move |v| {
                let pick = |f: &str, d: &str| if f == field { v.clone() } else { d.to_string() };
                let body = json!({
                    "subscription": subscription(
                        &pick("subscription.endpoint", ENDPOINT),
                        &pick("subscription.keys.p256dh", P256DH),
                        &pick("subscription.keys.auth", AUTH)),
                    "topics": ["burdur"],
                    "locale": pick("locale", "tr"),
                    "replaces": pick("replaces", "https://fcm.googleapis.com/fcm/send/old:APA91"),
                });
                (Method::POST, path.clone(), Some(body))
            }),
        ));
    }
    {
        let path = subscribe.clone();
        cases.push((
            "endpoint",
            ENDPOINT.into(),
            Box::new(move |v| (Method::DELETE, path.clone(), Some(json!({ "endpoint": v })))),
        ));
        cases.push((
            "alert_id",
            id.clone(),
            Box::new(|v| {
                (
                    Method::POST,
                    "/api/v1/push/receipts".into(),
                    Some(json!({ "alert_id": v, "event": "shown" })),
                )
            }),
        ));
    }
    {
        let id = id.clone();
        cases.push((
            "receipt",
            "1.AAAAAAAAAAAAAAAAAAAAAA".into(),
            Box::new(move |v| {
                let body = json!({ "alert_id": id, "event": "shown", "receipt": v });
                (Method::POST, "/api/v1/push/receipts".into(), Some(body))
            }),
        ));
    }
    // Query parameters, percent-encoded as a browser would send them.
    let query = |path: &'static str, param: &'static str| -> Build {
        Box::new(move |v: String| {
            let v: String = url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
            (Method::GET, format!("{path}?{param}={v}"), None)
        })
    };
    cases.push(("before", id.clone(), query("/api/v1/alerts", "before")));
    cases.push(("status", "live".into(), query("/api/v1/alerts", "status")));
    cases.push(("limit", "5".into(), query("/api/v1/alerts", "limit")));
    cases.push(("topics", "burdur".into(), query("/api/v1/live", "topics")));
    cases.push(("since", "1".into(), query("/sse", "since")));
    cases.push(("since", "1".into(), query("/ws", "since")));
    cases.push(("topics", "burdur".into(), query("/sse", "topics")));

    let mut failures = Vec::new();
    for (field, valid, build) in &cases {
        for (spoiler, spoil) in spoilers() {
            // A line break is allowed inside the multi-line fields (their own test shows it).
            if spoiler == "raw newline" && matches!(*field, "summary" | "reason") {
                continue;
            }
            let (method, path, body) = build(spoil(valid));
            // A huge value belongs in a body; in a request line it is hyper's limits' business.
            if spoiler == "huge" && body.is_none() {
                continue;
            }
            let (status, problem, content_type) = send(&app, method.clone(), &path, body).await;
            let named = named_fields(&problem);
            let ok = status == 422
                && content_type == "application/problem+json"
                && named.iter().any(|n| n == field || n.starts_with(&format!("{field}[")));
            if !ok {
                failures.push(format!(
                    "{method} {} {field} with {spoiler}: {status} {content_type} names {named:?}",
                    path.chars().take(60).collect::<String>()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the bad inputs were not refused as they must be:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The alert is untouched, and no subscription was stored.
    let (_, shown) = app.get_json(&alert_path).await;
    assert_eq!(shown["headline"], "Burdur'da deprem");
    assert_eq!(shown["status"], "live");
    let subs: i64 =
        sqlx::query_scalar("select count(*) from push_subscriptions").fetch_one(&app.pool).await.unwrap();
    assert_eq!(subs, 0);
}

#[tokio::test]
async fn an_endpoint_of_a_thousand_cjk_characters_is_refused_not_a_500() {
    let app = TestApp::spawn_with(push_settings).await;
    let endpoint = format!("https://fcm.googleapis.com/fcm/send/{}", "漢".repeat(960));
    assert!(endpoint.chars().count() <= 1000);
    let body = json!({ "subscription": subscription(&endpoint, P256DH, AUTH), "topics": [] });
    let (status, problem, _) =
        send(&app, reqwest::Method::POST, "/api/v1/push/subscriptions", Some(body)).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["field"], "subscription.endpoint");
    assert!(problem["detail"].as_str().unwrap().contains("bytes"), "{problem}");
    let (status, problem, _) = send(
        &app,
        reqwest::Method::DELETE,
        "/api/v1/push/subscriptions",
        Some(json!({ "endpoint": endpoint })),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["field"], "endpoint");
}

#[tokio::test]
async fn urls_are_stored_and_sent_in_their_serialised_form() {
    let app = TestApp::spawn().await;
    let mut ticker = app.ticker("").await;
    ticker.expect("hello").await;
    let r = app
        .post_alert(json!({
            "headline": "Göl'de su seviyesi yükseldi",
            "url": "HTTPS://Www.Burdurweb.com:443/haber/göl taştı?ilçe=ağlasun",
            "image": "https://www.burdurweb.com/resim/göl.jpg",
        }))
        .await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let url = "https://www.burdurweb.com/haber/g%C3%B6l%20ta%C5%9Ft%C4%B1?il%C3%A7e=a%C4%9Flasun";
    let image = "https://www.burdurweb.com/resim/g%C3%B6l.jpg";
    assert_eq!(created["url"], url);
    assert_eq!(created["image"], image);
    let stored: (String, Option<String>) =
        sqlx::query_as("select url, image from alerts").fetch_one(&app.pool).await.unwrap();
    assert_eq!((stored.0.as_str(), stored.1.as_deref()), (url, Some(image)));
    assert_eq!(ticker.expect("alert").await["url"], url);

    // The same article spelled differently is the same article.
    let again = app
        .post_alert(json!({ "headline": "Göl taştı", "url": "https://www.burdurweb.com/haber/g%C3%B6l ta%C5%9Ft%C4%B1?il%C3%A7e=a%C4%9Flasun" }))
        .await;
    assert_eq!(again.status(), 200, "found as the live alert of the same URL");
}

#[tokio::test]
async fn a_browsers_raw_endpoint_finds_its_stored_subscription() {
    let app = TestApp::spawn_with(push_settings).await;
    let raw = "HTTPS://FCM.googleapis.com:443/fcm/send/dKx8:APA91 bH";
    let serialised = "https://fcm.googleapis.com/fcm/send/dKx8:APA91%20bH";
    let body = json!({ "subscription": subscription(raw, P256DH, AUTH), "topics": ["burdur"] });
    let (status, problem, _) =
        send(&app, reqwest::Method::POST, "/api/v1/push/subscriptions", Some(body.clone())).await;
    assert_eq!(status, 201, "{problem}");
    let stored: String =
        sqlx::query_scalar("select endpoint from push_subscriptions").fetch_one(&app.pool).await.unwrap();
    assert_eq!(stored, serialised);
    // Posting the raw form again refreshes the same subscription.
    let (status, _, _) = send(&app, reqwest::Method::POST, "/api/v1/push/subscriptions", Some(body)).await;
    assert_eq!(status, 200);

    // `replaces` with the old raw endpoint removes the old one.
    let new = "https://fcm.googleapis.com/fcm/send/new:APA91";
    let body = json!({ "subscription": subscription(new, P256DH, AUTH), "replaces": raw });
    let (status, problem, _) =
        send(&app, reqwest::Method::POST, "/api/v1/push/subscriptions", Some(body)).await;
    assert_eq!(status, 201, "{problem}");
    let endpoints: Vec<String> =
        sqlx::query_scalar("select endpoint from push_subscriptions").fetch_all(&app.pool).await.unwrap();
    assert_eq!(endpoints, vec![new.to_string()]);

    // DELETE with a raw spelling finds the stored one.
    let (status, problem, _) = send(
        &app,
        reqwest::Method::DELETE,
        "/api/v1/push/subscriptions",
        Some(json!({ "endpoint": "https://FCM.GOOGLEAPIS.COM/fcm/send/new:APA91" })),
    )
    .await;
    assert_eq!(status, 204, "{problem}");
}

#[tokio::test]
async fn turkish_text_and_line_breaks_in_multi_line_fields_round_trip_exactly() {
    let app = TestApp::spawn().await;
    let headline = "İstanbul'da “şiddetli” fırtına: ığüşöç İĞÜŞÖÇ ‘uyarı’ — 4,2 ❤️";
    let summary = "AFAD açıkladı.\n\nİlçelerde okullar tatil edildi; “dikkatli olun” çağrısı.";
    let r = app
        .post_alert(json!({ "headline": headline, "summary": summary,
                            "url": "https://www.example.com.tr/haber/firtina", "label": "SON DAKİKA",
                            "article_id": "fırtına-ığüşöç-1" }))
        .await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["headline"].as_str().unwrap().as_bytes(), headline.as_bytes());
    assert_eq!(created["summary"].as_str().unwrap().as_bytes(), summary.as_bytes());
    assert_eq!(created["article_id"], "fırtına-ığüşöç-1");
    let id = created["id"].as_str().unwrap();
    let reason = "Yanlış bilgi:\nkaynak doğrulanamadı.";
    let r = app
        .editor(
            reqwest::Method::POST,
            &format!("/api/v1/alerts/{id}/retract"),
            Some(json!({ "reason": reason })),
        )
        .await;
    assert_eq!(r.status(), 200);
    let stored: (String, String, String) =
        sqlx::query_as("select headline, summary, retract_reason from alerts")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored.0.as_bytes(), headline.as_bytes());
    assert_eq!(stored.1.as_bytes(), summary.as_bytes());
    assert_eq!(stored.2.as_bytes(), reason.as_bytes());
}

#[tokio::test]
async fn a_token_name_with_a_bidi_override_is_refused_by_the_cli() {
    let app = TestApp::spawn().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sondakika"))
        .args(["token", "create", "--name", "Ayşe\u{202E}nimda"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &app.db_url)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--name") && stderr.contains("bidirectional"), "{stderr}");
    let names: Vec<String> =
        sqlx::query_scalar("select name from editor_tokens").fetch_all(&app.pool).await.unwrap();
    assert_eq!(names, vec!["Ayşe Yılmaz".to_string()]);
}

#[tokio::test]
async fn a_ticker_with_since_above_the_head_starts_afresh_and_gets_new_alerts() {
    let app = TestApp::spawn().await;
    let mut first = app.ticker("").await;
    first.expect("hello").await;
    app.flag("Önceki haber", &[]).await;
    first.expect("alert").await; // the hub has seen seq 1
    // WebSocket: a made-up position far above the head.
    let mut ticker = app.ticker("?since=1000000000").await;
    let hello = ticker.expect("hello").await;
    assert_eq!(hello["seq"], 1, "the service's head, not the client's");
    assert_eq!(hello["replay"]["since"], 1_000_000_000i64);
    assert_eq!(hello["replay"]["reset"], true, "{hello}");
    assert_eq!(hello["replay"]["truncated"], true);
    assert_eq!(hello["replay"]["count"], 0);

    // SSE with Last-Event-ID above the head, as a browser sends after a database restore.
    let mut sse = app.http.get(app.url("/sse")).header("last-event-id", "999999999").send().await.unwrap();
    assert_eq!(sse.status(), 200);

    app.flag("Burdur'da deprem", &[]).await;
    let alert = ticker.expect("alert").await;
    assert_eq!(alert["headline"], "Burdur'da deprem");

    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !text.contains("Burdur'da deprem") {
        let chunk = tokio::time::timeout_at(deadline, sse.chunk()).await.expect("the alert over SSE in time");
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap().expect("stream open")));
    }
    assert!(text.contains("\"reset\":true"), "{text}");
}

#[tokio::test]
async fn a_since_above_this_process_but_not_the_database_is_trusted() {
    let app = TestApp::spawn().await;
    // Another process has taken seqs up to 50 that this one's hub has not seen yet.
    sqlx::query("select setval('stream_seq', 50)").execute(&app.pool).await.unwrap();
    let mut ticker = app.ticker("?since=40").await;
    let hello = ticker.expect("hello").await;
    assert_eq!(hello["replay"]["reset"], false, "{hello}");
    assert_eq!(hello["replay"]["since"], 40);
    // A new event above 40 still arrives.
    app.flag("Burdur'da deprem", &[]).await;
    let alert = ticker.expect("alert").await;
    assert_eq!(alert["seq"], 51);
}
