//! The workers' slots and status blocks: which database each slot serves, the worker's pid,
//! progress, queue depth, last error and settings JSON, as `webhook_worker_status()` and
//! `webhook_cluster_status()` show them; the launcher reads them to know which worker runs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::SystemTime;

use pgrx::prelude::*;
use webhook_delivery::clock::unix_seconds;

use super::{my_database, shared_memory_ready, truncate_utf8, MAX_DATABASES, REGISTRY, WAKEUPS};

/// After webhook_cluster_status() asked, workers count their queue at each maintenance (every
/// 5 s) for this long.
const QUEUE_DEPTH_WANTED_FOR_SECS: i64 = 60;

/// This process's slot, when it is a delivery worker.
static MY_SLOT: AtomicUsize = AtomicUsize::new(usize::MAX);
/// This worker stops because its database has no webhook_ext: its slot is freed, not kept
/// for a restart.
static RELEASE_SLOT: AtomicBool = AtomicBool::new(false);

pub const LAST_ERROR_CAPACITY: usize = 512;
pub const SETTINGS_CAPACITY: usize = 1024;

#[derive(Copy, Clone)]
pub struct WorkerState {
    pub database: u32,
    pub pid: i32,
    pub started_at_unix: i64,
    pub in_flight: i64,
    pub attempts_total: u64,
    /// As the worker last counted it (-1: not counted yet), and when.
    pub queue_depth: i64,
    pub queue_depth_at_unix: i64,
    pub last_error_at_unix: i64,
    pub last_error_len: usize,
    pub last_error: [u8; LAST_ERROR_CAPACITY],
    pub settings_len: usize,
    pub settings: [u8; SETTINGS_CAPACITY],
}

impl Default for WorkerState {
    fn default() -> Self {
        WorkerState {
            database: 0,
            pid: 0,
            started_at_unix: 0,
            in_flight: 0,
            attempts_total: 0,
            queue_depth: -1,
            queue_depth_at_unix: 0,
            last_error_at_unix: 0,
            last_error_len: 0,
            last_error: [0; LAST_ERROR_CAPACITY],
            settings_len: 0,
            settings: [0; SETTINGS_CAPACITY],
        }
    }
}

/// What the status functions read of one database's worker.
pub struct WorkerSnapshot {
    pub database: u32,
    pub pid: i32,
    pub started_at_unix: i64,
    pub in_flight: i64,
    pub attempts_total: u64,
    pub queue_depth: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at_unix: i64,
    /// JSON of the settings the worker runs with.
    pub settings: Option<String>,
}

/// The slot of `database`'s worker, if it has one.
pub fn slot_of(database: u32) -> Option<usize> {
    if !shared_memory_ready() || database == 0 {
        return None;
    }
    WAKEUPS
        .get()
        .slots
        .iter()
        .position(|slot| slot.database.load(Ordering::Acquire) == database)
}

/// This worker's slot (only in a delivery worker that registered).
pub fn my_slot() -> Option<usize> {
    let slot = MY_SLOT.load(Ordering::Relaxed);
    (slot < MAX_DATABASES).then_some(slot)
}

/// Why a worker could not take a slot.
pub enum NoSlot {
    /// Another worker of this database runs (a launcher that restarted started a second one).
    Duplicate(i32),
    /// MAX_DATABASES databases are served already.
    Full,
}

