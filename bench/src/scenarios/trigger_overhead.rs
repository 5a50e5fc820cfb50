//! Scenario 3, trigger overhead: pgbench INSERTs with and without the trigger.

use super::*;

impl Bench {
    pub(super) fn trigger_overhead(&mut self, sec: &mut Section) -> Result<()> {
        let secs = self.sizes.s3_secs;
        let clients = self.sizes.s3_clients;
        sec.setup = format!(
            "`pgbench -n -c {clients} -j 2 -T {secs}` running a one-row INSERT into `cliente` \
             (6 columns). Without the trigger vs with `AFTER INSERT OR UPDATE OR DELETE ... \
             webhook_trigger('cliente')` and one subscriber to `cliente.*` on our receiver (the \
             worker delivers while pgbench runs, on the same 2 cores). Runs alternate, three \
             of each as in issue 12's measurement (plain, trigger, ...; median of each); before \
             each run the queue is \
             drained, `cliente` truncated and a CHECKPOINT taken. Diagnostic rows: the trigger \
             with no matching subscriber (the trigger function alone), and trigger + subscriber \
             in a second database the worker does not serve (queueing without concurrent \
             delivery; three alternations too). Ceiling rows, in the same alternations of the \
             second database: the plain INSERT and the trigger with nothing delivered, each \
             while a bare HTTP client (the load client of scenarios 1 and 2, two keep-alive \
             connections, no database work) POSTs delivery bodies to the same receiver at 70 % \
             of the first plain rate, the rate the worker would deliver at the target: what \
             the HTTP exchange alone leaves the application on these 2 cores. WAL rows: bytes written and flushes made per transaction over the first run \
             of each kind (pg_stat_wal; track_wal_io_timing = on for this scenario). Secondary \
             rows: fsync = off (reloaded for those runs only)."
        );
        self.reset_queue()?;
        let mut db = self.db()?;
        self.set_conf(&mut db, "track_wal_io_timing", Some("on"))?;
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
        // The WAL each kind of run wrote and flushed (its first run).
        let mut wal: Vec<(&str, WalFlushes)> = Vec::new();
        let run_pair = |b: &Bench,
                        db: &mut Client,
                        rounds: usize,
                        wal: &mut Vec<(&str, WalFlushes)>|
         -> Result<(Vec<f64>, Vec<f64>)> {
            let (mut plain, mut trig) = (Vec::new(), Vec::new());
            for round in 0..rounds {
                set_trigger(db, false)?;
                prepare(b, db)?;
                let (tps, flushes) = b.pgbench_counting_wal(db, &script, secs, "postgres")?;
                plain.push(tps);
                if round == 0 && wal.is_empty() {
                    wal.push(("without trigger", flushes));
                }
                log(format!(
                    "S3: without trigger {:.0} tps",
                    plain.last().unwrap()
                ));
                set_trigger(db, true)?;
                prepare(b, db)?;
                let (tps, flushes) = b.pgbench_counting_wal(db, &script, secs, "postgres")?;
                trig.push(tps);
                if round == 0 && wal.len() == 1 {
                    wal.push(("with trigger + 1 subscriber, delivering", flushes));
                }
                log(format!("S3: with trigger {:.0} tps", trig.last().unwrap()));
            }
            set_trigger(db, false)?;
            Ok((plain, trig))
        };
        // Three rounds: the median then drops one outlier (with two it is their mean).
        let (plain, trig) = run_pair(self, &mut db, 3, &mut wal)?;
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
        // What the worker would deliver at the target: 70 % of the plain rate measured above.
        let target_rate = 0.70 * median(&plain);
        let (idle_plain_runs, idle_trig_runs, http_plain_runs, http_trig_runs) = {
            let mut idle = self.cluster.connect("bench_idle")?;
            idle.batch_execute("CREATE EXTENSION webhook_ext")
                .map_err(pg)?;
            idle.batch_execute(CLIENTE_DDL).map_err(pg)?;
            self.create_webhook(&mut idle, &self.recv.url("/idle"), "{cliente.*}")?;
            // Alternating as above, three of each: this row moves the most between runs.
            let (mut plain, mut trig) = (Vec::new(), Vec::new());
            let (mut http_plain, mut http_trig) = (Vec::new(), Vec::new());
            let mut requests: Vec<Vec<u8>> = Vec::new();
            for round in 0..3 {
                idle.batch_execute(
                    "DROP TRIGGER IF EXISTS cliente_webhook ON cliente; \
                     TRUNCATE cliente, webhook_delivery_store; CHECKPOINT",
                )
                .map_err(pg)?;
                let (tps, flushes) =
                    self.pgbench_counting_wal(&mut idle, &script, secs, "bench_idle")?;
                plain.push(tps);
                if round == 0 {
                    wal.push(("without trigger, second database", flushes));
                }
                idle.batch_execute(CLIENTE_TRIGGER).map_err(pg)?;
                idle.batch_execute("TRUNCATE cliente, webhook_delivery_store; CHECKPOINT")
                    .map_err(pg)?;
                let (tps, flushes) =
                    self.pgbench_counting_wal(&mut idle, &script, secs, "bench_idle")?;
                trig.push(tps);
                if round == 0 {
                    wal.push(("with trigger + 1 subscriber, nothing delivered", flushes));
                }
                if requests.is_empty() {
                    let port = self.recv.port;
                    requests = self
                        .sample_bodies(&mut idle, "cliente.created")?
                        .iter()
                        .take(100)
                        .enumerate()
                        .map(|(i, body)| load::request_bytes(port, "/bare", body, i as u64))
                        .collect();
                }
                idle.batch_execute("TRUNCATE cliente, webhook_delivery_store; CHECKPOINT")
                    .map_err(pg)?;
                let tps = self.with_http_traffic(&requests, target_rate, secs, || {
                    self.pgbench_on(&script, secs, "bench_idle")
                })?;
                http_trig.push(tps);
                idle.batch_execute(
                    "DROP TRIGGER cliente_webhook ON cliente; \
                     TRUNCATE cliente, webhook_delivery_store; CHECKPOINT",
                )
                .map_err(pg)?;
                let tps = self.with_http_traffic(&requests, target_rate, secs, || {
                    self.pgbench_on(&script, secs, "bench_idle")
                })?;
                http_plain.push(tps);
                log(format!(
                    "S3: second database: without trigger {:.0} tps, with {:.0} tps; \
                     with HTTP traffic alone: without {:.0} tps, with {:.0} tps",
                    plain.last().unwrap(),
                    trig.last().unwrap(),
                    http_plain.last().unwrap(),
                    http_trig.last().unwrap()
                ));
            }
            (plain, trig, http_plain, http_trig)
        };
        db.batch_execute("DROP DATABASE bench_idle").map_err(pg)?;

        let (idle_plain, idle_trig) = (median(&idle_plain_runs), median(&idle_trig_runs));
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
        let rate = thousands(target_rate);
        sec.rows.push(Row::compared(
            format!(
                "ceiling: INSERT/s without trigger while a bare HTTP client sends {rate} requests/s to the receiver (second database)"
            ),
            thousands(median(&http_plain_runs)),
            format!("{} without trigger (same database)", thousands(idle_plain)),
            pct(median(&http_plain_runs), idle_plain),
        ));
        sec.rows.push(Row::compared(
            format!(
                "ceiling: INSERT/s with trigger + 1 subscriber, nothing delivered, while a bare HTTP client sends {rate} requests/s (second database)"
            ),
            thousands(median(&http_trig_runs)),
            format!("{} without trigger (same database)", thousands(idle_plain)),
            pct(median(&http_trig_runs), idle_plain),
        ));
        sec.rows.push(Row::info(
            "individual runs (tps): without / with",
            format!("{} / {}", runs(&plain), runs(&trig)),
        ));
        sec.rows.push(Row::info(
            "individual runs, second database (tps): without / with",
            format!("{} / {}", runs(&idle_plain_runs), runs(&idle_trig_runs)),
        ));
        sec.rows.push(Row::info(
            "individual runs with the bare HTTP traffic (tps): without / with",
            format!("{} / {}", runs(&http_plain_runs), runs(&http_trig_runs)),
        ));
        sec.rows.push(Row::info(
            "deliveries made for the trigger runs (all succeeded)",
            thousands(delivered as f64),
        ));
        // What bounds these rates with fsync on: each commit waits for a WAL flush, and the
        // flushes slow down as the backends' CPU load grows (bench/ANALYSIS.md §13).
        for (run, flushes) in &wal {
            sec.rows.push(Row::info(
                format!("WAL per INSERT transaction, {run}: bytes, flushes (pg_stat_wal)"),
                flushes.describe(),
            ));
        }

        // Secondary: fsync = off.
        self.set_conf(&mut db, "fsync", Some("off"))?;
        let result = run_pair(self, &mut db, 1, &mut Vec::new());
        self.set_conf(&mut db, "fsync", None)?;
        let (plain_off, trig_off) = result?;
        let (p, t) = (median(&plain_off), median(&trig_off));
        sec.rows.push(Row::compared(
            "secondary, fsync = off: INSERT/s with trigger + 1 subscriber",
            thousands(t),
            format!("{} without trigger", thousands(p)),
            pct(t, p),
        ));
        self.set_conf(&mut db, "track_wal_io_timing", None)?;
        self.wait_no_pending(&mut db, Duration::from_secs(300))?;
        db.batch_execute("TRUNCATE cliente").map_err(pg)?;
        self.reset_queue()
    }
}

