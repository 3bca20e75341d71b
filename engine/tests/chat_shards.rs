//! Handoff: with two shards the kernel (`SO_REUSEPORT`) gives each new
//! connection to either shard, and a shard that is not the user's home
//! shard (`router::shard_of_user`) hands the connection to it. So all of a
//! user's devices are served by one shard, and a message from any of them
//! reaches all the others.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::time::Duration;

use protocol::{Content, ConvId, DeviceId, UserId};
use support::Options;
use support::chat::{Device, QUIET};

const SHARDS: u16 = 2;

/// Debug lines from the engine, where handoffs are logged.
const LOG_FILTER: &str = "info,engine=debug,fjall=warn,lsm_tree=warn";

/// What a handoff's log line contains.
const HANDED_OFF: &str = "handed off";

const USER: u64 = 7;
const PEER: u64 = 8;

/// Devices of `USER` opened first. Each lands on the home shard with
/// probability 1/2, so all of them do with probability 2^-8.
const DEVICES_FIRST: u64 = 8;

/// Devices opened at most, one by one, until one was handed off.
const DEVICES_MAX: u64 = 32;

/// How long to wait for a handoff's log line after the connection is up.
const LOG_WAIT: Duration = Duration::from_millis(500);

#[test]
fn every_device_is_served_by_the_home_shard() {
    let server = Options::new()
        .shards(SHARDS)
        .env("SWITCHBOARD_LOG", LOG_FILTER)
        .start();
    let home = router::shard_of_user(UserId(USER), SHARDS);

    let mut devices: Vec<Device> = (1..=DEVICES_FIRST)
        .map(|device| Device::online(&server, USER, device))
        .collect();
    while !server.wait_for_log(HANDED_OFF, LOG_WAIT) {
        let next = devices.len() as u64 + 1;
        assert!(
            next <= DEVICES_MAX,
            "{DEVICES_MAX} connections and none handed off to the home shard {home}; log:\n{}",
            server.log()
        );
        devices.push(Device::online(&server, USER, next));
    }
    let log = server.log();
    let handoffs: Vec<&str> = log.lines().filter(|l| l.contains(HANDED_OFF)).collect();
    assert!(handoffs.len() <= devices.len(), "{handoffs:#?}");
    for line in &handoffs {
        assert!(
            line.contains(&format!("to_shard={home}")),
            "only user {USER}'s devices are connected, whose home shard is {home}: {line}"
        );
    }

    let mut peer = Device::online(&server, PEER, 1);
    let conv = ConvId::direct(UserId(USER), UserId(PEER));
    devices[0].direct_open(PEER);
    // From the first device, then from the peer: every device gets them.
    // No device receives after it sent (chat.rs covers that).
    for (seq, sender) in [(1, Some(0)), (2, None)] {
        let body = format!("message {seq}");
        let (ack, from) = match sender {
            Some(i) => (devices[i].send_text(conv, &body), (USER, i as u64 + 1)),
            None => (peer.send_text(conv, &body), (PEER, 1)),
        };
        assert_eq!(ack.seq.0, seq);
        for (i, device) in devices.iter_mut().enumerate() {
            if sender == Some(i) {
                continue;
            }
            let msg = device.expect_msg();
            assert_eq!(
                (msg.conv, msg.seq, msg.id),
                (conv, ack.seq, ack.id),
                "at {device}"
            );
            assert_eq!((msg.from, msg.device), (UserId(from.0), DeviceId(from.1)));
            assert_eq!(msg.content, Content::Text(body.clone()));
        }
        if sender.is_some() {
            let msg = peer.expect_msg();
            assert_eq!((msg.seq, msg.id), (ack.seq, ack.id));
        }
    }
    // Nothing more anywhere: one quiet period, then a quick look at each.
    std::thread::sleep(QUIET);
    for device in devices.iter_mut().chain([&mut peer]) {
        device.expect_quiet_for(Duration::from_millis(20));
    }
}
