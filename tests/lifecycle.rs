//! The worker across the extension's life: absent, created in a chosen schema, dropped and
//! created again; and the SQL API without the worker. Each test has its own cluster.

use std::time::Duration;

use webhook_ext_tests::*;

const DEADLINE: Duration = Duration::from_secs(30);

/// The pid of webhook_ext's launcher (it starts a worker in each database with the extension).
fn launcher_pid(db: &mut Client) -> Option<i32> {
    db.query_opt(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'webhook_ext launcher'",
        &[],
    )
    .ok()
    .flatten()
    .map(|r| r.get(0))
}

fn emit_and_receive(db: &mut Client, schema: &str, receiver: &Receiver, event: &str) {
    db.execute(
        &format!("SELECT {schema}.webhook_create($1, 'k', ARRAY[$2])"),
        &[&receiver.url(), &event],
    )
    .unwrap();
    let queued: i32 = db
        .query_one(
            &format!("SELECT {schema}.webhook_emit($1, '{{\"ok\": true}}')"),
            &[&event],
        )
        .unwrap()
        .get(0);
    assert_eq!(queued, 1);
    let got = receiver.wait_for(1, DEADLINE);
    assert_eq!(got.len(), 1, "the event should reach the receiver");
    assert_eq!(got[0].header("X-Event-Type"), Some(event));
}

#[test]
fn worker_waits_for_the_extension_and_follows_drop_and_create_in_any_schema() {
    let cluster = Cluster::start("lifecycle", "");
    let mut db = cluster.connect();
    // Until the extension exists the launcher runs and no worker holds the database.
    wait_until("the launcher to start", DEADLINE, || launcher_pid(&mut db));
    assert_eq!(worker_pid(&mut db), None);

    db.batch_execute("CREATE SCHEMA hooks; CREATE EXTENSION webhook_ext SCHEMA hooks")
        .unwrap();
    let first = Receiver::always(Reply::ok());
    emit_and_receive(&mut db, "hooks", &first, "cliente.criado");

    db.batch_execute("DROP EXTENSION webhook_ext").unwrap();
    db.batch_execute("CREATE EXTENSION webhook_ext").unwrap();
    let second = Receiver::always(Reply::ok());
    emit_and_receive(&mut db, "public", &second, "tarefa.concluida");
    assert!(!cluster.server_log().contains("PANIC"));
}

#[test]
fn without_preload_events_queue_and_status_says_no_worker() {
    let (_cluster, mut db) = Cluster::start_installed("nopreload", "shared_preload_libraries = ''");
    db.execute(
        "SELECT webhook_create('https://example.com/hook', 'k')",
        &[],
    )
    .unwrap();
    let queued: i32 = db
        .query_one("SELECT webhook_emit('cliente.criado', '{}')", &[])
        .unwrap()
        .get(0);
    assert_eq!(queued, 1);
    let row = db
        .query_one(
            "SELECT running, queue_depth, message FROM webhook_worker_status()",
            &[],
        )
        .unwrap();
    assert!(!row.get::<_, bool>(0));
    assert_eq!(row.get::<_, i64>(1), 1);
    assert!(row.get::<_, String>(2).contains("shared_preload_libraries"));
    assert_eq!(worker_pid(&mut db), None);
}

/// DROP EXTENSION while the worker is busy recording and taking deliveries: the drop waits for the
/// worker's round (a few milliseconds) and never fails with a deadlock. Each cycle drops in
/// the middle of a drain of a few thousand deliveries, when the worker runs rounds back to back.
#[test]
fn drop_extension_in_the_middle_of_a_drain_waits_for_the_worker_instead_of_deadlocking() {
    let cluster = Cluster::start("dropdrain", "");
    let mut db = cluster.connect();
    wait_until("the launcher to start", DEADLINE, || launcher_pid(&mut db));
    let receiver = Receiver::always(Reply::ok());
    for cycle in 0..8 {
        db.batch_execute("CREATE EXTENSION webhook_ext").unwrap();
        db.execute("SELECT webhook_create($1, 'k')", &[&receiver.url()])
            .unwrap();
        db.batch_execute(
            "SELECT webhook_emit('cliente.criado', jsonb_build_object('n', n)) \
             FROM generate_series(1, 3000) AS n",
        )
        .unwrap();
        let before = receiver.count();
        wait_until("the worker to be delivering", DEADLINE, || {
            (receiver.count() >= before + 200).then_some(())
        });
        if let Err(e) = db.batch_execute("DROP EXTENSION webhook_ext") {
            panic!("cycle {cycle}: DROP EXTENSION failed: {}", db_message(&e));
        }
    }
    // A worker serves the next installation.
    db.batch_execute("CREATE EXTENSION webhook_ext").unwrap();
    let last = Receiver::always(Reply::ok());
    emit_and_receive(&mut db, "public", &last, "tarefa.concluida");
    let log = cluster.server_log();
    assert!(!log.contains("deadlock detected"));
    // A round never runs against a half-dropped installation.
    assert!(
        !log.contains("outcomes and taking deliveries"),
        "a worker round failed: {}",
        log.lines()
            .filter(|l| l.contains("outcomes and taking deliveries"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn a_misspelt_webhook_setting_is_reported_not_silently_ignored() {
    let cluster = Cluster::start(
        "typo",
        "log_min_messages = warning\nwebhook.retry_shedule = '1min'",
    );
    let mut db = cluster.connect();
    wait_until("the launcher to start", DEADLINE, || launcher_pid(&mut db));
    let log = cluster.server_log();
    assert!(
        log.lines()
            .any(|line| line.contains("WARNING") && line.contains("\"webhook.retry_shedule\"")),
        "the server log does not warn about webhook.retry_shedule:\n{log}"
    );
    let error = db
        .batch_execute("SET webhook.retry_shedule = '1s'")
        .expect_err("a misspelt webhook. setting is refused by SET");
    assert_eq!(
        error.code(),
        Some(&postgres::error::SqlState::INVALID_NAME),
        "{}",
        db_message(&error)
    );
    // The real one is still taken.
    db.batch_execute("SET webhook.retry_schedule = '1s'")
        .unwrap();
}
