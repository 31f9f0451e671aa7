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

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(args: &ServerArgs) -> anyhow::Result<Self> {
        let token =
            args.token.clone().context("an editor token is needed: pass --token or set SONDAKIKA_TOKEN")?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("sondakika-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, base: args.server.trim_end_matches('/').to_string(), token })
    }

    async fn call(
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
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if status >= 400 {
            let detail = value["detail"].as_str().unwrap_or("no details");
            let title = value["title"].as_str().unwrap_or("request failed");
            bail!("{title} ({status}): {detail}");
        }
        Ok((status, value))
    }
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
        AlertCommand::Retract { id, reason } => {
            let body = reason.map(|r| json!({ "reason": r }));
            let (_, alert) =
                client.call(reqwest::Method::POST, &format!("/api/v1/alerts/{id}/retract"), body).await?;
            println!(
                "retracted {} — {}",
                alert["id"].as_str().unwrap_or(""),
                alert["headline"].as_str().unwrap_or("")
            );
            Ok(())
        }
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

/// Polls the alert's figures and shows them until they settle (no change for three seconds
/// after publication), the alert is retracted, or the time is up.
async fn follow(client: &Client, id: &str, limit: Duration) -> anyhow::Result<()> {
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {elapsed:>3} {msg}").expect("valid template"));
    bar.enable_steady_tick(Duration::from_millis(120));
    let started = Instant::now();
    let mut last = (String::new(), -1i64);
    let mut stable_since = Instant::now();
    loop {
        let (_, alert) = client.call(reqwest::Method::GET, &format!("/api/v1/alerts/{id}"), None).await?;
        let status = alert["status"].as_str().unwrap_or("").to_string();
        let reached = alert["delivery"]["tickers_reached"].as_i64().unwrap_or(0);
        bar.set_message(format!("{status}: {reached} live tickers reached"));
        if (status.clone(), reached) != last {
            last = (status.clone(), reached);
            stable_since = Instant::now();
        }
        let settled = status == "live" && stable_since.elapsed() > Duration::from_secs(3);
        if settled || status == "retracted" || started.elapsed() > limit {
            let summary = format!("{status}: {reached} live tickers reached");
            // Without a terminal the spinner draws nothing; still say how it ended.
            if bar.is_hidden() {
                eprintln!("{summary}");
            }
            bar.finish_with_message(summary);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
