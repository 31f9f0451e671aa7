//! The notification payload: one JSON document that both a service worker and Safari's
//! Declarative Web Push (`"web_push": 8030`, shown without any service worker) display
//! correctly.
//!
//! Every push of one alert, whatever its step, has the same `tag`: a correction replaces the
//! notification in place and a retraction's withdrawn notice replaces it where a service worker
//! cannot close it (Safari's declarative path shows the payload's notification as it is).
//! `data.kind` says which it is, and `data.revision` lets a service worker ignore a push older
//! than what it already shows (push services do not promise order). `mutable` lets a service
//! worker, where one runs, handle a declarative push itself (close instead of replace).
//!
//! It must fit 2 KiB of plaintext, the smallest limit among push services (Firefox on Android's
//! bridge). Long Turkish text is shortened on a character boundary, with an ellipsis: never in
//! the middle of a two-byte letter.
//!
//! Each subscriber's payload differs only in `data.receipt`, the token that lets its service
//! worker report the push shown and clicked ([`super::receipt`]). So the document is built and
//! fitted once per alert, with room for the longest receipt, and split around it: a
//! subscriber's payload is the shared prefix, its receipt and the shared suffix, written into a
//! reused buffer ([`Template::write`]).

use serde::Serialize;

use super::receipt::{MAX_RECEIPT_CHARS, ReceiptKey};
use crate::alerts::{store::Alert, view::StepKind};

pub const MAX_PAYLOAD_BYTES: usize = 2048;

#[derive(Serialize)]
struct Payload<'a> {
    web_push: u16,
    mutable: bool,
    notification: Notification<'a>,
}

#[derive(Serialize)]
struct Notification<'a> {
    title: String,
    body: String,
    /// Where a click goes (Declarative Web Push requires it).
    navigate: &'a str,
    lang: &'a str,
    /// One notification per alert: a later one with the same tag replaces it.
    tag: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    timestamp: i64,
    /// No sound or vibration: a quiet correction, a retraction's notice.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    silent: bool,
    data: Data<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    /// `alert`, `correction` or `retraction`.
    kind: StepKind,
    id: uuid::Uuid,
    seq: Option<i64>,
    /// The alert's revision (0 as flagged, one more per correction).
    revision: i32,
    /// A correction the editor wants to alert readers again (sound, vibration).
    renotify: bool,
    label: &'a str,
    topics: &'a [String],
    /// `<subscription id>.<token>`: what the service worker sends back with its receipts. Last
    /// of the last objects, so that only closing braces follow it.
    receipt: &'a str,
}

/// Shortens to at most `chars` characters, marking the cut with "…".
fn shorten(s: &str, chars: usize) -> String {
    if s.chars().count() <= chars {
        return s.to_string();
    }
    let mut out: String = s.chars().take(chars.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Stands in for the receipt while the payload is fitted: as long as the longest one.
const RECEIPT_ROOM: &str = "~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~";
const _: () = assert!(RECEIPT_ROOM.len() == MAX_RECEIPT_CHARS);

/// The payload of one alert, built once, from which each subscriber's is written.
pub struct Template {
    alert_id: uuid::Uuid,
    /// Everything up to the receipt's opening quote, and from its closing quote on.
    prefix: Vec<u8>,
    suffix: Vec<u8>,
    receipts: ReceiptKey,
}

impl Template {
    pub fn new(alert: &Alert, kind: StepKind, quiet: bool, receipts: ReceiptKey) -> Self {
        let full = build(alert, kind, quiet);
        let quoted = format!("\"{RECEIPT_ROOM}\"");
        // The last occurrence: `receipt` is serialised after everything an editor wrote.
        let at = full
            .windows(quoted.len())
            .rposition(|w| w == quoted.as_bytes())
            .expect("the payload carries the receipt's room");
        Self {
            alert_id: alert.id,
            prefix: full[..at + 1].to_vec(),
            suffix: full[at + quoted.len() - 1..].to_vec(),
            receipts,
        }
    }

    /// The largest payload [`Template::write`] writes (≤ [`MAX_PAYLOAD_BYTES`]).
    pub fn max_len(&self) -> usize {
        self.prefix.len() + MAX_RECEIPT_CHARS + self.suffix.len()
    }

    /// Replaces `out` with the payload for one subscriber. Costs one short HMAC and a copy.
    pub fn write(&self, subscription_id: i64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.prefix);
        self.receipts.write(self.alert_id, subscription_id, out);
        out.extend_from_slice(&self.suffix);
    }
}

/// Where a retraction's notice leads: the news site's front page (the article may be gone).
fn front_page(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization() + "/",
        Err(_) => url.to_string(),
    }
}

