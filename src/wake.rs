//! Shared memory between the worker and every backend: the worker's latch (so a commit that
//! queued deliveries wakes it at once) and the figures `webhook_worker_status()` shows.
//! Present only when the library is in `shared_preload_libraries`.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgAtomic, PgLwLock};

/// Address of the worker's `PGPROC` latch (shared memory, same address in every backend),
/// or 0 when no worker is running.
// SAFETY (this and the shared-memory statics below): each name is unique to this extension,
// and each is pg_shmem_init!ed in init() while preloading, before any backend reads it.
static WORKER_LATCH: PgAtomic<AtomicUsize> = unsafe { PgAtomic::new(c"webhook_ext_worker_latch") };
// SAFETY: as WORKER_LATCH.
static WORKER: PgLwLock<WorkerState> = unsafe { PgLwLock::new(c"webhook_ext_worker_state") };
/// Oid of the database the worker serves (0 until it has connected): commits elsewhere queue
/// deliveries nobody serves yet and need not wake it.
// SAFETY: as WORKER_LATCH.
static WORKER_DATABASE: PgAtomic<AtomicU32> =
    unsafe { PgAtomic::new(c"webhook_ext_worker_database") };
/// A commit queued work since the worker last looked: later commits need not set its latch
/// again (one wake-up, not one per commit, however many commit meanwhile).
// SAFETY: as WORKER_LATCH.
static WORK_QUEUED: PgAtomic<AtomicBool> = unsafe { PgAtomic::new(c"webhook_ext_work_queued") };

/// A commit made deliveries due outside the worker (a replay, a reactivated webhook, a manual
/// retry that failed): its next round looks at the due rows even if it knows of none due.
// SAFETY: as WORKER_LATCH.
static DUE_CHANGED: PgAtomic<AtomicBool> = unsafe { PgAtomic::new(c"webhook_ext_due_changed") };

/// A commit changed a webhook's ordering or rate limit (or switched one on or off): the
/// worker reloads them before its next round takes anything.
// SAFETY: as WORKER_LATCH.
static CONTROLS_CHANGED: PgAtomic<AtomicBool> =
    unsafe { PgAtomic::new(c"webhook_ext_controls_changed") };

/// Set in the postmaster before any backend forks, so every backend sees it.
static SHMEM_READY: AtomicBool = AtomicBool::new(false);

pub const LAST_ERROR_CAPACITY: usize = 512;
pub const SETTINGS_CAPACITY: usize = 1024;

#[derive(Copy, Clone)]
pub struct WorkerState {
    pub pid: i32,
    pub started_at_unix: i64,
    pub in_flight: i64,
    pub attempts_total: u64,
    pub last_error_at_unix: i64,
    pub last_error_len: usize,
    pub last_error: [u8; LAST_ERROR_CAPACITY],
    pub settings_len: usize,
    pub settings: [u8; SETTINGS_CAPACITY],
}

impl Default for WorkerState {
    fn default() -> Self {
        WorkerState {
            pid: 0,
            started_at_unix: 0,
            in_flight: 0,
            attempts_total: 0,
            last_error_at_unix: 0,
            last_error_len: 0,
            last_error: [0; LAST_ERROR_CAPACITY],
            settings_len: 0,
            settings: [0; SETTINGS_CAPACITY],
        }
    }
}

unsafe impl PGRXSharedMemory for WorkerState {}

/// What `webhook_worker_status()` reads.
pub struct WorkerSnapshot {
    pub pid: i32,
    pub started_at_unix: i64,
    pub in_flight: i64,
    pub attempts_total: u64,
    pub last_error: Option<String>,
    pub last_error_at_unix: i64,
    /// JSON of the settings the worker runs with.
    pub settings: Option<String>,
}

