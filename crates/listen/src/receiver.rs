//! [`Receiver`]: the recording server with scripted replies, on [`Server`].

use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::reply::{After, Reply};
use crate::request::{serve_requests, Next, RecordedRequest, BAD_REQUEST};
use crate::server::{lock, Connection, Options, Server};

type Handler = dyn Fn(&RecordedRequest, usize) -> Reply + Send + Sync;

#[derive(Default)]
struct Log {
    requests: Vec<RecordedRequest>,
    answered: usize,
}

struct Shared {
    log: Mutex<Log>,
    log_changed: Condvar,
    handler: Box<Handler>,
}

impl Shared {
    fn record(&self, request: RecordedRequest) -> usize {
        let mut log = lock(&self.log);
        log.requests.push(request);
        self.log_changed.notify_all();
        log.requests.len() - 1
    }

    fn mark_answered(&self) {
        lock(&self.log).answered += 1;
        self.log_changed.notify_all();
    }

    fn wait_log<R>(
        &self,
        deadline: Duration,
        pending: impl FnMut(&mut Log) -> bool,
        read: impl FnOnce(&Log) -> R,
    ) -> R {
        let log = lock(&self.log);
        let (log, _) = self
            .log_changed
            .wait_timeout_while(log, deadline, pending)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        read(&log)
    }
}

/// A recording HTTP/1.1 server on 127.0.0.1 that answers with scripted [`Reply`]s.
/// Dropping it stops accepting, cuts open connections and closes the port.
pub struct Receiver {
    shared: Arc<Shared>,
    server: Server,
}

impl Receiver {
    /// Starts on a free port. `handler` gets each request and its 0-based index
    /// among all requests, and picks the reply.
    ///
    /// # Panics
    /// If no port on 127.0.0.1 can be bound.
    pub fn start<F>(handler: F) -> Receiver
    where
        F: Fn(&RecordedRequest, usize) -> Reply + Send + Sync + 'static,
    {
        Receiver::bind(0, handler).expect("bind 127.0.0.1:0")
    }

    /// Starts on 127.0.0.1:`port` (0 = a free one); like [`Receiver::start`] otherwise.
    pub fn bind<F>(port: u16, handler: F) -> io::Result<Receiver>
    where
        F: Fn(&RecordedRequest, usize) -> Reply + Send + Sync + 'static,
    {
        let shared = Arc::new(Shared {
            log: Mutex::default(),
            log_changed: Condvar::new(),
            handler: Box::new(handler),
        });
        let options = Options {
            name: "webhook-listen".into(),
            stack_size: None,
        };
        let server = {
            let shared = Arc::clone(&shared);
            Server::bind(port, options, move |stream, connection| {
                let _ = serve(&shared, stream, &connection);
            })?
        };
        Ok(Receiver { shared, server })
    }

    /// Answers every request with a clone of `reply`.
    pub fn always(reply: Reply) -> Receiver {
        Receiver::start(move |_, _| reply.clone())
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The requests recorded so far, in the order they were fully read.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.log).requests.clone()
    }

    pub fn count(&self) -> usize {
        lock(&self.shared.log).requests.len()
    }

    /// Waits until at least `n` requests were recorded or `deadline` passed, then
    /// returns the requests so far: assert on its length.
    pub fn wait_for(&self, n: usize, deadline: Duration) -> Vec<RecordedRequest> {
        self.shared.wait_log(
            deadline,
            |log| log.requests.len() < n,
            |log| log.requests.clone(),
        )
    }

    /// How many replies were finished (written, or abandoned on a write error or stop).
    pub fn answered(&self) -> usize {
        lock(&self.shared.log).answered
    }

    /// Waits until at least `n` replies were finished or `deadline` passed; returns
    /// [`Receiver::answered`]. Unlike [`Receiver::wait_for`] this tells that the
    /// client has had its answer.
    pub fn wait_answered(&self, n: usize, deadline: Duration) -> usize {
        self.shared
            .wait_log(deadline, |log| log.answered < n, |log| log.answered)
    }

    /// Connections accepted so far: fewer than requests means keep-alive reuse.
    pub fn connections(&self) -> u64 {
        self.server.connections()
    }
}

/// Serves requests on one connection until either side closes it.
fn serve(shared: &Shared, mut stream: TcpStream, connection: &Connection<'_>) -> io::Result<()> {
    serve_requests(&mut stream, |request, out| {
        if connection.stop.is_set() {
            return Ok(Next::Close);
        }
        let recorded = match request.record(connection.id) {
            Ok(recorded) => recorded,
            Err(e) => {
                out.write_all(BAD_REQUEST)?;
                return Err(e);
            }
        };
        let index = shared.record(recorded.clone());
        let reply = (shared.handler)(&recorded, index);
        let after = reply.write(out, connection.stop, request.close);
        shared.mark_answered();
        Ok(match after? {
            After::Close => Next::Close,
            After::KeepAlive => Next::KeepAlive,
        })
    })
}
