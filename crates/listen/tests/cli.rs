//! Runs the real `webhook-listen` binary and talks to it over TCP.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use common::post;

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const WAIT: Duration = Duration::from_secs(10);

/// The binary, its stdout as lines, and its port.
struct Listen {
    child: Child,
    lines: mpsc::Receiver<String>,
    port: u16,
}

impl Listen {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Listen {
        let mut child = Command::new(env!("CARGO_BIN_EXE_webhook-listen"))
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn webhook-listen");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut listen = Listen {
            child,
            lines,
            port: 0,
        };
        let first = listen.line();
        let url = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        listen.port = url.rsplit(':').next().unwrap().parse().unwrap();
        assert_eq!(url, format!("http://127.0.0.1:{}", listen.port));
        listen
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(WAIT)
            .expect("a line from webhook-listen")
    }

    fn json_line(&self) -> Value {
        serde_json::from_str(&self.line()).expect("a JSON line")
    }

    /// Every remaining line, up to the end of the output.
    fn rest(&self) -> String {
        let mut lines = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(WAIT) {
            lines.push(line);
        }
        lines.join("\n")
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < WAIT, "webhook-listen did not exit");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Listen {
    fn drop(&mut self) {
        // Only matters when a test failed before the binary exited by itself.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    secs.as_secs().to_string()
}

/// The headers the extension sends (docs/REFERENCE.md, "Wire format"), signed with `secret`
/// over `body`.
fn signed_headers(secret: &str, event_id: &str, body: &[u8], ts: &str) -> Vec<(String, String)> {
    let key = match secret.strip_prefix("whsec_") {
        Some(encoded) => BASE64.decode(encoded).unwrap(),
        None => secret.as_bytes().to_vec(),
    };
    let standard = hmac(
        &key,
        &[event_id.as_bytes(), b".", ts.as_bytes(), b".", body],
    );
    let hex_sig = hex::encode(hmac(secret.as_bytes(), &[body]));
    [
        ("Content-Type", "application/json".to_string()),
        ("X-Webhook-ID", "1".to_string()),
        ("X-Delivery-ID", "42".to_string()),
        ("X-Event-ID", event_id.to_string()),
        ("X-Event-Type", "cliente.criado".to_string()),
        ("X-Webhook-Timestamp", ts.to_string()),
        ("X-Webhook-Signature", format!("sha256={hex_sig}")),
        ("webhook-id", event_id.to_string()),
        ("webhook-timestamp", ts.to_string()),
        (
            "webhook-signature",
            format!("v1,{}", BASE64.encode(standard)),
        ),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v))
    .collect()
}

fn as_refs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

#[test]
fn json_mode_accepts_signed_and_rejects_tampered() {
    let mut listen = Listen::spawn(
        &[
            "--port",
            "0",
            "--secret",
            SECRET,
            "--json",
            "--exit-after",
            "2",
        ],
        &[],
    );
    let body = br#"{"id":"evt_1","event":"cliente.criado","timestamp":"2024-01-01T10:00:00Z","data":{"id":7}}"#;
    let headers = signed_headers(SECRET, "evt_1", body, &now());

    let good = post(listen.port, &as_refs(&headers), body);
    assert_eq!(good.status, 200);
    let line = listen.json_line();
    assert_eq!(line["event"], "cliente.criado");
    assert_eq!(line["event_id"], "evt_1");
    assert_eq!(line["delivery_id"], "42");
    assert_eq!(line["signature_valid"], true);
    assert_eq!(line["standard_signature_valid"], true);
    assert_eq!(line["timestamp_fresh"], true);
    assert_eq!(line["status"], 200);
    assert_eq!(line["body"]["data"], json!({"id": 7}));

    let tampered = br#"{"id":"evt_1","event":"cliente.criado","timestamp":"2024-01-01T10:00:00Z","data":{"id":8}}"#;
    let bad = post(listen.port, &as_refs(&headers), tampered);
    assert_eq!(bad.status, 401);
    let line = listen.json_line();
    assert_eq!(line["signature_valid"], false);
    assert_eq!(line["standard_signature_valid"], false);
    assert_eq!(line["status"], 401);
    assert_eq!(line["body"]["data"]["id"], 8);

    assert!(listen.wait_exit().success());
}

