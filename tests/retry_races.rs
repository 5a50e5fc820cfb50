//! Manual retries racing each other and the worker, end to end: one attempt at a time per
//! delivery, refusals with 55006, attempt numbers unique. On the shared cluster.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use webhook_ext_tests::*;

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
    let id = hook.emit(&mut db);
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
    let id = hook.emit(&mut db);

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
