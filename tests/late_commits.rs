//! Deliveries that commit out of id order. Nothing durable marks a delivery as pending: the
//! worker walks the primary key, and a transaction that took an id before others may commit
//! after the walk has passed it (a long transaction, a prepared one). None may be left
//! behind, not even across a crash of the worker, and one that never commits must not hold
//! the walk back (crates/delivery/src/walk.rs).

use std::time::Duration;

use webhook_ext_tests::*;

const DEADLINE: Duration = Duration::from_secs(60);

fn events_of(requests: &[RecordedRequest]) -> Vec<String> {
    let mut events: Vec<String> = requests
        .iter()
        .map(|r| r.header("X-Event-Type").unwrap_or_default().to_string())
        .collect();
    events.sort();
    events
}

fn frontier(db: &mut Client) -> i64 {
    query_i64(db, "SELECT frontier FROM webhook_delivery_frontier")
}

#[test]
fn a_transaction_that_commits_after_later_ones_is_still_delivered() {
    let (cluster, mut db) = Cluster::start_installed("late", "max_prepared_transactions = 4");
    let receiver = Receiver::always(Reply::ok());
    create_webhook(&mut db, &receiver.url(), Some("k"), "late.*");

    // An open transaction, a prepared one and a rolled-back one each take an id first.
    let mut open = cluster.connect();
    open.batch_execute("BEGIN; SELECT webhook_emit('late.open', '{}')")
        .unwrap();
    let mut prepared = cluster.connect();
    prepared
        .batch_execute(
            "BEGIN; SELECT webhook_emit('late.prepared', '{}'); PREPARE TRANSACTION 'late'",
        )
        .unwrap();
    let mut aborted = cluster.connect();
    aborted
        .batch_execute("BEGIN; SELECT webhook_emit('late.aborted', '{}')")
        .unwrap();

    // Later ids commit and are delivered: the walk has passed the three.
    for _ in 0..3 {
        db.execute("SELECT webhook_emit('late.after', '{}')", &[])
            .unwrap();
    }
    assert_eq!(
        events_of(&receiver.wait_for(3, DEADLINE)),
        vec!["late.after"; 3]
    );
    aborted.batch_execute("ROLLBACK").unwrap();

    open.batch_execute("COMMIT").unwrap();
    db.batch_execute("COMMIT PREPARED 'late'").unwrap();
    let got = receiver.wait_for(5, DEADLINE);
    assert_eq!(
        events_of(&got),
        vec![
            "late.after",
            "late.after",
            "late.after",
            "late.open",
            "late.prepared"
        ]
    );
    // The rolled-back id holds nothing back: the saved frontier passes every id.
    let last = query_i64(&mut db, "SELECT max(id) FROM webhook_delivery");
    wait_until("the frontier to pass every delivery", DEADLINE, || {
        (frontier(&mut db) == last).then_some(())
    });
    assert_eq!(receiver.requests().len(), 5, "nothing was sent twice");
}

#[test]
fn a_prepared_transaction_older_than_a_crash_of_the_worker_is_still_delivered() {
    let (cluster, mut db) = Cluster::start_installed("latecrash", "max_prepared_transactions = 4");
    let receiver = Receiver::always(Reply::ok());
    create_webhook(&mut db, &receiver.url(), Some("k"), "late.*");
    for _ in 0..3 {
        db.execute("SELECT webhook_emit('late.before', '{}')", &[])
            .unwrap();
    }
    receiver.wait_for(3, DEADLINE);
    let before = query_i64(&mut db, "SELECT max(id) FROM webhook_delivery");
    let mut prepared = cluster.connect();
    prepared
        .batch_execute(
            "BEGIN; SELECT webhook_emit('late.prepared', '{}'); PREPARE TRANSACTION 'crash'",
        )
        .unwrap();
    for _ in 0..3 {
        db.execute("SELECT webhook_emit('late.after', '{}')", &[])
            .unwrap();
    }
    receiver.wait_for(6, DEADLINE);
    // The worker saves how far it has seen: past the first three, not past the prepared one.
    wait_until("the frontier to be saved", DEADLINE, || {
        (frontier(&mut db) >= before).then_some(())
    });
    assert_eq!(frontier(&mut db), before);
    // kill -9: the postmaster resets every backend; the prepared transaction survives.
    let old_pid = worker_pid(&mut db).expect("worker running");
    let killed = std::process::Command::new("kill")
        .args(["-9", &old_pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    drop(db);
    drop(prepared);
    let mut db = wait_until("the cluster to come back", DEADLINE, || {
        let mut db = cluster.try_connect()?;
        worker_pid(&mut db).filter(|&pid| pid != old_pid)?;
        Some(db)
    });
    db.batch_execute("COMMIT PREPARED 'crash'").unwrap();
    // (What was in flight at the kill may come again: at least once.)
    wait_until("the prepared transaction's event", DEADLINE, || {
        events_of(&receiver.requests())
            .contains(&"late.prepared".to_string())
            .then_some(())
    });
}
