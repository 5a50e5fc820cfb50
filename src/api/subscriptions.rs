//! Validation shared by webhook_create/webhook_update and the row trigger on `webhook`,
//! secret generation, and the `verify => true` probe.

use pgrx::prelude::*;
use webhook_delivery::http::Client;
use webhook_delivery::{signing, validate};

use super::{refuse, refuse_null};
use crate::attempt::probe;
use crate::settings;

/// Raises 22023 naming the first invalid field; returns nothing when all are valid.
#[pg_extern(parallel_safe)]
fn webhook_check_subscription(
    url: Option<&str>,
    secret: Option<&str>,
    events: Option<Vec<Option<String>>>,
    headers: Option<&str>,
    signature_header: Option<&str>,
) {
    validate::url(url.unwrap_or_else(|| refuse_null("url"))).unwrap_or_else(|e| refuse(e));
    validate::secret(secret.unwrap_or_else(|| refuse_null("secret"))).unwrap_or_else(|e| refuse(e));
    validate::event_patterns(&events.unwrap_or_else(|| refuse_null("events")))
        .unwrap_or_else(|e| refuse(e));
    let signature_header = signature_header.unwrap_or_else(|| refuse_null("signature_header"));
    validate::signature_header(signature_header).unwrap_or_else(|e| refuse(e));
    validate::headers_json(
        headers.unwrap_or_else(|| refuse_null("headers")),
        signature_header,
    )
    .unwrap_or_else(|e| refuse(e));
}

/// `whsec_` + base64 of 24 random bytes.
#[pg_extern(volatile, parallel_safe)]
fn webhook_generate_secret() -> String {
    signing::generate_secret()
}

/// POST a signed `{"test": true}` to a URL before it is registered; 22023 unless it answers 2xx.
#[pg_extern(volatile)]
fn webhook_verify_endpoint(url: &str, secret: &str, headers: &str) {
    let custom_headers =
        validate::headers_json(headers, "X-Webhook-Signature").unwrap_or_else(|e| refuse(e));
    let client = Client::new(settings::limits(), settings::network_policy());
    let (_, outcome) = probe(
        &client,
        0,
        url,
        secret,
        &[],
        "X-Webhook-Signature",
        &custom_headers,
    );
    if !outcome.is_success() {
        let why = outcome
            .error
            .clone()
            .unwrap_or_else(|| format!("HTTP {}", outcome.status.unwrap_or_default()));
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid url: verification failed, the endpoint did not answer 2xx to a signed test request: {why}")
        );
    }
}
