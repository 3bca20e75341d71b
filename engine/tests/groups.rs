//! Group chat on the chat endpoint (`/ws`), against docs/PROTOCOL.md and the
//! group rules that complete it: creating a group and announcing it; text in
//! a group; who may change a group and who may use it; adding members, who
//! see the group from the event that added them on; removing members, who
//! get the removal and nothing after it; the last admin leaving; roles; the
//! size, per-user and per-operation limits; catching up on a group after
//! being offline; looking a group up with `conv_get`; members' receipts with
//! `receipts_get`. Each test runs with one shard and with two
//! (`one_shard::…`, `two_shards::…`).
//!
//! Where the rules leave an order open (the members of a `conv` reply, the
//! users of an event), the tests compare sorted lists.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::fmt::Debug;

use protocol::limits::GROUP_OP_USERS_MAX;
use protocol::{
    ClientMsg, Content, ConvId, ConvInfo, ConvKind, DeviceId, Encoding, ErrorCode, GroupEvent,
    MemberReceipts, Message, Page, Role, Seq, UserId,
};
use support::chat::{Ack, Device, QUIET, Refusal};
use support::{Options, Server};

const ALICE: u64 = 1;
const BOB: u64 = 2;
const CAROL: u64 = 3;
const DAVE: u64 = 4;
const EVE: u64 = 5;

/// Sends one device keeps unacknowledged in the bulk tests.
const WINDOW: usize = 16;

/// The server config of the limits test: groups of at most five (the
/// creator counts), each user in at most two groups.
const SMALL_LIMITS: &str = "group_members_max = 5\ngroups_per_user_max = 2\n";

/// A group id no test creates (checked against the ones they do).
const UNKNOWN: ConvId = ConvId((1 << 63) | 0x0bad_c0de_0bad_c0de);

with_one_and_two_shards!(
    create_answers_with_the_group_and_announces_it,
    text_reaches_every_other_device_of_every_member,
    only_admins_change_a_group_and_only_members_use_it,
    added_members_see_the_group_from_their_added_event_on,
    removed_members_get_the_removal_then_nothing,
    a_member_added_again_gets_nothing_from_its_time_out,
    last_admin_leaving_promotes_the_oldest_member,
    set_role_promotes_and_demotes,
    size_and_per_user_limits_hold,
    offline_member_catches_up_on_the_group,
    visible_history_lets_new_members_see_earlier_messages,
    conv_get_answers_members_with_the_group_as_it_is,
    receipts_get_lists_every_member_up_to_the_relay_bound,
);

fn start(shards: u16) -> Server {
    Options::new().shards(shards).start()
}

fn users(ids: &[u64]) -> Vec<UserId> {
    ids.iter().copied().map(UserId).collect()
}

fn role_changed(user: u64, role: Role) -> GroupEvent {
    GroupEvent::RoleChanged {
        user: UserId(user),
        role,
    }
}

/// `(user, role, joined)` of every member, by user id.
fn members(info: &ConvInfo) -> Vec<(u64, Role, u64)> {
    let mut members: Vec<_> = info
        .members
        .iter()
        .map(|m| (m.user.0, m.role, m.joined.0))
        .collect();
    members.sort_unstable_by_key(|m| m.0);
    members
}

/// `content` with the user lists of an event sorted.
fn sorted(content: &Content) -> Content {
    let mut content = content.clone();
    if let Content::Event(
        GroupEvent::Created { members: list, .. }
        | GroupEvent::Added { users: list }
        | GroupEvent::Removed { users: list },
    ) = &mut content
    {
        list.sort_unstable();
    }
    content
}

/// Asserts `m` is `event`, at `seq` in `conv`, caused by `by` = (user, device).
#[track_caller]
fn assert_event(m: &Message, conv: ConvId, seq: u64, by: (u64, u64), event: &GroupEvent) {
    assert_eq!(
        (m.conv, m.seq, m.from, m.device, sorted(&m.content)),
        (
            conv,
            Seq(seq),
            UserId(by.0),
            DeviceId(by.1),
            sorted(&Content::Event(event.clone()))
        ),
        "(conv, seq, from, device, content) of {m:?}"
    );
}

/// The next message of `d`, which must be `event` (see [`assert_event`]).
#[track_caller]
fn expect_event(
    d: &mut Device,
    conv: ConvId,
    seq: u64,
    by: (u64, u64),
    event: &GroupEvent,
) -> Message {
    let m = d.expect_msg();
    assert_event(&m, conv, seq, by, event);
    m
}

/// The group `creator` just made: every device in `members` gets its
/// `created` event (seq 1) live; returns that message.
#[track_caller]
fn expect_created(members: &mut [&mut Device], info: &ConvInfo, creator: (u64, u64)) -> Message {
    let mut listed: Vec<u64> = info.members.iter().map(|m| m.user.0).collect();
    listed.retain(|&u| u != creator.0);
    let created = GroupEvent::Created {
        title: info.title.clone(),
        members: users(&listed),
    };
    let mut first: Option<Message> = None;
    for d in members.iter_mut() {
        let m = expect_event(d, info.conv, 1, creator, &created);
        if let Some(first) = &first {
            assert_eq!(&m, first, "{d}: another device got another created event");
        }
        first = Some(m);
    }
    first.expect("the caller lists at least one device")
}

/// Every device in `devices` gets `m` next.
#[track_caller]
fn expect_all(devices: &mut [&mut Device], m: &Message) {
    for d in devices.iter_mut() {
        assert_eq!(&d.expect_msg(), m, "{d}");
    }
}

