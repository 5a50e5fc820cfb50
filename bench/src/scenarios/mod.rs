//! The scenario driver: one PostgreSQL cluster with webhook_ext preloaded, our receiver(s)
//! on 127.0.0.1, scenarios 1–7 and a profiling pass, every figure next to a baseline
//! measured in the same run.
//!
//! One file per scenario (and one for the profiling pass), each an `impl Bench` block with
//! what only it uses; what several share is here.

mod backlog;
mod filters;
mod footprint;
mod isolation;
mod latency;
mod many_databases;
mod profile;
mod throughput;
mod trigger_overhead;
mod wal_per_event;

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

const SECRET: &str = "whsec_YmVuY2htYXJrLXNlY3JldC1mb3Itd2ViaG9va19leHQ=";

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
        let steps: [(&str, Step); 9] = [
            ("1. Throughput", Bench::throughput),
            ("5. Isolation: one receiver never answers", Bench::isolation),
            ("2. Latency at a steady 200 events/s", Bench::latency),
            ("3. Trigger overhead", Bench::trigger_overhead),
            ("7. WAL per delivered event", Bench::wal_per_event),
            ("4. Backlog", Bench::backlog),
            ("6. Footprint", Bench::footprint),
            ("8. Filters per subscription", Bench::filters),
            ("9. Many databases", Bench::many_databases),
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

struct Finished {
    ok: i64,
    failed: i64,
    last_us: u64,
    complete: bool,
}

/// A backlog written by a prepared transaction (`Bench::prepare_backlog`): invisible to the
/// worker until `commit` (COMMIT PREPARED, which wakes it). Dropped uncommitted, it is rolled
/// back: a prepared transaction outlives its session and would keep its locks.
struct PreparedBacklog {
    conn: Client,
    committed: bool,
}

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

const BACKLOG_GID: &str = "webhook_bench_backlog";

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

/// WAL written and flushed during a pgbench run, per transaction it committed (pg_stat_wal; from
/// PostgreSQL 18 the flushes are in pg_stat_io). Their time is counted with
/// track_wal_io_timing = on.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct WalFlushes {
    pub bytes: f64,
    pub flushes: f64,
    pub flush_ms: f64,
}

impl WalFlushes {
    /// "1,161 B, 0.56 flushes of 0.231 ms".
    pub(super) fn describe(&self) -> String {
        format!(
            "{} B, {:.2} flushes of {:.3} ms",
            thousands(self.bytes),
            self.flushes,
            if self.flushes > 0.0 {
                self.flush_ms / self.flushes
            } else {
                0.0
            }
        )
    }
}

/// The cluster's WAL counters: bytes written, flushes, milliseconds flushing.
pub(super) fn wal_flush_counters(db: &mut Client) -> Result<(f64, f64, f64)> {
    let version: i32 = db
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .map_err(pg)?
        .get(0);
    let sql = if version >= 180_000 {
        "SELECT (SELECT wal_bytes::float8 FROM pg_stat_wal),
                coalesce(sum(fsyncs), 0)::float8, coalesce(sum(fsync_time), 0)::float8
           FROM pg_stat_io WHERE object = 'wal'"
    } else {
        "SELECT wal_bytes::float8, wal_sync::float8, wal_sync_time::float8 FROM pg_stat_wal"
    };
    let row = db.query_one(sql, &[]).map_err(pg)?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

impl Bench {
    /// [`Bench::pgbench_on`], with the WAL it wrote and flushed per row it left in `cliente`
    /// (truncated before the run).
    pub(super) fn pgbench_counting_wal(
        &self,
        db: &mut Client,
        script: &Path,
        secs: u64,
        database: &str,
    ) -> Result<(f64, WalFlushes)> {
        // Counters are cluster-wide: read them after a pause, so that the stats of the run
        // before (sent at most every second) are in.
        sleep(Duration::from_millis(1_100))?;
        let before = wal_flush_counters(db)?;
        let tps = self.pgbench_on(script, secs, database)?;
        sleep(Duration::from_millis(1_100))?;
        let after = wal_flush_counters(db)?;
        let rows: i64 = db
            .query_one("SELECT count(*) FROM cliente", &[])
            .map_err(pg)?
            .get(0);
        let per_row = |a: f64, b: f64| (b - a) / rows.max(1) as f64;
        Ok((
            tps,
            WalFlushes {
                bytes: per_row(before.0, after.0),
                flushes: per_row(before.1, after.1),
                flush_ms: per_row(before.2, after.2),
            },
        ))
    }
}
