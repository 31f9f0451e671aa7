//! The feed poller every `serve` process runs. It leases due feeds (at most
//! `feed_concurrency` in flight per process), fetches each through the SSRF-safe client with
//! its validators (`If-None-Match`, `If-Modified-Since`), parses it, and turns each new item
//! into a draft or an alert, one transaction per item. Every poll ends in a recorded outcome;
//! nothing a feed sends can make it panic, or hold a poll past `outbound_timeout_secs` for the
//! fetch and [`PARSE_DEADLINE`] for the parse.
//!
//! What is new is decided by what the feed held before, never by the feed's clock: the items of
//! a feed's first successful poll (after it is registered, re-enabled, or given a new URL) are
//! its baseline and never fire, whatever their dates; after that, an item fires when its guid
//! (or link) has not been seen in the feed before. An item's date only orders the new items and
//! keeps those older than `feed_max_item_age_hours` from firing.

use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use http::{HeaderName, HeaderValue, header};
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::{
    bounded::{Threads, Unfinished},
    domain::Mode,
    parse::{self, Item},
    store::{self, Feed, ItemState, PollOutcome},
};
use crate::{
    alerts::domain::{AlertStatus, Label, NewAlert, Topics, Urgency},
    config::Settings,
    net::{OutRequest, Outbound},
    publish::{self, Flagged},
    telemetry::metrics,
};

/// How often a poller looks for due feeds while some are due soon...
const TICK: Duration = Duration::from_millis(500);
/// ...and at most how long it sleeps otherwise: bounds how late a feed registered through another
/// process is first polled (this process's own API wakes it at once).
const IDLE: Duration = Duration::from_secs(5);
/// The longest a fetched document may take to parse. Well inside the lease's 30 s beyond the
/// fetch deadline, so the poll records its outcome (and backs off) before another poller could
/// take the feed; parsing a feed of a few megabytes takes milliseconds.
pub const PARSE_DEADLINE: Duration = Duration::from_secs(10);
/// Why an item of the baseline does not fire.
const IN_BASELINE: &str = "it was in the feed at its first poll (after the feed was registered, \
                           re-enabled or given a new URL), before anything could be new";
const ACCEPT: &str = "application/rss+xml, application/atom+xml, application/feed+json, \
                      application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, */*;q=0.5";

#[derive(Clone)]
pub struct Poller {
    pub pool: PgPool,
    pub outbound: Outbound,
    pub settings: Arc<Settings>,
    pub wake: Arc<tokio::sync::Notify>,
    /// Where documents are parsed: `feed_concurrency` threads at most, abandoned at
    /// [`PARSE_DEADLINE`].
    pub parsing: Threads,
}

