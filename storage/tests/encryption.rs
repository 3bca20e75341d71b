//! Encryption at rest through the store: no message body or push preview
//! reaches the data directory in the clear, rotated keys keep old records
//! readable, and plain records written before encryption still read.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::collections::BTreeSet;
use std::path::Path;

use protocol::{
    Content, ConvId, DeviceId, GroupEvent, Message, MsgId, Platform, Seq, UnixMillis, UserId,
};
use storage::{Config, Durability, EncryptionKeys, Error, Op, PushJob, Store};

const CONV: ConvId = ConvId(7);

fn keys(ids: &[u32]) -> EncryptionKeys {
    let lines: Vec<String> = ids
        .iter()
        .map(|id| format!("{id}:{}", format!("{:02x}", id + 0x10).repeat(32)))
        .collect();
    EncryptionKeys::parse(&lines.join("\n")).unwrap()
}

fn open(dir: &Path, enc: Option<EncryptionKeys>) -> Store {
    let mut config = Config::new(dir).durability(Durability::Os);
    config.encryption = enc;
    Store::open(config).unwrap()
}

fn text(seq: u64, body: &str) -> Message {
    Message {
        conv: CONV,
        seq: Seq(seq),
        id: MsgId(1000 + seq),
        from: UserId(1),
        device: DeviceId(2),
        ts: UnixMillis(seq),
        content: Content::Text(body.to_owned()),
    }
}

fn append(store: &Store, msg: Message) {
    store.write(vec![Op::Append { msg, dedupe: None }]).unwrap();
}

fn job(preview: &str) -> PushJob {
    PushJob {
        user: UserId(3),
        device: DeviceId(4),
        platform: Platform::Apns,
        token: "token".into(),
        conv: CONV,
        seq: Seq(1),
        sender: UserId(1),
        preview: Some(preview.to_owned()),
        unread: 1,
        count: 1,
        created: UnixMillis(5),
    }
}

/// Every file under `dir`, recursively, as (path, bytes).
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

/// Where `needle` starts in `hay`.
fn occurrences<'a>(hay: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    hay.windows(needle.len())
        .enumerate()
        .filter(move |(_, w)| *w == needle)
        .map(|(i, _)| i)
}

/// Writes 200 messages and a push job with distinctive bodies (half of them
/// flushed to disk tables, half left in the journal), closes the store and
/// returns the bodies found in the files of the data directory, and whether
/// their random tag appears there at all.
fn bodies_on_disk(enc: Option<EncryptionKeys>) -> (BTreeSet<String>, bool) {
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("{:016x}", rand::random::<u64>());
    let body = |i: u64| format!("needle-{tag}-{i}.");
    let preview = format!("preview-{tag}.");
    let store = open(dir.path(), enc);
    for i in 1..=200 {
        append(&store, text(i, &body(i)));
        if i == 100 {
            store.flush().unwrap();
        }
    }
    let put = Op::PutOutbox {
        id: 1,
        job: job(&preview),
    };
    store.write(vec![put]).unwrap();
    assert_eq!(
        store.message(CONV, Seq(150)).unwrap().unwrap(),
        text(150, &body(150))
    );
    assert_eq!(store.outbox(0, 10).unwrap()[0].1, job(&preview));
    drop(store);
    let mut found = BTreeSet::new();
    let mut tag_seen = false;
    for (_, f) in files(dir.path()) {
        for at in occurrences(&f, tag.as_bytes()) {
            tag_seen = true;
            // Any whole body or preview around this tag, intact.
            let candidates = (1..=200).map(body).chain([preview.clone()]);
            for c in candidates {
                let start = at.saturating_sub(c.find(&tag).unwrap());
                if f[start..].starts_with(c.as_bytes()) {
                    found.insert(c);
                }
            }
        }
    }
    (found, tag_seen)
}

