//! Removes what is no longer needed: idempotency keys after a day, stream events after a week
//! (beyond any replay window; the alerts themselves are kept).

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const EVERY: Duration = Duration::from_secs(3600);

pub async fn run(pool: PgPool, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        let keys = sqlx::query("delete from idempotency_keys where created_at < now() - interval '24 hours'")
            .execute(&pool)
            .await;
        let events = sqlx::query("delete from stream_events where created_at < now() - interval '7 days'")
            .execute(&pool)
            .await;
        match (keys, events) {
            (Ok(k), Ok(e)) => {
                tracing::debug!(keys = k.rows_affected(), events = e.rows_affected(), "housekeeping done")
            }
            (Err(e), _) | (_, Err(e)) => tracing::warn!(error = %e, "housekeeping failed; will retry"),
        }
    }
}
