//! The example receivers of `examples/receivers/` (what partners copy), each run for real
//! against deliveries the extension sends: a genuine event, the same event replayed (by
//! `webhook_retry` and byte for byte), a tampered body, a wrong secret, a missing signature and
//! a stale timestamp. Their runtimes (node, php, a Python venv with `standardwebhooks`) come
//! from `scripts/setup.sh`; a missing one fails the test rather than skipping it.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Once;
use std::time::Duration;

use serde_json::Value;
use webhook_ext_tests::*;

const DEADLINE: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug)]
enum Kind {
    Node,
    Python,
    Php,
    /// Python with the official Standard Webhooks library.
    Standard,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::Python => "python",
            Kind::Php => "php",
            Kind::Standard => "standard",
        }
    }

    /// The header that carries the signature this receiver checks.
    fn signature_header(self) -> &'static str {
        match self {
            Kind::Standard => "webhook-signature",
            _ => "X-Webhook-Signature",
        }
    }

    /// The receiver's runtime and script, after checking that the runtime is installed.
    fn installed(self) -> (Runtime, &'static str) {
        match self {
            Kind::Node => {
                require("Node.js", &Runtime::Node.program(), &["--version"]);
                (Runtime::Node, "node/receiver.js")
            }
            Kind::Php => {
                require("PHP", &Runtime::Php.program(), &["--version"]);
                (Runtime::Php, "php/receiver.php")
            }
            Kind::Python | Kind::Standard => {
                require(
                    "the Python venv with standardwebhooks",
                    &Runtime::Python.program(),
                    &["-c", "import standardwebhooks"],
                );
                match self {
                    Kind::Python => (Runtime::Python, "python/receiver.py"),
                    _ => (Runtime::Python, "python/standard_receiver.py"),
                }
            }
        }
    }
}

/// Panics with the setup hint unless `program args` runs and exits 0.
fn require(what: &str, program: &Path, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let problem = match status {
        Ok(s) if s.success() => return,
        Ok(s) => s.to_string(),
        Err(e) => e.to_string(),
    };
    panic!(
        "{what} is not available (`{} {}`: {problem}): {RECEIVERS_SETUP_HINT}",
        program.display(),
        args.join(" ")
    );
}

/// Where a receiver remembers the events it has seen (the PHP one keeps them on disk);
/// removed on drop.
struct DedupeDir(PathBuf);

impl Drop for DedupeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running example receiver of one kind, with its own dedupe directory.
struct Running {
    kind: Kind,
    // Declared before `_dedupe_dir`: fields drop in order, so the receiver is killed before
    // its directory is removed.
    rx: ExampleReceiver,
    _dedupe_dir: DedupeDir,
}

impl Running {
    fn start(kind: Kind, secret: &str) -> Running {
        let (runtime, script) = kind.installed();
        let dedupe_dir = DedupeDir(std::env::temp_dir().join(unique("webhook_ext_receivers")));
        let rx = ExampleReceiver::start(
            runtime,
            script,
            &[
                ("WEBHOOK_SECRET", secret),
                ("MAX_AGE_SECONDS", "300"),
                ("DEDUPE_DIR", dedupe_dir.0.to_str().unwrap()),
            ],
        );
        Running {
            kind,
            rx,
            _dedupe_dir: dedupe_dir,
        }
    }

    /// Checks the next JSON line's `result` (and `reason`, for a rejection).
    fn expect(&mut self, step: &str, result: &str, reason: Option<&str>) -> Value {
        let step = format!("{step} ({:?})", self.kind);
        let line = self.rx.next_line(&step);
        assert_eq!(line["result"], result, "{step}: {line}{}", self.rx.output());
        if let Some(reason) = reason {
            assert_eq!(line["reason"], reason, "{step}: {line}{}", self.rx.output());
        }
        line
    }
}

/// Its url, port, output and JSON lines are the example receiver's.
impl Deref for Running {
    type Target = ExampleReceiver;

    fn deref(&self) -> &ExampleReceiver {
        &self.rx
    }
}

/// pgcrypto, in a schema of its own, to compute the signatures the test re-signs with.
fn pgcrypto(db: &mut Client) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        db.batch_execute(
            "CREATE SCHEMA IF NOT EXISTS receivers_test;
             CREATE EXTENSION IF NOT EXISTS pgcrypto SCHEMA receivers_test;",
        )
        .unwrap()
    });
}

