//! The feed and webhook figures of BENCHMARKS.md (`sondakika-bench feed`, `sondakika-bench webhooks`),
//! against a running server, with the newsroom's side served here:
//!
//! - `feed`: an RSS 2.0 feed registered as an `auto` feed, and tickers on `/ws`. Items appear in
//!   the feed one at a time; for each, the time until every ticker has it, split into the wait
//!   for the server's next poll (set by the feed's interval) and poll → tickers (ours).
//! - `webhooks`: endpoints on their own ports, each subscribed to `alert.flagged`; alerts are
//!   published and the run ends when every endpoint has every event. Deliveries per second, and
//!   the publish requests' latency beside the same number of publishes with no endpoint.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::{get, post},
};
use clap::Args;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::{Message, protocol::WebSocketConfig};
use tokio_util::sync::CancellationToken;

use crate::{round2, tickers};

// Bounds on the command line: the run must fit one machine and end by itself.
const MAX_CLIENTS: u64 = 10_000;
const MAX_ITEMS: u64 = 1_000;
const MAX_ENDPOINTS: u64 = 100;
const MAX_EVENTS: u64 = 100_000;

#[derive(Debug, Args)]
pub struct FeedArgs {
    /// The server under test.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// An admin token (registers the feed) that can also publish.
    #[arg(long, env = "SONDAKIKA_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// Tickers to hold open on `/ws`.
    #[arg(long, default_value_t = 100, value_parser = crate::count(MAX_CLIENTS))]
    clients: usize,
    /// Items that appear in the feed, one at a time.
    #[arg(long, default_value_t = 10, value_parser = crate::count(MAX_ITEMS))]
    items: usize,
    /// The feed's poll interval (at least the server's `feed_min_interval_secs`).
    #[arg(long, default_value_t = 60)]
    interval_secs: u64,
    /// The whole run ends by then, whatever state it is in, in seconds.
    #[arg(long, default_value_t = 3600)]
    timeout_secs: u64,
    /// Print one JSON object on stdout (the human summary then goes to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// The server under test.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// An admin token (registers the endpoints) that can also publish.
    #[arg(long, env = "SONDAKIKA_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// Webhook endpoints, each on its own port.
    #[arg(long, default_value_t = 10, value_parser = crate::count(MAX_ENDPOINTS))]
    endpoints: usize,
    /// Alerts published (each one `alert.flagged` event to every endpoint).
    #[arg(long, default_value_t = 1000, value_parser = crate::count(MAX_EVENTS))]
    events: usize,
    /// Publish requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// The whole run ends by then, whatever state it is in, in seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// Print one JSON object on stdout (the human summary then goes to stderr).
    #[arg(long)]
    json: bool,
}

pub(crate) fn api(
    client: &reqwest::Client,
    method: reqwest::Method,
    server: &str,
    token: &str,
    path: &str,
) -> reqwest::RequestBuilder {
    client.request(method, format!("{}{path}", server.trim_end_matches('/'))).bearer_auth(token)
}

/// The `id` of a created resource as it goes in a path (a feed's is a UUID string, an endpoint's a
/// number).
pub(crate) fn id_of(created: &Value) -> String {
    created["id"].as_str().map_or_else(|| created["id"].to_string(), str::to_string)
}

pub(crate) async fn created(resp: reqwest::Response, what: &str) -> anyhow::Result<Value> {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{what}: HTTP {status}: {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("{what}: the answer is not JSON"))
}

/// Serves `router` on a fresh loopback port until `stop`; returns the address.
pub(crate) async fn serve(router: Router, stop: CancellationToken) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await;
    });
    Ok(addr)
}

pub(crate) fn ms(d: Duration) -> f64 {
    round2(d.as_secs_f64() * 1000.0)
}

/// Nearest-rank p50, p99 and max of `values` (milliseconds); null when empty.
pub(crate) fn spread(mut values: Vec<f64>) -> Value {
    if values.is_empty() {
        return Value::Null;
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
    json!({ "n": values.len(), "min": values[0], "p50": at(0.5), "p99": at(0.99), "max": at(1.0) })
}

pub(crate) fn emit(report: &Value, as_json: bool) {
    let text = serde_json::to_string_pretty(report).expect("a JSON value serialises");
    if as_json {
        println!("{}", serde_json::to_string(report).expect("a JSON value serialises"));
        eprintln!("{text}");
    } else {
        println!("{text}");
    }
}

// ---------- feed → tickers ----------

/// The feed as it stands, and when each item was first served.
#[derive(Default)]
struct Feed {
    /// (index, published) of the items in the feed, newest last.
    items: Vec<(usize, chrono::DateTime<chrono::Utc>)>,
    first_served: HashMap<usize, Instant>,
    polls: usize,
    run: String,
}

async fn feed_xml(State(feed): State<Arc<Mutex<Feed>>>) -> impl IntoResponse {
    let mut feed = feed.lock().expect("feed lock");
    feed.polls += 1;
    let now = Instant::now();
    let indexes: Vec<usize> = feed.items.iter().map(|(i, _)| *i).collect();
    for i in indexes {
        feed.first_served.entry(i).or_insert(now);
    }
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\"><channel>\
         <title>Burdur Haber — Son Dakika</title><link>https://www.burdurhaber.example/</link>\
         <description>Son dakika haberleri</description>",
    );
    for (i, published) in feed.items.iter().rev() {
        let run = &feed.run;
        xml.push_str(&format!(
            "<item><title>Bench {run} #{i}: Burdur'da sağanak; İl Afet Müdürlüğü uyardı</title>\
             <link>https://www.burdurhaber.example/haber/{run}-{i}</link>\
             <guid isPermaLink=\"false\">{run}-{i}</guid>\
             <pubDate>{}</pubDate>\
             <description><![CDATA[<p>Öğleden sonra <b>şiddetli</b> yağış bekleniyor.</p>]]></description></item>",
            published.to_rfc2822()
        ));
    }
    xml.push_str("</channel></rss>");
    ([(header::CONTENT_TYPE, "application/rss+xml; charset=utf-8")], xml)
}

