//! The scenario driver: one PostgreSQL cluster with webhook_ext preloaded, our receiver(s)
//! on 127.0.0.1, scenarios 1–7 and a profiling pass, every figure next to a baseline
//! measured in the same run.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres::Client;

use crate::cluster::{Cluster, Nginx};
use crate::load;
use crate::receiver::{Mode, Receiver, Stats};
use crate::report::{Row, Section};
use crate::sql::WorkerSql;
use crate::sysinfo::{self, CpuUse, Rss, RssSampler};
use crate::util::{
    check_interrupted, log, median, mib, ms, now_us, p50_p99, pct, percentile, pg, ratio, run,
    sleep, sorted, thousands, Result,
};
use crate::wal;

mod many_databases;

/// Sizes of one run: `full()` is the issue's, `quick()` a smoke test of every scenario.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub quick: bool,
    pub s1_events: i64,
    /// Events of the ten-subscriber run (and of scenario 5): deliveries = 10 × this.
    pub multi_events: i64,
    pub baseline_requests: u64,
    pub s2_rate: f64,
    pub s2_secs: u64,
    pub s3_secs: u64,
    pub s3_clients: u32,
    pub s4_sizes: Vec<i64>,
    pub s4_window: Duration,
    pub s4_reps: usize,
    pub s6_purge_window: Duration,
    /// Scenario 7: events of each WAL measure (one INSERT per transaction).
    pub wal_events: i64,
    pub profile_events: i64,
    pub drain_timeout: Duration,
    /// A drain still running after this long is cut: its rate is taken over this time.
    pub drain_budget: Duration,
    /// Scenario 5's "100 hanging + 1 fast" rows: deliveries of each drain of the fast
    /// webhook, seconds of its paced run (at `s2_rate`), and the longest a drain may take.
    pub crowd_events: i64,
    pub crowd_paced_secs: u64,
    pub crowd_budget: Duration,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            quick: false,
            s1_events: 100_000,
            multi_events: 10_000,
            baseline_requests: 200_000,
            s2_rate: 200.0,
            s2_secs: 30,
            s3_secs: 15,
            s3_clients: 4,
            s4_sizes: vec![10_000, 100_000, 1_000_000],
            s4_window: Duration::from_secs(10),
            s4_reps: 30,
            s6_purge_window: Duration::from_secs(30),
            wal_events: 20_000,
            profile_events: 20_000,
            drain_timeout: Duration::from_secs(900),
            drain_budget: Duration::from_secs(180),
            crowd_events: 20_000,
            crowd_paced_secs: 10,
            crowd_budget: Duration::from_secs(30),
        }
    }

    pub fn quick() -> Sizes {
        Sizes {
            quick: true,
            s1_events: 10_000,
            multi_events: 1_000,
            baseline_requests: 20_000,
            s2_rate: 200.0,
            s2_secs: 5,
            s3_secs: 3,
            s3_clients: 4,
            s4_sizes: vec![1_000, 10_000, 100_000],
            s4_window: Duration::from_secs(2),
            s4_reps: 5,
            s6_purge_window: Duration::from_secs(6),
            wal_events: 2_000,
            profile_events: 5_000,
            drain_timeout: Duration::from_secs(300),
            drain_budget: Duration::from_secs(60),
            crowd_events: 2_000,
            crowd_paced_secs: 3,
            crowd_budget: Duration::from_secs(15),
        }
    }
}

/// Settings of the benchmark cluster. Durability is left at the defaults a production
/// server runs with (fsync = on, synchronous_commit = on, full_page_writes = on).
pub const CLUSTER_CONF: &str = "\
shared_preload_libraries = 'webhook_ext,pg_stat_statements'
pg_stat_statements.track = 'top'
pg_stat_statements.track_planning = on
webhook.allowed_networks = '127.0.0.1/32'
max_connections = 100
log_line_prefix = '%m [%p] %b '
log_checkpoints = on
max_prepared_transactions = 2
webhook.databases = 'postgres, bench_db_2, bench_db_3, bench_db_4'
";

/// Scenario 4 compares what the worker runs to find its work (walk, due rows) over the first
/// this-many deliveries of each drain.
const TAKE_SAMPLE: u64 = 5_000;
/// Scenario 4 without the worker: rows per walk (the worker's most per round) and the due
/// statement's arguments as the worker passes them for webhooks it knows nothing about yet
/// (at most 2 × its free slots in all, each webhook its default room).
const WALK_LIMIT: i64 = 1_000;
const DUE_LIMIT: i64 = 2_000;
const DUE_DEFAULT_ROOM: i32 = 8;
const CLIENTE_DDL: &str = "CREATE TABLE cliente (
    id bigserial PRIMARY KEY,
    nome text NOT NULL,
    email text,
    telefone text,
    cidade text,
    criado_em timestamptz NOT NULL DEFAULT now())";

const CLIENTE_TRIGGER: &str = "CREATE TRIGGER cliente_webhook AFTER INSERT OR UPDATE OR DELETE \
    ON cliente FOR EACH ROW EXECUTE FUNCTION webhook_trigger('cliente')";

/// Scenario 7's database no worker serves (`webhook.databases` in CLUSTER_CONF does not list it).
const WAL_IDLE_DB: &str = "bench_wal";
/// Scenario 7's first 50 events for its subscriber, in each of its two databases.
const WAL_WARM: &str = "SELECT webhook_emit('cliente.warm', jsonb_build_object('n', g))
    FROM generate_series(1, 50) AS g";

const SECRET: &str = "whsec_YmVuY2htYXJrLXNlY3JldC1mb3Itd2ViaG9va19leHQ=";

/// Scenario 5's crowd: webhooks whose receiver never answers, beside one fast webhook, and
/// the deliveries queued for each (more than are attempted during the measure: a failed
/// attempt's retry waits a minute, so only first attempts fall in it).
const CROWD_HANGING: usize = 100;
const CROWD_HANGING_EVENTS: i64 = 20;

/// One drain of a queued batch.
#[derive(Debug, Clone, Default)]
struct Drain {
    /// Deliveries expected (all queued for the counted webhooks).
    expected: i64,
    /// False when the drain was cut at the time budget (then `deliveries` < `expected`).
    complete: bool,
    deliveries: i64,
    secs: f64,
    emit_secs: f64,
    failed: i64,
    failed_attempts: i64,
    received: u64,
    rss: Rss,
    cpu: CpuUse,
    /// The worker's walk and due statements during the drain (pg_stat_statements).
    walk: StatementStats,
    due: StatementStats,
    /// The worker's statements during the drain, as a Markdown table.
    statements: String,
}

impl Drain {
    fn describe(&self) -> String {
        if self.complete {
            format!(
                "{} /s ({} in {:.2} s)",
                thousands(self.rate()),
                thousands(self.deliveries as f64),
                self.secs
            )
        } else {
            format!(
                "{} /s (drain cut after {:.0} s with {} of {} delivered)",
                thousands(self.rate()),
                self.secs,
                thousands(self.deliveries as f64),
                thousands(self.expected as f64)
            )
        }
    }

    fn rate(&self) -> f64 {
        self.deliveries as f64 / self.secs.max(1e-9)
    }
}

/// One measure of scenario 5's crowd: the fast webhook's drain and paced run.
struct CrowdMeasure {
    /// Deliveries of the drain, and how many its receiver got before the cut.
    events: i64,
    received: u64,
    /// From the drain's commit to its last receipt (to the cut if not complete).
    secs: f64,
    complete: bool,
    /// Commit-to-receipt of each paced event (ms, sorted).
    latencies: Vec<f64>,
    /// Paced events never received (counted in `latencies` as received when the wait ended).
    lost: usize,
}

impl CrowdMeasure {
    fn rate(&self) -> f64 {
        self.received as f64 / self.secs.max(1e-9)
    }

    fn describe(&self) -> String {
        if self.complete {
            format!(
                "{} /s ({} in {:.2} s)",
                thousands(self.rate()),
                thousands(self.events as f64),
                self.secs
            )
        } else {
            format!(
                "{} /s (cut after {:.0} s with {} of {} received)",
                thousands(self.rate()),
                self.secs,
                thousands(self.received as f64),
                thousands(self.events as f64)
            )
        }
    }
}

pub struct Bench {
    pub sizes: Sizes,
    /// Which webhook_ext library the cluster ran (see `ensure_release_library`).
    pub library: String,
    repo: PathBuf,
    run_dir: PathBuf,
    cluster: Cluster,
    recv: Receiver,
    sql: WorkerSql,
    perf: bool,
    s1: Option<Drain>,
    s1_multi: Option<Drain>,
    rss_seen: Vec<(String, Rss)>,
    footprint: Vec<Row>,
    footprint_notes: Vec<String>,
    pub sections: Vec<Section>,
    pub profile: Vec<String>,
}

impl Bench {
    pub fn start(sizes: Sizes, repo: &Path, run_dir: &Path, perf: bool) -> Result<Bench> {
        let library = crate::cluster::ensure_release_library(repo)?;
        // BENCH_EXTRA_CONF: more postgresql.conf lines for a diagnostic run (e.g. auto_explain).
        let extra = std::env::var("BENCH_EXTRA_CONF").unwrap_or_default();
        let mut cluster = Cluster::init(run_dir, &format!("{CLUSTER_CONF}\n{extra}"))?;
        log(format!(
            "starting PostgreSQL on 127.0.0.1:{} ({})",
            cluster.port,
            cluster.data.display()
        ));
        cluster.start()?;
        let mut db = cluster.connect("postgres")?;
        db.batch_execute(
            "CREATE EXTENSION webhook_ext; CREATE EXTENSION pg_stat_statements;
",
        )
        .map_err(|e| format!("creating the extension: {}", pg(e)))?;
        db.batch_execute(CLIENTE_DDL)
            .map_err(|e| format!("creating the extension: {}", pg(e)))?;
        // The worker's statements for this installation: its schema quoted as the worker
        // quotes it (quote_ident is the server's quote_identifier).
        let schema: String = db
            .query_one(
                "SELECT quote_ident(n.nspname) FROM pg_extension AS e
                   JOIN pg_namespace AS n ON n.oid = e.extnamespace
                  WHERE e.extname = 'webhook_ext'",
                &[],
            )
            .map_err(|e| format!("finding the extension's schema: {}", pg(e)))?
            .get(0);
        let sql = WorkerSql::new(&schema);
        let recv = Receiver::start(0, Mode::Fast).map_err(|e| e.to_string())?;
        log(format!("receiver on 127.0.0.1:{}", recv.port));
        Ok(Bench {
            sizes,
            run_dir: run_dir.to_path_buf(),
            cluster,
            recv,
            sql,
            perf,
            library,
            repo: repo.to_path_buf(),
            s1: None,
            s1_multi: None,
            rss_seen: Vec::new(),
            footprint: Vec::new(),
            footprint_notes: Vec::new(),
            sections: Vec::new(),
            profile: Vec::new(),
        })
    }

    fn db(&self) -> Result<Client> {
        self.cluster.connect("postgres")
    }

    /// Runs every scenario; a failed scenario is reported in its section and the next one
    /// runs on a clean queue. Ctrl-C stops everything.
    /// `only`: scenario numbers to run ("p" for the profiling pass); empty: all.
    pub fn run_all(&mut self, only: &[String]) -> Result<()> {
        let wanted = |title: &str| {
            only.is_empty() || only.iter().any(|o| title.starts_with(&format!("{o}.")))
        };
        type Step = fn(&mut Bench, &mut Section) -> Result<()>;
        let steps: [(&str, Step); 8] = [
            ("1. Throughput", Bench::throughput),
            ("5. Isolation: one receiver never answers", Bench::isolation),
            ("2. Latency at a steady 200 events/s", Bench::latency),
            ("3. Trigger overhead", Bench::trigger_overhead),
            ("7. WAL per delivered event", Bench::wal_per_event),
            ("4. Backlog", Bench::backlog),
            ("6. Footprint", Bench::footprint),
            ("8. Many databases", Bench::many_databases),
        ];
        for (title, step) in steps {
            if !wanted(title) {
                continue;
            }
            check_interrupted()?;
            log(format!("=== {title}"));
            let mut section = Section::new(title);
            if let Err(e) = step(self, &mut section) {
                check_interrupted()?;
                log(format!("{title} failed: {e}"));
                section.error = Some(e);
                let _ = self.reset_queue();
            }
            self.sections.push(section);
        }
        self.sections
            .sort_by_key(|s| s.title.split('.').next().unwrap_or("").to_string());
        check_interrupted()?;
        if !(only.is_empty() || only.iter().any(|o| o == "p")) {
            return Ok(());
        }
        log("=== profiling pass (pg_stat_statements, perf)");
        if let Err(e) = self.profile_pass() {
            check_interrupted()?;
            self.profile
                .push(format!("The profiling pass failed: `{e}`"));
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------
    // helpers

    fn reset_queue(&self) -> Result<()> {
        let mut db = self.db()?;
        // TRUNCATE takes its locks table by table; the worker's transactions can hold one of
        // them and wait for another (a deadlock Postgres resolves by failing us): try again.
        let mut attempt = 0;
        loop {
            match db.batch_execute(
                "TRUNCATE webhook_delivery_store, webhook_attempt, webhook_delivery_due, webhook_health;
                 DELETE FROM webhook;",
            ) {
                Ok(()) => break,
                Err(e)
                    if attempt < 10
                        && e.code() == Some(&postgres::error::SqlState::T_R_DEADLOCK_DETECTED) =>
                {
                    attempt += 1;
                    sleep(Duration::from_millis(200))?;
                }
                Err(e) => return Err(format!("resetting the queue: {}", pg(e))),
            }
        }
        self.recv.stats.reset();
        Ok(())
    }

    fn worker_pid(&self, db: &mut Client) -> Result<i32> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let row = db
                .query_opt(
                    "SELECT pid FROM pg_stat_activity WHERE backend_type = 'webhook_ext worker'",
                    &[],
                )
                .map_err(pg)?;
            if let Some(row) = row {
                return Ok(row.get(0));
            }
            if Instant::now() > deadline {
                return Err("the webhook_ext worker is not running".into());
            }
            sleep(Duration::from_millis(200))?;
        }
    }

    fn create_webhook(&self, db: &mut Client, url: &str, events: &str) -> Result<i64> {
        let row = db
            .query_one(
                "SELECT id FROM webhook_create($1, $2, $3::text::text[])",
                &[&url, &SECRET, &events],
            )
            .map_err(|e| format!("webhook_create({url}): {}", pg(e)))?;
        Ok(row.get(0))
    }

