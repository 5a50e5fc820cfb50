//! One HTTP attempt, turned into a plain [`Outcome`] whatever happened.
//!
//! The network policy judges the addresses a name resolves to, and only those it allows are
//! connected to (connection.rs), so the address judged is the address connected to. Error texts are built here from the parts of the failure, never from the
//! request: its headers carry signatures.

mod connection;
mod exchange;

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant, SystemTime};

use connection::{is_timeout, ConnectError, Connection, Connector, Origin, Target};
use exchange::{is_closed, Failure, Response};

use crate::policy::NetworkPolicy;
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
///
/// HTTP/1.1 on `httparse` and `rustls` rather than a general client: a delivery is one small
/// POST on a warm connection, and this sends it with one write and reads the answer with one
/// read (bench/ANALYSIS.md §12 has what a general client's per-request system calls cost).
pub struct Client {
    connector: Connector,
    limits: Limits,
}

/// An attempt whose request is on the wire, waiting for its response.
pub struct Sent {
    connection: Connection,
    origin: Origin,
    started: Instant,
    deadline: Instant,
}

impl Sent {
    /// The socket the response comes in on: readable once some of it has arrived (or the
    /// peer closed), for waiting on several attempts at once.
    pub fn socket(&self) -> RawFd {
        self.connection.socket()
    }

    /// When the attempt times out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Client {
    pub fn new(limits: Limits, policy: NetworkPolicy) -> Client {
        Client {
            connector: Connector::new(policy),
            limits,
        }
    }

