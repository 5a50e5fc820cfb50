//! The background worker: wait for a commit (latch) or an HTTP result (socket), record
//! outcomes, take new deliveries (the walk of the store, its gaps) and due ones, and hand
//! them to the HTTP pool. Nothing durable marks what it takes: it is in flight in shared
//! memory (in_flight) and in this process. Only this thread calls Postgres; the pool's
//! threads get plain requests and send back plain outcomes.

use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, RefUnwindSafe, UnwindSafe};
use std::time::{Duration, Instant, SystemTime};

use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use webhook_delivery::http::Client;
use webhook_delivery::pool::{Caps, Job, JobResult, Outgoing, Pool};

use webhook_delivery::pacing::{
    self, Placement, Room, TokenBucket, MAINTENANCE_INTERVAL, MAX_OUTSTANDING, ROUND_SPACING,
};
use webhook_delivery::walk::Walk;

use crate::attempt;
use crate::in_flight;
use crate::settings;
use crate::shared;
use crate::store::{self, Claimed, Control, Statements};

/// How often the walk's frontier is saved (a restart walks again from there).
const FRONTIER_SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// While the extension waits for ALTER EXTENSION ... UPDATE, look again this often.
const IDLE_INTERVAL: Duration = Duration::from_secs(5);
/// Under load, wait up to this long for up to this many results before recording them.
const COALESCE_WAIT: Duration = Duration::from_millis(2);
const COALESCE_BATCH: usize = 256;
/// How stale an endpoint's last success time may get while it keeps succeeding.
const HEALTH_REFRESH: Duration = Duration::from_secs(1);
/// Most deliveries taken in one round (pacing::MAX_OUTSTANDING: held at once).
const MAX_CLAIM_BATCH: usize = 1_000;
/// Finished deliveries deleted per maintenance round: small, so writers never wait on it.
const PURGE_BATCH: i64 = 1_000;
const PURGE_PAUSE: Duration = Duration::from_millis(10);
/// Events the extension emits about itself (webhook_notify_operational in sql/api.sql): a
/// failure of one of them announces nothing further.
const OPERATIONAL_PREFIX: &str = "webhook_ext.";
/// After a round rolled back by a deadlock, the next one comes this soon.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// One database's delivery worker, started by the launcher (launcher.rs) with the database's
/// oid as its argument.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn webhook_ext_worker_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database_oid = pg_sys::Oid::from(arg.value() as u32);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(database_oid), None);
    // Before any statement: nothing it runs may resolve through someone else's search_path.
    pin_session_settings();
    // Where the extension is not installed the worker stops at once: it must not hold the
    // database (a DROP DATABASE would wait for it) nor a background worker slot.
    let (database, installed) = in_transaction(|| {
        let name = crate::store::database_name(database_oid);
        let installed = Spi::connect(crate::store::installation)
            .ok()
            .flatten()
            .is_some();
        (name, installed)
    })
    .unwrap_or_default();
    if !installed {
        debug1!("webhook_ext worker: webhook_ext is not installed in database \"{database}\"");
        // SAFETY: the main thread, outside any transaction.
        unsafe { pg_sys::proc_exit(0) };
    }
    match shared::registry::register_worker() {
        Ok(()) => {}
        Err(shared::registry::NoSlot::Duplicate(pid)) => {
            debug1!("webhook_ext worker: database \"{database}\" is served already (pid {pid})");
            // SAFETY: as above.
            unsafe { pg_sys::proc_exit(0) };
        }
        Err(shared::registry::NoSlot::Full) => {
            warning!(
                "webhook_ext worker: database \"{database}\" is not served: {} databases are served already, the most one server serves",
                shared::MAX_DATABASES
            );
            // SAFETY: as above.
            unsafe { pg_sys::proc_exit(0) };
        }
    }
    if shared::utility_hook::stop_requested() {
        // Its slot stays: the launcher starts it again if the database is still there.
        debug1!("webhook_ext worker: database \"{database}\" is being dropped, renamed or copied");
        // SAFETY: as above.
        unsafe { pg_sys::proc_exit(0) };
    }
    // Whatever an earlier worker of this database left there is not in flight any more.
    in_flight::clear_worker();
    shared::registry::publish_settings(&settings::effective_json());
    log!("webhook_ext worker started, serving database \"{database}\"");

    let mut worker = match Worker::new() {
        Ok(worker) => worker,
        Err(e) => {
            shared::registry::report_error(&format!("cannot start the HTTP pool: {e}"));
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_RESOURCES,
                format!("webhook_ext worker: cannot start the HTTP pool: {e}")
            );
        }
    };
    worker.run();
    if worker.uninstalled {
        log!("webhook_ext worker: webhook_ext is no longer installed in database \"{database}\"; stopping");
        shared::registry::release_slot_at_exit();
    } else if shared::utility_hook::stop_requested() {
        log!("webhook_ext worker: leaving database \"{database}\" for a statement that needs it alone (DROP, RENAME or copy of the database)");
    } else {
        log!("webhook_ext worker stopping");
    }
    // SAFETY: the worker's main thread, outside any transaction: what a background worker
    // does to end itself. The launcher decides whether another one starts.
    unsafe { pg_sys::proc_exit(0) };
}

/// The settings every statement of the worker depends on, pinned for its session over
/// whatever `postgresql.conf` or `ALTER DATABASE/ROLE ... SET` say (a session value outranks
/// them, also after a reload).
///
/// - `search_path`: the worker runs as the bootstrap superuser; an operator or function found
///   through a schema someone else controls would run their code as superuser.
/// - Isolation, read-only, timeouts, `role`, `session_replication_role`: the statements are
///   written for READ COMMITTED, must write, must not be cut short, must run as the worker's
///   own role and must fire the extension's triggers.
/// - `DateStyle`, `IntervalStyle`, `TimeZone`: the texts it writes (disabled_reason) read the
///   same on every installation.
/// - `synchronous_commit = off`: losing one of the worker's own commits in a crash only means
///   an attempt is made again (at-least-once), never a lost event; events are committed by the
///   application's transactions, with its own setting.
/// - Planner: its plans are made once and cached (generic: in `auto` mode a statement whose
///   generic plan looks costlier, which the disabled plan types below make likely, is planned
///   again on every round), and a plan made while the queue was nearly empty must not treat
///   the table as tiny when a million rows arrive: without sequential scans and nested loops
///   (a LATERAL probe still gets one) no plan can scan the table or probe it once per row of a
///   batch (a pg_test checks the plans). The penalty the planner gives disabled plans must not
///   look like a reason to JIT-compile, and its statements are too small for parallel workers.
fn pin_session_settings() {
    let mut settings: Vec<(&std::ffi::CStr, &std::ffi::CStr)> = vec![
        (c"search_path", c"pg_catalog, pg_temp"),
        (c"role", c"none"),
        (c"default_transaction_isolation", c"read committed"),
        (c"default_transaction_read_only", c"off"),
        (c"default_transaction_deferrable", c"off"),
        (c"statement_timeout", c"0"),
        (c"lock_timeout", c"0"),
        (c"idle_in_transaction_session_timeout", c"0"),
        (c"idle_session_timeout", c"0"),
        (c"session_replication_role", c"origin"),
        (c"transform_null_equals", c"off"),
        (c"DateStyle", c"ISO, YMD"),
        (c"IntervalStyle", c"postgres"),
        (c"TimeZone", c"UTC"),
        (c"synchronous_commit", c"off"),
        (c"plan_cache_mode", c"force_generic_plan"),
        (c"enable_seqscan", c"off"),
        (c"enable_nestloop", c"off"),
        (c"jit", c"off"),
        (c"max_parallel_workers_per_gather", c"0"),
    ];
    if cfg!(any(feature = "pg17", feature = "pg18")) {
        settings.push((c"transaction_timeout", c"0"));
    }
    for (name, value) in settings {
        // SAFETY: both strings are NUL-terminated and outlive the call; SetConfigOption copies
        // them. PGC_SUSET: the worker is a superuser, and some of these are superuser-only.
        unsafe {
            pg_sys::SetConfigOption(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_SUSET,
                pg_sys::GucSource::PGC_S_SESSION,
            );
        }
    }
}

