//! Each worker's latch and the commit callback that sets it: a commit that queued deliveries
//! (or made some due, or changed webhooks' controls) wakes the worker of its own database at
//! once, one wake-up however many commit meanwhile.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicUsize, Ordering};

use pgrx::prelude::*;

use super::launcher::request_worker;
use super::registry::{my_slot, slot_of};
use super::{my_database, shared_memory_ready, WAKEUPS};

/// What a commit needs to wake one database's worker, lock-free (commits read it).
/// (Its last two fields are the worker's lock-free status, kept here to keep the layout:
/// registry reads and writes them.)
#[derive(Default)]
pub struct WakeSlot {
    /// Oid of the database this slot belongs to, 0 when free.
    pub(super) database: AtomicU32,
    /// Address of the worker's `PGPROC` latch (shared memory, same address in every backend),
    /// 0 while no worker runs.
    pub(super) latch: AtomicUsize,
    /// A commit queued work since the worker last looked: later commits need not set its
    /// latch again (one wake-up, not one per commit, however many commit meanwhile).
    pub(super) work_queued: AtomicBool,
    /// A commit made deliveries due outside the worker (a replay, a reactivated webhook, a
    /// manual retry that failed): its next round looks at the due rows even if it knows of
    /// none due.
    pub(super) due_changed: AtomicBool,
    /// A commit changed a webhook's rate limit or ordering (or switched one on or off): the
    /// worker reloads the rate limits before its next round takes anything. (Ordering needs
    /// no reload: the worker reads it with the deliveries.)
    pub(super) controls_changed: AtomicBool,
    /// A commit deleted webhooks: the worker withdraws what it queued for them.
    pub(super) webhooks_deleted: AtomicBool,
    /// The worker found the extension installed and delivers (counts for the concurrency share).
    pub(super) serving: AtomicBool,
    /// Until when webhook_cluster_status() wants this worker's queue depth: counting it reads
    /// every due row, a cost not paid while nobody looks.
    pub(super) queue_depth_wanted_until: AtomicI64,
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
/// This transaction deleted webhooks: tell the worker when (and only if) it commits.
static DELETED_ON_COMMIT: AtomicBool = AtomicBool::new(false);

/// The calling worker's wake-up flags (None outside a registered delivery worker).
fn my_wake_slot() -> Option<&'static WakeSlot> {
    my_slot().map(|slot| &WAKEUPS.get().slots[slot])
}

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
    my_wake_slot().is_some_and(|slot| slot.controls_changed.swap(false, Ordering::AcqRel))
}

/// Has a commit changed webhooks' controls since the worker last took the flag? (It stays set.)
pub fn controls_changed_pending() -> bool {
    my_wake_slot().is_some_and(|slot| slot.controls_changed.load(Ordering::Acquire))
}

/// This transaction deletes webhooks: when it commits, the worker withdraws the deliveries it
/// queued for them and has not started.
pub fn webhooks_deleted_on_commit() {
    if !shared_memory_ready() {
        return;
    }
    DELETED_ON_COMMIT.store(true, Ordering::Relaxed);
    wake_worker_on_commit();
}

/// Did a commit delete webhooks since the worker last asked?
pub fn take_webhooks_deleted() -> bool {
    my_wake_slot().is_some_and(|slot| slot.webhooks_deleted.swap(false, Ordering::AcqRel))
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
    my_wake_slot().is_some_and(|slot| slot.due_changed.swap(false, Ordering::AcqRel))
}

/// Arm the commit callback. Cheap enough to call once per queued event.
pub fn wake_worker_on_commit() {
    if !shared_memory_ready() {
        return;
    }
    WAKE_ON_COMMIT.store(true, Ordering::Relaxed);
    register_callback();
}

/// This transaction ran CREATE EXTENSION webhook_ext: when it commits, ask the launcher for a
/// worker (called by the ProcessUtility hook).
pub(super) fn request_worker_on_commit() {
    PROBE_ON_COMMIT.store(true, Ordering::Relaxed);
    register_callback();
}

/// COMMIT PREPARED succeeded: the prepared transaction's rows are visible now; wake this
/// database's worker (called by the ProcessUtility hook). What the transaction did was
/// forgotten at PREPARE, so the worker is told all it could have done: made deliveries due,
/// changed webhooks' controls, deleted webhooks. Each costs the worker one cheap statement,
/// and COMMIT PREPARED is rare.
pub(super) fn wake_after_commit_prepared() {
    if let Some(slot) = slot_of(my_database()) {
        let slot = &WAKEUPS.get().slots[slot];
        slot.due_changed.store(true, Ordering::Release);
        slot.controls_changed.store(true, Ordering::Release);
        slot.webhooks_deleted.store(true, Ordering::Release);
    }
    set_worker_latch();
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
                let deleted = DELETED_ON_COMMIT.swap(false, Ordering::Relaxed);
                if due || controls || deleted {
                    if let Some(slot) = slot_of(my_database()) {
                        let slot = &WAKEUPS.get().slots[slot];
                        if due {
                            slot.due_changed.store(true, Ordering::Release);
                        }
                        if controls {
                            slot.controls_changed.store(true, Ordering::Release);
                        }
                        if deleted {
                            slot.webhooks_deleted.store(true, Ordering::Release);
                        }
                    }
                }
                set_worker_latch();
            }
        }
        // A prepared transaction wakes the worker when COMMIT PREPARED runs (the
        // ProcessUtility hook, utility_hook.rs), in whatever session that is.
        pg_sys::XactEvent::XACT_EVENT_ABORT
        | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT
        | pg_sys::XactEvent::XACT_EVENT_PREPARE => {
            WAKE_ON_COMMIT.store(false, Ordering::Relaxed);
            DUE_ON_COMMIT.store(false, Ordering::Relaxed);
            CONTROLS_ON_COMMIT.store(false, Ordering::Relaxed);
            DELETED_ON_COMMIT.store(false, Ordering::Relaxed);
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

pub(super) fn set_latch(latch: usize) {
    if latch != 0 {
        // SAFETY: the address is a worker's or the launcher's PGPROC latch, in shared memory
        // and valid in every backend; each clears it before it exits, and SetLatch on another
        // process's latch is what latches are for.
        unsafe { pg_sys::SetLatch(latch as *mut pg_sys::Latch) };
    }
}

/// The worker is about to look for work: commits from now on wake it again.
pub fn take_queued_work() -> bool {
    my_wake_slot().is_some_and(|slot| slot.work_queued.swap(false, Ordering::AcqRel))
}

/// A commit queued work since the worker last took it. Its latch may not say so: a lock wait
/// inside a round consumes the latch, and commits that find this flag set do not set it again.
pub fn work_queued() -> bool {
    my_wake_slot().is_some_and(|slot| slot.work_queued.load(Ordering::Acquire))
}
