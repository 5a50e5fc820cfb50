//! HTTP worker threads. The Postgres main thread hands them claimed jobs ahead of time and
//! collects plain results; each thread takes its next job itself from a shared fair queue
//! (round-robin across endpoints, a cap per endpoint), so the threads never wait for the main
//! thread between two requests and a slow receiver only holds up its own share of them.
//! Endpoints not known to answer fast (slow ones, and new ones until an attempt finishes)
//! share half of the threads between them, so however many hang, those that answer fast keep
//! the other half.
//!
//! The main thread learns that results are waiting from [`Pool::wake_fd`], which it can add to
//! the set of descriptors it already waits on (its latch).
//!
//! Files: `dispatch` chooses the job a free thread starts next, `http_thread` is what each
//! thread runs, `signals` keeps Postgres's signals off those threads.

mod dispatch;
mod http_thread;
mod signals;
#[cfg(test)]
mod tests;

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread;
use std::time::{Instant, SystemTime};

use crate::http::{Client, Outcome, Request};
use crate::wire::OwnedMessage;
use dispatch::Dispatch;
pub use dispatch::{Caps, Pace};
use http_thread::work;
use signals::SignalsBlocked;

/// One attempt to make.
#[derive(Debug)]
pub struct Job {
    pub delivery_id: i64,
    pub attempt: i32,
    /// The endpoint (webhook) it goes to: jobs of one key share that key's cap.
    pub key: i64,
    /// A job still waiting at this instant is handed back unsent: its claim would run out
    /// before the attempt could finish.
    pub start_by: Option<Instant>,
    pub request: Outgoing,
}

#[derive(Debug)]
pub enum Outgoing {
    /// Sent as it is.
    Ready(Request),
    /// Signed by the HTTP thread when the attempt starts: the signatures cover the attempt's
    /// timestamp, and a job may wait a while in the queue.
    SignAtStart { url: String, message: OwnedMessage },
}

/// How the attempt went.
#[derive(Debug)]
pub struct JobResult {
    pub delivery_id: i64,
    pub attempt: i32,
    pub key: i64,
    pub started_at: SystemTime,
    /// None: the job was not started before its `start_by`; nothing was sent.
    pub outcome: Option<Outcome>,
}

/// What the worker threads share.
struct Shared {
    dispatch: Mutex<Dispatch>,
    /// Signalled when a job may start (submitted, or a cap raised) and on close.
    job_ready: Condvar,
    results: Mutex<Vec<JobResult>>,
    /// A wake-up byte was written since the main thread last took the results: one byte per
    /// batch of results is enough.
    wake_pending: AtomicBool,
    /// Write end of the wake-up socket pair.
    wake: UnixStream,
    client: RwLock<Arc<Client>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct Pool {
    shared: Arc<Shared>,
    /// Read end of the wake-up socket pair.
    wake: UnixStream,
    in_flight: AtomicUsize,
    threads: Mutex<usize>,
}

impl Pool {
    /// Starts `threads` threads (at least one); `caps` say how many jobs run at once.
    pub fn new(threads: usize, caps: Caps, client: Client) -> io::Result<Pool> {
        let (wake, wake_writer) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        // Never block a worker on a full socket: a full buffer is already a pending wake-up.
        wake_writer.set_nonblocking(true)?;
        let threads = threads.max(1);
        let pool = Pool {
            shared: Arc::new(Shared {
                dispatch: Mutex::new(Dispatch::new(caps)),
                job_ready: Condvar::new(),
                results: Mutex::new(Vec::new()),
                wake_pending: AtomicBool::new(false),
                wake: wake_writer,
                client: RwLock::new(Arc::new(client)),
            }),
            wake,
            in_flight: AtomicUsize::new(0),
            threads: Mutex::new(0),
        };
        pool.spawn_up_to(threads)?;
        Ok(pool)
    }

    /// Queues a job; a free thread picks it up when its key's turn comes.
    #[cfg(test)]
    pub fn submit(&self, job: Job) {
        self.submit_all(std::iter::once(job));
    }

    /// Takes the jobs of `key` that no thread has started out of the queue (its webhook is
    /// gone: nothing more may be sent to it) and returns their delivery ids. Those running
    /// finish as usual.
    pub fn withdraw(&self, key: i64) -> Vec<i64> {
        let withdrawn = lock(&self.shared.dispatch).withdraw(key);
        self.in_flight.fetch_sub(withdrawn.len(), Ordering::SeqCst);
        withdrawn.into_iter().map(|job| job.delivery_id).collect()
    }

