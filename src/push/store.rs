//! The push tables: subscriptions, fan-out jobs and batches, the delivery log and its figures.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::subscription::PushSubscription;

/// NOTIFY channel that wakes fan-out workers when there is new work.
pub const PUSH_CHANNEL: &str = "sondakika_push";

pub enum Upserted {
    Created(i64),
    Updated(i64),
}

/// Creates or refreshes a subscription (by endpoint). A re-post on every page load refreshes
/// `last_seen_at`, takes the new keys and topics, and reactivates a subscription the browser
/// still uses.
pub async fn upsert_subscription(
    pool: &PgPool,
    s: &PushSubscription,
    topics: &[String],
    locale: &str,
    vapid_key: &[u8],
) -> sqlx::Result<Upserted> {
    let (id, inserted): (i64, bool) = sqlx::query_as(
        "insert into push_subscriptions (endpoint, origin, host, p256dh, auth, topics, locale, vapid_key)
         values ($1, $2, $3, $4, $5, $6, $7, $8)
         on conflict (endpoint) do update set
            p256dh = excluded.p256dh, auth = excluded.auth, topics = excluded.topics,
            locale = excluded.locale, vapid_key = excluded.vapid_key, last_seen_at = now(),
            active = true, deactivated_at = null, deactivated_reason = null
         returning id, (xmax = 0) as inserted",
    )
    .bind(&s.endpoint)
    .bind(&s.origin)
    .bind(&s.host)
    .bind(s.p256dh.as_slice())
    .bind(s.auth.as_slice())
    .bind(topics)
    .bind(locale)
    .bind(vapid_key)
    .fetch_one(pool)
    .await?;
    Ok(if inserted { Upserted::Created(id) } else { Upserted::Updated(id) })
}

/// Whether a subscription with this (normalised) endpoint is stored, active or not.
pub async fn subscription_exists(pool: &PgPool, endpoint: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar("select exists (select 1 from push_subscriptions where endpoint = $1)")
        .bind(endpoint)
        .fetch_one(pool)
        .await
}

/// Removes a subscription (the reader turned alerts off). Its delivery log rows stay.
pub async fn delete_subscription(pool: &PgPool, endpoint: &str) -> sqlx::Result<bool> {
    let n = sqlx::query("delete from push_subscriptions where endpoint = $1")
        .bind(endpoint)
        .execute(pool)
        .await?;
    Ok(n.rows_affected() > 0)
}

/// Drops subscriptions not seen for `days` (the browser stopped visiting).
pub async fn drop_stale_subscriptions(pool: &PgPool, days: u32) -> sqlx::Result<u64> {
    let n =
        sqlx::query("delete from push_subscriptions where last_seen_at < now() - make_interval(days => $1)")
            .bind(days as i32)
            .execute(pool)
            .await?;
    Ok(n.rows_affected())
}

/// Queues the fan-out of a just-published alert (inside the publishing transaction).
pub async fn queue_job(tx: &mut PgConnection, alert_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "insert into push_jobs (alert_id, state, alert_day) values ($1, 'planning', (now() at time zone 'utc')::date)
         on conflict do nothing",
    )
    .bind(alert_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("select pg_notify($1, '')").bind(PUSH_CHANNEL).execute(&mut *tx).await?;
    Ok(())
}

