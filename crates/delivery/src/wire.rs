//! The request headers of one attempt (docs/REFERENCE.md, "Wire format"). Signatures are
//! computed per attempt because they cover the attempt's timestamp, which receivers use to
//! reject replays.

use crate::format::{self, JsonNumbers, SignatureFormat, SignatureInput};
use crate::reparsed;
use crate::signing::{hex_digest, hex_signature, standard_signature};

/// Everything about one delivery that goes into its request.
pub struct Message<'a> {
    pub webhook_id: i64,
    pub delivery_id: i64,
    pub event_id: &'a str,
    pub event: &'a str,
    pub body: &'a str,
    pub secret: &'a str,
    /// Secrets being rotated out that still sign during their grace period.
    pub previous_secrets: &'a [String],
    pub signature_header: &'a str,
    pub custom_headers: &'a [(String, String)],
    pub wire_format: WireFormat,
}

/// How a webhook's signature header is written and what its body promises (SPEC §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WireFormat {
    pub signature_format: SignatureFormat,
    pub signature_input: SignatureInput,
    pub json_numbers: JsonNumbers,
}

/// A [`Message`] that owns its parts, so that it can travel to an HTTP thread and be signed
/// there when the attempt starts (the signatures cover the attempt's timestamp).
#[derive(Clone)]
pub struct OwnedMessage {
    pub webhook_id: i64,
    pub delivery_id: i64,
    pub event_id: String,
    pub event: String,
    pub body: String,
    pub secret: String,
    pub previous_secrets: Vec<String>,
    pub signature_header: String,
    pub custom_headers: Vec<(String, String)>,
    pub wire_format: WireFormat,
    pub user_agent: String,
}

/// Everything but the secrets, which must never reach a log line.
impl std::fmt::Debug for OwnedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedMessage")
            .field("webhook_id", &self.webhook_id)
            .field("delivery_id", &self.delivery_id)
            .field("event_id", &self.event_id)
            .field("event", &self.event)
            .field("body", &self.body)
            .field("secret", &"<redacted>")
            .field("previous_secrets", &"<redacted>")
            .field("signature_header", &self.signature_header)
            .field("custom_headers", &self.custom_headers)
            .field("wire_format", &self.wire_format)
            .finish()
    }
}

impl OwnedMessage {
    pub fn as_message(&self) -> Message<'_> {
        Message {
            webhook_id: self.webhook_id,
            delivery_id: self.delivery_id,
            event_id: &self.event_id,
            event: &self.event,
            body: &self.body,
            secret: &self.secret,
            previous_secrets: &self.previous_secrets,
            signature_header: &self.signature_header,
            custom_headers: &self.custom_headers,
            wire_format: self.wire_format,
        }
    }

    /// The headers of an attempt starting at `timestamp_unix`, or why it must not be sent.
    pub fn headers(&self, timestamp_unix: i64) -> Result<Vec<(String, String)>, String> {
        headers(&self.as_message(), timestamp_unix, &self.user_agent)
    }
}

/// `webhook_ext/<version>`.
pub fn user_agent(version: &str) -> String {
    format!("webhook_ext/{version}")
}

/// The value of the webhook's signature header (None: it sends none), or why the delivery
/// must not be sent. Only the current secret: the header has room for one value, which
/// receivers compare whole. The default format is the one path that does no more than
/// before these formats existed: one HMAC over the body.
fn signature_value(msg: &Message) -> Result<Option<String>, String> {
    let format = msg.wire_format;
    if format.json_numbers == JsonNumbers::JavaScript {
        format::check_javascript_body(msg.body)?;
    }
    let python_input;
    let input = match format.signature_input {
        SignatureInput::Body => msg.body,
        SignatureInput::PythonSortedJson => {
            python_input = reparsed::python_sorted(msg.body).map_err(|why| {
                format!("not sent: signature_input is 'python_sorted_json' but {why}, so no signature its receiver computes could match")
            })?;
            &python_input
        }
    };
    Ok(match format.signature_format {
        SignatureFormat::Sha256Hex => Some(hex_signature(msg.secret, input.as_bytes())),
        SignatureFormat::Hex => Some(hex_digest(msg.secret, input.as_bytes())),
        SignatureFormat::Secret => Some(msg.secret.to_owned()),
        SignatureFormat::None => None,
    })
}

