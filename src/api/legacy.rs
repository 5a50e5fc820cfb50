//! C symbols that installed SQL of older releases still calls. The library of a new release
//! must answer them until `ALTER EXTENSION webhook_ext UPDATE` replaces that SQL; nothing a
//! fresh install or an updated one creates refers to them.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

/// The symbol `webhook_worker_status_wrapper`, called by releases 0.1.0 (its SQL
/// `webhook_worker_status()`) to 0.4.0 (their `webhook_worker_process()`) until
/// `ALTER EXTENSION webhook_ext UPDATE` to 0.5.0, whose SQL calls
/// `webhook_worker_process_wrapper`: the same function.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, sql = false)]
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
    super::status::webhook_worker_process()
}
