//! LISTEN with reconnects, for every process-wide wake-up (new stream events, new push work).
//!
//! NOTIFY only ever says "look now": whoever listens reads the state itself, so a notification
//! lost while the connection was down costs latency, never work. What this loop owes its
//! callers is to come back: reconnect with backoff (never a tight loop against a struggling
//! database), say so in the log, and show it in `sondakika_stream_listener_connected{channel}`.

use std::time::Duration;

use sqlx::{PgPool, postgres::PgListener};
use tokio_util::sync::CancellationToken;

use crate::telemetry::metrics;

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Calls `wake` for every notification on `channel` (and once after each reconnect, when
/// something may have been missed) until shutdown. `PgListener::try_recv` is not documented as
/// cancel-safe, so it is raced only against shutdown: run this in a task of its own.
pub async fn listen(
    pool: PgPool,
    channel: &'static str,
    wake: impl Fn() + Send,
    shutdown: CancellationToken,
) {
    let mut backoff = BACKOFF_FIRST;
    // Down until the first LISTEN succeeds: a process that never reaches the database must show
    // it, not show nothing.
    metrics::listener_connected(channel, false);
    let mut listener = loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut l) => match l.listen(channel).await {
                Ok(()) => break l,
                Err(e) => tracing::warn!(error = %e, channel, "could not LISTEN; retrying"),
            },
            Err(e) => tracing::warn!(error = %e, channel, "listener could not connect; retrying"),
        }
        if !pause(&mut backoff, &shutdown).await {
            return;
        }
    };
    metrics::listener_connected(channel, true);
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            n = listener.try_recv() => n,
        };
        match next {
            Ok(Some(_)) => {
                backoff = BACKOFF_FIRST;
                metrics::listener_connected(channel, true);
            }
            // The connection was lost and has been re-established (with LISTEN again): what was
            // committed in between is found by the look this wake-up triggers.
            Ok(None) => {
                tracing::warn!(channel, "listener lost its database connection; reconnected");
                metrics::listener_connected(channel, true);
            }
            Err(e) => {
                metrics::listener_connected(channel, false);
                tracing::warn!(error = %e, channel, "listener cannot reach the database; retrying");
                if !pause(&mut backoff, &shutdown).await {
                    return;
                }
                continue;
            }
        }
        wake();
    }
}

/// Waits out the backoff (doubling it, up to a bound); false at shutdown.
async fn pause(backoff: &mut Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => return false,
        _ = tokio::time::sleep(*backoff) => {}
    }
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    true
}
