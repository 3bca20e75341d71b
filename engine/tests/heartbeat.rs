//! Heartbeats and the idle timeout: a quiet WebSocket gets a ping after
//! `heartbeat_interval`; one that answers stays open, one that sends nothing
//! for `idle_timeout` is closed with 4005.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::time::{Duration, Instant};

use client::{Client, RawMessage};
use protocol::close;
use support::ws::{self, RawWs};
use support::{ECHO_PATH, Options, Server, WAIT, echo_options};

const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// Timer and scheduling slack on either side of an expected moment.
const SLACK: Duration = Duration::from_millis(200);

fn server() -> Server {
    let server = Options::new()
        .config(
            "heartbeat_interval = \"1s\"\nidle_timeout = \"3s\"\nadmin_listen = \"127.0.0.1:0\"\n",
        )
        .start();
    // The admin listener opens its socket after the `listening` line: wait
    // for it, so socket counts taken now stay the baseline.
    assert!(
        server.wait_for_log("admin listening", WAIT),
        "{}",
        server.log()
    );
    server
}

#[test]
fn a_client_that_answers_pings_stays_open() {
    let server = server();
    let mut c = Client::connect_with(server.addr(), &echo_options()).unwrap();
    let opened = Instant::now();
    // Reading answers the server's pings; past the idle timeout the
    // connection must still be open, with nothing else received.
    let stay = IDLE_TIMEOUT + Duration::from_millis(1500);
    while opened.elapsed() < stay {
        let left = stay.saturating_sub(opened.elapsed());
        assert_eq!(c.recv_raw(left).unwrap(), None);
    }
    c.send_raw_text("still here").unwrap();
    assert_eq!(
        c.recv_raw(WAIT).unwrap(),
        Some(RawMessage::Text("still here".to_owned()))
    );
    c.close().unwrap();
}

#[test]
fn a_client_that_never_answers_gets_a_ping_then_4005() {
    let server = server();
    let mut raw = RawWs::connect(server.addr(), ECHO_PATH);
    let opened = Instant::now();

    let ping = raw.recv(WAIT).unwrap();
    let at = opened.elapsed();
    assert_eq!(ping.opcode, ws::PING, "{ping:?}");
    assert!(
        at + SLACK >= HEARTBEAT_INTERVAL && at <= HEARTBEAT_INTERVAL * 2,
        "ping after {at:?}"
    );

    let closing = raw.recv(WAIT).unwrap();
    let at = opened.elapsed();
    assert_eq!(
        closing.close_code(),
        Some(close::IDLE_TIMEOUT),
        "{closing:?}"
    );
    assert!(
        at + SLACK >= IDLE_TIMEOUT && at <= IDLE_TIMEOUT + Duration::from_secs(2),
        "closed after {at:?}"
    );
    // Answer the close, as a client would; the server has already ended
    // its side of TCP.
    raw.send_close(close::IDLE_TIMEOUT);
    raw.expect_eof(WAIT);
}

#[test]
fn the_socket_is_released_after_an_idle_close() {
    let server = server();
    let baseline = server.open_sockets();
    let mut raw = RawWs::connect(server.addr(), ECHO_PATH);
    assert_eq!(raw.recv(WAIT).unwrap().opcode, ws::PING);
    let closing = raw.recv(WAIT).unwrap();
    assert_eq!(closing.close_code(), Some(close::IDLE_TIMEOUT));
    // No close reply: the server waits `CLOSE_LINGER` (2 s) for one, then
    // must let go of the socket whatever the client does.
    raw.expect_eof(WAIT);
    assert!(
        server.wait_for_open_sockets_at_most(baseline, Duration::from_secs(4)),
        "the server holds {} sockets, {baseline} before the connection: {:?}",
        server.open_sockets(),
        server.open_fds()
    );
}
