//! Webhook endpoints, for admins only: register where events go, see each endpoint's recent
//! attempts, rotate its secret, enable it again after it was disabled. The deliveries themselves
//! are `webhooks::worker`'s.

use axum::{extract::State, http::StatusCode, response::Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::openapi::UniqueSchemas;

use crate::{
    app::AppState,
    auth::Admin,
    server::{
        error::{ApiError, ApiResult, Problem},
        extract::{Json, Path, Query},
    },
    validation::{FieldError, Lines, Problems, check_text},
    webhooks::{
        EventType, signature,
        store::{self, Attempt, Change, Endpoint},
    },
};

/// Attempts shown with an endpoint.
pub const RECENT_ATTEMPTS: i64 = 50;
pub const MAX_DESCRIPTION_CHARS: usize = 200;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes_unique(routes!(list, create))
        .routes_unique(routes!(show, change, remove))
        .routes_unique(routes!(rotate_secret))
}

/// Endpoints per page, by default and at most. A page is cheap whatever the number of endpoints
/// (each row counts its own pending deliveries by index).
const PAGE: i64 = 100;
const MAX_PAGE: i64 = 500;

/// Query parameters are taken as text and parsed by the handler, so that a bad one gets a 422
/// naming it; their documented types are what the handler accepts.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Endpoints per page (default 100).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// Only endpoints registered after this one, by id (from `next`).
    #[param(value_type = Option<i64>, minimum = 1)]
    after: Option<String>,
}

/// A page of endpoints, oldest first.
#[derive(Serialize, ToSchema)]
struct EndpointList {
    items: Vec<Endpoint>,
    /// The next page, `null` on the last page.
    next: Option<String>,
}

/// An endpoint with its latest attempts.
#[derive(Serialize, ToSchema)]
struct EndpointDetail {
    #[serde(flatten)]
    endpoint: Endpoint,
    /// The latest attempts (at most 50), newest first.
    recent_attempts: Vec<Attempt>,
}

/// An endpoint with its secret: the answer to creating it and to rotating its secret, the only
/// times the secret is shown.
#[derive(Serialize, ToSchema)]
struct EndpointWithSecret {
    #[serde(flatten)]
    endpoint: Endpoint,
    /// `whsec_…`: give it to the receiver's Standard Webhooks library to verify signatures.
    secret: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewWebhookRequest {
    /// Where events are POSTed (http or https).
    #[schema(required = true, value_type = String, format = Uri, max_length = 2048, example = "https://hooks.example.com.tr/sondakika")]
    url: Option<String>,
    /// The event types to send (at least one).
    #[schema(required = true, value_type = Vec<EventType>, min_items = 1)]
    event_types: Option<Vec<String>>,
    /// What it is for, for the people who read the list.
    #[schema(max_length = 200, example = "Telegram kanalı")]
    description: Option<String>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
struct WebhookChangeRequest {
    #[schema(format = Uri, max_length = 2048)]
    url: Option<String>,
    #[schema(value_type = Option<Vec<EventType>>, min_items = 1)]
    event_types: Option<Vec<String>>,
    /// `null` removes it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 200)]
    description: Option<Option<String>>,
    /// `true` enables a disabled endpoint (its failure streak starts afresh); `false` disables it.
    enabled: Option<bool>,
}

fn double_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// An http(s) URL that the outbound rules allow (no literal private address unless the operator
/// allowed it; names are checked again on every delivery, on the addresses they resolve to).
fn parse_url(state: &AppState, value: &str) -> Result<String, FieldError> {
    state.outbound.parse_url("url", value).map(String::from)
}

fn parse_event_types(values: &[String]) -> Result<Vec<String>, FieldError> {
    if values.is_empty() {
        return Err(FieldError::new("event_types", "must name at least one event type"));
    }
    let mut types = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let Some(t) = EventType::parse(v) else {
            let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            return Err(FieldError::new(
                format!("event_types[{i}]"),
                format!("`{v}` is not an event type; known: {}", known.join(", ")),
            ));
        };
        types.push(t);
    }
    types.sort_by_key(|t| t.as_str());
    types.dedup();
    Ok(types.into_iter().map(|t| t.as_str().to_string()).collect())
}

fn parse_description(value: &str) -> Result<String, FieldError> {
    let chars = value.chars().count();
    if chars > MAX_DESCRIPTION_CHARS {
        return Err(FieldError::new(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters (got {chars})"),
        ));
    }
    check_text("description", value, Lines::Single)?;
    Ok(value.to_string())
}

fn endpoint_id(id: &str) -> ApiResult<i64> {
    id.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::NotFound(format!("there is no webhook endpoint with id `{id}`")))
}

