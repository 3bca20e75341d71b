//! Decoders turn any input into a message or an error and never panic; each
//! way a frame can be wrong maps to its `DecodeError`.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use protocol::client::LimitError;
use protocol::limits::{
    BODY_BYTES_MAX, CLIENT_MESSAGE_BYTES_MAX, FETCH_LIMIT_MAX, GROUP_OP_USERS_MAX,
    PRESENCE_SUBSCRIPTIONS_MAX, PUSH_TOKEN_BYTES_MAX, SYNC_POSITIONS_MAX, TITLE_BYTES_MAX,
};
use protocol::{
    ClientMsg, ClientMsgId, Content, ConvId, ConvInfo, ConvKind, ConvSummary, DecodeError,
    DeviceId, Encoding, ErrorCode, GroupEvent, Member, MemberReceipts, Message, MsgId, Page,
    Platform, Position, PresenceStatus, ReceiptKind, RequestId, Role, Seq, ServerMsg, UnixMillis,
    UserId, VERSION,
};

const ENCODINGS: [Encoding; 2] = [Encoding::Json, Encoding::Binary];

fn encode<T: serde::Serialize>(encoding: Encoding, msg: &T) -> Vec<u8> {
    let mut bytes = Vec::new();
    encoding.encode(msg, &mut bytes);
    bytes
}

// ---- valid messages to mutate: one of each variant ----

#[expect(
    clippy::too_many_lines,
    reason = "one entry per variant, in declaration order"
)]
fn client_samples() -> Vec<ClientMsg> {
    let conv = ConvId(u64::MAX);
    let rid = RequestId(7);
    vec![
        ClientMsg::Send {
            conv,
            cmid: ClientMsgId(1 << 53),
            body: "héllo \"wörld\"\n\u{0}😀".into(),
        },
        ClientMsg::Recv {
            conv,
            seq: Seq(300),
        },
        ClientMsg::Read { conv, seq: Seq(1) },
        ClientMsg::Typing { conv, active: true },
        ClientMsg::Fetch {
            rid,
            conv,
            from: Page::Before(Seq(500)),
            limit: FETCH_LIMIT_MAX,
        },
        ClientMsg::Fetch {
            rid,
            conv,
            from: Page::Latest,
            limit: 1,
        },
        ClientMsg::Sync {
            rid,
            since: vec![
                Position { conv, seq: Seq(9) },
                Position {
                    conv: ConvId(3),
                    seq: Seq(0),
                },
            ],
        },
        ClientMsg::DirectOpen {
            rid,
            user: UserId(42),
        },
        ClientMsg::GroupCreate {
            rid,
            title: "Team ✨".into(),
            members: vec![UserId(1), UserId(u64::MAX)],
        },
        ClientMsg::GroupRename {
            rid,
            conv,
            title: String::new(),
        },
        ClientMsg::GroupAdd {
            rid,
            conv,
            users: vec![UserId(5)],
        },
        ClientMsg::GroupRemove {
            rid,
            conv,
            users: vec![UserId(5), UserId(6)],
        },
        ClientMsg::GroupLeave { rid, conv },
        ClientMsg::GroupSetRole {
            rid,
            conv,
            user: UserId(5),
            role: Role::Admin,
        },
        ClientMsg::GroupSetHistory {
            rid,
            conv,
            visible: true,
        },
        ClientMsg::ConvSetPrivate {
            rid,
            conv,
            private: true,
        },
        ClientMsg::PushRegister {
            rid,
            platform: Platform::Fcm,
            token: "fcm-token:abc".into(),
        },
        ClientMsg::PushUnregister { rid },
        ClientMsg::PresenceSubscribe {
            rid,
            users: vec![UserId(1), UserId(2)],
        },
        ClientMsg::ConvGet { rid, conv },
        ClientMsg::ReceiptsGet { rid, conv },
    ]
}

