//! Alert values parsed at the edge: past this module, a headline is never empty or too long, a
//! topic is a slug, a TTL is within what push services keep. The checks every domain shares
//! (text, URLs, collecting problems) are in [`crate::validation`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::validation::{FieldError, Lines, Problems, WebUrl, bounded_text};

pub const MAX_HEADLINE_CHARS: usize = 200;
pub const MAX_SUMMARY_CHARS: usize = 500;
pub const MAX_LABEL_CHARS: usize = 40;
pub const MAX_TOPICS: usize = 20;
pub const MAX_TOPIC_CHARS: usize = 40;
pub const MAX_ARTICLE_ID_CHARS: usize = 200;
pub const MAX_REASON_CHARS: usize = 500;
pub const MIN_TTL_SECS: u32 = 60;
/// Push services keep messages for at most 28 days.
pub const MAX_TTL_SECS: u32 = 28 * 24 * 3600;
/// How far ahead an alert may be scheduled.
pub const MAX_SCHEDULE_AHEAD_DAYS: i64 = 30;
pub const DEFAULT_LABEL: &str = "SON DAKİKA";

macro_rules! text_newtype {
    ($name:ident, $field:literal, $max:expr, $lines:expr) => {
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);
        impl $name {
            pub fn parse(value: &str) -> Result<Self, FieldError> {
                bounded_text($field, value, $max, $lines).map(Self)
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

text_newtype!(Headline, "headline", MAX_HEADLINE_CHARS, Lines::Single);
text_newtype!(Summary, "summary", MAX_SUMMARY_CHARS, Lines::Multi);
text_newtype!(Label, "label", MAX_LABEL_CHARS, Lines::Single);
text_newtype!(ArticleId, "article_id", MAX_ARTICLE_ID_CHARS, Lines::Single);
text_newtype!(Reason, "reason", MAX_REASON_CHARS, Lines::Multi);

/// A topic slug: lowercase ASCII letters, digits and dashes (`gundem`, `burdur`, `spor`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(pattern = "^[a-z0-9][a-z0-9-]{0,39}$", example = "burdur")]
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
            // The value is echoed so the editor sees which one; a long one only in part, so an
            // error never carries a stranger's 60 KB back (or into a log line).
            let shown: String = value.chars().take(MAX_TOPIC_CHARS + 1).collect();
            let more = if shown.len() < value.len() { "…" } else { "" };
            Err(FieldError::new(
                field,
                format!(
                    "`{shown}{more}` is not a topic slug: use 1-{MAX_TOPIC_CHARS} lowercase ASCII \
                     letters, digits and dashes, e.g. `gundem` for \"Gündem\""
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

/// Where an alert is in its life (`alerts.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum AlertStatus {
    /// Waiting for its `send_at`.
    Scheduled,
    Live,
    Retracted,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Live => "live",
            Self::Retracted => "retracted",
        }
    }

    /// Parses a `status` query parameter.
    pub fn parse(field: &'static str, value: &str) -> Result<Self, FieldError> {
        match value {
            "scheduled" => Ok(Self::Scheduled),
            "live" => Ok(Self::Live),
            "retracted" => Ok(Self::Retracted),
            _ => Err(FieldError::new(field, "must be one of scheduled, live, retracted")),
        }
    }
}

/// RFC 8030 urgency (`alerts.urgency`, and the push's `Urgency` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
#[sqlx(type_name = "text", rename_all = "kebab-case")]
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
///
/// Its documented schema (OpenAPI) allows all that [`NewAlertRequest::parse`] accepts, since the
/// fuzzer sends what the schema forbids and expects a refusal; its limits are the constants above
/// (a test checks they agree). So URLs are not `format: uri`: browsers' URLs (WHATWG) are more.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAlertRequest {
    /// The alert's text: no control characters.
    #[schema(required = true, value_type = String, min_length = 1, max_length = 200,
             example = "Burdur'da 4,2 büyüklüğünde deprem")]
    pub headline: Option<String>,
    /// The article: an http or https URL as browsers read it (WHATWG), stored serialised.
    #[schema(required = true, value_type = String, format = Uri, pattern = "^[Hh][Tt][Tt][Pp][Ss]?:", max_length = 2048,
             example = "https://www.example.com.tr/haber/burdur-deprem")]
    pub url: Option<String>,
    /// Newlines allowed.
    #[schema(min_length = 1, max_length = 500)]
    pub summary: Option<String>,
    /// A picture for the notification: an https URL (WHATWG), stored serialised.
    #[schema(format = Uri, pattern = "^[Hh][Tt][Tt][Pp][Ss]:", max_length = 2048)]
    pub image: Option<String>,
    /// The CMS's id of the article: a second alert for it while one is live returns that one.
    #[schema(min_length = 1, max_length = 200)]
    pub article_id: Option<String>,
    /// Who gets it; empty: everyone.
    #[serde(default)]
    #[schema(value_type = Vec<Topic>, max_items = 20)]
    pub topics: Vec<String>,
    /// Shown before the headline; default `SON DAKİKA`.
    #[schema(min_length = 1, max_length = 40)]
    pub label: Option<String>,
    /// How long the alert is worth delivering; default `default_ttl_secs`.
    #[schema(minimum = 60, maximum = 2419200)]
    pub ttl_seconds: Option<i64>,
    /// Default `high`.
    #[schema(value_type = Option<Urgency>)]
    pub urgency: Option<String>,
    /// An RFC 3339 time (`2026-11-27T18:30:00+03:00`); a future time (at most 30 days ahead)
    /// schedules the alert.
    #[schema(format = DateTime)]
    pub send_at: Option<String>,
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
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
pub struct CorrectionRequest {
    #[schema(min_length = 1, max_length = 200)]
    pub headline: Option<String>,
    /// `null` removes it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 500)]
    pub summary: Option<Option<String>>,
    #[schema(format = Uri, pattern = "^[Hh][Tt][Tt][Pp][Ss]?:", max_length = 2048)]
    pub url: Option<String>,
    /// `null` removes it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, format = Uri, pattern = "^[Hh][Tt][Tt][Pp][Ss]:", max_length = 2048)]
    pub image: Option<Option<String>>,
    /// What readers' devices that were sent the alert get (default `quiet`).
    pub push: Option<DevicePush>,
}