struct Worker {
    pool: Pool,
    statements: Option<Statements>,
    installation: store::InstallationLookup,
    /// Where the walk of the installation's deliveries stands (None until it is loaded).
    walk: Option<Walk>,
    /// Deliveries taken and not recorded yet (waiting in the pool or running), by delivery
    /// id. The bodies went to the pool with the jobs.
    in_flight: HashMap<i64, Claimed>,
    /// How each endpoint (webhook) is doing: it decides how far ahead to take for it and
    /// whether it keeps its full share of threads.
    endpoints: HashMap<i64, Endpoint>,
    /// Outcomes known without sending (e.g. unsendable requests), recorded with the next batch.
    local_results: Vec<JobResult>,
    /// Deliveries to make due again (delivery id, webhook id): handed back unsent by the
    /// pool, or attempted in a round whose transaction failed (their outcome is lost: they
    /// are sent again, at least once, never lost).
    to_park: Vec<(i64, i64)>,
    concurrency: usize,
    timeout: Duration,
    schedule: Vec<Duration>,
    last_maintenance: Option<Instant>,
    /// The frontier last saved, and when.
    frontier_saved: Option<(i64, Instant)>,
    /// How many deliveries the last round took.
    last_taken: usize,
    /// Since when the walk has been stopped at a full fast endpoint without moving.
    walk_stopped_since: Option<Instant>,
    /// Nothing in webhook_delivery_due is due before this, as far as the worker knows (None:
    /// it must look). Saves two statements a round while the due table has nothing to give.
    due_quiet_until: Option<Instant>,
    /// Where the purge goes on from; 0 after a pass that reached deliveries inside retention.
    purge_from: i64,
    /// The last purge deleted a full batch: more finished deliveries are past retention.
    purge_behind: bool,
    version_warned: bool,
    /// Active rate-limited webhooks (controls.sql), and whether they are
    /// loaded for the current installation.
    controls: HashMap<i64, Control>,
    controls_loaded: bool,
    /// The last round was rolled back because a commit changed the controls during it.
    redone_for_controls: bool,
    /// A commit deleted webhooks: the next round looks which of those it has deliveries for
    /// are gone, and withdraws what it queued for them.
    check_deleted_webhooks: bool,
    /// The rate-limited webhooks' token buckets.
    buckets: HashMap<i64, TokenBucket>,
    /// Keys of ordered webhooks with a delivery taken and not recorded: (webhook, key).
    held_keys: HashSet<(i64, String)>,
    /// Keys to put on due rows the next round writes for deliveries of ordered webhooks
    /// (parked after a failed round): (delivery, key).
    keys_to_hold: Vec<(i64, String)>,
    /// The extension is not installed any more: the worker stops.
    pub uninstalled: bool,
    /// How many databases shared webhook.concurrency when `concurrency` was computed.
    sharing: usize,
}

/// This worker's share of the cluster-wide webhook.concurrency (and how many databases share it).
fn concurrency_share() -> (usize, usize) {
    let sharing = shared::registry::serving_databases();
    (
        webhook_delivery::databases::share(settings::concurrency(), sharing),
        sharing,
    )
}

/// One endpoint's recent attempts and what it holds.
#[derive(Default)]
struct Endpoint {
    /// Taken and not recorded yet.
    outstanding: usize,
    /// Of those, how many came from due rows (the due query reads past them).
    outstanding_from_due: usize,
    /// When a batch of successes only (failure streak at 0) was last written to its health.
    clean_health_written_at: Option<Instant>,
}

impl Worker {
    fn new() -> std::io::Result<Worker> {
        // Counted as serving from its first round on: its share is computed again then.
        let (concurrency, _) = concurrency_share();
        let pool = new_pool(concurrency)?;
        Ok(Worker {
            pool,
            statements: None,
            installation: store::InstallationLookup::default(),
            walk: None,
            in_flight: HashMap::new(),
            endpoints: HashMap::new(),
            local_results: Vec::new(),
            to_park: Vec::new(),
            concurrency,
            timeout: settings::timeout(),
            schedule: settings::retry_schedule(),
            last_maintenance: None,
            frontier_saved: None,
            due_quiet_until: None,
            walk_stopped_since: None,
            last_taken: 0,
            purge_from: 0,
            purge_behind: false,
            version_warned: false,
            controls: HashMap::new(),
            controls_loaded: false,
            redone_for_controls: false,
            check_deleted_webhooks: false,
            buckets: HashMap::new(),
            held_keys: HashSet::new(),
            keys_to_hold: Vec::new(),
            uninstalled: false,
            sharing: 0,
        })
    }

    fn run(&mut self) {
        let mut last_round = Instant::now() - ROUND_SPACING;
        let mut spacing = ROUND_SPACING;
        loop {
            if BackgroundWorker::sighup_received() {
                // SAFETY: the main thread, between transactions, as postgres.c does on SIGHUP.
                unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
                self.reload_settings();
            }

            // Under a stream of commits, rounds come at most every ROUND_SPACING (under load
            // wider, pacing::round_spacing), each taking what committed meanwhile, instead of
            // one round per commit.
            let since_last = last_round.elapsed();
            if since_last < spacing {
                std::thread::sleep(spacing - since_last);
            }
            let interval = last_round.elapsed();
            last_round = Instant::now();
            self.follow_share();
            let results = self.collect_results();
            let recorded = results.len();
            shared::wake::take_queued_work();
            let mut sleep = self.round(results);
            spacing = pacing::round_spacing(recorded + self.last_taken, interval);
            if self.purge_behind {
                // Keep purging while behind, in small batches with room for everything else.
                sleep = sleep.min(PURGE_PAUSE);
            }
            shared::registry::report_progress(self.in_flight.len(), 0);
            if self.uninstalled || shared::utility_hook::stop_requested() {
                break;
            }

            if !self.local_results.is_empty() || shared::wake::work_queued() {
                continue;
            }
            if !wait_for_work(sleep, self.pool.wake_fd()) || shared::utility_hook::stop_requested()
            {
                break;
            }
        }
        in_flight::clear_worker();
    }

    /// The number of databases served changed: take the new share of webhook.concurrency.
    /// Threads already started stay (idle), the caps say how many requests may be in flight.
    fn follow_share(&mut self) {
        let (concurrency, sharing) = concurrency_share();
        if sharing == self.sharing {
            return;
        }
        self.sharing = sharing;
        if concurrency != self.concurrency {
            self.concurrency = concurrency;
            self.pool.grow(concurrency);
            self.pool
                .set_caps(Caps::for_concurrency(concurrency, self.timeout));
        }
        shared::registry::publish_settings(&self.settings_json());
    }

