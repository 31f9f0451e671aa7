//! A feed as an admin registers it, parsed at the edge like an alert: past this module the URL
//! is fetchable, the topics are slugs, the interval respects the minimum.

use serde::{Deserialize, Serialize};
use url::Url;
use utoipa::ToSchema;

use super::parse::Item;
use crate::{
    alerts::domain::{DEFAULT_LABEL, Label, Topics},
    net::Outbound,
    validation::{FieldError, Lines, check_text},
};

pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_FILTER_CHARS: usize = 100;
/// The longest poll interval: a day.
pub const MAX_INTERVAL_SECS: u64 = 86_400;
/// A new feed's interval when none is given (or the minimum, if that is larger).
pub const DEFAULT_INTERVAL_SECS: u64 = 120;

/// What happens to a feed's new items. Stored as its name; a stored value that is neither is
/// an error when read, never taken for one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Mode {
    /// Items become drafts in the console; an editor sends one with a click.
    Suggest,
    /// Items are flagged as alerts at once.
    Auto,
}

impl Mode {
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        match value {
            "suggest" => Ok(Self::Suggest),
            "auto" => Ok(Self::Auto),
            other => Err(FieldError::new("mode", format!("`{other}` is not `suggest` or `auto`"))),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Suggest => "suggest",
            Self::Auto => "auto",
        }
    }
}

/// Which items count: both conditions, when set, must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The headline starts with this (`SON DAKİKA`), ignoring case the Turkish way and the
    /// dotted/dotless i difference (`Son Dakika`, `SON DAKIKA` match too).
    pub title_prefix: Option<String>,
    /// One of the item's categories or tags is this, ignoring case likewise.
    pub category: Option<String>,
}

impl Filter {
    pub fn accepts(&self, item: &Item) -> Result<(), String> {
        if let Some(prefix) = &self.title_prefix
            && !fold(item.headline.as_str()).starts_with(&fold(prefix))
        {
            return Err(format!("its title does not start with “{prefix}”"));
        }
        if let Some(category) = &self.category {
            let want = fold(category);
            if !item.categories.iter().any(|c| fold(c) == want) {
                return Err(format!("it is not in the category “{category}”"));
            }
        }
        Ok(())
    }
}

/// Case folding for matching Turkish text typed on any keyboard: lowercase, with İ/I/ı/i all
/// one letter, and runs of whitespace one space.
fn fold(s: &str) -> String {
    let lowered: String = s
        .chars()
        .flat_map(|c| match c {
            'İ' | 'I' | 'ı' => vec!['i'],
            c => c.to_lowercase().collect(),
        })
        .collect();
    lowered.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every field of a feed, valid.
#[derive(Debug, Clone)]
pub struct FeedSpec {
    pub url: Url,
    pub name: String,
    pub label: Label,
    pub topics: Topics,
    pub mode: Mode,
    pub filter: Filter,
    pub interval_secs: u64,
    pub enabled: bool,
}

/// The body of `POST /api/v1/feeds`, and of `PATCH` (where every field is optional and `null`
/// clears a filter).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedRequest {
    /// The feed's address: RSS, Atom or JSON Feed over http or https, e.g. a WordPress category
    /// feed `https://www.example.com.tr/category/son-dakika/feed/`.
    #[schema(value_type = String, format = Uri, max_length = 2048, example = "https://www.example.com.tr/category/son-dakika/feed/")]
    pub url: Option<String>,
    /// What editors see it as. Default: the feed's host.
    #[schema(min_length = 1, max_length = 100, example = "Son dakika kategorisi")]
    pub name: Option<String>,
    /// The label of its alerts; default `SON DAKİKA`.
    #[schema(min_length = 1, max_length = 40)]
    pub label: Option<String>,
    /// Topics its alerts go to; empty: everyone.
    #[schema(value_type = Option<Vec<crate::alerts::domain::Topic>>, max_items = 20)]
    pub topics: Option<Vec<String>>,
    /// `suggest` (default): drafts for editors; `auto`: flagged at once.
    #[schema(value_type = Option<Mode>)]
    pub mode: Option<String>,
    /// Only items whose title starts with this (e.g. `SON DAKİKA`); `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 100)]
    pub title_prefix: Option<Option<String>>,
    /// Only items with this category or tag; `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 100)]
    pub category: Option<Option<String>>,
    /// Seconds between polls: at least `feed_min_interval_secs`, at most 86,400; default 120.
    #[schema(minimum = 1, maximum = 86400)]
    pub interval_secs: Option<i64>,
    /// A disabled feed is not polled. Default true.
    pub enabled: Option<bool>,
}

fn double_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// The context a request is judged in.
pub struct Rules<'a> {
    pub outbound: &'a Outbound,
    pub min_interval_secs: u64,
}

