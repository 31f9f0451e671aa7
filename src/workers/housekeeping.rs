//! Removes what is no longer needed, at start and then hourly: idempotency keys after a day,
//! stream events after a week (beyond any replay window; the alerts themselves are kept), push
//! subscriptions unseen for `subscription_max_idle_days`, delivery-log partitions past
//! `delivery_retention_days` (and creates the next days' partitions), finished webhook
//! deliveries past `delivery_retention_days`.

use std::time::Duration;

use crate::{app::AppState, push};

const EVERY: Duration = Duration::from_secs(3600);

pub async fn run(state: AppState) {
    loop {
        if let Err(e) = once(&state).await {
            tracing::warn!(error = %e, "housekeeping failed; will retry");
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

async fn once(state: &AppState) -> sqlx::Result<()> {
    let pool = &state.db;
    let keys = crate::idempotency::delete_expired(pool).await?;
    let events = crate::alerts::store::prune_events(pool).await?;
    push::store::maintain_partitions(pool, state.settings.delivery_retention_days).await?;
    let stale =
        push::store::drop_stale_subscriptions(pool, state.settings.subscription_max_idle_days).await?;
    let webhooks =
        crate::webhooks::store::forget_finished(pool, state.settings.delivery_retention_days).await?;
    tracing::debug!(keys, events, stale_subscriptions = stale, webhooks, "housekeeping done");
    Ok(())
}
