//! The dev echo WebSocket (`/v1/dev/echo`): it echoes text and binary
//! messages, answers pings, completes the close handshake, and closes with
//! 1002 on a protocol error and 1007 on invalid UTF-8.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use client::{Client, RawMessage};
use protocol::close;
use support::ws::{self, RawWs};
use support::{ECHO_PATH, Server, WAIT, echo_options};

fn connect(server: &Server) -> Client {
    Client::connect_with(server.addr(), &echo_options()).unwrap()
}

#[test]
fn echoes_text_and_binary() {
    let server = Server::start();
    let mut c = connect(&server);
    c.send_raw_text("hello, switchboard — ünïcödé").unwrap();
    assert_eq!(
        c.recv_raw(WAIT).unwrap(),
        Some(RawMessage::Text("hello, switchboard — ünïcödé".to_owned()))
    );
    c.send_raw_binary(&[0, 1, 2, 0xff]).unwrap();
    assert_eq!(
        c.recv_raw(WAIT).unwrap(),
        Some(RawMessage::Binary(vec![0, 1, 2, 0xff]))
    );
    // Larger than the shard's 64 KiB read buffer: several reads, one message.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    c.send_raw_binary(&big).unwrap();
    assert_eq!(c.recv_raw(WAIT).unwrap(), Some(RawMessage::Binary(big)));
    c.send_raw_text("").unwrap();
    assert_eq!(
        c.recv_raw(WAIT).unwrap(),
        Some(RawMessage::Text(String::new()))
    );
    c.close().unwrap();
}

#[test]
fn answers_ping_and_completes_the_close_handshake() {
    let server = Server::start();
    let mut raw = RawWs::connect(server.addr(), ECHO_PATH);
    raw.send(ws::PING, b"are you there");
    let pong = raw.recv(WAIT).unwrap();
    assert_eq!((pong.opcode, pong.fin), (ws::PONG, true));
    assert_eq!(pong.payload, b"are you there");

    // A fragmented message with a ping in the middle.
    raw.send_frame(false, ws::TEXT, b"frag", true);
    raw.send(ws::PING, b"");
    raw.send_frame(true, 0x0, b"mented", true);
    let pong = raw.recv(WAIT).unwrap();
    assert_eq!((pong.opcode, pong.payload.len()), (ws::PONG, 0));
    let echo = raw.recv(WAIT).unwrap();
    assert_eq!(
        (echo.opcode, echo.payload.as_slice()),
        (ws::TEXT, &b"fragmented"[..])
    );

    raw.send_close(close::NORMAL);
    assert_eq!(raw.recv_close(WAIT), Some(close::NORMAL));
    raw.expect_eof(WAIT);
}

#[test]
fn an_unmasked_frame_gets_1002() {
    let server = Server::start();
    let mut raw = RawWs::connect(server.addr(), ECHO_PATH);
    raw.send_frame(true, ws::TEXT, b"not masked", false);
    assert_eq!(raw.recv_close(WAIT), Some(close::PROTOCOL_ERROR));
    raw.expect_eof(WAIT);
}

#[test]
fn reserved_bits_get_1002() {
    let server = Server::start();
    let mut raw = RawWs::connect(server.addr(), ECHO_PATH);
    let mut frame = ws::encode(true, ws::TEXT, b"rsv1", Some([1, 2, 3, 4]));
    frame[0] |= 0x40;
    raw.send_bytes(&frame);
    assert_eq!(raw.recv_close(WAIT), Some(close::PROTOCOL_ERROR));
    raw.expect_eof(WAIT);
}

#[test]
fn invalid_utf8_text_gets_1007() {
    let server = Server::start();
    let mut raw = RawWs::connect(server.addr(), ECHO_PATH);
    // "κ" and then a truncated three-byte sequence.
    raw.send(ws::TEXT, &[0xce, 0xba, 0xe1, 0xbd]);
    assert_eq!(raw.recv_close(WAIT), Some(close::INVALID_PAYLOAD));
    raw.expect_eof(WAIT);
}
