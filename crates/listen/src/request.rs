//! Reading HTTP/1.1 requests off a connection: heads parsed by `httparse`, one growing buffer
//! per connection (pipelined requests already read are served from it), bodies borrowed from
//! that buffer. Every server in the workspace reads its requests here.

use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::time::SystemTime;

/// Bounds that keep a misbehaving client from making a server buffer without end.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 200;
/// The connection buffer's first size: a delivery's head and a small body fit at once.
const FIRST_BUFFER: usize = 16 * 1024;

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
}

/// One request, borrowed from the connection's buffer for as long as its handler runs.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The request line and the headers, up to and including the blank line.
    pub head: &'a [u8],
    headers: &'a [httparse::Header<'a>],
    /// The decoded body (a chunked body without its framing).
    pub body: &'a [u8],
    /// The client asked to close the connection after the answer (or spoke HTTP/1.0
    /// without keep-alive).
    pub close: bool,
}

impl<'a> Request<'a> {
    /// The first header with this name (compared case-insensitively), as raw bytes.
    pub fn header_bytes(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// The first header with this name as text, trimmed; `None` if absent or not UTF-8.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        std::str::from_utf8(self.header_bytes(name)?)
            .ok()
            .map(str::trim)
    }

    /// The headers in arrival order, names as sent.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + '_ {
        self.headers.iter().map(|h| (h.name, h.value))
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// An owned copy, for a log of what arrived.
    ///
    /// # Errors
    /// `InvalidData` if a header value is not UTF-8.
    pub fn record(&self, connection_id: u64) -> io::Result<RecordedRequest> {
        let headers = self
            .headers()
            .map(|(name, value)| {
                let value = std::str::from_utf8(value).map_err(|_| invalid("non-UTF-8 header"))?;
                Ok((name.to_string(), value.trim().to_string()))
            })
            .collect::<io::Result<_>>()?;
        Ok(RecordedRequest {
            method: self.method.to_string(),
            path: self.path.to_string(),
            headers,
            body: self.body.to_vec(),
            received_at: SystemTime::now(),
            connection_id,
        })
    }
}

/// The answer to a request that cannot be read.
pub(crate) const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// What the connection does after a request's handler returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Read the next request (unless the request asked to close).
    KeepAlive,
    Close,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Serves requests on one connection until either side closes it: each fully read request is
