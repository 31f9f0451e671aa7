//! Receipt tokens: what makes a shown/clicked receipt count only for a push that was sent.
//!
//! Every push carries `data.receipt` = `<subscription id>.<token>`, where the token is an
//! HMAC-SHA256 of (alert id, subscription id) under the installation's receipt key, truncated to
//! 128 bits and written in base64url (22 characters). Nothing is stored per push: the token is
//! derived again when a receipt arrives and compared in constant time. Without the key nobody
//! can make a token for another subscription or another alert, so a receipt can only name a
//! delivery the server itself made; the delivery log then counts each event once per delivery.
//!
//! The key is 32 random bytes, created by the first process that starts and stored in the
//! database (`push_receipt_key`), so that every process derives the same tokens. It must never
//! be logged.

use std::sync::Arc;

use anyhow::Context;
use aws_lc_rs::{
    constant_time,
    hmac::{self, HMAC_SHA256},
    rand::{SecureRandom, SystemRandom},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sqlx::PgPool;
use uuid::Uuid;

/// Bytes of the HMAC kept: 128 bits cannot be guessed, and keep the payload short.
const TOKEN_BYTES: usize = 16;
/// Base64url characters of a token.
const TOKEN_CHARS: usize = 22;
/// The longest receipt: a 19-digit subscription id (bigint), a dot and the token. The payload is
/// sized for it, so that every subscriber's payload fits the same bound.
pub const MAX_RECEIPT_CHARS: usize = 19 + 1 + TOKEN_CHARS;
/// Separates these MACs from any other use of the key (there is none today).
const CONTEXT: &[u8] = b"sondakika push receipt v1";

/// The installation's receipt key. Cheap to clone.
#[derive(Clone)]
pub struct ReceiptKey(Arc<hmac::Key>);

impl std::fmt::Debug for ReceiptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReceiptKey(…)")
    }
}

/// Why a receipt does not name a delivery of this alert.
#[derive(Debug, PartialEq, Eq)]
pub enum BadReceipt {
    /// Not `<subscription id>.<22 base64url characters>`.
    Malformed,
    /// Well formed, but not a token this server made for this alert and subscription.
    Forged,
}

impl ReceiptKey {
    /// The stored key, or a new one stored for every other process (the first insert wins).
    pub async fn load(pool: &PgPool) -> anyhow::Result<Self> {
        let mut fresh = [0u8; 32];
        SystemRandom::new()
            .fill(&mut fresh)
            .map_err(|_| anyhow::anyhow!("no randomness for the receipt key"))?;
        sqlx::query!(
            "insert into push_receipt_key (id, secret) values (1, $1) on conflict (id) do nothing",
            fresh.as_slice(),
        )
        .execute(pool)
        .await
        .context("storing the receipt key")?;
        let secret = sqlx::query_scalar!("select secret from push_receipt_key where id = 1")
            .fetch_one(pool)
            .await
            .context("reading the receipt key")?;
        Ok(Self::from_secret(&secret))
    }

    pub fn from_secret(secret: &[u8]) -> Self {
        Self(Arc::new(hmac::Key::new(HMAC_SHA256, secret)))
    }

    fn token(&self, alert_id: Uuid, subscription_id: i64) -> [u8; TOKEN_BYTES] {
        let mut message = [0u8; CONTEXT.len() + 16 + 8];
        message[..CONTEXT.len()].copy_from_slice(CONTEXT);
        message[CONTEXT.len()..CONTEXT.len() + 16].copy_from_slice(alert_id.as_bytes());
        message[CONTEXT.len() + 16..].copy_from_slice(&subscription_id.to_be_bytes());
        let tag = hmac::sign(&self.0, &message);
        tag.as_ref()[..TOKEN_BYTES].try_into().expect("SHA-256 is longer than a token")
    }

