//! Many `sondakika serve` processes on one database, as operators scale out: they coordinate
//! through PostgreSQL alone, share every kind of work without doing any of it twice, and when
//! one dies with SIGKILL the others finish its share. Also: how many connections to PostgreSQL
//! one process holds, against the budget the README states.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    time::Duration,
};

use serde_json::{Value, json};
use sondakika::auth::{self, Role};
use sqlx::PgPool;

use crate::{
    helpers::{ServerProcess, Ticker, eventually, new_database, test_client},
    origin::{Origin, Route},
    push::{PROCESS_PUSH_ENV, SUBJECT, bulk_subscribe_in, stored_vapid_key_in},
    push_double::{Behaviour, PushDouble},
};

const SUBSCRIBERS: u64 = 2000;
const BATCH: i64 = 100;
const LEASE_SECS: u64 = 3;

const EMPTY_RSS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Burdur Haber</title><link>https://www.example.com.tr/</link>
<description>Son dakika</description></channel></rss>"#;

/// The settings of every process: small ranges and short leases (so that a dead process's
/// share is taken over within seconds), the tests' loopback servers allowed, feeds polled
/// every second.
fn node_env() -> Vec<(&'static str, &'static str)> {
    [
        PROCESS_PUSH_ENV,
        &[
            ("SONDAKIKA_PUSH_LEASE_SECS", "3"),
            ("SONDAKIKA_PUSH_BATCH_SIZE", "100"),
            ("SONDAKIKA_PUSH_CONCURRENCY_PER_ORIGIN", "8"),
            ("SONDAKIKA_OUTBOUND_PRIVATE_HOSTS", "127.0.0.1"),
            ("SONDAKIKA_FEED_MIN_INTERVAL_SECS", "1"),
            ("SONDAKIKA_WEBHOOK_RETRY_FIRST_SECS", "1"),
        ],
    ]
    .concat()
}

/// POSTs `body` to `path` on `node` with `token`; asserts 201 and returns the JSON.
async fn create(http: &reqwest::Client, node: SocketAddr, token: &str, path: &str, body: Value) -> Value {
    let r = http.post(format!("http://{node}{path}")).bearer_auth(token).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201, "POST {path}: {}", r.text().await.unwrap());
    r.json().await.unwrap()
}

async fn flag(
    http: &reqwest::Client,
    node: SocketAddr,
    editor: &str,
    headline: &str,
    topics: &[&str],
) -> String {
    let body = json!({
        "headline": headline,
        "url": format!("https://www.example.com.tr/haber/{}", uuid::Uuid::new_v4()),
        "topics": topics,
    });
    create(http, node, editor, "/api/v1/alerts", body).await["id"].as_str().unwrap().to_string()
}

