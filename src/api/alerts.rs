//! The editor API for alerts: flag, list, show, correct, retract.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::openapi::UniqueSchemas;
use uuid::Uuid;

use crate::{
    alerts::{
        domain::{AlertStatus, CorrectionRequest, NewAlertRequest, RetractRequest},
        store,
        view::AlertView,
    },
    app::AppState,
    auth::Editor,
    idempotency::{self, NextAction},
    publish::{self, Changed, Flagged},
    push::store::{DeliveryRow, DeliveryStatus},
    server::{
        error::{ApiError, ApiResult, Problem},
        extract::{Json, OptionalJson, Path, Query},
    },
    telemetry::metrics,
    validation::FieldError,
};

/// The editor endpoints, each routed from its documentation (`#[utoipa::path]`).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes_unique(routes!(create, list))
        .routes_unique(routes!(show, correct))
        .routes_unique(routes!(retract))
        .routes_unique(routes!(deliveries))
        .routes_unique(routes!(me))
}

/// A JSON body together with its canonical bytes (for the Idempotency-Key fingerprint).
struct JsonWithBytes<T>(T, Bytes);

impl<T: serde::de::DeserializeOwned> FromRequest<AppState> for JsonWithBytes<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        // Fingerprint the canonical form (sorted keys, no spacing): the same alert sent with
        // different whitespace is the same request.
        let Json(raw) = Json::<serde_json::Value>::from_request(req, state).await?;
        let body = Bytes::from(serde_json::to_vec(&raw).expect("a parsed value serialises"));
        let value = crate::server::extract::parse::<T>(&body)?;
        Ok(Self(value, body))
    }
}

const MAX_IDEMPOTENCY_KEY: usize = 255;

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let key = v
        .to_str()
        .ok()
        .filter(|k| {
            !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY && k.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::field(
                "Idempotency-Key",
                format!("must be 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters, e.g. a UUID"),
            )
        })?;
    Ok(Some(key.to_string()))
}

fn json_response(status: StatusCode, body: String, location: Option<&str>, replayed: bool) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(loc) = location
        && let Ok(v) = HeaderValue::from_str(loc)
    {
        h.insert(header::LOCATION, v);
    }
    if replayed {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    r
}

/// Flag an article as breaking news.
#[utoipa::path(
    post,
    path = "/alerts",
    tag = "editor",
    operation_id = "create_alert",
    security(("editorToken" = [])),
    params(("Idempotency-Key" = Option<String>, Header,
            description = "1-255 visible ASCII characters: replays the first answer for this key instead of alerting twice.")),
    request_body = NewAlertRequest,
    responses(
        (status = 201, description = "Flagged (or scheduled).", body = AlertView,
         headers(("Location" = String, description = "The alert's address.")),
         links(
            ("GetAlert" = (operation_id = "get_alert", parameters(("id" = "$response.body#/id")))),
            ("CorrectAlert" = (operation_id = "correct_alert", parameters(("id" = "$response.body#/id")))),
            ("RetractAlert" = (operation_id = "retract_alert", parameters(("id" = "$response.body#/id")))),
            ("ListDeliveries" = (operation_id = "list_deliveries", parameters(("id" = "$response.body#/id")))),
         )),
        (status = 200, description = "The article already has a live alert (that alert is returned), or the \
                                      Idempotency-Key was used before (its first answer is replayed, with \
                                      `Idempotent-Replayed: true`).", body = AlertView,
         headers(("Location" = String, description = "The alert's address."))),
        (status = 422, description = "Invalid fields, or an Idempotency-Key reused for a different request.",
         body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create(
    State(state): State<AppState>,
    editor: Editor,
    headers: HeaderMap,
    JsonWithBytes(req, raw): JsonWithBytes<NewAlertRequest>,
) -> ApiResult<Response> {
    let key = idempotency_key(&headers)?;
    let now = Utc::now();
    let new = req.parse(state.settings.default_ttl_secs, now).map_err(ApiError::Validation)?;
    let fingerprint = idempotency::Fingerprint::of(&raw);

    let mut tx = state.db.begin().await?;
    if let Some(key) = &key {
        match idempotency::try_processing(&mut tx, editor.id, key, &fingerprint).await? {
            Ok(NextAction::StartProcessing) => {}
            Ok(NextAction::ReturnSaved { status, body }) => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                let location = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["links"]["self"].as_str().map(String::from));
                return Ok(json_response(status, body, location.as_deref(), true));
            }
            Err(reused) => {
                return Err(ApiError::Validation(vec![FieldError::new(
                    "Idempotency-Key",
                    reused.to_string(),
                )]));
            }
        }
    }

    let (status, alert) = match publish::flag(&mut tx, &new, editor.id, now).await? {
        Flagged::Created(a) => (StatusCode::CREATED, a),
        Flagged::AlreadyLive(a) => (StatusCode::OK, a),
    };
    let view = AlertView::from(alert);
    let body = serde_json::to_string(&view).expect("alert view serialises");
    if let Some(key) = &key {
        idempotency::save_response(&mut tx, editor.id, key, &fingerprint, status.as_u16(), &body).await?;
    }
    tx.commit().await?;
    if status == StatusCode::CREATED {
        if view.status == AlertStatus::Live {
            metrics::alert_published();
        }
        tracing::info!(alert_id = %view.id, seq = view.seq.unwrap_or_default(), status = view.status.as_str(), editor_id = editor.id, "alert flagged");
    }
    Ok(json_response(status, body, Some(&view.links.self_), false))
}

