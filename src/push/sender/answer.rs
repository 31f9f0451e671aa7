//! What a push service's answer means for the push: sent, gone, retry later, failed, or our own
//! VAPID credentials refused.

use std::time::Duration;

use http::StatusCode;

use crate::untrusted::SafeText;

/// The longest Retry-After we honour as given.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    Sent(u16),
    /// 404/410: the subscription no longer exists.
    Gone(u16),
    /// 5xx, 429, a connection error or a timeout: try again later.
    Retry {
        status: Option<u16>,
        after: Option<Duration>,
        error: String,
    },
    /// 400, 413 and other refusals: retrying would not help.
    Failed {
        status: Option<u16>,
        error: String,
    },
    /// 401/403 about our VAPID token: our fault, this origin is stopped.
    VapidRejected {
        status: u16,
        error: String,
    },
    /// Not tried: the push service is down (it could not be reached a moment ago) or paused
    /// (429). Try again after `after`; this is no attempt at the push service.
    Deferred {
        after: Duration,
        error: String,
    },
}

impl SendResult {
    /// The `result` label of each kind of attempt, in [`SendResult::index`] order.
    pub const LABELS: [&'static str; 7] =
        ["sent", "gone", "throttled", "retry", "failed", "vapid_rejected", "deferred"];

    pub fn index(&self) -> usize {
        match self {
            SendResult::Sent(_) => 0,
            SendResult::Gone(_) => 1,
            SendResult::Retry { status: Some(429), .. } => 2,
            SendResult::Retry { .. } => 3,
            SendResult::Failed { .. } => 4,
            SendResult::VapidRejected { .. } => 5,
            SendResult::Deferred { .. } => 6,
        }
    }
}

/// Sorts a push service's answer into what to do next.
pub fn classify(status: StatusCode, retry_after: Option<Duration>, body: &str) -> SendResult {
    let code = status.as_u16();
    // The push service's words are stored with the delivery and logged: made safe first.
    let error = || format!("HTTP {code}: {}", SafeText::new(body));
    match code {
        200..=299 => SendResult::Sent(code),
        404 | 410 => SendResult::Gone(code),
        429 => SendResult::Retry { status: Some(code), after: retry_after, error: error() },
        401 | 403 if mentions_credentials(body) => SendResult::VapidRejected { status: code, error: error() },
        500..=599 => SendResult::Retry { status: Some(code), after: retry_after, error: error() },
        _ => SendResult::Failed { status: Some(code), error: error() },
    }
}

/// Whether a 401/403 body is about our credentials (Mozilla: "Invalid Authorization", Apple:
/// "BadJwtToken", FCM: "authorization header", a VAPID library: "vapid").
fn mentions_credentials(body: &str) -> bool {
    let b = body.to_ascii_lowercase();
    ["vapid", "jwt", "token", "authorization", "crypto-key", "credential", "unauthorized", "signature"]
        .iter()
        .any(|w| b.contains(w))
        || b.trim().is_empty()
}

/// `Retry-After` as seconds or an HTTP date, capped.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let d = if let Ok(secs) = v.trim().parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = chrono::DateTime::parse_from_rfc2822(v.trim()).ok()?;
        (when.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO)
    };
    Some(d.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        let s = |c| StatusCode::from_u16(c).unwrap();
        assert_eq!(classify(s(201), None, ""), SendResult::Sent(201));
        assert_eq!(classify(s(410), None, ""), SendResult::Gone(410));
        assert_eq!(classify(s(404), None, ""), SendResult::Gone(404));
        assert!(matches!(
            classify(s(429), Some(Duration::from_secs(3)), ""),
            SendResult::Retry { after: Some(_), .. }
        ));
        assert!(matches!(classify(s(503), None, ""), SendResult::Retry { status: Some(503), .. }));
        assert!(matches!(classify(s(413), None, "too big"), SendResult::Failed { status: Some(413), .. }));
        assert!(matches!(classify(s(400), None, ""), SendResult::Failed { .. }));
        assert!(matches!(classify(s(401), None, "Invalid Authorization"), SendResult::VapidRejected { .. }));
        assert!(matches!(classify(s(403), None, "BadJwtToken"), SendResult::VapidRejected { .. }));
        assert!(matches!(
            classify(s(403), None, "subscription expired for sender"),
            SendResult::Failed { .. }
        ));
        let label = |a: SendResult| SendResult::LABELS[a.index()];
        assert_eq!(label(classify(s(201), None, "")), "sent");
        assert_eq!(label(classify(s(429), None, "")), "throttled");
        assert_eq!(label(classify(s(503), None, "")), "retry");
        assert_eq!(label(classify(s(401), None, "vapid")), "vapid_rejected");
    }

    #[test]
    fn a_push_services_words_are_made_safe() {
        let s = |c| StatusCode::from_u16(c).unwrap();
        let SendResult::Retry { error, .. } = classify(s(502), None, "bad\0gate\u{1b}[2Jway\u{202e}") else {
            panic!("a 502 is retried")
        };
        assert_eq!(error, "HTTP 502: badgateway");
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date_and_is_capped() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("999999"), Some(MAX_RETRY_AFTER));
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let d = parse_retry_after(&soon).unwrap();
        assert!(d > Duration::from_secs(25) && d <= Duration::from_secs(30));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