async fn job_state(pool: &PgPool, alert_id: &str) -> Option<String> {
    sqlx::query_scalar("select state from push_jobs where alert_id = $1::uuid and step = 0")
        .bind(alert_id)
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// Accepted pushes of one alert, per subscriber.
fn pushes_of(double: &PushDouble, alert_id: &str) -> HashMap<u64, usize> {
    let mut by = HashMap::new();
    for r in double.received() {
        if r.payload["notification"]["data"]["id"] == alert_id && r.answered < 300 {
            *by.entry(r.subscriber).or_default() += 1;
        }
    }
    by
}

/// Pushes this process's push service answered `sent` (from its `/metrics`).
async fn pushes_sent_by(http: &reqwest::Client, node: SocketAddr, admin: &str) -> f64 {
    let m = http
        .get(format!("http://{node}/metrics"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    m.lines()
        .filter(|l| l.starts_with("sondakika_push_attempts_total") && l.contains("result=\"sent\""))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// The `alert` frames a ticker got, until it has been quiet for a moment.
async fn alert_frames(t: &mut Ticker, want: usize) -> Vec<Value> {
    let mut frames = Vec::new();
    while frames.len() < want {
        let f = t.next().await;
        if f["type"] == "alert" {
            frames.push(f);
        }
    }
    // Nothing more: a repeat would come right behind.
    while let Some(f) = t.next_within(Duration::from_millis(500)).await {
        if f["type"] == "alert" {
            frames.push(f);
        }
    }
    frames
}

/// Three processes on one database. Tickers on each get every alert once and in order; one
/// fan-out is shared with no push sent twice; a feed is polled by one process at a time; a
/// webhook goes out once. Then one process is killed with SIGKILL in the middle of a fan-out:
/// the others finish its share, and only what it held may repeat.
#[tokio::test]
async fn three_processes_share_the_work_and_finish_what_a_killed_one_held() {
    let db = new_database().await;
    let double = PushDouble::start(SUBJECT).await;
    let origin = Origin::start().await;
    let env = node_env();
    let mut nodes = futures_util::future::join_all((0..3).map(|_| ServerProcess::start(&db, &env))).await;
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let pool = PgPool::connect(&db).await.unwrap();
    let (_, editor) = auth::create(&pool, "Editör", Role::Editor).await.unwrap();
    let (_, admin) = auth::create(&pool, "Yönetici", Role::Admin).await.unwrap();
    let http = test_client();
    double.set_vapid_key(&stored_vapid_key_in(&pool).await);
    bulk_subscribe_in(&pool, &double, 0..SUBSCRIBERS, &["deprem"], Behaviour::Slow(Duration::from_millis(5)))
        .await;

    // A feed registered on one process and a webhook endpoint on another: whichever process is
    // free does the work.
    let started = chrono::Utc::now();
    origin.set("/rss", Route::doc("application/rss+xml; charset=utf-8", EMPTY_RSS));
    origin.set("/hook", Route::Status(204));
    let feed = json!({ "url": origin.url("/rss"), "mode": "auto", "interval_secs": 1 });
    create(&http, addrs[1], &admin, "/api/v1/feeds", feed).await;
    let hook = json!({ "url": origin.url("/hook"), "event_types": ["alert.flagged"] });
    create(&http, addrs[2], &admin, "/api/v1/webhooks", hook).await;

    let mut tickers = Vec::new();
    for addr in &addrs {
        let mut t = Ticker::connect(&format!("ws://{addr}/ws")).await;
        t.expect("hello").await;
        tickers.push(t);
    }
    // One alert flagged on each process; the first goes to every subscriber.
    let mut ids = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let topics: &[&str] = if i == 0 { &["deprem"] } else { &["ekonomi"] };
        ids.push(flag(&http, *addr, &editor, &format!("Ortak iş {i}: İzmir’de deprem"), topics).await);
    }
    for t in &mut tickers {
        let got: Vec<String> = alert_frames(t, ids.len()).await.iter().map(|f| f["id"].to_string()).collect();
        let want: Vec<String> = ids.iter().map(|id| json!(id).to_string()).collect();
        assert_eq!(got, want, "every ticker gets every alert, once, in order");
    }

    // The fan-out is shared: everyone reached, nobody twice, every process took part.
    eventually(Duration::from_secs(90), "the first alert's fan-out is done", || async {
        job_state(&pool, &ids[0]).await.as_deref() == Some("done")
    })
    .await;
    assert_eq!(double.violations(), Vec::<String>::new());
    let counts = pushes_of(&double, &ids[0]);
    assert_eq!(counts.len() as u64, SUBSCRIBERS, "every subscriber reached");
    assert!(counts.values().all(|n| *n == 1), "no push sent twice");
    for addr in &addrs {
        assert!(pushes_sent_by(&http, *addr, &admin).await > 0.0, "process {addr} took part in the fan-out");
    }
    // The ticker counts of the three processes add up in the figures.
    let path = format!("http://{}/api/v1/alerts/{}", addrs[1], ids[0]);
    eventually(Duration::from_secs(30), "the three processes' ticker counts are summed", || async {
        let v: Value = http.get(&path).bearer_auth(&editor).send().await.unwrap().json().await.unwrap();
        v["delivery"]["tickers_reached"] == 3
    })
    .await;

    // One webhook delivery per event, whichever process sent it.
    eventually(Duration::from_secs(60), "three webhook deliveries", || async {
        origin.hits("/hook").len() >= 3
    })
    .await;
    // A repeat would come within the first retry's delay (1 s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let hooks = origin.hits("/hook");
    let webhook_ids: BTreeSet<&str> = hooks.iter().map(|h| h["webhook-id"].to_str().unwrap()).collect();
    assert_eq!((hooks.len(), webhook_ids.len()), (3, 3), "each event delivered once");

    // The feed, polled every second by three processes: never two polls at once. A poll is
    // claimed only when the last one finished and its interval ran out, so polls that began
    // closer than that overlapped.
    let polls = origin.hit_times("/rss", started);
    assert!(polls.len() >= 3, "the feed was polled: {polls:?}");
    for pair in polls.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap > chrono::Duration::milliseconds(500), "two polls {gap} apart: {polls:?}");
    }

    // Slower pushes, so that the kill comes in the middle of a fan-out.
    for sub in double.inner.lock().unwrap().subscribers.values_mut() {
        sub.behaviour = Behaviour::Slow(Duration::from_millis(40));
    }
    let id = flag(&http, addrs[0], &editor, "Artçı deprem: 5,1", &["deprem"]).await;
    eventually(Duration::from_secs(60), "a sixth of the fan-out went out", || async {
        pushes_of(&double, &id).len() as u64 >= SUBSCRIBERS / 6
    })
    .await;
    let mut killed = nodes.pop().unwrap();
    killed.child.start_kill().unwrap(); // SIGKILL: no goodbye, no flush, no lease handed back
    killed.child.wait().await.unwrap();

    // The ranges the killed process held: running at the kill, and their leases never renewed
    // after it (the survivors renew theirs every third of a lease). Only their pushes may repeat:
    // those in flight, or answered but not yet logged, when it died.
    let leases = |pool: PgPool, id: String| async move {
        let rows: Vec<(i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
            "select first_id, lease_until from push_batches
             where alert_id = $1::uuid and step = 0 and state = 'running'",
        )
        .bind(&id)
        .fetch_all(&pool)
        .await
        .unwrap();
        rows
    };
    let at_kill = leases(pool.clone(), id.clone()).await;
    tokio::time::sleep(Duration::from_millis(LEASE_SECS * 1000 / 2)).await;
    let (now, later): (chrono::DateTime<chrono::Utc>, Vec<(i64, chrono::DateTime<chrono::Utc>)>) = (
        sqlx::query_scalar("select now()").fetch_one(&pool).await.unwrap(),
        leases(pool.clone(), id.clone()).await,
    );
    let held: Vec<i64> = at_kill.iter().filter(|r| later.contains(r)).map(|r| r.0).collect();
    // A range taken over since would hide among the survivors' (a bound that is too tight):
    // none can have been, while every lease of the kill's time still runs.
    if let Some(first_expiry) = at_kill.iter().map(|r| r.1).min() {
        assert!(now < first_expiry, "the lease check came too late to tell whose ranges they were");
    }
    assert!(!held.is_empty(), "the kill came while the process held ranges: {at_kill:?}");

    eventually(Duration::from_secs(90), "the survivors finished the fan-out", || async {
        job_state(&pool, &id).await.as_deref() == Some("done")
    })
    .await;
    assert_eq!(double.violations(), Vec::<String>::new());
    let counts = pushes_of(&double, &id);
    assert_eq!(counts.len() as u64, SUBSCRIBERS, "every subscriber reached");
    assert!(counts.values().all(|n| *n <= 2), "nobody got it three times");
    let repeated = counts.values().filter(|n| **n == 2).count() as i64;
    assert!(
        repeated <= held.len() as i64 * BATCH,
        "{repeated} subscribers got the alert twice; the killed process held {} ranges of {BATCH}",
        held.len()
    );
    let logged: i64 =
        sqlx::query_scalar("select count(*) from push_deliveries where alert_id = $1::uuid and step = 0")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(logged as u64, SUBSCRIBERS, "exactly one log row per subscriber");
    // The survivors' tickers got that alert too, once, after the others.
    for t in &mut tickers[..2] {
        let got: Vec<Value> = alert_frames(t, 1).await.iter().map(|f| f["id"].clone()).collect();
        assert_eq!(got, [json!(id)], "the last alert, once, after the others");
    }
    for mut node in nodes {
        let status = node.terminate().await;
        assert!(status.success(), "a survivor's exit after SIGTERM: {status}; its log:\n{}", node.log_tail());
    }
}

/// The most connections of each kind (`application_name`) one process held at once, sampled
/// from `pg_stat_activity` until `stop` is cancelled; and the most in total.
async fn sample_backends(
    pool: PgPool,
    stop: tokio_util::sync::CancellationToken,
) -> (HashMap<String, i64>, i64) {
    let mut most: HashMap<String, i64> = HashMap::new();
    let mut most_total = 0;
    while !stop.is_cancelled() {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "select application_name, count(*) from pg_stat_activity
             where datname = current_database() and application_name like 'sondakika%'
             group by application_name",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        most_total = most_total.max(rows.iter().map(|r| r.1).sum());
        for (name, n) in rows {
            let m = most.entry(name).or_default();
            *m = (*m).max(n);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (most, most_total)
}

/// A process under load (a fan-out, tickers, a feed, a webhook) never holds more connections
/// to PostgreSQL than the README's budget: `db_pool_size` for the pool, one per LISTEN channel
/// (3), one renewing fan-out leases; each kind under its own `application_name`.
#[tokio::test]
async fn a_process_under_load_holds_no_more_connections_than_its_budget() {
    const POOL: i64 = 4;
    let db = new_database().await;
    let double = PushDouble::start(SUBJECT).await;
    let origin = Origin::start().await;
    let env = [node_env().as_slice(), &[("SONDAKIKA_DB_POOL_SIZE", "4")]].concat();
    let mut node = ServerProcess::start(&db, &env).await;
    let pool = PgPool::connect(&db).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let sampler = tokio::spawn(sample_backends(pool.clone(), stop.clone()));
    let (_, editor) = auth::create(&pool, "Editör", Role::Editor).await.unwrap();
    let (_, admin) = auth::create(&pool, "Yönetici", Role::Admin).await.unwrap();
    let http = test_client();
    double.set_vapid_key(&stored_vapid_key_in(&pool).await);
    bulk_subscribe_in(&pool, &double, 0..1000, &[], Behaviour::Slow(Duration::from_millis(10))).await;
    origin.set("/rss", Route::doc("application/rss+xml; charset=utf-8", EMPTY_RSS));
    origin.set("/hook", Route::Status(204));
    let feed = json!({ "url": origin.url("/rss"), "mode": "auto", "interval_secs": 1 });
    create(&http, node.addr, &admin, "/api/v1/feeds", feed).await;
    let hook = json!({ "url": origin.url("/hook"), "event_types": ["alert.flagged"] });
    create(&http, node.addr, &admin, "/api/v1/webhooks", hook).await;
    let mut tickers = Vec::new();
    for _ in 0..20 {
        let mut t = Ticker::connect(&format!("ws://{}/ws", node.addr)).await;
        t.expect("hello").await;
        tickers.push(t);
    }
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(flag(&http, node.addr, &editor, &format!("Yük altında {i}: Çığ uyarısı"), &[]).await);
    }
    for id in &ids {
        eventually(Duration::from_secs(90), "the fan-out is done", || async {
            job_state(&pool, id).await.as_deref() == Some("done")
        })
        .await;
    }
    eventually(Duration::from_secs(60), "the webhooks went out", || async {
        origin.hits("/hook").len() >= 3
    })
    .await;
    assert!(!origin.hit_times("/rss", chrono::DateTime::UNIX_EPOCH).is_empty(), "the feed was polled");
    stop.cancel();
    let (most, total) = sampler.await.unwrap();
    let of = |name: &str| most.get(name).copied().unwrap_or(0);
    // Each kind was there (the budget is not met by leaving something out), and within bounds.
    assert_eq!(of("sondakika-listen"), 3, "{most:?}");
    assert_eq!(of("sondakika-lease"), 1, "{most:?}");
    assert!((1..=POOL).contains(&of("sondakika")), "{most:?}");
    assert!(total <= POOL + 3 + 1, "{total} connections at once, over db_pool_size + 4: {most:?}");
    let status = node.terminate().await;
    assert!(status.success(), "exit after SIGTERM: {status}; its log:\n{}", node.log_tail());
}
