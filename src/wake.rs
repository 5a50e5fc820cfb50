//! Shared memory between the delivery workers (one per database served), their launcher and
//! every backend: each worker's latch (so a commit that queued deliveries wakes the worker of
//! its own database at once), the launcher's latch and the databases that asked it for a
//! worker, and the figures `webhook_worker_status()` and `webhook_cluster_status()` show.
//! Present only when the library is in `shared_preload_libraries`.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicUsize, Ordering};

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgAtomic, PgLwLock};

/// Databases served at once (one worker slot each). More are refused with a warning.
pub const MAX_DATABASES: usize = 64;

/// What a commit needs to wake one database's worker, lock-free (commits read it).
#[derive(Default)]
pub struct WakeSlot {
    /// Oid of the database this slot belongs to, 0 when free.
    database: AtomicU32,
    /// Address of the worker's `PGPROC` latch (shared memory, same address in every backend),
    /// 0 while no worker runs.
    latch: AtomicUsize,
    /// A commit queued work since the worker last looked: later commits need not set its
    /// latch again (one wake-up, not one per commit, however many commit meanwhile).
    work_queued: AtomicBool,
    /// A commit made deliveries due outside the worker (a replay, a reactivated webhook, a
    /// manual retry that failed): its next round looks at the due rows even if it knows of
    /// none due.
    due_changed: AtomicBool,
    /// A commit changed a webhook's ordering or rate limit (or switched one on or off): the
    /// worker reloads them before its next round takes anything.
    controls_changed: AtomicBool,
    /// The worker found the extension installed and delivers (counts for the concurrency share).
    serving: AtomicBool,
    /// Until when webhook_cluster_status() wants this worker's queue depth: counting it reads
    /// every due row, a cost not paid while nobody looks.
    queue_depth_wanted_until: AtomicI64,
}

/// After webhook_cluster_status() asked, workers count their queue at each maintenance (every
/// 5 s) for this long.
const QUEUE_DEPTH_WANTED_FOR_SECS: i64 = 60;

/// A database a statement needs without other sessions (DROP DATABASE, ALTER DATABASE ...
/// RENAME, CREATE DATABASE ... TEMPLATE), until when: its worker leaves, and one starting
/// meanwhile leaves at once. The launcher starts it again later if the database is still there.
#[derive(Default)]
pub struct Leaving {
    database: AtomicU32,
    until_unix: AtomicI64,
}

/// Postgres waits this long for other sessions to leave the database, then refuses.
const LEAVE_FOR_SECS: i64 = 5;

