//! The receiver: an accept thread plus one thread per connection.

use std::collections::HashMap;
use std::io::{self, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::reply::{After, Reply};
use crate::request::{read_request, RecordedRequest};

type Handler = dyn Fn(&RecordedRequest, usize) -> Reply + Send + Sync;

/// Handlers run outside every lock, so poisoning can only follow a bug in this
/// file; the data stays consistent either way, so carry on.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The stop signal: a flag whose waits wake as soon as it is set, so hanging and
/// trickling replies end promptly when the receiver is dropped.
#[derive(Default)]
pub(crate) struct Stop {
    stopped: Mutex<bool>,
    changed: Condvar,
}

impl Stop {
    fn set(&self) {
        *lock(&self.stopped) = true;
        self.changed.notify_all();
    }

    pub(crate) fn is_set(&self) -> bool {
        *lock(&self.stopped)
    }

    /// Sleeps for `duration` unless stopped first; true if the receiver still runs.
    pub(crate) fn sleep(&self, duration: Duration) -> bool {
        let stopped = lock(&self.stopped);
        let (stopped, _) = self
            .changed
            .wait_timeout_while(stopped, duration, |stopped| !*stopped)
            .unwrap_or_else(PoisonError::into_inner);
        !*stopped
    }

    pub(crate) fn wait(&self) {
        let stopped = lock(&self.stopped);
        drop(
            self.changed
                .wait_while(stopped, |stopped| !*stopped)
                .unwrap_or_else(PoisonError::into_inner),
        );
    }
}

#[derive(Default)]
struct Log {
    requests: Vec<RecordedRequest>,
    answered: usize,
}

struct Shared {
    log: Mutex<Log>,
    log_changed: Condvar,
    stop: Stop,
    accepted: AtomicU64,
    /// Clones of the open sockets, so `Drop` can shut them and unblock their threads.
    open: Mutex<HashMap<u64, TcpStream>>,
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
            .unwrap_or_else(PoisonError::into_inner);
        read(&log)
    }
}

/// A recording HTTP/1.1 server on 127.0.0.1 that answers with scripted [`Reply`]s.
/// Dropping it stops accepting, cuts open connections and closes the port.
pub struct Receiver {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
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
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            log: Mutex::default(),
            log_changed: Condvar::new(),
            stop: Stop::default(),
            accepted: AtomicU64::new(0),
            open: Mutex::default(),
            handler: Box::new(handler),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("webhook-listen-accept".into())
                .spawn(move || accept_loop(&listener, &shared))?
        };
        Ok(Receiver {
            shared,
            addr,
            acceptor: Some(acceptor),
        })
    }

    /// Answers every request with a clone of `reply`.
    pub fn always(reply: Reply) -> Receiver {
        Receiver::start(move |_, _| reply.clone())
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
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
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.stop.set();
        for stream in lock(&self.shared.open).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        if let Some(acceptor) = self.acceptor.take() {
            // Wake the blocking accept() so it sees the stop flag. Should the connect
            // fail, leave the thread rather than risk joining it forever.
            if TcpStream::connect(self.addr).is_ok() {
                let _ = acceptor.join();
            }
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.is_set() {
            return;
        }
        let Ok(stream) = stream else {
            // E.g. out of file descriptors: back off instead of spinning.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let id = shared.accepted.fetch_add(1, Ordering::SeqCst);
        // Trickled bytes and small replies must leave at once, not wait on Nagle.
        let _ = stream.set_nodelay(true);
        let Ok(registered) = stream.try_clone() else {
            continue;
        };
        {
            // Checked under the lock that Drop takes after setting the flag, so no
            // socket escapes the shutdown.
            let mut open = lock(&shared.open);
            if shared.stop.is_set() {
                return;
            }
            open.insert(id, registered);
        }
        let conn_shared = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name(format!("webhook-listen-conn-{id}"))
            .spawn(move || {
                let _registration = Registration {
                    shared: &conn_shared,
                    id,
                };
                let _ = serve(&conn_shared, stream, id);
            });
        if spawned.is_err() {
            lock(&shared.open).remove(&id);
        }
    }
}

/// Unregisters a connection's socket however its thread ends, so that even after a
/// panicking handler the last clone is dropped and the client sees the close.
struct Registration<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        lock(&self.shared.open).remove(&self.id);
    }
}

/// Serves requests on one connection until either side closes it.
fn serve(shared: &Shared, stream: TcpStream, id: u64) -> io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut input = BufReader::new(stream);
    loop {
        let incoming = match read_request(&mut input, &mut out, id) {
            Ok(Some(incoming)) => incoming,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                out.write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if shared.stop.is_set() {
            return Ok(());
        }
        let index = shared.record(incoming.request.clone());
        let reply = (shared.handler)(&incoming.request, index);
        let after = reply.write(&mut out, &shared.stop, incoming.close);
        shared.mark_answered();
        if after? == After::Close {
            return Ok(());
        }
    }
}
