//! Per-partner control end to end (SPEC §9): filters, columns chosen at the source, ordered
//! delivery per entity, rate limits, retry rules, operational notifications and cancelling,
//! against a real cluster with the worker preloaded and real receivers on 127.0.0.1.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use postgres::fallible_iterator::FallibleIterator;
use serde_json::Value;
use webhook_ext_tests::*;

const DEADLINE: Duration = Duration::from_secs(30);

fn data(request: &RecordedRequest) -> Value {
    let body: Value = serde_json::from_str(request.body_str()).unwrap();
    body["data"].clone()
}

fn wait_all_succeeded(db: &mut Client, webhook_id: i64, expected: i64) {
    wait_until(
        &format!("{expected} deliveries of webhook {webhook_id} to succeed"),
        DEADLINE,
        || {
            let done = query_i64(
                db,
                &format!(
                    "SELECT count(*) FROM webhook_delivery WHERE webhook_id = {webhook_id} AND status = 'succeeded'"
                ),
            );
            (done == expected).then_some(())
        },
    );
}

/// The "how it is checked": a multi-tenant `cliente` table, two partners each
/// filtered to its tenant (one ordered, one limited to 5/s), a burst of interleaved inserts
/// and updates, and a third partner whose 410 shows on LISTEN webhook_ext and at an
/// operational webhook.
#[test]
fn two_partners_get_their_tenant_without_personal_data_in_order_and_at_their_pace() {
    let mut db = connect_shared();
    let table = unique("cliente");
    // Chosen columns are checked when the trigger is created, and again when it first fires.
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id serial PRIMARY KEY, tenant_id int NOT NULL, nome text,
                               cpf text, senha_hash text, versao int NOT NULL DEFAULT 1);
         SELECT webhook_trigger_check('{table}', 'exclude=cpf,senha_hash');
         CREATE TRIGGER {table}_webhook AFTER INSERT OR UPDATE OR DELETE ON {table} FOR EACH ROW
           EXECUTE FUNCTION webhook_trigger('{table}', 'exclude=cpf,senha_hash');"
    ))
    .unwrap();

    // Partner 1 (tenant 1, ordered): the first attempt of the first client's version 2 fails,
    // so its retry (3 s later) must hold back that client's versions 3 and 4, and nothing else.
    let first_client = Arc::new(Mutex::new(None::<i64>));
    let failed_once = Arc::new(Mutex::new(false));
    let (first, failed) = (first_client.clone(), failed_once.clone());
    let ordered = Receiver::start(move |request, _| {
        let d = data(request);
        let is_first = Some(d["id"].as_i64().unwrap()) == *first.lock().unwrap();
        let mut failed = failed.lock().unwrap();
        if is_first && d["versao"] == 2 && !*failed {
            *failed = true;
            return Reply::status(500);
        }
        Reply::ok()
    });
    let paced = Receiver::always(Reply::ok());
    let ordered_id = query_i64(
        &mut db,
        &format!(
            "SELECT id FROM webhook_create('{}', events => ARRAY['{table}.*'],
                    filter => '{{\"tenant_id\": 1}}', ordered => true)",
            ordered.url()
        ),
    );
    db.execute(
        "UPDATE webhook SET retry_schedule = '{0s,3s,3s}' WHERE id = $1",
        &[&ordered_id],
    )
    .unwrap();
    let paced_id = query_i64(
        &mut db,
        &format!(
            "SELECT id FROM webhook_create('{}', events => ARRAY['{table}.*'],
                    filter => '{{\"tenant_id\": 2}}', max_per_second => 5)",
            paced.url()
        ),
    );

    // The burst: three clients per tenant, interleaved; then three rounds of updates, each
    // its own transaction, and an update of personal data only (which sends nothing).
    let mut clients: Vec<(i64, i32)> = Vec::new();
    for n in 0..3 {
        for tenant in [1, 2] {
            let id: i32 = db
                .query_one(
                    &format!(
                        "INSERT INTO {table} (tenant_id, nome, cpf, senha_hash)
                         VALUES ($1, $2, '123.456.789-00', 'bcrypt$x') RETURNING id"
                    ),
                    &[&tenant, &format!("cliente {n} do tenant {tenant}")],
                )
                .unwrap()
                .get(0);
            if tenant == 1 && n == 0 {
                *first_client.lock().unwrap() = Some(i64::from(id));
            }
            clients.push((i64::from(id), tenant));
        }
    }
    for _round in 0..3 {
        for &(id, _) in &clients {
            db.execute(
                &format!("UPDATE {table} SET versao = versao + 1 WHERE id = $1"),
                &[&(id as i32)],
            )
            .unwrap();
        }
    }
    db.execute(
        &format!("UPDATE {table} SET cpf = '000.000.000-00', senha_hash = 'bcrypt$y'"),
        &[],
    )
    .unwrap();

    wait_all_succeeded(&mut db, ordered_id, 12);
    wait_all_succeeded(&mut db, paced_id, 12);

    // Only their tenant's rows, without cpf or senha_hash.
    for (receiver, tenant) in [(&ordered, 1), (&paced, 2)] {
        for request in receiver.requests() {
            let body = request.body_str();
            assert_eq!(data(&request)["tenant_id"], tenant, "{body}");
            assert!(
                !body.contains("cpf") && !body.contains("senha_hash") && !body.contains("123.456"),
                "personal data sent: {body}"
            );
        }
    }
    assert_eq!(paced.count(), 12);
    // The delivery's event_key is the client's id.
    assert_eq!(
        query_i64(
            &mut db,
            &format!(
                "SELECT count(*) FROM webhook_delivery
                  WHERE webhook_id = {ordered_id} AND event_key = (body::jsonb -> 'data' ->> 'id')"
            )
        ),
        12
    );

    // Ordered: per client, versions arrive in commit order (a retry repeats its version and
    // comes before the next one); the failed one was retried.
    let requests = ordered.requests();
    assert_eq!(requests.len(), 13, "12 deliveries and one retry");
    let mut per_client: HashMap<i64, Vec<i64>> = HashMap::new();
    for request in &requests {
        let d = data(request);
        per_client
            .entry(d["id"].as_i64().unwrap())
            .or_default()
            .push(d["versao"].as_i64().unwrap());
    }
    let first = first_client.lock().unwrap().unwrap();
    for (client, versions) in &per_client {
        let expected: Vec<i64> = if *client == first {
            vec![1, 2, 2, 3, 4]
        } else {
            vec![1, 2, 3, 4]
        };
        assert_eq!(versions, &expected, "client {client} received out of order");
    }
    // A retry wait holds only its key: the other clients' last versions arrived while the
    // first client's version 2 waited for its retry.
    let received_at = |client: i64, version: i64, nth: usize| -> SystemTime {
        requests
            .iter()
            .filter(|r| {
                let d = data(r);
                d["id"] == client && d["versao"] == version
            })
            .nth(nth)
            .unwrap()
            .received_at
    };
    let retried_at = received_at(first, 2, 1);
    for (client, _) in per_client.iter().filter(|(c, _)| **c != first) {
        assert!(
            received_at(*client, 4, 0) < retried_at,
            "client {client} waited for another client's retry"
        );
    }

    // Paced: 12 requests at 5/s with a burst of one take at least (12 - 1) / 5 s; one token
    // of slack keeps scheduling jitter from failing it.
    let mut times: Vec<SystemTime> = paced.requests().iter().map(|r| r.received_at).collect();
    times.sort();
    let span = times[11].duration_since(times[0]).unwrap();
    assert!(
        span >= Duration::from_secs_f64((12.0 - 2.0) / 5.0),
        "12 requests in {span:?}: faster than 5/s"
    );
    // Pacing one endpoint holds no other: the ordered partner's other clients were served
    // before the paced partner's backlog was through.
    for request in &requests {
        let d = data(request);
        if d["id"] != first {
            assert!(
                request.received_at < times[11],
                "client {} waited for the paced partner",
                d["id"]
            );
        }
    }
}

