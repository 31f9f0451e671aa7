//! `push fanout`: publishes one alert (or corrects one) on a running server and measures its
//! Web Push fan-out to 100 %: wall time, pushes/s, and the CPU time the server, PostgreSQL, the
//! sink and the whole machine spent per push.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use sondakika::{alerts::view::StepKind, push::payload};

use super::{CORRECTED_HEADLINE, alert_from_view, alert_request};
use crate::{
    proc::{cpu_between, machine_busy_secs, pg_cpu, proc_cpu},
    round2,
};

#[derive(Debug, Args)]
pub struct FanoutArgs {
    /// Base URL of the sondakika server.
    #[arg(long, default_value = "http://127.0.0.1:18282")]
    server: String,
    /// Editor token.
    #[arg(long, env = "SONDAKIKA_TOKEN", hide_env_values = true)]
    token: String,
    /// PID of the server process: its CPU time is read before the publish and at 100 %.
    #[arg(long)]
    server_pid: u32,
    /// PostgreSQL's data directory (its postmaster.pid): PostgreSQL's CPU time is read too.
    #[arg(long)]
    pg_data: Option<PathBuf>,
    /// The server's metrics endpoint (`metrics_bind`): the CPU its encryption took in this
    /// fan-out is read from it, giving crypto's share of the server's CPU in the same run.
    #[arg(long)]
    metrics: Option<String>,
    /// The sink's base URL (`GET /stats`); its PID comes from there.
    #[arg(long)]
    sink: Option<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 1800)]
    timeout_secs: u64,
    /// Write the payload the server sends (rebuilt from the published alert) to this file.
    #[arg(long)]
    payload_out: Option<PathBuf>,
    /// Print one JSON object on stdout (the summary then goes to stderr).
    #[arg(long)]
    json: bool,
    /// Done when this many pushes are sent (the reachable subscribers), not when none is
    /// pending: pushes to unreachable push services go on being retried long after.
    #[arg(long)]
    reachable: Option<i64>,
    /// Instead of publishing a new alert, correct this one (`PATCH`, after its fan-out) and
    /// measure the correction's push step to every device that was sent it.
    #[arg(long, value_name = "ALERT_ID")]
    correct: Option<String>,
    /// How that correction treats the notification already shown: `quiet` or `renotify`.
    #[arg(long, default_value = "quiet", requires = "correct")]
    correct_push: String,
}

/// The figures of the push step a run measures: the original's (`push`), or the correction's
/// step (the newest correction step numbered above `after`).
fn measured_step(view: &Value, correction_after: Option<i64>) -> Value {
    match correction_after {
        None => view["push"].clone(),
        Some(after) => view["push_steps"]
            .as_array()
            .and_then(|steps| {
                steps
                    .iter()
                    .rev()
                    .find(|s| s["kind"] == "correction" && s["step"].as_i64().unwrap_or(-1) > after)
            })
            .cloned()
            .unwrap_or(Value::Null),
    }
}

