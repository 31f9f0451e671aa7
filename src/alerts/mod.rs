//! Breaking-news alerts: what an editor flags, corrects and retracts.
//!
//! [`domain`] parses requests into valid values; [`store`] owns the tables and appends the
//! stream events tickers receive. Nothing here knows about HTTP.

pub mod domain;
pub mod store;

pub use domain::MAX_TTL_SECS;