#[test]
fn a_webhook_disabled_by_410_is_announced_on_listen_and_to_an_operational_webhook() {
    let mut db = connect_shared();
    let mut listener = connect_shared();
    listener.batch_execute("LISTEN webhook_ext").unwrap();
    let event = unique("conta");
    let gone = Receiver::always(Reply::status(410));
    let operations = Receiver::always(Reply::ok());
    let gone_id = query_i64(
        &mut db,
        &format!(
            "SELECT id FROM webhook_create('{}', events => ARRAY['{event}.*'])",
            gone.url()
        ),
    );
    // Only this test's webhook's events, with a filter on the operational data.
    let row = db
        .query_one(
            &format!(
                "SELECT id, secret FROM webhook_create('{}', events => ARRAY['webhook_ext.*'],
                        filter => jsonb_build_object('webhook_id', {gone_id}::bigint))",
                operations.url()
            ),
            &[],
        )
        .unwrap();
    let operations_secret: String = row.get(1);
    // A '*' subscriber gets the application's events, not the operational ones.
    let everything = Receiver::always(Reply::ok());
    let everything_id = query_i64(
        &mut db,
        &format!("SELECT id FROM webhook_create('{}')", everything.url()),
    );

    db.execute(
        &format!("SELECT webhook_emit('{event}.aberta', '{{\"n\": 1}}')"),
        &[],
    )
    .unwrap();

    let mut seen = Vec::new();
    let mut notifications = listener.notifications();
    let mut iter = notifications.timeout_iter(DEADLINE);
    while seen.len() < 2 {
        let note = iter
            .next()
            .unwrap()
            .expect("timed out waiting for NOTIFY webhook_ext");
        let payload: Value = serde_json::from_str(note.payload()).unwrap();
        if payload["webhook_id"] == gone_id {
            seen.push(payload);
        }
    }
    drop(iter);
    let types: HashSet<&str> = seen.iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        HashSet::from(["webhook.disabled", "delivery.failed"])
    );
    let disabled = seen
        .iter()
        .find(|p| p["type"] == "webhook.disabled")
        .unwrap();
    assert_eq!(disabled["reason"], "endpoint answered 410 Gone");
    let failed = seen
        .iter()
        .find(|p| p["type"] == "delivery.failed")
        .unwrap();
    assert_eq!(failed["event"], format!("{event}.aberta"));

    let received = operations.wait_for(2, DEADLINE);
    let mut events: Vec<String> = Vec::new();
    for request in &received {
        let body: Value = serde_json::from_str(request.body_str()).unwrap();
        assert!(verify_hex(
            &operations_secret,
            &request.body,
            request.header("X-Webhook-Signature").unwrap()
        ));
        assert_eq!(body["data"]["webhook_id"], gone_id);
        events.push(body["event"].as_str().unwrap().to_string());
    }
    events.sort();
    assert_eq!(
        events,
        [
            "webhook_ext.delivery.failed",
            "webhook_ext.webhook.disabled"
        ]
    );
    assert!(!query_string(
        &mut db,
        &format!("SELECT active::text FROM webhook WHERE id = {gone_id}")
    )
    .starts_with('t'));
    // The '*' subscriber got the application event only.
    everything.wait_for(1, DEADLINE);
    assert_eq!(
        query_i64(
            &mut db,
            &format!(
                "SELECT count(*) FROM webhook_delivery WHERE webhook_id = {everything_id} AND event LIKE 'webhook_ext.%'"
            )
        ),
        0
    );
}

