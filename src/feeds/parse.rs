//! A fetched feed document → the items an alert can be made of. Any of RSS 0.9x/1.0/2.0,
//! Atom 1.0 and JSON Feed 1.x (feed-rs detects which). Everything taken from an item passes
//! through [`super::text`] and the alert domain's own parsers, so a hostile feed yields either a
//! valid draft or a reason it was skipped, never a value the rest of the service cannot take.

use chrono::{DateTime, Utc};
use url::Url;

use super::text::{html_to_text, shorten};
use crate::{
    alerts::domain::{
        ArticleId, Headline, MAX_ARTICLE_ID_CHARS, MAX_HEADLINE_CHARS, MAX_SUMMARY_CHARS, Summary,
    },
    validation::WebUrl,
};

/// Deepest element nesting accepted. Feeds nest four or five levels; the parser recurses per
/// level, so a document of a million nested elements must be refused before it is parsed.
const MAX_DEPTH: usize = 64;
/// Most items taken from one document (a feed lists its newest 10 to 50).
pub const MAX_ITEMS: usize = 200;
/// Why a parse past its deadline gave up.
pub const TOO_SLOW: &str = "the feed is too slow to parse: it was given up after its deadline";

/// One item, ready to be a draft or an alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The guid (Atom id, JSON Feed id), else the link; hashed when longer than an
    /// `article_id` may be.
    pub article_id: ArticleId,
    pub headline: Headline,
    pub summary: Option<Summary>,
    pub url: WebUrl,
    pub image: Option<WebUrl>,
    pub published_at: Option<DateTime<Utc>>,
    /// Category and tag terms, as written.
    pub categories: Vec<String>,
}

/// An item that could not become an alert, and why (kept so the admin sees it).
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub article_id: Option<String>,
    pub why: String,
}

#[derive(Debug, Default)]
pub struct Parsed {
    pub items: Vec<Item>,
    pub skipped: Vec<Skipped>,
}

/// Parses a document fetched from `base` (relative links resolve against it).
#[cfg(test)]
pub fn parse(body: &[u8], base: &Url) -> Result<Parsed, String> {
    parse_until(body, base, None)
}

/// [`parse`], giving up between items once `deadline` has passed: whoever waited for the result
/// has stopped waiting (see [`super::bounded`]), so the thread stops spending CPU on it.
pub fn parse_until(body: &[u8], base: &Url, deadline: Option<std::time::Instant>) -> Result<Parsed, String> {
    if depth_exceeds(body, MAX_DEPTH) {
        return Err(format!("the document nests elements more than {MAX_DEPTH} deep; it is not a feed"));
    }
    let parser = feed_rs::parser::Builder::new()
        .base_uri(Some(base.as_str()))
        // No made-up ids: an item without a guid is known by its link (see `article_id`).
        .id_generator(|_, _, _| String::new())
        .build();
    let feed = parser.parse(body).map_err(|e| describe(&e))?;
    let json_images = json_feed_images(body);
    let mut parsed = Parsed::default();
    for entry in feed.entries.into_iter().take(MAX_ITEMS) {
        if deadline.is_some_and(|d| std::time::Instant::now() > d) {
            return Err(TOO_SLOW.into());
        }
        let json_image = json_images.get(entry.id.as_str()).cloned();
        match item(entry, base, json_image) {
            Ok(i) => parsed.items.push(i),
            Err(s) => parsed.skipped.push(s),
        }
    }
    Ok(parsed)
}

fn describe(e: &feed_rs::parser::ParseFeedError) -> String {
    use feed_rs::parser::ParseFeedError as E;
    match e {
        E::ParseError(kind) => format!("the document is not an RSS, Atom or JSON feed ({kind})"),
        E::IoError(e) => format!("the document could not be read ({e})"),
        E::JsonSerde(e) => format!("the document is not valid JSON ({e})"),
        E::JsonUnsupportedVersion(v) => format!("unsupported JSON Feed version `{v}`"),
        E::XmlReader(e) => format!("the document is not well-formed XML ({e})"),
    }
}