impl Bench {
    /// Runs `run` while two keep-alive connections POST `requests` to the receiver at `rate`
    /// requests/s in all, for a second longer than a pgbench run of `secs` (so that the
    /// traffic covers it). Every request must get a 2xx.
    fn with_http_traffic<T>(
        &self,
        requests: &[Vec<u8>],
        rate: f64,
        secs: u64,
        run: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        const CONNECTIONS: usize = 2;
        let port = self.recv.port;
        let senders: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                let requests = requests.to_vec();
                std::thread::spawn(move || {
                    load::paced(
                        port,
                        &requests,
                        rate / CONNECTIONS as f64,
                        Duration::from_secs(secs + 1),
                    )
                })
            })
            .collect();
        let result = run();
        for sender in senders {
            let sent = sender
                .join()
                .map_err(|_| "bare HTTP client: thread panicked".to_string())?
                .map_err(|e| format!("bare HTTP client: {e}"))?;
            if sent.errors > 0 {
                return Err(format!(
                    "bare HTTP client: {} of {} requests failed",
                    sent.errors, sent.requests
                ));
            }
        }
        result
    }
}

/// Each run's rate, in run order.
fn runs(rates: &[f64]) -> String {
    rates
        .iter()
        .map(|rate| thousands(*rate))
        .collect::<Vec<_>>()
        .join(", ")
}