fn expect_quiet(devices: &mut [&mut Device]) {
    for d in devices.iter_mut() {
        d.expect_quiet();
    }
}

/// Asserts `result` is a refusal with `want`.
#[track_caller]
fn assert_refused<T: Debug>(result: Result<T, Refusal>, want: ErrorCode, what: &str) {
    match result {
        Ok(v) => panic!("{what}: accepted with {v:?}; want {want:?}"),
        Err((code, text)) => assert_eq!(code, want, "{what}: refused with {code:?} ({text})"),
    }
}

/// The `msg` everyone but the sender gets for `ack`.
fn message(ack: &Ack, from: u64, device: u64, body: &str) -> Message {
    Message {
        conv: ack.conv,
        seq: ack.seq,
        id: ack.id,
        from: UserId(from),
        device: DeviceId(device),
        ts: ack.ts,
        content: Content::Text(body.to_owned()),
    }
}

fn bodies(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix} {i}")).collect()
}

fn seqs(msgs: &[Message]) -> Vec<u64> {
    msgs.iter().map(|m| m.seq.0).collect()
}

/// The messages `acks` stand for (`bodies[i]` was acked by `acks[i]`), in
/// seq order; asserts the acked seqs are exactly `first..first + n`.
fn acked(acks: &[Ack], bodies: &[String], from: u64, device: u64, first: u64) -> Vec<Message> {
    assert_eq!(acks.len(), bodies.len());
    let mut msgs: Vec<Message> = acks
        .iter()
        .zip(bodies)
        .map(|(ack, body)| message(ack, from, device, body))
        .collect();
    msgs.sort_by_key(|m| m.seq);
    let n = u64::try_from(msgs.len()).unwrap();
    let want: Vec<u64> = (first..first + n).collect();
    assert_eq!(seqs(&msgs), want, "acked seqs");
    msgs
}

/// Fetches each `(from, limit)` page of `conv` as `d` and compares it with
/// `(want, more)`; the assertion lists every page that went wrong.
#[track_caller]
fn assert_pages(d: &mut Device, conv: ConvId, cases: &[(Page, u16, &[Message], bool)]) {
    let mut wrong = Vec::new();
    for &(from, limit, want, more) in cases {
        let (got, got_more) = d.fetch(conv, from, limit);
        if (got.as_slice(), got_more) != (want, more) {
            wrong.push(format!(
                "fetch {from:?} limit {limit}: got seqs {:?} more {got_more}, want seqs {:?} \
                 more {more}",
                seqs(&got),
                seqs(want),
            ));
        }
    }
    assert!(wrong.is_empty(), "{d}:\n{}", wrong.join("\n"));
}

fn create_answers_with_the_group_and_announces_it(shards: u16) {
    let server = start(shards);
    let mut alice = Device::online(&server, ALICE, 1);
    let mut alice2 = Device::online(&server, ALICE, 2);
    let mut bob = Device::online(&server, BOB, 1);

    // Duplicates and the creator herself are dropped from `members`.
    let info = alice
        .group_create("Climbing", &[BOB, CAROL, BOB, ALICE])
        .unwrap();
    let conv = info.conv;
    assert!(conv.0 >= 1 << 63, "the group id {conv} lacks the top bit");
    assert!(conv.is_group());
    assert_eq!(info.kind, ConvKind::Group);
    assert_eq!(info.title, "Climbing");
    assert_eq!(
        members(&info),
        [
            (ALICE, Role::Admin, 1),
            (BOB, Role::Member, 1),
            (CAROL, Role::Member, 1)
        ]
    );
    assert_eq!(info.last_seq, Seq(1));

    let created = GroupEvent::Created {
        title: "Climbing".to_owned(),
        members: users(&[BOB, CAROL]),
    };
    let live = expect_event(&mut bob, conv, 1, (ALICE, 1), &created);
    assert_eq!(alice2.expect_msg(), live, "the creator's other device");
    // The requesting device has the reply instead of the event.
    expect_quiet(&mut [&mut alice, &mut alice2, &mut bob]);

    // It is still in that device's stream: a later sync streams it.
    alice.close();
    let mut alice = Device::connect(&server, ALICE, 1);
    let synced = alice.sync();
    assert_eq!(synced.in_conv(conv), std::slice::from_ref(&live));
    let summary = synced.summary(conv);
    assert_eq!((summary.kind, summary.last_seq), (ConvKind::Group, Seq(1)));

    // A member that connects later finds it in sync and in history.
    let mut carol = Device::connect(&server, CAROL, 1);
    let synced = carol.sync();
    assert_eq!(synced.msgs, std::slice::from_ref(&live));
    let summary = synced.summary(conv);
    assert_eq!((summary.kind, summary.last_seq), (ConvKind::Group, Seq(1)));
    assert_eq!(carol.fetch(conv, Page::Latest, 10), (vec![live], false));

    // Each group has its own id; a title may be empty.
    let other = bob.group_create("", &[ALICE]).unwrap();
    assert!(other.conv.is_group(), "{other:?}");
    assert_ne!(other.conv, conv);
    assert_eq!(other.title, "");
    assert_eq!(
        members(&other),
        [(ALICE, Role::Member, 1), (BOB, Role::Admin, 1)]
    );
    expect_created(&mut [&mut alice, &mut alice2], &other, (BOB, 1));
    expect_quiet(&mut [&mut alice, &mut alice2, &mut bob, &mut carol]);
}

