//! Attempts made in the calling session: webhook_retry (via webhook_deliver_now) and
//! webhook_ping. They use the same signing, network policy and recording as the worker.

use std::time::SystemTime;

use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use webhook_delivery::clock;
use webhook_delivery::http::Client;
use webhook_delivery::validate;

use super::refuse;
use crate::attempt;
use crate::in_flight;
use crate::pinned::PinnedSearchPath;
use crate::settings;
use crate::store::{self, Statements};

/// Why a manual attempt (`webhook_retry`) or a ping is refused, each with its SQLSTATE.
#[derive(Debug)]
enum AttemptError {
    /// The extension's tables are not there (dropped in this very transaction, say).
    NotInstalled,
    /// The installation is older than this library: its tables wait for ALTER EXTENSION.
    OtherVersion(String),
    NoSuchDelivery(i64),
    NoSuchWebhook(i64),
    /// The worker (or another session) is attempting it right now.
    InFlight(i64),
    /// One of the extension's own statements failed: a bug, not bad input.
    Statement {
        function: &'static str,
        error: pgrx::spi::Error,
    },
}

impl From<AttemptError> for ErrorReport {
    fn from(error: AttemptError) -> ErrorReport {
        use PgSqlErrorCode::*;
        let (code, message) = match &error {
            AttemptError::NotInstalled => (
                ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "webhook_ext is not installed in this database".to_string(),
            ),
            AttemptError::OtherVersion(version) => (
                ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "webhook_ext {version} is installed but this server runs {}",
                    env!("CARGO_PKG_VERSION")
                ),
            ),
            AttemptError::NoSuchDelivery(id) => {
                (ERRCODE_NO_DATA_FOUND, format!("delivery {id} does not exist"))
            }
            AttemptError::NoSuchWebhook(id) => {
                (ERRCODE_NO_DATA_FOUND, format!("webhook {id} does not exist"))
            }
            AttemptError::InFlight(id) => (
                ERRCODE_OBJECT_IN_USE,
                format!("delivery {id} is being delivered right now; try again when its attempt has finished"),
            ),
            AttemptError::Statement { function, error } => {
                (ERRCODE_INTERNAL_ERROR, format!("{function}: {error}"))
            }
        };
        let report = ErrorReport::new(code, message, "webhook_ext");
        match error {
            AttemptError::NotInstalled => report.set_hint("CREATE EXTENSION webhook_ext"),
            AttemptError::OtherVersion(_) => report.set_hint("ALTER EXTENSION webhook_ext UPDATE"),
            _ => report,
        }
    }
}

fn raise(error: AttemptError) -> ! {
    ErrorReport::from(error).report(PgLogLevel::ERROR);
    unreachable!("an ERROR does not return")
}

fn statements() -> Statements {
    let installation = Spi::connect(store::installation)
        .ok()
        .flatten()
        .unwrap_or_else(|| raise(AttemptError::NotInstalled));
    Statements::new(installation)
}

/// One manual attempt of a delivery: hold it (55006 if in flight), lock it, send, record.
#[pg_extern(volatile)]
fn webhook_deliver_now(delivery_id: i64) {
    let _path = PinnedSearchPath::new();
    let statements = statements();
    if statements.installation.version != env!("CARGO_PKG_VERSION") {
        raise(AttemptError::OtherVersion(
            statements.installation.version.clone(),
        ));
    }
    // Held in shared memory until this transaction ends: the worker leaves it alone, and
    // another session's webhook_retry is refused.
    if !in_flight::hold_for_session(delivery_id) {
        raise(AttemptError::InFlight(delivery_id));
    }
    fn statement_failed<T>(error: pgrx::spi::Error) -> T {
        raise(AttemptError::Statement {
            function: "webhook_retry",
            error,
        })
    }
    let (found, previous_status) =
        Spi::connect_mut(|client| statements.claim_one(client, delivery_id))
            .unwrap_or_else(statement_failed)
            .unwrap_or_else(|| raise(AttemptError::NoSuchDelivery(delivery_id)));
    let webhook_id = found.webhook_id;
    let webhook = Spi::connect(|client| statements.webhooks(client, &[webhook_id]))
        .unwrap_or_else(statement_failed)
        .remove(&webhook_id)
        .unwrap_or_else(|| raise(AttemptError::NoSuchWebhook(webhook_id)));
    let claimed = found.claim(&webhook, &previous_status);

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
    // Finished: a delivery of an ordered webhook held back behind it (same key) is due now.
    let key_ended: Vec<(i64, String)> = match &claimed.event_key {
        Some(key) if recorded.status != "pending" => vec![(claimed.webhook_id, key.clone())],
        _ => vec![],
    };
    if recorded.status == "pending" || !key_ended.is_empty() {
        // Still to be retried: it has a due row now, which the worker takes when it is due.
        crate::shared::wake::due_changed_on_commit();
    }
    Spi::connect_mut(|client| {
        statements.record(client, &[recorded])?;
        statements.release_keys(client, &key_ended)?;
        statements.disable(client, &disable)?;
        statements
            .update_health(client, &health, settings::disable_after_failures())
            .map(|_| ())
    })
    .unwrap_or_else(|error| {
        raise(AttemptError::Statement {
            function: "webhook_retry",
            error,
        })
    });
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
    // The same configuration the worker reads (sql/worker/webhooks.sql).
    let webhook = Spi::connect(|client| statements.webhooks(client, &[id]))
        .unwrap_or_else(|error| {
            raise(AttemptError::Statement {
                function: "webhook_ping",
                error,
            })
        })
        .remove(&id)
        .unwrap_or_else(|| raise(AttemptError::NoSuchWebhook(id)));
    let store::WebhookConfig {
        url,
        secret,
        previous_secret: previous,
        signature_header,
        headers_json: headers,
        wire_format,
        ..
    } = webhook;
    let wire_format = wire_format.unwrap_or_else(|reason| {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            reason
        );
    });
    let custom_headers =
        validate::headers_json(&headers, &signature_header).unwrap_or_else(|e| refuse(e));
    let previous: Vec<String> = previous.into_iter().collect();
    let client = Client::new(settings::limits(), settings::network_policy());
    let (started_at, outcome) = attempt::probe(
        &client,
        id,
        &url,
        &secret,
        &previous,
        &signature_header,
        &custom_headers,
        wire_format,
    );
    TableIterator::once((
        id,
        pgrx::datum::to_timestamp(clock::unix_seconds_f64(started_at)),
        outcome.duration.as_millis().min(i32::MAX as u128) as i32,
        outcome.status.map(i32::from),
        outcome.body.clone(),
        outcome.error.clone(),
        outcome.is_success(),
    ))
}
