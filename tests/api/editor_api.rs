//! The editor API: authentication, validation, idempotency, corrections, Turkish text.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, sample_article};

fn valid_alert() -> Value {
    json!({ "headline": "Burdur'da deprem", "url": "https://www.example.com.tr/haber/1" })
}

async fn problem(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    assert_eq!(r.headers()["content-type"], "application/problem+json", "errors are problem+json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string() && body["detail"].is_string(), "{body}");
    (status, body)
}

#[tokio::test]
async fn requests_without_a_valid_token_are_refused_with_401() {
    let app = TestApp::spawn().await;
    let url = app.url("/api/v1/alerts");

    let r = app.http.post(&url).json(&valid_alert()).send().await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"sondakika\"");
    let (status, body) = problem(r).await;
    assert_eq!(status, 401);
    assert!(body["detail"].as_str().unwrap().contains("Bearer"));

    let r =
        app.http.post(&url).bearer_auth("sdk_not-a-real-token").json(&valid_alert()).send().await.unwrap();
    assert_eq!(problem(r).await.0, 401);

    let r = app.http.get(&url).header("authorization", "Basic Zm9vOmJhcg==").send().await.unwrap();
    assert_eq!(problem(r).await.0, 401);
}

#[tokio::test]
async fn a_revoked_token_stops_working_at_once() {
    let app = TestApp::spawn().await;
    let (status, _) = app.get_json("/api/v1/alerts").await;
    assert_eq!(status, 200);
    let id: i64 = sqlx::query_scalar("select id from editor_tokens").fetch_one(&app.pool).await.unwrap();
    assert!(sondakika::auth::revoke(&app.pool, id).await.unwrap());
    let (status, body) = app.get_json("/api/v1/alerts").await;
    assert_eq!(status, 401);
    assert!(body["detail"].as_str().unwrap().contains("revoked"));
}

#[tokio::test]
async fn tokens_are_stored_only_as_hashes() {
    let app = TestApp::spawn().await;
    let stored: Vec<u8> =
        sqlx::query_scalar("select token_hash from editor_tokens").fetch_one(&app.pool).await.unwrap();
    assert_eq!(stored.len(), 32);
    let dump: String = sqlx::query_scalar("select string_agg(t::text, ',') from editor_tokens t")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!dump.contains(&app.token[4..]), "the clear token must not be in the table");
}

#[tokio::test]
async fn flagging_answers_201_with_seq_and_links() {
    let app = TestApp::spawn().await;
    let r = app.post_alert(valid_alert()).await;
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["status"], "live");
    assert_eq!(a["label"], "SON DAKİKA");
    assert_eq!(a["urgency"], "high");
    assert_eq!(a["ttl_seconds"], 3600);
    assert_eq!(a["created_by"], "Ayşe Yılmaz");
    assert_eq!(location, a["links"]["self"]);
    let first_seq = a["seq"].as_i64().unwrap();
    let b = app.flag("İkinci haber", &[]).await;
    assert!(b["seq"].as_i64().unwrap() > first_seq, "seq increases");
    let (status, shown) = app.get_json(&location).await;
    assert_eq!(status, 200);
    assert_eq!(shown["id"], a["id"]);
    assert_eq!(shown["delivery"]["tickers_reached"], 0);
    assert!(shown.get("push").is_none(), "no push figures while Web Push is off");
}