fn text_reaches_every_other_device_of_every_member(shards: u16) {
    let server = start(shards);
    let mut devices = [
        Device::online(&server, ALICE, 1),
        Device::online(&server, ALICE, 2),
        Device::online(&server, BOB, 1),
        Device::online(&server, CAROL, 1),
        Device::online(&server, CAROL, 2),
    ];
    let info = devices[0].group_create("Crag", &[BOB, CAROL]).unwrap();
    let conv = info.conv;
    let [_, others @ ..] = &mut devices;
    expect_created(&mut others.each_mut(), &info, (ALICE, 1));

    // (sender index, user, device): bob, then carol's second device, whose
    // first device gets the message like everyone else.
    for (i, (sender, user, device)) in [(2, BOB, 1), (4, CAROL, 2)].into_iter().enumerate() {
        let body = format!("hello from {user}/{device}");
        let ack = devices[sender].send_text(conv, &body);
        assert_eq!(ack.seq, Seq(2 + u64::try_from(i).unwrap()));
        let want = message(&ack, user, device, &body);
        for (j, d) in devices.iter_mut().enumerate() {
            if j != sender {
                assert_eq!(d.expect_msg(), want, "{d}");
            }
        }
    }

    // A burst arrives everywhere in seq order.
    let sent = bodies("burst", 20);
    let acks = devices[0].send_many(conv, &sent, WINDOW);
    let want = acked(&acks, &sent, ALICE, 1, 4);
    for d in devices.iter_mut().skip(1) {
        for m in &want {
            assert_eq!(&d.expect_msg(), m, "{d}");
        }
    }
    // The senders got only their acks.
    expect_quiet(&mut devices.each_mut());
    let all = devices[3].fetch_all(conv);
    assert_eq!(seqs(&all), (1..=23).collect::<Vec<_>>());
    assert_eq!(all[3..], want);
}

/// Tries every admin operation on `conv` as `d`, each on members that
/// exist (alice and bob), so that only who asks decides the answer.
fn try_admin_ops(d: &mut Device, conv: ConvId) -> Vec<(&'static str, Result<ConvInfo, Refusal>)> {
    vec![
        ("group_rename", d.group_rename(conv, "taken over")),
        ("group_add", d.group_add(conv, &[DAVE])),
        ("group_remove", d.group_remove(conv, &[ALICE])),
        (
            "group_set_role bob admin",
            d.group_set_role(conv, BOB, Role::Admin),
        ),
        (
            "group_set_role alice member",
            d.group_set_role(conv, ALICE, Role::Member),
        ),
    ]
}

