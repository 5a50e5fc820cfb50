//! The scenario driver: one PostgreSQL cluster with webhook_ext preloaded, our receiver(s)
//! on 127.0.0.1, scenarios 1–6 and a profiling pass, every figure next to a baseline
//! measured in the same run.

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
use crate::sql::{self, WorkerSql};
use crate::sysinfo::{self, CpuUse, Rss, RssSampler};
use crate::util::{
    check_interrupted, log, median, mib, ms, now_us, p50_p99, pct, percentile, pg, ratio, run,
    sleep, sorted, thousands, Result,
};

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
";

/// Scenario 4 compares the worker's claim over the first this-many deliveries of each drain.
const CLAIM_SAMPLE: u64 = 5_000;
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
    /// The worker's claim statement during the drain (pg_stat_statements).
    claim: StatementStats,
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
    sql: Option<WorkerSql>,
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
        let recv = Receiver::start(0, Mode::Fast).map_err(|e| e.to_string())?;
        log(format!("receiver on 127.0.0.1:{}", recv.port));
        let sql = sql::worker_sql(repo, "public");
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
        let steps: [(&str, Step); 6] = [
            ("1. Throughput", Bench::throughput),
            ("5. Isolation: one receiver never answers", Bench::isolation),
            ("2. Latency at a steady 200 events/s", Bench::latency),
            ("3. Trigger overhead", Bench::trigger_overhead),
            ("4. Backlog", Bench::backlog),
            ("6. Footprint", Bench::footprint),
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
                "TRUNCATE webhook_delivery, webhook_attempt, webhook_health; DELETE FROM webhook;",
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
                       FROM webhook_delivery WHERE webhook_id = ANY($1)",
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
        db.batch_execute("DELETE FROM webhook_delivery WHERE event = 'bench.warm'")
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
        let claim = claim_stats(&mut db);
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
            claim,
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
                "SELECT pg_table_size('webhook_delivery'), pg_indexes_size('webhook_delivery'),
                        pg_table_size('webhook_attempt'), pg_indexes_size('webhook_attempt'),
                        (SELECT count(*) FROM webhook_delivery), (SELECT count(*) FROM webhook_attempt)",
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
                "SELECT count(*) FROM webhook_delivery WHERE status IN ('pending', 'delivering')",
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
                "SELECT body FROM webhook_delivery WHERE event = $1 ORDER BY id LIMIT 1000",
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
                "≥ 10,000/s, 0 failed",
                best.rate() >= 10_000.0 && failed == 0,
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
            .target("0 failed", multi.failed == 0),
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
        // Finish the purge (if the worker has not), then VACUUM as autovacuum would.
        log("S6: finishing the purge, then VACUUM");
        let mut remaining = 1;
        while remaining > 0 {
            check_interrupted()?;
            remaining = db
                .execute(
                    "DELETE FROM webhook_delivery WHERE id = ANY (ARRAY(
                         SELECT id FROM webhook_delivery
                          WHERE status IN ('succeeded', 'failed', 'cancelled') LIMIT 50000))",
                    &[],
                )
                .map_err(|e| format!("purge: {}", pg(e)))?;
        }
        db.batch_execute("VACUUM webhook_delivery, webhook_attempt")
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
            let (a, b) = (hung.claim.ms_per_call, r.claim.ms_per_call);
            if a > 0.0 && b > 0.0 && (a / b > 3.0 || b / a > 3.0) {
                sec.notes.push(format!(
                    "**Caution:** the worker's claim cost {} per call here and {} in scenario 1's \
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
                .target("≤ 15 ms", p99 <= 15.0),
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
        // The pgbench of the cluster's own installation.
        let out = run(Command::new(crate::cluster::postgres().program("pgbench"))
            .args(["-n", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &self.cluster.port.to_string()])
            .args(["-c", &self.sizes.s3_clients.to_string(), "-j", "2"])
            .args(["-T", &secs.to_string(), "-f", script.to_str().unwrap()])
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
        let script = self.run_dir.join("insert_cliente.sql");
        std::fs::write(
            &script,
            "\\set n random(1, 100000000)\n\
             INSERT INTO cliente (nome, email, telefone, cidade) \
             VALUES ('Cliente ' || :n, 'cliente' || :n || '@example.com', '+55 11 9' || :n, 'São Paulo');\n",
        )
        .map_err(|e| e.to_string())?;
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
                "SELECT count(*) FROM webhook_delivery WHERE status = 'succeeded'",
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
            .target("≥ 75 %", t >= 0.75 * p),
        );
        sec.rows.push(Row::compared(
            "INSERT/s with trigger, no matching subscriber",
            thousands(nosub),
            format!("{} without trigger", thousands(p)),
            pct(nosub, p),
        ));
        sec.rows.push(Row::compared(
            "INSERT/s with trigger + 1 subscriber, nothing delivered during the run (database the worker does not serve)",
            thousands(idle_trig),
            format!("{} without trigger (same database)", thousands(idle_plain)),
            pct(idle_trig, idle_plain),
        ));
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
    // 4. Backlog

    const FILL: &'static str = "INSERT INTO webhook_delivery (webhook_id, event_id, event, body, next_attempt_at)
        SELECT $1, u, 'bench.backlog',
               format('{\"id\":\"%s\",\"event\":\"bench.backlog\",\"timestamp\":\"2024-01-01T10:00:00Z\",\"data\":{\"id\":%s,\"nome\":\"Cliente %s\",\"email\":\"cliente%s@example.com\",\"telefone\":\"+55 11 9%s\",\"cidade\":\"São Paulo\"}}', u, g, g, g, lpad(g::text, 8, '0')),
               now() - interval '2 hours' + g * interval '1 millisecond'
          FROM generate_series($2::bigint, $3::bigint) g, LATERAL (SELECT gen_random_uuid() AS u) x";

    fn backlog(&mut self, sec: &mut Section) -> Result<()> {
        let sizes = self.sizes.s4_sizes.clone();
        let reps = self.sizes.s4_reps;
        let list = sizes
            .iter()
            .map(|s| thousands(*s as f64))
            .collect::<Vec<_>>()
            .join(" / ");
        sec.setup = format!(
            "Queues of {list} pending deliveries for one webhook, made with one INSERT ... \
             SELECT generate_series while the webhook is inactive, then ANALYZE. For each, the \
             worker is restarted (so that it plans its statements on this queue, as after any \
             restart, or after autovacuum has analyzed a big queue) and the webhook activated. \
             **Claim cost** = the worker's own claim statement as pg_stat_statements sees it \
             during the first {} deliveries of the drain: mean planning + execution time per \
             call divided by the rows it claimed (each call claims what the endpoint has room \
             for, a few hundred rows, not the same number at every size). \
             **Drain rate** = deliveries/s at the receiver while the \
             backlog is above half its size (at most {:?}). Below them, the same claim timed \
             without the worker, in a database it does not serve: the statement read from \
             src/store.rs, prepared with the worker's session settings, claiming 16 rows {reps} \
             times in transactions rolled back (EXPLAIN ANALYZE planning + execution, median).",
            thousands(CLAIM_SAMPLE as f64),
            self.sizes.s4_window
        );
        self.reset_queue()?;

        // The worker itself, on each queue.
        let mut drains = Vec::new();
        for &size in &sizes {
            check_interrupted()?;
            drains.push((size, self.drain_rate(size)?));
        }
        let (d_size, (d_rate, _, d_claim)) = drains[0].clone();
        let largest = drains.last().map(|d| d.0).unwrap_or(0);
        // One claim takes what the endpoint has room for (a few hundred rows, not the same
        // number at every size): its cost is compared per claimed row.
        let per_row = |c: &StatementStats| 1000.0 * c.ms_per_call / c.rows_per_call.max(1.0);
        for (size, (_, _, claim)) in &drains {
            let mut row = Row::compared(
                format!(
                    "worker's claim at {} pending, per claimed row (pg_stat_statements)",
                    thousands(*size as f64)
                ),
                format!(
                    "{:.1} µs per row ({} per call of {:.1} rows)",
                    per_row(claim),
                    ms(claim.ms_per_call),
                    claim.rows_per_call
                ),
                format!(
                    "{:.1} µs at {}",
                    per_row(&d_claim),
                    thousands(d_size as f64)
                ),
                ratio(per_row(claim), per_row(&d_claim)),
            );
            if *size == largest {
                row = row.target(
                    "≤ 1.5× the smallest",
                    per_row(claim) <= 1.5 * per_row(&d_claim),
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
        let Some(sql) = self.sql.as_ref() else {
            sec.notes.push(
                "The claim could not be read from src/store.rs: no measurement without the worker."
                    .into(),
            );
            return Ok(());
        };
        let returning_reduced = sql.returning_reduced;
        let mut admin = self.db()?;
        admin
            .batch_execute("DROP DATABASE IF EXISTS bench_backlog")
            .map_err(pg)?;
        admin
            .batch_execute("CREATE DATABASE bench_backlog")
            .map_err(pg)?;
        let mut idle = self.cluster.connect("bench_backlog")?;
        idle.batch_execute("CREATE EXTENSION webhook_ext")
            .map_err(pg)?;
        let hook = self.create_webhook(&mut idle, &self.recv.url("/idle"), "{bench.*}")?;
        let mut filled = 0i64;
        let mut claims = Vec::new();
        let mut plans = (String::new(), String::new());
        for &size in &sizes {
            log(format!("S4: filling the idle queue to {size}"));
            idle.execute(Self::FILL, &[&hook, &(filled + 1), &size])
                .map_err(|e| format!("fill: {}", pg(e)))?;
            filled = size;
            idle.batch_execute("ANALYZE webhook_delivery").map_err(pg)?;
            // A connection of its own: it takes the worker's session settings, search_path
            // (pg_catalog, pg_temp) among them, under which `idle`'s unqualified names fail.
            let mut timing = self.cluster.connect("bench_backlog")?;
            let c = self.time_claims(&mut timing, reps)?;
            drop(timing);
            log(format!(
                "S4: {size}: claim {:.3} ms server / {:.3} ms client, next_due {:.3} ms",
                c.claim_server, c.claim_client, c.next_due_server
            ));
            plans = (c.claim_plan.clone(), c.next_due_plan.clone());
            claims.push((size, c));
        }
        drop(idle);
        admin
            .batch_execute("DROP DATABASE bench_backlog")
            .map_err(pg)?;
        let (base_size, base) = (claims[0].0, &claims[0].1);
        for (size, c) in &claims {
            sec.rows.push(Row::compared(
                format!(
                    "without the worker: claim of 16 at {} pending{}",
                    thousands(*size as f64),
                    if returning_reduced {
                        " (RETURNING d.id)"
                    } else {
                        ""
                    }
                ),
                format!("{} (client {})", ms(c.claim_server), ms(c.claim_client)),
                format!(
                    "{} at {}",
                    ms(base.claim_server),
                    thousands(base_size as f64)
                ),
                ratio(c.claim_server, base.claim_server),
            ));
        }
        for (size, c) in &claims {
            sec.rows.push(Row::compared(
                format!(
                    "without the worker: next_due at {} pending",
                    thousands(*size as f64)
                ),
                ms(c.next_due_server),
                ms(base.next_due_server),
                ratio(c.next_due_server, base.next_due_server),
            ));
        }
        sec.notes.push(format!(
            "<details><summary>Plans at {} pending, without the worker (EXPLAIN ANALYZE)</summary>\n\n\
             Claim:\n\n```\n{}\n```\n\nnext_due:\n\n```\n{}\n```\n</details>",
            thousands(largest as f64),
            plans.0.trim(),
            plans.1.trim()
        ));
        Ok(())
    }

    /// Times the worker's claim (16 rows) and next_due the way the worker runs them: saved
    /// plans, with the settings the worker makes for its session (src/worker.rs). Each claim
    /// is rolled back.
    fn time_claims(&self, db: &mut Client, reps: usize) -> Result<ClaimTiming> {
        let sql = self.sql.as_ref().ok_or("no worker SQL")?;
        let settings: String = sql
            .session_settings
            .iter()
            // A setting this server does not have (transaction_timeout before 17) is one the
            // worker does not set on it either.
            .map(|(name, value)| {
                format!(
                    "SELECT set_config(name, '{value}', false) FROM pg_settings WHERE name = '{name}';\n"
                )
            })
            .collect();
        db.batch_execute(&format!(
            "{settings}
             DEALLOCATE ALL;
             PREPARE bench_claim(bigint, bigint[], int[], int, bigint) AS {};
             PREPARE bench_next_due AS {};",
            sql.claim, sql.next_due
        ))
        .map_err(|e| format!("preparing the worker's statements: {}", pg(e)))?;
        // Limit 32, no webhook known yet (each may take 16), a lease of 40 s.
        let execute = "EXECUTE bench_claim(32, '{}', '{}', 16, 40000)";
        let explain = format!("EXPLAIN (ANALYZE, BUFFERS) {execute}");
        let explain_due = "EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_next_due";
        let mut client = Vec::new();
        let mut server = Vec::new();
        let mut due = Vec::new();
        let mut claimed = 0;
        let mut claim_plan = String::new();
        let mut due_plan = String::new();
        for _ in 0..reps {
            check_interrupted()?;
            let mut tx = db.transaction().map_err(pg)?;
            let t = Instant::now();
            claimed = tx
                .simple_query(execute)
                .map_err(|e| format!("claim: {}", pg(e)))?
                .iter()
                .filter(|m| matches!(m, postgres::SimpleQueryMessage::Row(_)))
                .count();
            client.push(t.elapsed().as_secs_f64() * 1000.0);
            tx.rollback().map_err(pg)?;
            let mut tx = db.transaction().map_err(pg)?;
            let plan = plan_text(
                &tx.query(explain.as_str(), &[])
                    .map_err(|e| format!("explain claim: {}", pg(e)))?,
            );
            server.push(plan_ms(&plan));
            claim_plan = plan;
            tx.rollback().map_err(pg)?;
            let plan = plan_text(
                &db.query(explain_due, &[])
                    .map_err(|e| format!("explain next_due: {}", pg(e)))?,
            );
            due.push(plan_ms(&plan));
            due_plan = plan;
        }
        db.batch_execute("DEALLOCATE ALL; RESET plan_cache_mode")
            .map_err(pg)?;
        if claimed != 16 {
            return Err(format!("the claim returned {claimed} rows, expected 16"));
        }
        Ok(ClaimTiming {
            claim_client: median(&client),
            claim_server: median(&server),
            next_due_server: median(&due),
            claim_plan,
            next_due_plan: due_plan,
        })
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

    /// Deliveries/s while draining a backlog of `size`, the seconds until the first one, and
    /// the worker's claim figures during it.
    fn drain_rate(&mut self, size: i64) -> Result<(f64, f64, StatementStats)> {
        self.reset_queue()?;
        let mut db = self.db()?;
        let hook = self.create_webhook(&mut db, &self.recv.url("/backlog"), "{bench.*}")?;
        db.query_one(
            "SELECT id FROM webhook_update($1, active => false)",
            &[&hook],
        )
        .map_err(pg)?;
        log(format!("S4: queueing {size} for an inactive webhook"));
        db.execute(Self::FILL, &[&hook, &1i64, &size])
            .map_err(|e| format!("fill: {}", pg(e)))?;
        db.batch_execute("ANALYZE webhook_delivery").map_err(pg)?;
        // A worker keeps its saved (generic) plans until an invalidation: restart it, so that
        // it plans on this table as it would after any restart or autovacuum of a big queue.
        self.restart_worker(&mut db)?;
        db.batch_execute("SELECT pg_stat_statements_reset()")
            .map_err(pg)?;
        self.recv.stats.reset();
        activate_and_wake(&mut db, hook)?;
        let activated = Instant::now();
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
        // The claim is compared over the same first deliveries at every size, so that only
        // the backlog differs (later claims also skip the index entries of the rows claimed
        // before them, which depends on how far the drain has gone, not on the backlog).
        let sample = CLAIM_SAMPLE.min(half);
        while stats.requests() < sample && t0.elapsed() < self.sizes.s4_window {
            sleep(Duration::from_millis(2))?;
        }
        let claim = claim_stats(&mut db);
        while stats.requests() < half && t0.elapsed() < self.sizes.s4_window {
            sleep(Duration::from_millis(20))?;
        }
        let rate = (stats.requests() - c0) as f64 / t0.elapsed().as_secs_f64();
        log(format!(
            "S4: drain at {size}: {rate:.0}/s; worker claim {:.2} ms/call, {:.1} rows/call",
            claim.ms_per_call, claim.rows_per_call
        ));
        self.reset_queue()?;
        Ok((rate, pickup, claim))
    }

    // ---------------------------------------------------------------------------------
    // 6. Footprint

    fn footprint(&mut self, sec: &mut Section) -> Result<()> {
        sec.setup = "Worker memory: VmRSS of the `webhook_ext worker` backend (pid from \
            pg_stat_activity), sampled every 100 ms during each drain of scenarios 1 and 5; the \
            maximum is reported, split into private memory (RssAnon), mapped files (RssFile: the \
            postgres binary, libraries) and shared memory (RssShmem: the pages of shared_buffers it \
            touched, which every backend counts in its RSS and whose size is set by shared_buffers). \
            The 48 MB target is judged without the shared memory. Tables: `pg_table_size` + `pg_indexes_size` of `webhook_delivery` and \
            `webhook_attempt` after scenario 1's first batch; retention: `webhook.retention` set \
            to 1s and reloaded, rows counted while the worker purges."
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
        self.reset_queue()?;
        let hook = self.create_webhook(&mut db, &self.recv.url("/profile"), "{bench.*}")?;
        let worker = self.worker_pid(&mut db)?;
        let postmaster = self.cluster.postmaster_pid().unwrap_or(0);
        let n = self.sizes.profile_events;
        // Queue with the worker unable to claim (webhook inactive), so the statistics
        // cover the drain only.
        db.query_one(
            "SELECT id FROM webhook_update($1, active => false)",
            &[&hook],
        )
        .map_err(pg)?;
        db.execute(Self::FILL, &[&hook, &1i64, &n])
            .map_err(|e| format!("fill: {}", pg(e)))?;
        db.batch_execute(
            "ANALYZE webhook_delivery; SELECT pg_stat_statements_reset(); SELECT pg_stat_reset_shared('wal');",
        )
        .map_err(pg)?;
        let xact0: i64 = db
            .query_one(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'",
                &[],
            )
            .map_err(pg)?
            .get(0);
        self.recv.stats.reset();
        let cpu_a = sysinfo::cpu_snapshot(worker, postmaster);
        let switches_a = sysinfo::context_switches(worker);
        let t = Instant::now();
        activate_and_wake(&mut db, hook)?;
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
        let cpu_b = sysinfo::cpu_snapshot(worker, postmaster);
        let switches = sysinfo::context_switches(worker).saturating_sub(switches_a);
        let perf_report = perf.and_then(|mut child| {
            let _ = child.wait();
            perf_top(&perf_data)
        });
        waited?;
        let cpu = sysinfo::cpu_use(&cpu_a, &cpu_b, wall);
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
        let (wal_records, wal_bytes, wal_write, wal_sync, wal_sync_time): (
            i64,
            i64,
            i64,
            i64,
            f64,
        ) = (wal.get(0), wal.get(1), wal.get(2), wal.get(3), wal.get(4));
        let rows = db
            .query(
                "SELECT calls, total_plan_time + total_exec_time, plans, total_plan_time, rows,
                        left(regexp_replace(query, '\\s+', ' ', 'g'), 110)
                   FROM pg_stat_statements
                  WHERE query NOT ILIKE '%pg_stat_statements%'
                  ORDER BY total_plan_time + total_exec_time DESC LIMIT 10",
                &[],
            )
            .map_err(pg)?;
        let nf = n as f64;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "A backlog of {} deliveries for one subscriber, drained with `pg_stat_statements` \
             (track = all, track_planning = on) loaded: the worker's SPI statements are counted \
             like a client's. Drain: {:.1} s ({} /s, slower than scenario 1 because of the \
             instrumentation{}).\n",
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
             {:.0} WAL bytes, {:.3} WAL writes, {:.3} WAL flushes (fsync) taking {:.3} ms in all.\n",
            (xact1 - xact0) as f64 / nf,
            wal_records as f64 / nf,
            wal_bytes as f64 / nf,
            wal_write as f64 / nf,
            wal_sync as f64 / nf,
            wal_sync_time / nf
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

/// Activates a webhook and, in the same transaction, emits one more event for it: its commit
/// wakes the worker at once (activating alone does not; the worker would notice within 5 s).
fn activate_and_wake(db: &mut Client, hook: i64) -> Result<()> {
    let mut tx = db.transaction().map_err(pg)?;
    tx.query_one(
        "SELECT id FROM webhook_update($1, active => true)",
        &[&hook],
    )
    .map_err(pg)?;
    tx.query_one("SELECT webhook_emit('bench.wake', '{}')", &[])
        .map_err(pg)?;
    tx.commit().map_err(pg)
}

/// One statement's figures from pg_stat_statements since the last reset.
#[derive(Debug, Clone, Default)]
struct StatementStats {
    calls: i64,
    plans: i64,
    ms_per_call: f64,
    rows_per_call: f64,
}

/// The worker's statements (those run more than 10 times, not the driver's) since the last
/// reset of pg_stat_statements, heaviest first.
fn worker_statements(db: &mut Client, deliveries: i64) -> String {
    let Ok(rows) = db.query(
        "SELECT calls, plans, total_plan_time + total_exec_time, rows,
                left(regexp_replace(query, '\\s+', ' ', 'g'), 90)
           FROM pg_stat_statements
          WHERE calls > 10 AND query NOT LIKE '%pg_stat%' AND query NOT LIKE '%FILTER (WHERE status%'
          ORDER BY total_plan_time + total_exec_time DESC LIMIT 6",
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
            q.replace('|', "\\|")
        );
    }
    s
}

/// The worker's claim (the statement that locks due rows FOR UPDATE SKIP LOCKED).
fn claim_stats(db: &mut Client) -> StatementStats {
    db.query_opt(
        "SELECT calls, plans, (total_plan_time + total_exec_time) / greatest(calls, 1),
                rows::float8 / greatest(calls, 1)
           FROM pg_stat_statements
          WHERE query LIKE '%FOR UPDATE SKIP LOCKED%' AND query LIKE 'WITH known%'
          ORDER BY calls DESC LIMIT 1",
        &[],
    )
    .ok()
    .flatten()
    .map(|r| StatementStats {
        calls: r.get(0),
        plans: r.get(1),
        ms_per_call: r.get(2),
        rows_per_call: r.get(3),
    })
    .unwrap_or_default()
}

struct Finished {
    ok: i64,
    failed: i64,
    last_us: u64,
    complete: bool,
}

struct ClaimTiming {
    claim_client: f64,
    claim_server: f64,
    next_due_server: f64,
    claim_plan: String,
    next_due_plan: String,
}

fn plan_text(rows: &[postgres::Row]) -> String {
    rows.iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Planning + execution time of an EXPLAIN ANALYZE text, in ms.
fn plan_ms(plan: &str) -> f64 {
    plan.lines()
        .filter_map(|l| {
            let l = l.trim();
            let v = l
                .strip_prefix("Planning Time: ")
                .or_else(|| l.strip_prefix("Execution Time: "))?;
            v.trim_end_matches(" ms").parse::<f64>().ok()
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
         claim statement from pg_stat_statements (mean planning + execution time per call, rows \
         per call; calls, and how many of them were planned):\n\n\
         | run | worker main thread | worker HTTP threads | other Postgres | bench (receiver) | machine | outside this bench | worker VmRSS max | worker claim: ms/call, rows/call (calls, plans) |\n\
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
            "| {label} | {:.0} % | {:.0} % | {:.0} % | {:.0} % | {:.0} % | {:.0} % | {} | {:.2} ms, {:.1} ({}, {}) |",
            c.worker_main,
            c.worker_http,
            c.postgres_other,
            c.bench,
            c.machine,
            c.outside,
            mib(d.rss.total as f64),
            d.claim.ms_per_call,
            d.claim.rows_per_call,
            d.claim.calls,
            d.claim.plans
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
