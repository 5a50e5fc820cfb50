//! webhook_ext: PostgreSQL as a reliable webhook sender. This file is the manifest. A
//! launcher (launcher) starts one worker per database served; the path of one delivery is:
//! `webhook_trigger`/`webhook_emit` (sql/api.sql, api::events) queue rows and arm the commit
//! wake-up (shared::wake) → that database's worker (worker) walks them (store,
//! webhook_delivery::walk), marks them in flight in shared memory (in_flight), signs and sends
//! them on its HTTP pool (webhook_delivery crate) → records outcomes and schedules retries
//! (attempt, store). What workers, launcher and backends share (latches, the workers' slots and
//! status, the launcher's requests, the ProcessUtility hook) is in shared/.

use pgrx::prelude::*;

mod api;
mod attempt;
mod in_flight;
mod launcher;
mod pinned;
mod settings;
mod shared;
mod store;
mod worker;

::pgrx::pg_module_magic!();

pgrx::extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
pgrx::extension_sql_file!("../sql/api.sql", name = "api", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    settings::init();
    shared::init();
    in_flight::init();
    launcher::init();
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "shared_preload_libraries = 'webhook_ext'",
            "webhook.allowed_networks = '127.0.0.1/32'",
        ]
    }
}