    /// The settings in force, with this worker's share of the concurrency.
    fn settings_json(&self) -> String {
        let mut json: serde_json::Value =
            serde_json::from_str(&settings::effective_json()).unwrap_or_default();
        json["concurrency_share"] = serde_json::json!(self.concurrency);
        json["databases_sharing"] = serde_json::json!(self.sharing.max(1));
        json.to_string()
    }

    fn reload_settings(&mut self) {
        self.concurrency = concurrency_share().0;
        self.timeout = settings::timeout();
        self.schedule = settings::retry_schedule();
        self.pool.grow(self.concurrency);
        self.pool
            .set_caps(Caps::for_concurrency(self.concurrency, self.timeout));
        self.pool
            .set_client(Client::new(settings::limits(), settings::network_policy()));
        shared::registry::publish_settings(&self.settings_json());
    }

    /// The finished attempts. Under load (the pool has work queued, so the threads keep going
    /// meanwhile) wait a little for more, so that one transaction records many; at a trickle
    /// nothing waits.
    fn collect_results(&mut self) -> Vec<JobResult> {
        let mut results = std::mem::take(&mut self.local_results);
        results.extend(self.pool.try_results());
        if results.is_empty() || self.pool.waiting() == 0 {
            return results;
        }
        let deadline = Instant::now() + COALESCE_WAIT;
        while results.len() < COALESCE_BATCH && self.pool.waiting() > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !wait_for_results(left, self.pool.wake_fd()) {
                break;
            }
            results.extend(self.pool.try_results());
        }
        results
    }

    /// One transaction: record the finished attempts, park what the pool handed back unsent,
    /// run the maintenance that is due, take what the endpoints have room for (due rows, the
    /// walk's gaps, then new deliveries) and queue it in the pool. Returns how long to sleep.
    fn round(&mut self, results: Vec<JobResult>) -> Duration {
        let mut records = Vec::with_capacity(results.len());
        let mut released = std::mem::take(&mut self.to_park);
        let mut disable = Vec::new();
        // Ordered webhooks: keys whose delivery got a due row (to mark), keys whose delivery
        // ended (the next one behind is due); deliveries failed for good (announced).
        let mut keys_to_hold = std::mem::take(&mut self.keys_to_hold);
        let mut keys_ended = Vec::new();
        let mut failed_for_good = Vec::new();
        // What this round takes out of `in_flight`, to put back if its transaction fails.
        let mut taken = Vec::with_capacity(results.len());
        for result in results {
            let Some(claimed) = self.in_flight.remove(&result.delivery_id) else {
                continue;
            };
            let endpoint = self.endpoints.entry(claimed.webhook_id).or_default();
            endpoint.outstanding = endpoint.outstanding.saturating_sub(1);
            if claimed.from_due {
                endpoint.outstanding_from_due = endpoint.outstanding_from_due.saturating_sub(1);
            }
            if let Some(key) = &claimed.ordered_key {
                self.held_keys.remove(&(claimed.webhook_id, key.clone()));
            }
            match &result.outcome {
                None => {
                    released.push((claimed.delivery_id, claimed.webhook_id));
                    if let Some(key) = &claimed.ordered_key {
                        keys_to_hold.push((claimed.delivery_id, key.clone()));
                    }
                }
                Some(outcome) => {
                    let (recorded, disable_reason) = attempt::record_for(
                        &claimed,
                        outcome,
                        result.started_at,
                        false,
                        &self.schedule,
                    );
                    if let Some(key) = &claimed.ordered_key {
                        if recorded.status == "pending" {
                            keys_to_hold.push((claimed.delivery_id, key.clone()));
                        } else {
                            keys_ended.push((claimed.webhook_id, key.clone()));
                        }
                    }
                    if recorded.status == "failed" && !claimed.event.starts_with(OPERATIONAL_PREFIX)
                    {
                        failed_for_good.push((
                            claimed.webhook_id,
                            claimed.delivery_id,
                            claimed.event.clone(),
                        ));
                    }
                    records.push(recorded);
                    if let Some(reason) = disable_reason {
                        disable.push((claimed.webhook_id, reason));
                    }
                }
            }
            taken.push((claimed, result));
        }
        let finished = records.len() as u64;
        let health = self.health_to_write(attempt::health_deltas(&records));
        let disable_after = settings::disable_after_failures();

        let maintenance_due = self
            .last_maintenance
            .is_none_or(|at| at.elapsed() >= MAINTENANCE_INTERVAL);
        let free = MAX_OUTSTANDING
            .saturating_sub(self.in_flight.len())
            .min(MAX_CLAIM_BATCH);
        // While the purge is behind (its last batch was full), it runs every round.
        let purge_due = maintenance_due || self.purge_behind;
        let nothing_to_record = records.is_empty() && released.is_empty() && disable.is_empty();
        // Controls are reloaded after a commit changed them, at maintenance, and for a new
        // installation: never per delivery.
        // The flag is taken whenever they are reloaded: one left set would redo the round.
        let controls_changed = shared::wake::take_controls_changed();
        let reload_controls = !self.controls_loaded || controls_changed || maintenance_due;
        if shared::wake::take_webhooks_deleted() {
            self.check_deleted_webhooks = true;
        }
        // Every webhook the worker has a delivery queued or in flight for.
        let webhooks_to_check: Vec<i64> = if self.check_deleted_webhooks {
            let mut ids: Vec<i64> = self.in_flight.values().map(|c| c.webhook_id).collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        } else {
            Vec::new()
        };
        let gaps_open = self.walk.as_ref().is_some_and(Walk::has_gaps);
        if free == 0
            && !purge_due
            && nothing_to_record
            && !gaps_open
            && !reload_controls
            && webhooks_to_check.is_empty()
            && self.statements.is_some()
        {
            // Nothing to take: a finished attempt wakes us.
            return MAINTENANCE_INTERVAL;
        }
        // Due rows are looked at when some may be due: after a commit made some due (a replay,
        // a manual retry), when the earliest known is due, at maintenance, and whenever the
        // worker itself wrote some.
        let due_changed = shared::wake::take_due_changed();
        let check_due = due_changed
            || maintenance_due
            || !released.is_empty()
            || !keys_ended.is_empty()
            || self
                .due_quiet_until
                .is_none_or(|quiet_until| Instant::now() >= quiet_until);
        let mut plan = self.plan_round(free, maintenance_due, purge_due);
        plan.check_due = check_due;
        plan.walk_may_wait = self
            .walk_stopped_since
            .is_none_or(|since| since.elapsed() < pacing::LONGEST_WALK_WAIT);
        let retries_recorded = records.iter().any(|r| r.status == "pending");
        let known = self.statements.as_ref().map(|s| s.installation.clone());
        let walk = self.walk.clone();
        let now = Instant::now();
        // Not twice in a row: a stream of such commits must not stop the deliveries.
        let may_redo_for_controls = !self.redone_for_controls;
        let redo_for_controls = std::cell::Cell::new(false);

        let outcome = in_transaction(AssertUnwindSafe(|| {
            Spi::connect_mut(|client| -> pgrx::spi::Result<ClaimRound> {
                let Some(installation) = self.installation.find_and_hold(client)? else {
                    return Ok(ClaimRound::NotInstalled);
                };
                if installation.version != env!("CARGO_PKG_VERSION") {
                    return Ok(ClaimRound::OtherVersion(installation.version));
                }
                let (s, walk) = match (known.as_ref(), self.statements.as_ref(), walk) {
                    (Some(known), Some(current), Some(walk)) if *known == installation => {
                        (current, walk)
                    }
                    _ => {
                        // A new installation: outcomes of the old one's rows are not ours to
                        // record, and what the worker knows of the old one (endpoints, what
                        // is in flight) says nothing about the new one's ids: the caller
                        // forgets it, and the next round takes. Its walk starts where it was
                        // saved.
                        let fresh = Statements::new(installation);
                        let walk = Walk::after(fresh.load_frontier(client)?);
                        return Ok(ClaimRound::Claimed(Claims {
                            statements: Some(fresh),
                            recorded: false,
                            deliveries: vec![],
                            walk,
                            more: true,
                            walk_stuck: false,
                            next_due: None,
                            due_seen: None,
                            wrote_due: false,
                            purge: None,
                            frontier_saved: None,
                            controls: None,
                            queue_depth: None,
                            deleted_webhooks: vec![],
                        }));
                    }
                };
                // The webhooks whose health or state this round writes are locked before any
                // of their deliveries, in the order a DELETE of a webhook takes them; one being
                // deleted gets nothing written (it would wait for the DELETE, which may be
                // waiting for this round's deliveries: a deadlock).
                let mut touched: Vec<i64> = health
                    .iter()
                    .map(|delta| delta.webhook_id)
                    .chain(disable.iter().map(|(webhook_id, _)| *webhook_id))
                    .collect();
                touched.sort_unstable();
                touched.dedup();
                let locked = s.lock_webhooks(client, &touched)?;
                let health: Vec<_> = health
                    .iter()
                    .filter(|delta| locked.contains(&delta.webhook_id))
                    .cloned()
                    .collect();
                let disable: Vec<_> = disable
                    .iter()
                    .filter(|(webhook_id, _)| locked.contains(webhook_id))
                    .cloned()
                    .collect();
                s.record(client, &records)?;
                s.park(client, &released)?;
                s.hold_keys(client, &keys_to_hold)?;
                s.release_keys(client, &keys_ended)?;
                s.delivery_failed(client, &failed_for_good)?;
                s.disable(client, &disable)?;
                s.update_health(client, &health, disable_after)?;
                let reloaded = if reload_controls {
                    Some(s.controls(client)?)
                } else {
                    None
                };
                let controls = reloaded.as_ref().unwrap_or(&self.controls);
                let limits = token_rooms(controls, &self.buckets, now);
                let existing = s.existing_webhooks(client, &webhooks_to_check)?;
                let deleted_webhooks = webhooks_to_check
                    .iter()
                    .copied()
                    .filter(|id| !existing.contains(id))
                    .collect();
                let mut claimed = plan.take(client, s, walk, &limits)?;
                claimed.deleted_webhooks = deleted_webhooks;
                // A commit changed rate limits after this round checked for changes, and the
                // round may have found its deliveries: they could go out beyond the new
                // limit. Nothing of the round is kept; the next one reloads the limits first.
                if may_redo_for_controls && shared::wake::controls_changed_pending() {
                    redo_for_controls.set(true);
                    ereport!(
                        ERROR,
                        PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
                        "webhook rate limits changed during the worker's round"
                    );
                }
                claimed.recorded = true;
                claimed.controls = reloaded;
                Ok(ClaimRound::Claimed(claimed))
            })
        }));

        self.redone_for_controls = redo_for_controls.get();
        match outcome {
            Ok(Ok(ClaimRound::NotInstalled)) => {
                self.forget_schema();
                self.uninstalled = true;
                IDLE_INTERVAL
            }
            Ok(Ok(ClaimRound::OtherVersion(version))) => {
                self.forget_schema();
                shared::registry::set_serving(false);
                let message = format!(
                    "webhook_ext {version} is installed but this server runs {}: run ALTER EXTENSION webhook_ext UPDATE",
                    env!("CARGO_PKG_VERSION")
                );
                if !self.version_warned {
                    warning!("webhook_ext worker: {message}");
                    self.version_warned = true;
                }
                shared::registry::report_error(&message);
                IDLE_INTERVAL
            }
            Ok(Ok(ClaimRound::Claimed(claimed))) => {
                shared::registry::set_serving(true);
                if let Some(depth) = claimed.queue_depth {
                    shared::registry::report_queue_depth(depth);
                }
                self.due_quiet_until =
                    match (claimed.due_seen, claimed.wrote_due || retries_recorded) {
                        // The worker made some due: look next round.
                        (_, true) => None,
                        // Meant to look but had no room to take anything: look next time.
                        (None, false) if plan.check_due => None,
                        // Not looked at: what it knew still holds.
                        (None, false) => self.due_quiet_until,
                        // Some are due (or in flight from there): look every round.
                        (Some(seen), false) if seen > 0 => None,
                        // None due now: look when the earliest is due, or at maintenance.
                        (Some(_), false) => Some(
                            Instant::now()
                                + claimed
                                    .next_due
                                    .map_or(MAINTENANCE_INTERVAL, |secs| {
                                        Duration::from_secs_f64(secs.max(0.0))
                                    })
                                    .min(MAINTENANCE_INTERVAL),
                        ),
                    };
                self.after_round(claimed, finished, &plan)
            }
            // A deadlock (or a serialization failure, which READ COMMITTED should never see)
            // says nothing about the work: the same outcomes are recorded by the next round.
            Err(e) if e.transient => {
                debug1!("webhook_ext worker: round retried: {}", e.message);
                self.reload_controls_after_failure(reload_controls);
                self.due_quiet_until = None;
                self.to_park = released;
                self.restore(taken);
                self.keys_to_hold = keys_to_hold;
                RETRY_PAUSE
            }
            // Nothing of the round was written. Its outcomes may be what failed: they are not
            // recorded again, their deliveries are made due again by the next round (sent
            // again: at least once, never lost). Until then the saved frontier stays below
            // them.
            Ok(Err(e)) => {
                self.fail_batch(&format!(
                    "recording {finished} outcomes and taking deliveries: {e}"
                ));
                self.reload_controls_after_failure(reload_controls);
                self.keys_to_hold = keys_to_hold;
                self.park_after_failure(released, taken);
                IDLE_INTERVAL
            }
            Err(e) => {
                self.fail_batch(&format!(
                    "recording {finished} outcomes and taking deliveries: {}",
                    e.message
                ));
                self.reload_controls_after_failure(reload_controls);
                self.keys_to_hold = keys_to_hold;
                self.park_after_failure(released, taken);
                IDLE_INTERVAL
            }
        }
    }

    /// A failed round's transaction took its reloaded controls with it, and the commit's
    /// flag that asked for them is spent: the next round reloads them. Otherwise a webhook
    /// rate-limited just before would be served as if it were not until the next maintenance.
    fn reload_controls_after_failure(&mut self, reloaded: bool) {
        if reloaded {
            self.controls_loaded = false;
        }
    }

    /// What the round will take for each endpoint, and the maintenance it runs.
    fn plan_round(&self, free: usize, maintenance_due: bool, purge_due: bool) -> RoundPlan {
        let endpoints = self
            .endpoints
            .iter()
            .map(|(&id, e)| {
                let state = pacing::Endpoint {
                    outstanding: e.outstanding,
                    outstanding_from_due: e.outstanding_from_due,
                    pace: self.pool.pace(id),
                };
                (id, state)
            })
            .collect();
        let rooms = pacing::rooms(
            &Caps::for_concurrency(self.concurrency, self.timeout),
            &endpoints,
        );
        let lowest_unrecorded = self
            .in_flight
            .values()
            .filter(|c| !c.from_due)
            .map(|c| c.delivery_id)
            .chain(self.local_results.iter().map(|r| r.delivery_id))
            .chain(self.to_park.iter().map(|p| p.0))
            .min();
        RoundPlan {
            free,
            rooms: rooms.known,
            default_room: rooms.default_room,
            in_flight: self.in_flight.keys().copied().collect(),
            held_keys: self.held_keys.clone(),
            lowest_unrecorded,
            save_frontier: self
                .frontier_saved
                .is_none_or(|(_, at)| at.elapsed() >= FRONTIER_SAVE_INTERVAL),
            saved_frontier: self.frontier_saved.map(|(frontier, _)| frontier),
            maintenance_due,
            count_queue_depth: maintenance_due && shared::registry::queue_depth_wanted(),
            check_due: true,
            walk_may_wait: true,
            purge_due,
            purge_from: self.purge_from,
            retention: settings::retention(),
        }
    }

    /// After the round's transaction committed: learn what it did and start what it took.
    fn after_round(&mut self, claimed: Claims, finished: u64, plan: &RoundPlan) -> Duration {
        if let Some(statements) = claimed.statements {
            log!(
                "webhook_ext worker: serving schema \"{}\"",
                statements.installation.schema
            );
            self.forget_schema();
            self.statements = Some(statements);
        }
        // The check is done (a new installation forgot what was queued, above).
        self.check_deleted_webhooks = false;
        self.withdraw_deleted(&claimed.deleted_webhooks);
        if claimed.recorded {
            shared::registry::report_progress(self.in_flight.len(), finished);
        }
        if let Some(controls) = claimed.controls {
            self.set_controls(controls);
        }
        let mut walk = claimed.walk;
        self.walk_stopped_since = if claimed.walk_stuck {
            self.walk_stopped_since.or(Some(Instant::now()))
        } else {
            None
        };
        if let Some(frontier) = claimed.frontier_saved {
            self.frontier_saved = Some((frontier, Instant::now()));
        }
        if plan.maintenance_due {
            self.last_maintenance = Some(Instant::now());
            // Forget idle endpoints (deleted webhooks among them), but not one the pool knows
            // to be fast: forgotten, it would count as new, and get only a probe's room while
            // slow endpoints hold their share.
            let pool = &self.pool;
            self.endpoints
                .retain(|&id, e| e.outstanding > 0 || pool.pace(id).is_some_and(|pace| !pace.slow));
        }
        if let Some(purge) = claimed.purge {
            self.purge_behind = purge.more;
            self.purge_from = match (purge.more, purge.last_id) {
                (true, Some(last)) => last + 1,
                _ => 0,
            };
            if purge.purged > 0 {
                debug1!(
                    "webhook_ext worker: purged {} finished deliveries older than webhook.retention",
                    purge.purged
                );
            }
        }
        // Marked in flight before any is sent; one a session's webhook_retry holds is left
        // to it (and looked at again by the walk, in case that session rolls back).
        let new_ids: Vec<i64> = claimed.deliveries.iter().map(|c| c.delivery_id).collect();
        let held = in_flight::publish_worker(self.in_flight.keys().copied(), &new_ids);
        let deliveries: Vec<Claimed> = if held.is_empty() {
            claimed.deliveries
        } else {
            claimed
                .deliveries
                .into_iter()
                .filter(|c| {
                    let is_held = held.contains(&c.delivery_id);
                    if is_held && !c.from_due {
                        walk.revisit(c.delivery_id);
                    }
                    !is_held
                })
                .collect()
        };
        self.walk = Some(walk);
        self.last_taken = deliveries.len();
        let now = Instant::now();
        for delivery in &deliveries {
            if let Some(bucket) = self.buckets.get_mut(&delivery.webhook_id) {
                bucket.take(1, now);
            }
            if let Some(key) = &delivery.ordered_key {
                self.held_keys.insert((delivery.webhook_id, key.clone()));
            }
        }
        self.start(deliveries);
        // A rate-limited webhook whose bucket is not full may have deliveries waiting for its
        // next token: the worker wakes for it (nothing polls; once full, nothing to wait for).
        let next_token = self
            .buckets
            .values()
            .filter_map(|bucket| bucket.until_next(now))
            .min();
        if claimed.walk_stuck {
            // Its endpoint's next result wakes the worker; if none comes, it parks that
            // endpoint's deliveries once it has waited LONGEST_WALK_WAIT.
            return pacing::LONGEST_WALK_WAIT / 4;
        }
        let next_due = claimed.next_due.or_else(|| {
            self.due_quiet_until
                .map(|at| at.saturating_duration_since(Instant::now()).as_secs_f64())
        });
        let sleep = pacing::sleep_after_round(
            claimed.more,
            self.in_flight.len() < MAX_OUTSTANDING,
            next_due,
            self.walk.as_ref().is_some_and(Walk::has_gaps),
        );
        match next_token {
            Some(wait) if wait < sleep => {
                // Its due rows are looked at when the token comes, if not before.
                let token_at = Instant::now() + wait;
                self.due_quiet_until = self.due_quiet_until.map(|at| at.min(token_at));
                wait.max(Duration::from_millis(1))
            }
            _ => sleep,
        }
    }

    /// Nothing more is sent for a deleted webhook: what the pool has not started for it is
    /// taken back and forgotten (its rows went with it). Attempts already running finish, and
    /// their outcomes find no row to record.
    fn withdraw_deleted(&mut self, webhooks: &[i64]) {
        for &webhook_id in webhooks {
            for delivery_id in self.pool.withdraw(webhook_id) {
                let Some(claimed) = self.in_flight.remove(&delivery_id) else {
                    continue;
                };
                let endpoint = self.endpoints.entry(webhook_id).or_default();
                endpoint.outstanding = endpoint.outstanding.saturating_sub(1);
                if claimed.from_due {
                    endpoint.outstanding_from_due = endpoint.outstanding_from_due.saturating_sub(1);
                }
                if let Some(key) = claimed.ordered_key {
                    self.held_keys.remove(&(webhook_id, key));
                }
            }
        }
    }

    /// The controls as loaded by a round: buckets for new or changed rate limits, none for
    /// webhooks no longer limited.
    fn set_controls(&mut self, controls: HashMap<i64, Control>) {
        let now = Instant::now();
        self.buckets.retain(|id, bucket| {
            controls
                .get(id)
                .is_some_and(|c| c.max_per_second == bucket.rate())
        });
        for (&id, control) in &controls {
            self.buckets
                .entry(id)
                .or_insert_with(|| TokenBucket::new(control.max_per_second, now));
        }
        self.controls = controls;
        self.controls_loaded = true;
    }

    fn park_after_failure(&mut self, released: Vec<(i64, i64)>, taken: Vec<(Claimed, JobResult)>) {
        self.due_quiet_until = None;
        self.to_park = released;
        for (claimed, _) in taken {
            if let Some(key) = claimed.ordered_key {
                self.keys_to_hold.push((claimed.delivery_id, key));
            }
            self.to_park.push((claimed.delivery_id, claimed.webhook_id));
        }
    }

    /// Put a round's finished attempts back, to be recorded by the next round.
    fn restore(&mut self, taken: Vec<(Claimed, JobResult)>) {
        for (claimed, result) in taken {
            let endpoint = self.endpoints.entry(claimed.webhook_id).or_default();
            endpoint.outstanding += 1;
            if claimed.from_due {
                endpoint.outstanding_from_due += 1;
            }
            if let Some(key) = &claimed.ordered_key {
                self.held_keys.insert((claimed.webhook_id, key.clone()));
            }
            self.in_flight.insert(claimed.delivery_id, claimed);
            self.local_results.push(result);
        }
    }

    /// Queue taken deliveries in the pool; it signs and sends each when its turn comes.
    fn start(&mut self, deliveries: Vec<Claimed>) {
        if deliveries.is_empty() {
            return;
        }
        let now = SystemTime::now();
        let mut jobs = Vec::with_capacity(deliveries.len());
        for mut delivery in deliveries {
            let endpoint = self.endpoints.entry(delivery.webhook_id).or_default();
            endpoint.outstanding += 1;
            if delivery.from_due {
                endpoint.outstanding_from_due += 1;
            }
            match attempt::message_for(&delivery) {
                Ok(message) => jobs.push(Job {
                    delivery_id: delivery.delivery_id,
                    attempt: delivery.attempt,
                    key: delivery.webhook_id,
                    start_by: None,
                    request: Outgoing::SignAtStart {
                        url: std::mem::take(&mut delivery.url),
                        message,
                    },
                }),
                Err(reason) => self.local_results.push(JobResult {
                    delivery_id: delivery.delivery_id,
                    attempt: delivery.attempt,
                    key: delivery.webhook_id,
                    started_at: now,
                    outcome: Some(attempt::unsendable(reason)),
                }),
            }
            // Kept for recording the outcome, which needs neither the body nor the secrets.
            delivery.body = String::new();
            delivery.secret = String::new();
            delivery.previous_secret = None;
            self.in_flight.insert(delivery.delivery_id, delivery);
        }
        self.pool.submit_all(jobs);
    }

    /// The health changes worth a write. An endpoint that keeps succeeding moves nothing but
    /// its last success time: that is written at most every HEALTH_REFRESH, not every round.
    fn health_to_write(
        &mut self,
        deltas: Vec<webhook_delivery::health::HealthDelta>,
    ) -> Vec<webhook_delivery::health::HealthDelta> {
        let now = Instant::now();
        deltas
            .into_iter()
            .filter(|delta| {
                let endpoint = self.endpoints.entry(delta.webhook_id).or_default();
                let clean = delta.succeeded && !delta.failed && delta.failures == 0;
                if !clean {
                    endpoint.clean_health_written_at = None;
                    return true;
                }
                match endpoint.clean_health_written_at {
                    Some(at) if now.duration_since(at) < HEALTH_REFRESH => false,
                    _ => {
                        endpoint.clean_health_written_at = Some(now);
                        true
                    }
                }
            })
            .collect()
    }

    /// The extension was dropped (or moved): attempts still in flight belong to rows that are
    /// gone. A new pool makes sure none of their results is recorded against the new tables,
    /// whose ids start over.
    fn forget_schema(&mut self) {
        self.statements = None;
        self.walk = None;
        self.to_park.clear();
        self.frontier_saved = None;
        self.purge_from = 0;
        // Ids start over in a new installation: nothing learnt about the old endpoints holds.
        self.endpoints.clear();
        self.controls.clear();
        self.controls_loaded = false;
        self.buckets.clear();
        self.held_keys.clear();
        self.keys_to_hold.clear();
        self.pool.forget_keys();
        in_flight::clear_worker();
        if self.in_flight.is_empty() && self.local_results.is_empty() {
            return;
        }
        match new_pool(self.concurrency) {
            Ok(pool) => self.pool = pool,
            Err(e) => self.fail_batch(&format!("cannot restart the HTTP pool: {e}")),
        }
        self.in_flight.clear();
        self.local_results.clear();
    }

    fn fail_batch(&self, message: &str) {
        shared::registry::report_error(message);
        warning!("webhook_ext worker: {message}");
    }
}

