//! The `feeds` and `feed_items` tables.
//!
//! Exactly one process polls a feed at a time: [`claim_due`] leases due feeds with
//! `for update skip locked` and [`finish_poll`] releases them. Exactly one alert per item: an item
//! is acted on only by the transaction that inserts its row ([`insert_item`]), under the unique
//! key (feed, article id), so a lease that ran out mid-poll still cannot alert twice.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use super::domain::{FeedSpec, Filter, Mode};
use crate::untrusted::SafeText;

/// A feed row, as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Feed {
    pub id: Uuid,
    pub url: String,
    pub name: String,
    pub label: String,
    pub topics: Vec<String>,
    pub mode: Mode,
    pub title_prefix: Option<String>,
    pub category: Option<String>,
    pub interval_secs: i32,
    pub enabled: bool,
    /// The token id of the admin who registered it; the alerts it flags are theirs.
    pub created_by: i64,
    pub created_at: DateTime<Utc>,
    /// When it is polled next (later after failures: the backoff).
    pub next_poll_at: DateTime<Utc>,
    pub last_polled_at: Option<DateTime<Utc>>,
    /// The last poll that fetched and read the feed (a 304 counts).
    pub last_success_at: Option<DateTime<Utc>>,
    /// When the feed's baseline was taken: the first successful poll after it was registered,
    /// re-enabled or given a new URL. The items it held then never fire, whatever their dates;
    /// absent until that poll.
    pub baseline_at: Option<DateTime<Utc>>,
    /// Why the last poll failed, in words; absent once a poll succeeds.
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// Polls failed in a row.
    pub failures: i32,
    /// The HTTP status of the last answer.
    pub last_status: Option<i32>,
    /// New items the last successful poll found.
    pub last_new_items: i32,
    #[serde(skip)]
    #[schema(ignore)]
    pub etag: Option<String>,
    #[serde(skip)]
    #[schema(ignore)]
    pub last_modified: Option<String>,
}

impl Feed {
    pub fn filter(&self) -> Filter {
        Filter { title_prefix: self.title_prefix.clone(), category: self.category.clone() }
    }
}

/// A checked query of [`Feed`]s: `query_feeds!(select from feeds "where …", args…)` or
/// `query_feeds!("update feeds …" returning, args…)`. (The text of a checked query must be string
/// literals, so the column list lives here rather than in a `const`.)
macro_rules! query_feeds {
    (select from feeds $tail:literal $(, $arg:expr)* $(,)?) => {
        query_feeds!(@ "select ", " from feeds " $tail $(, $arg)*)
    };
    ($statement:literal returning $(, $arg:expr)* $(,)?) => {
        query_feeds!(@ $statement " returning ", $(, $arg)*)
    };
    (@ $($head:literal)+, $($tail:literal)* $(, $arg:expr)*) => {
        sqlx::query_as!(
            Feed,
            $($head +)+ "id, url, name, label, topics, mode as \"mode: Mode\", title_prefix, category,
                interval_secs, enabled, created_by, created_at, next_poll_at, last_polled_at,
                last_success_at, baseline_at, last_error, last_error_at, failures, last_status,
                last_new_items, etag, last_modified" $(+ $tail)*
            $(, $arg)*
        )
    };
}

/// What went wrong writing a feed.
pub enum WriteError {
    /// Another feed has this URL.
    DuplicateUrl(Uuid),
    Db(sqlx::Error),
}

impl From<sqlx::Error> for WriteError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(e)
    }
}

async fn url_owner(pool: &PgPool, url: &str) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!("select id from feeds where url = $1", url).fetch_optional(pool).await
}

fn is_duplicate_url(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.constraint() == Some("feeds_url_key"))
}

