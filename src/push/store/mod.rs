//! The push tables, one file per part of the durable fan-out:
//!
//! - [`subscriptions`]: `push_subscriptions`, who can be sent a push;
//! - [`jobs`]: `push_jobs`, one row per step of an alert's fan-out (queued, planned, done);
//! - [`batches`]: `push_batches`, the ranges of subscribers a process claims with a lease, and
//!   the targets of a range;
//! - [`outcomes`]: what the fan-out writes after each flush (delivery log, counters, failures,
//!   follow-ups for pushes a correction overtook);
//! - [`retries`]: `push_retries`, pushes waiting for another try;
//! - [`milestones`]: the step's 50/95/100 % stamps;
//! - [`figures`]: the counters and steps as the API shows them;
//! - [`log`]: `push_deliveries`, the per-subscriber delivery log as the API reads it, and its
//!   daily partitions;
//! - [`receipts`]: shown/clicked reports from the service worker.

use chrono::NaiveDate;
use uuid::Uuid;

/// NOTIFY channel that wakes fan-out workers when there is new work.
pub const PUSH_CHANNEL: &str = "sondakika_push";

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

mod batches;
mod figures;
mod jobs;
mod log;
mod milestones;
mod outcomes;
mod receipts;
mod retries;
mod subscriptions;

pub use self::{
    batches::*, figures::*, jobs::*, log::*, outcomes::*, receipts::*, retries::*, subscriptions::*,
};

/// One step's fan-out of one alert: its job row, and where its log rows go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobKey {
    pub alert_id: Uuid,
    pub step: i16,
    pub alert_day: NaiveDate,
}
