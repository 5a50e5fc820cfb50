//! The two signatures every request carries: the plain hex HMAC that existing receivers verify,
//! and the Standard Webhooks (standardwebhooks.com) one that off-the-shelf libraries verify.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Prefix of generated secrets and of Standard Webhooks secrets.
pub const SECRET_PREFIX: &str = "whsec_";

const GENERATED_SECRET_BYTES: usize = 24;

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// `sha256=<lowercase hex HMAC-SHA256(secret, body)>`.
pub fn hex_signature(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex_digest(secret, body))
}

/// `<lowercase hex HMAC-SHA256(secret, input)>`, keyed with the secret's text.
pub fn hex_digest(secret: &str, input: &[u8]) -> String {
    hex::encode(hmac_sha256(secret.as_bytes(), &[input]))
}

/// The HMAC key Standard Webhooks derives from a secret: the base64 payload of a `whsec_`
/// secret, else the secret's own bytes (so any secret a user picked still works).
pub fn standard_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix(SECRET_PREFIX)
        .and_then(|encoded| STANDARD.decode(encoded).ok())
        .filter(|key| !key.is_empty())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// `v1,<base64 HMAC>` per secret, space-separated: receivers accept the request if any token
/// verifies, which is what lets a secret rotate without downtime.
pub fn standard_signature(secrets: &[&str], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let signed: [&[u8]; 5] = [msg_id.as_bytes(), b".", timestamp.as_bytes(), b".", body];
    secrets
        .iter()
        .map(|secret| {
            let mac = hmac_sha256(&standard_key(secret), &signed);
            format!("v1,{}", STANDARD.encode(mac))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A fresh `whsec_` secret: 24 random bytes from the OS, base64 encoded.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; GENERATED_SECRET_BYTES];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_signature_known_vector() {
        assert_eq!(
            hex_signature("key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn hex_signature_uses_the_whole_secret_text() {
        // The hex signature is keyed with the secret as written, whsec_ prefix included.
        let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        let expected = format!(
            "sha256={}",
            hex::encode(hmac_sha256(secret.as_bytes(), &[b"{}"]))
        );
        assert_eq!(hex_signature(secret, b"{}"), expected);
    }

    #[test]
    fn standard_webhooks_vectors() {
        assert_eq!(
            standard_signature(
                &["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"],
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#,
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
        assert_eq!(
            standard_signature(
                &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#,
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn standard_key_derivation() {
        assert_eq!(standard_key("whsec_AAEC"), vec![0, 1, 2]);
        assert_eq!(standard_key("plain-secret"), b"plain-secret".to_vec());
        // Not base64 after the prefix: the whole text is the key.
        assert_eq!(
            standard_key("whsec_not base64!"),
            b"whsec_not base64!".to_vec()
        );
        assert_eq!(standard_key("whsec_"), b"whsec_".to_vec());
    }

    #[test]
    fn two_secrets_give_two_tokens_in_order() {
        let (id, ts, body) = ("msg_1", 1_700_000_000, b"{}".as_slice());
        let current = standard_signature(&["whsec_AAEC"], id, ts, body);
        let previous = standard_signature(&["plain-old-secret"], id, ts, body);
        assert_ne!(current, previous);
        assert_eq!(
            standard_signature(&["whsec_AAEC", "plain-old-secret"], id, ts, body),
            format!("{current} {previous}")
        );
        assert_eq!(standard_signature(&[], id, ts, body), "");
    }

    #[test]
    fn generated_secrets() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        let encoded = a.strip_prefix("whsec_").expect("whsec_ prefix");
        assert_eq!(STANDARD.decode(encoded).unwrap().len(), 24);
        assert_eq!(standard_key(&a).len(), 24);
        assert!(crate::validate::secret(&a).is_ok());
    }
}
