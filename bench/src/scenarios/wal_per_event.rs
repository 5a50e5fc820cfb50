//! Scenario 7, WAL per delivered event: plain, queued and delivered windows read with
//! pg_waldump, by record type and by relation.

use super::*;

/// Scenario 7's database no worker serves (`webhook.databases` in CLUSTER_CONF does not list it).
const WAL_IDLE_DB: &str = "bench_wal";
/// Scenario 7's first 50 events for its subscriber, in each of its two databases.
const WAL_WARM: &str = "SELECT webhook_emit('cliente.warm', jsonb_build_object('n', g))
    FROM generate_series(1, 50) AS g";

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

impl Bench {
    pub(super) fn wal_per_event(&mut self, sec: &mut Section) -> Result<()> {
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
}
