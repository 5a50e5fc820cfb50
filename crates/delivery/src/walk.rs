//! How the worker finds new deliveries with no durable mark on each: it walks the store's
//! primary key from where it stopped. Ids are handed out in insert order (a sequence with
//! CACHE 1) but committed in any order, so an id the walk passes without seeing may still
//! appear: the walk keeps every such gap and looks again until no transaction that could
//! commit it is running.
//!
//! Why that wait is enough: whoever inserts a delivery takes its transaction id first, then
//! the delivery id (the trigger and webhook_enqueue see to it). A gap sits below an id that
//! had committed when the walk ran, so the gap's transaction had its id before the snapshot
//! taken after the walk, and that snapshot's xmax is above it. Once a later snapshot's xmin
//! reaches that xmax, every such transaction has ended; a look taken after that finds the
//! gap's row if it committed, and never will otherwise.

/// A transaction id as `pg_snapshot` gives it (xid8: 64 bits, never wraps).
pub type Xid = u64;

/// Most gaps kept apart. Past it the closest are merged: a wider range is looked at (rows
/// already handled in it are skipped by the caller), never a gap forgotten. Gaps pile up
/// only while some writing transaction stays open (each rolled-back id is one).
pub const MAX_GAPS: usize = 64;

/// Ids `from..=to` the walk passed without seeing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub from: i64,
    pub to: i64,
    /// xmax of the first snapshot taken after the gap was found; None until there is one.
    watch_until: Option<Xid>,
}

#[derive(Debug, Default, Clone)]
pub struct Walk {
    /// The last id the walk has passed.
    cursor: i64,
    gaps: Vec<Gap>,
    /// xmin of the last snapshot observed.
    xmin: Xid,
}

impl Walk {
    /// A walk that starts after `frontier` (every id up to it is handled).
    pub fn after(frontier: i64) -> Walk {
        Walk {
            cursor: frontier,
            ..Walk::default()
        }
    }

    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    pub fn has_gaps(&self) -> bool {
        !self.gaps.is_empty()
    }

    /// A snapshot taken now, before the gaps are looked at again: gaps found since the last
    /// one are watched until a later xmin reaches its xmax.
    pub fn observe_snapshot(&mut self, xmin: Xid, xmax: Xid) {
        self.xmin = xmin;
        for gap in &mut self.gaps {
            gap.watch_until.get_or_insert(xmax);
        }
    }

    /// The gaps to look at again, as (from, to) ranges.
    pub fn gaps(&self) -> Vec<(i64, i64)> {
        self.gaps.iter().map(|g| (g.from, g.to)).collect()
    }

    /// The gaps were just looked at (after `observe_snapshot`), and whatever they held was
    /// taken: a gap whose transactions have all ended is closed. The others stay (what they
    /// held is found again next time, and skipped by the caller if already handled).
    pub fn settle(&mut self) {
        let xmin = self.xmin;
        self.gaps
            .retain(|gap| gap.watch_until.is_none_or(|until| until > xmin));
    }

    /// The walk read `ids` (ascending, all after the cursor) and took them up to `through`
    /// (the rest are read again next time). Ids up to `through` that it did not read are gaps.
    pub fn advance(&mut self, ids: &[i64], through: i64) {
        let mut expected = self.cursor + 1;
        for &id in ids.iter().take_while(|&&id| id <= through) {
            if id > expected {
                self.open(expected, id - 1, None);
            }
            expected = id + 1;
        }
        if through >= expected {
            self.open(expected, through, None);
        }
        self.cursor = self.cursor.max(through);
    }

    /// A delivery the walk took but must not send now (a session's webhook_retry holds it):
    /// look at it again with the gaps, from the next round on.
    pub fn revisit(&mut self, id: i64) {
        // Closed by the next settle: by then the look has found it (taken again if still
        // undelivered, and revisited again if still held).
        self.open(id, id, Some(0));
    }

    fn open(&mut self, from: i64, to: i64, watch_until: Option<Xid>) {
        self.gaps.push(Gap {
            from,
            to,
            watch_until,
        });
        if self.gaps.len() > MAX_GAPS {
            self.merge_closest();
        }
    }

