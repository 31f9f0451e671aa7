//! `/healthz` (the process is alive), `/readyz` (the database answers and is migrated) and
//! `/metrics` (Prometheus text format).
//!
//! `/metrics` on the main port is for admins only (an editor token with role admin): it tells a
//! stranger how busy the service is and which push services its readers use. On `metrics_bind`,
//! a private address, it needs no token.

use axum::{
    Router,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};

use super::error::ApiError;
use crate::{app::AppState, auth::Admin, db, telemetry};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_on_main))
}

async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Result<axum::Json<serde_json::Value>, ApiError> {
    if state.shutdown.is_cancelled() {
        return Err(ApiError::Unavailable("shutting down".into()));
    }
    match db::is_migrated(&state.db).await {
        Ok(true) => Ok(axum::Json(serde_json::json!({
            "status": "ready",
            "stream_seq": state.hub.head(),
            "connections": state.admission.open(),
        }))),
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
    telemetry::metrics::db_pool(state.db.size(), state.db.num_idle());
    let body = telemetry::prometheus().render();
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    r
}
