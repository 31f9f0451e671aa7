//! Alert values parsed at the edge: past this module, a headline is never empty or too long and
//! a URL is always http(s). Text is kept byte-exact (no trimming, no normalisation), so Turkish
//! letters such as İ ı ş ğ come back exactly as the editor typed them. Lengths are counted in
//! characters, not bytes: "İ" is one character of two bytes.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use url::Url;

pub const MAX_HEADLINE_CHARS: usize = 200;
pub const MAX_SUMMARY_CHARS: usize = 500;
pub const MAX_LABEL_CHARS: usize = 40;
pub const MAX_TOPICS: usize = 20;
pub const MAX_TOPIC_CHARS: usize = 40;
pub const MAX_URL_CHARS: usize = 2048;
pub const MAX_ARTICLE_ID_CHARS: usize = 200;
pub const MAX_REASON_CHARS: usize = 500;
pub const MIN_TTL_SECS: u32 = 60;
/// Push services keep messages for at most 28 days.
pub const MAX_TTL_SECS: u32 = 28 * 24 * 3600;
/// How far ahead an alert may be scheduled.
pub const MAX_SCHEDULE_AHEAD_DAYS: i64 = 30;
pub const DEFAULT_LABEL: &str = "SON DAKİKA";

/// One problem with one field of a request, in words an editor understands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn has_control(s: &str, allow_newlines: bool) -> bool {
    s.chars().any(|c| c.is_control() && !(allow_newlines && (c == '\n' || c == '\r' || c == '\t')))
}

/// Text of bounded length, without control characters.
fn text(field: &str, value: &str, max: usize, allow_newlines: bool) -> Result<String, FieldError> {
    let chars = value.chars().count();
    if value.trim().is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if chars > max {
        return Err(FieldError::new(field, format!("must be at most {max} characters (got {chars})")));
    }
    if has_control(value, allow_newlines) {
        return Err(FieldError::new(field, "must not contain control characters"));
    }
    Ok(value.to_string())
}

