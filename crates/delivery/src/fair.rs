//! Which claimed delivery goes to the HTTP pool next: round-robin across endpoints, with a
//! cap on how many of one endpoint's attempts run at once — so one slow or dead receiver can
//! never hold every thread, however much of the queue is its own.

use std::collections::{HashMap, VecDeque};

/// Items waiting per key (a webhook id), and how many of each key are running.
#[derive(Debug)]
pub struct FairQueue<T> {
    waiting: HashMap<i64, VecDeque<T>>,
    /// Keys with waiting items, in turn order.
    turn: VecDeque<i64>,
    running: HashMap<i64, usize>,
    waiting_len: usize,
    running_len: usize,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue {
            waiting: HashMap::new(),
            turn: VecDeque::new(),
            running: HashMap::new(),
            waiting_len: 0,
            running_len: 0,
        }
    }
}

impl<T> FairQueue<T> {
    pub fn push(&mut self, key: i64, item: T) {
        let queue = self.waiting.entry(key).or_default();
        if queue.is_empty() {
            self.turn.push_back(key);
        }
        queue.push_back(item);
        self.waiting_len += 1;
    }

    /// The next item allowed to start, counted as running: fewer than `total_cap` run in all
    /// and fewer than `per_key_cap` of its key. None when nothing may start now.
    pub fn start_next(&mut self, total_cap: usize, per_key_cap: usize) -> Option<(i64, T)> {
        self.start_next_capped(total_cap, |_| per_key_cap)
    }

    /// Like [`FairQueue::start_next`], with a cap of its own for each key.
    pub fn start_next_capped(
        &mut self,
        total_cap: usize,
        per_key_cap: impl Fn(i64) -> usize,
    ) -> Option<(i64, T)> {
        if self.running_len >= total_cap {
            return None;
        }
        for _ in 0..self.turn.len() {
            let key = self.turn.pop_front()?;
            let running = self.running.get(&key).copied().unwrap_or(0);
            if running >= per_key_cap(key) {
                self.turn.push_back(key);
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
                self.turn.push_back(key);
            }
            self.waiting_len -= 1;
            *self.running.entry(key).or_insert(0) += 1;
            self.running_len += 1;
            return Some((key, item));
        }
        None
    }

    /// A running item of `key` finished.
    pub fn finished(&mut self, key: i64) {
        if let Some(running) = self.running.get_mut(&key) {
            *running -= 1;
            self.running_len -= 1;
            if *running == 0 {
                self.running.remove(&key);
            }
        }
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

    fn start_all(
        queue: &mut FairQueue<&'static str>,
        total: usize,
        per_key: usize,
    ) -> Vec<&'static str> {
        std::iter::from_fn(|| queue.start_next(total, per_key).map(|(_, item)| item)).collect()
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
        assert_eq!(
            queue.start_next(4, 2),
            None,
            "slow is at its cap, fast has nothing waiting"
        );
        queue.push(2, "fast again");
        assert_eq!(queue.start_next(4, 2), Some((2, "fast again")));
        assert_eq!(queue.start_next(4, 2), None, "every slot is taken");
        queue.finished(1);
        assert_eq!(queue.start_next(4, 2), Some((1, "slow")));
    }

    #[test]
    fn a_key_with_a_smaller_cap_leaves_its_share_to_others() {
        let mut queue = FairQueue::default();
        for _ in 0..10 {
            queue.push(1, "hanging");
            queue.push(2, "fast");
        }
        let caps = |key: i64| if key == 1 { 1 } else { 3 };
        let started: Vec<_> =
            std::iter::from_fn(|| queue.start_next_capped(10, caps).map(|(_, item)| item))
                .collect();
        assert_eq!(started, vec!["hanging", "fast", "fast", "fast"]);
    }

    #[test]
    fn outstanding_counts_waiting_and_running() {
        let mut queue = FairQueue::default();
        queue.push(7, ());
        queue.push(7, ());
        queue.push(8, ());
        queue.start_next(10, 1);
        let mut outstanding = queue.outstanding();
        outstanding.sort();
        assert_eq!(outstanding, vec![(7, 2), (8, 1)]);
        queue.finished(7);
        queue.clear();
        assert!(queue.outstanding().is_empty());
        assert_eq!(queue.start_next(10, 10), None);
    }
}
