//! One HTTP thread: takes its next job from the dispatch, makes the attempt, hands the result
//! to the main thread and wakes it.

use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Instant, SystemTime};

use super::{lock, Job, JobResult, Outgoing, Shared};
use crate::clock;
use crate::http::{Outcome, OutcomeKind, Request};

/// What each HTTP thread runs, until the pool is dropped.
pub(super) fn work(shared: &Shared) {
    let mut finished = None;
    loop {
        let job = {
            let mut dispatch = lock(&shared.dispatch);
            // The finished attempt's pace counts before this thread takes its next job: a
            // key that just turned slow gets no more than its slow cap from here on.
            if let Some((key, duration)) = finished.take() {
                if dispatch.finished(key, duration) {
                    // A new key found fast takes its running jobs out of the slow-and-new
                    // budget: room for more than the one job this thread takes next.
                    shared.job_ready.notify_all();
                }
            }
            loop {
                if dispatch.is_closed() {
                    return;
                }
                // The job this thread's finished attempt made room for, if any, is taken here
                // by this same thread: no other thread needs waking for it.
                if let Some(job) = dispatch.start_next() {
                    break job;
                }
                dispatch = shared
                    .job_ready
                    .wait(dispatch)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        let key = job.key;
        let result = attempt(shared, job);
        finished = Some((key, result.outcome.as_ref().map(|o| o.duration)));
        lock(&shared.results).push(result);
        if !shared.wake_pending.swap(true, Ordering::SeqCst) {
            // WouldBlock means the socket is full of unread wake-ups already: nothing to add.
            let _ = (&shared.wake).write(&[1]);
        }
    }
}

fn attempt(shared: &Shared, job: Job) -> JobResult {
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
        return result;
    }
    let client = Arc::clone(&shared.client.read().unwrap_or_else(PoisonError::into_inner));
    result.outcome = Some(guarded(|| {
        let request = match job.request {
            Outgoing::Ready(request) => request,
            Outgoing::SignAtStart { url, message } => {
                match message.headers(clock::unix_seconds(started_at)) {
                    Ok(headers) => Request {
                        url,
                        headers,
                        body: message.body,
                    },
                    // Its format cannot be honoured for this body: nothing is sent.
                    Err(reason) => return Outcome::failure(OutcomeKind::InvalidRequest, reason),
                }
            }
        };
        client.send(&request)
    }));
    result
}

/// Runs one attempt; a panic becomes a failed outcome instead of killing the thread and
/// losing the result.
pub(super) fn guarded(attempt: impl FnOnce() -> Outcome) -> Outcome {
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
        outcome
    })
}
