//! Drafts, live, for the editors' consoles. Each process keeps the current list of drafts,
//! serialised once as a Server-Sent Event, and every console that holds
//! `GET /api/v1/feeds/drafts/stream` open gets it whenever it changes: a draft a poller stored
//! (in any process), one an editor sent or dismissed, a feed renamed or removed.
//!
//! The database says when: a trigger NOTIFYs [`CHANNEL`] in the writing transaction (migration
//! 0010). A notification carries nothing; the process reads the list once, however many consoles
//! are open, and a notification lost while the listener reconnected is made good by the look
//! every reconnect triggers and by the look every [`BACKSTOP`].
//!
//! The latest list is a `watch` value, not a queue: a console that reads slowly skips to the
//! newest list instead of being sent every one in between, so no bound can be overrun.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use sqlx::PgPool;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;

use super::store::{self, FeedItem};
use crate::db::listen;

pub const CHANNEL: &str = "sondakika_drafts";
/// How many drafts the stream carries, newest first: also the first page of `GET /feeds/drafts`.
pub const LIMIT: i64 = 50;
/// Streams one process serves at once. Editors are a handful; the bound keeps a leaked token
/// from holding thousands of connections. Past it the request is answered 503 and the console
/// falls back to asking every few seconds.
pub const MAX_STREAMS: usize = 64;
/// The longest the list goes without a look, notifications or not.
const BACKSTOP: Duration = Duration::from_secs(30);
/// After a failed read, the next try.
const RETRY: Duration = Duration::from_secs(1);

/// One process's live drafts list. Cheap to clone.
#[derive(Clone)]
pub struct LiveDrafts {
    /// The `drafts` event with the current list; `None` until the first read.
    latest: Arc<watch::Sender<Option<Bytes>>>,
    streams: Arc<Semaphore>,
}

impl Default for LiveDrafts {
    fn default() -> Self {
        Self { latest: Arc::new(watch::channel(None).0), streams: Arc::new(Semaphore::new(MAX_STREAMS)) }
    }
}

/// A console's place: the list as it changes, and a slot among [`MAX_STREAMS`].
pub struct Subscription {
    pub lists: watch::Receiver<Option<Bytes>>,
    pub _slot: OwnedSemaphorePermit,
}

impl LiveDrafts {
    /// A console's subscription, whose first `changed()` yields the current list; `None` when
    /// [`MAX_STREAMS`] are open.
    pub fn subscribe(&self) -> Option<Subscription> {
        let slot = self.streams.clone().try_acquire_owned().ok()?;
        let mut lists = self.latest.subscribe();
        lists.mark_changed();
        Some(Subscription { lists, _slot: slot })
    }

    /// Keeps the list current until shutdown.
    pub async fn run(self, pool: PgPool, listen_db: PgPool, shutdown: CancellationToken) {
        let wake = Arc::new(Notify::new());
        let w = wake.clone();
        let listener =
            tokio::spawn(listen::listen(listen_db, CHANNEL, move || w.notify_one(), shutdown.clone()));
        loop {
            let wait = match store::drafts(&pool, LIMIT).await {
                Ok(items) => {
                    let event = event(&items);
                    self.latest.send_if_modified(|latest| {
                        let changed = latest.as_ref() != Some(&event);
                        if changed {
                            *latest = Some(event);
                        }
                        changed
                    });
                    BACKSTOP
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the drafts for the consoles; retrying");
                    RETRY
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let _ = listener.await;
    }
}

/// The SSE event: the same JSON as `GET /api/v1/feeds/drafts` (one line: serde_json never
/// writes a raw newline).
fn event(items: &[FeedItem]) -> Bytes {
    let json = serde_json::json!({ "items": items });
    Bytes::from(format!("event: drafts\ndata: {json}\n\n"))
}
