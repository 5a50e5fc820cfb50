//! SPEC §11 end to end: the default format's bytes are what they always were, and receivers
//! written the way other systems' documentation tells partners to write them (in
//! `examples/receivers/`) accept the deliveries of a webhook configured to their format and
//! reject a tampered one. Their runtimes (Express 5 via npm, Flask in the Python venv, php)
//! come from `scripts/setup-receivers.sh`; a missing one fails the test rather than skipping it.

use std::time::Duration;

use webhook_ext_tests::*;

const DEADLINE: Duration = Duration::from_secs(20);

/// Data with what trips re-serializing receivers: trailing zeros, accents, emoji, escapes,
/// integer-like keys, integers beyond 2^53, nesting, empty containers.
const DATA: &str = r#"{"nome": "José da Silva 🎉", "valor": 199.90, "desconto": 0.10,
    "itens": [{"sku": "A\"1\\", "qtd": 2, "preco": 10.00}], "10": "dez", "2": "dois",
    "grande": 12345678901234567, "ativo": true, "nada": null, "vazio": {}, "lista": [],
    "obs": "linha\nnova\ttab"}"#;

/// The example receiver `script` (under `examples/receivers/`), run by `runtime` with `secret`.
fn start(runtime: Runtime, script: &str, secret: &str) -> ExampleReceiver {
    ExampleReceiver::start(runtime, script, &[("WEBHOOK_SECRET", secret)])
}

fn header<'a>(request: &'a RecordedRequest, name: &str) -> Option<&'a str> {
    request.header(name)
}

/// A webhook with `format` (named arguments of webhook_create) for `pattern`.
fn create(db: &mut Client, url: &str, secret: &str, pattern: &str, format: &str) -> i64 {
    let sql = format!(
        "SELECT id FROM webhook_create($1, secret => $2, events => ARRAY[$3]{}{format})",
        if format.is_empty() { "" } else { ", " }
    );
    db.query_one(&sql, &[&url, &secret, &pattern])
        .unwrap_or_else(|e| panic!("webhook_create: {}", db_message(&e)))
        .get(0)
}

/// A receiver of one format accepts the webhook's real delivery and rejects the same request
/// tampered with; returns the request it was sent (captured by a recorder with the same
/// webhook settings).
fn accepts_and_rejects_tampering(
    rx: &mut ExampleReceiver,
    secret: &str,
    format: &str,
    tamper: impl Fn(&mut Vec<(String, String)>, &mut Vec<u8>),
) -> (i64, RecordedRequest) {
    let mut db = connect_shared();
    let prefix = unique("fmt");
    let webhook = create(&mut db, &rx.url(), secret, &format!("{prefix}.*"), format);
    let recorder = Receiver::always(Reply::ok());
    create(
        &mut db,
        &recorder.url(),
        secret,
        &format!("{prefix}.*"),
        format,
    );
    db.execute(
        "SELECT webhook_emit($1, $2::text::jsonb)",
        &[&format!("{prefix}.fatura.paga"), &DATA],
    )
    .unwrap();

    let line = rx.next_line("genuine delivery");
    assert_eq!(line["result"], "accepted", "{line}{}", rx.output());
    let delivery = last_delivery(&mut db, webhook);
    wait_for_status(&mut db, delivery, "succeeded", DEADLINE);

    let captured = recorder.wait_for(1, DEADLINE).remove(0);
    let mut headers = captured.headers.clone();
    let mut body = captured.body.clone();
    tamper(&mut headers, &mut body);
    assert_eq!(post(rx.port, &headers, &body).0, 401, "{}", rx.output());
    let line = rx.next_line("tampered request");
    assert_eq!(line["result"], "rejected", "{line}");
    (webhook, captured)
}

/// The body with one character of the data changed ("José" → "Jose").
fn tamper_body(_: &mut Vec<(String, String)>, body: &mut Vec<u8>) {
    let text = String::from_utf8(body.clone()).unwrap();
    assert!(text.contains("José"), "no data to tamper with in {text}");
    *body = text.replacen("José", "Jose", 1).into_bytes();
}

fn secret_for(db: &mut Client) -> String {
    query_string(db, "SELECT webhook_generate_secret()")
}

