//! The ProcessUtility hook: utility statements that concern the worker of this database
//! (COMMIT PREPARED, CREATE EXTENSION webhook_ext, DROP), and statements that need a database
//! without other sessions (its worker leaves it).

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::SystemTime;

use pgrx::prelude::*;
use webhook_delivery::clock::unix_seconds;

use super::registry::slot_of;
use super::wake::{
    request_worker_on_commit, set_latch, wake_after_commit_prepared, wake_worker_on_commit,
};
use super::{my_database, shared_memory_ready, WAKEUPS};

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

static mut PREVIOUS_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

/// Called once by `shared::init()` while preloading.
pub(super) fn install() {
    // SAFETY: _PG_init runs in the postmaster before any backend exists; the previous hook is
    // kept and called first, as every ProcessUtility hook must.
    unsafe {
        PREVIOUS_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(wake_after_utility);
    }
}

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
        wake_after_commit_prepared();
    }
    if creates_extension && shared_memory_ready() {
        request_worker_on_commit();
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
    let now = unix_seconds(SystemTime::now());
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
    let now = unix_seconds(SystemTime::now());
    WAKEUPS.get().leaving.iter().any(|e| {
        e.database.load(Ordering::Acquire) == database && e.until_unix.load(Ordering::Acquire) > now
    })
}
