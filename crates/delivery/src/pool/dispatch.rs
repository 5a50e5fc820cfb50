//! Which job starts next: the fair queue, the caps, and each key's pace that puts it in the
//! fast, slow or new lane.

use std::collections::HashMap;
use std::time::Duration;

use super::Job;
use crate::fair::{FairQueue, Lane, LaneCaps};

/// How many jobs may run at once: in all, per key, per slow key, and for slow and new keys
/// together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub total: usize,
    pub per_key: usize,
    /// A key whose attempts take at least `slow_after` on average (a receiver that hangs,
    /// or answers at the timeout) runs at most `per_slow_key` at once, so that a few such
    /// keys can never hold every thread.
    pub slow_after: Duration,
    pub per_slow_key: usize,
    /// Slow keys, and new keys (none of their attempts has finished yet, so they may hang),
    /// run at most this many jobs at once all together: however many of them there are, the
    /// rest of the threads stay free for the keys known to answer fast.
    pub slow_and_new: usize,
}

impl Caps {
    /// The caps of a pool of `concurrency` threads whose attempts time out after `timeout`.
    pub fn for_concurrency(concurrency: usize, timeout: Duration) -> Caps {
        let total = concurrency.max(1);
        Caps {
            total,
            // One key may use half the threads, so a slow one leaves room for the rest.
            per_key: total.div_ceil(2),
            // Hanging, or answering near the limit.
            slow_after: timeout / 2,
            // An eighth each: a few slow keys can never take the whole slow-and-new budget.
            per_slow_key: (total / 8).max(1),
            // The other half (at least `per_key`) is kept for the keys known to be fast: a fast
            // key keeps the share it has alone whatever hangs. A new key alone still gets its
            // full share, and leaves the budget when its first attempt finishes fast.
            slow_and_new: (total / 2).max(1),
        }
    }

    fn checked(caps: Caps) -> Caps {
        Caps {
            total: caps.total.max(1),
            per_key: caps.per_key.max(1),
            slow_after: caps.slow_after,
            per_slow_key: caps.per_slow_key.max(1),
            slow_and_new: caps.slow_and_new.max(1),
        }
    }

    fn lane_caps(&self) -> LaneCaps {
        let mut caps = LaneCaps::uniform(self.total, self.per_key);
        caps.per_key[Lane::Slow as usize] = self.per_slow_key;
        caps.new_and_slow = self.slow_and_new;
        caps
    }

    /// The lane of a key whose attempts average `average_ms`.
    fn lane(&self, average_ms: f64) -> Lane {
        if average_ms >= self.slow_after.as_secs_f64() * 1000.0 {
            Lane::Slow
        } else {
            Lane::Fast
        }
    }
}

/// A key's recent attempts, as the pool has seen them.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Moving average of its attempts' durations.
    pub average: Duration,
    /// It runs under the slow cap.
    pub slow: bool,
}

/// How fast a key's average attempt duration follows its latest attempts.
const PACE_SMOOTHING: f64 = 0.2;

/// The queue the threads take their jobs from, and its caps.
pub(super) struct Dispatch {
    queue: FairQueue<Job>,
    caps: Caps,
    /// `caps` as the queue takes them.
    lane_caps: LaneCaps,
    /// Average attempt duration per key (milliseconds), moved by every finished attempt. A
    /// key without one is new (in `Lane::New`); the others are in the lane their average
    /// puts them in.
    pace: HashMap<i64, f64>,
    closed: bool,
}

impl Dispatch {
    pub(super) fn new(caps: Caps) -> Dispatch {
        let caps = Caps::checked(caps);
        Dispatch {
            queue: FairQueue::default(),
            caps,
            lane_caps: caps.lane_caps(),
            pace: HashMap::new(),
            closed: false,
        }
    }

    pub(super) fn push(&mut self, job: Job) {
        self.queue.push(job.key, job);
    }

    pub(super) fn start_next(&mut self) -> Option<Job> {
        self.queue.start_next(&self.lane_caps).map(|(_, job)| job)
    }

    /// Another job of `key` if it is known to be fast and below its caps (see
    /// `FairQueue::start_more_of`).
    pub(super) fn start_more_of(&mut self, key: i64) -> Option<Job> {
        self.queue.start_more_of(key, &self.lane_caps)
    }

    /// A job of `key` finished after `duration` (None: it was not started). Returns whether
    /// the key changed lanes (which may let more than one job start).
    pub(super) fn finished(&mut self, key: i64, duration: Option<Duration>) -> bool {
        self.queue.finished(key);
        let Some(duration) = duration else {
            return false;
        };
        let ms = duration.as_secs_f64() * 1000.0;
        let average = *self
            .pace
            .entry(key)
            .and_modify(|average| *average += (ms - *average) * PACE_SMOOTHING)
            .or_insert(ms);
        self.queue.set_lane(key, self.caps.lane(average))
    }

    pub(super) fn set_caps(&mut self, caps: Caps) {
        self.caps = Caps::checked(caps);
        self.lane_caps = self.caps.lane_caps();
        // `slow_after` may have moved: every known key's lane again.
        let caps = self.caps;
        let lanes = self.pace.iter().map(|(&key, &ms)| (key, caps.lane(ms)));
        self.queue.set_lanes(lanes.collect());
    }

    /// The jobs of `key` not started yet, out of the queue.
    pub(super) fn withdraw(&mut self, key: i64) -> Vec<Job> {
        self.queue.withdraw(key)
    }

    pub(super) fn forget_keys(&mut self) {
        self.pace.clear();
        self.queue.set_lanes(HashMap::new());
    }

    pub(super) fn pace(&self, key: i64) -> Option<Pace> {
        self.pace.get(&key).map(|&ms| Pace {
            average: Duration::from_secs_f64(ms / 1000.0),
            slow: self.caps.lane(ms) == Lane::Slow,
        })
    }

    #[cfg(test)]
    pub(super) fn cap(&self, key: i64) -> usize {
        self.lane_caps.per_key[self.queue.lane(key) as usize]
    }

    pub(super) fn waiting(&self) -> usize {
        self.queue.waiting_len()
    }

    /// Drops the queued jobs; threads that look afterwards exit.
    pub(super) fn close(&mut self) {
        self.closed = true;
        self.queue.clear();
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed
    }
}
