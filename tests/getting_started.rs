//! docs/GETTING_STARTED.md walked the way a newcomer walks it, in order: the `ini` settings of
//! step 2 in a fresh cluster's postgresql.conf, the listener of step 3 started from its shell
//! block (its `export` lines as its environment), then every SQL block against that cluster.
//! The listener's verdicts must say every delivery arrived signed with the secret it was given.
//! (Steps 1's install and the restart are what the harness does for every test.)

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use webhook_ext_tests::*;

const DEADLINE: Duration = Duration::from_secs(60);
/// The port the guide's listener and URL use; the walk swaps in a free one.
const GUIDE_PORT: &str = "9000";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `webhook-listen` binary that `cargo run -p webhook_listen` runs (scripts/test.sh builds
/// it in its first stage).
fn listener_binary() -> PathBuf {
    let binary = repo().join("target/debug/webhook-listen");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build -p webhook_listen` first",
        binary.display()
    );
    binary
}

/// Starts the listener as the guide's shell block says, on `port`; its output is collected.
fn start_listener(shell: &str, port: u16) -> (Child, Arc<Mutex<String>>) {
    let mut environment = Vec::new();
    let mut arguments = None;
    for line in shell.lines().map(|l| l.split(" #").next().unwrap().trim()) {
        if let Some(assignment) = line.strip_prefix("export ") {
            let (name, value) = assignment.split_once('=').unwrap();
            environment.push((
                name.to_string(),
                value.trim_matches(['\'', '"']).to_string(),
            ));
        } else if let Some(rest) = line.strip_prefix("cargo run -q -p webhook_listen -- ") {
            arguments = Some(rest.replace(GUIDE_PORT, &port.to_string()));
        }
    }
    for (name, value) in &environment {
        assert!(
            !value.contains('$'),
            "the guide's {name} is computed by the shell ({value}); the walk cannot follow it"
        );
    }
    let arguments = arguments.expect("step 3 starts the listener with cargo run -p webhook_listen");
    let mut child = Command::new(listener_binary())
        .args(arguments.split_whitespace())
        .envs(environment)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start webhook-listen");
    let output = Arc::new(Mutex::new(String::new()));
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let output = Arc::clone(&output);
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let mut text = output.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
    }
    (child, output)
}

/// The listener's verdict lines (`event:` and `signature:`) per delivery, in order.
fn verdicts(output: &str) -> Vec<(String, String)> {
    let mut verdicts = Vec::new();
    let mut event = None;
    for line in output.lines() {
        if let Some(name) = line.strip_prefix("event:") {
            event = Some(name.trim().to_string());
        } else if let Some(signature) = line.strip_prefix("signature:") {
            verdicts.push((
                event.take().unwrap_or_default(),
                signature.trim().to_string(),
            ));
        }
    }
    verdicts
}

#[test]
fn the_getting_started_guide_walked_in_order_delivers_signed_events() {
    let guide = std::fs::read_to_string(repo().join("docs/GETTING_STARTED.md")).unwrap();
    let blocks = fenced_blocks(&guide);
    let settings = blocks
        .iter()
        .find(|b| b.language == "ini")
        .expect("step 2's postgresql.conf settings");
    let cluster = Cluster::start("guide", &settings.text);

    let port = free_port();
    let shell = blocks
        .iter()
        .find(|b| b.language == "bash" && b.text.contains("webhook_listen"))
        .expect("step 3's listener");
    let (mut listener, output) = start_listener(&shell.text, port);
    let mut db = cluster.connect();
    wait_until("the listener to listen", DEADLINE, || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });

    for block in blocks.iter().filter(|b| b.language == "sql") {
        let sql = block.text.replace(GUIDE_PORT, &port.to_string());
        db.batch_execute(&sql)
            .unwrap_or_else(|e| panic!("{}\n{sql}", db_message(&e)));
        // What the guide shows next is what it delivered: let it arrive first.
        if sql.contains("INSERT INTO cliente") {
            wait_until("the guide's two events", DEADLINE, || {
                (verdicts(&output.lock().unwrap()).len() >= 2).then_some(())
            });
        }
    }
    // The last block redelivers the newest delivery by hand.
    wait_until("the redelivery", DEADLINE, || {
        (verdicts(&output.lock().unwrap()).len() >= 3).then_some(())
    });
    let _ = listener.kill();
    let _ = listener.wait();

    let output = output.lock().unwrap().clone();
    let verdicts = verdicts(&output);
    let mut events: Vec<&str> = verdicts.iter().map(|(event, _)| event.as_str()).collect();
    // The INSERT's and the UPDATE's events are attempted at once, on two threads: either may
    // arrive first. The redelivery comes after both.
    events[..2].sort_unstable();
    assert_eq!(
        events,
        ["cliente.atualizado", "cliente.criado", "cliente.atualizado"],
        "{output}"
    );
    for (event, signature) in &verdicts {
        assert!(
            signature.starts_with("valid"),
            "the listener found the signature of {event} {signature}:\n{output}"
        );
    }
}
