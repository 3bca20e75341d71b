//! Every message survives encode → decode unchanged, in both encodings.
//!
//! The strategies generate every `ClientMsg` and `ServerMsg` variant with ids
//! across the whole `u64` range (0, 2^53, `u64::MAX` are favoured), arbitrary
//! Unicode text up to each field's byte limit and lists up to each limit.
//! Client messages go through `decode_client`, so every generated one must
//! also pass `validate()`.

mod support;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use protocol::limits::{
    BODY_BYTES_MAX, CLIENT_MESSAGE_BYTES_MAX, ERROR_TEXT_BYTES_MAX, FETCH_LIMIT_MAX,
    GROUP_OP_USERS_MAX, PRESENCE_SUBSCRIPTIONS_MAX, PUSH_TOKEN_BYTES_MAX, SYNC_POSITIONS_MAX,
    TITLE_BYTES_MAX,
};
use protocol::{
    ClientMsg, ClientMsgId, Content, ConvId, ConvInfo, ConvKind, ConvSummary, DeviceId, Encoding,
    ErrorCode, GroupEvent, Member, MemberReceipts, Message, MsgId, Page, Platform, Position,
    PresenceStatus, ReceiptKind, RequestId, Role, Seq, ServerMsg, UnixMillis, UserId,
};

// ---- scalars ----

/// A `u64` that favours the edges a codec gets wrong: 0, 2^53 ± 1 (the JSON
/// number precision limit), varint length steps and `u64::MAX`.
fn raw_u64() -> impl Strategy<Value = u64> + Clone {
    prop_oneof![
        1 => Just(0),
        1 => Just(u64::MAX),
        1 => prop_oneof![
            Just(127),
            Just(128),
            Just((1 << 53) - 1),
            Just(1 << 53),
            Just((1 << 53) + 1),
            Just(1 << 63),
        ],
        2 => 0..1_000u64,
        4 => any::<u64>(),
    ]
}

fn user() -> impl Strategy<Value = UserId> + Clone {
    raw_u64().prop_map(UserId)
}

fn device() -> impl Strategy<Value = DeviceId> + Clone {
    raw_u64().prop_map(DeviceId)
}

fn conv() -> impl Strategy<Value = ConvId> + Clone {
    raw_u64().prop_map(ConvId)
}

fn msg_id() -> impl Strategy<Value = MsgId> + Clone {
    raw_u64().prop_map(MsgId)
}

fn cmid() -> impl Strategy<Value = ClientMsgId> + Clone {
    raw_u64().prop_map(ClientMsgId)
}

fn seq() -> impl Strategy<Value = Seq> + Clone {
    raw_u64().prop_map(Seq)
}

fn millis() -> impl Strategy<Value = UnixMillis> + Clone {
    raw_u64().prop_map(UnixMillis)
}

fn rid() -> impl Strategy<Value = RequestId> + Clone {
    prop_oneof![Just(0), Just(u32::MAX), any::<u32>()].prop_map(RequestId)
}

fn role() -> impl Strategy<Value = Role> + Clone {
    prop_oneof![Just(Role::Admin), Just(Role::Member)]
}

fn conv_kind() -> impl Strategy<Value = ConvKind> + Clone {
    prop_oneof![Just(ConvKind::Direct), Just(ConvKind::Group)]
}

// ---- text and lists ----

/// The longest prefix of `chars` that fits in `max` UTF-8 bytes.
fn fit(chars: Vec<char>, max: usize) -> String {
    let mut s = String::new();
    for c in chars {
        if s.len() + c.len_utf8() > max {
            break;
        }
        s.push(c);
    }
    s
}