/// handed to `handle` with the stream to answer on. A request that cannot be parsed is
/// answered `400` and ends the connection with an `InvalidData` error. `100 Continue` is sent
/// to clients that wait for it (curl does for bodies over 1 KiB).
///
/// Keep-alive and pipelining: bytes read past one request stay in the buffer for the next;
/// the buffer grows only for a larger request, and nothing is allocated per request (a
/// chunked body is decoded into one buffer the connection reuses).
pub fn serve_requests<S: Read + Write>(
    stream: &mut S,
    mut handle: impl FnMut(&Request<'_>, &mut S) -> io::Result<Next>,
) -> io::Result<()> {
    let mut buf = vec![0u8; FIRST_BUFFER];
    // Bytes buffered: buf[start..end].
    let (mut start, mut end) = (0, 0);
    let mut chunked = Vec::new();
    // Set once `100 Continue` went out for the request at `start`.
    let mut continued = false;
    loop {
        match next_request(
            stream,
            &buf[start..end],
            &mut chunked,
            &mut continued,
            &mut handle,
        ) {
            Ok(Some((used, next))) => {
                start += used;
                continued = false;
                if next == Next::Close {
                    return Ok(());
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                if e.kind() == io::ErrorKind::InvalidData {
                    stream.write_all(BAD_REQUEST)?;
                }
                return Err(e);
            }
        }
        // More bytes needed: move what is buffered to the front, grow if full, read.
        if start > 0 {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        if end == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = stream.read(&mut buf[end..])?;
        if n == 0 {
            // RFC 9112 §2.2: empty lines between requests are ignored.
            return if buf[..end].iter().all(|b| matches!(b, b'\r' | b'\n')) {
                Ok(())
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        end += n;
    }
}

/// Serves the request at the start of `bytes` if it is all there: how many bytes it took and
/// what the connection does next; `None` if more bytes are needed.
fn next_request<S: Write>(
    stream: &mut S,
    bytes: &[u8],
    chunked: &mut Vec<u8>,
    continued: &mut bool,
    handle: &mut impl FnMut(&Request<'_>, &mut S) -> io::Result<Next>,
) -> io::Result<Option<(usize, Next)>> {
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let head_len = match parsed.parse_with_uninit_headers(bytes, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if bytes.len() > MAX_HEAD => {
            return Err(invalid("request head too large"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(invalid("too many headers")),
        Err(_) => return Err(invalid("malformed request")),
    };
    let mut request = Request {
        method: parsed.method.unwrap_or_default(),
        path: parsed.path.unwrap_or_default(),
        head: &bytes[..head_len],
        headers: parsed.headers,
        body: &[],
        close: false,
    };
    request.close = if parsed.version == Some(0) {
        !request.has_token("connection", "keep-alive")
    } else {
        request.has_token("connection", "close")
    };
    let is_chunked = request.has_token("transfer-encoding", "chunked");
    let length: usize = match request.header_bytes("content-length") {
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| invalid("bad Content-Length"))?,
        None => 0,
    };
    if (is_chunked || length > 0) && !*continued && request.has_token("expect", "100-continue") {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        *continued = true;
    }
    let rest = &bytes[head_len..];
    let body_len = if is_chunked {
        // Scanned first (jumping from chunk to chunk), copied once complete: a large body
        // arriving over many reads is not copied again at each.
        match chunked_body(rest, None)? {
            Some(framed_len) => {
                chunked.clear();
                chunked_body(rest, Some(chunked))?;
                request.body = chunked;
                framed_len
            }
            None => return Ok(None),
        }
    } else if rest.len() >= length {
        request.body = &rest[..length];
        length
    } else {
        return Ok(None);
    };
    let next = handle(&request, stream)?;
    let next = if request.close { Next::Close } else { next };
    Ok(Some((head_len + body_len, next)))
}

/// The chunked body at the start of `bytes`: the bytes its framing takes, or `None` if it is
/// not all there yet; its data is appended to `body` if given. Trailers are read and dropped.
fn chunked_body(bytes: &[u8], mut body: Option<&mut Vec<u8>>) -> io::Result<Option<usize>> {
    let mut at = 0;
    loop {
        let (size_len, size) = match httparse::parse_chunk_size(&bytes[at..]) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(invalid("bad chunk size")),
        };
        at += size_len;
        if size == 0 {
            let mut trailers = [httparse::EMPTY_HEADER; 16];
            return match httparse::parse_headers(&bytes[at..], &mut trailers) {
                Ok(httparse::Status::Complete((len, _))) => Ok(Some(at + len)),
                Ok(httparse::Status::Partial) => Ok(None),
                Err(_) => Err(invalid("bad chunked trailer")),
            };
        }
        let end = usize::try_from(size)
            .ok()
            .and_then(|size| at.checked_add(size))
            .ok_or_else(|| invalid("bad chunk size"))?;
        let Some(data) = bytes.get(at..end) else {
            return Ok(None);
        };
        if let Some(body) = body.as_deref_mut() {
            body.extend_from_slice(data);
        }
        at = end;
        match &bytes[at..] {
            [b'\r', b'\n', ..] => at += 2,
            [b'\n', ..] => at += 1,
            [] | [b'\r'] => return Ok(None),
            _ => return Err(invalid("chunk longer than announced")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that reads `input`, at most `step` bytes a read, and collects what is written.
    struct Pipe<'a> {
        input: &'a [u8],
        step: usize,
        output: Vec<u8>,
    }

    impl Read for Pipe<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step);
            self.input.read(&mut buf[..n])
        }
    }

    impl Write for Pipe<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The requests read from `raw` (as recorded, plus whether each asked to close), the
    /// outcome, and what the server wrote.
    fn parse_all(raw: &str) -> (Vec<(RecordedRequest, bool)>, io::Result<()>, Vec<u8>) {
        parse_in_steps(raw, usize::MAX)
    }

    fn parse_in_steps(
        raw: &str,
        step: usize,
    ) -> (Vec<(RecordedRequest, bool)>, io::Result<()>, Vec<u8>) {
        let mut pipe = Pipe {
            input: raw.as_bytes(),
            step,
            output: Vec::new(),
        };
        let mut requests = Vec::new();
        let result = serve_requests(&mut pipe, |request, _| {
            requests.push((request.record(7)?, request.close));
            Ok(Next::KeepAlive)
        });
        (requests, result, pipe.output)
    }

    fn parse(raw: &str) -> (RecordedRequest, bool, Vec<u8>) {
        let (mut requests, result, out) = parse_all(raw);
        result.unwrap();
        let (request, close) = requests.remove(0);
        (request, close, out)
    }

    #[test]
    fn content_length_body_and_case_insensitive_headers() {
        let (req, close, out) =
            parse("POST /hook HTTP/1.1\r\nX-Event-Type: a.b\r\ncontent-length: 5\r\n\r\nhello");
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/hook");
        assert_eq!(req.header("x-event-type"), Some("a.b"));
        assert_eq!(req.body_str(), "hello");
        assert_eq!(req.connection_id, 7);
        assert!(!close);
        assert!(out.is_empty());
    }

    #[test]
    fn chunked_body_with_trailer() {
        let raw = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(parse(raw).0.body, b"abcde");
    }

    #[test]
    fn expect_continue_is_answered() {
        let raw = "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx";
        let (req, _, out) = parse(raw);
        assert_eq!(req.body, b"x");
        assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn connection_persistence_rules() {
        let close = |raw: &str| parse(raw).1;
        assert!(close("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(close("GET / HTTP/1.0\r\n\r\n"));
        assert!(!close("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn pipelined_requests_are_each_served_from_the_buffer() {
        let (requests, result, _) = parse_all(
            "POST /a HTTP/1.1\r\nContent-Length: 1\r\n\r\nxPOST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\ny\r\n0\r\n\r\nGET /c HTTP/1.1\r\n\r\n",
        );
        result.unwrap();
        let paths: Vec<_> = requests
            .iter()
            .map(|(r, _)| (r.path.as_str(), r.body_str()))
            .collect();
        assert_eq!(paths, [("/a", "x"), ("/b", "y"), ("/c", "")]);
    }

    #[test]
    fn requests_arriving_a_few_bytes_at_a_time_are_read_whole() {
        let big = "x".repeat(40_000);
        let raw = format!(
            "POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n{big}\
             POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n9c40\r\n{big}\r\n3\r\nend\r\n0\r\n\r\n",
            big.len()
        );
        for step in [1, 7, 4096] {
            let (requests, result, _) = parse_in_steps(&raw, step);
            result.unwrap();
            assert_eq!(requests.len(), 2, "step {step}");
            assert_eq!(requests[0].0.body_str(), big);
            assert_eq!(requests[1].0.body_str(), format!("{big}end"));
        }
    }

    #[test]
    fn eof_and_malformed_input() {
        assert!(parse_all("").0.is_empty());
        assert!(parse_all("\r\n").1.is_ok());
        let kind = |raw: &str| parse_all(raw).1.err().map(|e| e.kind());
        assert_eq!(kind("GARBAGE\r\n\r\n"), Some(io::ErrorKind::InvalidData));
        assert_eq!(
            kind("GET / HTTP/2\r\n\r\n"),
            Some(io::ErrorKind::InvalidData)
        );
        assert_eq!(
            kind("GET / HTTP/1.1\r\nNoColon\r\n\r\n"),
            Some(io::ErrorKind::InvalidData)
        );
        assert!(parse_all("GARBAGE\r\n\r\n").2.starts_with(b"HTTP/1.1 400 "));
        assert_eq!(
            kind("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nx"),
            Some(io::ErrorKind::InvalidData)
        );
        let short = "POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc";
        assert_eq!(kind(short), Some(io::ErrorKind::UnexpectedEof));
    }
}
