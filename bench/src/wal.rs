//! WAL accounting for scenario 7: LSN arithmetic, the output of `pg_waldump --stats=record`,
//! and `pg_waldump`'s record listing summed by relation.

use std::collections::HashMap;

/// An LSN as `pg_lsn` prints it (`16/B374D848`), as a byte position.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.trim().split_once('/')?;
    let high = u64::from_str_radix(high, 16).ok()?;
    let low = u64::from_str_radix(low, 16).ok()?;
    (high <= u32::MAX as u64 && low <= u32::MAX as u64).then_some((high << 32) | low)
}

/// One record type of `pg_waldump --stats=record`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordStats {
    /// `Heap/INSERT`, `Btree/INSERT_LEAF`, `Transaction/COMMIT`, ...
    pub name: String,
    pub count: u64,
    /// The records' own bytes, without full-page images.
    pub record_bytes: u64,
    /// Full-page images carried by these records.
    pub fpi_bytes: u64,
}

impl RecordStats {
    pub fn bytes(&self) -> u64 {
        self.record_bytes + self.fpi_bytes
    }
}

/// The record types of a `pg_waldump --stats=record` report (the Total line left out),
/// largest first. Each line reads `Name  N (%)  record size (%)  FPI size (%)  combined (%)`.
pub fn parse_stats(report: &str) -> Vec<RecordStats> {
    let mut records: Vec<RecordStats> = report
        .lines()
        .filter_map(|line| {
            let fields = without_groups(line);
            let fields: Vec<&str> = fields.split_whitespace().collect();
            let [name, count, record, fpi, combined] = fields.as_slice() else {
                return None;
            };
            let number = |s: &str| s.parse::<u64>().ok();
            let (count, record_bytes, fpi_bytes, combined) = (
                number(count)?,
                number(record)?,
                number(fpi)?,
                number(combined)?,
            );
            (*name != "Total" && combined == record_bytes + fpi_bytes).then(|| RecordStats {
                name: name.to_string(),
                count,
                record_bytes,
                fpi_bytes,
            })
        })
        .collect();
    records.sort_by(|a, b| b.bytes().cmp(&a.bytes()).then(a.name.cmp(&b.name)));
    records
}

/// `line` without its `( 12.34)` and `[56.78%]` groups.
fn without_groups(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut depth = 0usize;
    for c in line.chars() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth = depth.saturating_sub(1),
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// A relation's storage as WAL block references name it (`rel 1663/5/16385`: tablespace,
/// database, file number); shared catalogs have database 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelFile {
    pub db: u32,
    pub file: u32,
}

/// The records of a `pg_waldump` listing (one line per record, as it prints them without
/// `--stats`), summed by the relation of their first block reference (None: the record
/// references no block, as commits do) and record type (`Heap/HOT_UPDATE`). A record's bytes
/// are its total length, full-page images included, as `--stats` counts them.
pub fn parse_records(listing: &str) -> Vec<(Option<RelFile>, RecordStats)> {
    let mut sums: HashMap<(Option<RelFile>, String), RecordStats> = HashMap::new();
    for line in listing.lines() {
        let Some(record) = parse_record_line(line) else {
            continue;
        };
        let (rel, name, rec, tot) = record;
        let entry = sums
            .entry((rel, name.clone()))
            .or_insert_with(|| RecordStats {
                name,
                count: 0,
                record_bytes: 0,
                fpi_bytes: 0,
            });
        entry.count += 1;
        entry.record_bytes += rec;
        entry.fpi_bytes += tot.saturating_sub(rec);
    }
    let mut records: Vec<(Option<RelFile>, RecordStats)> = sums
        .into_iter()
        .map(|((rel, _), stats)| (rel, stats))
        .collect();
    records.sort_by(|a, b| {
        b.1.bytes()
            .cmp(&a.1.bytes())
            .then(a.0.cmp(&b.0))
            .then(a.1.name.cmp(&b.1.name))
    });
    records
}

