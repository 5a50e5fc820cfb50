//! Connections: where a URL leads, opening a connection there under the network policy (TCP,
//! then TLS for https), and keeping it open between attempts.
//!
//! A kept connection carries socket timeouts of its own and has them changed only when an
//! attempt needs otherwise, so a request on a warm connection costs one write and one read.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use url::{Host, Position, Url};

use crate::policy::{NetworkPolicy, Refusal};

/// Where a connection leads: requests to the same origin may share one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Origin {
    pub https: bool,
    pub host: String,
    pub port: u16,
}

/// A URL taken apart for one request.
#[derive(Debug)]
pub(super) struct Target {
    pub origin: Origin,
    /// The Host header: the host as the URL spells it, with the port unless it is the scheme's.
    pub host_header: String,
    /// Path and query (the fragment is never sent).
    pub path_and_query: String,
    ip: Option<IpAddr>,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let url = Url::parse(url).map_err(|e| e.to_string())?;
        let https = match url.scheme() {
            "http" => false,
            "https" => true,
            other => return Err(format!("unknown scheme {other}")),
        };
        let (host, ip) = match url.host() {
            Some(Host::Domain(name)) => (name.to_owned(), None),
            Some(Host::Ipv4(ip)) => (ip.to_string(), Some(IpAddr::V4(ip))),
            Some(Host::Ipv6(ip)) => (ip.to_string(), Some(IpAddr::V6(ip))),
            None => return Err("no host".into()),
        };
        let port = url
            .port_or_known_default()
            .ok_or_else(|| "no port".to_string())?;
        let host_header = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        Ok(Target {
            origin: Origin { https, host, port },
            host_header,
            path_and_query: url[Position::BeforePath..Position::AfterQuery].to_owned(),
            ip,
        })
    }
}

/// Why no connection could be opened.
#[derive(Debug)]
pub(super) enum ConnectError {
    Dns(io::Error),
    /// Every address of the host is refused by the network policy.
    Refused(Refusal),
    Timeout,
    Tcp(io::Error),
    Tls(String),
}

pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn socket(&self) -> &TcpStream {
        match self {
            Stream::Plain(socket) => socket,
            Stream::Tls(tls) => &tls.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(socket) => socket.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

/// An open connection and the timeout its socket has for reads and writes.
pub(super) struct Connection {
    stream: Stream,
    socket_timeout: Duration,
    /// Whether it has carried a request before (a kept connection the peer may have closed).
    pub reused: bool,
}

/// How far a socket timeout may run past an attempt's deadline before it is lowered: setting
/// it costs two system calls, and most attempts finish in one read well inside it.
const DEADLINE_SLACK: Duration = Duration::from_millis(20);

impl Connection {
    fn new(stream: Stream, socket_timeout: Duration) -> Connection {
        Connection {
            stream,
            socket_timeout,
            reused: false,
        }
    }

    /// The socket's descriptor.
    pub fn socket(&self) -> RawFd {
        self.stream.socket().as_raw_fd()
    }

    /// Reads what is there, waiting no later than `deadline` (TimedOut then).
    pub fn read_by(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
        self.by(deadline, |stream| stream.read(buf))
    }

    /// Writes all of `bytes`, no later than `deadline`.
    pub fn write_all_by(&mut self, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
        while !bytes.is_empty() {
            match self.by(deadline, |stream| stream.write(bytes))? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => bytes = &bytes[n..],
            }
        }
        self.by(deadline, Write::flush)
    }

    /// Runs one blocking call on the stream within the deadline. The socket keeps the timeout
    /// it has while it ends no more than DEADLINE_SLACK after the deadline; a call it ends
    /// before the deadline is made again with the time that is left.
    fn by<T>(
        &mut self,
        deadline: Instant,
        mut call: impl FnMut(&mut Stream) -> io::Result<T>,
    ) -> io::Result<T> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            if self.socket_timeout > left + DEADLINE_SLACK {
                self.set_socket_timeout(left)?;
            }
            match call(&mut self.stream) {
                Err(e) if is_timeout(e.kind()) => {
                    if Instant::now() >= deadline {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    self.set_socket_timeout(left.max(Duration::from_millis(1)))?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => return result,
            }
        }
    }

    fn set_socket_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        let socket = self.stream.socket();
        socket.set_read_timeout(Some(timeout))?;
        socket.set_write_timeout(Some(timeout))?;
        self.socket_timeout = timeout;
        Ok(())
    }

    /// Whether the peer has closed it or sent something unasked while it was kept: such a
    /// connection cannot carry a request.
    fn is_stale(&self) -> bool {
        let mut poll = libc::pollfd {
            fd: self.stream.socket().as_raw_fd(),
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd for a socket this connection owns, and a zero timeout.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        ready != 0
    }
}

pub(super) fn is_timeout(kind: io::ErrorKind) -> bool {
    // A socket timeout shows up as WouldBlock on Unix.
    matches!(kind, io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)
}

/// Opens connections and keeps the idle ones, for every thread of the pool.
pub(super) struct Connector {
    policy: NetworkPolicy,
    tls: Arc<rustls::ClientConfig>,
    idle: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    by_origin: HashMap<Origin, Vec<Connection>>,
    count: usize,
}

/// Generous, so a pool of threads hammering one receiver keeps its connections warm.
const MAX_IDLE_PER_ORIGIN: usize = 64;
const MAX_IDLE: usize = 1024;

impl Connector {
    /// Trusts the Mozilla roots (webpki-roots), as browsers do.
    pub fn new(policy: NetworkPolicy) -> Connector {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Connector::trusting(policy, roots)
    }

    pub fn trusting(policy: NetworkPolicy, roots: rustls::RootCertStore) -> Connector {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Connector {
            policy,
            tls: Arc::new(tls),
            idle: Mutex::new(Idle::default()),
        }
    }

    /// A kept connection to the origin that is still usable, else a new one.
    pub fn open(&self, target: &Target, deadline: Instant) -> Result<Connection, ConnectError> {
        while let Some(connection) = self.take_idle(&target.origin) {
            if !connection.is_stale() {
                return Ok(connection);
            }
        }
        self.connect(target, deadline)
    }

    /// Keeps a connection whose last exchange ended cleanly, if there is room.
    pub fn keep(&self, origin: &Origin, mut connection: Connection) {
        connection.reused = true;
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.count >= MAX_IDLE {
            return;
        }
        let kept = idle.by_origin.entry(origin.clone()).or_default();
        if kept.len() < MAX_IDLE_PER_ORIGIN {
            kept.push(connection);
            idle.count += 1;
        }
    }

    fn take_idle(&self, origin: &Origin) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let connection = idle.by_origin.get_mut(origin)?.pop()?;
        idle.count -= 1;
        Some(connection)
    }

    /// A new connection, opened whatever is kept (after a kept one failed).
    pub fn connect(&self, target: &Target, deadline: Instant) -> Result<Connection, ConnectError> {
        let addresses = self.addresses(target)?;
        let mut last_error = None;
        let mut socket = None;
        for address in addresses {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ConnectError::Timeout);
            }
            match TcpStream::connect_timeout(&address, left) {
                Ok(connected) => {
                    socket = Some(connected);
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let socket = match (socket, last_error) {
            (Some(socket), _) => socket,
            (None, Some(e)) if is_timeout(e.kind()) => return Err(ConnectError::Timeout),
            (None, Some(e)) => return Err(ConnectError::Tcp(e)),
            (None, None) => {
                return Err(ConnectError::Dns(io::Error::other(
                    "no address for the host",
                )))
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ConnectError::Timeout);
        }
        let prepared = socket
            .set_nodelay(true)
            .and_then(|()| socket.set_read_timeout(Some(left)))
            .and_then(|()| socket.set_write_timeout(Some(left)));
        prepared.map_err(ConnectError::Tcp)?;
        if !target.origin.https {
            return Ok(Connection::new(Stream::Plain(socket), left));
        }
        self.handshake(target, socket, left)
    }

    fn handshake(
        &self,
        target: &Target,
        mut socket: TcpStream,
        timeout: Duration,
    ) -> Result<Connection, ConnectError> {
        let name = ServerName::try_from(target.origin.host.clone())
            .map_err(|e| ConnectError::Tls(format!("invalid server name: {e}")))?;
        let mut tls = rustls::ClientConnection::new(Arc::clone(&self.tls), name)
            .map_err(|e| ConnectError::Tls(e.to_string()))?;
        while tls.is_handshaking() {
            if let Err(e) = tls.complete_io(&mut socket) {
                return Err(if is_timeout(e.kind()) {
                    ConnectError::Timeout
                } else {
                    ConnectError::Tls(e.to_string())
                });
            }
        }
        let stream = rustls::StreamOwned::new(tls, socket);
        Ok(Connection::new(Stream::Tls(Box::new(stream)), timeout))
    }

    /// The host's addresses the network policy allows, in the resolver's order.
    fn addresses(&self, target: &Target) -> Result<Vec<SocketAddr>, ConnectError> {
        let port = target.origin.port;
        let resolved: Vec<SocketAddr> = match target.ip {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => (target.origin.host.as_str(), port)
                .to_socket_addrs()
                .map_err(ConnectError::Dns)?
                .collect(),
        };
        let mut refusal = None;
        let allowed: Vec<SocketAddr> = resolved
            .into_iter()
            .filter(|address| match self.policy.check(address.ip()) {
                Ok(()) => true,
                Err(refused) => {
                    refusal.get_or_insert(refused);
                    false
                }
            })
            .collect();
        match refusal {
            Some(refusal) if allowed.is_empty() => Err(ConnectError::Refused(refusal)),
            _ => Ok(allowed),
        }
    }
}