/// Called by a delivery worker once connected and sure its database has the extension:
/// take this database's slot and publish the latch and pid.
pub fn register_worker() -> Result<(), NoSlot> {
    let database = my_database();
    // SAFETY: plain globals of this backend (the worker), set before its main runs.
    let (pid, latch) = unsafe { (pg_sys::MyProcPid, pg_sys::MyLatch as usize) };
    let index = {
        let mut registry = REGISTRY.exclusive();
        let index = match registry.workers.iter().position(|w| w.database == database) {
            Some(index) if registry.workers[index].pid != 0 => {
                return Err(NoSlot::Duplicate(registry.workers[index].pid))
            }
            Some(index) => index,
            None => registry
                .workers
                .iter()
                .position(|w| w.database == 0)
                .ok_or(NoSlot::Full)?,
        };
        // What the previous worker of this database last saw (attempts, the last error: why
        // it stopped) stays until this one knows better.
        let state = &mut registry.workers[index];
        if state.database != database {
            *state = WorkerState::default();
        }
        *state = WorkerState {
            database,
            pid,
            started_at_unix: unix_seconds(SystemTime::now()),
            in_flight: 0,
            queue_depth: -1,
            settings_len: 0,
            ..*state
        };
        registry
            .no_worker_slot
            .iter_mut()
            .filter(|d| **d == database)
            .for_each(|d| *d = 0);
        let slot = &WAKEUPS.get().slots[index];
        slot.database.store(database, Ordering::Release);
        slot.latch.store(latch, Ordering::Release);
        index
    };
    MY_SLOT.store(index, Ordering::Relaxed);
    // SAFETY: unregister_worker is #[pg_guard]ed and only touches this library's shared memory.
    unsafe { pg_sys::before_shmem_exit(Some(unregister_worker), pg_sys::Datum::from(0)) };
    Ok(())
}

/// The worker delivers (true) or waits for ALTER EXTENSION ... UPDATE (false): only those
/// that deliver share webhook.concurrency.
pub fn set_serving(serving: bool) {
    if let Some(slot) = my_slot() {
        WAKEUPS.get().slots[slot]
            .serving
            .store(serving, Ordering::Release);
    }
}

/// How many databases' workers deliver now (at least 1).
pub fn serving_databases() -> usize {
    if !shared_memory_ready() {
        return 1;
    }
    WAKEUPS
        .get()
        .slots
        .iter()
        .filter(|slot| slot.serving.load(Ordering::Acquire))
        .count()
        .max(1)
}

/// The extension is gone from this worker's database: when it exits, its slot is freed.
pub fn release_slot_at_exit() {
    RELEASE_SLOT.store(true, Ordering::Relaxed);
}

#[pg_guard]
unsafe extern "C-unwind" fn unregister_worker(_code: i32, _arg: pg_sys::Datum) {
    let Some(index) = my_slot() else {
        return;
    };
    let release = RELEASE_SLOT.load(Ordering::Relaxed);
    let mut registry = REGISTRY.exclusive();
    let slot = &WAKEUPS.get().slots[index];
    slot.latch.store(0, Ordering::Release);
    slot.serving.store(false, Ordering::Release);
    let state = &mut registry.workers[index];
    state.pid = 0;
    state.in_flight = 0;
    if release {
        *state = WorkerState::default();
        slot.database.store(0, Ordering::Release);
        slot.work_queued.store(false, Ordering::Release);
        slot.due_changed.store(false, Ordering::Release);
        slot.controls_changed.store(false, Ordering::Release);
        slot.webhooks_deleted.store(false, Ordering::Release);
    }
    MY_SLOT.store(usize::MAX, Ordering::Relaxed);
}

fn with_my_state(f: impl FnOnce(&mut WorkerState)) {
    if let Some(index) = my_slot() {
        f(&mut REGISTRY.exclusive().workers[index]);
    }
}

pub fn report_progress(in_flight: usize, attempts_finished: u64) {
    with_my_state(|state| {
        state.in_flight = in_flight as i64;
        state.attempts_total += attempts_finished;
    });
}

/// webhook_cluster_status() wants every worker's queue depth.
pub fn want_queue_depths() {
    if !shared_memory_ready() {
        return;
    }
    let until = unix_seconds(SystemTime::now()) + QUEUE_DEPTH_WANTED_FOR_SECS;
    for slot in &WAKEUPS.get().slots {
        slot.queue_depth_wanted_until
            .store(until, Ordering::Release);
    }
}

/// Should this worker count its queue at its next maintenance?
pub fn queue_depth_wanted() -> bool {
    my_slot().is_some_and(|slot| {
        WAKEUPS.get().slots[slot]
            .queue_depth_wanted_until
            .load(Ordering::Acquire)
            > unix_seconds(SystemTime::now())
    })
}