/// One line of the listing: `rmgr: Heap        len (rec/tot):     65/    65, tx: ..., desc:
/// INSERT off: 2, flags: 0x00, blkref #0: rel 1663/5/16385 blk 0` → (relation, `Heap/INSERT`,
/// record bytes, total bytes).
fn parse_record_line(line: &str) -> Option<(Option<RelFile>, String, u64, u64)> {
    let rest = line.strip_prefix("rmgr: ")?;
    let rmgr = rest.split_whitespace().next()?;
    let lengths = rest.split_once("len (rec/tot):")?.1;
    let (rec, tot) = lengths.split_once(',')?.0.split_once('/')?;
    let (rec, tot) = (rec.trim().parse().ok()?, tot.trim().parse().ok()?);
    let desc = rest.split_once("desc: ")?.1;
    let kind = desc
        .split_whitespace()
        .next()
        .map(|k| k.trim_end_matches(','))
        .filter(|k| !k.is_empty())?;
    // The first block reference; a description may name a relation too (`LOG rel 1663/5/16384`).
    let rel = desc.split_once(", blkref #").and_then(|(_, blk)| {
        let locator = blk.split_once("rel ")?.1.split([' ', ',']).next()?;
        let mut parts = locator.split('/');
        let (_tablespace, db, file) = (parts.next()?, parts.next()?, parts.next()?);
        Some(RelFile {
            db: db.parse().ok()?,
            file: file.parse().ok()?,
        })
    });
    Some((rel, format!("{rmgr}/{kind}"), rec, tot))
}