fn new_pool(concurrency: usize) -> std::io::Result<Pool> {
    Pool::new(
        concurrency,
        Caps::for_concurrency(concurrency, settings::timeout()),
        Client::new(settings::limits(), settings::network_policy()),
    )
}

/// What one round did, for after its commit.
struct Claims {
    /// Set when the installation is new to this worker.
    statements: Option<Statements>,
    /// The round's outcomes were recorded (not when the installation changed under them).
    recorded: bool,
    deliveries: Vec<Claimed>,
    /// The walk after this round.
    walk: Walk,
    /// The round stopped for lack of room, not for lack of work.
    more: bool,
    /// The walk stopped at a full fast endpoint without taking anything.
    walk_stuck: bool,
    next_due: Option<f64>,
    /// How many due rows the round read (None: it did not look).
    due_seen: Option<usize>,
    /// The round wrote due rows (parked deliveries).
    wrote_due: bool,
    purge: Option<store::PurgeBatch>,
    frontier_saved: Option<i64>,
    /// The controls, when this round reloaded them.
    controls: Option<HashMap<i64, Control>>,
    /// Counted at maintenance while webhook_cluster_status() asks for it.
    queue_depth: Option<i64>,
    /// Webhooks deleted since the worker queued deliveries for them.
    deleted_webhooks: Vec<i64>,
}

