//! Hostile neighbours and unlucky days: a role that controls the database's search_path, a
//! transaction manager that commits with COMMIT PREPARED, and database defaults the worker must
//! not inherit. Each test has its own cluster.

use std::time::{Duration, Instant, SystemTime};

use webhook_ext_tests::*;

const DEADLINE: Duration = Duration::from_secs(60);

/// The tests of this file run one at a time: two of them compare rates and latencies measured
/// in the same test, which a neighbour test's load on the same two cores would skew.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A connection as `user` to the database `postgres`, with `options` (startup settings, which
/// outrank the database's and the role's defaults).
fn connect_as(cluster: &Cluster, user: &str, options: &str) -> Client {
    Client::connect(
        &format!(
            "host=127.0.0.1 port={} user={user} dbname=postgres connect_timeout=5 options='{options}'",
            cluster.port
        ),
        postgres::NoTls,
    )
    .unwrap_or_else(|e| panic!("cannot connect as {user}: {}", db_message(&e)))
}

/// A session that resolves only built-ins and is not cut short, whatever the database's and
/// the role's defaults say: the tests' own queries use operators too.
fn careful_session(cluster: &Cluster) -> Client {
    let mut db = connect_as(
        cluster,
        "postgres",
        "-c search_path=pg_catalog,public -c default_transaction_read_only=off \
         -c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0",
    );
    db.batch_execute("SET default_transaction_isolation = 'read committed'")
        .unwrap();
    db
}

fn count(db: &mut Client, sql: &str) -> i64 {
    query_i64(db, sql)
}

/// The calls of the hostile schema's code so far, and by whom.
fn hostile_calls(db: &mut Client) -> Vec<String> {
    db.query(
        "SELECT format('%s by %s (%s times)', what, by_role, count(*)) FROM app.calls \
          GROUP BY what, by_role ORDER BY count(*) DESC",
        &[],
    )
    .unwrap()
    .iter()
    .map(|row| row.get(0))
    .collect()
}

/// Polls `sql` until it counts `expected`, failing at once (with what was called) as soon as
/// the hostile schema's code has run: a worker running it is soon broken too.
fn wait_for_count(db: &mut Client, what: &str, sql: &str, expected: impl Fn(i64) -> bool) {
    wait_until(what, DEADLINE, || {
        let calls = hostile_calls(db);
        assert!(
            calls.is_empty(),
            "the extension ran the hostile schema's code: {calls:?}"
        );
        expected(count(db, sql)).then_some(())
    });
}

/// Settings of the clusters whose log is searched for complaints: the harness logs from LOG
/// up, which leaves WARNING and ERROR out.
const LOG_COMPLAINTS: &str = "log_min_messages = warning";