/// Asserts every result is a refusal with `want`; lists all that are not.
#[track_caller]
fn assert_all_refused(who: &str, results: Vec<(&str, Result<ConvInfo, Refusal>)>, want: ErrorCode) {
    let wrong: Vec<String> = results
        .into_iter()
        .filter(|(_, r)| !matches!(r, Err((code, _)) if *code == want))
        .map(|(op, r)| format!("{op} by {who}: {r:?}, want {want:?}"))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn only_admins_change_a_group_and_only_members_use_it(shards: u16) {
    let server = start(shards);
    let mut alice = Device::online(&server, ALICE, 1);
    let mut bob = Device::online(&server, BOB, 1);
    let mut carol = Device::online(&server, CAROL, 1);
    let info = alice.group_create("Admins only", &[BOB]).unwrap();
    let conv = info.conv;
    assert_ne!(conv, UNKNOWN);
    let created = expect_created(&mut [&mut bob], &info, (ALICE, 1));

    let results = try_admin_ops(&mut bob, conv);
    assert_all_refused("bob, a member", results, ErrorCode::Forbidden);
    let results = try_admin_ops(&mut carol, conv);
    assert_all_refused("carol, no member", results, ErrorCode::Forbidden);
    assert_eq!(carol.send_refused(conv, "let me in"), ErrorCode::Forbidden);
    assert_eq!(
        carol.try_fetch(conv, Page::Latest, 10),
        Err(ErrorCode::Forbidden)
    );

    for d in [&mut alice, &mut carol] {
        let who = d.to_string();
        assert_all_refused(&who, try_admin_ops(d, UNKNOWN), ErrorCode::NotFound);
        assert_refused(d.group_leave(UNKNOWN), ErrorCode::NotFound, "leave unknown");
        assert_eq!(d.send_refused(UNKNOWN, "anyone?"), ErrorCode::NotFound);
        assert_eq!(
            d.try_fetch(UNKNOWN, Page::Latest, 10),
            Err(ErrorCode::NotFound)
        );
    }

    // Nothing reached the stream or the members.
    expect_quiet(&mut [&mut alice, &mut bob, &mut carol]);
    assert_eq!(alice.fetch(conv, Page::Latest, 10), (vec![created], false));
    let info = alice.group_rename(conv, "Still mine").unwrap();
    assert_eq!(
        members(&info),
        [(ALICE, Role::Admin, 1), (BOB, Role::Member, 1)]
    );
    assert_eq!(info.last_seq, Seq(2));
    let renamed = GroupEvent::Renamed {
        title: "Still mine".to_owned(),
    };
    expect_event(&mut bob, conv, 2, (ALICE, 1), &renamed);
}

fn added_members_see_the_group_from_their_added_event_on(shards: u16) {
    let server = start(shards);
    let mut alice = Device::online(&server, ALICE, 1);
    let mut bob = Device::online(&server, BOB, 1);
    let info = alice.group_create("Before you", &[BOB]).unwrap();
    let conv = info.conv;
    expect_created(&mut [&mut bob], &info, (ALICE, 1));
    let sent = bodies("before carol", 3);
    let early = acked(&alice.send_many(conv, &sent, WINDOW), &sent, ALICE, 1, 2);
    for m in &early {
        assert_eq!(&bob.expect_msg(), m);
    }

    // Carol's device is synced before she is a member. Bob is listed too,
    // but only carol is new.
    let mut carol = Device::online(&server, CAROL, 1);
    let info = alice.group_add(conv, &[CAROL, BOB]).unwrap();
    assert_eq!(
        members(&info),
        [
            (ALICE, Role::Admin, 1),
            (BOB, Role::Member, 1),
            (CAROL, Role::Member, 5)
        ]
    );
    assert_eq!(info.last_seq, Seq(5));
    let added = GroupEvent::Added {
        users: users(&[CAROL]),
    };
    let live = expect_event(&mut bob, conv, 5, (ALICE, 1), &added);
    assert_eq!(carol.expect_msg(), live, "the new member's synced device");
    alice.expect_quiet();
    let ack = bob.send_text(conv, "welcome carol");
    let welcome = message(&ack, BOB, 1, "welcome carol");
    expect_all(&mut [&mut carol, &mut alice], &welcome);

    let visible = [live, welcome];
    let mut carol2 = Device::connect(&server, CAROL, 2);
    let synced = carol2.sync();
    assert_eq!(synced.in_conv(conv), visible, "carol's sync");
    assert_eq!(synced.summary(conv).last_seq, Seq(6));
    let none: &[Message] = &[];
    assert_pages(
        &mut carol2,
        conv,
        &[
            (Page::Latest, 10, &visible[..], false),
            (Page::Latest, 1, &visible[1..], true),
            (Page::Before(Seq(6)), 10, &visible[..1], false),
            (Page::Before(Seq(5)), 10, none, false),
            (Page::Before(Seq(3)), 10, none, false),
            (Page::After(Seq(0)), 10, &visible[..], false),
            (Page::After(Seq(2)), 1, &visible[..1], true),
            (Page::After(Seq(5)), 10, &visible[1..], false),
        ],
    );

    assert_refused(
        alice.group_add(conv, &[BOB]),
        ErrorCode::Conflict,
        "add bob again",
    );
    assert_refused(
        alice.group_add(conv, &[CAROL, ALICE, BOB]),
        ErrorCode::Conflict,
        "add only members",
    );
    expect_quiet(&mut [&mut alice, &mut bob, &mut carol, &mut carol2]);
    let (latest, _) = alice.fetch(conv, Page::Latest, 1);
    assert_eq!(seqs(&latest), [6], "a refused add appends nothing");
}

fn removed_members_get_the_removal_then_nothing(shards: u16) {
    let server = start(shards);
    let mut alice = Device::online(&server, ALICE, 1);
    let mut bob = Device::online(&server, BOB, 1);
    let mut carol = Device::online(&server, CAROL, 1);
    let info = alice.group_create("Shrinking", &[BOB, CAROL]).unwrap();
    let conv = info.conv;
    expect_created(&mut [&mut bob, &mut carol], &info, (ALICE, 1));

    // Dave is no member: ignored.
    let info = alice.group_remove(conv, &[CAROL, DAVE]).unwrap();
    assert_eq!(
        members(&info),
        [(ALICE, Role::Admin, 1), (BOB, Role::Member, 1)]
    );
    assert_eq!(info.last_seq, Seq(2));
    let removed = GroupEvent::Removed {
        users: users(&[CAROL]),
    };
    let live = expect_event(&mut carol, conv, 2, (ALICE, 1), &removed);
    assert_eq!(bob.expect_msg(), live);
    alice.expect_quiet();

    let ack = alice.send_text(conv, "carol has gone");
    assert_eq!(ack.seq, Seq(3));
    assert_eq!(bob.expect_msg(), message(&ack, ALICE, 1, "carol has gone"));
    carol.expect_quiet();
    assert_eq!(carol.send_refused(conv, "wait"), ErrorCode::Forbidden);
    assert_eq!(
        carol.try_fetch(conv, Page::Latest, 10),
        Err(ErrorCode::Forbidden)
    );
    // Neither her device that saw the group nor a new one lists it.
    carol.close();
    for device in [1, 2] {
        let mut carol = Device::connect(&server, CAROL, device);
        let synced = carol.sync();
        assert!(
            synced.convs.iter().all(|s| s.conv != conv),
            "{carol}: synced lists the group: {:?}",
            synced.convs
        );
        let after: Vec<Message> = synced
            .in_conv(conv)
            .into_iter()
            .filter(|m| m.seq > Seq(2))
            .collect();
        assert!(after.is_empty(), "{carol}: sync streamed {after:?}");
    }

    assert_refused(
        alice.group_remove(conv, &[CAROL, DAVE]),
        ErrorCode::Conflict,
        "remove only non-members",
    );
    assert_refused(
        alice.group_remove(conv, &[ALICE]),
        ErrorCode::Conflict,
        "remove the last admin",
    );
    // With another admin, an admin may be removed.
    alice.group_set_role(conv, BOB, Role::Admin).unwrap();
    let promoted = role_changed(BOB, Role::Admin);
    expect_event(&mut bob, conv, 4, (ALICE, 1), &promoted);
    let info = bob.group_remove(conv, &[ALICE]).unwrap();
    assert_eq!(members(&info), [(BOB, Role::Admin, 1)]);
    let removed = GroupEvent::Removed {
        users: users(&[ALICE]),
    };
    expect_event(&mut alice, conv, 5, (BOB, 1), &removed);
    assert_eq!(alice.send_refused(conv, "hello?"), ErrorCode::Forbidden);
    expect_quiet(&mut [&mut alice, &mut bob]);
}

/// Carol is removed, a message is sent, and she is added again while her
/// device stays connected. The gap in her live stream (seq 3) is filled by the
/// server from the store: it must skip what she may not see.
fn a_member_added_again_gets_nothing_from_its_time_out(shards: u16) {
    let server = start(shards);
    let mut alice = Device::online(&server, ALICE, 1);
    let mut bob = Device::online(&server, BOB, 1);
    let mut carol = Device::online(&server, CAROL, 1);
    let info = alice.group_create("Revolving", &[BOB, CAROL]).unwrap();
    let conv = info.conv;
    expect_created(&mut [&mut bob, &mut carol], &info, (ALICE, 1));
    alice.group_remove(conv, &[CAROL]).unwrap();
    let removed = GroupEvent::Removed {
        users: users(&[CAROL]),
    };
    expect_event(&mut carol, conv, 2, (ALICE, 1), &removed);
    bob.expect_msg();

    let out = alice.send_text(conv, "while carol is out");
    assert_eq!(
        bob.expect_msg(),
        message(&out, ALICE, 1, "while carol is out")
    );
    alice.group_add(conv, &[CAROL]).unwrap();
    let added = GroupEvent::Added {
        users: users(&[CAROL]),
    };
    expect_event(&mut carol, conv, 4, (ALICE, 1), &added);
    bob.expect_msg();
    let back = alice.send_text(conv, "welcome back");
    assert_eq!(carol.expect_msg(), message(&back, ALICE, 1, "welcome back"));
    carol.expect_quiet();

    // History and a new device's catch-up agree.
    let (page, more) = carol.fetch(conv, Page::Latest, 10);
    assert_eq!((seqs(&page), more), (vec![4, 5], false));
    let mut second = Device::connect(&server, CAROL, 2);
    let synced = second.sync();
    assert_eq!(seqs(&synced.in_conv(conv)), [4, 5]);
}

fn last_admin_leaving_promotes_the_oldest_member(shards: u16) {
    let server = start(shards);
    let mut alice = Device::online(&server, ALICE, 1);
    let mut alice2 = Device::online(&server, ALICE, 2);
    let mut bob = Device::online(&server, BOB, 1);
    let mut carol = Device::online(&server, CAROL, 1);
    let mut dave = Device::online(&server, DAVE, 1);
    // Carol is listed first: among members of equal `joined` the lower user
    // id is the older, whatever the order of the list.
    let info = alice.group_create("Succession", &[CAROL, BOB]).unwrap();
    let conv = info.conv;
    expect_created(&mut [&mut alice2, &mut bob, &mut carol], &info, (ALICE, 1));
    alice.group_add(conv, &[DAVE]).unwrap();
    let added = GroupEvent::Added {
        users: users(&[DAVE]),
    };
    for d in [&mut alice2, &mut bob, &mut carol, &mut dave] {
        expect_event(d, conv, 2, (ALICE, 1), &added);
    }

    assert_eq!(alice.group_leave(conv), Ok(()));
    let left = GroupEvent::Left {
        user: UserId(ALICE),
    };
    let promoted = role_changed(BOB, Role::Admin);
    for d in [&mut bob, &mut carol, &mut dave] {
        expect_event(d, conv, 3, (ALICE, 1), &left);
        expect_event(d, conv, 4, (ALICE, 1), &promoted);
    }
    alice.expect_quiet();
    assert_eq!(
        alice.send_refused(conv, "still here?"),
        ErrorCode::Forbidden
    );

    let info = bob.group_rename(conv, "Bob's crew").unwrap();
    assert_eq!(info.title, "Bob's crew");
    assert_eq!(
        members(&info),
        [
            (BOB, Role::Admin, 1),
            (CAROL, Role::Member, 1),
            (DAVE, Role::Member, 2)
        ]
    );
    assert_eq!(info.last_seq, Seq(5));
    let renamed = GroupEvent::Renamed {
        title: "Bob's crew".to_owned(),
    };
    for d in [&mut carol, &mut dave] {
        expect_event(d, conv, 5, (BOB, 1), &renamed);
    }
    member_leaves_without_promotion(&mut bob, &mut carol, &mut dave, conv);

    // Like a removed member, the leaver's other device gets its `left`
    // event (seq 3) and nothing after it.
    expect_event(&mut alice2, conv, 3, (ALICE, 1), &left);
    let late = alice2.drain(QUIET);
    assert!(late.is_empty(), "{alice2}: got {late:?} after alice left");
}

/// Dave, a member, leaves `conv` (at seq 5), where bob is the only admin:
/// no one is promoted.
fn member_leaves_without_promotion(
    bob: &mut Device,
    carol: &mut Device,
    dave: &mut Device,
    conv: ConvId,
) {
    assert_eq!(dave.group_leave(conv), Ok(()));
    let left = GroupEvent::Left { user: UserId(DAVE) };
    for d in [&mut *bob, &mut *carol] {
        expect_event(d, conv, 6, (DAVE, 1), &left);
    }
    expect_quiet(&mut [&mut *bob, &mut *carol, &mut *dave]);
    assert_refused(
        carol.group_rename(conv, "Carol's"),
        ErrorCode::Forbidden,
        "carol is a member only",
    );
    assert_eq!(seqs(&bob.fetch_all(conv)), [1, 2, 3, 4, 5, 6]);
}

fn set_role_promotes_and_demotes(shards: u16) {
    let server = start(shards);
    let mut alice = Device::online(&server, ALICE, 1);
    let mut bob = Device::online(&server, BOB, 1);
    let mut carol = Device::online(&server, CAROL, 1);
    let info = alice.group_create("Roles", &[BOB, CAROL]).unwrap();
    let conv = info.conv;
    expect_created(&mut [&mut bob, &mut carol], &info, (ALICE, 1));

    let info = alice.group_set_role(conv, BOB, Role::Admin).unwrap();
    assert_eq!(
        members(&info),
        [
            (ALICE, Role::Admin, 1),
            (BOB, Role::Admin, 1),
            (CAROL, Role::Member, 1)
        ]
    );
    assert_eq!(info.last_seq, Seq(2));
    for d in [&mut bob, &mut carol] {
        expect_event(d, conv, 2, (ALICE, 1), &role_changed(BOB, Role::Admin));
    }
    assert_eq!(bob.group_rename(conv, "Co-run").unwrap().last_seq, Seq(3));
    let renamed = GroupEvent::Renamed {
        title: "Co-run".to_owned(),
    };
    for d in [&mut alice, &mut carol] {
        expect_event(d, conv, 3, (BOB, 1), &renamed);
    }

    let info = alice.group_set_role(conv, BOB, Role::Member).unwrap();
    assert_eq!(info.last_seq, Seq(4));
    assert_eq!(members(&info)[1], (BOB, Role::Member, 1));
    for d in [&mut bob, &mut carol] {
        expect_event(d, conv, 4, (ALICE, 1), &role_changed(BOB, Role::Member));
    }
    assert_refused(
        bob.group_rename(conv, "again"),
        ErrorCode::Forbidden,
        "rename by a demoted admin",
    );
    let refusals = [
        (
            ALICE,
            Role::Member,
            ErrorCode::Conflict,
            "demote the last admin",
        ),
        (ALICE, Role::Admin, ErrorCode::Conflict, "promote an admin"),
        (CAROL, Role::Member, ErrorCode::Conflict, "demote a member"),
        (
            DAVE,
            Role::Admin,
            ErrorCode::NotFound,
            "promote a non-member",
        ),
    ];
    for (user, to, want, what) in refusals {
        assert_refused(alice.group_set_role(conv, user, to), want, what);
    }
    expect_quiet(&mut [&mut alice, &mut bob, &mut carol]);
    admin_steps_down(&mut alice, &mut bob, &mut carol, conv);
}

/// With another admin, the first one may step down. Alice is the only
/// admin of `conv` (at seq 4); bob and carol are members.
fn admin_steps_down(alice: &mut Device, bob: &mut Device, carol: &mut Device, conv: ConvId) {
    alice.group_set_role(conv, CAROL, Role::Admin).unwrap();
    let info = alice.group_set_role(conv, ALICE, Role::Member).unwrap();
    assert_eq!(
        members(&info),
        [
            (ALICE, Role::Member, 1),
            (BOB, Role::Member, 1),
            (CAROL, Role::Admin, 1)
        ]
    );
    assert_eq!(info.last_seq, Seq(6));
    for d in [bob, carol] {
        expect_event(d, conv, 5, (ALICE, 1), &role_changed(CAROL, Role::Admin));
        expect_event(d, conv, 6, (ALICE, 1), &role_changed(ALICE, Role::Member));
    }
    assert_refused(
        alice.group_rename(conv, "mine?"),
        ErrorCode::Forbidden,
        "rename by the admin who stepped down",
    );
}

fn size_and_per_user_limits_hold(shards: u16) {
    let server = Options::new().shards(shards).config(SMALL_LIMITS).start();
    let mut alice = Device::online(&server, ALICE, 1);
    let five = size_limit_holds_on_create(&mut alice);
    operation_bound_holds(&mut alice, five);
    let pair = size_limit_holds_on_add(&mut alice);
    per_user_limit_holds(&server, &mut alice, pair);
}

/// Returns a group of five that alice created (her first).
fn size_limit_holds_on_create(alice: &mut Device) -> ConvId {
    // Five with the creator, once duplicates and alice herself are dropped.
    let five = alice
        .group_create("five", &[2, 3, 4, 5, 2, ALICE, 5])
        .unwrap();
    assert_eq!(five.members.len(), 5, "{five:?}");
    assert_refused(
        alice.group_create("six", &[2, 3, 4, 5, 6]),
        ErrorCode::GroupFull,
        "create a group of six",
    );
    let thousand: Vec<u64> = (1_000..2_000).collect();
    assert_eq!(thousand.len(), GROUP_OP_USERS_MAX);
    assert_refused(
        alice.group_create("thousand and one", &thousand),
        ErrorCode::GroupFull,
        "create with 1,000 members",
    );
    five.conv
}

/// Over [`GROUP_OP_USERS_MAX`] users in one operation, or none to add or
/// remove, is a bad request; `group_request` takes only an answer naming
/// the request's rid.
fn operation_bound_holds(alice: &mut Device, five: ConvId) {
    let over: Vec<u64> = (1_000..=2_000).collect();
    assert_eq!(over.len(), GROUP_OP_USERS_MAX + 1);
    let results = [
        ("group_create", alice.group_create("over", &over)),
        ("group_add", alice.group_add(five, &over)),
        ("group_remove", alice.group_remove(five, &over)),
        ("group_add nobody", alice.group_add(five, &[])),
        ("group_remove nobody", alice.group_remove(five, &[])),
    ];
    for (what, result) in results {
        assert_refused(result, ErrorCode::BadRequest, what);
    }
}

/// Returns a full group alice created (her second).
fn size_limit_holds_on_add(alice: &mut Device) -> ConvId {
    let pair = alice.group_create("pair", &[10]).unwrap().conv;
    assert_refused(
        alice.group_add(pair, &[11, 12, 13, 14]),
        ErrorCode::GroupFull,
        "add four to a group of two",
    );
    // The refused add changed nothing: these join at seq 2.
    let info = alice.group_add(pair, &[11, 12, 13]).unwrap();
    assert_eq!(
        members(&info),
        [
            (ALICE, Role::Admin, 1),
            (10, Role::Member, 1),
            (11, Role::Member, 2),
            (12, Role::Member, 2),
            (13, Role::Member, 2)
        ]
    );
    assert_refused(
        alice.group_add(pair, &[14]),
        ErrorCode::GroupFull,
        "add a sixth",
    );
    pair
}

/// Alice is in two groups (the limit): `pair`, where she is the only admin,
/// and another; user 2 is in one.
fn per_user_limit_holds(server: &Server, alice: &mut Device, pair: ConvId) {
    assert_refused(
        alice.group_create("third", &[20]),
        ErrorCode::TooManyGroups,
        "alice creates a third group",
    );
    // The refused create put user 20 in no group.
    let mut u20 = Device::online(server, 20, 1);
    let other = u20.group_create("other", &[21]).unwrap().conv;
    assert_refused(
        u20.group_add(other, &[ALICE]),
        ErrorCode::TooManyGroups,
        "add alice to a third group",
    );
    assert_refused(
        u20.group_create("with alice", &[ALICE]),
        ErrorCode::TooManyGroups,
        "create a third group for alice",
    );
    let info = u20.group_add(other, &[2]).unwrap();
    assert_eq!(info.members.len(), 3, "{info:?}");
    let mut u30 = Device::online(server, 30, 1);
    assert_refused(
        u30.group_create("", &[2]),
        ErrorCode::TooManyGroups,
        "put user 2 in a third group",
    );
    // Leaving a group makes room for another.
    assert_eq!(alice.group_leave(pair), Ok(()));
    let info = u20.group_add(other, &[ALICE]).unwrap();
    assert_eq!(
        members(&info),
        [
            (ALICE, Role::Member, 3),
            (2, Role::Member, 2),
            (20, Role::Admin, 1),
            (21, Role::Member, 1)
        ]
    );
}

fn offline_member_catches_up_on_the_group(shards: u16) {
    let server = start(shards);
    let mut alice = Device::online(&server, ALICE, 1);
    let mut bob = Device::online(&server, BOB, 1);
    let info = alice.group_create("Catch-up", &[BOB]).unwrap();
    let conv = info.conv;
    let created = expect_created(&mut [&mut bob], &info, (ALICE, 1));
    bob.close();

    let first = bodies("while away", 25);
    let acks = alice.send_many(conv, &first, WINDOW);
    let first = acked(&acks, &first, ALICE, 1, 2);
    let renamed = alice.group_rename(conv, "Caught up").unwrap();
    assert_eq!(renamed.last_seq, Seq(27));
    let second = bodies("after the rename", 25);
    let acks = alice.send_many(conv, &second, WINDOW);
    let second = acked(&acks, &second, ALICE, 1, 28);

    // Back in binary this time: group events in postcard too.
    let mut bob = Device::connect_with(&server, BOB, 1, Encoding::Binary);
    let synced = bob.sync();
    let got = synced.in_conv(conv);
    assert_eq!(
        seqs(&got),
        (1..=52).collect::<Vec<_>>(),
        "sync must stream seqs 1..=52 in order"
    );
    assert_eq!(got[0], created);
    assert_eq!(got[1..26], first);
    let title = GroupEvent::Renamed {
        title: "Caught up".to_owned(),
    };
    assert_event(&got[26], conv, 27, (ALICE, 1), &title);
    assert_eq!(got[27..], second);
    let summary = synced.summary(conv);
    assert_eq!((summary.kind, summary.last_seq), (ConvKind::Group, Seq(52)));

    let live = alice.send_text(conv, "live");
    assert_eq!(live.seq, Seq(53));
    assert_eq!(bob.expect_msg(), message(&live, ALICE, 1, "live"));
    expect_quiet(&mut [&mut alice, &mut bob]);
}

/// With `group_set_history {visible: true}`, a member added later gets the
/// group's whole history in `sync` and `fetch`; by default (checked in
/// `added_members_see_the_group_from_their_added_event_on`) it does not.
fn visible_history_lets_new_members_see_earlier_messages(shards: u16) {
    let server = start(shards);
    let mut alice = Device::online(&server, ALICE, 1);
    let conv = alice.group_create("open book", &[BOB]).unwrap().conv;
    alice.send_text(conv, "before carol");
    let set = |d: &mut Device, visible| {
        d.group_request(|rid| ClientMsg::GroupSetHistory { rid, conv, visible })
    };
    let info = set(&mut alice, true).unwrap();
    assert_eq!(info.last_seq, Seq(3), "the setting is an event (seq 3)");
    assert_eq!(set(&mut alice, true).unwrap_err().0, ErrorCode::Conflict);
    let mut bob = Device::online(&server, BOB, 1);
    assert_eq!(set(&mut bob, false).unwrap_err().0, ErrorCode::Forbidden);
    let joined = alice.group_add(conv, &[CAROL]).unwrap();
    assert_eq!(joined.last_seq, Seq(4));

    let mut carol = Device::connect(&server, CAROL, 1);
    let synced = carol.sync();
    let seqs: Vec<u64> = synced.in_conv(conv).iter().map(|m| m.seq.0).collect();
    assert_eq!(seqs, [1, 2, 3, 4], "the whole history, the join included");
    let history = carol.fetch_all(conv);
    assert_eq!(history.len(), 4);
    assert!(
        matches!(
            &history[2].content,
            Content::Event(GroupEvent::HistoryVisible { visible: true })
        ),
        "{:?}",
        history[2]
    );
}

fn conv_get_answers_members_with_the_group_as_it_is(shards: u16) {
    let server = start(shards);
    let mut alice = Device::online(&server, ALICE, 1);
    let mut bob = Device::online(&server, BOB, 1);
    let mut carol = Device::online(&server, CAROL, 1);
    let info = alice.group_create("Crag", &[BOB, CAROL]).unwrap();
    let conv = info.conv;
    assert_eq!(
        alice.conv_get(conv).unwrap(),
        info,
        "right after the create"
    );

    alice.group_rename(conv, "Crag 🧗").unwrap();
    let added = alice.group_add(conv, &[DAVE]).unwrap();
    let ack = bob.send_text(conv, "welcome dave");
    assert_eq!((added.last_seq, ack.seq), (Seq(3), Seq(4)));
    let want = [
        (ALICE, Role::Admin, 1),
        (BOB, Role::Member, 1),
        (CAROL, Role::Member, 1),
        (DAVE, Role::Member, 3),
    ];
    assert_eq!(members(&added), want);
    // Every member, the new one on a device that has never synced included,
    // gets the group as it is now, members by ascending user id.
    let mut dave = Device::connect(&server, DAVE, 7);
    for d in [&mut alice, &mut bob, &mut carol, &mut dave] {
        let got = d.conv_get(conv).unwrap();
        assert_eq!(
            (got.conv, got.kind, got.title.as_str(), got.last_seq),
            (conv, ConvKind::Group, "Crag 🧗", Seq(4)),
            "{d}"
        );
        let listed: Vec<_> = got
            .members
            .iter()
            .map(|m| (m.user.0, m.role, m.joined.0))
            .collect();
        assert_eq!(listed, want, "{d}");
    }

    // A user who never was a member, and ids that name nothing.
    let mut eve = Device::online(&server, EVE, 1);
    let refusal = eve.conv_get(conv).unwrap_err();
    assert_eq!(
        refusal,
        (
            ErrorCode::Forbidden,
            "not a member of this conversation".into()
        )
    );
    for unknown in [UNKNOWN, ConvId::direct(UserId(EVE), UserId(ALICE))] {
        let refusal = eve.conv_get(unknown).unwrap_err();
        assert_eq!(
            refusal,
            (ErrorCode::NotFound, "no such conversation".into()),
            "{unknown}"
        );
    }

    // Removed: no longer told anything about the group.
    alice.group_remove(conv, &[CAROL]).unwrap();
    assert_refused(carol.conv_get(conv), ErrorCode::Forbidden, "removed member");
    let got = bob.conv_get(conv).unwrap();
    assert_eq!(got.last_seq, Seq(5));
    assert!(
        got.members.iter().all(|m| m.user != UserId(CAROL)),
        "{got:?}"
    );
}

/// Groups above this many members get no receipts (the engine's
/// `RELAY_MEMBERS_MAX`, docs/PROTOCOL.md `read`).
const RELAY_MEMBERS_MAX: u64 = 256;

fn receipts_get_lists_every_member_up_to_the_relay_bound(shards: u16) {
    let server = start(shards);
    let mut alice = Device::online(&server, ALICE, 1);
    let mut bob = Device::online(&server, BOB, 1);
    let mut carol = Device::online(&server, CAROL, 7);
    let info = alice.group_create("Crag", &[CAROL, BOB]).unwrap();
    let conv = info.conv;
    expect_created(&mut [&mut bob, &mut carol], &info, (ALICE, 1));
    let ack = alice.send_text(conv, "topping out");
    assert_eq!(ack.seq, Seq(2));
    bob.expect_msg();
    carol.expect_msg();

    bob.send(&ClientMsg::Recv { conv, seq: Seq(2) });
    bob.send(&ClientMsg::Read { conv, seq: Seq(2) });
    carol.send(&ClientMsg::Recv { conv, seq: Seq(1) });
    alice.send(&ClientMsg::Read { conv, seq: Seq(2) });
    let entry = |user, delivered, read| MemberReceipts {
        user: UserId(user),
        delivered: Seq(delivered),
        read: Seq(read),
    };
    // Every member, the asking one included, by ascending user id.
    let want = [entry(ALICE, 0, 2), entry(BOB, 2, 2), entry(CAROL, 1, 0)];
    let got = carol.receipts_when(conv, |got| got == want);
    assert_eq!(got, want);
    assert_eq!(alice.receipts_get(conv).unwrap(), want);

    let mut eve = Device::online(&server, EVE, 1);
    assert_refused(eve.receipts_get(conv), ErrorCode::Forbidden, "non-member");
    assert_refused(eve.receipts_get(UNKNOWN), ErrorCode::NotFound, "unknown");
    alice.group_remove(conv, &[CAROL]).unwrap();
    assert_refused(carol.receipts_get(conv), ErrorCode::Forbidden, "removed");

    // At the bound every member is listed; past it no one is.
    let others: Vec<u64> = (1000..1000 + RELAY_MEMBERS_MAX).collect();
    let at = alice.group_create("At", &others[1..]).unwrap().conv;
    let listed = alice.receipts_get(at).unwrap();
    assert_eq!(listed.len(), usize::try_from(RELAY_MEMBERS_MAX).unwrap());
    assert_eq!(listed[0], entry(ALICE, 0, 0));
    let past = alice.group_create("Past", &others).unwrap().conv;
    assert_eq!(alice.receipts_get(past).unwrap(), []);
}
