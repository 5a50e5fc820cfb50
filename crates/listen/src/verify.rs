//! Signature checks written from the wire format alone (docs/REFERENCE.md, "Wire format"),
//! the way a partner would, so they catch sender bugs instead of sharing them.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// Checks `sha256=<hex HMAC-SHA256(secret, body)>`. The prefix is required;
/// the comparison is constant-time (`verify_slice`).
pub fn verify_hex(secret: &str, body: &[u8], header_value: &str) -> bool {
    let Some(hex_sig) = header_value.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = mac(secret.as_bytes());
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// Checks a bare `<hex HMAC-SHA256(secret, body)>` (a webhook's `signature_format => 'hex'`).
pub fn verify_bare_hex(secret: &str, body: &[u8], header_value: &str) -> bool {
    let value = header_value.trim();
    !value.starts_with("sha256=") && verify_hex(secret, body, &format!("sha256={value}"))
}

/// Checks a shared token (`signature_format => 'secret'`: the header carries the secret
/// itself), in constant time.
pub fn verify_token(secret: &str, header_value: &str) -> bool {
    let (expected, given) = (secret.as_bytes(), header_value.trim().as_bytes());
    expected.len() == given.len()
        && expected
            .iter()
            .zip(given)
            .fold(0u8, |differs, (a, b)| differs | (a ^ b))
            == 0
}

/// Checks a Standard Webhooks `webhook-signature` header: true if any of its
/// space-separated `v1,<base64>` tokens is HMAC-SHA256(key, "<id>.<ts>.<body>").
/// The key is the base64 after `whsec_` for such secrets, else the secret's bytes.
pub fn verify_standard(
    secret: &str,
    msg_id: &str,
    timestamp: &str,
    body: &[u8],
    header_value: &str,
) -> bool {
    let key = match secret.strip_prefix("whsec_") {
        Some(encoded) => match BASE64.decode(encoded) {
            Ok(key) => key,
            Err(_) => return false,
        },
        None => secret.as_bytes().to_vec(),
    };
    let mut signed = mac(&key);
    signed.update(msg_id.as_bytes());
    signed.update(b".");
    signed.update(timestamp.as_bytes());
    signed.update(b".");
    signed.update(body);
    header_value
        .split_whitespace()
        .filter_map(|token| token.strip_prefix("v1,"))
        .filter_map(|sig| BASE64.decode(sig).ok())
        .any(|sig| signed.clone().verify_slice(&sig).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOX: &[u8] = b"The quick brown fox jumps over the lazy dog";
    const FOX_HEX: &str = "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8";

    const SW_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const SW_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const SW_TS: &str = "1649367553";
    const SW_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const SW_SIG: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    #[test]
    fn bare_hex_and_token() {
        assert!(verify_bare_hex("key", FOX, FOX_HEX));
        assert!(!verify_bare_hex("key", FOX, &format!("sha256={FOX_HEX}")));
        assert!(!verify_bare_hex("other", FOX, FOX_HEX));
        assert!(verify_token("tok_1", "tok_1"));
        assert!(!verify_token("tok_1", "tok_2"));
        assert!(!verify_token("tok_1", "tok_10"));
    }

    #[test]
    fn hex_known_vector() {
        assert!(verify_hex("key", FOX, &format!("sha256={FOX_HEX}")));
        assert!(verify_hex("key", FOX, &format!(" sha256={FOX_HEX} ")));
    }

    #[test]
    fn hex_rejects_wrong_prefix_body_secret_or_length() {
        assert!(!verify_hex("key", FOX, FOX_HEX));
        assert!(!verify_hex("key", FOX, &format!("sha1={FOX_HEX}")));
        assert!(!verify_hex(
            "key",
            b"the quick brown fox",
            &format!("sha256={FOX_HEX}")
        ));
        assert!(!verify_hex("KEY", FOX, &format!("sha256={FOX_HEX}")));
        assert!(!verify_hex(
            "key",
            FOX,
            &format!("sha256={}", &FOX_HEX[..32])
        ));
        assert!(!verify_hex("key", FOX, "sha256=not-hex"));
        assert!(!verify_hex("key", FOX, ""));
    }

    #[test]
    fn standard_known_vector() {
        assert!(verify_standard(SW_SECRET, SW_ID, SW_TS, SW_BODY, SW_SIG));
    }

    #[test]
    fn standard_accepts_any_rotation_token() {
        let header = format!("v1,Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyMTI= {SW_SIG} v2,abc");
        assert!(verify_standard(SW_SECRET, SW_ID, SW_TS, SW_BODY, &header));
    }

    #[test]
    fn standard_rejects_tampering() {
        assert!(!verify_standard(
            SW_SECRET,
            SW_ID,
            "1649367554",
            SW_BODY,
            SW_SIG
        ));
        assert!(!verify_standard(
            SW_SECRET,
            "msg_other",
            SW_TS,
            SW_BODY,
            SW_SIG
        ));
        assert!(!verify_standard(SW_SECRET, SW_ID, SW_TS, b"{}", SW_SIG));
        assert!(!verify_standard(
            SW_SECRET,
            SW_ID,
            SW_TS,
            SW_BODY,
            &SW_SIG[3..]
        ));
        assert!(!verify_standard(
            "whsec_!!notbase64",
            SW_ID,
            SW_TS,
            SW_BODY,
            SW_SIG
        ));
        assert!(!verify_standard(SW_SECRET, SW_ID, SW_TS, SW_BODY, ""));
    }

    #[test]
    fn standard_plain_secret_uses_utf8_bytes() {
        // Computed independently with Python's hmac module.
        let sig = "v1,PQ8G/5vQE995TQFlpC2YXRDs2RbuscvSWFk9pfKhuhc=";
        assert!(verify_standard(
            "plain-secret",
            "msg_1",
            "1700000000",
            br#"{"a":1}"#,
            sig
        ));
        assert!(!verify_standard(
            "plain-secreT",
            "msg_1",
            "1700000000",
            br#"{"a":1}"#,
            sig
        ));
    }
}
