//! Web Push benchmarks for BENCHMARKS.md (`sondakika-bench push ...`).
//!
//! - `sink`: an accept-everything push-service double (answers 201 to any POST, counts), over
//!   plain HTTP/1.1 and, with `--tls-bind`, over TLS with HTTP/2 (a stream limit per
//!   connection) and HTTP/1.1 like the real push services; `--delay-ms` makes it far away;
//! - `crypto`: the per-message cost of encryption and VAPID, in process, against the floor
//!   (one P-256 key generation + one ECDH + HKDF + AES-128-GCM with aws-lc-rs directly);
//! - `seed`: bulk-inserts M subscriptions pointing at a sink;
//! - `fanout`: publishes one alert to a running server and measures the fan-out to 100 %: wall
//!   time, pushes/s and the CPU time the server (and PostgreSQL, and the sink) spent per push.
//!
//! `scripts/bench-push` runs them in order, then the Node `web-push` reference
//! (bench/node-webpush) against the same sink.

mod crypto;
mod fanout;
mod seed;
mod sink;

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};
use sondakika::alerts::{
    domain::{AlertStatus, Urgency},
    store::Alert,
};

#[derive(Debug, Subcommand)]
pub enum PushBench {
    /// An accept-everything push-service double: 201 to any POST, `GET /stats` for the counts.
    Sink(sink::SinkArgs),
    /// Per-message cost of encryption and VAPID signing, in process, against the floor.
    Crypto(crypto::CryptoArgs),
    /// Bulk-inserts subscriptions whose endpoints point at a sink (uses the server's settings
    /// to find the database, like `sondakika token`).
    Seed(seed::SeedArgs),
    /// Publishes one alert to a running server and measures its Web Push fan-out to 100 %.
    Fanout(fanout::FanoutArgs),
}

pub async fn run(cmd: PushBench) -> anyhow::Result<()> {
    match cmd {
        PushBench::Sink(a) => sink::run(a).await,
        PushBench::Crypto(a) => crypto::run(a).await,
        PushBench::Seed(a) => seed::run(a).await,
        PushBench::Fanout(a) => fanout::run(a).await,
    }
}

// ---------------------------------------------------------------------------------------------
// The alert every run sends: a realistic breaking-news alert, ~1 KB of payload.

const HEADLINE: &str =
    "Burdur'da 5,1 büyüklüğünde deprem: AFAD ilk belirlemeleri açıkladı, okullar yarın tatil edildi";
const SUMMARY: &str = "Burdur merkezli 5,1 büyüklüğündeki deprem saat 14.32'de kaydedildi ve çevre illerde de \
hissedildi. AFAD, şu ana kadar can kaybı ya da ağır hasar bildirilmediğini, ekiplerin köylerde tespit \
çalışmalarını sürdürdüğünü açıkladı. Valilik, tedbir amacıyla il genelindeki okulların yarın tatil \
edildiğini duyurdu. Vatandaşların hasar gören binalara girmemesi ve resmi açıklamaları takip etmesi istendi.";
const URL_BASE: &str =
    "https://www.burdurweb.com/haber/burdurda-5-1-buyuklugunde-deprem-afad-ilk-belirlemeleri-acikladi";
const IMAGE: &str = "https://img.burdurweb.com/2025/11/burdur-deprem-afad-ekipleri-sahada-1200x675.jpg";
/// The correction `push fanout --correct` publishes: the magnitude revised, as AFAD often
/// does within the hour (the same length, so the payload costs what the original's did).
const CORRECTED_HEADLINE: &str =
    "Burdur'da 5,3 büyüklüğünde deprem: AFAD ilk belirlemeleri açıkladı, okullar yarın tatil edildi";
const TTL_SECS: i32 = 3600;

/// The `POST /api/v1/alerts` body (a unique URL per run: the same URL would be deduplicated).
fn alert_request(run: &str) -> Value {
    json!({
        "headline": HEADLINE,
        "summary": SUMMARY,
        "url": format!("{URL_BASE}-{run}"),
        "image": IMAGE,
        "topics": ["gundem", "deprem"],
        "label": "SON DAKİKA",
        "ttl_seconds": TTL_SECS,
        "urgency": "high",
    })
}

/// The same alert as the server stores it, for payloads built in process.
fn sample_alert() -> Alert {
    let now = chrono::Utc::now();
    Alert {
        id: uuid::Uuid::now_v7(),
        seq: Some(1234),
        status: AlertStatus::Live,
        revision: 0,
        label: "SON DAKİKA".into(),
        headline: HEADLINE.into(),
        summary: Some(SUMMARY.into()),
        url: format!("{URL_BASE}-{}", now.timestamp_millis()),
        image: Some(IMAGE.into()),
        article_id: None,
        topics: vec!["deprem".into(), "gundem".into()],
        urgency: Urgency::High,
        ttl_seconds: TTL_SECS,
        send_at: None,
        created_at: now,
        published_at: Some(now),
        updated_at: now,
        retracted_at: None,
        retract_reason: None,
        created_by: Some("bench".into()),
        tickers_reached: 0,
    }
}

/// An alert as `GET /api/v1/alerts/{id}` shows it, back into the stored shape.
fn alert_from_view(v: &Value) -> anyhow::Result<Alert> {
    let s = |k: &str| v[k].as_str().map(String::from);
    let t = |k: &str| -> Option<chrono::DateTime<chrono::Utc>> { v[k].as_str().and_then(|x| x.parse().ok()) };
    Ok(Alert {
        id: s("id").context("alert without id")?.parse()?,
        seq: v["seq"].as_i64(),
        status: serde_json::from_value(v["status"].clone()).context("alert without a status")?,
        revision: v["revision"].as_i64().unwrap_or(0) as i32,
        label: s("label").unwrap_or_default(),
        headline: s("headline").unwrap_or_default(),
        summary: s("summary"),
        url: s("url").unwrap_or_default(),
        image: s("image"),
        article_id: s("article_id"),
        topics: v["topics"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
            .unwrap_or_default(),
        urgency: serde_json::from_value(v["urgency"].clone()).context("alert without an urgency")?,
        ttl_seconds: v["ttl_seconds"].as_i64().unwrap_or(0) as i32,
        send_at: t("send_at"),
        created_at: t("created_at").context("alert without created_at")?,
        published_at: t("published_at"),
        updated_at: t("updated_at").context("alert without updated_at")?,
        retracted_at: t("retracted_at"),
        retract_reason: s("retract_reason"),
        created_by: s("created_by"),
        tickers_reached: 0,
    })
}