#[test]
fn no_retry_statuses_fail_a_delivery_at_once_and_other_statuses_still_retry() {
    let mut db = connect_shared();
    let event = unique("nota");
    let refuses = Receiver::always(Reply::status(422));
    let unauthorized = Receiver::always(Reply::status(401));
    let mut ids = Vec::new();
    for receiver in [&refuses, &unauthorized] {
        let webhook_id = query_i64(
            &mut db,
            &format!(
                "SELECT id FROM webhook_create('{}', events => ARRAY['{event}.*'],
                        no_retry_statuses => '{{422}}')",
                receiver.url()
            ),
        );
        ids.push(webhook_id);
    }
    db.execute(
        &format!("SELECT webhook_emit('{event}.emitida', '{{}}')"),
        &[],
    )
    .unwrap();
    let delivery = |db: &mut Client, webhook_id: i64| {
        query_i64(
            db,
            &format!("SELECT id FROM webhook_delivery WHERE webhook_id = {webhook_id}"),
        )
    };
    let refused = delivery(&mut db, ids[0]);
    wait_for_status(&mut db, refused, "failed", DEADLINE);
    assert_eq!(
        query_i64(
            &mut db,
            &format!("SELECT attempts::bigint FROM webhook_delivery WHERE id = {refused}")
        ),
        1
    );
    // 401 is not listed: retried on the schedule (next in 1 min), as without rules.
    unauthorized.wait_answered(1, DEADLINE);
    let pending = delivery(&mut db, ids[1]);
    wait_until("the 401 to be recorded", DEADLINE, || {
        let row = db
            .query_one(
                "SELECT status, attempts FROM webhook_delivery WHERE id = $1",
                &[&pending],
            )
            .unwrap();
        (row.get::<_, i32>(1) == 1).then(|| row.get::<_, String>(0))
    });
    assert_eq!(delivery_status(&mut db, pending), "pending");
}

