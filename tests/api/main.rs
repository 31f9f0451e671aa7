//! One integration-test binary (faster to link than one per file), against a real PostgreSQL,
//! real servers on port 0 and real WebSocket/HTTP clients.

mod cli;
mod corrections;
mod edge;
mod editor_api;
mod feeds;
mod helpers;
mod hostile_input;
mod nodes;
mod openapi;
mod operations;
mod origin;
mod outbound;
mod pgbouncer;
mod public_limits;
mod push;
mod push_double;
mod push_isolation;
mod roles;
mod service;
mod tickers;
mod untrusted_text;
mod webhooks;
