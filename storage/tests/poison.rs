//! A failed commit poisons the store: the failed requests and every later
//! write fail with `Error::Poisoned`, nothing of the failed batch is visible,
//! reads keep working, and a reopened store accepts writes again.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use protocol::{Content, ConvId, DeviceId, Message, MsgId, Seq, UnixMillis, UserId};
use storage::{Config, Durability, Error, Op, Store};

fn append(seq: u64) -> Vec<Op> {
    let msg = Message {
        conv: ConvId(9),
        seq: Seq(seq),
        id: MsgId(seq),
        from: UserId(1),
        device: DeviceId(1),
        ts: UnixMillis(seq),
        content: Content::Text(format!("message {seq}")),
    };
    vec![Op::Append { msg, dedupe: None }]
}

#[test]
fn failed_commit_poisons_every_later_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path()).durability(Durability::Fsync);
    config.fail_commit_after = Some(2);
    let store = Store::open(config).unwrap();
    store.write(append(1)).unwrap();
    store.write(append(2)).unwrap();
    assert!(!store.is_poisoned());

    let failed = store.write(append(3));
    assert!(matches!(failed, Err(Error::Poisoned)), "{failed:?}");
    assert!(store.is_poisoned());
    assert!(matches!(store.write(append(3)), Err(Error::Poisoned)));
    let (tx, _rx) = crossbeam_channel::bounded(1);
    let req =
        storage::WriteRequest::new(append(3), 0, std::sync::Arc::new(storage::ChannelSink(tx)));
    assert!(matches!(store.try_submit(req), Err(Error::Poisoned)));

    // Reads still work and show only what was acked.
    assert_eq!(store.last_seq(ConvId(9)).unwrap(), Seq(2));
    drop(store);

    // A new process (here: a reopen without the fault) continues at max + 1.
    let store = Store::open(Config::new(dir.path())).unwrap();
    assert_eq!(store.last_seq(ConvId(9)).unwrap(), Seq(2));
    store.write(append(3)).unwrap();
    assert_eq!(
        store
            .messages_after(ConvId(9), Seq::ZERO, 10)
            .unwrap()
            .len(),
        3
    );
}