/// Unicode text of `min_chars..` characters and at most `max` bytes: mostly
/// short, sometimes long, sometimes exactly `max` bytes of ASCII (including
/// control characters, which JSON escapes to six bytes each).
fn text(min_chars: usize, max: usize) -> BoxedStrategy<String> {
    assert!(min_chars <= 1, "`fit` may cut a string down to one char");
    assert!(max >= 4, "one char of any width must fit");
    prop_oneof![
        6 => vec(any::<char>(), min_chars..=16).prop_map(move |c| fit(c, max)),
        2 => vec(any::<char>(), min_chars..=max).prop_map(move |c| fit(c, max)),
        1 => vec(0u8..0x80, max)
            .prop_map(|b| String::from_utf8(b).expect("ASCII is UTF-8")),
    ]
    .boxed()
}

/// A list of `min..=max` entries: mostly short, sometimes any length,
/// sometimes exactly `max`.
fn list<T: std::fmt::Debug + 'static>(
    entry: impl Strategy<Value = T> + Clone + 'static,
    min: usize,
    max: usize,
) -> BoxedStrategy<Vec<T>> {
    prop_oneof![
        6 => vec(entry.clone(), min..=max.min(min + 8)),
        2 => vec(entry.clone(), min..=max),
        1 => vec(entry, max),
    ]
    .boxed()
}

// ---- client messages ----

fn page() -> impl Strategy<Value = Page> + Clone {
    prop_oneof![
        Just(Page::Latest),
        seq().prop_map(Page::Before),
        seq().prop_map(Page::After),
    ]
}

fn position() -> impl Strategy<Value = Position> + Clone {
    (conv(), seq()).prop_map(|(conv, seq)| Position { conv, seq })
}

fn platform() -> impl Strategy<Value = Platform> + Clone {
    prop_oneof![Just(Platform::Apns), Just(Platform::Fcm)]
}

/// Every `ClientMsg` variant, each within every limit.
#[expect(
    clippy::too_many_lines,
    reason = "one entry per variant, in declaration order"
)]
fn client_msg() -> BoxedStrategy<ClientMsg> {
    let users = || list(user(), 1, GROUP_OP_USERS_MAX);
    prop_oneof![
        (conv(), cmid(), text(1, BODY_BYTES_MAX))
            .prop_map(|(conv, cmid, body)| ClientMsg::Send { conv, cmid, body })
            .boxed(),
        (conv(), seq())
            .prop_map(|(conv, seq)| ClientMsg::Recv { conv, seq })
            .boxed(),
        (conv(), seq())
            .prop_map(|(conv, seq)| ClientMsg::Read { conv, seq })
            .boxed(),
        (conv(), any::<bool>())
            .prop_map(|(conv, active)| ClientMsg::Typing { conv, active })
            .boxed(),
        (rid(), conv(), page(), 1..=FETCH_LIMIT_MAX)
            .prop_map(|(rid, conv, from, limit)| ClientMsg::Fetch {
                rid,
                conv,
                from,
                limit
            })
            .boxed(),
        (rid(), list(position(), 0, SYNC_POSITIONS_MAX))
            .prop_map(|(rid, since)| ClientMsg::Sync { rid, since })
            .boxed(),
        (rid(), user())
            .prop_map(|(rid, user)| ClientMsg::DirectOpen { rid, user })
            .boxed(),
        (
            rid(),
            text(0, TITLE_BYTES_MAX),
            list(user(), 0, GROUP_OP_USERS_MAX)
        )
            .prop_map(|(rid, title, members)| ClientMsg::GroupCreate {
                rid,
                title,
                members
            })
            .boxed(),
        (rid(), conv(), text(0, TITLE_BYTES_MAX))
            .prop_map(|(rid, conv, title)| ClientMsg::GroupRename { rid, conv, title })
            .boxed(),
        (rid(), conv(), users())
            .prop_map(|(rid, conv, users)| ClientMsg::GroupAdd { rid, conv, users })
            .boxed(),
        (rid(), conv(), users())
            .prop_map(|(rid, conv, users)| ClientMsg::GroupRemove { rid, conv, users })
            .boxed(),
        (rid(), conv())
            .prop_map(|(rid, conv)| ClientMsg::GroupLeave { rid, conv })
            .boxed(),
        (rid(), conv(), user(), role())
            .prop_map(|(rid, conv, user, role)| ClientMsg::GroupSetRole {
                rid,
                conv,
                user,
                role
            })
            .boxed(),
        (rid(), conv(), any::<bool>())
            .prop_map(|(rid, conv, visible)| ClientMsg::GroupSetHistory { rid, conv, visible })
            .boxed(),
        (rid(), conv(), any::<bool>())
            .prop_map(|(rid, conv, private)| ClientMsg::ConvSetPrivate { rid, conv, private })
            .boxed(),
        (rid(), platform(), text(1, PUSH_TOKEN_BYTES_MAX))
            .prop_map(|(rid, platform, token)| ClientMsg::PushRegister {
                rid,
                platform,
                token
            })
            .boxed(),
        rid()
            .prop_map(|rid| ClientMsg::PushUnregister { rid })
            .boxed(),
        (rid(), list(user(), 0, PRESENCE_SUBSCRIPTIONS_MAX))
            .prop_map(|(rid, users)| ClientMsg::PresenceSubscribe { rid, users })
            .boxed(),
        (rid(), conv())
            .prop_map(|(rid, conv)| ClientMsg::ConvGet { rid, conv })
            .boxed(),
        (rid(), conv())
            .prop_map(|(rid, conv)| ClientMsg::ReceiptsGet { rid, conv })
            .boxed(),
    ]
    .boxed()
}

