//! How much the worker takes for each endpoint per round, what it does with a delivery it
//! cannot send yet, and how long it sleeps: the policy, apart from the Postgres shell that
//! applies it (src/worker.rs).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::pool::{Caps, Pace};

/// Most deliveries held (taken and not recorded) at once.
pub const MAX_OUTSTANDING: usize = 2_048;
/// Most of those held for endpoints not known to answer fast (slow ones, and new ones until
/// an attempt finished), so that however many hang the rest stays for the fast ones. One
/// round may go past it by up to a round's worth.
pub const MAX_OUTSTANDING_NOT_FAST: usize = MAX_OUTSTANDING / 4;
/// Take ahead for an endpoint what it gets through in this long, within these bounds.
pub const QUEUE_HORIZON: Duration = Duration::from_millis(500);
pub const MAX_DEPTH_PER_ENDPOINT: usize = 1_024;

/// What the worker knows of one endpoint.
#[derive(Debug, Clone, Copy, Default)]
pub struct Endpoint {
    /// Taken and not recorded yet.
    pub outstanding: usize,
    /// Of those, how many came from due rows.
    pub outstanding_from_due: usize,
    /// The pool's measure of its attempts (None until one finished).
    pub pace: Option<Pace>,
}

/// What an endpoint may take this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    pub room: usize,
    /// Taken from due rows and still in flight: the due query reads past them.
    pub from_due: usize,
    /// It is known to answer fast: the walk waits for it rather than park its deliveries.
    pub fast: bool,
}

/// Each known endpoint's room this round, and the room of an endpoint seen for the first time.
#[derive(Debug, Clone)]
pub struct Rooms {
    pub known: HashMap<i64, Room>,
    pub default_room: usize,
}

fn not_fast(pace: Option<Pace>) -> bool {
    pace.is_none_or(|pace| pace.slow)
}

/// How many deliveries of an endpoint to hold at once: enough that its threads never wait
/// for the next round, few enough that the last one starts within QUEUE_HORIZON. An endpoint
/// without a pace yet may hang, so it gets two rounds of a slow one's cap (once an attempt is
/// back fast, the next round takes its full depth).
pub fn depth(caps: &Caps, pace: Option<Pace>) -> usize {
    let cap = match pace {
        Some(pace) if !pace.slow => caps.per_key,
        _ => caps.per_slow_key,
    };
    let rounds = match pace {
        Some(pace) => QUEUE_HORIZON.as_secs_f64() / pace.average.as_secs_f64().max(1e-5),
        None => 1.0,
    };
    ((cap as f64 * (1.0 + rounds)) as usize).clamp(2 * cap, MAX_DEPTH_PER_ENDPOINT)
}

/// The rooms of a round. Endpoints not known to be fast get no more while they hold their
/// share all together, but one that holds none may still send a probe's worth: that is how
/// a new endpoint shows it is fast.
pub fn rooms(caps: &Caps, endpoints: &HashMap<i64, Endpoint>) -> Rooms {
    let not_fast_outstanding: usize = endpoints
        .values()
        .filter(|e| not_fast(e.pace))
        .map(|e| e.outstanding)
        .sum();
    let not_fast_full = not_fast_outstanding >= MAX_OUTSTANDING_NOT_FAST;
    let probe = caps.per_slow_key;
    let default_room = if not_fast_full {
        probe
    } else {
        depth(caps, None)
    };
    let known = endpoints
        .iter()
        .map(|(&id, e)| {
            let room = match (not_fast_full && not_fast(e.pace), e.outstanding) {
                (true, 0) => probe,
                (true, _) => 0,
                (false, _) => depth(caps, e.pace).saturating_sub(e.outstanding),
            };
            let room = Room {
                room,
                from_due: e.outstanding_from_due,
                fast: !not_fast(e.pace),
            };
            (id, room)
        })
        .collect();
    Rooms {
        known,
        default_room,
    }
}

/// What to do with a deliverable delivery the round found. A delivery found in the walk's
/// gaps is never left for later: the gap may close, so it is parked if not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Send it now.
    Take,
    /// Make it due: its endpoint takes it when it has room, and the walk goes on.
    Park,
    /// Its endpoint is full but fast, or the round is full: the walk stops before it and the
    /// next round goes on from there (parking would only write the backlog twice).
    Stop,
}

