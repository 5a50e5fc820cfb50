//! The one test HTTP server of the workspace: an accept thread on 127.0.0.1 plus one thread
//! per connection, each handed to a connection handler (usually [`serve_requests`]
//! (crate::serve_requests) with a request handler). [`Receiver`](crate::Receiver), the
//! benchmark's receiver and the delivery core's test server are built on it.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Handlers run outside every lock, so poisoning can only follow a bug in this
/// crate; the data stays consistent either way, so carry on.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The stop signal: a flag whose waits wake as soon as it is set, so hanging and
/// trickling handlers end promptly when the server is dropped.
#[derive(Default)]
pub struct Stop {
    stopped: Mutex<bool>,
    changed: Condvar,
}

impl Stop {
    fn set(&self) {
        *lock(&self.stopped) = true;
        self.changed.notify_all();
    }

    pub fn is_set(&self) -> bool {
        *lock(&self.stopped)
    }

    /// Sleeps for `duration` unless stopped first; true if the server still runs.
    pub fn sleep(&self, duration: Duration) -> bool {
        let stopped = lock(&self.stopped);
        let (stopped, _) = self
            .changed
            .wait_timeout_while(stopped, duration, |stopped| !*stopped)
            .unwrap_or_else(PoisonError::into_inner);
        !*stopped
    }

    /// Waits until the server stops.
    pub fn wait(&self) {
        let stopped = lock(&self.stopped);
        drop(
            self.changed
                .wait_while(stopped, |stopped| !*stopped)
                .unwrap_or_else(PoisonError::into_inner),
        );
    }
}

/// One accepted connection, as its handler sees it.
pub struct Connection<'a> {
    /// 0 for the first accepted connection, counting up.
    pub id: u64,
    /// Set when the server stops: long waits should use it.
    pub stop: &'a Stop,
}

type ConnectionHandler = dyn Fn(TcpStream, Connection<'_>) + Send + Sync;

/// How the server's threads are made.
#[derive(Clone, Debug)]
pub struct Options {
    /// Names the accept thread (`<name>-accept`) and the connection threads (`<name>-<id>`).
    pub name: String,
    /// Stack size of the connection threads; `None` for the platform's default.
    pub stack_size: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            name: "test-http".into(),
            stack_size: None,
        }
    }
}

struct Shared {
    stop: Stop,
    accepted: AtomicU64,
    /// Clones of the open sockets, so `stop` can shut them and unblock their threads.
    open: Mutex<HashMap<u64, TcpStream>>,
    handler: Box<ConnectionHandler>,
    options: Options,
}

/// An accept loop on 127.0.0.1. Stopping it (or dropping it) stops accepting, cuts open
/// connections and closes the port.
pub struct Server {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on 127.0.0.1:`port` (0: a free one) and hands every accepted connection (with
    /// Nagle off: small replies and trickled bytes leave at once) to `handler` on a thread of
    /// its own.
    pub fn bind<F>(port: u16, options: Options, handler: F) -> io::Result<Server>
    where
        F: Fn(TcpStream, Connection<'_>) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            stop: Stop::default(),
            accepted: AtomicU64::new(0),
            open: Mutex::default(),
            handler: Box::new(handler),
            options,
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("{}-accept", shared.options.name))
                .spawn(move || accept_loop(&listener, &shared))?
        };
        Ok(Server {
            shared,
            addr,
            acceptor: Some(acceptor),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Stops accepting and shuts every open connection (their clients see the close at once,
    /// and handlers waiting on [`Stop`] wake). Idempotent.
    pub fn stop(&mut self) {
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

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
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
        let _ = stream.set_nodelay(true);
        let Ok(registered) = stream.try_clone() else {
            continue;
        };
        {
            // Checked under the lock that `stop` takes after setting the flag, so no
            // socket escapes the shutdown.
            let mut open = lock(&shared.open);
            if shared.stop.is_set() {
                return;
            }
            open.insert(id, registered);
        }
        let conn_shared = Arc::clone(shared);
        let mut builder = thread::Builder::new().name(format!("{}-{id}", shared.options.name));
        if let Some(size) = shared.options.stack_size {
            builder = builder.stack_size(size);
        }
        let spawned = builder.spawn(move || {
            let _registration = Registration {
                shared: &conn_shared,
                id,
            };
            (conn_shared.handler)(
                stream,
                Connection {
                    id,
                    stop: &conn_shared.stop,
                },
            );
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
