//! Input validation shared by the SQL functions and the trigger on the `webhook` table, so a
//! row is refused with the same message however it was written.
//!
//! Messages name the field and the offending part, but never echo a secret, a URL (it may
//! carry credentials) or a header value (it may carry a token).

use std::fmt;

use serde_json::Value;
use url::Url;

/// A refused input: which field, and why. Rendered as `invalid <field>: <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidField {
    pub field: &'static str,
    pub message: String,
}

impl InvalidField {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        InvalidField {
            field,
            message: message.into(),
        }
    }
}

impl fmt::Display for InvalidField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.field, self.message)
    }
}

impl std::error::Error for InvalidField {}

const MAX_URL_BYTES: usize = 2048;
const MAX_SECRET_BYTES: usize = 1024;
const MAX_EVENT_BYTES: usize = 255;
const MAX_PATTERNS: usize = 100;
const MAX_HEADER_NAME_BYTES: usize = 256;
const MAX_HEADER_VALUE_BYTES: usize = 4096;
const MAX_HEADERS: usize = 50;

/// The signature header of a webhook unless it names another one.
pub const DEFAULT_SIGNATURE_HEADER: &str = "X-Webhook-Signature";

/// Header names (lowercase) that the extension sets itself or that would break HTTP framing.
pub const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "user-agent",
    "host",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "trailer",
    "expect",
    "keep-alive",
    "proxy-connection",
    "x-webhook-id",
    "x-delivery-id",
    "x-event-id",
    "x-event-type",
    "x-webhook-timestamp",
    "x-webhook-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// A webhook target. The IP policy is not applied here: names resolve differently over time,
/// so it is enforced at connect time.
pub fn url(s: &str) -> Result<Url, InvalidField> {
    let fail = |message: String| InvalidField::new("url", message);
    if s.trim().is_empty() {
        return Err(fail("must not be blank".into()));
    }
    if s.len() > MAX_URL_BYTES {
        return Err(fail(format!("must be at most {MAX_URL_BYTES} bytes")));
    }
    if s.trim() != s {
        return Err(fail("must not start or end with whitespace".into()));
    }
    let url = Url::parse(s).map_err(|e| fail(format!("not a valid URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(fail(format!(
            "scheme {:?} is not allowed; use http or https",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(fail("credentials are not allowed in the URL".into()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(fail("must have a host".into()));
    }
    if url.fragment().is_some() {
        return Err(fail("must not contain a fragment (#...)".into()));
    }
    Ok(url)
}

pub fn secret(s: &str) -> Result<(), InvalidField> {
    let fail = |message: String| Err(InvalidField::new("secret", message));
    if s.trim().is_empty() {
        return fail("must not be blank".into());
    }
    if s.len() > MAX_SECRET_BYTES {
        return fail(format!("must be at most {MAX_SECRET_BYTES} bytes"));
    }
    if s.chars().any(char::is_control) {
        return fail("must not contain control characters".into());
    }
    // Standard Webhooks libraries base64-decode what follows `whsec_`; a remainder that does
    // not decode would be keyed differently by them and by us, and never verify.
    if let Some(key) = s.strip_prefix(crate::signing::SECRET_PREFIX) {
        use base64::Engine as _;
        if base64::engine::general_purpose::STANDARD
            .decode(key)
            .map_or(true, |k| k.is_empty())
        {
            return fail(format!(
                "a secret starting with {} must continue with base64 (the Standard Webhooks format)",
                crate::signing::SECRET_PREFIX
            ));
        }
    }
    Ok(())
}

const EVENT_NAME_RULE: &str =
    "an event name is dot-separated segments of ASCII letters, digits, '_' and '-'";
const EVENT_PATTERN_RULE: &str =
    "use an event name such as \"cliente.criado\", a prefix such as \"cliente.*\", or \"*\"";

/// What is wrong with an event name, if anything.
fn event_name_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("is empty".into());
    }
    if s.len() > MAX_EVENT_BYTES {
        return Some(format!("is longer than {MAX_EVENT_BYTES} bytes"));
    }
    for segment in s.split('.') {
        if segment.is_empty() {
            return Some("has an empty segment".into());
        }
        let bad = |c: &char| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-');
        if let Some(c) = segment.chars().find(bad) {
            return Some(format!("contains {c:?}"));
        }
    }
    None
}

/// What is wrong with an event pattern, if anything.
fn event_pattern_problem(s: &str) -> Option<String> {
    if s == "*" {
        return None;
    }
    let name = s.strip_suffix(".*").unwrap_or(s);
    event_name_problem(name).map(|problem| {
        format!(
            "{} is not a valid pattern ({problem}); {EVENT_PATTERN_RULE}",
            quoted(s)
        )
    })
}

/// An emitted event name: no wildcards, so it can be matched against patterns unambiguously.
pub fn event_name(s: &str) -> Result<(), InvalidField> {
    match event_name_problem(s) {
        None => Ok(()),
        Some(problem) => Err(InvalidField::new(
            "event",
            format!("{} {problem}; {EVENT_NAME_RULE}", quoted(s)),
        )),
    }
}

/// One subscription pattern: `*`, an exact event name, or `<event name>.*`.
pub fn event_pattern(s: &str) -> Result<(), InvalidField> {
    event_pattern_problem(s).map_or(Ok(()), |m| Err(InvalidField::new("events", m)))
}

/// The `events` array of a webhook, as Postgres hands it over (elements may be NULL).
pub fn event_patterns(patterns: &[Option<String>]) -> Result<(), InvalidField> {
    let fail = |message: String| Err(InvalidField::new("events", message));
    if patterns.is_empty() {
        return fail("must not be empty; use '{*}' to receive every event".into());
    }
    if patterns.len() > MAX_PATTERNS {
        return fail(format!("must have at most {MAX_PATTERNS} patterns"));
    }
    for (i, pattern) in patterns.iter().enumerate() {
        let position = i + 1; // Postgres arrays are 1-based
        match pattern {
            None => return fail(format!("element {position} is NULL")),
            Some(p) => {
                if let Some(problem) = event_pattern_problem(p) {
                    return fail(format!("element {position}: {problem}"));
                }
            }
        }
    }
    Ok(())
}

/// Whether a webhook subscribed to `patterns` receives `event`.
pub fn matches(patterns: &[String], event: &str) -> bool {
    patterns.iter().any(|pattern| {
        pattern == "*"
            || pattern == event
            || pattern.strip_suffix('*').is_some_and(|prefix| {
                prefix.ends_with('.') && event.len() > prefix.len() && event.starts_with(prefix)
            })
    })
}

/// An HTTP field name: an RFC 9110 token.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// An HTTP/1.1 field value as the HTTP client sends it: visible ASCII, space and tab.
pub(crate) fn is_field_value(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b' ' | b'\t' | 0x21..=0x7e))
}

