//! Feeds in: admins register, change and remove feeds; editors see the drafts suggest-mode
//! feeds make and send one with a click (or put it aside).

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::openapi::UniqueSchemas;
use uuid::Uuid;

use crate::{
    alerts::{
        domain::{AlertStatus, ArticleId, Headline, Summary},
        store as alerts,
        view::AlertView,
    },
    app::AppState,
    auth::{self, Admin, Editor},
    feeds::{
        domain::{FeedRequest, FeedSpec, Filter, Rules},
        live,
        parse::Item,
        poller::alert_from,
        store::{self, Feed, FeedItem, WriteError},
    },
    publish::{self, Flagged},
    server::{
        error::{ApiError, ApiResult, Problem},
        event_stream,
        extract::{Json, Path, Query},
    },
    telemetry::metrics,
    validation::{FieldError, WebUrl},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes_unique(routes!(list, create))
        .routes_unique(routes!(show, update, remove))
        .routes_unique(routes!(poll_now))
        .routes_unique(routes!(drafts))
        .routes_unique(routes!(stream_drafts))
        .routes_unique(routes!(send_draft))
        .routes_unique(routes!(dismiss_draft))
}

fn rules(state: &AppState) -> Rules<'_> {
    Rules { outbound: &state.outbound, min_interval_secs: state.settings.feed_min_interval_secs }
}

fn feed_id(id: &str) -> ApiResult<Uuid> {
    id.parse().map_err(|_| ApiError::NotFound(format!("there is no feed with id `{id}`")))
}

fn item_id(id: &str) -> ApiResult<Uuid> {
    id.parse().map_err(|_| ApiError::NotFound(format!("there is no draft with id `{id}`")))
}

fn write_error(e: WriteError) -> ApiError {
    match e {
        WriteError::DuplicateUrl(other) => ApiError::Validation(vec![FieldError::new(
            "url",
            format!("another feed (`{other}`) already has this URL"),
        )]),
        WriteError::Db(e) => e.into(),
    }
}

/// Every feed.
#[derive(Serialize, ToSchema)]
struct FeedList {
    items: Vec<Feed>,
}

/// A feed with its latest items (drafts, sent, dismissed and skipped, with why).
#[derive(Serialize, ToSchema)]
struct FeedDetail {
    #[serde(flatten)]
    feed: Feed,
    recent_items: Vec<FeedItem>,
}

