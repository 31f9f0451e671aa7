//! The `webhook_endpoints`, `webhook_deliveries` and `webhook_attempts` tables.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;

use super::EventType;
use crate::untrusted::SafeText;

/// An endpoint as the API shows it: never its secret (that is answered once, on creation and on
/// rotation).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Endpoint {
    pub id: i64,
    /// Where events are POSTed.
    pub url: String,
    pub description: Option<String>,
    /// The event types sent to it.
    #[schema(value_type = Vec<EventType>)]
    pub event_types: Vec<String>,
    /// `false` once it failed for `webhook_disable_after_secs` in a row (or an admin disabled
    /// it): nothing is queued for it until it is enabled again.
    pub enabled: bool,
    pub disabled_at: Option<DateTime<Utc>>,
    /// Why it was disabled, in words.
    pub disabled_reason: Option<String>,
    /// The first failed attempt since its last success (none while it works).
    pub failing_since: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    /// Until when the secret before the last rotation also signs (absent when none does).
    pub previous_secret_valid_until: Option<DateTime<Utc>>,
    /// Events waiting to be delivered (or retried) to it.
    pub pending: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A checked query returning [`Endpoint`]s, then `$tail` (on `e`, the endpoint). (A checked
/// query's text must be string literals, so the select list is one here rather than a `const`.)
macro_rules! query_endpoints {
    ($tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Endpoint,
            r#"select e.id, e.url, e.description, e.event_types, e.enabled, e.disabled_at,
                      e.disabled_reason, e.failing_since, e.last_success_at,
                      case when e.previous_secret_until > now() then e.previous_secret_until end
                          as previous_secret_valid_until,
                      (select count(*) from webhook_deliveries d
                        where d.endpoint_id = e.id and d.state = 'pending') as "pending!",
                      e.created_at, e.updated_at
               from webhook_endpoints e "#
                + $tail
            $(, $arg)*
        )
    };
}

pub async fn create(
    pool: &PgPool,
    url: &str,
    description: Option<&str>,
    event_types: &[String],
    secret: &str,
) -> sqlx::Result<Endpoint> {
    let id = sqlx::query_scalar!(
        "insert into webhook_endpoints (url, description, event_types, secret)
         values ($1, $2, $3, $4) returning id",
        url,
        description,
        event_types,
        secret,
    )
    .fetch_one(pool)
    .await?;
    Ok(get(pool, id).await?.expect("row just inserted"))
}

pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<Endpoint>> {
    query_endpoints!("where e.id = $1", id).fetch_optional(pool).await
}

/// Up to `limit` endpoints registered after the one with id `after` (0: from the first).
pub async fn list(pool: &PgPool, after: i64, limit: i64) -> sqlx::Result<Vec<Endpoint>> {
    query_endpoints!("where e.id > $1 order by e.id limit $2", after, limit).fetch_all(pool).await
}

/// A change an admin asks for; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct Change {
    pub url: Option<String>,
    pub description: Option<Option<String>>,
    pub event_types: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

pub async fn update(pool: &PgPool, id: i64, c: &Change) -> sqlx::Result<Option<Endpoint>> {
    let done = sqlx::query!(
        "update webhook_endpoints set
            url = coalesce($2, url),
            description = case when $3 then $4 else description end,
            event_types = coalesce($5, event_types),
            -- Enabling starts afresh (no failure streak); disabling by hand says so.
            enabled = coalesce($6, enabled),
            disabled_at = case when $6 then null when not $6 and enabled then now() else disabled_at end,
            disabled_reason = case when $6 then null
                                   when not $6 and enabled then 'disabled by an admin'
                                   else disabled_reason end,
            failing_since = case when $6 then null else failing_since end,
            updated_at = now()
         where id = $1",
        id,
        c.url.as_deref(),
        c.description.is_some(),
        c.description.as_ref().and_then(|d| d.as_deref()),
        c.event_types.as_deref(),
        c.enabled,
    )
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    get(pool, id).await
}

pub async fn delete(pool: &PgPool, id: i64) -> sqlx::Result<bool> {
    let done = sqlx::query!("delete from webhook_endpoints where id = $1", id).execute(pool).await?;
    Ok(done.rows_affected() > 0)
}

