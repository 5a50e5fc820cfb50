//! The search_path for SQL the extension runs in a caller's session.
//!
//! Functions like `webhook_ping` run SPI statements in the calling session. Resolved through
//! the caller's (or the database's) `search_path`, an operator or function defined with an
//! exact type match in a schema listed before `pg_catalog` would run instead of the built-in
//! one (CVE-2018-1058), with the privileges of whoever runs the statement. The worker pins its
//! own session (`worker::pin_session_settings`); these entry points pin the path while they
//! run, as a function declared with `SET search_path` would.

use pgrx::pg_sys;

/// While this lives, `search_path` is `pg_catalog, pg_temp`; dropping it restores the
/// caller's.
pub struct PinnedSearchPath {
    nest_level: i32,
}

impl PinnedSearchPath {
    pub fn new() -> PinnedSearchPath {
        // SAFETY: what fmgr does for a function with a SET clause: a new GUC nesting level,
        // the value set at it (saved, so it is undone), restored by AtEOXact_GUC on drop. An
        // ERROR meanwhile aborts the transaction, which restores every level itself.
        unsafe {
            let nest_level = pg_sys::NewGUCNestLevel();
            pg_sys::set_config_option(
                c"search_path".as_ptr(),
                c"pg_catalog, pg_temp".as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
            PinnedSearchPath { nest_level }
        }
    }
}

impl Drop for PinnedSearchPath {
    fn drop(&mut self) {
        // An ERROR unwinding through here aborts the (sub)transaction, which restores the
        // path itself, as it does for a function with a SET clause.
        if std::thread::panicking() {
            return;
        }
        // SAFETY: closes the nesting level opened in `new`, in the same transaction.
        unsafe { pg_sys::AtEOXact_GUC(true, self.nest_level) };
    }
}
