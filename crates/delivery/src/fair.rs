//! Which claimed delivery goes to the HTTP pool next. Each endpoint (key) is in a lane by how
//! fast it answers: fast, new (no attempt finished yet) or slow. Lanes take turns, endpoints
//! take turns within their lane, and each endpoint has a cap on how many of its attempts run
//! at once — so one slow or dead receiver can never hold every thread, however much of the
//! queue is its own. The new and slow lanes also share one budget, so that any number of
//! endpoints that hang (or might) leave the rest of the threads to those known to answer fast.

use std::collections::{HashMap, VecDeque};

/// Which group of keys a key takes turns in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Its attempts are known to be fast: only its own cap and the total apply.
    Fast = 0,
    /// Nothing is known about it yet (every key starts here): it might hang.
    New = 1,
    /// Its attempts take long or time out.
    Slow = 2,
}

const LANES: usize = 3;
const ALL_LANES: [Lane; LANES] = [Lane::Fast, Lane::New, Lane::Slow];

/// How many items may run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneCaps {
    pub total: usize,
    /// Per key, by the key's lane (indexed by `Lane as usize`).
    pub per_key: [usize; LANES],
    /// The new and slow lanes' items together.
    pub new_and_slow: usize,
}

impl LaneCaps {
    /// The same cap for every key, and no budget for new and slow keys but the total.
    pub fn uniform(total: usize, per_key: usize) -> LaneCaps {
        LaneCaps {
            total,
            per_key: [per_key; LANES],
            new_and_slow: total,
        }
    }
}

/// Items waiting per key (a webhook id), and how many of each key are running.
#[derive(Debug)]
pub struct FairQueue<T> {
    waiting: HashMap<i64, VecDeque<T>>,
    /// Per lane, the keys with waiting items, in turn order. A key is in its lane's only.
    turns: [VecDeque<i64>; LANES],
    /// The lane of each key that is not in `Lane::New`.
    lanes: HashMap<i64, Lane>,
    running: HashMap<i64, usize>,
    /// Running items per lane, counted in the lane their key is in now: a key that moves
    /// takes its running items along (a new key found fast frees their share of the new
    /// and slow lanes' budget at once).
    lane_running: [usize; LANES],
    /// The lane that gets the next turn.
    next_lane: usize,
    waiting_len: usize,
    running_len: usize,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue {
            waiting: HashMap::new(),
            turns: Default::default(),
            lanes: HashMap::new(),
            running: HashMap::new(),
            lane_running: [0; LANES],
            next_lane: 0,
            waiting_len: 0,
            running_len: 0,
        }
    }
}

impl<T> FairQueue<T> {
    pub fn push(&mut self, key: i64, item: T) {
        let queue = self.waiting.entry(key).or_default();
        if queue.is_empty() {
            let lane = self.lanes.get(&key).copied().unwrap_or(Lane::New);
            self.turns[lane as usize].push_back(key);
        }
        queue.push_back(item);
        self.waiting_len += 1;
    }

    pub fn lane(&self, key: i64) -> Lane {
        self.lanes.get(&key).copied().unwrap_or(Lane::New)
    }

    /// Moves `key` to `lane`, with its waiting and running items. O(keys in its old lane).
    /// Returns whether it moved.
    pub fn set_lane(&mut self, key: i64, lane: Lane) -> bool {
        let old = self.lane(key);
        if old == lane {
            return false;
        }
        if lane == Lane::New {
            self.lanes.remove(&key);
        } else {
            self.lanes.insert(key, lane);
        }
        let running = self.running.get(&key).copied().unwrap_or(0);
        self.lane_running[old as usize] -= running;
        self.lane_running[lane as usize] += running;
        let old_turns = &mut self.turns[old as usize];
        if let Some(at) = old_turns.iter().position(|&k| k == key) {
            old_turns.remove(at);
            self.turns[lane as usize].push_back(key);
        }
        true
    }

    /// Puts every key in the lane `lanes` gives it (`Lane::New` if absent), in O(keys).
    pub fn set_lanes(&mut self, lanes: HashMap<i64, Lane>) {
        self.lanes = lanes;
        self.lanes.retain(|_, lane| *lane != Lane::New);
        let queued: Vec<i64> = self.turns.iter_mut().flat_map(|t| t.drain(..)).collect();
        for key in queued {
            let lane = self.lane(key);
            self.turns[lane as usize].push_back(key);
        }
        self.lane_running = [0; LANES];
        for (&key, &running) in &self.running {
            let lane = self.lanes.get(&key).copied().unwrap_or(Lane::New);
            self.lane_running[lane as usize] += running;
        }
    }

