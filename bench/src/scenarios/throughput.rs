//! Scenario 1, throughput: backlogs drained through our receiver (one and several webhooks),
//! next to the load client against the same receiver and nginx; CPU and memory while draining,
//! and the footprint measurements that need its 100k deliveries.

use super::*;

impl Bench {
    pub(super) fn throughput(&mut self, sec: &mut Section) -> Result<()> {
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
        // The clock starts at the first count the purge has lowered: the worker purges at its
        // next maintenance (every 5 s), and that wait is no part of how fast it purges.
        let waited = Instant::now();
        let mut before = count(db)?;
        loop {
            sleep(Duration::from_millis(20))?;
            let now = count(db)?;
            if now < before || waited.elapsed() >= self.sizes.s6_purge_window {
                before = now;
                break;
            }
        }
        let t = Instant::now();
        let mut after = before;
        while after > 0 && t.elapsed() < self.sizes.s6_purge_window {
            sleep(Duration::from_millis(100))?;
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
}
