//! Text from outside made safe to store and to log: what servers we fetch from or post to answer
//! (bodies, error messages, headers), and error messages that carry their words.
//!
//! Such text may hold a NUL (PostgreSQL refuses it in `text`, and the write that carries it is
//! lost), ESC sequences that steer a terminal reading the log, line breaks that forge log lines,
//! and bidi overrides that make a log line or the console read differently from what it holds.
//! [`SafeText`] is the only way to hold it where it is stored or logged: it has none of those,
//! and a bounded length. Letters are never changed ("İstanbul'da ışık" stays exactly that).
//!
//! This module imports nothing of the crate, so that every module may use it.

use std::fmt;

/// The bound when a caller has no better one: enough of an error message to act on.
pub const MAX_CHARS: usize = 300;

/// Text from outside, made safe: no NUL, no control character (C0, DEL, C1; line breaks and
/// tabs become one space), no ESC sequence, no bidi override or isolate, no invisible
/// zero-width character; no space at either end; at most the bound of characters, cut on a
/// character boundary and ended with `…` when longer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SafeText(String);

impl SafeText {
    /// `text` made safe, at most [`MAX_CHARS`] characters.
    pub fn new(text: impl AsRef<str>) -> Self {
        Self::bounded(text.as_ref(), MAX_CHARS)
    }

    /// `text` made safe, at most `max_chars` characters (at least 1). One linear pass that stops
    /// once `max_chars` are kept; dropped characters (controls, escape sequences, invisible ones)
    /// are still read, so text of unbounded length costs time in proportion to it.
    pub fn bounded(text: &str, max_chars: usize) -> Self {
        let max_chars = max_chars.max(1);
        let mut out = String::with_capacity(text.len().min(max_chars * 4));
        let mut kept = 0usize;
        let mut space = false;
        let mut cut = false;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                skip_escape_sequence(&mut chars);
                continue;
            }
            if c.is_whitespace() {
                space = kept > 0;
                continue;
            }
            if c.is_control() || is_steering(c) {
                continue;
            }
            let need = if space { 2 } else { 1 };
            if kept + need > max_chars {
                cut = true;
                break;
            }
            if space {
                out.push(' ');
                kept += 1;
                space = false;
            }
            out.push(c);
            kept += 1;
        }
        if cut {
            // Room for the ellipsis: drop the last character (and a space it leaves).
            while kept + 1 > max_chars {
                out.pop();
                kept -= 1;
            }
            let trimmed = out.trim_end().len();
            out.truncate(trimmed);
            out.push('…');
        }
        Self(out)
    }

    /// Bytes from outside (an answer's body), read as UTF-8 (invalid sequences become `�`).
    /// Only the first `4 × max_chars` bytes are looked at: a character is at most 4 bytes, so
    /// this is enough to fill the bound unless most of it is dropped.
    pub fn from_bytes(bytes: &[u8], max_chars: usize) -> Self {
        let head = &bytes[..bytes.len().min(max_chars.max(1).saturating_mul(4))];
        let mut s = Self::bounded(&String::from_utf8_lossy(head), max_chars);
        if head.len() < bytes.len() && !s.0.ends_with('…') && s.0.chars().count() >= max_chars {
            s.0.pop();
            s.0.push('…');
        }
        s
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for SafeText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for SafeText {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// After an ESC: a CSI (`ESC [ … final`) or OSC (`ESC ] … BEL` or `ESC ] … ESC \`) sequence is
/// skipped whole, so no half of it is left to read as text; any other escape drops one character.
fn skip_escape_sequence(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.peek() {
        Some('[') => {
            chars.next();
            // Parameters and intermediates, then one final byte in @..~.
            for c in chars.by_ref() {
                if ('\u{40}'..='\u{7e}').contains(&c) {
                    break;
                }
            }
        }
        Some(']') => {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '\u{7}' {
                    break;
                }
                if c == '\u{1b}' {
                    if chars.peek() == Some(&'\\') {
                        chars.next();
                    }
                    break;
                }
            }
        }
        Some(_) => {
            chars.next();
        }
        None => {}
    }
}

/// Invisible characters that only steer rendering: bidi marks, embeddings, overrides and
/// isolates; zero-width characters; the byte order mark; the soft hyphen; interlinear
/// annotation marks; line and paragraph separators (handled as space before this).
fn is_steering(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{61c}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_and_control_characters_go_and_line_breaks_become_one_space() {
        assert_eq!(SafeText::new("bad\0gateway").as_str(), "badgateway");
        assert_eq!(SafeText::new("</chan\0nel>").as_str(), "</channel>");
        assert_eq!(SafeText::new("a\u{7}b\u{7f}c\u{85}d\u{9b}e").as_str(), "abc de");
        assert_eq!(SafeText::new("line one\r\nFAKE log line\n\tx").as_str(), "line one FAKE log line x");
        assert_eq!(SafeText::new("  \n padded \t ").as_str(), "padded");
    }

    #[test]
    fn escape_sequences_go_whole() {
        assert_eq!(SafeText::new("\u{1b}[31mkırmızı\u{1b}[0m").as_str(), "kırmızı");
        assert_eq!(SafeText::new("a\u{1b}]0;title\u{7}b").as_str(), "ab");
        assert_eq!(SafeText::new("a\u{1b}]8;;http://x\u{1b}\\b").as_str(), "ab");
        assert_eq!(SafeText::new("a\u{1b}cb").as_str(), "ab");
        assert_eq!(SafeText::new("sonda\u{1b}").as_str(), "sonda");
    }

    #[test]
    fn bidi_overrides_isolates_and_invisible_characters_go() {
        let s = "\u{202e}gnp.exe\u{202c} \u{2066}x\u{2069}\u{2067}y\u{2068}z\u{200b}\u{feff}\u{200f}\u{61c}";
        assert_eq!(SafeText::new(s).as_str(), "gnp.exe xyz");
    }

    #[test]
    fn turkish_text_is_unchanged() {
        let s = "İıŞşĞğÜüÖöÇç — İstanbul'da ışık, “Çanakkale” ve Ağrı’da kar…";
        assert_eq!(SafeText::new(s).as_str(), s);
    }

    #[test]
    fn long_text_is_bounded_on_a_character_boundary_with_an_ellipsis() {
        let s = "ş".repeat(1000);
        let t = SafeText::bounded(&s, 10);
        assert_eq!(t.as_str(), format!("{}…", "ş".repeat(9)));
        assert_eq!(t.as_str().chars().count(), 10);
        let t = SafeText::bounded("abc def", 5);
        assert_eq!(t.as_str(), "abc…", "no space before the ellipsis");
        assert_eq!(SafeText::bounded("abcde", 5).as_str(), "abcde", "at the bound: whole");
        assert_eq!(SafeText::new("x".repeat(5000)).as_str().chars().count(), MAX_CHARS);
    }

    #[test]
    fn bytes_are_read_lossily_and_bounded() {
        assert_eq!(SafeText::from_bytes(b"bad\0gateway\xff", 300).as_str(), "badgateway\u{fffd}");
        let long = "İ".repeat(10_000);
        let t = SafeText::from_bytes(long.as_bytes(), 20);
        assert_eq!(t.as_str().chars().count(), 20);
        assert!(t.as_str().ends_with('…'));
        // A multi-byte character cut by the byte bound is not half kept.
        let t = SafeText::from_bytes("ğğğ".as_bytes(), 1);
        assert_eq!(t.as_str(), "…");
    }
}
