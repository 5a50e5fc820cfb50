//! Many databases, one cluster (SPEC §10): the launcher starts one worker per database where
//! webhook_ext is installed (`webhook.databases`, default `*`), each delivers its own
//! database's events with its own secrets, databases come and go while the cluster runs, and
//! one database's worker stopping or crashing costs the others nothing. Each test has its
//! own cluster.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use webhook_ext_tests::*;

const DEADLINE: Duration = Duration::from_secs(60);
/// SPEC §10: a database that gets CREATE EXTENSION while the cluster runs is served within 10 s.
const SERVED_WITHIN: Duration = Duration::from_secs(10);

/// A database `name` with the extension, a table `cliente (nome text)` whose inserts emit
/// `cliente.created`, and one webhook to `url` with `secret`.
fn tenant(cluster: &Cluster, name: &str, url: &str, secret: &str) -> Client {
    cluster
        .connect()
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let mut db = cluster.connect_to(name);
    db.batch_execute(
        "CREATE EXTENSION webhook_ext;
         CREATE TABLE cliente (id serial PRIMARY KEY, nome text NOT NULL);
         CREATE TRIGGER cliente_webhook AFTER INSERT ON cliente
             FOR EACH ROW EXECUTE FUNCTION webhook_trigger('cliente');",
    )
    .unwrap();
    db.execute("SELECT webhook_create($1, $2)", &[&url, &secret])
        .unwrap();
    db
}

