//! webhook_worker_status(): is this database's worker running, and what is it doing;
//! webhook_cluster_status(): the same for every database served.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use crate::pinned::PinnedSearchPath;
use crate::{settings, shared};

/// The worker process as shared memory shows it; `webhook_worker_status()` (sql/api.sql)
/// adds the settings.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile)]
pub fn webhook_worker_process() -> TableIterator<
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
            let schema = crate::store::quoted_schema(&installation.schema);
            let sql = if installation.version == env!("CARGO_PKG_VERSION") {
                crate::store::queue_depth_sql(&schema)
            } else {
                // An installation waiting for ALTER EXTENSION ... UPDATE: its old table.
                format!("SELECT count(*) FROM {schema}.webhook_delivery WHERE status IN ('pending', 'delivering')")
            };
            Spi::get_one::<i64>(&sql).ok().flatten()
        })
        .unwrap_or(0);
    let database = current_database();
    let timestamp = |unix: i64| (unix > 0).then(|| pgrx::datum::to_timestamp(unix as f64));

    let row = match (shared::registry::snapshot(), shared::launcher::launcher_snapshot()) {
        (Some(Some(s)), Some(launcher)) => {
            let running = s.pid != 0;
            let message = if running {
                format!("worker running (pid {}) for database {database}", s.pid)
            } else if launcher.waiting_for_worker_slot {
                no_worker_slot_message()
            } else {
                format!("the worker of database {database} stopped (the launcher starts it again within seconds; last_error says why it stopped)")
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
        (Some(None), Some(launcher)) => {
            let (message, last_error) = unserved_message(&database, &launcher);
            (
                false, None, database, None, queue_depth, 0, 0, last_error, None, message,
            )
        }
        _ => (
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
    };
    TableIterator::once(row)
}

fn current_database() -> String {
    // SAFETY: MyDatabaseId is a plain global of this backend.
    crate::store::database_name(unsafe { pg_sys::MyDatabaseId })
}

fn no_worker_slot_message() -> String {
    format!(
        "no background worker slot is free for this database's worker: raise max_worker_processes (now {}) and restart; events are queued meanwhile",
        // SAFETY: a plain global of this backend.
        unsafe { pg_sys::max_worker_processes }
    )
}

/// Why this database has no worker, and what to do about it (with the launcher's last
/// problem when that is the reason).
fn unserved_message(
    database: &str,
    launcher: &shared::launcher::LauncherSnapshot,
) -> (String, Option<String>) {
    // SAFETY: a plain global of this backend; the catalog lookup copies what it returns.
    let is_template = unsafe {
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::DATABASEOID as i32,
            pg_sys::Datum::from(pg_sys::MyDatabaseId),
        );
        if tuple.is_null() {
            false
        } else {
            let row = &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_database>(tuple);
            let template = row.datistemplate;
            pg_sys::ReleaseSysCache(tuple);
            template
        }
    };
    if is_template {
        return (
            format!("database {database} is a template: templates are never served (a worker connected to one would make CREATE DATABASE fail); events are queued meanwhile"),
            None,
        );
    }
    if !settings::served().includes(database) {
        return (
            format!(
                "database {database} is not served: {} does not include it; add it to webhook.databases (or set webhook.databases = '*') and restart; events are queued meanwhile",
                settings::served_setting()
            ),
            None,
        );
    }
    if launcher.waiting_for_worker_slot {
        return (no_worker_slot_message(), launcher.last_error.clone());
    }
    if shared::registry::all_slots_taken() {
        return (
            format!(
                "database {database} is not served: {} databases are served already, the most one server serves; events are queued meanwhile",
                shared::MAX_DATABASES
            ),
            None,
        );
    }
    if launcher.pid == 0 {
        return (
            "the webhook_ext launcher is not running (it restarts within seconds; see the server log); events are queued meanwhile".to_string(),
            launcher.last_error.clone(),
        );
    }
    (
        format!("the worker of database {database} is starting (the launcher starts it within seconds of CREATE EXTENSION)"),
        None,
    )
}

/// Every database served, as shared memory shows it (`webhook_cluster_status()` in
/// sql/api.sql adds the names, and leaves out databases dropped meanwhile).
#[allow(clippy::type_complexity)]
#[pg_extern(volatile)]
fn webhook_cluster_process() -> TableIterator<
    'static,
    (
        name!(database_oid, pg_sys::Oid),
        name!(pid, Option<i32>),
        name!(running, bool),
        name!(queue_depth, Option<i64>),
        name!(in_flight, i32),
        name!(last_error, Option<String>),
    ),
> {
    // Each worker counts its queue at its next maintenance (within 5 s), for a minute.
    shared::registry::want_queue_depths();
    let mut rows: Vec<_> = shared::registry::cluster_snapshot()
        .into_iter()
        .map(|s| {
            let running = s.pid != 0;
            (
                pg_sys::Oid::from(s.database),
                running.then_some(s.pid),
                running,
                s.queue_depth,
                s.in_flight.min(i32::MAX as i64) as i32,
                s.last_error,
            )
        })
        .collect();
    for database in shared::launcher::waiting_for_worker_slot() {
        if !rows.iter().any(|row| row.0 == pg_sys::Oid::from(database)) {
            rows.push((
                pg_sys::Oid::from(database),
                None,
                false,
                None,
                0,
                Some(no_worker_slot_message()),
            ));
        }
    }
    TableIterator::new(rows)
}

/// The settings the running worker uses (after its last reload); NULL without a worker.
#[pg_extern(volatile)]
fn webhook_worker_settings() -> Option<pgrx::JsonB> {
    let settings = shared::registry::snapshot()??.settings?;
    serde_json::from_str(&settings).ok().map(pgrx::JsonB)
}
