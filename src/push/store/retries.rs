//! `push_retries`: pushes waiting for another try (or a follow-up), claimed with a lease by any
//! process's retry worker.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    DeliveryStatus, JobKey, Step, Target, jobs::complete_job, milestones::mark_milestones,
    outcomes::PushOutcome,
};
use crate::alerts::view::StepKind;

/// Puts pushes (back) in the retry queue, unclaimed, due at their `retry_at`.
pub(super) async fn queue_retries(
    tx: &mut PgConnection,
    job: &JobKey,
    retries: &[&PushOutcome],
) -> sqlx::Result<()> {
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
pub(super) async fn add_closed(
    tx: &mut PgConnection,
    job: &JobKey,
    status: DeliveryStatus,
    n: i64,
) -> sqlx::Result<()> {
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
