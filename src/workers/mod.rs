//! Background work of every `serve` process. Durable state lives in PostgreSQL, so any process
//! can do any step, and several processes cooperate without coordination beyond row locks:
//!
//! - the stream follower (`stream::hub::follow`): new events → this process's tickers;
//! - [`scheduler`]: publishes scheduled alerts when due (`for update skip locked`);
//! - the stats flusher: this process's ticker counts → `alert_stats`, once a second;
//! - the webhook worker (`webhooks::worker`): delivers queued webhooks (`for update skip locked`);
//! - the feed poller (`feeds::poller`): polls due feeds, one process per feed at a time;
//! - the drafts follower (`feeds::live`): keeps the drafts list the consoles' streams share;
//! - [`housekeeping`]: expires idempotency keys and old stream events;
//! - [`gauges`]: the service-wide figures on `/metrics` (push backlog, webhook endpoints, feeds);
//! - the limiter sweep: forgets rate-limit entries of idle clients every minute, so their
//!   memory follows recent clients only.
//!
//! Each worker watches the shutdown token and finishes its current step before returning.
//! [`crate::app`] starts them all.

pub mod gauges;
pub mod housekeeping;
pub mod scheduler;

use sqlx::PgPool;

use crate::{alerts::store, stream::hub::Hub};

/// Writes this process's ticker counts; on failure they are kept for the next try.
pub async fn flush_stats(hub: &Hub, pool: &PgPool) {
    let deltas = hub.take_reached();
    if let Err(e) = store::add_tickers_reached(pool, &deltas).await {
        tracing::warn!(error = %e, "could not write ticker figures; will retry");
        hub.restore_reached(&deltas);
    }
}