fn header_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("header name must not be empty".into())
    } else if name.len() > MAX_HEADER_NAME_BYTES {
        Some(format!(
            "header name is longer than {MAX_HEADER_NAME_BYTES} bytes"
        ))
    } else if !is_token(name) {
        Some(format!("{} is not a valid HTTP header name", quoted(name)))
    } else {
        None
    }
}

fn is_reserved(name: &str) -> bool {
    RESERVED_HEADERS
        .iter()
        .any(|reserved| name.eq_ignore_ascii_case(reserved))
}

/// The per-webhook name of the hex signature header. It may rename `X-Webhook-Signature` but
/// not take over any other header the extension sets.
pub fn signature_header(name: &str) -> Result<(), InvalidField> {
    let fail = |message: String| Err(InvalidField::new("signature_header", message));
    if let Some(problem) = header_name_problem(name) {
        return fail(problem);
    }
    if is_reserved(name) && !name.eq_ignore_ascii_case(DEFAULT_SIGNATURE_HEADER) {
        return fail(format!("{name} is a reserved header"));
    }
    Ok(())
}

/// One extra request header of a webhook. The value rules are those of HTTP/1.1 field values
/// (visible ASCII, space and tab), which is also what the HTTP client accepts: anything else
/// would fail every attempt later.
pub fn header(name: &str, value: &str, signature_header: &str) -> Result<(), InvalidField> {
    let fail = |message: String| Err(InvalidField::new("headers", message));
    if let Some(problem) = header_name_problem(name) {
        return fail(problem);
    }
    if is_reserved(name) {
        return fail(format!("header {name} is reserved"));
    }
    if name.eq_ignore_ascii_case(signature_header) {
        return fail(format!("header {name} would replace the signature header"));
    }
    if value.len() > MAX_HEADER_VALUE_BYTES {
        return fail(format!(
            "header {name} value is longer than {MAX_HEADER_VALUE_BYTES} bytes"
        ));
    }
    if value.contains(['\r', '\n']) {
        return fail(format!("header {name} contains CR/LF"));
    }
    if value.contains('\0') {
        return fail(format!("header {name} contains NUL"));
    }
    if !is_field_value(value) {
        return fail(format!(
            "header {name} value must be printable ASCII (no control or non-ASCII characters)"
        ));
    }
    Ok(())
}