    /// The next item allowed to start, counted as running: fewer than `caps.total` run in
    /// all, fewer than its lane's per-key cap of its key, and for a new or slow key fewer
    /// than `caps.new_and_slow` of those two lanes. None when nothing may start now.
    /// Lanes take turns; a lane at its budget is passed over without looking at its keys.
    pub fn start_next(&mut self, caps: &LaneCaps) -> Option<(i64, T)> {
        if self.running_len >= caps.total {
            return None;
        }
        let new_and_slow_full = self.lane_running[Lane::New as usize]
            + self.lane_running[Lane::Slow as usize]
            >= caps.new_and_slow;
        for i in 0..LANES {
            let lane = ALL_LANES[(self.next_lane + i) % LANES];
            if lane != Lane::Fast && new_and_slow_full {
                continue;
            }
            if let Some(started) = self.start_in(lane, caps.per_key[lane as usize]) {
                self.next_lane = (lane as usize + 1) % LANES;
                return Some(started);
            }
        }
        None
    }

    /// The first key in `lane`'s turn below `per_key_cap` starts its next item.
    fn start_in(&mut self, lane: Lane, per_key_cap: usize) -> Option<(i64, T)> {
        let turn = &mut self.turns[lane as usize];
        for _ in 0..turn.len() {
            let key = turn.pop_front()?;
            let running = self.running.get(&key).copied().unwrap_or(0);
            if running >= per_key_cap {
                turn.push_back(key);
                continue;
            }
            let queue = self
                .waiting
                .get_mut(&key)
                .expect("a key in turn has waiting items");
            let item = queue.pop_front().expect("a key in turn has waiting items");
            if queue.is_empty() {
                self.waiting.remove(&key);
            } else {
                turn.push_back(key);
            }
            self.waiting_len -= 1;
            *self.running.entry(key).or_insert(0) += 1;
            self.lane_running[lane as usize] += 1;
            self.running_len += 1;
            return Some((key, item));
        }
        None
    }

    /// Another item of `key`, counted as running, if the key is in the fast lane, has one
    /// waiting, and is below its cap and the total: a thread that keeps several attempts of
    /// one fast endpoint in flight takes them this way. The key keeps its place in its turn.
    pub fn start_more_of(&mut self, key: i64, caps: &LaneCaps) -> Option<T> {
        if self.lane(key) != Lane::Fast
            || self.running_len >= caps.total
            || self.running.get(&key).copied().unwrap_or(0) >= caps.per_key[Lane::Fast as usize]
        {
            return None;
        }
        let queue = self.waiting.get_mut(&key)?;
        let item = queue.pop_front().expect("a waiting key has items");
        if queue.is_empty() {
            self.waiting.remove(&key);
            let turn = &mut self.turns[Lane::Fast as usize];
            if let Some(at) = turn.iter().position(|&k| k == key) {
                turn.remove(at);
            }
        }
        self.waiting_len -= 1;
        *self.running.entry(key).or_insert(0) += 1;
        self.lane_running[Lane::Fast as usize] += 1;
        self.running_len += 1;
        Some(item)
    }

    /// A running item of `key` finished.
    pub fn finished(&mut self, key: i64) {
        if let Some(running) = self.running.get_mut(&key) {
            *running -= 1;
            if *running == 0 {
                self.running.remove(&key);
            }
            self.running_len -= 1;
            let lane = self.lane(key);
            self.lane_running[lane as usize] -= 1;
        }
    }

    /// Takes every waiting item of `key` out of the queue (its running ones stay counted
    /// until they finish).
    pub fn withdraw(&mut self, key: i64) -> Vec<T> {
        let Some(queue) = self.waiting.remove(&key) else {
            return Vec::new();
        };
        let turn = &mut self.turns[self.lane(key) as usize];
        if let Some(at) = turn.iter().position(|&k| k == key) {
            turn.remove(at);
        }
        self.waiting_len -= queue.len();
        queue.into()
    }

    /// Waiting plus running items per key.
    pub fn outstanding(&self) -> Vec<(i64, usize)> {
        let mut counts: HashMap<i64, usize> = self.running.clone();
        for (key, queue) in &self.waiting {
            *counts.entry(*key).or_insert(0) += queue.len();
        }
        counts.into_iter().collect()
    }

    pub fn waiting_len(&self) -> usize {
        self.waiting_len
    }

    pub fn running_len(&self) -> usize {
        self.running_len
    }