    /// Appends the receipt of one delivery, `<subscription id>.<token>`, to `out` (at most
    /// [`MAX_RECEIPT_CHARS`] bytes, all ASCII: nothing in JSON needs escaping).
    pub fn write(&self, alert_id: Uuid, subscription_id: i64, out: &mut Vec<u8>) {
        use std::io::Write;
        write!(out, "{subscription_id}.").expect("writing to a Vec");
        let mut chars = [0u8; TOKEN_CHARS];
        let n = URL_SAFE_NO_PAD
            .encode_slice(self.token(alert_id, subscription_id), &mut chars)
            .expect("16 bytes are 22 characters");
        out.extend_from_slice(&chars[..n]);
    }

    /// The receipt of one delivery as a string.
    pub fn receipt(&self, alert_id: Uuid, subscription_id: i64) -> String {
        let mut out = Vec::with_capacity(MAX_RECEIPT_CHARS);
        self.write(alert_id, subscription_id, &mut out);
        String::from_utf8(out).expect("ASCII")
    }

    /// The subscription a receipt for `alert_id` was made for, if this server made it.
    pub fn verify(&self, alert_id: Uuid, receipt: &str) -> Result<i64, BadReceipt> {
        let (id, token) = receipt.split_once('.').ok_or(BadReceipt::Malformed)?;
        // Digits only (no sign, no `+`): one spelling per id.
        if id.is_empty() || id.len() > 19 || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadReceipt::Malformed);
        }
        let subscription_id: i64 = id.parse().map_err(|_| BadReceipt::Malformed)?;
        if token.len() != TOKEN_CHARS {
            return Err(BadReceipt::Malformed);
        }
        let mut given = [0u8; TOKEN_BYTES + 2];
        let n = URL_SAFE_NO_PAD.decode_slice(token, &mut given).map_err(|_| BadReceipt::Malformed)?;
        if n != TOKEN_BYTES {
            return Err(BadReceipt::Malformed);
        }
        constant_time::verify_slices_are_equal(&given[..n], &self.token(alert_id, subscription_id))
            .map_err(|_| BadReceipt::Forged)?;
        Ok(subscription_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ReceiptKey {
        ReceiptKey::from_secret(&[7u8; 32])
    }

    #[test]
    fn a_receipt_verifies_for_its_own_alert_and_subscription_only() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let r = key().receipt(a, 42);
        assert!(r.starts_with("42.") && r.len() == 3 + TOKEN_CHARS, "{r}");
        assert_eq!(key().verify(a, &r), Ok(42));
        assert_eq!(key().verify(b, &r), Err(BadReceipt::Forged), "another alert");
        let other_subscription = format!("43{}", &r[2..]);
        assert_eq!(key().verify(a, &other_subscription), Err(BadReceipt::Forged));
        assert_eq!(ReceiptKey::from_secret(&[8u8; 32]).verify(a, &r), Err(BadReceipt::Forged), "another key");
    }

    #[test]
    fn malformed_receipts_are_told_apart_from_forged_ones() {
        let a = Uuid::now_v7();
        for bad in [
            "",
            "42",
            "42.",
            ".AAAAAAAAAAAAAAAAAAAAAA",
            "-1.AAAAAAAAAAAAAAAAAAAAAA",
            "+1.AAAAAAAAAAAAAAAAAAAAAA",
            "99999999999999999999.AAAAAAAAAAAAAAAAAAAAAA",
            "1.AAAA",
            "1.AAAAAAAAAAAAAAAAAAAAA!",
            "1.AAAAAAAAAAAAAAAAAAAAAAA=",
        ] {
            assert_eq!(key().verify(a, bad), Err(BadReceipt::Malformed), "{bad:?}");
        }
        assert_eq!(key().verify(a, "1.AAAAAAAAAAAAAAAAAAAAAA"), Err(BadReceipt::Forged));
    }

    #[test]
    fn the_longest_receipt_fits_the_room_the_payload_keeps() {
        assert_eq!(key().receipt(Uuid::now_v7(), i64::MAX).len(), MAX_RECEIPT_CHARS);
    }
}