/// The `headers` jsonb column (as text): an object of header names to string values, returned
/// as pairs in the object's order.
pub fn headers_json(
    json: &str,
    signature_header: &str,
) -> Result<Vec<(String, String)>, InvalidField> {
    let fail = |message: String| Err(InvalidField::new("headers", message));
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(json) else {
        return fail("must be a JSON object of header names to string values".into());
    };
    if map.len() > MAX_HEADERS {
        return fail(format!("must have at most {MAX_HEADERS} headers"));
    }
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(map.len());
    for (name, value) in map {
        let Value::String(value) = value else {
            return fail(format!("header {} must have a string value", quoted(&name)));
        };
        header(&name, &value, signature_header)?;
        if pairs
            .iter()
            .any(|(seen, _)| seen.eq_ignore_ascii_case(&name))
        {
            return fail(format!("header {name} is given twice"));
        }
        pairs.push((name, value));
    }
    Ok(pairs)
}

/// A user-supplied string for a message: quoted, escaped, and cut short.
fn quoted(s: &str) -> String {
    const MAX_CHARS: usize = 64;
    match s.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{:?}...", &s[..cut]),
        None => format!("{s:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(result: Result<impl fmt::Debug, InvalidField>, field: &str) -> String {
        let err = result.expect_err("expected a refusal");
        assert_eq!(err.field, field, "{err}");
        err.message
    }

    #[test]
    fn invalid_field_display() {
        let err = InvalidField::new("url", "must not be blank");
        assert_eq!(err.to_string(), "invalid url: must not be blank");
    }

    #[test]
    fn url_accepts_http_and_https() {
        for ok in [
            "https://example.com/hooks",
            "http://example.com:8080/a?b=c",
            "https://[2606:4700::1111]/x",
            "http://127.0.0.1:9000/", // the IP policy is applied at connect time
            "https://exämple.com/",
        ] {
            assert!(url(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            url("HTTPS://Example.COM").unwrap().as_str(),
            "https://example.com/"
        );
    }

    #[test]
    fn url_refusals() {
        let cases = [
            ("", "must not be blank"),
            ("   ", "must not be blank"),
            (" https://example.com", "whitespace"),
            ("https://example.com/\n", "whitespace"),
            ("example.com/hook", "not a valid URL"),
            ("https://", "not a valid URL"),
            ("http://exa mple.com/", "not a valid URL"),
            ("ftp://example.com/", "scheme \"ftp\" is not allowed"),
            ("file:///etc/passwd", "scheme \"file\""),
            ("javascript:alert(1)", "scheme \"javascript\""),
            ("https://example.com/#frag", "fragment"),
        ];
        for (input, expected) in cases {
            let msg = message(url(input), "url");
            assert!(msg.contains(expected), "{input:?}: {msg}");
        }
        let long = format!("https://example.com/{}", "a".repeat(2048));
        assert!(message(url(&long), "url").contains("2048 bytes"));
    }

    #[test]
    fn url_credentials_are_refused_without_echo() {
        for input in [
            "https://user:hunter2@example.com/",
            "https://user@example.com/",
            "https://:hunter2@example.com/",
        ] {
            let err = url(input).unwrap_err();
            assert_eq!(err.message, "credentials are not allowed in the URL");
            assert!(!err.to_string().contains("hunter2"));
            assert!(!err.to_string().contains("example.com"));
        }
    }

    #[test]
    fn secret_rules() {
        assert!(secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").is_ok());
        assert!(message(secret("whsec_abc"), "secret").contains("base64"));
        assert!(message(secret("whsec_"), "secret").contains("base64"));
        assert!(secret("a secret with spaces").is_ok());
        assert!(secret(&"x".repeat(1024)).is_ok());
        assert!(message(secret(""), "secret").contains("blank"));
        assert!(message(secret(" \t "), "secret").contains("blank"));
        assert!(message(secret(&"x".repeat(1025)), "secret").contains("1024 bytes"));
        let err = secret("hunter2\nline").unwrap_err();
        assert!(err.message.contains("control characters"));
        assert!(!err.to_string().contains("hunter2"));
        assert!(secret("nul\0byte").is_err());
    }

    #[test]
    fn event_names() {
        for ok in [
            "cliente.criado",
            "tarefa.concluida",
            "invoice.paid",
            "ping",
            "a-b_c.D9",
        ] {
            assert!(event_name(ok).is_ok(), "{ok}");
        }
        let cases = [
            ("", "is empty"),
            ("cliente.", "empty segment"),
            (".x", "empty segment"),
            ("a..b", "empty segment"),
            ("cli ente", "contains ' '"),
            ("a.*", "contains '*'"),
            ("*", "contains '*'"),
            ("cliente.atualização", "contains 'ç'"),
        ];
        for (input, expected) in cases {
            let msg = message(event_name(input), "event");
            assert!(msg.contains(expected), "{input:?}: {msg}");
        }
        assert!(event_name(&"a".repeat(255)).is_ok());
        assert!(message(event_name(&"a".repeat(256)), "event").contains("255 bytes"));
    }

    #[test]
    fn event_pattern_rules() {
        for ok in ["*", "cliente.criado", "cliente.*", "a.b.*", "ping"] {
            assert!(event_pattern(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "cli*",
            "*.criado",
            "cliente.*.x",
            ".*",
            "cliente..*",
            "**",
        ] {
            let msg = message(event_pattern(bad), "events");
            assert!(msg.contains("not a valid pattern"), "{bad:?}: {msg}");
        }
    }

    #[test]
    fn event_pattern_arrays() {
        let some = |v: &[&str]| v.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>();
        assert!(event_patterns(&some(&["*"])).is_ok());
        assert!(event_patterns(&some(&["cliente.*", "tarefa.concluida"])).is_ok());
        assert!(message(event_patterns(&[]), "events").contains("must not be empty"));
        let with_null = vec![Some("a".to_string()), None];
        assert_eq!(
            message(event_patterns(&with_null), "events"),
            "element 2 is NULL"
        );
        let msg = message(event_patterns(&some(&["ok", "cli*"])), "events");
        assert!(msg.starts_with("element 2: \"cli*\""), "{msg}");
        let hundred = vec![Some("x".to_string()); 100];
        assert!(event_patterns(&hundred).is_ok());
        let too_many = vec![Some("x".to_string()); 101];
        assert!(message(event_patterns(&too_many), "events").contains("at most 100"));
    }

    #[test]
    fn pattern_matching() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches(&p(&["*"]), "anything.at.all"));
        assert!(matches(&p(&["cliente.criado"]), "cliente.criado"));
        assert!(!matches(&p(&["cliente.criado"]), "cliente.criado.x"));
        assert!(matches(&p(&["cliente.*"]), "cliente.criado"));
        assert!(matches(&p(&["cliente.*"]), "cliente.a.b"));
        assert!(!matches(&p(&["cliente.*"]), "cliente"));
        assert!(!matches(&p(&["cliente.*"]), "clientes.x"));
        assert!(matches(
            &p(&["tarefa.*", "cliente.criado"]),
            "cliente.criado"
        ));
        assert!(!matches(&p(&[]), "ping"));
    }

    #[test]
    fn signature_header_rules() {
        for ok in [
            "X-ConnectVets-Signature",
            "X-Webhook-Signature",
            "x-webhook-signature",
            "Signature",
        ] {
            assert!(signature_header(ok).is_ok(), "{ok}");
        }
        let cases = [
            ("Content-Type", "reserved"),
            ("webhook-signature", "reserved"),
            ("X-Event-ID", "reserved"),
            ("", "must not be empty"),
            ("X Sig", "not a valid HTTP header name"),
            ("X-Sig:", "not a valid HTTP header name"),
            ("X-Sig\r\nEvil", "not a valid HTTP header name"),
        ];
        for (input, expected) in cases {
            let msg = message(signature_header(input), "signature_header");
            assert!(msg.contains(expected), "{input:?}: {msg}");
        }
        assert!(message(signature_header(&"a".repeat(257)), "signature_header").contains("256"));
    }

    #[test]
    fn header_rules() {
        let sig = "X-Webhook-Signature";
        assert!(header("X-Foo", "bar baz\tqux", sig).is_ok());
        assert!(header("Authorization", "Bearer abc.def", sig).is_ok());
        assert!(header("X-Empty", "", sig).is_ok());
        let cases = [
            ("X-Foo", "a\r\nX-Evil: 1", "header X-Foo contains CR/LF"),
            ("X-Foo", "a\nb", "header X-Foo contains CR/LF"),
            ("X-Foo", "a\rb", "header X-Foo contains CR/LF"),
            ("X-Foo", "a\0b", "header X-Foo contains NUL"),
            ("X-Foo", "a\x07b", "printable ASCII"),
            ("X-Foo", "São Paulo", "printable ASCII"),
            (
                "Content-Type",
                "text/plain",
                "header Content-Type is reserved",
            ),
            ("HOST", "evil", "header HOST is reserved"),
            ("x-webhook-signature", "x", "reserved"),
            ("X-Bad Name", "x", "not a valid HTTP header name"),
            ("", "x", "must not be empty"),
        ];
        for (name, value, expected) in cases {
            let msg = message(header(name, value, sig), "headers");
            assert!(msg.contains(expected), "{name:?}: {msg}");
        }
        let msg = message(header("x-acme-sig", "v", "X-Acme-Sig"), "headers");
        assert!(msg.contains("signature header"), "{msg}");
        for reserved in RESERVED_HEADERS {
            assert!(header(reserved, "v", sig).is_err(), "{reserved}");
        }
        assert!(header("X-Long", &"v".repeat(4096), sig).is_ok());
        let err = header("X-Long", &"v".repeat(4097), sig).unwrap_err();
        assert!(err.message.contains("4096"));
        assert!(header(&"N".repeat(257), "v", sig).is_err());
    }

    #[test]
    fn header_values_are_never_echoed() {
        let err = header("X-Token", "secret-token\r\n", "X-Webhook-Signature").unwrap_err();
        assert!(!err.to_string().contains("secret-token"));
    }

    #[test]
    fn headers_json_rules() {
        let sig = "X-Webhook-Signature";
        assert_eq!(headers_json("{}", sig).unwrap(), vec![]);
        assert_eq!(
            headers_json(r#"{"X-B": "2", "X-A": "1"}"#, sig).unwrap(),
            vec![
                ("X-B".to_string(), "2".to_string()),
                ("X-A".to_string(), "1".to_string())
            ]
        );
        let cases = [
            ("[]", "must be a JSON object"),
            ("\"x\"", "must be a JSON object"),
            ("null", "must be a JSON object"),
            ("{", "must be a JSON object"),
            (r#"{"X-A": 1}"#, "header \"X-A\" must have a string value"),
            (r#"{"X-A": null}"#, "must have a string value"),
            (r#"{"X-A": "a\nb"}"#, "header X-A contains CR/LF"),
            (r#"{"Content-Type": "x"}"#, "reserved"),
            (r#"{"X-A": "1", "x-a": "2"}"#, "header x-a is given twice"),
        ];
        for (input, expected) in cases {
            let msg = message(headers_json(input, sig), "headers");
            assert!(msg.contains(expected), "{input}: {msg}");
        }
        let fifty: serde_json::Map<String, Value> = (0..50)
            .map(|i| (format!("X-H{i}"), Value::from("v")))
            .collect();
        let json = Value::Object(fifty.clone()).to_string();
        assert_eq!(headers_json(&json, sig).unwrap().len(), 50);
        let mut fifty_one = fifty;
        fifty_one.insert("X-H50".into(), Value::from("v"));
        let json = Value::Object(fifty_one).to_string();
        assert!(message(headers_json(&json, sig), "headers").contains("at most 50"));
    }

    #[test]
    fn long_inputs_are_cut_in_messages() {
        let name = format!("{}*", "a".repeat(200));
        let err = event_pattern(&name).unwrap_err();
        assert!(!err.message.contains(&name), "{}", err.message);
        assert!(err.message.contains(&format!("\"{}\"...", "a".repeat(64))));
    }
}
