//! Attempts made in the calling session: webhook_retry (via webhook_deliver_now) and
//! webhook_ping. They use the same signing, network policy and recording as the worker.

use std::time::SystemTime;

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use webhook_delivery::http::{Client, Outcome, Request};
use webhook_delivery::{validate, wire};

use super::refuse;
use crate::attempt;
use crate::pinned::PinnedSearchPath;
use crate::settings;
use crate::store::{self, Statements};

const PING_BODY: &str = r#"{"test":true}"#;

fn statements() -> Statements {
    let installation = Spi::connect(store::installation)
        .ok()
        .flatten()
        .unwrap_or_else(|| error!("webhook_ext is not installed in this database"));
    Statements::new(installation)
}

/// One manual attempt of a delivery: claim it (55006 if in flight), send, record.
#[pg_extern(volatile)]
fn webhook_deliver_now(delivery_id: i64) {
    let _path = PinnedSearchPath::new();
    let statements = statements();
    let exists = Spi::get_one_with_args::<String>(
        &format!(
            "SELECT status FROM {}.webhook_delivery WHERE id = $1",
            pgrx::spi::quote_identifier(&statements.installation.schema)
        ),
        &[delivery_id.into()],
    )
    .unwrap_or(None);
    if exists.is_none() {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
            format!("delivery {delivery_id} does not exist")
        );
    }

    let lease_ms = settings::lease().as_millis() as i64;
    let claimed = Spi::connect_mut(|client| statements.claim_one(client, delivery_id, lease_ms))
        .unwrap_or_else(|e| error!("webhook_retry: {e}"));
    let Some(claimed) = claimed else {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
            format!("delivery {delivery_id} is being delivered right now; try again when its attempt has finished")
        );
    };

    let started_at = SystemTime::now();
    let outcome = match attempt::request_for(&claimed, started_at) {
        Ok(request) => Client::new(settings::limits(), settings::network_policy()).send(&request),
        Err(reason) => attempt::unsendable(reason),
    };
    let (recorded, disable) = attempt::record_for(
        &claimed,
        &outcome,
        started_at,
        true,
        &settings::retry_schedule(),
    );
    let disable: Vec<(i64, String)> = disable
        .map(|reason| (claimed.webhook_id, reason))
        .into_iter()
        .collect();
    let health = attempt::health_deltas(std::slice::from_ref(&recorded));
    Spi::connect_mut(|client| {
        statements.record(client, &[recorded])?;
        statements.disable(client, &disable)?;
        statements
            .update_health(client, &health, settings::disable_after_failures())
            .map(|_| ())
    })
    .unwrap_or_else(|e| error!("webhook_retry: {e}"));
}

/// Send a signed `{"test":true}` (event `webhook.ping`) and report what the endpoint did.
pub fn probe(
    client: &Client,
    webhook_id: i64,
    url: &str,
    secret: &str,
    previous_secrets: &[String],
    signature_header: &str,
    custom_headers: &[(String, String)],
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
    };
    let request = Request {
        url: url.to_string(),
        headers: wire::headers(
            &message,
            attempt::unix_seconds(started_at),
            &attempt::user_agent(),
        ),
        body: PING_BODY.to_string(),
    };
    (started_at, client.send(&request))
}

fn random_uuid_bytes() -> [u8; 16] {
    // SAFETY: gen_random_uuid takes no argument and always returns a uuid.
    let uuid = unsafe { pgrx::direct_function_call::<pgrx::Uuid>(pg_sys::gen_random_uuid, &[]) };
    uuid.map(|u| *u.as_bytes()).unwrap_or_default()
}

/// A signed test request to a webhook now; nothing is recorded.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile)]
fn webhook_ping(
    id: i64,
) -> TableIterator<
    'static,
    (
        name!(webhook_id, i64),
        name!(started_at, TimestampWithTimeZone),
        name!(duration_ms, i32),
        name!(response_status, Option<i32>),
        name!(response_body, Option<String>),
        name!(error, Option<String>),
        name!(succeeded, bool),
    ),
> {
    let _path = PinnedSearchPath::new();
    let statements = statements();
    let row = Spi::connect(|client| {
        let rows = client.select(
            &format!(
                "SELECT url, secret, CASE WHEN previous_secret_expires_at > now() THEN previous_secret END, \
                        signature_header, headers::text \
                   FROM {}.webhook WHERE id = $1",
                pgrx::spi::quote_identifier(&statements.installation.schema)
            ),
            None,
            &[id.into()],
        )?;
        let mut found = None;
        for row in rows {
            found = Some((
                row.get::<String>(1)?.unwrap_or_default(),
                row.get::<String>(2)?.unwrap_or_default(),
                row.get::<String>(3)?,
                row.get::<String>(4)?.unwrap_or_default(),
                row.get::<String>(5)?.unwrap_or_else(|| "{}".into()),
            ));
        }
        Ok::<_, pgrx::spi::Error>(found)
    })
    .unwrap_or_else(|e| error!("webhook_ping: {e}"));
    let Some((url, secret, previous, signature_header, headers)) = row else {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
            format!("webhook {id} does not exist")
        );
    };
    let custom_headers =
        validate::headers_json(&headers, &signature_header).unwrap_or_else(|e| refuse(e));
    let previous: Vec<String> = previous.into_iter().collect();
    let client = Client::new(settings::limits(), settings::network_policy());
    let (started_at, outcome) = probe(
        &client,
        id,
        &url,
        &secret,
        &previous,
        &signature_header,
        &custom_headers,
    );
    let started_epoch = started_at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    TableIterator::once((
        id,
        pgrx::datum::to_timestamp(started_epoch),
        outcome.duration.as_millis().min(i32::MAX as u128) as i32,
        outcome.status.map(i32::from),
        outcome.body.clone(),
        outcome.error.clone(),
        outcome.is_success(),
    ))
}
