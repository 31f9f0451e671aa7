//! The `alerts`, `stream_events` and `alert_stats` tables; this module is the only writer.
//!
//! The functions are the steps [`crate::publish`] composes into an editor's action, each inside
//! the caller's transaction: every change a ticker must hear about appends its stream event in
//! the same transaction as the change itself, so the log and the alerts never disagree.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    domain::{AlertStatus, Correction, NewAlert, Reason, Topics, Urgency},
    events::{self, EventKind},
};

/// Key of the transaction-scoped advisory lock that orders stream events (any constant unique
/// to this use; "sdk" + 1).
const STREAM_LOCK: i64 = 0x7364_6b01;
/// Namespace of the advisory locks that serialise flags of one article.
const ARTICLE_LOCK_NS: i32 = 0x73646b02;

/// NOTIFY channel that tells every process a new stream event exists; the payload is its seq.
pub const STREAM_CHANNEL: &str = "sondakika_stream";
/// NOTIFY channel that wakes schedulers when a scheduled alert is added.
pub const SCHEDULE_CHANNEL: &str = "sondakika_schedule";

#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub id: Uuid,
    pub seq: Option<i64>,
    pub status: AlertStatus,
    /// 0 as flagged; one more with each correction.
    pub revision: i32,
    pub label: String,
    pub headline: String,
    pub summary: Option<String>,
    pub url: String,
    pub image: Option<String>,
    pub article_id: Option<String>,
    pub topics: Vec<String>,
    pub urgency: Urgency,
    pub ttl_seconds: i32,
    pub send_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub retracted_at: Option<DateTime<Utc>>,
    pub retract_reason: Option<String>,
    pub created_by: Option<String>,
    pub tickers_reached: i64,
}

impl Alert {
    /// When the alert stops being worth delivering.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.published_at.or(self.send_at).unwrap_or(self.created_at)
            + chrono::Duration::seconds(self.ttl_seconds as i64)
    }
}

/// A checked query of [`Alert`]s (`a`, with who flagged it and its ticker count), then `$tail`.
/// (The text of a checked query must be string literals, so the select list lives here rather
/// than in a `const`.)
macro_rules! query_alerts {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Alert,
            r#"select a.id, a.seq, a.status as "status: AlertStatus", a.revision, a.label, a.headline,
                      a.summary, a.url, a.image, a.article_id, a.topics, a.urgency as "urgency: Urgency",
                      a.ttl_seconds, a.send_at, a.created_at, a.published_at, a.updated_at,
                      a.retracted_at, a.retract_reason, t.name as "created_by?",
                      coalesce(s.tickers_reached, 0) as "tickers_reached!"
               from alerts a
               left join editor_tokens t on t.id = a.created_by
               left join alert_stats s on s.alert_id = a.id "#
                + $tail
            $(, $arg)*
        )
    };
}

