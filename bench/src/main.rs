//! `sondakika-bench`: the load generators behind BENCHMARKS.md, kept out of the `sondakika`
//! binary a newsroom deploys. `scripts/bench-tickers`, `scripts/bench-push` and
//! `scripts/bench-integrations` (and `scripts/bench-webhook-fanout`) build and run it.
//!
//! It talks to the server under test as any client does (HTTP, WebSocket), and uses the
//! `sondakika` library only for what must be measured in process (the push payload, our
//! encryption, our VAPID signing) and for the settings that locate the server's database (the
//! seeding of subscriptions).

mod fanout;
mod integrations;
mod proc;
mod push;
mod tickers;
mod tls;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "sondakika-bench", version, about = "Load generators for sondakika's benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Live tickers: hold N WebSocket clients, publish K alerts, measure publish → receive
    /// latency for every delivery and the server's memory per idle connection.
    Tickers(tickers::TickersArgs),
    /// Web Push: push-service sink, crypto costs, subscription seeding, fan-out measurement.
    #[command(subcommand)]
    Push(push::PushBench),
    /// An `auto` feed served here, to tickers: item appears in the feed → every ticker has it.
    Feed(integrations::FeedArgs),
    /// Webhook endpoints served here: deliveries per second until each has every event.
    Webhooks(integrations::WebhookArgs),
    /// Many webhook endpoints: the idle CPU they cost, and an alert's POST with all of them.
    WebhookFanout(fanout::FanoutArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Tickers(args) => tickers::run(args).await,
        Command::Push(cmd) => push::run(cmd).await,
        Command::Feed(args) => integrations::feed(args).await,
        Command::Webhooks(args) => integrations::webhooks(args).await,
        Command::WebhookFanout(args) => fanout::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `x` rounded to `places` decimals, for figures in the JSON output.
fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

fn round2(x: f64) -> f64 {
    round(x, 2)
}

/// A count on the command line, from 1 to `max`, so that a run fits one machine and ends by
/// itself. clap refuses anything else, naming the flag and the range.
fn count(max: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..=max)
}
