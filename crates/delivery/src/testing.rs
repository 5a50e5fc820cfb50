//! The workspace's test HTTP server (`webhook_listen::Server`), shaped for the tests of `http`
//! and `pool`: each connection gets its own thread, so a test can script a receiver that is
//! slow, silent or broken.

use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver};

use webhook_listen::{serve_requests, Next, Options, Server};

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
    server: Server,
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
        Self::start(
            move |mut stream| {
                let _ = serve_requests(&mut stream, |request, stream| {
                    let received = Received {
                        head: String::from_utf8_lossy(request.head).into_owned(),
                        body: request.body.to_vec(),
                    };
                    let _ = sender.send(received.clone());
                    respond(&received, stream);
                    Ok(Next::KeepAlive)
                });
            },
            received,
        )
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
        let server = Server::bind(0, Options::default(), move |stream, _| handle(stream))
            .expect("bind 127.0.0.1:0");
        TestServer {
            addr: server.addr(),
            server,
            received,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.server.connections() as usize
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Received> {
        self.received.try_iter().collect()
    }
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