/// Plans one queued job: counts its targets and cuts the subscription id space into batches.
/// Returns the alert planned, if any was waiting.
pub async fn plan_next_job(pool: &PgPool, batch_size: i64) -> sqlx::Result<Option<Uuid>> {
    let mut tx = pool.begin().await?;
    let job: Option<(Uuid, Vec<String>, bool)> = sqlx::query_as(
        "select j.alert_id, a.topics,
                a.status = 'retracted' or a.published_at + make_interval(secs => a.ttl_seconds) < now()
         from push_jobs j join alerts a on a.id = j.alert_id
         where j.state = 'planning' order by j.created_at limit 1 for update of j skip locked",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some((alert_id, topics, stale)) = job else { return Ok(None) };
    if stale {
        // Retracted, or queued while push was off and no longer worth sending.
        sqlx::query("update push_jobs set state = 'cancelled' where alert_id = $1")
            .bind(alert_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        return Ok(Some(alert_id));
    }
    let (targeted, min_id, max_id): (i64, Option<i64>, Option<i64>) = sqlx::query_as(
        "select count(*), min(id), max(id) from push_subscriptions
         where active and (cardinality($1::text[]) = 0 or cardinality(topics) = 0 or topics && $1)",
    )
    .bind(&topics)
    .fetch_one(&mut *tx)
    .await?;
    if let (Some(lo), Some(hi)) = (min_id, max_id) {
        // Ranges of ids, not of rows: planning costs one statement whatever the subscriber
        // count; ranges thinned by deletions are simply cheaper to process.
        sqlx::query(
            "insert into push_batches (alert_id, first_id, last_id, state)
             select $1, f, least(f + $4 - 1, $3), 'pending' from generate_series($2::bigint, $3::bigint, $4::bigint) f",
        )
        .bind(alert_id)
        .bind(lo)
        .bind(hi)
        .bind(batch_size)
        .execute(&mut *tx)
        .await?;
    }
    let state = if targeted == 0 { "done" } else { "running" };
    sqlx::query(
        "update push_jobs set state = $2, targeted = $3, started_at = now(),
            reached_50_at = case when $3 = 0 then now() end,
            reached_95_at = case when $3 = 0 then now() end,
            reached_100_at = case when $3 = 0 then now() end
         where alert_id = $1",
    )
    .bind(alert_id)
    .bind(state)
    .bind(targeted)
    .execute(&mut *tx)
    .await?;
    sqlx::query("select pg_notify($1, '')").bind(PUSH_CHANNEL).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(Some(alert_id))
}

/// A claimed range of one fan-out.
#[derive(Debug, Clone)]
pub struct Batch {
    pub alert_id: Uuid,
    pub alert_day: NaiveDate,
    pub first_id: i64,
    pub last_id: i64,
}

/// Claims a pending batch, or one whose worker vanished (lease expired), for `lease`; never one
/// of `held`, the batches this process is still working on (a lease of its own that ran out
/// while its runtime was busy must not make it send a range twice).
pub async fn claim_batch(
    pool: &PgPool,
    lease: std::time::Duration,
    held: &[(Uuid, i64)],
) -> sqlx::Result<Option<Batch>> {
    let (held_alerts, held_firsts): (Vec<Uuid>, Vec<i64>) = held.iter().copied().unzip();
    sqlx::query_as::<_, (Uuid, NaiveDate, i64, i64)>(
        "update push_batches b set state = 'running', lease_until = now() + make_interval(secs => $1)
         from push_jobs j
         where j.alert_id = b.alert_id
           and (b.alert_id, b.first_id) = (
             select b2.alert_id, b2.first_id from push_batches b2
             where (b2.state = 'pending' or (b2.state = 'running' and b2.lease_until < now()))
               and (b2.alert_id, b2.first_id) not in (select * from unnest($2::uuid[], $3::bigint[]))
             -- By range first: a new alert starts at once and then advances side by side with
             -- one still going out, instead of queueing behind its million subscribers.
             order by b2.first_id, b2.alert_id
             limit 1 for update skip locked)
         returning b.alert_id, j.alert_day, b.first_id, b.last_id",
    )
    .bind(lease.as_secs_f64())
    .bind(&held_alerts)
    .bind(&held_firsts)
    .fetch_optional(pool)
    .await
    .map(|r| {
        r.map(|(alert_id, alert_day, first_id, last_id)| Batch { alert_id, alert_day, first_id, last_id })
    })
}

/// Renews the leases of the batches this process is working on, in one statement.
pub async fn renew_leases(
    pool: &PgPool,
    held: &[(Uuid, i64)],
    lease: std::time::Duration,
) -> sqlx::Result<()> {
    let (alerts, firsts): (Vec<Uuid>, Vec<i64>) = held.iter().copied().unzip();
    sqlx::query(
        "update push_batches b set lease_until = now() + make_interval(secs => $3)
         from unnest($1::uuid[], $2::bigint[]) as h(alert_id, first_id)
         where b.alert_id = h.alert_id and b.first_id = h.first_id and b.state = 'running'",
    )
    .bind(&alerts)
    .bind(&firsts)
    .bind(lease.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

/// A subscriber of a batch that has no outcome logged yet.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Target {
    pub id: i64,
    pub endpoint: String,
    pub origin: String,
    pub host: String,
    pub p256dh: Vec<u8>,
    pub auth: Vec<u8>,
}

/// The batch's matching subscribers without a logged outcome (on a resumed batch, those not
/// yet done before the crash).
pub async fn targets(pool: &PgPool, b: &Batch, topics: &[String]) -> sqlx::Result<Vec<Target>> {
    sqlx::query_as(
        "select s.id, s.endpoint, s.origin, s.host, s.p256dh, s.auth from push_subscriptions s
         where s.id between $1 and $2 and s.active
           and (cardinality($3::text[]) = 0 or cardinality(s.topics) = 0 or s.topics && $3)
           and not exists (select 1 from push_deliveries d
                           where d.alert_day = $4 and d.alert_id = $5 and d.subscription_id = s.id
                             -- The range again, so that PostgreSQL reads the batch's slice of
                             -- the log's primary key once instead of probing it per row
                             -- (BENCHMARKS.md: 35 → 10 µs of PostgreSQL CPU per push).
                             and d.subscription_id between $1 and $2)
           -- Waiting for another try: the retry worker has it.
           and not exists (select 1 from push_retries r
                           where r.alert_id = $5 and r.subscription_id = s.id)
         order by s.id",
    )
    .bind(b.first_id)
    .bind(b.last_id)
    .bind(topics)
    .bind(b.alert_day)
    .bind(b.alert_id)
    .fetch_all(pool)
    .await
}

/// The outcome of one push: final, or (status `retry`) another try at `retry_at`.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub subscription_id: i64,
    pub status: &'static str,
    pub http_status: Option<i16>,
    pub attempts: i16,
    pub push_host: String,
    pub latency_ms: Option<i32>,
    pub error: Option<String>,
    /// For `retry`: when to try again.
    pub retry_at: Option<DateTime<Utc>>,
    /// Times the push was put off without a try (its push service down or paused).
    pub deferrals: i16,
    /// A final `failed`/`expired` because the push service could not be reached or kept
    /// failing (not our payload, not our VAPID key): counts toward deactivation.
    pub service_failure: bool,
    /// The push came from the retry queue (its row there goes with this outcome).
    pub from_retry: bool,
}

/// When a subscription whose push service keeps failing is deactivated (`unreachable`):
/// after `alerts` alerts in a row failed it, the first at least `after` ago.
#[derive(Debug, Clone, Copy)]
pub struct Deactivation {
    pub alerts: i32,
    pub after: std::time::Duration,
}

impl Default for Deactivation {
    fn default() -> Self {
        Self { alerts: 3, after: std::time::Duration::from_secs(24 * 3600) }
    }
}

/// Writes outcomes of one alert: final ones to the delivery log in one statement (and out of
/// the retry queue), retries into the retry queue; deactivates gone subscriptions and those
/// whose push service keeps failing them; moves the job's counters and milestones. All in one
/// transaction.
pub async fn record(
    pool: &PgPool,
    alert_id: Uuid,
    alert_day: NaiveDate,
    outcomes: &[Outcome],
    deactivation: &Deactivation,
) -> sqlx::Result<()> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let (retries, finals): (Vec<&Outcome>, Vec<&Outcome>) =
        outcomes.iter().partition(|o| o.status == "retry");
    let mut tx = pool.begin().await?;
    let counts = if finals.is_empty() {
        Vec::new()
    } else {
        log_finals(&mut tx, alert_id, alert_day, &finals).await?
    };
    if !retries.is_empty() {
        queue_retries(&mut tx, alert_id, &retries).await?;
    }
    let ids = |keep: fn(&Outcome) -> bool| -> Vec<i64> {
        finals.iter().filter(|o| keep(o)).map(|o| o.subscription_id).collect()
    };
    let retried = ids(|o| o.from_retry);
    if !retried.is_empty() {
        sqlx::query("delete from push_retries where alert_id = $1 and subscription_id = any($2)")
            .bind(alert_id)
            .bind(&retried)
            .execute(&mut *tx)
            .await?;
    }
    let gone = ids(|o| o.status == "gone");
    if !gone.is_empty() {
        sqlx::query(
            "update push_subscriptions set active = false, deactivated_at = now(), deactivated_reason = 'gone'
             where id = any($1) and active",
        )
        .bind(&gone)
        .execute(&mut *tx)
        .await?;
    }
    // A push that went through clears its subscription's failures (through the partial index:
    // nearly always a probe of an empty index).
    let sent = ids(|o| o.status == "sent");
    if !sent.is_empty() {
        sqlx::query(
            "update push_subscriptions set failed_alerts = 0, failing_since = null
             where failed_alerts > 0 and id = any($1)",
        )
        .bind(&sent)
        .execute(&mut *tx)
        .await?;
    }
    let failing = ids(|o| o.service_failure);
    if !failing.is_empty() {
        count_failures(&mut tx, &failing, deactivation).await?;
    }
    let n = |s: &str| counts.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
    sqlx::query(
        "update push_jobs set sent = sent + $2, failed = failed + $3, gone = gone + $4,
                expired = expired + $5, skipped = skipped + $6
         where alert_id = $1",
    )
    .bind(alert_id)
    .bind(n("sent"))
    .bind(n("failed"))
    .bind(n("gone"))
    .bind(n("expired"))
    .bind(n("skipped"))
    .execute(&mut *tx)
    .await?;
    mark_milestones(&mut tx, alert_id).await?;
    if !retried.is_empty() {
        complete_job(&mut tx, alert_id).await?;
    }
    tx.commit().await
}

/// Final outcomes into the delivery log; the count of each status actually written.
async fn log_finals(
    tx: &mut PgConnection,
    alert_id: Uuid,
    alert_day: NaiveDate,
    finals: &[&Outcome],
) -> sqlx::Result<Vec<(String, i64)>> {
    let mut ids = Vec::with_capacity(finals.len());
    let mut statuses = Vec::with_capacity(finals.len());
    let mut http = Vec::with_capacity(finals.len());
    let mut attempts = Vec::with_capacity(finals.len());
    let mut hosts = Vec::with_capacity(finals.len());
    let mut latency = Vec::with_capacity(finals.len());
    let mut errors = Vec::with_capacity(finals.len());
    for o in finals {
        ids.push(o.subscription_id);
        statuses.push(o.status);
        http.push(o.http_status);
        attempts.push(o.attempts);
        hosts.push(o.push_host.as_str());
        latency.push(o.latency_ms);
        errors.push(o.error.as_deref());
    }
    // `on conflict do nothing`: a batch resumed after a crash may repeat a push whose outcome
    // was already written; the first outcome stands and is counted once.
    sqlx::query_as(
        "with ins as (
            insert into push_deliveries
                (alert_day, alert_id, subscription_id, status, http_status, attempts, push_host, latency_ms, error)
            select $1, $2, * from unnest($3::bigint[], $4::text[], $5::smallint[], $6::smallint[], $7::text[],
                                        $8::int[], $9::text[])
            on conflict do nothing
            returning status)
         select status, count(*) from ins group by status",
    )
    .bind(alert_day)
    .bind(alert_id)
    .bind(&ids)
    .bind(&statuses)
    .bind(&http)
    .bind(&attempts)
    .bind(&hosts)
    .bind(&latency)
    .bind(&errors)
    .fetch_all(&mut *tx)
    .await
}

