//! `push crypto`: the per-message cost of encryption and VAPID signing, in process, against the
//! floor (what RFC 8291 requires, done with aws-lc-rs directly).

use std::time::Instant;

use aws_lc_rs::{
    aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey},
    agreement::{self, ECDH_P256, EphemeralPrivateKey, UnparsedPublicKey},
    hkdf::{self, HKDF_SHA256, KeyType, Salt},
    rand::{SecureRandom, SystemRandom},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use clap::Args;
use serde_json::{Value, json};
use sondakika::{
    alerts::view::StepKind,
    config::{Secret, Settings},
    db::{self, Database},
    push::{ece, payload, vapid},
};

use super::sample_alert;
use crate::round2;

#[derive(Debug, Args)]
pub struct CryptoArgs {
    /// Messages per round of a measurement (VAPID signing: a fifth as many); each figure is
    /// the fastest of 7 rounds.
    #[arg(long, default_value_t = 2000)]
    iterations: u32,
    /// Skip the measurement of the cached `Vapid::authorization`, which needs the database of
    /// the settings to load the VAPID key (and creates the key there if there is none).
    #[arg(long)]
    no_db: bool,
    /// Print one JSON object on stdout (the table then goes to stderr).
    #[arg(long)]
    json: bool,
}

struct Len(usize);
impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand<const N: usize>(prk: &hkdf::Prk, info: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    prk.expand(info, Len(N)).and_then(|okm| okm.fill(&mut out)).expect("hkdf expand");
    out
}

/// The floor: what RFC 8291 requires per message, done directly with aws-lc-rs and nothing
/// else (an ephemeral key, one ECDH with peer-point validation, four HKDF steps, one seal).
fn floor_encrypt(rng: &SystemRandom, ua_public: &[u8; 65], auth: &[u8; 16], plaintext: &[u8]) -> Vec<u8> {
    let mut salt = [0u8; 16];
    rng.fill(&mut salt).expect("rng");
    let private = EphemeralPrivateKey::generate(&ECDH_P256, rng).expect("keygen");
    let as_public = private.compute_public_key().expect("public key");
    let as_public = as_public.as_ref();
    let peer = UnparsedPublicKey::new(&ECDH_P256, ua_public);
    let ikm: [u8; 32] = agreement::agree_ephemeral(private, peer, (), |z| {
        let prk = Salt::new(HKDF_SHA256, auth).extract(z);
        Ok(expand::<32>(&prk, &[b"WebPush: info\0", ua_public, as_public]))
    })
    .expect("ecdh");
    let prk = Salt::new(HKDF_SHA256, &salt).extract(&ikm);
    let cek: [u8; 16] = expand(&prk, &[b"Content-Encoding: aes128gcm\0"]);
    let nonce: [u8; 12] = expand(&prk, &[b"Content-Encoding: nonce\0"]);
    let mut body = Vec::with_capacity(86 + plaintext.len() + 17);
    body.extend_from_slice(&salt);
    body.extend_from_slice(&4096u32.to_be_bytes());
    body.push(65);
    body.extend_from_slice(as_public);
    body.extend_from_slice(plaintext);
    body.push(2);
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &cek).expect("key"));
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut body[86..])
        .expect("seal");
    body.extend_from_slice(tag.as_ref());
    body
}

/// Rounds per measurement: the machine has two cores shared with everything else, so each
/// figure is the fastest of several rounds (the one least disturbed), not their mean, and the
/// rounds of the functions compared are interleaved so that a disturbance hits them alike.
const ROUNDS: u32 = 7;

/// Functions measured together: `(key, description, calls per round, function)`.
type Measured<'a> = Vec<(&'static str, &'static str, u32, Box<dyn FnMut(u32) + 'a>)>;