/// Query parameters are taken as text and parsed by the handler, so that a bad one gets a 422
/// naming it; their documented types are what the handler accepts.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Alerts per page.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// Only alerts older than this one, by id (from `next`). Any spelling of a UUID.
    #[param(value_type = Option<String>)]
    before: Option<String>,
    #[param(value_type = Option<AlertStatus>)]
    status: Option<String>,
}

/// A page of alerts, newest first.
#[derive(Serialize, ToSchema)]
struct Page {
    items: Vec<AlertView>,
    /// The next (older) page, `null` on the last page.
    next: Option<String>,
}

/// The alerts, newest first, keyset-paged.
#[utoipa::path(
    get,
    path = "/alerts",
    tag = "editor",
    operation_id = "list_alerts",
    security(("editorToken" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of alerts.", body = Page),
        (status = 422, description = "An invalid query parameter.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list(
    State(state): State<AppState>,
    _editor: Editor,
    Query(q): Query<ListQuery>,
) -> ApiResult<axum::Json<Page>> {
    let limit = crate::server::extract::limit(q.limit.as_deref(), 20, 100)?;
    let before = q
        .before
        .as_deref()
        .map(|s| s.parse::<Uuid>().map_err(|_| ApiError::field("before", "must be an alert id")))
        .transpose()?;
    let status = q
        .status
        .as_deref()
        .map(|s| AlertStatus::parse("status", s).map_err(|e| ApiError::Validation(vec![e])))
        .transpose()?;
    let alerts = store::list(&state.db, before, status, limit).await?;
    let next = (alerts.len() as i64 == limit).then(|| {
        let last = alerts.last().expect("non-empty page").id;
        let status = status.map(|s| format!("&status={}", s.as_str())).unwrap_or_default();
        format!("/api/v1/alerts?limit={limit}&before={last}{status}")
    });
    let mut items: Vec<AlertView> = alerts.into_iter().map(AlertView::from).collect();
    with_push(&state, &mut items).await?;
    Ok(axum::Json(Page { items, next }))
}

/// Adds the push figures and steps to alerts (when push is on), in two queries.
async fn with_push(state: &AppState, views: &mut [AlertView]) -> ApiResult<()> {
    if state.push.is_none() || views.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = views.iter().map(|a| a.id).collect();
    let mut conn = state.db.acquire().await?;
    let mut figures: std::collections::HashMap<Uuid, _> =
        crate::push::store::figures_of(&mut conn, &ids).await?.into_iter().collect();
    let mut steps: std::collections::HashMap<Uuid, Vec<_>> = std::collections::HashMap::new();
    for (id, step) in crate::push::store::steps_of(&mut conn, &ids).await? {
        steps.entry(id).or_default().push(step);
    }
    for view in views {
        view.push = figures.remove(&view.id);
        view.push_steps = steps.remove(&view.id).unwrap_or_default();
    }
    Ok(())
}

fn parse_id(id: &str) -> ApiResult<Uuid> {
    id.parse().map_err(|_| ApiError::NotFound(format!("there is no alert with id `{id}`")))
}

/// One alert, with its live delivery figures.
#[utoipa::path(
    get,
    path = "/alerts/{id}",
    tag = "editor",
    operation_id = "get_alert",
    security(("editorToken" = [])),
    params(("id" = Uuid, Path, description = "The alert's id.")),
    responses(
        (status = 200, description = "The alert.", body = AlertView),
        (status = 404, description = "No alert has this id.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn show(
    State(state): State<AppState>,
    _editor: Editor,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<AlertView>> {
    let id = parse_id(&id)?;
    let mut conn = state.db.acquire().await?;
    let alert = store::get(&mut conn, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("there is no alert with id `{id}`")))?;
    drop(conn);
    let mut view = [AlertView::from(alert)];
    with_push(&state, &mut view).await?;
    let [view] = view;
    Ok(axum::Json(view))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeliveriesQuery {
    #[param(value_type = Option<DeliveryStatus>)]
    status: Option<String>,
    /// Only this step's pushes (0: the original; see `push_steps`).
    #[param(value_type = Option<i16>, minimum = 0)]
    step: Option<String>,
    /// Where the previous page ended (from `next`): a subscription id, or
    /// `<subscription id>.<step>`.
    #[param(value_type = Option<String>, pattern = "^[0-9]+(\\.[0-9]+)?$")]
    after: Option<String>,
    /// Rows per page.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// A page of the delivery log.
#[derive(Serialize, ToSchema)]
struct DeliveriesPage {
    items: Vec<DeliveryRow>,
    /// The next page, `null` on the last page.
    next: Option<String>,
}

/// The delivery log of one alert, paged by subscription id.
#[utoipa::path(
    get,
    path = "/alerts/{id}/deliveries",
    tag = "editor",
    operation_id = "list_deliveries",
    security(("editorToken" = [])),
    params(("id" = Uuid, Path, description = "The alert's id."), DeliveriesQuery),
    responses(
        (status = 200, description = "A page of the delivery log, by subscription id.", body = DeliveriesPage),
        (status = 404, description = "No alert has this id.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid query parameter.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn deliveries(
    State(state): State<AppState>,
    _editor: Editor,
    Path(id): Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> ApiResult<axum::Json<DeliveriesPage>> {
    let id = parse_id(&id)?;
    let status = q
        .status
        .as_deref()
        .map(|s| {
            serde_json::from_value::<DeliveryStatus>(serde_json::Value::String(s.into()))
                .map_err(|_| ApiError::field("status", "must be one of sent, failed, gone, expired, skipped"))
        })
        .transpose()?;
    let limit = crate::server::extract::limit(q.limit.as_deref(), 100, 1000)?;
    let step = q
        .step
        .as_deref()
        .map(|s| {
            s.parse::<i16>()
                .ok()
                .filter(|s| *s >= 0)
                .ok_or_else(|| ApiError::field("step", "must be a step number (0, 1, ...)"))
        })
        .transpose()?;
    let after = match q.after.as_deref() {
        None => (0, -1),
        Some(s) => {
            let bad = || ApiError::field("after", "must be a subscription id, or `<subscription id>.<step>`");
            let (sub, step) = s.split_once('.').unwrap_or((s, ""));
            let sub = sub.parse::<i64>().map_err(|_| bad())?;
            let step = if step.is_empty() && !s.contains('.') {
                i16::MAX
            } else {
                step.parse::<i16>().map_err(|_| bad())?
            };
            (sub, step)
        }
    };
    let mut conn = state.db.acquire().await?;
    if store::get(&mut conn, id).await?.is_none() {
        return Err(ApiError::NotFound(format!("there is no alert with id `{id}`")));
    }
    drop(conn);
    let rows = crate::push::store::deliveries(&state.db, id, step, status, after, limit).await?;
    let next = (rows.len() as i64 == limit).then(|| {
        let last = rows.last().expect("non-empty page");
        let status = status.map(|s| format!("&status={}", s.as_str())).unwrap_or_default();
        let step = step.map(|s| format!("&step={s}")).unwrap_or_default();
        format!(
            "/api/v1/alerts/{id}/deliveries?limit={limit}&after={}.{}{status}{step}",
            last.subscription_id, last.step
        )
    });
    Ok(axum::Json(DeliveriesPage { items: rows, next }))
}

/// Correct an alert: tickers get an `update`, and devices that were sent the alert get the
/// correction (quietly by default; see `push`). Corrections in quick succession are coalesced
/// into one push carrying the last.
#[utoipa::path(
    patch,
    path = "/alerts/{id}",
    tag = "editor",
    operation_id = "correct_alert",
    security(("editorToken" = [])),
    params(("id" = Uuid, Path, description = "The alert's id.")),
    request_body = CorrectionRequest,
    responses(
        (status = 200, description = "The corrected alert.", body = AlertView),
        (status = 404, description = "No alert has this id.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The alert was retracted.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn correct(
    State(state): State<AppState>,
    editor: Editor,
    Path(id): Path<String>,
    Json(req): Json<CorrectionRequest>,
) -> ApiResult<axum::Json<AlertView>> {
    let id = parse_id(&id)?;
    let correction = req.parse().map_err(ApiError::Validation)?;
    let mut tx = state.db.begin().await?;
    let coalesce = std::time::Duration::from_millis(state.settings.push_correction_coalesce_ms);
    let changed = publish::correct(&mut tx, id, &correction, coalesce).await?;
    tx.commit().await?;
    match changed {
        Changed::Done(a) => {
            tracing::info!(alert_id = %a.id, editor_id = editor.id, push = ?correction.push, "alert corrected");
            let mut view = [AlertView::from(a)];
            with_push(&state, &mut view).await?;
            let [view] = view;
            Ok(axum::Json(view))
        }
        Changed::NotFound => Err(ApiError::NotFound(format!("there is no alert with id `{id}`"))),
        Changed::Retracted(_) => Err(ApiError::Conflict(
            "this alert was retracted and can no longer be corrected; flag a new one".into(),
        )),
    }
}

/// Retract an alert: tickers get a `retract`, pushes not yet sent are skipped, and devices that
/// were sent the alert get its retraction. Retracting twice is harmless.
#[utoipa::path(
    post,
    path = "/alerts/{id}/retract",
    tag = "editor",
    operation_id = "retract_alert",
    security(("editorToken" = [])),
    params(("id" = Uuid, Path, description = "The alert's id.")),
    request_body(content = Option<RetractRequest>, description = "Optional: an empty body retracts without a reason."),
    responses(
        (status = 200, description = "The retracted alert.", body = AlertView),
        (status = 404, description = "No alert has this id.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn retract(
    State(state): State<AppState>,
    editor: Editor,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<RetractRequest>,
) -> ApiResult<axum::Json<AlertView>> {
    let id = parse_id(&id)?;
    let reason = req.parse().map_err(ApiError::Validation)?;
    let mut tx = state.db.begin().await?;
    let changed = publish::retract(&mut tx, id, reason.as_ref()).await?;
    tx.commit().await?;
    match changed {
        Changed::Done(a) | Changed::Retracted(a) => {
            tracing::info!(alert_id = %a.id, editor_id = editor.id, "alert retracted");
            let mut view = [AlertView::from(a)];
            with_push(&state, &mut view).await?;
            let [view] = view;
            Ok(axum::Json(view))
        }
        Changed::NotFound => Err(ApiError::NotFound(format!("there is no alert with id `{id}`"))),
    }
}

/// Who the token belongs to.
#[utoipa::path(
    get,
    path = "/me",
    tag = "editor",
    operation_id = "me",
    security(("editorToken" = [])),
    responses((status = 200, description = "The token's holder.", body = Editor))
)]
async fn me(editor: Editor) -> axum::Json<Editor> {
    axum::Json(editor)
}