#[expect(
    clippy::too_many_lines,
    reason = "one entry per variant, in declaration order"
)]
fn server_samples() -> Vec<ServerMsg> {
    let conv = ConvId::group(12);
    let rid = RequestId(u32::MAX);
    let text = Message {
        conv,
        seq: Seq(41),
        id: MsgId(99),
        from: UserId(1),
        device: DeviceId(2),
        ts: UnixMillis(1_700_000_000_000),
        content: Content::Text("hi 👋".into()),
    };
    let event = |e| Message {
        content: Content::Event(e),
        ..text.clone()
    };
    vec![
        ServerMsg::Welcome {
            user: UserId(1),
            device: DeviceId(2),
            version: VERSION,
            time: UnixMillis(1_700_000_000_000),
        },
        ServerMsg::Ack {
            cmid: ClientMsgId(u64::MAX),
            conv,
            seq: Seq(42),
            id: MsgId(100),
            ts: UnixMillis(1),
        },
        ServerMsg::Msg(text.clone()),
        ServerMsg::Msg(event(GroupEvent::Created {
            title: "t".into(),
            members: vec![UserId(1), UserId(2)],
        })),
        ServerMsg::Msg(event(GroupEvent::Renamed { title: "u".into() })),
        ServerMsg::Msg(event(GroupEvent::Added {
            users: vec![UserId(3)],
        })),
        ServerMsg::Msg(event(GroupEvent::Removed {
            users: vec![UserId(3)],
        })),
        ServerMsg::Msg(event(GroupEvent::Left { user: UserId(2) })),
        ServerMsg::Msg(event(GroupEvent::RoleChanged {
            user: UserId(2),
            role: Role::Member,
        })),
        ServerMsg::Msg(event(GroupEvent::HistoryVisible { visible: true })),
        ServerMsg::Msg(event(GroupEvent::Private { private: true })),
        ServerMsg::Receipt {
            conv,
            user: UserId(2),
            kind: ReceiptKind::Read,
            seq: Seq(41),
        },
        ServerMsg::Typing {
            conv,
            user: UserId(2),
            active: false,
        },
        ServerMsg::Presence {
            user: UserId(2),
            status: PresenceStatus::Offline,
            last_seen: Some(UnixMillis(5)),
        },
        ServerMsg::Presence {
            user: UserId(2),
            status: PresenceStatus::Online,
            last_seen: None,
        },
        ServerMsg::History {
            rid,
            conv,
            msgs: vec![text.clone(), text],
            more: true,
        },
        ServerMsg::Synced {
            rid,
            convs: vec![ConvSummary {
                conv,
                kind: ConvKind::Group,
                last_seq: Seq(42),
                delivered: Seq(40),
                read: Seq(39),
            }],
        },
        ServerMsg::Conv {
            rid,
            conv: ConvInfo {
                conv,
                kind: ConvKind::Group,
                title: "t".into(),
                members: vec![Member {
                    user: UserId(1),
                    role: Role::Admin,
                    joined: Seq(1),
                }],
                last_seq: Seq(1),
            },
        },
        ServerMsg::Ok { rid },
        ServerMsg::Error {
            rid: None,
            cmid: Some(ClientMsgId(3)),
            code: ErrorCode::RateLimited,
            message: "slow down".into(),
        },
        ServerMsg::Receipts {
            rid,
            conv,
            members: vec![
                MemberReceipts {
                    user: UserId(1),
                    delivered: Seq(42),
                    read: Seq(40),
                },
                MemberReceipts {
                    user: UserId(u64::MAX),
                    delivered: Seq(0),
                    read: Seq(u64::MAX),
                },
            ],
        },
    ]
}

// ---- the never-panic properties ----

/// Decodes `bytes` as a client message; on success the message is within
/// bounds and survives a re-encode in either encoding (so every valid message
/// also fits in JSON, whatever it arrived as).
fn check_client(encoding: Encoding, bytes: &[u8]) -> Result<(), TestCaseError> {
    match encoding.decode_client(bytes) {
        Ok(msg) => {
            prop_assert_eq!(msg.validate(), Ok(()));
            for again in ENCODINGS {
                let decoded = again.decode_client(&encode(again, &msg));
                prop_assert_eq!(decoded.as_ref(), Ok(&msg), "re-encoded as {:?}", again);
            }
        }
        Err(e) => {
            // Formatting and mapping the error must not panic either.
            let _ = (e.to_string(), e.error_code());
        }
    }
    Ok(())
}

