//! Feed text made fit for an alert: HTML tags stripped, entities decoded, control and bidi
//! characters dropped, whitespace collapsed, over-long text shortened on a character (and if
//! possible a word) boundary. Letters are never changed: "İstanbul'da ışık" stays exactly that.

/// Elements whose content is not text a reader should see.
const HIDDEN: &[&str] = &["script", "style", "head", "template", "noscript", "iframe", "object"];

/// Elements that break a line: they become a space. Inline ones (`em`, `a`, `span`) join
/// their neighbours, so "<em>Şanlıurfa</em>'da" stays one word.
const BLOCKS: &[&str] = &[
    "p",
    "br",
    "div",
    "li",
    "ul",
    "ol",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "tr",
    "td",
    "th",
    "table",
    "blockquote",
    "hr",
    "img",
    "figure",
    "figcaption",
    "section",
    "article",
    "header",
    "footer",
    "pre",
];

/// How much of an item's HTML is read (the rest is never shown).
const MAX_HTML_BYTES: usize = 256 * 1024;

/// Plain text of an HTML fragment (or of plain text: it passes through, entities decoded).
/// Block tags become word breaks; comments, CDATA markers and the content of [`HIDDEN`] elements go.
pub fn html_to_text(html: &str) -> String {
    // A title keeps 200 characters and a summary 500: reading more than the first
    // MAX_HTML_BYTES of an item's HTML only costs time (a hostile item is megabytes).
    let mut end = html.len().min(MAX_HTML_BYTES);
    while !html.is_char_boundary(end) {
        end -= 1;
    }
    let html = &html[..end];
    let mut out = String::with_capacity(html.len().min(4096));
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        out.push_str(&decode_entities(&rest[..lt]));
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |end| &after[end + 3..]);
            continue;
        }
        if let Some(after) = rest.strip_prefix("<![CDATA[") {
            let end = after.find("]]>").unwrap_or(after.len());
            out.push_str(&after[..end]);
            rest = after.get(end + 3..).unwrap_or("");
            continue;
        }
        let is_tag =
            rest[1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '/' || c == '!' || c == '?');
        if !is_tag {
            // A bare `<` in text ("3 < 5").
            out.push('<');
            rest = &rest[1..];
            continue;
        }
        let end = rest.find('>').map_or(rest.len(), |i| i + 1);
        let name: String = rest[1..end]
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        let closing = rest[1..].starts_with('/');
        rest = &rest[end..];
        if BLOCKS.contains(&name.as_str()) || HIDDEN.contains(&name.as_str()) {
            out.push(' ');
        }
        if !closing && HIDDEN.contains(&name.as_str()) {
            let close = format!("</{name}");
            rest = find_ci(rest, &close).map_or("", |i| {
                let after = &rest[i..];
                after.find('>').map_or("", |j| &after[j + 1..])
            });
        }
    }
    out.push_str(&decode_entities(rest));
    clean(&out)
}

/// Where `needle` (ASCII, lowercase) first occurs in `hay`, ignoring ASCII case. It stops at the
/// first match and copies nothing, so finding each hidden element's end costs the bytes up to
/// it: lowercasing the whole rest for each (`<head></head>` repeated) was quadratic.
fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    let (hay, needle) = (hay.as_bytes(), needle.as_bytes());
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (0..=hay.len() - needle.len()).find(|&i| hay[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

/// The longest entity reference decoded, `&` and `;` excluded (`&#x1F600;` is 8).
const MAX_ENTITY_BYTES: usize = 12;

/// Decodes `&name;`, `&#123;` and `&#x1F;` references; an unknown or malformed one stays as
/// written.
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        // An entity's `;` comes within 12 bytes: looking further (to the end of the text, for
        // each `&` of a text without `;`) made this quadratic.
        let semi = rest.as_bytes()[1..].iter().take(MAX_ENTITY_BYTES).position(|&b| b == b';').map(|i| i + 1);
        let decoded = semi.and_then(|i| entity(&rest[1..i]).map(|c| (c, i)));
        match decoded {
            Some((c, i)) => {
                out.push(c);
                rest = &rest[i + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        return char::from_u32(code).filter(|&c| c != '\0');
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        "lsquo" => '‘',
        "rsquo" => '’',
        "sbquo" => '‚',
        "ldquo" => '“',
        "rdquo" => '”',
        "bdquo" => '„',
        "laquo" => '«',
        "raquo" => '»',
        "bull" => '•',
        "middot" => '·',
        "deg" => '°',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "euro" => '€',
        "times" => '×',
        "shy" => '\u{ad}',
        // Turkish letters (HTML5 names; HTML 4 had only the Latin-1 ones).
        "ccedil" => 'ç',
        "Ccedil" => 'Ç',
        "ouml" => 'ö',
        "Ouml" => 'Ö',
        "uuml" => 'ü',
        "Uuml" => 'Ü',
        "gbreve" => 'ğ',
        "Gbreve" => 'Ğ',
        "scedil" => 'ş',
        "Scedil" => 'Ş',
        "imath" | "inodot" => 'ı',
        "Idot" => 'İ',
        "acirc" => 'â',
        "Acirc" => 'Â',
        "icirc" => 'î',
        "ucirc" => 'û',
        _ => return None,
    })
}

/// One line of visible text: control, format and bidi characters dropped (a feed is not
/// trusted to steer display), every run of whitespace one space, no space at either end.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        if c.is_whitespace() || c == '\u{2028}' || c == '\u{2029}' {
            space = !out.is_empty();
            continue;
        }
        if c.is_control() || is_steering(c) {
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    out
}

/// Invisible characters that only steer rendering (zero-width, bidi, BOM, soft hyphen).
fn is_steering(c: char) -> bool {
    matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}')
}

