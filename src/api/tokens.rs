//! Token management over HTTP, for admins only: what `sondakika token create|list|revoke` does
//! on the database, without shell access to the server. A token is in the answer to its
//! creation once; only its hash is stored.

use axum::{
    Router,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{delete, get},
};
use serde::Deserialize;
use serde_json::json;

use super::{
    error::{ApiError, ApiResult},
    extract::{Json, Path},
};
use crate::{
    alerts::domain::FieldError,
    app::AppState,
    auth::{self, Admin, Role},
};

pub fn router() -> Router<AppState> {
    Router::new().route("/tokens", get(list).post(create)).route("/tokens/{id}", delete(revoke))
}

async fn list(State(state): State<AppState>, _admin: Admin) -> ApiResult<axum::Json<serde_json::Value>> {
    let tokens = auth::list(&state.db).await?;
    Ok(axum::Json(json!({ "items": tokens })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    name: Option<String>,
    role: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Json(req): Json<CreateRequest>,
) -> ApiResult<Response> {
    let mut errors = Vec::new();
    let name = match req.name.as_deref() {
        None => Err(FieldError::new("name", "is required: who the token is for")),
        Some(n) => auth::parse_name(n),
    }
    .map_err(|e| errors.push(e))
    .ok();
    let role = match req.role.as_deref() {
        None => Some(Role::Editor),
        Some(r) => Role::parse(r).or_else(|| {
            errors.push(FieldError::new("role", "must be `editor` or `admin`"));
            None
        }),
    };
    let (Some(name), Some(role)) = (name, role) else { return Err(ApiError::Validation(errors)) };
    let (id, token) = auth::create(&state.db, &name, role).await?;
    tracing::info!(token_id = id, role = role.as_str(), admin_id = admin.id, "token created over HTTP");
    let body = json!({ "id": id, "name": name, "role": role, "token": token });
    let mut r = (StatusCode::CREATED, axum::Json(body)).into_response();
    let h = r.headers_mut();
    // The answer holds a secret: no cache anywhere may keep it.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(loc) = HeaderValue::from_str(&format!("/api/v1/tokens/{id}")) {
        h.insert(header::LOCATION, loc);
    }
    Ok(r)
}

async fn revoke(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let missing = || ApiError::NotFound(format!("there is no token with id `{id}`"));
    let token_id: i64 = id.parse().map_err(|_| missing())?;
    if !auth::revoke(&state.db, token_id).await? {
        return Err(missing());
    }
    tracing::info!(token_id, admin_id = admin.id, "token revoked over HTTP");
    Ok(StatusCode::NO_CONTENT)
}
