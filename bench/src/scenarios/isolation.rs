//! Scenario 5, isolation: a receiver that never answers (and a crowd of them) must not hold
//! back a fast one.

use super::*;

/// Scenario 5's crowd: webhooks whose receiver never answers, beside one fast webhook, and
/// the deliveries queued for each (more than are attempted during the measure: a failed
/// attempt's retry waits a minute, so only first attempts fall in it).
const CROWD_HANGING: usize = 100;
const CROWD_HANGING_EVENTS: i64 = 20;

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

impl Bench {
    pub(super) fn isolation(&mut self, sec: &mut Section) -> Result<()> {
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
}
