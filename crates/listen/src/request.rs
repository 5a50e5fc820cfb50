//! Reading HTTP/1.1 requests off a connection.

use std::io::{self, BufRead, Read, Write};
use std::time::SystemTime;

/// Bounds that keep a misbehaving client from making the receiver buffer without end.
const MAX_LINE: u64 = 16 * 1024;
const MAX_HEADERS: usize = 200;

/// One request as the receiver saw it, recorded once fully read and before it is answered.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// In arrival order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The decoded body (a chunked body is recorded without its framing).
    pub body: Vec<u8>,
    pub received_at: SystemTime,
    /// Which accepted connection carried it: 0 for the first, counting up.
    pub connection_id: u64,
}

impl RecordedRequest {
    /// The first header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    ///
    /// # Panics
    /// If the body is not UTF-8: the sender promises UTF-8 JSON, so tests should fail loudly.
    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).expect("request body is not UTF-8")
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// A request plus whether the client asked to close the connection after the answer.
pub(crate) struct Incoming {
    pub request: RecordedRequest,
    pub close: bool,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Reads one line (CRLF or LF), without its terminator. `None` at end of stream.
fn read_line(input: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    input.take(MAX_LINE).read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.pop() != Some(b'\n') {
        return Err(invalid("line too long or truncated"));
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| invalid("non-UTF-8 request line or header"))
}

fn require_line(input: &mut impl BufRead) -> io::Result<String> {
    read_line(input)?.ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
}

/// Reads the next request; `Ok(None)` when the client closed the connection between requests.
/// `out` is only used to send `100 Continue` to clients that wait for it (curl does for
/// bodies over 1 KiB).
pub(crate) fn read_request(
    input: &mut impl BufRead,
    out: &mut impl Write,
    connection_id: u64,
) -> io::Result<Option<Incoming>> {
    // RFC 9112 §2.2: ignore empty lines before the request line.
    let request_line = loop {
        match read_line(input)? {
            None => return Ok(None),
            Some(line) if line.is_empty() => continue,
            Some(line) => break line,
        }
    };
    let mut parts = request_line.split_ascii_whitespace();
    let (Some(method), Some(path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("malformed request line"));
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(invalid("unsupported HTTP version")),
    };

    let mut headers = Vec::new();
    loop {
        let line = require_line(input)?;
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(invalid("too many headers"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid("malformed header"))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }

    let mut request = RecordedRequest {
        method: method.to_string(),
        path: path.to_string(),
        headers,
        body: Vec::new(),
        received_at: SystemTime::now(),
        connection_id,
    };
    let chunked = request.has_token("transfer-encoding", "chunked");
    let length = match request.header("content-length") {
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| invalid("bad Content-Length"))?,
        ),
        None => None,
    };
    if (chunked || length.unwrap_or(0) > 0) && request.has_token("expect", "100-continue") {
        out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    request.body = if chunked {
        read_chunked(input)?
    } else {
        read_exact(input, length.unwrap_or(0))?
    };
    request.received_at = SystemTime::now();

    let close = if http10 {
        !request.has_token("connection", "keep-alive")
    } else {
        request.has_token("connection", "close")
    };
    Ok(Some(Incoming { request, close }))
}

/// Reads exactly `len` bytes, growing the buffer as data arrives rather than trusting
/// the announced length up front.
fn read_exact(input: &mut impl BufRead, len: u64) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    input.take(len).read_to_end(&mut body)?;
    if (body.len() as u64) < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(body)
}

fn read_chunked(input: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = require_line(input)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = u64::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            // Trailers are read and dropped.
            while !require_line(input)?.is_empty() {}
            return Ok(body);
        }
        body.extend(read_exact(input, size)?);
        if !require_line(input)?.is_empty() {
            return Err(invalid("chunk longer than announced"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> (io::Result<Option<Incoming>>, Vec<u8>) {
        let mut out = Vec::new();
        let result = read_request(&mut raw.as_bytes(), &mut out, 7);
        (result, out)
    }

    #[test]
    fn content_length_body_and_case_insensitive_headers() {
        let (req, out) =
            parse("POST /hook HTTP/1.1\r\nX-Event-Type: a.b\r\ncontent-length: 5\r\n\r\nhello");
        let req = req.unwrap().unwrap();
        assert_eq!(req.request.method, "POST");
        assert_eq!(req.request.path, "/hook");
        assert_eq!(req.request.header("x-event-type"), Some("a.b"));
        assert_eq!(req.request.body_str(), "hello");
        assert_eq!(req.request.connection_id, 7);
        assert!(!req.close);
        assert!(out.is_empty());
    }

    #[test]
    fn chunked_body_with_trailer() {
        let raw = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n";
        let req = parse(raw).0.unwrap().unwrap();
        assert_eq!(req.request.body, b"abcde");
    }

    #[test]
    fn expect_continue_is_answered() {
        let raw = "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx";
        let (req, out) = parse(raw);
        assert_eq!(req.unwrap().unwrap().request.body, b"x");
        assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn connection_persistence_rules() {
        let close = |raw: &str| parse(raw).0.unwrap().unwrap().close;
        assert!(close("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(close("GET / HTTP/1.0\r\n\r\n"));
        assert!(!close("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn eof_and_malformed_input() {
        assert!(parse("").0.unwrap().is_none());
        assert!(parse("\r\n").0.unwrap().is_none());
        let kind = |raw: &str| parse(raw).0.err().map(|e| e.kind());
        assert_eq!(kind("GARBAGE\r\n\r\n"), Some(io::ErrorKind::InvalidData));
        assert_eq!(
            kind("GET / HTTP/2\r\n\r\n"),
            Some(io::ErrorKind::InvalidData)
        );
        assert_eq!(
            kind("GET / HTTP/1.1\r\nNoColon\r\n\r\n"),
            Some(io::ErrorKind::InvalidData)
        );
        let short = "POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc";
        assert_eq!(kind(short), Some(io::ErrorKind::UnexpectedEof));
    }
}