pub struct Wakeups {
    slots: [WakeSlot; MAX_DATABASES],
    /// The launcher's latch, 0 while it is not running.
    launcher_latch: AtomicUsize,
    /// Databases where `CREATE EXTENSION webhook_ext` committed: the launcher starts a worker
    /// there (0: a free entry).
    requests: [AtomicU32; MAX_DATABASES],
    /// More requests than entries: the launcher looks at every database it does not serve.
    requests_overflow: AtomicBool,
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

pub fn init() {
    // SAFETY: a plain global of the backend, set by Postgres while it preloads libraries.
    if unsafe { !pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    pg_shmem_init!(WAKEUPS);
    pg_shmem_init!(REGISTRY);
    SHMEM_READY.store(true, Ordering::SeqCst);
    // SAFETY: _PG_init runs in the postmaster before any backend exists; the previous hook is
    // kept and called first, as every ProcessUtility hook must.
    unsafe {
        PREVIOUS_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(wake_after_utility);
    }
}

fn my_database() -> u32 {
    // SAFETY: a plain global of this backend.
    u32::from(unsafe { pg_sys::MyDatabaseId })
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

static mut PREVIOUS_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

/// Utility statements that concern the worker of this database:
/// - `COMMIT PREPARED` commits a transaction another session prepared: its queued deliveries
///   become visible now, in this session, whose own transaction queued nothing and so armed
///   no commit callback. Any COMMIT PREPARED wakes the worker (it is rare, and a wake-up that
///   finds nothing costs one round).
/// - `CREATE EXTENSION webhook_ext`: when it commits, the launcher starts a worker here.
/// - A `DROP` (of the extension, or of a schema with it, among others): when it commits, the
///   worker looks at once whether its extension is still there, and stops if not (so that
///   a `DROP DATABASE` that follows does not wait for it). A DROP of something else costs
///   the worker one round.
#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn wake_after_utility(
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
    if let Some(database) = unsafe { database_needed_alone((*statement).utilityStmt) } {
        stop_worker_of(&database);
    }
    // SAFETY: as above (a CreateExtensionStmt's extname is a C string).
    let (commit_prepared, creates_extension, drops) = unsafe {
        let node = (*statement).utilityStmt;
        let tag = if node.is_null() {
            pg_sys::NodeTag::T_Invalid
        } else {
            (*node).type_
        };
        (
            tag == pg_sys::NodeTag::T_TransactionStmt
                && (*(node as *mut pg_sys::TransactionStmt)).kind
                    == pg_sys::TransactionStmtKind::TRANS_STMT_COMMIT_PREPARED,
            tag == pg_sys::NodeTag::T_CreateExtensionStmt
                && !(*(node as *mut pg_sys::CreateExtensionStmt))
                    .extname
                    .is_null()
                && std::ffi::CStr::from_ptr((*(node as *mut pg_sys::CreateExtensionStmt)).extname)
                    == c"webhook_ext",
            tag == pg_sys::NodeTag::T_DropStmt || tag == pg_sys::NodeTag::T_DropOwnedStmt,
        )
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
        if let Some(slot) = slot_of(my_database()) {
            WAKEUPS.get().slots[slot]
                .due_changed
                .store(true, Ordering::Release);
        }
        set_worker_latch();
    }
    if creates_extension && shared_memory_ready() {
        PROBE_ON_COMMIT.store(true, Ordering::Relaxed);
        register_callback();
    }
    if drops {
        wake_worker_on_commit();
    }
}

/// The database a statement needs without other sessions connected: DROP DATABASE, ALTER
/// DATABASE ... RENAME, CREATE DATABASE ... TEMPLATE (Postgres waits 5 s for them to leave,
/// then refuses).
///
/// # Safety
/// `node` is NULL or the utility statement Postgres passed the hook.
unsafe fn database_needed_alone(node: *mut pg_sys::Node) -> Option<std::ffi::CString> {
    if node.is_null() {
        return None;
    }
    let copy = |name: *const std::ffi::c_char| {
        // SAFETY: a statement's names are NUL-terminated strings of its parse tree.
        (!name.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(name) }.to_owned())
    };
    // SAFETY: the node's tag says which statement struct it is; its fields are valid.
    unsafe {
        match (*node).type_ {
            pg_sys::NodeTag::T_DropdbStmt => copy((*(node as *mut pg_sys::DropdbStmt)).dbname),
            pg_sys::NodeTag::T_RenameStmt => {
                let rename = node as *mut pg_sys::RenameStmt;
                ((*rename).renameType == pg_sys::ObjectType::OBJECT_DATABASE)
                    .then(|| copy((*rename).subname))
                    .flatten()
            }
            pg_sys::NodeTag::T_CreatedbStmt => {
                let options = pgrx::PgList::<pg_sys::DefElem>::from_pg(
                    (*(node as *mut pg_sys::CreatedbStmt)).options,
                );
                let template = options.iter_ptr().find(|option| {
                    !(**option).defname.is_null()
                        && std::ffi::CStr::from_ptr((**option).defname) == c"template"
                        && !(**option).arg.is_null()
                });
                template.and_then(|option| copy(pg_sys::defGetString(option)))
            }
            _ => None,
        }
    }
}

/// Ask the worker of the database named `name` to leave it now (one starting meanwhile leaves
/// at once).
fn stop_worker_of(name: &std::ffi::CStr) {
    if !shared_memory_ready() {
        return;
    }
    // SAFETY: a catalog lookup by name, in the statement's transaction; InvalidOid if missing.
    let database = u32::from(unsafe { pg_sys::get_database_oid(name.as_ptr(), true) });
    if database == 0 {
        return;
    }
    let wakeups = WAKEUPS.get();
    let now = unix_now();
    // The entry of this database, or one expired, or the oldest.
    let entry = wakeups
        .leaving
        .iter()
        .find(|e| e.database.load(Ordering::Acquire) == database)
        .or_else(|| {
            wakeups
                .leaving
                .iter()
                .min_by_key(|e| e.until_unix.load(Ordering::Acquire))
        })
        .expect("entries");
    entry.database.store(database, Ordering::Release);
    entry
        .until_unix
        .store(now + LEAVE_FOR_SECS + 1, Ordering::Release);
    if let Some(slot) = slot_of(database) {
        set_latch(wakeups.slots[slot].latch.load(Ordering::Acquire));
    }
}

/// A statement asked this worker to leave its database.
pub fn stop_requested() -> bool {
    if !shared_memory_ready() {
        return false;
    }
    let database = my_database();
    let now = unix_now();
    WAKEUPS.get().leaving.iter().any(|e| {
        e.database.load(Ordering::Acquire) == database && e.until_unix.load(Ordering::Acquire) > now
    })
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
/// This transaction ran CREATE EXTENSION webhook_ext: ask the launcher for a worker when it
/// commits.
static PROBE_ON_COMMIT: AtomicBool = AtomicBool::new(false);
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
    my_slot().is_some_and(|slot| {
        WAKEUPS.get().slots[slot]
            .controls_changed
            .swap(false, Ordering::AcqRel)
    })
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
    my_slot().is_some_and(|slot| {
        WAKEUPS.get().slots[slot]
            .due_changed
            .swap(false, Ordering::AcqRel)
    })
}

/// Arm the commit callback. Cheap enough to call once per queued event.
pub fn wake_worker_on_commit() {
    if !shared_memory_ready() {
        return;
    }
    WAKE_ON_COMMIT.store(true, Ordering::Relaxed);
    register_callback();
}

fn register_callback() {
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
        pg_sys::XactEvent::XACT_EVENT_COMMIT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT => {
            if PROBE_ON_COMMIT.swap(false, Ordering::Relaxed) {
                request_worker(my_database());
            }
            if WAKE_ON_COMMIT.swap(false, Ordering::Relaxed) {
                let due = DUE_ON_COMMIT.swap(false, Ordering::Relaxed);
                let controls = CONTROLS_ON_COMMIT.swap(false, Ordering::Relaxed);
                if due || controls {
                    if let Some(slot) = slot_of(my_database()) {
                        let slot = &WAKEUPS.get().slots[slot];
                        if due {
                            slot.due_changed.store(true, Ordering::Release);
                        }
                        if controls {
                            slot.controls_changed.store(true, Ordering::Release);
                        }
                    }
                }
                set_worker_latch();
            }
        }
        // A prepared transaction wakes the worker when COMMIT PREPARED runs (the
        // ProcessUtility hook above), in whatever session that is.
        pg_sys::XactEvent::XACT_EVENT_ABORT
        | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT
        | pg_sys::XactEvent::XACT_EVENT_PREPARE => {
            WAKE_ON_COMMIT.store(false, Ordering::Relaxed);
            DUE_ON_COMMIT.store(false, Ordering::Relaxed);
            CONTROLS_ON_COMMIT.store(false, Ordering::Relaxed);
            PROBE_ON_COMMIT.store(false, Ordering::Relaxed);
        }
        _ => {}
    }
}

