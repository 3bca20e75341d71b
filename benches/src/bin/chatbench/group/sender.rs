//! The group's sender: its creator's connection, on its own thread. It
//! reads (answering pings) until the run starts, then posts `count`
//! messages into the group on a fixed schedule from `offset` after the
//! start (open loop: each message is timed from its scheduled send), and
//! checks every ack.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use protocol::{ClientMsg, ClientMsgId, ConvId, Seq, ServerMsg};

use crate::conn::Conn;
use crate::pairs::peer::{self, Shared};
use crate::stats::Latencies;

/// Longest wait for the start, so that the thread notices an abort.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// What to send.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub conv: ConvId,
    /// The group's last seq before the first message.
    pub base: u64,
    pub count: u64,
    /// Messages per second.
    pub rate: f64,
    /// The first message is due this long after the start.
    pub offset: Duration,
}

/// What the sender saw.
#[derive(Debug)]
pub struct GroupSent {
    /// When each message was meant to be sent, ns since the epoch, by
    /// seq − base − 1 (every seq base+1 ..= base+count was acked once).
    pub sent_ns: Vec<u64>,
    /// Scheduled send → ack.
    pub acks: Latencies,
    /// How late each send left against its schedule.
    pub send_lag: Latencies,
}

pub fn spawn(shared: Arc<Shared>, conn: Conn, plan: Plan) -> Result<JoinHandle<Result<GroupSent>>> {
    std::thread::Builder::new()
        .name("group-sender".to_owned())
        .spawn(move || run(&shared, conn, plan).context("the group's sender"))
        .context("spawning the group's sender")
}

fn run(shared: &Shared, mut conn: Conn, plan: Plan) -> Result<GroupSent> {
    let start_ns = wait_start(shared, &mut conn)?;
    let offset_ns = u64::try_from(plan.offset.as_nanos()).unwrap_or(u64::MAX);
    let mut sending = Sending::new(shared, conn, plan);
    sending.open_loop(start_ns.saturating_add(offset_ns))?;
    let Sending {
        conn,
        by_seq,
        acks,
        send_lag,
        ..
    } = sending;
    // The close handshake is not part of the run.
    conn.close();
    Ok(GroupSent {
        sent_ns: by_seq,
        acks,
        send_lag,
    })
}

/// Reads the connection until the senders start, so that pings are
/// answered; returns the start, ns since the epoch.
fn wait_start(shared: &Shared, conn: &mut Conn) -> Result<u64> {
    loop {
        if let Some(start) = shared.start_ns() {
            return Ok(start);
        }
        let msg = peer::recv(conn, shared, Instant::now() + WAIT_SLICE)
            .context("waiting for the start of the run")?;
        if let Some(msg @ ServerMsg::Error { .. }) = msg {
            bail!("the server sent {msg:?} while we waited for the start");
        }
    }
}

/// The sender's state while it posts. `cmid` n is the n-th message.
struct Sending<'a> {
    shared: &'a Shared,
    conn: Conn,
    plan: Plan,
    /// The scheduled send time of each message, by cmid − 1.
    sent_ns: Vec<u64>,
    /// The same by seq − base − 1, once acked; `u64::MAX` before.
    by_seq: Vec<u64>,
    acked: Vec<bool>,
    next: u64,
    acks_count: u64,
    acks: Latencies,
    send_lag: Latencies,
}

impl<'a> Sending<'a> {
    fn new(shared: &'a Shared, conn: Conn, plan: Plan) -> Sending<'a> {
        let n = usize::try_from(plan.count).expect("the message count was checked");
        Sending {
            shared,
            conn,
            plan,
            sent_ns: vec![0; n],
            by_seq: vec![u64::MAX; n],
            acked: vec![false; n],
            next: 1,
            acks_count: 0,
            acks: Latencies::new(),
            send_lag: Latencies::new(),
        }
    }

    /// Sends on the schedule whatever the acks do, until every message
    /// is acked.
    fn open_loop(&mut self, first_ns: u64) -> Result<()> {
        let interval_ns = 1e9 / self.plan.rate;
        while self.acks_count < self.plan.count {
            let until = if self.next <= self.plan.count {
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "a schedule offset in ns, positive and far below 2^64"
                )]
                let due_ns = first_ns + (interval_ns * (self.next - 1) as f64) as u64;
                if self.shared.now_ns() >= due_ns {
                    self.send(due_ns)?;
                    continue;
                }
                self.shared.instant_at(due_ns)
            } else {
                self.shared.deadline
            };
            self.receive(until)?;
        }
        Ok(())
    }

    fn send(&mut self, at_ns: u64) -> Result<()> {
        let cmid = self.next;
        self.conn
            .send(&ClientMsg::Send {
                conv: self.plan.conv,
                cmid: ClientMsgId(cmid),
                body: at_ns.to_string(),
            })
            .with_context(|| format!("sending group message {cmid}"))?;
        self.sent_ns[index(cmid)] = at_ns;
        self.send_lag
            .record_nanos(self.shared.now_ns().saturating_sub(at_ns));
        self.next += 1;
        Ok(())
    }

    fn receive(&mut self, until: Instant) -> Result<()> {
        let received = peer::recv(&mut self.conn, self.shared, until).with_context(|| {
            format!(
                "waiting for acks ({} of {} so far, {} sent)",
                self.acks_count,
                self.plan.count,
                self.next - 1
            )
        });
        match received? {
            Some(ServerMsg::Ack {
                cmid, conv, seq, ..
            }) => self.ack(cmid, conv, seq),
            Some(ServerMsg::Error {
                cmid,
                code,
                message,
                ..
            }) => bail!("the server refused group message {cmid:?}: {code:?}: {message:?}"),
            _ => Ok(()),
        }
    }

    fn ack(&mut self, cmid: ClientMsgId, conv: ConvId, seq: Seq) -> Result<()> {
        let now = self.shared.now_ns();
        let (base, count) = (self.plan.base, self.plan.count);
        ensure!(
            (1..self.next).contains(&cmid.0),
            "ack for cmid {} which was never sent (seq {})",
            cmid.0,
            seq.0
        );
        ensure!(
            conv == self.plan.conv,
            "ack for cmid {} in conv {conv}, not the group {}",
            cmid.0,
            self.plan.conv
        );
        ensure!(
            !self.acked[index(cmid.0)],
            "a second ack for cmid {}",
            cmid.0
        );
        ensure!(
            (base + 1..=base + count).contains(&seq.0),
            "ack for cmid {} has seq {}, outside {}..={}",
            cmid.0,
            seq.0,
            base + 1,
            base + count
        );
        let at = index(seq.0 - base);
        ensure!(self.by_seq[at] == u64::MAX, "two acks with seq {}", seq.0);
        let sent = self.sent_ns[index(cmid.0)];
        self.acked[index(cmid.0)] = true;
        self.by_seq[at] = sent;
        self.acks_count += 1;
        self.acks.record_nanos(now.saturating_sub(sent));
        Ok(())
    }
}

/// The vector index of a 1-based number already checked to be in range.
fn index(one_based: u64) -> usize {
    usize::try_from(one_based - 1).expect("checked against the message count")
}
