//! `sondakika-bench webhook-fanout`: what many registered webhook endpoints cost the server when
//! nothing is happening, and what they cost an alert's POST. It registers `--endpoints` endpoints
//! (all served here, on one port), measures the CPU of the server and of its PostgreSQL over
//! `--idle-secs` with nothing to deliver, then publishes `--alerts` alerts one at a time, timing
//! each POST and waiting for its deliveries before the next.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::bail;
use axum::{Router, extract::State, http::StatusCode, routing::post};
use clap::Args;
use serde_json::json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    integrations::{api, created, emit, ms, serve, spread},
    proc::{cpu_between, pg_cpu, proc_cpu},
    round2,
};

const MAX_ENDPOINTS: u64 = 50_000;

#[derive(Debug, Args)]
pub struct FanoutArgs {
    /// The server under test.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// An admin token (registers the endpoints) that can also publish.
    #[arg(long, env = "SONDAKIKA_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// Webhook endpoints registered (all served by this process).
    #[arg(long, default_value_t = 10_000, value_parser = crate::count(MAX_ENDPOINTS))]
    endpoints: usize,
    /// Alerts published, one at a time.
    #[arg(long, default_value_t = 10, value_parser = crate::count(1000))]
    alerts: usize,
    /// How long the idle CPU is measured, in seconds.
    #[arg(long, default_value_t = 30, value_parser = crate::count(3600))]
    idle_secs: usize,
    /// The server's process id, for its CPU time.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The PostgreSQL data directory (with `postmaster.pid`), for the cluster's CPU time.
    #[arg(long)]
    pg_data: Option<PathBuf>,
    /// How long to wait for one alert's deliveries before giving up, in seconds.
    #[arg(long, default_value_t = 300)]
    delivery_timeout_secs: u64,
    /// Print one JSON object on stdout (the human summary then goes to stderr).
    #[arg(long)]
    json: bool,
}

async fn hook(State(posts): State<Arc<AtomicU64>>) -> StatusCode {
    posts.fetch_add(1, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

pub async fn run(args: FanoutArgs) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let posts = Arc::new(AtomicU64::new(0));
    let router = Router::new().route("/hook/{n}", post(hook)).with_state(posts.clone());
    let addr = serve(router, stop.clone()).await?;

    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    for n in 0..args.endpoints {
        let permit = sem.clone().acquire_owned().await?;
        let req = api(&client, reqwest::Method::POST, &args.server, &args.admin_token, "/api/v1/webhooks")
            .json(&json!({ "url": format!("http://{addr}/hook/{n}"), "event_types": ["alert.flagged"] }));
        tasks.spawn(async move {
            let r = created(req.send().await?, "registering a webhook endpoint").await;
            drop(permit);
            r
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let registering = started.elapsed();

    // Idle: registered endpoints, nothing to deliver.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = Duration::from_secs(args.idle_secs as u64);
    let pg_before = args.pg_data.as_deref().and_then(pg_cpu);
    let server_before = args.server_pid.and_then(|p| proc_cpu(p, false));
    tokio::time::sleep(idle).await;
    let pct = |secs: Option<f64>| secs.map(|s| round2(s / idle.as_secs_f64() * 100.0));
    let pg_idle = pct(cpu_between(pg_before, args.pg_data.as_deref().and_then(pg_cpu)));
    let server_idle = pct(cpu_between(server_before, args.server_pid.and_then(|p| proc_cpu(p, false))));

    let mut publish = Vec::new();
    let mut delivered = Vec::new();
    for i in 0..args.alerts {
        let before = posts.load(Ordering::Relaxed);
        let t = Instant::now();
        let r = api(&client, reqwest::Method::POST, &args.server, &args.admin_token, "/api/v1/alerts")
            .json(&json!({
                "headline": format!("Fan-out bench #{i}: Gölhisar'da sel, yollar kapandı"),
                "url": format!("https://www.burdurhaber.example/haber/fanout-{}", uuid::Uuid::new_v4()),
            }))
            .send()
            .await?;
        publish.push(ms(t.elapsed()));
        if !r.status().is_success() {
            bail!("publishing: HTTP {}", r.status());
        }
        let deadline = t + Duration::from_secs(args.delivery_timeout_secs);
        while posts.load(Ordering::Relaxed) < before + args.endpoints as u64 {
            if Instant::now() > deadline {
                bail!("alert {i} was not delivered to every endpoint in time");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        delivered.push(ms(t.elapsed()));
    }
    stop.cancel();

    let report = json!({
        "bench": "webhook-fanout",
        "endpoints": args.endpoints,
        "alerts": args.alerts,
        "register_secs": round2(registering.as_secs_f64()),
        "idle_secs": args.idle_secs,
        "idle_cpu_pct_postgres": pg_idle,
        "idle_cpu_pct_server": server_idle,
        "publish_http_ms": spread(publish),
        "all_delivered_ms": spread(delivered),
    });
    emit(&report, args.json);
    Ok(())
}
