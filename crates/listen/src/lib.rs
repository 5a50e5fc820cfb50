//! A receiver for webhook_ext's deliveries, usable two ways:
//!
//! - [`Receiver`]: a real HTTP/1.1 server on 127.0.0.1 for end-to-end and fault tests. It
//!   records every request and answers with a scripted [`Reply`], including broken ones
//!   (hangs, trickles, endless bodies, malformed bytes).
//! - [`Server`] and [`serve_requests`]: the accept loop and the request reader under
//!   [`Receiver`], for servers that answer on their own terms (the benchmark's receiver,
//!   the delivery core's unit tests). Request heads are parsed by `httparse`.
//! - [`verify_hex`] / [`verify_standard`]: the signature checks a partner would run,
//!   written from the wire format (docs/REFERENCE.md, "Wire format") and independent of the
//!   sender's code.
//!
//! The `webhook-listen` binary builds a development receiver on both.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::time::Duration;
//! use webhook_listen::{Receiver, Reply};
//!
//! // Fail the first attempt, accept the retry.
//! let rx = Receiver::start(|_request, index| match index {
//!     0 => Reply::status(503),
//!     _ => Reply::ok(),
//! });
//! let mut conn = std::net::TcpStream::connect(("127.0.0.1", rx.port())).unwrap();
//! conn.write_all(b"POST /hook HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
//!     .unwrap();
//! let mut answer = String::new();
//! conn.read_to_string(&mut answer).unwrap();
//! assert!(answer.starts_with("HTTP/1.1 503 "));
//! assert_eq!(rx.wait_for(1, Duration::from_secs(5))[0].body_str(), "{}");
//! ```

mod receiver;
mod reply;
mod request;
mod server;
mod verify;

pub use receiver::Receiver;
pub use reply::Reply;
pub use request::{serve_requests, Next, RecordedRequest, Request};
pub use server::{Connection, Options, Server, Stop};
pub use verify::{verify_bare_hex, verify_hex, verify_standard, verify_token};