/// `room`: what its endpoint has left (None: an endpoint not seen yet, which gets the
/// default room); `left`: what the round may still take; `walking`: found by the walk
/// (rather than in its gaps, which are parked whatever the endpoint); `may_wait`: the walk
/// has not been stopped long (a fast endpoint that starts to hang would otherwise hold every
/// other endpoint's deliveries until its pace says it is slow).
pub fn place(
    room: Option<Room>,
    default_room: usize,
    left: usize,
    walking: bool,
    may_wait: bool,
) -> Placement {
    let (room, fast) = room.map_or((default_room, false), |r| (r.room, r.fast));
    if left > 0 && room > 0 {
        Placement::Take
    } else if walking && ((fast && may_wait) || left == 0) {
        Placement::Stop
    } else {
        Placement::Park
    }
}

/// Longest the walk waits for a full fast endpoint before it parks that endpoint's deliveries
/// and goes on with the others'.
pub const LONGEST_WALK_WAIT: Duration = Duration::from_millis(200);

/// Most time the worker sleeps between rounds when nothing wakes it.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(5);
/// Due deliveries left untaken (endpoints at their limit) are looked at again this often even
/// if no attempt finishes.
pub const OVERDUE_RECHECK: Duration = Duration::from_secs(1);
/// While the walk has gaps, look at them again at least this often (a gap that commits wakes
/// the worker itself; one that never will is closed by a later look).
pub const GAP_RECHECK: Duration = Duration::from_millis(100);

/// The shortest time between two rounds (record, take): under a stream of small commits a
/// round per commit would cost the worker a transaction per event, and take the CPU the
/// application's own transactions need. A commit after a quiet spell is taken at once.
pub const ROUND_SPACING: Duration = Duration::from_millis(1);
/// A round that handled at least this many deliveries (recorded and taken) is under load.
pub const BUSY_ROUND: usize = 16;
/// Under load, rounds are spaced so that each handles about this many deliveries: a round
/// costs the same few statements however many it handles, and small rounds under a steady
/// stream of commits cost the worker more CPU than the deliveries themselves
/// (bench/ANALYSIS.md §13).
pub const BUSY_ROUND_TARGET: usize = 128;
/// Bounds of the spacing under load: the longest is the most a delivery waits for its round
/// while the application writes fast; at a trickle (200 events/s) nothing waits longer than
/// ROUND_SPACING.
pub const BUSY_ROUND_SPACING: Duration = Duration::from_millis(4);
pub const LONGEST_BUSY_ROUND_SPACING: Duration = Duration::from_millis(20);

/// The time from the start of this round to the next: `handled` deliveries were recorded or
/// taken in a round that started `interval` after the one before.
pub fn round_spacing(handled: usize, interval: Duration) -> Duration {
    if handled < BUSY_ROUND {
        return ROUND_SPACING;
    }
    // At the rate this round saw, the time BUSY_ROUND_TARGET deliveries take to gather.
    interval
        .mul_f64(BUSY_ROUND_TARGET as f64 / handled as f64)
        .clamp(BUSY_ROUND_SPACING, LONGEST_BUSY_ROUND_SPACING)
}

/// How long to sleep after a round. `more`: it stopped for lack of room, not of work;
/// `room_left`: the worker may still take more; `next_due`: seconds until the earliest due
/// row (negative: overdue), if any; `gaps`: the walk has gaps.
pub fn sleep_after_round(
    more: bool,
    room_left: bool,
    next_due: Option<f64>,
    gaps: bool,
) -> Duration {
    if more {
        // Take again at once if there is room, else a finished attempt wakes the worker.
        return if room_left {
            Duration::ZERO
        } else {
            MAINTENANCE_INTERVAL
        };
    }
    let idle = if gaps {
        GAP_RECHECK
    } else {
        MAINTENANCE_INTERVAL
    };
    match next_due {
        // Overdue rows it could not take belong to endpoints at their limit (or held by a
        // manual retry): a finished attempt wakes it.
        Some(secs) if secs <= 0.0 => OVERDUE_RECHECK.min(idle),
        Some(secs) => Duration::from_secs_f64(secs).min(idle),
        None => idle,
    }
}

