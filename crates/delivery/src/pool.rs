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

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::fair::{FairQueue, Lane, LaneCaps};
use crate::http::{Client, Outcome, OutcomeKind, Request};
use crate::wire::OwnedMessage;

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

/// How many jobs may run at once: in all, per key, per slow key, and for slow and new keys
/// together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub total: usize,
    pub per_key: usize,
    /// A key whose attempts take at least `slow_after` on average (a receiver that hangs,
    /// or answers at the timeout) runs at most `per_slow_key` at once, so that a few such
    /// keys can never hold every thread.
    pub slow_after: Duration,
    pub per_slow_key: usize,
    /// Slow keys, and new keys (none of their attempts has finished yet, so they may hang),
    /// run at most this many jobs at once all together: however many of them there are, the
    /// rest of the threads stay free for the keys known to answer fast.
    pub slow_and_new: usize,
}

impl Caps {
    /// The caps of a pool of `concurrency` threads whose attempts time out after `timeout`.
    pub fn for_concurrency(concurrency: usize, timeout: Duration) -> Caps {
        let total = concurrency.max(1);
        Caps {
            total,
            // One key may use half the threads, so a slow one leaves room for the rest.
            per_key: total.div_ceil(2),
            // Hanging, or answering near the limit.
            slow_after: timeout / 2,
            // An eighth each: a few slow keys can never take the whole slow-and-new budget.
            per_slow_key: (total / 8).max(1),
            // The other half (at least `per_key`) is kept for the keys known to be fast: a fast
            // key keeps the share it has alone whatever hangs. A new key alone still gets its
            // full share, and leaves the budget when its first attempt finishes fast.
            slow_and_new: (total / 2).max(1),
        }
    }

    fn checked(caps: Caps) -> Caps {
        Caps {
            total: caps.total.max(1),
            per_key: caps.per_key.max(1),
            slow_after: caps.slow_after,
            per_slow_key: caps.per_slow_key.max(1),
            slow_and_new: caps.slow_and_new.max(1),
        }
    }

    fn lane_caps(&self) -> LaneCaps {
        let mut caps = LaneCaps::uniform(self.total, self.per_key);
        caps.per_key[Lane::Slow as usize] = self.per_slow_key;
        caps.new_and_slow = self.slow_and_new;
        caps
    }

    /// The lane of a key whose attempts average `average_ms`.
    fn lane(&self, average_ms: f64) -> Lane {
        if average_ms >= self.slow_after.as_secs_f64() * 1000.0 {
            Lane::Slow
        } else {
            Lane::Fast
        }
    }
}

/// A key's recent attempts, as the pool has seen them.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Moving average of its attempts' durations.
    pub average: Duration,
    /// It runs under the slow cap.
    pub slow: bool,
}

/// How fast a key's average attempt duration follows its latest attempts.
const PACE_SMOOTHING: f64 = 0.2;

/// The queue the threads take their jobs from, and its caps.
struct Dispatch {
    queue: FairQueue<Job>,
    caps: Caps,
    /// `caps` as the queue takes them.
    lane_caps: LaneCaps,
    /// Average attempt duration per key (milliseconds), moved by every finished attempt. A
    /// key without one is new (in `Lane::New`); the others are in the lane their average
    /// puts them in.
    pace: HashMap<i64, f64>,
    closed: bool,
}

impl Dispatch {
    fn new(caps: Caps) -> Dispatch {
        let caps = Caps::checked(caps);
        Dispatch {
            queue: FairQueue::default(),
            caps,
            lane_caps: caps.lane_caps(),
            pace: HashMap::new(),
            closed: false,
        }
    }

    fn start_next(&mut self) -> Option<Job> {
        self.queue.start_next(&self.lane_caps).map(|(_, job)| job)
    }

    /// A job of `key` finished after `duration` (None: it was not started). Returns whether
    /// the key changed lanes (which may let more than one job start).
    fn finished(&mut self, key: i64, duration: Option<Duration>) -> bool {
        self.queue.finished(key);
        let Some(duration) = duration else {
            return false;
        };
        let ms = duration.as_secs_f64() * 1000.0;
        let average = *self
            .pace
            .entry(key)
            .and_modify(|average| *average += (ms - *average) * PACE_SMOOTHING)
            .or_insert(ms);
        self.queue.set_lane(key, self.caps.lane(average))
    }