    /// Queues `n` events in one transaction; returns (deliveries queued, seconds, commit µs).
    fn emit(&self, db: &mut Client, event: &str, n: i64) -> Result<(i64, f64, u64)> {
        let t = Instant::now();
        let row = db
            .query_one(
                "SELECT coalesce(sum(webhook_emit($1, jsonb_build_object(
                     'id', g, 'nome', 'Cliente ' || g, 'email', 'cliente' || g || '@example.com',
                     'telefone', '+55 11 9' || lpad(g::text, 8, '0'), 'cidade', 'São Paulo',
                     'criado_em', now()))), 0)::bigint
                   FROM generate_series(1, $2::bigint) g",
                &[&event, &n],
            )
            .map_err(|e| format!("webhook_emit: {}", pg(e)))?;
        let committed = now_us();
        Ok((row.get(0), t.elapsed().as_secs_f64(), committed))
    }

    /// Waits until `expect` deliveries of `webhooks` are finished, or `budget` has passed
    /// (then `complete` is false and the counts are those at that moment).
    fn wait_finished(
        &self,
        db: &mut Client,
        stats: &[Arc<Stats>],
        webhooks: &[i64],
        expect: i64,
        budget: Option<Duration>,
    ) -> Result<Finished> {
        let started = Instant::now();
        let mut last_check = Instant::now();
        let count = |db: &mut Client| -> Result<(i64, i64, u64)> {
            let row = db
                .query_one(
                    "SELECT count(*) FILTER (WHERE status = 'succeeded'),
                            count(*) FILTER (WHERE status = 'failed'),
                            coalesce((extract(epoch FROM max(delivered_at)) * 1e6)::bigint, 0)
                       FROM webhook_delivery_store WHERE webhook_id = ANY($1)",
                    &[&webhooks],
                )
                .map_err(pg)?;
            Ok((row.get(0), row.get(1), row.get::<_, i64>(2) as u64))
        };
        loop {
            sleep(Duration::from_millis(50))?;
            let received: u64 = stats.iter().map(|s| s.requests()).sum();
            if received as i64 >= expect || last_check.elapsed() > Duration::from_secs(3) {
                last_check = Instant::now();
                let (ok, failed, last_us) = count(db)?;
                if ok + failed >= expect {
                    return Ok(Finished {
                        ok,
                        failed,
                        last_us,
                        complete: true,
                    });
                }
            }
            if budget.is_some_and(|b| started.elapsed() > b) {
                let (ok, failed, _) = count(db)?;
                return Ok(Finished {
                    ok,
                    failed,
                    last_us: now_us(),
                    complete: false,
                });
            }
            if started.elapsed() > self.sizes.drain_timeout {
                return Err(format!(
                    "timed out after {:?}: {received} of {expect} deliveries received",
                    self.sizes.drain_timeout
                ));
            }
        }
    }

    /// Creates one webhook per URL in `fast` (deliveries counted) and in `slow` (not
    /// waited for), queues `events` events for all of them and waits for the fast ones.
    fn drain(
        &mut self,
        label: &str,
        fast: &[String],
        slow: &[String],
        stats: &[Arc<Stats>],
        events: i64,
    ) -> Result<Drain> {
        self.reset_queue()?;
        for s in stats {
            s.reset();
        }
        let mut db = self.db()?;
        let mut fast_ids = Vec::new();
        for url in fast {
            fast_ids.push(self.create_webhook(&mut db, url, "{bench.*}")?);
        }
        for url in slow {
            self.create_webhook(&mut db, url, "{bench.*}")?;
        }
        // Every drain starts from the same worker state: restarted, its statements planned
        // on a near-empty queue by delivering one event (scenario 4 shows the other case).
        self.restart_worker(&mut db)?;
        self.emit(&mut db, "bench.warm", 1)?;
        self.wait_finished(
            &mut db,
            stats,
            &fast_ids,
            fast.len() as i64,
            Some(Duration::from_secs(30)),
        )?;
        db.batch_execute("DELETE FROM webhook_delivery_store WHERE event = 'bench.warm'")
            .map_err(pg)?;
        for s in stats {
            s.reset();
        }
        let worker = self.worker_pid(&mut db)?;
        let postmaster = self.cluster.postmaster_pid().unwrap_or(0);
        let sampler = RssSampler::start(worker);
        log(format!(
            "{label}: queueing {events} events for {} webhooks",
            fast.len() + slow.len()
        ));
        db.batch_execute("SELECT pg_stat_statements_reset()")
            .map_err(pg)?;
        let (queued, emit_secs, committed) = self.emit(&mut db, "bench.throughput", events)?;
        let cpu_a = sysinfo::cpu_snapshot(worker, postmaster);
        let wall = Instant::now();
        let expect = events * fast.len() as i64;
        log(format!(
            "{label}: {queued} deliveries queued in {emit_secs:.1} s; draining {expect}"
        ));
        let Finished {
            ok,
            failed,
            last_us,
            complete,
        } = self.wait_finished(
            &mut db,
            stats,
            &fast_ids,
            expect,
            Some(self.sizes.drain_budget),
        )?;
        let cpu_b = sysinfo::cpu_snapshot(worker, postmaster);
        let rss = sampler.finish();
        let wall = wall.elapsed().as_secs_f64();
        let walk = statement_stats(&mut db, WALK_PATTERN);
        let due = statement_stats(&mut db, DUE_PATTERN);
        let statements = worker_statements(&mut db, ok.max(1));
        let failed_attempts: i64 = db
            .query_one(
                "SELECT count(*) FROM webhook_attempt WHERE webhook_id = ANY($1) AND error IS NOT NULL",
                &[&fast_ids],
            )
            .map_err(pg)?
            .get(0);
        // The last delivered_at (server clock); the receiver's last receipt if none.
        let last_us = if last_us > 0 {
            last_us
        } else {
            stats.iter().map(|s| s.last_us()).max().unwrap_or(0)
        };
        let secs = (last_us.saturating_sub(committed)) as f64 / 1e6;
        let d = Drain {
            expected: expect,
            complete,
            deliveries: ok,
            secs: if secs > 0.0 { secs } else { wall },
            emit_secs,
            failed,
            failed_attempts,
            received: stats.iter().map(|s| s.requests()).sum(),
            rss,
            cpu: sysinfo::cpu_use(&cpu_a, &cpu_b, wall),
            walk,
            due,
            statements,
        };
        if !complete {
            log(format!(
                "{label}: cut at the {:?} budget with {ok} of {expect} delivered",
                self.sizes.drain_budget
            ));
        }
        log(format!(
            "{label}: {ok} succeeded, {failed} failed in {:.2} s = {:.0}/s; worker RSS max {}",
            d.secs,
            d.rate(),
            mib(rss.total as f64)
        ));
        self.rss_seen.push((label.to_string(), rss));
        Ok(d)
    }

    fn table_sizes(&self, db: &mut Client) -> Result<(i64, i64, i64, i64, i64, i64)> {
        let r = db
            .query_one(
                "SELECT pg_table_size('webhook_delivery_store'), pg_indexes_size('webhook_delivery_store'),
                        pg_table_size('webhook_attempt'), pg_indexes_size('webhook_attempt'),
                        (SELECT count(*) FROM webhook_delivery_store), (SELECT count(*) FROM webhook_attempt)",
                &[],
            )
            .map_err(pg)?;
        Ok((r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
    }

    fn set_conf(&self, db: &mut Client, name: &str, value: Option<&str>) -> Result<()> {
        let sql = match value {
            Some(v) => format!("ALTER SYSTEM SET {name} = '{v}'"),
            None => format!("ALTER SYSTEM RESET {name}"),
        };
        db.batch_execute(&sql).map_err(pg)?;
        db.query_one("SELECT pg_reload_conf()", &[]).map_err(pg)?;
        sleep(Duration::from_millis(500))
    }

    fn pending(&self, db: &mut Client) -> Result<i64> {
        Ok(db
            .query_one(
                "SELECT count(*) FROM webhook_delivery_store WHERE status = 'pending'",
                &[],
            )
            .map_err(pg)?
            .get(0))
    }

    fn wait_no_pending(&self, db: &mut Client, timeout: Duration) -> Result<()> {
        let t = Instant::now();
        while self.pending(db)? > 0 {
            if t.elapsed() > timeout {
                return Err("the queue did not drain in time".into());
            }
            sleep(Duration::from_millis(200))?;
        }
        Ok(())
    }

    fn sample_bodies(&self, db: &mut Client, event: &str) -> Result<Vec<String>> {
        let rows = db
            .query(
                "SELECT body FROM webhook_delivery_store WHERE event = $1 ORDER BY id LIMIT 1000",
                &[&event],
            )
            .map_err(pg)?;
        let bodies: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        if bodies.is_empty() {
            return Err(format!("no {event} bodies to replay"));
        }
        Ok(bodies)
    }

    // ---------------------------------------------------------------------------------
    // 1. Throughput (+ the footprint measurements that need its 100k deliveries)

    fn throughput(&mut self, sec: &mut Section) -> Result<()> {
        let n = self.sizes.s1_events;
        let conns = 16usize;
        sec.setup = format!(
            "{} events queued by `webhook_emit` in one transaction; the clock starts when it \
             commits and stops at the last `delivered_at`. One subscriber, then ten subscribers \
             (webhooks) on the same receiver with {} events each. Before each drain the worker is \
             restarted and delivers one event, so that every drain starts from the same state \
             (statements planned on a near-empty queue; scenario 4 restarts it on a full one). \
             Receiver: ours (below: \
             same-run comparison with nginx). `webhook.concurrency` = 32 (default): one \
             endpoint may use 16 slots, so the baseline load client uses {conns} keep-alive \
             connections and POSTs the same bodies (replayed from `webhook_delivery`) with the \
             worker's header set; it does not sign.",
            thousands(n as f64),
            thousands(self.sizes.multi_events as f64)
        );
        let stats = vec![self.recv.stats.clone()];
        let one = self.drain("S1 one subscriber", &[self.recv.url("/s1")], &[], &stats, n)?;
        let mut db = self.db()?;
        let bodies = self.sample_bodies(&mut db, "bench.throughput")?;
        if !one.complete {
            // Cut at the budget: cancel what is left, so the tables hold finished rows only.
            db.batch_execute("SELECT webhook_update(id, active => false) FROM webhook")
                .map_err(pg)?;
        }

        // Footprint of these deliveries, then retention (scenario 6 reports it).
        self.footprint_after_first_round(&mut db, &one)?;

        // The same batch again, into the space retention freed: a second sample, and the
        // table size after reuse. Skipped when a round takes minutes (the full run stays
        // within its time budget).
        let mut rounds = vec![("round 1 (empty tables)", one.clone())];
        if one.secs < 60.0 {
            let again = self.drain(
                "S1 one subscriber, second round",
                &[self.recv.url("/s1")],
                &[],
                &stats,
                n,
            )?;
            let (dh, di, ah, ai, _, _) = self.table_sizes(&mut db)?;
            self.footprint.push(Row::info(
                format!(
                    "tables after retention + VACUUM and a second batch of {} delivered",
                    thousands(n as f64)
                ),
                format!(
                    "{} (deliveries {} + indexes {}, attempts {} + indexes {})",
                    mib((dh + di + ah + ai) as f64),
                    mib(dh as f64),
                    mib(di as f64),
                    mib(ah as f64),
                    mib(ai as f64)
                ),
            ));
            rounds.push(("round 2 (after retention)", again));
        } else {
            sec.notes.push(format!(
                "One round only: it took {:.0} s (a second round, for noise and table reuse, \
                 runs when a round takes under a minute).",
                one.secs
            ));
        }

        // Baseline: our load client, same bodies, same receiver.
        let port = self.recv.port;
        let requests: Vec<Vec<u8>> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| load::request_bytes(port, "/baseline", b, i as u64))
            .collect();
        let requests = Arc::new(requests);
        self.recv.stats.reset();
        log("S1 baseline: load client → our receiver");
        let base = load::blast(port, requests.clone(), conns, self.sizes.baseline_requests)
            .map_err(|e| format!("load client: {e}"))?;
        let base_rate = base.rate();
        log(format!("S1 baseline: {base_rate:.0} requests/s"));

        let best = rounds
            .iter()
            .map(|(_, d)| d)
            .max_by(|a, b| a.rate().total_cmp(&b.rate()))
            .cloned()
            .unwrap_or_default();
        let failed: i64 = rounds.iter().map(|(_, d)| d.failed).sum();
        let failed_attempts: i64 = rounds.iter().map(|(_, d)| d.failed_attempts).sum();
        let received: u64 = rounds.iter().map(|(_, d)| d.received).sum();
        let delivered: i64 = rounds.iter().map(|(_, d)| d.deliveries).sum();
        sec.rows.push(
            Row::compared(
                format!(
                    "one subscriber: deliveries/s{}",
                    if rounds.len() > 1 {
                        " (best round)"
                    } else {
                        ""
                    }
                ),
                thousands(best.rate()),
                format!("{} req/s", thousands(base_rate)),
                pct(best.rate(), base_rate),
            )
            .target(
                "≥ 30,000/s, 0 failed",
                best.rate() >= 30_000.0 && failed == 0,
            ),
        );
        for (label, d) in &rounds {
            sec.rows.push(Row::compared(
                format!("one subscriber, {label}"),
                d.describe(),
                format!("{} req/s", thousands(base_rate)),
                pct(d.rate(), base_rate),
            ));
        }
        sec.rows.push(Row::info(
            "failed deliveries / failed attempts / requests received",
            format!(
                "{failed} / {failed_attempts} / {} (of {})",
                thousands(received as f64),
                thousands(delivered as f64)
            ),
        ));
        sec.rows.push(Row::info(
            "queueing: webhook_emit, one transaction",
            format!(
                "{} events/s ({} in {:.1} s)",
                thousands(n as f64 / one.emit_secs),
                thousands(n as f64),
                one.emit_secs
            ),
        ));

        // Ten subscribers on the same receiver.
        let urls: Vec<String> = (1..=10)
            .map(|i| self.recv.url(&format!("/s1b/{i}")))
            .collect();
        let multi = self.drain(
            "S1 ten subscribers",
            &urls,
            &[],
            &stats,
            self.sizes.multi_events,
        )?;
        sec.rows.push(
            Row::compared(
                "ten subscribers, one receiver: deliveries/s",
                multi.describe(),
                format!("{} req/s", thousands(base_rate)),
                pct(multi.rate(), base_rate),
            )
            .target(
                "≥ 25,000/s, 0 failed",
                multi.rate() >= 25_000.0 && multi.failed == 0,
            ),
        );

        // Is our receiver at least as fast as nginx? Same client, same requests.
        self.recv.stats.reset();
        match Nginx::start(&self.run_dir, 2)? {
            Some(nginx) => {
                let ng_requests: Vec<Vec<u8>> = bodies
                    .iter()
                    .enumerate()
                    .map(|(i, b)| load::request_bytes(nginx.port, "/baseline", b, i as u64))
                    .collect();
                log("S1 baseline: load client → nginx");
                let ng = load::blast(
                    nginx.port,
                    Arc::new(ng_requests),
                    conns,
                    self.sizes.baseline_requests,
                )
                .map_err(|e| format!("load client → nginx: {e}"))?;
                drop(nginx);
                // Ours again right after, so both are compared under the same load.
                let ours = load::blast(port, requests.clone(), conns, self.sizes.baseline_requests)
                    .map_err(|e| format!("load client: {e}"))?;
                sec.rows.push(
                    Row::compared(
                        "receiver check: load client → our receiver (req/s)",
                        thousands(ours.rate().max(base_rate)),
                        format!("nginx {}", thousands(ng.rate())),
                        ratio(ours.rate().max(base_rate), ng.rate()),
                    )
                    .target(
                        "≥ nginx (±10 % noise)",
                        ours.rate().max(base_rate) >= 0.9 * ng.rate(),
                    ),
                );
                if ng.errors > 0 {
                    sec.notes.push(format!(
                        "nginx answered {} requests with errors.",
                        ng.errors
                    ));
                }
            }
            None => sec.rows.push(Row::info(
                "receiver check against nginx",
                "skipped: nginx is not installed (`apt-get install nginx-light`)",
            )),
        }
        if base.errors > 0 {
            sec.notes.push(format!(
                "The load client saw {} errors out of {}.",
                base.errors, base.requests
            ));
        }
        let mut cpu_runs: Vec<(&str, &Drain)> =
            rounds.iter().map(|(label, d)| (*label, d)).collect();
        cpu_runs.push(("ten subscribers", &multi));
        sec.notes.push(cpu_table(&cpu_runs));
        self.s1 = Some(best.clone());
        self.s1_multi = Some(multi);
        Ok(())
    }

    fn footprint_after_first_round(&mut self, db: &mut Client, one: &Drain) -> Result<()> {
        let (dh, di, ah, ai, drows, arows) = self.table_sizes(db)?;
        let per = 100_000.0 / one.deliveries.max(1) as f64;
        let total = (dh + di + ah + ai) as f64;
        self.footprint.push(Row::info(
            format!(
                "tables per 100k delivered events (measured after {} delivered: {} delivery rows{}, {} attempts)",
                thousands(one.deliveries as f64),
                thousands(drows as f64),
                if one.complete { "" } else { " incl. the cancelled rest of the cut drain" },
                thousands(arows as f64)
            ),
            format!(
                "{} (deliveries {} + indexes {}, attempts {} + indexes {})",
                mib(total * per),
                mib(dh as f64 * per),
                mib(di as f64 * per),
                mib(ah as f64 * per),
                mib(ai as f64 * per)
            ),
        ));
        // What the worker's own retention purge removes per second.
        log("S6: webhook.retention = 1s, watching the worker purge");
        self.set_conf(db, "webhook.retention", Some("1s"))?;
        sleep(Duration::from_millis(1500))?;
        let count = |db: &mut Client| -> Result<i64> { Ok(self.table_sizes(db)?.4) };
        let before = count(db)?;
        let t = Instant::now();
        let mut after = before;
        while after > 0 && t.elapsed() < self.sizes.s6_purge_window {
            sleep(Duration::from_millis(250))?;
            after = count(db)?;
        }
        let purge_rate = (before - after) as f64 / t.elapsed().as_secs_f64();
        self.set_conf(db, "webhook.retention", None)?;
        self.footprint.push(
            Row::compared(
                "retention: rows the worker purges per second",
                format!(
                    "{} /s ({} in {:.0} s)",
                    thousands(purge_rate),
                    thousands((before - after) as f64),
                    t.elapsed().as_secs_f64()
                ),
                format!("{} deliveries/s (scenario 1)", thousands(one.rate())),
                pct(purge_rate, one.rate()),
            )
            .target("keeps up with delivery", purge_rate >= one.rate()),
        );
        if after > 0 && purge_rate > 0.0 {
            self.footprint_notes.push(format!(
                "At that rate the worker needs {:.0} s to purge the {} finished deliveries of \
                 one batch.",
                before as f64 / purge_rate,
                thousands(before as f64)
            ));
        }
        // Finish the purge (if the worker has not) with the worker's own statement
        // (sql/worker/purge.sql, retention 0, big batches), then VACUUM as autovacuum would.
        log("S6: finishing the purge, then VACUUM");
        let purge = db
            .prepare(&self.sql.purge)
            .map_err(|e| format!("preparing purge.sql: {}", pg(e)))?;
        let mut from = 0i64;
        loop {
            check_interrupted()?;
            let row = db
                .query_one(&purge, &[&from, &50_000i64, &0.0f64])
                .map_err(|e| format!("purge: {}", pg(e)))?;
            match row.get::<_, Option<i64>>(0) {
                Some(last) => from = last + 1,
                None => break,
            }
        }
        db.batch_execute("VACUUM webhook_delivery_store, webhook_attempt, webhook_delivery_due")
            .map_err(pg)?;
        let (dh, di, ah, ai, drows, _) = self.table_sizes(db)?;
        self.footprint.push(Row::info(
            "tables after the purge and VACUUM",
            format!(
                "{} with {} rows left",
                mib((dh + di + ah + ai) as f64),
                drows
            ),
        ));
        Ok(())
    }

    // ---------------------------------------------------------------------------------
    // 5. Isolation

    fn isolation(&mut self, sec: &mut Section) -> Result<()> {
        let events = self.sizes.multi_events;
        let timeout = self.timeout_setting()?;
        sec.setup = format!(
            "Ten fast receivers (one webhook each, separate ports) and one receiver that \
             accepts connections, reads the requests and never answers; {} events for all \
             eleven webhooks. Figure: deliveries/s to the ten fast ones until all {} have \
             succeeded, against scenario 1's ten subscribers (same number of deliveries). \
             Control (run when scenario 1's ten-subscriber drain took under a minute): the same \
             ten receivers without the hanging one. As in scenario 1, the worker is restarted \
             and delivers one event before each drain. `webhook.timeout` = {timeout} (default).",
            thousands(events as f64),
            thousands(events as f64 * 10.0)
        );
        let mut fast = Vec::new();
        for _ in 0..10 {
            fast.push(Receiver::start(0, Mode::Fast).map_err(|e| e.to_string())?);
        }
        let stats: Vec<Arc<Stats>> = fast.iter().map(|r| r.stats.clone()).collect();
        let urls: Vec<String> = fast.iter().map(|r| r.url("/iso")).collect();
        let reference = self.s1_multi.clone();
        let control = match &reference {
            Some(r) if r.secs >= 60.0 => None,
            _ => Some(self.drain("S5 control (ten fast)", &urls, &[], &stats, events)?),
        };
        let mut hang = Receiver::start(0, Mode::Hang).map_err(|e| e.to_string())?;
        let hung = self.drain(
            "S5 ten fast + one hanging",
            &urls,
            &[hang.url("/hang")],
            &stats,
            events,
        )?;
        let hang_requests = hang.stats.requests();
        let hang_conns = hang.stats.connections();
        hang.stop();
        let (reference_rate, reference_label) = match (&reference, &control) {
            (Some(r), _) => (r.rate(), "scenario 1, ten subscribers"),
            (None, Some(c)) => (c.rate(), "control run (scenario 1 did not run)"),
            (None, None) => (0.0, "none"),
        };
        sec.rows.push(
            Row::compared(
                "fast receivers' deliveries/s while one hangs",
                hung.describe(),
                format!("{} /s ({reference_label})", thousands(reference_rate)),
                pct(hung.rate(), reference_rate),
            )
            .target("≥ 90 % of scenario 1", hung.rate() >= 0.9 * reference_rate),
        );
        if let Some(c) = &control {
            sec.rows.push(Row::compared(
                "same, against the control run (ten fast receivers, none hanging)",
                thousands(hung.rate()),
                format!("{} /s", thousands(c.rate())),
                pct(hung.rate(), c.rate()),
            ));
        }
        sec.rows.push(Row::info(
            "requests the hanging receiver got (connections) during the run",
            format!("{hang_requests} ({hang_conns})"),
        ));
        sec.rows.push(Row::info(
            "failed deliveries to the fast receivers",
            hung.failed.to_string(),
        ));
        if let Some(r) = &reference {
            let (a, b) = (hung.walk.ms_per_row(), r.walk.ms_per_row());
            if a > 0.0 && b > 0.0 && (a / b > 3.0 || b / a > 3.0) {
                sec.notes.push(format!(
                    "**Caution:** the worker's walk cost {} per row here and {} in scenario 1's \
                     ten-subscriber drain: the two runs did not run the same plan, so their ratio \
                     says more about the plan than about isolation.",
                    ms(a),
                    ms(b)
                ));
            }
        }
        let mut runs: Vec<(&str, &Drain)> = Vec::new();
        if let Some(c) = &control {
            runs.push(("control: ten fast", c));
        }
        runs.push(("ten fast + one hanging", &hung));
        sec.notes.push(cpu_table(&runs));
        drop(fast);
        // The hanging webhook's attempts end as soon as its connections are closed.
        sleep(Duration::from_millis(500))?;
        self.reset_queue()?;
        self.isolation_crowd(sec)
    }

    /// The "100 hanging + 1 fast" rows: one fast webhook measured alone, then beside
    /// CROWD_HANGING webhooks whose receiver never answers (new to the worker when the measure
    /// starts, known slow after their first timeout), in the same run.
    fn isolation_crowd(&mut self, sec: &mut Section) -> Result<()> {
        let (events, rate) = (self.sizes.crowd_events, self.sizes.s2_rate);
        let _ = write!(
            sec.setup,
            " Crowd rows: one fast receiver (one webhook) alone, then beside {CROWD_HANGING} \
             webhooks on a receiver that never answers, each with {CROWD_HANGING_EVENTS} \
             deliveries queued just before the measure (the worker restarted before the fast \
             webhook's first delivery; the hanging ones are new to it when the measure starts). \
             Each measure: a drain of {} deliveries queued in one transaction (rate = \
             deliveries / (last receipt − commit), cut after {:?}), then one event per \
             transaction at a steady {rate:.0}/s for {} s (commit-to-receipt as in scenario 2; \
             an event not received 10 s after the last commit counts as received then).",
            thousands(events as f64),
            self.sizes.crowd_budget,
            self.sizes.crowd_paced_secs
        );
        let fast = Receiver::start(0, Mode::Fast).map_err(|e| e.to_string())?;
        let mut hang = Receiver::start(0, Mode::Hang).map_err(|e| e.to_string())?;
        let mut db = self.db()?;
        self.create_webhook(&mut db, &fast.url("/crowd"), "{bench.crowd.*}")?;
        for i in 0..CROWD_HANGING {
            self.create_webhook(&mut db, &hang.url(&format!("/hang/{i}")), "{bench.hang}")?;
        }
        self.restart_worker(&mut db)?;
        // The fast webhook's first delivery: the worker knows its pace from then on.
        self.emit(&mut db, "bench.crowd.warm", 1)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while fast.stats.requests() == 0 {
            if Instant::now() > deadline {
                return Err("the fast webhook's first delivery did not arrive in 30 s".into());
            }
            sleep(Duration::from_millis(20))?;
        }
        let alone = self.crowd_measure(&mut db, "S5 crowd: fast alone", &fast.stats)?;
        self.emit(&mut db, "bench.hang", CROWD_HANGING_EVENTS)?;
        let crowded = self.crowd_measure(
            &mut db,
            &format!("S5 crowd: fast beside {CROWD_HANGING} hanging"),
            &fast.stats,
        )?;
        let hang_requests = hang.stats.requests();
        let hang_conns = hang.stats.connections();
        hang.stop();
        sec.rows.push(
            Row::compared(
                format!("{CROWD_HANGING} hanging + 1 fast: the fast one's deliveries/s"),
                crowded.describe(),
                format!("{} /s (alone, this run)", thousands(alone.rate())),
                pct(crowded.rate(), alone.rate()),
            )
            .target("≥ 50 % of alone", crowded.rate() >= 0.5 * alone.rate()),
        );
        let (p99, p99_alone) = (
            percentile(&crowded.latencies, 0.99),
            percentile(&alone.latencies, 0.99),
        );
        sec.rows.push(
            Row::compared(
                format!(
                    "{CROWD_HANGING} hanging + 1 fast: the fast one's commit-to-receipt p99 at {rate:.0}/s"
                ),
                ms(p99),
                format!("{} (alone)", ms(p99_alone)),
                ratio(p99, p99_alone),
            )
            .target("< 1 s", p99 < 1000.0),
        );
        sec.rows.push(Row::info(
            format!("{CROWD_HANGING} hanging + 1 fast: p50 / p99 beside the hanging ones; alone"),
            format!(
                "{}; {} (not received: {} of {}; {} alone)",
                p50_p99(&crowded.latencies),
                p50_p99(&alone.latencies),
                crowded.lost,
                crowded.latencies.len(),
                alone.lost
            ),
        ));
        sec.rows.push(Row::info(
            format!(
                "{CROWD_HANGING} hanging + 1 fast: requests the hanging receiver got (connections)"
            ),
            format!("{hang_requests} ({hang_conns})"),
        ));
        drop(fast);
        sleep(Duration::from_millis(500))?;
        self.reset_queue()
    }

    /// One drain, then one paced run, of the crowd's fast webhook (`stats`: its receiver's).
    fn crowd_measure(&self, db: &mut Client, label: &str, stats: &Stats) -> Result<CrowdMeasure> {
        let events = self.sizes.crowd_events;
        stats.reset();
        log(format!("{label}: draining {events} deliveries"));
        let (_, _, committed) = self.emit(db, "bench.crowd.drain", events)?;
        let started = Instant::now();
        while (stats.requests() as i64) < events && started.elapsed() < self.sizes.crowd_budget {
            sleep(Duration::from_millis(20))?;
        }
        let received = stats.requests();
        let complete = received as i64 >= events;
        let end_us = if complete { stats.last_us() } else { now_us() };
        let secs = end_us.saturating_sub(committed) as f64 / 1e6;

        let rate = self.sizes.s2_rate;
        let n = (rate * self.sizes.crowd_paced_secs as f64) as usize;
        log(format!("{label}: {n} events at {rate:.0}/s"));
        stats.reset();
        let stmt = db
            .prepare(
                "SELECT webhook_emit('bench.crowd.paced', \
                   jsonb_build_object('seq', $1::bigint, 'sent_at', $2::bigint))",
            )
            .map_err(pg)?;
        let interval = Duration::from_secs_f64(1.0 / rate);
        let mut committed = vec![0u64; n];
        let start = Instant::now();
        for (i, committed) in committed.iter_mut().enumerate() {
            if let Some(wait) = (start + interval * i as u32).checked_duration_since(Instant::now())
            {
                std::thread::sleep(wait);
            }
            let sent = now_us() as i64;
            db.query_one(&stmt, &[&(i as i64), &sent]).map_err(pg)?;
            *committed = now_us();
            if i % 200 == 0 {
                check_interrupted()?;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while (stats.requests() as usize) < n && Instant::now() < deadline {
            sleep(Duration::from_millis(50))?;
        }
        let waited_until = now_us();
        let mut received_at: Vec<Option<u64>> = vec![None; n];
        for sample in stats.take_samples() {
            if let Some(at) = received_at.get_mut(sample.seq as usize) {
                *at = Some(sample.received_us);
            }
        }
        let lost = received_at.iter().filter(|r| r.is_none()).count();
        let latencies = committed
            .iter()
            .zip(&received_at)
            .map(|(c, r)| (r.unwrap_or(waited_until) as f64 - *c as f64) / 1000.0)
            .collect();
        let measure = CrowdMeasure {
            events,
            received,
            secs,
            complete,
            latencies: sorted(latencies),
            lost,
        };
        log(format!(
            "{label}: {}; commit-to-receipt p50 / p99 {} ({lost} not received)",
            measure.describe(),
            p50_p99(&measure.latencies)
        ));
        Ok(measure)
    }

    fn timeout_setting(&self) -> Result<String> {
        Ok(self
            .db()?
            .query_one("SELECT current_setting('webhook.timeout')", &[])
            .map_err(pg)?
            .get(0))
    }

    // ---------------------------------------------------------------------------------
    // 2. Latency

    fn latency(&mut self, sec: &mut Section) -> Result<()> {
        let rate = self.sizes.s2_rate;
        let secs = self.sizes.s2_secs;
        let n = (rate * secs as f64) as i64;
        sec.setup = format!(
            "One subscriber. The driver commits one `webhook_emit` per transaction at a steady \
             {rate:.0}/s for {secs} s ({n} events, autocommit, synchronous_commit = on). Each \
             event carries its sequence number and `sent_at`; the receiver time-stamps each \
             request on receipt. Commit-to-receipt = receipt − the moment COMMIT was \
             acknowledged to the driver (the commit itself is durable slightly earlier, so this \
             can read a little low; `from before the statement` includes the emit and its \
             commit, an upper bound). Baseline: our load client POSTing the same body to the \
             same receiver at the same rate on one keep-alive connection (HTTP round trip)."
        );
        self.reset_queue()?;
        let mut db = self.db()?;
        self.create_webhook(&mut db, &self.recv.url("/lat"), "{bench.latency}")?;
        let stmt = db
            .prepare(
                "SELECT webhook_emit('bench.latency', jsonb_build_object(
                     'seq', $1::bigint, 'sent_at', $2::bigint, 'nome', 'Cliente', 'cidade', 'São Paulo'))",
            )
            .map_err(pg)?;
        let interval = Duration::from_secs_f64(1.0 / rate);
        // Warm-up: one second at the same rate (connections, caches); not measured.
        let warm = Instant::now();
        for i in 0..rate as i64 {
            let due = warm + interval * i as u32;
            if let Some(w) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
            let seq = 1_000_000_000 + i;
            let sent = now_us() as i64;
            db.query_one(&stmt, &[&seq, &sent]).map_err(pg)?;
        }
        sleep(Duration::from_millis(500))?;
        self.recv.stats.reset();
        log(format!("S2: {n} events at {rate:.0}/s"));
        let mut committed = vec![0u64; n as usize];
        let mut sent_at = vec![0u64; n as usize];
        let start = Instant::now();
        let mut late = 0;
        for i in 0..n {
            let due = start + interval * i as u32;
            match due.checked_duration_since(Instant::now()) {
                Some(w) => std::thread::sleep(w),
                None if Instant::now() - due > interval => late += 1,
                None => {}
            }
            let sent = now_us();
            db.query_one(&stmt, &[&i, &(sent as i64)]).map_err(pg)?;
            committed[i as usize] = now_us();
            sent_at[i as usize] = sent;
            if i % 200 == 0 {
                check_interrupted()?;
            }
        }
        let achieved = n as f64 / start.elapsed().as_secs_f64();
        let deadline = Instant::now() + Duration::from_secs(30);
        while (self.recv.stats.requests() as i64) < n && Instant::now() < deadline {
            sleep(Duration::from_millis(50))?;
        }
        let samples = self.recv.stats.take_samples();
        let mut from_commit = Vec::new();
        let mut from_sent = Vec::new();
        let mut commit_ms = Vec::new();
        for s in &samples {
            if s.seq >= n as u64 {
                continue;
            }
            let c = committed[s.seq as usize];
            from_commit.push((s.received_us as f64 - c as f64) / 1000.0);
            from_sent.push((s.received_us as f64 - s.sent_at_us as f64) / 1000.0);
        }
        for i in 0..n as usize {
            commit_ms.push((committed[i] - sent_at[i]) as f64 / 1000.0);
        }
        let received = from_commit.len();
        let from_commit = sorted(from_commit);
        let from_sent = sorted(from_sent);
        let commit_ms = sorted(commit_ms);

        // Baseline: HTTP round trip at the same rate, same body.
        let body = self.sample_bodies(&mut db, "bench.latency")?;
        let port = self.recv.port;
        let reqs: Vec<Vec<u8>> = body
            .iter()
            .take(50)
            .enumerate()
            .map(|(i, b)| load::request_bytes(port, "/lat-baseline", b, i as u64))
            .collect();
        log("S2 baseline: paced load client");
        let base = load::paced(port, &reqs, rate, Duration::from_secs(secs.min(10)))
            .map_err(|e| e.to_string())?;
        let base = sorted(base.latencies_us.iter().map(|x| x / 1000.0).collect());
        let (p50, p95, p99) = (
            percentile(&from_commit, 0.5),
            percentile(&from_commit, 0.95),
            percentile(&from_commit, 0.99),
        );
        let (b50, b95, b99) = (
            percentile(&base, 0.5),
            percentile(&base, 0.95),
            percentile(&base, 0.99),
        );
        sec.rows.push(
            Row::compared("commit-to-receipt p50", ms(p50), ms(b50), ratio(p50, b50))
                .target("≤ 3 ms", p50 <= 3.0),
        );
        sec.rows.push(Row::compared(
            "commit-to-receipt p95",
            ms(p95),
            ms(b95),
            ratio(p95, b95),
        ));
        sec.rows.push(
            Row::compared("commit-to-receipt p99", ms(p99), ms(b99), ratio(p99, b99))
                .target("≤ 2 ms", p99 <= 2.0),
        );
        sec.rows.push(Row::info(
            "commit-to-receipt max",
            ms(percentile(&from_commit, 1.0)),
        ));
        sec.rows.push(Row::info(
            "from before the statement (emit + commit + delivery) p50 / p99",
            p50_p99(&from_sent),
        ));
        sec.rows.push(Row::info(
            "the emit transaction itself (statement + commit) p50 / p99",
            p50_p99(&commit_ms),
        ));
        sec.rows.push(Row::info(
            "events received / committed; rate achieved",
            format!("{received} / {n}; {achieved:.1}/s ({late} sent late)"),
        ));
        self.reset_queue()
    }

    // ---------------------------------------------------------------------------------
    // 3. Trigger overhead

    fn pgbench(&self, script: &Path, secs: u64) -> Result<f64> {
        self.pgbench_on(script, secs, "postgres")
    }

    fn pgbench_on(&self, script: &Path, secs: u64, db: &str) -> Result<f64> {
        let clients = self.sizes.s3_clients.to_string();
        let secs = secs.to_string();
        self.pgbench_with(script, db, &["-c", &clients, "-j", "2", "-T", &secs])
    }

    /// `n` transactions of `script` on one connection, one after the other.
    fn pgbench_transactions(&self, script: &Path, n: i64, db: &str) -> Result<f64> {
        self.pgbench_with(script, db, &["-c", "1", "-j", "1", "-t", &n.to_string()])
    }

    /// pgbench (no vacuum) running `script` in `db` with `load` (clients, duration); its tps.
    fn pgbench_with(&self, script: &Path, db: &str, load: &[&str]) -> Result<f64> {
        // The pgbench of the cluster's own installation.
        let out = run(Command::new(crate::cluster::postgres().program("pgbench"))
            .args(["-n", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &self.cluster.port.to_string()])
            .args(load)
            .args(["-f", script.to_str().unwrap()])
            .arg(db))?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| {
                l.strip_prefix("tps = ")?
                    .split_whitespace()
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
            .ok_or_else(|| format!("no tps in pgbench output: {text}"))
    }

    /// The pgbench script of scenarios 3 and 7: one row into `cliente`.
    fn insert_script(&self) -> Result<PathBuf> {
        let script = self.run_dir.join("insert_cliente.sql");
        std::fs::write(
            &script,
            "\\set n random(1, 100000000)\n\
             INSERT INTO cliente (nome, email, telefone, cidade) \
             VALUES ('Cliente ' || :n, 'cliente' || :n || '@example.com', '+55 11 9' || :n, 'São Paulo');\n",
        )
        .map_err(|e| e.to_string())?;
        Ok(script)
    }

    fn trigger_overhead(&mut self, sec: &mut Section) -> Result<()> {
        let secs = self.sizes.s3_secs;
        let clients = self.sizes.s3_clients;
        sec.setup = format!(
            "`pgbench -n -c {clients} -j 2 -T {secs}` running a one-row INSERT into `cliente` \
             (6 columns). Without the trigger vs with `AFTER INSERT OR UPDATE OR DELETE ... \
             webhook_trigger('cliente')` and one subscriber to `cliente.*` on our receiver (the \
             worker delivers while pgbench runs, on the same 2 cores). Runs alternate \
             (plain, trigger, plain, trigger; median of each); before each run the queue is \
             drained, `cliente` truncated and a CHECKPOINT taken. Diagnostic rows: the trigger \
             with no matching subscriber (the trigger function alone), and trigger + subscriber \
             in a second database the worker does not serve (queueing without concurrent \
             delivery). Secondary rows: fsync = off (reloaded for those runs only)."
        );
        self.reset_queue()?;
        let mut db = self.db()?;
        let hook = self.create_webhook(&mut db, &self.recv.url("/cliente"), "{cliente.*}")?;
        let script = self.insert_script()?;
        let prepare = |b: &Bench, db: &mut Client| -> Result<()> {
            b.wait_no_pending(db, Duration::from_secs(300))?;
            db.batch_execute("TRUNCATE cliente; CHECKPOINT;")
                .map_err(pg)
        };
        let set_trigger = |db: &mut Client, on: bool| -> Result<()> {
            db.batch_execute(if on {
                CLIENTE_TRIGGER
            } else {
                "DROP TRIGGER IF EXISTS cliente_webhook ON cliente"
            })
            .map_err(pg)
        };
        let run_pair =
            |b: &Bench, db: &mut Client, rounds: usize| -> Result<(Vec<f64>, Vec<f64>)> {
                let (mut plain, mut trig) = (Vec::new(), Vec::new());
                for _ in 0..rounds {
                    set_trigger(db, false)?;
                    prepare(b, db)?;
                    plain.push(b.pgbench(&script, secs)?);
                    log(format!(
                        "S3: without trigger {:.0} tps",
                        plain.last().unwrap()
                    ));
                    set_trigger(db, true)?;
                    prepare(b, db)?;
                    trig.push(b.pgbench(&script, secs)?);
                    log(format!("S3: with trigger {:.0} tps", trig.last().unwrap()));
                }
                set_trigger(db, false)?;
                Ok((plain, trig))
            };
        let (plain, trig) = run_pair(self, &mut db, 2)?;
        let delivered: i64 = db
            .query_one(
                "SELECT count(*) FROM webhook_delivery_store WHERE status = 'succeeded'",
                &[],
            )
            .map_err(pg)?
            .get(0);
        // The trigger with nobody subscribed: what the trigger function alone costs.
        db.query_one(
            "SELECT id FROM webhook_update($1, events => '{nobody.*}')",
            &[&hook],
        )
        .map_err(pg)?;
        set_trigger(&mut db, true)?;
        prepare(self, &mut db)?;
        let nosub = self.pgbench(&script, secs)?;
        set_trigger(&mut db, false)?;
        db.query_one(
            "SELECT id FROM webhook_update($1, events => '{cliente.*}')",
            &[&hook],
        )
        .map_err(pg)?;

        // The same trigger and subscriber with the worker out of the picture: a database it
        // does not serve (it serves `postgres`), so nothing is delivered during the run.
        log("S3: trigger + subscriber in a database the worker does not serve");
        db.batch_execute("DROP DATABASE IF EXISTS bench_idle")
            .map_err(pg)?;
        db.batch_execute("CREATE DATABASE bench_idle").map_err(pg)?;
        let (idle_plain, idle_trig) = {
            let mut idle = self.cluster.connect("bench_idle")?;
            idle.batch_execute("CREATE EXTENSION webhook_ext")
                .map_err(pg)?;
            idle.batch_execute(CLIENTE_DDL).map_err(pg)?;
            self.create_webhook(&mut idle, &self.recv.url("/idle"), "{cliente.*}")?;
            idle.batch_execute("CHECKPOINT").map_err(pg)?;
            let plain = self.pgbench_on(&script, secs, "bench_idle")?;
            idle.batch_execute(CLIENTE_TRIGGER).map_err(pg)?;
            idle.batch_execute("TRUNCATE cliente; CHECKPOINT")
                .map_err(pg)?;
            let trig = self.pgbench_on(&script, secs, "bench_idle")?;
            (plain, trig)
        };
        db.batch_execute("DROP DATABASE bench_idle").map_err(pg)?;

        let (p, t) = (median(&plain), median(&trig));
        sec.rows.push(
            Row::compared(
                "INSERT/s with trigger + 1 subscriber",
                thousands(t),
                format!("{} without trigger", thousands(p)),
                pct(t, p),
            )
            .target("≥ 70 %", t >= 0.70 * p),
        );
        sec.rows.push(Row::compared(
            "INSERT/s with trigger, no matching subscriber",
            thousands(nosub),
            format!("{} without trigger", thousands(p)),
            pct(nosub, p),
        ));
        sec.rows.push(
            Row::compared(
                "INSERT/s with trigger + 1 subscriber, nothing delivered during the run (database the worker does not serve)",
                thousands(idle_trig),
                format!("{} without trigger (same database)", thousands(idle_plain)),
                pct(idle_trig, idle_plain),
            )
            .target("≥ 80 %", idle_trig >= 0.80 * idle_plain),
        );
        sec.rows.push(Row::info(
            "individual runs (tps): without / with",
            format!(
                "{} / {}",
                plain
                    .iter()
                    .map(|x| thousands(*x))
                    .collect::<Vec<_>>()
                    .join(", "),
                trig.iter()
                    .map(|x| thousands(*x))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
        sec.rows.push(Row::info(
            "deliveries made for the trigger runs (all succeeded)",
            thousands(delivered as f64),
        ));

        // Secondary: fsync = off.
        self.set_conf(&mut db, "fsync", Some("off"))?;
        let result = run_pair(self, &mut db, 1);
        self.set_conf(&mut db, "fsync", None)?;
        let (plain_off, trig_off) = result?;
        let (p, t) = (median(&plain_off), median(&trig_off));
        sec.rows.push(Row::compared(
            "secondary, fsync = off: INSERT/s with trigger + 1 subscriber",
            thousands(t),
            format!("{} without trigger", thousands(p)),
            pct(t, p),
        ));
        self.wait_no_pending(&mut db, Duration::from_secs(300))?;
        db.batch_execute("TRUNCATE cliente").map_err(pg)?;
        self.reset_queue()
    }

    // ---------------------------------------------------------------------------------
    // 7. WAL per delivered event

    fn wal_per_event(&mut self, sec: &mut Section) -> Result<()> {
        let n = self.sizes.wal_events;
        let mut db = self.db()?;
        let checksums: String = db
            .query_one("SELECT current_setting('data_checksums')", &[])
            .map_err(pg)?
            .get(0);
        sec.setup = format!(
            "WAL written per event: `pg_current_wal_insert_lsn()` before and after each measure \
             (bytes = the LSN difference / events), on this bench's cluster, and `pg_waldump` \
             over the same LSN ranges for what the bytes are (`--stats=record` by record type; \
             its record listing summed by the relation of each record's first block). Three \
             measures of the same {n} one-row INSERTs into `cliente` (scenario 3's statement), \
             one per transaction (`pgbench -n -c 1 -t {n}`): **plain**, without the trigger, and \
             **queue**, with `webhook_trigger('cliente')` and one subscriber, both in a database \
             no worker serves (`{WAL_IDLE_DB}`: `webhook.databases` does not list it), so that \
             nothing is delivered; **delivered**, the same INSERTs with the \
             trigger and one subscriber in `postgres`, the database the worker serves, which \
             delivers them to our receiver (200) while they run: that measure ends when all {n} \
             have succeeded (polled, at most 120 s after the last INSERT). The worker is never \
             held. **Delivery part** = delivered − queue. The worker knows the endpoint as fast \
             (it delivered 50 events to it just before; the other database's store holds 50 \
             events too, so that both stores start alike). A CHECKPOINT before each measure, \
             none inside one (in production a delivery follows its commit by milliseconds: its \
             updates find their pages already written since the last checkpoint, with no \
             full-page image). For this scenario only (ALTER SYSTEM, reloaded): \
             `checkpoint_timeout` = 1h and autovacuum off, so that nothing else writes WAL \
             meanwhile; the redo LSN and the checkpoint count are checked unchanged over each \
             measure. Durability as elsewhere: fsync, synchronous_commit and full_page_writes \
             on; data_checksums = {checksums}. The LSN difference also counts record alignment \
             and page headers, which pg_waldump's sizes leave out."
        );
        self.reset_queue()?;
        let hook = self.create_webhook(&mut db, &self.recv.url("/wal"), "{cliente.*}")?;
        db.batch_execute("DROP TRIGGER IF EXISTS cliente_webhook ON cliente; TRUNCATE cliente")
            .map_err(pg)?;
        // The endpoint's first deliveries: the worker knows its pace from then on (a new
        // endpoint's backlog would be parked in the due table, which is not the steady state).
        db.batch_execute(WAL_WARM).map_err(pg)?;
        self.wait_finished(
            &mut db,
            std::slice::from_ref(&self.recv.stats),
            &[hook],
            50,
            Some(Duration::from_secs(30)),
        )?;
        // The same table, subscriber and 50 queued events where the worker does not look.
        db.batch_execute(&format!("DROP DATABASE IF EXISTS {WAL_IDLE_DB}"))
            .map_err(pg)?;
        db.batch_execute(&format!("CREATE DATABASE {WAL_IDLE_DB}"))
            .map_err(pg)?;
        let measured = (|| -> Result<WalWindows> {
            let mut idle = self.cluster.connect(WAL_IDLE_DB)?;
            idle.batch_execute("CREATE EXTENSION webhook_ext")
                .map_err(pg)?;
            idle.batch_execute(CLIENTE_DDL).map_err(pg)?;
            self.create_webhook(&mut idle, &self.recv.url("/wal-idle"), "{cliente.*}")?;
            idle.batch_execute(WAL_WARM).map_err(pg)?;
            self.set_conf(&mut db, "autovacuum", Some("off"))?;
            self.set_conf(&mut db, "checkpoint_timeout", Some("1h"))?;
            self.wal_windows(&mut db, &mut idle, hook, n)
        })();
        let _ = db.batch_execute("DROP TRIGGER IF EXISTS cliente_webhook ON cliente");
        self.set_conf(&mut db, "autovacuum", None)?;
        self.set_conf(&mut db, "checkpoint_timeout", None)?;
        db.batch_execute(&format!("DROP DATABASE IF EXISTS {WAL_IDLE_DB}"))
            .map_err(pg)?;
        let w = measured?;

        let nf = n as f64;
        let [plain, queue, delivered] = &w.windows;
        let (plain_b, queue_b, total_b) =
            (plain.bytes / nf, queue.bytes / nf, delivered.bytes / nf);
        let delivery_b = total_b - queue_b;
        let bytes = |b: f64| format!("{b:.0} B");
        let plain_label = format!("{} plain INSERT", bytes(plain_b));
        sec.rows.push(Row::compared(
            "plain INSERT into `cliente` (no trigger): WAL per row",
            bytes(plain_b),
            "—",
            "1.00×",
        ));
        sec.rows.push(Row::compared(
            "queue: the same INSERT with the trigger and 1 subscriber, in a database the worker does not serve (nothing delivered): WAL per event (row + queue)",
            format!("{} (queue part +{})", bytes(queue_b), bytes(queue_b - plain_b)),
            plain_label.clone(),
            ratio(queue_b, plain_b),
        ));
        sec.rows.push(
            Row::compared(
                format!(
                    "delivery part: delivered − queue, the worker delivering the {} events (HTTP 200): WAL per event",
                    thousands(nf)
                ),
                bytes(delivery_b),
                plain_label.clone(),
                ratio(delivery_b, plain_b),
            )
            .target("≤ 1.5× plain", delivery_b <= 1.5 * plain_b),
        );
        sec.rows.push(
            Row::compared(
                "total per delivered event (delivered: the same INSERTs in the database the worker serves, measured until all are delivered): row + queue + delivery",
                bytes(total_b),
                plain_label.clone(),
                ratio(total_b, plain_b),
            )
            .target("≤ 5× plain", total_b <= 5.0 * plain_b),
        );
        sec.rows.push(Row::compared(
            "of which the queue part alone (queue − plain)",
            format!("+{}", bytes(queue_b - plain_b)),
            plain_label,
            ratio(queue_b - plain_b, plain_b),
        ));
        let per = |win: &WalWindow, f: &dyn Fn(&wal::RecordStats) -> u64| {
            win.records.iter().map(f).sum::<u64>() as f64 / nf
        };
        let count = |r: &wal::RecordStats| r.count;
        let fpi = |r: &wal::RecordStats| r.fpi_bytes;
        sec.rows.push(Row::info(
            "WAL records per event: plain / queue / delivered (delivery part)",
            format!(
                "{:.2} / {:.2} / {:.2} ({:+.2})",
                per(plain, &count),
                per(queue, &count),
                per(delivered, &count),
                per(delivered, &count) - per(queue, &count)
            ),
        ));
        // The worker's own transactions: COMMIT records beyond the INSERTs' (one each).
        let commits = |win: &WalWindow| {
            win.records
                .iter()
                .filter(|r| r.name == "Transaction/COMMIT")
                .map(|r| r.count)
                .sum::<u64>() as f64
        };
        sec.rows.push(Row::info(
            "worker transactions per delivered event (the delivered measure's COMMIT records beyond the queue measure's): each records the outcomes that finished since the last, so their number follows the INSERT rate",
            format!("{:.2}", (commits(delivered) - commits(queue)) / nf),
        ));
        sec.rows.push(Row::info(
            "of the bytes, full-page images per event: plain / queue / delivered",
            format!(
                "{} / {} / {}",
                bytes(per(plain, &fpi)),
                bytes(per(queue, &fpi)),
                bytes(per(delivered, &fpi))
            ),
        ));
        sec.rows.push(Row::info(
            "rates during the measures (one connection, one transaction per INSERT)",
            format!(
                "plain {} INSERT/s, queue {} INSERT/s (database the worker does not serve); delivered {} INSERT/s with the worker delivering meanwhile, {}",
                thousands(w.plain_tps),
                thousands(w.queue_tps),
                thousands(w.delivered_tps),
                if w.lag_secs > 0.0 {
                    format!(
                        "the last delivery recorded {} after pgbench ended",
                        ms(w.lag_secs * 1000.0)
                    )
                } else {
                    "every delivery recorded by the time pgbench ended".to_string()
                }
            ),
        ));
        sec.rows.push(Row::info(
            "checkpoints during the measures",
            if w.checkpoints.is_empty() {
                "none (redo LSN and checkpoint count unchanged over each)".to_string()
            } else {
                w.checkpoints.join("; ")
            },
        ));
        if !w.checkpoints.is_empty() {
            sec.notes.push(
                "**Caution:** a checkpoint ran during a measure: the pages it wrote were logged \
                 again as full-page images at their next change, which the figures include."
                    .into(),
            );
        }
        sec.notes.push(wal_breakdown(&w.windows, nf));
        sec.notes.push(relation_breakdown(&w.windows, nf));
        db.batch_execute("TRUNCATE cliente").map_err(pg)?;
        self.reset_queue()
    }

    /// Scenario 7's three measures: plain and queue in `idle` (a database the worker does not
    /// serve), delivered in `db` (the one it serves) with the worker delivering meanwhile.
    fn wal_windows(
        &self,
        db: &mut Client,
        idle: &mut Client,
        hook: i64,
        n: i64,
    ) -> Result<WalWindows> {
        let script = self.insert_script()?;
        // An autovacuum worker started before autovacuum was switched off would still write.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let busy: i64 = db
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'",
                    &[],
                )
                .map_err(pg)?
                .get(0);
            if busy == 0 {
                break;
            }
            if Instant::now() > deadline {
                return Err("an autovacuum worker is still running after 120 s".into());
            }
            sleep(Duration::from_millis(200))?;
        }
        let mut checkpoints = Vec::new();
        let mut labels = HashMap::new();
        // A measure from `from` to `to`: no checkpoint since `from`, and what pg_waldump says of
        // it, read at once (the next measure's CHECKPOINT may recycle its WAL files) once the
        // WAL up to `to` is flushed (the worker commits with synchronous_commit off).
        let mut close = |db: &mut Client, name: &str, from: &WalPoint, to: &WalPoint| {
            wait_flushed(db, to.lsn)?;
            if let Some(c) = from.checkpoint_between(&wal_point(db)?) {
                checkpoints.push(format!("{name}: {c}"));
            }
            let records = wal::parse_stats(&self.cluster.waldump_stats(&from.text, &to.text)?);
            let listed = wal::parse_records(&self.cluster.waldump_listing(&from.text, &to.text)?);
            Ok::<_, String>((to.lsn.saturating_sub(from.lsn) as f64, records, listed))
        };

        log(format!(
            "S7: {n} plain INSERTs in {WAL_IDLE_DB} (not served)"
        ));
        idle.batch_execute(
            "DROP TRIGGER IF EXISTS cliente_webhook ON cliente; TRUNCATE cliente; CHECKPOINT",
        )
        .map_err(pg)?;
        let a = wal_point(db)?;
        let plain_tps = self.pgbench_transactions(&script, n, WAL_IDLE_DB)?;
        let b = wal_point(db)?;
        let plain = close(db, "plain", &a, &b)?;
        relation_labels(idle, &mut labels)?;

        log(format!(
            "S7: {n} INSERTs with the trigger in {WAL_IDLE_DB} (not served: nothing delivered)"
        ));
        idle.batch_execute(CLIENTE_TRIGGER).map_err(pg)?;
        idle.batch_execute("TRUNCATE cliente; CHECKPOINT")
            .map_err(pg)?;
        let c = wal_point(db)?;
        let queue_tps = self.pgbench_transactions(&script, n, WAL_IDLE_DB)?;
        let d = wal_point(db)?;
        let queue = close(db, "queue", &c, &d)?;
        relation_labels(idle, &mut labels)?;
        let queued: i64 = idle
            .query_one(
                "SELECT count(*) FROM webhook_delivery_store
                  WHERE event = 'cliente.created' AND status = 'pending' AND attempts = 0",
                &[],
            )
            .map_err(pg)?
            .get(0);
        if queued != n {
            return Err(format!(
                "{n} INSERTs with the trigger in {WAL_IDLE_DB} left {queued} pending deliveries"
            ));
        }

        log(format!(
            "S7: {n} INSERTs with the trigger in postgres, the worker delivering meanwhile"
        ));
        db.batch_execute(CLIENTE_TRIGGER).map_err(pg)?;
        db.batch_execute("TRUNCATE cliente; CHECKPOINT")
            .map_err(pg)?;
        let e = wal_point(db)?;
        let delivered_tps = self.pgbench_transactions(&script, n, "postgres")?;
        let inserted = now_us();
        // The receiver's count goes on from the 50 warm-up deliveries.
        let done = self.wait_finished(
            db,
            std::slice::from_ref(&self.recv.stats),
            &[hook],
            n + 50,
            Some(Duration::from_secs(120)),
        )?;
        if !done.complete {
            return Err(format!(
                "{} of the {n} deliveries succeeded within 120 s of the last INSERT",
                done.ok - 50
            ));
        }
        if done.failed > 0 {
            return Err(format!("{} deliveries failed", done.failed));
        }
        let f = wal_point(db)?;
        let delivered = close(db, "delivered", &e, &f)?;
        relation_labels(db, &mut labels)?;
        // delivered_at is the recording transaction's start (server clock, same host).
        let lag_secs = (done.last_us as f64 - inserted as f64) / 1e6;

        let windows = [plain, queue, delivered].map(|(bytes, records, listed)| WalWindow {
            bytes,
            records,
            relations: by_relation(&listed, &labels),
        });
        log(format!(
            "S7: WAL per event: plain {:.0} B, queue {:.0} B, delivered {:.0} B (delivery part {:.0} B)",
            windows[0].bytes / n as f64,
            windows[1].bytes / n as f64,
            windows[2].bytes / n as f64,
            (windows[2].bytes - windows[1].bytes) / n as f64
        ));
        Ok(WalWindows {
            windows,
            plain_tps,
            queue_tps,
            delivered_tps,
            lag_secs,
            checkpoints,
        })
    }

    // ---------------------------------------------------------------------------------
    // 4. Backlog

    /// Pending deliveries `$2..=$3` of webhook `$1` (bodies like the trigger's), written
    /// straight into the store.
    const FILL: &'static str = "INSERT INTO webhook_delivery_store (webhook_id, event_id, event, body)
        SELECT $1, u, 'bench.backlog',
               format('{\"id\":\"%s\",\"event\":\"bench.backlog\",\"timestamp\":\"2024-01-01T10:00:00Z\",\"data\":{\"id\":%s,\"nome\":\"Cliente %s\",\"email\":\"cliente%s@example.com\",\"telefone\":\"+55 11 9%s\",\"cidade\":\"São Paulo\"}}', u, g, g, g, lpad(g::text, 8, '0'))
          FROM generate_series($2::bigint, $3::bigint) g, LATERAL (SELECT gen_random_uuid() AS u) x";

    /// Deliveries `$2..=$3` of webhook `$1` whose endpoint is dead, as record.sql leaves them
    /// after a failed attempt: pending, with a due row (all overdue here, oldest first).
    const FILL_DEAD: &'static str = "WITH d AS (
            INSERT INTO webhook_delivery_store (webhook_id, event_id, event, body, attempts, error)
            SELECT $1, gen_random_uuid(), 'bench.dead', '{}', 1, 'connection refused'
              FROM generate_series($2::bigint, $3::bigint) g
            RETURNING id, webhook_id)
        INSERT INTO webhook_delivery_due (delivery_id, webhook_id, due_at)
        SELECT id, webhook_id, now() - interval '1 hour' + id * interval '1 microsecond' FROM d";

    /// Runs a fill statement in a transaction that takes its transaction id first, as the
    /// trigger and webhook_enqueue do (the walk relies on it: crates/delivery/src/walk.rs).
    fn fill(db: &mut Client, sql: &str, hook: i64, from: i64, to: i64) -> Result<()> {
        let mut tx = db.transaction().map_err(pg)?;
        tx.batch_execute("SELECT pg_current_xact_id()")
            .map_err(pg)?;
        tx.execute(sql, &[&hook, &from, &to])
            .map_err(|e| format!("fill: {}", pg(e)))?;
        tx.commit().map_err(pg)
    }

    fn backlog(&mut self, sec: &mut Section) -> Result<()> {
        let sizes = self.sizes.s4_sizes.clone();
        let reps = self.sizes.s4_reps;
        let list = sizes
            .iter()
            .map(|s| thousands(*s as f64))
            .collect::<Vec<_>>()
            .join(" / ");
        let plan_cache_mode = self
            .sql
            .session_settings
            .iter()
            .find(|(name, _)| name == "plan_cache_mode")
            .map_or("auto", |(_, value)| value.as_str());
        sec.setup = format!(
            "Queues of {list} pending deliveries for one webhook, written into \
             `webhook_delivery_store` with one INSERT ... SELECT generate_series and analyzed, in \
             a transaction prepared with PREPARE TRANSACTION: the worker cannot see the rows \
             until COMMIT PREPARED, which starts the drain (and wakes it). Meanwhile the worker \
             is restarted, so that it knows no endpoint; the statistics the commit makes visible \
             invalidate its plans, so that it plans its statements on this queue, as after any \
             restart or autovacuum of a big queue. **Take cost** \
             = what the worker runs to find its work, as pg_stat_statements sees it during the \
             first {} deliveries of the drain: planning + execution time of its walk \
             (`sql/worker/walk.sql`) and due (`due.sql`) statements divided by the rows the walk \
             read (each walk reads what the endpoint has room for, not the same number at every \
             size). **Drain rate** = deliveries/s at the receiver while the backlog is above half \
             its size (at most {:?}). Below them, the worker's statements timed without it, in a \
             database it does not serve: `sql/worker/walk.sql`, `due.sql` and `next_due.sql` as \
             built into the bench, prepared under the worker's session settings (src/worker.rs: \
             enable_seqscan and enable_nestloop off, plan_cache_mode {plan_cache_mode}), run 6 \
             times so that the plan cache may switch to its generic plan as the worker's does \
             (plan_cache_mode auto switches after 5 runs), then {reps} times \
             under EXPLAIN ANALYZE (planning + execution, median; the figure says which plan \
             ran). The walk reads {WALK_LIMIT} rows from the start of the queue and from its \
             middle. `due` runs with the arguments the worker passes for webhooks it does not know \
             yet ({DUE_LIMIT} rows at most, {DUE_DEFAULT_ROOM} per webhook), first with an empty \
             due table, then with as many due rows (all overdue) of a second, dead endpoint as the \
             queue has pending deliveries.",
            thousands(TAKE_SAMPLE as f64),
            self.sizes.s4_window
        );
        self.reset_queue()?;

        // The worker itself, on each queue.
        let mut drains = Vec::new();
        for &size in &sizes {
            check_interrupted()?;
            drains.push((size, self.drain_rate(size)?));
        }
        let (d_size, (d_rate, _, d_take)) = drains[0].clone();
        let largest = drains.last().map(|d| d.0).unwrap_or(0);
        // One walk reads what the endpoint has room for (a few hundred rows, not the same
        // number at every size): its cost is compared per row read.
        for (size, (_, _, take)) in &drains {
            let mut row = Row::compared(
                format!(
                    "worker's walk + due at {} pending, per row walked (pg_stat_statements)",
                    thousands(*size as f64)
                ),
                format!(
                    "{:.1} µs per row (walk {} per call of {:.1} rows, due {} per call)",
                    take.us_per_row(),
                    ms(take.walk.ms_per_call()),
                    take.walk.rows_per_call(),
                    ms(take.due.ms_per_call())
                ),
                format!(
                    "{:.1} µs at {}",
                    d_take.us_per_row(),
                    thousands(d_size as f64)
                ),
                ratio(take.us_per_row(), d_take.us_per_row()),
            );
            if *size == largest {
                row = row.target(
                    "≤ 1.5× the smallest",
                    take.us_per_row() <= 1.5 * d_take.us_per_row(),
                );
            }
            sec.rows.push(row);
        }
        for (size, (rate, _, _)) in &drains {
            let mut row = Row::compared(
                format!("drain rate at {} pending", thousands(*size as f64)),
                format!("{} /s", thousands(*rate)),
                format!("{} /s at {}", thousands(d_rate), thousands(d_size as f64)),
                pct(*rate, d_rate),
            );
            if *size == largest {
                row = row.target("holds (≥ 90 % of the smallest)", *rate >= 0.9 * d_rate);
            }
            sec.rows.push(row);
        }

        // The same statements without the worker.
        let mut admin = self.db()?;
        admin
            .batch_execute("DROP DATABASE IF EXISTS bench_backlog")
            .map_err(pg)?;
        admin
            .batch_execute("CREATE DATABASE bench_backlog")
            .map_err(pg)?;
        let result = self.backlog_without_worker(sec, &sizes, reps);
        admin
            .batch_execute("DROP DATABASE IF EXISTS bench_backlog")
            .map_err(pg)?;
        result
    }

    /// Scenario 4's second half: the worker's walk, due and next_due statements timed in
    /// bench_backlog (a database the worker does not serve).
    fn backlog_without_worker(&self, sec: &mut Section, sizes: &[i64], reps: usize) -> Result<()> {
        let mut idle = self.cluster.connect("bench_backlog")?;
        idle.batch_execute("CREATE EXTENSION webhook_ext")
            .map_err(pg)?;
        let hook = self.create_webhook(&mut idle, &self.recv.url("/idle"), "{bench.*}")?;
        let dead = self.create_webhook(&mut idle, "http://127.0.0.1:9/dead", "{bench.*}")?;
        let due_args = format!("({DUE_LIMIT}, '{{}}', '{{}}', {DUE_DEFAULT_ROOM})");
        let timer = StatementTimer {
            settings: self.sql.session_settings_sql(),
            reps,
        };

        // The walk and due (empty due table) on growing queues.
        let mut walks = Vec::new();
        let mut filled = 0i64;
        for &size in sizes {
            check_interrupted()?;
            log(format!("S4: filling the idle queue to {size}"));
            Self::fill(&mut idle, Self::FILL, hook, filled + 1, size)?;
            filled = size;
            idle.batch_execute("ANALYZE webhook_delivery_store, webhook_delivery_due")
                .map_err(pg)?;
            let first: i64 = idle
                .query_one(
                    "SELECT min(id) FROM webhook_delivery_store WHERE webhook_id = $1",
                    &[&hook],
                )
                .map_err(pg)?
                .get(0);
            // A connection of its own: it takes the worker's session settings, search_path
            // (pg_catalog, pg_temp) among them, under which `idle`'s unqualified names fail.
            let mut timing = self.cluster.connect("bench_backlog")?;
            let start = timer.time(
                &mut timing,
                &self.sql.walk,
                "bigint, bigint",
                &format!("({}, {WALK_LIMIT})", first - 1),
            )?;
            let middle = timer.time(
                &mut timing,
                &self.sql.walk,
                "bigint, bigint",
                &format!("({}, {WALK_LIMIT})", first - 1 + size / 2),
            )?;
            let due = timer.time(
                &mut timing,
                &self.sql.due,
                "bigint, bigint[], int[], int",
                &due_args,
            )?;
            log(format!(
                "S4: {size} pending: walk {:.3} ms from the start, {:.3} ms from the middle; due (empty) {:.3} ms",
                start.ms, middle.ms, due.ms
            ));
            walks.push((size, start, middle, due));
        }

        // due and next_due with a dead endpoint's backlog in the due table.
        let mut dues = Vec::new();
        let mut dead_filled = 0i64;
        for &size in sizes {
            check_interrupted()?;
            log(format!("S4: {size} due rows of a dead endpoint"));
            Self::fill(&mut idle, Self::FILL_DEAD, dead, dead_filled + 1, size)?;
            dead_filled = size;
            idle.batch_execute("ANALYZE webhook_delivery_store, webhook_delivery_due")
                .map_err(pg)?;
            let mut timing = self.cluster.connect("bench_backlog")?;
            let due = timer.time(
                &mut timing,
                &self.sql.due,
                "bigint, bigint[], int[], int",
                &due_args,
            )?;
            let next_due = timer.time(&mut timing, &self.sql.next_due, "", "")?;
            log(format!(
                "S4: {size} due rows: due {:.3} ms ({} rows), next_due {:.3} ms",
                due.ms, due.rows, next_due.ms
            ));
            dues.push((size, due, next_due));
        }
        drop(idle);

        let largest = sizes.last().copied().unwrap_or(0);
        let base_size = thousands(sizes[0] as f64);
        let per_row = |t: &Timed| 1000.0 * t.ms / t.rows.max(1) as f64;
        let (_, base_start, base_middle, base_due) = &walks[0];
        for (label, pick, base) in [
            ("from the start of the queue", 0, base_start),
            ("from the middle of the queue", 1, base_middle),
        ] {
            for (size, start, middle, _) in &walks {
                let t = if pick == 0 { start } else { middle };
                let mut row = Row::compared(
                    format!(
                        "without the worker: walk of {} rows {label}, {} pending",
                        t.rows,
                        thousands(*size as f64)
                    ),
                    format!(
                        "{:.2} µs per row ({} per call{})",
                        per_row(t),
                        ms(t.ms),
                        t.plan_kind()
                    ),
                    format!("{:.2} µs at {base_size}", per_row(base)),
                    ratio(per_row(t), per_row(base)),
                );
                if *size == largest && pick == 1 {
                    row = row.target("≤ 1.5× the smallest", per_row(t) <= 1.5 * per_row(base));
                }
                sec.rows.push(row);
            }
        }
        for (size, _, _, due) in &walks {
            sec.rows.push(Row::compared(
                format!(
                    "without the worker: due, empty due table, {} pending",
                    thousands(*size as f64)
                ),
                format!("{} per call{}", ms(due.ms), due.plan_kind()),
                format!("{} at {base_size}", ms(base_due.ms)),
                ratio(due.ms, base_due.ms),
            ));
        }
        let (_, base_due, base_next) = &dues[0];
        for (size, due, _) in &dues {
            let mut row = Row::compared(
                format!(
                    "without the worker: due, {} due rows of a dead endpoint ({} read)",
                    thousands(*size as f64),
                    due.rows
                ),
                format!("{} per call{}", ms(due.ms), due.plan_kind()),
                format!("{} at {base_size}", ms(base_due.ms)),
                ratio(due.ms, base_due.ms),
            );
            if *size == largest {
                row = row.target("≤ 1.5× the smallest", due.ms <= 1.5 * base_due.ms);
            }
            sec.rows.push(row);
        }
        for (size, _, next) in &dues {
            sec.rows.push(Row::compared(
                format!(
                    "without the worker: next_due, {} due rows of a dead endpoint",
                    thousands(*size as f64)
                ),
                format!("{}{}", ms(next.ms), next.plan_kind()),
                format!("{} at {base_size}", ms(base_next.ms)),
                ratio(next.ms, base_next.ms),
            ));
        }
        let (_, _, middle, _) = &walks[walks.len() - 1];
        let (_, due, next) = &dues[dues.len() - 1];
        sec.notes.push(format!(
            "<details><summary>Plans at {} pending, without the worker (EXPLAIN ANALYZE, last run)</summary>\n\n\
             walk from the middle:\n\n```\n{}\n```\n\n\
             due with {} due rows of a dead endpoint:\n\n```\n{}\n```\n\n\
             next_due:\n\n```\n{}\n```\n</details>",
            thousands(largest as f64),
            middle.plan.trim(),
            thousands(largest as f64),
            due.plan.trim(),
            next.plan.trim()
        ));
        Ok(())
    }

    /// Terminates the worker and waits for the postmaster to start it again (its restart
    /// interval is 5 s).
    fn restart_worker(&self, db: &mut Client) -> Result<()> {
        let old = self.worker_pid(db)?;
        db.query_one("SELECT pg_terminate_backend($1)", &[&old])
            .map_err(pg)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            sleep(Duration::from_millis(200))?;
            let pid: Option<i32> = db
                .query_opt(
                    "SELECT pid FROM pg_stat_activity WHERE backend_type = 'webhook_ext worker'",
                    &[],
                )
                .map_err(pg)?
                .map(|r| r.get(0));
            if pid.is_some_and(|p| p != old) {
                // Let it finish its first round (maintenance, installation lookup).
                return sleep(Duration::from_millis(500));
            }
            if Instant::now() > deadline {
                return Err("the worker did not come back within 60 s".into());
            }
        }
    }

    /// Deliveries/s while draining a backlog of `size`, the seconds from its commit to the
    /// first one, and what the worker's walk and due statements cost during it.
    fn drain_rate(&mut self, size: i64) -> Result<(f64, f64, TakeStats)> {
        self.reset_queue()?;
        let mut db = self.db()?;
        let hook = self.create_webhook(&mut db, &self.recv.url("/backlog"), "{bench.*}")?;
        // A worker keeps its (generic) plans until an invalidation: the statistics of the
        // backlog's ANALYZE, visible at its commit, make it plan on this table as it would
        // after any restart or autovacuum of a big queue. Restarted while the backlog is
        // invisible to it, it knows no endpoint.
        log(format!("S4: queueing {size} in a prepared transaction"));
        let backlog = self.prepare_backlog(hook, size)?;
        self.restart_worker(&mut db)?;
        db.batch_execute("SELECT pg_stat_statements_reset()")
            .map_err(pg)?;
        self.recv.stats.reset();
        let activated = Instant::now();
        backlog.commit(&mut db)?;
        let stats = self.recv.stats.clone();
        while stats.requests() == 0 {
            if activated.elapsed() > Duration::from_secs(60) {
                return Err("the worker did not start draining within 60 s".into());
            }
            sleep(Duration::from_millis(5))?;
        }
        let pickup = activated.elapsed().as_secs_f64();
        let (c0, t0) = (stats.requests(), Instant::now());
        let half = (size / 2) as u64;
        // The walk is compared over the same first deliveries at every size, so that only
        // the backlog differs.
        let sample = TAKE_SAMPLE.min(half);
        while stats.requests() < sample && t0.elapsed() < self.sizes.s4_window {
            sleep(Duration::from_millis(2))?;
        }
        let take = TakeStats {
            walk: statement_stats(&mut db, WALK_PATTERN),
            due: statement_stats(&mut db, DUE_PATTERN),
        };
        while stats.requests() < half && t0.elapsed() < self.sizes.s4_window {
            sleep(Duration::from_millis(20))?;
        }
        let rate = (stats.requests() - c0) as f64 / t0.elapsed().as_secs_f64();
        log(format!(
            "S4: drain at {size}: {rate:.0}/s; worker walk {:.2} ms/call, {:.1} rows/call; due {:.2} ms/call",
            take.walk.ms_per_call(),
            take.walk.rows_per_call(),
            take.due.ms_per_call()
        ));
        self.reset_queue()?;
        Ok((rate, pickup, take))
    }

    /// Pending deliveries 1..=`n` of webhook `hook` (as `FILL` writes them), analyzed, in a
    /// prepared transaction: the worker does not see them until it is committed.
    fn prepare_backlog(&self, hook: i64, n: i64) -> Result<PreparedBacklog> {
        let mut conn = self.db()?;
        conn.batch_execute("BEGIN; SELECT pg_current_xact_id()")
            .map_err(pg)?;
        let mut backlog = PreparedBacklog {
            conn,
            committed: true,
        };
        let written = (|| -> Result<()> {
            let conn = &mut backlog.conn;
            conn.execute(Self::FILL, &[&hook, &1i64, &n])
                .map_err(|e| format!("fill: {}", pg(e)))?;
            // Within the transaction ANALYZE counts its rows as live; its statistics become
            // visible, and invalidate the worker's plans, at the commit.
            conn.batch_execute("ANALYZE webhook_delivery_store")
                .map_err(pg)?;
            conn.batch_execute(&format!("PREPARE TRANSACTION '{BACKLOG_GID}'"))
                .map_err(|e| format!("PREPARE TRANSACTION: {}", pg(e)))
        })();
        if let Err(e) = written {
            let _ = backlog.conn.batch_execute("ROLLBACK");
            return Err(e);
        }
        backlog.committed = false;
        Ok(backlog)
    }

    // ---------------------------------------------------------------------------------
    // 6. Footprint

    fn footprint(&mut self, sec: &mut Section) -> Result<()> {
        sec.setup = "Worker memory: VmRSS of the `webhook_ext worker` backend (pid from \
            pg_stat_activity), sampled every 100 ms during each drain of scenarios 1 and 5; the \
            maximum is reported, split into private memory (RssAnon), mapped files (RssFile: the \
            postgres binary, libraries) and shared memory (RssShmem: the pages of shared_buffers it \
            touched, which every backend counts in its RSS and whose size is set by shared_buffers). \
            The 48 MB target is judged without the shared memory. Tables: `pg_table_size` + `pg_indexes_size` of `webhook_delivery_store` and \
            `webhook_attempt` after scenario 1's first batch; retention: `webhook.retention` set \
            to 1s and reloaded, rows counted while the worker purges; then the rest purged with \
            the worker's own statement (`sql/worker/purge.sql`, retention 0) and VACUUM."
            .into();
        // The target is judged on the worker's own memory: VmRSS also counts every page of
        // shared_buffers the worker touched (RssShmem), which every backend counts the same way
        // and which is sized by shared_buffers, not by the worker.
        let own = |r: &Rss| r.anon + r.file;
        let worst = self
            .rss_seen
            .iter()
            .max_by_key(|(_, r)| own(r))
            .cloned()
            .ok_or("no RSS sample (scenarios 1 and 5 did not run)")?;
        let largest_vmrss = self
            .rss_seen
            .iter()
            .max_by_key(|(_, r)| r.total)
            .cloned()
            .ok_or("no RSS sample")?;
        let (label, r) = worst;
        sec.rows.push(
            Row::info(
                "worker RSS under load, max, without shared memory (RssAnon + RssFile)",
                format!(
                    "{} (private {}, files {}) in {label}",
                    mib(own(&r) as f64),
                    mib(r.anon as f64),
                    mib(r.file as f64)
                ),
            )
            .target("≤ 48 MB", own(&r) as f64 <= 48.0 * 1e6),
        );
        let (label, r) = largest_vmrss;
        sec.rows.push(Row::info(
            "worker VmRSS under load, max (with the shared buffers it touched)",
            format!(
                "{} (shared memory {}) in {label}",
                mib(r.total as f64),
                mib(r.shmem as f64)
            ),
        ));
        for (label, r) in &self.rss_seen {
            sec.rows.push(Row::info(
                format!("VmRSS max: {label}"),
                format!(
                    "{} (private {}, files {}, shared memory {})",
                    mib(r.total as f64),
                    mib(r.anon as f64),
                    mib(r.file as f64),
                    mib(r.shmem as f64)
                ),
            ));
        }
        sec.rows.extend(self.footprint.iter().cloned());
        sec.notes.extend(self.footprint_notes.iter().cloned());
        Ok(())
    }

    // ---------------------------------------------------------------------------------
    // Profiling pass

    fn profile_pass(&mut self) -> Result<()> {
        self.cluster.configure(
            "shared_preload_libraries = 'webhook_ext,pg_stat_statements'\n\
             pg_stat_statements.track = 'all'\n\
             pg_stat_statements.track_planning = on\n\
             track_wal_io_timing = on",
        )?;
        self.cluster.stop();
        let library = crate::cluster::ensure_release_library(&self.repo)?;
        if library.contains("put back") {
            self.library = library;
        }
        self.cluster.start()?;
        let mut db = self.db()?;
        db.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .map_err(pg)?;
        self.reset_queue()?;
        let hook = self.create_webhook(&mut db, &self.recv.url("/profile"), "{bench.*}")?;
        // Warm: one small batch, so the worker has its connections and statements ready.
        self.emit(&mut db, "bench.throughput", 500)?;
        self.wait_finished(
            &mut db,
            std::slice::from_ref(&self.recv.stats),
            &[hook],
            500,
            None,
        )?;
        // The same webhook for the backlog: the worker knows its endpoint as fast (a new one's
        // backlog would be parked in the due table first).
        db.execute(
            "DELETE FROM webhook_delivery_store WHERE webhook_id = $1",
            &[&hook],
        )
        .map_err(pg)?;
        self.recv.stats.reset();
        let worker = self.worker_pid(&mut db)?;
        let postmaster = self.cluster.postmaster_pid().unwrap_or(0);
        let n = self.sizes.profile_events;
        // The backlog written and analyzed by a prepared transaction, which the worker cannot
        // see (it keeps running, and keeps what it knows of the endpoint) until COMMIT
        // PREPARED, which wakes it. Prepared, the writing session is idle: the statistics are
        // reset once its counters and the driver's have reached them (a backend reports them
        // when idle, at most every second), so that they cover the drain only.
        let backlog = self.prepare_backlog(hook, n)?;
        sleep(Duration::from_millis(1500))?;
        db.batch_execute("SELECT pg_stat_statements_reset(); SELECT pg_stat_reset_shared('wal');")
            .map_err(pg)?;
        let xact0: i64 = db
            .query_one(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'",
                &[],
            )
            .map_err(pg)?
            .get(0);
        let wal0 = wal_point(&mut db)?;
        self.recv.stats.reset();
        let cpu_a = sysinfo::cpu_snapshot(worker, postmaster);
        let switches_a = sysinfo::context_switches(worker);
        let t = Instant::now();
        backlog.commit(&mut db)?;
        let perf_data = self.run_dir.join("perf.data");
        let perf = if self.perf && crate::util::capture("which", &["perf"]).contains("perf") {
            Command::new("perf")
                .args([
                    "record",
                    "-F",
                    "499",
                    "-g",
                    "-o",
                    perf_data.to_str().unwrap(),
                ])
                .args(["-p", &worker.to_string(), "--", "sleep", "8"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .ok()
        } else {
            None
        };
        let waited = self.wait_finished(
            &mut db,
            std::slice::from_ref(&self.recv.stats),
            &[hook],
            n,
            None,
        );
        let wall = t.elapsed().as_secs_f64();
        let wal1 = wal_point(&mut db)?;
        let drained = Instant::now();
        let cpu_b = sysinfo::cpu_snapshot(worker, postmaster);
        let switches = sysinfo::context_switches(worker).saturating_sub(switches_a);
        let perf_report = perf.and_then(|mut child| {
            let _ = child.wait();
            perf_top(&perf_data)
        });
        waited?;
        let cpu = sysinfo::cpu_use(&cpu_a, &cpu_b, wall);
        // The worker reports its counters after a commit, at most every second: the round
        // that follows its last one (within its 5 s maintenance interval) reports them.
        sleep(Duration::from_secs(6).saturating_sub(drained.elapsed()))?;
        // The WAL of the drain by record type (exact, unlike the counters).
        let records = self
            .cluster
            .waldump_stats(&wal0.text, &wal1.text)
            .map(|report| wal::parse_stats(&report))
            .unwrap_or_default();
        let xact1: i64 = db
            .query_one(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'",
                &[],
            )
            .map_err(pg)?
            .get(0);
        let wal = db
            .query_one(
                "SELECT wal_records, wal_bytes::bigint, wal_write, wal_sync, wal_sync_time FROM pg_stat_wal",
                &[],
            )
            .map_err(pg)?;
        let (wal_records, _, wal_write, wal_sync, wal_sync_time): (i64, i64, i64, i64, f64) =
            (wal.get(0), wal.get(1), wal.get(2), wal.get(3), wal.get(4));
        let wal_records = if records.is_empty() {
            wal_records
        } else {
            records.iter().map(|r| r.count as i64).sum()
        };
        let wal_bytes = wal1.lsn.saturating_sub(wal0.lsn) as i64;
        let rows = db
            .query(
                &format!(
                    "SELECT calls, total_plan_time + total_exec_time, plans, total_plan_time, rows,
                            {QUERY_CELL}
                       FROM pg_stat_statements
                      WHERE query NOT ILIKE '%pg_stat_statements%' AND query NOT ILIKE 'COMMIT PREPARED%'
                      ORDER BY total_plan_time + total_exec_time DESC LIMIT 12"
                ),
                &[],
            )
            .map_err(pg)?;
        let nf = n as f64;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "A backlog of {} deliveries for one subscriber the worker has just delivered to \
             (written into the store and analyzed by a transaction prepared with PREPARE \
             TRANSACTION, which the worker, running, cannot see; COMMIT PREPARED starts the drain \
             and wakes it), \
             drained with `pg_stat_statements` (track = all, track_planning = on) loaded: the \
             worker's SPI statements are counted like a client's. Drain: {:.1} s ({} /s, slower \
             than scenario 1 because of the instrumentation{}).\n",
            thousands(nf),
            wall,
            thousands(nf / wall),
            if perf_report.is_some() {
                " and perf"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "Per delivery: {:.3} transactions committed in `postgres`, {:.1} WAL records, \
             {:.0} WAL bytes (LSN difference over the drain), {:.3} WAL writes, {:.3} WAL \
             flushes (fsync) taking {:.3} ms in all.{}\n",
            (xact1 - xact0) as f64 / nf,
            wal_records as f64 / nf,
            wal_bytes as f64 / nf,
            wal_write as f64 / nf,
            wal_sync as f64 / nf,
            wal_sync_time / nf,
            if records.is_empty() {
                String::new()
            } else {
                format!(
                    " Its largest WAL records (`pg_waldump --stats=record`; per delivery: records · \
                     bytes): {}.",
                    records
                        .iter()
                        .take(6)
                        .map(|r| format!(
                            "`{}` {:.2} · {:.0} B",
                            r.name,
                            r.count as f64 / nf,
                            r.bytes() as f64 / nf
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        let _ = writeln!(
            s,
            "| calls | plans | total ms (of which planning) | ms per call | rows/call | µs per delivery | statement |\n|---:|---:|---:|---:|---:|---:|---|"
        );
        for r in &rows {
            let calls: i64 = r.get(0);
            let total: f64 = r.get(1);
            let plans: i64 = r.get(2);
            let plan_total: f64 = r.get(3);
            let nrows: i64 = r.get(4);
            let q: String = r.get(5);
            let _ = writeln!(
                s,
                "| {} | {} | {} ({}) | {:.3} | {:.1} | {:.1} | `{}` |",
                thousands(calls as f64),
                thousands(plans as f64),
                thousands(total),
                thousands(plan_total),
                total / calls.max(1) as f64,
                nrows as f64 / calls.max(1) as f64,
                1000.0 * total / nf,
                q.replace('|', "\\|")
            );
        }
        let _ = writeln!(
            s,
            "\nCPU during the drain (% of one core; the machine has {} cores): worker main \
             thread {:.0} %, worker HTTP threads {:.0} %, other Postgres processes {:.0} %, \
             bench process (receiver) {:.0} %, whole machine {:.0} % (of which {:.0} % outside \
             this benchmark). Worker CPU per delivery: {:.0} µs on the main thread, {:.0} µs \
             in the HTTP threads; {:.1} context switches per delivery across its threads.",
            crate::util::capture("nproc", &[]),
            cpu.worker_main,
            cpu.worker_http,
            cpu.postgres_other,
            cpu.bench,
            cpu.machine,
            cpu.outside,
            cpu.worker_main / 100.0 * wall * 1e6 / nf,
            cpu.worker_http / 100.0 * wall * 1e6 / nf,
            switches as f64 / nf
        );
        if let Some(p) = perf_report {
            let _ = writeln!(
                s,
                "\n<details><summary>perf: the worker process, 8 s of the drain (self time, top symbols)</summary>\n\n```\n{}\n```\n</details>",
                p.trim()
            );
        }
        self.profile.push(s);
        self.reset_queue()
    }
}

/// A backlog written by a prepared transaction (`Bench::prepare_backlog`): invisible to the
/// worker until `commit` (COMMIT PREPARED, which wakes it). Dropped uncommitted, it is rolled
/// back: a prepared transaction outlives its session and would keep its locks.
struct PreparedBacklog {
    conn: Client,
    committed: bool,
}

const BACKLOG_GID: &str = "webhook_bench_backlog";

impl PreparedBacklog {
    fn commit(mut self, db: &mut Client) -> Result<()> {
        db.batch_execute(&format!("COMMIT PREPARED '{BACKLOG_GID}'"))
            .map_err(|e| format!("COMMIT PREPARED: {}", pg(e)))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for PreparedBacklog {
    fn drop(&mut self) {
        if !self.committed {
            let _ = self
                .conn
                .batch_execute(&format!("ROLLBACK PREPARED '{BACKLOG_GID}'"));
        }
    }
}

/// One statement's figures from pg_stat_statements since the last reset.
#[derive(Debug, Clone, Default)]
struct StatementStats {
    calls: i64,
    plans: i64,
    /// Planning + execution, all calls.
    total_ms: f64,
    rows: i64,
}

impl StatementStats {
    fn ms_per_call(&self) -> f64 {
        self.total_ms / self.calls.max(1) as f64
    }

    fn rows_per_call(&self) -> f64 {
        self.rows as f64 / self.calls.max(1) as f64
    }

    fn ms_per_row(&self) -> f64 {
        self.total_ms / self.rows.max(1) as f64
    }
}

/// What the worker runs each round to find its work: the walk of new deliveries and the
/// look at the due rows.
#[derive(Debug, Clone, Default)]
struct TakeStats {
    walk: StatementStats,
    due: StatementStats,
}

impl TakeStats {
    /// Both statements' time per row the walk read, in µs.
    fn us_per_row(&self) -> f64 {
        1000.0 * (self.walk.total_ms + self.due.total_ms) / self.walk.rows.max(1) as f64
    }
}

/// How the worker's statements read in pg_stat_statements (parameters stay `$n`, constants
/// become `$n` too): walk.sql and due.sql.
const WALK_PATTERN: &str = "%WHERE id > $1::bigint%";
const DUE_PATTERN: &str = "%WITH known(webhook_id, room)%";

/// A statement's query text for a table cell: its comments dropped, its whitespace folded.
const QUERY_CELL: &str =
    "left(regexp_replace(regexp_replace(query, '--[^\\n]*', '', 'g'), '\\s+', ' ', 'g'), 90)";

/// The worker's statements (those run more than 10 times, not the driver's) since the last
/// reset of pg_stat_statements, heaviest first.
fn worker_statements(db: &mut Client, deliveries: i64) -> String {
    let Ok(rows) = db.query(
        &format!(
            "SELECT calls, plans, total_plan_time + total_exec_time, rows, {QUERY_CELL}
               FROM pg_stat_statements
              WHERE calls > 10 AND query NOT LIKE '%pg_stat%' AND query NOT LIKE '%FILTER (WHERE status%'
              ORDER BY total_plan_time + total_exec_time DESC LIMIT 8"
        ),
        &[],
    ) else {
        return String::new();
    };
    let mut s = String::from(
        "| calls | plans | ms per call | rows per call | µs per delivery | statement |\n|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        let (calls, plans, total, nrows, q): (i64, i64, f64, i64, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        let _ = writeln!(
            s,
            "| {} | {plans} | {:.3} | {:.1} | {:.1} | `{}` |",
            thousands(calls as f64),
            total / calls.max(1) as f64,
            nrows as f64 / calls.max(1) as f64,
            1000.0 * total / deliveries as f64,
            q.trim().replace('|', "\\|")
        );
    }
    s
}

/// The figures of the statements whose text matches `pattern` (LIKE) since the last reset.
fn statement_stats(db: &mut Client, pattern: &str) -> StatementStats {
    db.query_one(
        "SELECT coalesce(sum(calls), 0)::bigint, coalesce(sum(plans), 0)::bigint,
                coalesce(sum(total_plan_time + total_exec_time), 0)::float8,
                coalesce(sum(rows), 0)::bigint
           FROM pg_stat_statements
          WHERE query LIKE $1",
        &[&pattern],
    )
    .ok()
    .map(|r| StatementStats {
        calls: r.get(0),
        plans: r.get(1),
        total_ms: r.get(2),
        rows: r.get(3),
    })
    .unwrap_or_default()
}

/// A point in the WAL, with what tells whether a checkpoint ran since another point.
struct WalPoint {
    /// The insert LSN as `pg_lsn` prints it, and as a byte position.
    text: String,
    lsn: u64,
    redo: String,
    checkpoints: i64,
}

impl WalPoint {
    /// How a checkpoint shows between this point and `later`, if one ran.
    fn checkpoint_between(&self, later: &WalPoint) -> Option<String> {
        (self.redo != later.redo || self.checkpoints != later.checkpoints).then(|| {
            format!(
                "redo LSN {} → {}, checkpoints {} → {}",
                self.redo, later.redo, self.checkpoints, later.checkpoints
            )
        })
    }
}

fn wal_point(db: &mut Client) -> Result<WalPoint> {
    // The checkpoint counts moved to pg_stat_checkpointer in 17.
    let version: i32 = db
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .map_err(pg)?
        .get(0);
    let count = if version >= 170_000 {
        "(SELECT num_timed + num_requested FROM pg_stat_checkpointer)"
    } else {
        "(SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter)"
    };
    let row = db
        .query_one(
            &format!(
                "SELECT pg_current_wal_insert_lsn()::text, (pg_control_checkpoint()).redo_lsn::text, {count}"
            ),
            &[],
        )
        .map_err(pg)?;
    let text: String = row.get(0);
    let lsn = wal::parse_lsn(&text).ok_or_else(|| format!("not an LSN: {text}"))?;
    Ok(WalPoint {
        text,
        lsn,
        redo: row.get(1),
        checkpoints: row.get(2),
    })
}

/// One measure of scenario 7: the bytes between its two LSNs and pg_waldump's records.
struct WalWindow {
    bytes: f64,
    /// By record type (`pg_waldump --stats=record`).
    records: Vec<wal::RecordStats>,
    /// By relation (see `by_relation`), each by record type.
    relations: Vec<(String, Vec<wal::RecordStats>)>,
}

struct WalWindows {
    /// plain and queue (in the database the worker does not serve), delivered (in the one it
    /// serves, the worker delivering meanwhile).
    windows: [WalWindow; 3],
    plain_tps: f64,
    queue_tps: f64,
    delivered_tps: f64,
    /// From pgbench's end to the last delivery's record (negative: before it ended).
    lag_secs: f64,
    /// Checkpoints seen during a measure (none expected).
    checkpoints: Vec<String>,
}

/// Waits until the WAL is flushed up to `lsn` (pg_waldump reads the files).
fn wait_flushed(db: &mut Client, lsn: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let flushed: String = db
            .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
            .map_err(pg)?
            .get(0);
        if wal::parse_lsn(&flushed).unwrap_or(0) >= lsn {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the WAL was not flushed within 30 s".into());
        }
        sleep(Duration::from_millis(50))?;
    }
}

const NO_RELATION: &str = "no relation (commits, other records without a block)";
const OTHER_RELATIONS: &str = "other relations";
const SYSTEM_CATALOGS: &str = "system catalogs";

/// Adds the relations of `conn`'s database, as they are now, to `labels`: each table's heap,
/// indexes, TOAST and owned sequences under the table's name, the system catalogs (shared ones
/// included) under one label.
fn relation_labels(conn: &mut Client, labels: &mut HashMap<wal::RelFile, String>) -> Result<()> {
    let rows = conn
        .query(
            "WITH rel AS (
                 SELECT c.relisshared, pg_relation_filenode(c.oid) AS file,
                        CASE c.relkind
                            WHEN 'i' THEN (SELECT i.indrelid FROM pg_index AS i WHERE i.indexrelid = c.oid)
                            WHEN 'S' THEN coalesce((SELECT d.refobjid FROM pg_depend AS d
                                                     WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                                       AND d.refclassid = 'pg_class'::regclass
                                                       AND d.deptype IN ('a', 'i')
                                                     LIMIT 1), c.oid)
                            ELSE c.oid
                        END AS base
                   FROM pg_class AS c
                  WHERE pg_relation_filenode(c.oid) IS NOT NULL)
             SELECT CASE WHEN r.relisshared THEN 0
                         ELSE (SELECT oid FROM pg_database WHERE datname = current_database()) END::bigint,
                    r.file::bigint,
                    coalesce(owner.relname, b.relname)::text,
                    coalesce(owner.relnamespace, b.relnamespace)
                        IN ('pg_catalog'::regnamespace, 'pg_toast'::regnamespace)
               FROM rel AS r
               JOIN pg_class AS b ON b.oid = r.base
               LEFT JOIN pg_class AS owner ON owner.reltoastrelid = b.oid",
            &[],
        )
        .map_err(|e| format!("naming the relations: {}", pg(e)))?;
    for row in rows {
        let (db, file, name, catalog): (i64, i64, String, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let label = if catalog {
            SYSTEM_CATALOGS.to_string()
        } else {
            format!("`{name}`")
        };
        labels.insert(
            wal::RelFile {
                db: db as u32,
                file: file as u32,
            },
            label,
        );
    }
    Ok(())
}

/// pg_waldump's records by relation label (see `relation_labels`), each by record type.
fn by_relation(
    listed: &[(Option<wal::RelFile>, wal::RecordStats)],
    labels: &HashMap<wal::RelFile, String>,
) -> Vec<(String, Vec<wal::RecordStats>)> {
    let mut groups: Vec<(String, Vec<&wal::RecordStats>)> = Vec::new();
    for (rel, record) in listed {
        let label = match rel {
            None => NO_RELATION.to_string(),
            Some(rel) => labels
                .get(rel)
                .cloned()
                .unwrap_or_else(|| OTHER_RELATIONS.to_string()),
        };
        match groups.iter_mut().find(|(l, _)| *l == label) {
            Some((_, records)) => records.push(record),
            None => groups.push((label, vec![record])),
        }
    }
    groups
        .into_iter()
        .map(|(label, records)| (label, wal::merge_by_name(records)))
        .collect()
}

/// (records, bytes, full-page image bytes) of a set of record stats.
fn sums(records: &[wal::RecordStats]) -> (u64, u64, u64) {
    records.iter().fold((0, 0, 0), |(n, b, f), r| {
        (n + r.count, b + r.bytes(), f + r.fpi_bytes)
    })
}

/// A cell of scenario 7's breakdowns: records · bytes per event, and the full-page images.
fn wal_cell(count: u64, bytes: u64, fpi: u64, events: f64) -> String {
    if count == 0 {
        return "—".into();
    }
    let mut s = format!(
        "{:.2} · {:.0} B",
        count as f64 / events,
        bytes as f64 / events
    );
    if fpi as f64 / events >= 0.5 {
        let _ = write!(s, " (FPI {:.0} B)", fpi as f64 / events);
    }
    s
}

/// A difference cell: records · bytes per event, signed ("—" when it rounds to nothing).
fn wal_diff_cell(count: i64, bytes: i64, events: f64) -> String {
    if (count as f64 / events).abs() < 0.005 && (bytes as f64 / events).abs() < 0.5 {
        return "—".into();
    }
    format!(
        "{:+.2} · {:+.0} B",
        count as f64 / events,
        bytes as f64 / events
    )
}

/// The WAL records of scenario 7's measures per event, largest first: a record type that
/// makes at least 1 % of a measure's bytes gets a line, the others one line together; the
/// last column is the delivery part (delivered − queue).
fn wal_breakdown(windows: &[WalWindow; 3], events: f64) -> String {
    let mut names: Vec<String> = Vec::new();
    for w in windows {
        let total: u64 = w.records.iter().map(wal::RecordStats::bytes).sum();
        for r in &w.records {
            if r.bytes() * 100 >= total.max(1) && !names.contains(&r.name) {
                names.push(r.name.clone());
            }
        }
    }
    let find = |w: &WalWindow, name: &str| w.records.iter().find(|r| r.name == name).cloned();
    let weight = |name: &String| -> u64 {
        windows
            .iter()
            .filter_map(|w| find(w, name))
            .map(|r| r.bytes())
            .sum()
    };
    names.sort_by_key(|n| std::cmp::Reverse(weight(n)));
    let line = |picked: &dyn Fn(&WalWindow) -> Vec<wal::RecordStats>| -> String {
        let cells: Vec<(u64, u64, u64)> = windows.iter().map(|w| sums(&picked(w))).collect();
        let mut out: Vec<String> = cells
            .iter()
            .map(|&(n, b, f)| wal_cell(n, b, f, events))
            .collect();
        let (queue, delivered) = (cells[1], cells[2]);
        out.push(wal_diff_cell(
            delivered.0 as i64 - queue.0 as i64,
            delivered.1 as i64 - queue.1 as i64,
            events,
        ));
        out.join(" | ")
    };
    let mut s = format!(
        "What the WAL holds, per event ({} events; records · bytes, full-page images included; \
         `pg_waldump --stats=record` over each measure's LSN range). Plain and queue ran in the \
         database the worker does not serve, delivered in the one it serves while it delivered:\n\n\
         | WAL record | plain INSERT | queue (row + queue) | delivered (row + queue + delivery) | delivery part (delivered − queue) |\n|---|---:|---:|---:|---:|\n",
        thousands(events)
    );
    for name in &names {
        let _ = writeln!(
            s,
            "| `{name}` | {} |",
            line(&|w| find(w, name).into_iter().collect())
        );
    }
    let _ = writeln!(
        s,
        "| other record types | {} |",
        line(&|w| {
            w.records
                .iter()
                .filter(|r| !names.contains(&r.name))
                .cloned()
                .collect()
        })
    );
    let _ = writeln!(
        s,
        "| **all records (pg_waldump)** | {} |",
        line(&|w| w.records.clone())
    );
    let lsn: Vec<String> = windows
        .iter()
        .map(|w| format!("{:.0} B", w.bytes / events))
        .collect();
    let _ = writeln!(
        s,
        "| **LSN difference** (with alignment and page headers) | {} | {:+.0} B |",
        lsn.join(" | "),
        (windows[2].bytes - windows[1].bytes) / events
    );
    s
}

/// Scenario 7's WAL by relation (the first block each record changes), per event: what the
/// store, the attempts and the rest take of each measure and of the delivery part, and the
/// delivery part's record types in each.
fn relation_breakdown(windows: &[WalWindow; 3], events: f64) -> String {
    let find = |w: &WalWindow, label: &str| -> Vec<wal::RecordStats> {
        w.relations
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, r)| r.clone())
            .unwrap_or_default()
    };
    let mut labels: Vec<String> = Vec::new();
    for w in windows {
        for (label, _) in &w.relations {
            if !labels.contains(label) {
                labels.push(label.clone());
            }
        }
    }
    let bytes_of = |w: &WalWindow, label: &str| sums(&find(w, label)).1;
    labels
        .sort_by_key(|l| std::cmp::Reverse(bytes_of(&windows[2], l).max(bytes_of(&windows[1], l))));
    let delivery_total = sums(
        &windows[2]
            .relations
            .iter()
            .flat_map(|(_, r)| r.clone())
            .collect::<Vec<_>>(),
    )
    .1 as i64
        - sums(
            &windows[1]
                .relations
                .iter()
                .flat_map(|(_, r)| r.clone())
                .collect::<Vec<_>>(),
        )
        .1 as i64;
    let mut s = String::from(
        "The same WAL by relation, per event (records · bytes; `pg_waldump`'s record listing, \
         each record counted under the relation of its first block reference, a table with its \
         indexes, TOAST and sequences; the share is of the delivery part's bytes):\n\n\
         | relation | plain INSERT | queue (row + queue) | delivered (row + queue + delivery) | delivery part (delivered − queue), share | the delivery part's records |\n|---|---:|---:|---:|---:|---|\n"
    );
    for label in &labels {
        let cells: Vec<(u64, u64, u64)> = windows.iter().map(|w| sums(&find(w, label))).collect();
        let (queue, delivered) = (cells[1], cells[2]);
        let diff_bytes = delivered.1 as i64 - queue.1 as i64;
        let diff = wal_diff_cell(delivered.0 as i64 - queue.0 as i64, diff_bytes, events);
        let share = if (diff_bytes as f64 / events).abs() >= 0.5 && delivery_total > 0 {
            format!(
                ", {:.0} %",
                100.0 * diff_bytes as f64 / delivery_total as f64
            )
        } else {
            String::new()
        };
        // The delivery part's record types in this relation (at least 1 B per event).
        let (q, d) = (find(&windows[1], label), find(&windows[2], label));
        let mut kinds: Vec<(String, i64, i64)> = Vec::new();
        for r in q.iter().chain(d.iter()) {
            if kinds.iter().any(|(n, _, _)| *n == r.name) {
                continue;
            }
            let get = |set: &[wal::RecordStats]| {
                set.iter()
                    .find(|x| x.name == r.name)
                    .map_or((0, 0), |x| (x.count as i64, x.bytes() as i64))
            };
            let ((qn, qb), (dn, db)) = (get(&q), get(&d));
            kinds.push((r.name.clone(), dn - qn, db - qb));
        }
        kinds.retain(|(_, _, b)| (*b as f64 / events).abs() >= 1.0);
        kinds.sort_by_key(|(_, _, b)| std::cmp::Reverse(*b));
        let kinds = kinds
            .iter()
            .map(|(name, n, b)| format!("`{name}` {}", wal_diff_cell(*n, *b, events)))
            .collect::<Vec<_>>()
            .join(", ");
        let cells: Vec<String> = cells
            .iter()
            .map(|&(n, b, f)| wal_cell(n, b, f, events))
            .collect();
        let _ = writeln!(
            s,
            "| {label} | {} | {diff}{share} | {} |",
            cells.join(" | "),
            if kinds.is_empty() { "—" } else { &kinds }
        );
    }
    s
}

struct Finished {
    ok: i64,
    failed: i64,
    last_us: u64,
    complete: bool,
}

/// Times one of the worker's statements the way the worker runs it: prepared, under its
/// session settings (under plan_cache_mode auto the plan cache decides after 5 runs whether
/// to keep a generic plan).
struct StatementTimer {
    /// The worker's session settings as `set_config` calls.
    settings: String,
    reps: usize,
}

/// One statement's median time (EXPLAIN ANALYZE: planning + execution).
struct Timed {
    ms: f64,
    /// Of which planning (median).
    planning_ms: f64,
    rows: i64,
    /// Every timed run used the generic plan.
    generic: bool,
    plan: String,
}

impl Timed {
    /// Which plan ran, and what planning took of the time when it was planned each run.
    fn plan_kind(&self) -> String {
        if self.generic {
            ", generic plan".into()
        } else {
            format!(", custom plans: planning {}", ms(self.planning_ms))
        }
    }
}

impl StatementTimer {
    /// `sql` prepared with parameter `types`, run with `args` (`(1, 2)`, or empty).
    fn time(&self, db: &mut Client, sql: &str, types: &str, args: &str) -> Result<Timed> {
        let types = if types.is_empty() {
            String::new()
        } else {
            format!("({types})")
        };
        db.batch_execute(&format!(
            "{}DEALLOCATE ALL;\nPREPARE bench_statement{types} AS {sql};",
            self.settings
        ))
        .map_err(|e| format!("preparing the worker's statement: {}", pg(e)))?;
        let execute = format!("EXECUTE bench_statement{args}");
        // Five custom plans first; from the sixth run on the plan cache may use the generic one.
        let mut rows = 0;
        for _ in 0..6 {
            rows = db
                .simple_query(&execute)
                .map_err(|e| format!("{execute}: {}", pg(e)))?
                .iter()
                .filter(|m| matches!(m, postgres::SimpleQueryMessage::Row(_)))
                .count() as i64;
        }
        let generic_plans = |db: &mut Client| -> Result<i64> {
            Ok(db
                .query_one(
                    "SELECT generic_plans FROM pg_prepared_statements WHERE name = 'bench_statement'",
                    &[],
                )
                .map_err(pg)?
                .get(0))
        };
        let generic_before = generic_plans(db)?;
        let explain = format!("EXPLAIN (ANALYZE, BUFFERS) {execute}");
        let mut times = Vec::with_capacity(self.reps);
        let mut planning = Vec::with_capacity(self.reps);
        let mut plan = String::new();
        for _ in 0..self.reps {
            check_interrupted()?;
            plan = plan_text(
                &db.query(explain.as_str(), &[])
                    .map_err(|e| format!("{explain}: {}", pg(e)))?,
            );
            times.push(plan_ms(&plan));
            planning.push(plan_line_ms(&plan, "Planning Time: "));
        }
        let generic = generic_plans(db)? - generic_before >= self.reps as i64;
        db.batch_execute("DEALLOCATE ALL").map_err(pg)?;
        Ok(Timed {
            ms: median(&times),
            planning_ms: median(&planning),
            rows,
            generic,
            plan,
        })
    }
}

fn plan_text(rows: &[postgres::Row]) -> String {
    rows.iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Planning + execution time of an EXPLAIN ANALYZE text, in ms.
fn plan_ms(plan: &str) -> f64 {
    plan_line_ms(plan, "Planning Time: ") + plan_line_ms(plan, "Execution Time: ")
}

/// The time on an EXPLAIN ANALYZE line (`Planning Time: 0.059 ms`), in ms; 0 if none.
fn plan_line_ms(plan: &str, prefix: &str) -> f64 {
    plan.lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix(prefix)?
                .trim_end_matches(" ms")
                .parse::<f64>()
                .ok()
        })
        .sum()
}

/// Self time by library, then the top symbols (Debian's postgres binary is stripped: its
/// static functions show as addresses).
fn perf_top(data: &Path) -> Option<String> {
    let report = |sort: &str, limit: &str, take: usize| -> Option<String> {
        let out = Command::new("perf")
            .args(["report", "-i", data.to_str()?, "--stdio", "--no-children"])
            .args(["--sort", sort, "-g", "none", "--percent-limit", limit])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                l.trim_end_matches(|c: char| c == '-' || c.is_whitespace())
                    .to_string()
            })
            .take(take)
            .collect();
        (!lines.is_empty()).then(|| lines.join("\n"))
    };
    let by_dso = report("dso", "0.5", 12)?;
    let by_symbol = report("dso,symbol", "0.7", 35).unwrap_or_default();
    Some(format!("{by_dso}\n\n{by_symbol}"))
}

fn cpu_table(runs: &[(&str, &Drain)]) -> String {
    let mut s = String::from(
        "CPU while draining (% of one core; 2 cores = 200 %), worker memory, and the worker's \
         walk statement (`sql/worker/walk.sql`) from pg_stat_statements (mean planning + \
         execution time per call, rows per call; calls, and how many of them were planned):\n\n\
         | run | worker main thread | worker HTTP threads | other Postgres | bench (receiver) | machine | outside this bench | worker VmRSS max | worker walk: ms/call, rows/call (calls, plans); due: ms/call |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut details = String::new();
    for (label, d) in runs {
        if !d.statements.is_empty() {
            let _ = write!(
                details,
                "\n<details><summary>The worker's statements during \"{label}\" (pg_stat_statements)</summary>\n\n{}\n</details>\n",
                d.statements
            );
        }
    }
    for (label, d) in runs {
        let c = &d.cpu;
        let _ = writeln!(
            s,
            "| {label} | {:.0} % | {:.0} % | {:.0} % | {:.0} % | {:.0} % | {:.0} % | {} | {:.2} ms, {:.1} ({}, {}); {:.2} ms |",
            c.worker_main,
            c.worker_http,
            c.postgres_other,
            c.bench,
            c.machine,
            c.outside,
            mib(d.rss.total as f64),
            d.walk.ms_per_call(),
            d.walk.rows_per_call(),
            d.walk.calls,
            d.walk.plans,
            d.due.ms_per_call()
        );
    }
    s.push_str(&details);
    s
}

pub fn cluster_conf_for_report() -> String {
    CLUSTER_CONF
        .lines()
        .filter(|l| !l.starts_with("log_"))
        .collect::<Vec<_>>()
        .join("\n")
}
