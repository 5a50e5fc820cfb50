//! Scenario 9: many databases. The same number of deliveries drained by one database's worker
//! (one subscriber), then by four databases' workers at once (one subscriber each, a quarter
//! of the events each): the launcher serves every database listed in `webhook.databases`,
//! and they share `webhook.concurrency` (32: 8 each). The total rate must not fall below the
//! single database's.

use std::time::{Duration, Instant};

use postgres::Client;

use super::{Bench, CLIENTE_DDL};
use crate::report::{Row, Section};
use crate::util::{log, now_us, pg, sleep, thousands, Result};

/// The three databases besides `postgres` (listed in CLUSTER_CONF's `webhook.databases`).
pub const OTHER_DATABASES: [&str; 3] = ["bench_db_2", "bench_db_3", "bench_db_4"];

impl Bench {
    pub(super) fn many_databases(&mut self, sec: &mut Section) -> Result<()> {
        let n = (self.sizes.s1_events / 5).max(400);
        sec.setup = format!(
            "{} events queued by `webhook_emit`, one subscriber (our receiver): first in one \
             database, then a quarter in each of four databases (`postgres` and {}), each \
             in its own transaction, the four committed back to back; the clock starts at the \
             first commit and stops at the last `delivered_at` of all four. Each database has \
             its own worker, started by the launcher; `webhook.concurrency` = 32 is shared \
             equally (8 each).",
            thousands(n as f64),
            OTHER_DATABASES.join(", ")
        );
        let stats = vec![self.recv.stats.clone()];
        let one = self.drain("S8 one database", &[self.recv.url("/s8")], &[], &stats, n)?;
        self.reset_queue()?;

        let mut admin = self.db()?;
        for name in OTHER_DATABASES {
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
                .map_err(pg)?;
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .map_err(pg)?;
            let mut db = self.cluster.connect(name)?;
            db.batch_execute(&format!("CREATE EXTENSION webhook_ext; {CLIENTE_DDL}"))
                .map_err(|e| format!("{name}: {}", pg(e)))?;
        }
        let names: Vec<&str> = std::iter::once("postgres").chain(OTHER_DATABASES).collect();
        let mut dbs: Vec<Client> = names
            .iter()
            .map(|name| self.cluster.connect(name))
            .collect::<Result<_>>()?;
        for (name, db) in names.iter().zip(dbs.iter_mut()) {
            self.create_webhook(db, &self.recv.url(&format!("/s8-{name}")), "{bench.*}")?;
        }
        // Every worker running (the launcher starts them within moments of CREATE EXTENSION).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let running: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'webhook_ext worker'",
                    &[],
                )
                .map_err(pg)?
                .get(0);
            if running == names.len() as i64 {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{running} of {} workers running", names.len()));
            }
            sleep(Duration::from_millis(200))?;
        }
        // Warm-up: each worker delivers one event (its statements planned, its endpoint known).
        for db in dbs.iter_mut() {
            self.emit(db, "bench.warm", 1)?;
        }
        wait_all(&mut dbs, 1, Duration::from_secs(30), "bench.warm")?;

        log(format!(
            "S8 four databases: queueing {} events in each",
            n / 4
        ));
        // Each database's events in an open transaction, then the four commits back to back:
        // the drains start together (queueing one database's events takes longer than a commit).
        for db in dbs.iter_mut() {
            db.batch_execute("BEGIN").map_err(pg)?;
            self.emit(db, "bench.throughput", n / 4)?;
        }
        let first_commit = now_us();
        for db in dbs.iter_mut() {
            db.batch_execute("COMMIT").map_err(pg)?;
        }
        let last_us = wait_all(&mut dbs, n / 4, self.sizes.drain_budget, "bench.throughput")?;
        let secs = last_us.saturating_sub(first_commit) as f64 / 1e6;
        let delivered = (n / 4) * 4;
        let rate = delivered as f64 / secs.max(1e-9);
        log(format!(
            "S8 four databases: {delivered} delivered in {secs:.2} s = {rate:.0}/s (one database: {:.0}/s)",
            one.rate()
        ));
        sec.rows
            .push(Row::info("one database, one subscriber", one.describe()));
        sec.rows.push(
            Row::info(
                "four databases, one subscriber each (total)",
                format!(
                    "{} /s ({} in {:.2} s; {:.2}× one database)",
                    thousands(rate),
                    thousands(delivered as f64),
                    secs,
                    rate / one.rate().max(1e-9)
                ),
            )
            .target("≥ one database's rate", rate >= one.rate()),
        );

        drop(dbs);
        for name in OTHER_DATABASES {
            // Plain DROP DATABASE: the worker leaves the database for it.
            admin
                .batch_execute(&format!("DROP DATABASE {name}"))
                .map_err(pg)?;
        }
        self.reset_queue()
    }
}

/// Waits until every database has `expect` deliveries of `event` succeeded; returns the
/// latest `delivered_at` (µs since the epoch, server clock) of them all.
fn wait_all(dbs: &mut [Client], expect: i64, budget: Duration, event: &str) -> Result<u64> {
    let started = Instant::now();
    loop {
        let mut done = 0;
        let mut last_us = 0u64;
        for db in dbs.iter_mut() {
            let row = db
                .query_one(
                    "SELECT count(*) FILTER (WHERE status = 'succeeded'),
                            coalesce((extract(epoch FROM max(delivered_at)) * 1e6)::bigint, 0)
                       FROM webhook_delivery_store WHERE event = $1",
                    &[&event],
                )
                .map_err(pg)?;
            if row.get::<_, i64>(0) >= expect {
                done += 1;
            }
            last_us = last_us.max(row.get::<_, i64>(1) as u64);
        }
        if done == dbs.len() {
            return Ok(last_us);
        }
        if started.elapsed() > budget {
            return Err(format!(
                "{done} of {} databases delivered their {expect} {event} events within {budget:?}",
                dbs.len()
            ));
        }
        sleep(Duration::from_millis(100))?;
    }
}
