//! The 50/95/100 % stamps of a step, from the answer times of the pushes that reached them.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::JobKey;

/// Stamps the milestones the step's counts have just reached, with the times the pushes that
/// reached them were answered (`answered`: this flush's, sorted), not with the time their
/// outcomes were written: writing five outcomes can take longer than sending them. The stamps
/// never go backwards (a later milestone is never stamped before an earlier one): flushes run
/// concurrently, and one holding earlier answers may take the row after another.
pub(super) async fn mark_milestones(
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
