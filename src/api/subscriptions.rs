//! Validation shared by webhook_create/webhook_update and the row trigger on `webhook`,
//! secret generation, and the `verify => true` probe.

use pgrx::prelude::*;
use webhook_delivery::format::{self, JsonNumbers, SignatureFormat, SignatureInput};
use webhook_delivery::http::Client;
use webhook_delivery::wire::WireFormat;
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

/// The wire format columns (SPEC §11): raises 22023 naming the first invalid field. A
/// `secret` format needs a URL the secret does not cross in clear (https, or an address in
/// `webhook.allowed_networks`).
#[pg_extern(parallel_safe)]
fn webhook_check_wire_format(
    url: Option<&str>,
    secret: Option<&str>,
    envelope: Option<&str>,
    signature_format: Option<&str>,
    signature_input: Option<&str>,
    json_numbers: Option<&str>,
) {
    format::check(
        url.unwrap_or_else(|| refuse_null("url")),
        secret.unwrap_or_else(|| refuse_null("secret")),
        envelope,
        signature_format.unwrap_or_else(|| refuse_null("signature_format")),
        signature_input.unwrap_or_else(|| refuse_null("signature_input")),
        json_numbers.unwrap_or_else(|| refuse_null("json_numbers")),
        &settings::network_policy(),
    )
    .unwrap_or_else(|e| refuse(e));
}

/// `whsec_` + base64 of 24 random bytes.
#[pg_extern(volatile, parallel_safe)]
fn webhook_generate_secret() -> String {
    signing::generate_secret()
}

/// POST a `{"test": true}` signed in the webhook's format to a URL before it is registered;
/// 22023 unless it answers 2xx.
#[pg_extern(volatile)]
fn webhook_verify_endpoint(
    url: &str,
    secret: &str,
    headers: &str,
    signature_header: &str,
    signature_format: &str,
    signature_input: &str,
) {
    let custom_headers =
        validate::headers_json(headers, signature_header).unwrap_or_else(|e| refuse(e));
    let wire_format = WireFormat {
        signature_format: SignatureFormat::parse(signature_format).unwrap_or_else(|e| refuse(e)),
        signature_input: SignatureInput::parse(signature_input).unwrap_or_else(|e| refuse(e)),
        // The test body is the same in both number forms.
        json_numbers: JsonNumbers::Exact,
    };
    let client = Client::new(settings::limits(), settings::network_policy());
    let (_, outcome) = probe(
        &client,
        0,
        url,
        secret,
        &[],
        signature_header,
        &custom_headers,
        wire_format,
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
