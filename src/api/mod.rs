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

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;
use openapi::UniqueSchemas;

/// An answer that holds a secret (a new token, a webhook's signing secret), shown this once: no
/// cache anywhere may keep it. `location`: the new resource's address, for a 201.
fn with_secret(status: StatusCode, body: impl Serialize, location: Option<String>) -> Response {
    let mut r = (status, axum::Json(body)).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(loc) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        h.insert(header::LOCATION, loc);
    }
    r
}

/// Every documented route: the editor and public push endpoints under `/api/v1` (with the
/// document itself), and the health checks; with the OpenAPI document that describes exactly
/// what they route.
pub fn routes(state: AppState) -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    // Through `UniqueSchemas`: two types with one schema name stop the build of the router.
    let v1 = alerts::router()
        .merge_unique(tokens::router())
        .merge_unique(webhooks::router())
        .merge_unique(feeds::router())
        .merge_unique(push::router(state))
        .routes_unique(utoipa_axum::routes!(openapi::document));
    let (router, mut doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .nest_unique("/api/v1", v1)
        .merge_unique(health::router())
        .route("/problems", axum::routing::get(openapi::problem_types))
        .route("/problems/{name}", axum::routing::get(openapi::problem_types))
        .split_for_parts();
    openapi::finish(&mut doc);
    (router, doc)
}
