//! Scripted answers, including the broken ones a sender must survive.

use std::io::{self, Write};
use std::time::Duration;

use crate::server::Stop;

/// How the receiver answers one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A well-formed response. `Content-Length` is added unless given in `headers`.
    Status {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Waits, then answers `then` (cut short when the receiver stops).
    Delay { delay: Duration, then: Box<Reply> },
    /// Never answers; the socket stays open until the receiver stops.
    Hang,
    /// A valid `200` head announcing `Content-Length: bytes.len()`, then one body byte per
    /// `interval` (each byte after a wait), then close.
    Trickle { interval: Duration, bytes: Vec<u8> },
    /// A `Content-Length` body of `bytes` bytes, streamed, then close.
    HugeBody { status: u16, bytes: u64 },
    /// A chunked body that never ends, written as fast as the peer reads.
    EndlessChunked { status: u16 },
    /// Exactly these bytes, then close: for malformed responses.
    Raw(Vec<u8>),
    /// The status line and part of the headers, then close.
    CloseMidResponse,
}

/// Whether the connection may carry another request after a reply.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum After {
    KeepAlive,
    Close,
}

impl Reply {
    /// `200` with body `ok`.
    pub fn ok() -> Reply {
        Reply::Status {
            status: 200,
            headers: Vec::new(),
            body: b"ok".to_vec(),
        }
    }

    /// This status with an empty body.
    pub fn status(status: u16) -> Reply {
        Reply::Status {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header to a `Status` reply (or to the reply a `Delay` ends with).
    ///
    /// # Panics
    /// On the other variants, which write fixed heads: a mistake in the calling test.
    pub fn with_header(self, name: impl Into<String>, value: impl Into<String>) -> Reply {
        match self {
            Reply::Status {
                status,
                mut headers,
                body,
            } => {
                headers.push((name.into(), value.into()));
                Reply::Status {
                    status,
                    headers,
                    body,
                }
            }
            Reply::Delay { delay, then } => Reply::Delay {
                delay,
                then: Box::new(then.with_header(name, value)),
            },
            other => panic!("with_header applies to Reply::Status, not {other:?}"),
        }
    }

    /// Writes the reply. `close` is set when the request asked to close the connection.
    pub(crate) fn write(
        &self,
        out: &mut impl Write,
        stop: &Stop,
        close: bool,
    ) -> io::Result<After> {
        match self {
            Reply::Status {
                status,
                headers,
                body,
            } => write_status(out, *status, headers, body, close),
            Reply::Delay { delay, then } => {
                if stop.sleep(*delay) {
                    then.write(out, stop, close)
                } else {
                    Ok(After::Close)
                }
            }
            Reply::Hang => {
                stop.wait();
                Ok(After::Close)
            }
            Reply::Trickle { interval, bytes } => {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    bytes.len()
                )?;
                out.flush()?;
                for byte in bytes {
                    if !stop.sleep(*interval) {
                        break;
                    }
                    out.write_all(&[*byte])?;
                }
                Ok(After::Close)
            }
            Reply::HugeBody { status, bytes } => {
                write!(out, "HTTP/1.1 {status} {}\r\n", reason(*status))?;
                write!(out, "Content-Length: {bytes}\r\n\r\n")?;
                let block = [b'x'; 64 * 1024];
                let mut left = *bytes;
                while left > 0 && !stop.is_set() {
                    let n = left.min(block.len() as u64) as usize;
                    out.write_all(&block[..n])?;
                    left -= n as u64;
                }
                Ok(After::Close)
            }
            Reply::EndlessChunked { status } => {
                write!(out, "HTTP/1.1 {status} {}\r\n", reason(*status))?;
                out.write_all(b"Transfer-Encoding: chunked\r\n\r\n")?;
                let mut chunk = b"2000\r\n".to_vec();
                chunk.extend([b'x'; 0x2000]);
                chunk.extend(b"\r\n");
                // Blocking writes pace this to the reader; it ends on stop or a write error.
                while !stop.is_set() {
                    out.write_all(&chunk)?;
                }
                Ok(After::Close)
            }
            Reply::Raw(bytes) => {
                out.write_all(bytes)?;
                Ok(After::Close)
            }
            Reply::CloseMidResponse => {
                out.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: applica")?;
                Ok(After::Close)
            }
        }
    }
}

fn write_status(
    out: &mut impl Write,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    close_requested: bool,
) -> io::Result<After> {
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let close = close_requested
        || headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close"));
    // RFC 9110 §8.6: these statuses never carry a body, so no Content-Length either.
    let bodyless = matches!(status, 100..=199 | 204 | 304);

    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !bodyless && !has("content-length") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if close && !has("connection") {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    // One write, so the whole response leaves in as few segments as possible.
    let mut bytes = head.into_bytes();
    if !bodyless {
        bytes.extend_from_slice(body);
    }
    out.write_all(&bytes)?;
    Ok(if close {
        After::Close
    } else {
        After::KeepAlive
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(reply: &Reply, close: bool) -> (String, After) {
        let mut out = Vec::new();
        let after = reply.write(&mut out, &Stop::default(), close).unwrap();
        (String::from_utf8(out).unwrap(), after)
    }

    #[test]
    fn status_reply_adds_length_and_honours_close() {
        let (text, after) = written(&Reply::ok().with_header("X-A", "1"), false);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok"
        );
        assert_eq!(after, After::KeepAlive);

        let (text, after) = written(&Reply::status(503), true);
        assert_eq!(
            text,
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(after, After::Close);
    }

    #[test]
    fn no_content_has_no_length_and_reply_header_can_close() {
        let reply = Reply::status(204).with_header("Connection", "close");
        let (text, after) = written(&reply, false);
        assert_eq!(text, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        assert_eq!(after, After::Close);
    }

    #[test]
    fn with_header_reaches_through_delay() {
        let reply = Reply::Delay {
            delay: Duration::ZERO,
            then: Box::new(Reply::ok()),
        }
        .with_header("Retry-After", "5");
        let (text, _) = written(&reply, false);
        assert!(text.contains("Retry-After: 5\r\n"), "{text}");
    }

    #[test]
    #[should_panic(expected = "with_header applies to Reply::Status")]
    fn with_header_on_raw_panics() {
        let _ = Reply::Raw(Vec::new()).with_header("A", "b");
    }
}
