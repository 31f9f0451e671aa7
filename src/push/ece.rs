//! Message encryption for Web Push (RFC 8291) in the `aes128gcm` content coding (RFC 8188).
//!
//! Our own implementation on aws-lc-rs rather than the `web-push` crate's (through `ece` and
//! OpenSSL): per message it costs one P-256 key generation, one ECDH, four HKDF steps and one
//! AES-GCM seal, which is the floor, where the crate's path measured about 2.85× that (see
//! BENCHMARKS.md). Tests check it byte-compatible: `ece`'s own decoder and the test push
//! service decrypt what this produces.
//!
//! Keys reaching [`encrypt`] have been validated by `subscription::parse_p256dh`; a bad key still
//! only returns an error here, never panics.

use aws_lc_rs::{
    aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey},
    agreement::{self, ECDH_P256, ParsedPublicKey, UnparsedPublicKey},
    hkdf::{self, HKDF_SHA256, KeyType, Salt},
    rand::{SecureRandom, SystemRandom},
};

/// Record size announced in the header. One record holds the whole message.
const RECORD_SIZE: u32 = 4096;
/// Largest plaintext one 4096-byte record can carry: rs − 16 (tag) − 1 (delimiter).
pub const MAX_PLAINTEXT: usize = RECORD_SIZE as usize - 17;
const HEADER_LEN: usize = 16 + 4 + 1 + 65;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EceError {
    #[error("the subscriber's public key is not a valid P-256 point")]
    BadPublicKey,
    #[error("the payload is {0} bytes; at most {MAX_PLAINTEXT} fit")]
    TooLarge(usize),
    #[error("cryptographic failure")]
    Crypto,
}

/// True for an uncompressed P-256 point that lies on the curve.
pub fn is_valid_public_key(key: &[u8]) -> bool {
    key.len() == 65
        && key[0] == 0x04
        && ParsedPublicKey::try_from(&UnparsedPublicKey::new(&ECDH_P256, key)).is_ok()
}

struct Len(usize);
impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand<const N: usize>(prk: &hkdf::Prk, info: &[&[u8]]) -> Result<[u8; N], EceError> {
    let mut out = [0u8; N];
    prk.expand(info, Len(N)).and_then(|okm| okm.fill(&mut out)).map_err(|_| EceError::Crypto)?;
    Ok(out)
}

/// Length of the body [`encrypt`] makes of `plaintext_len` bytes: header, record, tag.
pub const fn body_len(plaintext_len: usize) -> usize {
    HEADER_LEN + plaintext_len + 1 + 16
}

/// Encrypts `plaintext` for a subscriber: returns the complete request body (header + record).
pub fn encrypt(ua_public: &[u8; 65], auth: &[u8; 16], plaintext: &[u8]) -> Result<Vec<u8>, EceError> {
    let mut body = vec![0; body_len(plaintext.len())];
    encrypt_to(ua_public, auth, plaintext, &mut body)?;
    Ok(body)
}

/// [`encrypt`] into `out`, exactly [`body_len`] bytes long, so that a caller can put many
/// bodies in one allocation (bodies of about 1 KiB are where glibc's malloc is slowest).
pub fn encrypt_to(
    ua_public: &[u8; 65],
    auth: &[u8; 16],
    plaintext: &[u8],
    out: &mut [u8],
) -> Result<(), EceError> {
    let rng = SystemRandom::new();
    let mut salt = [0u8; 16];
    rng.fill(&mut salt).map_err(|_| EceError::Crypto)?;
    // A fresh key per message (RFC 8291 §3.1); used once, like an ephemeral key.
    let private = agreement::PrivateKey::generate(&ECDH_P256).map_err(|_| EceError::Crypto)?;
    encrypt_with(ua_public, auth, plaintext, &private, salt, out)
}

/// [`encrypt_to`] with a given key and salt (for the RFC 8291 test vector).
fn encrypt_with(
    ua_public: &[u8; 65],
    auth: &[u8; 16],
    plaintext: &[u8],
    private: &agreement::PrivateKey,
    salt: [u8; 16],
    out: &mut [u8],
) -> Result<(), EceError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(EceError::TooLarge(plaintext.len()));
    }
    if out.len() != body_len(plaintext.len()) {
        return Err(EceError::Crypto);
    }
    let as_public = private.compute_public_key().map_err(|_| EceError::Crypto)?;
    let as_public: [u8; 65] = as_public.as_ref().try_into().map_err(|_| EceError::Crypto)?;
    let peer = ParsedPublicKey::try_from(&UnparsedPublicKey::new(&ECDH_P256, ua_public))
        .map_err(|_| EceError::BadPublicKey)?;

    // RFC 8291 §3.4: combine the ECDH secret with the subscriber's auth secret...
    let ikm: [u8; 32] = agreement::agree(private, peer, EceError::BadPublicKey, |ecdh| {
        let prk_key = Salt::new(HKDF_SHA256, auth).extract(ecdh);
        expand::<32>(&prk_key, &[b"WebPush: info\0", ua_public, &as_public])
    })?;
    // ...then RFC 8188 §2.2-2.3: the content key and nonce from the random salt.
    let prk = Salt::new(HKDF_SHA256, &salt).extract(&ikm);
    let cek: [u8; 16] = expand(&prk, &[b"Content-Encoding: aes128gcm\0"])?;
    let nonce: [u8; 12] = expand(&prk, &[b"Content-Encoding: nonce\0"])?;

    let (header, rest) = out.split_at_mut(HEADER_LEN);
    header[..16].copy_from_slice(&salt);
    header[16..20].copy_from_slice(&RECORD_SIZE.to_be_bytes());
    header[20] = 65;
    header[21..].copy_from_slice(&as_public);
    let (record, tag) = rest.split_at_mut(plaintext.len() + 1);
    record[..plaintext.len()].copy_from_slice(plaintext);
    record[plaintext.len()] = 0x02; // the last (and only) record; no padding
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &cek).map_err(|_| EceError::Crypto)?);
    // Record sequence number 0: the nonce is used as derived.
    let sealed = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), record)
        .map_err(|_| EceError::Crypto)?;
    tag.copy_from_slice(sealed.as_ref());
    Ok(())
}

