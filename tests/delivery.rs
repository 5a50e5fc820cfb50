//! Delivery end to end: real commits in a real cluster with the worker preloaded, real HTTP
//! receivers on 127.0.0.1. Each test uses its own table, event names and receiver.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use webhook_ext_tests::*;

const DEADLINE: Duration = Duration::from_secs(20);

struct Fixture {
    db: Client,
    table: String,
    webhook_id: i64,
    secret: String,
}

/// A `<prefix>` table with the three-names trigger and a webhook on `<prefix>.*` → `url`.
fn fixture(prefix: &str, url: &str, schedule: Option<&str>) -> Fixture {
    let mut db = connect_shared();
    let table = unique(prefix);
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id serial PRIMARY KEY, nome text, status text DEFAULT 'ABERTA');
         CREATE TRIGGER {table}_webhook AFTER INSERT OR UPDATE OR DELETE ON {table} FOR EACH ROW
           EXECUTE FUNCTION webhook_trigger('{table}.criado', '{table}.atualizado', '{table}.excluido');"
    ))
    .unwrap();
    let row = db
        .query_one(
            "SELECT id, secret FROM webhook_create($1, events => ARRAY[$2])",
            &[&url, &format!("{table}.*")],
        )
        .unwrap();
    let webhook_id: i64 = row.get(0);
    if let Some(schedule) = schedule {
        set_retry_schedule(&mut db, webhook_id, schedule);
    }
    Fixture {
        db,
        table,
        webhook_id,
        secret: row.get(1),
    }
}

impl Fixture {
    fn insert(&mut self, nome: &str) -> i64 {
        self.db
            .execute(
                &format!("INSERT INTO {} (nome) VALUES ($1)", self.table),
                &[&nome],
            )
            .unwrap();
        self.last_delivery()
    }

    fn last_delivery(&mut self) -> i64 {
        self.db
            .query_one(
                "SELECT max(id) FROM webhook_delivery WHERE webhook_id = $1",
                &[&self.webhook_id],
            )
            .unwrap()
            .get(0)
    }

    fn delivery(&mut self, id: i64) -> postgres::Row {
        self.db
            .query_one(
                "SELECT status, attempts, response_status, error, event_id::text, body, event \
                   FROM webhook_delivery WHERE id = $1",
                &[&id],
            )
            .unwrap()
    }

    /// The delivery's attempts in order.
    fn attempts(&mut self, delivery_id: i64) -> Vec<Attempt> {
        attempts(&mut self.db, delivery_id)
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn insert_reaches_the_receiver_signed_with_every_spec_header() {
    let receiver = Receiver::always(Reply::ok());
    let mut f = fixture("cliente", &receiver.url(), None);
    let delivery_id = f.insert("José da Silva");
    let got = receiver.wait_for(1, DEADLINE);
    assert_eq!(got.len(), 1, "the receiver should get the event");
    let request = &got[0];

    wait_for_status(&mut f.db, delivery_id, "succeeded", DEADLINE);
    let row = f.delivery(delivery_id);
    let (event_id, body, event): (String, String, String) = (row.get(4), row.get(5), row.get(6));

    assert_eq!(request.method, "POST");
    assert_eq!(request.body_str(), body, "the body sent is the body stored");
    let signature = request
        .header("X-Webhook-Signature")
        .expect("X-Webhook-Signature");
    assert!(
        verify_hex(&f.secret, &request.body, signature),
        "hex signature must verify: {signature}"
    );
    assert!(!verify_hex("wrong-secret", &request.body, signature));
    assert_eq!(request.header("Content-Type"), Some("application/json"));
    assert!(request
        .header("User-Agent")
        .unwrap()
        .starts_with("webhook_ext/"));
    assert_eq!(
        request.header("X-Webhook-ID"),
        Some(f.webhook_id.to_string().as_str())
    );
    assert_eq!(
        request.header("X-Delivery-ID"),
        Some(delivery_id.to_string().as_str())
    );
    assert_eq!(request.header("X-Event-ID"), Some(event_id.as_str()));
    assert_eq!(request.header("X-Event-Type"), Some(event.as_str()));
    let ts: i64 = request
        .header("X-Webhook-Timestamp")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (now_unix() - ts).abs() < 120,
        "X-Webhook-Timestamp is the attempt's unix time"
    );
    assert_eq!(request.header("webhook-id"), Some(event_id.as_str()));
    assert_eq!(
        request.header("webhook-timestamp"),
        Some(ts.to_string().as_str())
    );
    let standard = request.header("webhook-signature").unwrap();
    assert!(
        verify_standard(
            &f.secret,
            &event_id,
            &ts.to_string(),
            &request.body,
            standard
        ),
        "{standard}"
    );

    let json: serde_json::Value = serde_json::from_str(request.body_str()).unwrap();
    assert_eq!(json["event"], format!("{}.criado", f.table));
    assert_eq!(json["id"], event_id);
    assert_eq!(json["data"]["nome"], "José da Silva");

    let row = f.delivery(delivery_id);
    assert_eq!(row.get::<_, i32>(1), 1);
    assert_eq!(row.get::<_, Option<i32>>(2), Some(200));
    let attempts = f.attempts(delivery_id);
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (
            attempts[0].attempt,
            attempts[0].manual,
            attempts[0].response_status
        ),
        (1, false, Some(200))
    );
}