fn check_server(encoding: Encoding, bytes: &[u8]) -> Result<(), TestCaseError> {
    match encoding.decode_server(bytes) {
        Ok(msg) => {
            for again in ENCODINGS {
                let decoded = again.decode_server(&encode(again, &msg));
                prop_assert_eq!(decoded.as_ref(), Ok(&msg), "re-encoded as {:?}", again);
            }
        }
        Err(e) => {
            let _ = (e.to_string(), e.error_code());
        }
    }
    Ok(())
}

fn check_all(bytes: &[u8]) -> Result<(), TestCaseError> {
    for encoding in ENCODINGS {
        check_client(encoding, bytes)?;
        check_server(encoding, bytes)?;
    }
    Ok(())
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip { at: usize, xor: u8 },
    Set { at: usize, byte: u8 },
    Insert { at: usize, byte: u8 },
    Remove { at: usize },
    Truncate { len: usize },
    Append(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=u8::MAX).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        (
            any::<usize>(),
            select(&[0, 1, 0x7f, 0x80, 0xff, b'"', b'\\', b'{', b'}'][..])
        )
            .prop_map(|(at, byte)| Mutation::Set { at, byte }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Remove { at }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        vec(any::<u8>(), 1..16).prop_map(Mutation::Append),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len();
    match *mutation {
        Mutation::Flip { at, xor } if len > 0 => bytes[at % len] ^= xor,
        Mutation::Set { at, byte } if len > 0 => bytes[at % len] = byte,
        Mutation::Insert { at, byte } => bytes.insert(at % (len + 1), byte),
        Mutation::Remove { at } if len > 0 => {
            bytes.remove(at % len);
        }
        Mutation::Truncate { len: keep } => bytes.truncate(keep % (len + 1)),
        Mutation::Append(ref tail) => bytes.extend_from_slice(tail),
        Mutation::Flip { .. } | Mutation::Set { .. } | Mutation::Remove { .. } => {}
    }
}

/// JSON-shaped noise: fragments that the decoders' grammar knows, in any order.
fn json_soup() -> impl Strategy<Value = Vec<u8>> {
    const FRAGMENTS: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "null",
        "true",
        "false",
        "0",
        "1",
        "-1",
        "1.5",
        "1e3",
        "18446744073709551615",
        "18446744073709551616",
        "\"1\"",
        "\"+1\"",
        "\"\"",
        "\"x\"",
        "\"\\u0000\"",
        "\"\\ud800\"",
        "\"send\"",
        "\"recv\"",
        "\"fetch\"",
        "\"sync\"",
        "\"msg\"",
        "\"error\"",
        "\"conv\"",
        "\"cmid\"",
        "\"body\"",
        "\"seq\"",
        "\"rid\"",
        "\"from\"",
        "\"limit\"",
        "\"since\"",
        "\"latest\"",
        "\"before\"",
        "\"users\"",
        "\"content\"",
        "\"text\"",
        "\"event\"",
        " ",
    ];
    vec(select(FRAGMENTS), 0..48).prop_map(|f| f.concat().into_bytes())
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..2048)) {
        check_all(&bytes)?;
    }

    /// Random bytes behind a valid version byte, so the binary decoder gets
    /// past its first check.
    #[test]
    fn arbitrary_versioned_bytes_never_panic(tail in vec(any::<u8>(), 0..2048)) {
        let mut bytes = vec![VERSION];
        bytes.extend_from_slice(&tail);
        check_all(&bytes)?;
    }

    #[test]
    fn json_soup_never_panics(bytes in json_soup()) {
        check_all(&bytes)?;
    }

    #[test]
    fn mutated_client_messages_never_panic(
        pick in any::<prop::sample::Index>(),
        binary in any::<bool>(),
        mutations in vec(mutation(), 1..4),
    ) {
        check_all(&mutated(&client_samples(), pick, binary, &mutations))?;
    }

    #[test]
    fn mutated_server_messages_never_panic(
        pick in any::<prop::sample::Index>(),
        binary in any::<bool>(),
        mutations in vec(mutation(), 1..4),
    ) {
        check_all(&mutated(&server_samples(), pick, binary, &mutations))?;
    }
}