/// Puts pushes (back) in the retry queue, unclaimed, due at their `retry_at`.
async fn queue_retries(tx: &mut PgConnection, alert_id: Uuid, retries: &[&Outcome]) -> sqlx::Result<()> {
    let ids: Vec<i64> = retries.iter().map(|o| o.subscription_id).collect();
    let attempts: Vec<i16> = retries.iter().map(|o| o.attempts).collect();
    let deferrals: Vec<i16> = retries.iter().map(|o| o.deferrals).collect();
    let due: Vec<DateTime<Utc>> = retries.iter().map(|o| o.retry_at.unwrap_or_else(Utc::now)).collect();
    let http: Vec<Option<i16>> = retries.iter().map(|o| o.http_status).collect();
    let errors: Vec<Option<&str>> = retries.iter().map(|o| o.error.as_deref()).collect();
    sqlx::query(
        "insert into push_retries (alert_id, subscription_id, attempts, deferrals, not_before, http_status, error)
         select $1, * from unnest($2::bigint[], $3::smallint[], $4::smallint[], $5::timestamptz[],
                                  $6::smallint[], $7::text[])
         on conflict (alert_id, subscription_id) do update set
            attempts = excluded.attempts, deferrals = excluded.deferrals, not_before = excluded.not_before,
            lease_until = null, http_status = excluded.http_status, error = excluded.error",
    )
    .bind(alert_id)
    .bind(&ids)
    .bind(&attempts)
    .bind(&deferrals)
    .bind(&due)
    .bind(&http)
    .bind(&errors)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// One more alert the push service failed for each subscription; deactivates those past the
/// rule ([`Deactivation`]). A reader who still uses the subscription re-posts it on the next
/// visit, which reactivates it.
async fn count_failures(tx: &mut PgConnection, ids: &[i64], rule: &Deactivation) -> sqlx::Result<()> {
    let n = sqlx::query(
        "update push_subscriptions set
            failed_alerts = failed_alerts + 1,
            failing_since = coalesce(failing_since, now()),
            active = not (failed_alerts + 1 >= $2
                          and coalesce(failing_since, now()) <= now() - make_interval(secs => $3)),
            deactivated_at = case when failed_alerts + 1 >= $2
                                   and coalesce(failing_since, now()) <= now() - make_interval(secs => $3)
                              then now() end,
            deactivated_reason = case when failed_alerts + 1 >= $2
                                   and coalesce(failing_since, now()) <= now() - make_interval(secs => $3)
                              then 'unreachable' end
         where id = any($1) and active",
    )
    .bind(ids)
    .bind(rule.alerts)
    .bind(rule.after.as_secs_f64())
    .execute(&mut *tx)
    .await?;
    tracing::debug!(subscriptions = n.rows_affected(), "push service failures counted");
    Ok(())
}

/// Marks the job done (and 100 % reached) once no range and no retry of it is left.
async fn complete_job(tx: &mut PgConnection, alert_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "update push_jobs set state = case when state = 'cancelled' then state else 'done' end,
                reached_100_at = coalesce(reached_100_at, clock_timestamp())
         where alert_id = $1 and state in ('running', 'cancelled')
           and not exists (select 1 from push_batches where alert_id = $1 and state <> 'done')
           and not exists (select 1 from push_retries where alert_id = $1)",
    )
    .bind(alert_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A push due for another try, claimed from the retry queue.
#[derive(Debug, Clone)]
pub struct DueRetry {
    pub alert_id: Uuid,
    pub alert_day: NaiveDate,
    pub subscription_id: i64,
    pub attempts: i16,
    pub deferrals: i16,
    /// `None` when the subscription was removed or deactivated meanwhile.
    pub target: Option<Target>,
}

/// Claims up to `limit` due retries for `lease` (long enough to try them; a crashed process's
/// claims are taken over after it).
pub async fn claim_retries(
    pool: &PgPool,
    limit: i64,
    lease: std::time::Duration,
) -> sqlx::Result<Vec<DueRetry>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        alert_id: Uuid,
        alert_day: NaiveDate,
        subscription_id: i64,
        attempts: i16,
        deferrals: i16,
        endpoint: Option<String>,
        origin: Option<String>,
        host: Option<String>,
        p256dh: Option<Vec<u8>>,
        auth: Option<Vec<u8>>,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "with due as (
            select alert_id, subscription_id from push_retries
            where not_before <= now() and (lease_until is null or lease_until < now())
            order by not_before limit $1 for update skip locked),
         claimed as (
            update push_retries r set lease_until = now() + make_interval(secs => $2)
            from due where r.alert_id = due.alert_id and r.subscription_id = due.subscription_id
            returning r.alert_id, r.subscription_id, r.attempts, r.deferrals)
         select c.alert_id, j.alert_day, c.subscription_id, c.attempts, c.deferrals,
                s.endpoint, s.origin, s.host, s.p256dh, s.auth
         from claimed c join push_jobs j on j.alert_id = c.alert_id
         left join push_subscriptions s on s.id = c.subscription_id and s.active",
    )
    .bind(limit)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| DueRetry {
            alert_id: r.alert_id,
            alert_day: r.alert_day,
            subscription_id: r.subscription_id,
            attempts: r.attempts,
            deferrals: r.deferrals,
            target: match (r.endpoint, r.origin, r.host, r.p256dh, r.auth) {
                (Some(endpoint), Some(origin), Some(host), Some(p256dh), Some(auth)) => {
                    Some(Target { id: r.subscription_id, endpoint, origin, host, p256dh, auth })
                }
                _ => None,
            },
        })
        .collect())
}