/// How a correction reaches the devices that were sent the alert. Pushes of the alert still
/// pending go out corrected whatever the choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DevicePush {
    /// Replace the notification without a second sound or vibration (where the platform
    /// allows): a fixed typo or a sharper headline should not wake a million phones again.
    #[default]
    Quiet,
    /// Replace it and alert again: the news itself changed (a casualty figure, a place).
    Renotify,
    /// Tickers only: devices keep what they were sent.
    None,
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
    pub push: DevicePush,
}

/// The fields of a correction of which at least one must be given (the OpenAPI document says so
/// as an `anyOf` of their `required`).
pub const CORRECTED_FIELDS: [&str; 4] = ["headline", "summary", "url", "image"];

impl CorrectionRequest {
    pub fn parse(self) -> Result<Correction, Vec<FieldError>> {
        if self.headline.is_none() && self.summary.is_none() && self.url.is_none() && self.image.is_none() {
            return Err(vec![FieldError::new(
                "body",
                format!("give at least one of {} to correct", CORRECTED_FIELDS.join(", ")),
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
            push: self.push.unwrap_or_default(),
        })
    }
}

/// The optional JSON body of `POST /api/v1/alerts/{id}/retract`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetractRequest {
    /// Why, for the record and the tickers.
    #[schema(min_length = 1, max_length = 500)]
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
    use crate::validation::MAX_URL_BYTES;

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
        let s = "İzmir'de şiddetli “rüzgâr” ğüöç ‘ı’ — 4,2";
        assert_eq!(Headline::parse(s).unwrap().as_str(), s);
        let multi = "AFAD açıkladı.\n\nCan kaybı yok.";
        assert_eq!(Summary::parse(multi).unwrap().as_str(), multi);
        // Emoji sequences keep their joiners and a trailing variation selector.
        for emoji in ["Kırmızı alarm ❤️ 👩‍🚒", "Kırmızı alarm ❤️"] {
            assert_eq!(Headline::parse(emoji).unwrap().as_str(), emoji);
        }
    }

