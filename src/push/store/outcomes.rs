//! What a range's writer records after each flush: final outcomes into the delivery log,
//! retries into the retry queue, counters and milestones, deactivations, and follow-ups for
//! pushes that a later step overtook. One transaction per flush.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::{
    DeliveryStatus, JobKey, jobs::complete_job, milestones::mark_milestones, retries::queue_retries,
};
use crate::alerts::view::StepKind;

/// What became of one push: its final status in the delivery log, or another try later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verdict {
    Final(DeliveryStatus),
    /// Another try at the outcome's `retry_at` (the default only so that a [`PushOutcome`] can be
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
pub struct PushOutcome {
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
    outcomes: &[PushOutcome],
    deactivation: &Deactivation,
) -> sqlx::Result<()> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let (retries, finals): (Vec<&PushOutcome>, Vec<&PushOutcome>) =
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
    let ids = |keep: &dyn Fn(&PushOutcome) -> bool| -> Vec<i64> {
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
    finals: &[&PushOutcome],
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