fn new_secret(db: &mut Client) -> String {
    query_string(
        db,
        "SELECT 'whsec_' || encode(receivers_test.gen_random_bytes(24), 'base64')",
    )
}

/// `sha256=<hex>` as the extension signs it: keyed with the secret's text, over the body.
fn hex_signature(db: &mut Client, secret: &str, body: &[u8]) -> String {
    db.query_one(
        "SELECT 'sha256=' || encode(receivers_test.hmac($1::bytea, convert_to($2, 'UTF8'), 'sha256'), 'hex')",
        &[&body, &secret],
    )
    .unwrap()
    .get(0)
}

/// `v1,<base64>` as Standard Webhooks signs: keyed with the base64 after `whsec_`, over
/// `<id>.<timestamp>.<body>`.
fn standard_signature(db: &mut Client, secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
    let mut signed = format!("{id}.{ts}.").into_bytes();
    signed.extend_from_slice(body);
    let key = secret.strip_prefix("whsec_").unwrap();
    db.query_one(
        "SELECT 'v1,' || encode(receivers_test.hmac($1::bytea, decode($2, 'base64'), 'sha256'), 'base64')",
        &[&signed, &key],
    )
    .unwrap()
    .get(0)
}

/// (status, response_status, attempts, event_id) of a delivery.
fn delivery(db: &mut Client, id: i64) -> (String, Option<i32>, i32, String) {
    let row = db
        .query_one(
            "SELECT status, response_status, attempts, event_id::text FROM webhook_delivery WHERE id = $1",
            &[&id],
        )
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

type Headers = Vec<(String, String)>;

/// `headers` with `name` set to `value`, or removed when `value` is None.
fn set_header(headers: &Headers, name: &str, value: Option<&str>) -> Headers {
    let mut out: Headers = headers
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case(name))
        .cloned()
        .collect();
    if let Some(value) = value {
        out.push((name.to_string(), value.to_string()));
    }
    out
}

fn header<'a>(headers: &'a Headers, name: &str) -> &'a str {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
}