/// Replaces the secret; the current one keeps signing too for `grace_secs` (0: not at all).
pub async fn rotate(pool: &PgPool, id: i64, secret: &str, grace_secs: u64) -> sqlx::Result<Option<Endpoint>> {
    let done = sqlx::query!(
        "update webhook_endpoints set
            previous_secret = case when $3 > 0 then secret end,
            previous_secret_until = case when $3 > 0 then now() + make_interval(secs => $3) end,
            secret = $2,
            updated_at = now()
         where id = $1",
        id,
        secret,
        grace_secs as f64,
    )
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    get(pool, id).await
}

/// Where a delivery is (`webhook_deliveries.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum DeliveryState {
    /// To be tried, or retried.
    Pending,
    /// A receiver accepted it (a 2xx answer).
    Delivered,
    /// Given up: its retry window passed, or its endpoint was disabled.
    Failed,
}

/// One try of one delivery.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Attempt {
    pub attempted_at: DateTime<Utc>,
    /// The `webhook-id` of the event tried.
    pub message_id: String,
    #[schema(value_type = EventType)]
    pub event_type: String,
    /// Which try of this event it was (1 = the first).
    pub attempt: i32,
    /// The receiver's HTTP status (absent when none came: connection failed or timed out).
    pub http_status: Option<i16>,
    /// From sending the request to the answer (or the failure).
    pub latency_ms: i32,
    /// What went wrong, in words (absent on success).
    pub error: Option<String>,
    /// Where the event is now.
    pub delivery_state: DeliveryState,
}

/// The endpoint's latest attempts, newest first.
pub async fn recent_attempts(pool: &PgPool, endpoint_id: i64, limit: i64) -> sqlx::Result<Vec<Attempt>> {
    sqlx::query_as!(
        Attempt,
        r#"select a.attempted_at, d.message_id, d.event_type,
                (select count(*) from webhook_attempts p
                  where p.delivery_id = a.delivery_id and p.id <= a.id)::int as "attempt!",
                a.http_status, a.latency_ms, a.error,
                d.state as "delivery_state: DeliveryState"
         from webhook_attempts a join webhook_deliveries d on d.id = a.delivery_id
         where a.endpoint_id = $1
         order by a.id desc limit $2"#,
        endpoint_id,
        limit,
    )
    .fetch_all(pool)
    .await
}

/// Whether any enabled endpoint subscribes to `event`.
pub async fn wanted(tx: &mut PgConnection, event: EventType) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"select exists (select 1 from webhook_endpoints where enabled and $1 = any(event_types)) as "exists!""#,
        event.as_str(),
    )
    .fetch_one(&mut *tx)
    .await
}

/// Queues `body` as an event for the endpoints subscribed to `event`, in the caller's
/// transaction: one row, whatever the number of endpoints ([`expand`] makes their deliveries).
/// Nothing is written when no enabled endpoint subscribes to it. Returns whether it was queued.
pub async fn queue(
    tx: &mut PgConnection,
    event: EventType,
    message_id: &str,
    body: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "insert into webhook_events (message_id, event_type, body)
         select $1, $2, $3
         where exists (select 1 from webhook_endpoints where enabled and $2 = any(event_types))",
        message_id,
        event.as_str(),
        body,
    )
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Expands up to `limit` queued events, oldest first, into one delivery per enabled endpoint
/// subscribed to each, and forgets the events: one statement, so each event is expanded once
/// whichever process takes it (others skip the events it holds). The deliveries keep the event's
/// time, from which their retry window counts. Returns how many events it took.
pub async fn expand(pool: &PgPool, limit: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"with taken as (
             delete from webhook_events
             where id in (select id from webhook_events order by id limit $1 for update skip locked)
             returning message_id, event_type, body, created_at
         ), made as (
             insert into webhook_deliveries (endpoint_id, message_id, event_type, body, created_at)
             select e.id, t.message_id, t.event_type, t.body, t.created_at
             from taken t join webhook_endpoints e on e.enabled and t.event_type = any(e.event_types)
             -- Shared, so that an endpoint being disabled (which takes its row first) is waited
             -- for and then read again: no pending delivery is left on a disabled endpoint.
             for share of e
             on conflict (message_id, endpoint_id) do nothing
         )
         select count(*) as "taken!" from taken"#,
        limit,
    )
    .fetch_one(pool)
    .await
}

