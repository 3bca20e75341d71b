//! Storage demo: until the engine exists, the README's run command runs this.
//!
//! Opens (or reopens) a store, creates a group with three members, appends
//! messages from several threads under group commit, and reads them back:
//! latest page, catch-up after a seq, a device's cursors. Run it twice on the
//! same directory to see recovery continue each conversation's seqs.
//!
//!     cargo run --release -p storage --example demo -- [DIR] [MESSAGES]
#![allow(clippy::print_stdout, reason = "a demo prints its results")]

use std::sync::Arc;
use std::time::Instant;

use protocol::{
    ClientMsgId, Content, ConvId, ConvKind, DeviceId, GroupEvent, Message, MsgId, Role, Seq,
    UnixMillis, UserId,
};
use storage::{ChannelSink, Config, Conversation, Cursor, Membership, Op, Store, WriteRequest};

const THREADS: u64 = 4;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "data/demo".into());
    let count: u64 = args.next().map_or(Ok(20_000), |s| s.parse())?;
    let store = Store::open(Config::new(&dir))?;
    println!("store at {dir} ({} durability)", store.config().durability);

    let group = ConvId::group(1);
    let users = [UserId(1), UserId(2), UserId(3)];
    let mut last = store.last_seq(group)?;
    if last == Seq::ZERO {
        last = create_group(&store, group, &users)?;
        println!("created group {group} with {} members", users.len());
    } else {
        println!("recovered group {group}: last seq {last}");
    }

    // Each thread owns its own direct conversation, so seqs stay contiguous.
    let started = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || append_many(&store, t, count / THREADS))
        })
        .collect();
    let mut appended = 0;
    for h in handles {
        appended += h.join().map_err(|_| "append thread panicked")??;
    }
    let secs = started.elapsed().as_secs_f64();
    let stats = store.stats();
    let batches = stats
        .batches
        .load(std::sync::atomic::Ordering::Relaxed)
        .max(1);
    let requests = stats.requests.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "appended {appended} messages in {secs:.2} s ({:.0} msg/s), {batches} group commits, {:.1} requests per commit",
        appended as f64 / secs,
        requests as f64 / batches as f64,
    );

    let conv = ConvId::direct(UserId(100), UserId(101));
    let tail = store.last_seq(conv)?;
    let page = store.messages_latest(conv, 3)?;
    println!("direct conversation {conv}: last seq {tail}; newest three:");
    for m in &page {
        if let Content::Text(body) = &m.content {
            println!("  #{} from {}: {body}", m.seq, m.from);
        }
    }
    let catch_up = store.messages_after(conv, Seq(tail.0.saturating_sub(50)), 50)?;
    println!(
        "catch-up after seq {}: {} messages",
        tail.0.saturating_sub(50),
        catch_up.len()
    );
    store.write(vec![Op::PutCursor {
        user: UserId(101),
        device: DeviceId(1),
        conv,
        cursor: Cursor {
            delivered: tail,
            read: tail,
        },
    }])?;
    println!(
        "cursors of user 101 device 1: {:?}",
        store.cursors(UserId(101), DeviceId(1))?
    );
    println!(
        "group {group}: {} members, last seq {last}",
        store.members(group)?.len()
    );
    Ok(())
}

fn create_group(store: &Store, group: ConvId, users: &[UserId]) -> storage::Result<Seq> {
    let now = UnixMillis::now();
    let mut ops = vec![Op::PutConv(Conversation {
        id: group,
        kind: ConvKind::Group,
        title: "demo".into(),
        creator: users[0],
        created: now,
        members: u32::try_from(users.len()).unwrap_or(u32::MAX),
        history_visible: false,
        private: false,
        participants: None,
    })];
    for (i, &user) in users.iter().enumerate() {
        let role = if i == 0 { Role::Admin } else { Role::Member };
        ops.push(Op::PutMember {
            conv: group,
            user,
            membership: Membership {
                role,
                joined: Seq(1),
            },
        });
    }
    let event = GroupEvent::Created {
        title: "demo".into(),
        members: users.to_vec(),
    };
    ops.push(Op::Append {
        msg: Message {
            conv: group,
            seq: Seq(1),
            id: MsgId(1),
            from: users[0],
            device: DeviceId(1),
            ts: now,
            content: Content::Event(event),
        },
        dedupe: None,
    });
    store.write(ops)?;
    Ok(Seq(1))
}

/// Appends `n` messages to one direct conversation, keeping up to 256
/// requests in flight so that the writer can group-commit them.
fn append_many(store: &Store, thread: u64, n: u64) -> storage::Result<u64> {
    let (from, to) = (UserId(100), UserId(101 + thread));
    let conv = ConvId::direct(from, to);
    let mut next = store.last_seq(conv)?.next();
    let (tx, rx) = crossbeam_channel::unbounded();
    let sink = Arc::new(ChannelSink(tx));
    let mut in_flight = 0;
    for i in 0..n {
        if in_flight == 256 {
            rx.recv().map_err(|_| storage::Error::Closed)?.result?;
            in_flight -= 1;
        }
        let msg = Message {
            conv,
            seq: next,
            id: MsgId(conv.0 ^ next.0),
            from,
            device: DeviceId(1),
            ts: UnixMillis::now(),
            content: Content::Text(format!("message {i} from thread {thread}")),
        };
        let dedupe = Some(ClientMsgId(next.0));
        store.submit(WriteRequest::new(
            vec![Op::Append { msg, dedupe }],
            i,
            sink.clone(),
        ))?;
        in_flight += 1;
        next = next.next();
    }
    for _ in 0..in_flight {
        rx.recv().map_err(|_| storage::Error::Closed)?.result?;
    }
    Ok(n)
}