#[test]
fn a_rolled_back_transaction_sends_nothing() {
    let receiver = Receiver::always(Reply::ok());
    let mut f = fixture("rollback", &receiver.url(), None);
    let mut tx = f.db.transaction().unwrap();
    tx.execute(
        &format!("INSERT INTO {} (nome) VALUES ('never')", f.table),
        &[],
    )
    .unwrap();
    tx.rollback().unwrap();
    // A committed marker after the rollback: once it has arrived, the worker has had every
    // chance to send the rolled-back one too.
    let marker = f.insert("marker");
    wait_for_status(&mut f.db, marker, "succeeded", DEADLINE);
    let got = receiver.wait_for(1, DEADLINE);
    assert_eq!(got.len(), 1);
    assert!(got[0].body_str().contains("marker"));
    assert_eq!(
        query_i64(
            &mut f.db,
            &format!(
                "SELECT count(*) FROM webhook_delivery WHERE webhook_id = {}",
                f.webhook_id
            )
        ),
        1
    );
}

#[test]
fn a_receiver_failing_twice_gets_three_attempts_spaced_by_the_schedule() {
    let receiver = Receiver::start(|_, index| {
        if index < 2 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });
    let mut f = fixture("flaky", &receiver.url(), Some("{0s,1s,1s}"));
    let id = f.insert("flaky");
    wait_for_status(&mut f.db, id, "succeeded", DEADLINE);
    let attempts = f.attempts(id);
    let statuses: Vec<Option<i32>> = attempts.iter().map(|a| a.response_status).collect();
    assert_eq!(statuses, vec![Some(500), Some(500), Some(200)]);
    assert_eq!(f.delivery(id).get::<_, i32>(1), 3);
    for pair in attempts.windows(2) {
        let gap = pair[1].started_at - pair[0].started_at;
        assert!(
            gap >= 0.95,
            "attempts must be at least the schedule's 1s apart, were {gap:.3}s"
        );
    }
    assert_eq!(receiver.count(), 3);
    assert!(
        attempts[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("500")),
        "{:?}",
        attempts[0].error
    );
}

#[test]
fn a_receiver_that_always_fails_ends_failed_then_webhook_retry_succeeds() {
    let (receiver, healthy) = recovering_receiver(503);
    let mut f = fixture("down", &receiver.url(), Some("{0s,1s}"));
    let id = f.insert("down");
    wait_for_status(&mut f.db, id, "failed", DEADLINE);
    let attempts = f.attempts(id);
    assert_eq!(attempts.len(), 2, "exactly the schedule's two attempts");
    assert!(attempts
        .iter()
        .all(|a| a.response_status == Some(503)
            && a.error.as_deref().is_some_and(|e| e.contains("503"))));
    assert_eq!(receiver.count(), 2);

    healthy.store(true, Ordering::SeqCst);
    let row =
        f.db.query_one(
            "SELECT status, attempts, response_status FROM webhook_retry($1)",
            &[&id],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "succeeded");
    assert_eq!(row.get::<_, i32>(1), 3);
    assert_eq!(row.get::<_, Option<i32>>(2), Some(200));
    let attempts = f.attempts(id);
    assert_eq!(attempts.len(), 3);
    assert!(attempts[2].manual, "the retry is recorded as manual");
    assert_eq!(receiver.count(), 3);
    // The same event, same body, same signature scheme.
    let requests = receiver.requests();
    assert_eq!(requests[0].body, requests[2].body);
    assert_eq!(
        requests[0].header("X-Event-ID"),
        requests[2].header("X-Event-ID")
    );
}

#[test]
fn gone_410_fails_the_delivery_and_disables_the_webhook() {
    let receiver = Receiver::always(Reply::status(410));
    let mut f = fixture("gone", &receiver.url(), Some("{0s,1s,1s}"));
    let id = f.insert("gone");
    wait_for_status(&mut f.db, id, "failed", DEADLINE);
    assert_eq!(f.attempts(id).len(), 1, "410 is final");
    let row =
        f.db.query_one(
            "SELECT active, disabled_reason FROM webhook WHERE id = $1",
            &[&f.webhook_id],
        )
        .unwrap();
    assert!(!row.get::<_, bool>(0));
    assert!(row.get::<_, Option<String>>(1).unwrap().contains("410"));
    // no new delivery is queued for a disabled webhook
    f.db.execute(
        &format!("INSERT INTO {} (nome) VALUES ('after')", f.table),
        &[],
    )
    .unwrap();
    assert_eq!(f.last_delivery(), id);
}

#[test]
fn redirects_are_not_followed() {
    let target = Receiver::always(Reply::ok());
    let receiver = Receiver::always(
        Reply::status(302).with_header("Location", format!("{}/elsewhere", target.url())),
    );
    let mut f = fixture("redirect", &receiver.url(), Some("{0s}"));
    let id = f.insert("redirect");
    wait_for_status(&mut f.db, id, "failed", DEADLINE);
    let row = f.delivery(id);
    assert_eq!(row.get::<_, Option<i32>>(2), Some(302));
    let error: String = row.get::<_, Option<String>>(3).unwrap();
    assert!(
        error.contains("redirect") && error.contains("not followed"),
        "{error}"
    );
    assert_eq!(receiver.count(), 1);
    assert_eq!(
        target.count(),
        0,
        "the redirect target must never be contacted"
    );
}