#[test]
fn fail_first_secret_env_custom_header_and_stale_timestamp() {
    let mut listen = Listen::spawn(
        &[
            "--port",
            "0",
            "--secret-env",
            "WEBHOOK_LISTEN_TEST_SECRET",
            "--header",
            "X-ConnectVets-Signature",
            "--fail-first",
            "1",
            "--fail-status",
            "503",
            "--status",
            "204",
            "--json",
            "--exit-after",
            "2",
        ],
        &[("WEBHOOK_LISTEN_TEST_SECRET", "plain-secret")],
    );
    let body = br#"{"id":"evt_2"}"#;
    let stale = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600)
        .to_string();
    let hex_sig = format!("sha256={}", hex::encode(hmac(b"plain-secret", &[body])));
    let headers = [
        ("X-ConnectVets-Signature", hex_sig.as_str()),
        ("X-Webhook-Timestamp", stale.as_str()),
    ];

    assert_eq!(post(listen.port, &headers, body).status, 503);
    assert_eq!(listen.json_line()["status"], 503);
    assert_eq!(post(listen.port, &headers, body).status, 204);
    let line = listen.json_line();
    assert_eq!(line["signature_valid"], true);
    assert_eq!(line["standard_signature_valid"], Value::Null);
    assert_eq!(line["timestamp_fresh"], false);
    assert_eq!(line["event"], Value::Null);

    assert!(listen.wait_exit().success());
}

#[test]
fn signature_formats_bare_hex_token_and_none() {
    let body = br#"{"id":"evt_3"}"#;
    let ts = now();
    let bare = hex::encode(hmac(b"plain-secret", &[body]));
    let standard = signed_headers("plain-secret", "evt_3", body, &ts);
    let header = |value: String| vec![("X-Signature".to_string(), value)];
    let cases = [
        ("hex", header(bare.clone()), 200),
        (
            "hex",
            vec![("X-Signature".into(), format!("sha256={bare}"))],
            401,
        ),
        (
            "secret",
            vec![("X-Signature".into(), "plain-secret".into())],
            200,
        ),
        (
            "secret",
            vec![("X-Signature".into(), "guessed".into())],
            401,
        ),
        ("none", standard.clone(), 200),
        ("none", vec![("X-Signature".into(), bare.clone())], 401),
    ];
    for (format, headers, expected) in cases {
        let mut listen = Listen::spawn(
            &[
                "--port",
                "0",
                "--secret",
                "plain-secret",
                "--header",
                "X-Signature",
                "--signature-format",
                format,
                "--json",
                "--exit-after",
                "1",
            ],
            &[],
        );
        let response = post(listen.port, &as_refs(&headers), body);
        assert_eq!(response.status, expected, "{format} {headers:?}");
        assert_eq!(listen.json_line()["status"], expected);
        assert!(listen.wait_exit().success());
    }
}

#[test]
fn readable_mode_prints_a_block_and_accept_invalid_answers_unsigned() {
    let mut listen = Listen::spawn(
        &[
            "--port",
            "0",
            "--secret",
            SECRET,
            "--accept-invalid",
            "--exit-after",
            "1",
        ],
        &[],
    );
    let response = post(
        listen.port,
        &[("X-Event-Type", "pet.atualizado"), ("X-Event-ID", "evt_3")],
        br#"{"nome":"Rex"}"#,
    );
    assert_eq!(response.status, 200);
    assert!(listen.wait_exit().success());
    let output = listen.rest();
    for expected in [
        "event:             pet.atualizado",
        "event id:          evt_3",
        "delivery id:       -",
        "signature:         missing",
        "standard-webhooks: missing",
        "timestamp:         missing",
        "  \"nome\": \"Rex\"",
    ] {
        assert!(output.contains(expected), "{expected:?} not in:\n{output}");
    }
}

#[test]
fn help_documents_every_flag_and_a_secret_is_required() {
    let help = Command::new(env!("CARGO_BIN_EXE_webhook-listen"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in [
        "--port",
        "--secret",
        "--secret-env",
        "--header",
        "--signature-format",
        "--status",
        "--fail-first",
        "--fail-status",
        "--max-age",
        "--accept-invalid",
        "--json",
        "--quiet",
        "--exit-after",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }

    let no_secret = Command::new(env!("CARGO_BIN_EXE_webhook-listen"))
        .args(["--port", "0"])
        .output()
        .unwrap();
    assert_eq!(no_secret.status.code(), Some(2));
    let empty_env = Command::new(env!("CARGO_BIN_EXE_webhook-listen"))
        .args(["--port", "0", "--secret-env", "WEBHOOK_LISTEN_TEST_UNSET"])
        .env_remove("WEBHOOK_LISTEN_TEST_UNSET")
        .output()
        .unwrap();
    assert_eq!(empty_env.status.code(), Some(2));
}
