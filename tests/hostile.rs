//! Hostile receivers, redirects, the SSRF policy, secrets and racing retries, end to end: a
//! real cluster with the worker preloaded and real HTTP receivers on 127.0.0.1.
//!
//! The receiver tests share one cluster (`shared_cluster`); each ends by checking that the
//! worker is still the one that started with the cluster and that nothing crashed. The SSRF
//! and secret tests start their own cluster, because they change settings or read the log.

use std::collections::HashMap;
use std::net::{Ipv4Addr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use webhook_ext_tests::*;

const DEADLINE: Duration = Duration::from_secs(30);
/// `webhook.timeout` in every harness cluster.
const TIMEOUT_MS: i32 = 2_000;
/// What an attempt may take beyond the timeout on a busy machine.
const MARGIN_MS: i32 = 1_500;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A webhook subscribed to one event name of its own.
struct Hook {
    id: i64,
    event: String,
}

/// A webhook on `url` for a fresh event name, with its own `schedule` (e.g. `{0s}`) if given.
fn hook(db: &mut Client, url: &str, secret: Option<&str>, schedule: Option<&str>) -> Hook {
    let event = unique("hostile");
    let id: i64 = db
        .query_one(
            "SELECT id FROM webhook_create($1, secret => $2, events => ARRAY[$3])",
            &[&url, &secret, &event],
        )
        .unwrap_or_else(|e| panic!("webhook_create({url}): {}", db_message(&e)))
        .get(0);
    if let Some(schedule) = schedule {
        db.execute(
            "UPDATE webhook SET retry_schedule = $1::text::interval[] WHERE id = $2",
            &[&schedule, &id],
        )
        .unwrap();
    }
    Hook { id, event }
}

/// Emits the hook's event; returns the delivery it queued.
fn emit(db: &mut Client, hook: &Hook) -> i64 {
    let queued: i32 = db
        .query_one("SELECT webhook_emit($1, '{\"n\": 1}')", &[&hook.event])
        .unwrap()
        .get(0);
    assert_eq!(queued, 1);
    db.query_one(
        "SELECT max(id) FROM webhook_delivery WHERE webhook_id = $1",
        &[&hook.id],
    )
    .unwrap()
    .get(0)
}

/// A delivery once it is `succeeded` or `failed`.
#[derive(Debug)]
struct Finished {
    status: String,
    attempts: i32,
    response_status: Option<i32>,
    response_body: Option<String>,
    error: Option<String>,
    duration_ms: Option<i32>,
}

impl Finished {
    fn error(&self) -> &str {
        self.error.as_deref().unwrap_or_default()
    }
}

fn wait_finished(db: &mut Client, delivery_id: i64) -> Finished {
    wait_until(
        &format!("delivery {delivery_id} to succeed or fail"),
        DEADLINE,
        || {
            let row = db
                .query_one(
                    "SELECT status, attempts, response_status, response_body, error, duration_ms \
                       FROM webhook_delivery WHERE id = $1",
                    &[&delivery_id],
                )
                .unwrap();
            let status: String = row.get(0);
            matches!(status.as_str(), "succeeded" | "failed").then(|| Finished {
                status,
                attempts: row.get(1),
                response_status: row.get(2),
                response_body: row.get(3),
                error: row.get(4),
                duration_ms: row.get(5),
            })
        },
    )
}

/// One `webhook_attempt` row.
#[derive(Debug)]
struct Attempt {
    attempt: i32,
    manual: bool,
    response_status: Option<i32>,
    error: Option<String>,
}

fn attempts(db: &mut Client, delivery_id: i64) -> Vec<Attempt> {
    db.query(
        "SELECT attempt, manual, response_status, error FROM webhook_attempt \
          WHERE delivery_id = $1 ORDER BY attempt, id",
        &[&delivery_id],
    )
    .unwrap()
    .iter()
    .map(|r| Attempt {
        attempt: r.get(0),
        manual: r.get(1),
        response_status: r.get(2),
        error: r.get(3),
    })
    .collect()
}

fn max_response_bytes(db: &mut Client) -> usize {
    query_string(
        db,
        "SELECT setting FROM pg_settings WHERE name = 'webhook.max_response_bytes'",
    )
    .parse()
    .unwrap()
}

/// The worker is the one that started with the cluster (one start in the log, same pid as in
/// pg_stat_activity) and nothing crashed.
fn assert_worker_unharmed(db: &mut Client, log: &str) {
    let workers: Vec<i32> = db
        .query(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'webhook_ext worker'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(workers.len(), 1, "exactly one worker runs: {workers:?}");
    let starts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("webhook_ext worker started"))
        .collect();
    assert_eq!(starts.len(), 1, "the worker started once: {starts:#?}");
    assert!(
        starts[0].contains(&format!("[{}]", workers[0])),
        "the running worker {} is the one that started: {}",
        workers[0],
        starts[0]
    );
    // (Exit code 0 is a worker that looked at a database without the extension, at debug1.)
    for bad in ["PANIC", "terminated by signal", "exited with exit code 1"] {
        assert!(
            !log.contains(bad),
            "the server log has {bad:?}:\n{}",
            log.lines()
                .filter(|l| l.contains(bad))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

fn assert_shared_worker_unharmed(db: &mut Client) {
    let (_, log_path) = shared_cluster();
    let log = std::fs::read_to_string(log_path).unwrap();
    assert_worker_unharmed(db, &log);
}

/// A port on 127.0.0.1 that refuses connections while the value lives: the socket is bound
/// (so no receiver started meanwhile can get the port) but never listens.
struct RefusingPort {
    _socket: OwnedFd,
    port: u16,
}

fn refusing_port() -> RefusingPort {
    // SAFETY: plain socket calls on a descriptor owned by `socket` and on local structs.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let socket = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let bound = libc::bind(socket.as_raw_fd(), std::ptr::addr_of!(addr).cast(), len);
        assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
        let named = libc::getsockname(
            socket.as_raw_fd(),
            std::ptr::addr_of_mut!(addr).cast(),
            &mut len,
        );
        assert_eq!(named, 0, "getsockname: {}", std::io::Error::last_os_error());
        RefusingPort {
            _socket: socket,
            port: u16::from_be(addr.sin_port),
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. Hostile or broken receivers
// ---------------------------------------------------------------------------------------

/// How a delivery to a hostile target went, next to a fast receiver's.
struct HostileRun {
    delivery: Finished,
    attempts: Vec<Attempt>,
    /// The fast receiver's delivery succeeded before the hostile attempt ended.
    fast_done_while_hostile_in_flight: bool,
}

/// One event to `url` (single attempt: schedule `{0s}`); once the worker has taken it, an
/// event to a fast receiver, which must succeed. Checks the worker survived.
fn run_hostile(url: &str) -> HostileRun {
    let mut db = connect_shared();
    let fast = Receiver::always(Reply::ok());
    let fast_hook = hook(&mut db, &fast.url(), None, None);
    let hostile_hook = hook(&mut db, url, None, Some("{0s}"));

    let hostile_id = emit(&mut db, &hostile_hook);
    wait_until("the worker to take the hostile delivery", DEADLINE, || {
        (delivery_status(&mut db, hostile_id) != "pending").then_some(())
    });
    let fast_id = emit(&mut db, &fast_hook);
    wait_for_status(&mut db, fast_id, "succeeded", DEADLINE);
    assert_eq!(fast.count(), 1, "the fast receiver got its event");

    let delivery = wait_finished(&mut db, hostile_id);
    let fast_done_while_hostile_in_flight: bool = db
        .query_one(
            "SELECT f.delivered_at < a.started_at + a.duration_ms * interval '1 ms' \
               FROM webhook_delivery f, webhook_attempt a \
              WHERE f.id = $1 AND a.delivery_id = $2",
            &[&fast_id, &hostile_id],
        )
        .unwrap()
        .get(0);
    let attempts = attempts(&mut db, hostile_id);
    assert_shared_worker_unharmed(&mut db);
    HostileRun {
        delivery,
        attempts,
        fast_done_while_hostile_in_flight,
    }
}

/// Failed after its single attempt, within the timeout plus margin, with `expected` in the
/// error of the delivery and of its attempt row.
fn assert_failed_in_time(run: &HostileRun, expected: &str) {
    let d = &run.delivery;
    assert_eq!(d.status, "failed", "{d:?}");
    assert_eq!(d.attempts, 1, "{d:?}");
    assert_eq!(run.attempts.len(), 1, "{:?}", run.attempts);
    assert!(
        d.error().contains(expected),
        "error should mention {expected:?}: {d:?}"
    );
    assert_eq!(
        run.attempts[0].error, d.error,
        "the attempt row has the same error"
    );
    let duration = d.duration_ms.expect("duration_ms is recorded");
    assert!(
        duration <= TIMEOUT_MS + MARGIN_MS,
        "the attempt took {duration} ms, more than webhook.timeout + {MARGIN_MS} ms"
    );
}

/// Broken answers are judged as soon as they arrive, without waiting for the timeout.
fn assert_failed_at_once(run: &HostileRun, expected: &str) {
    assert_failed_in_time(run, expected);
    assert_eq!(run.delivery.response_status, None);
    let duration = run.delivery.duration_ms.unwrap();
    assert!(
        duration < TIMEOUT_MS,
        "took {duration} ms: {:?}",
        run.delivery
    );
}

#[test]
fn hanging_receiver_fails_as_timed_out_while_others_are_served() {
    let hanging = Receiver::always(Reply::Hang);
    let run = run_hostile(&hanging.url());
    assert_failed_in_time(&run, "timed out");
    assert_eq!(run.delivery.response_status, None);
    assert!(run.delivery.duration_ms.unwrap() >= TIMEOUT_MS - 100);
    assert!(run.fast_done_while_hostile_in_flight);
    assert_eq!(hanging.count(), 1);
}

#[test]
fn trickling_receiver_fails_as_timed_out_while_others_are_served() {
    let trickling = Receiver::always(Reply::Trickle {
        interval: Duration::from_millis(500),
        bytes: b"this body arrives one byte every half second".to_vec(),
    });
    let run = run_hostile(&trickling.url());
    assert_failed_in_time(&run, "timed out");
    assert!(run.fast_done_while_hostile_in_flight);
    assert_eq!(trickling.count(), 1);
}

#[test]
fn ten_megabyte_body_is_read_only_up_to_max_response_bytes() {
    let huge = Receiver::always(Reply::HugeBody {
        status: 200,
        bytes: 10_000_000,
    });
    let run = run_hostile(&huge.url());
    let cap = max_response_bytes(&mut connect_shared());
    let d = &run.delivery;
    // A 2xx whose body is cut at the cap counts as delivered: the receiver answered 200.
    assert_eq!(d.status, "succeeded", "{d:?}");
    assert_eq!(d.response_status, Some(200));
    let body = d.response_body.as_deref().unwrap_or_default();
    assert_eq!(
        body.len(),
        cap,
        "reading stops at webhook.max_response_bytes"
    );
    assert!(body.bytes().all(|b| b == b'x'));
    assert!(d.duration_ms.unwrap() <= TIMEOUT_MS + MARGIN_MS, "{d:?}");
}

#[test]
fn endless_chunked_body_is_cut_at_max_response_bytes_within_the_timeout() {
    let endless = Receiver::always(Reply::EndlessChunked { status: 200 });
    let run = run_hostile(&endless.url());
    let cap = max_response_bytes(&mut connect_shared());
    let d = &run.delivery;
    assert_eq!(d.status, "succeeded", "{d:?}");
    assert_eq!(d.attempts, 1);
    let body = d.response_body.as_deref().unwrap_or_default();
    assert_eq!(
        body.len(),
        cap,
        "reading stops at webhook.max_response_bytes"
    );
    assert!(d.duration_ms.unwrap() <= TIMEOUT_MS + MARGIN_MS, "{d:?}");
}

#[test]
fn megabyte_response_header_fails_with_an_error() {
    let mut raw = b"HTTP/1.1 200 OK\r\nX-Huge: ".to_vec();
    raw.extend(std::iter::repeat_n(b'h', 1_000_000));
    raw.extend(b"\r\nContent-Length: 0\r\n\r\n");
    let huge = Receiver::always(Reply::Raw(raw));
    let run = run_hostile(&huge.url());
    assert_failed_at_once(&run, "header");
}

#[test]
fn malformed_status_line_fails_with_an_error() {
    let garbage = Receiver::always(Reply::Raw(b"garbage\r\n\r\n".to_vec()));
    let run = run_hostile(&garbage.url());
    assert_failed_at_once(&run, "status line");
}

#[test]
fn connection_closed_mid_response_fails_saying_so() {
    let closing = Receiver::always(Reply::CloseMidResponse);
    let run = run_hostile(&closing.url());
    assert_failed_at_once(&run, "connection closed before a complete response");
    assert!(
        !run.delivery.error().contains('['),
        "no raw byte dump: {}",
        run.delivery.error()
    );
}

#[test]
fn invalid_utf8_and_nul_in_a_response_body_are_stored_lossily() {
    let weird = Receiver::always(Reply::Status {
        status: 500,
        headers: Vec::new(),
        body: b"bad \xff\xfe\x00 bytes".to_vec(),
    });
    let run = run_hostile(&weird.url());
    assert_failed_in_time(&run, "500");
    let d = &run.delivery;
    assert_eq!(d.response_status, Some(500));
    assert_eq!(
        d.response_body.as_deref(),
        Some("bad \u{fffd}\u{fffd} bytes"),
        "invalid UTF-8 becomes U+FFFD and NUL is dropped"
    );
}

#[test]
fn refused_connection_fails_with_connection_refused() {
    let closed = refusing_port();
    let err = TcpStream::connect((Ipv4Addr::LOCALHOST, closed.port)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "fixture");
    let run = run_hostile(&format!("http://127.0.0.1:{}/hook", closed.port));
    assert_failed_at_once(&run, "connection refused");
    assert!(
        !run.delivery.error().contains("network policy"),
        "127.0.0.1 is allowed here: {:?}",
        run.delivery
    );
}

#[test]
fn unresolvable_host_fails_with_a_dns_error() {
    let run = run_hostile("http://does-not-exist.invalid/hook");
    assert_failed_in_time(&run, "DNS");
    assert!(run.delivery.error().contains("does-not-exist.invalid"));
}

// ---------------------------------------------------------------------------------------
// 2. Redirects
// ---------------------------------------------------------------------------------------

#[test]
fn redirects_are_never_followed_to_a_live_receiver_or_the_metadata_address() {
    let mut db = connect_shared();
    let target = Receiver::always(Reply::ok());
    let locations = [
        format!("{}/landing", target.url()),
        "http://169.254.169.254/latest/meta-data/".to_string(),
    ];
    let mut cases = Vec::new();
    for status in [301, 302, 307, 308] {
        for location in &locations {
            let redirecting =
                Receiver::always(Reply::status(status).with_header("Location", location.clone()));
            let hook = hook(&mut db, &redirecting.url(), None, Some("{0s}"));
            let id = emit(&mut db, &hook);
            cases.push((status, location, redirecting, id));
        }
    }
    for (status, location, redirecting, id) in &cases {
        let d = wait_finished(&mut db, *id);
        assert_eq!(d.status, "failed", "{status} → {location}: {d:?}");
        assert_eq!(d.attempts, 1);
        assert_eq!(d.response_status, Some(i32::from(*status)));
        assert!(
            d.error().contains("redirect") && d.error().contains("not followed"),
            "{status} → {location}: {d:?}"
        );
        assert_eq!(redirecting.count(), 1);
    }
    assert_eq!(target.count(), 0, "a Location target is never contacted");
    assert_shared_worker_unharmed(&mut db);
}

// ---------------------------------------------------------------------------------------
// 3. SSRF policy
// ---------------------------------------------------------------------------------------

/// Sends one event to each URL (schedule `{0s,1s,1s}`); returns what is wrong with each
/// outcome, expecting a refusal by the network policy on the first attempt.
fn policy_refusals(db: &mut Client, urls: &[String]) -> Vec<String> {
    let started: Vec<(&String, i64)> = urls
        .iter()
        .map(|url| {
            let hook = hook(db, url, None, Some("{0s,1s,1s}"));
            (url, emit(db, &hook))
        })
        .collect();
    let mut problems = Vec::new();
    for (url, id) in started {
        let d = wait_finished(db, id);
        let rows = attempts(db, id).len();
        let refused = d.status == "failed"
            && d.attempts == 1
            && rows == 1
            && d.response_status.is_none()
            && d.error().contains("network policy")
            && d.duration_ms.is_some_and(|ms| ms < 1_000);
        if !refused {
            problems.push(format!("{url}: {d:?}, {rows} attempt rows"));
        }
    }
    problems
}

#[test]
fn private_targets_are_refused_at_connect_time_until_reload_allows_them() {
    let cluster = Cluster::start("ssrf", "webhook.allowed_networks = ''");
    let mut db = cluster.connect();
    db.batch_execute("CREATE EXTENSION webhook_ext").unwrap();
    assert_eq!(query_string(&mut db, "SHOW webhook.allowed_networks"), "");
    let live = Receiver::always(Reply::ok());
    let port = live.port();

    // Targets that can only reach this machine first: a broken policy would show here
    // without sending anything off the host.
    let local: Vec<String> = [
        "127.0.0.1",
        "localhost",
        "2130706433",
        "0x7f.1",
        "[::ffff:127.0.0.1]",
        "[::1]",
        "0.0.0.0",
    ]
    .iter()
    .map(|host| format!("http://{host}:{port}/hook"))
    .collect();
    let problems = policy_refusals(&mut db, &local);
    assert!(
        problems.is_empty(),
        "local targets were not refused by the policy; NOT trying the non-loopback ones: {problems:#?}"
    );
    assert_eq!(live.count(), 0, "no request reached the local receiver");

    let outside: Vec<String> = [
        "169.254.169.254",
        "10.0.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "224.0.0.1",
    ]
    .iter()
    .map(|host| format!("http://{host}/"))
    .collect();
    let problems = policy_refusals(&mut db, &outside);
    assert!(problems.is_empty(), "{problems:#?}");

    // pg_reload_conf() alone lets 127.0.0.1 through, with no restart.
    cluster.reload_with(&[("webhook.allowed_networks", "127.0.0.1/32")]);
    wait_until("the new allowed_networks to be in force", DEADLINE, || {
        let mut fresh = cluster.connect();
        (query_string(&mut fresh, "SHOW webhook.allowed_networks") == "127.0.0.1/32").then_some(())
    });
    let hook = hook(&mut db, &local[0], None, Some("{0s}"));
    let id = emit(&mut db, &hook);
    let d = wait_finished(&mut db, id);
    assert_eq!(d.status, "succeeded", "{d:?}");
    assert_eq!(live.count(), 1);
    assert_worker_unharmed(&mut db, &cluster.server_log());
}

// ---------------------------------------------------------------------------------------
// 4. Secrets
// ---------------------------------------------------------------------------------------

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The full text of every error (message, detail, hint, context...).
fn error_text(result: Result<postgres::Row, postgres::Error>) -> String {
    let err = result.expect_err("this call should fail");
    format!("{err:?} {}", db_message(&err))
}

#[test]
fn secrets_never_appear_in_the_log_tables_status_or_errors() {
    // debug1 and verbose errors: the more the server says, the more a leak would show.
    let cluster = Cluster::start(
        "secrets",
        "log_min_messages = debug1\nlog_error_verbosity = verbose",
    );
    let mut db = cluster.connect();
    db.batch_execute("CREATE EXTENSION webhook_ext").unwrap();

    let key = format!("leak-canary-{:012}", std::process::id());
    assert_eq!(key.len(), 24);
    let secret = format!("whsec_{}", base64(key.as_bytes()));
    // Positive controls: the needles are the forms the secret really takes.
    assert_eq!(
        base64(b"Many hands make light work."),
        "TWFueSBoYW5kcyBtYWtlIGxpZ2h0IHdvcmsu"
    );
    let decoded: String = db
        .query_one(
            "SELECT convert_from(decode(substr($1, 7), 'base64'), 'UTF8')",
            &[&secret],
        )
        .unwrap()
        .get(0);
    assert_eq!(decoded, key, "the HMAC key of the secret is the canary");
    let needles = [
        secret.clone(),
        base64(key.as_bytes()),
        key.clone(),
        hex(key.as_bytes()),
    ];

    let ok = Receiver::always(Reply::ok());
    let failing = Receiver::always(Reply::status(500));
    let hanging = Receiver::always(Reply::Hang);
    let redirecting = Receiver::always(Reply::status(302).with_header("Location", ok.url()));
    let blocked = format!("http://127.0.0.2:{}/hook", ok.port());
    let mut seen = Vec::new();

    let mut ids = Vec::new();
    let mut hooks = Vec::new();
    for url in [
        ok.url(),
        failing.url(),
        hanging.url(),
        redirecting.url(),
        blocked,
    ] {
        let hook = hook(&mut db, &url, Some(&secret), Some("{0s}"));
        ids.push(emit(&mut db, &hook));
        hooks.push(hook);
    }
    let outcomes: Vec<Finished> = ids.iter().map(|&id| wait_finished(&mut db, id)).collect();
    let statuses: Vec<&str> = outcomes.iter().map(|d| d.status.as_str()).collect();
    assert_eq!(
        statuses,
        ["succeeded", "failed", "failed", "failed", "failed"]
    );
    assert!(
        outcomes[2].error().contains("timed out"),
        "{:?}",
        outcomes[2]
    );
    assert!(
        outcomes[4].error().contains("network policy"),
        "{:?}",
        outcomes[4]
    );
    let got = ok.wait_for(1, DEADLINE);
    assert!(
        verify_hex(
            &secret,
            &got[0].body,
            got[0].header("X-Webhook-Signature").unwrap()
        ),
        "the receiver is signed for with the canary secret"
    );

    // A manual retry, a ping and refused calls: their results and errors are shown to users.
    let retried = db
        .query_one("SELECT r::text FROM webhook_retry($1) r", &[&ids[1]])
        .unwrap();
    seen.push(retried.get::<_, String>(0));
    let pinged = db
        .query_one("SELECT p::text FROM webhook_ping($1) p", &[&hooks[0].id])
        .unwrap();
    seen.push(pinged.get::<_, String>(0));
    seen.push(error_text(db.query_one(
        "SELECT webhook_update($1, secret => '')",
        &[&hooks[0].id],
    )));
    seen.push(error_text(db.query_one(
        "SELECT webhook_create($1, secret => $2, verify => true)",
        &[&failing.url(), &secret],
    )));
    seen.push(error_text(db.query_one(
        "SELECT webhook_create($1, secret => $2, verify => true)",
        &[&hanging.url(), &secret],
    )));
    let updated = db
        .query_one(
            "SELECT u::text FROM webhook_update($1, description => 'changed') u",
            &[&hooks[0].id],
        )
        .unwrap();
    seen.push(updated.get::<_, String>(0));
    assert_eq!(
        failing.count(),
        3,
        "the delivery, its manual retry and the verify call"
    );

    for sql in [
        "SELECT coalesce(string_agg(d::text, E'\\n'), '') FROM webhook_delivery d",
        "SELECT coalesce(string_agg(a::text, E'\\n'), '') FROM webhook_attempt a",
        "SELECT s::text FROM webhook_worker_status() s",
        "SELECT coalesce(string_agg(s::text, E'\\n'), '') FROM webhook_stats s",
    ] {
        seen.push(query_string(&mut db, sql));
    }
    let stored = query_string(&mut db, "SELECT string_agg(secret, ' ') FROM webhook");
    assert!(stored.contains(&secret), "the webhooks hold the canary");
    let log = cluster.server_log();
    assert!(
        log.contains("webhook_ext worker started"),
        "the log is read"
    );
    seen.push(log);

    for text in &seen {
        for needle in &needles {
            assert!(
                !text.contains(needle.as_str()),
                "the secret ({needle}) leaked into:\n{text}"
            );
        }
    }
    assert_worker_unharmed(&mut db, &cluster.server_log());
}

// ---------------------------------------------------------------------------------------
// 5. Racing retries
// ---------------------------------------------------------------------------------------

/// What a `webhook_retry` call gave: the delivery's status, or the SQLSTATE and message.
fn retry(db: &mut Client, delivery_id: i64) -> Result<String, (String, String)> {
    db.query_one("SELECT status FROM webhook_retry($1)", &[&delivery_id])
        .map(|row| row.get(0))
        .map_err(|e| {
            (
                e.code().map(|c| c.code().to_string()).unwrap_or_default(),
                db_message(&e),
            )
        })
}

#[test]
fn two_sessions_retrying_one_delivery_make_one_attempt_and_refuse_the_other_with_55006() {
    let healthy = Arc::new(AtomicBool::new(false));
    let switch = Arc::clone(&healthy);
    let receiver = Receiver::start(move |_, _| {
        if switch.load(Ordering::SeqCst) {
            // Well inside webhook.timeout (2 s), long enough for the sessions to overlap.
            Reply::Delay {
                delay: Duration::from_secs(1),
                then: Box::new(Reply::ok()),
            }
        } else {
            Reply::status(500)
        }
    });
    let mut db = connect_shared();
    let hook = hook(&mut db, &receiver.url(), None, Some("{0s}"));
    let id = emit(&mut db, &hook);
    assert_eq!(wait_finished(&mut db, id).status, "failed");
    healthy.store(true, Ordering::SeqCst);

    let start = Arc::new(Barrier::new(2));
    let sessions: Vec<_> = (0..2)
        .map(|_| {
            let start = Arc::clone(&start);
            let mut session = connect_shared();
            thread::spawn(move || {
                start.wait();
                retry(&mut session, id)
            })
        })
        .collect();
    let mut results: Vec<_> = sessions.into_iter().map(|s| s.join().unwrap()).collect();
    results.sort();
    assert_eq!(results[0], Ok("succeeded".to_string()), "{results:?}");
    let (code, message) = results[1].clone().unwrap_err();
    assert_eq!(code, "55006", "{message}");

    let rows = attempts(&mut db, id);
    assert_eq!(
        rows.len(),
        2,
        "one automatic and exactly one manual attempt: {rows:?}"
    );
    assert!(
        rows[1].manual && rows[1].response_status == Some(200),
        "{rows:?}"
    );
    assert_eq!(receiver.count(), 2);
    assert_shared_worker_unharmed(&mut db);
}

/// Requests in progress per `X-Delivery-ID` right now, and the most ever at once.
#[derive(Default)]
struct Overlap {
    now: HashMap<String, usize>,
    most: HashMap<String, usize>,
}

#[test]
fn manual_retries_racing_the_worker_never_overlap_and_number_attempts_uniquely() {
    let overlap = Arc::new(Mutex::new(Overlap::default()));
    let tracked = Arc::clone(&overlap);
    // Each request takes 200 ms at the receiver and fails, so the delivery stays busy.
    let receiver = Receiver::start(move |request, _| {
        let delivery = request.header("X-Delivery-ID").unwrap_or("?").to_string();
        {
            let mut o = tracked.lock().unwrap();
            let now = o.now.entry(delivery.clone()).or_default();
            *now += 1;
            let now = *now;
            let most = o.most.entry(delivery.clone()).or_default();
            *most = (*most).max(now);
        }
        thread::sleep(Duration::from_millis(200));
        *tracked.lock().unwrap().now.get_mut(&delivery).unwrap() -= 1;
        Reply::status(500)
    });
    let mut db = connect_shared();
    let hook = hook(&mut db, &receiver.url(), None, Some("{0s,1s,1s,1s,1s}"));
    let id = emit(&mut db, &hook);

    // Two sessions retry by hand, as fast as they can, while the worker works through the
    // schedule: each until it has made three attempts or the delivery has failed.
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let mut session = connect_shared();
            thread::spawn(move || {
                let (mut made, mut refused) = (0, 0);
                while made < 3 && delivery_status(&mut session, id) != "failed" {
                    match retry(&mut session, id) {
                        Ok(_) => made += 1,
                        Err((code, message)) => {
                            assert_eq!(code, "55006", "{message}");
                            refused += 1;
                        }
                    }
                    // Pace the calls a little so the log is not flooded with refusals.
                    thread::sleep(Duration::from_millis(10));
                }
                refused
            })
        })
        .collect();
    let refused: usize = racers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(
        refused > 0,
        "the sessions did collide with an attempt in flight"
    );
    let d = wait_finished(&mut db, id);
    assert_eq!(d.status, "failed");

    let rows = attempts(&mut db, id);
    let numbers: Vec<i32> = rows.iter().map(|a| a.attempt).collect();
    let expected: Vec<i32> = (1..=rows.len() as i32).collect();
    assert_eq!(numbers, expected, "attempt numbers are 1..n, each once");
    assert!(
        rows.iter().any(|a| a.manual),
        "a manual retry got in: {rows:?}"
    );
    assert!(
        rows.iter().any(|a| !a.manual),
        "the worker got in: {rows:?}"
    );
    assert!(rows.iter().all(|a| a.response_status == Some(500)));
    assert_eq!(d.attempts as usize, rows.len());
    let sent = receiver
        .requests()
        .iter()
        .filter(|r| r.header("X-Delivery-ID") == Some(id.to_string().as_str()))
        .count();
    assert_eq!(sent, rows.len(), "one request per recorded attempt");
    let most = overlap.lock().unwrap().most.get(&id.to_string()).copied();
    assert_eq!(most, Some(1), "never two requests for the delivery at once");
    assert_shared_worker_unharmed(&mut db);
}

fn worker_rss_kb(pid: i32) -> i64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn worker_memory_stays_flat_under_huge_and_endless_bodies() {
    let cluster = Cluster::start("memory", "");
    let mut db = cluster.connect();
    db.batch_execute("CREATE EXTENSION webhook_ext").unwrap();
    // Warm up (HTTP pool, saved plans) before the first measure.
    let ok = Receiver::always(Reply::ok());
    let warm = hook(&mut db, &ok.url(), None, None);
    let first = emit(&mut db, &warm);
    assert_eq!(wait_finished(&mut db, first).status, "succeeded");
    let pid: i32 = db
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'webhook_ext worker'",
            &[],
        )
        .unwrap()
        .get(0);
    let before = worker_rss_kb(pid);

    let huge = Receiver::always(Reply::HugeBody {
        status: 200,
        bytes: 10_000_000,
    });
    let endless = Receiver::always(Reply::EndlessChunked { status: 200 });
    let mut deliveries = Vec::new();
    for receiver in [&huge, &endless] {
        let target = hook(&mut db, &receiver.url(), None, Some("{0s}"));
        for _ in 0..16 {
            deliveries.push(emit(&mut db, &target));
        }
    }
    for delivery in deliveries {
        wait_finished(&mut db, delivery);
    }
    let after = worker_rss_kb(pid);
    // Buffering those bodies would take 160 MB for the 10 MB ones alone.
    assert!(
        after - before < 32 * 1024,
        "worker RSS grew from {before} kB to {after} kB"
    );
    let same: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .unwrap()
        .get(0);
    assert_eq!(same, 1, "the same worker served them all");
}
