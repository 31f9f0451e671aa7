//! `sondakika feed …`: registering and watching feeds on a running server (admin token), and
//! the drafts suggest-mode feeds make (any editor token).

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::{ServerArgs, client::Client};

#[derive(Debug, Subcommand)]
pub enum FeedCommand {
    /// Register a feed (RSS, Atom or JSON Feed), e.g. a WordPress category feed
    /// https://www.example.com.tr/category/son-dakika/feed/
    Add(FeedArgs),
    /// List feeds with their last poll outcome.
    List,
    /// Show one feed, its outcome and its latest items.
    Show { id: String },
    /// Change a feed: any of `add`'s options.
    Set {
        id: String,
        #[command(flatten)]
        args: FeedArgs,
    },
    /// Stop polling a feed.
    Disable { id: String },
    /// Poll a feed again.
    Enable { id: String },
    /// Poll a feed now.
    Poll { id: String },
    /// Remove a feed (its alerts stay).
    Remove { id: String },
    /// Drafts waiting for an editor, newest first.
    Drafts,
    /// Send a draft as an alert.
    Send { draft_id: String },
}

#[derive(Debug, Args)]
pub struct FeedArgs {
    /// The feed's URL (required for `add`).
    #[arg(long)]
    pub url: Option<String>,
    /// What editors see it as.
    #[arg(long)]
    pub name: Option<String>,
    /// Label of its alerts (default SON DAKİKA).
    #[arg(long)]
    pub label: Option<String>,
    /// A topic its alerts go to; repeat for several.
    #[arg(long = "topic")]
    pub topics: Vec<String>,
    /// `suggest` (drafts for editors, the default) or `auto` (alerts at once).
    #[arg(long)]
    pub mode: Option<String>,
    /// Only items whose title starts with this, e.g. "SON DAKİKA".
    #[arg(long)]
    pub title_prefix: Option<String>,
    /// Only items with this category or tag.
    #[arg(long)]
    pub category: Option<String>,
    /// Seconds between polls.
    #[arg(long = "interval")]
    pub interval_secs: Option<i64>,
}

impl FeedArgs {
    fn body(self) -> Value {
        let mut m = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.into(), v);
            }
        };
        put("url", self.url.map(Value::from));
        put("name", self.name.map(Value::from));
        put("label", self.label.map(Value::from));
        put("topics", (!self.topics.is_empty()).then(|| json!(self.topics)));
        put("mode", self.mode.map(Value::from));
        put("title_prefix", self.title_prefix.map(Value::from));
        put("category", self.category.map(Value::from));
        put("interval_secs", self.interval_secs.map(Value::from));
        Value::Object(m)
    }
}

fn outcome(f: &Value) -> String {
    match (f["last_error"].as_str(), f["last_success_at"].as_str()) {
        (Some(e), _) => format!("FAILING ({}x): {e}", f["failures"]),
        (None, Some(at)) => format!("ok at {at}, {} new", f["last_new_items"]),
        (None, None) => "not polled yet".into(),
    }
}

pub async fn run(server: ServerArgs, command: FeedCommand) -> anyhow::Result<()> {
    let client = Client::new(&server)?;
    let path = |id: &str| format!("/api/v1/feeds/{id}");
    match command {
        FeedCommand::Add(args) => {
            let (_, f) = client.call(Method::POST, "/api/v1/feeds", Some(args.body())).await?;
            println!(
                "{}  {}  {}  every {} s  {}",
                f["id"].as_str().unwrap_or(""),
                f["mode"].as_str().unwrap_or(""),
                f["name"].as_str().unwrap_or(""),
                f["interval_secs"],
                f["url"].as_str().unwrap_or("")
            );
        }
        FeedCommand::List => {
            let (_, page) = client.call(Method::GET, "/api/v1/feeds", None).await?;
            for f in page["items"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:<7}  {:<8}  {}  {}",
                    f["id"].as_str().unwrap_or(""),
                    f["mode"].as_str().unwrap_or(""),
                    if f["enabled"] == true { "enabled" } else { "disabled" },
                    f["name"].as_str().unwrap_or(""),
                    outcome(f)
                );
            }
        }
        FeedCommand::Show { id } => {
            let (_, f) = client.call(Method::GET, &path(&id), None).await?;
            println!("{}", serde_json::to_string_pretty(&f)?);
        }
        FeedCommand::Set { id, args } => {
            let (_, f) = client.call(Method::PATCH, &path(&id), Some(args.body())).await?;
            println!("{}", serde_json::to_string_pretty(&f)?);
        }
        FeedCommand::Disable { id } => {
            client.call(Method::PATCH, &path(&id), Some(json!({"enabled": false}))).await?;
            println!("disabled {id}");
        }
        FeedCommand::Enable { id } => {
            client.call(Method::PATCH, &path(&id), Some(json!({"enabled": true}))).await?;
            println!("enabled {id}");
        }
        FeedCommand::Poll { id } => {
            client.call(Method::POST, &format!("{}/poll", path(&id)), None).await?;
            println!("polling {id} now; see `sondakika feed show {id}`");
        }
        FeedCommand::Remove { id } => {
            client.call(Method::DELETE, &path(&id), None).await?;
            println!("removed {id}");
        }
        FeedCommand::Drafts => {
            let (_, page) = client.call(Method::GET, "/api/v1/feeds/drafts", None).await?;
            for d in page["items"].as_array().into_iter().flatten() {
                println!(
                    "{}  {}  [{}]  {}",
                    d["id"].as_str().unwrap_or(""),
                    d["seen_at"].as_str().unwrap_or(""),
                    d["feed_name"].as_str().unwrap_or(""),
                    d["headline"].as_str().unwrap_or("")
                );
            }
        }
        FeedCommand::Send { draft_id } => {
            let (status, a) =
                client.call(Method::POST, &format!("/api/v1/feeds/drafts/{draft_id}/send"), None).await?;
            let what = if status == 201 { "sent" } else { "already sent" };
            println!("{what} {} — {}", a["id"].as_str().unwrap_or(""), a["headline"].as_str().unwrap_or(""));
        }
    }
    Ok(())
}
