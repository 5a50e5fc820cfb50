//! Scenario 2, latency: commit-to-receipt at a steady 200 events/s, next to the load client's
//! round trip.

use super::*;

impl Bench {
    pub(super) fn latency(&mut self, sec: &mut Section) -> Result<()> {
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
}
