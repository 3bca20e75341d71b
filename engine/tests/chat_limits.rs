//! Bad input on the chat endpoint gets a clear answer and never takes the
//! server down: undecodable messages are answered by `error` (and too many
//! of them close with 4006), an unknown version byte by
//! `unsupported_version`, an oversize message closes with 1009, a slow
//! reader is closed with 4002 — and the server keeps serving others.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::time::Duration;

use protocol::{ErrorCode, ServerMsg, close};
use support::chat::Device;
use support::{Options, WAIT};

fn expect_error(d: &mut Device, want: ErrorCode) {
    match d.recv() {
        ServerMsg::Error {
            rid: None,
            cmid: None,
            code,
            ..
        } if code == want => {}
        other => panic!("expected an error {want:?} naming no request, got {other:?}"),
    }
}

/// Receives until the connection closes; returns its close code.
fn close_code(d: &mut Device) -> Option<u16> {
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        match d.client().recv(WAIT) {
            Ok(_) => {}
            Err(e) => return e.close_code(),
        }
    }
    panic!("the connection did not close within {WAIT:?}");
}

#[test]
fn undecodable_messages_are_answered_then_closed_with_4006() {
    let server = Options::new().start();
    let mut d = Device::online(&server, 1, 1);
    d.client().send_raw_text("{not json").unwrap();
    expect_error(&mut d, ErrorCode::BadRequest);
    d.client().send_raw_text(r#"{"launch":{"rid":1}}"#).unwrap();
    expect_error(&mut d, ErrorCode::BadRequest);
    d.client().send_raw_binary(&[9, 0, 0]).unwrap();
    expect_error(&mut d, ErrorCode::UnsupportedVersion);
    for _ in 0..20 {
        if d.client().send_raw_text("]").is_err() {
            break;
        }
    }
    assert_eq!(close_code(&mut d), Some(close::BAD_MESSAGES));
    // Others are still served.
    let mut other = Device::online(&server, 2, 1);
    other.direct_open(1);
}

#[test]
fn an_oversize_message_closes_with_1009() {
    let server = Options::new().start();
    let mut d = Device::online(&server, 1, 1);
    let big = format!(
        r#"{{"send":{{"conv":"1","cmid":"1","body":"{}"}}}}"#,
        "x".repeat(protocol::limits::CLIENT_MESSAGE_BYTES_MAX)
    );
    let _ = d.client().send_raw_text(&big);
    assert_eq!(close_code(&mut d), Some(close::MESSAGE_TOO_BIG));
}

#[test]
fn a_reader_that_does_not_keep_up_is_closed_with_4002() {
    // Send limits off: alice floods on purpose.
    let server = Options::new()
        .arg("--durability")
        .arg("none")
        .arg("--send-rate-per-connection")
        .arg("0")
        .arg("--send-rate-per-user")
        .arg("0")
        .start();
    let mut alice = Device::online(&server, 1, 1);
    let conv = alice.direct_open(2).conv;
    // Bob syncs, then stops reading while alice sends far more than the
    // server queues for one connection plus what the socket buffers hold.
    let mut bob = Device::online(&server, 2, 1);
    let body = "y".repeat(protocol::limits::BODY_BYTES_MAX);
    let bodies: Vec<String> = (0..2_000).map(|_| body.clone()).collect();
    alice.send_many(conv, &bodies, 64);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(close_code(&mut bob), Some(close::SLOW_CONSUMER));
    // Nothing acked is lost: a new connection catches up on all of it.
    let mut bob = Device::connect(&server, 2, 1);
    let synced = bob.sync();
    assert_eq!(synced.in_conv(conv).len(), bodies.len());
}