/// Decrypts an `aes128gcm` body with the subscriber's private key (what a browser does). Used by
/// tests and the push-service double; kept next to `encrypt` so the two are read together.
pub fn decrypt(
    ua_private: &[u8],
    ua_public: &[u8; 65],
    auth: &[u8; 16],
    body: &[u8],
) -> Result<Vec<u8>, EceError> {
    if body.len() < HEADER_LEN + 17 || body[20] != 65 {
        return Err(EceError::Crypto);
    }
    let salt = &body[..16];
    let rs = u32::from_be_bytes(body[16..20].try_into().unwrap()) as usize;
    let as_public = &body[21..86];
    let record = &body[86..];
    if record.len() > rs {
        return Err(EceError::Crypto); // more than one record: not something we produce
    }
    let private =
        agreement::PrivateKey::from_private_key(&ECDH_P256, ua_private).map_err(|_| EceError::Crypto)?;
    let peer = ParsedPublicKey::try_from(&UnparsedPublicKey::new(&ECDH_P256, as_public))
        .map_err(|_| EceError::BadPublicKey)?;
    let ikm: [u8; 32] = agreement::agree(&private, peer, EceError::Crypto, |ecdh| {
        let prk_key = Salt::new(HKDF_SHA256, auth).extract(ecdh);
        expand::<32>(&prk_key, &[b"WebPush: info\0", ua_public, as_public])
    })?;
    let prk = Salt::new(HKDF_SHA256, salt).extract(&ikm);
    let cek: [u8; 16] = expand(&prk, &[b"Content-Encoding: aes128gcm\0"])?;
    let nonce: [u8; 12] = expand(&prk, &[b"Content-Encoding: nonce\0"])?;
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &cek).map_err(|_| EceError::Crypto)?);
    let mut buf = record.to_vec();
    let plain = key
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
        .map_err(|_| EceError::Crypto)?;
    // Strip padding: trailing zeros, then the 0x02 last-record delimiter.
    let end = plain.iter().rposition(|&b| b != 0).ok_or(EceError::Crypto)?;
    if plain[end] != 0x02 {
        return Err(EceError::Crypto);
    }
    Ok(plain[..end].to_vec())
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};

    use super::*;

    fn b64(s: &str) -> Vec<u8> {
        B64.decode(s).unwrap()
    }

    /// RFC 8291 §5: the exact bytes of the specification's example.
    #[test]
    fn matches_the_rfc_8291_example() {
        let plaintext = b"When I grow up, I want to be a watermelon";
        let as_private = b64("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw");
        let ua_public: [u8; 65] =
            b64("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4")
                .try_into()
                .unwrap();
        let ua_private = b64("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94");
        let auth: [u8; 16] = b64("BTBZMqHH6r4Tts7J_aSIgg").try_into().unwrap();
        let salt: [u8; 16] = b64("DGv6ra1nlYgDCS1FRnbzlw").try_into().unwrap();
        let expected = b64(
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN",
        );
        let private = agreement::PrivateKey::from_private_key(&ECDH_P256, &as_private).unwrap();
        let mut body = vec![0; body_len(plaintext.len())];
        encrypt_with(&ua_public, &auth, plaintext, &private, salt, &mut body).unwrap();
        assert_eq!(body, expected);
        assert_eq!(decrypt(&ua_private, &ua_public, &auth, &body).unwrap(), plaintext);
    }

    #[test]
    fn round_trips_turkish_text_and_refuses_what_does_not_fit() {
        let rng = SystemRandom::new();
        let ua = agreement::PrivateKey::generate(&ECDH_P256).unwrap();
        let ua_public: [u8; 65] = ua.compute_public_key().unwrap().as_ref().try_into().unwrap();
        let ua_private: aws_lc_rs::encoding::EcPrivateKeyBin =
            aws_lc_rs::encoding::AsBigEndian::as_be_bytes(&ua).unwrap();
        let mut auth = [0u8; 16];
        rng.fill(&mut auth).unwrap();
        let text = "SON DAKİKA: Burdur'da deprem — İı Şş Ğğ Üü Öö Çç".as_bytes();
        let body = encrypt(&ua_public, &auth, text).unwrap();
        assert_eq!(decrypt(ua_private.as_ref(), &ua_public, &auth, &body).unwrap(), text);
        assert_eq!(
            encrypt(&ua_public, &auth, &vec![b'a'; MAX_PLAINTEXT + 1]),
            Err(EceError::TooLarge(MAX_PLAINTEXT + 1))
        );
        let mut off_curve = ua_public;
        off_curve[64] ^= 1;
        assert!(!is_valid_public_key(&off_curve));
        assert_eq!(encrypt(&off_curve, &auth, b"x"), Err(EceError::BadPublicKey));
    }
}