/// Every scenario against one receiver.
fn exercise(kind: Kind) {
    let mut db = connect_shared();
    pgcrypto(&mut db);
    let secret = new_secret(&mut db);
    let mut rx = Running::start(kind, &secret);
    let prefix = unique(kind.name());
    let event = format!("{prefix}.cliente.criado");

    // The receiver, and a recorder with the same secret and events: it captures the exact
    // request the extension sends, to replay and tamper with below.
    let webhook = create_webhook(&mut db, &rx.url(), Some(&secret), &format!("{prefix}.*"));
    let recorder = Receiver::always(Reply::ok());
    create_webhook(
        &mut db,
        &recorder.url(),
        Some(&secret),
        &format!("{prefix}.*"),
    );

    // 1. A genuine delivery: accepted, and the delivery succeeds.
    let data = r#"{"nome": "José da Silva", "valor": 100}"#;
    assert_eq!(emit(&mut db, &event, data), 2);
    let line = rx.expect("genuine delivery", "accepted", None);
    let delivery_id = last_delivery(&mut db, webhook);
    wait_for_status(&mut db, delivery_id, "succeeded", DEADLINE);
    let (_, response_status, attempts, event_id) = delivery(&mut db, delivery_id);
    assert_eq!((response_status, attempts), (Some(200), 1));
    assert_eq!(line["event"], event.as_str(), "{line}");
    assert_eq!(line["event_id"], event_id.as_str(), "{line}");

    let captured = recorder.wait_for(1, DEADLINE).remove(0);
    assert_eq!(
        header(&captured.headers, "X-Event-ID"),
        event_id,
        "the recorder got the same event"
    );
    let headers = captured.headers.clone();
    let body = captured.body.clone();

    // 2. The same event again: the extension re-sends it (same event id and body, new
    //    timestamp and signatures), then the captured request is replayed byte for byte.
    //    Both are answered 2xx, so the sender stops, and neither is processed twice.
    let row = db
        .query_one(
            "SELECT status, response_status, attempts FROM webhook_retry($1)",
            &[&delivery_id],
        )
        .unwrap_or_else(|e| panic!("webhook_retry: {}", db_message(&e)));
    let retried: (String, Option<i32>, i32) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(retried, ("succeeded".to_string(), Some(200), 2));
    let line = rx.expect("webhook_retry of the same event", "duplicate", None);
    assert_eq!(line["event_id"], event_id.as_str(), "{line}");

    let (status, answer) = post(rx.port, &headers, &body);
    assert!(
        (200..300).contains(&status),
        "replayed request: {status} {answer}"
    );
    let line = rx.expect("replayed request", "duplicate", None);
    assert_eq!(line["event_id"], event_id.as_str(), "{line}");

    // 3. One byte of the body changed, headers as sent: the signature no longer matches.
    let mut tampered = body.clone();
    let at = String::from_utf8_lossy(&body)
        .find("\"valor\":100")
        .expect("the body has the data as emitted")
        + "\"valor\":".len();
    tampered[at] = b'9';
    let (status, answer) = post(rx.port, &headers, &tampered);
    assert_eq!(status, 401, "tampered body: {answer}");
    rx.expect("tampered body", "rejected", Some("bad signature"));

    // 4. A webhook with another secret: rejected, and with a one-attempt schedule the
    //    delivery ends failed with the receiver's 401.
    let other_secret = new_secret(&mut db);
    let wrong = create_webhook(
        &mut db,
        &rx.url(),
        Some(&other_secret),
        &format!("{prefix}_wrong.*"),
    );
    one_attempt_only(&mut db, wrong);
    assert_eq!(
        emit(&mut db, &format!("{prefix}_wrong.cliente.criado"), data),
        1
    );
    rx.expect("wrong secret", "rejected", Some("bad signature"));
    let wrong_delivery = last_delivery(&mut db, wrong);
    wait_for_status(&mut db, wrong_delivery, "failed", DEADLINE);
    let (_, response_status, attempts, _) = delivery(&mut db, wrong_delivery);
    assert_eq!((response_status, attempts), (Some(401), 1));

    // 5a. The captured request without its signature header.
    let unsigned = set_header(&headers, kind.signature_header(), None);
    let (status, answer) = post(rx.port, &unsigned, &body);
    assert_eq!(status, 401, "missing signature: {answer}");
    rx.expect("missing signature", "rejected", Some("missing signature"));

    // 5b. The captured request an hour old, with a correct signature for that timestamp.
    let stale = match kind {
        Kind::Standard => {
            let ts: i64 = header(&headers, "webhook-timestamp").parse().unwrap();
            let old = ts - 3600;
            let signature = standard_signature(&mut db, &secret, &event_id, old, &body);
            assert!(verify_standard(
                &secret,
                &event_id,
                &old.to_string(),
                &body,
                &signature
            ));
            let stale = set_header(&headers, "webhook-timestamp", Some(&old.to_string()));
            set_header(&stale, "webhook-signature", Some(&signature))
        }
        _ => {
            let ts: i64 = header(&headers, "X-Webhook-Timestamp").parse().unwrap();
            // The sha256= signature covers the body only, so it stays what was sent.
            let signature = hex_signature(&mut db, &secret, &body);
            assert_eq!(signature, header(&headers, "X-Webhook-Signature"));
            let stale = set_header(
                &headers,
                "X-Webhook-Timestamp",
                Some(&(ts - 3600).to_string()),
            );
            set_header(&stale, "X-Webhook-Signature", Some(&signature))
        }
    };
    let (status, answer) = post(rx.port, &stale, &body);
    assert_eq!(status, 401, "stale timestamp: {answer}");
    rx.expect("stale timestamp", "rejected", Some("stale timestamp"));

    // One line per request, and the event was accepted exactly once.
    let lines = rx.json_lines();
    assert_eq!(lines.len(), 7, "{}", rx.output());
    let accepted = lines.iter().filter(|l| l["result"] == "accepted").count();
    assert_eq!(accepted, 1, "{}", rx.output());
}

#[test]
fn node_receiver() {
    exercise(Kind::Node);
}

#[test]
fn python_receiver() {
    exercise(Kind::Python);
}

#[test]
fn php_receiver() {
    exercise(Kind::Php);
}

#[test]
fn standard_webhooks_python_receiver() {
    exercise(Kind::Standard);
}
