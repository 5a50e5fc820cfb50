//! A webhook's wire format (SPEC §11): the envelope's key names, how the body writes numbers,
//! and what its signature header carries. The defaults are the format every webhook had
//! before these settings existed, byte for byte, and cost nothing per delivery.

use serde_json::{Map, Value};
use url::{Host, Url};

use crate::policy::NetworkPolicy;
use crate::reparsed;
use crate::InvalidField;

/// What the webhook's signature header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureFormat {
    /// `sha256=<lowercase hex HMAC-SHA256>`.
    #[default]
    Sha256Hex,
    /// The bare lowercase hex digest.
    Hex,
    /// The secret itself, as a shared token the receiver compares.
    Secret,
    /// No signature header (the Standard Webhooks headers are still sent).
    None,
}

impl SignatureFormat {
    pub fn parse(s: &str) -> Result<Self, InvalidField> {
        match s {
            "sha256=hex" => Ok(Self::Sha256Hex),
            "hex" => Ok(Self::Hex),
            "secret" => Ok(Self::Secret),
            "none" => Ok(Self::None),
            other => Err(InvalidField::new(
                "signature_format",
                format!("{other:?} is not one of 'sha256=hex', 'hex', 'secret', 'none'"),
            )),
        }
    }

    /// It carries an HMAC (the other formats carry no digest to compute an input for).
    pub fn signs(self) -> bool {
        matches!(self, Self::Sha256Hex | Self::Hex)
    }
}

/// What the HMAC of the signature header covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureInput {
    /// The exact bytes sent.
    #[default]
    Body,
    /// `json.dumps(json.loads(body), sort_keys=True)`, what a Python receiver recomputes.
    PythonSortedJson,
}

impl SignatureInput {
    pub fn parse(s: &str) -> Result<Self, InvalidField> {
        match s {
            "body" => Ok(Self::Body),
            "python_sorted_json" => Ok(Self::PythonSortedJson),
            other => Err(InvalidField::new(
                "signature_input",
                format!("{other:?} is not one of 'body', 'python_sorted_json'"),
            )),
        }
    }
}

/// How the body writes numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JsonNumbers {
    /// As Postgres wrote them (`199.90`).
    #[default]
    Exact,
    /// As JavaScript writes them back (`199.9`), keys in JavaScript's order.
    JavaScript,
}

impl JsonNumbers {
    pub fn parse(s: &str) -> Result<Self, InvalidField> {
        match s {
            "exact" => Ok(Self::Exact),
            "javascript" => Ok(Self::JavaScript),
            other => Err(InvalidField::new(
                "json_numbers",
                format!("{other:?} is not one of 'exact', 'javascript'"),
            )),
        }
    }
}

/// The body's top-level keys, in the order they are written.
pub const ENVELOPE_KEYS: [&str; 4] = ["id", "event", "timestamp", "data"];

const MAX_ENVELOPE_NAME_BYTES: usize = 255;

/// The name each top-level key is written under (None: left out), in [`ENVELOPE_KEYS`] order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    names: [Option<String>; 4],
}

impl Default for Envelope {
    fn default() -> Self {
        Envelope {
            names: ENVELOPE_KEYS.map(|key| Some(key.to_string())),
        }
    }
}

