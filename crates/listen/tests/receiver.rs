//! The receiver over real sockets: keep-alive, waiting, and each scripted reply.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{post, Client};
use webhook_listen::{Receiver, Reply};

const LONG: Duration = Duration::from_secs(10);

#[test]
fn keep_alive_serves_two_requests_on_one_connection() {
    let rx = Receiver::start(|request, index| {
        Reply::status(201 + index as u16).with_header("X-Path", request.path.clone())
    });
    let mut client = Client::connect(rx.port());
    client.send(
        "POST",
        "/a",
        &[("X-Event-Type", "cliente.criado")],
        b"{\"n\":1}",
    );
    let first = client.read_response();
    client.send("PUT", "/b", &[], b"second");
    let second = client.read_response();

    assert_eq!((first.status, first.header("x-path")), (201, Some("/a")));
    assert_eq!((second.status, second.header("X-Path")), (202, Some("/b")));
    let requests = rx.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].header("x-event-type"), Some("cliente.criado"));
    assert_eq!(requests[0].body_str(), "{\"n\":1}");
    assert_eq!(
        (requests[1].method.as_str(), requests[1].body_str()),
        ("PUT", "second")
    );
    assert_eq!(requests[0].connection_id, requests[1].connection_id);
    assert!(requests[0].received_at <= requests[1].received_at);
    assert_eq!(rx.connections(), 1);

    post(rx.port(), &[], b"");
    assert_eq!(rx.connections(), 2);
    assert_ne!(rx.requests()[2].connection_id, requests[0].connection_id);
    assert_eq!(rx.count(), 3);
}

#[test]
fn wait_for_wakes_on_arrival_and_honours_its_deadline() {
    let rx = Receiver::always(Reply::ok());
    let port = rx.port();
    let sender = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        post(port, &[], b"late")
    });
    let start = Instant::now();
    let got = rx.wait_for(1, LONG);
    assert_eq!(got.len(), 1);
    assert!(
        start.elapsed() < LONG / 2,
        "woke by the Condvar, not the deadline"
    );
    assert_eq!(sender.join().unwrap().body, b"ok");

    let start = Instant::now();
    assert_eq!(rx.wait_for(2, Duration::from_millis(200)).len(), 1);
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert_eq!(rx.wait_answered(1, LONG), 1);
    assert_eq!(rx.answered(), 1);
}

#[test]
fn connection_close_is_honoured() {
    let rx = Receiver::always(Reply::ok());
    let mut client = Client::connect(rx.port());
    client.send("POST", "/", &[("Connection", "close")], b"x");
    let response = client.read_response();
    assert_eq!(response.header("connection"), Some("close"));
    assert!(client.read_to_close().is_empty());
}

#[test]
fn malformed_request_gets_400() {
    let rx = Receiver::always(Reply::ok());
    let mut stream = TcpStream::connect(("127.0.0.1", rx.port())).unwrap();
    stream.write_all(b"NOT HTTP\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert_eq!(rx.count(), 0);
}

#[test]
fn hang_does_not_block_drop() {
    let rx = Receiver::always(Reply::Hang);
    let port = rx.port();
    let mut client = Client::connect(port);
    client.send("POST", "/", &[], b"x");
    assert_eq!(rx.wait_for(1, LONG).len(), 1);

    let start = Instant::now();
    drop(rx);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(
        client.read_to_close().is_empty(),
        "no answer, just the close"
    );
    let refused = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn delay_then_answers() {
    let rx = Receiver::always(Reply::Delay {
        delay: Duration::from_millis(200),
        then: Box::new(Reply::status(503)),
    });
    let start = Instant::now();
    assert_eq!(post(rx.port(), &[], b"").status, 503);
    assert!(start.elapsed() >= Duration::from_millis(200));
}

#[test]
fn trickle_sends_head_then_one_byte_per_interval() {
    let rx = Receiver::always(Reply::Trickle {
        interval: Duration::from_millis(100),
        bytes: b"abcd".to_vec(),
    });
    let mut client = Client::connect(rx.port());
    let start = Instant::now();
    client.send("POST", "/", &[], b"");
    let head = client.read_head();
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, Some("4"))
    );
    // A generous bound so a loaded machine does not flake: the body alone takes 400 ms.
    assert!(
        start.elapsed() < Duration::from_millis(300),
        "head before the body"
    );
    assert_eq!(client.read_to_close(), b"abcd");
    assert!(start.elapsed() >= Duration::from_millis(400));
}

#[test]
fn slow_trickle_does_not_block_drop() {
    let rx = Receiver::always(Reply::Trickle {
        interval: Duration::from_secs(3600),
        bytes: b"never".to_vec(),
    });
    let mut client = Client::connect(rx.port());
    client.send("POST", "/", &[], b"");
    assert_eq!(client.read_head().status, 200);
    let start = Instant::now();
    drop(rx);
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(client.read_to_close().is_empty());
}

#[test]
fn huge_body_streams_the_announced_length() {
    let rx = Receiver::always(Reply::HugeBody {
        status: 200,
        bytes: 5_000_000,
    });
    let mut client = Client::connect(rx.port());
    client.send("POST", "/", &[], b"");
    let head = client.read_head();
    assert_eq!(head.header("content-length"), Some("5000000"));
    assert_eq!(client.read_to_close().len(), 5_000_000);
}

#[test]
fn endless_chunked_keeps_going_until_drop() {
    let rx = Receiver::always(Reply::EndlessChunked { status: 200 });
    let mut client = Client::connect(rx.port());
    client.send("POST", "/", &[], b"");
    let head = client.read_head();
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    let mut body = vec![0; 1 << 20];
    client.reader.read_exact(&mut body).unwrap();
    assert!(body.starts_with(b"2000\r\nxxxx"));

    let start = Instant::now();
    drop(rx);
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn raw_and_close_mid_response_write_then_close() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nshort".to_vec();
    let rx = Receiver::start(move |_, index| match index {
        0 => Reply::Raw(raw.clone()),
        _ => Reply::CloseMidResponse,
    });
    let mut client = Client::connect(rx.port());
    client.send("POST", "/", &[], b"");
    assert_eq!(
        client.read_to_close(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nshort"
    );

    let mut client = Client::connect(rx.port());
    client.send("POST", "/", &[], b"");
    let partial = String::from_utf8(client.read_to_close()).unwrap();
    assert!(partial.starts_with("HTTP/1.1 200 OK\r\n"), "{partial}");
    assert!(
        !partial.contains("\r\n\r\n"),
        "the head never ends: {partial}"
    );
}

#[test]
fn chunked_request_body_is_recorded_decoded() {
    let rx = Receiver::always(Reply::ok());
    let mut stream = TcpStream::connect(("127.0.0.1", rx.port())).unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n")
        .unwrap();
    let got = rx.wait_for(1, LONG);
    assert_eq!(got[0].body_str(), "{\"a\":1}");
}
