//! Presence against docs/PROTOCOL.md: `presence_subscribe` reports users
//! who share a conversation with the subscriber — online now, offline with
//! a last-seen time when their last device goes, online again when one
//! comes back — and nothing about anyone else. And push token registration,
//! answered by `ok` once it is stored. With one shard and with two.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::time::Duration;

use protocol::{ClientMsg, Platform, PresenceStatus, ServerMsg, UnixMillis, UserId};
use support::chat::Device;
use support::{Options, Server};

const ALICE: u64 = 1;
const BOB: u64 = 2;
const CAROL: u64 = 3;

/// How long a test waits to be sure nothing more arrives.
const QUIET: Duration = Duration::from_millis(300);

fn start(shards: u16) -> Server {
    Options::new().shards(shards).start()
}

fn presence_of(d: &mut Device, user: u64) -> (PresenceStatus, Option<UnixMillis>) {
    let msg = d.take(
        &format!("presence of user {user}"),
        |m| matches!(m, ServerMsg::Presence { user: u, .. } if *u == UserId(user)),
    );
    let ServerMsg::Presence {
        status, last_seen, ..
    } = msg
    else {
        unreachable!("taken by its kind")
    };
    (status, last_seen)
}

fn subscribe(d: &mut Device, users: &[u64]) {
    let users = users.iter().map(|u| UserId(*u)).collect();
    let answer = d.request(|rid| ClientMsg::PresenceSubscribe { rid, users });
    assert!(matches!(answer, ServerMsg::Ok { .. }), "{answer:?}");
}

fn presence_follows_devices_of_users_sharing_a_conversation(shards: u16) {
    let server = start(shards);
    let mut alice = Device::online(&server, ALICE, 1);
    let bob = Device::online(&server, BOB, 1);
    let _carol = Device::online(&server, CAROL, 1);
    alice.direct_open(BOB);

    subscribe(&mut alice, &[BOB, CAROL]);
    assert_eq!(presence_of(&mut alice, BOB), (PresenceStatus::Online, None));

    // A second device does not change the user's presence; the last one
    // leaving does.
    let bob2 = Device::online(&server, BOB, 2);
    bob2.close();
    bob.close();
    let before = UnixMillis::now().0;
    let (status, last_seen) = presence_of(&mut alice, BOB);
    assert_eq!(status, PresenceStatus::Offline);
    let seen = last_seen
        .expect("an offline user that was seen has a last-seen time")
        .0;
    assert!(
        seen.abs_diff(before) < 5_000,
        "last seen {seen}, now {before}"
    );

    let _bob = Device::online(&server, BOB, 1);
    assert_eq!(presence_of(&mut alice, BOB), (PresenceStatus::Online, None));

    // Carol shares no conversation with alice: never reported.
    let rest = alice.drain(QUIET);
    assert!(
        !rest
            .iter()
            .any(|m| matches!(m, ServerMsg::Presence { user, .. } if *user == UserId(CAROL))),
        "presence of a stranger leaked: {rest:?}"
    );
}

fn resubscribing_replaces_the_list(shards: u16) {
    let server = start(shards);
    let mut alice = Device::online(&server, ALICE, 1);
    let bob = Device::online(&server, BOB, 1);
    alice.direct_open(BOB);
    subscribe(&mut alice, &[BOB]);
    assert_eq!(presence_of(&mut alice, BOB).0, PresenceStatus::Online);
    subscribe(&mut alice, &[]);
    bob.close();
    let rest = alice.drain(QUIET * 2);
    assert!(
        !rest.iter().any(|m| matches!(m, ServerMsg::Presence { .. })),
        "an unsubscribed user was reported: {rest:?}"
    );
}

fn push_tokens_are_registered_and_removed(shards: u16) {
    let server = start(shards);
    let mut alice = Device::online(&server, ALICE, 1);
    let answer = alice.request(|rid| ClientMsg::PushRegister {
        rid,
        platform: Platform::Fcm,
        token: "fcm-token-1".to_owned(),
    });
    assert!(matches!(answer, ServerMsg::Ok { .. }), "{answer:?}");
    let answer = alice.request(|rid| ClientMsg::PushUnregister { rid });
    assert!(matches!(answer, ServerMsg::Ok { .. }), "{answer:?}");
    // An empty token breaks a limit: refused, naming the request.
    let answer = alice.request(|rid| ClientMsg::PushRegister {
        rid,
        platform: Platform::Apns,
        token: String::new(),
    });
    assert!(
        matches!(
            answer,
            ServerMsg::Error {
                code: protocol::ErrorCode::BadRequest,
                ..
            }
        ),
        "{answer:?}"
    );
}

with_one_and_two_shards!(
    presence_follows_devices_of_users_sharing_a_conversation,
    resubscribing_replaces_the_list,
    push_tokens_are_registered_and_removed,
);
