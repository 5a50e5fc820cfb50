//! Operating webhook_ext: automatic disabling and replay, retention, settings reload, secret
//! rotation expiry, pg_dump/pg_restore and the upgrade from 0.1.0. Real cluster, real worker,
//! real receivers; each test has its own cluster because they change settings.

use std::sync::atomic::Ordering;
use std::time::Duration;

use webhook_ext_tests::*;

const DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn consecutive_failures_disable_a_webhook_which_can_be_enabled_and_replayed() {
    let (_cluster, mut db) =
        Cluster::start_installed("autodisable", "webhook.disable_after_failures = 3");
    let (receiver, healthy) = recovering_receiver(503);
    let id: i64 = create_webhook(&mut db, &receiver.url(), Some("k"), "pedido.*");
    one_attempt_only(&mut db, id);

    let mut failed = Vec::new();
    for _ in 0..3 {
        let delivery = emit_one(&mut db, "pedido.criado");
        wait_for_status(&mut db, delivery, "failed", DEADLINE);
        failed.push(delivery);
    }
    let row = db
        .query_one(
            "SELECT active, disabled_reason FROM webhook WHERE id = $1",
            &[&id],
        )
        .unwrap();
    assert!(
        !row.get::<_, bool>(0),
        "3 consecutive failed deliveries disable the webhook"
    );
    let reason: String = row.get(1);
    assert!(
        reason.contains("3 consecutive failed deliveries")
            && reason.contains("disabled automatically on"),
        "{reason}"
    );
    let streak: i32 = db
        .query_one(
            "SELECT consecutive_failures FROM webhook_stats WHERE webhook_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(streak, 3);
    let queued: i32 = db
        .query_one("SELECT webhook_emit('pedido.criado', '{}')", &[])
        .unwrap()
        .get(0);
    assert_eq!(queued, 0, "an inactive webhook gets no new deliveries");

    // Replaying an inactive webhook is refused; enabling it clears the reason and the streak.
    let err = db
        .query_one(
            "SELECT webhook_replay($1, now() - interval '1 hour')",
            &[&id],
        )
        .unwrap_err();
    assert_eq!(
        err.code().map(|c| c.code()),
        Some("55000"),
        "{}",
        db_message(&err)
    );
    db.execute("SELECT webhook_update($1, active => true)", &[&id])
        .unwrap();
    let row = db
        .query_one(
            "SELECT w.disabled_reason, s.consecutive_failures FROM webhook w JOIN webhook_stats s ON s.webhook_id = w.id WHERE w.id = $1",
            &[&id],
        )
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0), None);
    assert_eq!(row.get::<_, i32>(1), 0);

    // Deliveries queued and then cancelled by a deactivation can be replayed too.
    let mut tx = db.transaction().unwrap();
    tx.execute("SELECT webhook_emit('pedido.cancelado', '{}')", &[])
        .unwrap();
    tx.execute("SELECT webhook_update($1, active => false)", &[&id])
        .unwrap();
    tx.commit().unwrap();
    let cancelled = db
        .query_one(
            "SELECT max(id) FROM webhook_delivery WHERE event = 'pedido.cancelado'",
            &[],
        )
        .unwrap();
    let cancelled: i64 = cancelled.get(0);
    assert_eq!(delivery_status(&mut db, cancelled), "cancelled");
    db.execute("SELECT webhook_update($1, active => true)", &[&id])
        .unwrap();

    healthy.store(true, Ordering::SeqCst);
    let before = receiver.count();
    let replayed: i32 = db
        .query_one(
            "SELECT webhook_replay($1, now() - interval '1 hour')",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(replayed, 3, "the three failed deliveries");
    let replayed: i32 = db
        .query_one(
            "SELECT webhook_replay($1, now() - interval '1 hour', status => 'cancelled')",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(replayed, 1);
    for delivery in failed.iter().chain([&cancelled]) {
        wait_for_status(&mut db, *delivery, "succeeded", DEADLINE);
    }
    let requests = receiver.requests();
    assert_eq!(requests.len(), before + 4);
    // Same events, same bodies as the first time; new attempts numbered on.
    let first_event = requests[0].header("X-Event-ID").unwrap();
    assert!(requests[before..]
        .iter()
        .any(|r| r.header("X-Event-ID") == Some(first_event) && r.body == requests[0].body));
    let attempts: Vec<i32> = db
        .query(
            "SELECT attempt FROM webhook_attempt WHERE delivery_id = $1 ORDER BY attempt",
            &[&failed[0]],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(attempts, vec![1, 2]);
    let err = db
        .query_one(
            "SELECT webhook_replay($1, now(), status => 'pending')",
            &[&id],
        )
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("22023"));
}

#[test]
fn retention_purges_finished_deliveries_but_never_pending_ones() {
    let (_cluster, mut db) = Cluster::start_installed("retention", "webhook.retention = '1s'");
    let ok = Receiver::always(Reply::ok());
    let failing = Receiver::always(Reply::status(500));
    create_webhook(&mut db, &ok.url(), Some("k"), "ok.*");
    let slow: i64 = create_webhook(&mut db, &failing.url(), Some("k"), "later.*");
    // After one failure the next attempt is a week away: pending all along.
    db.execute(
        "UPDATE webhook SET retry_schedule = '{0s,7 days}' WHERE id = $1",
        &[&slow],
    )
    .unwrap();
    let finished = emit_one(&mut db, "ok.done");
    let pending = emit_one(&mut db, "later.retry");
    wait_for_status(&mut db, finished, "succeeded", DEADLINE);
    wait_until("the pending delivery's first attempt", DEADLINE, || {
        let attempts: i32 = db
            .query_one(
                "SELECT attempts FROM webhook_delivery WHERE id = $1",
                &[&pending],
            )
            .unwrap()
            .get(0);
        (attempts == 1 && delivery_status(&mut db, pending) == "pending").then_some(())
    });
    wait_until("the finished delivery to be purged", DEADLINE, || {
        let left: i64 = db
            .query_one(
                "SELECT count(*) FROM webhook_delivery WHERE id = $1",
                &[&finished],
            )
            .unwrap()
            .get(0);
        (left == 0).then_some(())
    });
    let attempts_of_finished: i64 = db
        .query_one(
            "SELECT count(*) FROM webhook_attempt WHERE delivery_id = $1",
            &[&finished],
        )
        .unwrap()
        .get(0);
    assert_eq!(attempts_of_finished, 0, "its attempts go with it");
    assert_eq!(
        delivery_status(&mut db, pending),
        "pending",
        "pending deliveries are never purged"
    );
    let attempts_of_pending: i64 = db
        .query_one(
            "SELECT count(*) FROM webhook_attempt WHERE delivery_id = $1",
            &[&pending],
        )
        .unwrap()
        .get(0);
    assert_eq!(attempts_of_pending, 1);
    // A backlog of many batches past retention is purged without waiting a maintenance
    // interval per batch (at 1000 every 5 s this would take 25 s).
    let webhook: i64 = db
        .query_one("SELECT id FROM webhook WHERE events = '{ok.*}'", &[])
        .unwrap()
        .get(0);
    db.execute(
        "INSERT INTO webhook_delivery_store (webhook_id, event_id, event, body, status, created_at, updated_at) \
         SELECT $1, gen_random_uuid(), 'ok.old', '{}', 'succeeded', now() - interval '2 days', now() - interval '1 day' \
           FROM generate_series(1, 5000)",
        &[&webhook],
    )
    .unwrap();
    wait_until(
        "5000 old deliveries to be purged",
        Duration::from_secs(15),
        || {
            let left: i64 = db
                .query_one(
                    "SELECT count(*) FROM webhook_delivery WHERE event = 'ok.old'",
                    &[],
                )
                .unwrap()
                .get(0);
            (left == 0).then_some(())
        },
    );
    assert_eq!(delivery_status(&mut db, pending), "pending");
    // Only the worker updates deliveries here: autovacuum sees its writes because the worker
    // reports its table statistics.
    wait_until("the worker's table statistics", DEADLINE, || {
        let updated: i64 = db
            .query_one("SELECT n_tup_upd + n_tup_del FROM pg_stat_user_tables WHERE relname = 'webhook_delivery_store'", &[])
            .unwrap()
            .get(0);
        (updated > 0).then_some(())
    });
}

#[test]
fn settings_change_on_reload_and_status_shows_what_the_worker_uses() {
    let (cluster, mut db) = Cluster::start_installed("reload", "");
    let settings = |db: &mut Client| -> serde_json::Value {
        let text: Option<String> = db
            .query_one("SELECT settings::text FROM webhook_worker_status()", &[])
            .unwrap()
            .get(0);
        serde_json::from_str(&text.unwrap_or_else(|| "null".into())).unwrap()
    };
    let initial = wait_until("the worker to publish its settings", DEADLINE, || {
        Some(settings(&mut db)).filter(|s| !s.is_null())
    });
    assert_eq!(initial["retry_schedule"], "0s,1min,5min,15min,1h");
    assert_eq!(initial["timeout_ms"], 2000);

    cluster.reload_with(&[
        ("webhook.concurrency", "7"),
        ("webhook.retry_schedule", "0s,2s"),
        ("webhook.timeout", "1500ms"),
        ("webhook.disable_after_failures", "0"),
    ]);
    let reloaded = wait_until("the worker to reload", DEADLINE, || {
        Some(settings(&mut db)).filter(|s| s["concurrency"] == 7)
    });
    assert_eq!(reloaded["retry_schedule"], "0s,2s");
    assert_eq!(reloaded["timeout_ms"], 1500);
    assert_eq!(reloaded["disable_after_failures"], 0);

    // The reloaded schedule is the one used: two attempts, at least 2 s apart, then failed.
    let failing = Receiver::always(Reply::status(500));
    create_webhook(&mut db, &failing.url(), Some("k"), "sched.*");
    let delivery = emit_one(&mut db, "sched.x");
    wait_for_status(&mut db, delivery, "failed", DEADLINE);
    let gap: f64 = db
        .query_one(
            "SELECT extract(epoch FROM max(started_at) - min(started_at))::float8 FROM webhook_attempt WHERE delivery_id = $1 HAVING count(*) = 2",
            &[&delivery],
        )
        .unwrap()
        .get(0);
    assert!(gap >= 1.95, "{gap}");

    // Invalid values are refused when set, naming the setting.
    for (name, value) in [
        ("webhook.retry_schedule", "soon"),
        ("webhook.allowed_networks", "10.0.0.0/99"),
        ("webhook.retention", "forever"),
    ] {
        let err = db
            .batch_execute(&format!("ALTER SYSTEM SET {name} = '{value}'"))
            .unwrap_err();
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("22023"),
            "{name}: {}",
            db_message(&err)
        );
    }
}

