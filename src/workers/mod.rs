//! Background work of every `serve` process. Durable state lives in PostgreSQL, so any process
//! can do any step, and several processes cooperate without coordination beyond row locks:
//!
//! - the stream follower (`stream::hub::follow`): new events → this process's tickers;
//! - [`scheduler`]: publishes scheduled alerts when due (`for update skip locked`);
//! - the stats flusher: this process's ticker counts → `alert_stats`, once a second;
//! - the webhook worker (`webhooks::worker`): delivers queued webhooks (`for update skip locked`);
//! - the feed poller (`feeds::poller`): polls due feeds, one process per feed at a time;
//! - [`housekeeping`]: expires idempotency keys and old stream events;
//! - the limiter sweep: forgets rate-limit entries of idle clients every minute, so their
//!   memory follows recent clients only.
//!
//! Each worker watches the shutdown token and finishes its current step before returning.

pub mod housekeeping;
pub mod scheduler;

use std::time::Duration;

use crate::{alerts::store, app::AppState, stream::hub};

/// How often the stream follower reads the log even without a NOTIFY.
const STREAM_POLL: Duration = Duration::from_secs(1);
const STATS_EVERY: Duration = Duration::from_secs(1);

pub fn spawn_all(state: &AppState) {
    let t = &state.tracker;
    t.spawn(hub::follow(state.hub.clone(), state.db.clone(), STREAM_POLL, state.shutdown.clone()));
    t.spawn(scheduler::run(state.db.clone(), state.shutdown.clone()));
    t.spawn(housekeeping::run(state.clone()));
    let webhooks = crate::webhooks::worker::Worker::new(
        state.db.clone(),
        &state.settings,
        state.outbound.clone(),
        t.clone(),
    );
    t.spawn(webhooks.run(state.shutdown.clone()));
    let feeds = crate::feeds::poller::Poller {
        pool: state.db.clone(),
        outbound: state.outbound.clone(),
        settings: state.settings.clone(),
        wake: state.feeds_wake.clone(),
    };
    t.spawn(feeds.run(state.shutdown.clone()));
    if let Some(push) = &state.push {
        t.spawn(push.fanout.clone().run(state.hub.clone(), state.shutdown.clone()));
    }
    let s = state.clone();
    t.spawn(async move {
        let mut every = tokio::time::interval(crate::server::rate_limits::SWEEP_EVERY);
        loop {
            tokio::select! {
                _ = s.shutdown.cancelled() => return,
                _ = every.tick() => s.public_limiter.retain_recent(),
            }
        }
    });
    let s = state.clone();
    t.spawn(async move {
        let mut every = tokio::time::interval(STATS_EVERY);
        loop {
            tokio::select! {
                _ = s.shutdown.cancelled() => return,
                _ = every.tick() => flush_stats(&s).await,
            }
        }
    });
}

/// Writes this process's ticker counts; on failure they are kept for the next try.
pub async fn flush_stats(state: &AppState) {
    let deltas = state.hub.take_reached();
    if let Err(e) = store::add_tickers_reached(&state.db, &deltas).await {
        tracing::warn!(error = %e, "could not write ticker figures; will retry");
        state.hub.restore_reached(&deltas);
    }
}
