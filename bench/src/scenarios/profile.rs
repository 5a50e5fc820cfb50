//! The profiling pass: pg_stat_statements over a drain, and perf when available.

use super::*;

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

impl Bench {
    pub(super) fn profile_pass(&mut self) -> Result<()> {
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