/// Ends every retry of an alert with one status (`skipped` after a retraction, `expired` past
/// the TTL) in one transaction, and completes its job if nothing else is left.
pub async fn close_retries(pool: &PgPool, alert_id: Uuid, status: &str, why: &str) -> sqlx::Result<u64> {
    let mut tx = pool.begin().await?;
    let n: i64 = sqlx::query_scalar(
        "with ended as (
            delete from push_retries where alert_id = $1
            returning subscription_id, attempts, http_status),
         ins as (
            insert into push_deliveries (alert_day, alert_id, subscription_id, status, http_status, attempts, push_host, error)
            select j.alert_day, $1, e.subscription_id, $2, e.http_status, e.attempts, coalesce(s.host, ''), $3
            from ended e join push_jobs j on j.alert_id = $1
            left join push_subscriptions s on s.id = e.subscription_id
            on conflict do nothing
            returning 1)
         select count(*) from ins",
    )
    .bind(alert_id)
    .bind(status)
    .bind(why)
    .fetch_one(&mut *tx)
    .await?;
    let column = if status == "expired" { "expired" } else { "skipped" };
    sqlx::query(&format!("update push_jobs set {column} = {column} + $2 where alert_id = $1"))
        .bind(alert_id)
        .bind(n)
        .execute(&mut *tx)
        .await?;
    mark_milestones(&mut tx, alert_id).await?;
    complete_job(&mut tx, alert_id).await?;
    tx.commit().await?;
    Ok(n as u64)
}

