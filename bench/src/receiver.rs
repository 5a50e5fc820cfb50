//! The benchmark receiver: a keep-alive HTTP/1.1 server on 127.0.0.1, one thread per
//! connection (the worker opens at most `webhook.concurrency` connections, so threads are
//! cheap here and blocking I/O is the fastest path: no runtime, no wake-ups).
//!
//! `Fast` answers every request `200 OK` with an empty body as soon as the body is read.
//! `Hang` reads requests and never answers (the "receiver that never answers").
//!
//! Every request is counted and time-stamped on receipt. A body that carries `"seq":<n>`
//! (and optionally `"sent_at":<unix µs>`) is also recorded as a latency sample.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

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
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Listens on 127.0.0.1:`port` (0: any free port).
    pub fn start(port: u16, mode: Mode) -> io::Result<Receiver> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let port = listener.local_addr()?.port();
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (stats, stop, open) = (stats.clone(), stop.clone(), open.clone());
            thread::Builder::new()
                .name(format!("recv-{port}"))
                .spawn(move || accept_loop(listener, mode, stats, stop, open))?
        };
        Ok(Receiver {
            port,
            mode,
            stats,
            stop,
            open,
            acceptor: Some(acceptor),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Closes every open connection (a hanging receiver's clients then see a reset at once)
    /// and stops accepting.
    pub fn stop(&mut self) {
        if self.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        // Unblock accept().
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(
    listener: TcpListener,
    mode: Mode,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        if let Ok(clone) = stream.try_clone() {
            let mut open = open.lock().unwrap();
            // Forget connections that are gone, so the list does not grow without bound.
            open.retain(|s| s.peer_addr().is_ok());
            open.push(clone);
        }
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let stats = stats.clone();
        let _ = thread::Builder::new()
            .name("recv-conn".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let _ = serve(stream, mode, &stats);
            });
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

/// Serves one keep-alive connection until the peer closes it.
fn serve(mut stream: TcpStream, mode: Mode, stats: &Stats) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut len = 0;
    loop {
        // Every complete request already buffered (pipelining works too).
        while let Some(head_end) = find(&buf[..len], b"\r\n\r\n") {
            let head = &buf[..head_end];
            let body_len = header_value(head, b"content-length")
                .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let close =
                header_value(head, b"connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
            let total = head_end + 4 + body_len;
            if total > buf.len() {
                buf.resize(total, 0);
            }
            if len < total {
                break;
            }
            let received = now_us();
            stats.record(received, &buf[head_end + 4..total]);
            if mode == Mode::Fast {
                stream.write_all(OK)?;
                if close {
                    return Ok(());
                }
            }
            buf.copy_within(total..len, 0);
            len -= total;
        }
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The value of header `name` (lowercase) in a request or response head.
pub fn header_value<'a>(head: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        if line[..colon].eq_ignore_ascii_case(name) {
            Some(trim(&line[colon + 1..]))
        } else {
            None
        }
    })
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = s {
        s = rest;
    }
    s
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

    #[test]
    fn parses_headers_and_numbers() {
        let head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length:  12 \r\nConnection: close";
        assert_eq!(header_value(head, b"content-length"), Some(&b"12"[..]));
        assert_eq!(header_value(head, b"connection"), Some(&b"close"[..]));
        assert_eq!(header_value(head, b"x-missing"), None);
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
}