macro_rules! text_newtype {
    ($name:ident, $field:literal, $max:expr, $newlines:expr) => {
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);
        impl $name {
            pub fn parse(value: &str) -> Result<Self, FieldError> {
                text($field, value, $max, $newlines).map(Self)
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

text_newtype!(Headline, "headline", MAX_HEADLINE_CHARS, false);
text_newtype!(Summary, "summary", MAX_SUMMARY_CHARS, true);
text_newtype!(Label, "label", MAX_LABEL_CHARS, false);
text_newtype!(ArticleId, "article_id", MAX_ARTICLE_ID_CHARS, false);
text_newtype!(Reason, "reason", MAX_REASON_CHARS, true);

/// A topic slug: lowercase ASCII letters, digits and dashes (`gundem`, `burdur`, `spor`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Topic(String);

impl Topic {
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldError> {
        let ok = !value.is_empty()
            && value.len() <= MAX_TOPIC_CHARS
            && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !value.starts_with('-');
        if ok {
            Ok(Self(value.to_string()))
        } else {
            Err(FieldError::new(
                field,
                format!(
                    "`{value}` is not a topic slug: use 1-{MAX_TOPIC_CHARS} lowercase ASCII letters, \
                     digits and dashes, e.g. `gundem` for \"Gündem\""
                ),
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A list of topics: sorted, without repeats, at most [`MAX_TOPICS`]. Empty means everyone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Topics(Vec<Topic>);

impl Topics {
    pub fn parse<S: AsRef<str>>(field: &str, values: &[S]) -> Result<Self, FieldError> {
        if values.len() > MAX_TOPICS {
            return Err(FieldError::new(
                field,
                format!("at most {MAX_TOPICS} topics (got {})", values.len()),
            ));
        }
        let mut topics = values
            .iter()
            .enumerate()
            .map(|(i, v)| Topic::parse(&format!("{field}[{i}]"), v.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        topics.sort();
        topics.dedup();
        Ok(Self(topics))
    }

    /// Parses `a,b,c` as given in a query string.
    pub fn parse_csv(field: &str, csv: &str) -> Result<Self, FieldError> {
        let parts: Vec<&str> = csv.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        Self::parse(field, &parts)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = &Topic> {
        self.0.iter()
    }
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|t| t.0.clone()).collect()
    }
    pub fn from_db(values: Vec<String>) -> Self {
        Self(values.into_iter().map(Topic).collect())
    }

    /// Whether an event with `event_topics` should reach a subscriber of `self`. A subscriber
    /// without topics wants everything; an alert without topics is for everyone.
    pub fn wants(&self, event_topics: &[String]) -> bool {
        self.0.is_empty()
            || event_topics.is_empty()
            || event_topics.iter().any(|t| self.0.iter().any(|mine| mine.0 == *t))
    }
}

/// An absolute http(s) URL with a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WebUrl(String);

impl WebUrl {
    pub fn parse(field: &str, value: &str, https_only: bool) -> Result<Self, FieldError> {
        if value.chars().count() > MAX_URL_CHARS {
            return Err(FieldError::new(field, format!("must be at most {MAX_URL_CHARS} characters")));
        }
        let url = Url::parse(value)
            .map_err(|e| FieldError::new(field, format!("`{value}` is not a valid URL ({e})")))?;
        let scheme_ok =
            if https_only { url.scheme() == "https" } else { matches!(url.scheme(), "http" | "https") };
        if !scheme_ok {
            let want = if https_only { "an https" } else { "an http or https" };
            return Err(FieldError::new(field, format!("must be {want} URL, got `{}:`", url.scheme())));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(FieldError::new(field, "must have a host name"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(FieldError::new(field, "must not contain a user name or password"));
        }
        // Keep what the editor sent (the parser would percent-encode Turkish letters in paths).
        Ok(Self(value.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// RFC 8030 urgency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Urgency {
    VeryLow,
    Low,
    Normal,
    High,
}

impl Urgency {
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        match value {
            "very-low" => Ok(Self::VeryLow),
            "low" => Ok(Self::Low),
            "normal" => Ok(Self::Normal),
            "high" => Ok(Self::High),
            other => Err(FieldError::new(
                "urgency",
                format!("`{other}` is not one of very-low, low, normal, high"),
            )),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VeryLow => "very-low",
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
        }
    }
}

/// A new alert, valid in every field.
#[derive(Debug, Clone)]
pub struct NewAlert {
    pub headline: Headline,
    pub url: WebUrl,
    pub summary: Option<Summary>,
    pub image: Option<WebUrl>,
    pub article_id: Option<ArticleId>,
    pub topics: Topics,
    pub label: Label,
    pub ttl_seconds: u32,
    pub urgency: Urgency,
    pub send_at: Option<DateTime<Utc>>,
}

impl NewAlert {
    /// What makes two flags the same article: the CMS id, or the URL without one.
    pub fn dedupe_key(&self) -> String {
        match &self.article_id {
            Some(id) => format!("article:{}", id.as_str()),
            None => format!("url:{}", self.url.as_str()),
        }
    }
}

/// The JSON body of `POST /api/v1/alerts`. Raw types, so that every mistake becomes a
/// [`FieldError`] naming the field rather than a serde message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAlertRequest {
    pub headline: Option<String>,
    pub url: Option<String>,
    pub summary: Option<String>,
    pub image: Option<String>,
    pub article_id: Option<String>,
    #[serde(default)]
    pub topics: Vec<String>,
    pub label: Option<String>,
    pub ttl_seconds: Option<i64>,
    pub urgency: Option<String>,
    pub send_at: Option<String>,
}

/// Collects every field's problem, not just the first.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn take<T>(&mut self, r: Result<T, FieldError>) -> Option<T> {
        r.map_err(|e| self.0.push(e)).ok()
    }
    fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, Vec<FieldError>> {
        if self.0.is_empty() { Ok(value()) } else { Err(self.0) }
    }
}

fn required<'a>(field: &str, v: &'a Option<String>) -> Result<&'a str, FieldError> {
    v.as_deref().ok_or_else(|| FieldError::new(field, "is required"))
}

impl NewAlertRequest {
    pub fn parse(self, default_ttl: u32, now: DateTime<Utc>) -> Result<NewAlert, Vec<FieldError>> {
        let mut p = Problems::default();
        let headline = p.take(required("headline", &self.headline).and_then(Headline::parse));
        let url = p.take(required("url", &self.url).and_then(|u| WebUrl::parse("url", u, false)));
        let summary = p.take(self.summary.as_deref().map(Summary::parse).transpose());
        let image = p.take(self.image.as_deref().map(|u| WebUrl::parse("image", u, true)).transpose());
        let article_id = p.take(self.article_id.as_deref().map(ArticleId::parse).transpose());
        let topics = p.take(Topics::parse("topics", &self.topics));
        let label = p.take(Label::parse(self.label.as_deref().unwrap_or(DEFAULT_LABEL)));
        let ttl_seconds = p.take(parse_ttl(self.ttl_seconds, default_ttl));
        let urgency = p.take(Urgency::parse(self.urgency.as_deref().unwrap_or("high")));
        let send_at = p.take(self.send_at.as_deref().map(|s| parse_send_at(s, now)).transpose());
        p.finish(|| NewAlert {
            headline: headline.unwrap(),
            url: url.unwrap(),
            summary: summary.unwrap(),
            image: image.unwrap(),
            article_id: article_id.unwrap(),
            topics: topics.unwrap(),
            label: label.unwrap(),
            ttl_seconds: ttl_seconds.unwrap(),
            urgency: urgency.unwrap(),
            send_at: send_at.unwrap().flatten(),
        })
    }
}

fn parse_ttl(value: Option<i64>, default: u32) -> Result<u32, FieldError> {
    let v = value.unwrap_or(default as i64);
    if !(MIN_TTL_SECS as i64..=MAX_TTL_SECS as i64).contains(&v) {
        return Err(FieldError::new(
            "ttl_seconds",
            format!("must be between {MIN_TTL_SECS} and {MAX_TTL_SECS} seconds (got {v})"),
        ));
    }
    Ok(v as u32)
}

/// A schedule time: RFC 3339, not in the past (a few seconds of clock skew are forgiven and mean
/// "now"), at most [`MAX_SCHEDULE_AHEAD_DAYS`] ahead. `None` when it is due already.
fn parse_send_at(value: &str, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, FieldError> {
    let at = DateTime::parse_from_rfc3339(value)
        .map_err(|_| {
            FieldError::new(
                "send_at",
                format!("`{value}` is not an RFC 3339 time such as 2026-11-27T18:30:00+03:00"),
            )
        })?
        .with_timezone(&Utc);
    if at < now - chrono::Duration::seconds(30) {
        return Err(FieldError::new("send_at", "is in the past"));
    }
    if at > now + chrono::Duration::days(MAX_SCHEDULE_AHEAD_DAYS) {
        return Err(FieldError::new(
            "send_at",
            format!("must be at most {MAX_SCHEDULE_AHEAD_DAYS} days ahead"),
        ));
    }
    Ok((at > now).then_some(at))
}

/// The JSON body of `PATCH /api/v1/alerts/{id}`: a correction. `summary` and `image` may be set
/// to `null` to remove them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrectionRequest {
    pub headline: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    pub summary: Option<Option<String>>,
    pub url: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    pub image: Option<Option<String>>,
}

/// Distinguishes a missing field (`None`) from an explicit `null` (`Some(None)`).
fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Clone)]
pub struct Correction {
    pub headline: Option<Headline>,
    pub summary: Option<Option<Summary>>,
    pub url: Option<WebUrl>,
    pub image: Option<Option<WebUrl>>,
}

impl CorrectionRequest {
    pub fn parse(self) -> Result<Correction, Vec<FieldError>> {
        if self.headline.is_none() && self.summary.is_none() && self.url.is_none() && self.image.is_none() {
            return Err(vec![FieldError::new(
                "body",
                "give at least one of headline, summary, url, image to correct",
            )]);
        }
        let mut p = Problems::default();
        let headline = p.take(self.headline.as_deref().map(Headline::parse).transpose());
        let summary = p.take(self.summary.map(|s| s.as_deref().map(Summary::parse).transpose()).transpose());
        let url = p.take(self.url.as_deref().map(|u| WebUrl::parse("url", u, false)).transpose());
        let image = p.take(
            self.image.map(|s| s.as_deref().map(|u| WebUrl::parse("image", u, true)).transpose()).transpose(),
        );
        p.finish(|| Correction {
            headline: headline.unwrap(),
            summary: summary.unwrap(),
            url: url.unwrap(),
            image: image.unwrap(),
        })
    }
}

/// The optional JSON body of `POST /api/v1/alerts/{id}/retract`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetractRequest {
    pub reason: Option<String>,
}

impl RetractRequest {
    pub fn parse(self) -> Result<Option<Reason>, Vec<FieldError>> {
        self.reason.as_deref().map(Reason::parse).transpose().map_err(|e| vec![e])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headline_length_counts_characters_not_bytes() {
        let turkish = "İ".repeat(MAX_HEADLINE_CHARS); // 400 bytes, 200 characters
        assert!(Headline::parse(&turkish).is_ok());
        let err = Headline::parse(&"ı".repeat(MAX_HEADLINE_CHARS + 1)).unwrap_err();
        assert_eq!(err.field, "headline");
        assert!(err.message.contains("201"), "{}", err.message);
    }

    #[test]
    fn text_is_kept_byte_exact() {
        let s = "  İzmir'de şiddetli ğüöç  ";
        assert_eq!(Headline::parse(s).unwrap().as_str(), s);
    }

    #[test]
    fn topics_are_sorted_deduplicated_and_ascii() {
        let t = Topics::parse("topics", &["spor", "burdur", "spor"]).unwrap();
        assert_eq!(t.to_strings(), vec!["burdur", "spor"]);
        let e = Topics::parse("topics", &["gündem"]).unwrap_err();
        assert_eq!(e.field, "topics[0]");
    }

    #[test]
    fn topic_matching() {
        let none = Topics::default();
        let spor = Topics::parse("t", &["spor"]).unwrap();
        assert!(none.wants(&["spor".into()]));
        assert!(spor.wants(&[]));
        assert!(spor.wants(&["gundem".into(), "spor".into()]));
        assert!(!spor.wants(&["gundem".into()]));
    }

    #[test]
    fn every_field_problem_is_reported() {
        let req = NewAlertRequest {
            headline: None,
            url: Some("ftp://x".into()),
            summary: None,
            image: Some("http://insecure.example/x.jpg".into()),
            article_id: None,
            topics: vec![],
            label: None,
            ttl_seconds: Some(1),
            urgency: Some("urgent".into()),
            send_at: Some("yesterday".into()),
        };
        let errs = req.parse(3600, Utc::now()).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["headline", "url", "image", "ttl_seconds", "urgency", "send_at"]);
    }
}
