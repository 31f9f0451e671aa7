//! Publishes scheduled alerts on time, also across restarts: the schedule is the `alerts` table.

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{alerts::store, publish, telemetry::metrics};

/// The longest the scheduler sleeps without looking: bounds how late an alert added by another
/// process can fire.
const MAX_SLEEP: Duration = Duration::from_millis(250);

pub async fn run(pool: PgPool, shutdown: CancellationToken) {
    loop {
        let mut sleep = MAX_SLEEP;
        match publish::fire_due(&pool, 100).await {
            Ok(0) => {}
            Ok(n) => {
                metrics::alerts_published(n as u64);
                tracing::info!(count = n, "scheduled alerts published");
                continue; // there may be more due
            }
            Err(e) => {
                tracing::warn!(error = %e, "scheduler could not publish due alerts; retrying");
                sleep = Duration::from_secs(1);
            }
        }
        if let Ok(Some(next)) = store::next_due(&pool).await {
            let until = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            sleep = sleep.min(until);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}
