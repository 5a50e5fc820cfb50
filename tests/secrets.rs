//! Secrets never leak: not into the server log (at debug1, verbose), the delivery and
//! attempt tables, the status and stats views, nor any result or error a user sees. Its own
//! cluster, because it reads the log.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use webhook_ext_tests::*;

const DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// The full text of every error (message, detail, hint, context...).
fn error_text(result: Result<postgres::Row, postgres::Error>) -> String {
    let err = result.expect_err("this call should fail");
    format!("{err:?} {}", db_message(&err))
}

#[test]
fn secrets_never_appear_in_the_log_tables_status_or_errors() {
    // debug1 and verbose errors: the more the server says, the more a leak would show.
    let (cluster, mut db) = Cluster::start_installed(
        "secrets",
        "log_min_messages = debug1\nlog_error_verbosity = verbose",
    );

    let key = format!("leak-canary-{:012}", std::process::id());
    assert_eq!(key.len(), 24);
    let secret = format!("whsec_{}", STANDARD.encode(key.as_bytes()));
    // Positive controls: the needles are the forms the secret really takes.
    assert_eq!(
        STANDARD.encode(b"Many hands make light work."),
        "TWFueSBoYW5kcyBtYWtlIGxpZ2h0IHdvcmsu"
    );
    let decoded: String = db
        .query_one(
            "SELECT convert_from(decode(substr($1, 7), 'base64'), 'UTF8')",
            &[&secret],
        )
        .unwrap()
        .get(0);
    assert_eq!(decoded, key, "the HMAC key of the secret is the canary");
    let needles = [
        secret.clone(),
        STANDARD.encode(key.as_bytes()),
        key.clone(),
        hex::encode(key.as_bytes()),
    ];

    let ok = Receiver::always(Reply::ok());
    let failing = Receiver::always(Reply::status(500));
    let hanging = Receiver::always(Reply::Hang);
    let redirecting = Receiver::always(Reply::status(302).with_header("Location", ok.url()));
    let blocked = format!("http://127.0.0.2:{}/hook", ok.port());
    let mut seen = Vec::new();

    let mut ids = Vec::new();
    let mut hooks = Vec::new();
    for url in [
        ok.url(),
        failing.url(),
        hanging.url(),
        redirecting.url(),
        blocked,
    ] {
        let hook = hook(&mut db, &url, Some(&secret), Some("{0s}"));
        ids.push(hook.emit(&mut db));
        hooks.push(hook);
    }
    let outcomes: Vec<Finished> = ids.iter().map(|&id| wait_finished(&mut db, id)).collect();
    let statuses: Vec<&str> = outcomes.iter().map(|d| d.status.as_str()).collect();
    assert_eq!(
        statuses,
        ["succeeded", "failed", "failed", "failed", "failed"]
    );
    assert!(
        outcomes[2].error().contains("timed out"),
        "{:?}",
        outcomes[2]
    );
    assert!(
        outcomes[4].error().contains("network policy"),
        "{:?}",
        outcomes[4]
    );
    let got = ok.wait_for(1, DEADLINE);
    assert!(
        verify_hex(
            &secret,
            &got[0].body,
            got[0].header("X-Webhook-Signature").unwrap()
        ),
        "the receiver is signed for with the canary secret"
    );

    // A manual retry, a ping and refused calls: their results and errors are shown to users.
    let retried = db
        .query_one("SELECT r::text FROM webhook_retry($1) r", &[&ids[1]])
        .unwrap();
    seen.push(retried.get::<_, String>(0));
    let pinged = db
        .query_one("SELECT p::text FROM webhook_ping($1) p", &[&hooks[0].id])
        .unwrap();
    seen.push(pinged.get::<_, String>(0));
    seen.push(error_text(db.query_one(
        "SELECT webhook_update($1, secret => '')",
        &[&hooks[0].id],
    )));
    seen.push(error_text(db.query_one(
        "SELECT webhook_create($1, secret => $2, verify => true)",
        &[&failing.url(), &secret],
    )));
    seen.push(error_text(db.query_one(
        "SELECT webhook_create($1, secret => $2, verify => true)",
        &[&hanging.url(), &secret],
    )));
    let updated = db
        .query_one(
            "SELECT u::text FROM webhook_update($1, description => 'changed') u",
            &[&hooks[0].id],
        )
        .unwrap();
    seen.push(updated.get::<_, String>(0));
    assert_eq!(
        failing.count(),
        3,
        "the delivery, its manual retry and the verify call"
    );

    for sql in [
        "SELECT coalesce(string_agg(d::text, E'\\n'), '') FROM webhook_delivery d",
        "SELECT coalesce(string_agg(a::text, E'\\n'), '') FROM webhook_attempt a",
        "SELECT s::text FROM webhook_worker_status() s",
        "SELECT coalesce(string_agg(s::text, E'\\n'), '') FROM webhook_stats s",
    ] {
        seen.push(query_string(&mut db, sql));
    }
    let stored = query_string(&mut db, "SELECT string_agg(secret, ' ') FROM webhook");
    assert!(stored.contains(&secret), "the webhooks hold the canary");
    let log = cluster.server_log();
    assert!(
        log.contains("webhook_ext worker started"),
        "the log is read"
    );
    seen.push(log);

    for text in &seen {
        for needle in &needles {
            assert!(
                !text.contains(needle.as_str()),
                "the secret ({needle}) leaked into:\n{text}"
            );
        }
    }
    assert_worker_unharmed(&mut db, &cluster.server_log());
}