impl Envelope {
    /// A webhook's `envelope` column: a JSON object that maps some of id, event, timestamp
    /// and data to a new name (a string) or to null (left out).
    pub fn parse(json: &str) -> Result<Envelope, InvalidField> {
        let fail = |message: String| Err(InvalidField::new("envelope", message));
        let Ok(Value::Object(renames)) = serde_json::from_str::<Value>(json) else {
            return fail(
                "must be a JSON object such as {\"event\": \"event_type\", \"id\": null}".into(),
            );
        };
        let mut envelope = Envelope::default();
        for (key, name) in &renames {
            let Some(position) = ENVELOPE_KEYS.iter().position(|k| k == key) else {
                return fail(format!(
                    "{key:?} is not a key of the body; the keys are id, event, timestamp and data"
                ));
            };
            envelope.names[position] = match name {
                Value::Null => None,
                Value::String(name) => {
                    if name.trim().is_empty() || name.trim() != name {
                        return fail(format!(
                            "the new name of {key:?} must not be blank or start or end with whitespace"
                        ));
                    }
                    if name.len() > MAX_ENVELOPE_NAME_BYTES {
                        return fail(format!(
                            "the new name of {key:?} must be at most {MAX_ENVELOPE_NAME_BYTES} bytes"
                        ));
                    }
                    if name.bytes().all(|b| b.is_ascii_digit()) {
                        // JavaScript would move such a key first, out of the envelope's order.
                        return fail(format!("the new name of {key:?} must not be a number"));
                    }
                    Some(name.clone())
                }
                _ => {
                    return fail(format!(
                    "the value for {key:?} must be its new name (a string) or null to leave it out"
                ))
                }
            };
        }
        let kept: Vec<&String> = envelope.names.iter().flatten().collect();
        for (i, name) in kept.iter().enumerate() {
            if kept[..i].contains(name) {
                return fail(format!("two keys would be written as {name:?}"));
            }
        }
        Ok(envelope)
    }

    pub fn is_default(&self) -> bool {
        *self == Envelope::default()
    }

    /// The name `key` (one of [`ENVELOPE_KEYS`]) is written under, if it is written.
    pub fn name_of(&self, key: &str) -> Option<&str> {
        let position = ENVELOPE_KEYS.iter().position(|k| *k == key)?;
        self.names[position].as_deref()
    }
}

/// A webhook's body from the event's default body (envelope.rs): its top-level keys renamed or
/// left out, and its numbers written as the webhook asks. An `Exact` number that JavaScript
/// cannot carry (beyond the double range) is left as Postgres wrote it: the delivery is then
/// refused when it is sent ([`check_javascript_body`]) rather than sent with a number changed.
pub fn reshape(
    body: &str,
    envelope: Option<&Envelope>,
    numbers: JsonNumbers,
) -> Result<String, InvalidField> {
    let parsed: Value = serde_json::from_str(body)
        .map_err(|e| InvalidField::new("body", format!("not valid JSON ({e})")))?;
    let parsed = match (envelope, parsed) {
        (Some(envelope), Value::Object(mut fields)) => {
            let mut renamed = Map::new();
            for key in ENVELOPE_KEYS {
                if let (Some(value), Some(name)) = (fields.shift_remove(key), envelope.name_of(key))
                {
                    renamed.insert(name.to_string(), value);
                }
            }
            Value::Object(renamed)
        }
        (_, parsed) => parsed,
    };
    let exact = parsed.to_string();
    Ok(match numbers {
        JsonNumbers::Exact => exact,
        JsonNumbers::JavaScript => reparsed::javascript(&exact).unwrap_or(exact),
    })
}

/// A body about to be sent by a `javascript` webhook must be what JavaScript writes back, or
/// its receiver could not verify it: a number beyond JavaScript's range, or a body queued
/// before the webhook switched to `javascript`, is refused with the reason.
pub fn check_javascript_body(body: &str) -> Result<(), String> {
    let rewritten = reparsed::javascript(body)
        .map_err(|why| format!("not sent: json_numbers is 'javascript' but {why}"))?;
    if rewritten != body {
        return Err(
            "not sent: json_numbers is 'javascript' but this body was queued with its \
                    numbers as Postgres wrote them (before the webhook switched to 'javascript'), \
                    which a receiver that verifies JSON.stringify(JSON.parse(body)) would reject"
                .to_string(),
        );
    }
    Ok(())
}