fn missing(id: i64) -> ApiError {
    ApiError::NotFound(format!("there is no webhook endpoint with id `{id}`"))
}

/// The endpoint with its secret, in an answer no cache may keep.
fn with_secret(status: StatusCode, body: EndpointWithSecret) -> Response {
    let location = (status == StatusCode::CREATED).then(|| format!("/api/v1/webhooks/{}", body.endpoint.id));
    super::with_secret(status, body, location)
}

/// List the webhook endpoints (admins only).
#[utoipa::path(
    get,
    path = "/webhooks",
    tag = "admin",
    operation_id = "list_webhooks",
    security(("editorToken" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of endpoints, oldest first.", body = EndpointList),
        (status = 403, description = "The token is not an admin's.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid query parameter.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    Query(q): Query<ListQuery>,
) -> ApiResult<axum::Json<EndpointList>> {
    let limit = crate::server::extract::limit(q.limit.as_deref(), PAGE, MAX_PAGE)?;
    let after = q
        .after
        .as_deref()
        .map(|s| {
            s.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| ApiError::field("after", "must be a webhook endpoint id"))
        })
        .transpose()?;
    let items = store::list(&state.db, after.unwrap_or(0), limit).await?;
    let next = (items.len() as i64 == limit).then(|| {
        let last = items.last().expect("non-empty page").id;
        format!("/api/v1/webhooks?limit={limit}&after={last}")
    });
    Ok(axum::Json(EndpointList { items, next }))
}

/// Register a webhook endpoint (admins only). Its secret is in this answer, once.
#[utoipa::path(
    post,
    path = "/webhooks",
    tag = "admin",
    operation_id = "create_webhook",
    security(("editorToken" = [])),
    request_body = NewWebhookRequest,
    responses(
        (status = 201, description = "Registered; the answer is not cacheable (`Cache-Control: no-store`).",
         body = EndpointWithSecret, headers(("Location" = String, description = "The endpoint's address.")),
         links(("GetWebhook" = (operation_id = "get_webhook", parameters(("id" = "$response.body#/id")))))),
        (status = 403, description = "The token is not an admin's.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Json(req): Json<NewWebhookRequest>,
) -> ApiResult<Response> {
    let mut p = Problems::default();
    let url = p.required("url", "where events are sent", req.url.as_deref(), |u| parse_url(&state, u));
    let types = p.required(
        "event_types",
        "which events to send (alert.flagged, alert.corrected, alert.retracted, alert.delivered)",
        req.event_types.as_deref(),
        parse_event_types,
    );
    let description = p.take(req.description.as_deref().map(parse_description).transpose());
    let (Some(url), Some(types), Some(description)) = (url, types, description) else {
        return Err(ApiError::Validation(p.into_errors()));
    };
    let secret = signature::new_secret();
    let endpoint = store::create(&state.db, &url, description.as_deref(), &types, &secret).await?;
    tracing::info!(endpoint_id = endpoint.id, admin_id = admin.id, "webhook endpoint registered");
    Ok(with_secret(StatusCode::CREATED, EndpointWithSecret { endpoint, secret }))
}

/// One webhook endpoint with its latest attempts (admins only).
#[utoipa::path(
    get,
    path = "/webhooks/{id}",
    tag = "admin",
    operation_id = "get_webhook",
    security(("editorToken" = [])),
    params(("id" = i64, Path, description = "The endpoint's id.")),
    responses(
        (status = 200, description = "The endpoint.", body = EndpointDetail),
        (status = 403, description = "The token is not an admin's.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No endpoint has this id.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn show(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<EndpointDetail>> {
    let id = endpoint_id(&id)?;
    let endpoint = store::get(&state.db, id).await?.ok_or_else(|| missing(id))?;
    let recent_attempts = store::recent_attempts(&state.db, id, RECENT_ATTEMPTS).await?;
    Ok(axum::Json(EndpointDetail { endpoint, recent_attempts }))
}

/// Change a webhook endpoint, or enable it again (admins only).
#[utoipa::path(
    patch,
    path = "/webhooks/{id}",
    tag = "admin",
    operation_id = "update_webhook",
    security(("editorToken" = [])),
    params(("id" = i64, Path, description = "The endpoint's id.")),
    request_body = WebhookChangeRequest,
    responses(
        (status = 200, description = "The endpoint as changed.", body = Endpoint),
        (status = 403, description = "The token is not an admin's.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No endpoint has this id.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn change(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    Json(req): Json<WebhookChangeRequest>,
) -> ApiResult<axum::Json<Endpoint>> {
    let id = endpoint_id(&id)?;
    let mut errors = Vec::new();
    let mut c = Change { enabled: req.enabled, ..Change::default() };
    if let Some(u) = req.url.as_deref() {
        c.url = parse_url(&state, u).map_err(|e| errors.push(e)).ok();
    }
    if let Some(t) = req.event_types.as_deref() {
        c.event_types = parse_event_types(t).map_err(|e| errors.push(e)).ok();
    }
    match req.description {
        None => {}
        Some(None) => c.description = Some(None),
        Some(Some(d)) => c.description = parse_description(&d).map_err(|e| errors.push(e)).ok().map(Some),
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let endpoint = store::update(&state.db, id, &c).await?.ok_or_else(|| missing(id))?;
    tracing::info!(
        endpoint_id = id,
        admin_id = admin.id,
        enabled = endpoint.enabled,
        "webhook endpoint changed"
    );
    Ok(axum::Json(endpoint))
}

/// Remove a webhook endpoint and its queued events (admins only).
#[utoipa::path(
    delete,
    path = "/webhooks/{id}",
    tag = "admin",
    operation_id = "delete_webhook",
    security(("editorToken" = [])),
    params(("id" = i64, Path, description = "The endpoint's id.")),
    responses(
        (status = 204, description = "Removed."),
        (status = 403, description = "The token is not an admin's.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No endpoint has this id.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn remove(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = endpoint_id(&id)?;
    if !store::delete(&state.db, id).await? {
        return Err(missing(id));
    }
    tracing::info!(endpoint_id = id, admin_id = admin.id, "webhook endpoint removed");
    Ok(StatusCode::NO_CONTENT)
}

/// Rotate a webhook endpoint's secret (admins only). The new secret is in this answer, once;
/// the previous one also signs for `webhook_secret_grace_secs` (see
/// `previous_secret_valid_until`), so the receiver can switch without losing an event.
#[utoipa::path(
    post,
    path = "/webhooks/{id}/rotate-secret",
    tag = "admin",
    operation_id = "rotate_webhook_secret",
    security(("editorToken" = [])),
    params(("id" = i64, Path, description = "The endpoint's id.")),
    responses(
        (status = 200, description = "Rotated; the answer is not cacheable (`Cache-Control: no-store`).",
         body = EndpointWithSecret),
        (status = 403, description = "The token is not an admin's.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No endpoint has this id.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn rotate_secret(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = endpoint_id(&id)?;
    let secret = signature::new_secret();
    let endpoint = store::rotate(&state.db, id, &secret, state.settings.webhook_secret_grace_secs)
        .await?
        .ok_or_else(|| missing(id))?;
    let until: Option<DateTime<Utc>> = endpoint.previous_secret_valid_until;
    tracing::info!(endpoint_id = id, admin_id = admin.id, previous_valid_until = ?until, "webhook secret rotated");
    Ok(with_secret(StatusCode::OK, EndpointWithSecret { endpoint, secret }))
}
