//! An alert as editors and integrations see it: the alert, its ticker figures and, when push is
//! on, each step of its push to devices with its figures.
//!
//! These are plain read models, shared by the editor API, the console and the webhook payloads
//! (so all three show an alert the same way). The push module fills the push figures from its
//! tables; the kinds and states here are the values of its `push_jobs` columns.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    domain::{AlertStatus, Urgency},
    store::Alert,
};

/// An alert as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct AlertView {
    pub id: Uuid,
    /// Its position in the stream (absent while it is scheduled).
    pub seq: Option<i64>,
    pub status: AlertStatus,
    /// 0 as flagged; one more with each correction.
    pub revision: i32,
    pub label: String,
    pub headline: String,
    pub summary: Option<String>,
    pub url: String,
    pub image: Option<String>,
    pub article_id: Option<String>,
    pub topics: Vec<String>,
    pub urgency: Urgency,
    pub ttl_seconds: i32,
    pub send_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub retracted_at: Option<DateTime<Utc>>,
    pub retract_reason: Option<String>,
    pub created_by: Option<String>,
    pub delivery: Delivery,
    /// Web Push figures (on `GET /alerts/{id}`, once the alert is published and push is on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<PushFigures>,
    /// Each fan-out of the alert to devices, oldest first: the original push, each correction
    /// and the retraction, with its own figures (when push is on).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub push_steps: Vec<PushStep>,
    pub links: Links,
}

#[derive(Serialize, ToSchema)]
pub struct Delivery {
    /// Live tickers sent the alert so far, summed over every server process (flushed each
    /// second).
    pub tickers_reached: i64,
}

/// Where to find the alert and what to do with it (paths on this server, and the article).
#[derive(Serialize, ToSchema)]
pub struct Links {
    #[serde(rename = "self")]
    pub self_: String,
    pub retract: String,
    pub deliveries: String,
    pub article: String,
}

impl From<Alert> for AlertView {
    fn from(a: Alert) -> Self {
        let self_ = format!("/api/v1/alerts/{}", a.id);
        Self {
            expires_at: a.expires_at(),
            links: Links {
                retract: format!("{self_}/retract"),
                deliveries: format!("{self_}/deliveries"),
                article: a.url.clone(),
                self_,
            },
            delivery: Delivery { tickers_reached: a.tickers_reached },
            push: None,
            push_steps: Vec::new(),
            id: a.id,
            seq: a.seq,
            status: a.status,
            revision: a.revision,
            label: a.label,
            headline: a.headline,
            summary: a.summary,
            url: a.url,
            image: a.image,
            article_id: a.article_id,
            topics: a.topics,
            urgency: a.urgency,
            ttl_seconds: a.ttl_seconds,
            send_at: a.send_at,
            created_at: a.created_at,
            published_at: a.published_at,
            updated_at: a.updated_at,
            retracted_at: a.retracted_at,
            retract_reason: a.retract_reason,
            created_by: a.created_by,
        }
    }
}

/// The kinds of push step an alert goes through: its original push, corrections, its
/// retraction (`push_jobs.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    Alert,
    Correction,
    Retraction,
}

/// Where a step's fan-out is (`push_jobs.state`, and `waiting`, which the figures derive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, ToSchema)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    /// Inside its coalescing window, or behind an earlier step of the alert still sending.
    Waiting,
    /// Queued: its targets are being divided into ranges.
    Planning,
    /// Its ranges are being sent.
    Running,
    Done,
    /// Never sent: the alert was retracted first.
    Cancelled,
}

/// Where one step's fan-out is, and how far it got.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StepFigures {
    pub state: StepState,
    pub targeted: i64,
    pub sent: i64,
    pub failed: i64,
    pub gone: i64,
    pub expired: i64,
    pub skipped: i64,
    pub pending: i64,
    /// Of the pending, those waiting for another try (their push service failed or was down).
    pub retrying: i64,
    /// Milliseconds from the step's request (publication, for the original) until the push
    /// services had answered 50/95/100 % of its targets.
    pub ms_to_50: Option<i64>,
    pub ms_to_95: Option<i64>,
    pub ms_to_100: Option<i64>,
}

/// Push figures of one alert: its original push (step 0) and the receipts.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PushFigures {
    #[serde(flatten)]
    pub figures: StepFigures,
    pub shown: i64,
    pub clicked: i64,
}

/// One step of an alert's push: the original, a correction or the retraction, with its
/// figures.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PushStep {
    /// 0 for the original push, then one per correction and the retraction.
    pub step: i16,
    pub kind: StepKind,
    /// The alert's revision the step was asked for (a correction's pushes carry the alert as it
    /// reads when they are sent, which may be newer).
    pub revision: i32,
    /// A quiet correction replaces the notification without a second sound or vibration.
    pub quiet: bool,
    /// When the editor published, corrected or retracted (for coalesced corrections, the last).
    pub requested_at: DateTime<Utc>,
    #[serde(flatten)]
    pub figures: StepFigures,
}
