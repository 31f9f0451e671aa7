//! `tickers`: the live-ticker load generator for BENCHMARKS.md.
//!
//! It holds many live tickers open against a server, publishes alerts, and measures
//! publish → receive latency for every (ticker, alert) pair, plus the server's memory per idle
//! connection. Clients and publisher share one process so they share one monotonic clock: a
//! latency is `received - published` with both instants read here, never across machines.
//!
//! It measures, it does not judge: deliveries that did not arrive are counted and reported (and
//! make the exit status non-zero), never retried or hidden. Every phase has a deadline, so a
//! stuck server ends the run with a report instead of hanging it.

use std::{
    borrow::Cow,
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_tungstenite::tungstenite::{Message, protocol::WebSocketConfig};
use tokio_util::sync::CancellationToken;

use crate::{
    proc::{Cpu, cpu_between, machine_busy_secs, proc_cpu, proc_mem},
    round,
};

/// How alerts are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// `POST /api/v1/alerts` with an editor token.
    Sondakika,
    /// `POST /publish` on the reference Node `ws` server (bench/node-ws).
    Node,
}

impl Target {
    fn as_str(self) -> &'static str {
        match self {
            Self::Sondakika => "sondakika",
            Self::Node => "node",
        }
    }
}

// Bounds on the command line: the run must fit one machine and end by itself.
const MAX_CLIENTS: u64 = 100_000;
const MAX_ALERTS: u64 = 10_000;
/// Attempts per client to connect and get `hello`; a client that fails them all is reported.
const CONNECT_ATTEMPTS: u32 = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long clients get to finish after the run before they are aborted.
const JOIN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct TickersArgs {
    /// What publishes: sondakika's editor API or the reference Node server.
    #[arg(long, value_enum, default_value = "sondakika")]
    target: Target,
    /// WebSocket endpoint the tickers connect to.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    ws_url: String,
    /// Where alerts are POSTed. Default: `/api/v1/alerts` (sondakika) or `/publish` (node) on
    /// the host of `--ws-url`.
    #[arg(long)]
    publish_url: Option<String>,
    /// Editor token (target sondakika).
    #[arg(long, env = "SONDAKIKA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Concurrent tickers to hold open.
    #[arg(long, default_value_t = 10_000, value_parser = crate::count(MAX_CLIENTS))]
    clients: usize,
    /// Alerts to publish once every ticker is connected.
    #[arg(long, default_value_t = 20, value_parser = crate::count(MAX_ALERTS))]
    alerts: usize,
    /// Time between the starts of two publishes, in milliseconds.
    #[arg(long, default_value_t = 500)]
    interval_ms: u64,
    /// Connection handshakes in flight at once (a ramp, not a SYN flood).
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// PID of the server process: its memory (VmRSS, VmHWM) and CPU time are sampled.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Pause after the last hello before the "idle" memory sample, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    settle_ms: u64,
    /// How long after the last publish deliveries may still arrive, in seconds.
    #[arg(long, default_value_t = 10)]
    drain_secs: u64,
    /// The whole run ends by then, whatever state it is in, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// A name for this run in the output (default: the target).
    #[arg(long)]
    label: Option<String>,
    /// Print one JSON object on stdout (the human summary then goes to stderr).
    #[arg(long)]
    json: bool,
}

/// State every ticker task shares with the coordinator.
struct Shared {
    /// Handshakes in flight are bounded by this.
    connect: Semaphore,
    hellos: AtomicUsize,
    failed: AtomicUsize,
    retries: AtomicUsize,
    deliveries: AtomicU64,
    /// Tells tickers the run is over.
    stop: CancellationToken,
    /// Headlines of this run start with this; the number after it is the alert's index.
    marker: String,
    alerts: usize,
}

/// What one ticker saw.
#[derive(Default)]
struct ClientReport {
    connected: bool,
    /// Receive instant of each alert of this run, by index.
    received: Vec<Option<Instant>>,
    duplicates: u64,
    /// Text frames that were not an alert of this run (other types, other runs).
    other_frames: u64,
    /// Why the connection ended before the run did (or why it never opened).
    ended: Option<String>,
}

/// The part of a frame a ticker looks at; everything else is skipped by serde.
#[derive(Deserialize)]
struct FrameHead<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    headline: Option<Cow<'a, str>>,
}