/// List the feeds, with each one's last poll outcome (admins only).
#[utoipa::path(
    get,
    path = "/feeds",
    tag = "admin",
    operation_id = "list_feeds",
    security(("editorToken" = [])),
    responses(
        (status = 200, description = "The feeds.", body = FeedList),
        (status = 403, description = "The token is not an admin's.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list(State(state): State<AppState>, _admin: Admin) -> ApiResult<axum::Json<FeedList>> {
    Ok(axum::Json(FeedList { items: store::list(&state.db).await? }))
}

/// Register a feed (admins only). It is polled at once. What it holds at its first successful
/// poll is its baseline and never fires, whatever the items' dates (a CMS may date them hours
/// ahead); after that, an item fires when its guid (or link) is new to the feed: an item whose
/// date changes is the same item, and does not fire again.
#[utoipa::path(
    post,
    path = "/feeds",
    tag = "admin",
    operation_id = "create_feed",
    security(("editorToken" = [])),
    request_body = FeedRequest,
    responses(
        (status = 201, description = "Registered.", body = Feed,
         headers(("Location" = String, description = "The feed's address.")),
         links(("GetFeed" = (operation_id = "get_feed", parameters(("id" = "$response.body#/id")))))),
        (status = 403, description = "The token is not an admin's.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (an unfetchable URL, a URL another feed has, an interval under the minimum).",
         body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Json(req): Json<FeedRequest>,
) -> ApiResult<Response> {
    let spec = req.parse_new(&rules(&state)).map_err(ApiError::Validation)?;
    let feed = store::create(&state.db, &spec, admin.id).await.map_err(write_error)?;
    tracing::info!(feed_id = %feed.id, admin_id = admin.id, mode = feed.mode.as_str(), "feed registered");
    state.feeds_wake.notify_one();
    let mut r = (StatusCode::CREATED, axum::Json(&feed)).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/api/v1/feeds/{}", feed.id)) {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(r)
}

/// One feed, with its last poll outcome and latest items (admins only).
#[utoipa::path(
    get,
    path = "/feeds/{id}",
    tag = "admin",
    operation_id = "get_feed",
    security(("editorToken" = [])),
    params(("id" = Uuid, Path, description = "The feed's id.")),
    responses(
        (status = 200, description = "The feed.", body = FeedDetail),
        (status = 403, description = "The token is not an admin's.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No feed has this id.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn show(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<FeedDetail>> {
    let id = feed_id(&id)?;
    let feed = store::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("there is no feed with id `{id}`")))?;
    let recent_items = store::recent_items(&state.db, id, 20).await?;
    Ok(axum::Json(FeedDetail { feed, recent_items }))
}

fn spec_of(feed: &Feed) -> ApiResult<FeedSpec> {
    let invalid =
        |what: &str| ApiError::Internal(anyhow::anyhow!("stored feed {} has an invalid {what}", feed.id));
    Ok(FeedSpec {
        url: url::Url::parse(&feed.url).map_err(|_| invalid("url"))?,
        name: feed.name.clone(),
        label: crate::alerts::domain::Label::parse(&feed.label).map_err(|_| invalid("label"))?,
        topics: crate::alerts::domain::Topics::from_db(feed.topics.clone()),
        mode: feed.mode,
        filter: Filter { title_prefix: feed.title_prefix.clone(), category: feed.category.clone() },
        interval_secs: feed.interval_secs as u64,
        enabled: feed.enabled,
    })
}

/// Change a feed (admins only): any of the fields of a new feed; `null` clears a filter. A new
/// `url`, or `enabled` set on a disabled feed, takes a new baseline: what the feed holds at its
/// next successful poll (the new address's items, or what appeared while it was paused) never
/// fires.
#[utoipa::path(
    patch,
    path = "/feeds/{id}",
    tag = "admin",
    operation_id = "update_feed",
    security(("editorToken" = [])),
    params(("id" = Uuid, Path, description = "The feed's id.")),
    request_body = FeedRequest,
    responses(
        (status = 200, description = "Changed.", body = Feed),
        (status = 403, description = "The token is not an admin's.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No feed has this id.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn update(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    Json(req): Json<FeedRequest>,
) -> ApiResult<axum::Json<Feed>> {
    let missing = || ApiError::NotFound(format!("there is no feed with id `{id}`"));
    let fid = feed_id(&id)?;
    let current = store::get(&state.db, fid).await?.ok_or_else(missing)?;
    let spec = req.apply(spec_of(&current)?, &rules(&state)).map_err(ApiError::Validation)?;
    let feed = store::update(&state.db, fid, &spec).await.map_err(write_error)?.ok_or_else(missing)?;
    tracing::info!(feed_id = %fid, admin_id = admin.id, "feed changed");
    state.feeds_wake.notify_one();
    Ok(axum::Json(feed))
}

/// Remove a feed and its items (admins only); alerts it made stay. Removing twice is harmless.
#[utoipa::path(
    delete,
    path = "/feeds/{id}",
    tag = "admin",
    operation_id = "delete_feed",
    security(("editorToken" = [])),
    params(("id" = Uuid, Path, description = "The feed's id.")),
    responses(
        (status = 204, description = "Removed."),
        (status = 403, description = "The token is not an admin's.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No feed has this id.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn remove(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let fid = feed_id(&id)?;
    if !store::delete(&state.db, fid).await? {
        return Err(ApiError::NotFound(format!("there is no feed with id `{id}`")));
    }
    tracing::info!(feed_id = %fid, admin_id = admin.id, "feed removed");
    Ok(StatusCode::NO_CONTENT)
}

/// Poll a feed now, whatever its interval or backoff (admins only).
#[utoipa::path(
    post,
    path = "/feeds/{id}/poll",
    tag = "admin",
    operation_id = "poll_feed",
    security(("editorToken" = [])),
    params(("id" = Uuid, Path, description = "The feed's id.")),
    responses(
        (status = 202, description = "A poller takes it within a second; its outcome appears on the feed."),
        (status = 403, description = "The token is not an admin's.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No feed has this id.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn poll_now(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let fid = feed_id(&id)?;
    if !store::poll_now(&state.db, fid).await? {
        return Err(ApiError::NotFound(format!("there is no feed with id `{id}`")));
    }
    state.feeds_wake.notify_one();
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DraftsQuery {
    /// Drafts to return, newest first.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct DraftList {
    items: Vec<FeedItem>,
}

/// Drafts from suggest-mode feeds, newest first: ready-made alerts an editor sends with a click.
#[utoipa::path(
    get,
    path = "/feeds/drafts",
    tag = "editor",
    operation_id = "list_drafts",
    security(("editorToken" = [])),
    params(DraftsQuery),
    responses(
        (status = 200, description = "The drafts.", body = DraftList),
        (status = 422, description = "Invalid query.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn drafts(
    State(state): State<AppState>,
    _editor: Editor,
    Query(q): Query<DraftsQuery>,
) -> ApiResult<axum::Json<DraftList>> {
    let limit = match q.limit.as_deref() {
        None => live::LIMIT,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| ApiError::field("limit", "must be a whole number from 1 to 100"))?,
    };
    Ok(axum::Json(DraftList { items: store::drafts(&state.db, limit).await? }))
}

/// The drafts, live, as Server-Sent Events: a `drafts` event with the whole list (as
/// `GET /feeds/drafts` answers it, newest 50) at once and again whenever it changes, in whichever
/// process the change happened; a comment line every `ping_interval_secs` in between. The token is
/// checked again at each of those: once it is revoked, an `end` event closes the stream. So is
/// shutdown (reconnect). The console reads this with `fetch` (EventSource cannot send the token).
#[utoipa::path(
    get,
    path = "/feeds/drafts/stream",
    tag = "editor",
    operation_id = "stream_drafts",
    security(("editorToken" = [])),
    responses(
        (status = 200, description = "The stream: `event: drafts` with `data: {\"items\": [...]}` (a DraftList), `event: end` with `data: {\"reason\": ...}`, and `:` comment lines.",
         body = String, content_type = "text/event-stream"),
        (status = 503, description = "This process serves as many streams as it may; ask `GET /feeds/drafts` meanwhile.",
         body = Problem, content_type = "application/problem+json"),
    )
)]
async fn stream_drafts(
    State(state): State<AppState>,
    editor: Editor,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let sub = state.drafts.subscribe().ok_or_else(|| {
        ApiError::Unavailable(format!(
            "this process already serves as many draft streams as it may ({}); read GET \
             /api/v1/feeds/drafts meanwhile",
            live::MAX_STREAMS
        ))
    })?;
    // The extractor has just accepted this token.
    let token = auth::request_token(&headers).unwrap_or_default().to_string();
    let every = state.settings.ping_interval();
    let stream = DraftStream {
        sub,
        token,
        db: state.db.clone(),
        shutdown: state.shutdown.clone(),
        check: tokio::time::interval_at(tokio::time::Instant::now() + every, every),
        done: false,
    };
    tracing::debug!(editor_id = editor.id, "drafts stream opened");
    Ok(event_stream::response(futures_util::stream::unfold(stream, |mut s| async move {
        s.next().await.map(|b| (b, s))
    })))
}

/// One console's stream of draft lists.
struct DraftStream {
    sub: live::Subscription,
    token: String,
    db: sqlx::PgPool,
    shutdown: CancellationToken,
    /// A comment line to keep proxies from closing an idle stream, and a fresh look at the token.
    check: tokio::time::Interval,
    done: bool,
}

impl DraftStream {
    async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return self.end("the server is shutting down: reconnect"),
                changed = self.sub.lists.changed() => {
                    changed.ok()?;
                    if let Some(list) = self.sub.lists.borrow_and_update().clone() {
                        return Some(list);
                    }
                }
                _ = self.check.tick() => {
                    // A database error keeps the stream: it says nothing about the token.
                    if let Ok(None) = auth::authenticate(&self.db, &self.token).await {
                        return self.end("this token is unknown or has been revoked");
                    }
                    return Some(Bytes::from_static(b": keep-alive\n\n"));
                }
            }
        }
    }

    fn end(&mut self, reason: &str) -> Option<Bytes> {
        self.done = true;
        let data = serde_json::json!({ "reason": reason });
        Some(Bytes::from(format!("event: end\ndata: {data}\n\n")))
    }
}

