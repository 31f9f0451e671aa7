//! A browser's push subscription, validated at the door.
//!
//! An endpoint is a URL a stranger hands us and that we will later connect to: it must be https
//! on port 443, without user-info, short, and on a known push service (or a host the operator
//! allowed explicitly). The keys must be exactly what RFC 8291 encryption needs: `p256dh` an
//! uncompressed P-256 point that is on the curve, `auth` 16 bytes. Nothing malformed gets past
//! this module, so the encryption code never sees a key it could choke on.

use base64::{
    Engine,
    engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD},
};
use serde::Deserialize;
use url::Url;

pub use crate::net::HostRule;
use crate::validation::{FieldError, Lines, check_text, within_bytes};

pub const MAX_ENDPOINT_CHARS: usize = 1000;
/// The stored (serialised, ASCII) endpoint is bounded in bytes too: it is the unique key of
/// `push_subscriptions`, and a btree row holds at most 2,704 bytes. Real endpoints are 150 to
/// 500 bytes (FCM, Mozilla, Apple, WNS).
pub const MAX_ENDPOINT_BYTES: usize = 1000;

/// The push services of the major browsers, as precisely as they hand out endpoints: one exact
/// host each, and a wildcard only where the service names its nodes (`*.host` matches subdomains
/// of `host`, never `host` itself). Anything looser lets a stranger mint endless names under a
/// real service's domain (`<random>.fcm.googleapis.com`) that resolve nowhere.
pub const DEFAULT_PUSH_HOSTS: &[&str] = &[
    "fcm.googleapis.com",                // Chrome, Edge on Android, Opera, Samsung Internet
    "android.googleapis.com",            // subscriptions Chrome made before FCM (GCM endpoints)
    "updates.push.services.mozilla.com", // Firefox (autopush)
    "web.push.apple.com",                // Safari on macOS and iOS
    "*.notify.windows.com", // Edge and apps on Windows: WNS nodes, `wns2-par02p.notify.windows.com`
];

/// How a host got past the allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matched {
    /// Added by the operator (`push_extra_hosts`) rather than a browser's push service.
    pub extra: bool,
    /// Matched by a wildcard: a name a stranger could have made up. Such a push service earns
    /// full concurrency only once it has answered (see `push::sender`).
    pub minted: bool,
}

/// Hosts allowed as push endpoints.
#[derive(Debug, Clone)]
pub struct Allowlist {
    standard: Vec<HostRule>,
    /// Operator-added hosts (e.g. a self-hosted push service).
    extra: Vec<HostRule>,
    /// Whether operator-added hosts may use http, other ports than 443 and non-public addresses.
    pub extra_allow_http: bool,
}

impl Allowlist {
    /// The browsers' push services and the operator's `push_extra_hosts` (already validated by
    /// the settings; an entry that is not a host rule is ignored).
    pub fn new(extra: &[String], extra_allow_http: bool) -> Self {
        Self {
            standard: DEFAULT_PUSH_HOSTS.iter().filter_map(|h| HostRule::parse(h)).collect(),
            extra: extra.iter().filter_map(|h| HostRule::parse(h)).collect(),
            extra_allow_http,
        }
    }

    pub fn matches(&self, host: &str) -> Option<Matched> {
        let find = |rules: &[HostRule]| rules.iter().find(|r| r.matches(host)).map(HostRule::is_wildcard);
        if let Some(minted) = find(&self.standard) {
            return Some(Matched { extra: false, minted });
        }
        find(&self.extra).map(|minted| Matched { extra: true, minted })
    }

    /// True if the host was added by the operator and the operator allowed it non-public
    /// addresses (`push_extra_hosts_allow_http`).
    pub fn may_be_private(&self, host: &str) -> bool {
        self.extra_allow_http && self.matches(host).is_some_and(|m| m.extra)
    }
}

/// The push service of a host, as a metric label: a fixed set, never a stranger's string.
pub fn service_label(host: &str) -> &'static str {
    let under = |domain: &str| host == domain || host.ends_with(&format!(".{domain}"));
    if under("googleapis.com") {
        "fcm"
    } else if under("mozilla.com") {
        "mozilla"
    } else if under("apple.com") {
        "apple"
    } else if under("notify.windows.com") {
        "wns"
    } else {
        "other"
    }
}

