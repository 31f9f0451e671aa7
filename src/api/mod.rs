//! The HTTP API: the editor endpoints under `/api/v1`, health and metrics.
//!
//! Handlers parse requests into domain types (see `alerts::domain`), call the stores, and answer
//! JSON or an [`error::ApiError`]. They never panic on input.

pub mod alerts;
pub mod edge;
pub mod error;
pub mod extract;
pub mod health;
pub mod limits;
pub mod push;
pub mod tokens;