    /// Forget everything (the items' rows are gone).
    pub fn clear(&mut self) {
        *self = FairQueue::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn withdrawing_a_key_takes_its_waiting_items_and_leaves_the_others_their_turns() {
        let mut queue = FairQueue::default();
        for item in ["a1", "a2", "a3"] {
            queue.push(1, item);
        }
        for item in ["b1", "b2"] {
            queue.push(2, item);
        }
        let caps = LaneCaps::uniform(8, 8);
        assert_eq!(queue.start_next(&caps), Some((1, "a1")));
        assert_eq!(queue.withdraw(1), vec!["a2", "a3"]);
        assert_eq!(queue.withdraw(1), Vec::<&str>::new());
        assert_eq!((queue.waiting_len(), queue.running_len()), (2, 1));
        // Key 1 has no turn left; its running item still counts until it finishes.
        assert_eq!(start_all(&mut queue, 8, 8), ["b1", "b2"]);
        queue.finished(1);
        assert_eq!(queue.running_len(), 2);
        assert_eq!(queue.outstanding().iter().find(|(k, _)| *k == 1), None);
    }

    fn start_all(
        queue: &mut FairQueue<&'static str>,
        total: usize,
        per_key: usize,
    ) -> Vec<&'static str> {
        let caps = LaneCaps::uniform(total, per_key);
        std::iter::from_fn(|| queue.start_next(&caps).map(|(_, item)| item)).collect()
    }

    fn start_keys(queue: &mut FairQueue<()>, caps: &LaneCaps) -> Vec<i64> {
        std::iter::from_fn(|| queue.start_next(caps).map(|(key, ())| key)).collect()
    }

    #[test]
    fn endpoints_take_turns() {
        let mut queue = FairQueue::default();
        for item in ["a1", "a2", "a3"] {
            queue.push(1, item);
        }
        for item in ["b1", "b2"] {
            queue.push(2, item);
        }
        assert_eq!(
            start_all(&mut queue, 10, 10),
            vec!["a1", "b1", "a2", "b2", "a3"]
        );
        assert_eq!((queue.waiting_len(), queue.running_len()), (0, 5));
    }

    #[test]
    fn one_endpoint_never_takes_more_than_its_cap() {
        let mut queue = FairQueue::default();
        for _ in 0..100 {
            queue.push(1, "slow");
        }
        queue.push(2, "fast");
        // 4 slots, at most 2 per endpoint: the slow one's backlog leaves room for the fast one.
        assert_eq!(start_all(&mut queue, 4, 2), vec!["slow", "fast", "slow"]);
        let caps = LaneCaps::uniform(4, 2);
        assert_eq!(
            queue.start_next(&caps),
            None,
            "slow is at its cap, fast has nothing waiting"
        );
        queue.push(2, "fast again");
        assert_eq!(queue.start_next(&caps), Some((2, "fast again")));
        assert_eq!(queue.start_next(&caps), None, "every slot is taken");
        queue.finished(1);
        assert_eq!(queue.start_next(&caps), Some((1, "slow")));
    }

    #[test]
    fn a_key_with_a_smaller_cap_leaves_its_share_to_others() {
        let mut queue = FairQueue::default();
        queue.set_lane(1, Lane::Slow);
        queue.set_lane(2, Lane::Fast);
        for _ in 0..10 {
            queue.push(1, "hanging");
            queue.push(2, "fast");
        }
        let caps = LaneCaps {
            total: 10,
            per_key: [3, 3, 1],
            new_and_slow: 10,
        };
        let started: Vec<_> =
            std::iter::from_fn(|| queue.start_next(&caps).map(|(_, item)| item)).collect();
        assert_eq!(started, vec!["fast", "hanging", "fast", "fast"]);
    }

    /// 8 slots, 4 per key, 1 per slow key, 4 for new and slow keys together.
    const CAPS: LaneCaps = LaneCaps {
        total: 8,
        per_key: [4, 4, 1],
        new_and_slow: 4,
    };

    #[test]
    fn however_many_keys_are_slow_or_new_the_fast_ones_keep_the_rest() {
        let mut queue = FairQueue::default();
        for key in 0..100 {
            queue.set_lane(key, Lane::Slow);
        }
        // Queued first, so turn order alone would give them every slot.
        for key in 0..150 {
            for _ in 0..10 {
                queue.push(key, ());
            }
        }
        for _ in 0..10 {
            queue.push(1000, ());
        }
        queue.set_lane(1000, Lane::Fast);
        let started = start_keys(&mut queue, &CAPS);
        assert_eq!(started.len(), 8);
        assert_eq!(started.iter().filter(|&&k| k == 1000).count(), 4);
        assert_eq!(started.iter().filter(|&&k| k < 100).count(), 2);
        assert_eq!(
            started.iter().filter(|&&k| (100..150).contains(&k)).count(),
            2
        );

        // A fast item's slot goes to the fast key again: new and slow keys are at budget.
        queue.finished(1000);
        assert_eq!(queue.start_next(&CAPS), Some((1000, ())));
        // A slow item's slot goes to the next new or slow key.
        let slow = *started.iter().find(|&&k| k < 100).unwrap();
        queue.finished(slow);
        assert_ne!(queue.start_next(&CAPS), Some((1000, ())));
    }

