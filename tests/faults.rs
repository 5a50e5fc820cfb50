//! Crashes and restarts with real processes and real signals: `pg_ctl stop -m immediate`,
//! `kill -9` of the worker, errors inside the worker, DROP DATABASE / DROP EXTENSION while it
//! runs. Each test has its own cluster. The cases are listed in docs/RELIABILITY.md.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use webhook_ext_tests::*;

const DEADLINE: Duration = Duration::from_secs(60);
/// Redelivery after a crash comes at once from the restarted worker: it walks again from the
/// saved frontier, and takes the due rows.
const REDELIVERY_DEADLINE: Duration = Duration::from_secs(25);

/// A table `carga (n int)` whose inserts emit `carga.created`, and a webhook for it.
fn carga(db: &mut Client, url: &str) -> i64 {
    db.batch_execute(
        "CREATE TABLE carga (n int PRIMARY KEY);
         CREATE TRIGGER carga_webhook AFTER INSERT ON carga FOR EACH ROW EXECUTE FUNCTION webhook_trigger('carga');",
    )
    .unwrap();
    db.query_one(
        "SELECT id FROM webhook_create($1, 'k', '{carga.*}')",
        &[&url],
    )
    .unwrap()
    .get(0)
}

fn data_n(request: &RecordedRequest) -> i64 {
    let body: serde_json::Value = serde_json::from_str(request.body_str()).unwrap();
    body["data"]["n"].as_i64().unwrap()
}

fn wait_queue_drained(cluster: &Cluster) {
    wait_until("every delivery to finish", REDELIVERY_DEADLINE, || {
        let mut db = cluster.try_connect()?;
        let left: i64 = db
            .query_one(
                "SELECT count(*) FROM webhook_delivery WHERE status IN ('pending', 'delivering')",
                &[],
            )
            .ok()?
            .get(0);
        (left == 0).then_some(())
    })
}

