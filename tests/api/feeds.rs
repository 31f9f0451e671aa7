//! Feeds in, against real feed servers started here: every format, the CMS shapes newsrooms
//! run, conditional requests, hostile servers, and two pollers on one database.

use std::time::Duration;

use chrono::{SubsecRound, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use sondakika::auth;

use crate::{
    helpers::{TestApp, eventually},
    origin::{Origin, Route},
};

pub(crate) const RSS: &str = "application/rss+xml; charset=utf-8";

/// A server that may fetch from this machine (the tests' feed servers), polling fast.
pub(crate) async fn app() -> (TestApp, String) {
    let app = TestApp::spawn_with(|s| {
        s.outbound_private_hosts = vec!["127.0.0.1".into(), "localhost".into()];
        s.feed_min_interval_secs = 1;
        s.outbound_timeout_secs = 3;
    })
    .await;
    let (_, admin) = auth::create(&app.pool, "Yönetici", auth::Role::Admin).await.unwrap();
    (app, admin)
}

pub(crate) async fn admin_call(
    app: &TestApp,
    admin: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app.http.request(method, app.url(path)).bearer_auth(admin);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn register(app: &TestApp, admin: &str, body: Value) -> Value {
    let (status, feed) = admin_call(app, admin, Method::POST, "/api/v1/feeds", Some(body)).await;
    assert_eq!(status, 201, "{feed}");
    feed
}

pub(crate) async fn feed(app: &TestApp, admin: &str, id: &str) -> Value {
    let (status, feed) = admin_call(app, admin, Method::GET, &format!("/api/v1/feeds/{id}"), None).await;
    assert_eq!(status, 200, "{feed}");
    feed
}

/// The feed once it has been polled at least once. (Not "once more": a feed that keeps failing
/// is polled ever more rarely, 2, 4, 8, 16 s apart, so waiting for its next poll can outlast any
/// deadline on a slow machine.)
pub(crate) async fn first_poll(app: &TestApp, admin: &str, id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let f = feed(app, admin, id).await;
        if !f["last_polled_at"].is_null() {
            return f;
        }
        assert!(std::time::Instant::now() < deadline, "feed {id} was not polled within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The feed once `n` polls that fetched `path` from the origin after this call have been
/// recorded. A poll that was already under way when the test changed the document fetched the
/// old one, so it does not count: a poll counts from its request's arrival at the origin, and is
/// recorded when the feed's `last_polled_at` passes that moment (one process polls a feed at a
/// time, so the next recorded poll is that one).
pub(crate) async fn fresh_polls(
    app: &TestApp,
    admin: &str,
    origin: &Origin,
    path: &str,
    id: &str,
    n: usize,
) -> Value {
    let since = Utc::now();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(&fetched) = origin.hit_times(path, since).get(n - 1) {
            let f = feed(app, admin, id).await;
            let polled: Option<chrono::DateTime<Utc>> =
                f["last_polled_at"].as_str().map(|t| t.parse().unwrap());
            // The database keeps microseconds.
            if polled.is_some_and(|p| p >= fetched.trunc_subsecs(6)) {
                return f;
            }
        }
        assert!(std::time::Instant::now() < deadline, "feed {id} was not polled {n} more times within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Drafts, once there are `n`.
async fn drafts(app: &TestApp, n: usize) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, d) = app.get_json("/api/v1/feeds/drafts").await;
        if d["items"].as_array().is_some_and(|d| d.len() == n) {
            return d;
        }
        assert!(std::time::Instant::now() < deadline, "no {n} drafts within 20 s: {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn rss(items: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/" xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel><title>Burdur Haber</title><link>https://www.example.com.tr/</link><description>Son dakika</description>
{items}
</channel></rss>"#
    )
}

pub(crate) fn rss_item(
    guid: &str,
    title: &str,
    description: &str,
    published: chrono::DateTime<Utc>,
) -> String {
    format!(
        "<item><title>{title}</title><link>https://www.example.com.tr/haber/{}</link>\
         <guid isPermaLink=\"false\">{guid}</guid><description>{description}</description>\
         <pubDate>{}</pubDate></item>",
        guid.replace(|c: char| !c.is_ascii_alphanumeric(), "-"),
        published.to_rfc2822()
    )
}

pub(crate) async fn alerts_for(app: &TestApp, article_id: &str) -> i64 {
    sqlx::query_scalar("select count(*) from alerts where article_id = $1")
        .bind(article_id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_auto_feed_flags_new_rss_items_with_turkish_text_exact_and_only_once() {
    let (app, admin) = app().await;
    let origin = Origin::start().await;
    let old = Utc::now() - chrono::Duration::days(2);
    // What the feed holds when it is registered never fires, dated or not.
    let before = format!(
        "{}<item><title>Tarihsiz eski haber</title><link>https://www.example.com.tr/haber/eski</link></item>",
        rss_item("old-1", "Dünkü haber", "eski", old)
    );
    origin.set("/rss", Route::doc(RSS, rss(&before)));
    let f = register(
        &app,
        &admin,
        json!({"url": origin.url("/rss"), "mode": "auto", "interval_secs": 1, "topics": ["burdur"]}),
    )
    .await;
    let id = f["id"].as_str().unwrap();
    let polled = first_poll(&app, &admin, id).await;
    assert_eq!(polled["last_error"], Value::Null, "{polled}");
    assert_eq!(polled["last_status"], 200);
    let mut ticker = app.ticker("?topics=burdur").await;
    ticker.expect("hello").await;

    let fresh = rss_item(
        "https://www.example.com.tr/?p=4242",
        "<![CDATA[SON DAKİKA: Burdur'da 4,2 büyüklüğünde deprem — “Panik yok”]]>",
        "<![CDATA[<p>AFAD&#8217;ın ilk verilerine göre <strong>Gölhisar</strong> merkezli deprem &amp; artçılar; \
         <a href=\"/x\">ayrıntılar</a>.</p><script>alert(1)</script>]]>",
        Utc::now(),
    );
    origin.set("/rss", Route::doc(RSS, rss(&format!("{fresh}{before}"))));
    let alert = ticker.expect("alert").await;
    assert_eq!(alert["headline"], "SON DAKİKA: Burdur'da 4,2 büyüklüğünde deprem — “Panik yok”");
    assert_eq!(
        alert["summary"],
        "AFAD’ın ilk verilerine göre Gölhisar merkezli deprem & artçılar; ayrıntılar."
    );
    assert_eq!(alert["url"], "https://www.example.com.tr/haber/https---www-example-com-tr--p-4242");
    assert_eq!(alert["label"], "SON DAKİKA");

    // Several more polls of the same document: still one alert, and nothing for the old items.
    fresh_polls(&app, &admin, &origin, "/rss", id, 3).await;
    assert_eq!(alerts_for(&app, "https://www.example.com.tr/?p=4242").await, 1);
    let total: i64 = sqlx::query_scalar("select count(*) from alerts").fetch_one(&app.pool).await.unwrap();
    assert_eq!(total, 1, "old and undated items never fire");
    let detail = feed(&app, &admin, id).await;
    let notes: Vec<&str> =
        detail["recent_items"].as_array().unwrap().iter().filter_map(|i| i["note"].as_str()).collect();
    assert_eq!(notes.iter().filter(|n| n.contains("in the feed at its first poll")).count(), 2, "{notes:?}");
    assert!(detail["last_success_at"].is_string());
}

/// The feed once a poll of it has succeeded.
async fn first_success(app: &TestApp, admin: &str, id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let f = feed(app, admin, id).await;
        if f["last_success_at"].is_string() {
            return f;
        }
        assert!(std::time::Instant::now() < deadline, "feed {id} was not read within 60 s: {f}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn note_of(app: &TestApp, article_id: &str) -> Option<String> {
    sqlx::query_scalar("select note from feed_items where article_id = $1")
        .bind(article_id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// What is new is decided by what the feed held before, never by the feed's clock: a CMS that
/// labels Turkish local time as GMT dates its items three hours ahead, and an item dated after
/// the registration was still there before it.
#[tokio::test]
async fn what_a_feed_holds_at_its_first_successful_poll_never_fires_whatever_its_date() {
    let (app, admin) = app().await;
    let origin = Origin::start().await;
    // The first tries fail: the baseline is the first poll that reads the feed.
    origin.set("/rss", Route::Status(503));
    let f =
        register(&app, &admin, json!({"url": origin.url("/rss"), "mode": "auto", "interval_secs": 1})).await;
    let id = f["id"].as_str().unwrap();
    assert_eq!(f["baseline_at"], Value::Null);
    let failed = first_poll(&app, &admin, id).await;
    assert_eq!(failed["baseline_at"], Value::Null, "a failed poll takes no baseline: {failed}");
    let ahead = Utc::now() + chrono::Duration::hours(3);
    origin.set("/rss", Route::doc(RSS, rss(&rss_item("tr-1", "Saati ileri haber", "x", ahead))));
    // Past the backoff of the failures.
    admin_call(&app, &admin, Method::POST, &format!("/api/v1/feeds/{id}/poll"), None).await;
    first_success(&app, &admin, id).await;

    // The item is edited in the CMS (a later date, a new title) and a new item appears: only the
    // new one fires. An item is its guid, not its date.
    let moved = rss_item("tr-1", "Saati ileri haber (güncellendi)", "x", ahead + chrono::Duration::hours(1));
    let fresh = rss_item("tr-2", "Yeni haber", "x", Utc::now() + chrono::Duration::hours(3));
    origin.set("/rss", Route::doc(RSS, rss(&format!("{fresh}{moved}"))));
    eventually(Duration::from_secs(30), "the new item alerted", || async {
        alerts_for(&app, "tr-2").await == 1
    })
    .await;
    let moved_again = rss_item("tr-2", "Yeni haber", "x", Utc::now() + chrono::Duration::hours(5));
    origin.set("/rss", Route::doc(RSS, rss(&format!("{moved_again}{moved}"))));
    fresh_polls(&app, &admin, &origin, "/rss", id, 2).await;
    assert_eq!(alerts_for(&app, "tr-1").await, 0, "the baseline's item never fires, whatever its date");
    assert_eq!(alerts_for(&app, "tr-2").await, 1, "a fired item whose date moves does not fire again");
    assert!(note_of(&app, "tr-1").await.unwrap().contains("in the feed at its first poll"));
    assert!(feed(&app, &admin, id).await["baseline_at"].is_string());
}

/// A feed given a new URL, or enabled again after a pause, starts from what it holds then: the
/// new address's items, and what appeared while it was paused, never fire; what appears after
/// does.
#[tokio::test]
async fn a_feed_re_enabled_or_given_a_new_url_takes_a_new_baseline() {
    let (app, admin) = app().await;
    let origin = Origin::start().await;
    origin.set("/a", Route::doc(RSS, rss("")));
    let f =
        register(&app, &admin, json!({"url": origin.url("/a"), "mode": "auto", "interval_secs": 1})).await;
    let id = f["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/feeds/{id}");
    first_success(&app, &admin, &id).await;
    let patch = |body: Value| admin_call(&app, &admin, Method::PATCH, &path, Some(body));

    let (status, paused) = patch(json!({"enabled": false})).await;
    assert_eq!(status, 200, "{paused}");
    // No poll is left in flight that read the feed before the pause.
    eventually(Duration::from_secs(30), "no poll in flight", || async {
        sqlx::query_scalar::<_, bool>("select lease_until is null from feeds where id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap()
    })
    .await;
    origin.set("/a", Route::doc(RSS, rss(&rss_item("pause-1", "Duraklatılmışken", "x", Utc::now()))));
    let (_, resumed) = patch(json!({"enabled": true})).await;
    assert_eq!(resumed["baseline_at"], Value::Null, "{resumed}");
    fresh_polls(&app, &admin, &origin, "/a", &id, 1).await;
    origin.set(
        "/a",
        Route::doc(
            RSS,
            rss(&format!(
                "{}{}",
                rss_item("after-1", "Açıldıktan sonra", "x", Utc::now()),
                rss_item("pause-1", "Duraklatılmışken", "x", Utc::now())
            )),
        ),
    );
    eventually(Duration::from_secs(30), "the item after the pause alerted", || async {
        alerts_for(&app, "after-1").await == 1
    })
    .await;
    assert_eq!(alerts_for(&app, "pause-1").await, 0, "what appeared while it was paused never fires");

    origin.set("/b", Route::doc(RSS, rss(&rss_item("b-1", "Yeni adreste eski", "x", Utc::now()))));
    let (status, moved) = patch(json!({"url": origin.url("/b")})).await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["baseline_at"], Value::Null, "{moved}");
    fresh_polls(&app, &admin, &origin, "/b", &id, 1).await;
    origin.set(
        "/b",
        Route::doc(
            RSS,
            rss(&format!(
                "{}{}",
                rss_item("b-2", "Yeni adreste yeni", "x", Utc::now()),
                rss_item("b-1", "Yeni adreste eski", "x", Utc::now())
            )),
        ),
    );
    eventually(Duration::from_secs(30), "the new address's new item alerted", || async {
        alerts_for(&app, "b-2").await == 1
    })
    .await;
    assert_eq!(alerts_for(&app, "b-1").await, 0, "what the new address held never fires");
    assert_eq!(alerts_for(&app, "pause-1").await, 0);
    assert!(feed(&app, &admin, &id).await["baseline_at"].is_string());
}

#[tokio::test]
async fn a_poll_in_flight_across_a_pause_never_takes_the_new_baseline() {
    let (app, admin) = app().await;
    let origin = Origin::start().await;
    origin.set("/a", Route::doc(RSS, rss("")));
    let f =
        register(&app, &admin, json!({"url": origin.url("/a"), "mode": "auto", "interval_secs": 1})).await;
    let id = f["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/feeds/{id}");
    first_success(&app, &admin, &id).await;
    // The next poll reads a document as it was before the pause, and answers only after the feed
    // was paused and re-enabled.
    let asked = Utc::now();
    origin.set(
        "/a",
        Route::Late {
            after: Duration::from_secs(4),
            content_type: RSS,
            body: rss(&rss_item("before-1", "Duraklatmadan önce", "x", Utc::now())).into(),
        },
    );
    eventually(Duration::from_secs(30), "a poll in flight", || async {
        !origin.hit_times("/a", asked).is_empty()
    })
    .await;
    let patch = |body: Value| admin_call(&app, &admin, Method::PATCH, &path, Some(body));
    let (status, _) = patch(json!({"enabled": false})).await;
    assert_eq!(status, 200);
    // Re-enabled with a long interval: no other poll comes before the one in flight has finished
    // and been looked at.
    let (_, resumed) = patch(json!({"enabled": true, "interval_secs": 600})).await;
    assert_eq!(resumed["baseline_at"], Value::Null, "{resumed}");
    origin.set("/a", Route::doc(RSS, rss("")));
    eventually(Duration::from_secs(30), "the poll in flight finished", || async {
        sqlx::query_scalar::<_, bool>(
            "select lease_until is null and coalesce(last_polled_at > $2, false) from feeds where id = $1::uuid",
        )
        .bind(&id)
        .bind(asked)
        .fetch_one(&app.pool)
        .await
        .unwrap()
    })
    .await;
    assert_eq!(origin.hit_times("/a", asked).len(), 1, "only the poll in flight");
    // What it read may be older than the pause: the baseline waits for the next poll.
    assert_eq!(
        feed(&app, &admin, &id).await["baseline_at"],
        Value::Null,
        "the poll that read the document before the pause took the new baseline"
    );
    let (status, _) = patch(json!({"interval_secs": 1})).await;
    assert_eq!(status, 200);
    eventually(Duration::from_secs(30), "the next poll took the baseline", || async {
        feed(&app, &admin, &id).await["baseline_at"].is_string()
    })
    .await;
}

#[tokio::test]
async fn atom_with_relative_links_and_json_feed_items_become_drafts_sent_with_one_request() {
    let (app, admin) = app().await;
    let origin = Origin::start().await;
    origin.set("/atom.xml", Route::doc("application/atom+xml", atom(&[])));
    origin.set("/feed.json", Route::doc("application/feed+json", json_feed(&[])));
    let a =
        register(&app, &admin, json!({"url": origin.url("/atom.xml"), "interval_secs": 1, "name": "Atom"}))
            .await;
    let j = register(&app, &admin, json!({"url": origin.url("/feed.json"), "interval_secs": 1})).await;
    assert_eq!(a["mode"], "suggest", "suggest is the default");
    first_poll(&app, &admin, a["id"].as_str().unwrap()).await;
    first_poll(&app, &admin, j["id"].as_str().unwrap()).await;

    let now = Utc::now().to_rfc3339();
    origin.set(
        "/atom.xml",
        Route::doc("application/atom+xml", atom(&[("urn:uuid:7", "Şanlıurfa'da sel", &now)])),
    );
    origin.set(
        "/feed.json",
        Route::doc("application/feed+json", json_feed(&[("j-1", "Iğdır'da kar yağışı", &now)])),
    );
    let drafts = drafts(&app, 2).await;
    let items = drafts["items"].as_array().unwrap();
    let atom_draft = items.iter().find(|d| d["article_id"] == "urn:uuid:7").expect("the Atom draft");
    assert_eq!(atom_draft["headline"], "Şanlıurfa'da sel");
    assert_eq!(atom_draft["url"], origin.url("/haber/sel-7"), "a relative link resolves against the feed");
    assert_eq!(atom_draft["feed_name"], "Atom");
    let json_draft = items.iter().find(|d| d["article_id"] == "j-1").expect("the JSON Feed draft");
    assert_eq!(json_draft["summary"], "Yollar kapandı, okullar tatil.");
    assert_eq!(json_draft["image"], "https://cdn.example.com.tr/kar.jpg");

    let path = format!("/api/v1/feeds/drafts/{}/send", atom_draft["id"].as_str().unwrap());
    let r = app.editor(Method::POST, &path, None).await;
    assert_eq!(r.status(), 201);
    let alert: Value = r.json().await.unwrap();
    assert_eq!(alert["headline"], "Şanlıurfa'da sel");
    assert_eq!(alert["article_id"], "urn:uuid:7");
    assert_eq!(alert["created_by"], "Ayşe Yılmaz", "the editor who sent it");
    let again = app.editor(Method::POST, &path, None).await;
    assert_eq!(again.status(), 200, "sending twice returns the same alert");
    assert_eq!(again.json::<Value>().await.unwrap()["id"], alert["id"]);
    let r = app
        .editor(
            Method::POST,
            &format!("/api/v1/feeds/drafts/{}/dismiss", json_draft["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(r.status(), 204);
    let (_, left) = app.get_json("/api/v1/feeds/drafts").await;
    assert_eq!(left["items"].as_array().unwrap().len(), 0, "{left}");
    assert_eq!(alerts_for(&app, "j-1").await, 0, "a dismissed draft never fires");
}

fn atom(entries: &[(&str, &str, &str)]) -> String {
    let entries: String = entries
        .iter()
        .map(|(id, title, at)| {
            format!(
                r#"<entry><title type="html">&lt;em&gt;{title}&lt;/em&gt;</title><id>{id}</id>
<link rel="alternate" href="haber/sel-7"/><updated>{at}</updated><published>{at}</published>
<summary type="html">&lt;p&gt;Özet&lt;/p&gt;</summary></entry>"#
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom" xml:base="/">
<title>Atom haber</title><id>urn:feed</id><updated>2026-11-29T09:00:00Z</updated>{entries}</feed>"#
    )
}

pub(crate) fn json_feed(items: &[(&str, &str, &str)]) -> String {
    let items: Vec<Value> = items
        .iter()
        .map(|(id, title, at)| {
            json!({"id": id, "url": format!("https://www.example.com.tr/haber/{id}"), "title": title,
                   "content_html": "<p>Yollar kapandı, okullar tatil.</p>",
                   "image": "https://cdn.example.com.tr/kar.jpg", "date_published": at})
        })
        .collect();
    json!({"version": "https://jsonfeed.org/version/1.1", "title": "JSON haber", "items": items}).to_string()
}

/// What WordPress serves at /category/son-dakika/feed/ (trimmed of nothing that matters).
fn wordpress(items: &[(u32, &str, &[&str])]) -> String {
    let now = Utc::now().to_rfc2822();
    let items: String = items
        .iter()
        .map(|(p, title, cats)| {
            let cats: String = cats.iter().map(|c| format!("<category><![CDATA[{c}]]></category>")).collect();
            format!(
                r#"<item>
		<title>{title}</title>
		<link>https://www.example.com.tr/{p}/haber-basligi/</link>
		<dc:creator><![CDATA[Ayşe Yılmaz]]></dc:creator>
		<pubDate>{now}</pubDate>
		{cats}
		<guid isPermaLink="false">https://www.example.com.tr/?p={p}</guid>
		<description><![CDATA[Kısa özet&#8230; <a href="https://www.example.com.tr/{p}/">Devamını oku</a>]]></description>
		<content:encoded><![CDATA[<p>Tam metin</p>]]></content:encoded>
		<wfw:commentRss>https://www.example.com.tr/{p}/feed/</wfw:commentRss>
	</item>"#
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"
	xmlns:content="http://purl.org/rss/1.0/modules/content/"
	xmlns:wfw="http://wellformedweb.org/CommentAPI/"
	xmlns:dc="http://purl.org/dc/elements/1.1/"
	xmlns:atom="http://www.w3.org/2005/Atom"
	xmlns:sy="http://purl.org/rss/1.0/modules/syndication/"
	xmlns:slash="http://purl.org/rss/1.0/modules/slash/">
<channel>
	<title>Son Dakika arşivleri - Burdur Haber</title>
	<atom:link href="https://www.example.com.tr/category/son-dakika/feed/" rel="self" type="application/rss+xml" />
	<link>https://www.example.com.tr/category/son-dakika/</link>
	<description>Burdur'un haber sitesi</description>
	<lastBuildDate>{now}</lastBuildDate>
	<language>tr</language>
	<sy:updatePeriod>hourly</sy:updatePeriod>
	<generator>https://wordpress.org/?v=6.7.1</generator>
	{items}
</channel></rss>"#
    )
}

#[tokio::test]
async fn a_wordpress_category_feed_with_filters_fires_only_matching_items() {
    let (app, admin) = app().await;
    let origin = Origin::start().await;
    let path = "/category/son-dakika/feed/";
    origin.set(path, Route::doc(RSS, wordpress(&[])));
    let f = register(
        &app,
        &admin,
        json!({"url": origin.url(path), "mode": "auto", "interval_secs": 1,
               "title_prefix": "SON DAKİKA", "category": "son dakika"}),
    )
    .await;
    let id = f["id"].as_str().unwrap();
    assert_eq!(f["title_prefix"], "SON DAKİKA");
    first_poll(&app, &admin, id).await;
    origin.set(
        path,
        Route::doc(
            RSS,
            wordpress(&[
                (101, "SON DAKİKA: Göl taştı", &["Son Dakika", "Gündem"]),
                (102, "Son dakika: Yol kapandı", &["SON DAKİKA"]),
                (103, "SON DAKİKA: Kategorisiz", &["Spor"]),
                (104, "Hava durumu", &["Son Dakika"]),
            ]),
        ),
    );
    let detail = fresh_polls(&app, &admin, &origin, path, id, 1).await;
    assert_eq!(detail["last_new_items"], 2, "{detail}");
    assert_eq!(alerts_for(&app, "https://www.example.com.tr/?p=101").await, 1);
    assert_eq!(alerts_for(&app, "https://www.example.com.tr/?p=102").await, 1);
    assert_eq!(alerts_for(&app, "https://www.example.com.tr/?p=103").await, 0);
    assert_eq!(alerts_for(&app, "https://www.example.com.tr/?p=104").await, 0);
    let (_, alert) = app.get_json("/api/v1/alerts?limit=1").await;
    assert_eq!(alert["items"][0]["summary"], "Kısa özet… Devamını oku");
    assert_eq!(alert["items"][0]["url"], "https://www.example.com.tr/102/haber-basligi/");
    let notes: Vec<String> = detail["recent_items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["note"].as_str().map(String::from))
        .collect();
    assert!(notes.iter().any(|n| n.contains("not in the category")), "{notes:?}");
    assert!(notes.iter().any(|n| n.contains("does not start with")), "{notes:?}");
}

#[tokio::test]
async fn conditional_requests_are_answered_304_and_a_changed_feed_is_read_again() {
    let (app, admin) = app().await;
    let origin = Origin::start().await;
    origin.set("/rss", Route::with_etag(RSS, rss(""), "\"v1\""));
    let f =
        register(&app, &admin, json!({"url": origin.url("/rss"), "mode": "auto", "interval_secs": 1})).await;
    let id = f["id"].as_str().unwrap();
    first_poll(&app, &admin, id).await;
    let detail = fresh_polls(&app, &admin, &origin, "/rss", id, 2).await;
    assert_eq!(detail["last_status"], 304, "{detail}");
    assert!(detail["last_error"].is_null());
    let hits = origin.hits("/rss");
    assert!(hits[0].get("if-none-match").is_none(), "the first poll is unconditional");
    let last = hits.last().unwrap();
    assert_eq!(last.get("if-none-match").unwrap(), "\"v1\"");
    assert_eq!(last.get("if-modified-since").unwrap(), "Sun, 29 Nov 2026 09:00:00 GMT");

    origin.set("/rss", Route::with_etag(RSS, rss(&rss_item("c-1", "Yeni haber", "x", Utc::now())), "\"v2\""));
    eventually(Duration::from_secs(30), "the changed feed's item alerted", || async {
        alerts_for(&app, "c-1").await == 1
    })
    .await;
    let detail = fresh_polls(&app, &admin, &origin, "/rss", id, 2).await;
    assert_eq!(detail["last_status"], 304, "the new version is cached too");
    assert_eq!(alerts_for(&app, "c-1").await, 1);
}

#[tokio::test]
async fn malformed_huge_slow_and_redirected_feeds_each_fail_in_words_while_a_good_one_works() {
    let (app, admin) = app().await;
    let origin = Origin::start().await;
    origin.set("/broken", Route::doc(RSS, "<rss><channel><item><title>Yarım"));
    origin.set("/html", Route::doc("text/html", "<!doctype html><html><body>Bakımdayız</body></html>"));
    origin.set("/huge", Route::Huge { bytes: 50 << 20, content_length: false });
    origin.set("/slow", Route::Slow);
    origin.set("/inside", Route::Redirect("http://169.254.169.254/latest/meta-data/".into()));
    origin.set("/gone", Route::Status(404));
    origin.set("/good", Route::doc(RSS, rss("")));
    let mut ids = Vec::new();
    for path in ["/broken", "/html", "/huge", "/slow", "/inside", "/gone", "/good"] {
        let f = register(&app, &admin, json!({"url": origin.url(path), "mode": "auto", "interval_secs": 1}))
            .await;
        ids.push((path, f["id"].as_str().unwrap().to_string()));
    }
    for (path, id) in &ids {
        let f = first_poll(&app, &admin, id).await;
        let error = f["last_error"].as_str().unwrap_or("");
        let expected = match *path {
            "/broken" => "not an RSS, Atom or JSON feed",
            "/html" => "not an RSS, Atom or JSON feed",
            "/huge" => "larger than 5242880 bytes",
            "/slow" => "did not answer completely within 3 seconds",
            "/inside" => "private or local address",
            "/gone" => "answered 404 Not Found",
            _ => "",
        };
        if expected.is_empty() {
            assert!(f["last_error"].is_null(), "{path}: {f}");
            assert!(f["last_success_at"].is_string());
        } else {
            assert!(error.contains(expected), "{path}: `{error}` should say `{expected}`");
            assert!(f["failures"].as_i64().unwrap() >= 1, "{path}: {f}");
            let next: chrono::DateTime<Utc> = f["next_poll_at"].as_str().unwrap().parse().unwrap();
            let polled: chrono::DateTime<Utc> = f["last_polled_at"].as_str().unwrap().parse().unwrap();
            assert!(
                next - polled >= chrono::Duration::milliseconds(1900),
                "{path}: backoff doubles the interval"
            );
        }
    }
    // The good feed keeps working beside them.
    let (good_path, good) = ids.last().unwrap();
    assert_eq!(*good_path, "/good");
    origin.set("/good", Route::doc(RSS, rss(&rss_item("g-1", "Sağlam haber", "x", Utc::now()))));
    eventually(Duration::from_secs(30), "the good feed's item", || async {
        alerts_for(&app, "g-1").await == 1
    })
    .await;
    let f = feed(&app, &admin, good).await;
    assert!(f["last_error"].is_null());
}

#[tokio::test]
async fn two_pollers_on_one_database_alert_each_item_once() {
    let (a, admin) = app().await;
    let b = TestApp::spawn_on(&a.db_url, |s| {
        s.outbound_private_hosts = vec!["127.0.0.1".into()];
        s.feed_min_interval_secs = 1;
        s.outbound_timeout_secs = 3;
    })
    .await;
    let origin = Origin::start().await;
    let mut ids = Vec::new();
    for n in 0..6 {
        let path = format!("/f{n}");
        origin.set(&path, Route::doc(RSS, rss("")));
        let f =
            register(&a, &admin, json!({"url": origin.url(&path), "mode": "auto", "interval_secs": 1})).await;
        ids.push(f["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        first_poll(&a, &admin, id).await;
    }
    for n in 0..6 {
        let items: String = (0..5)
            .map(|i| rss_item(&format!("f{n}-i{i}"), &format!("Haber {n}/{i}"), "x", Utc::now()))
            .collect();
        origin.set(&format!("/f{n}"), Route::doc(RSS, rss(&items)));
    }
    eventually(Duration::from_secs(30), "30 alerts", || async {
        let n: i64 = sqlx::query_scalar("select count(*) from alerts").fetch_one(&a.pool).await.unwrap();
        n >= 30
    })
    .await;
    // A few more rounds of both pollers over the same documents.
    for (n, id) in ids.iter().enumerate() {
        fresh_polls(&a, &admin, &origin, &format!("/f{n}"), id, 2).await;
    }
    let per_article: Vec<(String, i64)> =
        sqlx::query_as("select article_id, count(*) from alerts group by article_id order by 1")
            .fetch_all(&a.pool)
            .await
            .unwrap();
    assert_eq!(per_article.len(), 30);
    assert!(per_article.iter().all(|(_, n)| *n == 1), "{per_article:?}");
    let hits: usize = (0..6).map(|n| origin.hits(&format!("/f{n}")).len()).sum();
    assert!(hits >= 6 * 4, "both pollers kept polling ({hits} requests)");
    drop(b);
}

#[tokio::test]
async fn feeds_are_for_admins_and_bad_fields_are_named() {
    let app = TestApp::spawn().await;
    let (_, admin) = auth::create(&app.pool, "Yönetici", auth::Role::Admin).await.unwrap();
    let r = app
        .editor(Method::POST, "/api/v1/feeds", Some(json!({"url": "https://www.example.com.tr/feed/"})))
        .await;
    assert_eq!(r.status(), 403);
    let r = app.editor(Method::GET, "/api/v1/feeds", None).await;
    assert_eq!(r.status(), 403);
    for (body, field, words) in [
        (json!({}), "url", "required"),
        (json!({"url": "http://127.0.0.1:9/feed"}), "url", "outbound_private_hosts"),
        (json!({"url": "ftp://www.example.com.tr/feed"}), "url", "http"),
        (
            json!({"url": "https://www.example.com.tr/feed/", "interval_secs": 5}),
            "interval_secs",
            "feed_min_interval_secs",
        ),
        (json!({"url": "https://www.example.com.tr/feed/", "mode": "sometimes"}), "mode", "suggest"),
        (json!({"url": "https://www.example.com.tr/feed/", "topics": ["Gündem"]}), "topics[0]", "slug"),
        (
            json!({"url": "https://www.example.com.tr/feed/", "title_prefix": " x"}),
            "title_prefix",
            "whitespace",
        ),
    ] {
        let (status, problem) =
            admin_call(&app, &admin, Method::POST, "/api/v1/feeds", Some(body.clone())).await;
        assert_eq!(status, 422, "{body}: {problem}");
        let err = problem["errors"].as_array().unwrap().iter().find(|e| e["field"] == field);
        let err = err.unwrap_or_else(|| panic!("{body}: no error for {field}: {problem}"));
        assert!(err["message"].as_str().unwrap().contains(words), "{body}: {err}");
    }
    let url = "https://www.example.com.tr/category/son-dakika/feed/";
    let f = register(&app, &admin, json!({"url": url, "topics": ["burdur"], "label": "SON DAKİKA"})).await;
    assert_eq!(f["interval_secs"], 120);
    assert_eq!(f["name"], "www.example.com.tr");
    let (status, problem) =
        admin_call(&app, &admin, Method::POST, "/api/v1/feeds", Some(json!({"url": url}))).await;
    assert_eq!(status, 422, "{problem}");
    let id = f["id"].as_str().unwrap();
    let (status, changed) = admin_call(
        &app,
        &admin,
        Method::PATCH,
        &format!("/api/v1/feeds/{id}"),
        Some(json!({"mode": "auto", "title_prefix": "SON DAKİKA", "enabled": false})),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!((changed["mode"].as_str(), changed["enabled"].as_bool()), (Some("auto"), Some(false)));
    let (_, cleared) = admin_call(
        &app,
        &admin,
        Method::PATCH,
        &format!("/api/v1/feeds/{id}"),
        Some(json!({"title_prefix": null})),
    )
    .await;
    assert!(cleared["title_prefix"].is_null(), "{cleared}");
    let (status, _) = admin_call(&app, &admin, Method::DELETE, &format!("/api/v1/feeds/{id}"), None).await;
    assert_eq!(status, 204);
    let (status, problem) = admin_call(&app, &admin, Method::GET, &format!("/api/v1/feeds/{id}"), None).await;
    assert_eq!(status, 404, "{problem}");
    assert_eq!(app.editor(Method::POST, "/api/v1/feeds/drafts/nope/send", None).await.status(), 404);
}

/// A feed's mode is read strictly: a stored value that is neither `suggest` nor `auto` (the
/// table's check forbids it; a hand-edited row) is an error, never taken for `suggest`.
#[tokio::test]
async fn a_stored_mode_that_is_neither_is_an_error_never_taken_for_suggest() {
    let app = TestApp::spawn().await;
    let (_, admin) = auth::create(&app.pool, "Yönetici", auth::Role::Admin).await.unwrap();
    let f =
        register(&app, &admin, json!({"url": "https://www.example.com.tr/feed/", "enabled": false})).await;
    let id = f["id"].as_str().unwrap();
    let (status, _) = admin_call(&app, &admin, Method::GET, &format!("/api/v1/feeds/{id}"), None).await;
    assert_eq!(status, 200);
    sqlx::query("alter table feeds drop constraint feeds_mode_check").execute(&app.pool).await.unwrap();
    sqlx::query("update feeds set mode = 'often' where id = $1::uuid")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    let (status, problem) = admin_call(&app, &admin, Method::GET, &format!("/api/v1/feeds/{id}"), None).await;
    assert_eq!(status, 500, "{problem}");
}

/// An editor's live drafts stream, read as Server-Sent Events.
struct DraftStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
    comments: usize,
}

impl DraftStream {
    async fn open(app: &TestApp, token: &str) -> Self {
        let response =
            app.http.get(app.url("/api/v1/feeds/drafts/stream")).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream; charset=utf-8");
        Self { response, buffer: Vec::new(), comments: 0 }
    }

    /// The next event's name and data (comment lines are counted, not returned); `None` once the
    /// server has ended the stream. Within 20 s: less than the 30 s after which a process reads
    /// the drafts again anyway, so a change that arrives has come by its notification.
    async fn next(&mut self) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let block = String::from_utf8(block).expect("events are UTF-8");
                let (mut event, mut data) = (None, String::new());
                for line in block.lines() {
                    if let Some(e) = line.strip_prefix("event: ") {
                        event = Some(e.to_string());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push_str(d);
                    } else if line.starts_with(':') {
                        self.comments += 1;
                    }
                }
                if let Some(event) = event {
                    return Some((event, serde_json::from_str(&data).expect("data is JSON")));
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("an event within 20 s")
                .expect("the stream reads");
            self.buffer.extend_from_slice(&chunk?);
        }
    }

    /// The next event, which must be a drafts list: its headlines.
    async fn drafts(&mut self) -> Vec<String> {
        let (event, data) = self.next().await.expect("a drafts event");
        assert_eq!(event, "drafts", "{data}");
        data["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["headline"].as_str().unwrap().to_string())
            .collect()
    }
}

/// The console's live drafts: a draft stored by one process's poller reaches an editor's stream
/// on another process at once, and so does its dismissal; the stream checks the token again and
/// ends once it is revoked; past the bound of streams a process serves, 503 in words.
#[tokio::test]
async fn the_drafts_stream_follows_every_process_and_ends_when_the_token_is_revoked() {
    let settings = |s: &mut sondakika::config::Settings| {
        s.outbound_private_hosts = vec!["127.0.0.1".into()];
        s.feed_min_interval_secs = 1;
        s.outbound_timeout_secs = 3;
        s.ping_interval_secs = 1;
    };
    let a = TestApp::spawn_with(settings).await;
    let b = TestApp::spawn_on(&a.db_url, settings).await;
    let (_, admin) = auth::create(&a.pool, "Yönetici", auth::Role::Admin).await.unwrap();
    let (editor_id, editor) = auth::create(&a.pool, "Gece editörü", auth::Role::Editor).await.unwrap();

    let anonymous = b.http.get(b.url("/api/v1/feeds/drafts/stream")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["content-type"], "application/problem+json");

    let mut stream = DraftStream::open(&b, &editor).await;
    assert_eq!(stream.drafts().await, Vec::<String>::new(), "the current list comes at once");

    // Process a polls the feed (it was registered there, which wakes a's poller).
    let origin = Origin::start().await;
    origin.set("/rss", Route::doc(RSS, rss("")));
    let f =
        register(&a, &admin, json!({"url": origin.url("/rss"), "interval_secs": 1, "name": "Isparta"})).await;
    let id = f["id"].as_str().unwrap();
    first_poll(&a, &admin, id).await;
    let headline = "SON DAKİKA: Eğirdir'de ışık gösterisi iptal — İlçe şaşkın";
    origin.set("/rss", Route::doc(RSS, rss(&rss_item("d-1", headline, "Ayrıntılar geliyor", Utc::now()))));
    assert_eq!(stream.drafts().await, vec![headline.to_string()], "Turkish text exact");

    let (_, list) = a.get_json("/api/v1/feeds/drafts").await;
    let draft = list["items"][0]["id"].as_str().unwrap().to_string();
    let r = a.editor(Method::POST, &format!("/api/v1/feeds/drafts/{draft}/dismiss"), None).await;
    assert_eq!(r.status(), 204);
    assert_eq!(stream.drafts().await, Vec::<String>::new(), "dismissed on a, gone on b");

    // Keep-alive comments flow in between, each after a fresh look at the token.
    assert!(auth::revoke(&a.pool, editor_id).await.unwrap());
    let (event, data) = stream.next().await.expect("an end event");
    assert_eq!(event, "end");
    assert!(data["reason"].as_str().unwrap().contains("revoked"), "{data}");
    assert!(stream.next().await.is_none(), "the stream ends after `end`");
    assert!(stream.comments >= 1, "keep-alive comments came in between");
    let refused = b.http.get(b.url("/api/v1/feeds/drafts/stream")).bearer_auth(&editor).send().await.unwrap();
    assert_eq!(refused.status(), 401);

    // The bound (feeds::live::MAX_STREAMS, 64 a process): the next is told why, and a freed slot
    // is reused.
    let mut open = Vec::new();
    for _ in 0..64 {
        open.push(DraftStream::open(&a, &a.token).await);
    }
    let full = a.http.get(a.url("/api/v1/feeds/drafts/stream")).bearer_auth(&a.token).send().await.unwrap();
    assert_eq!(full.status(), 503);
    assert!(full.headers().contains_key("retry-after"));
    let problem: Value = full.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("GET /api/v1/feeds/drafts"), "{problem}");
    drop(open.pop());
    eventually(Duration::from_secs(30), "a freed slot is reused", || async {
        a.http.get(a.url("/api/v1/feeds/drafts/stream")).bearer_auth(&a.token).send().await.unwrap().status()
            == 200
    })
    .await;
}