    #[test]
    fn a_new_key_alone_gets_its_full_cap_and_leaves_the_budget_once_found_fast() {
        let mut queue = FairQueue::default();
        for _ in 0..10 {
            queue.push(1, ());
            queue.push(2, ());
        }
        // Two new keys share the new and slow budget.
        assert_eq!(start_keys(&mut queue, &CAPS), vec![1, 2, 1, 2]);
        // Key 1's first attempt finished fast: its other three running leave the budget.
        queue.finished(1);
        queue.set_lane(1, Lane::Fast);
        assert_eq!(start_keys(&mut queue, &CAPS), vec![1, 2, 1, 2, 1]);
        assert_eq!(queue.running_len(), 8);
        // Key 2 hangs: slow, it may start no more (one per slow key, four running).
        queue.set_lane(2, Lane::Slow);
        queue.finished(1);
        queue.finished(1);
        assert_eq!(start_keys(&mut queue, &CAPS), vec![1, 1]);
    }

    #[test]
    fn lanes_take_turns() {
        let mut queue = FairQueue::default();
        queue.set_lane(1, Lane::Fast);
        queue.set_lane(3, Lane::Slow);
        for key in [1, 2, 3] {
            for _ in 0..3 {
                queue.push(key, ());
            }
        }
        let caps = LaneCaps::uniform(100, 100);
        assert_eq!(
            start_keys(&mut queue, &caps),
            vec![1, 2, 3, 1, 2, 3, 1, 2, 3]
        );
    }

    #[test]
    fn set_lanes_moves_waiting_and_running_items() {
        let mut queue = FairQueue::default();
        for key in 1..=3 {
            queue.push(key, ());
            queue.push(key, ());
        }
        assert_eq!(start_keys(&mut queue, &CAPS), vec![1, 2, 3, 1]);
        queue.set_lanes(HashMap::from([(1, Lane::Fast), (2, Lane::Slow)]));
        assert_eq!(queue.lane(1), Lane::Fast);
        assert_eq!(queue.lane(2), Lane::Slow);
        assert_eq!(queue.lane(3), Lane::New);
        // New and slow hold 2 of 4; key 2 is at its slow cap, key 3 may start one more.
        assert_eq!(start_keys(&mut queue, &CAPS), vec![3]);
        queue.set_lanes(HashMap::new());
        assert_eq!(queue.lane(1), Lane::New);
        // All five running count against the budget now: key 2's waiting item may not start.
        assert!(start_keys(&mut queue, &CAPS).is_empty());
        queue.finished(3);
        assert!(start_keys(&mut queue, &CAPS).is_empty());
        queue.finished(1);
        assert_eq!(start_keys(&mut queue, &CAPS), vec![2]);
    }

    #[test]
    fn more_of_a_key_start_only_for_a_fast_key_within_its_caps() {
        let caps = LaneCaps::uniform(5, 3);
        let mut queue = FairQueue::default();
        for item in 0..4 {
            queue.push(1, item);
        }
        queue.push(2, 10);
        // New: nothing known of its pace, so one at a time.
        assert_eq!(queue.start_next(&caps), Some((1, 0)));
        assert_eq!(queue.start_more_of(1, &caps), None);
        queue.set_lane(1, Lane::Fast);
        assert_eq!(queue.start_more_of(1, &caps), Some(1));
        assert_eq!(queue.start_more_of(1, &caps), Some(2));
        // At its cap of 3.
        assert_eq!(queue.start_more_of(1, &caps), None);
        queue.finished(1);
        assert_eq!(queue.start_more_of(1, &caps), Some(3));
        // None left: the key is out of its turn, and the other key still starts.
        assert_eq!(queue.start_more_of(1, &caps), None);
        assert_eq!(queue.start_next(&caps), Some((2, 10)));
        assert_eq!(queue.start_next(&caps), None);
        assert_eq!((queue.waiting_len(), queue.running_len()), (0, 4));
        // The total applies too.
        let mut queue = FairQueue::default();
        queue.set_lane(1, Lane::Fast);
        for item in 0..4 {
            queue.push(1, item);
        }
        let caps = LaneCaps::uniform(2, 4);
        assert_eq!(queue.start_next(&caps), Some((1, 0)));
        assert_eq!(queue.start_more_of(1, &caps), Some(1));
        assert_eq!(queue.start_more_of(1, &caps), None);
    }

    #[test]
    fn outstanding_counts_waiting_and_running() {
        let mut queue = FairQueue::default();
        queue.push(7, ());
        queue.push(7, ());
        queue.push(8, ());
        queue.start_next(&LaneCaps::uniform(10, 1));
        let mut outstanding = queue.outstanding();
        outstanding.sort();
        assert_eq!(outstanding, vec![(7, 2), (8, 1)]);
        queue.finished(7);
        queue.clear();
        assert!(queue.outstanding().is_empty());
        assert_eq!(queue.start_next(&LaneCaps::uniform(10, 10)), None);
    }
}
