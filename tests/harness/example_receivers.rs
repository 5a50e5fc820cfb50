//! The example receivers of `examples/receivers/` (what partners copy), run as real processes
//! on 127.0.0.1, and plain HTTP requests sent to them as given: one definition each, shared by
//! the suites that run them (tests/receivers.rs, tests/wire_formats.rs). Their runtimes (node,
//! php, the Python venv) come from `scripts/setup.sh`; a missing one fails the test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::free_port;

/// What to do when an example receiver's runtime is missing.
pub const RECEIVERS_SETUP_HINT: &str =
    "run `bash scripts/setup.sh` (it calls scripts/setup-receivers.sh)";

/// How long an example receiver may take to start listening, to log a request or to answer.
const RECEIVER_DEADLINE: Duration = Duration::from_secs(20);

/// `examples/receivers/`.
pub fn receivers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("examples/receivers")
}

/// What runs an example receiver's script.
#[derive(Clone, Copy, Debug)]
pub enum Runtime {
    Node,
    /// The Python of the venv `scripts/setup-receivers.sh` makes (standardwebhooks, Flask).
    Python,
    /// PHP's built-in server, with the script as its router.
    Php,
}

impl Runtime {
    /// The program: `node`, the venv's python or `php`.
    pub fn program(self) -> PathBuf {
        match self {
            Runtime::Node => PathBuf::from("node"),
            Runtime::Python => receivers_dir().join("python/.venv/bin/python"),
            Runtime::Php => PathBuf::from("php"),
        }
    }

    /// The command line that serves `script` (relative to `examples/receivers/`) on `port`.
    /// Node and Python scripts take their port from the environment (`PORT`); PHP's server
    /// from its arguments.
    fn command(self, script: &str, port: u16) -> Command {
        let mut command = Command::new(self.program());
        if let Runtime::Php = self {
            command.arg("-S").arg(format!("127.0.0.1:{port}"));
        }
        command.arg(receivers_dir().join(script));
        command
    }
}

/// Collects a child's output lines as they come.
fn collect(stream: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// A running example receiver; killed on drop, also when a test panics. It logs one JSON line
/// per request on stdout (what it did with it: `result`, and `reason` for a rejection).
pub struct ExampleReceiver {
    script: String,
    child: Child,
    pub port: u16,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// JSON lines already handed out by [`ExampleReceiver::next_line`].
    seen: usize,
}

impl ExampleReceiver {
    /// Serves `script` (relative to `examples/receivers/`) with `runtime` on a free port, with
    /// `PORT` and `env` in its environment; returns once it listens.
    pub fn start(runtime: Runtime, script: &str, env: &[(&str, &str)]) -> ExampleReceiver {
        // A port picked this way can be taken in between: try again on a fresh one.
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut child = runtime
                .command(script, port)
                .env("PORT", port.to_string())
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start the {script} receiver ({}: {e}): {RECEIVERS_SETUP_HINT}",
                        runtime.program().display()
                    )
                });
            let stdout = collect(child.stdout.take().unwrap());
            let stderr = collect(child.stderr.take().unwrap());
            let mut running = ExampleReceiver {
                script: script.to_string(),
                child,
                port,
                stdout,
                stderr,
                seen: 0,
            };
            // Node and Python print "listening on http://127.0.0.1:PORT"; PHP's built-in
            // server announces "Development Server (http://127.0.0.1:PORT) started" on stderr.
            let ready = format!("http://127.0.0.1:{port}");
            let end = Instant::now() + RECEIVER_DEADLINE;
            loop {
                let announced = |lines: &Mutex<Vec<String>>| {
                    lines.lock().unwrap().iter().any(|l| l.contains(&ready))
                };
                if announced(&running.stdout) || announced(&running.stderr) {
                    return running;
                }
                if let Ok(Some(status)) = running.child.try_wait() {
                    // Let the reader threads catch the last words.
                    std::thread::sleep(Duration::from_millis(100));
                    last_error = format!("exited with {status}: {}", running.output());
                    break;
                }
                if Instant::now() > end {
                    panic!(
                        "the {script} receiver did not start listening ({RECEIVERS_SETUP_HINT}): {}",
                        running.output()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("the {script} receiver did not start ({RECEIVERS_SETUP_HINT}): {last_error}");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/webhooks", self.port)
    }

    /// Everything it printed so far, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap().join("\n")
        )
    }

    /// The JSON lines logged so far (one per request).
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }

    /// Waits for the next JSON line: what the receiver did with the next request.
    pub fn next_line(&mut self, step: &str) -> Value {
        let end = Instant::now() + RECEIVER_DEADLINE;
        loop {
            if let Some(line) = self.json_lines().get(self.seen) {
                self.seen += 1;
                return line.clone();
            }
            if Instant::now() > end {
                panic!(
                    "{step}: the {} receiver logged nothing{}",
                    self.script,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the receiver and reaps it (again on drop, harmlessly).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ExampleReceiver {
    fn drop(&mut self) {
        self.kill();
    }
}

/// POSTs a request to `/webhooks` on `port` over a plain HTTP/1.1 connection; returns the
/// status and the whole response. Framing headers (Host, Connection, Content-Length,
/// Transfer-Encoding, Expect) are recomputed, everything else is sent as given.
pub fn post(port: u16, headers: &[(String, String)], body: &[u8]) -> (u16, String) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(RECEIVER_DEADLINE)).unwrap();
    let mut head = format!(
        "POST /webhooks HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        let framing = [
            "host",
            "connection",
            "content-length",
            "transfer-encoding",
            "expect",
        ];
        if !framing.contains(&name.to_ascii_lowercase().as_str()) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(body).unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {answer:?}"));
    (status, answer.into_owned())
}
