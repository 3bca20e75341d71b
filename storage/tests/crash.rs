//! Crash test: a child process appends under group commit and reports every
//! acked (conv, seq); the parent SIGKILLs it at a random moment, reopens the
//! store and checks that nothing acked is lost, that each conversation's seqs
//! are exactly 1..=max with intact bodies, and that the next child continues
//! at max + 1. The child is this test binary re-run on the ignored
//! `crash_child` test.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test helpers: a failed unwrap is a failed test; ids are small"
)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use protocol::{ClientMsgId, Content, ConvId, DeviceId, Message, MsgId, Seq, UnixMillis, UserId};
use rand::{Rng, SeedableRng};
use storage::{ChannelSink, Config, Durability, Op, Store, WriteRequest};

const CONVS: u64 = 48;
const IN_FLIGHT_MAX: usize = 256;
const ROUNDS: usize = 12;
const DIR_ENV: &str = "SWITCHBOARD_CRASH_DIR";

fn body(conv: u64, seq: u64) -> String {
    format!("conv {conv} seq {seq} ").repeat(6)
}

fn message(conv: u64, seq: u64) -> Message {
    Message {
        conv: ConvId(conv),
        seq: Seq(seq),
        id: MsgId(conv << 32 | seq),
        from: UserId(conv + 1000),
        device: DeviceId(1),
        ts: UnixMillis(seq),
        content: Content::Text(body(conv, seq)),
    }
}

/// The child: append forever, print `ack <conv> <seq>` per completion.
#[test]
#[ignore = "run by `crash_recovery_keeps_every_acked_message` as a child process"]
fn crash_child() {
    let dir = std::env::var(DIR_ENV).expect("the parent sets the store directory");
    let store = Store::open(Config::new(dir).durability(Durability::Fsync)).unwrap();
    let mut next: Vec<u64> = (0..CONVS)
        .map(|c| store.last_seq(ConvId(c)).unwrap().0 + 1)
        .collect();
    let (tx, rx) = crossbeam_channel::unbounded();
    let sink = Arc::new(ChannelSink(tx));
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let mut in_flight = BTreeMap::new();
    let mut ticket = 0u64;
    loop {
        while in_flight.len() < IN_FLIGHT_MAX {
            let conv = ticket % CONVS;
            let seq = next[conv as usize];
            next[conv as usize] += 1;
            let msg = message(conv, seq);
            let ops = vec![Op::Append {
                msg,
                dedupe: Some(ClientMsgId(conv << 32 | seq)),
            }];
            store
                .submit(WriteRequest::new(ops, ticket, sink.clone()))
                .unwrap();
            in_flight.insert(ticket, (conv, seq));
            ticket += 1;
        }
        let done = rx.recv().unwrap();
        let (conv, seq) = in_flight.remove(&done.ticket).unwrap();
        done.result.unwrap();
        writeln!(out, "ack {conv} {seq}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn crash_recovery_keeps_every_acked_message() {
    let seed: u64 = rand::rng().random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut recovered_max = vec![0u64; CONVS as usize];
    let mut total_acked = 0usize;
    for round in 0..ROUNDS {
        let acked = run_child_and_kill(dir.path(), &mut rng);
        let mut first_ack = BTreeMap::new();
        for &(c, s) in &acked {
            first_ack.entry(c).or_insert(s);
        }
        // Appends continued at max + 1 of the previous recovery.
        for (c, s) in &first_ack {
            assert_eq!(
                *s,
                recovered_max[*c as usize] + 1,
                "round {round} conv {c} seed {seed}"
            );
        }
        total_acked += acked.len();
        recovered_max = verify(dir.path(), &acked, round, seed);
    }
    println!("{ROUNDS} rounds, {total_acked} acked appends, all recovered");
    assert!(
        total_acked > ROUNDS * 100,
        "the child should ack plenty before each kill"
    );
}

/// Runs one child until a random moment after it is ready, SIGKILLs it and
/// returns what it acked, in order.
fn run_child_and_kill(dir: &std::path::Path, rng: &mut impl Rng) -> Vec<(u64, u64)> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut acked = Vec::new();
    // libtest prints "test crash_child ... " without a newline before the
    // test's own output, so "ready" ends a line rather than filling it.
    let ready_by = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < ready_by, "child is ready within 30 s");
        if rx
            .recv_timeout(Duration::from_secs(1))
            .is_ok_and(|l| l.ends_with("ready"))
        {
            break;
        }
    }
    let kill_at = Instant::now() + Duration::from_millis(rng.random_range(50..600));
    while Instant::now() < kill_at {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(1)) {
            acked.extend(parse_ack(&line));
        }
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child never exits by itself");
    reader.join().unwrap();
    acked.extend(rx.try_iter().filter_map(|l| parse_ack(&l)));
    assert!(started.elapsed() < Duration::from_secs(60));
    acked
}

fn parse_ack(line: &str) -> Option<(u64, u64)> {
    let mut it = line.strip_prefix("ack ")?.split(' ');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Reopens the store and checks it; returns each conversation's last seq.
fn verify(dir: &std::path::Path, acked: &[(u64, u64)], round: usize, seed: u64) -> Vec<u64> {
    let store = Store::open(Config::new(dir)).unwrap();
    let ctx = format!("round {round} seed {seed}");
    let mut max = Vec::new();
    for c in 0..CONVS {
        let conv = ConvId(c);
        let last = store.last_seq(conv).unwrap().0;
        let all = store.messages_after(conv, Seq::ZERO, usize::MAX).unwrap();
        assert_eq!(all.len() as u64, last, "{ctx}: conv {c} has a gap");
        for (i, m) in all.iter().enumerate() {
            assert_eq!(
                m,
                &message(c, i as u64 + 1),
                "{ctx}: conv {c} message damaged"
            );
        }
        max.push(last);
    }
    for &(c, s) in acked {
        assert!(
            s <= max[c as usize],
            "{ctx}: acked ({c}, {s}) lost; last is {}",
            max[c as usize]
        );
        let d = store
            .dedupe(UserId(c + 1000), DeviceId(1), ClientMsgId(c << 32 | s))
            .unwrap();
        assert_eq!(
            d.map(|d| d.seq),
            Some(Seq(s)),
            "{ctx}: dedupe of acked ({c}, {s}) lost"
        );
    }
    // A fresh append continues at max + 1; a gap is refused.
    let c = u64::from(round as u32) % CONVS;
    let gap = store.write(vec![Op::Append {
        msg: message(c, max[c as usize] + 2),
        dedupe: None,
    }]);
    assert!(
        matches!(gap, Err(storage::Error::SeqGap { .. })),
        "{ctx}: {gap:?}"
    );
    store
        .write(vec![Op::Append {
            msg: message(c, max[c as usize] + 1),
            dedupe: None,
        }])
        .unwrap();
    max[c as usize] += 1;
    max
}