/// Record stats summed by name (largest first).
pub fn merge_by_name<'a>(records: impl IntoIterator<Item = &'a RecordStats>) -> Vec<RecordStats> {
    let mut sums: Vec<RecordStats> = Vec::new();
    for r in records {
        match sums.iter_mut().find(|s| s.name == r.name) {
            Some(s) => {
                s.count += r.count;
                s.record_bytes += r.record_bytes;
                s.fpi_bytes += r.fpi_bytes;
            }
            None => sums.push(r.clone()),
        }
    }
    sums.sort_by(|a, b| b.bytes().cmp(&a.bytes()).then(a.name.cmp(&b.name)));
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374_D848));
        assert_eq!(parse_lsn(" 0/1A8B2C8\n"), Some(0x01A8_B2C8));
        assert_eq!(parse_lsn("nope"), None);
        assert_eq!(parse_lsn("1/zz"), None);
    }

    #[test]
    fn waldump_stats() {
        let report = "\
WAL statistics between 0/1A8B2C8 and 0/1B7F1E8:
Type                                           N      (%)          Record size      (%)             FPI size      (%)        Combined size      (%)
----                                           -      ---          -----------      ---             --------      ---        -------------      ---
XLOG/CHECKPOINT_ONLINE                         1 (  0.01)                  148 (  0.01)                    0 (  0.00)                  148 (  0.01)
Transaction/COMMIT                          2000 ( 33.31)                68000 ( 21.87)                    0 (  0.00)                68000 ( 21.05)
Heap/INSERT                                 2000 ( 33.31)               158000 ( 50.82)                 8120 ( 96.90)               166120 ( 51.42)
Btree/INSERT_LEAF                           2002 ( 33.37)               124124 ( 39.93)                  260 (  3.10)               124384 ( 38.50)
                                        --------                      --------                      --------                      --------
Total                                       6003                        310272 [96.04%]                 8380 [2.59%]                323100 [100%]
";
        let records = parse_stats(report);
        assert_eq!(records.len(), 4);
        assert_eq!(
            records[0],
            RecordStats {
                name: "Heap/INSERT".into(),
                count: 2000,
                record_bytes: 158000,
                fpi_bytes: 8120
            }
        );
        assert_eq!(records[1].name, "Btree/INSERT_LEAF");
        assert_eq!(records[1].bytes(), 124384);
        assert_eq!(records[3].name, "XLOG/CHECKPOINT_ONLINE");
        assert!(records.iter().all(|r| r.name != "Total"));
    }
    #[test]
    fn waldump_listing() {
        let listing = "\
rmgr: Heap2       len (rec/tot):     53/  8061, tx:          0, lsn: 0/014AEFC0, prev 0/014AE8B8, desc: PRUNE_ON_ACCESS , isCatalogRel: F, blkref #0: rel 1663/5/1249 blk 16 FPW
rmgr: Sequence    len (rec/tot):     99/    99, tx:        739, lsn: 0/014B0F58, prev 0/014AEFC0, desc: LOG rel 1663/5/16384, blkref #0: rel 1663/5/16384 blk 0
rmgr: Heap        len (rec/tot):     65/    65, tx:        739, lsn: 0/014B0FC0, prev 0/014B0F58, desc: INSERT+INIT off: 1, flags: 0x00, blkref #0: rel 1663/5/16385 blk 0
rmgr: Btree       len (rec/tot):     90/    90, tx:        739, lsn: 0/014B1008, prev 0/014B0FC0, desc: NEWROOT level: 0, blkref #0: rel 1663/5/16391 blk 1, blkref #2: rel 1663/5/16391 blk 0
rmgr: Btree       len (rec/tot):     64/    64, tx:        739, lsn: 0/014B1068, prev 0/014B1008, desc: INSERT_LEAF off: 1, blkref #0: rel 1663/5/16391 blk 1
rmgr: Heap        len (rec/tot):     65/    65, tx:        739, lsn: 0/014B10A8, prev 0/014B1068, desc: INSERT off: 2, flags: 0x00, blkref #0: rel 1663/5/16385 blk 0
rmgr: Btree       len (rec/tot):     64/    64, tx:        739, lsn: 0/014B10F0, prev 0/014B10A8, desc: INSERT_LEAF off: 2, blkref #0: rel 1663/5/16391 blk 1
rmgr: Heap        len (rec/tot):     69/    69, tx:        739, lsn: 0/014B1130, prev 0/014B10F0, desc: HOT_UPDATE old_xmax: 739, old_off: 1, old_infobits: [], flags: 0x20, new_xmax: 0, new_off: 3, blkref #0: rel 1663/5/16385 blk 0
rmgr: Transaction len (rec/tot):     34/    34, tx:        739, lsn: 0/014B1178, prev 0/014B1130, desc: COMMIT 2026-11-30 06:27:36.606667 UTC
rmgr: Transaction len (rec/tot):     34/    34, tx:        740, lsn: 0/014B11A0, prev 0/014B1178, desc: COMMIT 2026-11-30 06:27:36.606700 UTC
pg_waldump: error: error in WAL record at 0/14B11C8: invalid record length
";
        let records = parse_records(listing);
        let find = |db: u32, file: u32, name: &str| {
            records
                .iter()
                .find(|(rel, r)| *rel == Some(RelFile { db, file }) && r.name == name)
                .map(|(_, r)| r.clone())
        };
        let prune = find(5, 1249, "Heap2/PRUNE_ON_ACCESS").unwrap();
        assert_eq!(
            (prune.count, prune.record_bytes, prune.fpi_bytes),
            (1, 53, 8008)
        );
        assert_eq!(records[0].1.name, "Heap2/PRUNE_ON_ACCESS");
        assert_eq!(find(5, 16391, "Btree/INSERT_LEAF").unwrap().bytes(), 128);
        assert_eq!(find(5, 16391, "Btree/NEWROOT").unwrap().count, 1);
        assert_eq!(find(5, 16384, "Sequence/LOG").unwrap().bytes(), 99);
        assert_eq!(find(5, 16385, "Heap/INSERT+INIT").unwrap().bytes(), 65);
        assert_eq!(find(5, 16385, "Heap/HOT_UPDATE").unwrap().bytes(), 69);
        let commits = records
            .iter()
            .find(|(rel, r)| rel.is_none() && r.name == "Transaction/COMMIT")
            .unwrap();
        assert_eq!((commits.1.count, commits.1.bytes()), (2, 68));
        let all: u64 = records.iter().map(|(_, r)| r.count).sum();
        assert_eq!(all, 10);

        let merged = merge_by_name(records.iter().map(|(_, r)| r));
        assert_eq!(merged.iter().map(|r| r.count).sum::<u64>(), 10);
        assert_eq!(
            merged
                .iter()
                .find(|r| r.name == "Btree/INSERT_LEAF")
                .unwrap()
                .count,
            2
        );
    }
}