#[test]
fn cancel_refuses_a_delivery_in_flight_and_takes_it_once_it_waits_for_a_retry() {
    let mut db = connect_shared();
    let event = unique("boleto");
    // In flight until the test clusters' webhook.timeout (2 s), then pending for a retry.
    let hanging = Receiver::always(Reply::Hang);
    let webhook_id = query_i64(
        &mut db,
        &format!(
            "SELECT id FROM webhook_create('{}', events => ARRAY['{event}.*'])",
            hanging.url()
        ),
    );
    db.execute(
        &format!("SELECT webhook_emit('{event}.gerado', '{{}}')"),
        &[],
    )
    .unwrap();
    let id = query_i64(
        &mut db,
        &format!("SELECT id FROM webhook_delivery WHERE webhook_id = {webhook_id}"),
    );
    wait_for_status(&mut db, id, "delivering", DEADLINE);
    let error = db
        .query_one("SELECT webhook_cancel($1)", &[&id])
        .unwrap_err();
    assert_eq!(
        error.code().unwrap().code(),
        "55006",
        "{}",
        db_message(&error)
    );
    // Timed out: pending, its retry due in a minute. Cancelled, nothing more is sent.
    wait_until("the timeout to be recorded", DEADLINE, || {
        let row = db
            .query_one(
                "SELECT status, attempts FROM webhook_delivery WHERE id = $1",
                &[&id],
            )
            .unwrap();
        (row.get::<_, String>(0) == "pending" && row.get::<_, i32>(1) == 1).then_some(())
    });
    let cancelled: String = db
        .query_one("SELECT status FROM webhook_cancel($1)", &[&id])
        .unwrap()
        .get(0);
    assert_eq!(cancelled, "cancelled");
    assert_eq!(
        query_i64(
            &mut db,
            &format!("SELECT count(*) FROM webhook_delivery_due WHERE delivery_id = {id}")
        ),
        0
    );
    let error = db
        .query_one("SELECT webhook_cancel($1)", &[&id])
        .unwrap_err();
    assert_eq!(
        error.code().unwrap().code(),
        "55000",
        "{}",
        db_message(&error)
    );
}