/// One of `samples`, encoded one way or the other, then mutated.
fn mutated<T: serde::Serialize>(
    samples: &[T],
    pick: prop::sample::Index,
    binary: bool,
    mutations: &[Mutation],
) -> Vec<u8> {
    let encoding = if binary {
        Encoding::Binary
    } else {
        Encoding::Json
    };
    let mut bytes = encode(encoding, pick.get(samples));
    for m in mutations {
        mutate(&mut bytes, m);
    }
    bytes
}

#[test]
fn samples_decode() {
    for encoding in ENCODINGS {
        for msg in client_samples() {
            assert_eq!(encoding.decode_client(&encode(encoding, &msg)), Ok(msg));
        }
        for msg in server_samples() {
            assert_eq!(encoding.decode_server(&encode(encoding, &msg)), Ok(msg));
        }
    }
}

// ---- framing errors ----

fn recv() -> ClientMsg {
    ClientMsg::Recv {
        conv: ConvId(5),
        seq: Seq(300),
    }
}

#[test]
fn wrong_version_byte_is_unsupported_version() {
    let good = encode(Encoding::Binary, &recv());
    assert_eq!(good[0], VERSION);
    for version in [0, VERSION + 1, 0x7b, u8::MAX] {
        let mut bytes = good.clone();
        bytes[0] = version;
        let err = Encoding::Binary.decode_client(&bytes).unwrap_err();
        assert_eq!(err, DecodeError::UnsupportedVersion(version));
        assert_eq!(err.error_code(), ErrorCode::UnsupportedVersion);
        assert_eq!(
            Encoding::Binary.decode_server(&bytes),
            Err(DecodeError::UnsupportedVersion(version))
        );
    }
    // A version byte alone is not a message.
    assert!(matches!(
        Encoding::Binary.decode_client(&[VERSION]),
        Err(DecodeError::Binary(_))
    ));
}

#[test]
fn empty_input() {
    assert_eq!(Encoding::Binary.decode_client(&[]), Err(DecodeError::Empty));
    assert_eq!(Encoding::Binary.decode_server(&[]), Err(DecodeError::Empty));
    // JSON has no separate case: an empty text is invalid JSON.
    assert!(matches!(
        Encoding::Json.decode_client(b""),
        Err(DecodeError::Json(_))
    ));
    assert!(matches!(
        Encoding::Json.decode_server(b""),
        Err(DecodeError::Json(_))
    ));
}

#[test]
fn trailing_bytes() {
    let mut bytes = encode(Encoding::Binary, &recv());
    bytes.extend_from_slice(&[0, 1, 2]);
    assert_eq!(
        Encoding::Binary.decode_client(&bytes),
        Err(DecodeError::TrailingBytes(3))
    );
    let mut bytes = encode(Encoding::Binary, &ServerMsg::Ok { rid: RequestId(1) });
    bytes.push(0);
    assert_eq!(
        Encoding::Binary.decode_server(&bytes),
        Err(DecodeError::TrailingBytes(1))
    );

    // JSON: trailing whitespace is fine, anything else is not.
    let mut json = encode(Encoding::Json, &recv());
    json.extend_from_slice(b" \n\t");
    assert_eq!(Encoding::Json.decode_client(&json), Ok(recv()));
    for tail in [&b"x"[..], b"{}", b"\0", b"0"] {
        let mut bytes = encode(Encoding::Json, &recv());
        bytes.extend_from_slice(tail);
        assert!(
            matches!(
                Encoding::Json.decode_client(&bytes),
                Err(DecodeError::Json(_))
            ),
            "{tail:?}"
        );
    }
}

