//! `chatbench group`: group fan-out, and what it does to unrelated 1:1
//! traffic.
//!
//! One member creates a group of `--members` (`setup.rs`); `--online` of
//! the others connect a device and `sync` (`members.rs`, `member.rs`: a few
//! threads, each an epoll loop over many non-blocking sockets); `--pairs`
//! pairs of other users connect as in `chatbench pairs` (`pairs.rs`,
//! `peer.rs`, open loop at `--pair-rate`). After a `--warmup`, phase 1
//! runs the pairs alone for `--seconds`; phase 2 runs them on while the
//! group's creator posts at `--group-rate` (`sender.rs`, open loop). Every online member must get
//! every group message exactly once, in seq order; `fanout.rs` turns their
//! arrival times into send→last-member and send→median-member latencies.
//! `report.rs` prints the result.

#[path = "group/fanout.rs"]
mod fanout;
#[path = "group/member.rs"]
mod member;
#[path = "group/members.rs"]
mod members;
#[path = "group/report.rs"]
mod report;
#[path = "group/sender.rs"]
mod sender;
#[path = "group/setup.rs"]
mod setup;

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use protocol::Encoding;
use protocol::limits::GROUP_MEMBERS_MAX;

use crate::idle::CONNS_MAX;
use crate::pairs::peer::{Event, ReceiverReport, SenderReport, Shared};
use crate::pairs::{self, Handles, PAIRS_MAX};
use crate::server::{self, Server};
use crate::stats::Latencies;
use members::{Board, Members};
use report::{Outcome, Phase};
use sender::GroupSent;

/// Descriptors the client keeps for itself besides the connections.
const FDS_RESERVED: u64 = 100;

/// Deliveries the client keeps a time for (16 bytes each), at most.
const DELIVERIES_MAX: u64 = 50_000_000;

/// How long the main thread waits for news before it checks every thread.
const STEP: Duration = Duration::from_millis(20);

/// After the group's last ack, how long the online members have to get
/// every group message.
const DRAIN_MAX: Duration = Duration::from_secs(30);

/// How long members keep reading after the last expected delivery, to
/// catch duplicates.
const LINGER: Duration = Duration::from_millis(300);

#[derive(Debug, Clone)]
pub struct GroupOptions {
    /// Group size, the creator (who also sends) included.
    pub members: usize,
    /// Members other than the sender with a connected, synced device.
    pub online: usize,
    pub pairs: usize,
    /// Messages per second per pair sender.
    pub pair_rate: f64,
    /// Group messages per second.
    pub group_rate: f64,
    /// Pair traffic before phase 1, not measured.
    pub warmup: Duration,
    /// Length of each phase.
    pub phase: Duration,
    /// Threads driving the online members' connections.
    pub threads: usize,
    /// Bound on each member's connect, upgrade, welcome and sync.
    pub connect_timeout: Duration,
    /// Bound on the whole run.
    pub timeout: Duration,
}

impl GroupOptions {
    /// Messages the group's sender posts in phase 2.
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "checked positive; far below 2^64"
    )]
    fn group_messages(&self) -> u64 {
        (self.group_rate * self.phase.as_secs_f64()).round() as u64
    }

    /// Messages each pair's sender posts: warm-up and both phases.
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "checked positive; far below 2^64"
    )]
    fn pair_messages(&self) -> u64 {
        let seconds = (self.warmup + 2 * self.phase).as_secs_f64();
        (self.pair_rate * seconds).ceil() as u64
    }

    /// When phases 1 and 2 begin, after the start.
    fn phase_starts(&self) -> [Duration; 2] {
        [self.warmup, self.warmup + self.phase]
    }

    /// Sockets the client holds: the online members, the pairs, the sender.
    fn connections(&self) -> usize {
        self.online + 2 * self.pairs + 1
    }

    /// The indexes of the online members (member 0 is the creator): the
    /// last ones added, which have the fewest group events to catch up on.
    fn online_members(&self) -> Range<usize> {
        self.members - self.online..self.members
    }
}

