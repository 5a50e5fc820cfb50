//! Which deliveries have an attempt in flight right now, in shared memory: each database's
//! worker's (published after each of its rounds, in the worker's slot: see shared::registry)
//! and those of `webhook_retry` in some session (with their database: ids are per database).
//! Nothing durable marks a delivery the worker is sending. The view webhook_delivery shows
//! these as 'delivering', `webhook_retry` refuses them (55006), and the worker leaves a
//! delivery a session holds to that session. Present only when the library is preloaded.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};

use crate::shared::{self, MAX_DATABASES};

/// What a worker ever holds (pacing::MAX_OUTSTANDING).
const WORKER_CAPACITY: usize = webhook_delivery::pacing::MAX_OUTSTANDING;
/// Sessions attempting a delivery by hand at the same moment.
const SESSION_CAPACITY: usize = 64;

#[derive(Copy, Clone)]
struct WorkerSet {
    len: usize,
    /// Sorted, `len` of them.
    ids: [i64; WORKER_CAPACITY],
}

#[derive(Copy, Clone)]
pub struct InFlight {
    /// By worker slot (shared::registry::slot_of).
    workers: [WorkerSet; MAX_DATABASES],
    /// (database oid, delivery id, backend pid); a pid of 0 is a free slot.
    sessions: [(u32, i64, i32); SESSION_CAPACITY],
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight {
            workers: [WorkerSet {
                len: 0,
                ids: [0; WORKER_CAPACITY],
            }; MAX_DATABASES],
            sessions: [(0, 0, 0); SESSION_CAPACITY],
        }
    }
}

impl InFlight {
    fn worker_holds(&self, slot: Option<usize>, delivery_id: i64) -> bool {
        slot.is_some_and(|slot| {
            let set = &self.workers[slot];
            set.ids[..set.len].binary_search(&delivery_id).is_ok()
        })
    }
}

// SAFETY: plain integers and arrays, no pointers: valid at the same address in every process.
unsafe impl PGRXSharedMemory for InFlight {}

// SAFETY: the name is unique to this extension, and it is pg_shmem_init!ed in init() while
// preloading, before any backend reads it.
static IN_FLIGHT: PgLwLock<InFlight> = unsafe { PgLwLock::new(c"webhook_ext_in_flight") };

/// Set in the postmaster before any backend forks, so every backend sees it.
static READY: AtomicBool = AtomicBool::new(false);

pub fn init() {
    // SAFETY: a plain global of the backend, set by Postgres while it preloads libraries.
    if unsafe { !pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    pg_shmem_init!(IN_FLIGHT);
    READY.store(true, Ordering::SeqCst);
}

fn my_pid() -> i32 {
    // SAFETY: a plain global of this backend.
    unsafe { pg_sys::MyProcPid }
}

fn my_database() -> u32 {
    // SAFETY: a plain global of this backend.
    u32::from(unsafe { pg_sys::MyDatabaseId })
}

/// The worker's deliveries in flight are now `current` and `new`, except those of `new` that
/// a session holds, which are returned: the worker must not send them.
pub fn publish_worker(current: impl Iterator<Item = i64>, new: &[i64]) -> Vec<i64> {
    let Some(slot) = shared::registry::my_slot().filter(|_| READY.load(Ordering::Relaxed)) else {
        return vec![];
    };
    let database = my_database();
    let mut held_by_sessions = Vec::new();
    let mut state = IN_FLIGHT.exclusive();
    let mut ids: Vec<i64> = current.collect();
    for &id in new {
        if state
            .sessions
            .iter()
            .any(|&(db, held, pid)| pid != 0 && db == database && held == id)
        {
            held_by_sessions.push(id);
        } else {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids.truncate(WORKER_CAPACITY);
    let set = &mut state.workers[slot];
    set.ids[..ids.len()].copy_from_slice(&ids);
    set.len = ids.len();
    held_by_sessions
}

/// The worker stopped, or starts: nothing of it is in flight.
pub fn clear_worker() {
    if let Some(slot) = shared::registry::my_slot().filter(|_| READY.load(Ordering::Relaxed)) {
        IN_FLIGHT.exclusive().workers[slot].len = 0;
    }
}

thread_local! {
    static CALLBACK_REGISTERED: Cell<bool> = const { Cell::new(false) };
    /// This session holds a delivery: its transaction's end releases it.
    static HOLDING: Cell<bool> = const { Cell::new(false) };
}

/// Hold a delivery for this session's manual attempt until its transaction ends. False if
/// it is in flight already (the worker's, or another session's).
pub fn hold_for_session(delivery_id: i64) -> bool {
    if !READY.load(Ordering::Relaxed) {
        return true;
    }
    if !CALLBACK_REGISTERED.get() {
        // SAFETY: the callback is a #[pg_guard]ed function of this library, which stays loaded
        // for the life of the backend; registered once per backend.
        unsafe { pg_sys::RegisterXactCallback(Some(release_at_end), std::ptr::null_mut()) };
        CALLBACK_REGISTERED.set(true);
    }
    let pid = my_pid();
    let database = my_database();
    let worker_slot = shared::registry::slot_of(database);
    let mut state = IN_FLIGHT.exclusive();
    if state.worker_holds(worker_slot, delivery_id)
        || state
            .sessions
            .iter()
            .any(|&(db, held, owner)| owner != 0 && db == database && held == delivery_id)
    {
        return false;
    }
    match state.sessions.iter_mut().find(|slot| slot.2 == 0) {
        Some(slot) => {
            *slot = (database, delivery_id, pid);
            HOLDING.set(true);
            true
        }
        // More manual attempts at once than slots: refuse this one as busy.
        None => false,
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn release_at_end(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    if matches!(
        event,
        XACT_EVENT_COMMIT
            | XACT_EVENT_ABORT
            | XACT_EVENT_PREPARE
            | XACT_EVENT_PARALLEL_COMMIT
            | XACT_EVENT_PARALLEL_ABORT
    ) && HOLDING.replace(false)
    {
        let pid = my_pid();
        let mut state = IN_FLIGHT.exclusive();
        for slot in state.sessions.iter_mut().filter(|slot| slot.2 == pid) {
            *slot = (0, 0, 0);
        }
    }
}

/// Is an attempt of this delivery in flight elsewhere than in this session? (The view
/// webhook_delivery: in the session attempting it, a delivery shows its recorded state.)
#[pg_extern(stable, parallel_safe, strict)]
fn webhook_delivery_in_flight(delivery_id: i64) -> bool {
    if !READY.load(Ordering::Relaxed) {
        return false;
    }
    let pid = my_pid();
    let database = my_database();
    let worker_slot = shared::registry::slot_of(database);
    let state = IN_FLIGHT.share();
    state.worker_holds(worker_slot, delivery_id)
        || state.sessions.iter().any(|&(db, held, owner)| {
            owner != 0 && owner != pid && db == database && held == delivery_id
        })
}