#[test]
fn oversize_client_message_is_too_large() {
    // A valid message padded with JSON whitespace to exactly the limit passes;
    // one more byte is rejected before parsing.
    let mut bytes = encode(Encoding::Json, &recv());
    bytes.resize(CLIENT_MESSAGE_BYTES_MAX, b' ');
    assert_eq!(Encoding::Json.decode_client(&bytes), Ok(recv()));
    bytes.push(b' ');
    assert_eq!(
        Encoding::Json.decode_client(&bytes),
        Err(DecodeError::TooLarge {
            len: CLIENT_MESSAGE_BYTES_MAX + 1,
            max: CLIENT_MESSAGE_BYTES_MAX
        })
    );

    let mut bytes = encode(Encoding::Binary, &recv());
    bytes.resize(CLIENT_MESSAGE_BYTES_MAX + 1, 0);
    assert!(matches!(
        Encoding::Binary.decode_client(&bytes),
        Err(DecodeError::TooLarge { .. })
    ));
}

/// Clients decode whatever the server sends: a history page may exceed
/// the client→server limit.
#[test]
fn server_messages_have_no_size_limit() {
    let msg = |i| Message {
        conv: ConvId(1),
        seq: Seq(i),
        id: MsgId(i),
        from: UserId(1),
        device: DeviceId(1),
        ts: UnixMillis(0),
        content: Content::Text("x".repeat(BODY_BYTES_MAX)),
    };
    let history = ServerMsg::History {
        rid: RequestId(1),
        conv: ConvId(1),
        msgs: (1..=20).map(msg).collect(),
        more: false,
    };
    for encoding in ENCODINGS {
        let bytes = encode(encoding, &history);
        assert!(bytes.len() > CLIENT_MESSAGE_BYTES_MAX);
        assert_eq!(encoding.decode_server(&bytes).as_ref(), Ok(&history));
    }
}

// ---- limits ----

fn assert_limit(msg: &ClientMsg, want: LimitError) {
    assert_eq!(msg.validate(), Err(want));
    for encoding in ENCODINGS {
        assert_eq!(
            encoding.decode_client(&encode(encoding, msg)),
            Err(DecodeError::Limit(want)),
            "{encoding:?}"
        );
    }
}

fn assert_valid(msg: &ClientMsg) {
    for encoding in ENCODINGS {
        assert_eq!(
            encoding.decode_client(&encode(encoding, msg)).as_ref(),
            Ok(msg),
            "{encoding:?}"
        );
    }
}

fn send(body: String) -> ClientMsg {
    ClientMsg::Send {
        conv: ConvId(1),
        cmid: ClientMsgId(2),
        body,
    }
}

#[test]
fn body_over_limit() {
    assert_valid(&send("x".repeat(BODY_BYTES_MAX)));
    // The limit is in bytes, not characters.
    assert_valid(&send("😀".repeat(BODY_BYTES_MAX / 4)));
    assert_limit(
        &send("😀".repeat(BODY_BYTES_MAX / 4) + "x"),
        LimitError::TooLong {
            field: "body",
            len: BODY_BYTES_MAX + 1,
            max: BODY_BYTES_MAX,
        },
    );
    assert_limit(&send(String::new()), LimitError::Empty { field: "body" });
}

#[test]
fn fetch_limit_out_of_range() {
    let fetch = |limit| ClientMsg::Fetch {
        rid: RequestId(1),
        conv: ConvId(1),
        from: Page::After(Seq(3)),
        limit,
    };
    assert_valid(&fetch(1));
    assert_valid(&fetch(FETCH_LIMIT_MAX));
    for limit in [0, FETCH_LIMIT_MAX + 1, u16::MAX] {
        assert_limit(
            &fetch(limit),
            LimitError::TooMany {
                field: "limit",
                len: usize::from(limit),
                max: usize::from(FETCH_LIMIT_MAX),
            },
        );
    }
}

