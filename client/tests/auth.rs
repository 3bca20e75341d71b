//! The upgrade: where the token goes, and the 401 refusal.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use client::{Auth, Client, ConnectOptions, Error};
use protocol::{DeviceId, Encoding, ServerMsg, UserId};
use support::{FakeServer, TokenSeen, WAIT, token};

#[test]
fn bearer_token_is_sent_in_the_authorization_header() {
    let server = FakeServer::start(vec![]);
    let token = token();
    let mut c = Client::connect(server.addr, &token, Encoding::Json).unwrap();
    let welcome = c.recv(WAIT).unwrap();
    assert!(
        matches!(
            welcome,
            Some(ServerMsg::Welcome {
                user: UserId(1),
                device: DeviceId(2),
                version: 1,
                ..
            })
        ),
        "{welcome:?}"
    );
    c.close().unwrap();
    let report = server.join();
    assert_eq!(report.token, Some(TokenSeen::Header(token)));
    assert_eq!(report.encoding, Some(Encoding::Json));
}

#[test]
fn query_token_is_sent_in_the_query() {
    let server = FakeServer::start(vec![]);
    let token = token();
    let addr = server.addr.to_string();
    let mut c = Client::connect_with_query_token(addr.as_str(), &token, Encoding::Binary).unwrap();
    assert!(matches!(
        c.recv(WAIT).unwrap(),
        Some(ServerMsg::Welcome { .. })
    ));
    c.close().unwrap();
    let report = server.join();
    assert_eq!(report.token, Some(TokenSeen::Query(token)));
    assert_eq!(report.encoding, Some(Encoding::Binary));
}

#[test]
fn missing_token_is_refused_with_401_and_no_upgrade() {
    let server = FakeServer::start(vec![]);
    let mut options = ConnectOptions::new("", Encoding::Json);
    options.auth = Auth::None;
    let err = Client::connect_with(server.addr, &options).unwrap_err();
    assert!(
        matches!(&err, Error::Refused { status: 401, body, .. } if body == "missing or bad token"),
        "{err:?}"
    );
    assert_eq!(err.refused_status(), Some(401));
    let report = server.join();
    assert!(report.refused);
    assert_eq!(report.token, Some(TokenSeen::Missing));
}

#[test]
fn bad_token_is_refused_with_401() {
    let server = FakeServer::start(vec![]);
    let err = Client::connect(server.addr, "not.a.token", Encoding::Binary).unwrap_err();
    assert_eq!(err.refused_status(), Some(401), "{err:?}");
    assert!(server.join().refused);
}

#[test]
fn connect_to_a_closed_port_fails() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let err = Client::connect(addr, &token(), Encoding::Json).unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
}

#[test]
fn silent_server_hits_the_handshake_timeout() {
    // The kernel completes the TCP handshake from the backlog; nobody answers
    // the upgrade.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut options = ConnectOptions::new(&token(), Encoding::Json);
    options.connect_timeout = Duration::from_millis(200);
    let started = Instant::now();
    let err = Client::connect_with(listener.local_addr().unwrap(), &options).unwrap_err();
    assert!(matches!(err, Error::HandshakeTimeout { .. }), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(started.elapsed() < WAIT);
}