/// JSON Feed's `image` (or `banner_image`) per item id, which feed-rs 2 does not read.
fn json_feed_images(body: &[u8]) -> std::collections::HashMap<String, String> {
    let starts_json = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let items = starts_json
        .then(|| serde_json::from_slice::<serde_json::Value>(body).ok())
        .flatten()
        .and_then(|v| v.get("items").and_then(|i| i.as_array()).cloned())
        .unwrap_or_default();
    items
        .iter()
        .filter_map(|i| {
            let id = match i.get("id")? {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => return None,
            };
            let image = i.get("image").or_else(|| i.get("banner_image"))?.as_str()?;
            Some((id, image.to_string()))
        })
        .collect()
}

fn item(entry: feed_rs::model::Entry, base: &Url, json_image: Option<String>) -> Result<Item, Skipped> {
    let link = entry
        .links
        .iter()
        .find(|l| l.rel.as_deref().is_none_or(|r| r == "alternate"))
        .or(entry.links.first())
        .and_then(|l| base.join(l.href.trim()).ok());
    let guid = entry.id.trim().to_string();
    let id_source = if guid.is_empty() { link.as_ref().map(|l| l.to_string()) } else { Some(guid) };
    let skip = |why: String| Skipped { article_id: id_source.clone(), why };
    let Some(id_source) = id_source.clone() else {
        return Err(skip("the item has neither a guid nor a link".into()));
    };
    let article_id = ArticleId::parse(&article_id(&id_source))
        .map_err(|e| skip(format!("its guid cannot be an article id: {}", e.message)))?;

    // A guid that is a permalink stands in for a missing link (RSS `guid isPermaLink`).
    let url = link
        .or_else(|| Url::parse(&id_source).ok().filter(|u| matches!(u.scheme(), "http" | "https")))
        .ok_or_else(|| skip("the item has no link to an article".into()))?;
    let url =
        WebUrl::parse("url", url.as_str(), false).map_err(|e| skip(format!("its link {}", e.message)))?;

    let title = entry.title.as_ref().map(|t| html_to_text(&t.content)).unwrap_or_default();
    let body = entry
        .summary
        .as_ref()
        .map(|s| s.content.clone())
        .or_else(|| entry.content.as_ref().and_then(|c| c.body.clone()))
        .map(|s| html_to_text(&s))
        .unwrap_or_default();
    let headline_text = if title.is_empty() { body.clone() } else { title };
    if headline_text.is_empty() {
        return Err(skip("the item has no title".into()));
    }
    let headline = Headline::parse(&shorten(&headline_text, MAX_HEADLINE_CHARS))
        .map_err(|e| skip(format!("its title {}", e.message)))?;
    let summary = if body.is_empty() || body == headline_text {
        None
    } else {
        Summary::parse(&shorten(&body, MAX_SUMMARY_CHARS)).ok()
    };
    let image = image(&entry, base, json_image);
    let categories =
        entry.categories.iter().map(|c| c.label.clone().unwrap_or_else(|| c.term.clone())).collect();
    Ok(Item {
        article_id,
        headline,
        summary,
        url,
        image,
        published_at: entry.published.or(entry.updated),
        categories,
    })
}

/// The id as an `article_id`: itself, or `sha256:<hex>` of it when too long.
fn article_id(source: &str) -> String {
    let cleaned = super::text::clean(source);
    if cleaned.chars().count() <= MAX_ARTICLE_ID_CHARS && !cleaned.is_empty() {
        cleaned
    } else {
        use sha2::{Digest, Sha256};
        format!("sha256:{}", hex::encode(Sha256::digest(source.as_bytes())))
    }
}

/// The first https picture the item offers (media:content or :thumbnail, an image enclosure,
/// JSON Feed's `image`). Notifications need https; an http picture is left out.
fn image(entry: &feed_rs::model::Entry, base: &Url, json_image: Option<String>) -> Option<WebUrl> {
    let mut candidates: Vec<String> = json_image.into_iter().collect();
    for m in &entry.media {
        for c in &m.content {
            let is_image = c.content_type.as_ref().is_none_or(|t| t.ty().as_str() == "image");
            if is_image && let Some(u) = &c.url {
                candidates.push(u.to_string());
            }
        }
        candidates.extend(m.thumbnails.iter().map(|t| t.image.uri.clone()));
    }
    candidates.into_iter().find_map(|c| {
        let u = base.join(&c).ok()?;
        WebUrl::parse("image", u.as_str(), true).ok()
    })
}

