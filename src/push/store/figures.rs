//! A step's counters and milestones as the API and the webhooks show them.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::alerts::view::{PushFigures, PushStep, StepFigures, StepKind, StepState};

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
