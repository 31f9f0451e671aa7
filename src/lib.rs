//! sondakika: a self-hosted breaking-news push service.
//!
//! Editors flag alerts through the API ([`api`]); PostgreSQL holds them and an ordered event log
//! ([`alerts::store`]); every server process follows that log and fans events out to its live
//! tickers over WebSocket and SSE ([`stream`]). [`app`] wires a process together; [`cli`] is the
//! command line, including the editors' client and the load generator.

pub mod alerts;
pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod feeds;
pub mod idempotency;
pub mod net;
pub mod publish;
pub mod push;
pub mod server;
pub mod stream;
pub mod telemetry;
pub mod web;
pub mod webhooks;
pub mod workers;
