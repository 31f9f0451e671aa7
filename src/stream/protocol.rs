//! The ticker stream protocol: JSON text frames, each with a `type`.
//!
//! Server → client: `hello`, `alert`, `update`, `retract`, `subscribed`, `error`. The event
//! frames (`alert`, `update`, `retract`) are built once, when the event is logged, by
//! [`crate::alerts::events`]; this module has the frames of the connection itself.
//! Client → server: `subscribe` (change topics on the open socket).
//! The full description for third-party clients is in `docs/stream-protocol.md`; keep the two in
//! step.

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::alerts::events::time;

/// WebSocket close code for a client that fell behind; it should reconnect with `since`.
pub const CLOSE_TOO_SLOW: u16 = 4001;
/// WebSocket close code for a client that broke the protocol (bad frame or too large).
pub const CLOSE_PROTOCOL: u16 = 1008;
/// WebSocket close code on server shutdown ("going away"); reconnect with `since`.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// WebSocket close code for a peer that stopped answering pings.
pub const CLOSE_DEAD_PEER: u16 = 4002;

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
