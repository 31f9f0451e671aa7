//! The `sondakika` command line.
//!
//! `serve`, `migrate` and `token` work on the database directly (an operator's tools); `alert`
//! talks to a running server over HTTP with an editor token (an editor's tool). The load
//! generators behind BENCHMARKS.md are not here: they are the `sondakika-bench` package (bench/).

pub mod client;
pub mod feeds;

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sondakika",
    version,
    about = "Breaking-news alerts for newsrooms: live tickers and Web Push"
)]
pub struct Cli {
    /// TOML settings file (see the README's settings table).
    #[arg(long, global = true, env = "SONDAKIKA_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: API, ticker streams and background workers.
    Serve {
        /// Address to listen on (overrides the `bind` setting).
        #[arg(long)]
        bind: Option<SocketAddr>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Manage editor tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The installation's VAPID key pair for Web Push.
    #[command(subcommand)]
    Vapid(VapidCommand),
    /// Flag, list, show and retract alerts on a running server.
    Alert {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: AlertCommand,
    },
    /// Feeds in (admin token): register RSS/Atom/JSON feeds, watch their polls, send drafts.
    Feed {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: feeds::FeedCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token. Prints the token alone on stdout; it is shown only once.
    Create {
        /// Who the token is for, e.g. "Ayşe Yılmaz".
        #[arg(long)]
        name: String,
        /// `editor` flags, corrects and retracts alerts; `admin` also manages tokens, feeds and
        /// webhooks. (Strings here: the command line is parsed before anything of the
        /// database's is in reach; `main` turns the role into `auth::Role`.)
        #[arg(long, value_parser = ["editor", "admin"], default_value = "editor")]
        role: String,
    },
    /// List tokens (never their values).
    List,
    /// Revoke a token by id; it stops working at once.
    Revoke { id: i64 },
}

#[derive(Debug, Subcommand)]
pub enum VapidCommand {
    /// Create the installation's key pair in the database (every process then uses it). With
    /// `--print`, only print a new private key for the `vapid_private_key` setting.
    Generate {
        #[arg(long)]
        print: bool,
    },
    /// Print the public key (the `applicationServerKey` browsers subscribe with).
    Show,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Base URL of the sondakika server.
    #[arg(long, env = "SONDAKIKA_SERVER", default_value = "http://127.0.0.1:8080", global = true)]
    pub server: String,
    /// Editor token (from `sondakika token create`).
    #[arg(long, env = "SONDAKIKA_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AlertCommand {
    /// Flag an article as breaking news, then follow its delivery live.
    Send(client::SendArgs),
    /// List recent alerts, newest first.
    List {
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show one alert with its delivery figures.
    Show { id: String },
    /// Correct an alert: tickers show the new text at once, and readers' notifications are
    /// replaced quietly (or, with --renotify, alert again); then follow the correction's
    /// delivery to devices live.
    Correct(client::CorrectArgs),
    /// Retract an alert: tickers drop it and readers' devices remove its notification; then
    /// follow the retraction's delivery to devices live.
    Retract(client::RetractArgs),
}
