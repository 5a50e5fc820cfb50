//! One HTTP attempt, turned into a plain [`Outcome`] whatever happened.
//!
//! The network policy is enforced in the DNS resolver, so the address judged is the address
//! connected to. Error texts are built here from the parts of the failure, never from the
//! request: its headers carry signatures.

use std::error::Error as StdError;
use std::io::{self, Read};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime};

use crate::policy::{NetworkPolicy, Refusal};
use crate::schedule::parse_retry_after;
use crate::validate::{is_field_value, is_token};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    /// A 2xx answer, read completely (or up to the body cap).
    Success,
    /// Any status that is neither 2xx nor 3xx.
    HttpStatus,
    /// A 3xx: redirects are not followed.
    Redirect,
    Timeout,
    ConnectionRefused,
    Dns,
    Tls,
    /// Every address of the host is refused by the network policy.
    PolicyRefused,
    /// The request itself is unusable (bad URL or header): it would fail again.
    InvalidRequest,
    /// Anything else on the way: reset connection, malformed response, body cut short...
    Transport,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub kind: OutcomeKind,
    pub status: Option<u16>,
    /// At most `max_response_bytes` of the response body, lossy UTF-8 without NUL characters.
    pub body: Option<String>,
    pub error: Option<String>,
    pub duration: Duration,
    /// What a 429 or 503 asked for in `Retry-After`.
    pub retry_after: Option<Duration>,
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        self.kind == OutcomeKind::Success
    }

    pub(crate) fn failure(kind: OutcomeKind, error: String) -> Outcome {
        Outcome {
            kind,
            status: None,
            body: None,
            error: Some(error),
            duration: Duration::ZERO,
            retry_after: None,
        }
    }
}

/// A POST to make: the signed body and every header, already built.
#[derive(Debug, Clone)]
pub struct Request {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// For the whole attempt: connect, send, and receive including the body. DNS resolution
    /// cannot be interrupted and comes on top.
    pub timeout: Duration,
    pub max_response_bytes: usize,
}

/// Sends requests under one set of limits and one network policy, reusing connections across
/// calls and threads. Settings changes build a new `Client`.
pub struct Client {
    agent: ureq::Agent,
    limits: Limits,
}

/// Generous, so a pool of threads hammering one receiver keeps its connections warm.
const MAX_IDLE_CONNECTIONS_PER_HOST: usize = 64;
const MAX_IDLE_CONNECTIONS: usize = 1024;

/// The message ureq gives a failed TLS handshake (its ErrorKind has no TLS variant).
const TLS_HANDSHAKE_FAILED: &str = "tls connection init failed";

impl Client {
    pub fn new(limits: Limits, policy: NetworkPolicy) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout(limits.timeout)
            // Without this, connecting could take ureq's default 30 s whatever `timeout` says.
            .timeout_connect(limits.timeout)
            .redirects(0)
            .max_idle_connections(MAX_IDLE_CONNECTIONS)
            .max_idle_connections_per_host(MAX_IDLE_CONNECTIONS_PER_HOST)
            .resolver(PolicyResolver(policy))
            .build();
        Client { agent, limits }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn send(&self, req: &Request) -> Outcome {
        let started = Instant::now();
        let mut outcome = self.attempt(req);
        outcome.duration = started.elapsed();
        outcome
    }

    fn attempt(&self, req: &Request) -> Outcome {
        // ureq would refuse these too, but its message quotes the whole header line.
        for (name, value) in &req.headers {
            if !is_token(name) {
                return Outcome::failure(
                    OutcomeKind::InvalidRequest,
                    "invalid request header name".into(),
                );
            }
            if !is_field_value(value) {
                return Outcome::failure(
                    OutcomeKind::InvalidRequest,
                    format!("invalid value for request header {name}"),
                );
            }
        }
        let request = req
            .headers
            .iter()
            .fold(self.agent.post(&req.url), |request, (name, value)| {
                request.set(name, value)
            });
        match request.send_bytes(req.body.as_bytes()) {
            Ok(response) | Err(ureq::Error::Status(_, response)) => self.receive(response),
            Err(ureq::Error::Transport(transport)) => self.transport_failure(&req.url, &transport),
        }
    }

