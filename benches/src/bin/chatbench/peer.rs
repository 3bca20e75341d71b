//! One connection of the pairs bench, on its own thread: a sender that
//! posts into a direct conversation, or the receiver at its other end.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::conn::Conn;
use anyhow::{Context, Result, bail, ensure};
use protocol::{
    ClientMsg, ClientMsgId, Content, ConvId, Encoding, RequestId, Seq, ServerMsg, UserId,
};

use crate::stats::Latencies;

/// Longest single blocking read, so that threads notice an abort quickly.
const RECV_SLICE: Duration = Duration::from_millis(100);

/// How long a receiver keeps reading after its last expected message, to
/// catch duplicates and strays.
const LINGER: Duration = Duration::from_millis(300);

const SYNC_RID: RequestId = RequestId(1);
const OPEN_RID: RequestId = RequestId(2);

/// What every connection thread shares.
#[derive(Debug)]
pub struct Shared {
    pub addr: SocketAddr,
    pub encoding: Encoding,
    /// Send times in message bodies are nanoseconds since this instant.
    pub epoch: Instant,
    /// Every wait ends here; reaching it fails the run.
    pub deadline: Instant,
    pub timeout: Duration,
    pub pairs: usize,
    pub messages: u64,
    pub window: u64,
    /// Sends per second per sender (open loop), or `None` (closed loop).
    pub rate: Option<f64>,
    /// The group bench's phases: when phase 1 and phase 2 begin, after the
    /// start. Receivers time messages by the phase of their send time:
    /// before phase 1 (the warm-up) not at all, in phase 1 into
    /// [`ReceiverReport::deliveries`], in phase 2 into [`ReceiverReport::late`].
    pub phases: Option<[Duration; 2]>,
    /// Set by the main thread when the run has failed: every thread stops.
    pub abort: AtomicBool,
    /// The instant the senders start, once the main thread has set it.
    pub start: Mutex<Option<Instant>>,
    pub started: Condvar,
}

impl Shared {
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn instant_at(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns)
    }

    /// When the senders started (once they have), ns since the epoch.
    pub fn start_ns(&self) -> Option<u64> {
        let start = self
            .start
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        start.map(|at| u64::try_from((at - self.epoch).as_nanos()).unwrap_or(u64::MAX))
    }

    /// The phase of a message sent at `sent_ns`: 0 (the warm-up), 1 or 2;
    /// always 1 without [`Shared::phases`].
    fn phase_of(&self, sent_ns: u64) -> u8 {
        let Some(phases) = self.phases else {
            return 1;
        };
        // Set once the senders have started, before any message is sent.
        let start_ns = self.start_ns().unwrap_or(0);
        phase_of(sent_ns, start_ns, phases)
    }

    /// Lets the senders go.
    pub fn open_gate(&self) {
        let mut start = self
            .start
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *start = Some(Instant::now());
        self.started.notify_all();
    }

    fn wait_gate(&self) -> Result<Instant> {
        let mut start = self
            .start
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if let Some(at) = *start {
                return Ok(at);
            }
            self.check(Instant::now())
                .context("waiting for the start of the run")?;
            start = self
                .started
                .wait_timeout(start, RECV_SLICE)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Fails on abort ([`Aborted`]) or once the run's deadline has passed.
    pub fn check(&self, now: Instant) -> Result<()> {
        if self.abort.load(Ordering::Relaxed) {
            bail!(Aborted);
        }
        ensure!(
            now < self.deadline,
            "the run's --timeout ({:?}) passed",
            self.timeout
        );
        Ok(())
    }
}

/// The error of a thread stopped because another one failed; not reported.
#[derive(Debug)]
pub struct Aborted;

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("aborted because another connection failed")
    }
}

impl std::error::Error for Aborted {}

/// What a connection thread tells the main thread as it goes.
#[derive(Debug)]
pub enum Event {
    /// Connected and synced (a sender has also opened its conversation).
    Ready,
    /// A sender has every ack.
    SenderDone,
    /// A receiver has every message.
    ReceiverDone,
    Failed(String),
}

/// One user's connection, as the pairs bench sees it.
#[derive(Debug)]
pub struct Peer {
    pub name: String,
    pub user: UserId,
    pub token: String,
}

