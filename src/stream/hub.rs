//! The per-process fan-out hub for live tickers.
//!
//! One listener task per process follows the `stream_events` table (woken by NOTIFY, and polling
//! as a safety net) and hands each new event to the hub in seq order. The hub keeps a bounded
//! window of recent events for replay and broadcasts each event once as an `Arc`: every
//! connection shares the same frame bytes, serialised once by whoever wrote the event.
//!
//! Subscribing takes the broadcast receiver and the replay slice under one lock, so a
//! connection sees every event exactly once: those before the subscription come from the
//! window, those after from the channel.
//!
//! The hub never touches sockets, and a connection never blocks the hub: a receiver that falls
//! `client_queue` events behind gets `Lagged` and its connection is closed as too slow.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{body::Bytes, extract::ws::Utf8Bytes};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    alerts::{events::EventKind, store::STREAM_CHANNEL},
    telemetry::metrics,
};

/// One event as every connection sends it.
#[derive(Debug)]
pub struct StreamEvent {
    pub seq: i64,
    pub alert_id: Uuid,
    pub kind: EventKind,
    pub topics: Vec<String>,
    /// The JSON text frame; cloning shares the bytes.
    pub frame: Utf8Bytes,
    /// The same event encoded for Server-Sent Events, built once.
    pub sse: Bytes,
    pub created_at: DateTime<Utc>,
    /// Tickers of this process that were sent this event; flushed to `alert_stats`.
    pub reached: AtomicU64,
}

