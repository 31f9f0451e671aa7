//! `/healthz` (the process is alive), `/readyz` (the database answers and is migrated) and
//! `/metrics` (Prometheus text format).
//!
//! `/metrics` on the main port is for admins only (an editor token with role admin): it tells a
//! stranger how busy the service is and which push services its readers use. On `metrics_bind`,
//! a private address, it needs no token.

use axum::{
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::openapi::UniqueSchemas;

use crate::{
    app::AppState,
    auth::Admin,
    db,
    server::error::{ApiError, Problem},
    telemetry,
};

/// Health checks (documented) and metrics (Prometheus text, not part of the JSON API).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes_unique(routes!(healthz))
        .routes_unique(routes!(readyz))
        .route("/metrics", get(metrics_on_main))
}

#[derive(Serialize, ToSchema)]
struct Alive {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: &'static str,
}

/// The process is alive (it does not touch the database).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    operation_id = "healthz",
    responses((status = 200, description = "Alive.", body = Alive))
)]
async fn healthz() -> axum::Json<Alive> {
    axum::Json(Alive { status: "ok" })
}

#[derive(Serialize, ToSchema)]
struct Ready {
    /// Always `ready`.
    #[schema(example = "ready")]
    status: &'static str,
    /// The newest stream event this process has seen.
    stream_seq: i64,
    /// Ticker connections this process holds.
    connections: usize,
}

/// The database answers and is migrated, and the process is not shutting down.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Ready.", body = Ready),
        (status = 503, description = "Not ready: shutting down, or the database is unreachable or not migrated.",
         body = Problem, content_type = "application/problem+json"),
    )
)]
async fn readyz(State(state): State<AppState>) -> Result<axum::Json<Ready>, ApiError> {
    if state.shutdown.is_cancelled() {
        return Err(ApiError::Unavailable("shutting down".into()));
    }
    match db::is_migrated(&state.db).await {
        Ok(true) => Ok(axum::Json(Ready {
            status: "ready",
            stream_seq: state.hub.head(),
            connections: state.admission.open(),
        })),
        Ok(false) => Err(ApiError::Unavailable("the database schema is not migrated".into())),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: database unreachable");
            Err(ApiError::Unavailable("the database cannot be reached".into()))
        }
    }
}

/// `/metrics` on the main listener, for admins, unless it was moved to `metrics_bind`.
async fn metrics_on_main(state: State<AppState>, admin: Result<Admin, ApiError>) -> Response {
    if state.settings.metrics_bind.is_some() {
        return ApiError::NotFound("metrics are served on the metrics_bind address".into()).into_response();
    }
    match admin {
        Ok(_) => metrics(state).await,
        Err(ApiError::Forbidden(_)) => ApiError::Forbidden(
            "metrics on the main port need an admin token (sondakika token create --role admin), \
             or set metrics_bind to serve them on a private address"
                .into(),
        )
        .into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    telemetry::metrics::db_pool(
        state.db.size(),
        state.db.num_idle(),
        state.db.options().get_max_connections(),
    );
    let body = telemetry::prometheus().render();
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    r
}