/// A delivery claimed for one attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub endpoint_id: i64,
    pub message_id: String,
    pub body: String,
    pub attempts: i32,
    pub url: String,
    pub secret: String,
    /// The secret before the last rotation, while it still signs.
    pub previous_secret: Option<String>,
}

/// Claims due deliveries for one attempt each, at most `limit` in all and, for each endpoint,
/// at most `per_endpoint` less what this process already has in flight to it (`in_flight`:
/// endpoint ids and counts), so that one slow endpoint cannot take every place. Claiming moves
/// `next_attempt_at` to the end of the lease: until then no other process takes them, and if
/// this one dies they are due again then.
///
/// It starts from the endpoints that have a due delivery (the `webhook_deliveries_next` index),
/// not from every enabled endpoint: with nothing due, a look costs one index probe, however many
/// endpoints are registered.
pub async fn claim(
    pool: &PgPool,
    limit: i64,
    per_endpoint: i64,
    in_flight: &[(i64, i64)],
    lease_secs: f64,
) -> sqlx::Result<Vec<Claimed>> {
    let (endpoints, counts): (Vec<i64>, Vec<i64>) = in_flight.iter().copied().unzip();
    sqlx::query_as!(
        Claimed,
        "with due as (
             select d.id
             from (select distinct endpoint_id from webhook_deliveries
                   where state = 'pending' and next_attempt_at <= now()) due_endpoint
             join webhook_endpoints e on e.id = due_endpoint.endpoint_id
             left join unnest($3::bigint[], $5::bigint[]) f (endpoint_id, n) on f.endpoint_id = e.id
             cross join lateral (
                 select d.id from webhook_deliveries d
                 where d.endpoint_id = e.id and d.state = 'pending' and d.next_attempt_at <= now()
                 order by d.next_attempt_at
                 limit greatest($2 - coalesce(f.n, 0), 0)
                 for update skip locked
             ) d
             where e.enabled
             limit $1
         )
         update webhook_deliveries d
            set next_attempt_at = now() + make_interval(secs => $4), attempts = d.attempts + 1
         from due, webhook_endpoints e
         where d.id = due.id and e.id = d.endpoint_id
         returning d.id, d.endpoint_id, d.message_id, d.body, d.attempts, e.url, e.secret,
                   case when e.previous_secret_until > now() then e.previous_secret end as previous_secret",
        limit,
        per_endpoint,
        &endpoints,
        lease_secs,
        &counts,
    )
    .fetch_all(pool)
    .await
}