pub fn report_queue_depth(depth: i64) {
    with_my_state(|state| {
        state.queue_depth = depth;
        state.queue_depth_at_unix = unix_seconds(SystemTime::now());
    });
}

/// The settings the worker runs with (JSON), after start and every reload.
pub fn publish_settings(json: &str) {
    with_my_state(|state| {
        let bytes = truncate_utf8(json, SETTINGS_CAPACITY).as_bytes();
        state.settings[..bytes.len()].copy_from_slice(bytes);
        state.settings_len = bytes.len();
    });
}

/// The worker's latest problem (never contains a secret: callers pass SQL errors and
/// delivery errors, neither of which carries one).
pub fn report_error(message: &str) {
    with_my_state(|state| {
        let bytes = truncate_utf8(message, LAST_ERROR_CAPACITY).as_bytes();
        state.last_error[..bytes.len()].copy_from_slice(bytes);
        state.last_error_len = bytes.len();
        state.last_error_at_unix = unix_seconds(SystemTime::now());
    });
}

fn snapshot_of(state: &WorkerState) -> WorkerSnapshot {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    WorkerSnapshot {
        database: state.database,
        pid: state.pid,
        started_at_unix: state.started_at_unix,
        in_flight: state.in_flight,
        attempts_total: state.attempts_total,
        // A count older than the time it is kept fresh for is not shown as if it were current.
        queue_depth: (state.queue_depth >= 0
            && unix_seconds(SystemTime::now()) - state.queue_depth_at_unix
                <= QUEUE_DEPTH_WANTED_FOR_SECS)
            .then_some(state.queue_depth),
        last_error: (state.last_error_len > 0)
            .then(|| text(&state.last_error[..state.last_error_len])),
        last_error_at_unix: state.last_error_at_unix,
        settings: (state.pid != 0 && state.settings_len > 0)
            .then(|| text(&state.settings[..state.settings_len])),
    }
}

/// This database's worker, as shared memory shows it: None without preload, Some(None) when
/// this database has no worker slot.
pub fn snapshot() -> Option<Option<WorkerSnapshot>> {
    if !shared_memory_ready() {
        return None;
    }
    let database = my_database();
    let registry = REGISTRY.share();
    Some(
        registry
            .workers
            .iter()
            .find(|w| w.database == database)
            .map(snapshot_of),
    )
}

/// Every database's worker slot in use.
pub fn cluster_snapshot() -> Vec<WorkerSnapshot> {
    if !shared_memory_ready() {
        return vec![];
    }
    let registry = REGISTRY.share();
    registry
        .workers
        .iter()
        .filter(|w| w.database != 0)
        .map(snapshot_of)
        .collect()
}

/// Every worker slot is taken: no other database can be served.
pub fn all_slots_taken() -> bool {
    shared_memory_ready() && REGISTRY.share().workers.iter().all(|w| w.database != 0)
}

/// The pid of `database`'s worker per its slot (0: it has a slot and is not running; None:
/// no slot).
pub fn worker_pid(database: u32) -> Option<i32> {
    let registry = REGISTRY.share();
    registry
        .workers
        .iter()
        .find(|w| w.database == database)
        .map(|w| w.pid)
}

/// Free the slots of stopped workers whose database is not among `keep` (dropped, or no
/// longer served).
pub fn free_slots_except(keep: &[u32]) {
    let mut registry = REGISTRY.exclusive();
    for (index, state) in registry.workers.iter_mut().enumerate() {
        if state.database != 0 && state.pid == 0 && !keep.contains(&state.database) {
            *state = WorkerState::default();
            let slot = &WAKEUPS.get().slots[index];
            slot.database.store(0, Ordering::Release);
            slot.work_queued.store(false, Ordering::Release);
            slot.due_changed.store(false, Ordering::Release);
            slot.controls_changed.store(false, Ordering::Release);
            slot.webhooks_deleted.store(false, Ordering::Release);
        }
    }
}
