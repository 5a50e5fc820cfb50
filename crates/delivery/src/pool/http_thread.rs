//! One HTTP thread: takes its next jobs from the dispatch (several of one endpoint known to
//! answer fast), makes the attempts, hands each result to the main thread and wakes it.

use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use super::{lock, Dispatch, Job, JobResult, Outgoing, Shared};
use crate::clock;
use crate::http::{Client, Outcome, OutcomeKind, Request, Sent};

/// How many attempts to one endpoint known to answer fast a thread keeps in flight at once:
/// it sends them all, then reads each answer as it arrives, so one wake-up of the thread
/// serves several attempts (bench/ANALYSIS.md §14).
pub(super) const IN_FLIGHT_PER_THREAD: usize = 8;

/// How long a thread keeps the places of its answered attempts while it waits for the rest:
/// longer than a fast endpoint's answers take, so that a batch that comes back together
/// leaves them to this thread's next jobs (waking no other thread).
const GIVE_BACK_PLACES_AFTER: Duration = Duration::from_millis(10);

/// What each HTTP thread runs, until the pool is dropped.
pub(super) fn work(shared: &Shared) {
    let mut finished: Vec<(i64, Option<Duration>)> = Vec::new();
    loop {
        let jobs = {
            let mut dispatch = lock(&shared.dispatch);
            // The finished attempts' pace counts before this thread takes its next jobs: a
            // key that just turned slow gets no more than its slow cap from here on.
            give_back(shared, &mut dispatch, &mut finished);
            loop {
                if dispatch.is_closed() {
                    return;
                }
                // The job this thread's finished attempts made room for, if any, is taken
                // here by this same thread: no other thread needs waking for it.
                if let Some(job) = dispatch.start_next() {
                    let key = job.key;
                    let mut jobs = vec![job];
                    while jobs.len() < IN_FLIGHT_PER_THREAD {
                        match dispatch.start_more_of(key) {
                            Some(job) => jobs.push(job),
                            None => break,
                        }
                    }
                    // Threads wake one another while jobs are left: a submission wakes one
                    // thread, not one per job, most of which would find the jobs taken.
                    if dispatch.waiting() > 0 {
                        shared.job_ready.notify_one();
                    }
                    break jobs;
                }
                dispatch = shared
                    .job_ready
                    .wait(dispatch)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        let client = Arc::clone(&shared.client.read().unwrap_or_else(PoisonError::into_inner));
        let mut waiting = Vec::with_capacity(jobs.len());
        for job in jobs {
            match start(&client, job) {
                Started::Done(result) => report(shared, result, &mut finished),
                Started::Sent(result, sent) => waiting.push((result, sent)),
            }
        }
        while !waiting.is_empty() {
            // Answered attempts give their places in the caps back when this thread takes
            // its next jobs, unless the rest keep it waiting longer than
            // GIVE_BACK_PLACES_AFTER: then, so that one held answer does not hold the
            // others' places too (other threads use them).
            let give_back_after = (!finished.is_empty()).then_some(GIVE_BACK_PLACES_AFTER);
            let ready = answered(&waiting, give_back_after);
            for &at in &ready {
                let (mut result, sent) = waiting.swap_remove(at);
                result.outcome = Some(guarded(|| client.finish(sent)));
                report(shared, result, &mut finished);
            }
            if ready.is_empty() && !finished.is_empty() {
                let mut dispatch = lock(&shared.dispatch);
                if !give_back(shared, &mut dispatch, &mut finished) && dispatch.waiting() > 0 {
                    // The thread that takes a job wakes the next while jobs are left.
                    shared.job_ready.notify_one();
                }
            }
        }
    }
}

/// Gives the finished attempts' places in the caps back and counts their pace. A key that
/// changed lanes wakes every thread: a new key found fast takes its running jobs out of the
/// slow-and-new budget, room for more than one job. Returns whether one did.
fn give_back(
    shared: &Shared,
    dispatch: &mut Dispatch,
    finished: &mut Vec<(i64, Option<Duration>)>,
) -> bool {
    let mut changed_lanes = false;
    for (key, duration) in finished.drain(..) {
        changed_lanes |= dispatch.finished(key, duration);
    }
    if changed_lanes {
        shared.job_ready.notify_all();
    }
    changed_lanes
}

/// Hands a result to the main thread and wakes it.
fn report(shared: &Shared, result: JobResult, finished: &mut Vec<(i64, Option<Duration>)>) {
    finished.push((result.key, result.outcome.as_ref().map(|o| o.duration)));
    lock(&shared.results).push(result);
    if !shared.wake_pending.swap(true, Ordering::SeqCst) {
        // WouldBlock means the socket is full of unread wake-ups already: nothing to add.
        let _ = (&shared.wake).write(&[1]);
    }
}

/// Waits until some of the attempts can be read on (an answer came in or the peer closed),
/// the first of them times out, or `at_most` passes; returns their positions, highest first
/// (none when `at_most` passed first).
fn answered(waiting: &[(JobResult, Sent)], at_most: Option<Duration>) -> Vec<usize> {
    let mut sockets: Vec<libc::pollfd> = waiting
        .iter()
        .map(|(_, sent)| libc::pollfd {
            fd: sent.socket(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let now = Instant::now();
    let first_deadline = waiting
        .iter()
        .map(|(_, sent)| sent.deadline())
        .min()
        .unwrap_or(now);
    let first_deadline =
        at_most.map_or(first_deadline, |at_most| first_deadline.min(now + at_most));
    // Rounded up, so that the wait does not end just before the deadline.
    let timeout_ms = first_deadline
        .saturating_duration_since(now)
        .as_micros()
        .div_ceil(1000)
        .min(i32::MAX as u128) as i32;
    // SAFETY: the descriptors are sockets the waiting attempts own, alive for the call; the
    // array's length is passed with it.
    let ready = unsafe {
        libc::poll(
            sockets.as_mut_ptr(),
            sockets.len() as libc::nfds_t,
            timeout_ms,
        )
    };
    let now = Instant::now();
    (0..waiting.len())
        .rev()
        .filter(|&at| {
            // An error of poll itself (EINTR, ...) leaves every attempt to its own read,
            // which waits within its deadline.
            ready < 0 || sockets[at].revents != 0 || waiting[at].1.deadline() <= now
        })
        .collect()
}

enum Started {
    /// Nothing more to wait for: not started before its `start_by`, or it ended before a
    /// response could come.
    Done(JobResult),
    /// The request went out; its response is read by [`Client::finish`].
    Sent(JobResult, Sent),
}

fn start(client: &Client, job: Job) -> Started {
    let started_at = SystemTime::now();
    let mut result = JobResult {
        delivery_id: job.delivery_id,
        attempt: job.attempt,
        key: job.key,
        started_at,
        outcome: None,
    };
    if job
        .start_by
        .is_some_and(|deadline| Instant::now() > deadline)
    {
        return Started::Done(result);
    }
    let sent = catching(|| {
        let request = match job.request {
            Outgoing::Ready(request) => request,
            Outgoing::SignAtStart { url, message } => Request {
                headers: message
                    .headers(clock::unix_seconds(started_at))
                    // Its format cannot be honoured for this body: nothing is sent.
                    .map_err(|reason| Outcome::failure(OutcomeKind::InvalidRequest, reason))?,
                url,
                body: message.body,
            },
        };
        client.start(&request)
    });
    match sent {
        Ok(sent) => Started::Sent(result, sent),
        Err(outcome) => {
            result.outcome = Some(outcome);
            Started::Done(result)
        }
    }
}

/// Runs one attempt; a panic becomes a failed outcome instead of killing the thread and
/// losing the result.
pub(super) fn guarded(attempt: impl FnOnce() -> Outcome) -> Outcome {
    match catching(|| Ok::<_, Outcome>(attempt())) {
        Ok(outcome) | Err(outcome) => outcome,
    }
}

/// Runs part of an attempt; a panic becomes a failed outcome.
fn catching<T>(attempt: impl FnOnce() -> Result<T, Outcome>) -> Result<T, Outcome> {
    let started = Instant::now();
    panic::catch_unwind(AssertUnwindSafe(attempt)).unwrap_or_else(|payload| {
        let reason = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("panic");
        let mut outcome =
            Outcome::failure(OutcomeKind::Transport, format!("internal error: {reason}"));
        outcome.duration = started.elapsed();
        Err(outcome)
    })
}