impl StreamEvent {
    pub fn mark_sent(&self) {
        self.reached.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a new connection starts with.
pub struct Subscription {
    pub receiver: broadcast::Receiver<Arc<StreamEvent>>,
    /// Events after `since`, oldest first (empty without `since`).
    pub replay: Vec<Arc<StreamEvent>>,
    /// The newest seq the hub has seen.
    pub head: i64,
    /// The client missed events that are no longer held for replay.
    pub truncated: bool,
}

struct Window {
    events: VecDeque<Arc<StreamEvent>>,
    /// Newest seq seen.
    head: i64,
    /// Events at or below this seq are no longer in the window.
    floor: i64,
}

pub struct Hub {
    window: Mutex<Window>,
    sender: broadcast::Sender<Arc<StreamEvent>>,
    max_count: usize,
    max_age: chrono::Duration,
    /// Alert events published recently, for the stats flusher: (event, count already flushed).
    unflushed: Mutex<Vec<(Arc<StreamEvent>, u64)>>,
}

impl Hub {
    pub fn new(client_queue: usize, max_count: usize, max_age: Duration) -> Self {
        let (sender, _) = broadcast::channel(client_queue);
        Self {
            window: Mutex::new(Window { events: VecDeque::new(), head: 0, floor: 0 }),
            sender,
            max_count,
            max_age: chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::days(1)),
            unflushed: Mutex::new(Vec::new()),
        }
    }

    pub fn head(&self) -> i64 {
        self.window.lock().expect("hub lock").head
    }

    /// Registers a connection. `since`: the last seq the client processed.
    pub fn subscribe(&self, since: Option<i64>) -> Subscription {
        // A std mutex: the critical section is short and never awaits.
        let w = self.window.lock().expect("hub lock");
        let receiver = self.sender.subscribe();
        let (replay, truncated) = match since {
            None => (Vec::new(), false),
            Some(since) => {
                let replay = w.events.iter().filter(|e| e.seq > since).cloned().collect();
                (replay, since < w.floor)
            }
        };
        Subscription { receiver, replay, head: w.head, truncated }
    }

    /// Sets the starting point: the recent events loaded from the database at start.
    fn seed(&self, events: Vec<Arc<StreamEvent>>, floor: i64) {
        let mut w = self.window.lock().expect("hub lock");
        w.floor = floor;
        w.head = events.last().map_or(floor, |e| e.seq).max(w.head);
        w.events = events.into();
    }

    /// Adds events in seq order and broadcasts them. Events already seen are ignored.
    fn publish(&self, events: Vec<Arc<StreamEvent>>) {
        let mut w = self.window.lock().expect("hub lock");
        for event in events {
            if event.seq <= w.head {
                continue;
            }
            w.head = event.seq;
            w.events.push_back(event.clone());
            if event.kind == EventKind::Alert {
                self.unflushed.lock().expect("stats lock").push((event.clone(), 0));
            }
            metrics::events_broadcast();
            // No receivers is fine: nobody is watching.
            let _ = self.sender.send(event);
        }
        self.trim(&mut w);
    }

    fn trim(&self, w: &mut Window) {
        let oldest_kept = Utc::now() - self.max_age;
        while let Some(front) = w.events.front() {
            if w.events.len() > self.max_count || front.created_at < oldest_kept {
                w.floor = front.seq;
                w.events.pop_front();
            } else {
                break;
            }
        }
    }

    /// Drops events past the replay age even when no new events arrive.
    pub fn expire(&self) {
        let mut w = self.window.lock().expect("hub lock");
        self.trim(&mut w);
    }

    /// Ticker deliveries counted since the last call, per alert. Alerts older than the replay
    /// window stop being tracked once flushed.
    pub fn take_reached(&self) -> Vec<(Uuid, i64)> {
        let oldest = Utc::now() - self.max_age;
        let mut tracked = self.unflushed.lock().expect("stats lock");
        let mut out = Vec::new();
        for (event, flushed) in tracked.iter_mut() {
            let now = event.reached.load(Ordering::Relaxed);
            if now > *flushed {
                out.push((event.alert_id, (now - *flushed) as i64));
                *flushed = now;
            }
        }
        tracked.retain(|(e, _)| e.created_at >= oldest);
        out
    }

    /// Puts counts back after a failed flush, so they are written next time.
    pub fn restore_reached(&self, failed: &[(Uuid, i64)]) {
        let mut tracked = self.unflushed.lock().expect("stats lock");
        for (id, n) in failed {
            if let Some((_, flushed)) = tracked.iter_mut().find(|(e, _)| e.alert_id == *id) {
                *flushed = flushed.saturating_sub(*n as u64);
            }
        }
    }
}

struct EventRow {
    seq: i64,
    alert_id: Uuid,
    kind: EventKind,
    topics: Vec<String>,
    frame: String,
    created_at: DateTime<Utc>,
}

impl EventRow {
    fn into_event(self) -> Arc<StreamEvent> {
        let kind = self.kind;
        Arc::new(StreamEvent {
            seq: self.seq,
            alert_id: self.alert_id,
            kind,
            topics: self.topics,
            sse: super::sse::encode_event(self.seq, kind.as_str(), &self.frame),
            frame: Utf8Bytes::from(self.frame),
            created_at: self.created_at,
            reached: AtomicU64::new(0),
        })
    }
}

async fn fetch_after(pool: &PgPool, after: i64, limit: i64) -> sqlx::Result<Vec<Arc<StreamEvent>>> {
    let rows = sqlx::query_as!(
        EventRow,
        r#"select seq, alert_id, kind as "kind: EventKind", topics, frame, created_at from stream_events
         where seq > $1 order by seq limit $2"#,
        after,
        limit,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(EventRow::into_event).collect())
}

/// Loads the replay window: the newest `max_count` events younger than `max_age`.
pub async fn load_window(hub: &Hub, pool: &PgPool) -> sqlx::Result<()> {
    let rows = sqlx::query_as!(
        EventRow,
        r#"select * from (
            select seq, alert_id, kind as "kind: EventKind", topics, frame, created_at from stream_events
            where created_at > now() - make_interval(secs => $2)
            order by seq desc limit $1) recent
         order by seq"#,
        hub.max_count as i64,
        hub.max_age.num_seconds() as f64,
    )
    .fetch_all(pool)
    .await?;
    let events: Vec<_> = rows.into_iter().map(EventRow::into_event).collect();
    let floor = match events.first() {
        Some(first) => {
            sqlx::query_scalar!(
                r#"select coalesce(max(seq), 0) as "floor!" from stream_events where seq < $1"#,
                first.seq
            )
            .fetch_one(pool)
            .await?
        }
        None => {
            sqlx::query_scalar!(r#"select coalesce(max(seq), 0) as "floor!" from stream_events"#)
                .fetch_one(pool)
                .await?
        }
    };
    hub.seed(events, floor);
    Ok(())
}

/// Follows the event log until shutdown: LISTEN for wake-ups, then read everything after the
/// hub's head. Reading by seq (not trusting NOTIFY payloads) means a lost notification or a lost
/// connection costs latency, never an event; `poll` bounds that latency.
pub async fn follow(
    hub: Arc<Hub>,
    pool: PgPool,
    listen_db: PgPool,
    poll: Duration,
    shutdown: CancellationToken,
) {
    let (wake_tx, mut wake_rx) = tokio::sync::mpsc::channel::<()>(1);
    // Coalesced: if a wake-up is already pending, one catch-up covers this one too.
    let wake = move || {
        let _ = wake_tx.try_send(());
    };
    let listener = tokio::spawn(crate::db::listen::listen(listen_db, STREAM_CHANNEL, wake, shutdown.clone()));
    loop {
        if let Err(e) = catch_up(&hub, &pool).await {
            tracing::warn!(error = %e, "reading new stream events failed; retrying");
        }
        hub.expire();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake_rx.recv() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
    let _ = listener.await;
}

async fn catch_up(hub: &Hub, pool: &PgPool) -> sqlx::Result<()> {
    const PAGE: i64 = 500;
    loop {
        let started = std::time::Instant::now();
        let events = fetch_after(pool, hub.head(), PAGE).await?;
        let n = events.len();
        if n > 0 {
            let now = Utc::now();
            for e in &events {
                metrics::event_lag((now - e.created_at).to_std().unwrap_or_default());
            }
            hub.publish(events);
            metrics::fetch_time(started.elapsed());
        }
        if (n as i64) < PAGE {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: i64) -> Arc<StreamEvent> {
        Arc::new(StreamEvent {
            seq,
            alert_id: Uuid::nil(),
            kind: EventKind::Alert,
            topics: vec![],
            frame: Utf8Bytes::from(format!("{{\"seq\":{seq}}}")),
            sse: Bytes::new(),
            created_at: Utc::now(),
            reached: AtomicU64::new(0),
        })
    }

    #[test]
    fn subscription_splits_replay_and_live_without_overlap() {
        let hub = Hub::new(16, 100, Duration::from_secs(3600));
        hub.publish(vec![ev(1), ev(2), ev(3)]);
        let mut sub = hub.subscribe(Some(1));
        hub.publish(vec![ev(3), ev(4)]); // 3 is a repeat and is ignored
        let replayed: Vec<_> = sub.replay.iter().map(|e| e.seq).collect();
        assert_eq!(replayed, [2, 3]);
        assert_eq!(sub.receiver.try_recv().unwrap().seq, 4);
        assert!(sub.receiver.try_recv().is_err());
        assert!(!sub.truncated);
    }

    #[test]
    fn replay_beyond_the_window_is_flagged_truncated() {
        let hub = Hub::new(16, 2, Duration::from_secs(3600));
        hub.publish(vec![ev(1), ev(2), ev(3), ev(4)]);
        let sub = hub.subscribe(Some(1));
        assert!(sub.truncated);
        assert_eq!(sub.replay.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
        assert!(!hub.subscribe(Some(2)).truncated);
    }
}
