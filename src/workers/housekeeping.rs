//! Removes what is no longer needed, at start and then hourly: idempotency keys after a day,
//! stream events after a week (beyond any replay window; the alerts themselves are kept), push
//! subscriptions unseen for `subscription_max_idle_days`, delivery-log partitions past
//! `delivery_retention_days` (and creates the next days' partitions), finished webhook
//! deliveries past `delivery_retention_days`.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{alerts, idempotency, push, webhooks};

const EVERY: Duration = Duration::from_secs(3600);

/// How long things are kept (from the settings of the same names).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub delivery_retention_days: u32,
    pub subscription_max_idle_days: u32,
}

pub async fn run(pool: PgPool, keep: Retention, shutdown: CancellationToken) {
    loop {
        if let Err(e) = once(&pool, keep).await {
            tracing::warn!(error = %e, "housekeeping failed; will retry");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

async fn once(pool: &PgPool, keep: Retention) -> sqlx::Result<()> {
    let keys = idempotency::delete_expired(pool).await?;
    let events = alerts::store::prune_events(pool).await?;
    push::store::maintain_partitions(pool, keep.delivery_retention_days).await?;
    let stale = push::store::drop_stale_subscriptions(pool, keep.subscription_max_idle_days).await?;
    let webhooks = webhooks::store::forget_finished(pool, keep.delivery_retention_days).await?;
    tracing::debug!(keys, events, stale_subscriptions = stale, webhooks, "housekeeping done");
    Ok(())
}
