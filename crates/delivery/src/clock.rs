//! Wall-clock times as Unix seconds, the one place that converts to and from `UNIX_EPOCH`.
//! A time before 1970 (a clock set badly) counts as the epoch itself: Postgres and the
//! receivers get 0 rather than a negative or wrapped number.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Whole seconds since the Unix epoch, truncated (as `floor(extract(epoch FROM ...))`).
pub fn unix_seconds(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64)
}

/// Seconds since the Unix epoch with their fraction, as `to_timestamp(double precision)`
/// takes them.
pub fn unix_seconds_f64(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// The time `seconds` after the Unix epoch.
pub fn from_unix_seconds(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN_1_2024: u64 = 1_704_067_200;

    #[test]
    fn whole_seconds_are_truncated() {
        let at = from_unix_seconds(JAN_1_2024) + Duration::from_millis(999);
        assert_eq!(unix_seconds(at), JAN_1_2024 as i64);
        assert_eq!(unix_seconds_f64(at), JAN_1_2024 as f64 + 0.999);
    }

    #[test]
    fn a_time_before_the_epoch_is_the_epoch() {
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(unix_seconds(before), 0);
        assert_eq!(unix_seconds_f64(before), 0.0);
    }

    #[test]
    fn from_unix_seconds_is_the_inverse() {
        assert_eq!(from_unix_seconds(0), UNIX_EPOCH);
        assert_eq!(
            unix_seconds(from_unix_seconds(JAN_1_2024)),
            JAN_1_2024 as i64
        );
    }
}