pub fn check_options(options: &GroupOptions) -> Result<()> {
    ensure!(
        (2..=GROUP_MEMBERS_MAX).contains(&options.members),
        "--members must be 2 to {GROUP_MEMBERS_MAX} (the protocol's group size limit), \
         the sender included"
    );
    ensure!(
        (1..options.members).contains(&options.online),
        "--online must be 1 to {} (--members less the sender, which is connected anyway)",
        options.members - 1
    );
    ensure!(
        (1..=PAIRS_MAX).contains(&options.pairs),
        "--pairs must be 1 to {PAIRS_MAX} (one thread per connection)"
    );
    for (flag, rate) in [
        ("--pair-rate", options.pair_rate),
        ("--group-rate", options.group_rate),
    ] {
        ensure!(
            rate.is_finite() && rate > 0.0,
            "{flag} must be a positive number of messages per second"
        );
    }
    ensure!(!options.phase.is_zero(), "--seconds must be positive");
    ensure!(
        options.timeout > options.phase_starts()[1] + options.phase,
        "--timeout ({:?}) must exceed --warmup + 2 x --seconds ({:?}): it bounds the whole run",
        options.timeout,
        options.phase_starts()[1] + options.phase
    );
    let group_messages = options.group_messages();
    ensure!(
        group_messages >= 1,
        "--group-rate x --seconds must come to at least one group message"
    );
    ensure!(
        group_messages.saturating_mul(options.online as u64) <= DELIVERIES_MAX,
        "--online x --group-rate x --seconds is over {DELIVERIES_MAX} deliveries, whose \
         times the client keeps in memory"
    );
    ensure!(options.threads >= 1, "--threads must be at least 1");
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    check_fds(options, limit)
}

/// The client holds every connection, and a process may hold at most
/// 20,000 open files on this machine (MEASURED.md).
fn check_fds(options: &GroupOptions, limit: Option<u64>) -> Result<()> {
    let connections = options.connections();
    let what = format!(
        "{connections} connections (--online {} + 2 x --pairs {} + the group's sender)",
        options.online, options.pairs
    );
    ensure!(
        connections <= CONNS_MAX,
        "{what} are more than the {CONNS_MAX} one chatbench process may hold: this machine \
         caps open files at 20,000 per process (MEASURED.md). Lower --online or --pairs"
    );
    if let Some(limit) = limit {
        let needed = connections as u64 + FDS_RESERVED;
        ensure!(
            needed <= limit,
            "{what} need {needed} open files but `ulimit -n` is {limit}"
        );
    }
    Ok(())
}

/// The threads of a run, joined at its end whatever happened.
#[derive(Debug, Default)]
struct Threads {
    sender: Option<JoinHandle<Result<GroupSent>>>,
    members: Option<Members>,
    senders: Handles<SenderReport>,
    receivers: Handles<ReceiverReport>,
}

/// What `drive` measured while the threads ran.
#[derive(Debug)]
struct Measured {
    connect: Duration,
    sent: GroupSent,
    phases: [Phase; 2],
}

pub fn run(server: &mut Server, options: &GroupOptions) -> Result<()> {
    let shared = Arc::new(new_shared(server, options));
    eprintln!("chatbench: creating a group of {} members", options.members);
    let started = Instant::now();
    let (creator, group) = setup::create_group(server, &shared, options)?;
    let setup_time = started.elapsed();
    let mut threads = Threads::default();
    let measured = drive(server, &shared, options, group, creator, &mut threads);
    if measured.is_err() {
        shared.abort.store(true, Ordering::Relaxed);
    } else {
        std::thread::sleep(LINGER);
    }
    let members = threads.members.take().map(Members::stop);
    if let Some(handle) = threads.sender.take() {
        let _ = handle.join();
    }
    let (senders, receivers) = (pairs::join(threads.senders), pairs::join(threads.receivers));
    let (measured, members, senders, receivers) = match (measured, members, senders, receivers) {
        (Ok(m), Some(Ok(members)), Ok(s), Ok(r)) => (m, members, s, r),
        (measured, members, s, r) => {
            server.check_alive()?;
            let mut failures = s.err().unwrap_or_default();
            failures.extend(r.err().unwrap_or_default());
            failures.extend(members.and_then(Result::err));
            return Err(pairs::failure(measured.err(), &failures));
        }
    };
    server.check_alive()?;
    let outcome = verify(
        options, group, setup_time, measured, &members, &senders, &receivers,
    )?;
    report::print(server, options, &outcome);
    Ok(())
}