#[test]
fn default_format_bytes_are_unchanged() {
    let mut db = connect_shared();
    let receiver = Receiver::always(Reply::ok());
    let prefix = unique("fmtdefault");
    let webhook = create(
        &mut db,
        &receiver.url(),
        "plain-secret",
        &format!("{prefix}.*"),
        "",
    );
    db.execute(
        "SELECT webhook_emit($1, $2::text::jsonb)",
        &[&format!("{prefix}.fatura.paga"), &DATA],
    )
    .unwrap();
    let request = receiver.wait_for(1, DEADLINE).remove(0);
    let row = db
        .query_one(
            "SELECT event_id::text, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), body \
               FROM webhook_delivery WHERE webhook_id = $1",
            &[&webhook],
        )
        .unwrap();
    let (event_id, _created, stored): (String, String, String) =
        (row.get(0), row.get(1), row.get(2));
    let body = String::from_utf8(request.body.clone()).unwrap();
    assert_eq!(body, stored, "the body sent is the body stored");
    // What 0.4.0 sends: id, event, timestamp, data; compact; numbers and UTF-8 text as
    // Postgres wrote them (jsonb's key order).
    let timestamp = body
        .split("\"timestamp\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap();
    assert_eq!(
        body,
        format!(
            r#"{{"id":"{event_id}","event":"{prefix}.fatura.paga","timestamp":"{timestamp}","data":{{"2":"dois","10":"dez","obs":"linha\nnova\ttab","nada":null,"nome":"José da Silva 🎉","ativo":true,"itens":[{{"qtd":2,"sku":"A\"1\\","preco":10.00}}],"lista":[],"valor":199.90,"vazio":{{}},"grande":12345678901234567,"desconto":0.10}}}}"#
        )
    );
    // Today's headers, nothing more: the signature header is sha256=<hex> over the body.
    let mut names: Vec<String> = request
        .headers
        .iter()
        .map(|(name, _)| name.to_ascii_lowercase())
        .filter(|name| {
            ![
                "host",
                "content-length",
                "connection",
                "accept-encoding",
                "accept",
            ]
            .contains(&name.as_str())
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "content-type",
            "user-agent",
            "webhook-id",
            "webhook-signature",
            "webhook-timestamp",
            "x-delivery-id",
            "x-event-id",
            "x-event-type",
            "x-webhook-id",
            "x-webhook-signature",
            "x-webhook-timestamp"
        ],
        "{:?}",
        request.headers
    );
    let signature = header(&request, "X-Webhook-Signature").unwrap();
    assert!(signature.starts_with("sha256="), "{signature}");
    assert!(verify_hex("plain-secret", &request.body, signature));
    assert!(verify_standard(
        "plain-secret",
        &event_id,
        header(&request, "webhook-timestamp").unwrap(),
        &request.body,
        header(&request, "webhook-signature").unwrap()
    ));
}

#[test]
fn express_json_receiver_accepts_javascript_numbers() {
    let mut db = connect_shared();
    let secret = secret_for(&mut db);
    let mut rx = start(Runtime::Node, "express/receiver.js", &secret);
    let (_, captured) = accepts_and_rejects_tampering(
        &mut rx,
        &secret,
        "json_numbers => 'javascript'",
        tamper_body,
    );
    let body = String::from_utf8(captured.body).unwrap();
    assert!(body.contains(r#""valor":199.9,"#), "{body}");
    // Integer-like keys first, as JavaScript enumerates them.
    assert!(
        body.contains(r#""data":{"2":"dois","10":"dez","obs""#),
        "{body}"
    );

    // The same receiver rejects the default format's 199.90 (why the setting exists).
    let prefix = unique("fmtexact");
    let exact = create(&mut db, &rx.url(), &secret, &format!("{prefix}.*"), "");
    one_attempt_only(&mut db, exact);
    db.execute(
        "SELECT webhook_emit($1, '{\"valor\": 199.90}')",
        &[&format!("{prefix}.x")],
    )
    .unwrap();
    assert_eq!(rx.next_line("exact numbers")["result"], "rejected");
}

#[test]
fn flask_receiver_accepts_python_sorted_json_in_bare_hex() {
    let mut db = connect_shared();
    let secret = secret_for(&mut db);
    let mut rx = start(Runtime::Python, "python/flask_receiver.py", &secret);
    let format = "signature_header => 'X-Signature', signature_format => 'hex', \
                  signature_input => 'python_sorted_json', \
                  envelope => '{\"event\": \"event_type\", \"timestamp\": \"created_at\"}'";
    let (_, captured) = accepts_and_rejects_tampering(&mut rx, &secret, format, tamper_body);
    let body = String::from_utf8(captured.body.clone()).unwrap();
    assert!(
        body.contains(r#","event_type":""#) && body.contains(r#","created_at":""#),
        "{body}"
    );
    let signature = header(&captured, "X-Signature").unwrap();
    assert_eq!(signature.len(), 64, "bare hex: {signature}");
    assert!(header(&captured, "X-Webhook-Signature").is_none());
}

#[test]
fn php_receiver_accepts_bare_hex_over_the_body() {
    let mut db = connect_shared();
    let secret = secret_for(&mut db);
    let mut rx = start(Runtime::Php, "php/hex_receiver.php", &secret);
    let format = "signature_header => 'X-Signature', signature_format => 'hex'";
    let (webhook, captured) = accepts_and_rejects_tampering(&mut rx, &secret, format, tamper_body);
    assert!(String::from_utf8(captured.body).unwrap().contains("199.90"));
    // A manual retry and a ping are signed in the webhook's format too (the default
    // sha256=<hex> would be rejected by this receiver).
    let delivery = last_delivery(&mut db, webhook);
    let retried: String = db
        .query_one("SELECT status FROM webhook_retry($1)", &[&delivery])
        .unwrap()
        .get(0);
    assert_eq!(retried, "succeeded");
    assert_eq!(rx.next_line("webhook_retry")["result"], "accepted");
    let pinged: bool = db
        .query_one("SELECT succeeded FROM webhook_ping($1)", &[&webhook])
        .unwrap()
        .get(0);
    assert!(pinged, "{}", rx.output());
    assert_eq!(rx.next_line("webhook_ping")["result"], "accepted");
}

#[test]
fn php_receiver_accepts_a_shared_token() {
    let token = "tok_3f9a1c7e5b2d";
    let mut rx = start(Runtime::Php, "php/token_receiver.php", token);
    let format = "signature_header => 'X-Webhook-Token', signature_format => 'secret', \
                  envelope => '{\"event\": \"evento\", \"data\": \"dados\", \"id\": null}'";
    let (_, captured) = accepts_and_rejects_tampering(&mut rx, token, format, |headers, _| {
        for (name, value) in headers.iter_mut() {
            if name.eq_ignore_ascii_case("X-Webhook-Token") {
                *value = "tok_guessed".to_string();
            }
        }
    });
    let body = String::from_utf8(captured.body).unwrap();
    assert!(
        body.starts_with(r#"{"evento":""#) && body.contains(r#","dados":{"#),
        "{body}"
    );
}

#[test]
fn a_delivery_whose_format_cannot_be_honoured_is_refused_with_the_reason() {
    let mut db = connect_shared();
    let receiver = Receiver::always(Reply::ok());
    let prefix = unique("fmtrefused");
    // Python refuses integers longer than 4300 digits; JavaScript reads 1e400 as Infinity.
    let python = create(
        &mut db,
        &receiver.url(),
        "k",
        &format!("{prefix}.py"),
        "signature_format => 'hex', signature_input => 'python_sorted_json'",
    );
    let javascript = create(
        &mut db,
        &receiver.url(),
        "k",
        &format!("{prefix}.js"),
        "json_numbers => 'javascript'",
    );
    let long = format!("{{\"n\": {}}}", "7".repeat(5000));
    db.execute(
        "SELECT webhook_emit($1, $2::text::jsonb)",
        &[&format!("{prefix}.py"), &long],
    )
    .unwrap();
    db.execute(
        "SELECT webhook_emit($1, '{\"n\": 1e400}')",
        &[&format!("{prefix}.js")],
    )
    .unwrap();
    for (webhook, expected) in [
        (python, "python_sorted_json"),
        (javascript, "beyond JavaScript's range"),
    ] {
        let delivery = last_delivery(&mut db, webhook);
        wait_for_status(&mut db, delivery, "failed", DEADLINE);
        let row = db
            .query_one(
                "SELECT d.attempts, d.error, a.error FROM webhook_delivery d \
                   JOIN webhook_attempt a ON a.delivery_id = d.id WHERE d.id = $1",
                &[&delivery],
            )
            .unwrap();
        let (attempts, error, attempt_error): (i32, String, String) =
            (row.get(0), row.get(1), row.get(2));
        assert_eq!(attempts, 1);
        assert!(
            error.contains(expected) && error.starts_with("not sent"),
            "{error}"
        );
        assert_eq!(error, attempt_error);
    }
    assert_eq!(receiver.count(), 0, "nothing was sent");
}

#[test]
fn a_body_queued_before_a_switch_to_javascript_is_not_sent_as_if_it_were_javascript() {
    let mut db = connect_shared();
    let receiver = Receiver::always(Reply::status(500));
    let prefix = unique("fmtswitch");
    let webhook = create(&mut db, &receiver.url(), "k", &format!("{prefix}.*"), "");
    db.execute(
        "UPDATE webhook SET retry_schedule = '{0s,1h}' WHERE id = $1",
        &[&webhook],
    )
    .unwrap();
    db.execute(
        "SELECT webhook_emit($1, '{\"valor\": 199.90}')",
        &[&format!("{prefix}.x")],
    )
    .unwrap();
    let delivery = last_delivery(&mut db, webhook);
    receiver.wait_for(1, DEADLINE);
    wait_until("the first attempt to be recorded", DEADLINE, || {
        let attempts: i32 = db
            .query_one(
                "SELECT attempts FROM webhook_delivery WHERE id = $1",
                &[&delivery],
            )
            .unwrap()
            .get(0);
        (attempts == 1).then_some(())
    });
    // Switched while its retry waits: its body still has 199.90, which an Express receiver
    // verifying JSON.stringify(req.body) would reject. It is refused, with the reason.
    db.execute(
        "SELECT webhook_update($1, json_numbers => 'javascript')",
        &[&webhook],
    )
    .unwrap();
    let row = db
        .query_one("SELECT status, error FROM webhook_retry($1)", &[&delivery])
        .unwrap();
    let (status, error): (String, String) = (row.get(0), row.get(1));
    assert_eq!(
        status, "pending",
        "a manual attempt does not end the schedule"
    );
    assert!(
        error.starts_with("not sent") && error.contains("queued"),
        "{error}"
    );
    assert_eq!(receiver.count(), 1, "the manual attempt sent nothing");
}
