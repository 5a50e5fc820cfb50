//! The baseline load client: N keep-alive connections, each POSTing requests back to back
//! (the same bodies and the same header set the worker sends), or one connection at a fixed
//! rate for latency. Requests are built before the clock starts.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::receiver::find;

#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Per-request round trip (µs), only for paced runs.
    pub latencies_us: Vec<f64>,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A POST of `body` with the headers webhook_ext sends (values of the same length).
pub fn request_bytes(port: u16, path: &str, body: &str, n: u64) -> Vec<u8> {
    let sig: String = format!("{:064x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .chars()
        .take(64)
        .collect();
    format!(
        "POST {path} HTTP/1.1\r\n\
         host: 127.0.0.1:{port}\r\n\
         content-type: application/json\r\n\
         user-agent: webhook_ext/0.2.0\r\n\
         x-webhook-id: 1\r\n\
         x-delivery-id: {n}\r\n\
         x-event-id: 0a0b0c0d-0e0f-4011-9213-{n:012}\r\n\
         x-event-type: bench.throughput\r\n\
         x-webhook-timestamp: 1700000000\r\n\
         x-webhook-signature: sha256={sig}\r\n\
         webhook-id: 0a0b0c0d-0e0f-4011-9213-{n:012}\r\n\
         webhook-timestamp: 1700000000\r\n\
         webhook-signature: v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=\r\n\
         accept: */*\r\n\
         accept-encoding: gzip\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one HTTP response (Content-Length or chunked body); returns its status.
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<u16> {
    let mut len = 0;
    let (head_end, status, chunked, body_len) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(head_end)) => {
                let header = |name: &str| {
                    response
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| h.value)
                };
                let chunked =
                    header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case(b"chunked"));
                let body_len = header("content-length")
                    .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break (head_end, response.code.unwrap_or(0), chunked, body_len);
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        len += n;
    };
    let mut have = len - head_end;
    if chunked {
        // Bodies here are empty or tiny: read until the last-chunk marker.
        let mut rest = buf[head_end..len].to_vec();
        while find(&rest, b"0\r\n\r\n").is_none() {
            let mut more = [0u8; 512];
            let n = stream.read(&mut more)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            rest.extend_from_slice(&more[..n]);
        }
        return Ok(status);
    }
    let mut sink = [0u8; 4096];
    while have < body_len {
        let n = stream.read(&mut sink[..(body_len - have).min(4096)])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        have += n;
    }
    Ok(status)
}

fn connect(port: u16) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// `total` requests over `connections` keep-alive connections, as fast as they go.
pub fn blast(
    port: u16,
    requests: Arc<Vec<Vec<u8>>>,
    connections: usize,
    total: u64,
) -> io::Result<LoadResult> {
    let connections = connections.max(1);
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    // Connect first: the measured time is requests only, as with the worker's warm pool.
    let streams: Vec<TcpStream> = (0..connections)
        .map(|_| connect(port))
        .collect::<io::Result<_>>()?;
    let started = Instant::now();
    let handles: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            let (requests, next, errors) = (requests.clone(), next.clone(), errors.clone());
            thread::spawn(move || {
                let mut buf = vec![0u8; 4096];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let req = &requests[(i as usize) % requests.len()];
                    let ok = stream.write_all(req).is_ok()
                        && matches!(read_response(&mut stream, &mut buf), Ok(200..=299));
                    if !ok {
                        errors.fetch_add(1, Ordering::Relaxed);
                        match connect(port) {
                            Ok(s) => stream = s,
                            Err(_) => break,
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let elapsed = started.elapsed();
    Ok(LoadResult {
        requests: total,
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        latencies_us: Vec::new(),
    })
}

/// One connection, `rate` requests per second for `duration`; records each round trip.
pub fn paced(
    port: u16,
    requests: &[Vec<u8>],
    rate: f64,
    duration: Duration,
) -> io::Result<LoadResult> {
    let mut stream = connect(port)?;
    let mut buf = vec![0u8; 4096];
    let count = (rate * duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut latencies = Vec::with_capacity(count as usize);
    let mut errors = 0;
    let started = Instant::now();
    for i in 0..count {
        let due = started + interval * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let t = Instant::now();
        let req = &requests[(i as usize) % requests.len()];
        if stream.write_all(req).is_ok()
            && matches!(read_response(&mut stream, &mut buf), Ok(200..=299))
        {
            latencies.push(t.elapsed().as_secs_f64() * 1e6);
        } else {
            errors += 1;
            stream = connect(port)?;
        }
    }
    Ok(LoadResult {
        requests: count,
        errors,
        elapsed: started.elapsed(),
        latencies_us: latencies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receiver::{Mode, Receiver};

    #[test]
    fn blast_and_paced_against_the_receiver() {
        let receiver = Receiver::start(0, Mode::Fast).unwrap();
        let reqs: Vec<Vec<u8>> = (0..4)
            .map(|n| request_bytes(receiver.port, "/b", r#"{"a":1}"#, n))
            .collect();
        let result = blast(receiver.port, Arc::new(reqs.clone()), 3, 300).unwrap();
        assert_eq!(result.errors, 0);
        assert_eq!(receiver.stats.requests(), 300);
        let result = paced(receiver.port, &reqs, 200.0, Duration::from_millis(100)).unwrap();
        assert_eq!(result.latencies_us.len(), 20);
    }
}
