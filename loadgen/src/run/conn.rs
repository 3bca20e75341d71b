//! One loadgen thread: its connections and pairs on a monoio runtime.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use protocol::{ClientMsg, ConvId, DeviceId, Encoding, RequestId, Seq, ServerMsg, UserId};

use super::ws::{self, Frame};
use super::{Plan, Scenario, Tally, wall_ns};

/// How long tokens minted for a run stay valid.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Bound on one connection's setup (connect, upgrade, welcome, sync).
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes read from a socket at a time.
const READ_BYTES: usize = 16 * 1024;

/// Violations kept per thread (the total is still counted).
const VIOLATIONS_KEPT_MAX: usize = 100;

type Shared = Rc<RefCell<Tally>>;

/// Runs thread `t` of `threads`: its share of the plan's connections.
pub fn run_thread(
    plan: &Plan,
    t: usize,
    threads: usize,
    start: Instant,
    progress: std::sync::Arc<super::Progress>,
) -> Result<Tally> {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .with_entries(4096)
        .build()?;
    let tally: Shared = Rc::new(RefCell::new(Tally::new(progress, start)?));
    let result = rt.block_on(async {
        monoio::spawn(per_second(Rc::downgrade(&tally), start));
        match plan.scenario {
            Scenario::Connect => hold_connections(plan, t, threads, start, &tally).await,
            Scenario::Chat | Scenario::Reconnect => chat(plan, t, threads, start, &tally).await,
            Scenario::Soak => soak(plan, t, threads, start, &tally).await,
            Scenario::Group => groups(plan, t, threads, start, &tally).await,
        }
    });
    drop(rt);
    result?;
    Rc::try_unwrap(tally)
        .map(RefCell::into_inner)
        .map_err(|_| anyhow::anyhow!("connection tasks outlived their thread"))
}

/// Once a second: the p99 of the send→deliver latencies of that second,
/// into the timeline and the progress line (runs as long as the thread).
async fn per_second(tally: std::rc::Weak<RefCell<Tally>>, start: Instant) {
    let mut second = 0;
    loop {
        second += 1;
        monoio::time::sleep_until((start + Duration::from_secs(second)).into()).await;
        // Weak: the thread takes the tally back when its work is done.
        let Some(tally) = tally.upgrade() else {
            return;
        };
        let mut t = tally.borrow_mut();
        if t.window_us.is_empty() {
            continue;
        }
        let p99 = t.window_us.value_at_quantile(0.99);
        t.window_us.reset();
        let index = usize::try_from(second - 1).unwrap_or(usize::MAX);
        if index >= t.timeline_p99.len() {
            t.timeline_p99.resize(index + 1, None);
        }
        t.timeline_p99[index] = Some(p99);
        t.progress.p99_us.fetch_max(p99, Relaxed);
    }
}

/// Bytes waiting to be written by a connection's writer task.
#[derive(Default)]
struct Mailbox {
    out: RefCell<Vec<u8>>,
    waker: Cell<Option<Waker>>,
    closed: Cell<bool>,
}

impl Mailbox {
    fn send(&self, msg: &ClientMsg) {
        let mut payload = Vec::new();
        Encoding::Binary.encode(msg, &mut payload);
        ws::write_frame(&mut self.out.borrow_mut(), ws::OP_BINARY, &payload);
        self.wake();
    }

    fn pong(&self, payload: &[u8]) {
        ws::write_frame(&mut self.out.borrow_mut(), ws::OP_PONG, payload);
        self.wake();
    }

