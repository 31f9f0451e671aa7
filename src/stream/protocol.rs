//! The ticker stream protocol: JSON text frames, each with a `type`.
//!
//! Server → client: `hello`, `alert`, `update`, `retract`, `subscribed`, `error`.
//! Client → server: `subscribe` (change topics on the open socket).
//! The full description for third-party clients is in `docs/stream-protocol.md`; keep the two in
//! step.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::alerts::store::Alert;

/// WebSocket close code for a client that fell behind; it should reconnect with `since`.
pub const CLOSE_TOO_SLOW: u16 = 4001;
/// WebSocket close code for a client that broke the protocol (bad frame or too large).
pub const CLOSE_PROTOCOL: u16 = 1008;
/// WebSocket close code on server shutdown ("going away"); reconnect with `since`.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// WebSocket close code for a peer that stopped answering pings.
pub const CLOSE_DEAD_PEER: u16 = 4002;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "alert" => Some(Self::Alert),
            "update" => Some(Self::Update),
            "retract" => Some(Self::Retract),
            _ => None,
        }
    }
}

fn time(t: DateTime<Utc>) -> String {
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
    #[schema(value_type = crate::alerts::domain::Urgency)]
    urgency: &'a str,
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
            urgency: &a.urgency,
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

#[derive(Serialize)]
pub struct Limits {
    pub max_replay: usize,
    pub max_replay_age_seconds: u64,
    pub queue: usize,
    pub ping_interval_seconds: u64,
    pub max_message_bytes: usize,
}

#[derive(Serialize)]
pub struct Replay {
    /// The `since` the client asked for.
    pub since: i64,
    /// Events that follow this hello before live ones.
    pub count: usize,
    /// True when the client missed more than can be replayed: it should reload its state.
    pub truncated: bool,
    /// True when `since` was above the newest event: nothing is replayed, the connection starts
    /// at the hello's `seq`, and the client should reload its state and take that `seq`.
    pub reset: bool,
}

#[derive(Serialize)]
pub struct Hello<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The newest seq this server has seen; reconnect with `since` = the last seq you processed.
    pub seq: i64,
    pub server_time: String,
    pub topics: &'a [String],
    pub replay: Option<Replay>,
    pub limits: &'a Limits,
}

pub fn hello(seq: i64, topics: &[String], replay: Option<Replay>, limits: &Limits) -> String {
    serde_json::to_string(&Hello {
        kind: "hello",
        seq,
        server_time: time(Utc::now()),
        topics,
        replay,
        limits,
    })
    .expect("hello serialises")
}

pub fn subscribed(topics: &[String]) -> String {
    serde_json::json!({ "type": "subscribed", "topics": topics }).to_string()
}

pub fn error(message: &str) -> String {
    serde_json::json!({ "type": "error", "message": message }).to_string()
}

/// Messages a client may send.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ClientMessage {
    /// Replace the topic filter; an empty list means everything.
    Subscribe { topics: Vec<String> },
}