fn new_shared(server: &Server, options: &GroupOptions) -> Shared {
    let now = Instant::now();
    Shared {
        addr: server.addr(),
        encoding: Encoding::Binary,
        epoch: now,
        deadline: now + options.timeout,
        timeout: options.timeout,
        pairs: options.pairs,
        messages: options.pair_messages(),
        window: 1,
        rate: Some(options.pair_rate),
        phases: Some(options.phase_starts()),
        abort: AtomicBool::new(false),
        start: Mutex::new(None),
        started: Condvar::new(),
    }
}

/// Starts the group's sender, connects the members, then the pairs, and
/// runs the two phases. Every thread it starts is in `threads`.
fn drive(
    server: &mut Server,
    shared: &Arc<Shared>,
    options: &GroupOptions,
    group: setup::Group,
    creator: crate::conn::Conn,
    threads: &mut Threads,
) -> Result<Measured> {
    let plan = sender::Plan {
        conv: group.conv,
        base: group.base,
        count: options.group_messages(),
        rate: options.group_rate,
        offset: options.phase_starts()[1],
    };
    threads.sender = Some(sender::spawn(shared.clone(), creator, plan)?);
    eprintln!(
        "chatbench: connecting {} online members on {} threads",
        options.online, options.threads
    );
    let members = threads
        .members
        .insert(members::start(server, shared, group, options)?);
    let connect = members.wait_ready(server, shared)?;
    eprintln!(
        "chatbench: {} members synced in {:.2} s; connecting {} pairs",
        options.online,
        connect.as_secs_f64(),
        options.pairs
    );
    let (events_tx, events) = mpsc::channel();
    let (senders, receivers) = pairs::spawn(server, shared, &events_tx)?;
    (threads.senders, threads.receivers) = (senders, receivers);
    drop(events_tx);
    pairs::wait_for(
        &events,
        shared,
        "the pairs' connections to be ready",
        2 * options.pairs,
        |e| matches!(e, Event::Ready),
    )?;
    let (phases, sent) = phases(server, shared, &events, threads, options)?;
    Ok(Measured {
        connect,
        sent,
        phases,
    })
}

/// CPU times at one moment.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    server: Duration,
    client: Duration,
}

impl Sample {
    fn take(server: &Server) -> Result<Sample> {
        Ok(Sample {
            at: Instant::now(),
            server: server.cpu_time()?,
            client: server::cpu_time("self")?,
        })
    }

    fn until(self, later: Sample) -> Phase {
        Phase {
            wall: later.at - self.at,
            server_cpu: later.server.saturating_sub(self.server),
            client_cpu: later.client.saturating_sub(self.client),
        }
    }
}

