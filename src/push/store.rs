//! The push tables: subscriptions, fan-out jobs and batches, the delivery log and its figures.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::subscription::PushSubscription;
use crate::{
    alerts::{
        domain::AlertStatus,
        store as alerts,
        view::{AlertView, PushFigures, PushStep, StepFigures, StepKind, StepState},
    },
    webhooks::{self, EventType},
};

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
    let row = sqlx::query!(
        r#"insert into push_subscriptions (endpoint, origin, host, p256dh, auth, topics, locale, vapid_key)
         values ($1, $2, $3, $4, $5, $6, $7, $8)
         on conflict (endpoint) do update set
            p256dh = excluded.p256dh, auth = excluded.auth, topics = excluded.topics,
            locale = excluded.locale, vapid_key = excluded.vapid_key, last_seen_at = now(),
            active = true, deactivated_at = null, deactivated_reason = null
         returning id, (xmax = 0) as "inserted!""#,
        &s.endpoint,
        &s.origin,
        &s.host,
        s.p256dh.as_slice(),
        s.auth.as_slice(),
        topics,
        locale,
        vapid_key,
    )
    .fetch_one(pool)
    .await?;
    Ok(if row.inserted { Upserted::Created(row.id) } else { Upserted::Updated(row.id) })
}

/// Whether a subscription with this (normalised) endpoint is stored, active or not.
pub async fn subscription_exists(pool: &PgPool, endpoint: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"select exists (select 1 from push_subscriptions where endpoint = $1) as "exists!""#,
        endpoint
    )
    .fetch_one(pool)
    .await
}

/// Removes a subscription (the reader turned alerts off). Its delivery log rows stay.
pub async fn delete_subscription(pool: &PgPool, endpoint: &str) -> sqlx::Result<bool> {
    let n =
        sqlx::query!("delete from push_subscriptions where endpoint = $1", endpoint).execute(pool).await?;
    Ok(n.rows_affected() > 0)
}

/// Drops subscriptions not seen for `days` (the browser stopped visiting).
pub async fn drop_stale_subscriptions(pool: &PgPool, days: u32) -> sqlx::Result<u64> {
    let n = sqlx::query!(
        "delete from push_subscriptions where last_seen_at < now() - make_interval(days => $1)",
        days as i32,
    )
    .execute(pool)
    .await?;
    Ok(n.rows_affected())
}

/// Queues the fan-out of a just-published alert: its step 0 (inside the publishing
/// transaction).
pub async fn queue_job(tx: &mut PgConnection, alert_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "insert into push_jobs (alert_id, step, kind, state, alert_day) values ($1, 0, 'alert', 'planning', (now() at time zone 'utc')::date)
         on conflict do nothing",
        alert_id,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!("select pg_notify($1, '')", PUSH_CHANNEL).execute(&mut *tx).await?;
    Ok(())
}

/// Queues a correction or the retraction of an alert that was pushed (inside the transaction
/// that changes the alert, which holds the alert's row lock: steps of one alert are numbered
/// one at a time). A correction waits `coalesce` for further ones, which join it instead of
/// making a step each: the step carries the last revision, and it alerts again if any of them
/// asked to. A retraction cancels the steps not yet done. Returns the step, or `None` when the
/// alert has no push (push off, or never published).
pub async fn queue_step(
    tx: &mut PgConnection,
    alert_id: Uuid,
    kind: StepKind,
    revision: i32,
    quiet: bool,
    coalesce: std::time::Duration,
) -> sqlx::Result<Option<i16>> {
    match kind {
        StepKind::Alert => unreachable!("step 0 is queued by queue_job"),
        StepKind::Correction => {
            let joined = sqlx::query_scalar!(
                "update push_jobs set revision = $2, quiet = quiet and $3, requested_at = now()
                 where alert_id = $1 and kind = 'correction' and state = 'planning'
                 returning step",
                alert_id,
                revision,
                quiet,
            )
            .fetch_optional(&mut *tx)
            .await?;
            if joined.is_some() {
                return Ok(joined);
            }
        }
        StepKind::Retraction => {
            // Pushes not yet sent of the earlier steps never go (their running ranges stop
            // when their process's hub sees the retract event).
            sqlx::query!(
                "update push_jobs set state = 'cancelled' where alert_id = $1 and state in ('planning', 'running')",
                alert_id,
            )
            .execute(&mut *tx)
            .await?;
        }
    }
    let wait = if kind == StepKind::Correction { coalesce.as_secs_f64() } else { 0.0 };
    let step = sqlx::query_scalar!(
        "insert into push_jobs (alert_id, step, kind, revision, quiet, state, alert_day, not_before)
         select $1, max(step) + 1, $2, $3, $4, 'planning', min(alert_day), now() + make_interval(secs => $5)
         from push_jobs where alert_id = $1 having count(*) > 0
         returning step",
        alert_id,
        kind as _,
        revision,
        quiet,
        wait,
    )
    .fetch_optional(&mut *tx)
    .await?;
    sqlx::query!("select pg_notify($1, '')", PUSH_CHANNEL).execute(&mut *tx).await?;
    Ok(step)
}

/// A checked query over who a step after the original goes to, per subscriber of the alert's
/// log (one index range of it, `$day`/`$alert`, in the rows of `d`): those who were sent
/// something in an earlier step and have no outcome in this one (`$step`); for a correction,
/// only those whose newest push carried a revision older than the step's (`$revision`).
///
/// `query_later_step_targets!(query_as!(T), "<head> from ", "<range>", "<tail>", args…)` runs
/// `<head> from (<those subscribers>) e <tail>`; `<range>` narrows the log rows further (or is
/// empty). The parameters: `$1` alert, `$2` day, `$3` step, `$4` whether it is a retraction,
/// `$5` revision, then the query's own. (The text of a checked query must be string literals,
/// so the subquery lives here rather than in a `const`.)
macro_rules! query_later_step_targets {
    ($query:ident!($($out:ty)?), $head:literal, $range:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::$query!(
            $($out,)?
            $head
                + "(select d.subscription_id from push_deliveries d
                    where d.alert_day = $2 and d.alert_id = $1 "
                + $range
                + " group by d.subscription_id
                    having bool_or(d.status = 'sent' and d.step < $3) and not bool_or(d.step = $3)
                       and ($4 or coalesce(max(d.revision) filter (where d.status = 'sent'), 0) < $5)) e "
                + $tail
            $(, $arg)*
        )
    };
}