fn short_text(field: &str, value: &str, max: usize) -> Result<String, FieldError> {
    let chars = value.chars().count();
    if chars > max {
        return Err(FieldError::new(field, format!("must be at most {max} characters (got {chars})")));
    }
    check_text(field, value, Lines::Single)?;
    Ok(value.to_string())
}

impl FeedRequest {
    /// A new feed: `url` required, the rest defaulted.
    pub fn parse_new(self, rules: &Rules) -> Result<FeedSpec, Vec<FieldError>> {
        let base = FeedSpec {
            url: Url::parse("http://placeholder.invalid/").expect("valid"),
            name: String::new(),
            label: Label::parse(DEFAULT_LABEL).expect("the default label is valid"),
            topics: Topics::default(),
            mode: Mode::Suggest,
            filter: Filter::default(),
            interval_secs: DEFAULT_INTERVAL_SECS.max(rules.min_interval_secs),
            enabled: true,
        };
        if self.url.is_none() {
            let mut errors = vec![FieldError::new("url", "is required: the feed's address")];
            if let Err(more) =
                (FeedRequest { url: Some("https://x.example/".into()), ..self }).apply(base, rules)
            {
                errors.extend(more);
            }
            return Err(errors);
        }
        let mut spec = self.apply(base, rules)?;
        if spec.name.is_empty() {
            spec.name = spec.url.host_str().unwrap_or("feed").to_string();
        }
        Ok(spec)
    }

    /// Applies the given fields over `current` (a PATCH, or defaults for a new feed).
    pub fn apply(self, mut spec: FeedSpec, rules: &Rules) -> Result<FeedSpec, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut take = |r: Result<(), FieldError>| {
            if let Err(e) = r {
                errors.push(e)
            }
        };
        if let Some(url) = &self.url {
            take(rules.outbound.parse_url("url", url).map(|u| spec.url = u));
        }
        if let Some(name) = &self.name {
            take(short_text("name", name, MAX_NAME_CHARS).map(|n| spec.name = n));
        }
        if let Some(label) = &self.label {
            take(Label::parse(label).map(|l| spec.label = l));
        }
        if let Some(topics) = &self.topics {
            take(Topics::parse("topics", topics).map(|t| spec.topics = t));
        }
        if let Some(mode) = &self.mode {
            take(Mode::parse(mode).map(|m| spec.mode = m));
        }
        if let Some(prefix) = self.title_prefix {
            take(
                prefix
                    .map(|p| short_text("title_prefix", &p, MAX_FILTER_CHARS))
                    .transpose()
                    .map(|p| spec.filter.title_prefix = p),
            );
        }
        if let Some(category) = self.category {
            take(
                category
                    .map(|c| short_text("category", &c, MAX_FILTER_CHARS))
                    .transpose()
                    .map(|c| spec.filter.category = c),
            );
        }
        if let Some(secs) = self.interval_secs {
            let min = rules.min_interval_secs;
            if secs < min as i64 || secs > MAX_INTERVAL_SECS as i64 {
                take(Err(FieldError::new(
                    "interval_secs",
                    format!(
                        "must be between {min} (the server's `feed_min_interval_secs`) and \
                         {MAX_INTERVAL_SECS} seconds (got {secs})"
                    ),
                )));
            } else {
                spec.interval_secs = secs as u64;
            }
        }
        if let Some(enabled) = self.enabled {
            spec.enabled = enabled;
        }
        if errors.is_empty() { Ok(spec) } else { Err(errors) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        alerts::domain::{ArticleId, Headline},
        validation::WebUrl,
    };

    fn item(title: &str, categories: &[&str]) -> Item {
        Item {
            article_id: ArticleId::parse("1").unwrap(),
            headline: Headline::parse(title).unwrap(),
            summary: None,
            url: WebUrl::parse("url", "https://x.example/", false).unwrap(),
            image: None,
            published_at: None,
            categories: categories.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn filters_ignore_case_the_turkish_way() {
        let f = Filter { title_prefix: Some("SON DAKİKA".into()), category: None };
        for ok in ["SON DAKİKA: Deprem", "Son dakika - sel", "SON DAKIKA | yangın", "son  dakika x"] {
            assert!(f.accepts(&item(ok, &[])).is_ok(), "{ok}");
        }
        assert!(f.accepts(&item("Spor: derbi", &[])).unwrap_err().contains("does not start"));
        let f = Filter { title_prefix: None, category: Some("Son Dakika".into()) };
        assert!(f.accepts(&item("x", &["Gündem", "SON DAKİKA"])).is_ok());
        assert!(f.accepts(&item("x", &["Gündem"])).is_err());
    }
}
