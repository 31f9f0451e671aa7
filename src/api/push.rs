//! The public Web Push endpoints, called by the news site's JavaScript and service worker:
//! the VAPID public key, subscribing and unsubscribing, and shown/clicked receipts.
//!
//! They are open to the internet: CORS limits browsers to the allowed origins, every request is
//! rate-limited per client network in its own budget (see `limits`), bodies are small and
//! validated before anything is stored.

use std::net::SocketAddr;

use axum::{
    Extension,
    extract::{ConnectInfo, Request, State},
    http::{Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::openapi::UniqueSchemas;

use crate::{
    alerts::{
        domain::{Topic, Topics},
        events::AlertFrame,
    },
    app::AppState,
    push::{
        Push,
        receipt::BadReceipt,
        store,
        subscription::{SubscriptionJson, normalise_endpoint},
    },
    server::{
        error::{ApiError, Problem},
        extract::Json,
        rate_limits::{AddressKey, Budget, client_key},
    },
    validation::FieldError,
};

/// The public endpoints, each routed from its documentation (`#[utoipa::path]`).
pub fn router(state: AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes_unique(routes!(public_key))
        .routes_unique(routes!(subscribe, unsubscribe))
        .routes_unique(routes!(receipt))
        .routes_unique(routes!(live))
        .layer(middleware::from_fn_with_state(state, rate_limit))
}

/// The client a public request is counted against (see `rate_limits::client_key`).
#[derive(Clone, Copy)]
struct Client(AddressKey);

async fn rate_limit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let client = client_key(state.client_ip(req.headers(), peer));
    let path = req.uri().path();
    let budget = match *req.method() {
        Method::POST if path.ends_with("/push/subscriptions") => Budget::Subscribe,
        Method::POST if path.ends_with("/push/receipts") => Budget::Receipts,
        _ => Budget::General,
    };
    match state.public_limiter.check(budget, client) {
        Ok(()) => {
            req.extensions_mut().insert(Client(client));
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

fn push(state: &AppState) -> Result<&Push, ApiError> {
    state.push.as_deref().ok_or_else(|| {
        ApiError::Unavailable(
            "Web Push is not configured on this server (the `vapid_subject` setting)".into(),
        )
    })
}

/// The key a browser subscribes with (`applicationServerKey`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct VapidPublicKey {
    /// The VAPID public key: an uncompressed P-256 point, base64url without padding.
    public_key: String,
}

const UNAVAILABLE: &str = "Web Push is not configured on this server (`vapid_subject`).";

/// The VAPID public key.
#[utoipa::path(
    get,
    path = "/push/vapid-public-key",
    tag = "push",
    operation_id = "vapid_public_key",
    responses(
        (status = 200, description = "The key (cacheable for an hour: it never changes silently).", body = VapidPublicKey),
        (status = 503, description = UNAVAILABLE, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn public_key(State(state): State<AppState>) -> Result<Response, ApiError> {
    let push = push(&state)?;
    let mut r =
        axum::Json(VapidPublicKey { public_key: push.vapid.public_key_b64().to_string() }).into_response();
    // Cacheable for a while: the key never changes silently.
    r.headers_mut()
        .insert(axum::http::header::CACHE_CONTROL, "public, max-age=3600".parse().expect("static"));
    Ok(r)
}

/// The language of a reader's notifications.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // documentation of the values the handler accepts
enum Locale {
    Tr,
    En,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SubscribeRequest {
    /// The browser's `PushSubscription.toJSON()`.
    #[schema(required = true, value_type = SubscriptionJson)]
    subscription: Option<SubscriptionJson>,
    /// What the reader wants; empty: everything.
    #[serde(default)]
    #[schema(value_type = Vec<Topic>, max_items = 20)]
    topics: Vec<String>,
    /// Default `tr`.
    #[schema(value_type = Option<Locale>)]
    locale: Option<String>,
    /// The endpoint this subscription replaces (from `pushsubscriptionchange`).
    #[schema(format = Uri, max_length = 1000)]
    replaces: Option<String>,
}

/// A stored subscription.
#[derive(Serialize, ToSchema)]
struct SubscriptionView {
    id: i64,
    #[schema(value_type = Vec<Topic>)]
    topics: Vec<String>,
    #[schema(value_type = Locale)]
    locale: String,
}

/// Subscribe a browser to Web Push, or refresh its subscription (post it on every page load).
#[utoipa::path(
    post,
    path = "/push/subscriptions",
    tag = "push",
    operation_id = "subscribe",
    request_body = SubscribeRequest,
    responses(
        (status = 201, description = "Subscribed.", body = SubscriptionView),
        (status = 200, description = "Refreshed (the endpoint was subscribed already).", body = SubscriptionView),
        (status = 422, description = "Invalid fields (an endpoint not on a known push service, bad keys, ...).",
         body = Problem, content_type = "application/problem+json"),
        (status = 503, description = UNAVAILABLE, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn subscribe(
    State(state): State<AppState>,
    Extension(Client(client)): Extension<Client>,
    Json(req): Json<SubscribeRequest>,
) -> Result<Response, ApiError> {
    let push = push(&state)?;
    let mut errors = Vec::new();
    let subscription = match req.subscription {
        None => {
            errors.push(FieldError::new(
                "subscription",
                "is required: the browser's PushSubscription.toJSON()",
            ));
            None
        }
        Some(s) => s.parse(&push.allow).map_err(|e| errors.extend(e)).ok(),
    };
    let topics = Topics::parse("topics", &req.topics).map_err(|e| errors.push(e)).ok();
    let locale = req.locale.unwrap_or_else(|| "tr".into());
    if !matches!(locale.as_str(), "tr" | "en") {
        errors.push(FieldError::new("locale", "must be `tr` or `en`"));
    }
    let replaces = req
        .replaces
        .as_deref()
        .map(|old| normalise_endpoint("replaces", old))
        .transpose()
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    let (Some(subscription), Some(topics)) = (subscription, topics) else {
        return Err(ApiError::Validation(errors));
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    // Refreshing costs only the subscribe budget; a new subscription costs the general one too,
    // so a stranger creates subscriptions no faster than before the budgets were split.
    if !store::subscription_exists(&state.db, &subscription.endpoint).await? {
        state.public_limiter.check(Budget::General, client)?;
    }
    if let Some(old) = replaces.as_deref()
        && old != subscription.endpoint
    {
        store::delete_subscription(&state.db, old).await?;
    }
    let outcome = store::upsert_subscription(
        &state.db,
        &subscription,
        &topics.to_strings(),
        &locale,
        push.vapid.public_key(),
    )
    .await?;
    let (status, id) = match outcome {
        store::Upserted::Created(id) => (StatusCode::CREATED, id),
        store::Upserted::Updated(id) => (StatusCode::OK, id),
    };
    tracing::info!(subscription_id = id, push_host = %subscription.host, created = status == StatusCode::CREATED, "push subscription saved");
    Ok((status, axum::Json(SubscriptionView { id, topics: topics.to_strings(), locale })).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UnsubscribeRequest {
    /// The subscription's endpoint.
    #[schema(required = true, value_type = String, max_length = 1000)]
    endpoint: Option<String>,
}

/// Turn a browser's alerts off.
#[utoipa::path(
    delete,
    path = "/push/subscriptions",
    tag = "push",
    operation_id = "unsubscribe",
    request_body = UnsubscribeRequest,
    responses(
        (status = 204, description = "Unsubscribed."),
        (status = 404, description = "No subscription has this endpoint.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = UNAVAILABLE, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn unsubscribe(
    State(state): State<AppState>,
    Json(req): Json<UnsubscribeRequest>,
) -> Result<StatusCode, ApiError> {
    push(&state)?;
    let endpoint = req.endpoint.ok_or_else(|| ApiError::field("endpoint", "is required"))?;
    // Normalised as at subscribing, so the browser's raw endpoint finds the stored one.
    let endpoint = normalise_endpoint("endpoint", &endpoint).map_err(|e| ApiError::Validation(vec![e]))?;
    if store::delete_subscription(&state.db, &endpoint).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("no subscription has this endpoint".into()))
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LiveQuery {
    /// Comma-separated topic slugs (at most 20); absent: every alert.
    #[param(example = "burdur,gundem")]
    topics: Option<String>,
    /// Alerts to return.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 20)]
    limit: Option<String>,
}

/// The alerts live now and the stream position they are current at.
#[derive(Serialize, ToSchema)]
struct LiveAlerts {
    /// Connect a ticker with `since=<seq>` to get everything after these.
    seq: i64,
    /// Newest first, each as its latest `alert` or `update` frame.
    #[schema(value_type = Vec<AlertFrame>)]
    alerts: Vec<serde_json::Value>,
}

/// `GET /api/v1/live`: the alerts live right now (newest first, as their latest `alert` or
/// `update` frame) and the stream position to continue from. A ticker loads this first, then
/// connects with `since=<seq>`; whatever happens in between arrives as replay, and applying a
/// frame twice is harmless (frames are keyed by alert id).
#[utoipa::path(
    get,
    path = "/live",
    tag = "push",
    operation_id = "live_alerts",
    params(LiveQuery),
    responses(
        (status = 200, description = "The live alerts (cacheable for 2 s).", body = LiveAlerts),
        (status = 422, description = "An invalid query parameter.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database cannot be reached right now.", body = Problem,
         content_type = "application/problem+json"),
    )
)]
async fn live(
    State(state): State<AppState>,
    crate::server::extract::Query(q): crate::server::extract::Query<LiveQuery>,
) -> Result<Response, ApiError> {
    let topics = match q.topics.as_deref() {
        Some(csv) => Topics::parse_csv("topics", csv).map_err(|e| ApiError::Validation(vec![e]))?,
        None => Topics::default(),
    };
    let limit = crate::server::extract::limit(q.limit.as_deref(), 5, 20)?;
    // The position first: anything committed after it is replayed to the ticker.
    let seq = state.hub.head();
    let frames = crate::alerts::store::live_frames(&state.db, &topics, seq, limit).await?;
    let alerts = frames.iter().filter_map(|f| serde_json::from_str(f).ok()).collect();
    let mut r = axum::Json(LiveAlerts { seq, alerts }).into_response();
    r.headers_mut().insert(axum::http::header::CACHE_CONTROL, "public, max-age=2".parse().expect("static"));
    Ok(r)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReceiptRequest {
    /// The alert the notification was for (`data.id` in the push).
    #[schema(required = true, value_type = String, example = "0194c3f0-8a2e-7b3c-9d4e-5f6a7b8c9d0e")]
    alert_id: Option<String>,
    #[schema(required = true, value_type = store::ReceiptEvent)]
    event: Option<String>,
    /// `data.receipt` of the push: `<subscription id>.<token>`.
    #[schema(required = true, value_type = String, pattern = "^[0-9]{1,19}\\.[A-Za-z0-9_-]{22}$")]
    receipt: Option<String>,
}

/// `POST /push/receipts`: a service worker reports a push shown or clicked. It counts only with
/// the receipt token that push carried, once per event per delivery, and never for a retracted
/// alert (see `push::receipt`). 202 when counted, and also for a repeat of a counted receipt
/// (a retry after a lost answer is normal and changes nothing); 422 naming the field for a
/// receipt this server did not make for this alert; 409 when it cannot count (retracted, or the
/// push was not sent), with `Retry-After` when the push's outcome is not logged yet.
#[utoipa::path(
    post,
    path = "/push/receipts",
    tag = "push",
    operation_id = "receipt",
    request_body = ReceiptRequest,
    responses(
        (status = 202, description = "Counted (or counted before: a repeat changes nothing)."),
        (status = 409, description = "Not counted: the alert was retracted or the push was not sent; or its outcome is \
                                      not logged yet (then with `Retry-After`: send it again).",
         body = Problem, content_type = "application/problem+json",
         headers(("Retry-After" = Option<i64>, description = "Seconds after which to send the receipt again."))),
        (status = 422, description = "Invalid fields, a receipt this server did not issue for this alert, or no \
                                      published alert has this id.",
         body = Problem, content_type = "application/problem+json"),
        (status = 503, description = UNAVAILABLE, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn receipt(
    State(state): State<AppState>,
    Json(req): Json<ReceiptRequest>,
) -> Result<Response, ApiError> {
    let push = push(&state)?;
    let mut errors = Vec::new();
    let alert_id = match req.alert_id.as_deref().map(str::parse::<uuid::Uuid>) {
        None => Err(FieldError::new("alert_id", "is required")),
        Some(Err(_)) => Err(FieldError::new("alert_id", "is not an alert id")),
        Some(Ok(id)) => Ok(id),
    }
    .map_err(|e| errors.push(e))
    .ok();
    let event = match req.event.as_deref() {
        Some("shown") => Some(store::ReceiptEvent::Shown),
        Some("clicked") => Some(store::ReceiptEvent::Clicked),
        _ => {
            errors.push(FieldError::new("event", "must be `shown` or `clicked`"));
            None
        }
    };
    if req.receipt.is_none() {
        errors.push(FieldError::new("receipt", "is required: the push's `data.receipt`, as it arrived"));
    }
    let (Some(alert_id), Some(event), Some(receipt)) = (alert_id, event, req.receipt.as_deref()) else {
        return Err(ApiError::Validation(errors));
    };
    let subscription_id = push.receipts.verify(alert_id, receipt).map_err(|e| match e {
        BadReceipt::Malformed => ApiError::field(
            "receipt",
            "is not a receipt: the push's `data.receipt` (`<subscription id>.<token>`), unchanged",
        ),
        BadReceipt::Forged => ApiError::field(
            "receipt",
            "was not issued for a push of this alert: receipts count only for pushes this server sent",
        ),
    })?;
    let detail = match store::add_receipt(&state.db, alert_id, subscription_id, event).await? {
        store::Receipt::Counted | store::Receipt::AlreadyCounted => {
            return Ok(StatusCode::ACCEPTED.into_response());
        }
        store::Receipt::UnknownAlert => {
            return Err(ApiError::field("alert_id", "there is no published alert with this id"));
        }
        store::Receipt::Retracted => "the alert was retracted; receipts for it are not counted".to_string(),
        store::Receipt::NotSent(status) => {
            format!(
                "this push was not delivered (its outcome is `{}`); receipts count only for pushes sent",
                status.as_str()
            )
        }
        store::Receipt::NotLogged => {
            let mut r = ApiError::Conflict(
                "this push's outcome is not logged yet; send the receipt again after `Retry-After` seconds"
                    .into(),
            )
            .into_response();
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("2"));
            return Ok(r);
        }
    };
    Err(ApiError::Conflict(detail))
}