/// What a round maintains and takes, decided before its transaction.
struct RoundPlan {
    /// Most deliveries to take (0: none).
    free: usize,
    rooms: HashMap<i64, Room>,
    /// The room of a webhook the worker knows nothing about yet.
    default_room: usize,
    in_flight: std::collections::HashSet<i64>,
    /// Keys of ordered webhooks with a delivery in flight: (webhook, key).
    held_keys: HashSet<(i64, String)>,
    /// The lowest walk delivery taken and not recorded yet.
    lowest_unrecorded: Option<i64>,
    save_frontier: bool,
    saved_frontier: Option<i64>,
    maintenance_due: bool,
    /// Count the queue for webhook_cluster_status() (at maintenance, while someone asks).
    count_queue_depth: bool,
    /// Look at the due rows this round.
    check_due: bool,
    /// The walk may stop at a full fast endpoint (it has not waited long already).
    walk_may_wait: bool,
    purge_due: bool,
    purge_from: i64,
    retention: Duration,
}

/// What the round does with one delivery it found.
enum Decision {
    Take(store::Found),
    /// Not this reader's to send (finished, in flight, a retry that is due elsewhere).
    Skip,
    Park(i64, i64),
    /// A delivery of an ordered webhook not sent now: (delivery, webhook, key, held back
    /// behind an earlier one with its key).
    ParkKeyed(i64, i64, String, bool),
    Cancel(i64),
    Orphan(i64),
    /// Its endpoint is full and fast: the walk stops before it.
    Stop,
}

