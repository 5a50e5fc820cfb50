//! The SSRF policy end to end: private and loopback targets refused at connect time, in
//! every spelling, until `webhook.allowed_networks` (reloaded, no restart) lets them through.
//! Its own cluster, because it changes settings.

use std::time::Duration;

use webhook_ext_tests::*;

const DEADLINE: Duration = Duration::from_secs(30);

/// Sends one event to each URL (schedule `{0s,1s,1s}`); returns what is wrong with each
/// outcome, expecting a refusal by the network policy on the first attempt.
fn policy_refusals(db: &mut Client, urls: &[String]) -> Vec<String> {
    let started: Vec<(&String, i64)> = urls
        .iter()
        .map(|url| {
            let hook = hook(db, url, None, Some("{0s,1s,1s}"));
            (url, hook.emit(db))
        })
        .collect();
    let mut problems = Vec::new();
    for (url, id) in started {
        let d = wait_finished(db, id);
        let rows = attempts(db, id).len();
        let refused = d.status == "failed"
            && d.attempts == 1
            && rows == 1
            && d.response_status.is_none()
            && d.error().contains("network policy")
            && d.duration_ms.is_some_and(|ms| ms < 1_000);
        if !refused {
            problems.push(format!("{url}: {d:?}, {rows} attempt rows"));
        }
    }
    problems
}

#[test]
fn private_targets_are_refused_at_connect_time_until_reload_allows_them() {
    let (cluster, mut db) = Cluster::start_installed("ssrf", "webhook.allowed_networks = ''");
    assert_eq!(query_string(&mut db, "SHOW webhook.allowed_networks"), "");
    let live = Receiver::always(Reply::ok());
    let port = live.port();

    // Targets that can only reach this machine first: a broken policy would show here
    // without sending anything off the host.
    let local: Vec<String> = [
        "127.0.0.1",
        "localhost",
        "2130706433",
        "0x7f.1",
        "[::ffff:127.0.0.1]",
        "[::1]",
        "0.0.0.0",
    ]
    .iter()
    .map(|host| format!("http://{host}:{port}/hook"))
    .collect();
    let problems = policy_refusals(&mut db, &local);
    assert!(
        problems.is_empty(),
        "local targets were not refused by the policy; NOT trying the non-loopback ones: {problems:#?}"
    );
    assert_eq!(live.count(), 0, "no request reached the local receiver");

    let outside: Vec<String> = [
        "169.254.169.254",
        "10.0.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "224.0.0.1",
    ]
    .iter()
    .map(|host| format!("http://{host}/"))
    .collect();
    let problems = policy_refusals(&mut db, &outside);
    assert!(problems.is_empty(), "{problems:#?}");

    // pg_reload_conf() alone lets 127.0.0.1 through, with no restart.
    cluster.reload_with(&[("webhook.allowed_networks", "127.0.0.1/32")]);
    wait_until("the new allowed_networks to be in force", DEADLINE, || {
        let mut fresh = cluster.connect();
        (query_string(&mut fresh, "SHOW webhook.allowed_networks") == "127.0.0.1/32").then_some(())
    });
    let hook = hook(&mut db, &local[0], None, Some("{0s}"));
    let id = hook.emit(&mut db);
    let d = wait_finished(&mut db, id);
    assert_eq!(d.status, "succeeded", "{d:?}");
    assert_eq!(live.count(), 1);
    assert_worker_unharmed(&mut db, &cluster.server_log());
}