#[test]
fn list_and_text_limits() {
    let rid = RequestId(1);
    let conv = ConvId(1);
    let too_many = |field, len, max| LimitError::TooMany { field, len, max };
    let too_long = |field, len, max| LimitError::TooLong { field, len, max };

    let title = "t".repeat(TITLE_BYTES_MAX + 1);
    assert_limit(
        &ClientMsg::GroupCreate {
            rid,
            title: title.clone(),
            members: vec![],
        },
        too_long("title", TITLE_BYTES_MAX + 1, TITLE_BYTES_MAX),
    );
    assert_limit(
        &ClientMsg::GroupRename { rid, conv, title },
        too_long("title", TITLE_BYTES_MAX + 1, TITLE_BYTES_MAX),
    );
    let users = vec![UserId(1); GROUP_OP_USERS_MAX + 1];
    assert_limit(
        &ClientMsg::GroupCreate {
            rid,
            title: String::new(),
            members: users.clone(),
        },
        too_many("members", GROUP_OP_USERS_MAX + 1, GROUP_OP_USERS_MAX),
    );
    for op in [
        |rid, conv, users| ClientMsg::GroupAdd { rid, conv, users },
        |rid, conv, users| ClientMsg::GroupRemove { rid, conv, users },
    ] {
        assert_limit(
            &op(rid, conv, users.clone()),
            too_many("users", GROUP_OP_USERS_MAX + 1, GROUP_OP_USERS_MAX),
        );
        assert_limit(&op(rid, conv, vec![]), LimitError::Empty { field: "users" });
    }
    assert_limit(
        &ClientMsg::PresenceSubscribe {
            rid,
            users: vec![UserId(1); PRESENCE_SUBSCRIPTIONS_MAX + 1],
        },
        too_many(
            "users",
            PRESENCE_SUBSCRIPTIONS_MAX + 1,
            PRESENCE_SUBSCRIPTIONS_MAX,
        ),
    );
    assert_limit(
        &ClientMsg::Sync {
            rid,
            since: vec![Position { conv, seq: Seq(1) }; SYNC_POSITIONS_MAX + 1],
        },
        too_many("since", SYNC_POSITIONS_MAX + 1, SYNC_POSITIONS_MAX),
    );
    let push = |token| ClientMsg::PushRegister {
        rid,
        platform: Platform::Apns,
        token,
    };
    assert_limit(
        &push("a".repeat(PUSH_TOKEN_BYTES_MAX + 1)),
        too_long("token", PUSH_TOKEN_BYTES_MAX + 1, PUSH_TOKEN_BYTES_MAX),
    );
    assert_limit(&push(String::new()), LimitError::Empty { field: "token" });
}

// ---- malformed JSON ----

fn json_client(text: &str) -> Result<ClientMsg, DecodeError> {
    Encoding::Json.decode_client(text.as_bytes())
}

#[test]
fn invalid_json_is_rejected() {
    for text in [
        "{",
        "null",
        "[]",
        "\"send\"",
        "{}",
        "{\"send\":{}}",
        "{\"nope\":{}}",
        "{\"recv\":{\"conv\":\"5\"}}",
        "{\"recv\":{\"conv\":\"5\",\"seq\":300},\"read\":{\"conv\":\"5\",\"seq\":300}}",
        "{\"recv\":{\"conv\":\"5\",\"seq\":300,\"seq\":301}}",
        "{\"fetch\":{\"rid\":1,\"conv\":\"1\",\"from\":\"soon\",\"limit\":1}}",
        "{\"send\":{\"conv\":\"1\",\"cmid\":\"2\",\"body\":\"\\ud800\"}}",
        "{\"send\":{\"conv\":\"1\",\"cmid\":\"2\",\"body\":\"a\nb\"}}",
    ] {
        assert!(
            matches!(json_client(text), Err(DecodeError::Json(_))),
            "{text}"
        );
    }
    let not_utf8 = b"{\"send\":{\"conv\":\"1\",\"cmid\":\"2\",\"body\":\"\xff\"}}";
    assert!(matches!(
        Encoding::Json.decode_client(not_utf8),
        Err(DecodeError::Json(_))
    ));
}

