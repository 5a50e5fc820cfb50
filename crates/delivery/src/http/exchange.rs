//! One HTTP/1.1 exchange on an open connection: the request in a single write, then the
//! response head (parsed by `httparse`) and as much of its body as may be kept.

use std::io;
use std::time::Instant;

use super::connection::{Connection, Target};
use super::Request;

/// The response as far as an attempt needs it.
pub(super) struct Response {
    pub status: u16,
    pub reason: String,
    pub location: Option<String>,
    pub retry_after: Option<String>,
    /// At most the cap's worth of the body.
    pub body: Vec<u8>,
    /// Why the body broke off before its end or the cap.
    pub body_error: Option<io::Error>,
    /// Whether the connection may carry the next request: the body was read to its end and
    /// neither side asked to close.
    pub reusable: bool,
}

/// Why no response head arrived.
#[derive(Debug)]
pub(super) enum Failure {
    /// Writing the request failed: the peer had closed (or reset) the connection.
    NotSent(io::Error),
    /// Nothing of a response arrived before the peer closed.
    ClosedBeforeResponse(io::Error),
    /// The peer closed in the middle of the head.
    ClosedInHead(io::Error),
    Malformed(&'static str),
    Io(io::Error),
}

/// Enough for any sane response head; a longer one is refused as malformed.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;
const READ_SIZE: usize = 8 * 1024;

/// The request as it goes on the wire: head and body in one buffer, so that one write sends
/// it (one segment for a small body, and the receiver is woken once).
pub(super) fn request_bytes(target: &Target, request: &Request) -> Vec<u8> {
    let mut head = String::with_capacity(256 + request.headers.len() * 48);
    head.push_str("POST ");
    head.push_str(&target.path_and_query);
    head.push_str(" HTTP/1.1\r\nHost: ");
    head.push_str(&target.host_header);
    head.push_str("\r\n");
    for (name, value) in &request.headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    // As ureq did: `Accept: */*` unless the webhook's own headers say otherwise.
    if !request
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("accept"))
    {
        head.push_str("Accept: */*\r\n");
    }
    head.push_str("Content-Length: ");
    head.push_str(&request.body.len().to_string());
    head.push_str("\r\n\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(request.body.as_bytes());
    bytes
}

/// Writes the request.
pub(super) fn send(
    connection: &mut Connection,
    request: &[u8],
    deadline: Instant,
) -> Result<(), Failure> {
    connection
        .write_all_by(request, deadline)
        .map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Failure::NotSent(e),
            _ => Failure::Io(e),
        })
}

/// Reads the response to the request [`send`] wrote.
pub(super) fn receive(
    connection: &mut Connection,
    deadline: Instant,
    body_cap: usize,
) -> Result<Response, Failure> {
    let mut reader = Reader {
        connection,
        buf: Vec::with_capacity(READ_SIZE),
        start: 0,
        deadline,
    };
    let head = reader.head()?;
    let framing = head.framing();
    let mut response = Response {
        status: head.status,
        reason: head.reason,
        location: head.location,
        retry_after: head.retry_after,
        body: Vec::new(),
        body_error: None,
        reusable: false,
    };
    let ended = match framing {
        Framing::None => Ok(true),
        Framing::Length(length) => reader.body_of_length(length, body_cap, &mut response.body),
        Framing::Chunked => reader.chunked_body(body_cap, &mut response.body),
        Framing::UntilClose => reader
            .body_until_close(body_cap, &mut response.body)
            .map(|_| false),
    };
    match ended {
        Ok(ended) => {
            response.reusable = ended && head.keep_alive && reader.start == reader.buf.len()
        }
        Err(e) => response.body_error = Some(e),
    }
    Ok(response)
}

struct Head {
    status: u16,
    reason: String,
    location: Option<String>,
    retry_after: Option<String>,
    content_length: Option<u64>,
    chunked: bool,
    keep_alive: bool,
}

enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

impl Head {
    fn framing(&self) -> Framing {
        if matches!(self.status, 204 | 304) {
            Framing::None
        } else if self.chunked {
            Framing::Chunked
        } else if let Some(length) = self.content_length {
            Framing::Length(length)
        } else {
            Framing::UntilClose
        }
    }
}

/// Reads from the connection into a buffer; `buf[start..]` is what is read and not yet used.
struct Reader<'a> {
    connection: &'a mut Connection,
    buf: Vec<u8>,
    start: usize,
    deadline: Instant,
}

