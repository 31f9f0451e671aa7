//! `push_subscriptions`: who can be sent a push.

use sqlx::PgPool;

use crate::push::subscription::PushSubscription;

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