/// "A delivery of an ordered webhook is not sent while an earlier one with its key is
/// pending" is kept in the tables: a worker restarted while a retry waits still holds the
/// later delivery back.
#[test]
fn an_ordered_key_stays_held_across_a_worker_restart() {
    // A cluster of its own: the other tests' deliveries in flight must not see the restart.
    let cluster = Cluster::start("ordered_restart", "");
    let mut db = cluster.connect();
    db.batch_execute("CREATE EXTENSION webhook_ext").unwrap();
    let event = unique("pedido");
    let calls = Arc::new(Mutex::new(0usize));
    let counter = calls.clone();
    let receiver = Receiver::start(move |_, _| {
        let mut n = counter.lock().unwrap();
        *n += 1;
        if *n == 1 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });
    let webhook_id = query_i64(
        &mut db,
        &format!(
            "SELECT id FROM webhook_create('{}', events => ARRAY['{event}.*'], ordered => true)",
            receiver.url()
        ),
    );
    db.execute(
        "UPDATE webhook SET retry_schedule = '{0s,8s}' WHERE id = $1",
        &[&webhook_id],
    )
    .unwrap();
    db.execute(
        &format!("SELECT webhook_emit('{event}.pago', '{{\"v\": 1}}', key => 'p1')"),
        &[],
    )
    .unwrap();
    receiver.wait_answered(1, DEADLINE);
    db.execute(
        &format!(
            "SELECT webhook_emit('{event}.pago', '{{\"v\": 2}}', key => 'p1'),
                    webhook_emit('{event}.pago', '{{\"v\": 9}}', key => 'other')"
        ),
        &[],
    )
    .unwrap();
    // The other key is not held back by p1's retry.
    wait_until("the other key's delivery", DEADLINE, || {
        receiver
            .requests()
            .iter()
            .any(|r| data(r)["v"] == 9)
            .then_some(())
    });
    let held = query_i64(
        &mut db,
        &format!(
            "SELECT count(*) FROM webhook_delivery_due AS due JOIN webhook_delivery AS d ON d.id = due.delivery_id
              WHERE d.webhook_id = {webhook_id} AND due.event_key = 'p1'"
        ),
    );
    assert_eq!(
        held, 2,
        "the retry and the delivery behind it wait in the due table"
    );
    let pid = worker_pid(&mut db).expect("a worker");
    db.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    wait_until("the worker to restart", DEADLINE, || {
        worker_pid(&mut db).filter(|&p| p != pid)
    });
    wait_all_succeeded(&mut db, webhook_id, 3);
    let order: Vec<Value> = receiver
        .requests()
        .iter()
        .map(|r| data(r)["v"].clone())
        .collect();
    assert_eq!(order, [1, 9, 1, 2].map(Value::from).to_vec());
}

/// An ordered webhook on `<event>.*` → `receiver` whose retry comes an hour after a failed
/// first attempt, and two deliveries with one key (`{"v": 1}`, then `{"v": 2}`).
fn ordered_webhook_with_two_deliveries(db: &mut Client, receiver: &Receiver, event: &str) -> i64 {
    let webhook_id = query_i64(
        db,
        &format!(
            "SELECT id FROM webhook_create('{}', events => ARRAY['{event}.*'], ordered => true)",
            receiver.url()
        ),
    );
    db.execute(
        "UPDATE webhook SET retry_schedule = '{0s,1h}' WHERE id = $1",
        &[&webhook_id],
    )
    .unwrap();
    for v in [1, 2] {
        db.execute(
            &format!("SELECT webhook_emit('{event}.paga', '{{\"v\": {v}}}', key => 'f1')"),
            &[],
        )
        .unwrap();
    }
    webhook_id
}

/// A worker round held between its start (where it checks whether webhooks' ordering or rate
/// limits changed) and its look for new deliveries: the round waits for a lock on the
/// delivery whose outcome it records. The cluster must be the test's own (one worker).
struct HeldRound {
    holder: Client,
    _receiver: Receiver,
}