impl Reader<'_> {
    /// Reads more; false at the end of the stream.
    fn fill(&mut self) -> io::Result<bool> {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + READ_SIZE, 0);
        let read = self.connection.read_by(&mut self.buf[len..], self.deadline);
        let n = *read.as_ref().unwrap_or(&0);
        self.buf.truncate(len + n);
        read.map(|n| n > 0)
    }

    fn unread(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// The final response's head (informational 1xx heads are skipped).
    fn head(&mut self) -> Result<Head, Failure> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut headers);
            match parsed.parse(self.unread()) {
                Ok(httparse::Status::Complete(length)) => {
                    let head = head_of(&parsed);
                    self.start += length;
                    if (100..200).contains(&head.status) {
                        continue;
                    }
                    return Ok(head);
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::Status | httparse::Error::Version) => {
                    return Err(Failure::Malformed("malformed response status line"))
                }
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(Failure::Malformed(
                        "malformed response header: too many headers",
                    ))
                }
                Err(_) => return Err(Failure::Malformed("malformed response header")),
            }
            if self.unread().len() >= MAX_HEAD_BYTES {
                return Err(Failure::Malformed(
                    "malformed response header: head too large",
                ));
            }
            let nothing_yet = self.unread().is_empty();
            match self.fill() {
                Ok(true) => {}
                Ok(false) => {
                    let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
                    return Err(if nothing_yet {
                        Failure::ClosedBeforeResponse(eof)
                    } else {
                        Failure::ClosedInHead(eof)
                    });
                }
                Err(e) if nothing_yet && is_closed(e.kind()) => {
                    return Err(Failure::ClosedBeforeResponse(e))
                }
                Err(e) if is_closed(e.kind()) => return Err(Failure::ClosedInHead(e)),
                Err(e) => return Err(Failure::Io(e)),
            }
        }
    }

    /// Takes up to `want` bytes of what is read into `out`; returns how many.
    fn take(&mut self, want: usize, out: &mut Vec<u8>, cap: usize) -> usize {
        let n = want.min(self.unread().len());
        let keep = n.min(cap.saturating_sub(out.len()));
        out.extend_from_slice(&self.buf[self.start..self.start + keep]);
        self.start += n;
        n
    }

    /// Ok(true): read to its end; Ok(false): stopped at the cap.
    fn body_of_length(&mut self, length: u64, cap: usize, out: &mut Vec<u8>) -> io::Result<bool> {
        let mut left = length;
        loop {
            let want = usize::try_from(left).unwrap_or(usize::MAX);
            left -= self.take(want, out, cap) as u64;
            if left == 0 {
                return Ok(true);
            }
            if out.len() >= cap {
                return Ok(false);
            }
            if !self.fill()? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    fn body_until_close(&mut self, cap: usize, out: &mut Vec<u8>) -> io::Result<()> {
        loop {
            self.take(usize::MAX, out, cap);
            if out.len() >= cap || !self.fill()? {
                return Ok(());
            }
        }
    }

    fn chunked_body(&mut self, cap: usize, out: &mut Vec<u8>) -> io::Result<bool> {
        loop {
            let size = loop {
                match httparse::parse_chunk_size(self.unread()) {
                    Ok(httparse::Status::Complete((length, size))) => {
                        self.start += length;
                        break size;
                    }
                    Ok(httparse::Status::Partial) => {
                        if !self.fill()? {
                            return Err(io::ErrorKind::UnexpectedEof.into());
                        }
                    }
                    Err(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "invalid chunk size",
                        ))
                    }
                }
            };
            if size == 0 {
                return self.trailers().map(|()| true);
            }
            let mut left = size;
            while left > 0 {
                left -= self.take(usize::try_from(left).unwrap_or(usize::MAX), out, cap) as u64;
                if left > 0 {
                    if out.len() >= cap {
                        return Ok(false);
                    }
                    if !self.fill()? {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
            }
            self.crlf()?;
            if out.len() >= cap {
                return Ok(false);
            }
        }
    }

    /// The CRLF that ends a chunk's data.
    fn crlf(&mut self) -> io::Result<()> {
        while self.unread().len() < 2 {
            if !self.fill()? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        if &self.unread()[..2] != b"\r\n" {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "chunk without its CRLF",
            ));
        }
        self.start += 2;
        Ok(())
    }

    /// Skips the trailer section, up to its empty line.
    fn trailers(&mut self) -> io::Result<()> {
        loop {
            if let Some(end) = self.unread().windows(2).position(|w| w == b"\r\n") {
                self.start += end + 2;
                if end == 0 {
                    return Ok(());
                }
                continue;
            }
            if !self.fill()? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

fn head_of(parsed: &httparse::Response<'_, '_>) -> Head {
    let header = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
    };
    let has_token = |name: &str, token: &str| {
        parsed
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .any(|value| value.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    };
    let http_1_1 = parsed.version == Some(1);
    let keep_alive = if http_1_1 {
        !has_token("connection", "close")
    } else {
        has_token("connection", "keep-alive")
    };
    Head {
        status: parsed.code.unwrap_or(0),
        reason: parsed.reason.unwrap_or_default().to_owned(),
        location: header("location"),
        retry_after: header("retry-after"),
        content_length: header("content-length").and_then(|v| v.parse().ok()),
        chunked: has_token("transfer-encoding", "chunked"),
        keep_alive,
    }
}

pub(super) fn is_closed(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}