    fn set_caps(&mut self, caps: Caps) {
        self.caps = Caps::checked(caps);
        self.lane_caps = self.caps.lane_caps();
        // `slow_after` may have moved: every known key's lane again.
        let caps = self.caps;
        let lanes = self.pace.iter().map(|(&key, &ms)| (key, caps.lane(ms)));
        self.queue.set_lanes(lanes.collect());
    }

    fn forget_keys(&mut self) {
        self.pace.clear();
        self.queue.set_lanes(HashMap::new());
    }
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
    pub fn submit(&self, job: Job) {
        self.submit_all(std::iter::once(job));
    }

    /// Queues jobs under one lock.
    pub fn submit_all(&self, jobs: impl IntoIterator<Item = Job>) {
        let mut dispatch = lock(&self.shared.dispatch);
        let mut count = 0;
        for job in jobs {
            dispatch.queue.push(job.key, job);
            count += 1;
        }
        // Counted before any thread can take one of them (and report it done).
        self.in_flight.fetch_add(count, Ordering::SeqCst);
        drop(dispatch);
        if count >= self.threads() {
            self.shared.job_ready.notify_all();
        } else {
            for _ in 0..count {
                self.shared.job_ready.notify_one();
            }
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
        let dispatch = lock(&self.shared.dispatch);
        dispatch.pace.get(&key).map(|&ms| Pace {
            average: Duration::from_secs_f64(ms / 1000.0),
            slow: dispatch.caps.lane(ms) == Lane::Slow,
        })
    }

    /// Whether `key` runs under the slow cap now.
    pub fn is_slow(&self, key: i64) -> bool {
        self.pace(key).is_some_and(|pace| pace.slow)
    }

    /// How many jobs of `key` may run at once now (`Caps::per_slow_key` if it is slow,
    /// else `Caps::per_key`), the slow-and-new budget aside.
    pub fn cap(&self, key: i64) -> usize {
        let dispatch = lock(&self.shared.dispatch);
        dispatch.lane_caps.per_key[dispatch.queue.lane(key) as usize]
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
    /// thread the pool keeps what it has: [`Pool::threads`] tells how many run.
    pub fn grow(&self, threads: usize) {
        // Best effort by design: the pool still works with the threads it has.
        let _ = self.spawn_up_to(threads);
    }

    /// Jobs submitted whose result has not been returned by [`Pool::try_results`] yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Jobs submitted and not started yet.
    pub fn waiting(&self) -> usize {
        lock(&self.shared.dispatch).queue.waiting_len()
    }

    pub fn threads(&self) -> usize {
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
        let mut dispatch = lock(&self.shared.dispatch);
        dispatch.closed = true;
        dispatch.queue.clear();
        drop(dispatch);
        self.shared.job_ready.notify_all();
    }
}

fn work(shared: &Shared) {
    let mut finished = None;
    loop {
        let job = {
            let mut dispatch = lock(&shared.dispatch);
            // The finished attempt's pace counts before this thread takes its next job: a
            // key that just turned slow gets no more than its slow cap from here on.
            if let Some((key, duration)) = finished.take() {
                if dispatch.finished(key, duration) {
                    // A new key found fast takes its running jobs out of the slow-and-new
                    // budget: room for more than the one job this thread takes next.
                    shared.job_ready.notify_all();
                }
            }
            loop {
                if dispatch.closed {
                    return;
                }
                // The job this thread's finished attempt made room for, if any, is taken here
                // by this same thread: no other thread needs waking for it.
                if let Some(job) = dispatch.start_next() {
                    break job;
                }
                dispatch = shared
                    .job_ready
                    .wait(dispatch)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        let key = job.key;
        let result = attempt(shared, job);
        finished = Some((key, result.outcome.as_ref().map(|o| o.duration)));
        lock(&shared.results).push(result);
        if !shared.wake_pending.swap(true, Ordering::SeqCst) {
            // WouldBlock means the socket is full of unread wake-ups already: nothing to add.
            let _ = (&shared.wake).write(&[1]);
        }
    }
}

fn attempt(shared: &Shared, job: Job) -> JobResult {
    let started_at = SystemTime::now();
    let mut result = JobResult {
        delivery_id: job.delivery_id,
        attempt: job.attempt,
        key: job.key,
        started_at,
        outcome: None,
    };
    if job
        .start_by
        .is_some_and(|deadline| Instant::now() > deadline)
    {
        return result;
    }
    let client = Arc::clone(&shared.client.read().unwrap_or_else(PoisonError::into_inner));
    result.outcome = Some(guarded(|| {
        let request = match job.request {
            Outgoing::Ready(request) => request,
            Outgoing::SignAtStart { url, message } => {
                let unix = started_at
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                match message.headers(unix) {
                    Ok(headers) => Request {
                        url,
                        headers,
                        body: message.body,
                    },
                    // Its format cannot be honoured for this body: nothing is sent.
                    Err(reason) => return Outcome::failure(OutcomeKind::InvalidRequest, reason),
                }
            }
        };
        client.send(&request)
    }));
    result
}

/// Runs one attempt; a panic becomes a failed outcome instead of killing the thread and
/// losing the result.
fn guarded(attempt: impl FnOnce() -> Outcome) -> Outcome {
    let started = Instant::now();
    panic::catch_unwind(AssertUnwindSafe(attempt)).unwrap_or_else(|payload| {
        let reason = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("panic");
        let mut outcome =
            Outcome::failure(OutcomeKind::Transport, format!("internal error: {reason}"));
        outcome.duration = started.elapsed();
        outcome
    })
}

/// Postgres handles its signals on the main thread. Taken on an HTTP thread instead, a signal
/// would run a Postgres handler there (which must never happen off the main thread) and make
/// a socket call with a timeout fail with EINTR. While this guard lives, the calling thread
/// blocks every signal; dropping it restores the previous mask.
struct SignalsBlocked(libc::sigset_t);

impl SignalsBlocked {
    fn new() -> SignalsBlocked {
        // SAFETY: sigfillset initialises the set it is given; pthread_sigmask only changes the
        // calling thread's mask and writes the previous one to `old`.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
            SignalsBlocked(old)
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new` on this same thread.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::time::Duration;

    use super::*;
    use crate::http::Limits;
    use crate::policy::NetworkPolicy;
    use crate::testing::{response, TestServer};

    const DEADLINE: Duration = Duration::from_secs(10);

    fn client(allowed: &str) -> Client {
        Client::new(
            Limits {
                timeout: Duration::from_secs(5),
                max_response_bytes: 1024,
            },
            NetworkPolicy::parse(allowed).unwrap(),
        )
    }

    /// Answers each request with its X-Delivery-ID, so results can be matched to jobs.
    fn echo_server() -> TestServer {
        TestServer::http(|request, stream| {
            let id = request
                .header("x-delivery-id")
                .unwrap_or_default()
                .to_owned();
            let _ = stream.write_all(&response("200 OK", &[], id.as_bytes()));
        })
    }

    fn job(delivery_id: i64, url: String) -> Job {
        keyed_job(delivery_id, 1, url)
    }

    fn keyed_job(delivery_id: i64, key: i64, url: String) -> Job {
        Job {
            delivery_id,
            attempt: 1,
            key,
            start_by: None,
            request: Outgoing::Ready(Request {
                url,
                headers: vec![("X-Delivery-ID".into(), delivery_id.to_string())],
                body: "{}".into(),
            }),
        }
    }

    /// No key is ever slow enough to be capped further.
    fn caps(total: usize, per_key: usize) -> Caps {
        Caps {
            total,
            per_key,
            slow_after: Duration::from_secs(3600),
            per_slow_key: 1,
            slow_and_new: total,
        }
    }

    fn outcome(result: &JobResult) -> &Outcome {
        result.outcome.as_ref().expect("the job was started")
    }

    /// Waits on the wake-up descriptor the way the worker's main loop does.
    fn readable(fd: RawFd, timeout: Duration) -> bool {
        let mut pollfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = libc::c_int::try_from(timeout.as_millis()).unwrap();
        // SAFETY: one valid pollfd, and its count.
        let ready = unsafe { libc::poll(&mut pollfd, 1, millis) };
        assert!(ready >= 0, "poll failed: {}", io::Error::last_os_error());
        ready == 1
    }

    /// A thread records its attempt's pace when it next takes the dispatch lock, just after
    /// handing over the result: polls `done` until then.
    fn wait_until(done: impl Fn() -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !done() {
            assert!(Instant::now() < deadline, "not done before the deadline");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Collects `count` results, waiting on the wake-up descriptor between drains.
    fn collect(pool: &Pool, count: usize) -> Vec<JobResult> {
        let deadline = Instant::now() + DEADLINE;
        let mut results = Vec::new();
        while results.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                readable(pool.wake_fd(), left),
                "only {} of {count} results before the deadline",
                results.len()
            );
            results.extend(pool.try_results());
        }
        results
    }

    #[test]
    fn every_job_comes_back() {
        let server = echo_server();
        let pool = Pool::new(4, caps(4, 4), client("127.0.0.1/32")).unwrap();
        assert_eq!(pool.threads(), 4);
        for id in 0..40 {
            pool.submit(job(id, server.url("/")));
        }
        let results = collect(&pool, 40);
        assert_eq!(results.len(), 40);
        let mut seen = HashSet::new();
        for result in &results {
            assert!(outcome(result).is_success(), "{:?}", result.outcome);
            assert_eq!(result.attempt, 1);
            assert_eq!(
                outcome(result).body.as_deref(),
                Some(result.delivery_id.to_string().as_str())
            );
            assert!(result.started_at <= SystemTime::now());
            assert!(seen.insert(result.delivery_id));
        }
        assert_eq!(pool.in_flight(), 0);
        assert!(pool.try_results().is_empty());
    }

    #[test]
    fn every_result_is_announced_on_wake_fd() {
        // Results keep arriving while the caller drains: each must be announced, or a caller
        // that waits on the descriptor (as the worker does) would sit on it.
        let server = echo_server();
        let pool = Pool::new(8, caps(8, 8), client("127.0.0.1/32")).unwrap();
        for round in 0..30 {
            pool.submit_all((0..100).map(|i| job(round * 100 + i, server.url("/"))));
            let deadline = Instant::now() + DEADLINE;
            let mut results = 0;
            while results < 100 {
                assert!(
                    readable(pool.wake_fd(), Duration::from_secs(2)),
                    "round {round}: {results} of 100 results, the rest unannounced"
                );
                results += pool.try_results().len();
                assert!(Instant::now() < deadline);
            }
        }
    }

    #[test]
    fn wake_fd_signals_results_and_is_drained() {
        let server = echo_server();
        let pool = Pool::new(1, caps(1, 1), client("127.0.0.1/32")).unwrap();
        assert!(!readable(pool.wake_fd(), Duration::ZERO));
        pool.submit(job(7, server.url("/")));
        assert_eq!(pool.in_flight(), 1);
        assert!(readable(pool.wake_fd(), DEADLINE));
        let results = pool.try_results();
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].delivery_id, 7);
        assert_eq!(pool.in_flight(), 0);
        assert!(!readable(pool.wake_fd(), Duration::ZERO));
    }

    #[test]
    fn set_client_applies_to_later_jobs() {
        let server = echo_server();
        let pool = Pool::new(2, caps(2, 2), client("")).unwrap();
        pool.submit(job(1, server.url("/")));
        let refused = collect(&pool, 1);
        assert_eq!(outcome(&refused[0]).kind, OutcomeKind::PolicyRefused);

        pool.set_client(client("127.0.0.1/32"));
        pool.submit(job(2, server.url("/")));
        let delivered = collect(&pool, 1);
        assert_eq!(delivered[0].delivery_id, 2);
        assert!(outcome(&delivered[0]).is_success());
    }

    /// The SigBlk mask of the named threads of this process, from /proc.
    fn blocked_masks(prefix: &str) -> Vec<u64> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter(|task| {
                std::fs::read_to_string(task.path().join("comm"))
                    .is_ok_and(|c| c.starts_with(prefix))
            })
            .map(|task| {
                let status = std::fs::read_to_string(task.path().join("status")).unwrap();
                let line = status.lines().find(|l| l.starts_with("SigBlk:")).unwrap();
                u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
            })
            .collect()
    }

    #[test]
    fn http_threads_block_postgres_signals_and_the_caller_keeps_its_mask() {
        let bit = |signal: i32| 1u64 << (signal - 1);
        let postgres_signals = [
            libc::SIGHUP,
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGURG,
            libc::SIGALRM,
        ];
        let caller = || {
            let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            status
                .lines()
                .find(|l| l.starts_with("SigBlk:"))
                .unwrap()
                .to_string()
        };
        let before = caller();
        let pool = Pool::new(2, caps(2, 2), client("")).unwrap();
        pool.grow(3);
        // A thread takes its name once it runs.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let masks = loop {
            let masks = blocked_masks("webhook-http-");
            if masks.len() >= 3 || std::time::Instant::now() > deadline {
                break masks;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(masks.len() >= 3, "{masks:?}");
        for mask in masks {
            for signal in postgres_signals {
                assert_ne!(
                    mask & bit(signal),
                    0,
                    "signal {signal} reaches an HTTP thread"
                );
            }
        }
        assert_eq!(caller(), before, "the spawning thread's mask is restored");
    }

    #[test]
    fn grow_only_adds() {
        let pool = Pool::new(2, caps(2, 2), client("")).unwrap();
        assert_eq!(pool.threads(), 2);
        pool.grow(5);
        assert_eq!(pool.threads(), 5);
        pool.grow(3);
        assert_eq!(pool.threads(), 5);
        assert_eq!(Pool::new(0, caps(0, 0), client("")).unwrap().threads(), 1);
    }

    #[test]
    fn a_slow_receiver_holds_up_only_its_thread() {
        let silent = TestServer::http(|_, stream| {
            let _ = stream.read(&mut [0]);
        });
        let fast = echo_server();
        let pool = Pool::new(2, caps(2, 2), client("127.0.0.1/32")).unwrap();
        pool.submit(job(1, silent.url("/")));
        pool.submit(job(2, fast.url("/")));
        let results = collect(&pool, 1);
        assert_eq!(results[0].delivery_id, 2);
        assert_eq!(pool.in_flight(), 1);
    }

    #[test]
    fn a_key_whose_attempts_hang_runs_one_at_a_time_and_leaves_the_rest() {
        let silent = TestServer::http(|_, stream| {
            let _ = stream.read(&mut [0]);
        });
        let fast = echo_server();
        let client = Client::new(
            Limits {
                timeout: Duration::from_millis(300),
                max_response_bytes: 1024,
            },
            NetworkPolicy::parse("127.0.0.1/32").unwrap(),
        );
        // Four threads, two per key; a key whose attempts average 150 ms or more gets one.
        let caps = Caps {
            total: 4,
            per_key: 2,
            slow_after: Duration::from_millis(150),
            per_slow_key: 1,
            slow_and_new: 4,
        };
        let pool = Pool::new(4, caps, client).unwrap();
        pool.submit_all((1..=6).map(|id| keyed_job(id, 1, silent.url("/"))));
        let hung = collect(&pool, 4);
        wait_until(|| pool.is_slow(1));
        assert!(!pool.is_slow(2));
        // The fast key gets the threads the hanging one no longer may take.
        pool.submit_all((10..20).map(|id| keyed_job(id, 2, fast.url("/"))));
        let mut rest = collect(&pool, 12);
        rest.extend(hung);
        let mut attempts: Vec<(SystemTime, SystemTime)> = rest
            .iter()
            .filter(|r| r.key == 1)
            .map(|r| (r.started_at, r.started_at + outcome(r).duration))
            .collect();
        assert_eq!(attempts.len(), 6);
        attempts.sort();
        // The first two ran side by side (two per key); once they had timed out, the rest
        // ran one after another.
        let overlap = Duration::from_millis(100);
        for pair in attempts[2..].windows(2) {
            assert!(
                pair[1].0 + overlap >= pair[0].1,
                "two attempts of the hanging key ran at once: {pair:?}"
            );
        }
        let fast_results = rest.iter().filter(|r| r.key == 2).count();
        assert_eq!(fast_results, 10);
    }

    /// The isolation tests compare throughputs: one at a time, so they take no CPU from each
    /// other's windows.
    static ISOLATION: Mutex<()> = Mutex::new(());

    const FAST_KEY: i64 = 1_000;
    /// Keys 1..=HANGING_KEYS go to a receiver that never answers.
    const HANGING_KEYS: i64 = 100;
    /// Jobs each hanging key keeps queued, as the worker claims ahead for a slow endpoint.
    const HANGING_DEPTH: usize = 8;
    const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
    const WINDOW: Duration = Duration::from_millis(1500);

    /// What the fast key got done in one window.
    #[derive(Debug)]
    struct Window {
        completed: usize,
        /// The longest a fast job waited to start (for one still queued at the end: so far).
        longest_wait: Duration,
    }

    /// Keeps the fast key, and the hanging keys once added, supplied with jobs the way the
    /// worker does: a few claimed ahead each, topped up as results come back.
    struct Traffic {
        pool: Pool,
        fast_url: String,
        hang_url: String,
        fast_depth: usize,
        /// The fast key's jobs not back yet: when each was submitted.
        fast_out: HashMap<i64, SystemTime>,
        /// Jobs not back yet per hanging key.
        hanging_out: HashMap<i64, usize>,
        next_id: i64,
    }

    impl Traffic {
        fn new(pool: Pool, fast: &TestServer, silent: &TestServer, fast_depth: usize) -> Traffic {
            Traffic {
                pool,
                fast_url: fast.url("/"),
                hang_url: silent.url("/"),
                fast_depth,
                fast_out: HashMap::new(),
                hanging_out: HashMap::new(),
                next_id: 0,
            }
        }

        fn add_hanging_keys(&mut self) {
            self.hanging_out
                .extend((1..=HANGING_KEYS).map(|key| (key, 0)));
        }

        fn top_up(&mut self) {
            let mut jobs = Vec::new();
            while self.fast_out.len() < self.fast_depth {
                self.next_id += 1;
                self.fast_out.insert(self.next_id, SystemTime::now());
                jobs.push(keyed_job(self.next_id, FAST_KEY, self.fast_url.clone()));
            }
            for (&key, out) in &mut self.hanging_out {
                while *out < HANGING_DEPTH {
                    *out += 1;
                    self.next_id += 1;
                    jobs.push(keyed_job(self.next_id, key, self.hang_url.clone()));
                }
            }
            self.pool.submit_all(jobs);
        }

        fn run(&mut self, window: Duration) -> Window {
            let end = Instant::now() + window;
            let mut measured = Window {
                completed: 0,
                longest_wait: Duration::ZERO,
            };
            loop {
                self.top_up();
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                if !readable(self.pool.wake_fd(), left) {
                    continue;
                }
                for result in self.pool.try_results() {
                    if result.key != FAST_KEY {
                        *self.hanging_out.get_mut(&result.key).unwrap() -= 1;
                        continue;
                    }
                    assert!(outcome(&result).is_success(), "{:?}", result.outcome);
                    let submitted = self.fast_out.remove(&result.delivery_id).unwrap();
                    let waited = result
                        .started_at
                        .duration_since(submitted)
                        .unwrap_or_default();
                    measured.completed += 1;
                    measured.longest_wait = measured.longest_wait.max(waited);
                }
            }
            let now = SystemTime::now();
            for submitted in self.fast_out.values() {
                let waited = now.duration_since(*submitted).unwrap_or_default();
                measured.longest_wait = measured.longest_wait.max(waited);
            }
            measured
        }
    }

    fn silent_server() -> TestServer {
        TestServer::http(|_, stream| {
            let _ = stream.read(&mut [0]);
        })
    }

    fn short_timeout_client() -> Client {
        Client::new(
            Limits {
                timeout: ATTEMPT_TIMEOUT,
                max_response_bytes: 1024,
            },
            NetworkPolicy::parse("127.0.0.1/32").unwrap(),
        )
    }

    /// The fast key alone for a window, then with the hanging keys for a window: it must keep
    /// half of its throughput, and none of its jobs may wait a second.
    fn assert_isolated(traffic: &mut Traffic) {
        let alone = traffic.run(WINDOW);
        traffic.add_hanging_keys();
        let hung = traffic.run(WINDOW);
        eprintln!("fast key alone: {alone:?}; beside {HANGING_KEYS} hanging keys: {hung:?}");
        assert!(
            alone.completed >= 100,
            "too few fast jobs alone to compare: {alone:?}"
        );
        assert!(
            hung.completed * 2 >= alone.completed,
            "the fast key did {} jobs beside {HANGING_KEYS} hanging keys, {} alone",
            hung.completed,
            alone.completed
        );
        assert!(
            hung.longest_wait < Duration::from_secs(1),
            "a fast job waited {:?} beside {HANGING_KEYS} hanging keys",
            hung.longest_wait
        );
        let hanging_started: usize = traffic.hanging_out.values().sum();
        assert!(hanging_started > 0);
    }

    #[test]
    fn a_hundred_keys_known_to_hang_leave_a_fast_key_its_throughput() {
        let _one_at_a_time = lock(&ISOLATION);
        let (fast, silent) = (echo_server(), silent_server());
        let threads = 32;
        let caps = Caps::for_concurrency(threads, ATTEMPT_TIMEOUT);
        let pool = Pool::new(threads, caps, short_timeout_client()).unwrap();
        // Each hanging key times out once, all at the same time (the warm-up is not what is
        // measured), so that they are all known slow when the measure starts.
        pool.set_caps(Caps {
            slow_and_new: threads,
            ..caps
        });
        pool.submit_all((1..=HANGING_KEYS).map(|key| keyed_job(-key, key, silent.url("/"))));
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut timed_out = 0;
        while timed_out < HANGING_KEYS {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(readable(pool.wake_fd(), left), "{timed_out} timed out");
            timed_out += pool.try_results().len() as i64;
        }
        wait_until(|| (1..=HANGING_KEYS).all(|key| pool.is_slow(key)));
        assert_eq!(pool.cap(1), caps.per_slow_key);
        pool.set_caps(caps);
        let mut traffic = Traffic::new(pool, &fast, &silent, 2 * caps.per_key);
        assert_isolated(&mut traffic);
        assert!(!traffic.pool.is_slow(FAST_KEY));
        assert_eq!(traffic.pool.cap(FAST_KEY), caps.per_key);
    }

    #[test]
    fn a_hundred_new_keys_that_hang_leave_a_fast_key_its_throughput() {
        let _one_at_a_time = lock(&ISOLATION);
        let (fast, silent) = (echo_server(), silent_server());
        let threads = 8;
        let caps = Caps::for_concurrency(threads, ATTEMPT_TIMEOUT);
        let pool = Pool::new(threads, caps, short_timeout_client()).unwrap();
        let mut traffic = Traffic::new(pool, &fast, &silent, 2 * caps.per_key);
        assert_isolated(&mut traffic);
        // Only the first of them to start (within the budget) timed out in the window: the
        // others were new throughout.
        let known = (1..=HANGING_KEYS)
            .filter(|&key| traffic.pool.pace(key).is_some())
            .count();
        assert!(known <= caps.slow_and_new, "{known} timed out");
    }

    #[test]
    fn a_new_key_alone_runs_its_full_share_at_once() {
        let silent = silent_server();
        let caps = Caps::for_concurrency(32, ATTEMPT_TIMEOUT);
        let pool = Pool::new(32, caps, short_timeout_client()).unwrap();
        pool.submit_all((0..100).map(|id| keyed_job(id, 7, silent.url("/"))));
        // Nothing finishes before the timeout: all that run started as a new key's.
        let deadline = Instant::now() + Duration::from_secs(5);
        while silent.connections() < caps.per_key && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(silent.connections(), caps.per_key);
        assert_eq!(pool.waiting(), 100 - caps.per_key);
    }

    #[test]
    fn a_new_key_found_fast_runs_its_full_share_at_once() {
        let server = TestServer::http(|_, stream| {
            std::thread::sleep(Duration::from_millis(300));
            let _ = stream.write_all(&response("200 OK", &[], b""));
        });
        // One job of a new key at a time; known fast (under 2 s), four.
        let caps = Caps {
            total: 4,
            per_key: 4,
            slow_after: Duration::from_secs(2),
            per_slow_key: 1,
            slow_and_new: 1,
        };
        let pool = Pool::new(4, caps, client("127.0.0.1/32")).unwrap();
        pool.submit_all((1..=4).map(|id| job(id, server.url("/"))));
        let mut results = collect(&pool, 4);
        results.sort_by_key(|r| r.started_at);
        assert!(results[0].started_at + Duration::from_millis(300) <= results[1].started_at);
        // The three others start together once the first is back, not one after another.
        let spread = results[3]
            .started_at
            .duration_since(results[1].started_at)
            .unwrap();
        assert!(spread < Duration::from_millis(250), "{spread:?}");
    }

    #[test]
    fn caps_for_concurrency_keep_half_the_threads_for_fast_keys() {
        let caps = Caps::for_concurrency(32, Duration::from_secs(5));
        assert_eq!(
            caps,
            Caps {
                total: 32,
                per_key: 16,
                slow_after: Duration::from_millis(2500),
                per_slow_key: 4,
                slow_and_new: 16,
            }
        );
        for concurrency in 0..=64 {
            let caps = Caps::for_concurrency(concurrency, Duration::from_secs(1));
            assert!(caps.per_slow_key >= 1 && caps.slow_and_new >= 1);
            if concurrency >= 2 {
                // What slow and new keys leave is at least a fast key's own cap.
                assert!(caps.total - caps.slow_and_new >= caps.per_key);
            }
        }
    }

    #[test]
    fn new_caps_move_keys_between_lanes() {
        let server = TestServer::http(|_, stream| {
            std::thread::sleep(Duration::from_millis(100));
            let _ = stream.write_all(&response("200 OK", &[], b""));
        });
        let caps = Caps {
            total: 8,
            per_key: 4,
            slow_after: Duration::from_secs(1),
            per_slow_key: 1,
            slow_and_new: 4,
        };
        let pool = Pool::new(8, caps, client("127.0.0.1/32")).unwrap();
        assert_eq!(pool.cap(5), 4, "a new key");
        pool.submit(keyed_job(1, 5, server.url("/")));
        collect(&pool, 1);
        wait_until(|| pool.pace(5).is_some());
        assert_eq!(pool.cap(5), 4);
        pool.set_caps(Caps {
            slow_after: Duration::from_millis(50),
            ..caps
        });
        assert!(pool.is_slow(5));
        assert_eq!(pool.cap(5), 1);
        pool.forget_keys();
        assert!(pool.pace(5).is_none());
        assert_eq!(pool.cap(5), 4);
    }

    #[test]
    fn a_job_past_its_start_by_comes_back_unsent() {
        let server = TestServer::http(|_, stream| {
            let _ = stream.write_all(&response("200 OK", &[], b""));
        });
        let pool = Pool::new(1, caps(1, 1), client("127.0.0.1/32")).unwrap();
        let mut late = job(1, server.url("/"));
        late.start_by = Some(Instant::now() - Duration::from_millis(1));
        pool.submit(late);
        let results = collect(&pool, 1);
        assert_eq!(results[0].delivery_id, 1);
        assert!(results[0].outcome.is_none(), "{:?}", results[0].outcome);
        assert_eq!(server.requests().len(), 0, "nothing was sent");
    }

    #[test]
    fn a_message_is_signed_when_its_attempt_starts() {
        let server = TestServer::http(|request, stream| {
            let timestamp = request
                .header("x-webhook-timestamp")
                .unwrap_or_default()
                .to_owned();
            let signature = request
                .header("x-webhook-signature")
                .unwrap_or_default()
                .to_owned();
            let body = format!("{timestamp} {signature}");
            let _ = stream.write_all(&response("200 OK", &[], body.as_bytes()));
        });
        let pool = Pool::new(1, caps(1, 1), client("127.0.0.1/32")).unwrap();
        let message = OwnedMessage {
            webhook_id: 3,
            delivery_id: 4,
            event_id: "e".into(),
            event: "cliente.criado".into(),
            body: "{}".into(),
            secret: "s3cr3t".into(),
            previous_secrets: vec![],
            signature_header: "X-Webhook-Signature".into(),
            custom_headers: vec![],
            wire_format: Default::default(),
            user_agent: "webhook_ext/test".into(),
        };
        let expected_signature = crate::signing::hex_signature("s3cr3t", b"{}");
        pool.submit(Job {
            delivery_id: 4,
            attempt: 1,
            key: 3,
            start_by: Some(Instant::now() + DEADLINE),
            request: Outgoing::SignAtStart {
                url: server.url("/"),
                message,
            },
        });
        let results = collect(&pool, 1);
        let started = results[0]
            .started_at
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(
            outcome(&results[0]).body.as_deref(),
            Some(format!("{started} {expected_signature}").as_str())
        );
    }

    #[test]
    fn drop_does_not_wait_for_running_attempts() {
        let silent = TestServer::http(|_, stream| {
            let _ = stream.read(&mut [0]);
        });
        let pool = Pool::new(1, caps(1, 1), client("127.0.0.1/32")).unwrap();
        pool.submit(job(1, silent.url("/")));
        pool.submit(job(2, silent.url("/")));
        let started = Instant::now();
        drop(pool);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_panic_becomes_a_failed_outcome() {
        let outcome = guarded(|| panic!("boom"));
        assert_eq!(outcome.kind, OutcomeKind::Transport);
        assert_eq!(outcome.error.as_deref(), Some("internal error: boom"));
        let outcome = guarded(|| panic!("{} {}", "formatted", 42));
        assert_eq!(
            outcome.error.as_deref(),
            Some("internal error: formatted 42")
        );
    }
}
