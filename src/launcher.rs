//! The launcher: one background worker (started by `shared_preload_libraries`, connected to no
//! database) that starts a delivery worker (worker) in each database served: those that
//! `webhook.databases` names, or all of them, when the extension is installed there.
//!
//! It cannot read another database's `pg_extension`, so it asks: it starts a worker in each
//! database it has not looked at yet, which checks and stops at once where the extension is
//! absent (it frees its database for a `DROP DATABASE` within milliseconds). Later,
//! `CREATE EXTENSION webhook_ext` asks for a worker when it commits (shared::utility_hook:
//! the ProcessUtility hook), and a database created from a template that has the extension is
//! looked at when the launcher first sees it (it reads `pg_database`, a shared catalog, every
//! few seconds). A worker that stops for another reason (an error, `pg_terminate_backend`,
//! `DROP DATABASE ... WITH (FORCE)`) is started again after RESTART_DELAY if its database still
//! exists; the others never notice.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, DynamicBackgroundWorker,
    SignalWakeFlags,
};
use pgrx::pg_sys;
use pgrx::prelude::*;
use webhook_delivery::databases::Served;

use crate::{settings, shared};

/// How often the launcher reads pg_database (new and dropped databases) without being woken.
const SCAN_INTERVAL: Duration = Duration::from_secs(2);
/// A worker that stopped on an error (or was terminated) starts again after this long.
const RESTART_DELAY: Duration = Duration::from_secs(5);
/// After no background worker slot was free (max_worker_processes), try again this often.
const NO_SLOT_RETRY: Duration = Duration::from_secs(10);
/// Workers started and not yet settled (they look whether the extension is installed) at
/// once: a cluster of many databases does not take every background worker slot at startup.
const STARTING_AT_ONCE: usize = 4;