pub fn init() {
    // SAFETY: a plain global of the backend, set by Postgres while it preloads libraries.
    if unsafe { !pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    pg_shmem_init!(WORKER_LATCH);
    pg_shmem_init!(WORKER);
    pg_shmem_init!(WORKER_DATABASE);
    pg_shmem_init!(WORK_QUEUED);
    pg_shmem_init!(DUE_CHANGED);
    pg_shmem_init!(CONTROLS_CHANGED);
    SHMEM_READY.store(true, Ordering::SeqCst);
    // SAFETY: _PG_init runs in the postmaster before any backend exists; the previous hook is
    // kept and called first, as every ProcessUtility hook must.
    unsafe {
        PREVIOUS_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(wake_after_commit_prepared);
    }
}

static mut PREVIOUS_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

/// `COMMIT PREPARED` commits a transaction another session prepared: its queued deliveries
/// become visible now, in this session, whose own transaction queued nothing and so armed no
/// commit callback. Any COMMIT PREPARED wakes the worker (it is rare, and a wake-up that
/// finds nothing costs one round).
#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn wake_after_commit_prepared(
    statement: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    completion: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: Postgres hands every hook a valid PlannedStmt whose utilityStmt is a Node.
    let commit_prepared = unsafe {
        let node = (*statement).utilityStmt;
        !node.is_null()
            && (*node).type_ == pg_sys::NodeTag::T_TransactionStmt
            && (*(node as *mut pg_sys::TransactionStmt)).kind
                == pg_sys::TransactionStmtKind::TRANS_STMT_COMMIT_PREPARED
    };
    // SAFETY: the arguments are passed on unchanged, to the previous hook or the standard one.
    unsafe {
        match PREVIOUS_PROCESS_UTILITY {
            Some(previous) => previous(
                statement,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                completion,
            ),
            None => pg_sys::standard_ProcessUtility(
                statement,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                completion,
            ),
        }
    }
    // Reached only if it succeeded: the prepared transaction's rows are visible now (it may
    // have made deliveries due, too).
    if commit_prepared {
        DUE_CHANGED.get().store(true, Ordering::Release);
        set_worker_latch();
    }
}

pub fn shared_memory_ready() -> bool {
    SHMEM_READY.load(Ordering::Relaxed)
}

thread_local! {
    static CALLBACK_REGISTERED: Cell<bool> = const { Cell::new(false) };
}
/// This transaction queued a delivery: wake the worker when (and only if) it commits.
static WAKE_ON_COMMIT: AtomicBool = AtomicBool::new(false);
/// This transaction made deliveries due: tell the worker when (and only if) it commits.
static DUE_ON_COMMIT: AtomicBool = AtomicBool::new(false);
/// This transaction changed webhooks' controls: tell the worker when (and only if) it commits.
static CONTROLS_ON_COMMIT: AtomicBool = AtomicBool::new(false);

/// This transaction changes webhooks' ordering or rate limits: when it commits, the worker
/// reloads them.
pub fn controls_changed_on_commit() {
    if !shared_memory_ready() {
        return;
    }
    CONTROLS_ON_COMMIT.store(true, Ordering::Relaxed);
    wake_worker_on_commit();
}

/// Did a commit change webhooks' controls since the worker last asked?
pub fn take_controls_changed() -> bool {
    shared_memory_ready() && CONTROLS_CHANGED.get().swap(false, Ordering::AcqRel)
}

/// This transaction makes deliveries due (webhook_delivery_due): when it commits, the worker
/// wakes and looks at the due rows.
pub fn due_changed_on_commit() {
    if !shared_memory_ready() {
        return;
    }
    DUE_ON_COMMIT.store(true, Ordering::Relaxed);
    wake_worker_on_commit();
}

/// The worker is about to look at the due rows: were any made due since it last asked?
pub fn take_due_changed() -> bool {
    shared_memory_ready() && DUE_CHANGED.get().swap(false, Ordering::AcqRel)
}

