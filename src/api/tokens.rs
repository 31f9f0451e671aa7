//! Token management over HTTP, for admins only: what `sondakika token create|list|revoke` does
//! on the database, without shell access to the server. A token is in the answer to its
//! creation once; only its hash is stored.

use axum::{extract::State, http::StatusCode, response::Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::openapi::UniqueSchemas;

use crate::{
    app::AppState,
    auth::{self, Admin, Role, TokenInfo},
    server::{
        error::{ApiError, ApiResult, Problem},
        extract::{Json, Path},
    },
    validation::Problems,
};

/// The token endpoints, each routed from its documentation (`#[utoipa::path]`).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes_unique(routes!(list, create)).routes_unique(routes!(revoke))
}

/// Every token, revoked ones too.
#[derive(Serialize, ToSchema)]
struct TokenList {
    items: Vec<TokenInfo>,
}

/// List the tokens (admins only).
#[utoipa::path(
    get,
    path = "/tokens",
    tag = "admin",
    operation_id = "list_tokens",
    security(("editorToken" = [])),
    responses(
        (status = 200, description = "The tokens.", body = TokenList),
        (status = 403, description = "The token is not an admin's.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list(State(state): State<AppState>, _admin: Admin) -> ApiResult<axum::Json<TokenList>> {
    let items = auth::list(&state.db).await?;
    Ok(axum::Json(TokenList { items }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewTokenRequest {
    /// Who the token is for.
    #[schema(required = true, value_type = String, min_length = 1, max_length = 100, example = "Ayşe Yılmaz")]
    name: Option<String>,
    /// Default `editor`.
    #[schema(value_type = Option<Role>)]
    role: Option<String>,
}

/// A new token: the only time it is shown.
#[derive(Serialize, ToSchema)]
struct CreatedToken {
    id: i64,
    name: String,
    role: Role,
    /// Send it as `Authorization: Bearer <token>`.
    token: String,
}

/// Create a token (admins only).
#[utoipa::path(
    post,
    path = "/tokens",
    tag = "admin",
    operation_id = "create_token",
    security(("editorToken" = [])),
    request_body = NewTokenRequest,
    responses(
        (status = 201, description = "Created; the answer is not cacheable (`Cache-Control: no-store`).",
         body = CreatedToken, headers(("Location" = String, description = "The token's address.")),
         links(("RevokeToken" = (operation_id = "revoke_token", parameters(("id" = "$response.body#/id")))))),
        (status = 403, description = "The token is not an admin's.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Json(req): Json<NewTokenRequest>,
) -> ApiResult<Response> {
    let mut p = Problems::default();
    let name = p.required("name", "who the token is for", req.name.as_deref(), auth::parse_name);
    let role = p.take(match req.role.as_deref() {
        None => Ok(Role::Editor),
        Some(r) => Role::parse("role", r),
    });
    let (Some(name), Some(role)) = (name, role) else { return Err(ApiError::Validation(p.into_errors())) };
    let (id, token) = auth::create(&state.db, &name, role).await?;
    tracing::info!(token_id = id, role = role.as_str(), admin_id = admin.id, "token created over HTTP");
    let body = CreatedToken { id, name, role, token };
    Ok(super::with_secret(StatusCode::CREATED, body, Some(format!("/api/v1/tokens/{id}"))))
}

/// Revoke a token (admins only); it stops working at once. Revoking twice is harmless.
#[utoipa::path(
    delete,
    path = "/tokens/{id}",
    tag = "admin",
    operation_id = "revoke_token",
    security(("editorToken" = [])),
    params(("id" = i64, Path, description = "The token's id.")),
    responses(
        (status = 204, description = "Revoked."),
        (status = 403, description = "The token is not an admin's.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No token has this id.", body = Problem, content_type = "application/problem+json"),
    )
)]
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
