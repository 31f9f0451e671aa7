//! Blocking work on feed text (parsing a fetched document) with a deadline, on threads of its
//! own.
//!
//! Not tokio's `spawn_blocking`: its tasks cannot be cancelled, and the runtime waits for them
//! when it shuts down, so one slow parse would hold a stopping process as long as it runs. Here each piece of
//! work runs on a thread of its own, and whoever waits for it gives up at the deadline; the
//! thread is then abandoned (it ends when its work does, or with the process) and nothing waits
//! for it, neither the poll nor the shutdown.
//!
//! At most `places` pieces run at once, counting abandoned ones: a place is given back only when
//! its work ends, so feeds that are slow to parse can never take more CPU than that, however
//! often they are polled. The deadline also covers the wait for a place.

use std::sync::Arc;

use tokio::{
    sync::{Semaphore, oneshot},
    time::Instant,
};

/// Why the work gave no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfinished {
    /// The deadline passed (waiting for a place, or working); the work may still be running.
    TooSlow,
    /// The work panicked, or no thread could be started for it.
    Failed,
}

#[derive(Clone)]
pub struct Threads {
    places: Arc<Semaphore>,
    name: &'static str,
}

impl Threads {
    pub fn new(places: usize, name: &'static str) -> Self {
        Self { places: Arc::new(Semaphore::new(places.max(1))), name }
    }

    /// Runs `work` on a thread of its own and waits for its result until `deadline`.
    pub async fn run<T, F>(&self, deadline: Instant, work: F) -> Result<T, Unfinished>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let place = tokio::time::timeout_at(deadline, self.places.clone().acquire_owned())
            .await
            .map_err(|_| Unfinished::TooSlow)?
            .expect("the semaphore is never closed");
        let (tx, rx) = oneshot::channel();
        std::thread::Builder::new()
            .name(self.name.into())
            .spawn(move || {
                let result = work();
                // The place is free again once the work has ended, whether or not anyone waits.
                drop(place);
                let _ = tx.send(result);
            })
            .map_err(|_| Unfinished::Failed)?;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(result)) => Ok(result),
            // The thread ended without sending: the work panicked.
            Ok(Err(_)) => Err(Unfinished::Failed),
            Err(_) => Err(Unfinished::TooSlow),
        }
    }

    /// Places free now (for tests).
    #[cfg(test)]
    fn free(&self) -> usize {
        self.places.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicBool, Ordering},
        time::Duration,
    };

    use super::*;

    #[tokio::test]
    async fn work_past_its_deadline_is_abandoned_but_keeps_its_place_until_it_ends() {
        let threads = Threads::new(1, "test-bounded");
        let release = Arc::new(AtomicBool::new(false));
        let r = release.clone();
        let slow = threads.run(Instant::now() + Duration::from_millis(50), move || {
            while !r.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
            1
        });
        assert_eq!(slow.await, Err(Unfinished::TooSlow), "the waiter gives up at the deadline");
        assert_eq!(threads.free(), 0, "the abandoned work still holds its place");
        // The only place is taken: the next work cannot start before its own deadline.
        let queued = threads.run(Instant::now() + Duration::from_millis(50), || 2).await;
        assert_eq!(queued, Err(Unfinished::TooSlow));
        release.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(30);
        assert_eq!(threads.run(deadline, || 3).await, Ok(3), "the place came back when the work ended");
    }

    #[tokio::test]
    async fn a_panic_is_a_failure_and_frees_its_place() {
        let threads = Threads::new(1, "test-bounded");
        let deadline = Instant::now() + Duration::from_secs(30);
        let r: Result<(), _> = threads.run(deadline, || panic!("a parser bug")).await;
        assert_eq!(r, Err(Unfinished::Failed));
        assert_eq!(threads.run(deadline, || 4).await, Ok(4));
    }
}
