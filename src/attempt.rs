//! One attempt of a claimed delivery, from both ends: the signed request to send, and what
//! its outcome makes of the delivery. Shared by the worker and `webhook_retry`. Also the
//! probe (a signed `webhook.ping` sent now, recorded nowhere) of `webhook_ping` and
//! `webhook_create(verify => true)`.

use std::time::{Duration, SystemTime};

use pgrx::pg_sys;
use webhook_delivery::clock::{unix_seconds, unix_seconds_f64};
use webhook_delivery::http::{Client, Outcome, OutcomeKind, Request};
use webhook_delivery::schedule::{self, Verdict};
use webhook_delivery::validate;
use webhook_delivery::wire::{self, OwnedMessage};

use crate::store::{Claimed, Recorded};

pub fn user_agent() -> String {
    wire::user_agent(env!("CARGO_PKG_VERSION"))
}

/// What goes into a claimed delivery's requests. Headers and format were validated when the
/// webhook was written; if they no longer parse, the attempt fails with that reason instead
/// of sending.
pub fn message_for(claimed: &Claimed) -> Result<OwnedMessage, String> {
    let custom_headers = validate::headers_json(&claimed.headers_json, &claimed.signature_header)
        .map_err(|e| e.to_string())?;
    let wire_format = claimed.wire_format.clone()?;
    Ok(OwnedMessage {
        webhook_id: claimed.webhook_id,
        delivery_id: claimed.delivery_id,
        event_id: claimed.event_id.clone(),
        event: claimed.event.clone(),
        body: claimed.body.clone(),
        secret: claimed.secret.clone(),
        previous_secrets: claimed.previous_secret.iter().cloned().collect(),
        signature_header: claimed.signature_header.clone(),
        custom_headers,
        wire_format,
        user_agent: user_agent(),
    })
}

/// The signed request for a claimed delivery, for an attempt starting `now`.
pub fn request_for(claimed: &Claimed, now: SystemTime) -> Result<Request, String> {
    let message = message_for(claimed)?;
    Ok(Request {
        url: claimed.url.clone(),
        headers: message.headers(unix_seconds(now))?,
        body: message.body,
    })
}

/// An outcome for a request that could not even be built.
pub fn unsendable(reason: String) -> Outcome {
    Outcome {
        kind: OutcomeKind::InvalidRequest,
        status: None,
        body: None,
        error: Some(reason),
        duration: Duration::ZERO,
        retry_after: None,
    }
}

/// How a batch of recorded outcomes moves each webhook's failure streak.
pub fn health_deltas(records: &[Recorded]) -> Vec<webhook_delivery::health::HealthDelta> {
    webhook_delivery::health::deltas(records.iter().map(|r| (r.webhook_id, r.status)))
}

/// What the delivery becomes after this attempt, and the reason to disable its webhook
/// (410 Gone), if any.
pub fn record_for(
    claimed: &Claimed,
    outcome: &Outcome,
    started_at: SystemTime,
    manual: bool,
    default_schedule: &[Duration],
) -> (Recorded, Option<String>) {
    let own_schedule: Option<Vec<Duration>> = claimed.schedule_ms.as_ref().map(|ms| {
        ms.iter()
            .map(|&m| Duration::from_millis(m.max(0) as u64))
            .collect()
    });
    let schedule_in_force = own_schedule.as_deref().unwrap_or(default_schedule);
    let verdict = schedule::decide_with(
        outcome,
        claimed.schedule_position.max(1) as u32,
        schedule_in_force,
        &claimed.no_retry_statuses,
    );

    let mut disable = None;
    let (mut status, mut retry_delay_ms) = match verdict {
        Verdict::Succeeded => ("succeeded", None),
        Verdict::Retry { delay } => ("pending", Some(delay.as_millis() as i64)),
        Verdict::Failed => ("failed", None),
        Verdict::FailedAndDisable { reason } => {
            disable = Some(reason);
            ("failed", None)
        }
    };
    if manual && status != "succeeded" {
        // A manual attempt does not move the automatic schedule: a pending delivery stays due
        // when it was; a failed, cancelled or succeeded one records this failure as 'failed'.
        if claimed.previous_status == "pending" && disable.is_none() {
            status = "pending";
        } else {
            status = "failed";
        }
        retry_delay_ms = None;
    }

    let recorded = Recorded {
        delivery_id: claimed.delivery_id,
        webhook_id: claimed.webhook_id,
        attempt: claimed.attempt,
        manual,
        status,
        retry_delay_ms,
        started_at_epoch: unix_seconds_f64(started_at),
        duration_ms: outcome.duration.as_millis().min(i32::MAX as u128) as i32,
        response_status: outcome.status.map(i32::from),
        response_body: outcome.body.clone(),
        error: outcome.error.clone(),
        from_due: claimed.from_due,
    };
    (recorded, disable)
}

const PING_BODY: &str = r#"{"test":true}"#;

/// Send a signed `{"test":true}` (event `webhook.ping`) and report what the endpoint did.
/// It is signed in the webhook's format; its body is the same whatever the envelope.
#[allow(clippy::too_many_arguments)]
pub fn probe(
    client: &Client,
    webhook_id: i64,
    url: &str,
    secret: &str,
    previous_secrets: &[String],
    signature_header: &str,
    custom_headers: &[(String, String)],
    wire_format: wire::WireFormat,
) -> (SystemTime, Outcome) {
    let started_at = SystemTime::now();
    let event_id = pgrx::Uuid::from_bytes(random_uuid_bytes()).to_string();
    let message = wire::Message {
        webhook_id,
        delivery_id: 0,
        event_id: &event_id,
        event: "webhook.ping",
        body: PING_BODY,
        secret,
        previous_secrets,
        signature_header,
        custom_headers,
        wire_format,
    };
    let headers = match wire::headers(&message, unix_seconds(started_at), &user_agent()) {
        Ok(headers) => headers,
        Err(reason) => return (started_at, unsendable(reason)),
    };
    let request = Request {
        url: url.to_string(),
        headers,
        body: PING_BODY.to_string(),
    };
    (started_at, client.send(&request))
}

fn random_uuid_bytes() -> [u8; 16] {
    // SAFETY: gen_random_uuid takes no argument and always returns a uuid.
    let uuid = unsafe { pgrx::direct_function_call::<pgrx::Uuid>(pg_sys::gen_random_uuid, &[]) };
    uuid.map(|u| *u.as_bytes()).unwrap_or_default()
}