/// The workers running, by database (a worker still starting has no database yet); None when
/// the server could not answer (a crash restart after a SIGKILL ends every connection).
fn workers(admin: &mut Client) -> Option<BTreeMap<String, i32>> {
    let rows = admin
        .query(
            "SELECT datname::text, pid FROM pg_stat_activity \
              WHERE backend_type = 'webhook_ext worker' AND datname IS NOT NULL",
            &[],
        )
        .ok()?;
    Some(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Wait until exactly `databases` have a worker; returns their pids.
fn wait_for_workers(cluster: &Cluster, databases: &[&str]) -> BTreeMap<String, i32> {
    let expected: BTreeSet<String> = databases.iter().map(|d| d.to_string()).collect();
    wait_until(
        &format!("workers in exactly {expected:?}"),
        DEADLINE,
        || {
            let mut admin = cluster.try_connect()?;
            let running = workers(&mut admin)?;
            (running.keys().cloned().collect::<BTreeSet<_>>() == expected).then_some(running)
        },
    )
}

fn nome(request: &RecordedRequest) -> String {
    let body: serde_json::Value = serde_json::from_str(request.body_str()).unwrap();
    body["data"]["nome"].as_str().unwrap().to_string()
}

fn status_message(db: &mut Client) -> (bool, String) {
    let row = db
        .query_one("SELECT running, message FROM webhook_worker_status()", &[])
        .unwrap();
    (row.get(0), row.get(1))
}

#[test]
fn three_databases_are_each_served_by_their_own_worker_with_their_own_secrets() {
    let cluster = Cluster::start("tenants", "");
    let names = ["crm", "billing", "helpdesk"];
    let receivers: Vec<Receiver> = names
        .iter()
        .map(|_| Receiver::always(Reply::ok()))
        .collect();
    let mut dbs: Vec<Client> = names
        .iter()
        .zip(&receivers)
        .map(|(name, receiver)| {
            tenant(
                &cluster,
                name,
                &receiver.url(),
                &format!("secret-of-{name}"),
            )
        })
        .collect();
    // A fourth database without the extension, with the same table: nothing serves it, and
    // no worker stays connected to it.
    let mut admin = cluster.connect();
    admin.batch_execute("CREATE DATABASE plain").unwrap();
    cluster
        .connect_to("plain")
        .batch_execute("CREATE TABLE cliente (id serial PRIMARY KEY, nome text)")
        .unwrap();

    for (name, db) in names.iter().zip(dbs.iter_mut()) {
        for i in 0..5 {
            db.execute(
                "INSERT INTO cliente (nome) VALUES ($1)",
                &[&format!("{name}-{i}")],
            )
            .unwrap();
        }
    }
    for (name, receiver) in names.iter().zip(&receivers) {
        let got = receiver.wait_for(5, DEADLINE);
        let mut nomes: Vec<String> = got.iter().map(nome).collect();
        nomes.sort();
        let expected: Vec<String> = (0..5).map(|i| format!("{name}-{i}")).collect();
        assert_eq!(
            nomes, expected,
            "{name}'s partner gets exactly its own events"
        );
        for request in &got {
            let signature = request.header("X-Webhook-Signature").unwrap();
            assert!(
                verify_hex(&format!("secret-of-{name}"), &request.body, signature),
                "{name}'s events are signed with {name}'s secret"
            );
        }
    }

    // One worker per database with the extension; none in `plain` or `postgres`.
    let pids = wait_for_workers(&cluster, &names);
    assert_eq!(pids.values().collect::<HashSet<_>>().len(), 3);
    for (name, db) in names.iter().zip(dbs.iter_mut()) {
        let row = db
            .query_one(
                "SELECT running, pid, database FROM webhook_worker_status()",
                &[],
            )
            .unwrap();
        assert!(row.get::<_, bool>(0));
        assert_eq!(row.get::<_, Option<i32>>(1), Some(pids[*name]));
        assert_eq!(row.get::<_, String>(2), *name);
    }
    // Each worker takes an equal share of webhook.concurrency (32 by default).
    let share: i64 = dbs[0]
        .query_one(
            "SELECT (webhook_worker_settings()->>'concurrency_share')::bigint",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(share, 32 / 3);

    // webhook_cluster_status() lists every database served, from any of them.
    let rows = dbs[1]
        .query(
            "SELECT database::text, pid, running, in_flight FROM webhook_cluster_status()",
            &[],
        )
        .unwrap();
    let listed: BTreeMap<String, Option<i32>> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let expected: BTreeMap<String, Option<i32>> = pids
        .iter()
        .map(|(name, pid)| (name.clone(), Some(*pid)))
        .collect();
    assert_eq!(listed, expected);
    assert!(rows.iter().all(|r| r.get::<_, bool>(2)));
    // Counted by each worker at its maintenance (every 5 s): nothing is left to send.
    wait_until("every queue depth counted as 0", DEADLINE, || {
        let depths: Vec<Option<i64>> = dbs[2]
            .query("SELECT queue_depth FROM webhook_cluster_status()", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        (depths.len() == 3 && depths.iter().all(|d| *d == Some(0))).then_some(())
    });
    // Not for PUBLIC.
    let mut crm = cluster.connect_to("crm");
    crm.batch_execute("CREATE ROLE nobody LOGIN").unwrap();
    crm.batch_execute("SET ROLE nobody").unwrap();
    let err = crm
        .query("SELECT * FROM webhook_cluster_status()", &[])
        .expect_err("not granted");
    assert_eq!(err.code().map(|c| c.code()), Some("42501"));
}

#[test]
fn a_database_that_gets_the_extension_while_the_cluster_runs_is_served_within_10_s() {
    let cluster = Cluster::start("later", "");
    let first = Receiver::always(Reply::ok());
    let mut crm = tenant(&cluster, "crm", &first.url(), "k1");
    wait_for_workers(&cluster, &["crm"]);

    // A database the launcher has seen (and left alone: no extension) gets it later.
    let mut admin = cluster.connect();
    admin.batch_execute("CREATE DATABASE shop").unwrap();
    let mut shop = cluster.connect_to("shop");
    wait_until("the launcher to have looked at shop", DEADLINE, || {
        // Its look is over when no worker of shop is connected.
        (!workers(&mut admin)?.contains_key("shop")).then_some(())
    });
    let (running, message) = status_message(&mut crm);
    assert!(running, "{message}");
    let created = Instant::now();
    shop.batch_execute("CREATE EXTENSION webhook_ext").unwrap();
    wait_until("a worker in shop", SERVED_WITHIN, || {
        workers(&mut admin)?.contains_key("shop").then_some(())
    });
    eprintln!("shop served {:?} after CREATE EXTENSION", created.elapsed());
    let second = Receiver::always(Reply::ok());
    shop.execute("SELECT webhook_create($1, 'k2')", &[&second.url()])
        .unwrap();
    shop.execute("SELECT webhook_emit('pedido.criado', '{\"n\": 1}')", &[])
        .unwrap();
    assert_eq!(second.wait_for(1, DEADLINE).len(), 1);
    let (running, message) = status_message(&mut shop);
    assert!(running, "{message}");
    assert!(message.contains("shop"), "{message}");

    // A database created from a template that has the extension (no CREATE EXTENSION runs)
    // is served too: the launcher looks at every new database.
    admin
        .batch_execute("ALTER DATABASE shop WITH IS_TEMPLATE true")
        .unwrap();
    drop(shop);
    // A template is never served (a connection to it would make CREATE DATABASE fail).
    wait_until(
        "shop's worker to stop once it is a template",
        DEADLINE,
        || (!workers(&mut admin)?.contains_key("shop")).then_some(()),
    );
    // (Its worker was terminated to let CREATE DATABASE ... TEMPLATE shop through.)
    admin
        .batch_execute("CREATE DATABASE shop2 TEMPLATE shop")
        .unwrap();
    wait_until("a worker in shop2", SERVED_WITHIN, || {
        workers(&mut admin)?.contains_key("shop2").then_some(())
    });
    let mut shop2 = cluster.connect_to("shop2");
    shop2
        .execute("SELECT webhook_emit('pedido.criado', '{\"n\": 2}')", &[])
        .unwrap();
    assert_eq!(second.wait_for(2, DEADLINE).len(), 2);
    // crm's worker was never disturbed.
    crm.execute("SELECT webhook_emit('cliente.criado', '{}')", &[])
        .unwrap();
    assert_eq!(first.wait_for(1, DEADLINE).len(), 1);
}

#[test]
fn drop_extension_and_drop_database_stop_that_worker_and_never_block() {
    let cluster = Cluster::start("dropping", "");
    let receiver = Receiver::always(Reply::ok());
    let mut keep = tenant(&cluster, "keep", &receiver.url(), "k");
    let other = Receiver::always(Reply::ok());
    drop(tenant(&cluster, "going", &other.url(), "k"));
    drop(tenant(&cluster, "forced", &other.url(), "k"));
    let before = wait_for_workers(&cluster, &["keep", "going", "forced"]);

    // DROP EXTENSION: the worker stops at once, so a plain DROP DATABASE does not wait for
    // it (Postgres would refuse after 5 s with 55006 while a worker is connected).
    let mut going = cluster.connect_to("going");
    going
        .batch_execute("DROP EXTENSION webhook_ext CASCADE")
        .unwrap();
    drop(going);
    let mut admin = cluster.connect();
    wait_until("going's worker to stop", SERVED_WITHIN, || {
        (!workers(&mut admin)?.contains_key("going")).then_some(())
    });
    admin.batch_execute("DROP DATABASE going").unwrap();

    // DROP DATABASE ... WITH (FORCE) with the extension installed: its worker is terminated
    // and not started again.
    let started = Instant::now();
    admin
        .batch_execute("DROP DATABASE forced WITH (FORCE)")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // The remaining database keeps its worker (same pid) and delivers.
    let after = wait_for_workers(&cluster, &["keep"]);
    assert_eq!(after["keep"], before["keep"]);
    keep.execute("INSERT INTO cliente (nome) VALUES ('ainda aqui')", &[])
        .unwrap();
    assert_eq!(nome(&receiver.wait_for(1, DEADLINE)[0]), "ainda aqui");
    let listed: Vec<String> = keep
        .query("SELECT database::text FROM webhook_cluster_status()", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(listed, vec!["keep".to_string()]);

    // A database of the same name, with the extension again, is served again.
    admin.batch_execute("CREATE DATABASE forced").unwrap();
    let mut forced = cluster.connect_to("forced");
    forced
        .batch_execute("CREATE EXTENSION webhook_ext")
        .unwrap();
    forced
        .execute("SELECT webhook_create($1, 'k')", &[&other.url()])
        .unwrap();
    forced
        .execute("SELECT webhook_emit('de.volta', '{}')", &[])
        .unwrap();
    assert_eq!(other.wait_for(1, DEADLINE).len(), 1);
    assert!(!cluster.server_log().contains("PANIC"));
}

#[test]
fn one_databases_worker_stopping_or_crashing_loses_nothing_and_the_others_keep_delivering() {
    let cluster = Cluster::start("onecrash", "");
    let a_receiver = Receiver::start(|_, index| if index == 0 { Reply::Hang } else { Reply::ok() });
    let b_receiver = Receiver::always(Reply::ok());
    let mut a = tenant(&cluster, "tenant_a", &a_receiver.url(), "ka");
    let mut b = tenant(&cluster, "tenant_b", &b_receiver.url(), "kb");
    let pids = wait_for_workers(&cluster, &["tenant_a", "tenant_b"]);

    // pg_terminate_backend (SIGTERM) of a's worker: the launcher starts another for a; b's
    // worker is the same process throughout.
    a.execute("INSERT INTO cliente (nome) VALUES ('a-0')", &[])
        .unwrap();
    a_receiver.wait_for(1, DEADLINE); // in flight, hanging
    let mut admin = cluster.connect();
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pids["tenant_a"]])
        .unwrap();
    for i in 0..5 {
        b.execute(
            "INSERT INTO cliente (nome) VALUES ($1)",
            &[&format!("b-{i}")],
        )
        .unwrap();
    }
    assert_eq!(b_receiver.wait_for(5, DEADLINE).len(), 5);
    let restarted = wait_until("a new worker in tenant_a", DEADLINE, || {
        let running = workers(&mut admin)?;
        let new = running
            .get("tenant_a")
            .is_some_and(|&pid| pid != pids["tenant_a"]);
        new.then_some(running)
    });
    assert_eq!(
        restarted["tenant_b"], pids["tenant_b"],
        "b's worker never stopped"
    );
    // What a's worker had in flight is sent again by its successor.
    let got = a_receiver.wait_for(2, DEADLINE);
    assert_eq!(got[0].header("X-Event-ID"), got[1].header("X-Event-ID"));

    // kill -9 of a's worker: Postgres resets the whole cluster (every backend), as for any
    // process that dies without cleaning up. Every committed event of both is still delivered.
    a.execute("INSERT INTO cliente (nome) VALUES ('a-1')", &[])
        .unwrap();
    assert_eq!(a_receiver.wait_for(3, DEADLINE).len(), 3);
    let killed = std::process::Command::new("kill")
        .args(["-9", &restarted["tenant_a"].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Both workers are new once the reset is over (b's too): until then the old ones may
    // still be listed, and a connection may still be ended by the reset.
    wait_until(
        "both workers started again after the reset",
        DEADLINE,
        || {
            let mut admin = cluster.try_connect()?;
            let running = workers(&mut admin)?;
            (running.len() == 2
                && running
                    .get("tenant_a")
                    .is_some_and(|&pid| pid != restarted["tenant_a"])
                && running
                    .get("tenant_b")
                    .is_some_and(|&pid| pid != restarted["tenant_b"]))
            .then_some(())
        },
    );
    let mut a = cluster.connect_to("tenant_a");
    let mut b = cluster.connect_to("tenant_b");
    a.execute("INSERT INTO cliente (nome) VALUES ('a-2')", &[])
        .unwrap();
    b.execute("INSERT INTO cliente (nome) VALUES ('b-5')", &[])
        .unwrap();
    // At least once: what was in flight at the kill, or recorded by the worker's commits the
    // crash undid (they are asynchronous), is sent again.
    let distinct =
        |receiver: &Receiver| -> HashSet<String> { receiver.requests().iter().map(nome).collect() };
    let a_expected: HashSet<String> = ["a-0", "a-1", "a-2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    wait_until("every event of tenant_a", DEADLINE, || {
        (distinct(&a_receiver) == a_expected).then_some(())
    });
    let b_expected: HashSet<String> = (0..6).map(|i| format!("b-{i}")).collect();
    wait_until("every event of tenant_b", DEADLINE, || {
        (distinct(&b_receiver) == b_expected).then_some(())
    });
    for db in [&mut a, &mut b] {
        wait_until("every delivery succeeded", DEADLINE, || {
            (query_i64(
                db,
                "SELECT count(*) FROM webhook_delivery WHERE status <> 'succeeded'",
            ) == 0)
                .then_some(())
        });
    }
    assert!(!cluster.server_log().contains("PANIC"));
}

#[test]
fn committed_events_of_several_databases_survive_an_immediate_stop_under_load() {
    let cluster = Cluster::start("crashmany", "");
    let names = ["load_a", "load_b", "load_c"];
    let receivers: Vec<Receiver> = names
        .iter()
        .map(|_| Receiver::always(Reply::ok()))
        .collect();
    for (name, receiver) in names.iter().zip(&receivers) {
        tenant(&cluster, name, &receiver.url(), "k");
    }
    wait_for_workers(&cluster, &names);

    // One writer per database; an insert whose COMMIT got no answer is "in doubt".
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let committed: Vec<Arc<Mutex<HashSet<String>>>> =
        names.iter().map(|_| Arc::default()).collect();
    let in_doubt: Vec<Arc<Mutex<HashSet<String>>>> = names.iter().map(|_| Arc::default()).collect();
    let writers: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (stop, written) = (stop.clone(), written.clone());
            let (committed, in_doubt) = (committed[i].clone(), in_doubt[i].clone());
            let mut db = cluster.connect_to(name);
            let name = name.to_string();
            thread::spawn(move || {
                for n in 0..5_000 {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let nome = format!("{name}-{n}");
                    match db.execute("INSERT INTO cliente (nome) VALUES ($1)", &[&nome]) {
                        Ok(_) => committed.lock().unwrap().insert(nome),
                        Err(_) => {
                            in_doubt.lock().unwrap().insert(nome);
                            return;
                        }
                    };
                    written.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    cluster.stop_immediately_under_load(&written, 300, 900, &stop, writers);

    for (i, name) in names.iter().enumerate() {
        wait_until(&format!("{name}'s queue to drain"), DEADLINE, || {
            let mut db = cluster.connect_to(name);
            (query_i64(
                &mut db,
                "SELECT count(*) FROM webhook_delivery WHERE status IN ('pending', 'delivering')",
            ) == 0)
                .then_some(())
        });
        let received: HashSet<String> = receivers[i].requests().iter().map(nome).collect();
        let committed = committed[i].lock().unwrap().clone();
        let in_doubt = in_doubt[i].lock().unwrap().clone();
        let missing: Vec<_> = committed.difference(&received).collect();
        assert!(
            missing.is_empty(),
            "{name}: {} committed events never arrived, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        let foreign: Vec<_> = received
            .iter()
            .filter(|n| !committed.contains(*n) && !in_doubt.contains(*n))
            .collect();
        assert!(
            foreign.is_empty(),
            "{name} received events it never wrote: {foreign:?}"
        );
        eprintln!("{name}: {} committed, all delivered", committed.len());
    }
}

#[test]
fn webhook_databases_lists_the_databases_served_and_the_others_say_which_setting_to_change() {
    let cluster = Cluster::start("listed", "webhook.databases = 'crm, billing'");
    let receiver = Receiver::always(Reply::ok());
    let mut crm = tenant(&cluster, "crm", &receiver.url(), "k");
    let mut billing = tenant(&cluster, "billing", &receiver.url(), "k");
    let mut other = tenant(&cluster, "other", &receiver.url(), "k");
    wait_for_workers(&cluster, &["crm", "billing"]);
    assert!(status_message(&mut crm).0);
    assert!(status_message(&mut billing).0);
    let (running, message) = status_message(&mut other);
    assert!(!running);
    assert!(
        message.contains("not served") && message.contains("webhook.databases = 'crm, billing'"),
        "{message}"
    );
    other
        .execute("SELECT webhook_emit('fica.na.fila', '{}')", &[])
        .unwrap();
    crm.execute("SELECT webhook_emit('vai', '{}')", &[])
        .unwrap();
    let got = receiver.wait_for(1, DEADLINE);
    assert_eq!(got[0].header("X-Event-Type"), Some("vai"));
    assert_eq!(
        query_i64(
            &mut other,
            "SELECT queue_depth FROM webhook_worker_status()"
        ),
        1,
        "queued, not sent"
    );
}

#[test]
fn an_explicit_webhook_database_keeps_meaning_that_one_database() {
    // An installation from before 0.5.0: its postgresql.conf names the one database served.
    let cluster = Cluster::start("legacy", "webhook.database = 'crm'");
    let receiver = Receiver::always(Reply::ok());
    let mut crm = tenant(&cluster, "crm", &receiver.url(), "k");
    let mut postgres = cluster.connect();
    postgres
        .batch_execute("CREATE EXTENSION webhook_ext")
        .unwrap();
    wait_for_workers(&cluster, &["crm"]);
    let (running, message) = status_message(&mut postgres);
    assert!(!running);
    assert!(message.contains("webhook.database = 'crm'"), "{message}");
    crm.execute("SELECT webhook_emit('ok', '{}')", &[]).unwrap();
    assert_eq!(receiver.wait_for(1, DEADLINE).len(), 1);
    // webhook.databases set too wins.
    drop(cluster);
    let cluster = Cluster::start(
        "legacy2",
        "webhook.database = 'crm'\nwebhook.databases = '*'",
    );
    let receiver = Receiver::always(Reply::ok());
    drop(tenant(&cluster, "crm", &receiver.url(), "k"));
    drop(tenant(&cluster, "billing", &receiver.url(), "k"));
    wait_for_workers(&cluster, &["crm", "billing"]);
}

#[test]
fn with_no_background_worker_slot_free_the_database_says_so_and_is_served_once_one_frees() {
    // 4 slots: the logical replication launcher, webhook_ext's launcher, two workers.
    let cluster = Cluster::start("noslot", "max_worker_processes = 4");
    let receiver = Receiver::always(Reply::ok());
    let names = ["t1", "t2", "t3"];
    let mut dbs: Vec<Client> = names
        .iter()
        .map(|name| tenant(&cluster, name, &receiver.url(), "k"))
        .collect();
    let waiting = wait_until("one database to wait for a worker slot", DEADLINE, || {
        let mut waiting = None;
        let mut running = 0;
        for (i, db) in dbs.iter_mut().enumerate() {
            let (is_running, message) = status_message(db);
            if is_running {
                running += 1;
            } else if message.contains("max_worker_processes") {
                waiting = Some(i);
            }
        }
        waiting.filter(|_| running == 2)
    });
    let (_, message) = status_message(&mut dbs[waiting]);
    assert!(
        message.contains("raise max_worker_processes (now 4)"),
        "{message}"
    );
    let listed = dbs[waiting]
        .query_one(
            "SELECT running, last_error FROM webhook_cluster_status() WHERE database = current_database()",
            &[],
        )
        .unwrap();
    assert!(!listed.get::<_, bool>(0));
    assert!(listed.get::<_, String>(1).contains("max_worker_processes"));
    // Its events wait; the cluster is fine.
    dbs[waiting]
        .execute("SELECT webhook_emit('espera', '{}')", &[])
        .unwrap();

    // A served database drops the extension: its slot frees, and the waiting one is served.
    let served = (0..3).find(|&i| i != waiting).unwrap();
    dbs[served]
        .batch_execute("DROP EXTENSION webhook_ext CASCADE")
        .unwrap();
    let got = receiver.wait_for(1, DEADLINE);
    assert_eq!(got[0].header("X-Event-Type"), Some("espera"));
    assert!(status_message(&mut dbs[waiting]).0);
    assert!(!cluster.server_log().contains("PANIC"));
}

#[test]
fn webhook_concurrency_is_shared_by_the_databases_served_and_a_busy_one_cannot_starve_a_quiet_one()
{
    let cluster = Cluster::start("shared", "webhook.concurrency = 4");
    let share = |db: &mut Client| -> Option<i64> {
        db.query_one(
            "SELECT (webhook_worker_settings()->>'concurrency_share')::bigint",
            &[],
        )
        .unwrap()
        .get(0)
    };
    // The busy database's partner never answers: everything it queues stays in flight.
    let hanging = Receiver::always(Reply::Hang);
    let mut busy = tenant(&cluster, "busy", &hanging.url(), "k");
    wait_until("busy's worker to take the whole budget", DEADLINE, || {
        (share(&mut busy) == Some(4)).then_some(())
    });
    let quick = Receiver::always(Reply::ok());
    let mut quiet = tenant(&cluster, "quiet", &quick.url(), "k");
    // Two databases: 2 each, in both workers.
    wait_until("the budget to be split", DEADLINE, || {
        (share(&mut busy) == Some(2) && share(&mut quiet) == Some(2)).then_some(())
    });
    for i in 0..50 {
        busy.execute(
            "INSERT INTO cliente (nome) VALUES ($1)",
            &[&format!("busy-{i}")],
        )
        .unwrap();
    }
    hanging.wait_for(1, DEADLINE);
    for i in 0..5 {
        quiet
            .execute(
                "INSERT INTO cliente (nome) VALUES ($1)",
                &[&format!("quiet-{i}")],
            )
            .unwrap();
    }
    // The quiet database delivers while the busy one's share hangs.
    assert_eq!(quick.wait_for(5, DEADLINE).len(), 5);
    // The quiet database goes: busy gets the whole budget back.
    quiet
        .batch_execute("DROP EXTENSION webhook_ext CASCADE")
        .unwrap();
    wait_until("the budget to come back to busy", DEADLINE, || {
        (share(&mut busy) == Some(4)).then_some(())
    });
}

#[test]
fn a_launcher_that_restarts_finds_the_running_workers_and_starts_no_second_one() {
    let cluster = Cluster::start("relaunch", "");
    let receiver = Receiver::always(Reply::ok());
    let mut crm = tenant(&cluster, "crm", &receiver.url(), "k");
    let before = wait_for_workers(&cluster, &["crm"]);
    let mut admin = cluster.connect();
    let launcher = |admin: &mut Client| -> Option<i32> {
        admin
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'webhook_ext launcher'",
                &[],
            )
            .unwrap()
            .map(|r| r.get(0))
    };
    let old = launcher(&mut admin).expect("the launcher runs");
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&old])
        .unwrap();
    // The postmaster starts it again (5 s); crm's worker ran on meanwhile.
    wait_until("a new launcher", DEADLINE, || {
        launcher(&mut admin).filter(|&pid| pid != old)
    });
    crm.execute("INSERT INTO cliente (nome) VALUES ('durante')", &[])
        .unwrap();
    assert_eq!(receiver.wait_for(1, DEADLINE).len(), 1);
    // The new launcher serves new databases, and crm keeps its one worker.
    let other = Receiver::always(Reply::ok());
    let mut billing = tenant(&cluster, "billing", &other.url(), "k");
    billing
        .execute("INSERT INTO cliente (nome) VALUES ('novo')", &[])
        .unwrap();
    assert_eq!(other.wait_for(1, DEADLINE).len(), 1);
    let after = wait_for_workers(&cluster, &["crm", "billing"]);
    assert_eq!(after["crm"], before["crm"]);
}

#[test]
fn a_bad_webhook_databases_value_is_refused_naming_the_problem() {
    let cluster = Cluster::start("badlist", "");
    let mut admin = cluster.connect();
    for (value, says) in [
        ("crm,,billing", "empty database name"),
        ("", "empty"),
        ("crm, *", "'*'"),
    ] {
        let error = admin
            .batch_execute(&format!("ALTER SYSTEM SET webhook.databases = '{value}'"))
            .expect_err("refused");
        assert_eq!(error.code().map(|c| c.code()), Some("22023"));
        let detail = error
            .as_db_error()
            .and_then(|e| e.detail())
            .unwrap_or_default()
            .to_string();
        assert!(detail.contains(says), "{value:?}: {detail}");
    }
    // Nothing was written: the cluster restarts with the default.
    cluster.pg_ctl_stop("fast");
    cluster.pg_ctl_start();
    let mut admin = cluster.connect();
    assert_eq!(query_string(&mut admin, "SHOW webhook.databases"), "*");
}