/// Stamps the milestones the job's counts have just reached. With the time of the update, not
/// `now()`: that is when the transaction began, and flushes run concurrently, so a flush that
/// began earlier but took the job's row later would stamp 100 % before another's 95 %. The row
/// lock orders the updates, and `clock_timestamp()` (evaluated after the lock, in column
/// order) keeps the stamps in that order.
async fn mark_milestones(tx: &mut PgConnection, alert_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "update push_jobs set
            reached_50_at = coalesce(reached_50_at, case when (sent+failed+gone+expired+skipped) * 100 >= targeted * 50 then clock_timestamp() end),
            reached_95_at = coalesce(reached_95_at, case when (sent+failed+gone+expired+skipped) * 100 >= targeted * 95 then clock_timestamp() end),
            reached_100_at = coalesce(reached_100_at, case when (sent+failed+gone+expired+skipped) >= targeted then clock_timestamp() end)
         where alert_id = $1",
    )
    .bind(alert_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Logs every remaining target of a batch with one status (`skipped` after a retraction,
/// `expired` past the TTL) in one server-side statement.
pub async fn close_remaining(
    pool: &PgPool,
    b: &Batch,
    topics: &[String],
    status: &str,
    why: &str,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query(
        "insert into push_deliveries (alert_day, alert_id, subscription_id, status, attempts, push_host, error)
         select $4, $5, s.id, $6, 0, s.host, $7 from push_subscriptions s
         where s.id between $1 and $2 and s.active
           and (cardinality($3::text[]) = 0 or cardinality(s.topics) = 0 or s.topics && $3)
         on conflict do nothing",
    )
    .bind(b.first_id)
    .bind(b.last_id)
    .bind(topics)
    .bind(b.alert_day)
    .bind(b.alert_id)
    .bind(status)
    .bind(why)
    .execute(&mut *tx)
    .await?
    .rows_affected() as i64;
    let column = if status == "expired" { "expired" } else { "skipped" };
    sqlx::query(&format!("update push_jobs set {column} = {column} + $2 where alert_id = $1"))
        .bind(b.alert_id)
        .bind(n)
        .execute(&mut *tx)
        .await?;
    mark_milestones(&mut tx, b.alert_id).await?;
    tx.commit().await
}

/// Marks a batch done, and its job when it was the last and no retry is left.
pub async fn finish_batch(pool: &PgPool, b: &Batch) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "update push_batches set state = 'done', lease_until = null where alert_id = $1 and first_id = $2",
    )
    .bind(b.alert_id)
    .bind(b.first_id)
    .execute(&mut *tx)
    .await?;
    complete_job(&mut tx, b.alert_id).await?;
    tx.commit().await
}