    /// A client that trusts only `roots` for https (tests with their own certificate).
    #[cfg(test)]
    fn trusting(limits: Limits, policy: NetworkPolicy, roots: rustls::RootCertStore) -> Client {
        Client {
            connector: Connector::trusting(policy, roots),
            limits,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn send(&self, req: &Request) -> Outcome {
        match self.start(req) {
            Ok(sent) => self.finish(sent),
            Err(outcome) => outcome,
        }
    }

    /// Sends the request without waiting for the answer: the attempt as it waits for its
    /// response ([`Client::finish`] reads it), or its outcome if it ended before that.
    pub fn start(&self, req: &Request) -> Result<Sent, Outcome> {
        let started = Instant::now();
        self.send_request(req, started).map_err(|mut outcome| {
            outcome.duration = started.elapsed();
            outcome
        })
    }

    /// Reads the response to a request [`Client::start`] sent, waiting no later than its
    /// deadline.
    pub fn finish(&self, sent: Sent) -> Outcome {
        let Sent {
            mut connection,
            origin,
            started,
            deadline,
        } = sent;
        let mut outcome =
            match exchange::receive(&mut connection, deadline, self.limits.max_response_bytes) {
                Ok(response) => {
                    let outcome = self.receive(&response);
                    if response.reusable {
                        self.connector.keep(&origin, connection);
                    }
                    outcome
                }
                Err(failure) => self.exchange_failure(failure),
            };
        outcome.duration = started.elapsed();
        outcome
    }

    fn send_request(&self, req: &Request, started: Instant) -> Result<Sent, Outcome> {
        // Checked here so that no header line can be injected, and named without its value.
        for (name, value) in &req.headers {
            if !is_token(name) {
                return Err(Outcome::failure(
                    OutcomeKind::InvalidRequest,
                    "invalid request header name".into(),
                ));
            }
            if !is_field_value(value) {
                return Err(Outcome::failure(
                    OutcomeKind::InvalidRequest,
                    format!("invalid value for request header {name}"),
                ));
            }
        }
        let target = Target::parse(&req.url).map_err(|reason| {
            Outcome::failure(
                OutcomeKind::InvalidRequest,
                format!("invalid URL: {reason}"),
            )
        })?;
        let deadline = started + self.limits.timeout;
        let bytes = exchange::request_bytes(&target, req);
        let mut connection = self
            .connector
            .open(&target, deadline)
            .map_err(|e| self.connect_failure(&target, e))?;
        let mut sent = exchange::send(&mut connection, &bytes, deadline);
        if connection.reused && matches!(sent, Err(Failure::NotSent(_))) {
            // The receiver closed the kept connection as the request went out: none of it was
            // read, so it goes again on a new connection.
            connection = self
                .connector
                .connect(&target, deadline)
                .map_err(|e| self.connect_failure(&target, e))?;
            sent = exchange::send(&mut connection, &bytes, deadline);
        }
        match sent {
            Ok(()) => Ok(Sent {
                connection,
                origin: target.origin,
                started,
                deadline,
            }),
            Err(failure) => Err(self.exchange_failure(failure)),
        }
    }

    fn receive(&self, response: &Response) -> Outcome {
        let status = response.status;
        let retry_after = match status {
            429 | 503 => response
                .retry_after
                .as_deref()
                .and_then(|value| parse_retry_after(value, SystemTime::now())),
            _ => None,
        };
        let (kind, error) = match status {
            200..=299 => (OutcomeKind::Success, None),
            300..=399 => {
                let error = match &response.location {
                    Some(location) => {
                        format!("redirect (HTTP {status}) to {location} not followed")
                    }
                    None => format!("redirect (HTTP {status}) not followed"),
                };
                (OutcomeKind::Redirect, Some(error))
            }
            _ => {
                let error = match response.reason.trim() {
                    "" => format!("HTTP {status}"),
                    reason => format!("HTTP {status} {reason}"),
                };
                (OutcomeKind::HttpStatus, Some(error))
            }
        };
        let mut outcome = Outcome {
            kind,
            status: Some(status),
            body: Some(String::from_utf8_lossy(&response.body).replace('\0', "")),
            error,
            duration: Duration::ZERO,
            retry_after,
        };
        // A 2xx whose body broke off may not have been processed: it is no success. For other
        // statuses the verdict is already made and only the stored body is shorter.
        if let (OutcomeKind::Success, Some(e)) = (kind, &response.body_error) {
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

    fn connect_failure(&self, target: &Target, error: ConnectError) -> Outcome {
        let (kind, message) = match error {
            ConnectError::Refused(refusal) => (OutcomeKind::PolicyRefused, refusal.to_string()),
            ConnectError::Dns(e) => (
                OutcomeKind::Dns,
                format!("DNS lookup failed for {}: {e}", target.origin.host),
            ),
            ConnectError::Timeout => (OutcomeKind::Timeout, self.timed_out()),
            ConnectError::Tcp(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                (OutcomeKind::ConnectionRefused, "connection refused".into())
            }
            ConnectError::Tcp(e) => (OutcomeKind::Transport, format!("connection failed: {e}")),
            ConnectError::Tls(reason) => (OutcomeKind::Tls, format!("TLS error: {reason}")),
        };
        Outcome::failure(kind, message)
    }

    fn exchange_failure(&self, failure: Failure) -> Outcome {
        let (kind, message) = match failure {
            Failure::Malformed(what) => (OutcomeKind::Transport, what.to_string()),
            Failure::ClosedBeforeResponse(e) | Failure::ClosedInHead(e) => (
                OutcomeKind::Transport,
                format!("connection closed before a complete response: {e}"),
            ),
            Failure::NotSent(e) | Failure::Io(e) => {
                if is_timeout(e.kind()) {
                    (OutcomeKind::Timeout, self.timed_out())
                } else if let Some(tls) = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                {
                    (OutcomeKind::Tls, format!("TLS error: {tls}"))
                } else if is_closed(e.kind()) {
                    (
                        OutcomeKind::Transport,
                        format!("connection closed before a complete response: {e}"),
                    )
                } else {
                    (OutcomeKind::Transport, format!("connection error: {e}"))
                }
            }
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
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
    fn accept_is_sent_once_and_a_webhook_may_choose_it() {
        let server = TestServer::canned(response("200 OK", &[], b""));
        assert!(client().send(&post(server.url("/"))).is_success());
        let mut request = post(server.url("/"));
        request
            .headers
            .push(("Accept".into(), "application/json".into()));
        assert!(client().send(&request).is_success());
        let accepts: Vec<Vec<String>> = server
            .requests()
            .iter()
            .map(|received| {
                received
                    .head
                    .lines()
                    .filter_map(|line| line.split_once(':'))
                    .filter(|(name, _)| name.eq_ignore_ascii_case("accept"))
                    .map(|(_, value)| value.trim().to_string())
                    .collect()
            })
            .collect();
        assert_eq!(accepts, [vec!["*/*"], vec!["application/json"]]);
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

    /// Reads one request (head and Content-Length body) from `stream`; false at its end.
    fn read_request(stream: &mut impl Read) -> bool {
        let mut bytes = Vec::new();
        let mut byte = [0u8; 1];
        while !bytes.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).unwrap_or(0) == 0 {
                return false;
            }
            bytes.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .map_or(0, |value| value.trim().parse().unwrap());
        stream.read_exact(&mut vec![0; length]).is_ok()
    }

    #[test]
    fn https_round_trips_share_one_connection() {
        use std::sync::Arc;
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let certificate = certified.cert.der().clone();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![certificate.clone()], key)
                .unwrap(),
        );
        let server = TestServer::raw(move |stream| {
            let connection = rustls::ServerConnection::new(Arc::clone(&config)).unwrap();
            let mut tls = rustls::StreamOwned::new(connection, stream);
            while read_request(&mut tls) {
                let answer = response("200 OK", &[], b"secure");
                if tls.write_all(&answer).and_then(|()| tls.flush()).is_err() {
                    return;
                }
            }
        });
        let mut roots = rustls::RootCertStore::empty();
        roots.add(certificate).unwrap();
        let limits = Limits {
            timeout: Duration::from_secs(5),
            max_response_bytes: 1024,
        };
        let trusting = Client::trusting(limits, NetworkPolicy::parse(LOCAL).unwrap(), roots);
        let url = format!("https://localhost:{}/hook", server.addr.port());
        for _ in 0..3 {
            let outcome = trusting.send(&post(url.clone()));
            assert_eq!(outcome.kind, OutcomeKind::Success, "{outcome:?}");
            assert_eq!(outcome.body.as_deref(), Some("secure"));
        }
        assert_eq!(server.connections(), 1);

        // The same server is no one Mozilla's roots vouch for.
        let outcome = client().send(&post(url));
        assert_eq!(outcome.kind, OutcomeKind::Tls, "{outcome:?}");
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
}