impl HeldRound {
    fn hold(cluster: &Cluster) -> HeldRound {
        use std::sync::atomic::{AtomicBool, Ordering};
        let mut db = cluster.connect();
        // The receiver answers once the test has locked the delivery's row.
        let answer = Arc::new(AtomicBool::new(false));
        let gate = answer.clone();
        let receiver = Receiver::start(move |_, _| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !gate.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            Reply::ok()
        });
        db.batch_execute(&format!(
            "SELECT webhook_create('{}', events => ARRAY['inicio.*']);
             SELECT webhook_emit('inicio.x', '{{}}')",
            receiver.url()
        ))
        .unwrap();
        receiver.wait_for(1, DEADLINE);
        let mut holder = cluster.connect();
        holder
            .batch_execute(
                "BEGIN; SELECT 1 FROM webhook_delivery_store WHERE event = 'inicio.x' FOR UPDATE",
            )
            .unwrap();
        answer.store(true, Ordering::SeqCst);
        let worker = worker_pid(&mut db).expect("a worker");
        wait_until("the worker's round to wait for the lock", DEADLINE, || {
            let waiting: Option<String> = db
                .query_one(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1",
                    &[&worker],
                )
                .unwrap()
                .get(0);
            (waiting.as_deref() == Some("Lock")).then_some(())
        });
        HeldRound {
            holder,
            _receiver: receiver,
        }
    }

    fn release(mut self) {
        self.holder.batch_execute("ROLLBACK").unwrap();
    }
}

/// A webhook made ordered while the worker is in the middle of a round, with its first two
/// deliveries (one key) committed before that round looks for new deliveries: the round must
/// see the webhook as ordered, and send one of the two at a time.
#[test]
fn a_webhook_made_ordered_during_a_round_orders_the_deliveries_that_round_finds() {
    // A cluster of its own: the worker must be in the round this test holds, not another.
    let cluster = Cluster::start("ordered_mid_round", "webhook.timeout = '30s'");
    let mut db = cluster.connect();
    db.batch_execute("CREATE EXTENSION webhook_ext").unwrap();
    let round = HeldRound::hold(&cluster);

    // While that round waits: a new ordered webhook and two deliveries with one key.
    let receiver = Receiver::always(Reply::status(500));
    let webhook_id = ordered_webhook_with_two_deliveries(&mut db, &receiver, "fatura");
    round.release();

    // The second is either sent (attempted) or held back behind the first (due at the end
    // of time, until the first ends): wait for the worker to decide, then look.
    let second = query_i64(
        &mut db,
        &format!("SELECT max(id) FROM webhook_delivery WHERE webhook_id = {webhook_id}"),
    );
    let held = wait_until("the worker to send or hold the second", DEADLINE, || {
        let row = db
            .query_one(
                "SELECT d.attempts > 0,
                        EXISTS (SELECT 1 FROM webhook_delivery_due AS due
                                 WHERE due.delivery_id = d.id AND due.due_at = '9999-12-31 00:00:00+00')
                   FROM webhook_delivery AS d WHERE d.id = $1",
                &[&second],
            )
            .unwrap();
        let (sent, held): (bool, bool) = (row.get(0), row.get(1));
        (sent || held).then_some(held)
    });
    receiver.wait_for(1, DEADLINE);
    let sent: Vec<Value> = receiver
        .requests()
        .iter()
        .map(|r| data(r)["v"].clone())
        .collect();
    assert!(
        held,
        "the second waits behind the first; the receiver got {sent:?}"
    );
    assert_eq!(sent, [Value::from(1)], "only the first was sent");
}