pub async fn feed(args: FeedArgs) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let stop = CancellationToken::new();
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let state = Arc::new(Mutex::new(Feed { run: run.clone(), ..Default::default() }));
    let addr = serve(Router::new().route("/feed.xml", get(feed_xml)).with_state(state.clone()), stop.clone())
        .await?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;

    // The tickers first, so that none can miss an item.
    let ws_url = {
        let mut u = url::Url::parse(&args.server).context("--server is not a URL")?;
        u.set_scheme(if u.scheme() == "https" { "wss" } else { "ws" })
            .map_err(|_| anyhow::anyhow!("--server: no ws scheme"))?;
        u.set_path("/ws");
        u.to_string()
    };
    let marker = format!("Bench {run} #");
    let received: Arc<Mutex<HashMap<usize, Vec<Instant>>>> = Arc::default();
    let mut tickers = JoinSet::new();
    let config = WebSocketConfig::default().read_buffer_size(4096);
    for _ in 0..args.clients {
        let ws = tickers::open(&ws_url, config).await.context("a ticker could not connect")?;
        let (marker, received, stop) = (marker.clone(), received.clone(), stop.clone());
        tickers.spawn(async move {
            let mut ws = ws;
            loop {
                let message = tokio::select! {
                    m = ws.next() => m,
                    _ = stop.cancelled() => return,
                };
                let now = Instant::now();
                match message {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(i) = tickers::alert_index(&text, &marker) {
                            received.lock().expect("received lock").entry(i).or_default().push(now);
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => return,
                }
            }
        });
    }

    let feed = created(
        api(&client, reqwest::Method::POST, &args.server, &args.admin_token, "/api/v1/feeds")
            .json(&json!({
                "url": format!("http://{addr}/feed.xml"),
                "name": format!("Bench {run}"),
                "mode": "auto",
                "interval_secs": args.interval_secs,
            }))
            .send()
            .await?,
        "registering the feed",
    )
    .await?;
    let feed_id = id_of(&feed);
    // Items are judged against the feed's registration; the first poll (of an empty feed)
    // comes at once.
    while state.lock().expect("feed lock").polls == 0 {
        if Instant::now() > deadline {
            bail!("the server never polled the feed");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut rows = Vec::new();
    for i in 0..args.items {
        // Items appear at an arbitrary moment of the poll cycle, as news does.
        let phase = Duration::from_millis(rand_below(args.interval_secs * 1000));
        tokio::time::sleep(phase).await;
        let appeared = Instant::now();
        state.lock().expect("feed lock").items.push((i, chrono::Utc::now()));
        let everyone = loop {
            if Instant::now() > deadline {
                bail!("item {i} did not reach every ticker before the deadline");
            }
            if let Some(at) = received.lock().expect("received lock").get(&i)
                && at.len() >= args.clients
            {
                break at.clone();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let served = state.lock().expect("feed lock").first_served[&i];
        let first = *everyone.iter().min().expect("at least one ticker");
        let last = *everyone.iter().max().expect("at least one ticker");
        rows.push(json!({
            "item": i,
            "wait_for_poll_ms": ms(served - appeared),
            "poll_to_first_ticker_ms": ms(first - served),
            "poll_to_last_ticker_ms": ms(last - served),
            "appeared_to_last_ticker_ms": ms(last - appeared),
        }));
        eprintln!("item {i}: {}", rows.last().expect("just pushed"));
    }
    stop.cancel();
    while tickers.join_next().await.is_some() {}
    // Leave the server as it was: the feed stops being polled.
    let feed_path = format!("/api/v1/feeds/{feed_id}");
    let _ = api(&client, reqwest::Method::DELETE, &args.server, &args.admin_token, &feed_path).send().await;

    let column = |k: &str| rows.iter().filter_map(|r| r[k].as_f64()).collect::<Vec<_>>();
    let report = json!({
        "bench": "feed",
        "clients": args.clients,
        "items": args.items,
        "interval_secs": args.interval_secs,
        "wait_for_poll_ms": spread(column("wait_for_poll_ms")),
        "poll_to_first_ticker_ms": spread(column("poll_to_first_ticker_ms")),
        "poll_to_last_ticker_ms": spread(column("poll_to_last_ticker_ms")),
        "appeared_to_last_ticker_ms": spread(column("appeared_to_last_ticker_ms")),
        "per_item": rows,
    });
    emit(&report, args.json);
    Ok(())
}

/// A number in 0..n, uniformly enough to place items in a poll cycle.
fn rand_below(n: u64) -> u64 {
    if n == 0 { 0 } else { (uuid::Uuid::new_v4().as_u128() % u128::from(n)) as u64 }
}

// ---------- webhooks ----------

/// What the endpoints received: per endpoint, the distinct `webhook-id`s, and how many POSTs.
#[derive(Default)]
struct Receipts {
    ids: Vec<std::collections::HashSet<String>>,
    posts: u64,
    last: Option<Instant>,
}

async fn hook(
    State(receipts): State<Arc<Mutex<Receipts>>>,
    Path(n): Path<usize>,
    headers: HeaderMap,
) -> StatusCode {
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let signed = headers.get("webhook-signature").is_some() && headers.get("webhook-timestamp").is_some();
    let (Some(id), true) = (id, signed) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut r = receipts.lock().expect("receipts lock");
    r.posts += 1;
    r.last = Some(Instant::now());
    if let Some(seen) = r.ids.get_mut(n) {
        seen.insert(id);
    }
    StatusCode::NO_CONTENT
}

/// Publishes `count` alerts, `concurrency` at a time; returns each request's latency (ms).
async fn publish(
    client: &reqwest::Client,
    args: &WebhookArgs,
    label: &str,
    count: usize,
) -> anyhow::Result<Vec<f64>> {
    let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for i in 0..count {
        let permit = sem.clone().acquire_owned().await?;
        let req = api(client, reqwest::Method::POST, &args.server, &args.admin_token, "/api/v1/alerts").json(
            &json!({
                "headline": format!("Bench {label} #{i}: Gölhisar'da sel, yollar kapandı"),
                "url": format!("https://www.burdurhaber.example/haber/{label}-{i}"),
            }),
        );
        tasks.spawn(async move {
            let started = Instant::now();
            let r = req.send().await;
            drop(permit);
            match r {
                Ok(resp) if resp.status().is_success() => Ok(ms(started.elapsed())),
                Ok(resp) => bail!("publishing: HTTP {}", resp.status()),
                Err(e) => Err(e.into()),
            }
        });
    }
    let mut latencies = Vec::with_capacity(count);
    while let Some(r) = tasks.join_next().await {
        latencies.push(r??);
    }
    Ok(latencies)
}

pub async fn webhooks(args: WebhookArgs) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let stop = CancellationToken::new();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();

    // The same publishes with no endpoint registered: what the webhooks may not slow.
    let alone = publish(&client, &args, &format!("{run}-alone"), args.events).await?;

    let receipts = Arc::new(Mutex::new(Receipts {
        ids: vec![Default::default(); args.endpoints],
        ..Default::default()
    }));
    let mut endpoint_ids = Vec::new();
    for n in 0..args.endpoints {
        let router = Router::new().route("/hook/{n}", post(hook)).with_state(receipts.clone());
        let addr = serve(router, stop.clone()).await?;
        let endpoint = created(
            api(&client, reqwest::Method::POST, &args.server, &args.admin_token, "/api/v1/webhooks")
                .json(&json!({
                    "url": format!("http://{addr}/hook/{n}"),
                    "event_types": ["alert.flagged"],
                    "description": format!("bench {run} #{n}"),
                }))
                .send()
                .await?,
            "registering a webhook endpoint",
        )
        .await?;
        endpoint_ids.push(id_of(&endpoint));
    }

    let started = Instant::now();
    let with_hooks = publish(&client, &args, &run, args.events).await?;
    let published = started.elapsed();
    let expected = args.endpoints * args.events;
    let (posts, done) = loop {
        {
            let r = receipts.lock().expect("receipts lock");
            let distinct: usize = r.ids.iter().map(|s| s.len()).sum();
            if distinct >= expected {
                break (r.posts, r.last.expect("deliveries arrived") - started);
            }
        }
        if Instant::now() > deadline {
            bail!("not every endpoint had every event before the deadline");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    stop.cancel();
    for id in &endpoint_ids {
        let path = format!("/api/v1/webhooks/{id}");
        let _ = api(&client, reqwest::Method::DELETE, &args.server, &args.admin_token, &path).send().await;
    }

    let report = json!({
        "bench": "webhooks",
        "endpoints": args.endpoints,
        "events": args.events,
        "deliveries": expected,
        "posts_received": posts,
        "publish_secs": round2(published.as_secs_f64()),
        "all_delivered_secs": round2(done.as_secs_f64()),
        "deliveries_per_sec": round2(expected as f64 / done.as_secs_f64()),
        "publish_http_ms_with_webhooks": spread(with_hooks),
        "publish_http_ms_without": spread(alone),
    });
    emit(&report, args.json);
    Ok(())
}