    fn receive(&self, response: ureq::Response) -> Outcome {
        let status = response.status();
        let retry_after = match status {
            429 | 503 => response
                .header("retry-after")
                .and_then(|value| parse_retry_after(value, SystemTime::now())),
            _ => None,
        };
        let (kind, error) = match status {
            200..=299 => (OutcomeKind::Success, None),
            300..=399 => {
                let error = match response.header("location") {
                    Some(location) => {
                        format!("redirect (HTTP {status}) to {location} not followed")
                    }
                    None => format!("redirect (HTTP {status}) not followed"),
                };
                (OutcomeKind::Redirect, Some(error))
            }
            _ => {
                let error = match response.status_text().trim() {
                    "" => format!("HTTP {status}"),
                    reason => format!("HTTP {status} {reason}"),
                };
                (OutcomeKind::HttpStatus, Some(error))
            }
        };
        let (body, read_error) =
            read_capped(response.into_reader(), self.limits.max_response_bytes);
        let mut outcome = Outcome {
            kind,
            status: Some(status),
            body: Some(body),
            error,
            duration: Duration::ZERO,
            retry_after,
        };
        // A 2xx whose body broke off may not have been processed: it is no success. For other
        // statuses the verdict is already made and only the stored body is shorter.
        if let (OutcomeKind::Success, Some(e)) = (kind, read_error) {
            if is_timeout(e.kind()) {
                outcome.kind = OutcomeKind::Timeout;
                outcome.error = Some(self.timed_out());
            } else {
                outcome.kind = OutcomeKind::Transport;
                outcome.error = Some(format!("response body incomplete: {e}"));
            }
        }
        outcome
    }

    fn transport_failure(&self, url: &str, error: &ureq::Transport) -> Outcome {
        use ureq::ErrorKind as K;
        let (kind, message) =
            if let Some(refusal) = chain(error).find_map(|e| e.downcast_ref::<Refusal>()) {
                (OutcomeKind::PolicyRefused, refusal.to_string())
            } else if matches!(
                error.kind(),
                K::InvalidUrl | K::UnknownScheme | K::InsecureRequestHttpsOnly
            ) {
                (
                    OutcomeKind::InvalidRequest,
                    format!("invalid URL: {}", cause(error)),
                )
            } else if has_io_error(error, is_timeout) {
                (OutcomeKind::Timeout, self.timed_out())
            } else if error.kind() == K::Dns {
                let host = url::Url::parse(url)
                    .ok()
                    .and_then(|url| url.host_str().map(str::to_owned))
                    .unwrap_or_default();
                (
                    OutcomeKind::Dns,
                    format!("DNS lookup failed for {host}: {}", cause(error)),
                )
            } else if has_io_error(error, |kind| kind == io::ErrorKind::ConnectionRefused) {
                (OutcomeKind::ConnectionRefused, "connection refused".into())
            } else if error.kind() == K::ConnectionFailed
                && error.message() == Some(TLS_HANDSHAKE_FAILED)
            {
                (OutcomeKind::Tls, format!("TLS error: {}", cause(error)))
            } else {
                let cause = cause(error);
                // ureq reports headers cut off by a closed connection as an unterminated
                // header line, followed by the raw bytes as a list of numbers: say what
                // happened and drop the byte dump.
                let cut_off = cause.contains("didn't end with");
                let what = match error.kind() {
                    K::BadStatus => "malformed response status line",
                    K::BadHeader => "malformed response header",
                    K::ConnectionFailed => "connection failed",
                    _ if cut_off || has_io_error(error, is_closed) => {
                        "connection closed before a complete response"
                    }
                    _ => "connection error",
                };
                let cause = match cause.find(": [") {
                    Some(list) if cause.ends_with(']') => cause[..list].to_string(),
                    _ => cause,
                };
                (OutcomeKind::Transport, format!("{what}: {cause}"))
            };
        Outcome::failure(kind, message)
    }

