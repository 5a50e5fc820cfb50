//! The benchmark receiver: a keep-alive HTTP/1.1 server on 127.0.0.1, one thread per
//! connection (the worker opens at most `webhook.concurrency` connections, so threads are
//! cheap here and blocking I/O is the fastest path: no runtime, no wake-ups). It is the
//! workspace's test server (`webhook_listen::Server` and its request reader) with a handler
//! that only counts.
//!
//! `Fast` answers every request `200 OK` with an empty body as soon as the body is read.
//! `Hang` reads requests and never answers (the "receiver that never answers").
//!
//! Every request is counted and time-stamped on receipt. A body that carries `"seq":<n>`
//! (and optionally `"sent_at":<unix µs>`) is also recorded as a latency sample.

use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use webhook_listen::{serve_requests, Next, Options, Server};

use crate::util::now_us;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Fast,
    Hang,
}

/// One latency sample: the event's sequence number, its `sent_at` (0 if absent) and the
/// receipt time, both unix microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub seq: u64,
    pub sent_at_us: u64,
    pub received_us: u64,
}

#[derive(Default)]
pub struct Stats {
    requests: AtomicU64,
    connections: AtomicU64,
    last_us: AtomicU64,
    samples: Mutex<Vec<Sample>>,
}

impl Stats {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Receipt time of the last request since the last reset (unix µs, 0 if none).
    pub fn last_us(&self) -> u64 {
        self.last_us.load(Ordering::Relaxed)
    }

    pub fn take_samples(&self) -> Vec<Sample> {
        std::mem::take(&mut *self.samples.lock().unwrap())
    }

    pub fn reset(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.connections.store(0, Ordering::Relaxed);
        self.last_us.store(0, Ordering::Relaxed);
        self.samples.lock().unwrap().clear();
    }

    fn record(&self, received_us: u64, body: &[u8]) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.last_us.fetch_max(received_us, Ordering::Relaxed);
        if let Some(seq) = json_number(body, b"\"seq\":") {
            let sent_at_us = json_number(body, b"\"sent_at\":").unwrap_or(0);
            self.samples.lock().unwrap().push(Sample {
                seq,
                sent_at_us,
                received_us,
            });
        }
    }
}

/// A running receiver; stopped (every connection closed) on drop.
pub struct Receiver {
    pub port: u16,
    pub mode: Mode,
    pub stats: Arc<Stats>,
    server: Server,
}

impl Receiver {
    /// Listens on 127.0.0.1:`port` (0: any free port).
    pub fn start(port: u16, mode: Mode) -> io::Result<Receiver> {
        let stats = Arc::new(Stats::default());
        let options = Options {
            name: "recv".into(),
            // Threads are many (one per worker connection) and shallow.
            stack_size: Some(256 * 1024),
        };
        let server = {
            let stats = stats.clone();
            Server::bind(port, options, move |mut stream, _| {
                stats.connections.fetch_add(1, Ordering::Relaxed);
                let _ = serve(&mut stream, mode, &stats);
            })?
        };
        Ok(Receiver {
            port: server.port(),
            mode,
            stats,
            server,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Closes every open connection (a hanging receiver's clients then see a reset at once)
    /// and stops accepting.
    pub fn stop(&mut self) {
        self.server.stop();
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

/// Serves one keep-alive connection until the peer closes it. Pipelined requests already
/// read are served from the connection's buffer; nothing is allocated per request.
fn serve(stream: &mut TcpStream, mode: Mode, stats: &Stats) -> io::Result<()> {
    serve_requests(stream, |request, stream| {
        stats.record(now_us(), request.body);
        match mode {
            Mode::Fast => stream.write_all(OK)?,
            // Read on, never answer, until the peer goes (also after `Connection: close`).
            Mode::Hang if request.close => {
                io::copy(stream, &mut io::sink())?;
            }
            Mode::Hang => {}
        }
        Ok(Next::KeepAlive)
    })
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The unsigned integer right after `key` (e.g. `"seq":`) in a JSON text, if any.
pub fn json_number(body: &[u8], key: &[u8]) -> Option<u64> {
    let start = find(body, key)? + key.len();
    let digits: Vec<u8> = body[start..]
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn parses_numbers() {
        let body = br#"{"id":"a","data":{"seq": 42, "sent_at":1700000000000000}}"#;
        assert_eq!(json_number(body, b"\"seq\":"), Some(42));
        assert_eq!(
            json_number(body, b"\"sent_at\":"),
            Some(1_700_000_000_000_000)
        );
        assert_eq!(json_number(body, b"\"nope\":"), None);
    }

    #[test]
    fn answers_keep_alive_requests_and_records_samples() {
        let receiver = Receiver::start(0, Mode::Fast).unwrap();
        let mut stream = TcpStream::connect(("127.0.0.1", receiver.port)).unwrap();
        for seq in 0..3 {
            let body = format!(r#"{{"data":{{"seq":{seq},"sent_at":5}}}}"#);
            let req = format!(
                "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(req.as_bytes()).unwrap();
            let mut answer = [0u8; OK.len()];
            stream.read_exact(&mut answer).unwrap();
            assert_eq!(&answer[..], OK);
        }
        assert_eq!(receiver.stats.requests(), 3);
        let samples = receiver.stats.take_samples();
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[2].seq, 2);
        assert_eq!(samples[2].sent_at_us, 5);
    }

    #[test]
    fn answers_pipelined_requests_in_order() {
        let receiver = Receiver::start(0, Mode::Fast).unwrap();
        let mut stream = TcpStream::connect(("127.0.0.1", receiver.port)).unwrap();
        let burst: String = (0..3)
            .map(|seq| {
                let body = format!(r#"{{"data":{{"seq":{seq}}}}}"#);
                format!(
                    "POST /x HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            })
            .collect();
        stream.write_all(burst.as_bytes()).unwrap();
        let mut answers = vec![0u8; 3 * OK.len()];
        stream.read_exact(&mut answers).unwrap();
        assert_eq!(answers, OK.repeat(3));
        let seqs: Vec<u64> = receiver
            .stats
            .take_samples()
            .iter()
            .map(|s| s.seq)
            .collect();
        assert_eq!(seqs, [0, 1, 2]);
    }
}
