//! The alert's path: what flagging, correcting and retracting do, each in one transaction.
//!
//! Every way an alert changes goes through here: the editor API, the scheduler, the feed
//! poller and the editors' CLI (through the API). Each action runs in the caller's transaction
//! and writes, through the module that owns each table:
//!
//! 1. the alert ([`alerts::store`]),
//! 2. the push step that takes it to devices ([`push::store`], when it was out),
//! 3. the stream event tickers receive ([`alerts::store::log_event`]; it takes the stream lock,
//!    so it comes as late as possible),
//! 4. the webhook deliveries for the newsroom's other channels ([`webhooks`]).
//!
//! Committed means all four happened: a process killed right after the commit loses nothing,
//! and one that dies before it leaves no trace.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    alerts::{
        domain::{AlertStatus, Correction, DevicePush, NewAlert, Reason},
        events::EventKind,
        store::{self, Alert},
        view::StepKind,
    },
    push,
    webhooks::{self, EventType},
};

pub use crate::alerts::store::Flagged;

/// Flags an article: a new alert, published at once unless `send_at` is in the future, or the
/// live one the article already has.
pub async fn flag(
    tx: &mut PgConnection,
    new: &NewAlert,
    editor_id: i64,
    now: DateTime<Utc>,
) -> sqlx::Result<Flagged> {
    match store::insert(tx, new, editor_id, now).await? {
        Flagged::Created(alert) if alert.status == AlertStatus::Live => {
            Ok(Flagged::Created(go_live(tx, alert.id).await?))
        }
        other => Ok(other),
    }
}

/// Publishes an alert that is due: stream event, webhooks, and its push (step 0) queued in the
/// same transaction, so that published means queued.
async fn go_live(tx: &mut PgConnection, id: Uuid) -> sqlx::Result<Alert> {
    let alert = store::mark_published(tx, id).await?;
    webhooks::enqueue(tx, EventType::Flagged, &alert).await?;
    push::store::queue_job(tx, id).await?;
    Ok(alert)
}

/// Publishes the scheduled alerts that are due, up to `batch`, in one transaction. Several
/// processes may run this at once; each due alert goes to exactly one. Returns how many fired.
pub async fn fire_due(pool: &PgPool, batch: i64) -> sqlx::Result<usize> {
    let mut tx = pool.begin().await?;
    let due = store::lock_due(&mut tx, batch).await?;
    for id in &due {
        go_live(&mut tx, *id).await?;
    }
    tx.commit().await?;
    Ok(due.len())
}

/// What an editor's change found.
pub enum Changed {
    Done(Alert),
    NotFound,
    /// A correction of an alert already retracted: nothing changed.
    Retracted(Alert),
}

/// Applies an editor's correction. If the alert is out, tickers get an `update` and devices
/// that were sent it a correction push (unless `push` is `none`), which waits `coalesce` for
/// further corrections to join it.
pub async fn correct(
    tx: &mut PgConnection,
    id: Uuid,
    c: &Correction,
    coalesce: Duration,
) -> sqlx::Result<Changed> {
    let Some(current) = store::lock(tx, id).await? else { return Ok(Changed::NotFound) };
    if current.status == AlertStatus::Retracted {
        return Ok(Changed::Retracted(current));
    }
    store::apply_correction(tx, id, c).await?;
    if current.status == AlertStatus::Live {
        if c.push != DevicePush::None {
            let quiet = c.push == DevicePush::Quiet;
            let revision = current.revision + 1;
            push::store::queue_step(tx, id, StepKind::Correction, revision, quiet, coalesce).await?;
        }
        let alert = store::log_event(tx, id, EventKind::Update).await?;
        webhooks::enqueue(tx, EventType::Corrected, &alert).await?;
        return Ok(Changed::Done(alert));
    }
    Ok(Changed::Done(store::get(tx, id).await?.expect("locked row")))
}

/// Retracts an alert. If it was out, pushes not yet sent never go, devices that were sent it get
/// its retraction, and tickers a `retract`. Retracting twice is harmless.
pub async fn retract(tx: &mut PgConnection, id: Uuid, reason: Option<&Reason>) -> sqlx::Result<Changed> {
    let Some(current) = store::lock(tx, id).await? else { return Ok(Changed::NotFound) };
    if current.status == AlertStatus::Retracted {
        return Ok(Changed::Done(current));
    }
    store::mark_retracted(tx, id, reason).await?;
    if current.status == AlertStatus::Live {
        // Running ranges stop when their process's hub sees the event below.
        let revision = current.revision;
        push::store::queue_step(tx, id, StepKind::Retraction, revision, true, Duration::ZERO).await?;
        let alert = store::log_event(tx, id, EventKind::Retract).await?;
        webhooks::enqueue(tx, EventType::Retracted, &alert).await?;
        return Ok(Changed::Done(alert));
    }
    Ok(Changed::Done(store::get(tx, id).await?.expect("locked row")))
}
