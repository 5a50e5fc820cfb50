//! How `webhook-listen` judges and prints one delivery. Part of the binary (declared in
//! main.rs), not of the library.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use webhook_listen::RecordedRequest;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Valid,
    Invalid,
    Missing,
}

impl Verdict {
    pub(crate) fn from_check(header: Option<&str>, check: impl FnOnce(&str) -> bool) -> Verdict {
        match header {
            None => Verdict::Missing,
            Some(value) if check(value) => Verdict::Valid,
            Some(_) => Verdict::Invalid,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::Invalid => "INVALID",
            Verdict::Missing => "missing",
        }
    }

    fn to_json(self) -> Value {
        match self {
            Verdict::Valid => Value::Bool(true),
            Verdict::Invalid => Value::Bool(false),
            Verdict::Missing => Value::Null,
        }
    }
}

pub(crate) enum Timestamp {
    Missing,
    Unparseable,
    /// Seconds between the timestamp and now; negative when it lies in the future.
    Age(i64),
}

impl Timestamp {
    pub(crate) fn of(request: &RecordedRequest, now: SystemTime) -> Timestamp {
        let header = request
            .header("X-Webhook-Timestamp")
            .or_else(|| request.header("webhook-timestamp"));
        let Some(value) = header else {
            return Timestamp::Missing;
        };
        match value.trim().parse::<i64>() {
            Ok(ts) => Timestamp::Age(unix_seconds(now) - ts),
            Err(_) => Timestamp::Unparseable,
        }
    }

    fn fresh(&self, max_age: u64) -> Option<bool> {
        match self {
            Timestamp::Missing => None,
            Timestamp::Unparseable => Some(false),
            Timestamp::Age(age) => Some(age.unsigned_abs() <= max_age),
        }
    }

    fn describe(&self, max_age: u64) -> String {
        let Timestamp::Age(age) = self else {
            return match self {
                Timestamp::Missing => "missing".into(),
                _ => "UNPARSEABLE".into(),
            };
        };
        let when = if *age < 0 {
            format!("{} s in the future", -age)
        } else {
            format!("{age} s old")
        };
        if age.unsigned_abs() <= max_age {
            format!("fresh ({when})")
        } else {
            format!("STALE ({when}, max {max_age} s)")
        }
    }
}

/// Everything printed about one delivery.
pub(crate) struct Delivery<'a> {
    pub number: usize,
    pub request: &'a RecordedRequest,
    pub signature: Verdict,
    pub standard: Verdict,
    pub timestamp: Timestamp,
    pub status: u16,
}

impl Delivery<'_> {
    fn header(&self, name: &str) -> &str {
        self.request.header(name).unwrap_or("-")
    }

    fn body_json(&self) -> Value {
        serde_json::from_slice(&self.request.body).unwrap_or_else(|_| {
            Value::String(String::from_utf8_lossy(&self.request.body).into_owned())
        })
    }

    pub(crate) fn to_json(&self, max_age: u64) -> Value {
        json!({
            "event": self.request.header("X-Event-Type"),
            "event_id": self.request.header("X-Event-ID"),
            "delivery_id": self.request.header("X-Delivery-ID"),
            "signature_valid": self.signature.to_json(),
            "standard_signature_valid": self.standard.to_json(),
            "timestamp_fresh": self.timestamp.fresh(max_age),
            "status": self.status,
            "received_at": rfc3339(self.request.received_at),
            "method": self.request.method,
            "path": self.request.path,
            "body": self.body_json(),
        })
    }

    pub(crate) fn summary(&self, max_age: u64) -> String {
        format!(
            "#{} {} {} event_id={} delivery_id={} signature={} standard-webhooks={} timestamp={} -> {}\n",
            self.number,
            rfc3339(self.request.received_at),
            self.header("X-Event-Type"),
            self.header("X-Event-ID"),
            self.header("X-Delivery-ID"),
            self.signature.label(),
            self.standard.label(),
            self.timestamp.describe(max_age),
            self.status,
        )
    }

    pub(crate) fn block(&self, max_age: u64) -> String {
        let body = match serde_json::from_slice::<Value>(&self.request.body) {
            Ok(value) => serde_json::to_string_pretty(&value).unwrap_or_default(),
            Err(_) => String::from_utf8_lossy(&self.request.body).into_owned(),
        };
        format!(
            "--- #{} {} {} {} -> {}\n\
             event:             {}\n\
             event id:          {}\n\
             delivery id:       {}\n\
             signature:         {}\n\
             standard-webhooks: {}\n\
             timestamp:         {}\n\
             {}\n\n",
            self.number,
            rfc3339(self.request.received_at),
            self.request.method,
            self.request.path,
            self.status,
            self.header("X-Event-Type"),
            self.header("X-Event-ID"),
            self.header("X-Delivery-ID"),
            self.signature.label(),
            self.standard.label(),
            self.timestamp.describe(max_age),
            body,
        )
    }
}

fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_secs() as i64,
        Err(before) => -(before.duration().as_secs() as i64),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`, via Howard Hinnant's days-to-civil algorithm (no date crate needed).
fn rfc3339(time: SystemTime) -> String {
    let secs = unix_seconds(time);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_known_instants() {
        let at = |secs: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(1_704_103_200), "2024-01-01T10:00:00Z");
        assert_eq!(at(1_709_164_799), "2024-02-28T23:59:59Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59Z");
    }
}