/// Builds the payload of one step of an alert (the alert as it reads now), with the longest
/// receipt's room in place of a receipt; always ≤ [`MAX_PAYLOAD_BYTES`]. (What the benchmarks
/// encrypt: the largest payload.)
pub fn build(alert: &Alert, kind: StepKind, quiet: bool) -> Vec<u8> {
    let retraction = kind == StepKind::Retraction;
    let (title_full, body_full, navigate) = if retraction {
        // The withdrawn notice: what Safari shows in place of the original, and what a
        // service worker shows where a visible notification is required.
        let mut body = format!("“{}” başlıklı bildirim geri çekildi.", alert.headline);
        if let Some(reason) = &alert.retract_reason {
            body.push_str(&format!(" Gerekçe: {reason}"));
        }
        ("Haber geri çekildi".to_string(), body, front_page(&alert.url))
    } else {
        (
            format!("{}: {}", alert.label, alert.headline),
            alert.summary.clone().unwrap_or_default(),
            alert.url.clone(),
        )
    };
    let silent = retraction || (kind == StepKind::Correction && quiet);
    let render = |title: String, body: String, with_image: bool| {
        serde_json::to_vec(&Payload {
            web_push: 8030,
            mutable: true,
            notification: Notification {
                title,
                body,
                navigate: &navigate,
                lang: "tr",
                tag: format!("sondakika-{}", alert.id),
                image: if with_image && !retraction { alert.image.as_deref() } else { None },
                timestamp: alert.published_at.unwrap_or(alert.created_at).timestamp_millis(),
                silent,
                data: Data {
                    kind,
                    id: alert.id,
                    seq: alert.seq,
                    revision: alert.revision,
                    renotify: kind == StepKind::Correction && !quiet,
                    label: &alert.label,
                    topics: &alert.topics,
                    receipt: RECEIPT_ROOM,
                },
            },
        })
        .expect("payload serialises")
    };
    let full = render(title_full.clone(), body_full.clone(), true);
    if full.len() <= MAX_PAYLOAD_BYTES {
        return full;
    }
    // Too long: drop the image, then shorten the body, then the title (each by characters).
    let without_image = render(title_full.clone(), body_full.clone(), false);
    if without_image.len() <= MAX_PAYLOAD_BYTES {
        return without_image;
    }
    let fits = |title: &str, body_chars: usize| {
        let p = render(title.to_string(), shorten(&body_full, body_chars), false);
        (p.len() <= MAX_PAYLOAD_BYTES).then_some(p)
    };
    // Binary search for the longest body that fits.
    let (mut lo, mut hi) = (0usize, body_full.chars().count());
    let mut best = None;
    while lo <= hi {
        let mid = (lo + hi) / 2;
        match fits(&title_full, mid) {
            Some(p) => {
                best = Some(p);
                lo = mid + 1;
            }
            None if mid == 0 => break,
            None => hi = mid - 1,
        }
    }
    if let Some(p) = best {
        return p;
    }
    // Even an empty body is too much (a very long URL): shorten the title as well.
    for title_chars in (1..=title_full.chars().count()).rev().step_by(10) {
        if let Some(p) = fits(&shorten(&title_full, title_chars), 0) {
            return p;
        }
    }
    render(shorten(&alert.label, 40), String::new(), false)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn alert(headline: &str, summary: Option<&str>, url: &str) -> Alert {
        Alert {
            id: uuid::Uuid::now_v7(),
            seq: Some(7),
            status: crate::alerts::domain::AlertStatus::Live,
            revision: 0,
            label: "SON DAKİKA".into(),
            headline: headline.into(),
            summary: summary.map(String::from),
            url: url.into(),
            image: Some("https://img.example.com.tr/a.jpg".into()),
            article_id: None,
            topics: vec!["gundem".into()],
            urgency: crate::alerts::domain::Urgency::High,
            ttl_seconds: 3600,
            send_at: None,
            created_at: Utc::now(),
            published_at: Some(Utc::now()),
            updated_at: Utc::now(),
            retracted_at: None,
            retract_reason: None,
            created_by: None,
            tickers_reached: 0,
        }
    }

    #[test]
    fn a_normal_alert_is_declarative_web_push() {
        let p: serde_json::Value = serde_json::from_slice(&build(
            &alert("Deprem", Some("Özet"), "https://x.example/a"),
            StepKind::Alert,
            false,
        ))
        .unwrap();
        assert_eq!(p["web_push"], 8030);
        assert_eq!(p["notification"]["title"], "SON DAKİKA: Deprem");
        assert_eq!(p["notification"]["body"], "Özet");
        assert_eq!(p["notification"]["navigate"], "https://x.example/a");
        assert!(p["notification"]["tag"].as_str().unwrap().starts_with("sondakika-"));
    }

    #[test]
    fn corrections_and_retractions_keep_the_tag_and_say_what_they_are() {
        let mut a = alert("Deprem: 3 ölü", Some("AFAD açıkladı"), "https://www.burdurweb.com/haber/deprem");
        let of = |a: &Alert, kind, quiet| -> serde_json::Value {
            serde_json::from_slice(&build(a, kind, quiet)).unwrap()
        };
        let original = of(&a, StepKind::Alert, false);
        a.headline = "Deprem: 2 ölü".into();
        a.revision = 1;
        let quiet = of(&a, StepKind::Correction, true);
        let loud = of(&a, StepKind::Correction, false);
        a.retract_reason = Some("Yanlış bilgi".into());
        let retraction = of(&a, StepKind::Retraction, true);
        for p in [&original, &quiet, &loud, &retraction] {
            assert_eq!(p["notification"]["tag"], original["notification"]["tag"]);
            assert_eq!(p["mutable"], true);
        }
        assert_eq!(original["notification"]["data"]["kind"], "alert");
        assert_eq!(original["notification"].get("silent"), None);
        assert_eq!(quiet["notification"]["title"], "SON DAKİKA: Deprem: 2 ölü");
        assert_eq!(
            (quiet["notification"]["silent"].as_bool(), quiet["notification"]["data"]["renotify"].as_bool()),
            (Some(true), Some(false))
        );
        assert_eq!(
            (loud["notification"].get("silent"), loud["notification"]["data"]["renotify"].as_bool()),
            (None, Some(true))
        );
        assert_eq!(quiet["notification"]["data"]["revision"], 1);
        let n = &retraction["notification"];
        assert_eq!(n["data"]["kind"], "retraction");
        assert_eq!(n["title"], "Haber geri çekildi");
        assert_eq!(n["body"], "“Deprem: 2 ölü” başlıklı bildirim geri çekildi. Gerekçe: Yanlış bilgi");
        assert_eq!(n["navigate"], "https://www.burdurweb.com/", "the front page: the article may be gone");
        assert_eq!(n.get("image"), None);
    }

    #[test]
    fn long_turkish_text_is_cut_on_a_character_boundary() {
        let long = "ĞÜŞİÖÇığüşöç".repeat(40); // 480 two-byte letters
        let url = format!("https://x.example/{}", "a".repeat(900));
        let bytes = build(&alert(&"İ".repeat(200), Some(&long), &url), StepKind::Alert, false);
        assert!(bytes.len() <= MAX_PAYLOAD_BYTES, "{}", bytes.len());
        let p: serde_json::Value = serde_json::from_slice(&bytes).expect("valid UTF-8 JSON");
        let body = p["notification"]["body"].as_str().unwrap();
        assert!(body.ends_with('…'));
        assert!(long.starts_with(body.trim_end_matches('…')));
        assert_eq!(p["notification"]["navigate"], url.as_str(), "the link is never cut");
    }

    #[test]
    fn each_subscriber_gets_its_own_receipt_within_the_bound() {
        let key = ReceiptKey::from_secret(&[1u8; 32]);
        let long = "ĞÜŞİÖÇığüşöç".repeat(40);
        // An editor's text holding what looks like the receipt's room changes nothing.
        let tricky = format!("\"{RECEIPT_ROOM}\"");
        let url = format!("https://x.example/{}", "a".repeat(900));
        for a in
            [alert(&tricky, Some(&tricky), "https://x.example/a"), alert(&"İ".repeat(200), Some(&long), &url)]
        {
            let template = Template::new(&a, StepKind::Alert, false, key.clone());
            assert!(template.max_len() <= MAX_PAYLOAD_BYTES, "{}", template.max_len());
            assert_eq!(template.suffix, br#""}}}"#, "only closing braces follow the receipt");
            let mut out = Vec::new();
            for id in [1, 77, i64::MAX] {
                template.write(id, &mut out);
                assert!(out.len() <= template.max_len());
                let p: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
                let receipt = p["notification"]["data"]["receipt"].as_str().unwrap();
                assert_eq!(key.verify(a.id, receipt), Ok(id));
                assert_eq!(p["notification"]["title"], format!("SON DAKİKA: {}", a.headline).as_str());
            }
        }
    }

    /// What the receipt adds to a push's cost on an encryption thread. A measurement, not a
    /// check: `cargo test --lib per_push_cost -- --ignored --nocapture` (BENCHMARKS.md).
    #[test]
    #[ignore = "a measurement"]
    fn per_push_cost_of_the_receipt() {
        use std::time::{Duration, Instant};

        use aws_lc_rs::agreement::{ECDH_P256, PrivateKey};

        let (headline, summary) =
            ("Burdur'da 4,2 büyüklüğünde deprem", "AFAD ilk verileri paylaştı; can kaybı bildirilmedi.");
        let a = alert(headline, Some(summary), "https://www.burdurweb.com/haber/burdur-deprem");
        let template = Template::new(&a, StepKind::Alert, false, ReceiptKey::from_secret(&[3u8; 32]));
        let shared = build(&a, StepKind::Alert, false);
        let ua: [u8; 65] = PrivateKey::generate(&ECDH_P256)
            .unwrap()
            .compute_public_key()
            .unwrap()
            .as_ref()
            .try_into()
            .unwrap();
        let auth = [9u8; 16];
        let n = 5_000;
        let mut plaintext = Vec::with_capacity(template.max_len());
        let mut out = vec![0u8; super::super::ece::body_len(template.max_len())];
        let per_push = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
        let (mut before, mut after, mut receipt_only) = (f64::MAX, f64::MAX, f64::MAX);
        for _ in 0..3 {
            let t = Instant::now();
            for _ in 0..n {
                let len = super::super::ece::body_len(shared.len());
                super::super::ece::encrypt_to(&ua, &auth, &shared, &mut out[..len]).unwrap();
            }
            before = before.min(per_push(t.elapsed()));
            let t = Instant::now();
            for id in 0..n {
                template.write(1_000_000 + id, &mut plaintext);
                let len = super::super::ece::body_len(plaintext.len());
                super::super::ece::encrypt_to(&ua, &auth, &plaintext, &mut out[..len]).unwrap();
            }
            after = after.min(per_push(t.elapsed()));
            let t = Instant::now();
            for id in 0..n {
                template.write(1_000_000 + id, &mut plaintext);
            }
            receipt_only = receipt_only.min(per_push(t.elapsed()));
        }
        println!(
            "payload {} bytes; µs per push: one shared payload {before:.2}, each its own receipt {after:.2} (writing the receipt alone {receipt_only:.2})",
            plaintext.len()
        );
    }
}
