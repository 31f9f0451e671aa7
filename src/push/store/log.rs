//! `push_deliveries`, the per-subscriber delivery log: its statuses, its pages as the API reads
//! them, and its daily partitions (retention drops a whole day at once).

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

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
