//! The background worker: wait for a commit (latch) or an HTTP result (socket), record
//! outcomes, claim due deliveries and hand them to the HTTP pool. Only this thread calls
//! Postgres; the pool's threads get plain requests and send back plain outcomes.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, RefUnwindSafe, UnwindSafe};
use std::time::{Duration, Instant, SystemTime};

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use webhook_delivery::fair::FairQueue;
use webhook_delivery::http::Client;
use webhook_delivery::pool::{Job, JobResult, Pool};

use crate::attempt;
use crate::settings;
use crate::store::{self, Claimed, Statements};
use crate::wake;

/// How often expired leases are re-queued, and the longest the worker sleeps.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(5);
/// Due deliveries left unclaimed (endpoints at their limit) are looked at again this often
/// even if no attempt finishes.
const OVERDUE_RECHECK: Duration = Duration::from_secs(1);
/// While the extension is not installed in `webhook.database`, look again this often.
const IDLE_INTERVAL: Duration = Duration::from_secs(5);
/// Under load (at least this many attempts running), wait this long for more results before
/// recording a small batch.
const COALESCE_MIN_RUNNING: usize = 8;
const COALESCE_WAIT: Duration = Duration::from_micros(500);
/// Most deliveries claimed in one transaction, so results keep flowing under a backlog.
const MAX_CLAIM_BATCH: usize = 1_000;
/// Finished deliveries deleted per maintenance round: small, so writers never wait on it.
const PURGE_BATCH: i64 = 1_000;
const PURGE_PAUSE: Duration = Duration::from_millis(10);