impl RoundPlan {
    /// Maintenance, then what to take: due rows, the walk's gaps, new deliveries. In the
    /// caller's transaction.
    fn take(
        &self,
        client: &mut pgrx::spi::SpiClient<'_>,
        s: &Statements,
        mut walk: Walk,
        limits: &HashMap<i64, usize>,
    ) -> pgrx::spi::Result<Claims> {
        if self.maintenance_due {
            s.forget_expired_secrets(client)?;
        }
        let queue_depth = if self.count_queue_depth {
            s.queue_depth(client)?
        } else {
            None
        };
        let purge = if self.purge_due {
            Some(s.purge(client, self.purge_from, PURGE_BATCH, self.retention)?)
        } else {
            None
        };

        let mut rooms = self.rooms.clone();
        // A rate-limited webhook takes no more than its tokens, and its walk deliveries beyond
        // them are parked (the walk does not wait for it).
        for (&webhook_id, &tokens) in limits {
            let room = rooms.entry(webhook_id).or_insert(Room {
                room: self.default_room,
                from_due: 0,
                fast: false,
            });
            room.room = room.room.min(tokens);
            room.fast = false;
        }
        let mut taking = Taking {
            plan: self,
            rooms: &mut rooms,
            left: self.free,
            taken: Vec::new(),
            taken_ids: std::collections::HashSet::new(),
            parked: Vec::new(),
            cancelled: Vec::new(),
            orphans: Vec::new(),
            round_keys: HashSet::new(),
            waiting_keys: HashMap::new(),
            parked_keyed: Vec::new(),
        };
        let mut stale_due = Vec::new();
        let mut due_seen = None;
        if self.free > 0 && self.check_due {
            // Due rows first: retries and backlogs waited longest.
            let reads: Vec<(i64, i32)> = taking
                .rooms
                .iter()
                .map(|(&id, r)| (id, (r.room + r.from_due) as i32))
                .collect();
            let due = s.due(
                client,
                (self.free * 2) as i64,
                &reads,
                self.default_room as i32,
            )?;
            due_seen = Some(due.len());
            for found in due {
                if !found.deliverable {
                    if let Some(due_us) = found.due_us {
                        stale_due.push((found.delivery_id, due_us));
                    }
                    continue;
                }
                if taking.left == 0 {
                    break;
                }
                if self.in_flight.contains(&found.delivery_id) {
                    continue;
                }
                // Ordered: made due because the one before it ended, unless another with its
                // key is in flight or taken this round; then it waits again.
                if let Some(key) = ordered_key(&found) {
                    let slot = (found.webhook_id, key);
                    if self.held_keys.contains(&slot) || taking.round_keys.contains(&slot) {
                        taking
                            .parked_keyed
                            .push((found.delivery_id, slot.0, slot.1, true));
                        continue;
                    }
                    if taking.room_for(found.webhook_id) > 0 {
                        taking.round_keys.insert(slot);
                        taking.take(found);
                    }
                    continue;
                }
                if taking.room_for(found.webhook_id) > 0 {
                    taking.take(found);
                }
            }
        }
        if walk.has_gaps() {
            // The snapshot comes before the look at the gaps (see webhook_delivery::walk).
            let (xmin, xmax) = s.snapshot(client)?;
            walk.observe_snapshot(xmin, xmax);
            let found_in_gaps = s.recheck(client, &walk.gaps())?;
            taking.look_up_waiting_keys(client, s, &found_in_gaps)?;
            for found in found_in_gaps {
                match taking.decide(found, false) {
                    Decision::Take(found) => taking.take(found),
                    other => taking.apply(other),
                }
            }
            walk.settle();
        }
        let mut more = false;
        let mut walk_stuck = false;
        if taking.left > 0 {
            let rows = s.walk(client, walk.cursor(), taking.left as i64)?;
            taking.look_up_waiting_keys(client, s, &rows)?;
            let read = rows.len();
            let ids: Vec<i64> = rows.iter().map(|r| r.delivery_id).collect();
            let mut through = walk.cursor();
            let mut stopped = false;
            for found in rows {
                let id = found.delivery_id;
                match taking.decide(found, true) {
                    Decision::Stop => {
                        stopped = true;
                        break;
                    }
                    Decision::Take(found) => taking.take(found),
                    other => taking.apply(other),
                }
                through = id;
            }
            walk_stuck = stopped && through == walk.cursor();
            walk.advance(&ids, through);
            more = stopped || read >= self.free.max(1) || taking.left == 0;
        } else if self.free > 0 {
            more = true;
        }

        let Taking {
            taken,
            parked,
            cancelled,
            orphans,
            parked_keyed,
            ..
        } = taking;
        let wrote_due = !parked.is_empty() || parked_keyed.iter().any(|p| !p.3);
        s.park(client, &parked)?;
        s.park_keyed(client, &parked_keyed)?;
        s.cancel(client, &cancelled)?;
        s.drop_orphans(client, &orphans)?;
        s.drop_stale_due(client, &stale_due)?;

        // Nothing durable says what this round takes from the walk: the saved frontier must
        // stay below it until it is recorded (or a crash would leave it behind the walk).
        let lowest_taken = taken
            .iter()
            .filter(|found| found.due_us.is_none())
            .map(|found| found.delivery_id)
            .min();
        let lowest_unrecorded = [self.lowest_unrecorded, lowest_taken]
            .into_iter()
            .flatten()
            .min();
        let frontier = walk.frontier(lowest_unrecorded);
        let frontier_saved = if self.save_frontier && self.saved_frontier != Some(frontier) {
            s.save_frontier(client, frontier)?;
            Some(frontier)
        } else {
            None
        };

        let webhook_ids: Vec<i64> = taken.iter().map(|f| f.webhook_id).collect();
        let webhooks = s.webhooks(client, &webhook_ids)?;
        let deliveries: Vec<Claimed> = taken
            .into_iter()
            .filter_map(|found| {
                // A webhook deleted since took its deliveries with it.
                let webhook = webhooks.get(&found.webhook_id)?;
                let ordered_key = ordered_key(&found);
                let mut claimed = found.claim(webhook, "pending");
                claimed.ordered_key = ordered_key;
                // Only manual retries need it; not kept for every delivery in flight.
                claimed.event_key = None;
                Some(claimed)
            })
            .collect();
        // Only a round that took everything it could see may sleep: then it needs to know
        // when the next delivery is due.
        let next_due = if more || due_seen.is_none() {
            None
        } else {
            s.next_due_in(client)?
        };
        Ok(Claims {
            statements: None,
            recorded: false,
            deliveries,
            walk,
            more,
            walk_stuck,
            next_due,
            due_seen,
            wrote_due,
            purge,
            frontier_saved,
            controls: None,
            queue_depth,
            deleted_webhooks: vec![],
        })
    }
}