#[test]
fn a_rotated_out_secret_is_forgotten_after_its_grace_period() {
    let (_cluster, mut db) = Cluster::start_installed("rotation", "");
    let receiver = Receiver::always(Reply::ok());
    let row = db
        .query_one(
            "SELECT id, secret FROM webhook_create($1, events => '{rot.*}')",
            &[&receiver.url()],
        )
        .unwrap();
    let (id, old_secret): (i64, String) = (row.get(0), row.get(1));
    let new_secret: String = db
        .query_one(
            "SELECT secret FROM webhook_rotate_secret($1, grace => '1 second')",
            &[&id],
        )
        .unwrap()
        .get(0);
    wait_until("the old secret to be forgotten", DEADLINE, || {
        let previous: Option<String> = db
            .query_one("SELECT previous_secret FROM webhook WHERE id = $1", &[&id])
            .unwrap()
            .get(0);
        previous.is_none().then_some(())
    });
    let delivery = emit_one(&mut db, "rot.after");
    wait_for_status(&mut db, delivery, "succeeded", DEADLINE);
    let request = receiver.wait_for(1, DEADLINE).remove(0);
    let standard = request.header("webhook-signature").unwrap();
    assert_eq!(standard.split(' ').count(), 1, "{standard}");
    let (msg_id, ts) = (
        request.header("webhook-id").unwrap(),
        request.header("webhook-timestamp").unwrap(),
    );
    assert!(verify_standard(
        &new_secret,
        msg_id,
        ts,
        &request.body,
        standard
    ));
    assert!(!verify_standard(
        &old_secret,
        msg_id,
        ts,
        &request.body,
        standard
    ));
    assert!(!verify_hex(
        &old_secret,
        &request.body,
        request.header("X-Webhook-Signature").unwrap()
    ));
}

