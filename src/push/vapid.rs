//! The installation's VAPID identity (RFC 8292) and the tokens signed with it.
//!
//! One P-256 key pair per installation, shared by every process through the `vapid_keys` table
//! (or given by the `vapid_private_key` setting). Browsers subscribe with its public key as
//! `applicationServerKey`, so a changed key silently orphans every subscription: start-up refuses
//! a key that differs from the one stored subscriptions were made with, unless `vapid_rotate`.
//!
//! Tokens are signed with the `web-push` crate, once per push-service origin, and reused until
//! shortly before they expire: signing costs far more than a push, and push services accept the
//! same token for many messages.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use aws_lc_rs::{
    encoding::AsBigEndian,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::header::HeaderValue;
use sqlx::PgPool;
use web_push::{PartialVapidSignatureBuilder, SubscriptionInfo, VapidSignatureBuilder};

use crate::config::{Secret, vapid_public_key};

/// Lifetime of a signed token; RFC 8292 allows at most 24 hours.
const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Re-sign this long before a cached token expires (clock skew, long retries).
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(3600);

/// The key pair and the token cache.
pub struct Vapid {
    builder: PartialVapidSignatureBuilder,
    public_key: [u8; 65],
    public_key_b64: String,
    subject: String,
    tokens: Mutex<HashMap<String, (HeaderValue, Instant)>>,
}

impl std::fmt::Debug for Vapid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vapid")
            .field("public_key", &self.public_key_b64)
            .field("subject", &self.subject)
            .finish()
    }
}

/// A new private key: the raw 32-byte scalar, base64url (the format the `web-push` crate and the
/// Node `web-push` package use).
pub fn generate_private_key() -> anyhow::Result<String> {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).context("generating a VAPID key")?;
    let scalar: aws_lc_rs::encoding::EcPrivateKeyBin =
        pair.private_key().as_be_bytes().context("exporting the VAPID key")?;
    Ok(URL_SAFE_NO_PAD.encode(scalar.as_ref()))
}

/// The installation's public key, if one is stored (`sondakika vapid show`).
pub async fn stored_public_key(pool: &PgPool) -> sqlx::Result<Option<Vec<u8>>> {
    sqlx::query_scalar!("select public_key from vapid_keys").fetch_optional(pool).await
}

/// Stores a new key pair unless one exists (`sondakika vapid generate`); returns the
/// installation's public key, new or not.
pub async fn create_key(pool: &PgPool) -> anyhow::Result<Vec<u8>> {
    let key = generate_private_key()?;
    let public = vapid_public_key(&key)?;
    sqlx::query!(
        "insert into vapid_keys (id, private_key, public_key) values (1, $1, $2) on conflict do nothing",
        &key,
        public.as_slice(),
    )
    .execute(pool)
    .await?;
    Ok(stored_public_key(pool).await?.unwrap_or_else(|| public.to_vec()))
}