/// Push figures of one alert.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct PushFigures {
    /// Where the fan-out is: `planning`, `sending`, `done`, ...
    pub state: String,
    pub targeted: i64,
    pub sent: i64,
    pub failed: i64,
    pub gone: i64,
    pub expired: i64,
    pub skipped: i64,
    pub pending: i64,
    /// Of the pending, those waiting for another try (their push service failed or was down).
    pub retrying: i64,
    pub shown: i64,
    pub clicked: i64,
    /// Milliseconds from publication until 50/95/100 % of the targets had an outcome.
    pub ms_to_50: Option<i64>,
    pub ms_to_95: Option<i64>,
    pub ms_to_100: Option<i64>,
}

pub async fn figures(conn: &mut PgConnection, alert_id: Uuid) -> sqlx::Result<Option<PushFigures>> {
    Ok(figures_of(conn, &[alert_id]).await?.into_iter().next().map(|(_, f)| f))
}

/// Push figures of several alerts in one query (for a page of the alert list).
pub async fn figures_of(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<(Uuid, PushFigures)>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        alert_id: Uuid,
        #[sqlx(flatten)]
        figures: PushFigures,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "select j.alert_id, j.state, j.targeted, j.sent, j.failed, j.gone, j.expired, j.skipped,
                greatest(j.targeted - (j.sent + j.failed + j.gone + j.expired + j.skipped), 0) as pending,
                (select count(*) from push_retries r where r.alert_id = j.alert_id) as retrying,
                coalesce(s.push_shown, 0) as shown, coalesce(s.push_clicked, 0) as clicked,
                (extract(epoch from j.reached_50_at - a.published_at) * 1000)::bigint as ms_to_50,
                (extract(epoch from j.reached_95_at - a.published_at) * 1000)::bigint as ms_to_95,
                (extract(epoch from j.reached_100_at - a.published_at) * 1000)::bigint as ms_to_100
         from push_jobs j join alerts a on a.id = j.alert_id
         left join alert_stats s on s.alert_id = j.alert_id
         where j.alert_id = any($1)",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.alert_id, r.figures)).collect())
}