    /// Merge the two gaps closest together: the merged gap waits for the later of their
    /// snapshots (an unwatched one stays unwatched until the next snapshot).
    fn merge_closest(&mut self) {
        self.gaps.sort_by_key(|g| g.from);
        let Some(at) =
            (0..self.gaps.len() - 1).min_by_key(|&i| self.gaps[i + 1].from - self.gaps[i].to)
        else {
            return;
        };
        let next = self.gaps.remove(at + 1);
        let gap = &mut self.gaps[at];
        gap.to = gap.to.max(next.to);
        gap.watch_until = match (gap.watch_until, next.watch_until) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }

    /// Every id up to the result is handled (sent and recorded, or due), given the lowest id
    /// the caller still holds unrecorded: what a restart may walk from.
    pub fn frontier(&self, lowest_unrecorded: Option<i64>) -> i64 {
        let lowest_gap = self.gaps.iter().map(|g| g.from).min();
        [Some(self.cursor + 1), lowest_gap, lowest_unrecorded]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.cursor + 1)
            - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_in_a_row_leave_no_gap() {
        let mut walk = Walk::after(10);
        walk.advance(&[11, 12, 13], 13);
        assert_eq!(walk.cursor(), 13);
        assert!(!walk.has_gaps());
        assert_eq!(walk.frontier(None), 13);
    }

    #[test]
    fn a_missing_id_is_a_gap_and_holds_the_frontier_back() {
        let mut walk = Walk::after(10);
        walk.advance(&[11, 14, 15], 15);
        assert_eq!(walk.gaps(), vec![(12, 13)]);
        assert_eq!(walk.frontier(None), 11);
        assert_eq!(walk.frontier(Some(11)), 10);
    }

    #[test]
    fn the_walk_may_stop_before_what_it_read() {
        let mut walk = Walk::after(0);
        walk.advance(&[1, 3, 4, 5], 3);
        assert_eq!(walk.cursor(), 3);
        assert_eq!(walk.gaps(), vec![(2, 2)]);
        // Stopping past the last id read opens a gap up to the stop.
        let mut walk = Walk::after(0);
        walk.advance(&[1], 1);
        walk.advance(&[], 1);
        assert!(!walk.has_gaps());
    }

    #[test]
    fn a_gap_closes_only_once_a_snapshot_after_it_has_no_older_transaction_running() {
        let mut walk = Walk::after(0);
        walk.advance(&[1, 3], 3);
        // Not watched yet: no snapshot since it was found.
        walk.observe_snapshot(90, 100);
        walk.settle();
        assert_eq!(walk.gaps(), vec![(2, 2)]);
        // Transactions older than xid 100 still run.
        walk.observe_snapshot(99, 120);
        walk.settle();
        assert_eq!(walk.gaps(), vec![(2, 2)]);
        walk.observe_snapshot(100, 130);
        walk.settle();
        assert!(!walk.has_gaps());
        assert_eq!(walk.frontier(None), 3);
    }

    #[test]
    fn gaps_found_later_wait_for_their_own_snapshot() {
        let mut walk = Walk::after(0);
        walk.advance(&[2], 2);
        walk.observe_snapshot(50, 100);
        walk.advance(&[3, 5], 5);
        walk.observe_snapshot(100, 200);
        walk.settle();
        assert_eq!(walk.gaps(), vec![(4, 4)]);
        walk.observe_snapshot(200, 210);
        walk.settle();
        assert!(!walk.has_gaps());
    }

    #[test]
    fn gaps_past_the_limit_merge_into_wider_ones_and_lose_no_id() {
        let mut walk = Walk::after(0);
        // Every other id missing: far more gaps than kept apart.
        let ids: Vec<i64> = (1..=400).filter(|id| id % 2 == 0).collect();
        walk.advance(&ids, 400);
        let gaps = walk.gaps();
        assert!(gaps.len() <= MAX_GAPS, "{}", gaps.len());
        for missing in (1..=400).filter(|id| id % 2 == 1) {
            assert!(
                gaps.iter()
                    .any(|&(from, to)| from <= missing && missing <= to),
                "{missing} is in no gap"
            );
        }
        assert_eq!(walk.frontier(None), 0);
    }

    #[test]
    fn a_revisited_delivery_is_looked_at_again_and_then_closed() {
        let mut walk = Walk::after(0);
        walk.advance(&[1, 2, 3], 3);
        walk.revisit(2);
        assert_eq!(walk.gaps(), vec![(2, 2)]);
        assert_eq!(walk.frontier(None), 1);
        walk.observe_snapshot(1, 2);
        walk.settle();
        assert!(!walk.has_gaps());
    }
}
