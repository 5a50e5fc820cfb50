//! Webhooks, events and deliveries as the suites set them up and watch them: one definition
//! each, shared by every suite.

use std::time::Duration;

use postgres::Client;

use crate::{db_message, shared_cluster, unique, wait_until};

/// How long a delivery may take to be queued or to finish in these helpers.
pub const DELIVERY_DEADLINE: Duration = Duration::from_secs(30);

/// `webhook_create(url, secret, events => ARRAY[pattern])`; `secret` None lets the extension
/// generate one. Returns the webhook's id.
pub fn create_webhook(db: &mut Client, url: &str, secret: Option<&str>, pattern: &str) -> i64 {
    db.query_one(
        "SELECT id FROM webhook_create($1, secret => $2, events => ARRAY[$3])",
        &[&url, &secret, &pattern],
    )
    .unwrap_or_else(|e| panic!("webhook_create({url}): {}", db_message(&e)))
    .get(0)
}

/// Gives a webhook its own retry schedule, e.g. `{0s}` (one attempt) or `{0s,1s,1s}`.
pub fn set_retry_schedule(db: &mut Client, webhook_id: i64, schedule: &str) {
    db.execute(
        "UPDATE webhook SET retry_schedule = $1::text::interval[] WHERE id = $2",
        &[&schedule, &webhook_id],
    )
    .unwrap();
}

/// `webhook_emit(event, data)`: how many deliveries it queued.
pub fn emit(db: &mut Client, event: &str, data: &str) -> i32 {
    db.query_one("SELECT webhook_emit($1, $2::text::jsonb)", &[&event, &data])
        .unwrap_or_else(|e| panic!("webhook_emit({event}): {}", db_message(&e)))
        .get(0)
}

/// Emits `event` with `{"n": 1}`; returns the newest delivery of that event.
pub fn emit_one(db: &mut Client, event: &str) -> i64 {
    emit(db, event, r#"{"n": 1}"#);
    db.query_one(
        "SELECT max(id) FROM webhook_delivery WHERE event = $1",
        &[&event],
    )
    .unwrap()
    .get(0)
}

/// The newest delivery to a webhook, once there is one.
pub fn last_delivery(db: &mut Client, webhook_id: i64) -> i64 {
    wait_until("a delivery to be queued", DELIVERY_DEADLINE, || {
        db.query_opt(
            "SELECT id FROM webhook_delivery WHERE webhook_id = $1 ORDER BY id DESC LIMIT 1",
            &[&webhook_id],
        )
        .unwrap()
        .map(|row| row.get(0))
    })
}

/// A webhook subscribed to one event name of its own.
pub struct Hook {
    pub id: i64,
    pub event: String,
}

/// A webhook on `url` for a fresh event name, with its own `schedule` (e.g. `{0s}`) if given.
pub fn hook(db: &mut Client, url: &str, secret: Option<&str>, schedule: Option<&str>) -> Hook {
    let event = unique("hook");
    let id = create_webhook(db, url, secret, &event);
    if let Some(schedule) = schedule {
        set_retry_schedule(db, id, schedule);
    }
    Hook { id, event }
}

impl Hook {
    /// Emits the hook's event; returns the delivery it queued.
    pub fn emit(&self, db: &mut Client) -> i64 {
        assert_eq!(emit(db, &self.event, r#"{"n": 1}"#), 1);
        last_delivery(db, self.id)
    }
}

/// A delivery once it is `succeeded` or `failed`.
#[derive(Debug)]
pub struct Finished {
    pub status: String,
    pub attempts: i32,
    pub response_status: Option<i32>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub duration_ms: Option<i32>,
}

impl Finished {
    pub fn error(&self) -> &str {
        self.error.as_deref().unwrap_or_default()
    }
}

/// Waits until the delivery has succeeded or failed.
pub fn wait_finished(db: &mut Client, delivery_id: i64) -> Finished {
    wait_until(
        &format!("delivery {delivery_id} to succeed or fail"),
        DELIVERY_DEADLINE,
        || {
            let row = db
                .query_one(
                    "SELECT status, attempts, response_status, response_body, error, duration_ms \
                       FROM webhook_delivery WHERE id = $1",
                    &[&delivery_id],
                )
                .unwrap();
            let status: String = row.get(0);
            matches!(status.as_str(), "succeeded" | "failed").then(|| Finished {
                status,
                attempts: row.get(1),
                response_status: row.get(2),
                response_body: row.get(3),
                error: row.get(4),
                duration_ms: row.get(5),
            })
        },
    )
}

/// One `webhook_attempt` row.
#[derive(Debug)]
pub struct Attempt {
    pub attempt: i32,
    pub manual: bool,
    pub response_status: Option<i32>,
    pub error: Option<String>,
    /// Unix seconds.
    pub started_at: f64,
}

/// The delivery's attempts in order.
pub fn attempts(db: &mut Client, delivery_id: i64) -> Vec<Attempt> {
    db.query(
        "SELECT attempt, manual, response_status, error, extract(epoch FROM started_at)::float8 \
           FROM webhook_attempt WHERE delivery_id = $1 ORDER BY attempt, id",
        &[&delivery_id],
    )
    .unwrap()
    .iter()
    .map(|r| Attempt {
        attempt: r.get(0),
        manual: r.get(1),
        response_status: r.get(2),
        error: r.get(3),
        started_at: r.get(4),
    })
    .collect()
}

/// The worker is the one that started with the cluster (one start in the log, same pid as in
/// pg_stat_activity) and nothing crashed.
pub fn assert_worker_unharmed(db: &mut Client, log: &str) {
    let workers: Vec<i32> = db
        .query(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'webhook_ext worker'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(workers.len(), 1, "exactly one worker runs: {workers:?}");
    let starts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("webhook_ext worker started"))
        .collect();
    assert_eq!(starts.len(), 1, "the worker started once: {starts:#?}");
    assert!(
        starts[0].contains(&format!("[{}]", workers[0])),
        "the running worker {} is the one that started: {}",
        workers[0],
        starts[0]
    );
    // (Exit code 0 is a worker that looked at a database without the extension, at debug1.)
    for bad in ["PANIC", "terminated by signal", "exited with exit code 1"] {
        assert!(
            !log.contains(bad),
            "the server log has {bad:?}:\n{}",
            log.lines()
                .filter(|l| l.contains(bad))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// [`assert_worker_unharmed`] for the binary's shared cluster.
pub fn assert_shared_worker_unharmed(db: &mut Client) {
    let (_, log_path) = shared_cluster();
    let log = std::fs::read_to_string(log_path).unwrap();
    assert_worker_unharmed(db, &log);
}

/// What a `webhook_retry` call gave: the delivery's status, or the SQLSTATE and message.
pub fn retry(db: &mut Client, delivery_id: i64) -> Result<String, (String, String)> {
    db.query_one("SELECT status FROM webhook_retry($1)", &[&delivery_id])
        .map(|row| row.get(0))
        .map_err(|e| {
            (
                e.code().map(|c| c.code().to_string()).unwrap_or_default(),
                db_message(&e),
            )
        })
}