// ---- server messages ----

fn group_event() -> impl Strategy<Value = GroupEvent> + Clone {
    let users = || list(user(), 1, GROUP_OP_USERS_MAX);
    prop_oneof![
        (
            text(0, TITLE_BYTES_MAX),
            list(user(), 0, GROUP_OP_USERS_MAX)
        )
            .prop_map(|(title, members)| GroupEvent::Created { title, members }),
        text(0, TITLE_BYTES_MAX).prop_map(|title| GroupEvent::Renamed { title }),
        users().prop_map(|users| GroupEvent::Added { users }),
        users().prop_map(|users| GroupEvent::Removed { users }),
        user().prop_map(|user| GroupEvent::Left { user }),
        (user(), role()).prop_map(|(user, role)| GroupEvent::RoleChanged { user, role }),
        any::<bool>().prop_map(|visible| GroupEvent::HistoryVisible { visible }),
        any::<bool>().prop_map(|private| GroupEvent::Private { private }),
    ]
}

/// Message content with bodies of up to `body_max` bytes.
fn content(body_max: usize) -> impl Strategy<Value = Content> + Clone {
    prop_oneof![
        3 => text(1, body_max).prop_map(Content::Text),
        1 => group_event().prop_map(Content::Event),
    ]
}

fn message(body_max: usize) -> impl Strategy<Value = Message> + Clone {
    (
        conv(),
        seq(),
        msg_id(),
        user(),
        device(),
        millis(),
        content(body_max),
    )
        .prop_map(|(conv, seq, id, from, device, ts, content)| Message {
            conv,
            seq,
            id,
            from,
            device,
            ts,
            content,
        })
}

fn conv_summary() -> impl Strategy<Value = ConvSummary> + Clone {
    (conv(), conv_kind(), seq(), seq(), seq()).prop_map(
        |(conv, kind, last_seq, delivered, read)| ConvSummary {
            conv,
            kind,
            last_seq,
            delivered,
            read,
        },
    )
}

fn member() -> impl Strategy<Value = Member> + Clone {
    (user(), role(), seq()).prop_map(|(user, role, joined)| Member { user, role, joined })
}

fn member_receipts() -> impl Strategy<Value = MemberReceipts> + Clone {
    (user(), seq(), seq()).prop_map(|(user, delivered, read)| MemberReceipts {
        user,
        delivered,
        read,
    })
}

