//! Graceful shutdown on SIGTERM: every open WebSocket gets a close frame
//! with 1001 (going away), the process exits with status 0 within a few
//! seconds, and nothing listens on the port afterwards. Checked with one
//! shard and with two.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use client::{Client, RawMessage};
use protocol::close;
use support::ws::RawWs;
use support::{ECHO_PATH, Options, WAIT, echo_options};

/// Echo connections kept open during shutdown. With two shards the kernel
/// spreads them by hash: all 8 land on one shard with probability 2^-7.
const CLIENTS: usize = 8;

/// How long from SIGTERM to exit at most.
const EXIT_TIMEOUT: Duration = Duration::from_secs(4);

fn sigterm_closes_every_connection_and_exits_0(shards: u16) {
    let mut server = Options::new().shards(shards).start();
    let options = echo_options();
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|i| {
            let mut c = Client::connect_with(server.addr(), &options).unwrap();
            // Upgraded and served: the connection is in its WebSocket loop.
            c.send_raw_text(&format!("client {i}")).unwrap();
            assert_eq!(
                c.recv_raw(WAIT).unwrap(),
                Some(RawMessage::Text(format!("client {i}")))
            );
            c
        })
        .collect();

    let signalled = Instant::now();
    server.sigterm();
    for c in &mut clients {
        match c.recv_raw(WAIT) {
            Err(client::Error::Closed { code, reason }) => {
                assert_eq!(code, close::GOING_AWAY, "{reason}");
            }
            other => panic!("expected a 1001 close, got {other:?}"),
        }
    }
    // The clients have answered the close; dropping them ends TCP.
    drop(clients);
    let status = server.wait_exit(EXIT_TIMEOUT);
    assert!(status.success(), "{status:?}; log:\n{}", server.log());
    let took = signalled.elapsed();
    let log = server.log();
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("engine::server: stopped"), "{log}");
    assert!(
        !log.contains("still open after the shutdown grace period"),
        "{log}"
    );
    assert!(took < EXIT_TIMEOUT, "exit took {took:?}");

    let refused = TcpStream::connect_timeout(&server.addr(), WAIT);
    assert!(
        matches!(&refused, Err(e) if e.kind() == ErrorKind::ConnectionRefused),
        "{refused:?}"
    );
}

#[test]
fn sigterm_with_one_shard() {
    sigterm_closes_every_connection_and_exits_0(1);
}

#[test]
fn sigterm_with_two_shards() {
    sigterm_closes_every_connection_and_exits_0(2);
}

#[test]
fn sigterm_without_connections_exits_promptly() {
    let mut server = Options::new().shards(2).start();
    let signalled = Instant::now();
    server.sigterm();
    let status = server.wait_exit(EXIT_TIMEOUT);
    assert!(status.success(), "{status:?}; log:\n{}", server.log());
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(1), "exit took {took:?}");
}

#[test]
fn new_connections_are_refused_while_draining() {
    let mut server = Options::new().shards(1).start();
    // A client that never answers the close keeps the shard draining for
    // the close linger (2 s).
    let mut raw = RawWs::connect(server.addr(), ECHO_PATH);
    server.sigterm();
    assert_eq!(raw.recv_close(WAIT), Some(close::GOING_AWAY));
    // Well inside the 2 s drain, and time enough for the shard to close
    // its listener after it stopped accepting.
    std::thread::sleep(Duration::from_millis(200));
    match TcpStream::connect_timeout(&server.addr(), WAIT) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("{} accepted a connection while draining", server.addr()),
    }
    drop(raw);
    assert!(server.wait_exit(EXIT_TIMEOUT).success());
}

#[test]
fn the_listener_is_gone_when_the_process_exits() {
    // A race, so many rounds: at a 7% hit rate, 100 miss with p < 0.1%.
    for round in 0..100 {
        let mut server = Options::new().shards(2).start();
        server.sigterm();
        assert!(server.wait_exit(EXIT_TIMEOUT).success());
        assert!(
            TcpStream::connect_timeout(&server.addr(), WAIT).is_err(),
            "round {round}: {} accepted after exit",
            server.addr()
        );
    }
}