/// Runs a PostgreSQL client program against the cluster as root over TCP.
fn pg_tool(cluster: &Cluster, program: &str, args: &[&str]) {
    let port = cluster.port.to_string();
    let out = std::process::Command::new(cluster.pg.program(program))
        .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pg_dump_and_pg_restore_keep_webhooks_their_ids_and_queued_deliveries() {
    // No worker in source or target: their deliveries stay as queued while they are compared.
    let cluster = Cluster::start("dump", "webhook.databases = 'postgres'");
    let mut admin = cluster.connect();
    admin.batch_execute("CREATE DATABASE source").unwrap();
    admin.batch_execute("CREATE DATABASE target").unwrap();
    let mut source = cluster.connect_to("source");
    source.batch_execute(
        "CREATE EXTENSION webhook_ext;
         SELECT webhook_create('https://a.example.com/hook', 'secret-a', '{cliente.*}', name => 'a');
         SELECT webhook_create('https://b.example.com/hook', 'secret-b', '{tarefa.*}', name => 'b');
         SELECT webhook_create('https://c.example.com/hook', 'secret-c', name => 'c', headers => '{\"X-Tenant\": \"7\"}');
         SELECT webhook_delete(2);
         SELECT webhook_emit('cliente.criado', '{\"id\": 1}');",
    )
    .unwrap();
    let dump = cluster.dir.join("source.dump");
    let dump = dump.to_str().unwrap();
    pg_tool(&cluster, "pg_dump", &["-Fc", "-f", dump, "source"]);
    pg_tool(&cluster, "pg_restore", &["-d", "target", dump]);

    let snapshot = |db: &mut Client| -> Vec<String> {
        db.query(
            "SELECT concat_ws('|', id, name, url, secret, events::text, headers::text, active) FROM webhook ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let mut target = cluster.connect_to("target");
    assert_eq!(snapshot(&mut target), snapshot(&mut source));
    let deliveries = |db: &mut Client| -> Vec<String> {
        db.query("SELECT concat_ws('|', id, webhook_id, event_id, body, status) FROM webhook_delivery ORDER BY id", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    assert_eq!(deliveries(&mut target), deliveries(&mut source));
    assert_eq!(deliveries(&mut target).len(), 2);
    // The sequence came along: the next webhook does not reuse an id.
    let next: i64 = target
        .query_one(
            "SELECT id FROM webhook_create('https://d.example.com/hook', 'secret-d')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(next, 4);
}

fn extension_functions(db: &mut Client) -> Vec<String> {
    db.query(
        "SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ') ' || pg_get_function_result(p.oid) \
           FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e' \
           JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'webhook_ext' ORDER BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// The definitions of the extension tables' indexes and constraints, of its functions'
/// bodies' configuration (SECURITY DEFINER, search_path), and the library symbol each C
/// function calls.
fn extension_schema(db: &mut Client) -> Vec<String> {
    db.query(
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i \
           JOIN pg_depend d ON d.objid = i.indrelid AND d.deptype = 'e' \
           JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'webhook_ext' \
         UNION ALL \
         SELECT c.conrelid::regclass::text || ' ' || pg_get_constraintdef(c.oid) FROM pg_constraint c \
           JOIN pg_depend d ON d.objid = c.conrelid AND d.deptype = 'e' \
           JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'webhook_ext' \
         UNION ALL \
         SELECT p.proname || ' ' || p.prosecdef || ' ' || coalesce(p.proconfig::text, '') || ' ' || \
                CASE WHEN p.prolang = (SELECT l.oid FROM pg_language l WHERE l.lanname = 'c') \
                     THEN p.prosrc ELSE '' END FROM pg_proc p \
           JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e' \
           JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'webhook_ext' \
         UNION ALL \
         SELECT c.relname || ' ' || c.relkind::text || ' ' || coalesce(c.reloptions::text, '') || ' ' || \
                coalesce(pg_get_viewdef(c.oid), '') || ' ' || \
                (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || \
                                   a.attnotnull || ' ' || coalesce(pg_get_expr(ad.adbin, ad.adrelid), ''), \
                                   ', ' ORDER BY a.attnum) \
                   FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum \
                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) \
           FROM pg_class c \
           JOIN pg_depend d ON d.objid = c.oid AND d.deptype = 'e' \
           JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'webhook_ext' \
         UNION ALL \
         SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t \
           JOIN pg_depend d ON d.objid = t.tgrelid AND d.deptype = 'e' \
           JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'webhook_ext' \
          WHERE NOT t.tgisinternal \
         ORDER BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[test]
fn upgrade_from_0_1_0_through_every_release_keeps_data_and_gets_the_new_functions() {
    let cluster = Cluster::start("upgrade", "");
    let mut admin = cluster.connect();
    admin.batch_execute("CREATE DATABASE fresh").unwrap();
    cluster
        .connect_to("fresh")
        .batch_execute("CREATE EXTENSION webhook_ext")
        .unwrap();

    let receiver = Receiver::always(Reply::ok());
    let mut db = cluster.connect();
    db.batch_execute("CREATE EXTENSION webhook_ext VERSION '0.1.0'")
        .unwrap();
    let row = db
        .query_one(
            "SELECT id, secret FROM webhook_create($1, events => '{up.*}')",
            &[&receiver.url()],
        )
        .unwrap();
    let (id, secret): (i64, String) = (row.get(0), row.get(1));
    let delivery = emit_one(&mut db, "up.before");
    // This worker does not touch a 0.1.0 schema: it says so and waits.
    let last_error = wait_until("the worker to ask for the update", DEADLINE, || {
        db.query_one("SELECT last_error FROM webhook_worker_status()", &[])
            .unwrap()
            .get::<_, Option<String>>(0)
    });
    assert!(
        last_error.contains("ALTER EXTENSION webhook_ext UPDATE"),
        "{last_error}"
    );
    assert_eq!(delivery_status(&mut db, delivery), "pending");

    // At 0.3.0 (the release before the storage changed): a delivery with history, and one
    // that was being delivered when the update came.
    db.batch_execute("ALTER EXTENSION webhook_ext UPDATE TO '0.3.0'")
        .unwrap();
    let failed = emit_one(&mut db, "up.history");
    db.execute(
        "UPDATE webhook_delivery SET status = 'failed', attempts = 2, response_status = 500 WHERE id = $1",
        &[&failed],
    )
    .unwrap();
    db.execute(
        "INSERT INTO webhook_attempt (delivery_id, webhook_id, attempt, started_at, response_status) \
         VALUES ($1, $2, 1, now(), 500), ($1, $2, 2, now(), 500)",
        &[&failed, &id],
    )
    .unwrap();
    let in_flight = emit_one(&mut db, "up.in_flight");
    db.execute(
        "UPDATE webhook_delivery SET status = 'delivering', attempts = 1, \
                lease_until = now() + interval '1 minute' WHERE id = $1",
        &[&in_flight],
    )
    .unwrap();
    // The application keeps writing, through the installation's trigger, while the server
    // already runs the new library; a role keeps what it was granted.
    db.batch_execute(
        "CREATE TABLE pedido (id int PRIMARY KEY);
         CREATE TRIGGER pedido_webhook AFTER INSERT ON pedido
             FOR EACH ROW EXECUTE FUNCTION webhook_trigger('up.pedido.criado', 'up.pedido.alterado', 'up.pedido.excluido');
         INSERT INTO pedido VALUES (1);
         CREATE ROLE upgrade_viewer;
         GRANT SELECT ON webhook_delivery, webhook_stats TO upgrade_viewer;
         GRANT EXECUTE ON FUNCTION webhook_retry(bigint) TO upgrade_viewer;
         GRANT EXECUTE ON FUNCTION webhook_create(text, text, text[], text, text, jsonb, boolean) TO upgrade_viewer;",
    )
    .unwrap();

    db.batch_execute("ALTER EXTENSION webhook_ext UPDATE")
        .unwrap();
    let version: String = db
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'webhook_ext'",
            &[],
        )
        .unwrap()
        .get(0);
    // Every upgrade script in turn (0.1.0 → 0.2.0 → ... → this release).
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    // Every delivery kept its id: the pending one and the interrupted one are sent (the
    // interrupted one as its second attempt), the failed one keeps its state and attempts.
    wait_for_status(&mut db, delivery, "succeeded", DEADLINE);
    wait_for_status(&mut db, in_flight, "succeeded", DEADLINE);
    let requests = receiver.wait_for(3, DEADLINE);
    for request in &requests {
        assert!(verify_hex(
            &secret,
            &request.body,
            request.header("X-Webhook-Signature").unwrap()
        ));
    }
    let events: Vec<&str> = requests
        .iter()
        .map(|r| r.header("X-Event-Type").unwrap())
        .collect();
    assert!(
        events.contains(&"up.before")
            && events.contains(&"up.in_flight")
            && events.contains(&"up.pedido.criado"),
        "{events:?}"
    );
    db.batch_execute(
        "SET ROLE upgrade_viewer;
         SELECT count(*) FROM webhook_delivery;
         SELECT count(*) FROM webhook_stats;
         RESET ROLE;",
    )
    .unwrap();
    let can_retry: bool = db
        .query_one(
            "SELECT has_function_privilege('upgrade_viewer', 'webhook_retry(bigint)', 'EXECUTE')",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(can_retry);
    // A function whose signature changed keeps its grants (0.5.0's webhook_create).
    let can_create: bool = db
        .query_one(
            "SELECT has_function_privilege('upgrade_viewer', \
                    'webhook_create(text, text, text[], text, text, jsonb, boolean, text, jsonb, text, text, text, boolean, jsonb, numeric, integer[])', 'EXECUTE')",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(can_create);
    let interrupted: i32 = db
        .query_one(
            "SELECT attempts FROM webhook_delivery WHERE id = $1",
            &[&in_flight],
        )
        .unwrap()
        .get(0);
    assert_eq!(interrupted, 2);
    let history = db
        .query_one(
            "SELECT d.status, d.attempts, (SELECT count(*) FROM webhook_attempt a WHERE a.delivery_id = d.id) \
               FROM webhook_delivery d WHERE d.id = $1",
            &[&failed],
        )
        .unwrap();
    assert_eq!(history.get::<_, String>(0), "failed");
    assert_eq!(history.get::<_, i32>(1), 2);
    assert_eq!(history.get::<_, i64>(2), 2);
    // Every webhook keeps the wire format it had (0.5.0's format columns and their defaults).
    let format: String = db
        .query_one(
            "SELECT concat_ws(' ', envelope IS NULL, signature_header, signature_format, \
                    signature_input, json_numbers) FROM webhook WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(format, "t X-Webhook-Signature sha256=hex body exact");

    // Same functions as a fresh install of this release, and the new ones work on the old data.
    assert_eq!(
        extension_functions(&mut db),
        extension_functions(&mut cluster.connect_to("fresh"))
    );
    assert_eq!(
        extension_schema(&mut db),
        extension_schema(&mut cluster.connect_to("fresh"))
    );
    let settings: Option<String> = db
        .query_one("SELECT settings::text FROM webhook_worker_status()", &[])
        .unwrap()
        .get(0);
    assert!(settings.is_some());
    let stats = db
        .query_one("SELECT deliveries_succeeded, last_success_at IS NOT NULL FROM webhook_stats WHERE webhook_id = $1", &[&id])
        .unwrap();
    assert_eq!(stats.get::<_, i64>(0), 3);
    assert!(stats.get::<_, bool>(1));
    let replayed: i32 = db
        .query_one(
            "SELECT webhook_replay($1, now() - interval '1 hour', status => 'succeeded')",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(replayed, 3);
    assert_eq!(receiver.wait_for(6, DEADLINE).len(), 6);
}

#[test]
fn growing_the_pool_on_reload_while_events_flow_never_crashes() {
    let (cluster, mut db) = Cluster::start_installed("grow", "webhook.concurrency = 2");
    let receiver = Receiver::always(Reply::ok());
    create_webhook(&mut db, &receiver.url(), Some("k"), "grow.*");
    // Each reload signals the worker while it starts new HTTP threads: a signal must never
    // land on one of them.
    for round in 1..=12 {
        cluster.reload_with(&[("webhook.concurrency", &(2 + round * 8).to_string())]);
        for _ in 0..20 {
            db.execute("SELECT webhook_emit('grow.event', '{}')", &[])
                .unwrap();
        }
    }
    assert_eq!(receiver.wait_for(240, DEADLINE).len(), 240);
    let log = cluster.server_log();
    assert!(
        !log.contains("terminated by signal") && !log.contains("PANIC"),
        "{log}"
    );
    let restarts = log.matches("webhook_ext worker started").count();
    assert_eq!(restarts, 1, "the worker never restarted");
}