#[tokio::test]
async fn every_kind_of_bad_input_gets_a_problem_naming_the_field() {
    let app = TestApp::spawn().await;
    let post_raw = |body: String, content_type: &'static str| {
        app.http
            .post(app.url("/api/v1/alerts"))
            .bearer_auth(&app.token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    // Malformed JSON.
    let (status, body) =
        problem(post_raw("{\"headline\": \"a\",".into(), "application/json").await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(body["detail"].as_str().unwrap().contains("line 1"), "{body}");

    // Wrong content type.
    let (status, _) = problem(post_raw(valid_alert().to_string(), "text/plain").await.unwrap()).await;
    assert_eq!(status, 415);

    // Oversized body: the limit is explicit in the answer.
    let big = json!({ "headline": "a", "url": "https://x.example", "summary": "ş".repeat(70_000) });
    let (status, body) = problem(post_raw(big.to_string(), "application/json").await.unwrap()).await;
    assert_eq!(status, 413);
    assert!(body["detail"].as_str().unwrap().contains("65536"), "{body}");

    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({ "url": "https://x.example" }), "headline", "required"),
        (json!({ "headline": 5, "url": "https://x.example" }), "headline", "invalid type"),
        (json!({ "headline": "", "url": "https://x.example" }), "headline", "empty"),
        (json!({ "headline": "Ğ".repeat(201), "url": "https://x.example" }), "headline", "at most 200"),
        (json!({ "headline": "a", "url": "javascript:alert(1)" }), "url", "http"),
        (json!({ "headline": "a", "url": "not a url" }), "url", "not a valid URL"),
        (
            json!({ "headline": "a", "url": "https://x.example", "image": "http://x.example/a.jpg" }),
            "image",
            "https",
        ),
        (
            json!({ "headline": "a", "url": "https://x.example", "summary": "ü".repeat(501) }),
            "summary",
            "at most 500",
        ),
        (json!({ "headline": "a", "url": "https://x.example", "topics": ["Gündem"] }), "topics[0]", "slug"),
        (
            json!({ "headline": "a", "url": "https://x.example", "topics": (0..21).map(|i| format!("t{i}")).collect::<Vec<_>>() }),
            "topics",
            "at most 20",
        ),
        (json!({ "headline": "a", "url": "https://x.example", "topics": "spor" }), "topics", "invalid type"),
        (json!({ "headline": "a", "url": "https://x.example", "ttl_seconds": 5 }), "ttl_seconds", "between"),
        (json!({ "headline": "a", "url": "https://x.example", "urgency": "urgent" }), "urgency", "very-low"),
        (
            json!({ "headline": "a", "url": "https://x.example", "send_at": "tomorrow" }),
            "send_at",
            "RFC 3339",
        ),
        (
            json!({ "headline": "a", "url": "https://x.example", "send_at": "2001-01-01T00:00:00Z" }),
            "send_at",
            "past",
        ),
        (json!({ "headline": "a", "url": "https://x.example", "colour": "red" }), "colour", "unknown field"),
        (json!(["not", "an", "object"]), "body", "JSON object"),
    ];
    for (body, field, words) in cases {
        let r = app.post_alert(body.clone()).await;
        let (status, problem) = problem(r).await;
        assert_eq!(status, 422, "{body} → {problem}");
        assert_eq!(problem["field"], field, "{body} → {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(words),
            "{body}: expected `{words}` in {problem}"
        );
    }

    // Unknown and malformed ids.
    let (status, _) = problem(
        app.http
            .get(app.url("/api/v1/alerts/01a21e93-0238-74e3-bb0a-bf9f99ed6f40"))
            .bearer_auth(&app.token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) =
        problem(app.http.get(app.url("/api/v1/alerts/nope")).bearer_auth(&app.token).send().await.unwrap())
            .await;
    assert_eq!(status, 404);
    // Bad query parameters.
    let (status, body) = problem(
        app.http.get(app.url("/api/v1/alerts?limit=1000")).bearer_auth(&app.token).send().await.unwrap(),
    )
    .await;
    assert_eq!((status, body["field"].as_str()), (422, Some("limit")));
    // Unknown routes and methods are problems too.
    let (status, _) = problem(app.http.get(app.url("/nothing-here")).send().await.unwrap()).await;
    assert_eq!(status, 404);
    let (status, _) =
        problem(app.http.delete(app.url("/api/v1/alerts")).bearer_auth(&app.token).send().await.unwrap())
            .await;
    assert_eq!(status, 405);

    // Nothing was stored by any of it.
    let n: i64 = sqlx::query_scalar("select count(*) from alerts").fetch_one(&app.pool).await.unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn turkish_text_round_trips_byte_exact() {
    let app = TestApp::spawn().await;
    let (headline, summary) = sample_article();
    let label = "SON DAKİKA";
    let extra = "İı Şş Ğğ Üü Öö Çç — “tırnak” ’";
    let headline = format!("{headline} {extra}");
    let mut ticker = app.ticker("").await;
    ticker.expect("hello").await;

    let r = app
        .post_alert(json!({
            "headline": headline, "summary": summary, "label": label,
            "url": "https://www.burdurweb.com/haber/putin-kuzey-kore-ziyareti-görüşme",
            "topics": ["gundem"], "article_id": "burdur-ğüşiöç-42",
        }))
        .await;
    assert_eq!(r.status(), 201);
    let bytes = r.bytes().await.unwrap();
    let created: Value = serde_json::from_slice(&bytes).unwrap();
    for (field, want) in [("headline", &headline), ("summary", &summary), ("label", &label.to_string())] {
        assert_eq!(created[field].as_str().unwrap().as_bytes(), want.as_bytes(), "{field} in the answer");
    }
    // URLs come back in their serialised (WHATWG) form: what browsers send and link to.
    assert_eq!(
        created["url"],
        "https://www.burdurweb.com/haber/putin-kuzey-kore-ziyareti-g%C3%B6r%C3%BC%C5%9Fme"
    );
    assert_eq!(created["article_id"], "burdur-ğüşiöç-42");

    let stored: (String, String) =
        sqlx::query_as("select headline, summary from alerts").fetch_one(&app.pool).await.unwrap();
    assert_eq!(stored.0.as_bytes(), headline.as_bytes());
    assert_eq!(stored.1.as_bytes(), summary.as_bytes());

    let frame = ticker.expect("alert").await;
    assert_eq!(frame["headline"].as_str().unwrap().as_bytes(), headline.as_bytes());
    assert_eq!(frame["summary"].as_str().unwrap().as_bytes(), summary.as_bytes());
    assert_eq!(frame["label"], label);
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer() {
    let app = TestApp::spawn().await;
    let send = |body: Value, key: &'static str| {
        app.http
            .post(app.url("/api/v1/alerts"))
            .bearer_auth(&app.token)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let first = send(valid_alert(), "key-1").await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = send(valid_alert(), "key-1").await.unwrap();
    assert_eq!(again.status(), 201, "the original status is replayed");
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["seq"], first["seq"]);

    let other = send(json!({ "headline": "başka", "url": "https://x.example/2" }), "key-1").await.unwrap();
    let (status, body) = problem(other).await;
    assert_eq!((status, body["field"].as_str()), (422, Some("Idempotency-Key")));

    let n: i64 = sqlx::query_scalar("select count(*) from alerts").fetch_one(&app.pool).await.unwrap();
    assert_eq!(n, 1);
    let events: i64 =
        sqlx::query_scalar("select count(*) from stream_events").fetch_one(&app.pool).await.unwrap();
    assert_eq!(events, 1, "tickers were alerted once");
}

#[tokio::test]
async fn flagging_a_live_article_again_returns_its_alert() {
    let app = TestApp::spawn().await;
    let body = json!({ "headline": "Son dakika", "url": "https://x.example/a", "article_id": "cms-981" });
    let first = app.post_alert(body.clone()).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let second = app.post_alert(json!({ "headline": "Son dakika (düzeltme)", "url": "https://x.example/b", "article_id": "cms-981" })).await;
    assert_eq!(second.status(), 200);
    let second: Value = second.json().await.unwrap();
    assert_eq!(second["id"], first["id"]);

    // Without an article id the URL identifies the article.
    let a = app.post_alert(json!({ "headline": "x", "url": "https://x.example/c" })).await;
    let b = app.post_alert(json!({ "headline": "y", "url": "https://x.example/c" })).await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (201, 200));

    // After a retraction the article may be flagged anew.
    let id = first["id"].as_str().unwrap();
    let r = app.editor(reqwest::Method::POST, &format!("/api/v1/alerts/{id}/retract"), None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.post_alert(body).await.status(), 201);
}

#[tokio::test]
async fn two_editors_pressing_at_the_same_moment_make_one_alert() {
    let app = TestApp::spawn().await;
    let (_, second_token) =
        sondakika::auth::create(&app.pool, "Mehmet Öztürk", sondakika::auth::Role::Editor).await.unwrap();
    let tokens = [app.token.clone(), second_token];
    let presses = (0..12).map(|i| {
        let http = app.http.clone();
        let url = app.url("/api/v1/alerts");
        let token = tokens[i % 2].clone();
        async move {
            http.post(url)
                .bearer_auth(token)
                .header("idempotency-key", format!("press-{i}"))
                .json(&json!({ "headline": "Deprem", "url": "https://x.example/deprem", "article_id": "cms-1" }))
                .send()
                .await
                .unwrap()
        }
    });
    let answers = futures_util::future::join_all(presses).await;
    let mut statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort();
    assert_eq!(statuses, [vec![200; 11], vec![201]].concat());
    let mut ids = Vec::new();
    for r in answers {
        ids.push(r.json::<Value>().await.unwrap()["id"].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every press got the same alert");
    let n: i64 = sqlx::query_scalar("select count(*) from alerts").fetch_one(&app.pool).await.unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn corrections_and_retractions_reach_tickers_in_order() {
    let app = TestApp::spawn().await;
    let mut ticker = app.ticker("").await;
    ticker.expect("hello").await;
    let alert = app.flag("Burdur'da sel", &["burdur"]).await;
    let id = alert["id"].as_str().unwrap();
    let a = ticker.expect("alert").await;

    let r = app.editor(reqwest::Method::PATCH, &format!("/api/v1/alerts/{id}"), Some(json!({ "headline": "Burdur'da sel: 3 ilçede okullar tatil", "summary": "Valilik açıkladı." }))).await;
    assert_eq!(r.status(), 200);
    let u = ticker.expect("update").await;
    assert_eq!(u["id"], id);
    assert_eq!(u["headline"], "Burdur'da sel: 3 ilçede okullar tatil");
    assert_eq!(u["summary"], "Valilik açıkladı.");
    assert!(u["seq"].as_i64() > a["seq"].as_i64());

    // null removes the summary.
    let r = app
        .editor(reqwest::Method::PATCH, &format!("/api/v1/alerts/{id}"), Some(json!({ "summary": null })))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(ticker.expect("update").await["summary"], Value::Null);

    let r = app
        .editor(
            reqwest::Method::POST,
            &format!("/api/v1/alerts/{id}/retract"),
            Some(json!({ "reason": "Yanlış bilgi" })),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "retracted");
    let x = ticker.expect("retract").await;
    assert_eq!((x["id"].as_str(), x["reason"].as_str()), (Some(id), Some("Yanlış bilgi")));

    // A retracted alert can't be corrected; retracting again changes nothing.
    let r = app
        .editor(reqwest::Method::PATCH, &format!("/api/v1/alerts/{id}"), Some(json!({ "headline": "x" })))
        .await;
    assert_eq!(r.status(), 409);
    let r = app.editor(reqwest::Method::POST, &format!("/api/v1/alerts/{id}/retract"), None).await;
    assert_eq!(r.status(), 200);
    assert!(ticker.next_within(Duration::from_millis(300)).await.is_none(), "no second retract");

    // An empty correction is refused with a reason.
    let r = app.editor(reqwest::Method::PATCH, &format!("/api/v1/alerts/{id}"), Some(json!({}))).await;
    assert_eq!(r.status(), 422);
}

#[tokio::test]
async fn the_alert_list_is_newest_first_and_keyset_paged() {
    let app = TestApp::spawn().await;
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(app.flag(&format!("Haber {i}"), &[]).await["id"].clone());
    }
    let (_, page1) = app.get_json("/api/v1/alerts?limit=2").await;
    let ids: Vec<_> = page1["items"].as_array().unwrap().iter().map(|a| a["id"].clone()).collect();
    assert_eq!(ids, [made[4].clone(), made[3].clone()]);
    let (_, page2) = app.get_json(page1["next"].as_str().unwrap()).await;
    let (_, page3) = app.get_json(page2["next"].as_str().unwrap()).await;
    assert_eq!(page3["items"].as_array().unwrap().len(), 1);
    assert_eq!(page3["items"][0]["id"], made[0]);
    assert_eq!(page3["next"], Value::Null);
}

#[tokio::test]
async fn tickers_reached_is_counted_per_alert() {
    let app = TestApp::spawn().await;
    let mut tickers = Vec::new();
    for _ in 0..3 {
        let mut t = app.ticker("").await;
        t.expect("hello").await;
        tickers.push(t);
    }
    let alert = app.flag("Sayılıyor", &[]).await;
    for t in &mut tickers {
        t.expect("alert").await;
    }
    let path = format!("/api/v1/alerts/{}", alert["id"].as_str().unwrap());
    crate::helpers::eventually(Duration::from_secs(30), "tickers_reached = 3", || async {
        app.get_json(&path).await.1["delivery"]["tickers_reached"] == 3
    })
    .await;
}

/// A page deep in the alert list reads only its own rows, also with the plan PostgreSQL keeps
/// for a statement it has run a few times: a generic plan, made without the parameters' values.
/// An optional cursor (`$1 is null or id < $1`) cannot bound that plan's index scan, which
/// then reads, and throws away, every alert newer than the page.
#[tokio::test]
async fn a_deep_page_of_the_alert_list_reads_only_its_rows_with_a_generic_plan() {
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    let url = crate::helpers::new_database().await;
    // One connection: the statement the code prepares is the one explained below.
    let options =
        url.parse::<PgConnectOptions>().unwrap().options([("plan_cache_mode", "force_generic_plan")]);
    let pool = PgPoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
    sondakika::db::migrate(&pool).await.unwrap();
    sqlx::query(
        "insert into alerts (id, status, label, headline, url, dedupe_key, urgency, ttl_seconds)
         select gen_random_uuid(), 'live', 'SON DAKİKA', 'Haber ' || i, 'https://www.example.com.tr/' || i,
                'k' || i, 'high', 3600
         from generate_series(1, 5000) i",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("analyze alerts").execute(&pool).await.unwrap();
    let before: uuid::Uuid = sqlx::query_scalar("select id from alerts order by id limit 1 offset 100")
        .fetch_one(&pool)
        .await
        .unwrap();

    let page = sondakika::alerts::store::list(&pool, Some(before), None, 10).await.unwrap();
    let expected: Vec<uuid::Uuid> =
        sqlx::query_scalar("select id from alerts where id < $1 order by id desc limit 10")
            .bind(before)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(page.iter().map(|a| a.id).collect::<Vec<_>>(), expected);

    let name: String = sqlx::query_scalar(
        "select name from pg_prepared_statements where statement like '%from alerts a%order by a.id desc%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let plan = sqlx::query_scalar::<_, String>(&format!(
        "explain (analyze, costs off, timing off) execute {name}('{before}', null, 10)"
    ))
    .fetch_all(&pool)
    .await
    .unwrap()
    .join("\n");
    let removed: u64 = plan
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Rows Removed by Filter: "))
        .map(|n| n.parse::<u64>().unwrap())
        .sum();
    assert!(removed < 100, "the page read {removed} alerts it did not show:\n{plan}");
}