/// Hands a claimed delivery back untried (this process is stopping): due again at once.
pub async fn release(pool: &PgPool, id: i64) -> sqlx::Result<()> {
    sqlx::query!(
        "update webhook_deliveries set next_attempt_at = now(), attempts = greatest(attempts - 1, 0)
         where id = $1 and state = 'pending'",
        id,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// What one attempt came to.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub http_status: Option<u16>,
    pub latency_ms: u32,
    /// `None`: delivered (a 2xx answer). Safe text: it quotes the receiver's answer.
    pub error: Option<SafeText>,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Seconds until the next try (already computed from the attempt count).
    pub retry_in_secs: f64,
    /// Give up when the next try would come later than this many seconds after the event.
    pub retry_window_secs: f64,
    /// Disable the endpoint once it has been failing this long.
    pub disable_after_secs: f64,
}

/// Records an attempt: the delivery is done, retried later, or given up; the endpoint's failure
/// streak starts or ends, and an endpoint failing for too long is disabled (its pending events
/// are given up with it). Returns whether this disabled the endpoint.
///
/// Lock order: the endpoint row first, then the delivery. The attempt's insert takes a key-share
/// lock on the endpoint (its foreign key); had two attempts to one endpoint each taken that and
/// then asked for the row to update it, each would wait for the other. The first statement
/// therefore locks the endpoint (`for no key update`: it does not block alerts queueing
/// deliveries for it, whose inserts take key-share locks), so recordings for one endpoint take
/// turns and never deadlock.
pub async fn record(pool: &PgPool, c: &Claimed, o: &AttemptOutcome, p: Policy) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    sqlx::query!("select id from webhook_endpoints where id = $1 for no key update", c.endpoint_id)
        .fetch_optional(&mut *tx)
        .await?;
    sqlx::query!(
        "insert into webhook_attempts (endpoint_id, delivery_id, http_status, latency_ms, error)
         values ($1, $2, $3, $4, $5)",
        c.endpoint_id,
        c.id,
        o.http_status.map(|s| s as i16),
        o.latency_ms.min(i32::MAX as u32) as i32,
        o.error.as_ref().map(SafeText::as_str),
    )
    .execute(&mut *tx)
    .await?;
    let mut disabled = false;
    match &o.error {
        None => {
            sqlx::query!(
                "update webhook_deliveries set state = 'delivered', finished_at = now(), last_error = null
                 where id = $1",
                c.id,
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query!(
                "update webhook_endpoints set failing_since = null, last_success_at = now() where id = $1",
                c.endpoint_id,
            )
            .execute(&mut *tx)
            .await?;
        }
        Some(error) => {
            // Retried unless the next try would fall outside the window (then given up now).
            // A delivery another attempt already finished (a lease that ran out) stays finished.
            sqlx::query!(
                "update webhook_deliveries set
                    last_error = $2,
                    state = case when now() + make_interval(secs => $3)
                                      > created_at + make_interval(secs => $4)
                                 then 'failed' else 'pending' end,
                    finished_at = case when now() + make_interval(secs => $3)
                                            > created_at + make_interval(secs => $4)
                                       then now() end,
                    next_attempt_at = now() + make_interval(secs => $3)
                 where id = $1 and state = 'pending'",
                c.id,
                error.as_str(),
                p.retry_in_secs,
                p.retry_window_secs,
            )
            .execute(&mut *tx)
            .await?;
            disabled = sqlx::query_scalar!(
                r#"with verdict as (
                     select id, coalesce(failing_since, now()) as since,
                            enabled and coalesce(failing_since, now())
                                        <= now() - make_interval(secs => $2) as disable
                     from webhook_endpoints where id = $1
                 )
                 update webhook_endpoints w set
                    failing_since = v.since,
                    enabled = w.enabled and not v.disable,
                    disabled_at = case when v.disable then now() else w.disabled_at end,
                    disabled_reason = case when v.disable
                        then 'every attempt failed since '
                             || to_char(v.since at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS')
                             || ' UTC; the last: ' || $3
                        else w.disabled_reason end
                 from verdict v where w.id = v.id
                 returning v.disable as "disable!""#,
                c.endpoint_id,
                p.disable_after_secs,
                error.as_str(),
            )
            .fetch_optional(&mut *tx)
            .await?
            .unwrap_or(false);
            if disabled {
                sqlx::query!(
                    "update webhook_deliveries set state = 'failed', finished_at = now(),
                            last_error = 'the endpoint was disabled after failing for too long'
                     where endpoint_id = $1 and state = 'pending'",
                    c.endpoint_id,
                )
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(disabled)
}

/// Forgets finished deliveries (and their attempts) older than `days`.
pub async fn forget_finished(pool: &PgPool, days: u32) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        "delete from webhook_deliveries
         where state <> 'pending' and finished_at < now() - make_interval(days => $1)",
        days as i32,
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Endpoints by health, for the gauges on `/metrics`: `[healthy, failing, disabled (after
/// failing too long), disabled by an admin]`.
pub async fn endpoint_health(pool: &PgPool) -> sqlx::Result<[i64; 4]> {
    // 'disabled by an admin' is the reason `update` writes when an admin disables one.
    let r = sqlx::query!(
        r#"select count(*) filter (where enabled and failing_since is null) as "healthy!",
                  count(*) filter (where enabled and failing_since is not null) as "failing!",
                  count(*) filter (where not enabled
                                     and disabled_reason is distinct from 'disabled by an admin') as "disabled!",
                  count(*) filter (where not enabled
                                     and disabled_reason = 'disabled by an admin') as "by_admin!"
           from webhook_endpoints"#
    )
    .fetch_one(pool)
    .await?;
    Ok([r.healthy, r.failing, r.disabled, r.by_admin])
}