/// Send a draft: flags its alert (with the feed's topics and label). Sending twice, or an
/// article that already has a live alert, returns that alert.
#[utoipa::path(
    post,
    path = "/feeds/drafts/{id}/send",
    tag = "editor",
    operation_id = "send_draft",
    security(("editorToken" = [])),
    params(("id" = Uuid, Path, description = "The draft's id.")),
    responses(
        (status = 201, description = "Flagged.", body = AlertView,
         headers(("Location" = String, description = "The alert's address."))),
        (status = 200, description = "Already sent, or the article already has a live alert: that alert.", body = AlertView),
        (status = 404, description = "No draft has this id.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn send_draft(
    State(state): State<AppState>,
    editor: Editor,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let missing = || ApiError::NotFound(format!("there is no draft with id `{id}`"));
    let iid = item_id(&id)?;
    let mut tx = state.db.begin().await?;
    let row = store::lock_item(&mut tx, iid).await?.ok_or_else(missing)?;
    if let Some(alert_id) = row.alert_id
        && let Some(alert) = alerts::get(&mut tx, alert_id).await?
    {
        tx.rollback().await?;
        return Ok((StatusCode::OK, axum::Json(AlertView::from(alert))).into_response());
    }
    let feed = store::get(&state.db, row.feed_id).await?.ok_or_else(missing)?;
    let item = item_of(&row)?;
    let new = alert_from(&feed, &item, state.settings.default_ttl_secs);
    let (status, alert) = match publish::flag(&mut tx, &new, editor.id, Utc::now()).await? {
        Flagged::Created(a) => (StatusCode::CREATED, a),
        Flagged::AlreadyLive(a) => (StatusCode::OK, a),
    };
    store::mark_sent(&mut tx, iid, alert.id).await?;
    tx.commit().await?;
    if status == StatusCode::CREATED && alert.status == AlertStatus::Live {
        metrics::alert_published();
    }
    tracing::info!(alert_id = %alert.id, item_id = %iid, editor_id = editor.id, "draft sent");
    let view = AlertView::from(alert);
    let mut r = (status, axum::Json(&view)).into_response();
    if let Ok(loc) = HeaderValue::from_str(&view.links.self_) {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(r)
}

/// The stored draft as an item (it was validated when stored).
fn item_of(row: &FeedItem) -> ApiResult<Item> {
    let bad = |e: FieldError| ApiError::Internal(anyhow::anyhow!("stored draft {} is invalid: {e}", row.id));
    Ok(Item {
        article_id: ArticleId::parse(&row.article_id).map_err(bad)?,
        headline: Headline::parse(&row.headline).map_err(bad)?,
        summary: row.summary.as_deref().map(Summary::parse).transpose().map_err(bad)?,
        url: WebUrl::parse("url", &row.url, false).map_err(bad)?,
        image: row.image.as_deref().map(|i| WebUrl::parse("image", i, true)).transpose().map_err(bad)?,
        published_at: row.published_at,
        categories: Vec::new(),
    })
}

/// Put a draft aside: it leaves the drafts list and never fires. Harmless twice.
#[utoipa::path(
    post,
    path = "/feeds/drafts/{id}/dismiss",
    tag = "editor",
    operation_id = "dismiss_draft",
    security(("editorToken" = [])),
    params(("id" = Uuid, Path, description = "The draft's id.")),
    responses(
        (status = 204, description = "Dismissed."),
        (status = 404, description = "No draft has this id.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn dismiss_draft(
    State(state): State<AppState>,
    _editor: Editor,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let iid = item_id(&id)?;
    if !store::dismiss(&state.db, iid).await? {
        return Err(ApiError::NotFound(format!("there is no draft with id `{id}`")));
    }
    Ok(StatusCode::NO_CONTENT)
}
