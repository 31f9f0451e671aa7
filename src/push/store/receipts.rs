//! Receipts: the service worker's reports that a push was shown or clicked, stamped on its
//! delivery-log row and counted once.

use sqlx::PgPool;
use uuid::Uuid;

use super::DeliveryStatus;
use crate::alerts::domain::AlertStatus;

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
