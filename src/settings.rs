//! Every `webhook.*` setting (docs/REFERENCE.md, "Settings"), with a typed accessor.
//! Reloadable settings are `PGC_SUSET`: the config file and `pg_reload_conf()` change them, and
//! a superuser may override them in a session (which only affects `webhook_retry`/`webhook_ping`
//! there).

use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use pgrx::prelude::*;
use webhook_delivery::databases::Served;
use webhook_delivery::http::Limits;
use webhook_delivery::policy::NetworkPolicy;
use webhook_delivery::schedule;

/// `webhook.database`: before 0.5.0 the one database served; set explicitly (and without
/// `webhook.databases`) it still means that (restart to change).
static DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
/// `webhook.databases`: `*` (every database where the extension is installed) or a comma list.
static DATABASES: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"*"));
/// Set by the check hooks: the setting came from somewhere other than its built-in default
/// (postgresql.conf, ALTER SYSTEM, the command line). Decided in the postmaster at startup,
/// inherited by every process it forks.
static DATABASE_EXPLICIT: AtomicBool = AtomicBool::new(false);
static DATABASES_EXPLICIT: AtomicBool = AtomicBool::new(false);
/// `webhook.timeout`: the whole of one attempt (connect, send, receive), in milliseconds.
static TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(5_000);
/// `webhook.retry_schedule`: the delay before each attempt; its length is the number of attempts.
static RETRY_SCHEDULE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"0s,1min,5min,15min,1h"));
/// `webhook.concurrency`: HTTP requests in flight at once (the worker's HTTP threads).
static CONCURRENCY: GucSetting<i32> = GucSetting::<i32>::new(32);
/// `webhook.max_response_bytes`: response body bytes read and stored per attempt.
static MAX_RESPONSE_BYTES: GucSetting<i32> = GucSetting::<i32>::new(65_536);
/// `webhook.allowed_networks`: CIDRs exempt from the private-address block.
static ALLOWED_NETWORKS: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c""));
/// `webhook.disable_after_failures`: consecutive failed deliveries that disable a webhook (0: never).
static DISABLE_AFTER_FAILURES: GucSetting<i32> = GucSetting::<i32>::new(20);
/// `webhook.retention`: finished deliveries older than this are purged by the worker.
static RETENTION: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"7 days"));

pub fn init() {
    // A postmaster-level setting can only be defined while preloading; without preload there
    // is no worker, so there is nothing for it to configure.
    // SAFETY: a plain global of the backend, set by Postgres while it preloads libraries.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        // SAFETY: the hooks are #[pg_guard]ed and only read their arguments.
        unsafe {
            GucRegistry::define_string_guc_with_hooks(
                c"webhook.databases",
                c"Databases served: * (every database where webhook_ext is installed) or a comma list.",
                c"Changing it needs a server restart.",
                &DATABASES,
                GucContext::Postmaster,
                GucFlags::default(),
                Some(check_databases),
                None,
                None,
            );
            GucRegistry::define_string_guc_with_hooks(
                c"webhook.database",
                c"The one database served when set without webhook.databases (the setting before 0.5.0).",
                c"Changing it needs a server restart. webhook.databases, when set, wins.",
                &DATABASE,
                GucContext::Postmaster,
                GucFlags::default(),
                Some(check_database),
                None,
                None,
            );
        }
    }
    GucRegistry::define_int_guc(
        c"webhook.timeout",
        c"Total time for one delivery attempt: connect, send and receive.",
        c"",
        &TIMEOUT_MS,
        100,
        300_000,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    // SAFETY: the hooks below are #[pg_guard]ed and only read their arguments.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"webhook.retry_schedule",
            c"Delay before each delivery attempt, comma-separated (e.g. 0s,1min,5min,15min,1h).",
            c"The number of entries is the number of attempts; after the last one fails the delivery is failed.",
            &RETRY_SCHEDULE,
            GucContext::Suset,
            GucFlags::default(),
            Some(check_retry_schedule),
            None,
            None,
        );
    }
    GucRegistry::define_int_guc(
        c"webhook.concurrency",
        c"HTTP requests in flight at once in the background worker.",
        c"",
        &CONCURRENCY,
        1,
        1024,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"webhook.disable_after_failures",
        c"Disable a webhook after this many consecutive failed deliveries (0: never).",
        c"A delivery has failed when the last attempt of its retry schedule failed. webhook_update(id, active => true) enables it again.",
        &DISABLE_AFTER_FAILURES,
        0,
        1_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"webhook.max_response_bytes",
        c"Response body bytes read and stored per attempt; reading stops there.",
        c"",
        &MAX_RESPONSE_BYTES,
        0,
        64 * 1024 * 1024,
        GucContext::Suset,
        GucFlags::UNIT_BYTE,
    );
    // SAFETY: as above, for the hooks; MarkGUCPrefixReserved only reads the NUL-terminated
    // prefix, while the library loads.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"webhook.allowed_networks",
            c"CIDR list exempt from the private-address block (e.g. 127.0.0.1/32).",
            c"Loopback, private, link-local, multicast and reserved targets are refused unless listed here.",
            &ALLOWED_NETWORKS,
            GucContext::Suset,
            GucFlags::default(),
            Some(check_allowed_networks),
            None,
            None,
        );
        GucRegistry::define_string_guc_with_hooks(
            c"webhook.retention",
            c"Finished deliveries older than this are purged by the worker (e.g. 7 days).",
            c"",
            &RETENTION,
            GucContext::Suset,
            GucFlags::default(),
            Some(check_retention),
            None,
            None,
        );
        // Any other `webhook.` name (a typo such as webhook.retry_shedule in postgresql.conf)
        // is reported with a WARNING instead of silently ignored, and refused by SET.
        pg_sys::MarkGUCPrefixReserved(c"webhook".as_ptr());
    }
}