#[test]
fn retry_after_on_429_delays_the_next_attempt() {
    let receiver = Receiver::start(|_, index| {
        if index == 0 {
            Reply::status(429).with_header("Retry-After", "2")
        } else {
            Reply::ok()
        }
    });
    let mut f = fixture("throttled", &receiver.url(), Some("{0s,0s}"));
    let id = f.insert("throttled");
    wait_for_status(&mut f.db, id, "succeeded", DEADLINE);
    let attempts = f.attempts(id);
    assert_eq!(attempts.len(), 2);
    let gap = attempts[1].started_at - attempts[0].started_at;
    assert!(
        gap >= 1.95,
        "Retry-After: 2 must hold the next attempt back 2s, gap was {gap:.3}s"
    );
}

#[test]
fn a_hanging_receiver_does_not_delay_a_fast_one() {
    let hanging = Receiver::always(Reply::Hang);
    let fast = Receiver::always(Reply::ok());
    let mut slow = fixture("hangs", &hanging.url(), Some("{0s}"));
    let mut quick = fixture("quick", &fast.url(), None);
    for i in 0..40 {
        slow.insert(&format!("slow {i}"));
    }
    let first_slow: i64 = query_i64(
        &mut slow.db,
        &format!(
            "SELECT min(id) FROM webhook_delivery WHERE webhook_id = {}",
            slow.webhook_id
        ),
    );
    let id = quick.insert("fast");
    wait_for_status(&mut quick.db, id, "succeeded", DEADLINE);
    assert_eq!(fast.count(), 1);
    // The fast one succeeded while the hanging receiver still held its connections: none of
    // the slow attempts had finished (timed out) yet.
    let slow_finished = query_i64(
        &mut quick.db,
        &format!(
            "SELECT count(*) FROM webhook_attempt a JOIN webhook_delivery d ON d.id = a.delivery_id \
              WHERE d.webhook_id = {} AND a.started_at <= (SELECT delivered_at FROM webhook_delivery WHERE id = {id}) \
                AND a.started_at + a.duration_ms * interval '1 ms' <= (SELECT delivered_at FROM webhook_delivery WHERE id = {id})",
            slow.webhook_id
        ),
    );
    assert_eq!(slow_finished, 0);
    assert!(
        hanging.count() >= 1,
        "the hanging receiver was being tried meanwhile"
    );
    // and the hanging ones end as timeouts with a clear error
    wait_for_status(&mut slow.db, first_slow, "failed", DEADLINE);
    let error: String = slow
        .delivery(first_slow)
        .get::<_, Option<String>>(3)
        .unwrap();
    assert!(error.contains("timed out"), "{error}");
}