#[derive(Debug)]
pub struct SenderReport {
    pub conv: ConvId,
    /// When the first message was sent (intended), ns since the epoch.
    pub first_send_ns: u64,
    pub acks: Latencies,
    /// Open loop: how late each send left against its schedule (a client
    /// that falls behind shows here, not as lower latency).
    pub send_lag: Latencies,
}

#[derive(Debug)]
pub struct ReceiverReport {
    /// Every `msg` received, in arrival order, including any after the last
    /// expected one.
    pub got: Vec<(ConvId, Seq)>,
    /// When the last expected message arrived, ns since the epoch.
    pub last_delivery_ns: u64,
    /// Every message's; with [`Shared::phases`], phase 1's only.
    pub deliveries: Latencies,
    /// With [`Shared::phases`]: phase 2's messages.
    pub late: Latencies,
}

/// Runs `body`, telling the main thread if it fails (unless aborted).
pub fn report_failure<T>(
    events: &mpsc::Sender<Event>,
    peer: &Peer,
    body: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let result = body().with_context(|| peer.name.clone());
    if let Err(err) = &result
        && !err.is::<Aborted>()
        && err.root_cause().downcast_ref::<Aborted>().is_none()
    {
        let _ = events.send(Event::Failed(format!("{err:#}")));
    }
    result
}

/// Connects, reads `welcome`, syncs.
fn open(shared: &Shared, peer: &Peer) -> Result<Conn> {
    let mut client = Conn::connect(shared.addr, &peer.token, shared.encoding)?;
    match expect(&mut client, shared, "welcome", |m| {
        matches!(m, ServerMsg::Welcome { .. })
    })? {
        ServerMsg::Welcome { user, .. } if user == peer.user => {}
        other => bail!("welcome for the wrong user: {other:?}"),
    }
    client
        .send(&ClientMsg::Sync {
            rid: SYNC_RID,
            since: vec![],
        })
        .context("sending sync")?;
    expect(
        &mut client,
        shared,
        "synced",
        |m| matches!(m, ServerMsg::Synced { rid, .. } if *rid == SYNC_RID),
    )?;
    Ok(client)
}

/// The next message, `None` once `until` has passed, or an error at the
/// run's deadline or on abort.
pub fn recv(client: &mut Conn, shared: &Shared, until: Instant) -> Result<Option<ServerMsg>> {
    loop {
        let now = Instant::now();
        if now >= until && until < shared.deadline {
            return Ok(None);
        }
        shared.check(now)?;
        let stop = until.min(shared.deadline).min(now + RECV_SLICE);
        if let Some(msg) = client.recv(stop)? {
            return Ok(Some(msg));
        }
    }
}

/// Waits for a message `pred` accepts, skipping others; an `error` fails.
fn expect(
    client: &mut Conn,
    shared: &Shared,
    what: &str,
    pred: impl Fn(&ServerMsg) -> bool,
) -> Result<ServerMsg> {
    loop {
        let msg = recv(client, shared, shared.deadline)
            .with_context(|| format!("waiting for {what}"))?
            .context("the run's deadline passed")?;
        if pred(&msg) {
            return Ok(msg);
        }
        if let ServerMsg::Error { .. } = msg {
            bail!("the server answered with {msg:?} while we waited for {what}");
        }
    }
}

/// A sender: opens the direct conversation with `to`, then posts the run's
/// messages into it and times each `ack`.
pub fn sender(
    shared: &Shared,
    events: &mpsc::Sender<Event>,
    peer: &Peer,
    index: usize,
    to: UserId,
) -> Result<SenderReport> {
    let mut client = open(shared, peer)?;
    client
        .send(&ClientMsg::DirectOpen {
            rid: OPEN_RID,
            user: to,
        })
        .context("sending direct_open")?;
    let conv = match expect(
        &mut client,
        shared,
        "conv",
        |m| matches!(m, ServerMsg::Conv { rid, .. } if *rid == OPEN_RID),
    )? {
        ServerMsg::Conv { conv, .. } => conv.conv,
        other => bail!("expected conv, got {other:?}"),
    };
    let _ = events.send(Event::Ready);
    let start = shared.wait_gate()?;
    let mut sending = Sending::new(shared, client, conv);
    match shared.rate {
        None => sending.closed_loop()?,
        Some(rate) => sending.open_loop(start, rate, index)?,
    }
    let _ = events.send(Event::SenderDone);
    // The close handshake is not part of the run; a failed one changes nothing.
    sending.client.close();
    Ok(SenderReport {
        conv,
        first_send_ns: sending.first_send_ns.unwrap_or(0),
        acks: sending.latencies,
        send_lag: sending.send_lag,
    })
}