/// `PushSubscription.toJSON()` as the browser gives it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionJson {
    /// The push service's URL for this browser: https on port 443 at a known push service (or
    /// a host in `push_extra_hosts`). A secret capability.
    #[schema(required = true, value_type = String, max_length = 1000,
             example = "https://fcm.googleapis.com/fcm/send/dQw4w9WgXcQ:APA91b")]
    pub endpoint: Option<String>,
    /// Ignored.
    #[serde(default)]
    pub expiration_time: Option<serde_json::Value>,
    #[schema(required = true, value_type = KeysJson)]
    pub keys: Option<KeysJson>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct KeysJson {
    /// The browser's P-256 public key: 65 bytes, uncompressed, base64url.
    #[schema(required = true, value_type = String, pattern = "^[A-Za-z0-9_-]{87}=?$")]
    pub p256dh: Option<String>,
    /// The auth secret: 16 bytes, base64url.
    #[schema(required = true, value_type = String, pattern = "^[A-Za-z0-9_-]{22}(==)?$")]
    pub auth: Option<String>,
}

/// A subscription that is safe to store and to send to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSubscription {
    pub endpoint: String,
    /// `scheme://host[:port]` of the endpoint: the VAPID audience and the unit of rate limits.
    pub origin: String,
    pub host: String,
    pub p256dh: [u8; 65],
    pub auth: [u8; 16],
}

fn decode_b64(field: &str, value: &str) -> Result<Vec<u8>, FieldError> {
    let trimmed = value.trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| URL_SAFE.decode(value))
        .map_err(|_| FieldError::new(field, "must be base64url (padded or not)"))
}

/// An endpoint in the one form it is stored and looked up in: checked byte by byte
/// ([`check_text`]), parsed, and WHATWG-serialised (the form browsers hand out already, so a
/// browser's raw endpoint and the stored one compare equal), at most [`MAX_ENDPOINT_BYTES`].
/// Used for subscribing, for `replaces` and for unsubscribing alike, so all three agree.
pub fn normalise_endpoint(field: &str, value: &str) -> Result<String, FieldError> {
    let chars = value.chars().count();
    if chars > MAX_ENDPOINT_CHARS {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_ENDPOINT_CHARS} characters (got {chars})"),
        ));
    }
    check_text(field, value, Lines::Single)?;
    let url = Url::parse(value).map_err(|e| FieldError::new(field, format!("is not a valid URL ({e})")))?;
    within_bytes(field, String::from(url), MAX_ENDPOINT_BYTES)
}

/// Validates an endpoint URL against the allowlist.
pub fn parse_endpoint(field: &str, value: &str, allow: &Allowlist) -> Result<(String, String), FieldError> {
    let chars = value.chars().count();
    if chars > MAX_ENDPOINT_CHARS {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_ENDPOINT_CHARS} characters (got {chars})"),
        ));
    }
    let url = Url::parse(value).map_err(|e| FieldError::new(field, format!("is not a valid URL ({e})")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FieldError::new(field, "must not contain a user name or password"));
    }
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    if host.is_empty() {
        return Err(FieldError::new(field, "must have a host"));
    }
    let Some(matched) = allow.matches(&host) else {
        if url.scheme() != "https" {
            return Err(FieldError::new(field, "must be an https URL"));
        }
        return Err(FieldError::new(
            field,
            format!("`{host}` is not a known push service; an operator can allow it with `push_extra_hosts`"),
        ));
    };
    // The browsers' push services, and the operator's hosts unless the operator allowed more,
    // are https on 443 only.
    let relaxed = matched.extra && allow.extra_allow_http;
    let scheme_ok = url.scheme() == "https" || (relaxed && url.scheme() == "http");
    if !scheme_ok {
        return Err(FieldError::new(field, "must be an https URL"));
    }
    if !relaxed && url.port().is_some_and(|p| p != 443) {
        return Err(FieldError::new(field, "must use port 443"));
    }
    Ok((url.origin().ascii_serialization(), host))
}

impl SubscriptionJson {
    pub fn parse(self, allow: &Allowlist) -> Result<PushSubscription, Vec<FieldError>> {
        let mut errors = Vec::new();
        let endpoint = match self.endpoint.as_deref() {
            None => {
                errors.push(FieldError::new("subscription.endpoint", "is required"));
                None
            }
            Some(e) => match normalise_endpoint("subscription.endpoint", e).and_then(|endpoint| {
                parse_endpoint("subscription.endpoint", &endpoint, allow).map(|(o, h)| (endpoint, o, h))
            }) {
                Ok(parts) => Some(parts),
                Err(err) => {
                    errors.push(err);
                    None
                }
            },
        };
        let (p256dh, auth) = match &self.keys {
            None => {
                errors.push(FieldError::new("subscription.keys", "is required (p256dh and auth)"));
                (None, None)
            }
            Some(keys) => (
                match keys.p256dh.as_deref() {
                    None => {
                        errors.push(FieldError::new("subscription.keys.p256dh", "is required"));
                        None
                    }
                    Some(v) => parse_p256dh(v).map_err(|e| errors.push(e)).ok(),
                },
                match keys.auth.as_deref() {
                    None => {
                        errors.push(FieldError::new("subscription.keys.auth", "is required"));
                        None
                    }
                    Some(v) => parse_auth(v).map_err(|e| errors.push(e)).ok(),
                },
            ),
        };
        match (endpoint, p256dh, auth) {
            (Some((endpoint, origin, host)), Some(p256dh), Some(auth)) if errors.is_empty() => {
                Ok(PushSubscription { endpoint, origin, host, p256dh, auth })
            }
            _ => Err(errors),
        }
    }
}