/// At most `max` characters: if longer, cut at the last word break in the final fifth (else
/// anywhere on a character boundary) and end with `…`.
pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let keep: String = s.chars().take(max.saturating_sub(1)).collect();
    let cut = keep
        .rfind(' ')
        .filter(|&i| keep[..i].chars().count() * 5 >= max * 4)
        .map_or(keep.as_str(), |i| &keep[..i]);
    format!("{}…", cut.trim_end_matches([' ', ',', ';', ':', '-']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_stripped_and_entities_decoded_with_turkish_exact() {
        let html = "<p>İstanbul&#39;da <b>şiddetli</b> yağış&nbsp;&amp; fırtına&hellip;</p>\
                    <script>alert('x')</script><!-- yorum --><p>AFAD &ldquo;dikkat&rdquo; dedi.</p>";
        assert_eq!(html_to_text(html), "İstanbul'da şiddetli yağış & fırtına… AFAD “dikkat” dedi.");
        assert_eq!(
            html_to_text("&Ccedil;ANAKKALE &scedil; &#x130;zmir &Idot; &#305;"),
            "ÇANAKKALE ş İzmir İ ı"
        );
        assert_eq!(html_to_text("3 < 5 &unknown; & &#0; ok"), "3 < 5 &unknown; & &#0; ok");
        assert_eq!(html_to_text("<STYLE>p{}</STYLE>Metin<br/>ikinci"), "Metin ikinci");
    }

    #[test]
    fn hostile_text_is_read_whole_where_it_is_shown() {
        // Each `&` without `;` and each hidden element is looked at once (no pass to the end of
        // the text for each), and only the first MAX_HTML_BYTES are read at all.
        let amps = "&".repeat(2 << 20);
        assert_eq!(html_to_text(&amps), "&".repeat(MAX_HTML_BYTES));
        let heads = format!("{}Başlık", "<head></head>".repeat(1000));
        assert_eq!(html_to_text(&heads), "Başlık");
        let cut = format!("{}{}", "a".repeat(MAX_HTML_BYTES - 1), "ş");
        assert_eq!(html_to_text(&cut), "a".repeat(MAX_HTML_BYTES - 1), "cut on a character boundary");
    }

    #[test]
    fn steering_characters_and_line_breaks_go() {
        assert_eq!(clean("  a\u{202e}b\u{200b}c\r\n\td\u{0}  "), "abc d");
    }

    #[test]
    fn shortening_keeps_characters_whole_and_prefers_word_breaks() {
        let s = "Çığ düştü ".repeat(30);
        let short = shorten(s.trim(), 50);
        assert!(short.chars().count() <= 50, "{short}");
        assert!(short.ends_with('…'));
        assert!(short.starts_with("Çığ düştü Çığ"));
        assert!(!short.contains(" …"));
        let long_word = "ş".repeat(300);
        let short = shorten(&long_word, 200);
        assert_eq!(short.chars().count(), 200);
        assert_eq!(shorten("kısa", 200), "kısa");
    }
}