#[test]
fn no_body_or_preview_reaches_the_data_directory_when_encrypted() {
    let (plain, _) = bodies_on_disk(None);
    // The scan is real: without encryption every body is there to be found.
    assert_eq!(plain.len(), 201, "plain store: only {plain:?} found");
    assert!(plain.iter().any(|b| b.starts_with("preview-")));
    let (sealed, tag_seen) = bodies_on_disk(Some(keys(&[1])));
    assert!(sealed.is_empty(), "found in the clear: {sealed:?}");
    assert!(!tag_seen, "a body's random tag is in the data directory");
}

#[test]
fn rotated_keys_keep_old_records_readable() {
    let dir = tempfile::tempdir().unwrap();
    let body = |i: u64| format!("body {i}");
    let store = open(dir.path(), Some(keys(&[1])));
    (1..=10).for_each(|i| append(&store, text(i, &body(i))));
    drop(store);
    let store = open(dir.path(), Some(keys(&[1, 2])));
    (11..=20).for_each(|i| append(&store, text(i, &body(i))));
    drop(store);

    let store = open(dir.path(), Some(keys(&[1, 2])));
    let all = store.messages_after(CONV, Seq::ZERO, 100).unwrap();
    let want: Vec<Message> = (1..=20).map(|i| text(i, &body(i))).collect();
    assert_eq!(all, want);
    drop(store);

    let store = open(dir.path(), Some(keys(&[2])));
    for i in 1..=10 {
        match store.message(CONV, Seq(i)) {
            Err(Error::Decrypt { reason, .. }) => {
                assert_eq!(reason, "sealed with key 1, which is not configured");
            }
            other => panic!("seq {i}: want a decrypt error, got {other:?}"),
        }
    }
    for i in 11..=20 {
        assert_eq!(
            store.message(CONV, Seq(i)).unwrap().unwrap(),
            text(i, &body(i))
        );
    }
    let err = store.messages_latest(CONV, 20).unwrap_err();
    assert!(
        err.to_string().contains("key 1, which is not configured"),
        "{err}"
    );
    assert_eq!(store.messages_after(CONV, Seq(10), 20).unwrap(), want[10..]);
    drop(store);

    let store = open(dir.path(), None);
    let err = store.message(CONV, Seq(15)).unwrap_err().to_string();
    assert!(
        err.contains("sealed with key 2, but encryption is not configured"),
        "{err}"
    );
}

#[test]
fn a_plain_store_reads_the_same_after_encryption_is_turned_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), None);
    append(&store, text(1, "plain one"));
    let rename = GroupEvent::Renamed {
        title: "new title".into(),
    };
    let mut event = text(2, "");
    event.content = Content::Event(rename);
    append(&store, event.clone());
    store
        .write(vec![Op::PutOutbox {
            id: 1,
            job: job("plain preview"),
        }])
        .unwrap();
    drop(store);

    let store = open(dir.path(), Some(keys(&[1])));
    append(&store, text(3, "sealed three"));
    let want = vec![text(1, "plain one"), event.clone(), text(3, "sealed three")];
    assert_eq!(store.messages_latest(CONV, 10).unwrap(), want);
    store
        .write(vec![Op::PutOutbox {
            id: 2,
            job: job("sealed preview"),
        }])
        .unwrap();
    let jobs = store.outbox(0, 10).unwrap();
    assert_eq!(
        jobs,
        vec![(1, job("plain preview")), (2, job("sealed preview"))]
    );
    drop(store);

    // Without keys the plain records and the (plain) event still read.
    let store = open(dir.path(), None);
    let newest = store.messages_latest(CONV, 2);
    assert!(matches!(newest, Err(Error::Decrypt { .. })), "{newest:?}");
    assert_eq!(store.messages_before(CONV, Seq(3), 10).unwrap(), want[..2]);
    assert!(matches!(
        store.message(CONV, Seq(3)),
        Err(Error::Decrypt { .. })
    ));
    assert!(matches!(store.outbox(0, 10), Err(Error::Decrypt { .. })));
    assert_eq!(store.outbox(1, 1).unwrap(), vec![(1, job("plain preview"))]);
}