fn conv_info() -> impl Strategy<Value = ConvInfo> + Clone {
    // GROUP_MEMBERS_MAX (100 000) members would make each case slow; the
    // encoding of a list does not depend on its length beyond the varint.
    (
        conv(),
        conv_kind(),
        text(0, TITLE_BYTES_MAX),
        list(member(), 0, 256),
        seq(),
    )
        .prop_map(|(conv, kind, title, members, last_seq)| ConvInfo {
            conv,
            kind,
            title,
            members,
            last_seq,
        })
}

fn error_code() -> impl Strategy<Value = ErrorCode> + Clone {
    prop_oneof![
        Just(ErrorCode::BadRequest),
        Just(ErrorCode::UnsupportedVersion),
        Just(ErrorCode::Forbidden),
        Just(ErrorCode::NotFound),
        Just(ErrorCode::RateLimited),
        Just(ErrorCode::Overloaded),
        Just(ErrorCode::GroupFull),
        Just(ErrorCode::TooManyGroups),
        Just(ErrorCode::Conflict),
        Just(ErrorCode::Internal),
    ]
}

/// Every `ServerMsg` variant.
#[expect(
    clippy::too_many_lines,
    reason = "one entry per variant, in declaration order"
)]
fn server_msg() -> BoxedStrategy<ServerMsg> {
    prop_oneof![
        (user(), device(), any::<u8>(), millis())
            .prop_map(|(user, device, version, time)| ServerMsg::Welcome {
                user,
                device,
                version,
                time
            })
            .boxed(),
        (cmid(), conv(), seq(), msg_id(), millis())
            .prop_map(|(cmid, conv, seq, id, ts)| ServerMsg::Ack {
                cmid,
                conv,
                seq,
                id,
                ts
            })
            .boxed(),
        message(BODY_BYTES_MAX).prop_map(ServerMsg::Msg).boxed(),
        (
            conv(),
            user(),
            prop_oneof![Just(ReceiptKind::Delivered), Just(ReceiptKind::Read)],
            seq()
        )
            .prop_map(|(conv, user, kind, seq)| ServerMsg::Receipt {
                conv,
                user,
                kind,
                seq
            })
            .boxed(),
        (conv(), user(), any::<bool>())
            .prop_map(|(conv, user, active)| ServerMsg::Typing { conv, user, active })
            .boxed(),
        (
            user(),
            prop_oneof![Just(PresenceStatus::Online), Just(PresenceStatus::Offline)],
            proptest::option::of(millis())
        )
            .prop_map(|(user, status, last_seen)| ServerMsg::Presence {
                user,
                status,
                last_seen
            })
            .boxed(),
        (
            rid(),
            conv(),
            // Short bodies keep a 100-message page cheap to generate; `msg`
            // covers long ones.
            list(message(64), 0, usize::from(FETCH_LIMIT_MAX)),
            any::<bool>()
        )
            .prop_map(|(rid, conv, msgs, more)| ServerMsg::History {
                rid,
                conv,
                msgs,
                more
            })
            .boxed(),
        (rid(), list(conv_summary(), 0, SYNC_POSITIONS_MAX))
            .prop_map(|(rid, convs)| ServerMsg::Synced { rid, convs })
            .boxed(),
        (rid(), conv_info())
            .prop_map(|(rid, conv)| ServerMsg::Conv { rid, conv })
            .boxed(),
        rid().prop_map(|rid| ServerMsg::Ok { rid }).boxed(),
        (
            proptest::option::of(rid()),
            proptest::option::of(cmid()),
            error_code(),
            text(0, ERROR_TEXT_BYTES_MAX)
        )
            .prop_map(|(rid, cmid, code, message)| ServerMsg::Error {
                rid,
                cmid,
                code,
                message
            })
            .boxed(),
        // The engine lists at most 256 members (larger groups get none).
        (rid(), conv(), list(member_receipts(), 0, 256))
            .prop_map(|(rid, conv, members)| ServerMsg::Receipts { rid, conv, members })
            .boxed(),
    ]
    .boxed()
}

// ---- properties ----