/// A webhook created with a rate limit while the worker is in the middle of a round, with
/// deliveries committed before that round looks for new ones: they go at the limit, not all
/// at once.
#[test]
fn a_rate_limit_set_during_a_round_holds_for_the_deliveries_that_round_finds() {
    let cluster = Cluster::start("limited_mid_round", "webhook.timeout = '30s'");
    let mut db = cluster.connect();
    db.batch_execute("CREATE EXTENSION webhook_ext").unwrap();
    let round = HeldRound::hold(&cluster);

    // While that round waits: a webhook limited to one request a second, and three events.
    let receiver = Receiver::always(Reply::ok());
    db.batch_execute(&format!(
        "SELECT webhook_create('{}', events => ARRAY['cobranca.*'], max_per_second => 1);
         SELECT webhook_emit('cobranca.gerada', jsonb_build_object('n', n)) FROM generate_series(1, 3) AS n",
        receiver.url()
    ))
    .unwrap();
    round.release();

    let requests = receiver.wait_for(2, DEADLINE);
    let gap = requests[1]
        .received_at
        .duration_since(requests[0].received_at)
        .unwrap_or_default();
    assert!(
        gap >= Duration::from_millis(500),
        "one a second: the second came {gap:?} after the first"
    );
}

/// A rate limit given by a prepared transaction holds from its COMMIT PREPARED (in another
/// session), for a webhook the worker already delivers to without one.
#[test]
fn a_rate_limit_set_by_a_prepared_transaction_holds_once_it_is_committed() {
    let (cluster, mut db) =
        Cluster::start_installed("limited_2pc", "max_prepared_transactions = 2");
    let receiver = Receiver::always(Reply::ok());
    let webhook_id = query_i64(
        &mut db,
        &format!(
            "SELECT id FROM webhook_create('{}', events => ARRAY['boleto.*'])",
            receiver.url()
        ),
    );
    // The worker knows the webhook, unlimited.
    db.batch_execute("SELECT webhook_emit('boleto.primeiro', '{}')")
        .unwrap();
    wait_all_succeeded(&mut db, webhook_id, 1);

    let mut preparer = cluster.connect();
    preparer
        .batch_execute(&format!(
            "BEGIN; SELECT webhook_update({webhook_id}, max_per_second => 1); \
             PREPARE TRANSACTION 'limita'"
        ))
        .unwrap();
    cluster
        .connect()
        .batch_execute("COMMIT PREPARED 'limita'")
        .unwrap();
    db.batch_execute(
        "SELECT webhook_emit('boleto.gerado', jsonb_build_object('n', n)) FROM generate_series(1, 3) AS n",
    )
    .unwrap();

    let requests = receiver.wait_for(3, DEADLINE);
    let gap = requests[2]
        .received_at
        .duration_since(requests[1].received_at)
        .unwrap_or_default();
    assert!(
        gap >= Duration::from_millis(500),
        "one a second: the second of the three came {gap:?} after the first"
    );
}

/// A manual retry that ends a delivery of an ordered webhook lets the next one with its key go.
#[test]
fn a_manual_retry_that_succeeds_releases_the_next_delivery_with_its_key() {
    let mut db = connect_shared();
    let event = unique("fatura");
    let (receiver, healthy) = recovering_receiver(500);
    // The automatic retry would come in an hour: only the manual one can end it.
    let webhook_id = ordered_webhook_with_two_deliveries(&mut db, &receiver, &event);
    let first = query_i64(
        &mut db,
        &format!("SELECT min(id) FROM webhook_delivery WHERE webhook_id = {webhook_id}"),
    );
    wait_until("the first attempt to be recorded", DEADLINE, || {
        (query_i64(
            &mut db,
            &format!("SELECT attempts::bigint FROM webhook_delivery WHERE id = {first}"),
        ) == 1)
            .then_some(())
    });
    assert_eq!(receiver.count(), 1, "the second waits behind the first");
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let status: String = db
        .query_one("SELECT status FROM webhook_retry($1)", &[&first])
        .unwrap()
        .get(0);
    assert_eq!(status, "succeeded");
    wait_all_succeeded(&mut db, webhook_id, 2);
    let order: Vec<Value> = receiver
        .requests()
        .iter()
        .map(|r| data(r)["v"].clone())
        .collect();
    assert_eq!(order, [1, 1, 2].map(Value::from).to_vec());
}
