//! Scenario 4, backlog: drain rate against backlog size, with and without the worker, and the
//! worker's statements timed at each size.

use super::*;

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

/// Times one of the worker's statements the way the worker runs it: prepared, under its
/// session settings (under plan_cache_mode auto the plan cache decides after 5 runs whether
/// to keep a generic plan).
struct StatementTimer {
    /// The worker's session settings as `set_config` calls.
    settings: String,
    reps: usize,
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

impl Bench {
    /// Pending deliveries `$2..=$3` of webhook `$1` (bodies like the trigger's), written
    /// straight into the store.
    pub(super) const FILL: &'static str = "INSERT INTO webhook_delivery_store (webhook_id, event_id, event, body)
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

    pub(super) fn backlog(&mut self, sec: &mut Section) -> Result<()> {
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
}
