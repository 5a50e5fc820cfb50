//! HTTP worker threads. The Postgres main thread hands them jobs and collects plain results,
//! so it never blocks on the network and a slow receiver only holds up one thread.
//!
//! The main thread learns that results are waiting from [`Pool::wake_fd`], which it can add to
//! the set of descriptors it already waits on (its latch).

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread;
use std::time::{Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use crate::http::{Client, Outcome, OutcomeKind, Request};

/// One attempt to make.
#[derive(Debug)]
pub struct Job {
    pub delivery_id: i64,
    pub attempt: i32,
    pub request: Request,
}

/// How the attempt went.
#[derive(Debug)]
pub struct JobResult {
    pub delivery_id: i64,
    pub attempt: i32,
    pub started_at: SystemTime,
    pub outcome: Outcome,
}

/// What the worker threads share.
struct Shared {
    jobs: Receiver<Job>,
    results: Sender<JobResult>,
    /// Write end of the wake-up socket pair.
    wake: UnixStream,
    client: RwLock<Arc<Client>>,
}

pub struct Pool {
    shared: Arc<Shared>,
    jobs: Sender<Job>,
    results: Receiver<JobResult>,
    /// Read end of the wake-up socket pair.
    wake: UnixStream,
    in_flight: AtomicUsize,
    threads: Mutex<usize>,
}

impl Pool {
    /// Starts `threads` threads (at least one).
    pub fn new(threads: usize, client: Client) -> io::Result<Pool> {
        let (wake, wake_writer) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        // Never block a worker on a full socket: a full buffer is already a pending wake-up.
        wake_writer.set_nonblocking(true)?;
        let (job_sender, job_receiver) = crossbeam_channel::unbounded();
        let (result_sender, result_receiver) = crossbeam_channel::unbounded();
        let pool = Pool {
            shared: Arc::new(Shared {
                jobs: job_receiver,
                results: result_sender,
                wake: wake_writer,
                client: RwLock::new(Arc::new(client)),
            }),
            jobs: job_sender,
            results: result_receiver,
            wake,
            in_flight: AtomicUsize::new(0),
            threads: Mutex::new(0),
        };
        pool.spawn_up_to(threads.max(1))?;
        Ok(pool)
    }

    /// Queues a job; a free thread picks it up.
    pub fn submit(&self, job: Job) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.jobs
            .send(job)
            .expect("the pool holds the receiving side of its job channel");
    }

    /// The results that are ready, without waiting.
    pub fn try_results(&self) -> Vec<JobResult> {
        // Wake-up bytes first: a result queued after this drain leaves a byte behind, so the
        // next wait on `wake_fd` returns at once and that result is not missed.
        let mut buf = [0u8; 256];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
        let results: Vec<JobResult> = self.results.try_iter().collect();
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

    pub fn threads(&self) -> usize {
        *self.threads.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn spawn_up_to(&self, target: usize) -> io::Result<()> {
        // A new thread inherits the mask of the thread that spawns it: block everything
        // around the spawn, so no signal can reach an HTTP thread even before it starts.
        let _blocked = SignalsBlocked::new();
        let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
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
        while self.shared.jobs.try_recv().is_ok() {}
    }
}

fn work(shared: &Shared) {
    while let Ok(job) = shared.jobs.recv() {
        let client = Arc::clone(&shared.client.read().unwrap_or_else(PoisonError::into_inner));
        let started_at = SystemTime::now();
        let outcome = guarded(|| client.send(&job.request));
        let result = JobResult {
            delivery_id: job.delivery_id,
            attempt: job.attempt,
            started_at,
            outcome,
        };
        if shared.results.send(result).is_err() {
            break; // the pool is gone
        }
        // WouldBlock means the socket is full of unread wake-ups already: nothing to add.
        let _ = (&shared.wake).write(&[1]);
    }
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
    use std::collections::HashSet;
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
        Job {
            delivery_id,
            attempt: 1,
            request: Request {
                url,
                headers: vec![("X-Delivery-ID".into(), delivery_id.to_string())],
                body: "{}".into(),
            },
        }
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
        let pool = Pool::new(4, client("127.0.0.1/32")).unwrap();
        assert_eq!(pool.threads(), 4);
        for id in 0..40 {
            pool.submit(job(id, server.url("/")));
        }
        let results = collect(&pool, 40);
        assert_eq!(results.len(), 40);
        let mut seen = HashSet::new();
        for result in &results {
            assert!(result.outcome.is_success(), "{:?}", result.outcome);
            assert_eq!(result.attempt, 1);
            assert_eq!(
                result.outcome.body.as_deref(),
                Some(result.delivery_id.to_string().as_str())
            );
            assert!(result.started_at <= SystemTime::now());
            assert!(seen.insert(result.delivery_id));
        }
        assert_eq!(pool.in_flight(), 0);
        assert!(pool.try_results().is_empty());
    }

    #[test]
    fn wake_fd_signals_results_and_is_drained() {
        let server = echo_server();
        let pool = Pool::new(1, client("127.0.0.1/32")).unwrap();
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
        let pool = Pool::new(2, client("")).unwrap();
        pool.submit(job(1, server.url("/")));
        let refused = collect(&pool, 1);
        assert_eq!(refused[0].outcome.kind, OutcomeKind::PolicyRefused);

        pool.set_client(client("127.0.0.1/32"));
        pool.submit(job(2, server.url("/")));
        let delivered = collect(&pool, 1);
        assert_eq!(delivered[0].delivery_id, 2);
        assert!(delivered[0].outcome.is_success());
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
        let pool = Pool::new(2, client("")).unwrap();
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
        let pool = Pool::new(2, client("")).unwrap();
        assert_eq!(pool.threads(), 2);
        pool.grow(5);
        assert_eq!(pool.threads(), 5);
        pool.grow(3);
        assert_eq!(pool.threads(), 5);
        assert_eq!(Pool::new(0, client("")).unwrap().threads(), 1);
    }

    #[test]
    fn a_slow_receiver_holds_up_only_its_thread() {
        let silent = TestServer::http(|_, stream| {
            let _ = stream.read(&mut [0]);
        });
        let fast = echo_server();
        let pool = Pool::new(2, client("127.0.0.1/32")).unwrap();
        pool.submit(job(1, silent.url("/")));
        pool.submit(job(2, fast.url("/")));
        let results = collect(&pool, 1);
        assert_eq!(results[0].delivery_id, 2);
        assert_eq!(pool.in_flight(), 1);
    }

    #[test]
    fn drop_does_not_wait_for_running_attempts() {
        let silent = TestServer::http(|_, stream| {
            let _ = stream.read(&mut [0]);
        });
        let pool = Pool::new(1, client("127.0.0.1/32")).unwrap();
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