/// The format settings of a webhook, validated together (the rules that involve several
/// columns, and the URL, are here).
pub fn check(
    url: &str,
    secret: &str,
    envelope: Option<&str>,
    signature_format: &str,
    signature_input: &str,
    json_numbers: &str,
    policy: &NetworkPolicy,
) -> Result<(), InvalidField> {
    if let Some(envelope) = envelope {
        Envelope::parse(envelope)?;
    }
    let format = SignatureFormat::parse(signature_format)?;
    let input = SignatureInput::parse(signature_input)?;
    JsonNumbers::parse(json_numbers)?;
    if input != SignatureInput::Body && !format.signs() {
        return Err(InvalidField::new(
            "signature_input",
            format!(
                "{signature_input:?} needs a signature_format that signs ('sha256=hex' or 'hex'), not {signature_format:?}"
            ),
        ));
    }
    if format == SignatureFormat::Secret {
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidField::new(
                "secret",
                "a secret sent as the signature header (signature_format 'secret') must be printable ASCII without spaces",
            ));
        }
        if !sent_privately(url, policy) {
            return Err(InvalidField::new(
                "signature_format",
                "'secret' sends the secret itself; over plain http:// it would travel in clear: use an https:// URL (or an address listed in webhook.allowed_networks)",
            ));
        }
    }
    Ok(())
}

