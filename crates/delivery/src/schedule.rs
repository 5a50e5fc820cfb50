//! The retry schedule and what to do after each attempt.

use std::time::{Duration, SystemTime};

use crate::http::{Outcome, OutcomeKind};
use crate::InvalidField;

/// Immediately, then after 1 min, 5 min, 15 min and 1 h; then the delivery has failed.
pub const DEFAULT_SCHEDULE: &str = "0s,1min,5min,15min,1h";

const MAX_ENTRIES: usize = 50;
const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// A receiver cannot park a delivery for longer than this with `Retry-After`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// One duration such as `7 days`, `12h` or `30min` (the `webhook.retention` setting).
pub fn parse_duration(s: &str) -> Result<Duration, InvalidField> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        InvalidField::new(
            "webhook.retention",
            format!("{s:?} is not a duration such as 7 days, 12h or 30min ({e})"),
        )
    })
}

/// `0s,1min,5min` → the delay before each attempt. Entry 0 is the delay of the first attempt;
/// the number of entries is the number of attempts.
pub fn parse_schedule(s: &str) -> Result<Vec<Duration>, InvalidField> {
    let fail = |message: String| Err(InvalidField::new("retry_schedule", message));
    if s.trim().is_empty() {
        return fail("must have at least one entry, e.g. \"0s,1min,5min\"".into());
    }
    let entries: Vec<&str> = s.split(',').map(str::trim).collect();
    if entries.len() > MAX_ENTRIES {
        return fail(format!("must have at most {MAX_ENTRIES} entries"));
    }
    let mut schedule = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let position = i + 1;
        if entry.is_empty() {
            return fail(format!("entry {position} is empty"));
        }
        let delay = match humantime::parse_duration(entry) {
            Ok(delay) => delay,
            Err(e) => {
                return fail(format!(
                "entry {position} ({entry:?}) is not a duration such as 30s, 5min, 1h or 2d ({e})"
            ))
            }
        };
        if delay > MAX_DELAY {
            return fail(format!(
                "entry {position} ({entry:?}) is longer than 7 days"
            ));
        }
        schedule.push(delay);
    }
    Ok(schedule)
}

/// A `Retry-After` value (delta-seconds or HTTP-date) as a delay from `now`, capped at 24 h.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits to fit a u64 is still "a very long time".
        Duration::from_secs(value.parse().unwrap_or(u64::MAX))
    } else {
        let date = httpdate::parse_http_date(value).ok()?;
        date.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// What becomes of a delivery after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Succeeded,
    Retry { delay: Duration },
    Failed,
    FailedAndDisable { reason: String },
}

/// `attempts_made` counts the attempt just finished (1 after the first).
pub fn decide(outcome: &Outcome, attempts_made: u32, schedule: &[Duration]) -> Verdict {
    decide_with(outcome, attempts_made, schedule, &[])
}