#[test]
fn json_ids_must_be_canonical() {
    let recv_with =
        |conv: &str| json_client(&format!("{{\"recv\":{{\"conv\":{conv},\"seq\":1}}}}"));
    let want = |conv| {
        Ok(ClientMsg::Recv {
            conv: ConvId(conv),
            seq: Seq(1),
        })
    };
    assert_eq!(recv_with("\"5\""), want(5));
    assert_eq!(recv_with("\"18446744073709551615\""), want(u64::MAX));
    // Plain numbers are accepted too, for clients that can represent them.
    assert_eq!(recv_with("5"), want(5));
    for bad in [
        "\"+1\"",
        "\"-1\"",
        "-1",
        "\"\"",
        "\" 1\"",
        "\"1 \"",
        "\"0x1\"",
        "\"1e3\"",
        "1e3",
        "1.5",
        "\"1.5\"",
        "\"18446744073709551616\"",
        "18446744073709551616",
        "null",
        "true",
    ] {
        assert!(matches!(recv_with(bad), Err(DecodeError::Json(_))), "{bad}");
    }
}

#[test]
fn json_seq_and_rid_are_numbers() {
    assert!(matches!(
        json_client("{\"recv\":{\"conv\":\"5\",\"seq\":\"1\"}}"),
        Err(DecodeError::Json(_))
    ));
    assert!(matches!(
        json_client("{\"push_unregister\":{\"rid\":\"1\"}}"),
        Err(DecodeError::Json(_))
    ));
    assert!(matches!(
        json_client("{\"push_unregister\":{\"rid\":4294967296}}"),
        Err(DecodeError::Json(_))
    ));
}

/// Fields a decoder does not know are skipped, so the server can add fields
/// without breaking older clients (and vice versa). Unknown message types
/// are errors.
#[test]
fn unknown_json_fields_are_ignored() {
    assert_eq!(
        json_client("{\"recv\":{\"conv\":\"5\",\"seq\":300,\"later\":[1,{\"x\":null}]}}"),
        Ok(recv())
    );
    assert_eq!(
        Encoding::Json.decode_server(b"{\"ok\":{\"rid\":1,\"new\":\"field\"}}"),
        Ok(ServerMsg::Ok { rid: RequestId(1) })
    );
}

// ---- malformed binary ----

#[test]
fn malformed_binary_is_rejected() {
    let client = |bytes: &[u8]| Encoding::Binary.decode_client(bytes);
    let server = |bytes: &[u8]| Encoding::Binary.decode_server(bytes);
    // The reference encoding of recv { conv: 5, seq: 300 }.
    assert_eq!(client(&[VERSION, 1, 5, 0xac, 0x02]), Ok(recv()));
    for bytes in [
        // Variant index past the last variant.
        &[VERSION, 16][..],
        &[VERSION, 0xff, 0xff, 0xff, 0xff, 0x0f],
        // Truncated varint.
        &[VERSION, 1, 5, 0xac],
        // A u64 varint of 11 bytes.
        &[
            VERSION, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1,
        ],
        // typing { conv: 1, active: 2 }: a bool is 0 or 1.
        &[VERSION, 3, 1, 2],
        // send { conv: 1, cmid: 2, body: "\xff" }: not UTF-8.
        &[VERSION, 0, 1, 2, 1, 0xff],
        // send whose body length runs past the end.
        &[VERSION, 0, 1, 2, 0x80, 0x80, 0x01, b'x'],
        // fetch with page index 3 (latest, before, after are 0..=2).
        &[VERSION, 4, 1, 1, 3, 1],
    ] {
        assert!(
            matches!(client(bytes), Err(DecodeError::Binary(_))),
            "{bytes:?}"
        );
    }
    // error { rid: tag 2 }: an Option tag is 0 or 1.
    assert!(matches!(
        server(&[VERSION, 10, 2]),
        Err(DecodeError::Binary(_))
    ));
    // A vector length far beyond the input must not allocate it up front.
    assert!(matches!(
        client(&[VERSION, 5, 1, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        Err(DecodeError::Binary(_))
    ));
}