/// The key that orders a delivery: its event_key, when its webhook is ordered (as the
/// statement that found it read the webhook: never older than the delivery).
fn ordered_key(found: &store::Found) -> Option<String> {
    found
        .webhook_ordered
        .then(|| found.event_key.clone())
        .flatten()
}

/// How many deliveries each rate-limited webhook may take now.
fn token_rooms(
    controls: &HashMap<i64, Control>,
    buckets: &HashMap<i64, TokenBucket>,
    now: Instant,
) -> HashMap<i64, usize> {
    controls
        .iter()
        .map(|(&id, control)| {
            let available = buckets.get(&id).map_or_else(
                || TokenBucket::new(control.max_per_second, now).available(now),
                |bucket| bucket.available(now),
            );
            (id, available)
        })
        .collect()
}

/// What a round has taken so far, and the room left.
struct Taking<'a> {
    plan: &'a RoundPlan,
    rooms: &'a mut HashMap<i64, Room>,
    left: usize,
    taken: Vec<store::Found>,
    taken_ids: std::collections::HashSet<i64>,
    parked: Vec<(i64, i64)>,
    cancelled: Vec<i64>,
    orphans: Vec<i64>,
    /// Keys of ordered webhooks taken or parked this round: later ones wait behind them.
    round_keys: HashSet<(i64, String)>,
    /// Keys of ordered webhooks with a due row, and its lowest delivery (waiting_keys.sql).
    waiting_keys: HashMap<(i64, String), i64>,
    parked_keyed: Vec<(i64, i64, String, bool)>,
}