/// [`decide`] with a webhook's `no_retry_statuses`: an answer with one of them fails the
/// delivery at once (410 Gone still disables the webhook).
pub fn decide_with(
    outcome: &Outcome,
    attempts_made: u32,
    schedule: &[Duration],
    no_retry_statuses: &[i32],
) -> Verdict {
    if outcome.is_success() {
        return Verdict::Succeeded;
    }
    if outcome.kind == OutcomeKind::HttpStatus && outcome.status == Some(410) {
        return Verdict::FailedAndDisable {
            reason: "endpoint answered 410 Gone".into(),
        };
    }
    if outcome.kind == OutcomeKind::HttpStatus
        && outcome
            .status
            .is_some_and(|status| no_retry_statuses.contains(&i32::from(status)))
    {
        return Verdict::Failed;
    }
    // The same request would be refused again: retrying cannot help.
    if matches!(
        outcome.kind,
        OutcomeKind::PolicyRefused | OutcomeKind::InvalidRequest
    ) {
        return Verdict::Failed;
    }
    let Some(&delay) = usize::try_from(attempts_made)
        .ok()
        .and_then(|next| schedule.get(next))
    else {
        return Verdict::Failed;
    };
    let asked = match outcome.status {
        Some(429 | 503) => outcome.retry_after.unwrap_or_default(),
        _ => Duration::ZERO,
    };
    Verdict::Retry {
        delay: delay.max(asked),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parse_duration_reads_retention_values() {
        assert_eq!(
            parse_duration("7 days").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(
            parse_duration("12h").unwrap(),
            Duration::from_secs(12 * 3_600)
        );
        assert_eq!(
            parse_duration(" 30min ").unwrap(),
            Duration::from_secs(1_800)
        );
        let err = parse_duration("a week").unwrap_err();
        assert_eq!(err.field, "webhook.retention");
    }

    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn default_schedule() {
        assert_eq!(
            parse_schedule(DEFAULT_SCHEDULE).unwrap(),
            vec![Duration::ZERO, MIN, 5 * MIN, 15 * MIN, 60 * MIN]
        );
    }

    #[test]
    fn schedule_forms() {
        assert_eq!(
            parse_schedule(" 500ms , 1 min,2d,1h 30min ").unwrap(),
            vec![
                Duration::from_millis(500),
                MIN,
                Duration::from_secs(2 * 86400),
                90 * MIN
            ]
        );
        assert_eq!(parse_schedule("0s").unwrap(), vec![Duration::ZERO]);
        assert_eq!(parse_schedule("7d").unwrap(), vec![MAX_DELAY]);
        assert_eq!(parse_schedule(&vec!["1s"; 50].join(",")).unwrap().len(), 50);
    }

    #[test]
    fn schedule_refusals() {
        let cases = [
            ("", "at least one entry"),
            ("  ", "at least one entry"),
            ("0s,,1min", "entry 2 is empty"),
            ("0s,", "entry 2 is empty"),
            ("0s,soon", "entry 2 (\"soon\") is not a duration"),
            ("5", "entry 1 (\"5\") is not a duration"),
            ("-1s", "is not a duration"),
            ("0s,8d", "entry 2 (\"8d\") is longer than 7 days"),
            ("7d 1s", "longer than 7 days"),
        ];
        for (input, expected) in cases {
            let err = parse_schedule(input).unwrap_err();
            assert_eq!(err.field, "retry_schedule");
            assert!(err.message.contains(expected), "{input:?}: {err}");
        }
        let err = parse_schedule(&vec!["1s"; 51].join(",")).unwrap_err();
        assert!(err.message.contains("at most 50"));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = httpdate::parse_http_date("Mon, 01 Jan 2024 10:00:00 GMT").unwrap();
        assert_eq!(parse_retry_after("120", now), Some(2 * MIN));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Mon, 01 Jan 2024 10:05:00 GMT", now),
            Some(5 * MIN)
        );
        assert_eq!(
            parse_retry_after("Mon, 01 Jan 2024 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
        for junk in ["", "soon", "-5", "1.5", "12 s"] {
            assert_eq!(parse_retry_after(junk, now), None, "{junk:?}");
        }
    }

    #[test]
    fn no_retry_statuses_fail_at_once_and_others_still_retry() {
        let schedule = [Duration::ZERO, MIN, 5 * MIN];
        let unauthorized = outcome(OutcomeKind::HttpStatus, Some(401), None);
        let unprocessable = outcome(OutcomeKind::HttpStatus, Some(422), None);
        let gone = outcome(OutcomeKind::HttpStatus, Some(410), None);
        let timeout = outcome(OutcomeKind::Timeout, None, None);
        // By default (no rules) a 401 or 422 is retried: a brief 401 window loses nothing.
        assert_eq!(
            decide(&unauthorized, 1, &schedule),
            Verdict::Retry { delay: MIN }
        );
        let rules = [422, 404];
        assert_eq!(
            decide_with(&unprocessable, 1, &schedule, &rules),
            Verdict::Failed
        );
        assert_eq!(
            decide_with(&unauthorized, 1, &schedule, &rules),
            Verdict::Retry { delay: MIN }
        );
        assert_eq!(
            decide_with(&timeout, 1, &schedule, &rules),
            Verdict::Retry { delay: MIN }
        );
        // 410 still disables, listed or not.
        assert!(matches!(
            decide_with(&gone, 1, &schedule, &[410]),
            Verdict::FailedAndDisable { .. }
        ));
    }

    fn outcome(kind: OutcomeKind, status: Option<u16>, retry_after: Option<Duration>) -> Outcome {
        Outcome {
            kind,
            status,
            body: None,
            error: None,
            duration: Duration::from_millis(5),
            retry_after,
        }
    }

    fn schedule() -> Vec<Duration> {
        parse_schedule(DEFAULT_SCHEDULE).unwrap()
    }

    #[test]
    fn success_is_final() {
        let ok = outcome(OutcomeKind::Success, Some(204), None);
        assert_eq!(decide(&ok, 1, &schedule()), Verdict::Succeeded);
        assert_eq!(decide(&ok, 5, &schedule()), Verdict::Succeeded);
    }

    #[test]
    fn gone_disables() {
        let gone = outcome(OutcomeKind::HttpStatus, Some(410), None);
        assert_eq!(
            decide(&gone, 1, &schedule()),
            Verdict::FailedAndDisable {
                reason: "endpoint answered 410 Gone".into()
            }
        );
    }

    #[test]
    fn refusals_are_not_retried() {
        for kind in [OutcomeKind::PolicyRefused, OutcomeKind::InvalidRequest] {
            assert_eq!(
                decide(&outcome(kind, None, None), 1, &schedule()),
                Verdict::Failed
            );
        }
    }

    #[test]
    fn failures_follow_the_schedule() {
        let s = schedule();
        for kind in [
            OutcomeKind::HttpStatus,
            OutcomeKind::Redirect,
            OutcomeKind::Timeout,
            OutcomeKind::ConnectionRefused,
            OutcomeKind::Dns,
            OutcomeKind::Tls,
            OutcomeKind::Transport,
        ] {
            let failed = outcome(kind, None, None);
            assert_eq!(decide(&failed, 1, &s), Verdict::Retry { delay: MIN });
            assert_eq!(decide(&failed, 2, &s), Verdict::Retry { delay: 5 * MIN });
            assert_eq!(decide(&failed, 4, &s), Verdict::Retry { delay: 60 * MIN });
            assert_eq!(decide(&failed, 5, &s), Verdict::Failed);
            assert_eq!(decide(&failed, 9, &s), Verdict::Failed);
        }
        let server_error = outcome(OutcomeKind::HttpStatus, Some(500), None);
        assert_eq!(decide(&server_error, 1, &[Duration::ZERO]), Verdict::Failed);
    }

    #[test]
    fn retry_after_lengthens_but_never_shortens_the_wait() {
        let s = schedule();
        for status in [429, 503] {
            let long = outcome(OutcomeKind::HttpStatus, Some(status), Some(10 * MIN));
            assert_eq!(decide(&long, 1, &s), Verdict::Retry { delay: 10 * MIN });
            let short = outcome(
                OutcomeKind::HttpStatus,
                Some(status),
                Some(Duration::from_secs(2)),
            );
            assert_eq!(decide(&short, 1, &s), Verdict::Retry { delay: MIN });
            assert_eq!(decide(&long, 5, &s), Verdict::Failed);
        }
        let other = outcome(OutcomeKind::HttpStatus, Some(500), Some(10 * MIN));
        assert_eq!(decide(&other, 1, &s), Verdict::Retry { delay: MIN });
    }
}