/// The worker's own WARNING and ERROR lines in the server log.
fn worker_complaints(cluster: &Cluster) -> Vec<String> {
    cluster
        .server_log()
        .lines()
        .filter(|line| line.contains("webhook_ext worker"))
        .filter(|line| line.contains("WARNING:") || line.contains("ERROR:"))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_role_that_sets_the_search_path_gets_none_of_its_operators_called_and_stays_unprivileged() {
    let _serial = one_at_a_time();
    let cluster = Cluster::start("searchpath", LOG_COMPLAINTS);
    let mut admin = careful_session(&cluster);
    admin
        .batch_execute(
            "CREATE EXTENSION webhook_ext SCHEMA public;
             CREATE ROLE app LOGIN;
             CREATE SCHEMA app AUTHORIZATION app;
             GRANT EXECUTE ON FUNCTION webhook_trigger(), webhook_emit(text, jsonb, text) TO app;
             SET ROLE app;
             SET search_path = pg_catalog;",
        )
        .unwrap();
    admin
        .batch_execute(include_str!("sql/hostile_schema.sql"))
        .unwrap();
    admin
        .batch_execute(
            "RESET ROLE;
             SET search_path = pg_catalog, public;
             ALTER DATABASE postgres SET search_path = app, pg_catalog, public;",
        )
        .unwrap();
    let twins = count(
        &mut admin,
        "SELECT count(*) FROM pg_proc WHERE pronamespace = 'app'::regnamespace",
    );
    assert!(twins > 1000, "only {twins} hostile functions were created");
    for (twin, args) in [
        ("*", "bigint, interval"),
        ("*", "numeric, integer"),
        ("=", "bigint, bigint"),
        ("+", "timestamp with time zone, interval"),
    ] {
        let exists: bool = admin
            .query_one(
                &format!("SELECT to_regoperator('app.{twin}({args})') IS NOT NULL"),
                &[],
            )
            .unwrap()
            .get(0);
        assert!(exists, "the hostile schema lacks {twin}({args})");
    }
    assert!(
        admin
            .query_one(
                "SELECT to_regprocedure('app.unnest(interval[])') IS NOT NULL",
                &[]
            )
            .unwrap()
            .get::<_, bool>(0),
        "the hostile schema lacks unnest(interval[])"
    );
    // The worker connected before the database got its new default: it reconnects with it.
    let pid = wait_until("the worker", DEADLINE, || worker_pid(&mut admin));
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    wait_until("the worker to come back", DEADLINE, || {
        worker_pid(&mut admin).filter(|&new| new != pid)
    });

    // The DBA's session and the application's both have the hostile schema first.
    let mut dba = cluster.connect();
    dba.batch_execute("SET search_path = app, pg_catalog, public")
        .unwrap();
    let mut application = connect_as(&cluster, "app", "");
    application
        .batch_execute(
            "SET search_path = app, pg_catalog, public;
             CREATE TABLE app.cliente (id bigserial PRIMARY KEY, nome text, saldo numeric(12,2));
             CREATE TRIGGER cliente_webhook AFTER INSERT OR UPDATE OR DELETE ON app.cliente
                 FOR EACH ROW EXECUTE FUNCTION public.webhook_trigger('cliente');",
        )
        .unwrap();

    let steady = Receiver::always(Reply::ok());
    let (flaky, healthy) = recovering_receiver(500);
    let steady_id: i64 = dba
        .query_one(
            "SELECT id FROM webhook_create($1, 'segredo', ARRAY['cliente.*', 'fatura.paga'])",
            &[&steady.url()],
        )
        .unwrap()
        .get(0);
    let flaky_id: i64 = dba
        .query_one(
            "SELECT id FROM webhook_create($1, 'outro-segredo', ARRAY['pedido.criado'])",
            &[&flaky.url()],
        )
        .unwrap()
        .get(0);
    // A wire format other than the default (SPEC §11): the trigger's queueing statement then
    // reshapes the body, and the worker signs a re-serialized body.
    dba.query(
        "SELECT id FROM webhook_update($1, description => 'parceiro', \
                envelope => '{\"event\": \"evento\"}', json_numbers => 'javascript', \
                signature_format => 'hex', signature_input => 'python_sorted_json')",
        &[&steady_id],
    )
    .unwrap();
    // Per-partner control: the trigger matches the filter (jsonb operators) in the
    // application's session; the worker orders and paces.
    let partner = Receiver::always(Reply::ok());
    let partner_id: i64 = dba
        .query_one(
            "SELECT id FROM webhook_create($1, 'terceiro', ARRAY['cliente.*'], \
                    filter => '{\"saldo\": 199.90}', ordered => true, max_per_second => 200, \
                    no_retry_statuses => '{422}')",
            &[&partner.url()],
        )
        .unwrap()
        .get(0);
    admin
        .execute(
            "UPDATE webhook SET retry_schedule = '{0s,1s,1s,1s}' WHERE id = $1",
            &[&flaky_id],
        )
        .unwrap();

    // A drain: rows written by the application (the trigger queues as the extension's owner)
    // and events emitted by hand.
    for n in 0..50 {
        application
            .execute(
                "INSERT INTO app.cliente (nome, saldo) VALUES ($1, 199.90)",
                &[&format!("cliente {n}")],
            )
            .unwrap();
        application
            .query("SELECT webhook_emit('fatura.paga', '{\"valor\": 10}')", &[])
            .unwrap();
    }
    application
        .query(
            "SELECT webhook_emit('pedido.criado', '{\"pedido\": 1}')",
            &[],
        )
        .unwrap();
    wait_for_count(
        &mut admin,
        "the drain",
        &format!("SELECT count(*) FROM webhook_delivery WHERE webhook_id = {steady_id} AND status = 'succeeded'"),
        |n| n == 100,
    );
    let reshaped = steady
        .requests()
        .into_iter()
        .map(|r| String::from_utf8(r.body).unwrap())
        .find(|body| body.contains("\"evento\":\"cliente.created\""))
        .expect("a body in the webhook's format");
    assert!(reshaped.contains("\"saldo\":199.9}"), "{reshaped}");
    wait_for_count(
        &mut admin,
        "the filtered, ordered, paced partner",
        &format!("SELECT count(*) FROM webhook_delivery WHERE webhook_id = {partner_id} AND status = 'succeeded'"),
        |n| n == 50,
    );
    application
        .query(
            "SELECT webhook_emit('cliente.nota', '{\"saldo\": 1}', key => 'k')",
            &[],
        )
        .unwrap();
    dba.query("SELECT webhook_cancel_pending($1)", &[&partner_id])
        .unwrap();
    // Retries: the flaky receiver fails twice, then answers.
    wait_for_count(
        &mut admin,
        "two failed attempts",
        &format!(
            "SELECT count(*) FROM webhook_attempt a JOIN webhook_delivery d ON d.id = a.delivery_id \
              WHERE d.webhook_id = {flaky_id}"
        ),
        |n| n >= 2,
    );
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_for_count(
        &mut admin,
        "the retried delivery to succeed",
        &format!(
            "SELECT count(*) FROM webhook_delivery WHERE webhook_id = {flaky_id} AND status = 'succeeded'"
        ),
        |n| n == 1,
    );
    let delivered = admin
        .query_one(
            &format!("SELECT min(id) FROM webhook_delivery WHERE webhook_id = {steady_id}"),
            &[],
        )
        .unwrap()
        .get::<_, i64>(0);
    // A manual retry, a ping, a rotation and the status, from the DBA's session.
    let retried: String = dba
        .query_one("SELECT status FROM webhook_retry($1)", &[&delivered])
        .unwrap()
        .get(0);
    assert_eq!(retried, "succeeded");
    let pinged: bool = dba
        .query_one("SELECT succeeded FROM webhook_ping($1)", &[&steady_id])
        .unwrap()
        .get(0);
    assert!(pinged);
    dba.query("SELECT id FROM webhook_rotate_secret($1)", &[&steady_id])
        .unwrap();
    let before = steady.count();
    application
        .query("SELECT webhook_emit('fatura.paga', '{\"valor\": 20}')", &[])
        .unwrap();
    steady.wait_for(before + 1, DEADLINE);
    dba.query(
        "SELECT running, queue_depth FROM webhook_worker_status()",
        &[],
    )
    .unwrap();
    dba.query(
        "SELECT database, running, queue_depth FROM webhook_cluster_status()",
        &[],
    )
    .unwrap();
    dba.query(
        "SELECT webhook_id, deliveries_total FROM webhook_stats",
        &[],
    )
    .unwrap();
    let before = flaky.count();
    dba.query(
        "SELECT webhook_replay($1, '-infinity', 'infinity', 'succeeded')",
        &[&flaky_id],
    )
    .unwrap();
    flaky.wait_for(before + 1, DEADLINE);
    // A purge: every finished delivery is older than a second of retention.
    cluster.reload_with(&[("webhook.retention", "1s")]);
    wait_for_count(
        &mut admin,
        "the purge",
        "SELECT count(*) FROM webhook_delivery",
        |n| n == 0,
    );
    dba.query("SELECT webhook_delete($1)", &[&flaky_id])
        .unwrap();

    let calls = hostile_calls(&mut admin);
    assert!(
        calls.is_empty(),
        "the extension ran the hostile schema's code: {calls:?}"
    );
    let superuser: bool = admin
        .query_one("SELECT rolsuper FROM pg_roles WHERE rolname = 'app'", &[])
        .unwrap()
        .get(0);
    assert!(!superuser, "role app made itself superuser");
    assert!(
        worker_complaints(&cluster).is_empty(),
        "{:?}",
        worker_complaints(&cluster)
    );
}

#[test]
fn an_event_committed_by_commit_prepared_reaches_the_receiver_at_once() {
    let _serial = one_at_a_time();
    let (cluster, mut db) = Cluster::start_installed("prepared", "max_prepared_transactions = 10");
    let receiver = Receiver::always(Reply::ok());
    db.execute(
        "SELECT webhook_create($1, 'k', '{prepared.*,normal.*}')",
        &[&receiver.url()],
    )
    .unwrap();
    // The transaction manager prepares in one session and commits in another.
    let mut preparer = cluster.connect();
    let mut committer = cluster.connect();
    let rounds = 20;
    let mut latencies = |prefix: &str, prepared: bool| -> Vec<Duration> {
        let mut latencies = Vec::with_capacity(rounds);
        for n in 0..rounds {
            let event = format!("{prefix}.{n}");
            let before = receiver.count();
            let committed = if prepared {
                preparer
                    .batch_execute(&format!(
                        "BEGIN; SELECT webhook_emit('{event}', '{{}}'); PREPARE TRANSACTION 'tm_{n}'"
                    ))
                    .unwrap();
                committer
                    .batch_execute(&format!("COMMIT PREPARED 'tm_{n}'"))
                    .unwrap();
                SystemTime::now()
            } else {
                preparer
                    .batch_execute(&format!("SELECT webhook_emit('{event}', '{{}}')"))
                    .unwrap();
                SystemTime::now()
            };
            let got = receiver.wait_for(before + 1, DEADLINE);
            let request = got.last().unwrap();
            assert_eq!(request.header("X-Event-Type"), Some(event.as_str()));
            latencies.push(
                request
                    .received_at
                    .duration_since(committed)
                    .unwrap_or_default(),
            );
        }
        latencies.sort();
        latencies
    };
    let normal = latencies("normal", false);
    let prepared = latencies("prepared", true);
    let p50 = |l: &[Duration]| l[l.len() / 2];
    let p99 = |l: &[Duration]| l[l.len() - 1];
    // Before the fix these waited for the worker's idle tick: seconds each.
    assert!(
        p50(&prepared) < Duration::from_millis(250) && p99(&prepared) < Duration::from_millis(1500),
        "COMMIT PREPARED: p50 {:?}, p99 {:?} (normal commits: p50 {:?}, p99 {:?})",
        p50(&prepared),
        p99(&prepared),
        p50(&normal),
        p99(&normal)
    );
}

#[test]
fn hostile_database_and_role_defaults_change_nothing_for_the_worker() {
    let _serial = one_at_a_time();
    // Defaults some shops set cluster-wide, plus ones nobody should, in every place a session
    // takes its defaults from.
    let cluster = Cluster::start(
        "defaults",
        "log_min_messages = warning
         default_transaction_isolation = 'serializable'
         DateStyle = 'SQL, DMY'
         IntervalStyle = 'iso_8601'
         TimeZone = 'Pacific/Chatham'",
    );
    let mut admin = careful_session(&cluster);
    admin
        .batch_execute(
            "CREATE EXTENSION webhook_ext SCHEMA public;
             CREATE SCHEMA other;
             CREATE TABLE public.cliente (id bigserial PRIMARY KEY, nome text, saldo numeric(12,2));
             CREATE TRIGGER cliente_webhook AFTER INSERT OR UPDATE ON public.cliente
                 FOR EACH ROW EXECUTE FUNCTION public.webhook_trigger('cliente');
             ALTER DATABASE postgres SET default_transaction_read_only = on;
             ALTER DATABASE postgres SET statement_timeout = '1ms';
             ALTER DATABASE postgres SET search_path = other, pg_catalog;
             ALTER ROLE postgres SET lock_timeout = '1ms';
             ALTER ROLE postgres SET idle_in_transaction_session_timeout = '1ms';
             ALTER ROLE postgres IN DATABASE postgres SET default_transaction_deferrable = on;",
        )
        .unwrap();
    let receiver = Receiver::always(Reply::ok());
    admin
        .execute(
            "SELECT webhook_create($1, 'k', '{cliente.*,lote.*}')",
            &[&receiver.url()],
        )
        .unwrap();
    // The worker reconnects with these defaults.
    let pid = wait_until("the worker", DEADLINE, || worker_pid(&mut admin));
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    wait_until("the worker to come back", DEADLINE, || {
        worker_pid(&mut admin).filter(|&new| new != pid)
    });

    // Thousands of events from several writers at once, while the worker delivers.
    let writers = 4;
    let per_writer = 750;
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let mut db = careful_session(&cluster);
            std::thread::spawn(move || {
                for n in 0..per_writer {
                    if n % 2 == 0 {
                        db.execute(
                            "INSERT INTO public.cliente (nome, saldo) VALUES ($1, 10.50)",
                            &[&format!("w{w} n{n}")],
                        )
                        .unwrap();
                    } else {
                        db.query(
                            "SELECT public.webhook_emit('lote.item', jsonb_build_object('w', $1::int, 'n', $2::int))",
                            &[&w, &n],
                        )
                        .unwrap();
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let total = (writers * per_writer) as i64;
    let started = Instant::now();
    wait_until("every event delivered", Duration::from_secs(120), || {
        (count(
            &mut admin,
            "SELECT count(*) FROM webhook_delivery WHERE status = 'succeeded'",
        ) == total)
            .then_some(())
    });
    assert_eq!(receiver.count() as i64, total, "one request per event");
    assert!(
        worker_complaints(&cluster).is_empty(),
        "the worker complained (after {:?}): {:?}",
        started.elapsed(),
        worker_complaints(&cluster)
    );
}

/// Emits `count` events for `event`'s webhook in one transaction and returns the rate at which
/// `receiver` got them (events per second, from the commit to the last receipt).
fn drain_rate(db: &mut Client, receiver: &Receiver, event: &str, count: usize) -> f64 {
    let before = receiver.count();
    db.execute(
        "SELECT webhook_emit($1, jsonb_build_object('n', g)) FROM generate_series(1, $2::int) g",
        &[&event, &(count as i32)],
    )
    .unwrap();
    let committed = Instant::now();
    receiver.wait_for(before + count, DEADLINE);
    count as f64 / committed.elapsed().as_secs_f64()
}

#[test]
fn a_fast_endpoint_keeps_its_pace_next_to_a_hundred_that_hang() {
    let _serial = one_at_a_time();
    let (_cluster, mut db) = Cluster::start_installed("hundred", "webhook.timeout = '3s'");
    let fast = Receiver::always(Reply::ok());
    let hanging = Receiver::always(Reply::Hang);
    create_webhook(&mut db, &fast.url(), Some("k"), "rapido.*");
    db.execute(
        "SELECT webhook_create($1, 'k', ARRAY['morto' || g || '.*']) FROM generate_series(1, 100) g",
        &[&hanging.url()],
    )
    .unwrap();

    let alone = drain_rate(&mut db, &fast, "rapido.lote", 2_000);
    // Every hanging endpoint gets work the worker knows nothing about yet...
    db.batch_execute(
        "SELECT webhook_emit('morto' || w || '.x', jsonb_build_object('n', g))
           FROM generate_series(1, 100) w, generate_series(1, 10) g",
    )
    .unwrap();
    // ... and holds threads until its attempts time out.
    wait_until("the hanging receiver to hold connections", DEADLINE, || {
        (hanging.connections() >= 16).then_some(())
    });
    let beside = drain_rate(&mut db, &fast, "rapido.lote", 2_000);
    // Single events now and then meanwhile, for two of the worker's maintenance intervals
    // (5 s: it forgets what it learnt of endpoints that hold no claim): commit to receipt.
    let mut latencies = Vec::new();
    for n in 0..15 {
        let before = fast.count();
        db.execute(
            "SELECT webhook_emit('rapido.um', jsonb_build_object('n', $1::int))",
            &[&n],
        )
        .unwrap();
        let committed = SystemTime::now();
        let got = fast.wait_for(before + 1, DEADLINE);
        let received = got.last().unwrap().received_at;
        latencies.push(received.duration_since(committed).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(700));
    }
    latencies.sort();
    let p99 = latencies[latencies.len() - 1];
    let still_hanging = query_i64(
        &mut db,
        "SELECT count(*) FROM webhook_delivery d JOIN webhook w ON w.id = d.webhook_id \
          WHERE w.url = (SELECT url FROM webhook WHERE events = '{morto1.*}') \
            AND d.status IN ('pending', 'delivering')",
    );
    assert!(
        beside >= alone * 0.5,
        "next to 100 hanging endpoints the fast one got {beside:.0}/s, alone {alone:.0}/s"
    );
    assert!(
        p99 < Duration::from_secs(1),
        "commit-to-receipt p99 {p99:?} next to 100 hanging endpoints (p50 {:?})",
        latencies[latencies.len() / 2]
    );
    assert!(
        still_hanging > 0,
        "the hanging endpoints were still being tried during the measurement"
    );
}