/// One row of the delivery log, as the API shows it (no endpoint: only the host).
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DeliveryRow {
    pub subscription_id: i64,
    #[schema(value_type = DeliveryStatus)]
    pub status: String,
    pub http_status: Option<i16>,
    pub attempts: i16,
    pub push_host: String,
    pub latency_ms: Option<i32>,
    pub error: Option<String>,
    pub finished_at: DateTime<Utc>,
    /// When the reader's browser reported the push shown and clicked (receipts).
    pub shown_at: Option<DateTime<Utc>>,
    pub clicked_at: Option<DateTime<Utc>>,
}

/// The outcome of one push, as the delivery log's `status` column allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Sent,
    Failed,
    Gone,
    Expired,
    Skipped,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Gone => "gone",
            Self::Expired => "expired",
            Self::Skipped => "skipped",
        }
    }
}

pub async fn deliveries(
    pool: &PgPool,
    alert_id: Uuid,
    status: Option<&str>,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<DeliveryRow>> {
    sqlx::query_as(
        "select d.subscription_id, d.status, d.http_status, d.attempts, d.push_host, d.latency_ms, d.error,
                d.finished_at, d.shown_at, d.clicked_at
         from push_deliveries d join push_jobs j on j.alert_id = d.alert_id and j.alert_day = d.alert_day
         where d.alert_id = $1 and ($2::text is null or d.status = $2) and d.subscription_id > $3
         order by d.subscription_id limit $4",
    )
    .bind(alert_id)
    .bind(status)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// What a service worker reports about a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ReceiptEvent {
    Shown,
    Clicked,
}

impl ReceiptEvent {
    /// The event's column in the delivery log (`<name>_at`) and in `alert_stats` (`push_<name>`).
    fn name(self) -> &'static str {
        match self {
            Self::Shown => "shown",
            Self::Clicked => "clicked",
        }
    }
}

/// What became of a receipt whose token verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receipt {
    /// Stamped on its delivery and counted in the figures.
    Counted,
    /// This event was already counted for this delivery: nothing changes.
    AlreadyCounted,
    /// The alert was retracted: receipts for it are not counted.
    Retracted,
    /// The delivery has an outcome other than `sent` (failed, expired, skipped, gone).
    NotSent(String),
    /// No outcome is logged for this delivery: the push is in flight or its outcome not yet
    /// flushed (the log is written in batches, and a fast browser can beat it), or the alert or
    /// its log is gone.
    NotLogged,
    /// There is no published alert with this id.
    UnknownAlert,
}