/// The browser's public key: 65 bytes, uncompressed (0x04 prefix), and a point on P-256.
pub fn parse_p256dh(value: &str) -> Result<[u8; 65], FieldError> {
    const FIELD: &str = "subscription.keys.p256dh";
    let bytes = decode_b64(FIELD, value)?;
    let key: [u8; 65] = bytes.as_slice().try_into().map_err(|_| {
        FieldError::new(
            FIELD,
            format!("must be an uncompressed P-256 public key of 65 bytes (got {} bytes)", bytes.len()),
        )
    })?;
    if key[0] != 0x04 {
        return Err(FieldError::new(FIELD, "must be an uncompressed point (starting with 0x04)"));
    }
    if !super::ece::is_valid_public_key(&key) {
        return Err(FieldError::new(FIELD, "is not a point on the P-256 curve"));
    }
    Ok(key)
}

/// The browser's authentication secret: exactly 16 bytes.
pub fn parse_auth(value: &str) -> Result<[u8; 16], FieldError> {
    const FIELD: &str = "subscription.keys.auth";
    let bytes = decode_b64(FIELD, value)?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| FieldError::new(FIELD, format!("must be 16 bytes (got {})", bytes.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow() -> Allowlist {
        Allowlist::new(&["push.example.net".into(), "*.push.example.org".into()], true)
    }

    #[test]
    fn endpoints_of_real_push_services_pass() {
        for e in [
            "https://fcm.googleapis.com/fcm/send/abc:APA91",
            "https://updates.push.services.mozilla.com/wpush/v2/gAAAA",
            "https://web.push.apple.com/QGuQyavXutnMnHSZVJoq",
            "https://wns2-par02p.notify.windows.com/w/?token=BQYAAA",
        ] {
            assert!(parse_endpoint("e", e, &allow()).is_ok(), "{e}");
        }
    }

    #[test]
    fn bad_endpoints_are_refused_with_a_reason() {
        for (e, why) in [
            ("http://fcm.googleapis.com/fcm/send/x", "https"),
            ("https://fcm.googleapis.com:8443/fcm/send/x", "443"),
            ("https://user:pw@fcm.googleapis.com/fcm/send/x", "user name"),
            ("https://127.0.0.1/x", "not a known push service"),
            ("https://10.0.0.8/x", "not a known push service"),
            ("https://evilfcm.googleapis.com.attacker.net/x", "not a known push service"),
            ("https://notfcm.googleapis.com.evil/x", "not a known push service"),
            // Names a stranger makes up under a real service's domain: each would cost a DNS lookup
            // and a connection of its own.
            ("https://x7f3.fcm.googleapis.com/fcm/send/x", "not a known push service"),
            ("https://a.updates.push.services.mozilla.com/wpush/v2/x", "not a known push service"),
            ("https://push.services.mozilla.com/wpush/v2/x", "not a known push service"),
            ("https://api.push.apple.com/x", "not a known push service"),
            ("https://notify.windows.com/w/?token=x", "not a known push service"),
        ] {
            let err = parse_endpoint("e", e, &allow()).unwrap_err();
            assert!(err.message.contains(why), "{e}: {}", err.message);
        }
        let long = format!("https://fcm.googleapis.com/{}", "a".repeat(5000));
        assert!(parse_endpoint("e", &long, &allow()).unwrap_err().message.contains("at most 1000"));
    }

    #[test]
    fn operator_hosts_follow_their_rules_exactly() {
        let strict = Allowlist::new(&["push.example.net".into(), "*.push.example.org".into()], false);
        let relaxed = allow();
        // Exact unless written `*.host`; a wildcard matches subdomains, not the host itself.
        assert!(parse_endpoint("e", "https://push.example.net/x", &strict).is_ok());
        assert!(parse_endpoint("e", "https://a.push.example.net/x", &strict).is_err());
        assert!(parse_endpoint("e", "https://node1.push.example.org/x", &strict).is_ok());
        assert!(parse_endpoint("e", "https://push.example.org/x", &strict).is_err());
        assert!(parse_endpoint("e", "https://xpush.example.org/x", &strict).is_err());
        // Port 443 and https unless `push_extra_hosts_allow_http`.
        for e in ["https://push.example.net:18099/x", "http://push.example.net/x"] {
            assert!(parse_endpoint("e", e, &strict).is_err(), "{e}");
            assert!(parse_endpoint("e", e, &relaxed).is_ok(), "{e}");
        }
        // Only operator hosts may be relaxed: a browser push service stays https on 443.
        assert!(parse_endpoint("e", "http://fcm.googleapis.com/x", &relaxed).is_err());
        assert!(strict.matches("node1.push.example.org").is_some_and(|m| m.extra && m.minted));
        assert!(strict.matches("push.example.net").is_some_and(|m| m.extra && !m.minted));
        assert!(strict.matches("wns2-par02p.notify.windows.com").is_some_and(|m| !m.extra && m.minted));
        assert!(!strict.may_be_private("push.example.net"));
        assert!(relaxed.may_be_private("push.example.net"));
        assert!(!relaxed.may_be_private("fcm.googleapis.com"));
    }

    #[test]
    fn metric_labels_come_from_a_fixed_set() {
        assert_eq!(service_label("fcm.googleapis.com"), "fcm");
        assert_eq!(service_label("updates.push.services.mozilla.com"), "mozilla");
        assert_eq!(service_label("web.push.apple.com"), "apple");
        assert_eq!(service_label("wns2-par02p.notify.windows.com"), "wns");
        assert_eq!(service_label("x9.evil.example"), "other");
        assert_eq!(service_label("notify.windows.com.evil.example"), "other");
    }

    #[test]
    fn endpoints_are_checked_byte_by_byte_and_serialised() {
        let e = "https://fcm.googleapis.com/fcm/send/abc:APA91";
        assert_eq!(normalise_endpoint("endpoint", e).unwrap(), e, "a browser's endpoint is unchanged");
        assert_eq!(
            normalise_endpoint("endpoint", "HTTPS://FCM.googleapis.com:443/fcm/send/a b").unwrap(),
            "https://fcm.googleapis.com/fcm/send/a%20b"
        );
        for (bad, why) in [
            ("https://fcm.googleapis.com/fcm/send/a\u{0}b", "control"),
            ("  https://fcm.googleapis.com/fcm/send/x", "begin or end"),
            ("\thttps://fcm.googleapis.com/fcm/send/x", "control"),
            ("https://fcm.googleapis.com/fcm/send/a\nb", "line break"),
            ("https://fcm.googleapis.com/fcm/send/\u{202E}x", "bidirectional"),
        ] {
            let err = normalise_endpoint("endpoint", bad).unwrap_err();
            assert_eq!(err.field, "endpoint");
            assert!(err.message.contains(why), "{bad:?}: {}", err.message);
        }
        let cjk = format!("https://fcm.googleapis.com/fcm/send/{}", "漢".repeat(900));
        let err = normalise_endpoint("endpoint", &cjk).unwrap_err();
        assert!(err.message.contains("bytes once serialised"), "{}", err.message);
    }

    #[test]
    fn keys_must_be_exactly_right() {
        // A real uncompressed key (the RFC 8291 example's user agent key).
        let good = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
        assert!(parse_p256dh(good).is_ok());
        assert!(parse_p256dh(&format!("{good}=")).is_ok(), "padding accepted");
        let bytes = URL_SAFE_NO_PAD.decode(good).unwrap();
        let mut compressed = vec![0x02 | (bytes[64] & 1)];
        compressed.extend_from_slice(&bytes[1..33]);
        let e = parse_p256dh(&URL_SAFE_NO_PAD.encode(&compressed)).unwrap_err();
        assert!(e.message.contains("33 bytes"), "{}", e.message);
        let mut off_curve = bytes.clone();
        off_curve[64] ^= 1;
        let e = parse_p256dh(&URL_SAFE_NO_PAD.encode(&off_curve)).unwrap_err();
        assert!(e.message.contains("curve"), "{}", e.message);
        assert!(parse_p256dh("!!!").is_err());
        assert!(parse_auth("BTBZMqHH6r4Tts7J_aSIgg").is_ok());
        assert!(parse_auth(&URL_SAFE_NO_PAD.encode([0u8; 15])).unwrap_err().message.contains("16 bytes"));
    }
}