impl Vapid {
    /// Loads the installation's key: the setting, else the stored one, else a new one (stored
    /// for every other process). Refuses a key that does not match existing subscriptions.
    pub async fn load(
        pool: &PgPool,
        configured: Option<&Secret>,
        subject: &str,
        rotate: bool,
    ) -> anyhow::Result<Self> {
        let private_b64 = match configured {
            Some(key) => {
                let key = key.expose().trim().trim_end_matches('=').to_string();
                vapid_public_key(&key).context("invalid setting `vapid_private_key`")?;
                let public = vapid_public_key(&key)?;
                sqlx::query!(
                    "insert into vapid_keys (id, private_key, public_key) values (1, $1, $2)
                     on conflict (id) do update set private_key = excluded.private_key,
                        public_key = excluded.public_key
                     where vapid_keys.public_key = excluded.public_key or $3",
                    &key,
                    public.as_slice(),
                    rotate,
                )
                .execute(pool)
                .await?;
                key
            }
            None => {
                let fresh = generate_private_key()?;
                let public = vapid_public_key(&fresh)?;
                // Several processes starting at once: the first insert wins, all read it back.
                sqlx::query!(
                    "insert into vapid_keys (id, private_key, public_key) values (1, $1, $2)
                     on conflict (id) do nothing",
                    &fresh,
                    public.as_slice(),
                )
                .execute(pool)
                .await?;
                sqlx::query_scalar!("select private_key from vapid_keys where id = 1").fetch_one(pool).await?
            }
        };
        let public_key = vapid_public_key(&private_b64)?;

        let used_with =
            sqlx::query_scalar!("select distinct vapid_key from push_subscriptions where active limit 5")
                .fetch_all(pool)
                .await?;
        let mismatched = used_with.iter().any(|k| k.as_slice() != public_key.as_slice());
        if mismatched && !rotate {
            bail!(
                "invalid setting `vapid_private_key`: it does not match the key existing push subscriptions \
                 were made with, and changing it would orphan every subscriber. Use the previous key, or set \
                 `vapid_rotate = true` if you mean to rotate (subscribers re-subscribe on their next visit)"
            );
        }
        if mismatched {
            tracing::warn!("VAPID key rotated: subscriptions made with the old key will stop working");
        }
        let builder = VapidSignatureBuilder::from_base64_no_sub(&private_b64)
            .map_err(|_| anyhow::anyhow!("the stored VAPID key is not usable"))?;
        Ok(Self {
            builder,
            public_key_b64: URL_SAFE_NO_PAD.encode(public_key),
            public_key,
            subject: subject.to_string(),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    pub fn public_key(&self) -> &[u8; 65] {
        &self.public_key
    }

    pub fn public_key_b64(&self) -> &str {
        &self.public_key_b64
    }

    /// The `Authorization` header value for a push-service origin (`https://host[:port]`),
    /// signed once per origin and reused until shortly before it expires. A `HeaderValue`
    /// because that is what every push needs: cloning it shares the bytes.
    pub fn authorization(&self, origin: &str) -> anyhow::Result<HeaderValue> {
        let now = Instant::now();
        // Signing happens under the lock: concurrent first sends to an origin then make one
        // token, not one each (~0.3 ms, once per origin per token lifetime).
        let mut tokens = self.tokens.lock().expect("token cache");
        if let Some((header, until)) = tokens.get(origin)
            && *until > now + TOKEN_REFRESH_MARGIN
        {
            return Ok(header.clone());
        }
        let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + TOKEN_LIFETIME.as_secs();
        // The crate wants a subscription to take the audience from; ours is the origin itself,
        // which keeps a non-default port (the crate's own default drops it).
        let info = SubscriptionInfo::new(origin, "", "");
        let mut builder = self.builder.clone().add_sub_info(&info);
        builder.add_claim("aud", origin);
        builder.add_claim("exp", exp);
        builder.add_claim("sub", self.subject.as_str());
        let signature = builder.build().map_err(|e| anyhow::anyhow!("signing a VAPID token: {e}"))?;
        let header =
            HeaderValue::try_from(format!("vapid t={}, k={}", signature.auth_t, self.public_key_b64))?;
        tokens.insert(origin.to_string(), (header.clone(), now + TOKEN_LIFETIME));
        crate::telemetry::metrics::vapid_signed();
        Ok(header)
    }
}

impl Vapid {
    /// Drops cached tokens of origins not in `keep` (the sender's current origins) and expired
    /// ones: the cache is keyed by strangers' hosts and must not outgrow the sender's state.
    pub fn forget_tokens_except(&self, keep: &std::collections::HashSet<&str>) {
        let now = Instant::now();
        self.tokens
            .lock()
            .expect("token cache")
            .retain(|origin, (_, until)| *until > now && keep.contains(origin.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip() {
        let k = generate_private_key().unwrap();
        let p = vapid_public_key(&k).unwrap();
        assert_eq!(p[0], 0x04);
        assert!(vapid_public_key("not-a-key").is_err());
    }
}
