//! `sondakika alert …`: the editors' command-line client of the HTTP API.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use super::{AlertCommand, ServerArgs};

#[derive(Debug, Args)]
pub struct SendArgs {
    #[arg(long)]
    pub headline: String,
    #[arg(long)]
    pub url: String,
    #[arg(long)]
    pub summary: Option<String>,
    #[arg(long)]
    pub image: Option<String>,
    /// The article's id in the CMS (flagging it again while live returns the same alert).
    #[arg(long)]
    pub article_id: Option<String>,
    /// A topic slug; repeat for several. None: everyone.
    #[arg(long = "topic")]
    pub topics: Vec<String>,
    #[arg(long)]
    pub label: Option<String>,
    #[arg(long)]
    pub ttl_seconds: Option<i64>,
    #[arg(long)]
    pub urgency: Option<String>,
    /// Schedule for later (RFC 3339, e.g. 2026-11-27T18:30:00+03:00).
    #[arg(long)]
    pub send_at: Option<String>,
    /// Do not follow delivery; print the alert and exit.
    #[arg(long)]
    pub no_follow: bool,
    /// How long to follow delivery at most, in seconds.
    #[arg(long, default_value_t = 30)]
    pub follow_secs: u64,
}

/// How long to follow the delivery of a correction or retraction; `--no-wait` to return at once.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Return as soon as the server has taken it; do not follow the delivery to devices.
    #[arg(long)]
    pub no_wait: bool,
    /// Follow the delivery for at most this long, in seconds (the step goes on regardless).
    #[arg(long, default_value_t = 600)]
    pub follow_secs: u64,
}

#[derive(Debug, Args)]
pub struct CorrectArgs {
    /// The alert's id.
    pub id: String,
    /// The corrected headline.
    #[arg(long)]
    pub headline: Option<String>,
    /// The corrected summary; an empty one (`--summary ""`) removes it.
    #[arg(long)]
    pub summary: Option<String>,
    /// The corrected article link.
    #[arg(long)]
    pub url: Option<String>,
    /// The corrected image URL (https); an empty one (`--image ""`) removes it.
    #[arg(long)]
    pub image: Option<String>,
    /// Alert readers again (sound, vibration) instead of replacing the notification quietly.
    #[arg(long, conflicts_with = "no_push")]
    pub renotify: bool,
    /// Correct the tickers only: notifications already on devices stay as they are (pushes not
    /// yet sent go out corrected anyway).
    #[arg(long)]
    pub no_push: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct RetractArgs {
    /// The alert's id.
    pub id: String,
    /// Why, for the record, the tickers and the withdrawn notice.
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

pub(super) struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub(super) fn new(args: &ServerArgs) -> anyhow::Result<Self> {
        let token =
            args.token.clone().context("an editor token is needed: pass --token or set SONDAKIKA_TOKEN")?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("sondakika-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, base: args.server.trim_end_matches('/').to_string(), token })
    }

    pub(super) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status >= 400 {
            bail!("{}", problem_message(status, &value, &text));
        }
        Ok((status, value))
    }
}

impl Client {
    /// One look at an alert while following its delivery. A busy or unreachable server (a 5xx
    /// or 429 answer, a timeout, a refused connection) is worth another look and gives
    /// `Ok(Err(why))`; any other error answer ends the following.
    async fn look(&self, id: &str) -> anyhow::Result<Result<Value, String>> {
        let resp = self
            .http
            .get(format!("{}/api/v1/alerts/{id}", self.base))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return Ok(Err(format!("cannot reach the server ({e})"))),
        };
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match status {
            200..=299 => Ok(Ok(value)),
            429 | 500..=599 => Ok(Err(problem_message(status, &value, &text))),
            _ => bail!("{}", problem_message(status, &value, &text)),
        }
    }
}