/// Microseconds per call of each function: the fastest of [`ROUNDS`] interleaved rounds, after
/// a warm-up of a tenth of a round each.
fn measure(mut fs: Measured<'_>) -> Vec<(&'static str, &'static str, f64)> {
    let mut best = vec![f64::INFINITY; fs.len()];
    for (_, _, n, f) in fs.iter_mut() {
        for i in 0..(*n / 10).max(1) {
            f(i);
        }
    }
    let len = fs.len();
    for r in 0..ROUNDS {
        // Each round starts with a different function: no one always runs first or last.
        for j in 0..len {
            let k = (j + r as usize) % len;
            let (_, _, n, f) = &mut fs[k];
            let n = (*n).max(1);
            let start = Instant::now();
            for i in 0..n {
                f(r * n + i);
            }
            best[k] = best[k].min(start.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
    }
    fs.iter().zip(best).map(|((key, what, _, _), us)| (*key, *what, us)).collect()
}

/// A subscriber key pair as a browser makes one: (public point, auth secret, private scalar).
pub(super) fn subscriber_keys(rng: &SystemRandom) -> ([u8; 65], [u8; 16]) {
    let private = agreement::PrivateKey::generate(&ECDH_P256).expect("keygen");
    let public: [u8; 65] =
        private.compute_public_key().expect("public").as_ref().try_into().expect("65 bytes");
    let mut auth = [0u8; 16];
    rng.fill(&mut auth).expect("rng");
    (public, auth)
}

pub async fn run(args: CryptoArgs) -> anyhow::Result<()> {
    let n = args.iterations.max(10);
    let rng = SystemRandom::new();
    let plaintext = payload::build(&sample_alert(), StepKind::Alert, false);
    let (ua_public, auth) = subscriber_keys(&rng);

    // The web-push crate's path: `WebPushMessageBuilder::build` → `HttpEce::encrypt` →
    // `ece::encrypt` (OpenSSL). `ece` is not a dependency of this crate, so it is reached
    // through web-push's public API: the extra work is two short base64 decodes and one URI
    // parse.
    let info = web_push::SubscriptionInfo::new(
        "https://fcm.googleapis.com/fcm/send/bench".to_string(),
        B64.encode(ua_public),
        B64.encode(auth),
    );
    let subject = "mailto:bench@burdurweb.com";
    let vapid_private = vapid::generate_private_key()?;
    let audience_info = web_push::SubscriptionInfo::new("https://fcm.googleapis.com/fcm/send/bench", "", "");
    let partial = web_push::VapidSignatureBuilder::from_base64_no_sub(&vapid_private).expect("vapid key");
    let (mut ours_vapid, mut db_note) = (None, None);
    if !args.no_db {
        match load_vapid(subject).await {
            Ok(v) => ours_vapid = Some(v),
            Err(e) => db_note = Some(format!("cached VAPID not measured: {e:#}")),
        }
    }

    let mut fs: Measured<'_> = vec![
        (
            "floor",
            "floor: aws-lc-rs direct, P-256 keygen + ECDH + 4×HKDF + AES-128-GCM",
            n,
            Box::new(|_| {
                std::hint::black_box(floor_encrypt(&rng, &ua_public, &auth, &plaintext));
            }),
        ),
        (
            "keygen",
            "  part: P-256 key generation + public point",
            n,
            Box::new(|_| {
                let k = EphemeralPrivateKey::generate(&ECDH_P256, &rng).expect("keygen");
                std::hint::black_box(k.compute_public_key().expect("public"));
            }),
        ),
        (
            "keygen_ecdh",
            "  part: key generation + ECDH with peer-point validation",
            n,
            Box::new(|_| {
                let k = EphemeralPrivateKey::generate(&ECDH_P256, &rng).expect("keygen");
                let peer = UnparsedPublicKey::new(&ECDH_P256, &ua_public);
                std::hint::black_box(agreement::agree_ephemeral(k, peer, (), |z| Ok(z[0])).expect("ecdh"));
            }),
        ),
        (
            "sondakika_ece",
            "sondakika::push::ece::encrypt",
            n,
            Box::new(|_| {
                std::hint::black_box(ece::encrypt(&ua_public, &auth, &plaintext).expect("encrypt"));
            }),
        ),
        (
            "web_push_ece",
            "web-push crate: WebPushMessageBuilder::build (→ ece::encrypt)",
            n,
            Box::new(|_| {
                let mut b = web_push::WebPushMessageBuilder::new(&info);
                b.set_payload(web_push::ContentEncoding::Aes128Gcm, &plaintext);
                std::hint::black_box(b.build().expect("web-push encrypt"));
            }),
        ),
        (
            "vapid_web_push_per_call",
            "VAPID: web_push::VapidSignatureBuilder::from_base64 + sign, per call",
            n / 5,
            Box::new(|_| {
                let mut b = web_push::VapidSignatureBuilder::from_base64(&vapid_private, &audience_info)
                    .expect("vapid key");
                b.add_claim("sub", subject);
                std::hint::black_box(b.build().expect("sign"));
            }),
        ),
        (
            "vapid_web_push_sign_only",
            "VAPID: PartialVapidSignatureBuilder clone + sign (key parsed once)",
            n / 5,
            Box::new(|_| {
                let mut b = partial.clone().add_sub_info(&audience_info);
                b.add_claim("sub", subject);
                std::hint::black_box(b.build().expect("sign"));
            }),
        ),
    ];
    if let Some(v) = &ours_vapid {
        let origin = "https://fcm.googleapis.com";
        v.authorization(origin)?;
        fs.push((
            "vapid_ours_miss",
            "VAPID: Vapid::authorization, a new origin each call (signs)",
            n / 5,
            Box::new(move |i| {
                std::hint::black_box(v.authorization(&format!("https://push{i}.example.net")).expect("sign"));
            }),
        ));
        fs.push((
            "vapid_ours_cached",
            "VAPID: Vapid::authorization, second call (cached)",
            n * 10,
            Box::new(move |_| {
                std::hint::black_box(v.authorization(origin).expect("cached"));
            }),
        ));
    }
    let rows = measure(fs);
    let us = |k: &str| rows.iter().find(|r| r.0 == k).map_or(f64::NAN, |r| r.2);
    let floor = us("floor");

    let mut map: serde_json::Map<String, Value> =
        rows.iter().map(|(k, _, v)| (k.to_string(), json!(round2(*v)))).collect();
    map.insert("ecdh".into(), json!(round2(us("keygen_ecdh") - us("keygen"))));
    map.insert("floor_rest".into(), json!(round2(floor - us("keygen_ecdh"))));
    let out = json!({
        "iterations_per_round": n,
        "rounds": ROUNDS,
        "payload_bytes": plaintext.len(),
        "us_per_op": map,
        "ratio_to_floor": {
            "sondakika_ece": round2(us("sondakika_ece") / floor),
            "web_push_ece": round2(us("web_push_ece") / floor),
        },
        "note": db_note,
    });
    let mut table = format!(
        "crypto, per message of {} bytes of payload (fastest of {ROUNDS} interleaved rounds):\n",
        plaintext.len()
    );
    for (_, what, v) in &rows {
        table.push_str(&format!("  {what:<74} {v:>9.2} µs/op\n"));
    }
    table.push_str(&format!(
        "  (so ECDH alone ≈ {:.2} µs, HKDF + AES-GCM + buffers ≈ {:.2} µs)\n",
        us("keygen_ecdh") - us("keygen"),
        floor - us("keygen_ecdh")
    ));
    table.push_str(&format!(
        "  ratio to floor: ours {:.2}×, web-push crate {:.2}×\n",
        us("sondakika_ece") / floor,
        us("web_push_ece") / floor
    ));
    if let Some(n) = &db_note {
        table.push_str(&format!("  note: {n}\n"));
    }
    if args.json {
        eprint!("{table}");
        println!("{out}");
    } else {
        print!("{table}");
    }
    Ok(())
}

/// The real `Vapid`, loaded from the settings' database (it has no other constructor).
async fn load_vapid(subject: &str) -> anyhow::Result<vapid::Vapid> {
    let settings = Settings::load(None)?;
    let database = Database::locate(&settings).await?;
    let pool = db::connect(database.options.clone(), 2).await?;
    db::migrate(&pool).await?;
    let v = vapid::Vapid::load(&pool, None::<&Secret>, subject, false).await?;
    pool.close().await;
    drop(database);
    Ok(v)
}