impl Poller {
    /// A lease outlasts the longest poll (the fetch deadline, then parsing and writing).
    fn lease_secs(&self) -> f64 {
        (self.settings.outbound_timeout_secs + 30) as f64
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let limit = self.settings.feed_concurrency;
        let mut polls: JoinSet<()> = JoinSet::new();
        loop {
            let free = limit - polls.len();
            let mut sleep = TICK;
            if free > 0 {
                match store::claim_due(&self.pool, free as i64, self.lease_secs()).await {
                    Ok(feeds) if feeds.is_empty() => sleep = self.until_next_due().await,
                    Ok(feeds) => {
                        for feed in feeds {
                            let p = self.clone();
                            polls.spawn(async move { p.poll(feed).await });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "feed poller could not claim due feeds; retrying"),
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(_) = polls.join_next(), if !polls.is_empty() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
        // Polls in flight finish (each is bounded by the fetch deadline); an aborted one would
        // only leave its lease to run out.
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            while polls.join_next().await.is_some() {}
        })
        .await;
        polls.abort_all();
    }

    /// How long to sleep when nothing is due: until the next feed is, within [TICK, IDLE].
    async fn until_next_due(&self) -> Duration {
        match store::next_due(&self.pool).await {
            Ok(Some(at)) => (at - Utc::now()).to_std().unwrap_or(Duration::ZERO).clamp(TICK, IDLE),
            Ok(None) => IDLE,
            Err(_) => TICK,
        }
    }

    /// Polls one leased feed and records the outcome (which releases the lease).
    pub async fn poll(&self, feed: Feed) {
        let outcome = self.fetch_and_process(&feed).await;
        if let PollOutcome::Failed { error, .. } = &outcome {
            // `error` is SafeText: what the feed's server said cannot steer the log.
            tracing::info!(feed_id = %feed.id, failures = feed.failures + 1, %error, "feed poll failed");
        }
        if let Err(e) = store::finish_poll(&self.pool, &feed, outcome).await {
            tracing::warn!(feed_id = %feed.id, error = %e, "could not record a feed poll; its lease will run out");
        }
    }

    async fn fetch_and_process(&self, feed: &Feed) -> PollOutcome {
        let url = match Url::parse(&feed.url) {
            Ok(u) => u,
            Err(e) => return PollOutcome::failed(None, format!("the URL is not valid ({e})")),
        };
        let mut req = OutRequest::get(url)
            .max_bytes(self.settings.feed_max_bytes)
            .header(header::ACCEPT, HeaderValue::from_static(ACCEPT));
        let validators =
            [(header::IF_NONE_MATCH, &feed.etag), (header::IF_MODIFIED_SINCE, &feed.last_modified)];
        for (name, value) in validators {
            if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                req = req.header(name, v);
            }
        }
        let fetched = match self.outbound.fetch(req).await {
            Ok(f) => f,
            Err(e) => return PollOutcome::failed(None, e.to_string()),
        };
        let status = fetched.status;
        if status == http::StatusCode::NOT_MODIFIED {
            return PollOutcome::NotModified;
        }
        if !status.is_success() {
            return PollOutcome::failed(
                Some(status.as_u16()),
                format!(
                    "the server answered {} {} instead of the feed",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                ),
            );
        }
        let header_text = |name: HeaderName| {
            fetched
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
                .filter(|v| v.len() <= 512)
        };
        let etag = header_text(header::ETAG);
        let last_modified = header_text(header::LAST_MODIFIED);
        // Parsing a few megabytes takes milliseconds of CPU: off the async threads, and bounded
        // in time so that a document that is slow to parse fails (and backs off) like any other.
        let (body, base) = (fetched.body, fetched.url);
        let deadline = tokio::time::Instant::now() + PARSE_DEADLINE;
        let until = deadline.into_std();
        let parsed = self.parsing.run(deadline, move || parse::parse_until(&body, &base, Some(until))).await;
        let parsed = match parsed {
            Ok(Ok(p)) => p,
            Ok(Err(why)) => return PollOutcome::failed(Some(status.as_u16()), why),
            Err(Unfinished::TooSlow) => return PollOutcome::failed(Some(status.as_u16()), parse::TOO_SLOW),
            Err(Unfinished::Failed) => {
                return PollOutcome::failed(
                    Some(status.as_u16()),
                    "the feed could not be parsed (the parser failed)",
                );
            }
        };
        if !parsed.skipped.is_empty() {
            tracing::debug!(feed_id = %feed.id, skipped = parsed.skipped.len(), "feed items without what an alert needs");
        }
        match self.process(feed, parsed.items).await {
            Ok(new_items) => PollOutcome::Fetched { status: status.as_u16(), etag, last_modified, new_items },
            Err(e) => {
                tracing::warn!(feed_id = %feed.id, error = %e, "could not store feed items");
                PollOutcome::failed(
                    Some(status.as_u16()),
                    "the items could not be stored (database error); retrying",
                )
            }
        }
    }

    /// Stores the items the feed has not had before, oldest first, acting on each in the
    /// transaction that inserts it. Returns how many became drafts or alerts.
    async fn process(&self, feed: &Feed, mut items: Vec<Item>) -> sqlx::Result<i32> {
        let ids: Vec<String> = items.iter().map(|i| i.article_id.as_str().to_string()).collect();
        let known: HashSet<String> = store::known_ids(&self.pool, feed.id, &ids).await?.into_iter().collect();
        items.retain(|i| !known.contains(i.article_id.as_str()));
        // Feeds list newest first; alerts go out in the order things happened.
        items.sort_by_key(|i| i.published_at);
        let now = Utc::now();
        // No baseline yet: everything the feed holds now was there before anything could be new.
        let baseline = feed.baseline_at.is_none();
        let mut acted = 0;
        let mut seen = HashSet::new();
        for item in items {
            if !seen.insert(item.article_id.as_str().to_string()) {
                continue; // the same guid twice in one document
            }
            let verdict =
                if baseline { Err(IN_BASELINE.to_string()) } else { self.verdict(feed, &item, now) };
            let (state, note) = match &verdict {
                Err(why) => (ItemState::Skipped, Some(why.as_str())),
                Ok(()) => (ItemState::Draft, None),
            };
            let mut tx = self.pool.begin().await?;
            let Some(item_id) = store::insert_item(&mut tx, feed.id, &item, state, note).await? else {
                continue; // another process stored it first, and acted on it
            };
            if verdict.is_ok() && feed.mode == Mode::Auto {
                let new = self.alert_of(feed, &item);
                let alert = match publish::flag(&mut tx, &new, feed.created_by, now).await? {
                    Flagged::Created(a) => {
                        if a.status == AlertStatus::Live {
                            metrics::alert_published();
                        }
                        tracing::info!(feed_id = %feed.id, alert_id = %a.id, "alert flagged from a feed");
                        a
                    }
                    Flagged::AlreadyLive(a) => a,
                };
                store::mark_sent(&mut tx, item_id, alert.id).await?;
            }
            tx.commit().await?;
            if verdict.is_ok() {
                acted += 1;
            }
        }
        Ok(acted)
    }

    /// Whether a new item (one not seen in the feed before, past its baseline) may fire: not
    /// older than `feed_max_item_age_hours` by its date (a CMS that re-lists its archive under
    /// new guids), and through the feed's filter. Its date is not compared with when the feed
    /// was registered: a CMS that labels Turkish time as GMT dates its items three hours ahead
    /// (or behind), and newness is decided by the baseline instead.
    fn verdict(&self, feed: &Feed, item: &Item, now: DateTime<Utc>) -> Result<(), String> {
        let max_age = chrono::Duration::hours(self.settings.feed_max_item_age_hours as i64);
        if let Some(at) = item.published_at
            && at < now - max_age
        {
            return Err(format!(
                "it was published more than {} hours ago (`feed_max_item_age_hours`)",
                self.settings.feed_max_item_age_hours
            ));
        }
        feed.filter().accepts(item)
    }

    fn alert_of(&self, feed: &Feed, item: &Item) -> NewAlert {
        alert_from(feed, item, self.settings.default_ttl_secs)
    }
}

/// The alert an item makes, with the feed's topics and label.
pub fn alert_from(feed: &Feed, item: &Item, ttl_seconds: u32) -> NewAlert {
    NewAlert {
        headline: item.headline.clone(),
        url: item.url.clone(),
        summary: item.summary.clone(),
        image: item.image.clone(),
        article_id: Some(item.article_id.clone()),
        topics: Topics::from_db(feed.topics.clone()),
        label: Label::parse(&feed.label)
            .unwrap_or_else(|_| Label::parse(crate::alerts::domain::DEFAULT_LABEL).expect("valid")),
        ttl_seconds,
        urgency: Urgency::High,
        send_at: None,
    }
}