/// Plans one queued step: counts its targets and cuts the subscription id space into batches.
/// A step waits for its coalescing window and for the earlier steps of its alert to have no
/// range left to send (so a correction never races the original it corrects). Returns the
/// alert planned, if any step was ready.
pub async fn plan_next_job(pool: &PgPool, batch_size: i64) -> sqlx::Result<Option<Uuid>> {
    let mut tx = pool.begin().await?;
    struct Ready {
        alert_id: Uuid,
        step: i16,
        kind: StepKind,
        revision: i32,
        alert_day: NaiveDate,
        topics: Vec<String>,
        stale: bool,
    }
    let job = sqlx::query_as!(
        Ready,
        r#"select j.alert_id, j.step, j.kind as "kind: StepKind", j.revision, j.alert_day, a.topics,
                (a.status = 'retracted' and j.kind <> 'retraction')
                or j.requested_at + make_interval(secs => a.ttl_seconds) < now() as "stale!"
         from push_jobs j join alerts a on a.id = j.alert_id
         where j.state = 'planning' and (j.not_before is null or j.not_before <= now())
           and not exists (select 1 from push_jobs e
                           where e.alert_id = j.alert_id and e.step < j.step and e.state = 'planning')
           and not exists (select 1 from push_batches b
                           where b.alert_id = j.alert_id and b.step < j.step and b.state <> 'done')
         order by j.created_at limit 1 for update of j skip locked"#,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(Ready { alert_id, step, kind, revision, alert_day: day, topics, stale }) = job else {
        return Ok(None);
    };
    if stale {
        // Retracted, or queued while push was off and no longer worth sending.
        sqlx::query!(
            "update push_jobs set state = 'cancelled' where alert_id = $1 and step = $2",
            alert_id,
            step
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(Some(alert_id));
    }
    let (targeted, min_id, max_id) = if kind == StepKind::Alert {
        let r = sqlx::query!(
            r#"select count(*) as "targeted!", min(id) as min_id, max(id) as max_id from push_subscriptions
             where active and (cardinality($1::text[]) = 0 or cardinality(topics) = 0 or topics && $1)"#,
            &topics,
        )
        .fetch_one(&mut *tx)
        .await?;
        (r.targeted, r.min_id, r.max_id)
    } else {
        // Read from the alert's log, once per step: the subscribers it was sent to.
        let r = query_later_step_targets!(
            query!(),
            r#"select count(*) as "targeted!", min(s.id) as min_id, max(s.id) as max_id from "#,
            "",
            "join push_subscriptions s on s.id = e.subscription_id and s.active
             where not exists (select 1 from push_retries r where r.alert_id = $1 and r.subscription_id = s.id)",
            alert_id,
            day,
            step,
            kind == StepKind::Retraction,
            revision,
        )
        .fetch_one(&mut *tx)
        .await?;
        (r.targeted, r.min_id, r.max_id)
    };
    if let (Some(lo), Some(hi)) = (min_id, max_id) {
        // Ranges of ids, not of rows: planning costs one statement whatever the subscriber
        // count; ranges thinned by deletions are simply cheaper to process.
        sqlx::query!(
            "insert into push_batches (alert_id, step, first_id, last_id, state)
             select $1, $5, f, least(f + $4 - 1, $3), 'pending' from generate_series($2::bigint, $3::bigint, $4::bigint) f",
            alert_id,
            lo,
            hi,
            batch_size,
            step,
        )
        .execute(&mut *tx)
        .await?;
    }
    // `targeted +`: follow-ups (pushes of earlier steps that were in flight when this step was
    // asked for) may already have been added to it.
    sqlx::query!(
        "update push_jobs set state = 'running', targeted = targeted + $3, started_at = now()
         where alert_id = $1 and step = $2",
        alert_id,
        step,
        targeted,
    )
    .execute(&mut *tx)
    .await?;
    let job = JobKey { alert_id, step, alert_day: day };
    mark_milestones(&mut tx, &job, &[]).await?;
    complete_job(&mut tx, &job).await?;
    sqlx::query!("select pg_notify($1, '')", PUSH_CHANNEL).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(Some(alert_id))
}

/// One step's fan-out of one alert: its job row, and where its log rows go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobKey {
    pub alert_id: Uuid,
    pub step: i16,
    pub alert_day: NaiveDate,
}

/// A claimed range of one step's fan-out.
#[derive(Debug, Clone)]
pub struct Batch {
    pub job: JobKey,
    pub step: Step,
    pub first_id: i64,
    pub last_id: i64,
}

/// What a step is, as its pushes need it.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub kind: StepKind,
    /// The step's revision (who it targets); its pushes carry `alert_revision`.
    pub revision: i32,
    pub quiet: bool,
    pub requested_at: DateTime<Utc>,
    /// The alert's revision now: the text a push encrypted now carries.
    pub alert_revision: i32,
}

/// Claims a pending batch, or one whose worker vanished (lease expired), for `lease`; never one
/// of `held`, the batches this process is still working on (a lease of its own that ran out
/// while its runtime was busy must not make it send a range twice).
pub async fn claim_batch(
    pool: &PgPool,
    lease: std::time::Duration,
    held: &[BatchKey],
) -> sqlx::Result<Option<Batch>> {
    let (held_alerts, held_steps, held_firsts) = unzip_keys(held);
    let row = sqlx::query!(
        r#"update push_batches b set state = 'running', lease_until = now() + make_interval(secs => $1)
         from push_jobs j join alerts a on a.id = j.alert_id
         where j.alert_id = b.alert_id and j.step = b.step
           and (b.alert_id, b.step, b.first_id) = (
             select b2.alert_id, b2.step, b2.first_id from push_batches b2
             where (b2.state = 'pending' or (b2.state = 'running' and b2.lease_until < now()))
               and (b2.alert_id, b2.step, b2.first_id)
                   not in (select * from unnest($2::uuid[], $3::smallint[], $4::bigint[]))
             -- By range first: a new alert starts at once and then advances side by side with
             -- one still going out, instead of queueing behind its million subscribers.
             order by b2.first_id, b2.alert_id, b2.step
             limit 1 for update skip locked)
         returning b.alert_id, b.step, j.alert_day, b.first_id, b.last_id, j.kind as "kind: StepKind",
                   j.revision, j.quiet, j.requested_at, a.revision as alert_revision"#,
        lease.as_secs_f64(),
        &held_alerts,
        &held_steps,
        &held_firsts,
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| Batch {
        job: JobKey { alert_id: r.alert_id, step: r.step, alert_day: r.alert_day },
        step: Step {
            kind: r.kind,
            revision: r.revision,
            quiet: r.quiet,
            requested_at: r.requested_at,
            alert_revision: r.alert_revision,
        },
        first_id: r.first_id,
        last_id: r.last_id,
    }))
}