/// Starts the pairs, waits out the warm-up and phase 1, then waits until
/// every pair message and every group message is delivered (phase 2).
fn phases(
    server: &mut Server,
    shared: &Shared,
    events: &mpsc::Receiver<Event>,
    threads: &mut Threads,
    options: &GroupOptions,
) -> Result<([Phase; 2], GroupSent)> {
    server.check_alive()?;
    eprintln!("chatbench: warm-up, the pairs alone, {:?}", options.warmup);
    shared.open_gate();
    let start = shared.instant_at(shared.start_ns().context("the gate is open")?);
    let [phase1, phase2] = options.phase_starts().map(|d| start + d);
    let mut waiter = Waiter {
        shared,
        events,
        threads,
        pairs_left: 2 * options.pairs,
        sent: None,
        drain_until: None,
        online: options.online,
    };
    while Instant::now() < phase1 {
        waiter.step()?;
    }
    let first = Sample::take(server)?;
    eprintln!("chatbench: phase 1, the pairs alone, {:?}", options.phase);
    while Instant::now() < phase2 {
        waiter.step()?;
    }
    let middle = Sample::take(server)?;
    eprintln!(
        "chatbench: phase 2, the pairs and {} group messages at {} msg/s",
        options.group_messages(),
        options.group_rate
    );
    while !waiter.done() {
        waiter.step()?;
    }
    let last = Sample::take(server)?;
    server.check_alive()?;
    let sent = waiter.sent.take().context("the group's sender is done")?;
    Ok(([first.until(middle), middle.until(last)], sent))
}

/// Watches every thread of the running phases.
struct Waiter<'a> {
    shared: &'a Shared,
    events: &'a mpsc::Receiver<Event>,
    threads: &'a mut Threads,
    /// Pair connections that have not finished.
    pairs_left: usize,
    /// The group's sender's result, once it has every ack.
    sent: Option<GroupSent>,
    /// When the members must have every group message.
    drain_until: Option<Instant>,
    online: usize,
}

impl Waiter<'_> {
    fn board(&self) -> &Board {
        self.threads
            .members
            .as_ref()
            .expect("the members are connected before the phases")
            .board()
    }

    fn done(&self) -> bool {
        self.pairs_left == 0 && self.sent.is_some() && self.board().completed() == self.online
    }

    /// Waits up to [`STEP`] for news from the pairs, then checks the
    /// members and the group's sender. Fails on the first failure.
    fn step(&mut self) -> Result<()> {
        match self.events.recv_timeout(STEP) {
            Ok(Event::Failed(why)) => bail!("{why}"),
            Ok(Event::SenderDone | Event::ReceiverDone) => {
                self.pairs_left = self.pairs_left.saturating_sub(1);
            }
            Ok(Event::Ready) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                ensure!(
                    self.pairs_left == 0,
                    "every pair thread ended with {} of them unfinished",
                    self.pairs_left
                );
                std::thread::sleep(STEP);
            }
        }
        self.board().check()?;
        if self.sent.is_none()
            && let Some(handle) = self.threads.sender.take_if(|h| h.is_finished())
        {
            let sent = handle
                .join()
                .unwrap_or_else(|_| Err(anyhow!("the group's sender panicked")))?;
            self.board().expect(sent.sent_ns.len() as u64);
            self.drain_until = Some(Instant::now() + DRAIN_MAX);
            self.sent = Some(sent);
        }
        let now = Instant::now();
        self.shared.check(now)?;
        if let Some(until) = self.drain_until
            && now >= until
            && self.board().completed() < self.online
        {
            bail!(
                "{DRAIN_MAX:?} after the group's last ack, only {} of {} online members had \
                 every group message",
                self.board().completed(),
                self.online
            );
        }
        Ok(())
    }
}

/// Checks every delivery and merges the measurements.
fn verify(
    options: &GroupOptions,
    group: setup::Group,
    setup_time: Duration,
    measured: Measured,
    members: &[member::MemberReport],
    senders: &[SenderReport],
    receivers: &[ReceiverReport],
) -> Result<Outcome> {
    let count = measured.sent.sent_ns.len() as u64;
    let problems: Vec<String> = members
        .iter()
        .filter_map(|m| {
            let check = fanout::check_member(&m.got, group.base, count).and_then(|()| {
                m.first_stray.as_ref().map_or(Ok(()), |s| {
                    Err(format!("{} stray messages, the first {s}", m.strays))
                })
            });
            check
                .err()
                .map(|why| format!("member user {}: {why}", m.user))
        })
        .collect();
    if !problems.is_empty() {
        bail!(
            "group delivery check failed for {} of {} online members:\n  {}",
            problems.len(),
            members.len(),
            problems[..problems.len().min(10)].join("\n  ")
        );
    }
    let got: Vec<&[(u64, u64)]> = members.iter().map(|m| m.got.as_slice()).collect();
    let fan = fanout::fan_out(&measured.sent.sent_ns, &got);
    let pairs = verify_pairs(options, senders, receivers)?;
    Ok(Outcome {
        base: group.base,
        setup: setup_time,
        connect: measured.connect,
        catch_up: fanout::catch_up(members, group.base),
        sent: measured.sent,
        fan,
        pairs,
        phases: measured.phases,
    })
}

