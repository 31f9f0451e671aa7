//! The gauges that describe the whole service rather than this process: the push backlog and
//! its last milestones, webhook endpoints and feeds by health. They are read from the database
//! every [`EVERY`], not on each scrape, so that `/metrics` answers at once even while the
//! database does not; every process reports the same figures.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{feeds, push, telemetry::metrics, webhooks};

/// Fine enough for alert rules that wait minutes, coarse enough to cost nothing.
const EVERY: Duration = Duration::from_secs(15);

/// `push`: whether this process sends Web Push. Without it alerts still queue their push steps,
/// which nobody works, so a push-less installation must not report them as a stalled backlog.
pub async fn run(pool: PgPool, push: bool, shutdown: CancellationToken) {
    loop {
        if let Err(e) = once(&pool, push).await {
            tracing::warn!(error = %e, "could not read the service gauges; will retry");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

async fn once(pool: &PgPool, push: bool) -> sqlx::Result<()> {
    if push {
        let b = push::store::backlog(pool).await?;
        metrics::push_unfinished(b.unfinished, Duration::from_secs_f64(b.oldest_secs.max(0.0)));
        for (label, took) in ["50", "95", "100"].into_iter().zip(b.last_milestones) {
            if let Some(took) = took {
                metrics::push_last_milestone(label, Duration::from_secs_f64(took.max(0.0)));
            }
        }
    }
    let w = webhooks::store::endpoint_health(pool).await?;
    for (label, n) in ["healthy", "failing", "disabled", "disabled_by_admin"].into_iter().zip(w) {
        metrics::webhook_endpoints(label, n);
    }
    let f = feeds::store::health(pool).await?;
    for (label, n) in ["healthy", "failing", "disabled"].into_iter().zip(f) {
        metrics::feeds(label, n);
    }
    Ok(())
}