/// Whether elements nest deeper than `max` (a cheap scan before the recursive parser runs).
/// Comments, CDATA, declarations and processing instructions do not count; neither does a
/// JSON document (its parser, serde_json, has its own recursion limit).
fn depth_exceeds(doc: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while i < doc.len() {
        if doc[i] != b'<' {
            i += 1;
            continue;
        }
        let rest = &doc[i..];
        let skip_to = |end: &[u8]| rest.windows(end.len()).position(|w| w == end).map(|p| i + p + end.len());
        let next = if rest.starts_with(b"<!--") {
            skip_to(b"-->")
        } else if rest.starts_with(b"<![CDATA[") {
            skip_to(b"]]>")
        } else if rest.starts_with(b"<?") {
            skip_to(b"?>")
        } else if rest.starts_with(b"<!") {
            skip_to(b">")
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            skip_to(b">")
        } else {
            // An opening tag: find its end outside quoted attribute values.
            let mut quote = None;
            let mut end = None;
            for (j, &b) in rest.iter().enumerate().skip(1) {
                match (quote, b) {
                    (Some(q), _) if b == q => quote = None,
                    (Some(_), _) => {}
                    (None, b'"' | b'\'') => quote = Some(b),
                    (None, b'>') => {
                        end = Some(j);
                        break;
                    }
                    _ => {}
                }
            }
            if let Some(j) = end
                && rest[j - 1] != b'/'
            {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            end.map(|j| i + j + 1)
        };
        match next {
            Some(n) => i = n,
            None => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://www.example.com.tr/category/son-dakika/feed/").unwrap()
    }

    #[test]
    fn rss_2_items_with_cdata_and_html() {
        let rss = r#"<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel><title>Haber</title>
<item><title><![CDATA[SON DAKİKA: İzmir'de 4,9 büyüklüğünde deprem]]></title>
<link>https://www.example.com.tr/haber/izmir-deprem</link>
<guid isPermaLink="false">https://www.example.com.tr/?p=123</guid>
<description><![CDATA[<p>AFAD&#8217;ın verilerine göre <b>Ödemiş</b> merkezli &amp; 7 km derinlikte.</p>]]></description>
<category>Son Dakika</category><category>Gündem</category>
<media:content url="https://cdn.example.com.tr/izmir.jpg" medium="image" type="image/jpeg"/>
<pubDate>Sun, 29 Nov 2026 09:30:00 +0300</pubDate></item>
</channel></rss>"#;
        let p = parse(rss.as_bytes(), &base()).unwrap();
        assert!(p.skipped.is_empty(), "{:?}", p.skipped);
        let i = &p.items[0];
        assert_eq!(i.headline.as_str(), "SON DAKİKA: İzmir'de 4,9 büyüklüğünde deprem");
        assert_eq!(
            i.summary.as_ref().unwrap().as_str(),
            "AFAD’ın verilerine göre Ödemiş merkezli & 7 km derinlikte."
        );
        assert_eq!(i.article_id.as_str(), "https://www.example.com.tr/?p=123");
        assert_eq!(i.url.as_str(), "https://www.example.com.tr/haber/izmir-deprem");
        assert_eq!(i.image.as_ref().unwrap().as_str(), "https://cdn.example.com.tr/izmir.jpg");
        assert_eq!(i.categories, ["Son Dakika", "Gündem"]);
        assert_eq!(i.published_at.unwrap().to_rfc3339(), "2026-11-29T06:30:00+00:00");
    }

    #[test]
    fn rss_0_91_and_1_0_parse() {
        let rss091 = r#"<rss version="0.91"><channel><title>t</title><link>https://x.example/</link>
<item><title>Eski biçim</title><link>https://x.example/a</link></item></channel></rss>"#;
        let p = parse(rss091.as_bytes(), &base()).unwrap();
        assert_eq!(p.items[0].article_id.as_str(), "https://x.example/a", "no guid: the link");
        let rdf = r#"<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/">
<channel rdf:about="https://x.example/"><title>t</title><link>https://x.example/</link><description>d</description></channel>
<item rdf:about="https://x.example/b"><title>RDF öğe</title><link>https://x.example/b</link></item></rdf:RDF>"#;
        let p = parse(rdf.as_bytes(), &base()).unwrap();
        assert_eq!(p.items[0].headline.as_str(), "RDF öğe");
    }

    #[test]
    fn atom_relative_links_resolve_against_the_feed() {
        let atom = r#"<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">
<title>Atom</title><id>urn:x</id><updated>2026-11-29T09:00:00Z</updated>
<entry><title type="html">&lt;em&gt;Şanlıurfa&lt;/em&gt;'da sel</title><id>urn:uuid:1</id>
<link href="/haber/sel" rel="alternate"/><updated>2026-11-29T09:00:00Z</updated>
<summary>Kısa özet</summary></entry></feed>"#;
        let p = parse(atom.as_bytes(), &base()).unwrap();
        assert_eq!(p.items[0].headline.as_str(), "Şanlıurfa'da sel");
        assert_eq!(p.items[0].url.as_str(), "https://www.example.com.tr/haber/sel");
        assert_eq!(p.items[0].article_id.as_str(), "urn:uuid:1");
    }

    #[test]
    fn json_feed_items_parse() {
        let json = r#"{"version":"https://jsonfeed.org/version/1.1","title":"J","items":[
{"id":"42","url":"https://x.example/42","title":"Ağrı'da kar","content_html":"<p>Yollar kapandı</p>",
 "image":"https://x.example/42.jpg","date_published":"2026-11-29T08:00:00+03:00","tags":["son-dakika"]}]}"#;
        let p = parse(json.as_bytes(), &base()).unwrap();
        let i = &p.items[0];
        assert_eq!((i.article_id.as_str(), i.headline.as_str()), ("42", "Ağrı'da kar"));
        assert_eq!(i.summary.as_ref().unwrap().as_str(), "Yollar kapandı");
        assert_eq!(i.categories, ["son-dakika"]);
        assert_eq!(i.image.as_ref().unwrap().as_str(), "https://x.example/42.jpg");
    }

    #[test]
    fn hostile_and_broken_documents_give_reasons() {
        let e = parse(b"<rss><channel><item><title>a</title></chan", &base()).unwrap_err();
        assert!(e.contains("not") && e.contains("XML") || e.contains("feed"), "{e}");
        let deep = format!("<rss>{}</rss>", "<a>".repeat(100_000));
        assert!(parse(deep.as_bytes(), &base()).unwrap_err().contains("nests"));
        assert!(parse(b"<html><body>hi</body></html>", &base()).is_err());
        assert!(parse(b"", &base()).is_err());
        // Items without what an alert needs are skipped with a reason, the rest kept.
        let rss = r#"<rss version="2.0"><channel><title>t</title>
<item><title>Bağlantısız</title><guid isPermaLink="false">x1</guid></item>
<item><title>   </title><link>https://x.example/e</link></item>
<item><title>İyi</title><link>javascript:alert(1)</link></item>
<item><title>Tamam</title><link>https://x.example/ok</link></item></channel></rss>"#;
        let p = parse(rss.as_bytes(), &base()).unwrap();
        assert_eq!(p.items.len(), 1);
        assert_eq!(p.skipped.len(), 3, "{:?}", p.skipped);
    }

    #[test]
    fn long_guids_are_hashed_and_long_titles_shortened() {
        let guid = format!("https://x.example/?id={}", "9".repeat(300));
        let title = "Çok uzun başlık ".repeat(40);
        let rss = format!(
            r#"<rss version="2.0"><channel><title>t</title><item><title>{title}</title><link>https://x.example/l</link><guid>{guid}</guid></item></channel></rss>"#
        );
        let p = parse(rss.as_bytes(), &base()).unwrap();
        assert!(p.items[0].article_id.as_str().starts_with("sha256:"));
        assert!(p.items[0].headline.as_str().chars().count() <= 200);
        assert!(p.items[0].headline.as_str().ends_with('…'));
    }
}
