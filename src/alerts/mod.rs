//! Breaking-news alerts: what an editor flags, corrects and retracts.
//!
//! [`domain`] parses requests into valid values; [`store`] owns the `alerts`, `stream_events`
//! and `alert_stats` tables; [`events`] has the event kinds and the frames the stream log keeps;
//! [`view`] is an alert as editors and integrations see it. Nothing here knows about HTTP, push
//! or webhooks: [`crate::publish`] composes an editor's action from these steps and theirs.

pub mod domain;
pub(crate) mod events;
pub mod store;
pub mod view;

pub use domain::MAX_TTL_SECS;
