//! webhook_worker_status(): is a worker running, and what is it doing.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use crate::pinned::PinnedSearchPath;
use crate::{settings, wake};

/// The worker process as shared memory shows it; `webhook_worker_status()` (sql/api.sql)
/// adds the settings. (The Rust name keeps the C symbol of version 0.1.0's
/// webhook_worker_status, which pointed here.)
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, name = "webhook_worker_process")]
fn webhook_worker_status() -> TableIterator<
    'static,
    (
        name!(running, bool),
        name!(pid, Option<i32>),
        name!(database, String),
        name!(started_at, Option<TimestampWithTimeZone>),
        name!(queue_depth, i64),
        name!(in_flight, i64),
        name!(attempts_total, i64),
        name!(last_error, Option<String>),
        name!(last_error_at, Option<TimestampWithTimeZone>),
        name!(message, String),
    ),
> {
    let _path = PinnedSearchPath::new();
    let queue_depth = Spi::connect(crate::store::installation)
        .ok()
        .flatten()
        .and_then(|installation| {
            let schema = pgrx::spi::quote_identifier(&installation.schema);
            let sql = if installation.version == env!("CARGO_PKG_VERSION") {
                crate::store::queue_depth_sql(&schema)
            } else {
                // An installation waiting for ALTER EXTENSION ... UPDATE: its old table.
                format!("SELECT count(*) FROM {schema}.webhook_delivery WHERE status IN ('pending', 'delivering')")
            };
            Spi::get_one::<i64>(&sql).ok().flatten()
        })
        .unwrap_or(0);
    let database = settings::database();
    let timestamp = |unix: i64| (unix > 0).then(|| pgrx::datum::to_timestamp(unix as f64));

    let row = match wake::snapshot() {
        None => (
            false,
            None,
            database,
            None,
            queue_depth,
            0,
            0,
            None,
            None,
            "no worker: add webhook_ext to shared_preload_libraries and restart; events are queued meanwhile"
                .to_string(),
        ),
        Some(s) => {
            let running = s.pid != 0;
            let message = if running {
                format!("worker running (pid {}) for database {database}", s.pid)
            } else {
                format!("worker not running (it restarts within seconds; see the server log) for database {database}")
            };
            (
                running,
                running.then_some(s.pid),
                database,
                timestamp(s.started_at_unix),
                queue_depth,
                s.in_flight,
                s.attempts_total as i64,
                s.last_error,
                timestamp(s.last_error_at_unix),
                message,
            )
        }
    };
    TableIterator::once(row)
}

/// The settings the running worker uses (after its last reload); NULL without a worker.
#[pg_extern(volatile)]
fn webhook_worker_settings() -> Option<pgrx::JsonB> {
    let settings = wake::snapshot()?.settings?;
    serde_json::from_str(&settings).ok().map(pgrx::JsonB)
}
