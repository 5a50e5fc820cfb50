//! The launcher's side of shared memory: its latch and pid, its latest problem, the databases
//! that asked it for a worker, and those whose worker waits for a background worker slot.

use std::sync::atomic::Ordering;

use pgrx::prelude::*;

use super::wake::set_latch;
use super::{
    my_database, shared_memory_ready, truncate_utf8, LAST_ERROR_CAPACITY, MAX_DATABASES, REGISTRY,
    WAKEUPS,
};

/// What the launcher says: its pid (0: not running), its latest problem, and whether this
/// database waits for a background worker slot.
pub struct LauncherSnapshot {
    pub pid: i32,
    pub last_error: Option<String>,
    pub waiting_for_worker_slot: bool,
}

pub fn launcher_snapshot() -> Option<LauncherSnapshot> {
    if !shared_memory_ready() {
        return None;
    }
    let database = my_database();
    let registry = REGISTRY.share();
    Some(LauncherSnapshot {
        pid: registry.launcher_pid,
        last_error: (registry.launcher_error_len > 0).then(|| {
            String::from_utf8_lossy(&registry.launcher_error[..registry.launcher_error_len])
                .into_owned()
        }),
        waiting_for_worker_slot: registry.no_worker_slot.contains(&database),
    })
}

/// A commit ran CREATE EXTENSION webhook_ext in `database`: ask the launcher for a worker.
pub(super) fn request_worker(database: u32) {
    if !shared_memory_ready() || database == 0 {
        return;
    }
    let wakeups = WAKEUPS.get();
    let queued = wakeups
        .requests
        .iter()
        .any(|r| r.load(Ordering::Acquire) == database)
        || wakeups.requests.iter().any(|r| {
            r.compare_exchange(0, database, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        });
    if !queued {
        wakeups.requests_overflow.store(true, Ordering::Release);
    }
    set_latch(wakeups.launcher_latch.load(Ordering::Acquire));
}

/// The databases that asked for a worker since the launcher last looked, and whether some
/// asked that did not fit (then it looks at every database it does not serve).
pub fn take_worker_requests() -> (Vec<u32>, bool) {
    let wakeups = WAKEUPS.get();
    let requests = wakeups
        .requests
        .iter()
        .map(|r| r.swap(0, Ordering::AcqRel))
        .filter(|&d| d != 0)
        .collect();
    (
        requests,
        wakeups.requests_overflow.swap(false, Ordering::AcqRel),
    )
}

/// Called by the launcher once started: publish its latch and pid.
pub fn register_launcher() {
    // SAFETY: plain globals of this backend (the launcher).
    let (pid, latch) = unsafe { (pg_sys::MyProcPid, pg_sys::MyLatch as usize) };
    {
        let mut registry = REGISTRY.exclusive();
        registry.launcher_pid = pid;
        registry.launcher_error_len = 0;
    }
    WAKEUPS.get().launcher_latch.store(latch, Ordering::Release);
    // SAFETY: unregister_launcher is #[pg_guard]ed and only touches this library's shared memory.
    unsafe { pg_sys::before_shmem_exit(Some(unregister_launcher), pg_sys::Datum::from(0)) };
}

#[pg_guard]
unsafe extern "C-unwind" fn unregister_launcher(_code: i32, _arg: pg_sys::Datum) {
    WAKEUPS.get().launcher_latch.store(0, Ordering::Release);
    REGISTRY.exclusive().launcher_pid = 0;
}

/// The launcher's latest problem (or none: empty).
pub fn report_launcher_error(message: &str) {
    let mut registry = REGISTRY.exclusive();
    let bytes = truncate_utf8(message, LAST_ERROR_CAPACITY).as_bytes();
    registry.launcher_error[..bytes.len()].copy_from_slice(bytes);
    registry.launcher_error_len = bytes.len();
}

/// The databases whose worker waits for a background worker slot.
pub fn set_waiting_for_worker_slot(databases: &[u32]) {
    let mut registry = REGISTRY.exclusive();
    registry.no_worker_slot = [0; MAX_DATABASES];
    for (entry, &database) in registry.no_worker_slot.iter_mut().zip(databases) {
        *entry = database;
    }
}

/// The databases whose worker waits for a background worker slot.
pub fn waiting_for_worker_slot() -> Vec<u32> {
    if !shared_memory_ready() {
        return vec![];
    }
    REGISTRY
        .share()
        .no_worker_slot
        .iter()
        .copied()
        .filter(|&d| d != 0)
        .collect()
}
