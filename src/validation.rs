//! Parse, don't validate: the checks every request value passes at the edge, shared by every
//! domain (alerts, push subscriptions, feeds, webhooks, tokens, query parameters).
//!
//! Every text a stranger or an editor sends passes [`check_text`] first: the one byte-level
//! gate (control characters, bidi overrides, whitespace at the edges, invisible-only text).
//! Text is kept byte-exact (no trimming, no normalisation), so Turkish letters such as İ ı ş ğ
//! come back exactly as they were typed; lengths are counted in characters, not bytes ("İ" is
//! one character of two bytes). URLs are kept in their WHATWG-serialised form, the form every
//! browser and our push client would use anyway, and bounded in bytes after serialisation, so
//! nothing that reaches an index can exceed it.
//!
//! This module imports nothing of the crate: every domain may use it, it uses none.

use std::fmt;

use serde::{Deserialize, Serialize};
use url::Url;

pub const MAX_URL_CHARS: usize = 2048;
/// A serialised URL is ASCII (non-ASCII letters become `%XX` escapes, up to 12 bytes for one
/// character), so it is bounded in bytes as well. `url:` + this stays well below PostgreSQL's
/// btree row limit (2,704 bytes) on `alerts.dedupe_key`.
pub const MAX_URL_BYTES: usize = 2048;

/// One problem with one field of a request, in words an editor understands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field at fault, as a path into the request (`topics[2]`, `subscription.keys.auth`) or a
    /// header or query parameter name.
    #[schema(example = "headline")]
    pub field: String,
    /// What is wrong with it.
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

/// Whether a text field may span lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// Headlines, labels, ids, URLs, names: one line.
    Single,
    /// `summary` and a retraction's `reason`: `\n` is allowed inside, because an editor pastes a
    /// paragraph break and notifications and tickers show it (JSON escapes it in every frame).
    /// Only `\n`: a `\r` or a tab is a control character like any other.
    Multi,
}

/// Characters that reorder the text around them: embeddings and overrides (U+202A–U+202E) and
/// isolates (U+2066–U+2069). An override made a headline display a spoofed file name. The marks
/// U+200E/U+200F stay allowed: they change no order beyond their neighbour and mixed-script
/// text needs them.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Unicode's format characters (general category Cf): invisible, they only steer rendering.
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

/// Characters that show nothing: whitespace, format characters, and the letters and marks that
/// render blank (the Braille blank, the Hangul fillers, variation selectors, the combining
/// grapheme joiner, Khmer's inherent vowels, Mongolian's variation selectors).
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || is_format(c)
        || matches!(
            c,
            '\u{034F}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{2800}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FFA0}'
                | '\u{E0100}'..='\u{E01EF}'
        )
}

/// What may not stand at either end of a text: whitespace, format characters and blank
/// letters. Variation selectors and combining marks may (an emoji "❤️" ends in U+FE0F).
fn is_blank(c: char) -> bool {
    c.is_whitespace()
        || is_format(c)
        || matches!(c, '\u{115F}' | '\u{1160}' | '\u{2800}' | '\u{3164}' | '\u{FFA0}')
}

/// The byte-level gate for every text that reaches the database or a reader's screen. Refuses,
/// naming `field`: empty text; control characters (C0, DEL, C1; in [`Lines::Multi`] text `\n`
/// is allowed), and the Unicode line and paragraph separators; bidi embeddings, overrides and
/// isolates; whitespace or invisible characters at either end; text that is invisible
/// throughout (zero-width spaces, U+2800, Hangul fillers). Everything else, Turkish letters and
/// curly quotes included, passes untouched: this checks, it never rewrites.
pub fn check_text(field: &str, value: &str, lines: Lines) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    for (i, c) in value.chars().enumerate() {
        let newline_ok = lines == Lines::Multi && c == '\n';
        if (c.is_control() && !newline_ok) || matches!(c, '\u{2028}' | '\u{2029}') {
            let what = if c == '\n' || c == '\r' || c == '\u{2028}' || c == '\u{2029}' {
                "a line break"
            } else {
                "a control character"
            };
            return Err(FieldError::new(
                field,
                format!("must not contain {what} (U+{:04X} at character {})", c as u32, i + 1),
            ));
        }
        if is_bidi_control(c) {
            return Err(FieldError::new(
                field,
                format!(
                    "must not contain bidirectional embedding, override or isolate characters \
                     (U+{:04X} at character {}): they make text display in another order than \
                     it reads",
                    c as u32,
                    i + 1
                ),
            ));
        }
    }
    if value.chars().all(is_invisible) {
        return Err(FieldError::new(field, "must contain visible characters"));
    }
    let first = value.chars().next().expect("not empty");
    let last = value.chars().next_back().expect("not empty");
    if is_blank(first) || is_blank(last) {
        return Err(FieldError::new(field, "must not begin or end with whitespace or invisible characters"));
    }
    Ok(())
}

/// Text of bounded length that passes [`check_text`].
pub fn bounded_text(field: &str, value: &str, max: usize, lines: Lines) -> Result<String, FieldError> {
    let chars = value.chars().count();
    if chars > max {
        return Err(FieldError::new(field, format!("must be at most {max} characters (got {chars})")));
    }
    check_text(field, value, lines)?;
    Ok(value.to_string())
}

/// An absolute http(s) URL with a host, in its WHATWG-serialised form (what a browser's address
/// bar and our push payload use: Turkish letters in a path become `%C5%9F`, a host becomes
/// punycode). Stored serialised, so that what was validated is what is stored and compared:
/// the parser silently drops tabs and newlines and trims spaces, and those never reach the
/// database or a reader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WebUrl(String);

impl WebUrl {
    pub fn parse(field: &str, value: &str, https_only: bool) -> Result<Self, FieldError> {
        if value.chars().count() > MAX_URL_CHARS {
            return Err(FieldError::new(field, format!("must be at most {MAX_URL_CHARS} characters")));
        }
        check_text(field, value, Lines::Single)?;
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
        within_bytes(field, String::from(url), MAX_URL_BYTES).map(Self)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The byte bound of a URL once serialised (non-ASCII letters become `%XX` escapes, 6 to 12
/// bytes for one character): `serialised`, or the problem with `field`.
pub fn within_bytes(field: &str, serialised: String, max: usize) -> Result<String, FieldError> {
    if serialised.len() > max {
        return Err(FieldError::new(
            field,
            format!(
                "must be at most {max} bytes once serialised (got {}; a non-ASCII letter takes 6 \
                 to 12)",
                serialised.len()
            ),
        ));
    }
    Ok(serialised)
}

/// Collects every field's problem, not just the first, so that one answer names them all.
#[derive(Default)]
pub struct Problems(Vec<FieldError>);

impl Problems {
    /// The value, or `None` with its problem noted.
    pub fn take<T>(&mut self, r: Result<T, FieldError>) -> Option<T> {
        r.map_err(|e| self.0.push(e)).ok()
    }

    /// Parses a required field; a missing one is noted with what it is for (`why`).
    pub fn required<V, T>(
        &mut self,
        field: &str,
        why: &str,
        value: Option<V>,
        parse: impl FnOnce(V) -> Result<T, FieldError>,
    ) -> Option<T> {
        let parsed = match value {
            None => Err(FieldError::new(field, format!("is required: {why}"))),
            Some(v) => parse(v),
        };
        self.take(parsed)
    }

    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, Vec<FieldError>> {
        if self.0.is_empty() { Ok(value()) } else { Err(self.0) }
    }

    /// The problems noted (for a caller that found one of its values missing).
    pub fn into_errors(self) -> Vec<FieldError> {
        self.0
    }
}