pub async fn create(pool: &PgPool, spec: &FeedSpec, admin_id: i64) -> Result<Feed, WriteError> {
    let r = query_feeds!(
        "insert into feeds (id, url, name, label, topics, mode, title_prefix, category, interval_secs,
                            enabled, created_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         "
        returning,
        Uuid::now_v7(),
        spec.url.as_str(),
        &spec.name,
        spec.label.as_str(),
        &spec.topics.to_strings(),
        spec.mode.as_str(),
        spec.filter.title_prefix.as_deref(),
        spec.filter.category.as_deref(),
        spec.interval_secs as i32,
        spec.enabled,
        admin_id,
    )
    .fetch_one(pool)
    .await;
    match r {
        Ok(feed) => Ok(feed),
        Err(e) if is_duplicate_url(&e) => {
            Err(WriteError::DuplicateUrl(url_owner(pool, spec.url.as_str()).await?.unwrap_or_default()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes every field of `spec`. A changed URL starts over: its validators go, and so does the
/// baseline, as when a paused feed is enabled again (what the feed holds at the next successful
/// poll was not published while we were watching, and never fires).
pub async fn update(pool: &PgPool, id: Uuid, spec: &FeedSpec) -> Result<Option<Feed>, WriteError> {
    let r = query_feeds!(
        "update feeds set
            etag = case when url = $2 then etag end,
            last_modified = case when url = $2 then last_modified end,
            baseline_at = case when url = $2 and (enabled or not $10) then baseline_at end,
            url = $2, name = $3, label = $4, topics = $5, mode = $6, title_prefix = $7, category = $8,
            interval_secs = $9, enabled = $10,
            next_poll_at = least(next_poll_at, now() + make_interval(secs => $9::int4))
         where id = $1
         "
        returning,
        id,
        spec.url.as_str(),
        &spec.name,
        spec.label.as_str(),
        &spec.topics.to_strings(),
        spec.mode.as_str(),
        spec.filter.title_prefix.as_deref(),
        spec.filter.category.as_deref(),
        spec.interval_secs as i32,
        spec.enabled,
    )
    .fetch_optional(pool)
    .await;
    match r {
        Ok(feed) => Ok(feed),
        Err(e) if is_duplicate_url(&e) => {
            Err(WriteError::DuplicateUrl(url_owner(pool, spec.url.as_str()).await?.unwrap_or_default()))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn get(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<Feed>> {
    query_feeds!(select from feeds "where id = $1", id).fetch_optional(pool).await
}

pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<Feed>> {
    query_feeds!(select from feeds "order by created_at").fetch_all(pool).await
}

pub async fn delete(pool: &PgPool, id: Uuid) -> sqlx::Result<bool> {
    Ok(sqlx::query!("delete from feeds where id = $1", id).execute(pool).await?.rows_affected() > 0)
}

/// Polls the feed as soon as a poller is free (and forgets its backoff).
pub async fn poll_now(pool: &PgPool, id: Uuid) -> sqlx::Result<bool> {
    Ok(sqlx::query!("update feeds set next_poll_at = now() where id = $1", id)
        .execute(pool)
        .await?
        .rows_affected()
        > 0)
}

/// Leases up to `limit` due feeds to this process for `lease_secs`. A feed another process is
/// polling is skipped (its row is locked, or its lease runs); a lease that ran out (its process
/// died) is taken over.
pub async fn claim_due(pool: &PgPool, limit: i64, lease_secs: f64) -> sqlx::Result<Vec<Feed>> {
    query_feeds!(
        "update feeds set lease_until = now() + make_interval(secs => $2)
         where id in (
             select id from feeds
             where enabled and next_poll_at <= now() and (lease_until is null or lease_until < now())
             order by next_poll_at
             limit $1
             for update skip locked)
         "
        returning,
        limit,
        lease_secs,
    )
    .fetch_all(pool)
    .await
}

/// When the next feed is due, if any is enabled.
pub async fn next_due(pool: &PgPool) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar!(
        "select min(greatest(next_poll_at, coalesce(lease_until, next_poll_at))) from feeds where enabled",
    )
    .fetch_one(pool)
    .await
}

/// A poll's outcome.
pub enum PollOutcome {
    Fetched {
        status: u16,
        etag: Option<String>,
        last_modified: Option<String>,
        new_items: i32,
    },
    NotModified,
    /// `error` may carry what the feed's server sent (a parser's message quotes the document).
    Failed {
        status: Option<u16>,
        error: SafeText,
    },
}

impl PollOutcome {
    pub fn failed(status: Option<u16>, error: impl AsRef<str>) -> Self {
        Self::Failed { status, error: SafeText::new(error) }
    }
}

/// Records the outcome, releases the lease and schedules the next poll: after the interval,
/// or after a backoff that doubles with each failure in a row, up to an hour (or the interval,
/// if longer). A success takes the baseline if there is none, and only if the feed had none when
/// the poll was claimed and its URL is the one polled: a feed re-enabled or given a new URL while
/// the poll ran had its baseline dropped, and the document this poll read may be older than the
/// pause, so the next poll takes the baseline.
pub async fn finish_poll(pool: &PgPool, feed: &Feed, outcome: PollOutcome) -> sqlx::Result<()> {
    match outcome {
        PollOutcome::Fetched { status, etag, last_modified, new_items } => {
            sqlx::query!(
                "update feeds set lease_until = null, last_polled_at = now(), last_success_at = now(),
                    last_error = null, failures = 0, last_status = $2, etag = $3, last_modified = $4,
                    last_new_items = $5, next_poll_at = now() + make_interval(secs => interval_secs),
                    baseline_at = case when url = $6 then coalesce(baseline_at, case when $7::timestamptz is null then now() end) end
                 where id = $1",
                feed.id,
                status as i32,
                etag,
                last_modified,
                new_items,
                feed.url,
                feed.baseline_at,
            )
            .execute(pool)
            .await?;
        }
        PollOutcome::NotModified => {
            sqlx::query!(
                "update feeds set lease_until = null, last_polled_at = now(), last_success_at = now(),
                    last_error = null, failures = 0, last_status = 304, last_new_items = 0,
                    next_poll_at = now() + make_interval(secs => interval_secs),
                    baseline_at = case when url = $2 then coalesce(baseline_at, case when $3::timestamptz is null then now() end) end
                 where id = $1",
                feed.id,
                feed.url,
                feed.baseline_at,
            )
            .execute(pool)
            .await?;
        }
        PollOutcome::Failed { status, error } => {
            let backoff = backoff_secs(feed.interval_secs as u64, feed.failures as u32 + 1);
            sqlx::query!(
                "update feeds set lease_until = null, last_polled_at = now(), last_error = $2,
                    last_error_at = now(), failures = failures + 1, last_status = $3,
                    next_poll_at = now() + make_interval(secs => $4)
                 where id = $1",
                feed.id,
                error.as_str(),
                status.map(i32::from),
                backoff as f64,
            )
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}

/// Seconds before the next try after `failures` failed polls in a row.
pub fn backoff_secs(interval: u64, failures: u32) -> u64 {
    let cap = interval.max(3600);
    interval.saturating_mul(1u64 << failures.min(12)).min(cap)
}

/// What became of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum ItemState {
    /// Waiting for an editor (suggest mode).
    Draft,
    /// An alert was flagged from it.
    Sent,
    /// An editor put it aside.
    Dismissed,
    /// Seen, but not for alerting: too old, filtered out, or already there at registration.
    Skipped,
}

impl ItemState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Sent => "sent",
            Self::Dismissed => "dismissed",
            Self::Skipped => "skipped",
        }
    }
}

/// An item row, as the API shows it (a draft in the console).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FeedItem {
    pub id: Uuid,
    pub feed_id: Uuid,
    /// The feed's name.
    pub feed_name: String,
    pub article_id: String,
    pub headline: String,
    pub summary: Option<String>,
    pub url: String,
    pub image: Option<String>,
    pub published_at: Option<DateTime<Utc>>,
    pub state: ItemState,
    /// Why it was skipped.
    pub note: Option<String>,
    /// The alert flagged from it.
    pub alert_id: Option<Uuid>,
    pub seen_at: DateTime<Utc>,
    /// Topics and label its alert gets (the feed's).
    pub topics: Vec<String>,
    pub label: String,
}

/// A checked query returning [`FeedItem`]s: the item with its feed's name, topics and label,
/// then `$tail` (the conditions on `i`, the item).
macro_rules! query_items {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            FeedItem,
            "select i.id, i.feed_id, f.name as feed_name, i.article_id, i.headline, i.summary, i.url,
                    i.image, i.published_at, i.state as \"state: ItemState\", i.note, i.alert_id, i.seen_at, f.topics, f.label
             from feed_items i join feeds f on f.id = i.feed_id "
                + $tail
            $(, $arg)*
        )
    };
}

/// Inserts an item unless the feed has it already; `None` if it had (then nothing is to be
/// done with it). Runs in the caller's transaction, which acts on the item before committing.
#[allow(clippy::too_many_arguments)]
pub async fn insert_item(
    tx: &mut PgConnection,
    feed_id: Uuid,
    item: &super::parse::Item,
    state: ItemState,
    note: Option<&str>,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        "insert into feed_items (id, feed_id, article_id, headline, summary, url, image, published_at,
                                 state, note)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         on conflict (feed_id, article_id) do nothing
         returning id",
        Uuid::now_v7(),
        feed_id,
        item.article_id.as_str(),
        item.headline.as_str(),
        item.summary.as_ref().map(|s| s.as_str()),
        item.url.as_str(),
        item.image.as_ref().map(|s| s.as_str()),
        item.published_at,
        state.as_str(),
        note,
    )
    .fetch_optional(tx)
    .await
}

/// Which of these article ids the feed has seen already (to skip them before any work).
pub async fn known_ids(pool: &PgPool, feed_id: Uuid, ids: &[String]) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        "select article_id from feed_items where feed_id = $1 and article_id = any($2)",
        feed_id,
        ids
    )
    .fetch_all(pool)
    .await
}