    fn timed_out(&self) -> String {
        format!(
            "timed out after {}",
            humantime::format_duration(self.limits.timeout)
        )
    }
}

/// Resolves with the system resolver and keeps only the addresses the policy allows. When none
/// is left, the refusal travels inside the io::Error so the caller can report it as such.
struct PolicyResolver(NetworkPolicy);

impl ureq::Resolver for PolicyResolver {
    fn resolve(&self, netloc: &str) -> io::Result<Vec<SocketAddr>> {
        let mut refusal = None;
        let allowed: Vec<SocketAddr> = netloc
            .to_socket_addrs()?
            .filter(|addr| match self.0.check(addr.ip()) {
                Ok(()) => true,
                Err(refused) => {
                    refusal.get_or_insert(refused);
                    false
                }
            })
            .collect();
        match refusal {
            Some(refusal) if allowed.is_empty() => {
                Err(io::Error::new(io::ErrorKind::PermissionDenied, refusal))
            }
            _ => Ok(allowed),
        }
    }
}

fn is_timeout(kind: io::ErrorKind) -> bool {
    // A socket read timeout shows up as WouldBlock on Unix.
    matches!(kind, io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)
}

fn is_closed(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// The error and its causes. `io::Error::source` skips the error an `io::Error` wraps, so the
/// wrapped one is yielded explicitly.
fn chain<'a>(
    error: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |&e| e.source()).flat_map(|e| {
        let wrapped = e
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
            .map(|inner| inner as &(dyn StdError + 'static));
        std::iter::once(e).chain(wrapped)
    })
}

fn has_io_error(error: &ureq::Transport, matches: impl Fn(io::ErrorKind) -> bool) -> bool {
    chain(error)
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .any(|e| matches(e.kind()))
}

/// The most precise description ureq has of a failure: its cause, else its message. Neither
/// holds the URL (ureq keeps that apart).
fn cause(error: &ureq::Transport) -> String {
    match (error.source(), error.message()) {
        (Some(source), _) => source.to_string(),
        (None, Some(message)) => message.to_owned(),
        (None, None) => error.kind().to_string(),
    }
}

/// Reads at most `cap` bytes and stops there. Returns the text (lossy UTF-8, NUL removed as
/// Postgres text cannot hold it) and the read error, if the body broke off before the cap.
fn read_capped(reader: impl Read, cap: usize) -> (String, Option<io::Error>) {
    let mut bytes = Vec::new();
    let error = reader.take(cap as u64).read_to_end(&mut bytes).err();
    let text = String::from_utf8_lossy(&bytes).replace('\0', "");
    (text, error)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::thread;

    use super::*;
    use crate::testing::{response, TestServer};

    const LOCAL: &str = "127.0.0.1/32";
    const SHORT: Duration = Duration::from_millis(300);
    /// Slack for a loaded 2-core machine on top of a timeout.
    const MARGIN: Duration = Duration::from_millis(1500);

    fn client_with(timeout: Duration, max_response_bytes: usize, allowed: &str) -> Client {
        Client::new(
            Limits {
                timeout,
                max_response_bytes,
            },
            NetworkPolicy::parse(allowed).unwrap(),
        )
    }

    fn client() -> Client {
        client_with(Duration::from_secs(5), 1024, LOCAL)
    }

    fn post(url: String) -> Request {
        Request {
            url,
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("User-Agent".into(), "webhook_ext/test".into()),
                ("X-Webhook-Signature".into(), "sha256=deadbeef".into()),
            ],
            body: r#"{"test":true}"#.into(),
        }
    }

    /// Error texts are stored where more people can read them than the secret.
    fn assert_error_is_clean(outcome: &Outcome) {
        let error = outcome.error.as_deref().unwrap_or_default();
        assert!(!error.contains("deadbeef"), "{error}");
    }

    #[test]
    fn client_is_shareable_across_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Client>();
    }

    #[test]
    fn success_with_body_and_request_as_sent() {
        let server = TestServer::canned(response("200 OK", &[], b"thanks"));
        let outcome = client().send(&post(server.url("/hook?x=1")));
        assert_eq!(outcome.kind, OutcomeKind::Success, "{outcome:?}");
        assert!(outcome.is_success());
        assert_eq!(outcome.status, Some(200));
        assert_eq!(outcome.body.as_deref(), Some("thanks"));
        assert_eq!(outcome.error, None);
        assert!(outcome.duration > Duration::ZERO);

        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert!(
            request.head.starts_with("POST /hook?x=1 HTTP/1.1\r\n"),
            "{}",
            request.head
        );
        assert_eq!(request.body, br#"{"test":true}"#);
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("user-agent"), Some("webhook_ext/test"));
        assert_eq!(
            request.header("x-webhook-signature"),
            Some("sha256=deadbeef")
        );
        assert_eq!(request.header("content-length"), Some("13"));
    }

    #[test]
    fn connections_are_reused() {
        let server = TestServer::canned(response("204 No Content", &[], b""));
        let client = client();
        for _ in 0..3 {
            assert!(client.send(&post(server.url("/"))).is_success());
        }
        assert_eq!(server.requests().len(), 3);
        assert_eq!(server.connections(), 1);
    }

    #[test]
    fn server_error_is_reported_with_its_body() {
        let server = TestServer::canned(response("500 Internal Server Error", &[], b"boom"));
        let outcome = client().send(&post(server.url("/")));
        assert_eq!(outcome.kind, OutcomeKind::HttpStatus);
        assert_eq!(outcome.status, Some(500));
        assert_eq!(outcome.body.as_deref(), Some("boom"));
        assert_eq!(
            outcome.error.as_deref(),
            Some("HTTP 500 Internal Server Error")
        );
        assert_eq!(outcome.retry_after, None);
        assert!(!outcome.is_success());
    }

    #[test]
    fn redirect_is_not_followed() {
        let server = TestServer::canned(response(
            "302 Found",
            &[("Location", "http://127.0.0.1:1/elsewhere")],
            b"",
        ));
        let outcome = client().send(&post(server.url("/")));
        assert_eq!(outcome.kind, OutcomeKind::Redirect);
        assert_eq!(outcome.status, Some(302));
        assert_eq!(
            outcome.error.as_deref(),
            Some("redirect (HTTP 302) to http://127.0.0.1:1/elsewhere not followed")
        );
        // A followed redirect would have been requested before send() returned.
        assert_eq!(server.requests().len(), 1);
    }

    #[test]
    fn gone() {
        let server = TestServer::canned(response("410 Gone", &[], b""));
        let outcome = client().send(&post(server.url("/")));
        assert_eq!(outcome.kind, OutcomeKind::HttpStatus);
        assert_eq!(outcome.status, Some(410));
        assert_eq!(outcome.error.as_deref(), Some("HTTP 410 Gone"));
    }

    #[test]
    fn retry_after_is_read_for_429_and_503_only() {
        for (status, expected) in [
            ("429 Too Many Requests", Some(Duration::from_secs(120))),
            ("503 Service Unavailable", Some(Duration::from_secs(120))),
            ("500 Internal Server Error", None),
        ] {
            let server = TestServer::canned(response(status, &[("Retry-After", "120")], b""));
            let outcome = client().send(&post(server.url("/")));
            assert_eq!(outcome.kind, OutcomeKind::HttpStatus);
            assert_eq!(outcome.retry_after, expected, "{status}");
        }
    }

    #[test]
    fn body_is_cut_at_the_cap() {
        let big = vec![b'a'; 10_000];
        let server = TestServer::canned(response("200 OK", &[], &big));
        let outcome = client_with(Duration::from_secs(5), 1000, LOCAL).send(&post(server.url("/")));
        assert_eq!(outcome.kind, OutcomeKind::Success, "{outcome:?}");
        assert_eq!(outcome.body.unwrap(), "a".repeat(1000));

        let outcome = client_with(Duration::from_secs(5), 0, LOCAL).send(&post(server.url("/")));
        assert_eq!(outcome.kind, OutcomeKind::Success);
        assert_eq!(outcome.body.as_deref(), Some(""));
    }

    #[test]
    fn body_is_lossy_utf8_without_nul() {
        let server = TestServer::canned(response("200 OK", &[], b"ok\xff\0end \xc3\xa3"));
        let outcome = client().send(&post(server.url("/")));
        assert_eq!(outcome.body.as_deref(), Some("ok\u{fffd}end ã"));
    }

    #[test]
    fn silent_server_times_out() {
        let server = TestServer::http(|_, stream| {
            // Hold the connection without answering until the client gives up.
            let _ = stream.read(&mut [0]);
        });
        let outcome = client_with(SHORT, 1024, LOCAL).send(&post(server.url("/")));
        assert_eq!(outcome.kind, OutcomeKind::Timeout, "{outcome:?}");
        assert_eq!(outcome.error.as_deref(), Some("timed out after 300ms"));
        assert_eq!(outcome.status, None);
        assert!(outcome.duration >= SHORT, "{:?}", outcome.duration);
        assert!(outcome.duration < SHORT + MARGIN, "{:?}", outcome.duration);
    }

    fn trickle(stream: &mut TcpStream, bytes: &[u8]) {
        for byte in bytes {
            if stream.write_all(&[*byte]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    #[test]
    fn trickling_response_times_out() {
        let server = TestServer::http(|_, stream| {
            trickle(stream, &response("200 OK", &[], b"a slow body"));
        });
        let outcome = client_with(SHORT, 1024, LOCAL).send(&post(server.url("/")));
        assert_eq!(outcome.kind, OutcomeKind::Timeout, "{outcome:?}");
        assert!(outcome.duration < SHORT + MARGIN, "{:?}", outcome.duration);
    }

    #[test]
    fn trickling_body_after_a_2xx_times_out() {
        let server = TestServer::http(|_, stream| {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n")
                .unwrap();
            trickle(stream, &[b'x'; 40]);
        });
        let outcome = client_with(SHORT, 1024, LOCAL).send(&post(server.url("/")));
        assert_eq!(outcome.kind, OutcomeKind::Timeout, "{outcome:?}");
        assert_eq!(outcome.status, Some(200));
        assert_eq!(outcome.error.as_deref(), Some("timed out after 300ms"));
        assert!(outcome.duration < SHORT + MARGIN, "{:?}", outcome.duration);
    }

    #[test]
    fn connection_closed_mid_body_is_a_failure() {
        let server = TestServer::http(|_, stream| {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc");
            let _ = stream.shutdown(std::net::Shutdown::Both);
        });
        let outcome = client().send(&post(server.url("/")));
        assert_eq!(outcome.kind, OutcomeKind::Transport, "{outcome:?}");
        assert_eq!(outcome.status, Some(200));
        assert_eq!(outcome.body.as_deref(), Some("abc"));
        let error = outcome.error.unwrap();
        assert!(error.starts_with("response body incomplete"), "{error}");
    }

    #[test]
    fn connection_closed_before_any_response_is_a_failure() {
        let server = TestServer::http(|_, stream| {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        });
        let outcome = client().send(&post(server.url("/")));
        assert_eq!(outcome.kind, OutcomeKind::Transport, "{outcome:?}");
        assert_eq!(outcome.status, None);
        let error = outcome.error.as_deref().unwrap();
        assert!(
            error.starts_with("connection closed before a complete response"),
            "{error}"
        );
        assert_error_is_clean(&outcome);
    }

    #[test]
    fn malformed_response_is_a_failure() {
        let server = TestServer::canned(b"SMTP ready\r\n\r\n".to_vec());
        let outcome = client().send(&post(server.url("/")));
        assert_eq!(outcome.kind, OutcomeKind::Transport, "{outcome:?}");
        assert_error_is_clean(&outcome);
        assert!(outcome.error.unwrap().starts_with("malformed response"));
    }

    #[test]
    fn connection_refused() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let outcome = client().send(&post(format!("http://127.0.0.1:{port}/")));
        assert_eq!(outcome.kind, OutcomeKind::ConnectionRefused, "{outcome:?}");
        assert_eq!(outcome.error.as_deref(), Some("connection refused"));
    }

    #[test]
    fn unresolvable_name() {
        let outcome = client().send(&post("http://does-not-exist.invalid/".into()));
        assert_eq!(outcome.kind, OutcomeKind::Dns, "{outcome:?}");
        assert_error_is_clean(&outcome);
        let error = outcome.error.unwrap();
        assert!(
            error.starts_with("DNS lookup failed for does-not-exist.invalid: "),
            "{error}"
        );
    }

    #[test]
    fn tls_failure() {
        let server = TestServer::raw(|mut stream| {
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\nthis is not TLS");
            let _ = stream.read(&mut [0; 1024]);
        });
        let url = format!("https://{}/", server.addr);
        let outcome = client().send(&post(url));
        assert_eq!(outcome.kind, OutcomeKind::Tls, "{outcome:?}");
        assert_error_is_clean(&outcome);
        assert!(outcome.error.unwrap().starts_with("TLS error: "));
    }

    #[test]
    fn policy_refusal_never_connects() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let strict = client_with(Duration::from_secs(5), 1024, "");
        for url in [
            format!("http://127.0.0.1:{port}/"),
            format!("http://localhost:{port}/"),
            format!("http://2130706433:{port}/"),
            format!("http://[::ffff:127.0.0.1]:{port}/"),
        ] {
            let outcome = strict.send(&post(url.clone()));
            assert_eq!(
                outcome.kind,
                OutcomeKind::PolicyRefused,
                "{url}: {outcome:?}"
            );
            let error = outcome.error.unwrap();
            assert!(
                error.contains("is refused by the network policy (loopback)"),
                "{error}"
            );
        }
        // A connection made by send() would be waiting in the backlog by now.
        let pending = listener.accept();
        assert_eq!(
            pending.map(|_| ()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn invalid_requests() {
        let outcome = client().send(&post("not a url".into()));
        assert_eq!(outcome.kind, OutcomeKind::InvalidRequest, "{outcome:?}");
        assert!(outcome.error.unwrap().starts_with("invalid URL"));

        let outcome = client().send(&post("ftp://127.0.0.1/".into()));
        assert_eq!(outcome.kind, OutcomeKind::InvalidRequest, "{outcome:?}");

        let mut request = post("http://127.0.0.1:1/".into());
        request
            .headers
            .push(("X-Evil".into(), "sha256=deadbeef\r\nX-Injected: 1".into()));
        let outcome = client().send(&request);
        assert_eq!(outcome.kind, OutcomeKind::InvalidRequest);
        assert_eq!(
            outcome.error.as_deref(),
            Some("invalid value for request header X-Evil")
        );

        let mut request = post("http://127.0.0.1:1/".into());
        request.headers.push(("Bad Name".into(), "v".into()));
        assert_eq!(client().send(&request).kind, OutcomeKind::InvalidRequest);
    }

    #[test]
    fn refusal_is_found_through_io_error_wrapping() {
        let refusal = NetworkPolicy::default()
            .check("10.0.0.1".parse().unwrap())
            .unwrap_err();
        let wrapped = io::Error::new(io::ErrorKind::PermissionDenied, refusal.clone());
        let found = chain(&wrapped).find_map(|e| e.downcast_ref::<Refusal>());
        assert_eq!(found, Some(&refusal));
    }
}
