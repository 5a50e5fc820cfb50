//! Hostile or broken receivers and redirects, end to end: a real cluster with the worker
//! preloaded and real HTTP receivers on 127.0.0.1. Each case runs next to a fast receiver,
//! which must be served meanwhile; the worker must survive all of them.
//!
//! The receiver tests share one cluster (`shared_cluster`); each ends by checking that the
//! worker is still the one that started with the cluster and that nothing crashed. The
//! memory test starts its own, to read its worker's RSS alone.

use std::net::{Ipv4Addr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use webhook_ext_tests::*;

const DEADLINE: Duration = Duration::from_secs(30);
/// `webhook.timeout` in every harness cluster.
const TIMEOUT_MS: i32 = 2_000;
/// What an attempt may take beyond the timeout on a busy machine.
const MARGIN_MS: i32 = 1_500;

fn max_response_bytes(db: &mut Client) -> usize {
    query_string(
        db,
        "SELECT setting FROM pg_settings WHERE name = 'webhook.max_response_bytes'",
    )
    .parse()
    .unwrap()
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

    let hostile_id = hostile_hook.emit(&mut db);
    wait_until("the worker to take the hostile delivery", DEADLINE, || {
        (delivery_status(&mut db, hostile_id) != "pending").then_some(())
    });
    let fast_id = fast_hook.emit(&mut db);
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
            let id = hook.emit(&mut db);
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

fn worker_rss_kb(pid: i32) -> i64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn worker_memory_stays_flat_under_huge_and_endless_bodies() {
    let (_cluster, mut db) = Cluster::start_installed("memory", "");
    // Warm up (HTTP pool, saved plans) before the first measure.
    let ok = Receiver::always(Reply::ok());
    let warm = hook(&mut db, &ok.url(), None, None);
    let first = warm.emit(&mut db);
    assert_eq!(wait_finished(&mut db, first).status, "succeeded");
    let pid = worker_pid(&mut db).expect("the worker runs");
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
            deliveries.push(target.emit(&mut db));
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