/// `sondakika_push_encryption_cpu_microseconds_total` from a Prometheus text page, in seconds.
/// `GET /api/v1/alerts/{id}`: the alert with its push figures.
async fn alert_view(http: &reqwest::Client, base: &str, auth: &str, id: &str) -> anyhow::Result<Value> {
    Ok(http
        .get(format!("{base}/api/v1/alerts/{id}"))
        .header("authorization", auth)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

async fn encryption_cpu(http: &reqwest::Client, url: Option<&str>) -> Option<f64> {
    let text = http.get(url?).send().await.ok()?.text().await.ok()?;
    let line = text.lines().find(|l| l.starts_with("sondakika_push_encryption_cpu_microseconds_total"))?;
    Some(line.split_whitespace().last()?.parse::<f64>().ok()? / 1e6)
}

pub async fn run(args: FanoutArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    // Absent before the first push: zero.
    let encryption_before = encryption_cpu(&http, args.metrics.as_deref()).await.unwrap_or(0.0);
    let base = args.server.trim_end_matches('/');
    let auth = format!("Bearer {}", args.token);
    let sink_before: Option<Value> = match &args.sink {
        Some(s) => Some(
            http.get(format!("{}/stats", s.trim_end_matches('/')))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?,
        ),
        None => None,
    };
    let sink_pid = sink_before.as_ref().and_then(|v| v["pid"].as_u64()).map(|p| p as u32);

    let run = format!("{}", chrono::Utc::now().timestamp_millis());
    // A correction is measured from the steps the alert has before it.
    let correction_after = match &args.correct {
        Some(id) => {
            let v = alert_view(&http, base, &auth, id).await?;
            let steps = v["push_steps"]
                .as_array()
                .context("the server shows no push_steps: too old for --correct")?;
            Some(steps.iter().filter_map(|s| s["step"].as_i64()).max().unwrap_or(-1))
        }
        None => None,
    };
    let server_before = proc_cpu(args.server_pid, false)
        .context("cannot read the server's /proc stat: is --server-pid right?")?;
    let pg_before = args.pg_data.as_deref().and_then(pg_cpu);
    let sink_cpu_before = sink_pid.and_then(|p| proc_cpu(p, false));
    let own_before = proc_cpu(std::process::id(), false);
    let busy_before = machine_busy_secs();
    let t0 = Instant::now();
    let resp = match &args.correct {
        Some(id) => {
            http.patch(format!("{base}/api/v1/alerts/{id}"))
                .header("authorization", &auth)
                .json(&json!({ "headline": CORRECTED_HEADLINE, "push": args.correct_push }))
                .send()
                .await?
        }
        None => {
            http.post(format!("{base}/api/v1/alerts"))
                .header("authorization", &auth)
                .json(&alert_request(&run))
                .send()
                .await?
        }
    };
    let status = resp.status();
    let created: Value = resp.json().await?;
    if !status.is_success() {
        bail!("publishing failed: HTTP {status}: {created}");
    }
    let id = created["id"].as_str().context("no id in the answer")?.to_string();
    let publish_ms = t0.elapsed().as_secs_f64() * 1e3;

    let deadline = t0 + Duration::from_secs(args.timeout_secs);
    let mut last_progress = String::new();
    let mut last_print = Instant::now();
    let (view, complete) = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let v = alert_view(&http, base, &auth, &id).await?;
        let p = measured_step(&v, correction_after);
        let targeted = p["targeted"].as_i64().unwrap_or(0);
        // A correction step is planned after its coalescing window: until then it targets no one.
        let planned = !matches!(p["state"].as_str(), Some("waiting" | "planning"));
        let done = match args.reachable {
            Some(n) => p["sent"].as_i64().unwrap_or(0) >= n,
            None => targeted > 0 && planned && p["pending"].as_i64() == Some(0),
        };
        if done {
            break (v, true);
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_progress = format!("{:.0} s: {p}", t0.elapsed().as_secs_f64());
            eprintln!("  {last_progress}");
            last_print = Instant::now();
        }
        if Instant::now() > deadline {
            eprintln!("gave up after {} s; last: {last_progress}", args.timeout_secs);
            break (v, false);
        }
    };
    let wall = t0.elapsed().as_secs_f64();
    let server_after = proc_cpu(args.server_pid, false).context("the server exited")?;
    let pg_after = args.pg_data.as_deref().and_then(pg_cpu);
    let sink_cpu_after = sink_pid.and_then(|p| proc_cpu(p, false));
    let own_after = proc_cpu(std::process::id(), false);
    let busy_after = machine_busy_secs();
    let encryption =
        encryption_cpu(&http, args.metrics.as_deref()).await.map(|after| after - encryption_before);

    let p = &measured_step(&view, correction_after);
    let targeted = p["targeted"].as_i64().unwrap_or(0);
    let sent = p["sent"].as_i64().unwrap_or(0);
    let pushes = args.reachable.unwrap_or(targeted).max(1) as f64;
    let server_cpu = server_after.total() - server_before.total();
    let pg = cpu_between(pg_before, pg_after);
    let sink_cpu = cpu_between(sink_cpu_before, sink_cpu_after);
    let own = cpu_between(own_before, own_after);
    let busy = busy_before.zip(busy_after).map(|(a, b)| b - a);
    let sink_after: Option<Value> = match &args.sink {
        Some(s) => Some(http.get(format!("{}/stats", s.trim_end_matches('/'))).send().await?.json().await?),
        None => None,
    };
    let sink_delta = match (&sink_before, &sink_after) {
        (Some(a), Some(b)) => {
            let d = |k: &str| b[k].as_i64().unwrap_or(0) - a[k].as_i64().unwrap_or(0);
            Some(json!({
                "requests": d("requests"), "bytes": d("bytes"), "vapid": d("vapid"),
                "aes128gcm": d("aes128gcm"), "ttl": d("ttl"), "urgency_high": d("urgency_high"),
                "distinct_authorization_total": b["distinct_authorization"],
                "tls_connections": d("tls_handshakes"),
            }))
        }
        _ => None,
    };
    let payload_bytes = match alert_from_view(&view) {
        Ok(alert) => {
            let bytes = payload::build(&alert, StepKind::Alert, false);
            if let Some(path) = &args.payload_out {
                std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
            }
            Some(bytes.len())
        }
        Err(e) => {
            eprintln!("could not rebuild the payload: {e:#}");
            None
        }
    };
    let per_push = |s: Option<f64>| s.map(|s| round2(s * 1e6 / pushes));
    let out = json!({
        "alert_id": id,
        "measured": if args.correct.is_some() { "correction" } else { "alert" },
        "complete": complete,
        "push": p,
        "payload_bytes": payload_bytes,
        "publish_http_ms": round2(publish_ms),
        "wall_secs": (wall * 1000.0).round() / 1000.0,
        "pushes_per_sec": round2(targeted as f64 / wall),
        "server_ms_to_100": p["ms_to_100"],
        "cpu_secs": {
            "server": round2(server_cpu),
            "server_user": round2(server_after.user - server_before.user),
            "server_sys": round2(server_after.sys - server_before.sys),
            "postgres": pg.map(round2),
            "sink": sink_cpu.map(round2),
            "load_generator": own.map(round2),
            "machine_busy": busy.map(round2),
            "server_encryption": encryption.map(round2),
        },
        "cpu_us_per_push": {
            "server": round2(server_cpu * 1e6 / pushes),
            "postgres": per_push(pg),
            "sink": per_push(sink_cpu),
            "machine_busy": per_push(busy),
            "server_encryption": per_push(encryption),
        },
        "sink": sink_delta,
    });
    eprintln!(
        "{} fan-out of {targeted} pushes ({sent} sent): {wall:.2} s to 100 % ({:.0} pushes/s); server CPU {server_cpu:.2} s = {:.1} µs/push (encryption {}); postgres {}; sink {}",
        if args.correct.is_some() { "correction" } else { "alert" },
        targeted as f64 / wall,
        server_cpu * 1e6 / pushes,
        encryption.map_or("-".into(), |s| format!("{:.1} µs/push", s * 1e6 / pushes)),
        pg.map_or("-".into(), |s| format!("{:.1} µs/push", s * 1e6 / pushes)),
        sink_cpu.map_or("-".into(), |s| format!("{:.1} µs/push", s * 1e6 / pushes)),
    );
    if args.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    if !complete {
        bail!("the fan-out did not reach 100 % within {} s", args.timeout_secs);
    }
    Ok(())
}
