//! One integration-test binary (faster to link than one per file), against a real PostgreSQL,
//! real servers on port 0 and real WebSocket/HTTP clients.

mod cli;
mod corrections;
mod edge;
mod editor_api;
mod feeds;
mod hostile_input;
mod nodes;
mod openapi;
mod operations;
mod outbound;
mod pgbouncer;
mod public_limits;
mod push;
mod push_isolation;
mod roles;
mod service;
mod support;
mod tickers;
mod untrusted_text;
mod webhooks;

// The suite's set-up and doubles, by their short names (`crate::helpers`, `crate::push_double`).
use support::{helpers, origin, push_double};