#[test]
fn committed_events_survive_an_immediate_stop_at_a_random_moment() {
    let (cluster, mut db) = Cluster::start_installed("crash", "");
    let receiver = Receiver::always(Reply::ok());
    carga(&mut db, &receiver.url());

    // Four writers: most inserts commit, every fifth is rolled back on purpose. An insert
    // whose COMMIT got no answer (the server died under it) is "in doubt": it may or may not
    // have committed, and either is fine.
    let committed = Arc::new(Mutex::new(HashSet::new()));
    let rolled_back = Arc::new(Mutex::new(HashSet::new()));
    let in_doubt = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4i64)
        .map(|w| {
            let (committed, rolled_back, in_doubt, stop, written) = (
                committed.clone(),
                rolled_back.clone(),
                in_doubt.clone(),
                stop.clone(),
                written.clone(),
            );
            let mut db = cluster.connect();
            thread::spawn(move || {
                let mut n = w;
                while !stop.load(Ordering::SeqCst) && n < 20_000 {
                    n += 4;
                    let result = if n % 5 == 0 {
                        db.transaction().and_then(|mut tx| {
                            tx.execute("INSERT INTO carga VALUES ($1)", &[&(n as i32)])?;
                            tx.rollback()
                        })
                    } else {
                        db.execute("INSERT INTO carga VALUES ($1)", &[&(n as i32)])
                            .map(|_| ())
                    };
                    match (result, n % 5 == 0) {
                        (Ok(()), true) => rolled_back.lock().unwrap().insert(n),
                        (Ok(()), false) => committed.lock().unwrap().insert(n),
                        (Err(_), true) => rolled_back.lock().unwrap().insert(n),
                        (Err(_), false) => {
                            in_doubt.lock().unwrap().insert(n);
                            return;
                        }
                    };
                    written.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    cluster.stop_immediately_under_load(&written, 500, 1500, &stop, writers);
    wait_queue_drained(&cluster);

    let received: HashSet<i64> = receiver.requests().iter().map(data_n).collect();
    let committed = committed.lock().unwrap().clone();
    let rolled_back = rolled_back.lock().unwrap().clone();
    let in_doubt = in_doubt.lock().unwrap().clone();
    eprintln!(
        "committed {}, rolled back {}, in doubt {}, requests received {} ({} distinct events)",
        committed.len(),
        rolled_back.len(),
        in_doubt.len(),
        receiver.count(),
        received.len()
    );
    assert!(
        committed.len() >= 400,
        "the load committed {} events",
        committed.len()
    );
    let missing: Vec<_> = committed.difference(&received).collect();
    assert!(
        missing.is_empty(),
        "{} committed events never arrived, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let sent_rolled_back: Vec<_> = rolled_back.intersection(&received).collect();
    assert!(
        sent_rolled_back.is_empty(),
        "rolled-back events were sent: {sent_rolled_back:?}"
    );
    let unexplained: Vec<_> = received
        .iter()
        .filter(|n| !committed.contains(n) && !in_doubt.contains(n))
        .collect();
    assert!(
        unexplained.is_empty(),
        "events that were never written arrived: {unexplained:?}"
    );
    // every delivery row ended succeeded, one per committed row
    let mut db = cluster.connect();
    let rows: i64 = db
        .query_one("SELECT count(*) FROM carga", &[])
        .unwrap()
        .get(0);
    let succeeded: i64 = db
        .query_one(
            "SELECT count(*) FROM webhook_delivery WHERE status = 'succeeded'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows, succeeded);
}

#[test]
fn a_crash_after_the_receiver_answered_redelivers_the_same_event() {
    let cluster = Arc::new(Cluster::start("answered", ""));
    let mut db = cluster.connect();
    db.batch_execute("CREATE EXTENSION webhook_ext").unwrap();
    // The first request: the receiver holds its 200 until the cluster has been killed, so
    // the answer arrives but the outcome can never be committed.
    let (arrived_tx, arrived_rx) = mpsc::channel::<()>();
    let (killed_tx, killed_rx) = mpsc::channel::<()>();
    let (arrived_tx, killed_rx) = (Mutex::new(arrived_tx), Mutex::new(killed_rx));
    let receiver = Receiver::start(move |_, index| {
        if index == 0 {
            arrived_tx.lock().unwrap().send(()).unwrap();
            killed_rx.lock().unwrap().recv_timeout(DEADLINE).ok();
        }
        Reply::ok()
    });
    carga(&mut db, &receiver.url());
    db.execute("INSERT INTO carga VALUES (1)", &[]).unwrap();
    arrived_rx
        .recv_timeout(DEADLINE)
        .expect("the first attempt should arrive");
    cluster.pg_ctl_stop("immediate");
    killed_tx.send(()).unwrap();
    cluster.pg_ctl_start();

    let got = receiver.wait_for(2, REDELIVERY_DEADLINE);
    assert_eq!(got.len(), 2, "the event is delivered again after the crash");
    assert_eq!(got[0].header("X-Event-ID"), got[1].header("X-Event-ID"));
    assert_eq!(got[0].body, got[1].body);
    wait_queue_drained(&cluster);
}

#[test]
fn a_worker_killed_with_sigkill_is_restarted_and_what_it_had_in_flight_is_delivered() {
    let (cluster, mut db) = Cluster::start_installed("sigkill", "");
    // The first attempt hangs (in flight when the worker dies); later ones succeed.
    let receiver = Receiver::start(|_, index| if index == 0 { Reply::Hang } else { Reply::ok() });
    carga(&mut db, &receiver.url());
    db.execute("INSERT INTO carga VALUES (7)", &[]).unwrap();
    receiver.wait_for(1, DEADLINE);
    let old_pid = worker_pid(&mut db).expect("worker running");
    let status: String = db
        .query_one("SELECT status FROM webhook_delivery", &[])
        .unwrap()
        .get(0);
    assert_eq!(status, "delivering");
    // Nothing durable says the worker has it: how far the worker says it has seen stays below
    // it, and is on disk (the worker commits asynchronously) before the kill.
    let id = query_i64(&mut db, "SELECT id FROM webhook_delivery");
    db.batch_execute("CHECKPOINT").unwrap();
    assert!(query_i64(&mut db, "SELECT frontier FROM webhook_delivery_frontier") < id);

    let killed = std::process::Command::new("kill")
        .args(["-9", &old_pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    // The postmaster resets the cluster and starts a new worker, which finds the delivery
    // again on its walk from the saved frontier.
    let new_pid = wait_until("a new worker", DEADLINE, || {
        let mut db = cluster.try_connect()?;
        worker_pid(&mut db).filter(|&pid| pid != old_pid)
    });
    assert_ne!(new_pid, old_pid);
    let got = receiver.wait_for(2, REDELIVERY_DEADLINE);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].header("X-Event-ID"), got[1].header("X-Event-ID"));
    wait_queue_drained(&cluster);
    let mut db = cluster.connect();
    let row = db
        .query_one("SELECT status, attempts FROM webhook_delivery", &[])
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "succeeded");
    assert!(!cluster.server_log().contains("PANIC"));
}

#[test]
fn an_error_inside_the_worker_ends_one_batch_not_the_worker() {
    let (cluster, mut db) = Cluster::start_installed("batcherror", "");
    let pid = wait_until("the worker", DEADLINE, || worker_pid(&mut db));
    // Make recording an attempt answered with 299 fail inside the worker's transaction.
    db.batch_execute(
        "ALTER TABLE webhook_attempt ADD CONSTRAINT refuse_299 CHECK (response_status IS DISTINCT FROM 299)",
    )
    .unwrap();
    let odd = Receiver::always(Reply::status(299));
    create_webhook(&mut db, &odd.url(), Some("k"), "odd.*");
    db.execute("SELECT webhook_emit('odd.event', '{}')", &[])
        .unwrap();
    let last_error = wait_until("the worker to report the failed batch", DEADLINE, || {
        db.query_one("SELECT last_error FROM webhook_worker_status()", &[])
            .unwrap()
            .get::<_, Option<String>>(0)
    });
    assert!(last_error.contains("refuse_299"), "{last_error}");

    // Same worker, still delivering.
    let fine = Receiver::always(Reply::ok());
    create_webhook(&mut db, &fine.url(), Some("k"), "fine.*");
    db.execute("SELECT webhook_emit('fine.event', '{}')", &[])
        .unwrap();
    assert_eq!(fine.wait_for(1, DEADLINE).len(), 1);
    assert_eq!(worker_pid(&mut db), Some(pid));
    assert!(!cluster.server_log().contains("terminated by signal"));
}

#[test]
fn drop_extension_with_attempts_in_flight_neither_hangs_nor_crashes() {
    let (cluster, mut db) = Cluster::start_installed("dropext", "");
    let hanging = Receiver::always(Reply::Hang);
    create_webhook(&mut db, &hanging.url(), Some("k"), "a.*");
    for _ in 0..5 {
        db.execute("SELECT webhook_emit('a.b', '{}')", &[]).unwrap();
    }
    hanging.wait_for(5, DEADLINE);
    db.batch_execute("SET statement_timeout = '20s'; DROP EXTENSION webhook_ext")
        .unwrap();
    let dropped_at = Instant::now();

    db.batch_execute("CREATE EXTENSION webhook_ext").unwrap();
    let fine = Receiver::always(Reply::ok());
    create_webhook(&mut db, &fine.url(), Some("k"), "b.*");
    db.execute("SELECT webhook_emit('b.c', '{}')", &[]).unwrap();
    let got = fine.wait_for(1, DEADLINE);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].header("X-Delivery-ID"),
        Some("1"),
        "ids start over in the new installation"
    );
    // (The worker may have stopped with the extension and another started with CREATE
    // EXTENSION, or seen the new installation at once: either way nothing of the old one is
    // recorded in the new one.)
    // The hung attempts of the dropped installation time out (webhook.timeout = 2s) and are
    // not recorded against the new tables, whose delivery 1 is another event.
    wait_until("the old attempts' timeout to pass", DEADLINE, || {
        (dropped_at.elapsed() > Duration::from_secs(4)).then_some(())
    });
    let attempts: i64 = db
        .query_one("SELECT count(*) FROM webhook_attempt", &[])
        .unwrap()
        .get(0);
    assert_eq!(attempts, 1);
    assert!(!cluster.server_log().contains("PANIC"));
}

#[test]
fn drop_database_of_the_worker_neither_hangs_nor_crashes_and_it_comes_back() {
    let cluster = Cluster::start("dropdb", "webhook.database = 'appdb'");
    let mut admin = cluster.connect();
    admin.batch_execute("CREATE DATABASE appdb").unwrap();
    let mut app = cluster.connect_to("appdb");
    app.batch_execute("CREATE EXTENSION webhook_ext").unwrap();
    wait_until("the worker to connect to appdb", DEADLINE, || {
        let db: Option<String> = admin
            .query_opt("SELECT datname::text FROM pg_stat_activity WHERE backend_type = 'webhook_ext worker'", &[])
            .unwrap()
            .and_then(|r| r.get(0));
        (db.as_deref() == Some("appdb")).then_some(())
    });
    drop(app);

    // Plain DROP DATABASE: the worker leaves the database for it (Postgres would refuse after
    // 5 s with 55006 while a worker is connected).
    let started = Instant::now();
    admin.batch_execute("DROP DATABASE appdb").unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // WITH (FORCE) terminates the worker and drops it.
    admin.batch_execute("CREATE DATABASE appdb").unwrap();
    let mut app = cluster.connect_to("appdb");
    app.batch_execute("CREATE EXTENSION webhook_ext").unwrap();
    wait_until("the worker to connect to appdb again", DEADLINE, || {
        let db: Option<String> = admin
            .query_opt("SELECT datname::text FROM pg_stat_activity WHERE backend_type = 'webhook_ext worker'", &[])
            .unwrap()
            .and_then(|r| r.get(0));
        (db.as_deref() == Some("appdb")).then_some(())
    });
    drop(app);
    admin
        .batch_execute("DROP DATABASE appdb WITH (FORCE)")
        .unwrap();
    let alive: i32 = admin.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(alive, 1);

    // The worker comes back once the database exists again.
    admin.batch_execute("CREATE DATABASE appdb").unwrap();
    let mut app = cluster.connect_to("appdb");
    app.batch_execute("CREATE EXTENSION webhook_ext").unwrap();
    let receiver = Receiver::always(Reply::ok());
    app.execute("SELECT webhook_create($1, 'k')", &[&receiver.url()])
        .unwrap();
    app.execute("SELECT webhook_emit('back.again', '{}')", &[])
        .unwrap();
    assert_eq!(receiver.wait_for(1, DEADLINE).len(), 1);
    assert!(!cluster.server_log().contains("PANIC"));
}