pub async fn get(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Alert>> {
    query_alerts!("where a.id = $1", id).fetch_optional(conn).await
}

/// Newest first; `before` is the id of the last alert of the previous page.
pub async fn list(
    pool: &PgPool,
    before: Option<Uuid>,
    status: Option<AlertStatus>,
    limit: i64,
) -> sqlx::Result<Vec<Alert>> {
    // The cursor is always there (the first page's is above every id): PostgreSQL's generic plan
    // for this statement, made once it has run a few times, then bounds its index scan with it,
    // where an optional cursor would be a filter over every newer alert.
    query_alerts!(
        "where a.id < $1 and ($2::text is null or a.status = $2)
         order by a.id desc
         limit $3",
        before.unwrap_or(Uuid::max()),
        status as _,
        limit,
    )
    .fetch_all(pool)
    .await
}

/// Outcome of flagging an article.
pub enum Flagged {
    Created(Alert),
    /// The article already has a live (or scheduled) alert; flagging again returns it.
    AlreadyLive(Alert),
}

/// Inserts an alert, or returns the live one for the same article: `scheduled` when `send_at`
/// is in the future (and the schedulers are woken), else `live` but not yet published (the
/// caller publishes it in the same transaction, [`mark_published`]).
pub async fn insert(
    tx: &mut PgConnection,
    new: &NewAlert,
    editor_id: i64,
    now: DateTime<Utc>,
) -> sqlx::Result<Flagged> {
    let dedupe_key = new.dedupe_key();
    // Two editors pressing the button at the same moment: the second waits here until the first
    // commits, then finds its alert below.
    sqlx::query!("select pg_advisory_xact_lock($1, hashtext($2))", ARTICLE_LOCK_NS, &dedupe_key)
        .execute(&mut *tx)
        .await?;
    let live = sqlx::query_scalar!(
        "select id from alerts
         where dedupe_key = $1 and status <> 'retracted'
           and coalesce(published_at, send_at, created_at) + make_interval(secs => ttl_seconds) > now()
         order by id desc limit 1",
        &dedupe_key,
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(id) = live {
        let alert = get(tx, id).await?.expect("row seen in this transaction");
        return Ok(Flagged::AlreadyLive(alert));
    }

    let id = Uuid::now_v7();
    let scheduled = new.send_at.is_some_and(|at| at > now);
    let status = if scheduled { AlertStatus::Scheduled } else { AlertStatus::Live };
    sqlx::query!(
        "insert into alerts (id, status, label, headline, summary, url, image, article_id,
                             dedupe_key, topics, urgency, ttl_seconds, send_at, created_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        id,
        status as _,
        new.label.as_str(),
        new.headline.as_str(),
        new.summary.as_ref().map(|s| s.as_str()),
        new.url.as_str(),
        new.image.as_ref().map(|s| s.as_str()),
        new.article_id.as_ref().map(|s| s.as_str()),
        &dedupe_key,
        &new.topics.to_strings(),
        new.urgency as _,
        new.ttl_seconds as i32,
        new.send_at,
        editor_id,
    )
    .execute(&mut *tx)
    .await?;
    if scheduled {
        sqlx::query!("select pg_notify($1, '')", SCHEDULE_CHANNEL).execute(&mut *tx).await?;
    }
    let alert = get(tx, id).await?.expect("row inserted in this transaction");
    Ok(Flagged::Created(alert))
}

/// Marks an alert published and appends its `alert` event; returns it as published. Takes the
/// stream lock (see [`next_seq`]): call it last but for what must commit with it.
pub async fn mark_published(tx: &mut PgConnection, id: Uuid) -> sqlx::Result<Alert> {
    // The seq is the event's; the alert takes the same number.
    let seq = next_seq(tx).await?;
    sqlx::query!("update alerts set status = 'live', seq = $2, published_at = now() where id = $1", id, seq)
        .execute(&mut *tx)
        .await?;
    let alert = get(tx, id).await?.expect("row exists in this transaction");
    append_event(tx, seq, EventKind::Alert, &alert).await?;
    Ok(alert)
}

/// Appends an `update` or `retract` event for the alert as it now reads; returns it. Takes the
/// stream lock (see [`next_seq`]).
pub async fn log_event(tx: &mut PgConnection, id: Uuid, kind: EventKind) -> sqlx::Result<Alert> {
    let seq = next_seq(tx).await?;
    let alert = get(tx, id).await?.expect("the caller holds the alert's row");
    append_event(tx, seq, kind, &alert).await?;
    Ok(alert)
}

/// Takes the stream lock and the next seq. The lock is held until the transaction ends, so
/// events commit in seq order; take it as late as possible in the transaction.
async fn next_seq(tx: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query!("select pg_advisory_xact_lock($1)", STREAM_LOCK).execute(&mut *tx).await?;
    sqlx::query_scalar!(r#"select nextval('stream_seq') as "seq!""#).fetch_one(&mut *tx).await
}

async fn append_event(tx: &mut PgConnection, seq: i64, kind: EventKind, alert: &Alert) -> sqlx::Result<()> {
    let frame = events::event_frame(kind, seq, alert);
    sqlx::query!(
        "insert into stream_events (seq, alert_id, kind, topics, frame) values ($1, $2, $3, $4, $5)",
        seq,
        alert.id,
        kind.as_str(),
        &alert.topics,
        frame,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!("select pg_notify($1, $2)", STREAM_CHANNEL, seq.to_string()).execute(&mut *tx).await?;
    Ok(())
}

/// Applies an editor's correction to the alert's text, one revision up (the caller holds the
/// row, [`lock`]).
pub async fn apply_correction(tx: &mut PgConnection, id: Uuid, c: &Correction) -> sqlx::Result<()> {
    sqlx::query!(
        "update alerts set
            headline = coalesce($2, headline),
            summary = case when $3 then $4 else summary end,
            url = coalesce($5, url),
            image = case when $6 then $7 else image end,
            revision = revision + 1,
            updated_at = now()
         where id = $1",
        id,
        c.headline.as_ref().map(|h| h.as_str()),
        c.summary.is_some(),
        c.summary.as_ref().and_then(|s| s.as_ref().map(|s| s.as_str())),
        c.url.as_ref().map(|u| u.as_str()),
        c.image.is_some(),
        c.image.as_ref().and_then(|s| s.as_ref().map(|s| s.as_str())),
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Marks the alert retracted (the caller holds the row, [`lock`]).
pub async fn mark_retracted(tx: &mut PgConnection, id: Uuid, reason: Option<&Reason>) -> sqlx::Result<()> {
    sqlx::query!(
        "update alerts set status = 'retracted', retracted_at = now(), retract_reason = $2,
                updated_at = now()
         where id = $1",
        id,
        reason.map(|r| r.as_str()),
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Locks an alert for an editor's change. `for no key update`, not `for update`: the change
/// never touches the key, and the stronger lock also blocks the foreign-key checks of rows that
/// reference the alert (a fan-out updating its `push_jobs` row twice in one transaction
/// re-checks the key), which deadlocked a retraction against a flush of push outcomes.
pub async fn lock(tx: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Alert>> {
    let found = sqlx::query_scalar!("select id from alerts where id = $1 for no key update", id)
        .fetch_optional(&mut *tx)
        .await?;
    match found {
        Some(id) => get(tx, id).await,
        None => Ok(None),
    }
}

/// Scheduled alerts that are due, locked for publication. Several processes may ask at once:
/// `skip locked` hands each due alert to exactly one of them.
pub async fn lock_due(tx: &mut PgConnection, batch: i64) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        "select id from alerts where status = 'scheduled' and send_at <= now()
         order by send_at limit $1 for no key update skip locked",
        batch,
    )
    .fetch_all(&mut *tx)
    .await
}

/// When the next scheduled alert is due, if any.
pub async fn next_due(pool: &PgPool) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar!("select min(send_at) from alerts where status = 'scheduled'").fetch_one(pool).await
}

/// Adds per-alert ticker deliveries counted by this process, in one statement.
pub async fn add_tickers_reached(pool: &PgPool, deltas: &[(Uuid, i64)]) -> sqlx::Result<()> {
    if deltas.is_empty() {
        return Ok(());
    }
    let (ids, counts): (Vec<Uuid>, Vec<i64>) = deltas.iter().copied().unzip();
    sqlx::query!(
        "insert into alert_stats (alert_id, tickers_reached)
         select * from unnest($1::uuid[], $2::bigint[])
         on conflict (alert_id) do update
           set tickers_reached = alert_stats.tickers_reached + excluded.tickers_reached",
        &ids,
        &counts,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Ids of the alerts among `ids` that are retracted.
pub async fn retracted_among(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!("select id from alerts where id = any($1) and status = 'retracted'", ids)
        .fetch_all(pool)
        .await
}

/// Forgets stream events older than a week (beyond any replay window; the alerts stay).
pub async fn prune_events(pool: &PgPool) -> sqlx::Result<u64> {
    let done = sqlx::query!("delete from stream_events where created_at < now() - interval '7 days'")
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// The latest `alert` or `update` frame of each alert live now, up to stream position `seq`,
/// newest first, of the given topics (none: all).
pub async fn live_frames(pool: &PgPool, topics: &Topics, seq: i64, limit: i64) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        "select frame from (
            select distinct on (e.alert_id) e.frame, e.seq from stream_events e
            join alerts a on a.id = e.alert_id
            where a.status = 'live' and a.published_at + make_interval(secs => a.ttl_seconds) > now()
              and e.kind in ('alert', 'update') and e.seq <= $3
              and (cardinality($1::text[]) = 0 or cardinality(a.topics) = 0 or a.topics && $1)
            order by e.alert_id, e.seq desc) latest
         order by seq desc limit $2",
        &topics.to_strings(),
        limit,
        seq,
    )
    .fetch_all(pool)
    .await
}
