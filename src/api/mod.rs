//! The HTTP API: the editor endpoints under `/api/v1`, health and metrics.
//!
//! Handlers parse requests into domain types (see `alerts::domain`), call the stores, and answer
//! JSON or an [`ApiError`](crate::server::error::ApiError). They never panic on input. The
//! plumbing they share (errors, extractors, rate limits, edge layers) is in [`crate::server`].

pub mod alerts;
pub mod feeds;
pub mod health;
pub mod openapi;
pub mod push;
pub mod tokens;
pub mod webhooks;

use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

/// Every documented route: the editor and public push endpoints under `/api/v1` (with the
/// document itself), and the health checks; with the OpenAPI document that describes exactly
/// what they route.
pub fn routes(state: AppState) -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let v1 = alerts::router()
        .merge(tokens::router())
        .merge(webhooks::router())
        .merge(feeds::router())
        .merge(push::router(state))
        .routes(utoipa_axum::routes!(openapi::document));
    let (router, mut doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .nest("/api/v1", v1)
        .merge(health::router())
        .split_for_parts();
    openapi::finish(&mut doc);
    (router, doc)
}
