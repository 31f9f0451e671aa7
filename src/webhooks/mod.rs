//! Webhooks out: the newsroom's other channels (a Telegram bot, a Slack room, an X account's
//! scheduler) learn of every alert, signed per the Standard Webhooks specification.
//!
//! - **Durable, in the event's own transaction.** Flagging, correcting and retracting an alert,
//!   and a fan-out finishing, call [`enqueue`] inside the transaction that makes the change: one
//!   `webhook_events` row with the body as it will be sent, whatever the number of endpoints.
//!   Committed means queued, also if the process dies right after. A worker then expands the
//!   event into one `webhook_deliveries` row per enabled endpoint subscribed to it (at that
//!   moment), off the alert's path.
//! - **Off the alert's path.** Nothing is sent in that transaction. Every process runs a
//!   [`worker`] that claims due deliveries with a lease (`for update skip locked`), sends them
//!   with bounded concurrency and its own time limit, and records each attempt. A slow or dead
//!   receiver holds at most a few of the worker's places, never a ticker's or a push's.
//! - **At least once.** A process that dies mid-attempt leaves the delivery claimed until its
//!   lease runs out; then any process tries again, with the same `webhook-id` (receivers drop
//!   duplicates by it). Failed attempts are retried with exponential backoff for
//!   `webhook_retry_window_secs`; an endpoint failing for `webhook_disable_after_secs` is
//!   disabled until an admin enables it again.

pub mod signature;
pub mod store;
pub mod worker;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::alerts::{store::Alert, view::AlertView};

/// What happened, as the payload's `type` says and an endpoint subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum EventType {
    /// An alert was published (at once, or when its `send_at` came).
    #[serde(rename = "alert.flagged")]
    Flagged,
    /// A published alert was corrected.
    #[serde(rename = "alert.corrected")]
    Corrected,
    /// A published alert was retracted.
    #[serde(rename = "alert.retracted")]
    Retracted,
    /// An alert's Web Push fan-out finished; `data.push` has its figures.
    #[serde(rename = "alert.delivered")]
    Delivered,
}

impl EventType {
    pub const ALL: [EventType; 4] = [Self::Flagged, Self::Corrected, Self::Retracted, Self::Delivered];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Flagged => "alert.flagged",
            Self::Corrected => "alert.corrected",
            Self::Retracted => "alert.retracted",
            Self::Delivered => "alert.delivered",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == value)
    }
}

/// The body of every delivery.
#[derive(Serialize)]
pub struct Payload<T: Serialize> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When the event happened (RFC 3339, UTC, milliseconds).
    pub timestamp: String,
    pub data: T,
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Queues `event` about `alert` for every endpoint subscribed to it, inside the caller's
/// transaction; `data` is the alert as the API shows it. Costs one insert.
pub async fn enqueue(tx: &mut PgConnection, event: EventType, alert: &Alert) -> sqlx::Result<()> {
    enqueue_data(tx, event, &AlertView::from(alert.clone())).await
}

/// Queues `event` with any `data` (e.g. the alert with its push figures).
pub async fn enqueue_data<T: Serialize>(
    tx: &mut PgConnection,
    event: EventType,
    data: &T,
) -> sqlx::Result<()> {
    let body = serde_json::to_string(&Payload { kind: event.as_str(), timestamp: rfc3339(Utc::now()), data })
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    store::queue(tx, event, &new_message_id(), &body).await?;
    Ok(())
}

/// Whether any enabled endpoint wants `event`, so that a caller can skip building its data.
pub async fn wanted(tx: &mut PgConnection, event: EventType) -> sqlx::Result<bool> {
    store::wanted(tx, event).await
}

/// A `webhook-id`: unique per event, the same on every try and for every endpoint.
fn new_message_id() -> String {
    format!("msg_{}", Uuid::now_v7().simple())
}
