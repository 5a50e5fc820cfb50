//! The worker across the extension's life: absent, created in a chosen schema, dropped and
//! created again; and the SQL API without the worker. Each test has its own cluster.

use std::time::Duration;

use webhook_ext_tests::*;

const DEADLINE: Duration = Duration::from_secs(30);

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
    let pid = wait_until("the worker to start", DEADLINE, || worker_pid(&mut db));

    db.batch_execute("CREATE SCHEMA hooks; CREATE EXTENSION webhook_ext SCHEMA hooks")
        .unwrap();
    let first = Receiver::always(Reply::ok());
    emit_and_receive(&mut db, "hooks", &first, "cliente.criado");

    db.batch_execute("DROP EXTENSION webhook_ext").unwrap();
    db.batch_execute("CREATE EXTENSION webhook_ext").unwrap();
    let second = Receiver::always(Reply::ok());
    emit_and_receive(&mut db, "public", &second, "tarefa.concluida");

    assert_eq!(
        worker_pid(&mut db),
        Some(pid),
        "the same worker served both installations"
    );
    assert!(!cluster.server_log().contains("PANIC"));
}

#[test]
fn without_preload_events_queue_and_status_says_no_worker() {
    let cluster = Cluster::start("nopreload", "shared_preload_libraries = ''");
    let mut db = cluster.connect();
    db.batch_execute("CREATE EXTENSION webhook_ext").unwrap();
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
