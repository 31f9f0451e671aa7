//! The PostgreSQL connection: which server, the pool, and the schema.
//!
//! Tables belong to the modules that use them (`alerts::store`, `auth`, `stream::hub`); this
//! module only connects and migrates.

pub(crate) mod listen;
pub mod local;

use std::time::Duration;

use anyhow::Context;
use sqlx::{
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::Settings;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Where the database is: a URL from the settings, or the private cluster this process runs.
pub struct Database {
    pub options: PgConnectOptions,
    /// Keeps the private server alive; dropping it stops the server if we started it.
    pub local: Option<local::LocalPostgres>,
}

impl Database {
    /// Resolves the settings to a server, starting the private one if no URL is set.
    pub async fn locate(settings: &Settings) -> anyhow::Result<Self> {
        match &settings.database_url {
            Some(url) => Ok(Self {
                options: url
                    .expose()
                    .parse()
                    .context("invalid setting `database_url`: not a PostgreSQL URL")?,
                local: None,
            }),
            None => {
                let dir = settings.data_dir.join("postgres");
                let bin = settings.pg_bin_dir.clone();
                let local = tokio::task::spawn_blocking(move || {
                    local::LocalPostgres::start(&dir, bin.as_deref(), None)
                })
                .await??;
                Ok(Self { options: local.connect_options(), local: Some(local) })
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
        .connect_with(options.application_name("sondakika"))
        .await
        .context("connecting to PostgreSQL")?;
    Ok(pool)
}

/// Applies pending migrations. Refuses a database whose schema is newer than this binary.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    check_not_newer(pool).await?;
    MIGRATOR.run(pool).await.context("applying migrations")?;
    Ok(())
}

/// Errors if the database has migrations this binary does not know (a newer version ran on it).
pub async fn check_not_newer(pool: &PgPool) -> anyhow::Result<()> {
    let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let applied = sqlx::query_scalar!("select max(version) from _sqlx_migrations where success")
        .fetch_one(pool)
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
