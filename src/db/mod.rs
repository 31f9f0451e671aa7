//! The PostgreSQL connection: which server, the pool, and the schema.
//!
//! Tables belong to the modules that use them (`alerts::store`, `auth`, `stream::hub`); this
//! module only connects and migrates.

pub(crate) mod listen;
pub mod local;

use std::time::Duration;

use anyhow::Context;
use sqlx::{
    ConnectOptions, Connection, PgConnection, PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::Settings;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// `application_name` of each kind of connection a process opens, so that `pg_stat_activity`
/// tells them apart (the README's "Connections to PostgreSQL" lists them with their bounds).
pub mod app_name {
    /// The pool: requests and workers (`db_pool_size`).
    pub const POOL: &str = "sondakika";
    /// One per LISTEN channel (`database_direct_url`).
    pub const LISTEN: &str = "sondakika-listen";
    /// Renews the leases of the fan-out ranges this process is sending, while it holds any.
    pub const LEASE: &str = "sondakika-lease";
    /// Applies migrations at start, under a session advisory lock (`database_direct_url`).
    pub const MIGRATE: &str = "sondakika-migrate";
}

/// Where the database is: a URL from the settings, or the private cluster this process runs.
pub struct Database {
    pub options: PgConnectOptions,
    /// For what needs a session of its own (LISTEN, the migrations' advisory lock): the
    /// database itself when `options` lead to a pooler that hands out transactions.
    pub direct: PgConnectOptions,
    /// Keeps the private server alive; dropping it stops the server if we started it.
    pub local: Option<local::LocalPostgres>,
}

impl Database {
    /// Resolves the settings to a server, starting the private one if no URL is set.
    pub async fn locate(settings: &Settings) -> anyhow::Result<Self> {
        match &settings.database_url {
            Some(url) => {
                let options: PgConnectOptions =
                    url.expose().parse().context("invalid setting `database_url`: not a PostgreSQL URL")?;
                let direct = match &settings.database_direct_url {
                    Some(direct) => direct
                        .expose()
                        .parse()
                        .context("invalid setting `database_direct_url`: not a PostgreSQL URL")?,
                    None => options.clone(),
                };
                Ok(Self { options, direct, local: None })
            }
            None => {
                let dir = settings.data_dir.join("postgres");
                let bin = settings.pg_bin_dir.clone();
                let local = tokio::task::spawn_blocking(move || {
                    local::LocalPostgres::start(&dir, bin.as_deref(), None)
                })
                .await??;
                let options = local.connect_options();
                Ok(Self { direct: options.clone(), options, local: Some(local) })
            }
        }
    }
}

impl Database {
    /// Stops the private server, if this process started one, on a blocking thread: a fast
    /// shutdown can take seconds, which must not stall the async threads still finishing.
    pub async fn shutdown(mut self) {
        if let Some(mut local) = self.local.take() {
            let _ = tokio::task::spawn_blocking(move || local.stop()).await;
        }
    }
}

/// A pool that fails fast when the database is down instead of hanging requests.
pub async fn connect(options: PgConnectOptions, size: u32) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(size)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.application_name(app_name::POOL))
        .await
        .context("connecting to PostgreSQL")?;
    Ok(pool)
}

/// The LISTEN connections: one per channel, held for the process's life (a lost one is opened
/// again). A pool of their own, so that they never take a slot of the main pool and can reach
/// the database directly past a pooler (`direct`); opened when a listener first asks.
pub fn listeners(direct: PgConnectOptions, channels: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(channels)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(direct.application_name(app_name::LISTEN))
}

/// Applies pending migrations over a connection of their own to `direct`: sqlx's migrator holds
/// a session advisory lock (so that processes starting together migrate one at a time), which
/// a pooler handing out transactions would leave on a server connection other clients then get.
/// Refuses a database whose schema is newer than this binary.
pub async fn migrate_directly(direct: &PgConnectOptions) -> anyhow::Result<()> {
    let mut conn = direct
        .clone()
        .application_name(app_name::MIGRATE)
        .connect()
        .await
        .context("connecting to PostgreSQL to migrate")?;
    migrate_on(&mut conn).await?;
    conn.close().await.context("closing the migration connection")?;
    Ok(())
}

/// [`migrate_directly`] over a connection of `pool` (which must not lead to a pooler in
/// transaction mode).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    migrate_on(&mut *pool.acquire().await.context("connecting to PostgreSQL to migrate")?).await
}

async fn migrate_on(conn: &mut PgConnection) -> anyhow::Result<()> {
    check_not_newer(conn).await?;
    MIGRATOR.run(conn).await.context("applying migrations")?;
    Ok(())
}

/// Errors if the database has migrations this binary does not know (a newer version ran on it).
pub async fn check_not_newer(conn: &mut PgConnection) -> anyhow::Result<()> {
    let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let applied = sqlx::query_scalar!("select max(version) from _sqlx_migrations where success")
        .fetch_one(conn)
        .await
        .or_else(|e| match &e {
            // No migrations table yet: a fresh database.
            sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => Ok(None),
            _ => Err(e),
        })?;
    if let Some(applied) = applied
        && applied > known
    {
        anyhow::bail!(
            "the database schema is at version {applied}, newer than this sondakika knows ({known}); \
             run the newer sondakika or restore a matching backup"
        );
    }
    Ok(())
}

/// True when every migration this binary knows is applied (for `/readyz`).
pub async fn is_migrated(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let applied = sqlx::query_scalar!("select max(version) from _sqlx_migrations where success")
        .fetch_one(pool)
        .await?;
    Ok(applied == Some(known))
}