/// A sender's state while it posts. `cmid` n is the n-th message (1-based).
struct Sending<'a> {
    shared: &'a Shared,
    client: Conn,
    conv: ConvId,
    /// The (intended) send time of each message, by cmid - 1.
    sent_ns: Vec<u64>,
    acked: Vec<bool>,
    /// The seqs the acks gave, by seq - 1.
    seqs: Vec<bool>,
    /// The next cmid to send.
    next: u64,
    acks: u64,
    first_send_ns: Option<u64>,
    latencies: Latencies,
    send_lag: Latencies,
}

impl<'a> Sending<'a> {
    fn new(shared: &'a Shared, client: Conn, conv: ConvId) -> Sending<'a> {
        let n = usize::try_from(shared.messages).expect("--messages was checked to fit");
        Sending {
            shared,
            client,
            conv,
            sent_ns: vec![0; n],
            acked: vec![false; n],
            seqs: vec![false; n],
            next: 1,
            acks: 0,
            first_send_ns: None,
            latencies: Latencies::new(),
            send_lag: Latencies::new(),
        }
    }

    /// Keeps up to `window` sends unacknowledged.
    fn closed_loop(&mut self) -> Result<()> {
        let n = self.shared.messages;
        while self.acks < n {
            while self.next <= n && self.next - 1 - self.acks < self.shared.window {
                self.send(self.shared.now_ns())?;
            }
            self.receive(self.shared.deadline)?;
        }
        Ok(())
    }

    /// Sends on a fixed schedule whatever the acks do; each message carries
    /// and is timed from its scheduled time, so a stalled server shows as
    /// latency rather than as fewer sends (no coordinated omission). Senders
    /// are staggered evenly over one interval.
    fn open_loop(&mut self, start: Instant, rate: f64, index: usize) -> Result<()> {
        let n = self.shared.messages;
        let interval_ns = 1e9 / rate;
        let start_ns = u64::try_from((start - self.shared.epoch).as_nanos()).unwrap_or(u64::MAX);
        let offset_ns = interval_ns * index as f64 / self.shared.pairs as f64;
        while self.acks < n {
            let until = if self.next <= n {
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "a schedule offset in ns, positive and far below 2^64"
                )]
                let due_ns = start_ns + (offset_ns + interval_ns * (self.next - 1) as f64) as u64;
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
        self.client
            .send(&ClientMsg::Send {
                conv: self.conv,
                cmid: ClientMsgId(cmid),
                body: at_ns.to_string(),
            })
            .with_context(|| format!("sending message {cmid}"))?;
        self.sent_ns[index(cmid)] = at_ns;
        self.first_send_ns.get_or_insert(at_ns);
        if self.shared.rate.is_some() {
            self.send_lag
                .record_nanos(self.shared.now_ns().saturating_sub(at_ns));
        }
        self.next += 1;
        Ok(())
    }

    /// Handles what arrives until `until`: acks are timed and checked.
    fn receive(&mut self, until: Instant) -> Result<()> {
        let received = recv(&mut self.client, self.shared, until).with_context(|| {
            format!(
                "waiting for acks ({} of {} so far, {} sent)",
                self.acks,
                self.shared.messages,
                self.next - 1
            )
        });
        let Some(msg) = received? else {
            return Ok(());
        };
        match msg {
            ServerMsg::Ack {
                cmid, conv, seq, ..
            } => self.ack(cmid, conv, seq),
            ServerMsg::Error { .. } | ServerMsg::Msg(_) => {
                bail!("unexpected message while sending: {msg:?}")
            }
            _ => Ok(()),
        }
    }

    fn ack(&mut self, cmid: ClientMsgId, conv: ConvId, seq: Seq) -> Result<()> {
        let now = self.shared.now_ns();
        ensure!(
            (1..self.next).contains(&cmid.0),
            "ack for cmid {} which was never sent (seq {})",
            cmid.0,
            seq.0
        );
        ensure!(
            conv == self.conv,
            "ack for cmid {} in conv {conv}, not {}",
            cmid.0,
            self.conv
        );
        ensure!(
            !self.acked[index(cmid.0)],
            "a second ack for cmid {} (seq {})",
            cmid.0,
            seq.0
        );
        ensure!(
            (1..=self.shared.messages).contains(&seq.0),
            "ack for cmid {} has seq {}, outside 1..={}",
            cmid.0,
            seq.0,
            self.shared.messages
        );
        ensure!(!self.seqs[index(seq.0)], "two acks with seq {}", seq.0);
        self.acked[index(cmid.0)] = true;
        self.seqs[index(seq.0)] = true;
        self.acks += 1;
        self.latencies
            .record_nanos(now.saturating_sub(self.sent_ns[index(cmid.0)]));
        Ok(())
    }
}

/// The vector index of a 1-based cmid or seq already checked to be in range.
fn index(one_based: u64) -> usize {
    usize::try_from(one_based - 1).expect("checked against --messages, which fits in usize")
}

/// A receiver: reads `msg`s until it has the run's messages, timing each
/// from the send time in its body, then keeps reading briefly for extras.
pub fn receiver(
    shared: &Shared,
    events: &mpsc::Sender<Event>,
    peer: &Peer,
) -> Result<ReceiverReport> {
    let mut client = open(shared, peer)?;
    let _ = events.send(Event::Ready);
    let n = usize::try_from(shared.messages).expect("--messages was checked to fit");
    let mut report = ReceiverReport {
        got: Vec::with_capacity(n),
        last_delivery_ns: 0,
        deliveries: Latencies::new(),
        late: Latencies::new(),
    };
    while report.got.len() < n {
        let msg = recv(&mut client, shared, shared.deadline)
            .with_context(|| describe_progress(&report.got, n))?
            .context("the run's deadline passed")?;
        if delivered(&mut report, shared, msg)? && report.got.len() == n {
            report.last_delivery_ns = shared.now_ns();
            let _ = events.send(Event::ReceiverDone);
        }
    }
    let linger_until = (Instant::now() + LINGER).min(shared.deadline);
    while let Some(msg) = recv(&mut client, shared, linger_until).context("lingering")? {
        delivered(&mut report, shared, msg)?;
    }
    client.close();
    Ok(report)
}

/// Records a `msg`, timed by the phase of its send time; true if `msg`
/// was one. Fails on `error` or a body that is not a send time.
fn delivered(report: &mut ReceiverReport, shared: &Shared, msg: ServerMsg) -> Result<bool> {
    let now = shared.now_ns();
    match msg {
        ServerMsg::Msg(m) => {
            let Content::Text(body) = &m.content else {
                bail!("expected a text message, got {m:?}");
            };
            let sent_ns: u64 = body
                .parse()
                .with_context(|| format!("msg conv {} seq {}: body {body:?}", m.conv, m.seq.0))?;
            let latency = now.saturating_sub(sent_ns);
            match shared.phase_of(sent_ns) {
                0 => {}
                1 => report.deliveries.record_nanos(latency),
                _ => report.late.record_nanos(latency),
            }
            report.got.push((m.conv, m.seq));
            Ok(true)
        }
        ServerMsg::Error { .. } => bail!("unexpected message while receiving: {msg:?}"),
        _ => Ok(false),
    }
}

fn describe_progress(got: &[(ConvId, Seq)], n: usize) -> String {
    match got.last() {
        Some((conv, seq)) => format!(
            "waiting for msgs ({} of {n} received, the last conv {conv} seq {})",
            got.len(),
            seq.0
        ),
        None => format!("waiting for msgs (none of {n} received)"),
    }
}

/// The phase of a message sent at `sent_ns` when the senders started at
/// `start_ns` and phases 1 and 2 begin `phases` after it: 0 before phase 1.
fn phase_of(sent_ns: u64, start_ns: u64, phases: [Duration; 2]) -> u8 {
    let begins =
        |d: Duration| start_ns.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    match (sent_ns >= begins(phases[0]), sent_ns >= begins(phases[1])) {
        (_, true) => 2,
        (true, false) => 1,
        (false, false) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases() {
        let phases = [Duration::from_nanos(100), Duration::from_nanos(1100)];
        let start = 5_000;
        assert_eq!(phase_of(5_000, start, phases), 0);
        assert_eq!(phase_of(5_099, start, phases), 0);
        assert_eq!(phase_of(5_100, start, phases), 1);
        assert_eq!(phase_of(6_099, start, phases), 1);
        assert_eq!(phase_of(6_100, start, phases), 2);
        let no_warmup = [Duration::ZERO, Duration::from_micros(1)];
        assert_eq!(phase_of(5_000, start, no_warmup), 1);
    }
}