/// Counts a receipt for one delivery: stamps the event on its log row, only if the push was
/// sent, the event not yet stamped and the alert not retracted, and counts it in the figures
/// only when the row changed, in one statement. So each event counts once per delivery, and
/// `shown`/`clicked` never exceed `sent`; two concurrent receipts for one delivery meet on the
/// row's lock, and the second finds the stamp set.
pub async fn add_receipt(
    pool: &PgPool,
    alert_id: Uuid,
    subscription_id: i64,
    event: ReceiptEvent,
) -> sqlx::Result<Receipt> {
    let name = event.name();
    let counted = sqlx::query(&format!(
        "with delivery as (
            update push_deliveries d set {name}_at = now()
            from push_jobs j join alerts a on a.id = j.alert_id
            where j.alert_id = $1 and a.status <> 'retracted'
              and d.alert_day = j.alert_day and d.alert_id = $1 and d.subscription_id = $2
              and d.status = 'sent' and d.{name}_at is null
            returning d.alert_id)
         insert into alert_stats (alert_id, push_{name}) select alert_id, 1 from delivery
         on conflict (alert_id) do update set push_{name} = alert_stats.push_{name} + 1"
    ))
    .bind(alert_id)
    .bind(subscription_id)
    .execute(pool)
    .await?
    .rows_affected()
        > 0;
    if counted {
        return Ok(Receipt::Counted);
    }
    // Not counted: find out why, for an answer the service worker (and its author) can act on.
    let why: Option<(String, Option<String>, Option<bool>)> = sqlx::query_as(&format!(
        "select a.status, d.status, d.{name}_at is not null from alerts a
         left join push_jobs j on j.alert_id = a.id
         left join push_deliveries d
                on d.alert_day = j.alert_day and d.alert_id = a.id and d.subscription_id = $2
         where a.id = $1"
    ))
    .bind(alert_id)
    .bind(subscription_id)
    .fetch_optional(pool)
    .await?;
    Ok(match why {
        None => Receipt::UnknownAlert,
        Some((alert, _, _)) if alert == "retracted" => Receipt::Retracted,
        Some((alert, _, _)) if alert == "scheduled" => Receipt::UnknownAlert,
        Some((_, None, _)) => Receipt::NotLogged,
        Some((_, Some(status), _)) if status != "sent" => Receipt::NotSent(status),
        // Stamped by an earlier receipt (or by a concurrent one in the meantime).
        Some(_) => Receipt::AlreadyCounted,
    })
}

/// Creates the daily delivery-log partitions for the next days and drops those older than
/// `retention_days`. Dropping a partition is instant and takes no long lock on the others.
pub async fn maintain_partitions(pool: &PgPool, retention_days: u32) -> sqlx::Result<()> {
    let today = Utc::now().date_naive();
    for ahead in 0..3 {
        let day = today + chrono::Duration::days(ahead);
        let next = day + chrono::Duration::days(1);
        let name = format!("push_deliveries_{}", day.format("%Y%m%d"));
        let sql = format!(
            "create table if not exists {name} partition of push_deliveries for values from ('{day}') to ('{next}')"
        );
        if let Err(e) = sqlx::query(&sql).execute(pool).await {
            // Rows for that day already went to the default partition: they stay there and are
            // removed with it; nothing is lost.
            tracing::warn!(error = %e, partition = %name, "could not create a delivery-log partition");
        }
    }
    let cutoff = today - chrono::Duration::days(retention_days as i64);
    let old: Vec<String> = sqlx::query_scalar(
        "select c.relname::text from pg_inherits i
         join pg_class c on c.oid = i.inhrelid join pg_class p on p.oid = i.inhparent
         where p.relname = 'push_deliveries' and c.relname ~ '^push_deliveries_[0-9]{8}$'",
    )
    .fetch_all(pool)
    .await?;
    for name in old {
        let day = NaiveDate::parse_from_str(&name["push_deliveries_".len()..], "%Y%m%d").ok();
        if day.is_some_and(|d| d < cutoff) {
            sqlx::query(&format!("drop table if exists {name}")).execute(pool).await?;
            tracing::info!(partition = %name, "dropped an expired delivery-log partition");
        }
    }
    sqlx::query("delete from push_deliveries_default where alert_day < $1")
        .bind(cutoff)
        .execute(pool)
        .await?;
    Ok(())
}
