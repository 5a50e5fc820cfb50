use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::Duration;

use super::http_thread::guarded;
use super::*;
use crate::clock;
use crate::http::{Limits, OutcomeKind};
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
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
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
fn one_thread_keeps_several_attempts_to_a_fast_endpoint_in_flight() {
    // The receiver answers the first request at once, then holds each answer until four
    // requests have come in: a thread that waited for each answer before sending the next
    // request would time out on the first.
    const TOGETHER: usize = 4;
    let arrived = Arc::new((Mutex::new(0usize), Condvar::new()));
    let server = TestServer::http({
        let arrived = Arc::clone(&arrived);
        move |request, stream| {
            let id = request
                .header("x-delivery-id")
                .unwrap_or_default()
                .to_owned();
            if id != "0" {
                let (count, changed) = &*arrived;
                let mut count = count.lock().unwrap();
                *count += 1;
                changed.notify_all();
                let deadline = Instant::now() + DEADLINE;
                while *count < TOGETHER && Instant::now() < deadline {
                    count = changed
                        .wait_timeout(count, deadline - Instant::now())
                        .unwrap()
                        .0;
                }
            }
            let _ = stream.write_all(&response("200 OK", &[], id.as_bytes()));
        }
    });
    let pool = Pool::new(1, caps(8, 8), client("127.0.0.1/32")).unwrap();
    // Its first attempt makes the endpoint known to answer fast.
    pool.submit(job(0, server.url("/")));
    assert!(outcome(&collect(&pool, 1)[0]).is_success());
    wait_until(|| pool.pace(1).is_some());
    pool.submit_all((1..=TOGETHER as i64).map(|id| job(id, server.url("/"))));
    let results = collect(&pool, TOGETHER);
    let mut answered: Vec<(i64, Option<String>)> = results
        .iter()
        .map(|result| (result.delivery_id, outcome(result).body.clone()))
        .collect();
    answered.sort();
    let expected: Vec<(i64, Option<String>)> = (1..=TOGETHER as i64)
        .map(|id| (id, Some(id.to_string())))
        .collect();
    assert_eq!(answered, expected, "{results:?}");
    assert!(results.iter().all(|result| outcome(result).is_success()));
}

#[test]
fn an_answered_attempt_frees_its_place_while_the_rest_of_its_threads_attempts_wait() {
    // Two places in all. One thread takes two attempts of a fast endpoint: the first is
    // answered at once, the second held until the end of the test. The place the first
    // frees must let another thread start a third attempt meanwhile.
    let release = Arc::new(AtomicBool::new(false));
    let server = TestServer::http({
        let release = Arc::clone(&release);
        move |request, stream| {
            let id = request
                .header("x-delivery-id")
                .unwrap_or_default()
                .to_owned();
            let deadline = Instant::now() + DEADLINE;
            while id == "2" && !release.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = stream.write_all(&response("200 OK", &[], id.as_bytes()));
        }
    });
    let pool = Pool::new(2, caps(2, 2), client("127.0.0.1/32")).unwrap();
    pool.submit(job(0, server.url("/")));
    assert!(outcome(&collect(&pool, 1)[0]).is_success());
    wait_until(|| pool.pace(1).is_some());
    pool.submit_all([job(1, server.url("/")), job(2, server.url("/"))]);
    assert_eq!(collect(&pool, 1)[0].delivery_id, 1);
    pool.submit(job(3, server.url("/")));
    let third = collect(&pool, 1);
    release.store(true, Ordering::SeqCst);
    assert_eq!(
        third[0].delivery_id, 3,
        "the third attempt ran while the second was held"
    );
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
    let started = clock::unix_seconds(results[0].started_at);
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
