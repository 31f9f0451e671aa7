//! A batch's outcome writer: outcomes flushed in multi-row transactions every `FLUSH_EVERY` or
//! `FLUSH_ROWS`, retried while the database is briefly away.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc};

use super::{FLUSH_EVERY, FLUSH_ROWS, delivery::Finished};
use crate::{
    push::store::{self, Deactivation, PushOutcome},
    telemetry::metrics,
};

pub(super) async fn write_outcomes(
    pool: PgPool,
    flushes: Arc<Semaphore>,
    job: store::JobKey,
    mut rx: mpsc::UnboundedReceiver<Finished>,
    deactivation: Deactivation,
) -> anyhow::Result<()> {
    let mut pending: Vec<PushOutcome> = Vec::with_capacity(FLUSH_ROWS);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    let mut last_flush = Instant::now();
    loop {
        let closed = tokio::select! {
            o = rx.recv() => match o {
                Some(f) => { pending.push(f.outcome); false }
                None => true,
            },
            _ = tick.tick() => false,
        };
        let due = closed || pending.len() >= FLUSH_ROWS || last_flush.elapsed() >= FLUSH_EVERY;
        if !pending.is_empty() && due {
            let _slot = flushes.acquire().await.expect("semaphore never closes");
            flush(&pool, &job, &mut pending, &deactivation).await?;
            last_flush = Instant::now();
        }
        if closed {
            return Ok(());
        }
    }
}

async fn flush(
    pool: &PgPool,
    job: &store::JobKey,
    pending: &mut Vec<PushOutcome>,
    deactivation: &Deactivation,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match store::record(pool, job, pending, deactivation).await {
            Ok(()) => {
                metrics::deliveries_logged(pending.len() as u64);
                pending.clear();
                return Ok(());
            }
            // The database may be briefly away: keep the outcomes and retry, so that nothing is
            // sent twice for want of a log row.
            Err(e) if backoff < Duration::from_secs(30) => {
                tracing::warn!(error = %e, "writing delivery outcomes failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
