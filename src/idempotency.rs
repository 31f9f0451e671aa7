//! `Idempotency-Key`: the first answer to a key is stored and replayed for repeats, so an
//! editor's retry (a lost answer, a double click, a CMS that resends) never alerts twice.
//!
//! The `idempotency_keys` table belongs here. A request with a key runs in one transaction:
//! [`try_processing`] either hands back the stored answer or lets the request proceed, holding a
//! per-(token, key) advisory lock until the transaction ends, so a concurrent repeat waits for
//! the first and then replays it; [`save_response`] stores the answer in the same transaction
//! as the work. Keys are kept a day ([`delete_expired`], from housekeeping).

use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};

/// How long a key is remembered, in hours.
const KEEP_HOURS: i32 = 24;

/// A request's identity under its key: the SHA-256 of its canonical body.
pub struct Fingerprint(Vec<u8>);

impl Fingerprint {
    pub fn of(canonical_body: &[u8]) -> Self {
        Self(Sha256::digest(canonical_body).to_vec())
    }
}

/// What to do with a request that carries a key.
pub enum NextAction {
    /// First time this key is seen: do the work, then [`save_response`].
    StartProcessing,
    /// Seen before with the same request: answer this again.
    ReturnSaved { status: u16, body: String },
}

/// The key was used before for a different request.
#[derive(Debug, thiserror::Error)]
#[error("this key was already used for a different request; use a new key per request")]
pub struct KeyReused;

/// Looks the key up inside the caller's transaction, waiting for a concurrent request with the
/// same key to finish first.
pub async fn try_processing(
    tx: &mut PgConnection,
    token_id: i64,
    key: &str,
    fingerprint: &Fingerprint,
) -> sqlx::Result<Result<NextAction, KeyReused>> {
    sqlx::query!("select pg_advisory_xact_lock($1::int, hashtext($2))", token_id as i32, key)
        .execute(&mut *tx)
        .await?;
    let stored = sqlx::query!(
        "select request_hash, status, body from idempotency_keys where token_id = $1 and key = $2",
        token_id,
        key,
    )
    .fetch_optional(&mut *tx)
    .await?;
    Ok(match stored {
        None => Ok(NextAction::StartProcessing),
        Some(s) if s.request_hash != fingerprint.0 => Err(KeyReused),
        Some(s) => Ok(NextAction::ReturnSaved { status: s.status as u16, body: s.body }),
    })
}

/// Stores the answer to a key's first request, in the transaction that did the work.
pub async fn save_response(
    tx: &mut PgConnection,
    token_id: i64,
    key: &str,
    fingerprint: &Fingerprint,
    status: u16,
    body: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "insert into idempotency_keys (token_id, key, request_hash, status, body) values ($1, $2, $3, $4, $5)",
        token_id,
        key,
        &fingerprint.0,
        status as i16,
        body,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Forgets keys older than a day; returns how many.
pub async fn delete_expired(pool: &PgPool) -> sqlx::Result<u64> {
    let n = sqlx::query!(
        "delete from idempotency_keys where created_at < now() - make_interval(hours => $1)",
        KEEP_HOURS,
    )
    .execute(pool)
    .await?;
    Ok(n.rows_affected())
}