    /// Queues jobs under one lock.
    pub fn submit_all(&self, jobs: impl IntoIterator<Item = Job>) {
        let mut dispatch = lock(&self.shared.dispatch);
        let mut count = 0;
        for job in jobs {
            dispatch.push(job);
            count += 1;
        }
        // Counted before any thread can take one of them (and report it done).
        self.in_flight.fetch_add(count, Ordering::SeqCst);
        drop(dispatch);
        // The thread that takes a job wakes the next one while jobs are left (http_thread).
        if count > 0 {
            self.shared.job_ready.notify_one();
        }
    }

    /// New caps (after a settings reload).
    pub fn set_caps(&self, caps: Caps) {
        lock(&self.shared.dispatch).set_caps(caps);
        self.shared.job_ready.notify_all();
    }

    /// Forget what was learnt about the keys' pace (their ids now mean other endpoints): they
    /// are all new again.
    pub fn forget_keys(&self) {
        lock(&self.shared.dispatch).forget_keys();
        self.shared.job_ready.notify_all();
    }

    /// How fast `key`'s attempts have gone (None until one finished).
    pub fn pace(&self, key: i64) -> Option<Pace> {
        lock(&self.shared.dispatch).pace(key)
    }

    /// Whether `key` runs under the slow cap now.
    #[cfg(test)]
    pub fn is_slow(&self, key: i64) -> bool {
        self.pace(key).is_some_and(|pace| pace.slow)
    }

    /// How many jobs of `key` may run at once now (`Caps::per_slow_key` if it is slow,
    /// else `Caps::per_key`), the slow-and-new budget aside.
    #[cfg(test)]
    pub fn cap(&self, key: i64) -> usize {
        lock(&self.shared.dispatch).cap(key)
    }

    /// The results that are ready, without waiting.
    pub fn try_results(&self) -> Vec<JobResult> {
        // Order matters: drain the socket, re-arm the wake-up, then take the results. A thread
        // that finds the wake-up armed after this writes a byte that stays in the socket, so a
        // result pushed after the take is never missed. (Re-arming before draining would let a
        // byte written in between be drained while the flag stays set: the next results would
        // then wait, unannounced, for some other wake-up.)
        let mut buf = [0u8; 64];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
        self.shared.wake_pending.store(false, Ordering::SeqCst);
        let results = std::mem::take(&mut *lock(&self.shared.results));
        self.in_flight.fetch_sub(results.len(), Ordering::SeqCst);
        results
    }

    /// Readable whenever results are waiting; [`Pool::try_results`] drains it.
    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Uses `client` for the jobs that start from now on (after a settings reload). Attempts
    /// already running finish with the client they started with.
    pub fn set_client(&self, client: Client) {
        *self
            .shared
            .client
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(client);
    }

    /// Adds threads up to `threads` in all; never removes any. If the system refuses a new
    /// thread the pool keeps what it has.
    pub fn grow(&self, threads: usize) {
        // Best effort by design: the pool still works with the threads it has.
        let _ = self.spawn_up_to(threads);
    }

    /// Jobs submitted whose result has not been returned by [`Pool::try_results`] yet.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Jobs submitted and not started yet.
    pub fn waiting(&self) -> usize {
        lock(&self.shared.dispatch).waiting()
    }

    /// How many threads run.
    #[cfg(test)]
    fn threads(&self) -> usize {
        *lock(&self.threads)
    }

    fn spawn_up_to(&self, target: usize) -> io::Result<()> {
        // A new thread inherits the mask of the thread that spawns it: block everything
        // around the spawn, so no signal can reach an HTTP thread even before it starts.
        let _blocked = SignalsBlocked::new();
        let mut threads = lock(&self.threads);
        while *threads < target {
            let shared = Arc::clone(&self.shared);
            thread::Builder::new()
                .name(format!("webhook-http-{}", *threads))
                .spawn(move || work(&shared))?;
            *threads += 1;
        }
        Ok(())
    }
}

impl Drop for Pool {
    /// Queued jobs are dropped unsent (their deliveries stay leased in the database and come
    /// back later); running attempts finish on their own, detached threads, which then exit.
    fn drop(&mut self) {
        lock(&self.shared.dispatch).close();
        self.shared.job_ready.notify_all();
    }
}