pub async fn mark_sent(tx: &mut PgConnection, item_id: Uuid, alert_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!("update feed_items set state = 'sent', alert_id = $2 where id = $1", item_id, alert_id)
        .execute(tx)
        .await?;
    Ok(())
}

/// Drafts, newest first.
pub async fn drafts(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<FeedItem>> {
    query_items!("where i.state = 'draft' order by i.seen_at desc, i.id desc limit $1", limit)
        .fetch_all(pool)
        .await
}

/// A feed's latest items, whatever became of them.
pub async fn recent_items(pool: &PgPool, feed_id: Uuid, limit: i64) -> sqlx::Result<Vec<FeedItem>> {
    query_items!("where i.feed_id = $1 order by i.seen_at desc, i.id desc limit $2", feed_id, limit)
        .fetch_all(pool)
        .await
}

/// The item, locked for the caller's transaction (an editor sending or dismissing it).
pub async fn lock_item(tx: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<FeedItem>> {
    let found = sqlx::query_scalar!("select id from feed_items where id = $1 for update", id)
        .fetch_optional(&mut *tx)
        .await?;
    match found {
        Some(id) => query_items!("where i.id = $1", id).fetch_optional(tx).await,
        None => Ok(None),
    }
}

pub async fn dismiss(pool: &PgPool, id: Uuid) -> sqlx::Result<bool> {
    Ok(sqlx::query!("update feed_items set state = 'dismissed' where id = $1 and state = 'draft'", id)
        .execute(pool)
        .await?
        .rows_affected()
        > 0
        || sqlx::query_scalar!(r#"select exists (select 1 from feed_items where id = $1) as "exists!""#, id)
            .fetch_one(pool)
            .await?)
}

/// Failed polls in a row from which a feed counts as failing on `/metrics`: one failure is
/// often a publisher's hiccup, three (with the backoff between them) is not.
pub const FAILING_AFTER: i32 = 3;

/// Feeds by health, for the gauges on `/metrics`: `[healthy, failing, disabled]`.
pub async fn health(pool: &PgPool) -> sqlx::Result<[i64; 3]> {
    let r = sqlx::query!(
        r#"select count(*) filter (where enabled and failures < $1) as "healthy!",
                  count(*) filter (where enabled and failures >= $1) as "failing!",
                  count(*) filter (where not enabled) as "disabled!"
           from feeds"#,
        FAILING_AFTER,
    )
    .fetch_one(pool)
    .await?;
    Ok([r.healthy, r.failing, r.disabled])
}