fn client_roundtrip(encoding: Encoding, msg: &ClientMsg) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        msg.validate(),
        Ok(()),
        "the strategy made an invalid message"
    );
    let mut bytes = Vec::new();
    encoding.encode(msg, &mut bytes);
    prop_assert!(
        bytes.len() <= CLIENT_MESSAGE_BYTES_MAX,
        "{} bytes encoded",
        bytes.len()
    );
    let decoded = encoding.decode_client(&bytes);
    prop_assert_eq!(decoded.as_ref(), Ok(msg));
    Ok(())
}

fn server_roundtrip(encoding: Encoding, msg: &ServerMsg) -> Result<(), TestCaseError> {
    let mut bytes = Vec::new();
    encoding.encode(msg, &mut bytes);
    let decoded = encoding.decode_server(&bytes);
    prop_assert_eq!(decoded.as_ref(), Ok(msg));
    Ok(())
}

proptest! {
    #[test]
    fn client_json_roundtrip(msg in client_msg()) {
        client_roundtrip(Encoding::Json, &msg)?;
    }

    #[test]
    fn client_binary_roundtrip(msg in client_msg()) {
        client_roundtrip(Encoding::Binary, &msg)?;
    }

    #[test]
    fn server_json_roundtrip(msg in server_msg()) {
        server_roundtrip(Encoding::Json, &msg)?;
    }

    #[test]
    fn server_binary_roundtrip(msg in server_msg()) {
        server_roundtrip(Encoding::Binary, &msg)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// `MsgRef` is byte for byte `ServerMsg::Msg`, in both encodings.
    #[test]
    fn msg_ref_encodes_as_msg(m in message(BODY_BYTES_MAX)) {
        for enc in [Encoding::Json, Encoding::Binary] {
            let (mut owned, mut borrowed) = (Vec::new(), Vec::new());
            enc.encode(&ServerMsg::Msg(m.clone()), &mut owned);
            enc.encode(&protocol::MsgRef(&m), &mut borrowed);
            prop_assert_eq!(owned, borrowed);
        }
    }

    /// `encode` appends: whatever is already in the buffer stays.
    #[test]
    fn encode_appends(msg in server_msg(), prefix in vec(any::<u8>(), 0..16)) {
        for encoding in [Encoding::Json, Encoding::Binary] {
            let mut bytes = prefix.clone();
            encoding.encode(&msg, &mut bytes);
            prop_assert_eq!(&bytes[..prefix.len()], &prefix[..]);
            prop_assert_eq!(encoding.decode_server(&bytes[prefix.len()..]), Ok(msg.clone()));
        }
    }
}

/// The largest possible `send` in its most expensive JSON form: every body
/// byte a control character that JSON writes as `\u00XX`, ids at `u64::MAX`.
#[test]
fn maximal_json_send_fits_in_one_client_message() {
    // U+0000..U+001F except the five that have two-byte escapes (\b \t \n \f \r).
    let six_byte: Vec<char> = ('\u{0}'..='\u{1f}')
        .filter(|c| !matches!(c, '\u{8}' | '\t' | '\n' | '\u{c}' | '\r'))
        .collect();
    let body: String = six_byte
        .iter()
        .copied()
        .cycle()
        .take(BODY_BYTES_MAX)
        .collect();
    assert_eq!(body.len(), BODY_BYTES_MAX);
    let msg = ClientMsg::Send {
        conv: ConvId(u64::MAX),
        cmid: ClientMsgId(u64::MAX),
        body,
    };
    let mut bytes = Vec::new();
    Encoding::Json.encode(&msg, &mut bytes);
    assert!(
        bytes.len() >= BODY_BYTES_MAX * 6,
        "every body byte should take six bytes, got {} in total",
        bytes.len()
    );
    assert!(
        bytes.len() <= CLIENT_MESSAGE_BYTES_MAX,
        "{} bytes",
        bytes.len()
    );
    assert_eq!(Encoding::Json.decode_client(&bytes), Ok(msg));
}

/// The largest possible `sync` and `group_create` also fit in JSON.
#[test]
fn maximal_json_lists_fit_in_one_client_message() {
    let max_conv = ConvId(u64::MAX);
    let max_position = Position {
        conv: max_conv,
        seq: Seq(u64::MAX),
    };
    let msgs = [
        ClientMsg::Sync {
            rid: RequestId(u32::MAX),
            since: vec![max_position; SYNC_POSITIONS_MAX],
        },
        ClientMsg::GroupCreate {
            rid: RequestId(u32::MAX),
            title: "\u{0}".repeat(TITLE_BYTES_MAX),
            members: vec![UserId(u64::MAX); GROUP_OP_USERS_MAX],
        },
        ClientMsg::PresenceSubscribe {
            rid: RequestId(u32::MAX),
            users: vec![UserId(u64::MAX); PRESENCE_SUBSCRIPTIONS_MAX],
        },
        ClientMsg::PushRegister {
            rid: RequestId(u32::MAX),
            platform: Platform::Apns,
            token: "\u{0}".repeat(PUSH_TOKEN_BYTES_MAX),
        },
    ];
    for msg in msgs {
        let mut bytes = Vec::new();
        Encoding::Json.encode(&msg, &mut bytes);
        assert!(bytes.len() <= CLIENT_MESSAGE_BYTES_MAX, "{msg:?}");
        assert_eq!(Encoding::Json.decode_client(&bytes), Ok(msg));
    }
}

// ---- the strategies cover every variant ----

/// The binary tag of an encoded message: the varint after the version byte
/// (every enum here has fewer than 128 variants, so it is one byte).
fn binary_tag<T: serde::Serialize>(msg: &T) -> usize {
    let mut bytes = Vec::new();
    Encoding::Binary.encode(msg, &mut bytes);
    assert!(bytes[1] < 0x80, "one-byte varint");
    usize::from(bytes[1])
}

fn sample_tags<T: std::fmt::Debug + serde::Serialize>(strategy: &BoxedStrategy<T>) -> Vec<bool> {
    let mut runner = TestRunner::deterministic();
    let mut seen = Vec::new();
    for _ in 0..300 {
        let msg = strategy
            .new_tree(&mut runner)
            .expect("strategies here never reject")
            .current();
        let tag = binary_tag(&msg);
        if seen.len() <= tag {
            seen.resize(tag + 1, false);
        }
        seen[tag] = true;
    }
    seen
}

#[test]
fn client_strategy_makes_every_variant() {
    let names = support::variant_names::<ClientMsg>();
    let seen = sample_tags(&client_msg());
    assert_eq!(seen.len(), names.len());
    for (name, seen) in names.iter().zip(seen) {
        assert!(seen, "client_msg() never made `{name}`");
    }
}

#[test]
fn server_strategy_makes_every_variant() {
    let names = support::variant_names::<ServerMsg>();
    let seen = sample_tags(&server_msg());
    assert_eq!(seen.len(), names.len());
    for (name, seen) in names.iter().zip(seen) {
        assert!(seen, "server_msg() never made `{name}`");
    }
    assert_eq!(
        support::variant_names::<ErrorCode>().len(),
        10,
        "update error_code()"
    );
    assert_eq!(
        support::variant_names::<GroupEvent>().len(),
        8,
        "update group_event()"
    );
}

/// The worst-case sizes `limits.rs` budgets for are the real ones.
#[test]
fn json_worst_case_sizes_match_limits() {
    use protocol::limits::{JSON_ID_BYTES_MAX, JSON_POSITION_BYTES_MAX};
    let id = serde_json::to_string(&UserId(u64::MAX)).expect("serializes");
    assert_eq!(id.len() + ",".len(), JSON_ID_BYTES_MAX);
    let position = Position {
        conv: ConvId(u64::MAX),
        seq: Seq(u64::MAX),
    };
    let position = serde_json::to_string(&position).expect("serializes");
    assert_eq!(position.len() + ",".len(), JSON_POSITION_BYTES_MAX);
}