    #[test]
    fn hostile_text_is_refused_naming_the_field() {
        for (value, why) in [
            ("a\u{0}b", "control"),
            ("a\u{7}b", "control"),
            ("a\u{7F}b", "control"),
            ("a\u{85}b", "control"),
            ("a\u{9B}b", "control"),
            ("a\tb", "control"),
            ("a\nb", "line break"),
            ("a\rb", "line break"),
            ("a\u{2028}b", "line break"),
            ("evil\u{202E}gpj.exe", "bidirectional"),
            ("a\u{202A}b", "bidirectional"),
            ("a\u{2066}b\u{2069}", "bidirectional"),
            (" Başlık", "begin or end"),
            ("Başlık ", "begin or end"),
            ("\u{A0}Başlık", "begin or end"),
            ("\u{200B}Başlık", "begin or end"),
            ("Başlık\u{FEFF}", "begin or end"),
            ("\u{200B}\u{200C}\u{200D}", "visible"),
            ("\u{2800}\u{2800}", "visible"),
            ("\u{3164}", "visible"),
            ("\u{115F}\u{1160}", "visible"),
            ("\u{FFA0}", "visible"),
            ("   ", "visible"),
            ("", "empty"),
        ] {
            let err = Headline::parse(value).unwrap_err();
            assert_eq!(err.field, "headline");
            assert!(err.message.contains(why), "{value:?}: {}", err.message);
        }
        // Multi-line fields take `\n` but nothing else of the kind.
        assert!(Summary::parse("a\nb").is_ok());
        for bad in ["a\r\nb", "a\tb", "a\n", "\nb", "a\u{0}b", "\n\n"] {
            assert_eq!(Summary::parse(bad).unwrap_err().field, "summary", "{bad:?}");
        }
        assert_eq!(Reason::parse("x\u{202E}y").unwrap_err().field, "reason");
    }

    #[test]
    fn urls_are_stored_serialised_and_bounded_in_bytes() {
        let u = WebUrl::parse("url", "HTTPS://Www.Example.com.tr/haber/görüşme?q=ş#ç", false).unwrap();
        assert_eq!(u.as_str(), "https://www.example.com.tr/haber/g%C3%B6r%C3%BC%C5%9Fme?q=%C5%9F#%C3%A7");
        for (bad, why) in [
            (" https://www.example.com.tr/x", "begin or end"),
            ("\thttps://www.example.com.tr/x", "control"),
            ("https://www.example.com.tr/x\n", "line break"),
            ("https://www.example.com.tr/a\nb", "line break"),
            ("https://www.example.com.tr/a\u{0}b", "control"),
            ("https://www.example.com.tr/\u{202E}gpj.exe", "bidirectional"),
        ] {
            let err = WebUrl::parse("url", bad, false).unwrap_err();
            assert!(err.message.contains(why), "{bad:?}: {}", err.message);
        }
        // 1,000 CJK characters are 1,000 characters but 9,000 bytes once serialised.
        let cjk = format!("https://www.example.com.tr/{}", "漢".repeat(1000));
        let err = WebUrl::parse("url", &cjk, false).unwrap_err();
        assert!(err.message.contains("bytes once serialised"), "{}", err.message);
        // What `dedupe_key` can hold stays below PostgreSQL's btree row limit.
        assert!("url:".len() + MAX_URL_BYTES < 2704);
        assert!("article:".len() + 4 * MAX_ARTICLE_ID_CHARS < 2704);
    }

    #[test]
    fn topics_are_sorted_deduplicated_and_ascii() {
        let t = Topics::parse("topics", &["spor", "burdur", "spor"]).unwrap();
        assert_eq!(t.to_strings(), vec!["burdur", "spor"]);
        let e = Topics::parse("topics", &["gündem"]).unwrap_err();
        assert_eq!(e.field, "topics[0]");
        let e = Topics::parse("topics", &["x".repeat(50_000)]).unwrap_err();
        assert!(e.message.len() < 200, "a long value is echoed only in part");
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
