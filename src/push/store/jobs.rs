//! `push_jobs`: each step of an alert's fan-out, from queued to planned into ranges to done.

use chrono::NaiveDate;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{JobKey, PUSH_CHANNEL, figures, milestones::mark_milestones, steps_of};
use crate::{
    alerts::{
        store as alerts,
        view::{AlertView, PushStep, StepKind},
    },
    webhooks::{self, EventType},
};

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

/// Marks the step done (and 100 % reached) once no range and no retry of it is left.
pub(super) async fn complete_job(tx: &mut PgConnection, job: &JobKey) -> sqlx::Result<()> {
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
