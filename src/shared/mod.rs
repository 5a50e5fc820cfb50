//! Shared memory between the delivery workers (one per database served), their launcher and
//! every backend. Present only when the library is in `shared_preload_libraries`. The two
//! shared-memory objects are laid out and initialised here, once; each submodule holds one
//! concern of them:
//! - [`wake`]: each worker's latch and the commit callback that sets it (so a commit that
//!   queued deliveries wakes the worker of its own database at once);
//! - [`registry`]: the workers' slots and status blocks (state, last error, settings JSON,
//!   queue depth), read by `webhook_worker_status()` and `webhook_cluster_status()`;
//! - [`launcher`]: the launcher's side (its latch and status, the databases that asked it for a
//!   worker, those waiting for a background worker slot);
//! - [`utility_hook`]: the ProcessUtility hook (COMMIT PREPARED wake-ups, statements that need
//!   a database alone, CREATE EXTENSION webhook_ext).

pub mod launcher;
pub mod registry;
pub mod utility_hook;
pub mod wake;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgAtomic, PgLwLock};

use registry::{WorkerState, LAST_ERROR_CAPACITY};
use utility_hook::Leaving;
use wake::WakeSlot;

/// Databases served at once (one worker slot each). More are refused with a warning.
pub const MAX_DATABASES: usize = 64;

/// What commits, the ProcessUtility hook and the workers read and write lock-free: each
/// database's wake slot (wake), the launcher's latch and the worker requests (launcher), the
/// databases whose worker must leave (utility_hook).
pub struct Wakeups {
    slots: [WakeSlot; MAX_DATABASES],
    /// The launcher's latch, 0 while it is not running.
    launcher_latch: AtomicUsize,
    /// Databases where `CREATE EXTENSION webhook_ext` committed: the launcher starts a worker
    /// there (0: a free entry).
    requests: [AtomicU32; MAX_DATABASES],
    /// More requests than entries: the launcher looks at every database it does not serve.
    requests_overflow: AtomicBool,
    /// Databases a statement needs without other sessions (utility_hook).
    leaving: [Leaving; 8],
}

impl Default for Wakeups {
    fn default() -> Self {
        Wakeups {
            slots: std::array::from_fn(|_| WakeSlot::default()),
            launcher_latch: AtomicUsize::new(0),
            requests: std::array::from_fn(|_| AtomicU32::new(0)),
            requests_overflow: AtomicBool::new(false),
            leaving: std::array::from_fn(|_| Leaving::default()),
        }
    }
}

// SAFETY: atomics only, no pointers into process memory (the latch addresses are in shared
// memory, the same in every process).
unsafe impl PGRXSharedMemory for Wakeups {}

// SAFETY (this and REGISTRY): each name is unique to this extension, and each is pg_shmem_init!ed
// in init() while preloading, before any backend reads it.
static WAKEUPS: PgAtomic<Wakeups> = unsafe { PgAtomic::new(c"webhook_ext_wakeups") };
// SAFETY: as WAKEUPS.
static REGISTRY: PgLwLock<Registry> = unsafe { PgLwLock::new(c"webhook_ext_registry") };

/// Set in the postmaster before any backend forks, so every backend sees it.
static SHMEM_READY: AtomicBool = AtomicBool::new(false);

/// What is read and written under REGISTRY's lock: the workers' status blocks (registry) and
/// the launcher's status (launcher).
#[derive(Copy, Clone)]
pub struct Registry {
    workers: [WorkerState; MAX_DATABASES],
    launcher_pid: i32,
    launcher_error_len: usize,
    launcher_error: [u8; LAST_ERROR_CAPACITY],
    /// Databases whose worker the launcher could not start for want of a background worker
    /// slot (max_worker_processes); 0: a free entry.
    no_worker_slot: [u32; MAX_DATABASES],
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            workers: [WorkerState::default(); MAX_DATABASES],
            launcher_pid: 0,
            launcher_error_len: 0,
            launcher_error: [0; LAST_ERROR_CAPACITY],
            no_worker_slot: [0; MAX_DATABASES],
        }
    }
}

// SAFETY: plain integers and byte arrays, no pointers.
unsafe impl PGRXSharedMemory for Registry {}

pub fn init() {
    // SAFETY: a plain global of the backend, set by Postgres while it preloads libraries.
    if unsafe { !pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    pg_shmem_init!(WAKEUPS);
    pg_shmem_init!(REGISTRY);
    SHMEM_READY.store(true, Ordering::SeqCst);
    utility_hook::install();
}

fn my_database() -> u32 {
    // SAFETY: a plain global of this backend.
    u32::from(unsafe { pg_sys::MyDatabaseId })
}

pub fn shared_memory_ready() -> bool {
    SHMEM_READY.load(Ordering::Relaxed)
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
