//! The alert's events as the stream log keeps them: their kinds and frames.
//!
//! A frame is built once, when the event is appended to `stream_events`, and then sent verbatim
//! to every ticker, replayed from the log, and served by `GET /api/v1/live`. Its wire format is
//! documented for third-party clients in `docs/stream-protocol.md`; keep the two in step.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{domain::Urgency, store::Alert};

/// What happened to an alert, as `stream_events.kind` stores it (its check constraint allows
/// exactly these). Decoded strictly: a row of another kind is an error, never skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum EventKind {
    Alert,
    Update,
    Retract,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alert => "alert",
            Self::Update => "update",
            Self::Retract => "retract",
        }
    }
}

/// Times in frames: RFC 3339, UTC, milliseconds.
pub(crate) fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An `alert` or `update` frame: the whole alert as it now reads (docs/stream-protocol.md).
#[derive(Serialize, utoipa::ToSchema)]
pub struct AlertFrame<'a> {
    /// `alert` or `update`.
    #[serde(rename = "type")]
    #[schema(value_type = FrameKind)]
    kind: &'static str,
    seq: i64,
    id: Uuid,
    label: &'a str,
    headline: &'a str,
    summary: Option<&'a str>,
    url: &'a str,
    image: Option<&'a str>,
    topics: &'a [String],
    urgency: Urgency,
    #[schema(value_type = Option<String>, format = DateTime)]
    published_at: Option<String>,
    #[schema(format = DateTime)]
    updated_at: String,
    #[schema(format = DateTime)]
    expires_at: String,
}

/// The kinds of [`AlertFrame`] (documentation only: the frame is built from [`EventKind`]).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum FrameKind {
    Alert,
    Update,
}

#[derive(Serialize)]
struct RetractFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    seq: i64,
    id: Uuid,
    reason: Option<&'a str>,
    retracted_at: Option<String>,
}

/// The frame for one stream event, as stored in `stream_events.frame` and sent verbatim.
/// `alert` and `update` carry the whole alert as it now reads; `retract` names it.
pub fn event_frame(kind: EventKind, seq: i64, a: &Alert) -> String {
    let json = match kind {
        EventKind::Alert | EventKind::Update => serde_json::to_string(&AlertFrame {
            kind: kind.as_str(),
            seq,
            id: a.id,
            label: &a.label,
            headline: &a.headline,
            summary: a.summary.as_deref(),
            url: &a.url,
            image: a.image.as_deref(),
            topics: &a.topics,
            urgency: a.urgency,
            published_at: a.published_at.map(time),
            updated_at: time(a.updated_at),
            expires_at: time(a.expires_at()),
        }),
        EventKind::Retract => serde_json::to_string(&RetractFrame {
            kind: kind.as_str(),
            seq,
            id: a.id,
            reason: a.retract_reason.as_deref(),
            retracted_at: a.retracted_at.map(time),
        }),
    };
    json.expect("frames serialise: plain strings and numbers")
}
