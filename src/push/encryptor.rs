//! The threads that encrypt pushes: long-lived threads of our own, one per core, rather than
//! tokio's blocking pool.
//!
//! Encryption is nearly all of a push's CPU (one P-256 key generation and ECDH each, see
//! [`super::ece`]). On the blocking pool each chunk of it went to whichever of a dozen pooled
//! threads woke first, so the P-256 code and tables were cold in whichever core's caches it
//! landed on; and a long fan-out held blocking threads that DNS lookups also need. Here a
//! chunk waits in a queue for one of a fixed set of threads that do nothing else.

use std::{
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, mpsc},
};

type Job = Box<dyn FnOnce() + Send>;

pub struct Encryptor {
    jobs: mpsc::Sender<Job>,
}

impl Encryptor {
    /// One thread per core. They run only while a fan-out has work for them; the fan-out's
    /// workers (`push_workers`) each wait for their chunk, so at most that many run at once.
    pub fn new() -> std::io::Result<Self> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Unbounded, but each fan-out worker waits for its chunk before it sends the next, so
        // at most `push_workers` chunks are ever queued.
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new().name(format!("push-encrypt-{i}")).spawn(move || {
                loop {
                    // The lock is held only to take a job, never while running one.
                    let job = queue.lock().map_err(|_| ()).and_then(|q| q.recv().map_err(|_| ()));
                    let Ok(job) = job else { return };
                    // A panic must not shrink the pool; the waiting side sees its result
                    // dropped and reports the chunk as failed.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                }
            })?;
        }
        Ok(Self { jobs })
    }

    /// Runs `f` on an encryption thread; `None` if it panicked.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(f());
        });
        self.jobs.send(job).ok()?;
        result.await.ok()
    }
}