#[test]
fn ping_sends_a_signed_test_request() {
    let receiver = Receiver::always(Reply::ok());
    let mut f = fixture("ping", &receiver.url(), None);
    let row =
        f.db.query_one(
            "SELECT succeeded, response_status, error FROM webhook_ping($1)",
            &[&f.webhook_id],
        )
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert_eq!(row.get::<_, Option<i32>>(1), Some(200));
    let got = receiver.wait_for(1, DEADLINE);
    assert_eq!(got[0].body_str(), r#"{"test":true}"#);
    assert!(verify_hex(
        &f.secret,
        &got[0].body,
        got[0].header("X-Webhook-Signature").unwrap()
    ));
    assert_eq!(got[0].header("X-Event-Type"), Some("webhook.ping"));
}

#[test]
fn create_with_verify_requires_a_2xx_answer() {
    let mut db = connect_shared();
    let failing = Receiver::always(Reply::status(500));
    let err = db
        .query_one(
            "SELECT id FROM webhook_create($1, 'k', verify => true)",
            &[&failing.url()],
        )
        .expect_err("a 500 must refuse the webhook");
    assert_eq!(err.code().map(|c| c.code()), Some("22023"));
    assert!(
        db_message(&err).contains("verification failed"),
        "{}",
        db_message(&err)
    );
    assert_eq!(failing.count(), 1);
    assert_eq!(
        query_i64(
            &mut db,
            &format!(
                "SELECT count(*) FROM webhook WHERE url = '{}'",
                failing.url()
            )
        ),
        0,
        "nothing is written"
    );

    let ok = Receiver::always(Reply::ok());
    let row = db
        .query_one(
            "SELECT id, secret FROM webhook_create($1, verify => true)",
            &[&ok.url()],
        )
        .unwrap();
    let secret: String = row.get(1);
    let got = ok.wait_for(1, DEADLINE);
    assert_eq!(got[0].body_str(), r#"{"test":true}"#);
    assert!(verify_hex(
        &secret,
        &got[0].body,
        got[0].header("X-Webhook-Signature").unwrap()
    ));
}

#[test]
fn retry_of_a_delivery_in_flight_is_refused_with_55006() {
    let receiver = Receiver::always(Reply::Delay {
        delay: Duration::from_millis(1500),
        then: Box::new(Reply::ok()),
    });
    let mut f = fixture("inflight", &receiver.url(), None);
    let id = f.insert("slow");
    wait_until("the worker to claim the delivery", DEADLINE, || {
        (f.delivery(id).get::<_, String>(0) == "delivering").then_some(())
    });
    let err =
        f.db.query_one("SELECT status FROM webhook_retry($1)", &[&id])
            .expect_err("in flight");
    assert_eq!(err.code().map(|c| c.code()), Some("55006"), "{err}");
    wait_for_status(&mut f.db, id, "succeeded", DEADLINE);
    assert_eq!(f.attempts(id).len(), 1);
}

#[test]
fn worker_status_and_stats_reflect_real_work() {
    let receiver = Receiver::start(|_, index| {
        if index == 0 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });
    let mut f = fixture("stats", &receiver.url(), Some("{0s,0s}"));
    let id = f.insert("stats");
    wait_for_status(&mut f.db, id, "succeeded", DEADLINE);
    let row = f
        .db
        .query_one(
            "SELECT deliveries_total, deliveries_succeeded, deliveries_failed, retries, success_rate::float8, \
                    last_success_at IS NOT NULL, avg_duration_ms IS NOT NULL \
               FROM webhook_stats WHERE webhook_id = $1",
            &[&f.webhook_id],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    assert_eq!(row.get::<_, i64>(1), 1);
    assert_eq!(row.get::<_, i64>(2), 0);
    assert_eq!(row.get::<_, i64>(3), 1);
    assert_eq!(row.get::<_, f64>(4), 1.0);
    assert!(row.get::<_, bool>(5));
    assert!(row.get::<_, bool>(6));

    let status = f
        .db
        .query_one(
            "SELECT running, pid, (SELECT backend_type FROM pg_stat_activity WHERE pid = s.pid) FROM webhook_worker_status() s",
            &[],
        )
        .unwrap();
    assert!(status.get::<_, bool>(0));
    assert_eq!(
        status.get::<_, Option<String>>(2).as_deref(),
        Some("webhook_ext worker")
    );
}

#[test]
fn secret_rotation_signs_with_both_secrets_during_grace() {
    let receiver = Receiver::always(Reply::ok());
    let mut f = fixture("rotation", &receiver.url(), None);
    let new_secret: String = f
        .db
        .query_one("SELECT secret FROM webhook_rotate_secret($1, 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw')", &[&f.webhook_id])
        .unwrap()
        .get(0);
    let id = f.insert("rotated");
    wait_for_status(&mut f.db, id, "succeeded", DEADLINE);
    let got = receiver.wait_for(1, DEADLINE);
    let r = &got[0];
    let (msg_id, ts, standard) = (
        r.header("webhook-id").unwrap(),
        r.header("webhook-timestamp").unwrap(),
        r.header("webhook-signature").unwrap(),
    );
    assert_eq!(standard.split(' ').count(), 2, "{standard}");
    assert!(verify_standard(&new_secret, msg_id, ts, &r.body, standard));
    assert!(verify_standard(&f.secret, msg_id, ts, &r.body, standard));
    assert!(verify_hex(
        &new_secret,
        &r.body,
        r.header("X-Webhook-Signature").unwrap()
    ));
}

#[test]
fn receivers_that_hang_keep_one_thread_each_and_leave_the_rest_to_a_fast_one() {
    // 8 threads, half of them per endpoint at most, an eighth (1) once an endpoint's attempts
    // take about the timeout: two hanging receivers would otherwise hold all eight.
    let (_cluster, mut db) =
        Cluster::start_installed("hangcap", "webhook.concurrency = 8\nwebhook.timeout = '1s'");
    let hanging = [Receiver::always(Reply::Hang), Receiver::always(Reply::Hang)];
    let fast = Receiver::always(Reply::ok());
    let mut hanging_ids = Vec::new();
    for (n, receiver) in hanging.iter().enumerate() {
        let id: i64 = db
            .query_one(
                "SELECT id FROM webhook_create($1, 'k', ARRAY[$2])",
                &[&receiver.url(), &format!("hang{n}.x")],
            )
            .unwrap()
            .get(0);
        one_attempt_only(&mut db, id);
        db.execute(
            "SELECT webhook_emit($1, jsonb_build_object('n', g)) FROM generate_series(1, 12) g",
            &[&format!("hang{n}.x")],
        )
        .unwrap();
        hanging_ids.push(id);
    }
    create_webhook(&mut db, &fast.url(), Some("k"), "fast.*");

    // Once each hanging endpoint has had three rounds of attempts time out...
    for id in &hanging_ids {
        wait_until(
            "three rounds of timeouts per hanging receiver",
            DEADLINE,
            || {
                (query_i64(
                &mut db,
                &format!(
                    "SELECT count(*) FROM webhook_attempt a JOIN webhook_delivery d ON d.id = a.delivery_id \
                      WHERE d.webhook_id = {id} AND a.error LIKE '%timed out%'"
                ),
            ) >= 6)
                .then_some(())
            },
        );
    }
    // ... a fast receiver is served at once, with both still hanging,
    db.execute(
        "SELECT webhook_emit('fast.x', jsonb_build_object('n', g)) FROM generate_series(1, 20) g",
        &[],
    )
    .unwrap();
    assert_eq!(fast.wait_for(20, DEADLINE).len(), 20);
    // and after its first round (4 at once), no hanging endpoint ran two attempts at a time.
    for id in &hanging_ids {
        let overlapping = query_i64(
            &mut db,
            &format!(
                "WITH a AS ( \
                   SELECT a.started_at AS s, a.started_at + a.duration_ms * interval '1 ms' AS e \
                     FROM webhook_attempt a JOIN webhook_delivery d ON d.id = a.delivery_id \
                    WHERE d.webhook_id = {id}), \
                 later AS (SELECT * FROM a WHERE s >= (SELECT min(e) FROM a)) \
                 SELECT count(*) FROM later x JOIN later y ON x.s < y.s AND y.s < x.e - interval '100 ms'"
            ),
        );
        assert_eq!(
            overlapping, 0,
            "webhook {id} ran attempts side by side after it hung"
        );
    }
}

#[test]
fn an_endpoint_that_was_fast_and_starts_hanging_does_not_hold_the_others_back() {
    // The walk waits for a fast endpoint that is full rather than park its backlog, but not
    // for long: one that starts to hang still looks fast until its attempts time out.
    let (_cluster, mut db) = Cluster::start_installed("fastthenhang", "");
    let flaky = Receiver::start(|_, index| if index < 50 { Reply::ok() } else { Reply::Hang });
    let other = Receiver::always(Reply::ok());
    create_webhook(&mut db, &flaky.url(), Some("k"), "a.*");
    create_webhook(&mut db, &other.url(), Some("k"), "b.*");
    db.execute(
        "SELECT webhook_emit('a.warm', '{}') FROM generate_series(1, 50)",
        &[],
    )
    .unwrap();
    flaky.wait_for(50, DEADLINE);
    // Now it hangs: more than it can hold, then the other endpoint's events behind them.
    db.execute(
        "SELECT webhook_emit('a.more', '{}') FROM generate_series(1, 1500)",
        &[],
    )
    .unwrap();
    db.execute(
        "SELECT webhook_emit('b.event', '{}') FROM generate_series(1, 20)",
        &[],
    )
    .unwrap();
    assert_eq!(other.wait_for(20, DEADLINE).len(), 20);
    // They arrived while the hanging attempts still held their connections: none had timed
    // out (webhook.timeout = 2s), so the worker did not wait for it to look slow.
    let finished: i64 = query_i64(
        &mut db,
        "SELECT count(*) FROM webhook_attempt a JOIN webhook_delivery d ON d.id = a.delivery_id \
          WHERE d.event = 'a.more'",
    );
    assert_eq!(finished, 0);
}

/// Each backend keeps a copy of the active webhooks for the trigger (src/api/subscribers.rs):
/// what another session commits to `webhook` must reach a backend that already has one, and
/// what its own transaction does must count at once (and not after a rollback).
#[test]
fn a_backend_queues_for_webhooks_other_sessions_create_change_and_delete() {
    let receiver = Receiver::always(Reply::ok());
    let mut app = fixture("copies", &receiver.url(), None);
    let mut admin = connect_shared();
    let table = app.table.clone();
    let queued_for = |app: &mut Fixture, nome: &str| -> Vec<i64> {
        app.db
            .execute(&format!("INSERT INTO {table} (nome) VALUES ($1)"), &[&nome])
            .unwrap();
        app.db
            .query(
                "SELECT webhook_id FROM webhook_delivery
                  WHERE event = $1 AND body::jsonb -> 'data' ->> 'nome' = $2
                  ORDER BY webhook_id",
                &[&format!("{table}.criado"), &nome],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    };
    let first = app.webhook_id;
    assert_eq!(queued_for(&mut app, "before"), [first]);

    let second: i64 = admin
        .query_one(
            "SELECT id FROM webhook_create($1, events => ARRAY[$2])",
            &[&receiver.url(), &format!("{table}.criado")],
        )
        .unwrap()
        .get(0);
    assert_eq!(queued_for(&mut app, "created"), [first, second]);

    admin
        .execute(
            "UPDATE webhook SET active = false WHERE id = $1",
            &[&second],
        )
        .unwrap();
    assert_eq!(queued_for(&mut app, "deactivated"), [first]);

    admin
        .execute(
            "UPDATE webhook SET active = true, filter = '{\"nome\": \"x\"}' WHERE id = $1",
            &[&second],
        )
        .unwrap();
    assert_eq!(queued_for(&mut app, "x"), [first, second]);
    assert_eq!(queued_for(&mut app, "y"), [first]);

    admin
        .execute(
            "UPDATE webhook SET filter = NULL, events = ARRAY['nada.*'] WHERE id = $1",
            &[&second],
        )
        .unwrap();
    assert_eq!(queued_for(&mut app, "other events"), [first]);

    // Deleted once nothing of it is in flight: a DELETE racing the worker's recording is
    // another test's subject (deleting_a_webhook_whose_deliveries_fail_...).
    wait_until("the second webhook's deliveries to end", DEADLINE, || {
        let unfinished = query_i64(
            &mut admin,
            &format!(
                "SELECT count(*) FROM webhook_delivery
                  WHERE webhook_id = {second} AND status IN ('pending', 'delivering')"
            ),
        );
        (unfinished == 0).then_some(())
    });
    admin
        .execute("DELETE FROM webhook WHERE id = $1", &[&second])
        .unwrap();
    assert_eq!(queued_for(&mut app, "deleted"), [first]);

    // Its own transaction: a webhook it creates counts for its next row, and is gone with a
    // rollback.
    app.db.batch_execute("BEGIN").unwrap();
    let third: i64 = app
        .db
        .query_one(
            "SELECT id FROM webhook_create($1, events => ARRAY[$2])",
            &[&receiver.url(), &format!("{table}.*")],
        )
        .unwrap()
        .get(0);
    assert_eq!(queued_for(&mut app, "own"), [first, third]);
    app.db.batch_execute("ROLLBACK").unwrap();
    assert_eq!(queued_for(&mut app, "rolled back"), [first]);

    // REPEATABLE READ reads the webhooks with its own snapshot, per row.
    app.db
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .unwrap();
    assert_eq!(queued_for(&mut app, "repeatable"), [first]);
    app.db.batch_execute("COMMIT").unwrap();
}

/// The trigger queues a delivery without an INSERT statement where that writes the same row
/// (src/api/append.rs), and runs the INSERT where the table has something only the executor
/// evaluates. Either way an index a user adds to the deliveries holds every queued delivery,
/// a trigger a user adds fires, and the row is the one the INSERT wrote.
#[test]
fn indexes_and_triggers_users_add_to_the_deliveries_see_every_queued_one() {
    let receiver = Receiver::always(Reply::ok());
    let (_cluster, mut db) = Cluster::start_installed("store_additions", "");
    db.batch_execute(
        "CREATE TABLE conta (id serial PRIMARY KEY, nome text);
         CREATE TRIGGER conta_webhook AFTER INSERT OR UPDATE OR DELETE ON conta
           FOR EACH ROW EXECUTE FUNCTION webhook_trigger('conta');
         -- As docs/OPERATIONS.md shows, for lookups by event.
         CREATE INDEX store_event_id_idx ON webhook_delivery_store (event_id);",
    )
    .unwrap();
    // Two webhooks: every row is queued twice, in one go.
    for _ in 0..2 {
        create_webhook(&mut db, &receiver.url(), None, "conta.*");
    }
    // Rows in their own transactions; returns each transaction's now().
    let insert_rows = |db: &mut Client, names: &[&str]| -> Vec<SystemTime> {
        names
            .iter()
            .map(|nome| {
                let mut tx = db.transaction().unwrap();
                tx.execute("INSERT INTO conta (nome) VALUES ($1)", &[nome])
                    .unwrap();
                let now: SystemTime = tx.query_one("SELECT now()", &[]).unwrap().get(0);
                tx.commit().unwrap();
                now
            })
            .collect()
    };
    // Every delivery of `nome`'s row, as a query through `index` finds it and as a scan of
    // the table does: (id, created_at, status at queueing, event_key) each.
    let through = |db: &mut Client, index: &str, query: &str, nome: &str| {
        let mut tx = db.transaction().unwrap();
        tx.batch_execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
            .unwrap();
        let plan: Vec<String> = tx
            .query(&format!("EXPLAIN {query}"), &[&nome])
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert!(
            plan.iter().any(|line| line.contains(index)),
            "{query} does not use {index}: {plan:?}"
        );
        let ids: Vec<i64> = tx
            .query(query, &[&nome])
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        tx.commit().unwrap();
        ids
    };
    let scanned = |db: &mut Client, nome: &str| -> Vec<(i64, SystemTime, i32, Option<String>)> {
        db.query(
            "SELECT s.id, s.created_at, s.attempts_before_replay, s.event_key
               FROM webhook_delivery_store AS s
              WHERE s.body::jsonb -> 'data' ->> 'nome' = $1 ORDER BY s.id",
            &[&nome],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect()
    };
    let by_event_id = "SELECT s.id FROM webhook_delivery_store AS s
                        WHERE s.event_id IN (SELECT d.event_id FROM webhook_delivery_store AS d
                                              WHERE d.body::jsonb -> 'data' ->> 'nome' = $1)
                        ORDER BY s.id";
    let check = |db: &mut Client, names: &[&str], nows: &[SystemTime], indexes: &[(&str, &str)]| {
        for (nome, now) in names.iter().zip(nows) {
            let rows = scanned(db, nome);
            assert_eq!(rows.len(), 2, "{nome}: one delivery per webhook");
            let conta_id: i32 = db
                .query_one("SELECT id FROM conta WHERE nome = $1", &[nome])
                .unwrap()
                .get(0);
            for (_, created_at, attempts_before_replay, key) in &rows {
                assert_eq!(
                    created_at, now,
                    "{nome}: created_at is the transaction's now()"
                );
                assert_eq!(*attempts_before_replay, 0);
                assert_eq!(key.as_deref(), Some(conta_id.to_string().as_str()));
            }
            let ids: Vec<i64> = rows.iter().map(|row| row.0).collect();
            for (index, query) in indexes {
                assert_eq!(
                    through(db, index, query, nome),
                    ids,
                    "{nome} through {index}"
                );
            }
        }
    };

    // A plain index: queued without a statement, and the index holds every delivery.
    let plain = [("store_event_id_idx", by_event_id)];
    let names = ["plain one", "plain two", "plain three"];
    let nows = insert_rows(&mut db, &names);
    check(&mut db, &names, &nows, &plain);

    // A partial index on an expression: only the executor evaluates it, so the INSERT runs.
    db.batch_execute(
        "CREATE INDEX store_event_lower_idx ON webhook_delivery_store (lower(event), id)
          WHERE event_key IS NOT NULL",
    )
    .unwrap();
    let by_lower_event = "SELECT s.id FROM webhook_delivery_store AS s
                           WHERE lower(s.event) = 'conta.created' AND s.event_key IS NOT NULL
                             AND s.body::jsonb -> 'data' ->> 'nome' = $1
                           ORDER BY s.id";
    let both = [
        ("store_event_id_idx", by_event_id),
        ("store_event_lower_idx", by_lower_event),
    ];
    let names = ["expression one", "expression two"];
    let nows = insert_rows(&mut db, &names);
    check(&mut db, &names, &nows, &both);
    db.batch_execute("DROP INDEX store_event_lower_idx")
        .unwrap();

    // A user's trigger on the deliveries: the INSERT runs, and the trigger sees each one.
    db.batch_execute(
        "CREATE TABLE store_audit (delivery_id bigint);
         CREATE FUNCTION store_audit() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN INSERT INTO store_audit VALUES (NEW.id); RETURN NEW; END $$;
         CREATE TRIGGER store_audit BEFORE INSERT ON webhook_delivery_store
           FOR EACH ROW EXECUTE FUNCTION store_audit();",
    )
    .unwrap();
    let names = ["audited one", "audited two"];
    let nows = insert_rows(&mut db, &names);
    check(&mut db, &names, &nows, &plain);
    let audited: Vec<i64> = db
        .query("SELECT delivery_id FROM store_audit ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut expected: Vec<i64> = names
        .iter()
        .flat_map(|nome| scanned(&mut db, nome).into_iter().map(|row| row.0))
        .collect();
    expected.sort_unstable();
    assert_eq!(audited, expected, "the user's trigger saw each delivery");

    // And all of them are delivered.
    wait_until("every delivery to succeed", DEADLINE, || {
        (query_i64(
            &mut db,
            "SELECT count(*) FROM webhook_delivery WHERE status <> 'succeeded'",
        ) == 0)
            .then_some(())
    });
    assert_eq!(
        query_i64(&mut db, "SELECT count(*) FROM webhook_delivery"),
        14
    );
}

/// Deleting a webhook while the worker records its failed deliveries: until it commits, the
/// DELETE holds the webhook's row, its health row (the foreign key's cascade) and its
/// deliveries, and the worker writes the health of the deliveries it records. The worker goes
/// on delivering the other webhooks' events while such a DELETE is under way (it used to wait
/// for it, and a DELETE waiting for a delivery the worker had recorded meanwhile ended in a
/// deadlock), and the DELETE ends.
#[test]
fn deleting_a_webhook_whose_deliveries_fail_holds_up_neither_the_worker_nor_the_delete() {
    let failing = Receiver::always(Reply::status(500));
    let fine = Receiver::always(Reply::ok());
    let (cluster, mut db) = Cluster::start_installed("delete_while_failing", "");
    let doomed = create_webhook(&mut db, &failing.url(), None, "perdido.*");
    one_attempt_only(&mut db, doomed);
    let other = create_webhook(&mut db, &fine.url(), None, "mantido.*");
    // Holds the DELETE before its commit, until `holder` lets it go (the cascade's triggers
    // fire last).
    db.batch_execute(
        "CREATE FUNCTION hold_delete() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN PERFORM pg_advisory_xact_lock_shared(4242); RETURN OLD; END $$;
         CREATE TRIGGER hold_delete AFTER DELETE ON webhook_health
           FOR EACH ROW EXECUTE FUNCTION hold_delete();",
    )
    .unwrap();
    let failures = |db: &mut Client| {
        query_i64(
            db,
            &format!(
                "SELECT coalesce(max(consecutive_failures), 0)::bigint FROM webhook_health
                  WHERE webhook_id = {doomed}"
            ),
        )
    };
    emit(&mut db, "perdido.um", "{}");
    wait_until(
        "the failure to reach the webhook's health",
        DEADLINE,
        || (failures(&mut db) == 1).then_some(()),
    );

    let mut holder = cluster.connect();
    holder
        .query_one("SELECT pg_advisory_lock(4242)", &[])
        .unwrap();
    let deleter = {
        let mut session = cluster.connect();
        std::thread::spawn(move || {
            session
                .query_one("SELECT webhook_delete($1)", &[&doomed])
                .map(|row| row.get::<_, bool>(0))
                .map_err(|e| db_message(&e))
        })
    };
    wait_until("the DELETE to be held", DEADLINE, || {
        (query_i64(
            &mut db,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'",
        ) == 1)
            .then_some(())
    });
    // The webhook is still there for everyone else until the DELETE commits: its next event
    // is queued and fails.
    let sent = failing.count();
    emit(&mut db, "perdido.dois", "{}");
    wait_until("the second failure to be sent", DEADLINE, || {
        (failing.count() > sent).then_some(())
    });
    emit(&mut db, "mantido.um", "{}");
    wait_until(
        "the other webhook's event to be delivered meanwhile",
        DEADLINE,
        || {
            (query_i64(
                &mut db,
                &format!(
                    "SELECT count(*) FROM webhook_delivery
                      WHERE webhook_id = {other} AND status = 'succeeded'"
                ),
            ) == 1)
                .then_some(())
        },
    );

    holder
        .query_one("SELECT pg_advisory_unlock(4242)", &[])
        .unwrap();
    assert_eq!(
        deleter.join().unwrap(),
        Ok(true),
        "the DELETE ends, without a deadlock"
    );
    assert_eq!(
        query_i64(
            &mut db,
            &format!("SELECT count(*) FROM webhook WHERE id = {doomed}")
        ),
        0
    );
}

/// Deleting a webhook takes back what the worker queued for it and has not sent: nothing more
/// reaches its endpoint than the attempts already running.
#[test]
fn deleting_a_webhook_withdraws_the_deliveries_queued_for_it() {
    deleting_withdraws_what_the_worker_queued("withdraw", |_, db, webhook_id| {
        db.execute("SELECT webhook_delete($1)", &[&webhook_id])
            .unwrap();
    });
}

/// The same when the deletion is a prepared transaction, committed by COMMIT PREPARED in
/// another session (which did not itself delete anything).
#[test]
fn a_webhook_deleted_by_a_prepared_transaction_has_its_queued_deliveries_withdrawn() {
    deleting_withdraws_what_the_worker_queued("withdraw2pc", |cluster, _, webhook_id| {
        let mut preparer = cluster.connect();
        preparer
            .batch_execute(&format!(
                "BEGIN; SELECT webhook_delete({webhook_id}); PREPARE TRANSACTION 'apaga'"
            ))
            .unwrap();
        cluster
            .connect()
            .batch_execute("COMMIT PREPARED 'apaga'")
            .unwrap();
    });
}

/// Fills the worker's queue for a held endpoint, deletes the webhook with `delete`, and checks
/// that only the attempts already running reach the endpoint.
fn deleting_withdraws_what_the_worker_queued(
    name: &str,
    delete: impl FnOnce(&Cluster, &mut Client, i64),
) {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let (cluster, mut db) = Cluster::start_installed(
        name,
        "webhook.concurrency = 4\nwebhook.timeout = '30s'\nmax_prepared_transactions = 2",
    );
    // Answers at once until the test holds it; then each attempt waits until it lets go.
    let hold = Arc::new(AtomicBool::new(false));
    let held = hold.clone();
    let receiver = Receiver::start(move |_, _| {
        let deadline = std::time::Instant::now() + Duration::from_secs(25);
        while held.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        Reply::ok()
    });
    let webhook_id = query_i64(
        &mut db,
        &format!(
            "SELECT id FROM webhook_create('{}', events => ARRAY['apagado.*'])",
            receiver.url()
        ),
    );
    let emit = |db: &mut Client, n: i32| {
        db.execute(
            "SELECT webhook_emit('apagado.x', jsonb_build_object('n', n)) FROM generate_series(1, $1) AS n",
            &[&n],
        )
        .unwrap();
    };
    // Known to answer fast, the endpoint gets a queue deeper than what runs at once.
    emit(&mut db, 20);
    wait_until("the first twenty to succeed", DEADLINE, || {
        (query_i64(
            &mut db,
            &format!(
                "SELECT count(*) FROM webhook_delivery WHERE webhook_id = {webhook_id} AND status = 'succeeded'"
            ),
        ) == 20)
            .then_some(())
    });
    hold.store(true, Ordering::SeqCst);
    emit(&mut db, 200);
    let worker_in_flight =
        |db: &mut Client| -> i64 { query_i64(db, "SELECT in_flight FROM webhook_worker_status()") };
    wait_until("the worker to queue more than runs", DEADLINE, || {
        (receiver.count() > 20 && worker_in_flight(&mut db) > receiver.count() as i64 - 20)
            .then_some(())
    });

    delete(&cluster, &mut db, webhook_id);
    // What the worker holds shrinks to the attempts already running (received by now).
    wait_until("the queued deliveries to be withdrawn", DEADLINE, || {
        (worker_in_flight(&mut db) == receiver.count() as i64 - 20).then_some(())
    });
    let received = receiver.count();
    hold.store(false, Ordering::SeqCst);
    wait_until("the running attempts to finish", DEADLINE, || {
        (worker_in_flight(&mut db) == 0).then_some(())
    });
    assert_eq!(
        receiver.count(),
        received,
        "nothing more was sent for the deleted webhook"
    );
}
