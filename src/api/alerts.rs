//! The editor API for alerts: flag, list, show, correct, retract.

use axum::{
    Router,
    body::Bytes,
    extract::{FromRequest, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{
    error::{ApiError, ApiResult},
    extract::{Json, OptionalJson, Path, Query},
};
use crate::{
    alerts::{
        domain::{CorrectionRequest, FieldError, NewAlertRequest, RetractRequest},
        store::{self, Alert, Changed, Flagged},
    },
    app::AppState,
    auth::Editor,
    telemetry::metrics,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/alerts", post(create).get(list))
        .route("/alerts/{id}", get(show).patch(correct))
        .route("/alerts/{id}/retract", post(retract))
        .route("/alerts/{id}/deliveries", get(deliveries))
        .route("/me", get(me))
}

/// An alert as the API shows it.
#[derive(Serialize)]
pub struct AlertView {
    pub id: Uuid,
    pub seq: Option<i64>,
    pub status: String,
    pub label: String,
    pub headline: String,
    pub summary: Option<String>,
    pub url: String,
    pub image: Option<String>,
    pub article_id: Option<String>,
    pub topics: Vec<String>,
    pub urgency: String,
    pub ttl_seconds: i32,
    pub send_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub retracted_at: Option<DateTime<Utc>>,
    pub retract_reason: Option<String>,
    pub created_by: Option<String>,
    pub delivery: Delivery,
    /// Web Push figures (on `GET /alerts/{id}`, once the alert is published and push is on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<crate::push::store::PushFigures>,
    pub links: Links,
}

#[derive(Serialize)]
pub struct Delivery {
    /// Live tickers sent the alert so far, summed over every server process (flushed each
    /// second).
    pub tickers_reached: i64,
}

#[derive(Serialize)]
pub struct Links {
    #[serde(rename = "self")]
    pub self_: String,
    pub retract: String,
    pub deliveries: String,
    pub article: String,
}

impl From<Alert> for AlertView {
    fn from(a: Alert) -> Self {
        let self_ = format!("/api/v1/alerts/{}", a.id);
        Self {
            expires_at: a.expires_at(),
            links: Links {
                retract: format!("{self_}/retract"),
                deliveries: format!("{self_}/deliveries"),
                article: a.url.clone(),
                self_,
            },
            delivery: Delivery { tickers_reached: a.tickers_reached },
            push: None,
            id: a.id,
            seq: a.seq,
            status: a.status,
            label: a.label,
            headline: a.headline,
            summary: a.summary,
            url: a.url,
            image: a.image,
            article_id: a.article_id,
            topics: a.topics,
            urgency: a.urgency,
            ttl_seconds: a.ttl_seconds,
            send_at: a.send_at,
            created_at: a.created_at,
            published_at: a.published_at,
            updated_at: a.updated_at,
            retracted_at: a.retracted_at,
            retract_reason: a.retract_reason,
            created_by: a.created_by,
        }
    }
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
        let value = super::extract::parse::<T>(&body)?;
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

async fn create(
    State(state): State<AppState>,
    editor: Editor,
    headers: HeaderMap,
    JsonWithBytes(req, raw): JsonWithBytes<NewAlertRequest>,
) -> ApiResult<Response> {
    let key = idempotency_key(&headers)?;
    let now = Utc::now();
    let new = req.parse(state.settings.default_ttl_secs, now).map_err(ApiError::Validation)?;
    let fingerprint = Sha256::digest(&raw).to_vec();

    let mut tx = state.db.begin().await?;
    if let Some(key) = &key {
        // Concurrent requests with one key: the second waits for the first, then replays it.
        sqlx::query("select pg_advisory_xact_lock($1::int, hashtext($2))")
            .bind(editor.id as i32)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        let stored: Option<(Vec<u8>, i16, String)> = sqlx::query_as(
            "select request_hash, status, body from idempotency_keys where token_id = $1 and key = $2",
        )
        .bind(editor.id)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((hash, status, body)) = stored {
            if hash != fingerprint {
                return Err(ApiError::Validation(vec![FieldError::new(
                    "Idempotency-Key",
                    "this key was already used for a different request; use a new key per alert",
                )]));
            }
            let status = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK);
            let location = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["links"]["self"].as_str().map(String::from));
            return Ok(json_response(status, body, location.as_deref(), true));
        }
    }

    let (status, alert) = match store::flag(&mut tx, &new, editor.id, now).await? {
        Flagged::Created(a) => (StatusCode::CREATED, a),
        Flagged::AlreadyLive(a) => (StatusCode::OK, a),
    };
    let view = AlertView::from(alert);
    let body = serde_json::to_string(&view).expect("alert view serialises");
    if let Some(key) = &key {
        sqlx::query(
            "insert into idempotency_keys (token_id, key, request_hash, status, body)
             values ($1, $2, $3, $4, $5)",
        )
        .bind(editor.id)
        .bind(key)
        .bind(&fingerprint)
        .bind(status.as_u16() as i16)
        .bind(&body)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    if status == StatusCode::CREATED {
        if view.status == "live" {
            metrics::alert_published();
        }
        tracing::info!(alert_id = %view.id, seq = view.seq.unwrap_or_default(), status = %view.status, editor_id = editor.id, "alert flagged");
    }
    Ok(json_response(status, body, Some(&view.links.self_), false))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<String>,
    before: Option<String>,
    status: Option<String>,
}

#[derive(Serialize)]
struct Page {
    items: Vec<AlertView>,
    /// The next (older) page, absent on the last page.
    next: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    _editor: Editor,
    Query(q): Query<ListQuery>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let limit = super::extract::limit(q.limit.as_deref(), 20, 100)?;
    let before = q
        .before
        .as_deref()
        .map(|s| s.parse::<Uuid>().map_err(|_| ApiError::field("before", "must be an alert id")))
        .transpose()?;
    if let Some(s) = q.status.as_deref()
        && !matches!(s, "scheduled" | "live" | "retracted")
    {
        return Err(ApiError::field("status", "must be one of scheduled, live, retracted"));
    }
    let alerts = store::list(&state.db, before, q.status.as_deref(), limit).await?;
    let next = (alerts.len() as i64 == limit).then(|| {
        let last = alerts.last().expect("non-empty page").id;
        let status = q.status.as_deref().map(|s| format!("&status={s}")).unwrap_or_default();
        format!("/api/v1/alerts?limit={limit}&before={last}{status}")
    });
    let ids: Vec<Uuid> = alerts.iter().map(|a| a.id).collect();
    let mut items: Vec<AlertView> = alerts.into_iter().map(AlertView::from).collect();
    if state.push.is_some() {
        let mut conn = state.db.acquire().await?;
        let mut figures: std::collections::HashMap<Uuid, _> =
            crate::push::store::figures_of(&mut conn, &ids).await?.into_iter().collect();
        for item in &mut items {
            item.push = figures.remove(&item.id);
        }
    }
    let page = Page { items, next };
    Ok(axum::Json(serde_json::to_value(page).expect("page serialises")))
}

fn parse_id(id: &str) -> ApiResult<Uuid> {
    id.parse().map_err(|_| ApiError::NotFound(format!("there is no alert with id `{id}`")))
}

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
    let mut view = AlertView::from(alert);
    if state.push.is_some() {
        view.push = crate::push::store::figures(&mut conn, id).await?;
    }
    Ok(axum::Json(view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveriesQuery {
    status: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// The delivery log of one alert, paged by subscription id.
async fn deliveries(
    State(state): State<AppState>,
    _editor: Editor,
    Path(id): Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let id = parse_id(&id)?;
    if let Some(s) = q.status.as_deref()
        && !matches!(s, "sent" | "failed" | "gone" | "expired" | "skipped")
    {
        return Err(ApiError::field("status", "must be one of sent, failed, gone, expired, skipped"));
    }
    let limit = super::extract::limit(q.limit.as_deref(), 100, 1000)?;
    let after = match q.after.as_deref() {
        None => 0,
        Some(s) => s.parse::<i64>().map_err(|_| ApiError::field("after", "must be a subscription id"))?,
    };
    let mut conn = state.db.acquire().await?;
    if store::get(&mut conn, id).await?.is_none() {
        return Err(ApiError::NotFound(format!("there is no alert with id `{id}`")));
    }
    drop(conn);
    let rows = crate::push::store::deliveries(&state.db, id, q.status.as_deref(), after, limit).await?;
    let next = (rows.len() as i64 == limit).then(|| {
        let last = rows.last().expect("non-empty page").subscription_id;
        let status = q.status.as_deref().map(|s| format!("&status={s}")).unwrap_or_default();
        format!("/api/v1/alerts/{id}/deliveries?limit={limit}&after={last}{status}")
    });
    Ok(axum::Json(serde_json::json!({ "items": rows, "next": next })))
}

async fn correct(
    State(state): State<AppState>,
    editor: Editor,
    Path(id): Path<String>,
    Json(req): Json<CorrectionRequest>,
) -> ApiResult<axum::Json<AlertView>> {
    let id = parse_id(&id)?;
    let correction = req.parse().map_err(ApiError::Validation)?;
    let mut tx = state.db.begin().await?;
    let changed = store::correct(&mut tx, id, &correction).await?;
    tx.commit().await?;
    match changed {
        Changed::Done(a) => {
            tracing::info!(alert_id = %a.id, editor_id = editor.id, "alert corrected");
            Ok(axum::Json(a.into()))
        }
        Changed::NotFound => Err(ApiError::NotFound(format!("there is no alert with id `{id}`"))),
        Changed::Retracted(_) => Err(ApiError::Conflict(
            "this alert was retracted and can no longer be corrected; flag a new one".into(),
        )),
    }
}

async fn retract(
    State(state): State<AppState>,
    editor: Editor,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<RetractRequest>,
) -> ApiResult<axum::Json<AlertView>> {
    let id = parse_id(&id)?;
    let reason = req.parse().map_err(ApiError::Validation)?;
    let mut tx = state.db.begin().await?;
    let changed = store::retract(&mut tx, id, reason.as_ref()).await?;
    tx.commit().await?;
    match changed {
        Changed::Done(a) | Changed::Retracted(a) => {
            tracing::info!(alert_id = %a.id, editor_id = editor.id, "alert retracted");
            Ok(axum::Json(a.into()))
        }
        Changed::NotFound => Err(ApiError::NotFound(format!("there is no alert with id `{id}`"))),
    }
}

async fn me(editor: Editor) -> axum::Json<Editor> {
    axum::Json(editor)
}
