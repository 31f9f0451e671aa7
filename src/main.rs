//! The `sondakika` binary: parse the command line, set up logs, call into the library.

use std::process::ExitCode;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use clap::Parser;
use sondakika::{
    app::Application,
    auth,
    cli::{self, Cli, Command, TokenCommand, VapidCommand},
    config::{self, Settings},
    db::{self, Database},
    push, telemetry,
};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    // Settings are read once, here: the server sizes its runtime by `worker_threads`. A
    // settings error is reported by `run`, for the commands that need settings.
    let needs_settings = !matches!(
        cli.command,
        Command::Alert { .. } | Command::Vapid(VapidCommand::Generate { print: true })
    );
    let settings = needs_settings.then(|| Settings::load(cli.config.as_deref()));
    if let (Command::Serve { .. }, Some(Ok(s))) = (&cli.command, &settings)
        && s.worker_threads > 0
    {
        runtime.worker_threads(s.worker_threads);
    }
    let runtime = match runtime.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    cli: Cli,
    settings: Option<Result<Settings, sondakika::config::SettingsError>>,
) -> anyhow::Result<()> {
    let settings = move || settings.expect("settings are read for every command that needs them");
    match cli.command {
        Command::Alert { server, command } => cli::client::run(server, command).await,
        Command::Feed { server, command } => cli::feeds::run(server, command).await,
        Command::Serve { bind } => {
            let mut settings = settings()?;
            if let Some(bind) = bind {
                settings.bind = bind;
            }
            telemetry::init_logs(&settings.log_level, settings.log_format);
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            let app = Application::build(settings, shutdown).await?;
            app.run().await
        }
        Command::Migrate => {
            let settings = settings()?;
            telemetry::init_logs(&settings.log_level, settings.log_format);
            let database = Database::locate(&settings).await?;
            db::migrate_directly(&database.direct).await?;
            database.shutdown().await;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Vapid(VapidCommand::Generate { print: true }) => {
            let key = push::vapid::generate_private_key()?;
            let public = config::vapid_public_key(&key)?;
            eprintln!("public key (applicationServerKey): {}", URL_SAFE_NO_PAD.encode(public));
            eprintln!("private key for the `vapid_private_key` setting (keep it secret):");
            println!("{key}");
            Ok(())
        }
        Command::Vapid(cmd) => {
            let settings = settings()?;
            telemetry::init_logs("warn", settings.log_format);
            let database = Database::locate(&settings).await?;
            let pool = db::connect(database.options.clone(), 2).await?;
            db::migrate_directly(&database.direct).await?;
            let stored = push::vapid::stored_public_key(&pool).await?;
            let result = match (cmd, stored) {
                (VapidCommand::Show, Some(public)) | (VapidCommand::Generate { .. }, Some(public)) => {
                    eprintln!("the installation's VAPID public key:");
                    println!("{}", URL_SAFE_NO_PAD.encode(public));
                    Ok(())
                }
                (VapidCommand::Show, None) => Err(anyhow::anyhow!(
                    "no VAPID key yet: run `sondakika vapid generate` or start the service"
                )),
                (VapidCommand::Generate { .. }, None) => {
                    let public = push::vapid::create_key(&pool).await?;
                    eprintln!("created the installation's VAPID key pair; public key:");
                    println!("{}", URL_SAFE_NO_PAD.encode(public));
                    Ok(())
                }
            };
            pool.close().await;
            database.shutdown().await;
            result
        }
        Command::Token(cmd) => {
            let settings = settings()?;
            telemetry::init_logs("warn", settings.log_format);
            let database = Database::locate(&settings).await?;
            let pool = db::connect(database.options.clone(), 2).await?;
            db::migrate_directly(&database.direct).await?;
            let result = token(&pool, cmd).await;
            pool.close().await;
            database.shutdown().await;
            result
        }
    }
}

async fn token(pool: &sqlx::PgPool, cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create { name, role } => {
            let role = auth::Role::parse("--role", &role).map_err(|e| anyhow::anyhow!("{e}"))?;
            let (id, token) = auth::create(pool, &name, role).await?;
            eprintln!("created token {id} for {name} ({}); it is shown only this once:", role.as_str());
            println!("{token}");
        }
        TokenCommand::List => {
            println!(
                "{:>4}  {:<7}  {:<12}  {:<20}  {:<20}  name",
                "id", "role", "token", "created", "revoked"
            );
            for t in auth::list(pool).await? {
                println!(
                    "{:>4}  {:<7}  {:<12}  {:<20}  {:<20}  {}",
                    t.id,
                    t.role.as_str(),
                    t.hint,
                    t.created_at.format("%Y-%m-%d %H:%M"),
                    t.revoked_at
                        .map(|r| r.format("%Y-%m-%d %H:%M").to_string())
                        .unwrap_or_else(|| "-".into()),
                    t.name
                );
            }
        }
        TokenCommand::Revoke { id } => {
            if !auth::revoke(pool, id).await? {
                anyhow::bail!("there is no token with id {id} (see `sondakika token list`)");
            }
            eprintln!("token {id} revoked");
        }
    }
    Ok(())
}

/// Cancels the token on SIGTERM or SIGINT; a second signal exits at once.
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down: closing tickers and finishing requests");
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: exiting now");
    std::process::exit(130);
}