    fn wake(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Waits for bytes to write; `None` once closed.
    async fn take(&self) -> Option<Vec<u8>> {
        std::future::poll_fn(|cx| {
            let bytes = std::mem::take(&mut *self.out.borrow_mut());
            if !bytes.is_empty() {
                return Poll::Ready(Some(bytes));
            }
            if self.closed.get() {
                return Poll::Ready(None);
            }
            self.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }
}

async fn writer(mut half: OwnedWriteHalf<TcpStream>, mailbox: Rc<Mailbox>) {
    while let Some(bytes) = mailbox.take().await {
        let (res, _) = half.write_all(bytes).await;
        if res.is_err() {
            return;
        }
    }
}

/// An open, synced connection: its read side and its mailbox.
struct Conn {
    reader: OwnedReadHalf<TcpStream>,
    buf: Vec<u8>,
    mailbox: Rc<Mailbox>,
    next_rid: u32,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.mailbox.closed.set(true);
        self.mailbox.wake();
    }
}

impl Conn {
    /// Connects as `user` (device 1), reads `welcome`, syncs; returns the
    /// connection and the `last_seq` of each conversation `synced` listed.
    async fn open(
        plan: &Plan,
        user: u64,
        source: std::net::Ipv4Addr,
    ) -> Result<(Conn, Vec<(ConvId, Seq)>)> {
        let (conn, last, _) = Conn::open_since(plan, user, source, Vec::new()).await?;
        Ok((conn, last))
    }

    /// Like [`Conn::open`], syncing from `since`; also returns the
    /// messages the catch-up streamed.
    async fn open_since(
        plan: &Plan,
        user: u64,
        source: std::net::Ipv4Addr,
        since: Vec<protocol::Position>,
    ) -> Result<(Conn, Vec<(ConvId, Seq)>, Vec<protocol::Message>)> {
        let token = client::mint_token(&plan.secret, UserId(user), DeviceId(1), TOKEN_TTL);
        let mut stream = ws::connect(plan.server, source)?;
        let buf = ws::upgrade(&mut stream, plan.server, &token).await?;
        let (reader, write_half) = stream.into_split();
        let mailbox = Rc::new(Mailbox::default());
        monoio::spawn(writer(write_half, mailbox.clone()));
        let mut conn = Conn {
            reader,
            buf,
            mailbox,
            next_rid: 1,
        };
        match conn.next().await? {
            Some(ServerMsg::Welcome { .. }) => {}
            other => bail!("user {user}: expected welcome, got {other:?}"),
        }
        let rid = conn.rid();
        conn.mailbox.send(&ClientMsg::Sync { rid, since });
        let mut caught_up = Vec::new();
        loop {
            match conn.next().await? {
                Some(ServerMsg::Synced { convs, .. }) => {
                    let last = convs.iter().map(|c| (c.conv, c.last_seq)).collect();
                    return Ok((conn, last, caught_up));
                }
                Some(ServerMsg::Msg(m)) => caught_up.push(m),
                Some(_) => {}
                None => bail!("user {user}: closed during sync"),
            }
        }
    }

    fn rid(&mut self) -> RequestId {
        self.next_rid += 1;
        RequestId(self.next_rid)
    }

    /// The next server message (pings answered on the way); `None` at close.
    async fn next(&mut self) -> Result<Option<ServerMsg>> {
        loop {
            while let Some(Frame { opcode, payload }) = ws::take_frame(&mut self.buf)? {
                match opcode {
                    ws::OP_BINARY => return Ok(Some(Encoding::Binary.decode_server(&payload)?)),
                    ws::OP_PING => self.mailbox.pong(&payload),
                    ws::OP_CLOSE => return Ok(None),
                    _ => {}
                }
            }
            let (res, chunk) = self.reader.read(Vec::with_capacity(READ_BYTES)).await;
            if res? == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk);
        }
    }
}

fn source(plan: &Plan, index: usize) -> std::net::Ipv4Addr {
    plan.sources[(plan.schedule_offset + index) % plan.sources.len()]
}

/// The intended start of connection `index`, by the plan's connect rate.
fn due(plan: &Plan, start: Instant, index: usize) -> Instant {
    let secs = (plan.schedule_offset + index) as f64 / plan.connect_rate.max(0.001);
    start + Duration::from_secs_f64(secs)
}

/// Opens connection `index` at its due time, timing the open from then.
async fn open_timed(
    plan: &Plan,
    start: Instant,
    index: usize,
    tally: &Shared,
) -> Option<(Conn, Vec<(ConvId, Seq)>)> {
    let at = due(plan, start, index);
    monoio::time::sleep_until(at.into()).await;
    let user = plan.first_user + index as u64;
    let opened =
        monoio::time::timeout(SETUP_TIMEOUT, Conn::open(plan, user, source(plan, index))).await;
    let mut t = tally.borrow_mut();
    match opened {
        Ok(Ok(conn)) => {
            let us = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
            let _ = t.connect_us.record(us.max(1));
            t.totals.connections_opened += 1;
            t.connected_by = t.connected_by.max(start.elapsed());
            t.progress.connections.fetch_add(1, Relaxed);
            Some(conn)
        }
        Ok(Err(e)) => {
            t.totals.connect_errors += 1;
            t.progress.errors.fetch_add(1, Relaxed);
            tracing::debug!(user, cause = %e, "connect failed");
            None
        }
        Err(_) => {
            t.totals.connect_errors += 1;
            t.progress.errors.fetch_add(1, Relaxed);
            None
        }
    }
}

/// `connect`: open this thread's connections at the plan's rate and hold
/// them (answering pings) for the run's duration after the last one.
async fn hold_connections(
    plan: &Plan,
    t: usize,
    threads: usize,
    start: Instant,
    tally: &Shared,
) -> Result<()> {
    let last_due = due(plan, start, plan.conns.saturating_sub(1));
    let until = last_due + SETUP_TIMEOUT.min(Duration::from_secs(5)) + plan.duration;
    let mut tasks = Vec::new();
    for index in (t..plan.conns).step_by(threads) {
        let (plan, tally) = (plan.clone(), tally.clone());
        tasks.push(monoio::spawn(async move {
            if let Some((mut conn, _)) = open_timed(&plan, start, index, &tally).await {
                let _ = monoio::time::timeout_at(until.into(), async {
                    while let Ok(Some(_)) = conn.next().await {}
                })
                .await;
            }
        }));
    }
    for task in tasks {
        task.await;
    }
    Ok(())
}

/// `chat`: pairs of users; see the module docs of `run`.
async fn chat(plan: &Plan, t: usize, threads: usize, start: Instant, tally: &Shared) -> Result<()> {
    let pairs = plan.conns / 2;
    let per_pair = plan.rate / pairs.max(1) as f64;
    each_unit(pairs, t, threads, tally, "pair", |pair, tally| {
        let plan = plan.clone();
        async move { run_pair(&plan, pair, per_pair, start, &tally).await }
    })
    .await
}

/// Runs units `t, t + threads, …` below `count` (this thread's pairs or
/// groups) concurrently; a unit that fails is counted and named.
async fn each_unit<F, Fut>(
    count: usize,
    t: usize,
    threads: usize,
    tally: &Shared,
    name: &'static str,
    run: F,
) -> Result<()>
where
    F: Fn(usize, Shared) -> Fut,
    Fut: std::future::Future<Output = Result<()>> + 'static,
{
    let tasks: Vec<_> = (t..count)
        .step_by(threads)
        .map(|unit| {
            let (unit_run, tally) = (run(unit, tally.clone()), tally.clone());
            monoio::spawn(async move {
                if let Err(e) = unit_run.await {
                    let mut t = tally.borrow_mut();
                    t.totals.protocol_errors += 1;
                    t.progress.errors.fetch_add(1, Relaxed);
                    keep(&mut t, format!("{name} {unit}: {e:#}"));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await;
    }
    Ok(())
}

/// `soak`: a mix — `group_share` of the connections in groups of
/// `group_size` (fan-out), the rest in pairs whose receivers keep
/// reconnecting; the message rate is split the same way.
async fn soak(plan: &Plan, t: usize, threads: usize, start: Instant, tally: &Shared) -> Result<()> {
    let size = plan.group_size.max(2);
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a share of a connection count, within 0..=conns"
    )]
    let in_groups = ((plan.conns as f64 * plan.group_share) as usize) / size * size;
    let share = in_groups as f64 / plan.conns.max(1) as f64;
    let groups_plan = Plan {
        scenario: Scenario::Group,
        conns: in_groups,
        rate: plan.rate * share,
        ..plan.clone()
    };
    let pairs_plan = Plan {
        conns: plan.conns - in_groups,
        first_user: plan.first_user + in_groups as u64,
        rate: plan.rate * (1.0 - share),
        // The pairs connect after the groups, at the same connect rate.
        schedule_offset: plan.schedule_offset + in_groups,
        ..plan.clone()
    };
    let (a, b) = monoio::join!(
        groups(&groups_plan, t, threads, start, tally),
        chat(&pairs_plan, t, threads, start, tally)
    );
    a.and(b)
}

/// `group`: whole groups per thread (a group's members share its state).
async fn groups(
    plan: &Plan,
    t: usize,
    threads: usize,
    start: Instant,
    tally: &Shared,
) -> Result<()> {
    let size = plan.group_size.max(2);
    let groups = plan.conns / size;
    let per_group = plan.rate / groups.max(1) as f64;
    each_unit(groups, t, threads, tally, "group", |g, tally| {
        let plan = plan.clone();
        async move { run_group(&plan, g * size, size, per_group, start, &tally).await }
    })
    .await
}

/// Users per `group_create` or `group_add` (the protocol's bound).
const GROUP_OP_USERS: usize = protocol::limits::GROUP_OP_USERS_MAX;

/// A group's connections once it is set up: its receiving members, its
/// sender, the group's id and its last seq (the setup's events).
struct GroupUp {
    members: Vec<Conn>,
    sender: Conn,
    conv: ConvId,
    base: u64,
}

/// Members `first+1..first+size` connect and sync; member `first` creates
/// the group with them (`group_create`, then `group_add` in chunks).
async fn setup_group(
    plan: &Plan,
    first: usize,
    size: usize,
    start: Instant,
    tally: &Shared,
) -> Result<Option<GroupUp>> {
    let mut members = Vec::new();
    for index in first + 1..first + size {
        if let Some((conn, _)) = open_timed(plan, start, index, tally).await {
            members.push(conn);
        }
    }
    let Some((mut sender, _)) = open_timed(plan, start, first, tally).await else {
        return Ok(None);
    };
    let users: Vec<UserId> = (first + 1..first + size)
        .map(|i| UserId(plan.first_user + i as u64))
        .collect();
    let mut chunks = users.chunks(GROUP_OP_USERS);
    let head = chunks.next().unwrap_or(&[]).to_vec();
    let (conv, mut base) = group_request(&mut sender, |rid| ClientMsg::GroupCreate {
        rid,
        title: format!("loadgen {first}"),
        members: head,
    })
    .await?;
    for chunk in chunks {
        let users = chunk.to_vec();
        (_, base) =
            group_request(&mut sender, |rid| ClientMsg::GroupAdd { rid, conv, users }).await?;
    }
    Ok(Some(GroupUp {
        members,
        sender,
        conv,
        base,
    }))
}

/// One group: set up, then the sender posts while every member receives.
async fn run_group(
    plan: &Plan,
    first: usize,
    size: usize,
    rate: f64,
    start: Instant,
    tally: &Shared,
) -> Result<()> {
    let Some(GroupUp {
        members,
        sender,
        conv,
        base,
    }) = setup_group(plan, first, size, start, tally).await?
    else {
        return Ok(());
    };
    let load_start = Instant::now();
    let stop = load_start + plan.duration;
    let deadline = stop + plan.drain;
    let acks = Rc::new(Acks::default());
    let mailbox = sender.mailbox.clone();
    let reading_acks = monoio::spawn(read_acks(sender, acks.clone(), tally.clone(), deadline));
    let receiving: Vec<_> = members
        .into_iter()
        .map(|conn| {
            acks.receivers.borrow_mut().push(conn.mailbox.clone());
            monoio::spawn(receive(Receiving {
                conn,
                conv,
                last: base,
                acks: acks.clone(),
                deadline,
                tally: tally.clone(),
                reconnect: None,
            }))
        })
        .collect();
    let schedule = Schedule {
        conv,
        rate,
        ramp: plan.ramp,
        payload: plan.payload,
        load_start,
        stop,
    };
    send_and_settle(&schedule, &mailbox, &acks, tally, reading_acks).await;
    let acked = acks.max_seq.get();
    for (i, r) in receiving.into_iter().enumerate() {
        let in_order = r.await;
        let mut t = tally.borrow_mut();
        t.checked += acked.saturating_sub(base);
        if in_order < acked {
            keep(
                &mut t,
                format!("group {first} member {i}: acked up to {acked}, held {in_order}"),
            );
        }
    }
    Ok(())
}

/// Sends a group request and waits for its `conv` answer: the group's id
/// and last seq.
async fn group_request(
    conn: &mut Conn,
    make: impl FnOnce(RequestId) -> ClientMsg,
) -> Result<(ConvId, u64)> {
    let rid = conn.rid();
    conn.mailbox.send(&make(rid));
    loop {
        match conn.next().await? {
            Some(ServerMsg::Conv { rid: r, conv }) if r == rid => {
                return Ok((conv.conv, conv.last_seq.0));
            }
            Some(ServerMsg::Error {
                rid: Some(r),
                message,
                ..
            }) if r == rid => bail!("group request refused: {message}"),
            Some(_) => {}
            None => bail!("closed before the group request was answered"),
        }
    }
}

/// Whether `pair`'s receiver drops and reconnects: in a `reconnect` run
/// the first `reconnect_share` of the pairs, in a `soak` run all.
fn reconnects(plan: &Plan, pair: usize) -> bool {
    let pairs = plan.conns / 2;
    match plan.scenario {
        Scenario::Reconnect => (pair as f64) < plan.reconnect_share * pairs as f64,
        Scenario::Soak => true,
        _ => false,
    }
}

/// When `pair`'s receiver drops: once at `reconnect_at` of a `reconnect`
/// run; in a `soak` run every `reconnect_every`, each pair at its own
/// phase so the reconnects spread over time.
fn reconnect_times(plan: &Plan, pair: usize, load_start: Instant) -> Vec<Instant> {
    if plan.scenario != Scenario::Soak {
        return vec![load_start + plan.duration.mul_f64(plan.reconnect_at)];
    }
    let every = plan.reconnect_every.max(Duration::from_secs(1));
    let phase = every.mul_f64((pair % 97) as f64 / 97.0);
    let stop = load_start + plan.duration;
    let mut times = Vec::new();
    let mut at = load_start + phase + every;
    while at < stop {
        times.push(at);
        at += every;
    }
    times
}

fn keep(t: &mut Tally, violation: String) {
    if t.violations.len() < VIOLATIONS_KEPT_MAX {
        t.violations.push(violation);
    }
}

/// A request the server answers at once (`ok`) and that changes nothing:
/// its reply wakes a connection's reader.
const NOOP: ClientMsg = ClientMsg::PresenceSubscribe {
    rid: RequestId(0),
    users: Vec::new(),
};

/// The sender's side of a pair, shared by its send loop and ack reader.
#[derive(Default)]
struct Acks {
    /// Sends posted, and answered (acked or refused).
    sent: Cell<u64>,
    answered: Cell<u64>,
    /// The send loop has finished.
    done: Cell<bool>,
    /// The highest acked seq.
    max_seq: Cell<u64>,
    /// The receivers' mailboxes: once every send is answered, each gets a
    /// request whose reply wakes its reader to see that (a read cannot be
    /// cancelled without risking the bytes it took).
    receivers: RefCell<Vec<Rc<Mailbox>>>,
}

impl Acks {
    fn settled(&self) -> bool {
        self.done.get() && self.answered.get() == self.sent.get()
    }

    /// Wakes every receiver's reader with a no-op request (an empty
    /// `presence_subscribe`, answered by `ok`).
    fn poke_receivers(&self) {
        for m in self.receivers.borrow().iter() {
            m.send(&NOOP);
        }
    }
}

async fn run_pair(
    plan: &Plan,
    pair: usize,
    rate: f64,
    start: Instant,
    tally: &Shared,
) -> Result<()> {
    let Some((receiver, synced)) = open_timed(plan, start, 2 * pair + 1, tally).await else {
        return Ok(());
    };
    let Some((mut sender, _)) = open_timed(plan, start, 2 * pair, tally).await else {
        return Ok(());
    };
    let peer = UserId(plan.first_user + 2 * pair as u64 + 1);
    let rid = sender.rid();
    sender
        .mailbox
        .send(&ClientMsg::DirectOpen { rid, user: peer });
    let conv = loop {
        match sender.next().await? {
            Some(ServerMsg::Conv { conv, .. }) => break conv.conv,
            Some(ServerMsg::Error { message, .. }) => bail!("direct_open refused: {message}"),
            Some(_) => {}
            None => bail!("sender closed before direct_open answered"),
        }
    };
    let base = synced
        .iter()
        .find(|(c, _)| *c == conv)
        .map_or(0, |(_, s)| s.0);
    let load_start = Instant::now();
    let stop = load_start + plan.duration;
    let deadline = stop + plan.drain;
    let acks = Rc::new(Acks::default());
    let mailbox = sender.mailbox.clone();
    let reading_acks = monoio::spawn(read_acks(sender, acks.clone(), tally.clone(), deadline));
    acks.receivers.borrow_mut().push(receiver.mailbox.clone());
    let receiving = monoio::spawn(receive(Receiving {
        conn: receiver,
        conv,
        last: base,
        acks: acks.clone(),
        deadline,
        tally: tally.clone(),
        reconnect: reconnects(plan, pair).then(|| Reconnect {
            at: reconnect_times(plan, pair, load_start),
            down: plan.down,
            plan: plan.clone(),
            user: peer.0,
            source: source(plan, 2 * pair + 1),
        }),
    }));
    let schedule = Schedule {
        conv,
        rate,
        ramp: plan.ramp,
        payload: plan.payload,
        load_start,
        stop,
    };
    send_and_settle(&schedule, &mailbox, &acks, tally, reading_acks).await;
    let held = receiving.await;
    let acked = acks.max_seq.get();
    let mut t = tally.borrow_mut();
    t.checked += acked.saturating_sub(base);
    if held < acked {
        keep(
            &mut t,
            format!("pair {pair}: acked up to seq {acked}, delivered in order up to {held}"),
        );
    }
    Ok(())
}

struct Schedule {
    conv: ConvId,
    rate: f64,
    /// The rate ramps up linearly over this long.
    ramp: Duration,
    payload: usize,
    load_start: Instant,
    stop: Instant,
}

/// Sends on the schedule, then waits for the ack reader to see every send
/// answered (or its deadline).
async fn send_and_settle(
    schedule: &Schedule,
    mailbox: &Mailbox,
    acks: &Acks,
    tally: &Shared,
    reading_acks: monoio::task::JoinHandle<()>,
) {
    send_loop(mailbox, schedule, acks, tally).await;
    acks.done.set(true);
    // Its reply wakes the ack reader to see the sends are done.
    mailbox.send(&NOOP);
    reading_acks.await;
}

/// Posts at the schedule's open-loop rate until it stops. The cmid is the
/// intended send time (wall-clock ns), so acks and deliveries are timed
/// from the schedule, not from when the send actually went out.
async fn send_loop(mailbox: &Mailbox, s: &Schedule, acks: &Acks, tally: &Shared) {
    if s.rate <= 0.0 {
        return;
    }
    let interval = Duration::from_secs_f64(1.0 / s.rate);
    let wall_start = wall_ns();
    let mut next = s.load_start;
    while next < s.stop {
        monoio::time::sleep_until(next.into()).await;
        let intended = wall_start + u64::try_from((next - s.load_start).as_nanos()).unwrap_or(0);
        let mut body = intended.to_string();
        body.push(' ');
        while body.len() < s.payload {
            body.push('x');
        }
        mailbox.send(&ClientMsg::Send {
            conv: s.conv,
            cmid: protocol::ClientMsgId(intended),
            body,
        });
        acks.sent.set(acks.sent.get() + 1);
        let mut t = tally.borrow_mut();
        t.totals.sent += 1;
        t.progress.sent.fetch_add(1, Relaxed);
        tick(&mut t, 0);
        next += ramped(interval, next - s.load_start, s.ramp);
    }
}

/// The gap to the next send at `elapsed` into the load: `interval`, or
/// longer while the rate ramps up linearly over `ramp` (from 2% of it).
fn ramped(interval: Duration, elapsed: Duration, ramp: Duration) -> Duration {
    if elapsed >= ramp {
        return interval;
    }
    let share = (elapsed.as_secs_f64() / ramp.as_secs_f64()).max(0.02);
    interval.div_f64(share)
}

/// Counts one send (`which` 0) or delivery (1) in the second it happened.
fn tick(t: &mut Tally, which: usize) {
    let second = usize::try_from(t.run_start.elapsed().as_secs()).unwrap_or(usize::MAX);
    if second >= t.timeline.len() {
        t.timeline.resize(second + 1, (0, 0));
    }
    if which == 0 {
        t.timeline[second].0 += 1;
    } else {
        t.timeline[second].1 += 1;
    }
}

fn micros_since(ns: u64) -> u64 {
    (wall_ns().saturating_sub(ns) / 1_000).max(1)
}

/// Reads the sender's acks until every send is answered or the deadline.
async fn read_acks(conn: Conn, acks: Rc<Acks>, tally: Shared, deadline: Instant) {
    read_acks_until_settled(conn, &acks, &tally, deadline).await;
    acks.poke_receivers();
}

async fn read_acks_until_settled(mut conn: Conn, acks: &Acks, tally: &Shared, deadline: Instant) {
    let _ = monoio::time::timeout_at(deadline.into(), async {
        while !acks.settled() {
            let Ok(Some(msg)) = conn.next().await else {
                return;
            };
            let mut t = tally.borrow_mut();
            match msg {
                ServerMsg::Ack { cmid, seq, .. } => {
                    let _ = t.send_ack_us.record(micros_since(cmid.0));
                    t.totals.acked += 1;
                    acks.max_seq.set(acks.max_seq.get().max(seq.0));
                    acks.answered.set(acks.answered.get() + 1);
                }
                ServerMsg::Error { cmid: Some(_), .. } => {
                    t.totals.send_errors += 1;
                    t.progress.errors.fetch_add(1, Relaxed);
                    acks.answered.set(acks.answered.get() + 1);
                }
                _ => {}
            }
        }
    })
    .await;
}

struct Receiving {
    conn: Conn,
    conv: ConvId,
    /// The highest seq held without a gap.
    last: u64,
    acks: Rc<Acks>,
    deadline: Instant,
    tally: Shared,
    /// `reconnect`: when to drop the connection, and the way back.
    reconnect: Option<Reconnect>,
}

struct Reconnect {
    /// When to drop, in order.
    at: Vec<Instant>,
    down: Duration,
    plan: Plan,
    user: u64,
    source: std::net::Ipv4Addr,
}

/// Reads the receiver's messages, checking seq order, until it holds
/// everything acked or the deadline; returns the highest seq held in
/// order. A receiver that reconnects drops its connection at its time,
/// stays away, reconnects with `sync` from what it holds (timing the
/// catch-up) and goes on.
async fn receive(mut r: Receiving) -> u64 {
    if let Some(re) = r.reconnect.take() {
        for &at in &re.at {
            // Cutting a read short here is safe: the connection is dropped
            // and the catch-up starts from the last seq held.
            let _ = monoio::time::timeout_at(at.into(), read_live(&mut r, false)).await;
            if let Err(e) = reconnect(&mut r, &re).await {
                let mut t = r.tally.borrow_mut();
                t.totals.protocol_errors += 1;
                t.progress.errors.fetch_add(1, Relaxed);
                keep(&mut t, format!("user {}: reconnect failed: {e:#}", re.user));
                return r.last;
            }
        }
    }
    let _ = monoio::time::timeout_at(r.deadline.into(), read_live(&mut r, true)).await;
    r.last
}

/// Drops the connection, waits, reconnects and takes the catch-up.
async fn reconnect(r: &mut Receiving, re: &Reconnect) -> Result<()> {
    let since = vec![protocol::Position {
        conv: r.conv,
        seq: Seq(r.last),
    }];
    monoio::time::sleep(re.down).await;
    let began = Instant::now();
    let (conn, _, caught_up) = Conn::open_since(&re.plan, re.user, re.source, since).await?;
    // The old connection closes as it is replaced.
    r.acks.receivers.borrow_mut().push(conn.mailbox.clone());
    r.conn = conn;
    let us = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
    let _ = r.tally.borrow_mut().catch_up_us.record(us.max(1));
    for m in caught_up {
        take(r, &m, false);
    }
    Ok(())
}

/// Reads live messages; with `until_settled`, stops once everything acked
/// is held. Ends at a closed connection.
async fn read_live(r: &mut Receiving, until_settled: bool) {
    loop {
        if until_settled && r.acks.settled() && r.last >= r.acks.max_seq.get() {
            return;
        }
        match r.conn.next().await {
            Ok(Some(ServerMsg::Msg(m))) => take(r, &m, true),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
}

/// Audits and counts one message; `live` ones are timed send→deliver.
fn take(r: &mut Receiving, m: &protocol::Message, live: bool) {
    if m.conv != r.conv || m.seq.0 <= r.last {
        return; // another conversation, or a duplicate (dropped)
    }
    let mut t = r.tally.borrow_mut();
    if m.seq.0 != r.last + 1 {
        let gap = format!("conv {}: got seq {} after {}", r.conv, m.seq, r.last);
        keep(&mut t, gap);
    }
    r.last = m.seq.0;
    t.totals.delivered += 1;
    t.progress.delivered.fetch_add(1, Relaxed);
    tick(&mut t, 1);
    if live
        && let protocol::Content::Text(body) = &m.content
        && let Some(Ok(ns)) = body.split(' ').next().map(str::parse::<u64>)
    {
        let us = micros_since(ns);
        let _ = t.send_deliver_us.record(us);
        let _ = t.window_us.record(us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_ramps_up_linearly() {
        let (ms, s) = (Duration::from_millis(1), Duration::from_secs(1));
        assert_eq!(ramped(ms, Duration::ZERO, Duration::ZERO), ms, "no ramp");
        assert_eq!(ramped(ms, 10 * s, 10 * s), ms, "ramp over");
        assert_eq!(ramped(ms, 5 * s, 10 * s), 2 * ms, "half way: half the rate");
        assert_eq!(ramped(ms, Duration::ZERO, 10 * s), 50 * ms, "from 2% of it");
    }
}