pub fn init() {
    if unsafe { !pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    BackgroundWorkerBuilder::new("webhook_ext worker")
        .set_type("webhook_ext worker")
        .set_function("webhook_ext_worker_main")
        .set_library("webhook_ext")
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn webhook_ext_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = settings::database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    wake::register_worker();
    wake::publish_settings(&settings::effective_json());
    log!("webhook_ext worker started, serving database \"{database}\"");

    // The worker's own commits (claims, outcomes) need not wait for the WAL flush: losing one
    // in a crash only means an attempt is made again (at-least-once), never a lost event —
    // events are committed by the application's transactions, with its own setting.
    // Plans are made for every execution (custom plans), against the table as it is then: a
    // plan cached while the queue was nearly empty (a restart, an idle night) would otherwise
    // keep treating the table as tiny when a million rows arrive.
    for (name, value) in [
        (c"synchronous_commit", c"off"),
        (c"plan_cache_mode", c"force_custom_plan"),
    ] {
        unsafe {
            pg_sys::SetConfigOption(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
            );
        }
    }
    let mut worker = match Worker::new() {
        Ok(worker) => worker,
        Err(e) => {
            wake::report_error(&format!("cannot start the HTTP pool: {e}"));
            error!("webhook_ext worker: cannot start the HTTP pool: {e}");
        }
    };
    worker.run();
    log!("webhook_ext worker stopping");
    // Exit code 1, not 0: a worker terminated on its own (pg_terminate_backend, DROP DATABASE
    // ... WITH (FORCE)) is then restarted by the postmaster; during shutdown nothing restarts.
    unsafe { pg_sys::proc_exit(1) };
}

struct Worker {
    pool: Pool,
    statements: Option<Statements>,
    installation: store::InstallationLookup,
    /// Claimed deliveries, waiting for a thread (round-robin across webhooks, a cap per
    /// webhook) or running; claiming ahead lets one transaction claim many.
    queue: FairQueue<Claimed>,
    /// Claimed deliveries whose attempt is in the pool, by delivery id.
    in_flight: HashMap<i64, Claimed>,
    /// Outcomes known without sending (e.g. unsendable requests), recorded with the next batch.
    local_results: Vec<JobResult>,
    concurrency: usize,
    schedule: Vec<Duration>,
    last_maintenance: Option<Instant>,
    /// The last purge deleted a full batch: more finished deliveries are past retention.
    purge_behind: bool,
    version_warned: bool,
}

impl Worker {
    fn new() -> std::io::Result<Worker> {
        let concurrency = settings::concurrency();
        let pool = Pool::new(
            concurrency,
            Client::new(settings::limits(), settings::network_policy()),
        )?;
        Ok(Worker {
            pool,
            statements: None,
            installation: store::InstallationLookup::default(),
            queue: FairQueue::default(),
            in_flight: HashMap::new(),
            local_results: Vec::new(),
            concurrency,
            schedule: settings::retry_schedule(),
            last_maintenance: None,
            purge_behind: false,
            version_warned: false,
        })
    }

    fn run(&mut self) {
        loop {
            if BackgroundWorker::sighup_received() {
                unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
                self.reload_settings();
            }

            self.record_results();
            self.start_attempts();
            let mut sleep = self.maintain_and_claim();
            if self.purge_behind {
                // Keep purging while behind, in small batches with room for everything else.
                sleep = sleep.min(PURGE_PAUSE);
            }
            wake::report_progress(self.in_flight.len(), 0);

            if !self.local_results.is_empty() {
                continue;
            }
            if !wait_for_work(sleep, self.pool.wake_fd()) {
                break;
            }
        }
    }

    fn reload_settings(&mut self) {
        self.concurrency = settings::concurrency();
        self.schedule = settings::retry_schedule();
        self.pool.grow(self.concurrency);
        self.pool
            .set_client(Client::new(settings::limits(), settings::network_policy()));
        wake::publish_settings(&settings::effective_json());
    }

    /// Record every finished attempt in one transaction.
    fn record_results(&mut self) {
        let mut results = std::mem::take(&mut self.local_results);
        results.extend(self.pool.try_results());
        // Under load, let a few more attempts finish so that one transaction records them
        // together; at a trickle (few running) nothing waits.
        let running = self.queue.running_len();
        if running >= COALESCE_MIN_RUNNING && !results.is_empty() && results.len() < running / 4 {
            std::thread::sleep(COALESCE_WAIT);
            results.extend(self.pool.try_results());
        }
        if results.is_empty() {
            return;
        }
        let mut records = Vec::with_capacity(results.len());
        let mut disable = Vec::new();
        for result in &results {
            let Some(claimed) = self.in_flight.remove(&result.delivery_id) else {
                continue;
            };
            self.queue.finished(claimed.webhook_id);
            let (recorded, disable_reason) = attempt::record_for(
                &claimed,
                &result.outcome,
                result.started_at,
                false,
                &self.schedule,
            );
            records.push(recorded);
            if let Some(reason) = disable_reason {
                disable.push((claimed.webhook_id, reason));
            }
        }
        let Some(statements) = self.statements.as_ref() else {
            return;
        };
        let finished = records.len() as u64;
        let health = attempt::health_deltas(&records);
        let disable_after = settings::disable_after_failures();
        let outcome = in_transaction(AssertUnwindSafe(|| {
            Spi::connect_mut(|client| {
                statements.record(client, &records)?;
                statements.disable(client, &disable)?;
                statements
                    .update_health(client, &health, disable_after)
                    .map(|_| ())
            })
        }));
        match outcome {
            Ok(Ok(())) => wake::report_progress(self.in_flight.len(), finished),
            // The claims stay 'delivering' until their lease expires; then they are sent again.
            Ok(Err(e)) => self.fail_batch(&format!("recording {finished} outcomes: {e}")),
            Err(e) => self.fail_batch(&format!("recording {finished} outcomes: {e}")),
        }
    }

    /// Re-queue expired leases when due, claim ahead what the queue has room for, start it.
    /// Returns how long to sleep before the next pending delivery is due.
    fn maintain_and_claim(&mut self) -> Duration {
        let maintenance_due = self
            .last_maintenance
            .is_none_or(|at| at.elapsed() >= MAINTENANCE_INTERVAL);
        // Claim when less than one round of work is waiting, up to two rounds in all. Per
        // webhook, at most two rounds of its running cap are claimed: a waiting claim then
        // starts within two attempt timeouts, well inside its lease.
        let outstanding = self.queue.waiting_len() + self.queue.running_len();
        let free = if self.queue.waiting_len() < self.concurrency {
            (2 * self.concurrency)
                .saturating_sub(outstanding)
                .min(MAX_CLAIM_BATCH)
        } else {
            0
        };
        // While the purge is behind (its last batch was full), it runs every round.
        let purge_due = maintenance_due || self.purge_behind;
        if free == 0 && !purge_due && self.statements.is_some() {
            // Nothing to claim: a finished attempt wakes us.
            return MAINTENANCE_INTERVAL;
        }
        let per_webhook = (2 * self.running_cap_per_webhook()) as i32;
        let busy: Vec<(i64, i32)> = self
            .queue
            .outstanding()
            .into_iter()
            .map(|(w, n)| (w, n as i32))
            .collect();
        let lease_ms = settings::lease().as_millis() as i64;
        let first_run = self.last_maintenance.is_none();
        let retention = settings::retention();
        let known = self.statements.as_ref().map(|s| s.installation.clone());

        let outcome = in_transaction(AssertUnwindSafe(|| {
            Spi::connect_mut(|client| -> pgrx::spi::Result<ClaimRound> {
                let Some(installation) = self.installation.find(client)? else {
                    return Ok(ClaimRound::NotInstalled);
                };
                if installation.version != env!("CARGO_PKG_VERSION") {
                    return Ok(ClaimRound::OtherVersion(installation.version));
                }
                let statements = match known.as_ref() {
                    Some(known) if *known == installation => None,
                    _ => Some(Statements::new(installation)),
                };
                let s = statements
                    .as_ref()
                    .or(self.statements.as_ref())
                    .expect("statements");
                let (mut requeued, mut purged) = (0, 0);
                if maintenance_due {
                    requeued = s.requeue_expired(client, first_run)?;
                    s.forget_expired_secrets(client)?;
                }
                if purge_due {
                    purged = s.purge(client, retention, PURGE_BATCH)?;
                }
                let claimed = if free > 0 {
                    s.claim(client, free as i64, &busy, per_webhook, lease_ms)?
                } else {
                    vec![]
                };
                // Only a round that took everything it could see may sleep: then it needs to
                // know when the next delivery is due.
                let filled = free == 0 || claimed.len() >= free;
                let next_due = if filled { None } else { s.next_due_in(client)? };
                Ok(ClaimRound::Claimed {
                    statements,
                    claimed,
                    next_due,
                    requeued,
                    purged,
                })
            })
        }));

        match outcome {
            Ok(Ok(ClaimRound::NotInstalled)) => {
                self.forget_schema();
                IDLE_INTERVAL
            }
            Ok(Ok(ClaimRound::OtherVersion(version))) => {
                self.forget_schema();
                let message = format!(
                    "webhook_ext {version} is installed but this server runs {}: run ALTER EXTENSION webhook_ext UPDATE",
                    env!("CARGO_PKG_VERSION")
                );
                if !self.version_warned {
                    warning!("webhook_ext worker: {message}");
                    self.version_warned = true;
                }
                wake::report_error(&message);
                IDLE_INTERVAL
            }
            Ok(Ok(ClaimRound::Claimed {
                statements,
                claimed,
                next_due,
                requeued,
                purged,
            })) => {
                if let Some(statements) = statements {
                    log!(
                        "webhook_ext worker: serving schema \"{}\"",
                        statements.installation.schema
                    );
                    self.forget_schema();
                    self.statements = Some(statements);
                }
                if maintenance_due {
                    self.last_maintenance = Some(Instant::now());
                }
                if purge_due {
                    self.purge_behind = purged >= PURGE_BATCH as u64;
                }
                if purged > 0 {
                    debug1!("webhook_ext worker: purged {purged} finished deliveries older than webhook.retention");
                }
                if requeued > 0 {
                    log!("webhook_ext worker: re-queued {requeued} deliveries whose lease expired");
                }
                let filled = free == 0 || claimed.len() >= free;
                for delivery in claimed {
                    self.queue.push(delivery.webhook_id, delivery);
                }
                self.start_attempts();
                if filled {
                    // More is due: claim again at once if there is room, else a finished
                    // attempt wakes us.
                    return if free > 0 && self.queue.waiting_len() < self.concurrency {
                        Duration::ZERO
                    } else {
                        MAINTENANCE_INTERVAL
                    };
                }
                match next_due {
                    // Overdue rows we could not take belong to endpoints at their limit (or
                    // are locked by a manual retry): a finished attempt wakes us.
                    Some(secs) if secs <= 0.0 => OVERDUE_RECHECK,
                    Some(secs) => Duration::from_secs_f64(secs).min(MAINTENANCE_INTERVAL),
                    None => MAINTENANCE_INTERVAL,
                }
            }
            Ok(Err(e)) => {
                self.fail_batch(&format!("claiming deliveries: {e}"));
                IDLE_INTERVAL
            }
            Err(e) => {
                self.fail_batch(&format!("claiming deliveries: {e}"));
                IDLE_INTERVAL
            }
        }
    }

    /// Hand waiting claims to free threads, round-robin across webhooks.
    fn start_attempts(&mut self) {
        let now = SystemTime::now();
        let cap = self.running_cap_per_webhook();
        while let Some((_, delivery)) = self.queue.start_next(self.concurrency, cap) {
            match attempt::request_for(&delivery, now) {
                Ok(request) => self.pool.submit(Job {
                    delivery_id: delivery.delivery_id,
                    attempt: delivery.attempt,
                    request,
                }),
                Err(reason) => self.local_results.push(JobResult {
                    delivery_id: delivery.delivery_id,
                    attempt: delivery.attempt,
                    started_at: now,
                    outcome: attempt::unsendable(reason),
                }),
            }
            self.in_flight.insert(delivery.delivery_id, delivery);
        }
    }

    /// The extension was dropped (or moved): attempts still in flight belong to rows that are
    /// gone. A new pool makes sure none of their results is recorded against the new tables,
    /// whose ids start over.
    fn forget_schema(&mut self) {
        self.statements = None;
        if self.queue.waiting_len() + self.queue.running_len() == 0 && self.local_results.is_empty()
        {
            return;
        }
        match Pool::new(
            self.concurrency,
            Client::new(settings::limits(), settings::network_policy()),
        ) {
            Ok(pool) => self.pool = pool,
            Err(e) => self.fail_batch(&format!("cannot restart the HTTP pool: {e}")),
        }
        self.in_flight.clear();
        self.queue.clear();
        self.local_results.clear();
    }

    /// One endpoint may use at most half the threads, so a slow one leaves room for the rest.
    fn running_cap_per_webhook(&self) -> usize {
        self.concurrency.div_ceil(2).max(1)
    }

    fn fail_batch(&self, message: &str) {
        wake::report_error(message);
        warning!("webhook_ext worker: {message}");
    }
}

// Lives for one loop iteration; boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum ClaimRound {
    NotInstalled,
    /// Installed at another version: deliveries wait for ALTER EXTENSION ... UPDATE.
    OtherVersion(String),
    Claimed {
        statements: Option<Statements>,
        claimed: Vec<Claimed>,
        next_due: Option<f64>,
        requeued: u64,
        purged: u64,
    },
}

/// Sleep until a commit sets the latch, the pool reports a result, or `timeout` passes.
/// Returns false when the worker must stop.
fn wait_for_work(timeout: Duration, pool_fd: std::os::fd::RawFd) -> bool {
    let events = pg_sys::WL_LATCH_SET
        | pg_sys::WL_SOCKET_READABLE
        | pg_sys::WL_TIMEOUT
        | pg_sys::WL_EXIT_ON_PM_DEATH;
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

/// Run `body` in its own transaction. A Postgres ERROR or a panic aborts this transaction
/// only: the worker logs it and carries on (BackgroundWorker::transaction would die).
fn in_transaction<R>(body: impl FnOnce() -> R + UnwindSafe + RefUnwindSafe) -> Result<R, String> {
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let result = PgTryBuilder::new(|| Ok(body()))
        .catch_others(|caught| Err(describe(&caught)))
        .execute();
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

fn describe(caught: &CaughtError) -> String {
    match caught {
        CaughtError::PostgresError(report) | CaughtError::ErrorReport(report) => {
            report.message().to_string()
        }
        CaughtError::RustPanic { ereport, .. } => format!("internal error: {}", ereport.message()),
    }
}
