//! JSON and binary both work, in both directions, and bad input is reported.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod support;

use client::{Client, Error, RawMessage};
use protocol::{
    ClientMsg, ClientMsgId, Content, ConvId, DeviceId, Encoding, ErrorCode, Message, MsgId,
    PresenceStatus, Seq, ServerMsg, UnixMillis, UserId,
};
use support::{FakeServer, WAIT, command, token};

fn script() -> Vec<ServerMsg> {
    vec![
        ServerMsg::Msg(Message {
            conv: ConvId(u64::MAX),
            seq: Seq(3),
            id: MsgId(9),
            from: UserId(2),
            device: DeviceId(1),
            ts: UnixMillis(1_767_225_600_000),
            content: Content::Text("hé 👋".to_owned()),
        }),
        ServerMsg::Presence {
            user: UserId(2),
            status: PresenceStatus::Offline,
            last_seen: None,
        },
    ]
}

fn round_trip(encoding: Encoding) {
    let server = FakeServer::start(script());
    let mut c = Client::connect(server.addr, &token(), encoding).unwrap();
    assert_eq!(c.encoding(), encoding);
    assert!(matches!(
        c.recv(WAIT).unwrap(),
        Some(ServerMsg::Welcome { .. })
    ));
    for expected in script() {
        assert_eq!(c.recv(WAIT).unwrap(), Some(expected));
    }
    let send = ClientMsg::Send {
        conv: ConvId(300),
        cmid: ClientMsgId(u64::MAX),
        body: "hello".to_owned(),
    };
    c.send(&send).unwrap();
    let ack = c.recv(WAIT).unwrap();
    assert!(
        matches!(
            ack,
            Some(ServerMsg::Ack {
                cmid: ClientMsgId(u64::MAX),
                conv: ConvId(300),
                seq: Seq(1),
                ..
            })
        ),
        "{ack:?}"
    );
    c.close().unwrap();
    assert_eq!(server.join().received, vec![(encoding, send)]);
}

#[test]
fn json_round_trip() {
    round_trip(Encoding::Json);
}

#[test]
fn binary_round_trip() {
    round_trip(Encoding::Binary);
}

#[test]
fn raw_frames_match_the_requested_encoding() {
    for (encoding, first_byte) in [
        (Encoding::Json, b'{'),
        (Encoding::Binary, protocol::VERSION),
    ] {
        let server = FakeServer::start(vec![]);
        let mut c = Client::connect(server.addr, &token(), encoding).unwrap();
        let raw = c.recv_raw(WAIT).unwrap().unwrap();
        assert_eq!(raw.encoding(), encoding);
        assert_eq!(raw.bytes()[0], first_byte);
        if let RawMessage::Text(text) = &raw {
            assert!(
                text.starts_with(r#"{"welcome":{"user":"1","device":"2","#),
                "{text}"
            );
        }
        c.close().unwrap();
        server.join();
    }
}

#[test]
fn send_encoded_uses_the_other_frame_type() {
    let server = FakeServer::start(vec![]);
    let mut c = Client::connect(server.addr, &token(), Encoding::Binary).unwrap();
    c.recv(WAIT).unwrap();
    c.send_encoded(&command("a"), Encoding::Json).unwrap();
    assert!(matches!(c.recv(WAIT).unwrap(), Some(ServerMsg::Ack { .. })));
    c.close().unwrap();
    assert_eq!(server.join().received, vec![(Encoding::Json, command("a"))]);
}

#[test]
fn raw_garbage_earns_an_error_reply() {
    let server = FakeServer::start(vec![]);
    let mut c = Client::connect(server.addr, &token(), Encoding::Json).unwrap();
    c.recv(WAIT).unwrap();
    c.send_raw_text("{not json").unwrap();
    c.send_raw_binary(&[9, 0]).unwrap();
    for code in [ErrorCode::BadRequest, ErrorCode::UnsupportedVersion] {
        let reply = c.recv(WAIT).unwrap();
        assert!(
            matches!(reply, Some(ServerMsg::Error { rid: None, cmid: None, code: c, .. }) if c == code),
            "{reply:?}"
        );
    }
    c.close().unwrap();
    assert!(server.join().received.is_empty());
}

#[test]
fn wrong_frame_type_from_the_server_is_an_error() {
    for encoding in [Encoding::Json, Encoding::Binary] {
        let server = FakeServer::start(vec![]);
        let mut c = Client::connect(server.addr, &token(), encoding).unwrap();
        c.recv(WAIT).unwrap();
        c.send(&command("wrong frame")).unwrap();
        let err = c.recv(WAIT).unwrap_err();
        assert!(
            matches!(err, Error::WrongFrameType { expected, got } if expected == encoding && got != encoding),
            "{err:?}"
        );
        // The connection is still usable.
        c.send(&command("a")).unwrap();
        assert!(matches!(c.recv(WAIT).unwrap(), Some(ServerMsg::Ack { .. })));
        c.close().unwrap();
        server.join();
    }
}

#[test]
fn undecodable_server_message_is_an_error() {
    for encoding in [Encoding::Json, Encoding::Binary] {
        let server = FakeServer::start(vec![]);
        let mut c = Client::connect(server.addr, &token(), encoding).unwrap();
        c.recv(WAIT).unwrap();
        c.send(&command("garbage")).unwrap();
        let err = c.recv(WAIT).unwrap_err();
        assert!(
            matches!(&err, Error::Decode { encoding: e, bytes, .. } if *e == encoding && !bytes.is_empty()),
            "{err:?}"
        );
        c.close().unwrap();
        server.join();
    }
}