pub fn init() {
    // SAFETY: a plain global of the backend, set by Postgres while it preloads libraries.
    if unsafe { !pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    BackgroundWorkerBuilder::new("webhook_ext launcher")
        .set_type("webhook_ext launcher")
        .set_function("webhook_ext_launcher_main")
        .set_library("webhook_ext")
        .enable_spi_access()
        .set_restart_time(Some(RESTART_DELAY))
        .load();
}

/// What the launcher knows of one database.
enum State {
    /// Not looked at yet: start a worker, which stops at once if the extension is absent.
    Unknown,
    /// A worker was started (by this launcher: `handle`; or by an earlier one: only its slot
    /// says so).
    Started,
    /// Its worker stopped because the extension is not installed: wait for CREATE EXTENSION.
    Absent,
    /// Its worker stopped otherwise: start it again then.
    RestartAt(Instant),
    /// No background worker slot was free: try again then.
    NoWorkerSlot(Instant),
}

struct Database {
    name: String,
    state: State,
    handle: Option<DynamicBackgroundWorker>,
    /// CREATE EXTENSION committed here while a worker was running that may have looked
    /// before: once it stops, start another at once.
    requested: bool,
    /// The missing worker slot was logged already.
    no_slot_logged: bool,
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn webhook_ext_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // No database: it reads only pg_database, a shared catalog.
    BackgroundWorker::connect_worker_to_spi(None, None);
    shared::launcher::register_launcher();
    let served = settings::served();
    log!(
        "webhook_ext launcher started: serving {} ({})",
        match &served {
            Served::All => "every database where webhook_ext is installed".to_string(),
            Served::Listed(names) => format!("databases {}", names.join(", ")),
        },
        settings::served_setting()
    );
    let mut launcher = Launcher {
        served,
        databases: HashMap::new(),
        last_scan: None,
    };
    loop {
        if BackgroundWorker::sighup_received() {
            // SAFETY: the main thread, outside any transaction, as postgres.c does on SIGHUP.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let sleep = launcher.tick();
        if !wait(sleep) {
            break;
        }
    }
    // Exit code 1: terminated on its own (pg_terminate_backend) the launcher is restarted by
    // the postmaster; its workers keep running meanwhile and the next launcher finds them.
    // SAFETY: the main thread, outside any transaction.
    unsafe { pg_sys::proc_exit(1) };
}

struct Launcher {
    served: Served,
    databases: HashMap<u32, Database>,
    last_scan: Option<Instant>,
}

impl Launcher {
    /// Look at what changed and start the workers that are due. Returns how long to sleep.
    fn tick(&mut self) -> Duration {
        let (requests, overflow) = shared::launcher::take_worker_requests();
        let scan_due = self
            .last_scan
            .is_none_or(|at| at.elapsed() >= SCAN_INTERVAL)
            || !requests.is_empty()
            || overflow;
        if scan_due {
            self.scan();
        }
        for oid in requests {
            if let Some(database) = self.databases.get_mut(&oid) {
                database.requested = true;
            }
        }
        if overflow {
            self.databases
                .values_mut()
                .for_each(|database| database.requested = true);
        }

        let now = Instant::now();
        let mut starting = 0;
        let mut oids: Vec<u32> = self.databases.keys().copied().collect();
        oids.sort_unstable();
        // First learn which workers stopped, then start what is due.
        for &oid in &oids {
            let database = self.databases.get_mut(&oid).expect("listed");
            if !matches!(database.state, State::Started) {
                continue;
            }
            let status = match &database.handle {
                Some(handle) => match handle.pid() {
                    Ok(_) => BackgroundWorkerStatus::Started,
                    Err(status) => status,
                },
                // Started by an earlier launcher: its slot says whether it runs.
                None if shared::registry::worker_pid(oid).is_some_and(|pid| pid != 0) => {
                    BackgroundWorkerStatus::Started
                }
                None => BackgroundWorkerStatus::Stopped,
            };
            match status {
                BackgroundWorkerStatus::Stopped => {
                    database.handle = None;
                    // A worker that found the extension keeps its slot when it stops on an
                    // error; one that found none never took a slot, or freed it.
                    database.state = match shared::registry::worker_pid(oid) {
                        Some(_) => State::RestartAt(now + RESTART_DELAY),
                        None => State::Absent,
                    };
                }
                // Not settled until it took its slot. (A request stays until this worker
                // stops: one that looked just before the CREATE EXTENSION committed, a DROP
                // and CREATE in quick succession, is on its way out, and another must follow.)
                BackgroundWorkerStatus::Started | BackgroundWorkerStatus::NotYetStarted
                    if shared::registry::worker_pid(oid).is_none_or(|pid| pid == 0) =>
                {
                    starting += 1;
                }
                _ => {}
            }
        }
        let mut waiting_for_slot = Vec::new();
        for &oid in &oids {
            let database = self.databases.get_mut(&oid).expect("listed");
            let due = match database.state {
                State::Unknown => true,
                State::Started => false,
                State::Absent => database.requested,
                State::RestartAt(at) => at <= now || database.requested,
                State::NoWorkerSlot(at) => {
                    waiting_for_slot.push(oid);
                    at <= now
                }
            };
            if !due || starting >= STARTING_AT_ONCE {
                continue;
            }
            database.requested = false;
            match start_worker(oid, &database.name) {
                Some(handle) => {
                    database.handle = Some(handle);
                    database.state = State::Started;
                    database.no_slot_logged = false;
                    waiting_for_slot.retain(|&w| w != oid);
                    starting += 1;
                }
                None => {
                    database.state = State::NoWorkerSlot(now + NO_SLOT_RETRY);
                    if !waiting_for_slot.contains(&oid) {
                        waiting_for_slot.push(oid);
                    }
                    let message = format!(
                        "no background worker slot is free to start the worker of database \"{}\": raise max_worker_processes (now {}) and restart; trying again every {} s",
                        database.name,
                        max_worker_processes(),
                        NO_SLOT_RETRY.as_secs()
                    );
                    if !database.no_slot_logged {
                        warning!("webhook_ext launcher: {message}");
                        database.no_slot_logged = true;
                    }
                    shared::launcher::report_launcher_error(&message);
                }
            }
        }
        shared::launcher::set_waiting_for_worker_slot(&waiting_for_slot);
        if starting > 0 {
            // Workers settle within moments; the postmaster's notice of a stop wakes us too.
            Duration::from_millis(200)
        } else {
            SCAN_INTERVAL
        }
    }

    /// Read pg_database: add the databases served that appeared, forget those gone.
    fn scan(&mut self) {
        self.last_scan = Some(Instant::now());
        let listed: Vec<(u32, String)> = connectable_databases()
            .into_iter()
            .filter(|(_, name)| self.served.includes(name))
            .collect();
        let oids: Vec<u32> = listed.iter().map(|(oid, _)| *oid).collect();
        // Dropped, or made a template (a worker connected to a template makes CREATE DATABASE
        // fail): its worker, if it runs still, stops.
        let gone: Vec<u32> = self
            .databases
            .keys()
            .filter(|oid| !oids.contains(oid))
            .copied()
            .collect();
        for oid in gone {
            if let Some(handle) = self.databases.remove(&oid).and_then(|d| d.handle) {
                let _stopping = handle.terminate();
            }
        }
        for (oid, name) in listed {
            self.databases.entry(oid).or_insert_with(|| {
                // A worker an earlier launcher started is running still: adopt it.
                let state = match shared::registry::worker_pid(oid) {
                    Some(pid) if pid != 0 => State::Started,
                    _ => State::Unknown,
                };
                Database {
                    name,
                    state,
                    handle: None,
                    requested: false,
                    no_slot_logged: false,
                }
            });
        }
        shared::registry::free_slots_except(&oids);
    }
}

/// Register a delivery worker for `database`; None when no background worker slot is free.
fn start_worker(database: u32, name: &str) -> Option<DynamicBackgroundWorker> {
    // SAFETY: a plain global of this process.
    let pid = unsafe { pg_sys::MyProcPid };
    // SAFETY: the handle is palloc'd in the current context: TopMemoryContext keeps it for
    // the launcher's life (it lives as long as the worker it describes, or a little longer).
    let old = unsafe { pg_sys::MemoryContextSwitchTo(pg_sys::TopMemoryContext) };
    let handle = BackgroundWorkerBuilder::new(&format!("webhook_ext worker for {name}"))
        .set_type("webhook_ext worker")
        .set_function("webhook_ext_worker_main")
        .set_library("webhook_ext")
        .enable_spi_access()
        .set_argument(Some(pg_sys::Datum::from(database)))
        // The launcher decides about restarts: a worker whose database was dropped must not
        // be started again by the postmaster.
        .set_restart_time(None)
        .set_notify_pid(pid)
        .load_dynamic()
        .ok();
    // SAFETY: back to the context that was current.
    unsafe { pg_sys::MemoryContextSwitchTo(old) };
    handle
}

fn max_worker_processes() -> i32 {
    // SAFETY: a plain global of this process.
    unsafe { pg_sys::max_worker_processes }
}

/// The databases a worker may connect to: not templates (a connection to one makes CREATE
/// DATABASE fail), connections allowed, not half-dropped. (oid, name).
fn connectable_databases() -> Vec<(u32, String)> {
    let mut found = Vec::new();
    // SAFETY: the launcher's main thread, outside any transaction: it starts one to read the
    // shared catalog pg_database with a plain heap scan (no database is needed for that, as
    // for the logical replication launcher); the names are copied before it ends.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::GetTransactionSnapshot();
        let relation = pg_sys::table_open(
            pg_sys::DatabaseRelationId,
            pg_sys::AccessShareLock as pg_sys::LOCKMODE,
        );
        let scan = pg_sys::table_beginscan_catalog(relation, 0, std::ptr::null_mut());
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            let row = &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_database>(tuple);
            // datconnlimit -2: a DROP DATABASE was interrupted; it cannot be connected to.
            if row.datistemplate || !row.datallowconn || row.datconnlimit == -2 {
                continue;
            }
            let name = std::ffi::CStr::from_ptr(row.datname.data.as_ptr())
                .to_string_lossy()
                .into_owned();
            found.push((u32::from(row.oid), name));
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(relation, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        pg_sys::CommitTransactionCommand();
    }
    found
}

/// Sleep until woken (a request, a worker started or stopped) or `timeout`. False: stop.
fn wait(timeout: Duration) -> bool {
    let events = pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH;
    // SAFETY: the main thread waits on its own latch.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            events as i32,
            timeout.as_millis() as std::ffi::c_long,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    pg_sys::check_for_interrupts!();
    !BackgroundWorker::sigterm_received()
}