/// https, or http to an address the operator listed in `webhook.allowed_networks` (a local
/// receiver, say).
fn sent_privately(url: &str, policy: &NetworkPolicy) -> bool {
    let Ok(url) = Url::parse(url) else {
        return false; // the URL's own check says why
    };
    match (url.scheme(), url.host()) {
        ("https", _) => true,
        ("http", Some(Host::Ipv4(ip))) => policy.lists(ip.into()),
        ("http", Some(Host::Ipv6(ip))) => policy.lists(ip.into()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{"id":"e1","event":"fatura.paga","timestamp":"2024-01-01T10:00:00Z","data":{"valor":199.90,"2":"b","1":"a"}}"#;

    fn envelope(json: &str) -> Envelope {
        Envelope::parse(json).unwrap()
    }

    #[test]
    fn the_defaults_change_nothing() {
        assert_eq!(reshape(BODY, None, JsonNumbers::Exact).unwrap(), BODY);
        assert!(envelope("{}").is_default());
        assert!(envelope(r#"{"id": "id", "data": "data"}"#).is_default());
        assert_eq!(
            SignatureFormat::parse("sha256=hex"),
            Ok(SignatureFormat::default())
        );
        assert_eq!(SignatureInput::parse("body"), Ok(SignatureInput::default()));
        assert_eq!(JsonNumbers::parse("exact"), Ok(JsonNumbers::default()));
    }

    #[test]
    fn renames_and_drops_keep_the_order() {
        let renamed = envelope(r#"{"timestamp": "created_at", "event": "event_type"}"#);
        assert_eq!(
            reshape(BODY, Some(&renamed), JsonNumbers::Exact).unwrap(),
            r#"{"id":"e1","event_type":"fatura.paga","created_at":"2024-01-01T10:00:00Z","data":{"valor":199.90,"2":"b","1":"a"}}"#
        );
        let portuguese = envelope(r#"{"event": "evento", "data": "dados", "id": null}"#);
        assert_eq!(
            reshape(BODY, Some(&portuguese), JsonNumbers::Exact).unwrap(),
            r#"{"evento":"fatura.paga","timestamp":"2024-01-01T10:00:00Z","dados":{"valor":199.90,"2":"b","1":"a"}}"#
        );
    }

    #[test]
    fn javascript_numbers_and_key_order() {
        assert_eq!(
            reshape(BODY, None, JsonNumbers::JavaScript).unwrap(),
            r#"{"id":"e1","event":"fatura.paga","timestamp":"2024-01-01T10:00:00Z","data":{"1":"a","2":"b","valor":199.9}}"#
        );
        // Beyond JavaScript's range: kept as written, and refused when sent.
        let huge = r#"{"id":"e1","data":{"n":1e400}}"#;
        let kept = reshape(huge, None, JsonNumbers::JavaScript).unwrap();
        assert_eq!(kept, reshape(huge, None, JsonNumbers::Exact).unwrap());
        assert!(check_javascript_body(&kept)
            .unwrap_err()
            .contains("beyond JavaScript's range"));
        let queued_before = reshape(BODY, None, JsonNumbers::Exact).unwrap();
        assert!(check_javascript_body(&queued_before)
            .unwrap_err()
            .contains("queued"));
        assert_eq!(
            check_javascript_body(&reshape(BODY, None, JsonNumbers::JavaScript).unwrap()),
            Ok(())
        );
    }

    #[test]
    fn bad_envelopes() {
        let cases = [
            ("[]", "must be a JSON object"),
            ("not json", "must be a JSON object"),
            (r#"{"evento": "x"}"#, "is not a key of the body"),
            (r#"{"event": 1}"#, "new name (a string) or null"),
            (r#"{"event": ""}"#, "must not be blank"),
            (r#"{"event": " x"}"#, "must not be blank"),
            (r#"{"event": "12"}"#, "must not be a number"),
            (
                r#"{"event": "data"}"#,
                "two keys would be written as \"data\"",
            ),
            (r#"{"event": "x", "id": "x"}"#, "two keys"),
        ];
        for (json, expected) in cases {
            let err = Envelope::parse(json).unwrap_err();
            assert_eq!(err.field, "envelope");
            assert!(err.message.contains(expected), "{json}: {err}");
        }
        // Swapping two names is fine.
        assert!(Envelope::parse(r#"{"event": "data", "data": "event"}"#).is_ok());
        let long = format!(r#"{{"event": "{}"}}"#, "x".repeat(256));
        assert!(Envelope::parse(&long).unwrap_err().message.contains("255"));
    }

    fn check_with(url: &str, secret: &str, format: &str, input: &str) -> Result<(), InvalidField> {
        let policy = NetworkPolicy::parse("127.0.0.1/32").unwrap();
        check(url, secret, None, format, input, "exact", &policy)
    }

    #[test]
    fn format_rules() {
        let https = "https://example.com/hook";
        for format in ["sha256=hex", "hex", "secret", "none"] {
            assert_eq!(check_with(https, "k", format, "body"), Ok(()), "{format}");
        }
        assert_eq!(check_with(https, "k", "hex", "python_sorted_json"), Ok(()));
        assert_eq!(
            check_with(https, "k", "sha256=hex", "python_sorted_json"),
            Ok(())
        );
        let field = |r: Result<(), InvalidField>| r.unwrap_err().field;
        assert_eq!(
            field(check_with(https, "k", "HEX", "body")),
            "signature_format"
        );
        assert_eq!(
            field(check_with(https, "k", "hex", "raw")),
            "signature_input"
        );
        assert_eq!(
            field(check_with(https, "k", "none", "python_sorted_json")),
            "signature_input"
        );
        assert_eq!(
            field(check_with(https, "k", "secret", "python_sorted_json")),
            "signature_input"
        );
        let policy = NetworkPolicy::default();
        assert_eq!(
            check(https, "k", None, "hex", "body", "js", &policy)
                .unwrap_err()
                .field,
            "json_numbers"
        );
        assert_eq!(
            check(https, "k", Some("[]"), "hex", "body", "exact", &policy)
                .unwrap_err()
                .field,
            "envelope"
        );
    }

    #[test]
    fn a_secret_is_sent_as_is_only_where_it_stays_private() {
        let field = |r: Result<(), InvalidField>| r.map_err(|e| e.field);
        assert_eq!(
            field(check_with("https://example.com", "tok", "secret", "body")),
            Ok(())
        );
        assert_eq!(
            field(check_with(
                "http://127.0.0.1:8080/h",
                "tok",
                "secret",
                "body"
            )),
            Ok(())
        );
        assert_eq!(
            field(check_with("http://example.com/h", "tok", "secret", "body")),
            Err("signature_format")
        );
        assert_eq!(
            field(check_with("http://10.0.0.1/h", "tok", "secret", "body")),
            Err("signature_format")
        );
        // Other formats send a digest, never the secret: plain http stays allowed.
        assert_eq!(
            field(check_with("http://example.com/h", "tok", "hex", "body")),
            Ok(())
        );
        assert_eq!(
            field(check_with(
                "https://example.com",
                "tok en",
                "secret",
                "body"
            )),
            Err("secret")
        );
        assert_eq!(
            field(check_with("https://example.com", "tökén", "secret", "body")),
            Err("secret")
        );
    }
}