/// Arm the commit callback. Cheap enough to call once per queued event.
pub fn wake_worker_on_commit() {
    if !shared_memory_ready() {
        return;
    }
    WAKE_ON_COMMIT.store(true, Ordering::Relaxed);
    if !CALLBACK_REGISTERED.get() {
        // SAFETY: the callback is a #[pg_guard]ed function of this library, which stays loaded
        // for the life of the backend; registered once per backend.
        unsafe { pg_sys::RegisterXactCallback(Some(on_transaction_end), std::ptr::null_mut()) };
        CALLBACK_REGISTERED.set(true);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_transaction_end(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_COMMIT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT
            if WAKE_ON_COMMIT.swap(false, Ordering::Relaxed) =>
        {
            if DUE_ON_COMMIT.swap(false, Ordering::Relaxed) {
                DUE_CHANGED.get().store(true, Ordering::Release);
            }
            if CONTROLS_ON_COMMIT.swap(false, Ordering::Relaxed) {
                CONTROLS_CHANGED.get().store(true, Ordering::Release);
            }
            set_worker_latch();
        }
        // A prepared transaction wakes the worker when COMMIT PREPARED runs (the
        // ProcessUtility hook above), in whatever session that is.
        pg_sys::XactEvent::XACT_EVENT_ABORT
        | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT
        | pg_sys::XactEvent::XACT_EVENT_PREPARE => {
            WAKE_ON_COMMIT.store(false, Ordering::Relaxed);
            DUE_ON_COMMIT.store(false, Ordering::Relaxed);
            CONTROLS_ON_COMMIT.store(false, Ordering::Relaxed);
        }
        _ => {}
    }
}

fn set_worker_latch() {
    let database = WORKER_DATABASE.get().load(Ordering::Acquire);
    // SAFETY: MyDatabaseId is a plain global of this backend.
    if database != 0 && database != u32::from(unsafe { pg_sys::MyDatabaseId }) {
        return;
    }
    // The worker clears the flag before it looks for work: a commit that finds it set is seen
    // by the round that clears it (commits are visible before this callback runs).
    if WORK_QUEUED.get().swap(true, Ordering::AcqRel) {
        return;
    }
    let latch = WORKER_LATCH.get().load(Ordering::Acquire);
    if latch != 0 {
        // SetLatch is safe on another process's latch: it lives in shared memory.
        // SAFETY: the address is the worker's PGPROC latch, in shared memory and valid in every
        // backend; the worker clears it before it exits, and SetLatch on another process's
        // latch is what latches are for.
        unsafe { pg_sys::SetLatch(latch as *mut pg_sys::Latch) };
    }
}

/// The worker is about to look for work: commits from now on wake it again.
pub fn take_queued_work() -> bool {
    WORK_QUEUED.get().swap(false, Ordering::AcqRel)
}

/// A commit queued work since the worker last took it. Its latch may not say so: a lock wait
/// inside a round consumes the latch, and commits that find this flag set do not set it again.
pub fn work_queued() -> bool {
    WORK_QUEUED.get().load(Ordering::Acquire)
}

/// Called by the worker once connected: publish its latch and pid.
pub fn register_worker() {
    let now = unix_now();
    {
        let mut state = WORKER.exclusive();
        *state = WorkerState {
            // SAFETY: plain globals of this backend (the worker), set before its main runs.
            pid: unsafe { pg_sys::MyProcPid },
            started_at_unix: now,
            ..Default::default()
        };
    }
    // SAFETY: plain globals of this backend, set before its main runs.
    WORKER_DATABASE.get().store(
        u32::from(unsafe { pg_sys::MyDatabaseId }),
        Ordering::Release,
    );
    // SAFETY: as above; the latch lives in this backend's PGPROC, in shared memory.
    WORKER_LATCH
        .get()
        .store(unsafe { pg_sys::MyLatch } as usize, Ordering::Release);
    // SAFETY: unregister_worker is #[pg_guard]ed and only touches this library's shared memory.
    unsafe { pg_sys::before_shmem_exit(Some(unregister_worker), pg_sys::Datum::from(0)) };
}

#[pg_guard]
unsafe extern "C-unwind" fn unregister_worker(_code: i32, _arg: pg_sys::Datum) {
    WORKER_LATCH.get().store(0, Ordering::Release);
    WORKER_DATABASE.get().store(0, Ordering::Release);
    let mut state = WORKER.exclusive();
    state.pid = 0;
    state.in_flight = 0;
}

pub fn report_progress(in_flight: usize, attempts_finished: u64) {
    let mut state = WORKER.exclusive();
    state.in_flight = in_flight as i64;
    state.attempts_total += attempts_finished;
}

/// The settings the worker runs with (JSON), after start and every reload.
pub fn publish_settings(json: &str) {
    let mut state = WORKER.exclusive();
    let bytes = truncate_utf8(json, SETTINGS_CAPACITY).as_bytes();
    state.settings[..bytes.len()].copy_from_slice(bytes);
    state.settings_len = bytes.len();
}

/// The worker's latest problem (never contains a secret: callers pass SQL errors and
/// delivery errors, neither of which carries one).
pub fn report_error(message: &str) {
    let mut state = WORKER.exclusive();
    let bytes = truncate_utf8(message, LAST_ERROR_CAPACITY).as_bytes();
    state.last_error[..bytes.len()].copy_from_slice(bytes);
    state.last_error_len = bytes.len();
    state.last_error_at_unix = unix_now();
}

pub fn snapshot() -> Option<WorkerSnapshot> {
    if !shared_memory_ready() {
        return None;
    }
    let state = WORKER.share();
    let last_error = (state.last_error_len > 0)
        .then(|| String::from_utf8_lossy(&state.last_error[..state.last_error_len]).into_owned());
    let settings = (state.pid != 0 && state.settings_len > 0)
        .then(|| String::from_utf8_lossy(&state.settings[..state.settings_len]).into_owned());
    Some(WorkerSnapshot {
        settings,
        pid: state.pid,
        started_at_unix: state.started_at_unix,
        in_flight: state.in_flight,
        attempts_total: state.attempts_total,
        last_error,
        last_error_at_unix: state.last_error_at_unix,
    })
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

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