/// Every pair receiver must have got exactly its sender's messages.
fn verify_pairs(
    options: &GroupOptions,
    senders: &[SenderReport],
    receivers: &[ReceiverReport],
) -> Result<report::Pairs> {
    let mut pairs = report::Pairs {
        phase1: Latencies::new(),
        phase2: Latencies::new(),
        send_lag: Latencies::new(),
        delivered: 0,
    };
    let mut problems = Vec::new();
    for (i, (s, r)) in senders.iter().zip(receivers).enumerate() {
        if let Err(why) = pairs::check_stream(s.conv, &r.got, options.pair_messages()) {
            problems.push(format!("pair {i}: {why}"));
        }
        pairs.delivered += r.got.len() as u64;
        pairs.phase1.merge(&r.deliveries)?;
        pairs.phase2.merge(&r.late)?;
        pairs.send_lag.merge(&s.send_lag)?;
    }
    ensure!(
        problems.is_empty(),
        "delivery check failed for {} of {} pairs:\n  {}",
        problems.len(),
        options.pairs,
        problems[..problems.len().min(10)].join("\n  ")
    );
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> GroupOptions {
        GroupOptions {
            members: 10_000,
            online: 5_000,
            pairs: 100,
            pair_rate: 20.0,
            group_rate: 10.0,
            warmup: Duration::from_secs(1),
            phase: Duration::from_secs(10),
            threads: 2,
            connect_timeout: Duration::from_secs(30),
            timeout: Duration::from_secs(300),
        }
    }

    #[test]
    fn derived_counts() {
        let o = options();
        assert_eq!(o.group_messages(), 100);
        assert_eq!(o.pair_messages(), 420);
        assert_eq!(
            o.phase_starts(),
            [Duration::from_secs(1), Duration::from_secs(11)]
        );
        assert_eq!(o.connections(), 5_201);
        assert_eq!(o.online_members(), 5_000..10_000);
        let odd = GroupOptions {
            pair_rate: 0.3,
            group_rate: 0.26,
            ..o
        };
        assert_eq!(odd.group_messages(), 3);
        assert_eq!(odd.pair_messages(), 7);
    }

    #[test]
    fn option_bounds() {
        assert!(check_fds(&options(), Some(20_000)).is_ok());
        let many = GroupOptions {
            members: 30_000,
            online: 18_900,
            ..options()
        };
        let err = format!("{:#}", check_fds(&many, Some(20_000)).unwrap_err());
        assert!(err.contains("19101 connections"), "{err}");
        assert!(err.contains("Lower --online or --pairs"), "{err}");
        let low_limit = format!("{:#}", check_fds(&options(), Some(4_096)).unwrap_err());
        assert!(low_limit.contains("`ulimit -n` is 4096"), "{low_limit}");
        let all_online = GroupOptions {
            online: 10_000,
            ..options()
        };
        assert!(check_options(&all_online).is_err());
        let no_messages = GroupOptions {
            group_rate: 0.01,
            ..options()
        };
        assert!(check_options(&no_messages).is_err());
        let short = GroupOptions {
            timeout: Duration::from_secs(21),
            ..options()
        };
        let err = format!("{:#}", check_options(&short).unwrap_err());
        assert!(
            err.contains("must exceed --warmup + 2 x --seconds (21s)"),
            "{err}"
        );
        let too_big = GroupOptions {
            members: GROUP_MEMBERS_MAX + 1,
            ..options()
        };
        assert!(check_options(&too_big).is_err());
    }
}
