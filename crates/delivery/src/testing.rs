//! A small HTTP/1.1 server on 127.0.0.1 for the tests of `http` and `pool`: each connection gets
//! its own thread, so a test can script a receiver that is slow, silent or broken.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;

/// One request as the server read it.
#[derive(Debug, Clone)]
pub struct Received {
    pub head: String,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
    received: Receiver<Received>,
}

impl TestServer {
    /// Hands every accepted connection to `handle`, untouched.
    pub fn raw(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> TestServer {
        Self::start(handle, mpsc::channel().1)
    }

    /// Reads requests one after the other on each connection (keep-alive), records them and
    /// lets `respond` write whatever it likes.
    pub fn http(respond: impl Fn(&Received, &mut TcpStream) + Send + Sync + 'static) -> TestServer {
        let (sender, received) = mpsc::channel();
        Self::start(move |stream| serve(stream, &sender, &respond), received)
    }

    /// Answers every request with the same bytes.
    pub fn canned(response: Vec<u8>) -> TestServer {
        Self::http(move |_, stream| {
            let _ = std::io::Write::write_all(stream, &response);
        })
    }

    fn start(
        handle: impl Fn(TcpStream) + Send + Sync + 'static,
        received: Receiver<Received>,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let handle = Arc::new(handle);
        let connections = Arc::new(AtomicUsize::new(0));
        let stopping = Arc::clone(&stop);
        let accepted = Arc::clone(&connections);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let handle = Arc::clone(&handle);
                    thread::spawn(move || handle(stream));
                }
            }
        });
        TestServer {
            addr,
            stop,
            connections,
            received,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Received> {
        self.received.try_iter().collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop so it sees `stop`
    }
}

fn serve(
    stream: TcpStream,
    sender: &Sender<Received>,
    respond: &dyn Fn(&Received, &mut TcpStream),
) {
    let Ok(reader) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reader);
    let mut stream = stream;
    while let Some(request) = read_request(&mut reader) {
        let _ = sender.send(request.clone());
        respond(&request, &mut stream);
    }
}

fn read_request(reader: &mut impl BufRead) -> Option<Received> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let mut request = Received {
        head,
        body: Vec::new(),
    };
    let length: usize = request
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap());
    request.body = vec![0; length];
    reader.read_exact(&mut request.body).ok()?;
    Some(request)
}

/// `HTTP/1.1 <status>` with a Content-Length and the given extra headers.
pub fn response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}