/// A batch's identity: (alert, step, first id of its range).
pub type BatchKey = (Uuid, i16, i64);

fn unzip_keys(keys: &[BatchKey]) -> (Vec<Uuid>, Vec<i16>, Vec<i64>) {
    let mut out =
        (Vec::with_capacity(keys.len()), Vec::with_capacity(keys.len()), Vec::with_capacity(keys.len()));
    for &(a, s, f) in keys {
        out.0.push(a);
        out.1.push(s);
        out.2.push(f);
    }
    out
}

/// Renews the leases of the batches this process is working on, in one statement.
pub async fn renew_leases(
    conn: &mut sqlx::PgConnection,
    held: &[BatchKey],
    lease: std::time::Duration,
) -> sqlx::Result<()> {
    let (alerts, steps, firsts) = unzip_keys(held);
    sqlx::query!(
        "update push_batches b set lease_until = now() + make_interval(secs => $4)
         from unnest($1::uuid[], $2::smallint[], $3::bigint[]) as h(alert_id, step, first_id)
         where b.alert_id = h.alert_id and b.step = h.step and b.first_id = h.first_id and b.state = 'running'",
        &alerts,
        &steps,
        &firsts,
        lease.as_secs_f64(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Hands a batch back at once (at shutdown) rather than after its lease runs out.
pub async fn release_batch(pool: &PgPool, b: &Batch) -> sqlx::Result<()> {
    sqlx::query!(
        "update push_batches set state = 'pending', lease_until = null
         where alert_id = $1 and step = $2 and first_id = $3",
        b.job.alert_id,
        b.job.step,
        b.first_id,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A subscriber of a batch that has no outcome logged yet.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: i64,
    pub endpoint: String,
    pub origin: String,
    pub host: String,
    pub p256dh: Vec<u8>,
    pub auth: Vec<u8>,
}

/// The batch's subscribers without an outcome in its step (on a resumed batch, those not yet
/// done before the crash) and not waiting for a retry of the alert.
pub async fn targets(pool: &PgPool, b: &Batch, topics: &[String]) -> sqlx::Result<Vec<Target>> {
    if b.step.kind != StepKind::Alert {
        return query_later_step_targets!(
            query_as!(Target),
            "select s.id, s.endpoint, s.origin, s.host, s.p256dh, s.auth from ",
            "and d.subscription_id between $6 and $7",
            "join push_subscriptions s on s.id = e.subscription_id and s.active
             where not exists (select 1 from push_retries r where r.alert_id = $1 and r.subscription_id = s.id)
             order by s.id",
            b.job.alert_id,
            b.job.alert_day,
            b.job.step,
            b.step.kind == StepKind::Retraction,
            b.step.revision,
            b.first_id,
            b.last_id,
        )
        .fetch_all(pool)
        .await;
    }
    sqlx::query_as!(
        Target,
        "select s.id, s.endpoint, s.origin, s.host, s.p256dh, s.auth from push_subscriptions s
         where s.id between $1 and $2 and s.active
           and (cardinality($3::text[]) = 0 or cardinality(s.topics) = 0 or s.topics && $3)
           and not exists (select 1 from push_deliveries d
                           where d.alert_day = $4 and d.alert_id = $5 and d.subscription_id = s.id
                             -- The range again, so that PostgreSQL reads the batch's slice of
                             -- the log's primary key once instead of probing it per row
                             -- (BENCHMARKS.md: 35 → 10 µs of PostgreSQL CPU per push).
                             and d.subscription_id between $1 and $2 and d.step = 0)
           -- Waiting for another try: the retry worker has it.
           and not exists (select 1 from push_retries r
                           where r.alert_id = $5 and r.subscription_id = s.id)
         order by s.id",
        b.first_id,
        b.last_id,
        topics,
        b.job.alert_day,
        b.job.alert_id,
    )
    .fetch_all(pool)
    .await
}

/// What became of one push: its final status in the delivery log, or another try later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verdict {
    Final(DeliveryStatus),
    /// Another try at the outcome's `retry_at` (the default only so that an [`Outcome`] can be
    /// built with `..Default::default()`; every builder sets it).
    #[default]
    Retry,
}

impl From<DeliveryStatus> for Verdict {
    fn from(status: DeliveryStatus) -> Self {
        Self::Final(status)
    }
}

/// The outcome of one push: final, or another try at `retry_at`.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub subscription_id: i64,
    pub status: Verdict,
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
    /// The alert's revision the push carried.
    pub revision: i32,
    /// When the push service answered (or the push was given up): the log's `finished_at`, and
    /// what the step's milestones are stamped with.
    pub answered_at: Option<DateTime<Utc>>,
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

/// Writes outcomes of one step: final ones to the delivery log in one statement (and out of
/// the retry queue), retries into the retry queue; deactivates gone subscriptions and those
/// whose push service keeps failing them; moves the step's counters and milestones; and queues
/// a follow-up for each push that went out with an older text than the alert's latest step
/// asks for. All in one transaction.
pub async fn record(
    pool: &PgPool,
    job: &JobKey,
    outcomes: &[Outcome],
    deactivation: &Deactivation,
) -> sqlx::Result<()> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let (retries, finals): (Vec<&Outcome>, Vec<&Outcome>) =
        outcomes.iter().partition(|o| o.status == Verdict::Retry);
    let mut tx = pool.begin().await?;
    // First, before any row of the push tables: the alert's row, shared. A correction or a
    // retraction holds it exclusively while it queues its step, so this transaction sees either
    // the alert before the change (and the new step will find these pushes in the log) or after
    // it (and the follow-ups below carry the change): never neither.
    let latest = sqlx::query!(
        r#"select j.step as "step!", j.kind as "kind!: StepKind", j.revision as "revision!" from alerts a
         join lateral (select step, kind, revision from push_jobs where alert_id = a.id
                       order by step desc limit 1) j on true
         where a.id = $1 for share of a"#,
        job.alert_id,
    )
    .fetch_optional(&mut *tx)
    .await?
    .map(|r| (r.step, r.kind, r.revision));
    let logged = if finals.is_empty() { Vec::new() } else { log_finals(&mut tx, job, &finals).await? };
    if !retries.is_empty() {
        queue_retries(&mut tx, job, &retries).await?;
    }
    let ids = |keep: &dyn Fn(&Outcome) -> bool| -> Vec<i64> {
        finals.iter().filter(|o| keep(o)).map(|o| o.subscription_id).collect()
    };
    let retried = ids(&|o| o.from_retry);
    if !retried.is_empty() {
        sqlx::query!(
            "delete from push_retries where alert_id = $1 and step = $2 and subscription_id = any($3)",
            job.alert_id,
            job.step,
            &retried,
        )
        .execute(&mut *tx)
        .await?;
    }
    if let Some((step, kind, revision)) = latest
        && step > job.step
    {
        let stale = ids(&|o| {
            o.status == Verdict::Final(DeliveryStatus::Sent)
                && (kind == StepKind::Retraction || o.revision < revision)
        });
        if !stale.is_empty() {
            queue_follow_ups(&mut tx, job, step, &stale).await?;
        }
    }
    let gone = ids(&|o| o.status == Verdict::Final(DeliveryStatus::Gone));
    if !gone.is_empty() {
        sqlx::query!(
            "update push_subscriptions set active = false, deactivated_at = now(), deactivated_reason = 'gone'
             where id = any($1) and active",
            &gone,
        )
        .execute(&mut *tx)
        .await?;
    }
    // A push that went through clears its subscription's failures (through the partial index:
    // nearly always a probe of an empty index).
    let sent = ids(&|o| o.status == Verdict::Final(DeliveryStatus::Sent));
    if !sent.is_empty() {
        sqlx::query!(
            "update push_subscriptions set failed_alerts = 0, failing_since = null
             where failed_alerts > 0 and id = any($1)",
            &sent,
        )
        .execute(&mut *tx)
        .await?;
    }
    let failing = ids(&|o| o.service_failure);
    if !failing.is_empty() {
        count_failures(&mut tx, &failing, deactivation).await?;
    }
    let n = |s: DeliveryStatus| logged.iter().filter(|(k, _)| *k == s).count() as i64;
    sqlx::query!(
        "update push_jobs set sent = sent + $3, failed = failed + $4, gone = gone + $5,
                expired = expired + $6, skipped = skipped + $7
         where alert_id = $1 and step = $2",
        job.alert_id,
        job.step,
        n(DeliveryStatus::Sent),
        n(DeliveryStatus::Failed),
        n(DeliveryStatus::Gone),
        n(DeliveryStatus::Expired),
        n(DeliveryStatus::Skipped),
    )
    .execute(&mut *tx)
    .await?;
    let mut answered: Vec<DateTime<Utc>> = logged.iter().map(|(_, at)| *at).collect();
    answered.sort_unstable();
    mark_milestones(&mut tx, job, &answered).await?;
    if !retried.is_empty() {
        complete_job(&mut tx, job).await?;
    }
    tx.commit().await
}

/// Pushes of an earlier step that went out after a later step was asked for (they were in
/// flight, or waiting for a retry, when the editor changed the alert): the later step must
/// reach them too, and its own ranges may be past them already. They join its retry queue, due
/// now, and its figures. Never for a subscriber the later step already has an outcome for.
async fn queue_follow_ups(tx: &mut PgConnection, job: &JobKey, latest: i16, ids: &[i64]) -> sqlx::Result<()> {
    let added = sqlx::query_scalar!(
        r#"with added as (
            insert into push_retries (alert_id, step, subscription_id, attempts, deferrals, not_before)
            select $1, $2, i, 0, 0, now() from unnest($4::bigint[]) i
            where not exists (select 1 from push_deliveries d
                              where d.alert_day = $3 and d.alert_id = $1 and d.subscription_id = i and d.step = $2)
            on conflict do nothing
            returning 1)
         select count(*) as "added!" from added"#,
        job.alert_id,
        latest,
        job.alert_day,
        ids,
    )
    .fetch_one(&mut *tx)
    .await?;
    if added > 0 {
        sqlx::query!(
            "update push_jobs set targeted = targeted + $3 where alert_id = $1 and step = $2",
            job.alert_id,
            latest,
            added,
        )
        .execute(&mut *tx)
        .await?;
        tracing::debug!(alert_id = %job.alert_id, step = latest, added, "follow-up pushes queued");
    }
    Ok(())
}

/// Final outcomes into the delivery log; the status and answer time of each row actually
/// written.
async fn log_finals(
    tx: &mut PgConnection,
    job: &JobKey,
    finals: &[&Outcome],
) -> sqlx::Result<Vec<(DeliveryStatus, DateTime<Utc>)>> {
    let now = Utc::now();
    let mut ids = Vec::with_capacity(finals.len());
    let mut statuses = Vec::with_capacity(finals.len());
    let mut http = Vec::with_capacity(finals.len());
    let mut attempts = Vec::with_capacity(finals.len());
    let mut hosts = Vec::with_capacity(finals.len());
    let mut latency = Vec::with_capacity(finals.len());
    let mut errors = Vec::with_capacity(finals.len());
    let mut revisions = Vec::with_capacity(finals.len());
    let mut answered = Vec::with_capacity(finals.len());
    let finals = finals.iter().filter_map(|o| match o.status {
        Verdict::Final(status) => Some((o, status)),
        Verdict::Retry => None,
    });
    for (o, status) in finals {
        ids.push(o.subscription_id);
        statuses.push(status.as_str());
        http.push(o.http_status);
        attempts.push(o.attempts);
        hosts.push(o.push_host.as_str());
        latency.push(o.latency_ms);
        errors.push(o.error.as_deref());
        revisions.push(o.revision);
        answered.push(o.answered_at.unwrap_or(now));
    }
    // `on conflict do nothing`: a batch resumed after a crash may repeat a push whose outcome
    // was already written; the first outcome stands and is counted once.
    // Overridden (`as`): the checked macros know no arrays with nulls in them, and take only
    // `String`s for `text[]` (borrowing saves an allocation per push).
    let logged = sqlx::query!(
        r#"insert into push_deliveries
            (alert_day, alert_id, step, subscription_id, status, http_status, attempts, push_host,
             latency_ms, error, revision, finished_at)
         select $1, $2, $3, * from unnest($4::bigint[], $5::text[], $6::smallint[], $7::smallint[], $8::text[],
                                         $9::int[], $10::text[], $11::int[], $12::timestamptz[])
         on conflict do nothing
         returning status as "status: DeliveryStatus", finished_at"#,
        job.alert_day,
        job.alert_id,
        job.step,
        &ids,
        &statuses as &[&str],
        &http as _,
        &attempts,
        &hosts as &[&str],
        &latency as _,
        &errors as _,
        &revisions,
        &answered,
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(logged.into_iter().map(|r| (r.status, r.finished_at)).collect())
}

/// Puts pushes (back) in the retry queue, unclaimed, due at their `retry_at`.
async fn queue_retries(tx: &mut PgConnection, job: &JobKey, retries: &[&Outcome]) -> sqlx::Result<()> {
    let ids: Vec<i64> = retries.iter().map(|o| o.subscription_id).collect();
    let attempts: Vec<i16> = retries.iter().map(|o| o.attempts).collect();
    let deferrals: Vec<i16> = retries.iter().map(|o| o.deferrals).collect();
    let due: Vec<DateTime<Utc>> = retries.iter().map(|o| o.retry_at.unwrap_or_else(Utc::now)).collect();
    let http: Vec<Option<i16>> = retries.iter().map(|o| o.http_status).collect();
    let errors: Vec<Option<&str>> = retries.iter().map(|o| o.error.as_deref()).collect();
    sqlx::query!(
        "insert into push_retries (alert_id, step, subscription_id, attempts, deferrals, not_before, http_status, error)
         select $1, $2, * from unnest($3::bigint[], $4::smallint[], $5::smallint[], $6::timestamptz[],
                                      $7::smallint[], $8::text[])
         on conflict (alert_id, step, subscription_id) do update set
            attempts = excluded.attempts, deferrals = excluded.deferrals, not_before = excluded.not_before,
            lease_until = null, http_status = excluded.http_status, error = excluded.error",
        job.alert_id,
        job.step,
        &ids,
        &attempts,
        &deferrals,
        &due,
        &http as _,
        &errors as _,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// One more alert the push service failed for each subscription; deactivates those past the
/// rule ([`Deactivation`]). A reader who still uses the subscription re-posts it on the next
/// visit, which reactivates it.
async fn count_failures(tx: &mut PgConnection, ids: &[i64], rule: &Deactivation) -> sqlx::Result<()> {
    let n = sqlx::query!(
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
        ids,
        rule.alerts,
        rule.after.as_secs_f64(),
    )
    .execute(&mut *tx)
    .await?;
    tracing::debug!(subscriptions = n.rows_affected(), "push service failures counted");
    Ok(())
}

/// Marks the step done (and 100 % reached) once no range and no retry of it is left.
async fn complete_job(tx: &mut PgConnection, job: &JobKey) -> sqlx::Result<()> {
    let done = sqlx::query_scalar!(
        r#"update push_jobs set state = case when state = 'cancelled' then state else 'done' end,
                reached_100_at = coalesce(reached_100_at, clock_timestamp())
         where alert_id = $1 and step = $2 and state in ('running', 'cancelled')
           and not exists (select 1 from push_batches where alert_id = $1 and step = $2 and state <> 'done')
           and not exists (select 1 from push_retries where alert_id = $1 and step = $2)
         returning state = 'done' as "done!""#,
        job.alert_id,
        job.step,
    )
    .fetch_optional(&mut *tx)
    .await?;
    if done == Some(true) {
        announce_delivered(tx, job).await?;
    }
    Ok(())
}

/// `alert.delivered`'s data: the alert as `GET /api/v1/alerts/{id}` shows it (with `push` and
/// `push_steps`), and the step whose fan-out finished.
#[derive(Serialize)]
struct Delivered {
    #[serde(flatten)]
    alert: AlertView,
    /// The fan-out that finished: 0 the original push, then a correction's or the retraction's.
    step: Option<PushStep>,
}

/// Queues the `alert.delivered` webhook for a step that has just finished, in the transaction
/// that marks it done. Reads nothing more when no endpoint wants the event.
async fn announce_delivered(tx: &mut PgConnection, job: &JobKey) -> sqlx::Result<()> {
    if !webhooks::wanted(tx, EventType::Delivered).await? {
        return Ok(());
    }
    let Some(alert) = alerts::get(tx, job.alert_id).await? else { return Ok(()) };
    let mut view = AlertView::from(alert);
    view.push = figures(tx, job.alert_id).await?;
    view.push_steps = steps_of(tx, &[job.alert_id]).await?.into_iter().map(|(_, s)| s).collect();
    let finished = view.push_steps.iter().find(|s| s.step == job.step).cloned();
    webhooks::enqueue_data(tx, EventType::Delivered, &Delivered { alert: view, step: finished }).await
}

/// A push due for another try (or a follow-up), claimed from the retry queue.
#[derive(Debug, Clone)]
pub struct DueRetry {
    pub job: JobKey,
    pub step: Step,
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
    let rows = sqlx::query!(
        r#"with due as (
            select alert_id, step, subscription_id from push_retries
            where not_before <= now() and (lease_until is null or lease_until < now())
            order by not_before limit $1 for update skip locked),
         claimed as (
            update push_retries r set lease_until = now() + make_interval(secs => $2)
            from due where r.alert_id = due.alert_id and r.step = due.step and r.subscription_id = due.subscription_id
            returning r.alert_id, r.step, r.subscription_id, r.attempts, r.deferrals)
         select c.alert_id as "alert_id!", c.step as "step!", j.alert_day, j.kind as "kind: StepKind",
                j.revision, j.quiet, j.requested_at, a.revision as alert_revision,
                c.subscription_id as "subscription_id!", c.attempts as "attempts!",
                c.deferrals as "deferrals!", s.endpoint as "endpoint?", s.origin as "origin?",
                s.host as "host?", s.p256dh as "p256dh?", s.auth as "auth?"
         from claimed c join push_jobs j on j.alert_id = c.alert_id and j.step = c.step
         join alerts a on a.id = c.alert_id
         left join push_subscriptions s on s.id = c.subscription_id and s.active"#,
        limit,
        lease.as_secs_f64(),
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| DueRetry {
            job: JobKey { alert_id: r.alert_id, step: r.step, alert_day: r.alert_day },
            step: Step {
                kind: r.kind,
                revision: r.revision,
                quiet: r.quiet,
                requested_at: r.requested_at,
                alert_revision: r.alert_revision,
            },
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

/// Which retries [`close_retries`] ends.
#[derive(Debug, Clone, Copy)]
pub enum RetriesOf {
    /// Those of one step (its TTL passed, or its subscription went).
    Step(i16),
    /// Those of every step but the retraction (the alert was retracted).
    AllButRetraction,
}

/// Ends retries of an alert with one status (`skipped` after a retraction, `expired` past the
/// TTL) in one transaction, and completes their steps if nothing else is left.
pub async fn close_retries(
    pool: &PgPool,
    alert_id: Uuid,
    which: RetriesOf,
    status: DeliveryStatus,
    why: &str,
) -> sqlx::Result<u64> {
    let step = match which {
        RetriesOf::Step(s) => Some(s),
        RetriesOf::AllButRetraction => None,
    };
    let mut tx = pool.begin().await?;
    let ended = sqlx::query!(
        r#"with ended as (
            delete from push_retries r using push_jobs j
            where r.alert_id = $1 and j.alert_id = r.alert_id and j.step = r.step
              and ($4::smallint is null or r.step = $4) and j.kind <> 'retraction'
            returning r.step, j.alert_day, r.subscription_id, r.attempts, r.http_status),
         ins as (
            insert into push_deliveries (alert_day, alert_id, step, subscription_id, status, http_status, attempts, push_host, error)
            select e.alert_day, $1, e.step, e.subscription_id, $2, e.http_status, e.attempts, coalesce(s.host, ''), $3
            from ended e left join push_subscriptions s on s.id = e.subscription_id
            on conflict do nothing
            returning step, alert_day)
         select step as "step!", alert_day as "alert_day!", count(*) as "n!" from ins group by step, alert_day"#,
        alert_id,
        status as _,
        why,
        step,
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut total = 0;
    let now = [Utc::now()];
    for row in ended {
        let (step, alert_day, n) = (row.step, row.alert_day, row.n);
        let job = JobKey { alert_id, step, alert_day };
        add_closed(&mut tx, &job, status, n).await?;
        mark_milestones(&mut tx, &job, &now).await?;
        complete_job(&mut tx, &job).await?;
        total += n as u64;
    }
    tx.commit().await?;
    Ok(total)
}

/// Counts `n` pushes closed without a try (`expired`, or else `skipped`) in a step's figures.
async fn add_closed(tx: &mut PgConnection, job: &JobKey, status: DeliveryStatus, n: i64) -> sqlx::Result<()> {
    if status == DeliveryStatus::Expired {
        sqlx::query!(
            "update push_jobs set expired = expired + $3 where alert_id = $1 and step = $2",
            job.alert_id,
            job.step,
            n,
        )
        .execute(&mut *tx)
        .await?;
    } else {
        sqlx::query!(
            "update push_jobs set skipped = skipped + $3 where alert_id = $1 and step = $2",
            job.alert_id,
            job.step,
            n,
        )
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Stamps the milestones the step's counts have just reached, with the times the pushes that
/// reached them were answered (`answered`: this flush's, sorted), not with the time their
/// outcomes were written: writing five outcomes can take longer than sending them. The stamps
/// never go backwards (a later milestone is never stamped before an earlier one): flushes run
/// concurrently, and one holding earlier answers may take the row after another.
async fn mark_milestones(
    tx: &mut PgConnection,
    job: &JobKey,
    answered: &[DateTime<Utc>],
) -> sqlx::Result<()> {
    let row = sqlx::query!(
        r#"select targeted, sent + failed + gone + expired + skipped as "done!", reached_50_at, reached_95_at,
                  reached_100_at
           from push_jobs where alert_id = $1 and step = $2"#,
        job.alert_id,
        job.step,
    )
    .fetch_one(&mut *tx)
    .await?;
    let (targeted, done) = (row.targeted, row.done);
    let (r50, r95, r100) = (row.reached_50_at, row.reached_95_at, row.reached_100_at);
    let before = done - answered.len() as i64;
    // When the `pct` milestone was crossed, if this flush crossed it.
    let crossed = |pct: i64, already: Option<DateTime<Utc>>| -> Option<DateTime<Utc>> {
        if already.is_some() {
            return None;
        }
        let need = (targeted * pct + 99) / 100;
        if done < need {
            return None;
        }
        let nth = (need - before).max(1) as usize;
        Some(answered.get(nth - 1).or(answered.last()).copied().unwrap_or_else(Utc::now))
    };
    let (s50, s95, s100) = (crossed(50, r50), crossed(95, r95), crossed(100, r100));
    if s50.is_none() && s95.is_none() && s100.is_none() {
        return Ok(());
    }
    sqlx::query!(
        "update push_jobs set
            reached_50_at = coalesce(reached_50_at, $3),
            -- `greatest` skips nulls: only a milestone reached now is stamped, never the later
            -- ones with an earlier one's time.
            reached_95_at = coalesce(reached_95_at, case when $4::timestamptz is not null
                                                    then greatest($4, coalesce(reached_50_at, $3)) end),
            reached_100_at = coalesce(reached_100_at, case when $5::timestamptz is not null
                                                      then greatest($5, coalesce(reached_95_at, $4), coalesce(reached_50_at, $3)) end)
         where alert_id = $1 and step = $2",
        job.alert_id,
        job.step,
        s50,
        s95,
        s100,
    )
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
    status: DeliveryStatus,
    why: &str,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    let done = if b.step.kind == StepKind::Alert {
        sqlx::query!(
            "insert into push_deliveries (alert_day, alert_id, step, subscription_id, status, attempts, push_host, error, revision)
             select $2, $1, $3, r.id, $8, 0, r.host, $9, $4 from (
                select s.id, s.host from push_subscriptions s
                where s.id between $5 and $6 and s.active
                  and (cardinality($7::text[]) = 0 or cardinality(s.topics) = 0 or s.topics && $7)) r
             on conflict do nothing",
            b.job.alert_id,
            b.job.alert_day,
            b.job.step,
            b.step.revision,
            b.first_id,
            b.last_id,
            topics,
            status as _,
            why,
        )
        .execute(&mut *tx)
        .await?
    } else {
        query_later_step_targets!(
            query!(),
            "insert into push_deliveries (alert_day, alert_id, step, subscription_id, status, attempts, push_host, error, revision)
             select $2, $1, $3, r.id, $8, 0, r.host, $9, $5 from (select s.id, s.host from ",
            "and d.subscription_id between $6 and $7",
            "join push_subscriptions s on s.id = e.subscription_id and s.active) r
             on conflict do nothing",
            b.job.alert_id,
            b.job.alert_day,
            b.job.step,
            b.step.kind == StepKind::Retraction,
            b.step.revision,
            b.first_id,
            b.last_id,
            status as _,
            why,
        )
        .execute(&mut *tx)
        .await?
    };
    let n = done.rows_affected() as i64;
    add_closed(&mut tx, &b.job, status, n).await?;
    mark_milestones(&mut tx, &b.job, &[]).await?;
    tx.commit().await
}

/// Marks a batch done, and its step when it was the last and no retry is left.
pub async fn finish_batch(pool: &PgPool, b: &Batch) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    // The step's row first: two ranges finishing at once must not each see the other still
    // running (neither would then complete the step, and it would stay `running` for ever).
    // Waiting here, the second sees the first's range done once it goes on.
    sqlx::query!(
        "select 1 as locked from push_jobs where alert_id = $1 and step = $2 for no key update",
        b.job.alert_id,
        b.job.step,
    )
    .fetch_optional(&mut *tx)
    .await?;
    sqlx::query!(
        "update push_batches set state = 'done', lease_until = null
         where alert_id = $1 and step = $2 and first_id = $3",
        b.job.alert_id,
        b.job.step,
        b.first_id,
    )
    .execute(&mut *tx)
    .await?;
    complete_job(&mut tx, &b.job).await?;
    tx.commit().await
}

/// A checked query with the columns of [`StepFigures`] (from the step's row `j`) between
/// `$head` and `$tail`; [`step_figures!`] reads them back from a record. (The text of a checked
/// query must be string literals, so the columns live here rather than in a `const`.)
macro_rules! query_step_figures {
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query!(
            $head
                + r#"case when j.state = 'planning' and (j.not_before > now() or exists (
                            select 1 from push_jobs e where e.alert_id = j.alert_id and e.step < j.step
                                                        and e.state in ('planning', 'running')))
                         then 'waiting' else j.state end as "state!: StepState",
                    j.targeted, j.sent, j.failed, j.gone, j.expired, j.skipped,
                    greatest(j.targeted - (j.sent + j.failed + j.gone + j.expired + j.skipped), 0) as "pending!",
                    (select count(*) from push_retries r where r.alert_id = j.alert_id and r.step = j.step)
                        as "retrying!",
                    (extract(epoch from j.reached_50_at - j.requested_at) * 1000)::bigint as ms_to_50,
                    (extract(epoch from j.reached_95_at - j.requested_at) * 1000)::bigint as ms_to_95,
                    (extract(epoch from j.reached_100_at - j.requested_at) * 1000)::bigint as ms_to_100"#
                + $tail
            $(, $arg)*
        )
    };
}

/// The [`StepFigures`] of a record of [`query_step_figures!`].
macro_rules! step_figures {
    ($r:expr) => {
        StepFigures {
            state: $r.state,
            targeted: $r.targeted,
            sent: $r.sent,
            failed: $r.failed,
            gone: $r.gone,
            expired: $r.expired,
            skipped: $r.skipped,
            pending: $r.pending,
            retrying: $r.retrying,
            ms_to_50: $r.ms_to_50,
            ms_to_95: $r.ms_to_95,
            ms_to_100: $r.ms_to_100,
        }
    };
}

pub async fn figures(conn: &mut PgConnection, alert_id: Uuid) -> sqlx::Result<Option<PushFigures>> {
    Ok(figures_of(conn, &[alert_id]).await?.into_iter().next().map(|(_, f)| f))
}

/// Push figures of several alerts in one query (for a page of the alert list).
pub async fn figures_of(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<(Uuid, PushFigures)>> {
    let rows = query_step_figures!(
        "select j.alert_id, ",
        r#", coalesce(r.shown, 0) as "shown!", coalesce(r.clicked, 0) as "clicked!"
         from push_jobs j
         left join push_receipt_counts r on r.alert_id = j.alert_id
         where j.alert_id = any($1) and j.step = 0"#,
        ids,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.alert_id, PushFigures { figures: step_figures!(r), shown: r.shown, clicked: r.clicked }))
        .collect())
}

/// Every step of several alerts, oldest first, in one query.
pub async fn steps_of(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<(Uuid, PushStep)>> {
    let rows = query_step_figures!(
        r#"select j.alert_id, j.step, j.kind as "kind: StepKind", j.revision, j.quiet, j.requested_at, "#,
        "
         from push_jobs j
         where j.alert_id = any($1)
         order by j.alert_id, j.step",
        ids,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let step = PushStep {
                step: r.step,
                kind: r.kind,
                revision: r.revision,
                quiet: r.quiet,
                requested_at: r.requested_at,
                figures: step_figures!(r),
            };
            (r.alert_id, step)
        })
        .collect())
}

/// One row of the delivery log, as the API shows it (no endpoint: only the host).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryRow {
    pub subscription_id: i64,
    /// The step the push belongs to (0: the original; then corrections and the retraction).
    pub step: i16,
    /// The alert's revision the push carried.
    pub revision: i32,
    pub status: DeliveryStatus,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
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

/// A page of one alert's log, by (subscription, step): after `after`, of one step or all.
pub async fn deliveries(
    pool: &PgPool,
    alert_id: Uuid,
    step: Option<i16>,
    status: Option<DeliveryStatus>,
    after: (i64, i16),
    limit: i64,
) -> sqlx::Result<Vec<DeliveryRow>> {
    sqlx::query_as!(
        DeliveryRow,
        r#"select d.subscription_id, d.step, d.revision, d.status as "status: DeliveryStatus", d.http_status,
                d.attempts, d.push_host, d.latency_ms, d.error, d.finished_at, d.shown_at, d.clicked_at
         from push_deliveries d join push_jobs j on j.alert_id = d.alert_id and j.step = 0 and j.alert_day = d.alert_day
         where d.alert_id = $1 and ($2::smallint is null or d.step = $2) and ($3::text is null or d.status = $3)
           and (d.subscription_id, d.step) > ($4, $5)
         order by d.subscription_id, d.step limit $6"#,
        alert_id,
        step,
        status as _,
        after.0,
        after.1,
        limit,
    )
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

/// Counts a receipt for the event whose columns are `d.$at` in the delivery log and `$count` in
/// `push_receipt_counts` (see [`add_receipt`]). (Column names cannot be parameters, and the text
/// of a checked query must be string literals: so one statement per event.)
macro_rules! count_receipt {
    ($at:literal, $count:literal, $alert_id:expr, $subscription_id:expr) => {
        sqlx::query!(
            "with delivery as (
                update push_deliveries d set "
                + $at
                + " = now()
                from push_jobs j join alerts a on a.id = j.alert_id
                where j.alert_id = $1 and j.step = 0 and a.status <> 'retracted'
                  and d.alert_day = j.alert_day and d.alert_id = $1 and d.subscription_id = $2 and d.step = 0
                  and d.status = 'sent' and d."
                + $at
                + " is null
                returning d.alert_id)
             insert into push_receipt_counts (alert_id, "
                + $count
                + ") select alert_id, 1 from delivery
             on conflict (alert_id) do update set "
                + $count
                + " = push_receipt_counts."
                + $count
                + " + 1",
            $alert_id,
            $subscription_id
        )
    };
}

/// Why a receipt for the event stamped in `d.$at` was not counted (see [`add_receipt`]): the
/// alert's status, the delivery's, and whether it is stamped already.
macro_rules! receipt_state {
    ($at:literal, $alert_id:expr, $subscription_id:expr) => {
        sqlx::query!(
            r#"select a.status as "alert: AlertStatus", d.status as "delivery?: DeliveryStatus", d."#
                + $at
                + r#" is not null as stamped from alerts a
             left join push_jobs j on j.alert_id = a.id and j.step = 0
             left join push_deliveries d
                    on d.alert_day = j.alert_day and d.alert_id = a.id and d.subscription_id = $2 and d.step = 0
             where a.id = $1"#,
            $alert_id,
            $subscription_id
        )
    };
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
    NotSent(DeliveryStatus),
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
    let counted = match event {
        ReceiptEvent::Shown => {
            count_receipt!("shown_at", "shown", alert_id, subscription_id).execute(pool).await?
        }
        ReceiptEvent::Clicked => {
            count_receipt!("clicked_at", "clicked", alert_id, subscription_id).execute(pool).await?
        }
    }
    .rows_affected()
        > 0;
    if counted {
        return Ok(Receipt::Counted);
    }
    // Not counted: find out why, for an answer the service worker (and its author) can act on.
    let why = match event {
        ReceiptEvent::Shown => receipt_state!("shown_at", alert_id, subscription_id)
            .fetch_optional(pool)
            .await?
            .map(|r| (r.alert, r.delivery, r.stamped)),
        ReceiptEvent::Clicked => receipt_state!("clicked_at", alert_id, subscription_id)
            .fetch_optional(pool)
            .await?
            .map(|r| (r.alert, r.delivery, r.stamped)),
    };
    Ok(match why {
        None => Receipt::UnknownAlert,
        Some((AlertStatus::Retracted, _, _)) => Receipt::Retracted,
        Some((AlertStatus::Scheduled, _, _)) => Receipt::UnknownAlert,
        Some((_, None, _)) => Receipt::NotLogged,
        Some((_, Some(status), _)) if status != DeliveryStatus::Sent => Receipt::NotSent(status),
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
    let old = sqlx::query_scalar!(
        r#"select c.relname::text as "name!" from pg_inherits i
         join pg_class c on c.oid = i.inhrelid join pg_class p on p.oid = i.inhparent
         where p.relname = 'push_deliveries' and c.relname ~ '^push_deliveries_[0-9]{8}$'"#,
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
    sqlx::query!("delete from push_deliveries_default where alert_day < $1", cutoff).execute(pool).await?;
    Ok(())
}

/// The service-wide push backlog the gauges on `/metrics` show (`workers::gauges`).
pub struct Backlog {
    /// Steps due (a coalescing correction waiting for its `not_before` is not) and not done.
    pub unfinished: i64,
    /// Seconds since the oldest of them was due; 0 when there is none.
    pub oldest_secs: f64,
    /// Seconds the newest step to reach 50, 95 and 100 % of its targets answered took.
    pub last_milestones: [Option<f64>; 3],
}

pub async fn backlog(pool: &PgPool) -> sqlx::Result<Backlog> {
    let r = sqlx::query!(
        r#"select count(*) as "unfinished!",
                  coalesce(extract(epoch from now() - min(coalesce(not_before, requested_at))), 0)::float8
                      as "oldest_secs!"
           from push_jobs
           where state in ('planning', 'running') and (not_before is null or not_before <= now())"#
    )
    .fetch_one(pool)
    .await?;
    // Three scans of a table with a row per alert step, a few every 15 s: small next to the
    // fan-out's own writes, and no index to keep for it.
    let m = sqlx::query!(
        r#"select
             (select extract(epoch from reached_50_at - requested_at)::float8 from push_jobs
              where reached_50_at is not null order by reached_50_at desc limit 1) as s50,
             (select extract(epoch from reached_95_at - requested_at)::float8 from push_jobs
              where reached_95_at is not null order by reached_95_at desc limit 1) as s95,
             (select extract(epoch from reached_100_at - requested_at)::float8 from push_jobs
              where reached_100_at is not null order by reached_100_at desc limit 1) as s100"#
    )
    .fetch_one(pool)
    .await?;
    Ok(Backlog {
        unfinished: r.unfinished,
        oldest_secs: r.oldest_secs,
        last_milestones: [m.s50, m.s95, m.s100],
    })
}
