//! sondakika: a self-hosted breaking-news push service.
//!
//! Editors flag alerts through the API ([`api`]); [`publish`] writes each change in one
//! transaction to the alert, its ordered stream event, its push step and its webhooks. Every
//! server process follows the event log and fans events out to its live tickers over WebSocket
//! and SSE ([`stream`]), and its fan-out workers send the push steps to devices ([`push`]).
//! [`app`] wires a process together; [`cli`] is the editors' command line. The map is
//! `docs/ARCHITECTURE.md`.
//!
//! Public here is what the binary and the test suites use; the rest is private to the crate.

#![deny(unsafe_code)]

pub mod alerts;
mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
mod feeds;
mod idempotency;
pub mod net;
mod publish;
pub mod push;
mod server;
mod stream;
pub mod telemetry;
mod untrusted;
pub mod validation;
mod web;
mod webhooks;
mod workers;