/// An error answer for a person: the problem's title, status and detail, then every field at
/// fault on its own line (`push: must be one of quiet, renotify, none`). An answer that is not
/// problem+json (a proxy's error page) is shown by its status and first line.
fn problem_message(status: u16, problem: &Value, raw: &str) -> String {
    let (Some(title), detail) = (problem["title"].as_str(), problem["detail"].as_str()) else {
        let first = raw.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no body");
        let first: String = first.chars().take(200).collect();
        return format!("the server answered {status}, not with a problem+json error: {first}");
    };
    let mut out = format!("{title} ({status}): {}", detail.unwrap_or("no details"));
    let errors = problem["errors"].as_array().map(Vec::as_slice).unwrap_or_default();
    // One error is the detail already; list them when there are several.
    if errors.len() > 1 {
        for e in errors {
            out.push_str(&format!(
                "\n  {}: {}",
                e["field"].as_str().unwrap_or("?"),
                e["message"].as_str().unwrap_or("")
            ));
        }
    } else if let Some(field) = problem["field"].as_str()
        && !out.contains(field)
    {
        out.push_str(&format!(" (field `{field}`)"));
    }
    out
}

pub async fn run(server: ServerArgs, command: AlertCommand) -> anyhow::Result<()> {
    let client = Client::new(&server)?;
    match command {
        AlertCommand::Send(args) => send(&client, args).await,
        AlertCommand::List { limit } => {
            let (_, page) =
                client.call(reqwest::Method::GET, &format!("/api/v1/alerts?limit={limit}"), None).await?;
            for a in page["items"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:<9}  {:>6}  {}",
                    a["id"].as_str().unwrap_or(""),
                    a["status"].as_str().unwrap_or(""),
                    a["delivery"]["tickers_reached"],
                    a["headline"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        AlertCommand::Show { id } => {
            let (_, alert) = client.call(reqwest::Method::GET, &format!("/api/v1/alerts/{id}"), None).await?;
            println!("{}", serde_json::to_string_pretty(&alert)?);
            Ok(())
        }
        AlertCommand::Correct(args) => correct(&client, args).await,
        AlertCommand::Retract(args) => {
            let body = args.reason.map(|r| json!({ "reason": r }));
            let (_, alert) = client
                .call(reqwest::Method::POST, &format!("/api/v1/alerts/{}/retract", args.id), body)
                .await?;
            let id = alert["id"].as_str().unwrap_or_default().to_string();
            println!("retracted {id} — {}", alert["headline"].as_str().unwrap_or(""));
            if args.wait.no_wait {
                return Ok(());
            }
            follow_step(&client, &id, StepWanted::Retraction, Duration::from_secs(args.wait.follow_secs))
                .await
        }
    }
}

async fn correct(client: &Client, a: CorrectArgs) -> anyhow::Result<()> {
    let mut body = serde_json::Map::new();
    for (k, v) in [("headline", a.headline), ("url", a.url)] {
        if let Some(v) = v {
            body.insert(k.into(), json!(v));
        }
    }
    // Empty means remove: the API takes `null` for that.
    for (k, v) in [("summary", a.summary), ("image", a.image)] {
        if let Some(v) = v {
            body.insert(k.into(), if v.is_empty() { Value::Null } else { json!(v) });
        }
    }
    let push = match (a.renotify, a.no_push) {
        (_, true) => "none",
        (true, _) => "renotify",
        _ => "quiet",
    };
    body.insert("push".into(), json!(push));
    let (_, alert) = client
        .call(reqwest::Method::PATCH, &format!("/api/v1/alerts/{}", a.id), Some(Value::Object(body)))
        .await?;
    let id = alert["id"].as_str().unwrap_or_default().to_string();
    let revision = alert["revision"].as_i64().unwrap_or(0);
    println!("corrected {id} — {}", alert["headline"].as_str().unwrap_or(""));
    println!("  revision  {revision}");
    println!(
        "  devices   {}",
        match push {
            "none" => "tickers only: notifications already shown stay as they are",
            "renotify" => "readers are alerted again",
            _ => "readers' notifications are replaced quietly",
        }
    );
    if a.no_push || a.wait.no_wait {
        return Ok(());
    }
    follow_step(client, &id, StepWanted::Correction { revision }, Duration::from_secs(a.wait.follow_secs))
        .await
}

/// Which push step of an alert to follow.
#[derive(Clone, Copy)]
enum StepWanted {
    /// The step carrying this correction: the latest correction step that pushes this revision
    /// or a later one, or that is still collecting corrections (`waiting`).
    Correction {
        revision: i64,
    },
    Retraction,
}

impl StepWanted {
    fn kind(self) -> &'static str {
        match self {
            Self::Correction { .. } => "correction",
            Self::Retraction => "retraction",
        }
    }

    fn find(self, steps: &[Value]) -> Option<&Value> {
        steps.iter().rev().find(|s| {
            s["kind"] == self.kind()
                && match self {
                    Self::Correction { revision } => {
                        s["revision"].as_i64().unwrap_or(0) >= revision || s["state"] == "waiting"
                    }
                    Self::Retraction => true,
                }
        })
    }
}

fn steps_of(alert: &Value) -> &[Value] {
    alert["push_steps"].as_array().map(Vec::as_slice).unwrap_or_default()
}

fn step_settled(step: &Value) -> bool {
    matches!(step["state"].as_str(), Some("done" | "cancelled"))
}

/// 12430 → "12,430".
fn group(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn ms(v: &Value) -> String {
    match v.as_i64() {
        None => "–".into(),
        Some(n) if n < 1000 => format!("{n} ms"),
        Some(n) => format!("{:.1} s", n as f64 / 1000.0),
    }
}

/// "correction reached 12,430 of 19,500 devices · sending · pending 7,070 · failed 0 · gone 0 ·
/// 50/95/100 %: 640 ms / – / –"
fn step_line(step: &Value) -> String {
    let n = |k: &str| step[k].as_i64().unwrap_or(0);
    let sent = n("sent");
    let mut line = format!(
        "{} reached {} of {} device{} · {} · pending {} · failed {} · gone {}",
        step["kind"].as_str().unwrap_or("push"),
        group(sent),
        group(n("targeted")),
        if n("targeted") == 1 { "" } else { "s" },
        step["state"].as_str().unwrap_or("?"),
        group(n("pending")),
        group(n("failed")),
        group(n("gone")),
    );
    if n("retrying") > 0 {
        line.push_str(&format!(" (retrying {})", group(n("retrying"))));
    }
    line.push_str(&format!(
        " · 50/95/100 %: {} / {} / {}",
        ms(&step["ms_to_50"]),
        ms(&step["ms_to_95"]),
        ms(&step["ms_to_100"])
    ));
    line
}

fn spinner() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {elapsed:>3} {msg}").expect("valid template"));
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Ends the live display on its last line; without a terminal the spinner draws nothing, so the
/// line goes to stderr.
fn finish(bar: &ProgressBar, summary: String) {
    if bar.is_hidden() {
        eprintln!("{summary}");
    }
    bar.finish_with_message(summary);
}

/// Polls the alert and shows one push step's progress live until the step is done (or
/// cancelled), or the time is up.
async fn follow_step(client: &Client, id: &str, wanted: StepWanted, limit: Duration) -> anyhow::Result<()> {
    let bar = spinner();
    let started = Instant::now();
    // Once found, the step is followed by its number (another editor's later correction is
    // another step).
    let mut number: Option<i64> = None;
    let mut line = String::new();
    loop {
        let alert = match client.look(id).await? {
            Ok(alert) => alert,
            Err(why) => {
                if started.elapsed() > limit {
                    finish(&bar, format!("{line} (stopped following after {} s: {why})", limit.as_secs()));
                    return Ok(());
                }
                bar.set_message(format!("{line} (retrying: {why})"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let steps = steps_of(&alert);
        if steps.is_empty() && alert["push"].is_null() {
            finish(
                &bar,
                "no push to follow: Web Push is off on this server, or the alert never went out".into(),
            );
            return Ok(());
        }
        let step = match number {
            Some(k) => steps.iter().find(|s| s["step"].as_i64() == Some(k)),
            None => wanted.find(steps),
        };
        match step {
            Some(step) => {
                number = step["step"].as_i64();
                line = step_line(step);
                if step_settled(step) {
                    finish(&bar, line);
                    return Ok(());
                }
                if started.elapsed() > limit {
                    finish(&bar, format!("{line} (stopped following after {} s)", limit.as_secs()));
                    return Ok(());
                }
                bar.set_message(line.clone());
            }
            None => {
                // The server records the step with the change; give a lagging one a moment.
                if started.elapsed() > Duration::from_secs(10).min(limit) {
                    bar.finish_and_clear();
                    bail!("the server shows no {} step for alert {id}; nothing to follow", wanted.kind());
                }
                bar.set_message(format!("waiting for the {} step", wanted.kind()));
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn send(client: &Client, a: SendArgs) -> anyhow::Result<()> {
    let mut body = json!({ "headline": a.headline, "url": a.url, "topics": a.topics });
    for (k, v) in [
        ("summary", a.summary),
        ("image", a.image),
        ("article_id", a.article_id),
        ("label", a.label),
        ("urgency", a.urgency),
        ("send_at", a.send_at),
    ] {
        if let Some(v) = v {
            body[k] = json!(v);
        }
    }
    if let Some(ttl) = a.ttl_seconds {
        body["ttl_seconds"] = json!(ttl);
    }
    let (status, alert) = client.call(reqwest::Method::POST, "/api/v1/alerts", Some(body)).await?;
    let id = alert["id"].as_str().unwrap_or_default().to_string();
    if status == 200 {
        println!("this article already has a live alert; showing it");
    }
    println!("{} {}", alert["label"].as_str().unwrap_or(""), alert["headline"].as_str().unwrap_or(""));
    println!("  id      {id}");
    println!("  seq     {}", alert["seq"]);
    println!("  status  {}", alert["status"].as_str().unwrap_or(""));
    println!("  topics  {}", alert["topics"]);
    if a.no_follow {
        return Ok(());
    }
    follow(client, &id, Duration::from_secs(a.follow_secs)).await
}

/// Polls the alert's figures and shows them until they settle (tickers unchanged for three
/// seconds after publication and the original push step done), the alert is retracted, or the
/// time is up.
async fn follow(client: &Client, id: &str, limit: Duration) -> anyhow::Result<()> {
    let bar = spinner();
    let started = Instant::now();
    let mut last = String::new();
    let mut stable_since = Instant::now();
    let mut line = String::new();
    loop {
        let alert = match client.look(id).await? {
            Ok(alert) => alert,
            Err(why) => {
                if started.elapsed() > limit {
                    finish(&bar, format!("{line} (stopped following: {why})"));
                    return Ok(());
                }
                bar.set_message(format!("{line} (retrying: {why})"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let status = alert["status"].as_str().unwrap_or("").to_string();
        let reached = alert["delivery"]["tickers_reached"].as_i64().unwrap_or(0);
        let original = steps_of(&alert).first();
        line = format!("{status}: {reached} live tickers reached");
        if let Some(step) = original {
            line.push_str(&format!(" · {}", step_line(step)));
        }
        bar.set_message(line.clone());
        let key = format!("{status} {reached}");
        if key != last {
            last = key;
            stable_since = Instant::now();
        }
        let settled = status == "live"
            && stable_since.elapsed() > Duration::from_secs(3)
            && original.is_none_or(step_settled);
        if settled || status == "retracted" || started.elapsed() > limit {
            finish(&bar, line);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