pub async fn run(args: TickersArgs) -> anyhow::Result<()> {
    if args.connect_concurrency == 0 {
        bail!("--connect-concurrency must be at least 1");
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let ws_url = url::Url::parse(&args.ws_url).context("--ws-url is not a URL")?;
    if !matches!(ws_url.scheme(), "ws" | "wss") {
        bail!("--ws-url must be a ws:// URL");
    }
    let publish_url = match &args.publish_url {
        Some(u) => url::Url::parse(u).context("--publish-url is not a URL")?,
        None => {
            let mut u = ws_url.clone();
            u.set_scheme(if ws_url.scheme() == "wss" { "https" } else { "http" })
                .expect("ws and http schemes are interchangeable");
            u.set_query(None);
            u.set_path(match args.target {
                Target::Sondakika => "/api/v1/alerts",
                Target::Node => "/publish",
            });
            u
        }
    };
    let token = match args.target {
        Target::Sondakika => {
            Some(args.token.clone().context("--target sondakika needs --token (or SONDAKIKA_TOKEN)")?)
        }
        Target::Node => None,
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("sondakika-bench/", env!("CARGO_PKG_VERSION")))
        .build()?;
    warm_up(&http, args.target, &publish_url, token.as_deref()).await?;

    let label = args.label.clone().unwrap_or_else(|| args.target.as_str().to_string());
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let shared = Arc::new(Shared {
        connect: Semaphore::new(args.connect_concurrency),
        hellos: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        retries: AtomicUsize::new(0),
        deliveries: AtomicU64::new(0),
        stop: CancellationToken::new(),
        marker: format!("Bench {run_id} #"),
        alerts: args.alerts,
    });

    let mem_before = args.server_pid.and_then(proc_mem);
    if let (Some(pid), None) = (args.server_pid, mem_before) {
        bail!("cannot read /proc/{pid}/status: is --server-pid the server's PID?");
    }

    // Connect phase: every ticker connects and reads its hello, at most
    // `connect_concurrency` at a time.
    eprintln!(
        "[{label}] connecting {} tickers to {ws_url} ({} at a time)",
        args.clients, args.connect_concurrency
    );
    let mut set = JoinSet::new();
    for _ in 0..args.clients {
        set.spawn(ticker(ws_url.to_string(), shared.clone()));
    }
    let connect_started = Instant::now();
    let mut last_print = Instant::now();
    loop {
        let (ok, failed) = (shared.hellos.load(Ordering::Acquire), shared.failed.load(Ordering::Acquire));
        if ok + failed == args.clients || Instant::now() >= deadline {
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(2) {
            eprintln!("[{label}]   {ok} connected, {failed} failed");
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let connected = shared.hellos.load(Ordering::Acquire);
    eprintln!("[{label}] {connected}/{} tickers connected in {connect_secs:.1} s", args.clients);
    if connected == 0 {
        shared.stop.cancel();
        set.shutdown().await;
        bail!("no ticker could connect to {ws_url}");
    }

    tokio::time::sleep(
        Duration::from_millis(args.settle_ms).min(deadline.saturating_duration_since(Instant::now())),
    )
    .await;
    let mem_idle = args.server_pid.and_then(proc_mem);
    let cpu_before = args.server_pid.and_then(|pid| proc_cpu(pid, false));
    let own_cpu_before = proc_cpu(std::process::id(), false);
    let machine_before = machine_busy_secs();

    // Publish phase: K alerts at a fixed cadence. The clock of alert k starts just before its
    // request is sent; tickers may well have it before the response comes back.
    let mut published: Vec<Option<Instant>> = vec![None; args.alerts];
    let mut publish_ms: Vec<f64> = Vec::with_capacity(args.alerts);
    let mut publish_errors: Vec<String> = Vec::new();
    let mut every = tokio::time::interval(Duration::from_millis(args.interval_ms.max(1)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for (k, slot) in published.iter_mut().enumerate() {
        every.tick().await;
        if Instant::now() >= deadline {
            publish_errors.push(format!("alert {k}: not published, the run timed out"));
            break;
        }
        let body = json!({
            "headline": format!("{}{k}: load test alert", shared.marker),
            "url": format!("https://bench.invalid/{run_id}/{k}"),
            "summary": "A breaking-news alert sent by `sondakika-bench tickers` to measure delivery to live tickers.",
            "topics": [],
        });
        let mut req = http.post(publish_url.clone()).json(&body);
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        let t0 = Instant::now();
        *slot = Some(t0);
        match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                let _ = resp.bytes().await;
                publish_ms.push(t0.elapsed().as_secs_f64() * 1e3);
                if status != reqwest::StatusCode::CREATED {
                    publish_errors.push(format!("alert {k}: HTTP {status} (expected 201 Created)"));
                }
            }
            Err(e) => publish_errors.push(format!("alert {k}: {e}")),
        }
    }
    let last_publish = Instant::now();
    eprintln!("[{label}] published {} alerts; waiting for deliveries", publish_ms.len());

    // Drain: until every connected ticker has every alert, or the drain time is up.
    let want = (connected * args.alerts) as u64;
    let drain_until = (last_publish + Duration::from_secs(args.drain_secs)).min(deadline);
    while shared.deliveries.load(Ordering::Acquire) < want && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu_after = args.server_pid.and_then(|pid| proc_cpu(pid, false));
    let own_cpu_after = proc_cpu(std::process::id(), false);
    let machine_after = machine_busy_secs();
    let mem_after = args.server_pid.and_then(proc_mem);

    shared.stop.cancel();
    let mut reports = Vec::with_capacity(args.clients);
    let join_until = tokio::time::Instant::now() + JOIN_GRACE;
    while let Ok(Some(joined)) = tokio::time::timeout_at(join_until, set.join_next()).await {
        if let Ok(report) = joined {
            reports.push(report);
        }
    }
    let unjoined = set.len();
    set.shutdown().await;

    let summary = Summary::build(&args, &published, &reports);
    let out = json!({
        "label": label,
        "target": args.target.as_str(),
        "ws_url": ws_url.as_str(),
        "clients": args.clients,
        "alerts": args.alerts,
        "interval_ms": args.interval_ms,
        "connect": {
            "connected": connected,
            "failed": shared.failed.load(Ordering::Acquire),
            "retries": shared.retries.load(Ordering::Acquire),
            "seconds": round(connect_secs, 2),
        },
        "deliveries": {
            "expected": (args.clients * args.alerts) as u64,
            "received": summary.received,
            "complete": summary.received == (args.clients * args.alerts) as u64,
            "duplicates": summary.duplicates,
            "other_frames": summary.other_frames,
            "early_disconnects": summary.ended_early,
            "end_reasons": summary.end_reasons,
            "unjoined_clients": unjoined,
        },
        "latency_ms": summary.latency,
        "last_client_ms": summary.last_client,
        "alerts_incomplete": summary.alerts_incomplete,
        "publish": {
            "published": publish_ms.len(),
            "http_ms": stats_of(&mut publish_ms.clone()),
            "errors": publish_errors,
        },
        "server": args.server_pid.map(|pid| json!({
            "pid": pid,
            "rss_kib_before": mem_before.map(|m| m.rss_kib),
            "rss_kib_idle": mem_idle.map(|m| m.rss_kib),
            "hwm_kib_idle": mem_idle.map(|m| m.hwm_kib),
            "rss_kib_after": mem_after.map(|m| m.rss_kib),
            "hwm_kib_after": mem_after.map(|m| m.hwm_kib),
            "kib_per_idle_connection": match (mem_before, mem_idle) {
                (Some(b), Some(i)) if connected > 0 => Some(round((i.rss_kib as f64 - b.rss_kib as f64) / connected as f64, 2)),
                _ => None,
            },
            "cpu_publish_phase": cpu_used(cpu_before, cpu_after, summary.received),
        })),
        "loadgen_cpu_publish_phase": cpu_used(own_cpu_before, own_cpu_after, summary.received),
        // Everything the machine did while publishing that was neither the server process nor
        // this one: sondakika's PostgreSQL, and any other work that skews the run.
        "other_cpu_secs_publish_phase": match (machine_before, machine_after) {
            (Some(b), Some(a)) => {
                let ours = |x, y| cpu_between(x, y).unwrap_or(0.0);
                Some(round((a - b - ours(cpu_before, cpu_after) - ours(own_cpu_before, own_cpu_after)).max(0.0), 2))
            }
            _ => None,
        },
        "seconds": round(started.elapsed().as_secs_f64(), 1),
    });

    let text = human(&out);
    if args.json {
        eprint!("{text}");
        println!("{out}");
    } else {
        print!("{text}");
    }
    if out["deliveries"]["complete"] != Value::Bool(true)
        || !out["publish"]["errors"].as_array().is_none_or(|e| e.is_empty())
    {
        // Loud on purpose: a fast benchmark that lost messages is not a result.
        bail!("the run is INCOMPLETE: see deliveries and publish errors above");
    }
    Ok(())
}

/// One request before the clock matters: checks the token (sondakika) and opens the
/// keep-alive connection, so alert 0 does not pay for a TCP handshake the others skip.
async fn warm_up(
    http: &reqwest::Client,
    target: Target,
    publish_url: &url::Url,
    token: Option<&str>,
) -> anyhow::Result<()> {
    let (path, what) = match target {
        Target::Sondakika => ("/api/v1/me", "the editor token"),
        Target::Node => ("/health", "the Node server"),
    };
    let mut url = publish_url.clone();
    url.set_path(path);
    let mut req = http.get(url.clone());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.with_context(|| format!("cannot reach {url}"))?;
    if !resp.status().is_success() {
        bail!("checking {what} at {url}: HTTP {}", resp.status());
    }
    let _ = resp.bytes().await;
    Ok(())
}

/// One ticker: connect (bounded attempts), read hello, then record every alert of this run.
async fn ticker(url: String, shared: Arc<Shared>) -> ClientReport {
    let mut report = ClientReport { received: vec![None; shared.alerts], ..Default::default() };
    // The default 128 KiB read buffer is zero-filled on first read: 10,000 of them would cost
    // the load generator over a GiB and time it should spend reading. Frames here are < 1 KiB.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);

    let mut socket = None;
    let mut last_error = String::new();
    {
        let _permit = tokio::select! {
            p = shared.connect.acquire() => p.expect("the semaphore is never closed"),
            _ = shared.stop.cancelled() => {
                report.ended = Some("run ended before connecting".into());
                return report;
            }
        };
        for attempt in 0..CONNECT_ATTEMPTS {
            if attempt > 0 {
                shared.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let opened = tokio::select! {
                r = tokio::time::timeout(CONNECT_TIMEOUT, open(&url, config)) => r,
                _ = shared.stop.cancelled() => break,
            };
            match opened {
                Ok(Ok(ws)) => {
                    socket = Some(ws);
                    break;
                }
                Ok(Err(e)) => last_error = format!("{e:#}"),
                Err(_) => last_error = format!("no hello within {CONNECT_TIMEOUT:?}"),
            }
        }
    }
    let Some(mut ws) = socket else {
        shared.failed.fetch_add(1, Ordering::AcqRel);
        report.ended = Some(format!("could not connect: {last_error}"));
        return report;
    };
    report.connected = true;
    shared.hellos.fetch_add(1, Ordering::AcqRel);

    loop {
        let message = tokio::select! {
            m = ws.next() => m,
            _ = shared.stop.cancelled() => break,
        };
        // Read the clock before any parsing: the parse is the load generator's cost, not the
        // server's.
        let now = Instant::now();
        match message {
            Some(Ok(Message::Text(text))) => match alert_index(&text, &shared.marker) {
                Some(k) if k < report.received.len() => {
                    if report.received[k].is_some() {
                        report.duplicates += 1;
                    } else {
                        report.received[k] = Some(now);
                        shared.deliveries.fetch_add(1, Ordering::AcqRel);
                    }
                }
                _ => report.other_frames += 1,
            },
            Some(Ok(Message::Close(frame))) => {
                report.ended = Some(match frame {
                    Some(f) => format!("closed by server: {} {}", u16::from(f.code), f.reason),
                    None => "closed by server".into(),
                });
                break;
            }
            // Pings are answered by tungstenite on the next read.
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                report.ended = Some(format!("error: {e}"));
                break;
            }
            None => {
                report.ended = Some("connection closed without a close frame".into());
                break;
            }
        }
    }
    if report.ended.is_none() {
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    }
    report
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects and reads the first frame, which must be `hello`.
pub(crate) async fn open(url: &str, config: WebSocketConfig) -> anyhow::Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
    match ws.next().await {
        Some(Ok(Message::Text(t))) => {
            let head: FrameHead = serde_json::from_str(&t).context("the first frame is not JSON")?;
            if head.kind != "hello" {
                bail!("the first frame is `{}`, not hello", head.kind);
            }
            Ok(ws)
        }
        Some(Ok(other)) => bail!("the first frame is not a hello text frame: {other:?}"),
        Some(Err(e)) => Err(e.into()),
        None => bail!("closed before hello"),
    }
}

/// The index k of an alert of this run (headline "Bench <run> #k: ..."), or None.
pub(crate) fn alert_index(text: &str, marker: &str) -> Option<usize> {
    let head: FrameHead = serde_json::from_str(text).ok()?;
    if head.kind != "alert" {
        return None;
    }
    let rest = head.headline?.strip_prefix(marker)?.to_string();
    let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

struct Summary {
    received: u64,
    duplicates: u64,
    other_frames: u64,
    ended_early: usize,
    end_reasons: BTreeMap<String, usize>,
    latency: Value,
    last_client: Value,
    alerts_incomplete: usize,
}

impl Summary {
    fn build(args: &TickersArgs, published: &[Option<Instant>], reports: &[ClientReport]) -> Self {
        // Every latency, in microseconds (a u32 holds 71 minutes, beyond any run's deadline):
        // 4 bytes a delivery beside the 16 of its receive instant, and percentiles that are
        // exact.
        let mut all: Vec<u32> = Vec::new();
        let mut last: Vec<Option<Duration>> = vec![None; args.alerts];
        let mut per_alert_count = vec![0usize; args.alerts];
        let (mut received, mut duplicates, mut other_frames, mut ended_early) = (0u64, 0u64, 0u64, 0usize);
        let mut end_reasons = BTreeMap::new();
        for r in reports {
            duplicates += r.duplicates;
            other_frames += r.other_frames;
            if let Some(why) = &r.ended {
                ended_early += 1;
                // Group by the reason's kind, not its details (ports, addresses).
                let key: String = why.chars().take(80).collect();
                *end_reasons.entry(key).or_insert(0) += 1;
            }
            for (k, at) in r.received.iter().enumerate() {
                let (Some(at), Some(sent)) = (at, published[k]) else { continue };
                received += 1;
                per_alert_count[k] += 1;
                let latency = at.saturating_duration_since(sent);
                all.push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
                last[k] = Some(last[k].map_or(latency, |l| l.max(latency)));
            }
        }
        let alerts_incomplete = per_alert_count.iter().filter(|&&n| n < args.clients).count();
        all.sort_unstable();
        let ms = |us: u32| round(f64::from(us) / 1e3, 2);
        let latency = if all.is_empty() {
            Value::Null
        } else {
            json!({
                "p50": ms(quantile(&all, 0.50)),
                "p90": ms(quantile(&all, 0.90)),
                "p99": ms(quantile(&all, 0.99)),
                "p999": ms(quantile(&all, 0.999)),
                "max": ms(all[all.len() - 1]),
                "mean": round(all.iter().map(|&us| u64::from(us)).sum::<u64>() as f64 / all.len() as f64 / 1e3, 2),
            })
        };
        let mut lasts: Vec<f64> = last.iter().flatten().map(|d| d.as_secs_f64() * 1e3).collect();
        Self {
            received,
            duplicates,
            other_frames,
            ended_early,
            end_reasons,
            latency,
            last_client: stats_of(&mut lasts),
            alerts_incomplete,
        }
    }
}

/// The value at quantile `q` of sorted, non-empty values (nearest rank: the smallest value with
/// at least that share of all values at or below it).
fn quantile(sorted: &[u32], q: f64) -> u32 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50 and max (and min) of a few values, in the same unit; null when empty.
fn stats_of(values: &mut [f64]) -> Value {
    if values.is_empty() {
        return Value::Null;
    }
    values.sort_by(f64::total_cmp);
    let p50 = values[(values.len() - 1) / 2];
    json!({ "min": round(values[0], 2), "p50": round(p50, 2), "max": round(values[values.len() - 1], 2) })
}

/// CPU spent between two samples, split user/system, and per delivery: on loopback the kernel
/// work of both ends of every socket shows up here, which is most of the cost of a fan-out.
fn cpu_used(before: Option<Cpu>, after: Option<Cpu>, deliveries: u64) -> Value {
    let (Some(b), Some(a)) = (before, after) else { return Value::Null };
    let (user, sys) = (a.user - b.user, a.sys - b.sys);
    json!({
        "secs": round(user + sys, 2),
        "user_secs": round(user, 2),
        "sys_secs": round(sys, 2),
        "us_per_delivery": (deliveries > 0).then(|| round((user + sys) * 1e6 / deliveries as f64, 1)),
    })
}

/// The human summary of a run's JSON.
fn human(o: &Value) -> String {
    use std::fmt::Write;
    let f = |v: &Value| match v.as_f64() {
        Some(x) => format!("{x:.1}"),
        None => "-".into(),
    };
    let mut s = String::new();
    let d = &o["deliveries"];
    let _ = writeln!(
        s,
        "== {}: {} tickers, {} alerts every {} ms ==",
        o["label"].as_str().unwrap_or("?"),
        o["clients"],
        o["alerts"],
        o["interval_ms"]
    );
    let _ = writeln!(
        s,
        "connect      {}/{} in {} s ({} failed, {} retries)",
        o["connect"]["connected"],
        o["clients"],
        o["connect"]["seconds"],
        o["connect"]["failed"],
        o["connect"]["retries"]
    );
    let complete = d["complete"] == Value::Bool(true);
    let _ = writeln!(
        s,
        "deliveries   {}/{} {}; {} duplicates, {} early disconnects",
        d["received"],
        d["expected"],
        if complete { "(all)" } else { "!!! INCOMPLETE: SOME TICKERS MISSED ALERTS !!!" },
        d["duplicates"],
        d["early_disconnects"]
    );
    if let Some(reasons) = d["end_reasons"].as_object() {
        for (why, n) in reasons {
            let _ = writeln!(s, "               {n} × {why}");
        }
    }
    let l = &o["latency_ms"];
    let _ = writeln!(
        s,
        "latency ms   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}   (publish → receive, every delivery)",
        f(&l["p50"]),
        f(&l["p90"]),
        f(&l["p99"]),
        f(&l["p999"]),
        f(&l["max"])
    );
    let lc = &o["last_client_ms"];
    let _ = writeln!(
        s,
        "last client  p50 {} ms  max {} ms   (per alert: publish → every ticker has it)",
        f(&lc["p50"]),
        f(&lc["max"])
    );
    let p = &o["publish"];
    let _ = writeln!(
        s,
        "publish      {} sent, HTTP round trip p50 {} ms max {} ms",
        p["published"],
        f(&p["http_ms"]["p50"]),
        f(&p["http_ms"]["max"])
    );
    if let Some(errors) = p["errors"].as_array() {
        for e in errors.iter().take(10) {
            let _ = writeln!(s, "               !!! {}", e.as_str().unwrap_or_default());
        }
    }
    let sv = &o["server"];
    if sv.is_object() {
        let mib = |v: &Value| v.as_f64().map_or("-".into(), |k| format!("{:.1}", k / 1024.0));
        let _ = writeln!(
            s,
            "server       pid {}: RSS {} MiB before, {} MiB idle with {} tickers → {} KiB per idle connection",
            sv["pid"],
            mib(&sv["rss_kib_before"]),
            mib(&sv["rss_kib_idle"]),
            o["connect"]["connected"],
            f(&sv["kib_per_idle_connection"])
        );
        let _ = writeln!(
            s,
            "             HWM {} MiB idle, {} MiB after; RSS {} MiB after",
            mib(&sv["hwm_kib_idle"]),
            mib(&sv["hwm_kib_after"]),
            mib(&sv["rss_kib_after"]),
        );
        let c = &sv["cpu_publish_phase"];
        let _ = writeln!(
            s,
            "             CPU while publishing: {} s ({} user, {} system) = {} µs per delivery",
            f(&c["secs"]),
            f(&c["user_secs"]),
            f(&c["sys_secs"]),
            f(&c["us_per_delivery"])
        );
    }
    let other = &o["other_cpu_secs_publish_phase"];
    let _ = writeln!(
        s,
        "other        {} CPU s while publishing (PostgreSQL, and anything else running)",
        f(other)
    );
    let c = &o["loadgen_cpu_publish_phase"];
    let _ = writeln!(
        s,
        "loadgen      CPU while publishing: {} s ({} user, {} system) = {} µs per delivery",
        f(&c["secs"]),
        f(&c["user_secs"]),
        f(&c["sys_secs"]),
        f(&c["us_per_delivery"])
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_of_this_run_are_found_by_their_headline() {
        let marker = "Bench abc #";
        let frame = r#"{"type":"alert","seq":4,"id":"x","headline":"Bench abc #17: load test alert"}"#;
        assert_eq!(alert_index(frame, marker), Some(17));
        let other_run = r#"{"type":"alert","headline":"Bench zzz #17: load test alert"}"#;
        assert_eq!(alert_index(other_run, marker), None);
        assert_eq!(alert_index(r#"{"type":"hello","seq":3}"#, marker), None);
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(quantile(&v, 0.5), 500);
        assert_eq!(quantile(&v, 0.99), 990);
        assert_eq!(quantile(&v, 0.999), 999);
        assert_eq!(quantile(&v, 1.0), 1000);
        assert_eq!(quantile(&[7], 0.5), 7);
        assert_eq!(quantile(&[1, 2], 0.0), 1);
    }
}