fn set_worker_latch() {
    // Only the worker of the database that committed: the others have nothing new.
    let Some(slot) = slot_of(my_database()) else {
        // No worker here (yet): it takes what is queued when it starts.
        return;
    };
    let slot = &WAKEUPS.get().slots[slot];
    // The worker clears the flag before it looks for work: a commit that finds it set is seen
    // by the round that clears it (commits are visible before this callback runs).
    if slot.work_queued.swap(true, Ordering::AcqRel) {
        return;
    }
    set_latch(slot.latch.load(Ordering::Acquire));
}

fn set_latch(latch: usize) {
    if latch != 0 {
        // SAFETY: the address is a worker's or the launcher's PGPROC latch, in shared memory
        // and valid in every backend; each clears it before it exits, and SetLatch on another
        // process's latch is what latches are for.
        unsafe { pg_sys::SetLatch(latch as *mut pg_sys::Latch) };
    }
}

/// The worker is about to look for work: commits from now on wake it again.
pub fn take_queued_work() -> bool {
    my_slot().is_some_and(|slot| {
        WAKEUPS.get().slots[slot]
            .work_queued
            .swap(false, Ordering::AcqRel)
    })
}

/// A commit queued work since the worker last took it. Its latch may not say so: a lock wait
/// inside a round consumes the latch, and commits that find this flag set do not set it again.
pub fn work_queued() -> bool {
    my_slot().is_some_and(|slot| {
        WAKEUPS.get().slots[slot]
            .work_queued
            .load(Ordering::Acquire)
    })
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
            started_at_unix: unix_now(),
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
    let until = unix_now() + QUEUE_DEPTH_WANTED_FOR_SECS;
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
            > unix_now()
    })
}

pub fn report_queue_depth(depth: i64) {
    with_my_state(|state| {
        state.queue_depth = depth;
        state.queue_depth_at_unix = unix_now();
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
        state.last_error_at_unix = unix_now();
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
            && unix_now() - state.queue_depth_at_unix <= QUEUE_DEPTH_WANTED_FOR_SECS)
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

// ---- The launcher's side ----

/// A commit ran CREATE EXTENSION webhook_ext in `database`: ask the launcher for a worker.
fn request_worker(database: u32) {
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
        }
    }
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
