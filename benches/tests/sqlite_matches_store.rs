//! The `SQLite` baseline returns exactly what the store returns for the same
//! writes, so the storage bench compares equal work.

use std::sync::Arc;

use benches::{Corpus, Post, SqliteStore};
use protocol::{ConvId, Seq};
use storage::{ChannelSink, Config, Durability, Op, Store, WriteRequest};

const CONVS: usize = 20;
const POSTS: usize = 3000;
const LIMIT: usize = 50;

fn append_op(p: Post) -> Op {
    Op::Append {
        msg: p.msg,
        dedupe: Some(p.cmid),
    }
}

fn filled() -> (tempfile::TempDir, Store, SqliteStore, Corpus) {
    let dir = tempfile::tempdir().expect("the temporary directory is writable");
    let store = Store::open(Config::new(dir.path().join("fjall")).durability(Durability::None))
        .expect("a new store opens");
    let mut sqlite = SqliteStore::open(&dir.path().join("sqlite.db"), Durability::None)
        .expect("a new database opens");
    let mut corpus = Corpus::new(CONVS, 7);
    for _ in 0..POSTS / 100 {
        let posts = corpus.posts(100);
        sqlite
            .append(&posts)
            .expect("contiguous appends are accepted");
        store
            .write(posts.into_iter().map(append_op).collect())
            .expect("contiguous appends are accepted");
    }
    (dir, store, sqlite, corpus)
}

#[test]
fn reads_return_the_same_messages() {
    let (_dir, store, sqlite, corpus) = filled();
    assert_eq!(sqlite.count().unwrap(), POSTS as u64);
    for index in 0..corpus.convs() {
        let (conv, last) = corpus.last(index);
        assert!(last.0 > LIMIT as u64);
        for at in [0, 1, last.0 / 2, last.0 - 1, last.0, last.0 + 1] {
            let fjall = store.messages_after(conv, Seq(at), LIMIT).unwrap();
            assert_eq!(fjall, sqlite.messages_after(conv, Seq(at), LIMIT).unwrap());
            let fjall = store.messages_before(conv, Seq(at), LIMIT).unwrap();
            assert_eq!(fjall, sqlite.messages_before(conv, Seq(at), LIMIT).unwrap());
        }
        let latest = store.messages_latest(conv, LIMIT).unwrap();
        assert_eq!(latest.len(), LIMIT);
        assert_eq!(latest.last().map(|m| m.seq), Some(last));
        assert_eq!(latest, sqlite.messages_latest(conv, LIMIT).unwrap());
    }
    let empty = Corpus::conv(CONVS);
    assert!(sqlite.messages_latest(empty, LIMIT).unwrap().is_empty());
    assert!(store.messages_latest(empty, LIMIT).unwrap().is_empty());
}

#[test]
fn both_refuse_a_gap_and_keep_the_batch_out() {
    let (_dir, store, mut sqlite, mut corpus) = filled();
    let mut posts = corpus.posts(3);
    posts[2].msg.seq = posts[2].msg.seq.next();
    let conv: ConvId = posts[2].msg.conv;
    assert!(matches!(
        sqlite.append(&posts),
        Err(benches::Error::SeqNotNext { .. })
    ));
    assert_eq!(sqlite.count().unwrap(), POSTS as u64);
    let err = store
        .write(posts.into_iter().map(append_op).collect())
        .unwrap_err();
    assert!(matches!(err, storage::Error::SeqGap { .. }));
    assert_eq!(
        store.last_seq(conv).unwrap(),
        sqlite.messages_latest(conv, 1).unwrap()[0].seq
    );
}

#[test]
fn group_commit_of_single_requests_keeps_seqs_contiguous() {
    let (_dir, store, _sqlite, mut corpus) = filled();
    let (tx, rx) = crossbeam_channel::unbounded();
    let sink = Arc::new(ChannelSink(tx));
    let posts = corpus.posts(256);
    for (ticket, p) in (0..).zip(posts) {
        let req = WriteRequest::new(vec![append_op(p)], ticket, sink.clone());
        store.submit(req).unwrap();
    }
    for _ in 0..256 {
        rx.recv().unwrap().result.unwrap();
    }
    for index in 0..corpus.convs() {
        let (conv, last) = corpus.last(index);
        assert_eq!(store.last_seq(conv).unwrap(), last);
    }
}
