//! `push_batches`: the ranges of subscribers a process claims with a lease, and who in a range
//! is still to be sent.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::{DeliveryStatus, JobKey, jobs::complete_job, milestones::mark_milestones, retries::add_closed};
use crate::alerts::view::StepKind;

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
