//! Standard Webhooks signatures (<https://www.standardwebhooks.com>, "Signature scheme").
//!
//! A secret is `whsec_` followed by the base64 of its key bytes (24 random bytes here, as the
//! reference implementations make them). A message is signed as
//! `base64(HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>"))` and sent as
//! `webhook-signature: v1,<signature>`; while a rotated-out secret is still valid both
//! signatures are sent, space-separated, and a receiver holding either secret accepts.

use aws_lc_rs::{
    hmac::{self, HMAC_SHA256},
    rand::{SecureRandom, SystemRandom},
};
use base64::{Engine, engine::general_purpose::STANDARD};

pub const SECRET_PREFIX: &str = "whsec_";
/// Key bytes of a secret we make (the reference libraries make 24; the spec allows 24 to 64).
const KEY_BYTES: usize = 24;

/// A new random secret, `whsec_<base64 of 24 bytes>`.
pub fn new_secret() -> String {
    let mut key = [0u8; KEY_BYTES];
    SystemRandom::new().fill(&mut key).expect("the system's randomness is available");
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The key bytes of a secret (with or without the `whsec_` prefix, as the libraries accept it).
pub fn key_of(secret: &str) -> Option<Vec<u8>> {
    let b64 = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    STANDARD.decode(b64).ok().filter(|k| (24..=64).contains(&k.len()))
}

/// The signature of one message under one secret, `v1,<base64>`.
pub fn sign(secret: &str, message_id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = hmac::Key::new(HMAC_SHA256, &key_of(secret)?);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(message_id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    Some(format!("v1,{}", STANDARD.encode(ctx.sign().as_ref())))
}

/// The `webhook-signature` header: one signature per secret, space-separated (the current secret
/// first). Secrets that are not valid are skipped; stored ones always are.
pub fn header(secrets: &[&str], message_id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets.iter().filter_map(|s| sign(s, message_id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification and its reference libraries' tests.
    #[test]
    fn matches_the_specifications_example() {
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig.as_deref(), Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="));
    }

    #[test]
    fn new_secrets_are_distinct_and_well_formed() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(a.starts_with("whsec_") && a.len() == 6 + 32, "{a}");
        assert_eq!(key_of(&a).map(|k| k.len()), Some(24));
    }

    #[test]
    fn a_rotated_header_carries_both_signatures() {
        let (new, old) = (new_secret(), new_secret());
        let h = header(&[&new, &old], "msg_1", 1, b"{}");
        let parts: Vec<&str> = h.split(' ').collect();
        assert_eq!(parts, [sign(&new, "msg_1", 1, b"{}").unwrap(), sign(&old, "msg_1", 1, b"{}").unwrap()]);
    }
}