/// The headers of one attempt, the webhook's own headers last (validation keeps them from
/// repeating any of ours); an error when its format cannot be honoured for this body.
pub fn headers(
    msg: &Message,
    timestamp_unix: i64,
    user_agent: &str,
) -> Result<Vec<(String, String)>, String> {
    let timestamp = timestamp_unix.to_string();
    let body = msg.body.as_bytes();
    let secrets: Vec<&str> = std::iter::once(msg.secret)
        .chain(msg.previous_secrets.iter().map(String::as_str))
        .collect();
    let signature = signature_value(msg)?;
    // The Standard Webhooks signature always covers the exact body, with every live secret.
    let standard = standard_signature(&secrets, msg.event_id, timestamp_unix, body);
    let ours = [
        ("Content-Type", Some("application/json".to_owned())),
        ("User-Agent", Some(user_agent.to_owned())),
        ("X-Webhook-ID", Some(msg.webhook_id.to_string())),
        ("X-Delivery-ID", Some(msg.delivery_id.to_string())),
        ("X-Event-ID", Some(msg.event_id.to_owned())),
        ("X-Event-Type", Some(msg.event.to_owned())),
        ("X-Webhook-Timestamp", Some(timestamp.clone())),
        (msg.signature_header, signature),
        ("webhook-id", Some(msg.event_id.to_owned())),
        ("webhook-timestamp", Some(timestamp)),
        ("webhook-signature", Some(standard)),
    ];
    Ok(ours
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_owned(), value?)))
        .chain(msg.custom_headers.iter().cloned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str =
        r#"{"id":"e1","event":"cliente.criado","timestamp":"2024-01-01T10:00:00Z","data":{}}"#;

    fn message<'a>(previous: &'a [String], custom: &'a [(String, String)]) -> Message<'a> {
        Message {
            webhook_id: 7,
            delivery_id: 42,
            event_id: "3f2a9c4e-0000-4000-8000-000000000001",
            event: "cliente.criado",
            body: BODY,
            secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            previous_secrets: previous,
            signature_header: "X-ConnectVets-Signature",
            custom_headers: custom,
            wire_format: WireFormat::default(),
        }
    }

    fn get<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
        let found: Vec<_> = headers.iter().filter(|(n, _)| n == name).collect();
        assert_eq!(found.len(), 1, "{name} in {headers:?}");
        &found[0].1
    }

    #[test]
    fn an_owned_message_never_shows_its_secrets_in_debug_output() {
        let owned = OwnedMessage {
            webhook_id: 7,
            delivery_id: 42,
            event_id: "e1".into(),
            event: "cliente.criado".into(),
            body: BODY.into(),
            secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into(),
            previous_secrets: vec!["old-s3cr3t-value".into()],
            signature_header: "X-Webhook-Signature".into(),
            custom_headers: vec![],
            wire_format: WireFormat::default(),
            user_agent: "webhook_ext/test".into(),
        };
        let shown = format!("{owned:?}");
        assert!(shown.contains("cliente.criado"), "{shown}");
        assert!(!shown.contains("C2FVsBQIhrscChlQIMV"), "{shown}");
        assert!(!shown.contains("old-s3cr3t-value"), "{shown}");
    }

    #[test]
    fn user_agent_names_the_version() {
        assert_eq!(user_agent("0.1.0"), "webhook_ext/0.1.0");
    }

    #[test]
    fn every_header() {
        let custom = vec![("X-Tenant".to_string(), "acme".to_string())];
        let msg = message(&[], &custom);
        let h = headers(&msg, 1_704_103_200, "webhook_ext/0.1.0").unwrap();
        let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "Content-Type",
                "User-Agent",
                "X-Webhook-ID",
                "X-Delivery-ID",
                "X-Event-ID",
                "X-Event-Type",
                "X-Webhook-Timestamp",
                "X-ConnectVets-Signature",
                "webhook-id",
                "webhook-timestamp",
                "webhook-signature",
                "X-Tenant",
            ]
        );
        assert_eq!(get(&h, "Content-Type"), "application/json");
        assert_eq!(get(&h, "User-Agent"), "webhook_ext/0.1.0");
        assert_eq!(get(&h, "X-Webhook-ID"), "7");
        assert_eq!(get(&h, "X-Delivery-ID"), "42");
        assert_eq!(get(&h, "X-Event-ID"), msg.event_id);
        assert_eq!(get(&h, "X-Event-Type"), "cliente.criado");
        assert_eq!(get(&h, "X-Webhook-Timestamp"), "1704103200");
        assert_eq!(
            get(&h, "X-ConnectVets-Signature"),
            hex_signature(msg.secret, BODY.as_bytes())
        );
        assert!(get(&h, "X-ConnectVets-Signature").starts_with("sha256="));
        assert_eq!(get(&h, "webhook-id"), msg.event_id);
        assert_eq!(get(&h, "webhook-timestamp"), "1704103200");
        assert_eq!(
            get(&h, "webhook-signature"),
            standard_signature(&[msg.secret], msg.event_id, 1_704_103_200, BODY.as_bytes())
        );
        assert_eq!(get(&h, "X-Tenant"), "acme");
    }

    #[test]
    fn rotation_signs_with_every_live_secret_current_first() {
        let previous = vec!["old-one".to_string(), "whsec_AAEC".to_string()];
        let msg = message(&previous, &[]);
        let h = headers(&msg, 1_704_103_200, "ua").unwrap();
        let tokens: Vec<&str> = get(&h, "webhook-signature").split(' ').collect();
        assert_eq!(tokens.len(), 3);
        for (token, secret) in tokens.iter().zip([msg.secret, "old-one", "whsec_AAEC"]) {
            assert_eq!(
                *token,
                standard_signature(&[secret], msg.event_id, 1_704_103_200, BODY.as_bytes())
            );
        }
        // The hex header has room for one signature: the current secret's.
        assert_eq!(
            get(&h, "X-ConnectVets-Signature"),
            hex_signature(msg.secret, BODY.as_bytes())
        );
    }

    #[test]
    fn signatures_cover_the_attempt_timestamp() {
        let msg = message(&[], &[]);
        let first = headers(&msg, 1_704_103_200, "ua").unwrap();
        let second = headers(&msg, 1_704_103_260, "ua").unwrap();
        assert_ne!(
            get(&first, "webhook-signature"),
            get(&second, "webhook-signature")
        );
        assert_eq!(get(&second, "X-Webhook-Timestamp"), "1704103260");
    }

    fn with_format<'a>(
        previous: &'a [String],
        body: &'a str,
        format: (&str, &str, &str),
    ) -> Message<'a> {
        Message {
            body,
            wire_format: WireFormat {
                signature_format: SignatureFormat::parse(format.0).unwrap(),
                signature_input: SignatureInput::parse(format.1).unwrap(),
                json_numbers: JsonNumbers::parse(format.2).unwrap(),
            },
            ..message(previous, &[])
        }
    }

    #[test]
    fn the_default_format_is_todays_headers() {
        let msg = message(&[], &[]);
        let default = headers(&msg, 1_704_103_200, "ua").unwrap();
        let spelled_out = headers(
            &with_format(&[], BODY, ("sha256=hex", "body", "exact")),
            1_704_103_200,
            "ua",
        )
        .unwrap();
        assert_eq!(default, spelled_out);
        assert_eq!(
            get(&default, "X-ConnectVets-Signature"),
            format!("sha256={}", hex_digest(msg.secret, BODY.as_bytes()))
        );
    }

    #[test]
    fn each_signature_format() {
        let sig = |format: (&str, &str, &str)| {
            let msg = with_format(&[], BODY, format);
            let h = headers(&msg, 1_704_103_200, "ua").unwrap();
            // Standard Webhooks is there, over the exact body, whatever the format.
            assert_eq!(
                get(&h, "webhook-signature"),
                standard_signature(&[msg.secret], msg.event_id, 1_704_103_200, BODY.as_bytes())
            );
            h.iter()
                .find(|(n, _)| n == "X-ConnectVets-Signature")
                .map(|(_, v)| v.clone())
        };
        let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        let digest = hex_digest(secret, BODY.as_bytes());
        assert_eq!(sig(("hex", "body", "exact")), Some(digest.clone()));
        assert_eq!(
            sig(("sha256=hex", "body", "exact")),
            Some(format!("sha256={digest}"))
        );
        assert_eq!(sig(("secret", "body", "exact")), Some(secret.to_string()));
        assert_eq!(sig(("none", "body", "exact")), None);
        let sorted = crate::reparsed::python_sorted(BODY).unwrap();
        assert_eq!(
            sorted,
            r#"{"data": {}, "event": "cliente.criado", "id": "e1", "timestamp": "2024-01-01T10:00:00Z"}"#
        );
        assert_eq!(
            sig(("hex", "python_sorted_json", "exact")),
            Some(hex_digest(secret, sorted.as_bytes()))
        );
    }

    #[test]
    fn rotation_keeps_one_value_in_the_signature_header_and_all_in_standard_webhooks() {
        let previous = vec!["old-one".to_string()];
        for format in ["hex", "sha256=hex", "secret", "none"] {
            let msg = with_format(&previous, BODY, (format, "body", "exact"));
            let h = headers(&msg, 1_704_103_200, "ua").unwrap();
            assert_eq!(
                get(&h, "webhook-signature").split(' ').count(),
                2,
                "{format}"
            );
            if let Some((_, value)) = h.iter().find(|(n, _)| n == "X-ConnectVets-Signature") {
                assert!(
                    !value.contains("old-one") && !value.contains(' '),
                    "{format}"
                );
            }
        }
    }

    #[test]
    fn a_body_the_receiver_could_not_verify_is_not_sent() {
        let big = r#"{"id":"e1","data":{"n":1e400}}"#;
        let err = headers(
            &with_format(&[], big, ("hex", "body", "javascript")),
            1,
            "ua",
        )
        .unwrap_err();
        assert!(err.contains("beyond JavaScript's range"), "{err}");
        let long_int = format!(r#"{{"id":"e1","data":{{"n":{}}}}}"#, "1".repeat(5000));
        let err = headers(
            &with_format(&[], &long_int, ("hex", "python_sorted_json", "exact")),
            1,
            "ua",
        )
        .unwrap_err();
        assert!(
            err.contains("python_sorted_json") && err.contains("5000 digits"),
            "{err}"
        );
        // The secret never appears in such a reason.
        assert!(!err.contains("whsec_"));
    }
}
