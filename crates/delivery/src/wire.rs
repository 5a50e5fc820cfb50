//! The request headers of one attempt (docs/REFERENCE.md, "Wire format"). Signatures are
//! computed per attempt because they cover the attempt's timestamp, which receivers use to
//! reject replays.

use crate::signing::{hex_signature, standard_signature};

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
        }
    }

    /// The headers of an attempt starting at `timestamp_unix`.
    pub fn headers(&self, timestamp_unix: i64) -> Vec<(String, String)> {
        headers(&self.as_message(), timestamp_unix, &self.user_agent)
    }
}

/// `webhook_ext/<version>`.
pub fn user_agent(version: &str) -> String {
    format!("webhook_ext/{version}")
}

/// The headers of one attempt, the webhook's own headers last (validation keeps them from
/// repeating any of ours).
pub fn headers(msg: &Message, timestamp_unix: i64, user_agent: &str) -> Vec<(String, String)> {
    let timestamp = timestamp_unix.to_string();
    let body = msg.body.as_bytes();
    let secrets: Vec<&str> = std::iter::once(msg.secret)
        .chain(msg.previous_secrets.iter().map(String::as_str))
        .collect();
    let standard = standard_signature(&secrets, msg.event_id, timestamp_unix, body);
    let ours = [
        ("Content-Type", "application/json".to_owned()),
        ("User-Agent", user_agent.to_owned()),
        ("X-Webhook-ID", msg.webhook_id.to_string()),
        ("X-Delivery-ID", msg.delivery_id.to_string()),
        ("X-Event-ID", msg.event_id.to_owned()),
        ("X-Event-Type", msg.event.to_owned()),
        ("X-Webhook-Timestamp", timestamp.clone()),
        (msg.signature_header, hex_signature(msg.secret, body)),
        ("webhook-id", msg.event_id.to_owned()),
        ("webhook-timestamp", timestamp),
        ("webhook-signature", standard),
    ];
    ours.into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .chain(msg.custom_headers.iter().cloned())
        .collect()
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
        let h = headers(&msg, 1_704_103_200, "webhook_ext/0.1.0");
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
        let h = headers(&msg, 1_704_103_200, "ua");
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
        let first = headers(&msg, 1_704_103_200, "ua");
        let second = headers(&msg, 1_704_103_260, "ua");
        assert_ne!(
            get(&first, "webhook-signature"),
            get(&second, "webhook-signature")
        );
        assert_eq!(get(&second, "X-Webhook-Timestamp"), "1704103260");
    }
}