fn string_value(setting: &GucSetting<Option<CString>>) -> String {
    setting
        .get()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The databases served: `webhook.databases` when set; else an explicitly set
/// `webhook.database` (an installation from before 0.5.0 keeps its meaning); else every
/// database where the extension is installed.
pub fn served() -> Served {
    if !DATABASES_EXPLICIT.load(Ordering::Relaxed) && DATABASE_EXPLICIT.load(Ordering::Relaxed) {
        return Served::Listed(vec![string_value(&DATABASE)]);
    }
    Served::parse(&string_value(&DATABASES)).unwrap_or(Served::All)
}

/// The setting that decides `served()`, as a user would change it (`webhook.databases = 'crm'`).
pub fn served_setting() -> String {
    if !DATABASES_EXPLICIT.load(Ordering::Relaxed) && DATABASE_EXPLICIT.load(Ordering::Relaxed) {
        format!("webhook.database = '{}'", string_value(&DATABASE))
    } else {
        format!("webhook.databases = '{}'", string_value(&DATABASES))
    }
}

pub fn timeout() -> Duration {
    Duration::from_millis(TIMEOUT_MS.get().max(1) as u64)
}

pub fn concurrency() -> usize {
    CONCURRENCY.get().max(1) as usize
}

pub fn limits() -> Limits {
    Limits {
        timeout: timeout(),
        max_response_bytes: MAX_RESPONSE_BYTES.get().max(0) as usize,
    }
}

/// The check hook already refused invalid values, so parsing cannot fail here.
pub fn retry_schedule() -> Vec<Duration> {
    schedule::parse_schedule(&string_value(&RETRY_SCHEDULE)).unwrap_or_else(|_| {
        schedule::parse_schedule(schedule::DEFAULT_SCHEDULE).expect("default schedule")
    })
}

pub fn network_policy() -> NetworkPolicy {
    NetworkPolicy::parse(&string_value(&ALLOWED_NETWORKS)).unwrap_or_default()
}

pub fn disable_after_failures() -> i32 {
    DISABLE_AFTER_FAILURES.get().max(0)
}

/// The values in force, as the worker publishes them for webhook_worker_status().
pub fn effective_json() -> String {
    serde_json::json!({
        "databases": served_setting(),
        "timeout_ms": TIMEOUT_MS.get(),
        "retry_schedule": string_value(&RETRY_SCHEDULE),
        "concurrency": concurrency(),
        "max_response_bytes": MAX_RESPONSE_BYTES.get(),
        "allowed_networks": string_value(&ALLOWED_NETWORKS),
        "retention": string_value(&RETENTION),
        "disable_after_failures": disable_after_failures(),
    })
    .to_string()
}

pub fn retention() -> Duration {
    schedule::parse_duration(&string_value(&RETENTION)).unwrap_or(Duration::from_secs(7 * 86_400))
}

/// Report a check-hook failure the way Postgres' own settings do (`DETAIL:` of the error).
fn refuse(detail: &str) -> bool {
    let detail = CString::new(detail.replace('\0', "")).unwrap_or_default();
    // SAFETY: inside a check hook, where Postgres reads this global; pstrdup copies the string
    // into the current memory context.
    unsafe {
        pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(detail.as_ptr());
    }
    false
}

/// A check hook's verdict on the proposed value, with the parser's message as DETAIL.
///
/// # Safety
/// `newval` must be the pointer Postgres passed the check hook.
unsafe fn check<T, E: std::fmt::Display>(
    newval: *mut *mut c_char,
    parse: impl Fn(&str) -> Result<T, E>,
) -> bool {
    // SAFETY: Postgres passes a check hook a valid pointer to the proposed value (NULL or a C string).
    let ptr = unsafe { *newval };
    let value = if ptr.is_null() {
        Some("")
    } else {
        // SAFETY: a non-NULL proposed value is a NUL-terminated string that outlives the hook.
        unsafe { CStr::from_ptr(ptr) }.to_str().ok()
    };
    match value.map(parse) {
        Some(Ok(_)) => true,
        Some(Err(e)) => refuse(&e.to_string()),
        None => refuse("not valid UTF-8"),
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_databases(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    DATABASES_EXPLICIT.store(
        source != pg_sys::GucSource::PGC_S_DEFAULT,
        Ordering::Relaxed,
    );
    // SAFETY: `newval` is the pointer Postgres passed this hook.
    unsafe { check(newval, Served::parse) }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_database(
    _newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    DATABASE_EXPLICIT.store(
        source != pg_sys::GucSource::PGC_S_DEFAULT,
        Ordering::Relaxed,
    );
    true
}

#[pg_guard]
unsafe extern "C-unwind" fn check_retry_schedule(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: `newval` is the pointer Postgres passed this hook.
    unsafe { check(newval, schedule::parse_schedule) }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_allowed_networks(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: `newval` is the pointer Postgres passed this hook.
    unsafe { check(newval, NetworkPolicy::parse) }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_retention(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: `newval` is the pointer Postgres passed this hook.
    unsafe { check(newval, schedule::parse_duration) }
}