impl Taking<'_> {
    /// Which keys of the ordered webhooks among `rows` have deliveries waiting in the due
    /// table (one statement, only when an ordered webhook has deliveries here).
    fn look_up_waiting_keys(
        &mut self,
        client: &pgrx::spi::SpiClient<'_>,
        s: &Statements,
        rows: &[store::Found],
    ) -> pgrx::spi::Result<()> {
        let keys: Vec<(i64, String)> = rows
            .iter()
            .filter(|found| found.deliverable)
            .filter_map(|found| Some((found.webhook_id, ordered_key(found)?)))
            .collect();
        if !keys.is_empty() {
            self.waiting_keys.extend(s.waiting_keys(client, &keys)?);
        }
        Ok(())
    }

    fn room_for(&mut self, webhook_id: i64) -> usize {
        let default_room = self.plan.default_room;
        self.rooms
            .entry(webhook_id)
            .or_insert(Room {
                room: default_room,
                from_due: 0,
                fast: false,
            })
            .room
    }

    fn take(&mut self, found: store::Found) {
        self.room_for(found.webhook_id);
        if let Some(room) = self.rooms.get_mut(&found.webhook_id) {
            room.room = room.room.saturating_sub(1);
        }
        self.left = self.left.saturating_sub(1);
        self.taken_ids.insert(found.delivery_id);
        self.taken.push(found);
    }

    /// What to do with a delivery the walk (`walking`) or a look at its gaps found.
    fn decide(&mut self, found: store::Found, walking: bool) -> Decision {
        if !found.deliverable
            || self.plan.in_flight.contains(&found.delivery_id)
            || self.taken_ids.contains(&found.delivery_id)
        {
            return Decision::Skip;
        }
        match found.webhook_active {
            None => return Decision::Orphan(found.delivery_id),
            Some(false) => return Decision::Cancel(found.delivery_id),
            Some(true) => {}
        }
        let room = self.rooms.get(&found.webhook_id).copied();
        let placement = pacing::place(
            room,
            self.plan.default_room,
            self.left,
            walking,
            self.plan.walk_may_wait,
        );
        if let Some(key) = ordered_key(&found) {
            // One at a time per key, in id (= commit) order: it waits behind a delivery with
            // its key that is in flight, taken or parked this round, or due (a retry).
            let slot = (found.webhook_id, key);
            let behind = self.plan.held_keys.contains(&slot)
                || self.round_keys.contains(&slot)
                || self
                    .waiting_keys
                    .get(&slot)
                    .is_some_and(|&lowest| lowest < found.delivery_id);
            if behind {
                self.round_keys.insert(slot.clone());
                return Decision::ParkKeyed(found.delivery_id, slot.0, slot.1, true);
            }
            return match placement {
                Placement::Take => {
                    self.round_keys.insert(slot);
                    Decision::Take(found)
                }
                Placement::Park => {
                    self.round_keys.insert(slot.clone());
                    Decision::ParkKeyed(found.delivery_id, slot.0, slot.1, false)
                }
                Placement::Stop => Decision::Stop,
            };
        }
        match placement {
            Placement::Take => Decision::Take(found),
            Placement::Park => Decision::Park(found.delivery_id, found.webhook_id),
            Placement::Stop => Decision::Stop,
        }
    }

    fn apply(&mut self, decision: Decision) {
        match decision {
            Decision::Park(id, webhook) => self.parked.push((id, webhook)),
            Decision::ParkKeyed(id, webhook, key, held) => {
                self.parked_keyed.push((id, webhook, key, held))
            }
            Decision::Cancel(id) => self.cancelled.push(id),
            Decision::Orphan(id) => self.orphans.push(id),
            Decision::Take(_) | Decision::Skip | Decision::Stop => {}
        }
    }
}

// Lives for one loop iteration; boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum ClaimRound {
    NotInstalled,
    /// Installed at another version: deliveries wait for ALTER EXTENSION ... UPDATE.
    OtherVersion(String),
    Claimed(Claims),
}

/// Sleep until a commit sets the latch, the pool reports a result, or `timeout` passes.
/// Returns false when the worker must stop.
fn wait_for_work(timeout: Duration, pool_fd: std::os::fd::RawFd) -> bool {
    let events = pg_sys::WL_LATCH_SET
        | pg_sys::WL_SOCKET_READABLE
        | pg_sys::WL_TIMEOUT
        | pg_sys::WL_EXIT_ON_PM_DEATH;
    // SAFETY: the main thread waits on its own latch and the pool's socket, which lives as long
    // as the pool.
    unsafe {
        pg_sys::WaitLatchOrSocket(
            pg_sys::MyLatch,
            events as i32,
            pool_fd,
            timeout.as_millis().min(i64::MAX as u128) as std::ffi::c_long,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    pg_sys::check_for_interrupts!();
    !BackgroundWorker::sigterm_received()
}

/// Wait up to `timeout` for the pool to report results (a commit's latch ends it too: the
/// round that follows claims). Returns false when nothing came.
fn wait_for_results(timeout: Duration, pool_fd: std::os::fd::RawFd) -> bool {
    let events = pg_sys::WL_LATCH_SET
        | pg_sys::WL_SOCKET_READABLE
        | pg_sys::WL_TIMEOUT
        | pg_sys::WL_EXIT_ON_PM_DEATH;
    // SAFETY: as in wait_for_work.
    let fired = unsafe {
        pg_sys::WaitLatchOrSocket(
            pg_sys::MyLatch,
            events as i32,
            pool_fd,
            timeout.as_millis().max(1).min(i64::MAX as u128) as std::ffi::c_long,
            pg_sys::PG_WAIT_EXTENSION,
        )
    };
    fired & pg_sys::WL_SOCKET_READABLE as i32 != 0
}

/// Why a round's transaction was rolled back.
struct RoundError {
    message: String,
    /// A deadlock or serialization failure: the same work can simply be tried again.
    transient: bool,
}

/// Run `body` in its own transaction. A Postgres ERROR or a panic aborts this transaction
/// only: the worker logs it and carries on (BackgroundWorker::transaction would die).
fn in_transaction<R>(
    body: impl FnOnce() -> R + UnwindSafe + RefUnwindSafe,
) -> Result<R, RoundError> {
    // SAFETY: the worker's main thread, between transactions: start one and give it a
    // snapshot, as postgres.c does for a statement.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let result = PgTryBuilder::new(|| Ok(body()))
        .catch_others(|caught| {
            Err(RoundError {
                message: describe(&caught),
                transient: is_transient(&caught),
            })
        })
        .execute();
    // SAFETY: ends the transaction started above; after an ERROR, AbortCurrentTransaction
    // cleans up whatever state the error left.
    unsafe {
        match result {
            Ok(_) => {
                pg_sys::PopActiveSnapshot();
                pg_sys::CommitTransactionCommand();
                // Background workers must report table statistics themselves, or autovacuum
                // never learns about the rows the worker updates.
                pg_sys::pgstat_report_stat(false);
            }
            Err(_) => pg_sys::AbortCurrentTransaction(),
        }
    }
    result
}

fn is_transient(caught: &CaughtError) -> bool {
    match caught {
        CaughtError::PostgresError(report) | CaughtError::ErrorReport(report) => matches!(
            report.sql_error_code(),
            PgSqlErrorCode::ERRCODE_T_R_DEADLOCK_DETECTED
                | PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE
        ),
        CaughtError::RustPanic { .. } => false,
    }
}

fn describe(caught: &CaughtError) -> String {
    match caught {
        CaughtError::PostgresError(report) | CaughtError::ErrorReport(report) => {
            report.message().to_string()
        }
        CaughtError::RustPanic { ereport, .. } => format!("internal error: {}", ereport.message()),
    }
}
