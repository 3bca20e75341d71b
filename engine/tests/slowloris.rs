//! Slow clients cannot hold a connection in the HTTP phase: a request head
//! that is not complete within `handshake_timeout` gets 408 and the
//! connection closes, however the bytes trickle in, while other requests on
//! the same shard are answered at once.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::http::{self, get, read_response_complete};
use support::{Options, Server, WAIT};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// The 408 comes at the timeout, plus scheduling slack.
const LATEST_ANSWER: Duration = Duration::from_secs(3);

fn server() -> Server {
    // One shard, so the slow connections and the quick one share a thread.
    let server = Options::new()
        .shards(1)
        .config("handshake_timeout = \"1s\"\nadmin_listen = \"127.0.0.1:0\"\n")
        .start();
    // The admin socket opens after the `listening` line; socket counts
    // taken after this include it.
    assert!(
        server.wait_for_log("admin listening", WAIT),
        "{}",
        server.log()
    );
    server
}

/// Reads the answer on a slow connection: a 408 that arrived between the
/// timeout and `LATEST_ANSWER` after `opened`.
fn assert_timed_out(stream: &mut TcpStream, opened: Instant) {
    let response = read_response_complete(stream, WAIT);
    let waited = opened.elapsed();
    assert_eq!(response.status, 408, "{}", response.text());
    assert!(
        waited + Duration::from_millis(50) >= HANDSHAKE_TIMEOUT,
        "answered early, after {waited:?}"
    );
    assert!(waited <= LATEST_ANSWER, "answered late, after {waited:?}");
}

#[test]
fn half_a_request_head_gets_408_while_others_are_served() {
    let server = server();
    let opened = Instant::now();
    let mut half = http::connect(server.addr());
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: te")
        .unwrap();
    let mut silent = http::connect(server.addr());

    // Both slow connections are open on the only shard; a well-behaved
    // request still gets its answer long before their timeout.
    let asked = Instant::now();
    let health = get(server.addr(), "/healthz");
    assert_eq!(health.status, 200);
    let took = asked.elapsed();
    assert!(took < Duration::from_millis(500), "/healthz took {took:?}");

    assert_timed_out(&mut half, opened);
    assert_timed_out(&mut silent, opened);
}

#[test]
fn trickling_bytes_does_not_extend_the_deadline() {
    let server = server();
    let mut stream = http::connect(server.addr());
    let opened = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        .unwrap();
    // One byte per 100 ms, each well within any per-read timeout, until the
    // answer starts to arrive.
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut first = [0u8; 1];
    loop {
        assert!(
            opened.elapsed() < LATEST_ANSWER,
            "no answer while trickling"
        );
        match stream.peek(&mut first) {
            Ok(1) => break,
            Ok(_) => panic!("closed without an answer"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                stream.write_all(b"a").unwrap();
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }
    assert_timed_out(&mut stream, opened);
}

#[test]
fn a_timed_out_connection_is_closed() {
    let server = server();
    let baseline = server.open_sockets();
    let opened = Instant::now();
    let mut half = http::connect(server.addr());
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: te")
        .unwrap();
    let answer = http::read_to_close(&mut half, LATEST_ANSWER);
    let waited = opened.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(waited <= LATEST_ANSWER, "closed after {waited:?}");
    assert!(
        server.wait_for_open_sockets_at_most(baseline, WAIT),
        "the server holds {} sockets, {baseline} before the connection: {:?}",
        server.open_sockets(),
        server.open_fds()
    );
}