/// A webhook's `max_per_second`: a token bucket refilled at that rate, holding at most a
/// tenth of a second's worth (at least one). A delivery is taken only with a token; the rest
/// wait in the queue (webhook_delivery_due) and nothing is dropped.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// Full: a webhook that sent nothing lately may send its burst at once.
    pub fn new(rate: f64, now: Instant) -> TokenBucket {
        let burst = Self::burst_for(rate);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Most requests sent back to back: a tenth of a second's worth, at least one.
    pub fn burst_for(rate: f64) -> f64 {
        (rate / 10.0).ceil().max(1.0)
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    fn tokens_at(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * self.rate).min(self.burst)
    }

    /// How many may be taken now.
    pub fn available(&self, now: Instant) -> usize {
        self.tokens_at(now).max(0.0).floor() as usize
    }

    /// `n` were taken now.
    pub fn take(&mut self, n: usize, now: Instant) {
        self.tokens = self.tokens_at(now) - n as f64;
        self.at = now;
    }

    /// How long until the next token, None while the bucket is full (nothing to wait for).
    pub fn until_next(&self, now: Instant) -> Option<Duration> {
        let tokens = self.tokens_at(now);
        if tokens >= self.burst {
            return None;
        }
        let next = if tokens < 1.0 {
            1.0
        } else {
            tokens.floor() + 1.0
        };
        Some(Duration::from_secs_f64((next - tokens) / self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_under_load_are_spaced_to_gather_a_batch_and_a_trickle_is_taken_at_once() {
        let ms = Duration::from_millis;
        // A trickle: one event a round, taken a millisecond after the last round.
        assert_eq!(round_spacing(1, ms(5)), ROUND_SPACING);
        assert_eq!(round_spacing(BUSY_ROUND - 1, ms(4)), ROUND_SPACING);
        // 5,000 events/s: 20 in 4 ms. The next round waits to gather ~128, at most 20 ms.
        assert_eq!(round_spacing(20, ms(4)), LONGEST_BUSY_ROUND_SPACING);
        // 16,000 events/s: 64 in 4 ms, 8 ms for 128.
        assert_eq!(round_spacing(64, ms(4)), ms(8));
        // A drain: hundreds a round come every 4 ms.
        assert_eq!(round_spacing(900, ms(4)), BUSY_ROUND_SPACING);
        // The spacing follows the rate: 100 in 20 ms is 5,000/s again.
        assert_eq!(round_spacing(100, ms(20)), LONGEST_BUSY_ROUND_SPACING);
    }

    #[test]
    fn a_token_bucket_sends_no_faster_than_its_rate_and_drops_nothing() {
        // Rounds every millisecond take what the bucket allows out of a burst of 50.
        let start = Instant::now();
        let mut bucket = TokenBucket::new(5.0, start);
        let mut waiting = 50usize;
        let mut sent_at = Vec::new();
        let mut now = start;
        while waiting > 0 {
            let n = bucket.available(now).min(waiting);
            bucket.take(n, now);
            waiting -= n;
            sent_at.extend(std::iter::repeat_n(now, n));
            // The worker sleeps until the next token rather than polling.
            now += bucket
                .until_next(now)
                .unwrap_or(Duration::from_millis(1))
                .max(Duration::from_micros(1));
        }
        assert_eq!(sent_at.len(), 50);
        let span = sent_at[49] - sent_at[0];
        let burst = TokenBucket::burst_for(5.0) as u32;
        assert!(
            span >= Duration::from_secs_f64(f64::from(50 - burst) / 5.0) - Duration::from_millis(1),
            "{span:?}"
        );
        // ...and no slower either: each token is used as soon as it comes.
        assert!(span <= Duration::from_secs_f64(50.0 / 5.0), "{span:?}");
        // Any window of one second holds at most rate + burst sends.
        for (i, &t) in sent_at.iter().enumerate() {
            let within = sent_at[i..]
                .iter()
                .take_while(|&&u| u - t < Duration::from_secs(1))
                .count();
            assert!(within <= 5 + burst as usize, "{within} in a second");
        }
    }

    #[test]
    fn a_full_bucket_has_nothing_to_wait_for_and_a_fast_rate_bursts_a_tenth_of_a_second() {
        let now = Instant::now();
        let mut bucket = TokenBucket::new(1000.0, now);
        assert_eq!(bucket.available(now), 100);
        assert_eq!(bucket.until_next(now), None);
        bucket.take(100, now);
        assert_eq!(bucket.available(now), 0);
        let wait = bucket.until_next(now).unwrap();
        assert!(wait <= Duration::from_millis(1), "{wait:?}");
        assert_eq!(bucket.available(now + Duration::from_millis(10)), 10);
    }

    fn caps() -> Caps {
        Caps::for_concurrency(32, Duration::from_secs(5))
    }

    fn fast(ms: u64) -> Option<Pace> {
        Some(Pace {
            average: Duration::from_millis(ms),
            slow: false,
        })
    }

    fn slow() -> Option<Pace> {
        Some(Pace {
            average: Duration::from_secs(5),
            slow: true,
        })
    }

    #[test]
    fn a_fast_endpoint_is_given_what_it_gets_through_in_the_horizon_within_bounds() {
        let caps = caps();
        // 16 threads at 1 ms each: 8,000 in 500 ms, capped.
        assert_eq!(depth(&caps, fast(1)), MAX_DEPTH_PER_ENDPOINT);
        // 16 threads at 100 ms: 16 × (1 + 5) = 96.
        assert_eq!(depth(&caps, fast(100)), 96);
        // Slow or unknown: two rounds of the slow cap.
        assert_eq!(depth(&caps, slow()), 2 * caps.per_slow_key);
        assert_eq!(depth(&caps, None), 2 * caps.per_slow_key);
    }

    #[test]
    fn endpoints_that_are_not_fast_lose_their_room_when_they_hold_their_share_together() {
        let caps = caps();
        let mut endpoints = HashMap::new();
        endpoints.insert(
            1,
            Endpoint {
                outstanding: MAX_OUTSTANDING_NOT_FAST,
                outstanding_from_due: 3,
                pace: slow(),
            },
        );
        endpoints.insert(2, Endpoint::default());
        endpoints.insert(
            3,
            Endpoint {
                outstanding: 10,
                pace: fast(1),
                ..Endpoint::default()
            },
        );
        let rooms = rooms(&caps, &endpoints);
        assert_eq!(rooms.known[&1].room, 0);
        assert_eq!(rooms.known[&1].from_due, 3);
        // Holding nothing, it may still probe.
        assert_eq!(rooms.known[&2].room, caps.per_slow_key);
        assert_eq!(rooms.default_room, caps.per_slow_key);
        // A fast one keeps its depth.
        assert_eq!(rooms.known[&3].room, MAX_DEPTH_PER_ENDPOINT - 10);
        assert!(rooms.known[&3].fast && !rooms.known[&1].fast);
    }

    #[test]
    fn a_full_endpoint_stops_the_walk_if_fast_and_is_parked_otherwise() {
        let full_fast = Some(Room {
            room: 0,
            from_due: 0,
            fast: true,
        });
        let full_slow = Some(Room {
            room: 0,
            from_due: 0,
            fast: false,
        });
        assert_eq!(place(full_fast, 4, 10, true, true), Placement::Stop);
        assert_eq!(place(full_fast, 4, 10, false, true), Placement::Park);
        assert_eq!(place(full_slow, 4, 10, true, true), Placement::Park);
        assert_eq!(place(None, 4, 10, true, true), Placement::Take);
        assert_eq!(place(None, 0, 10, true, true), Placement::Park);
        // Waited too long for it: the others' deliveries go on.
        assert_eq!(place(full_fast, 4, 10, true, false), Placement::Park);
        // The round itself is full: the walk goes on next round; a gap's delivery is parked.
        assert_eq!(place(None, 4, 0, true, true), Placement::Stop);
        assert_eq!(place(None, 4, 0, false, true), Placement::Park);
    }

    #[test]
    fn the_worker_sleeps_until_the_next_due_row_or_a_gap_look_and_not_at_all_with_more_work() {
        assert_eq!(sleep_after_round(true, true, None, false), Duration::ZERO);
        assert_eq!(
            sleep_after_round(true, false, None, false),
            MAINTENANCE_INTERVAL
        );
        assert_eq!(
            sleep_after_round(false, true, None, false),
            MAINTENANCE_INTERVAL
        );
        assert_eq!(sleep_after_round(false, true, None, true), GAP_RECHECK);
        assert_eq!(
            sleep_after_round(false, true, Some(-1.0), false),
            OVERDUE_RECHECK
        );
        assert_eq!(
            sleep_after_round(false, true, Some(0.5), false),
            Duration::from_millis(500)
        );
        assert_eq!(sleep_after_round(false, true, Some(0.5), true), GAP_RECHECK);
    }
}
