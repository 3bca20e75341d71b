//! Generating load: threads that each run a monoio runtime with a slice of
//! the connections, and what every connection does.
//!
//! - `connect`: open connections at a controlled rate (each: TCP connect
//!   from a source address, upgrade, `welcome`, `sync`), hold them until
//!   the run ends, answering pings.
//! - `chat`: pairs of users; each pair's sender posts to their direct
//!   conversation at its share of the open-loop rate, the receiver reads.
//!   Latency is measured from the intended send time (carried in the cmid
//!   and the body), so a stalled server cannot hide its queueing
//!   (coordinated omission). Every pair is audited: each acked message
//!   must reach the receiver once, in seq order, with no gap.

mod conn;
pub mod ws;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use hdrhistogram::Histogram;
use loadgen::summary::Totals;

/// What the connections do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Connect,
    Chat,
    /// `chat`, and at `reconnect_at` of the duration a share of the
    /// receivers drop their connection, stay away `down`, and reconnect
    /// with `sync` (the catch-up is timed and audited like live traffic).
    Reconnect,
    /// Groups of `group_size` users: the first of each creates the group
    /// and posts at its share of the rate; every other member receives
    /// (fan-out), each audited like a `chat` receiver.
    Group,
    /// Mixed and long: pairs whose receivers keep dropping and coming back
    /// (`reconnect_every`, staggered) beside groups (`group_share` of the
    /// connections): sustained 1:1 and fan-out traffic, reconnects and
    /// catch-up together, audited throughout.
    Soak,
}

/// One worker's share of a run (a process may run several threads).
#[derive(Clone, Debug)]
pub struct Plan {
    pub scenario: Scenario,
    pub server: SocketAddr,
    pub secret: Vec<u8>,
    /// Connections this worker opens (for `chat`, twice the pairs).
    pub conns: usize,
    /// Connections scheduled before this plan's in the same run: its
    /// connection `i` starts (and picks its source address) as number
    /// `schedule_offset + i`.
    pub schedule_offset: usize,
    /// The first user id; connection `i` is user `first_user + i`.
    pub first_user: u64,
    pub sources: Vec<Ipv4Addr>,
    /// Connections opened per second by this worker.
    pub connect_rate: f64,
    /// Messages per second sent by this worker's senders together.
    pub rate: f64,
    /// The message rate ramps up linearly over this long.
    pub ramp: Duration,
    pub payload: usize,
    /// How long the load runs once every connection is up.
    pub duration: Duration,
    /// How long receivers may take to catch up after the senders stop.
    pub drain: Duration,
    pub threads: usize,
    /// `reconnect`: when receivers drop (a fraction of `duration`), how long
    /// they stay away, and which share of them does.
    pub reconnect_at: f64,
    pub down: Duration,
    pub reconnect_share: f64,
    /// `soak`: how often each receiver drops and reconnects.
    pub reconnect_every: Duration,
    /// `group`: members per group (the sender included).
    pub group_size: usize,
    /// `soak`: the share of the connections that are in groups.
    pub group_share: f64,
}

/// What one thread measured.
#[derive(Debug)]
pub struct Tally {
    pub connect_us: Histogram<u64>,
    pub send_ack_us: Histogram<u64>,
    pub send_deliver_us: Histogram<u64>,
    /// From a receiver's reconnect to its `synced`.
    pub catch_up_us: Histogram<u64>,
    /// Counts: connections, sends, acks, deliveries, errors.
    pub totals: Totals,
    /// When the last connection was up, from the run's start.
    pub connected_by: Duration,
    /// Per second since the run started: (sent, delivered).
    pub timeline: Vec<(u64, u64)>,
    /// Per second: the p99 of the send→deliver latencies in it.
    pub timeline_p99: Vec<Option<u64>>,
    /// This second's send→deliver latencies (emptied every second).
    pub window_us: Histogram<u64>,
    /// When the run started (the timeline's zero).
    pub run_start: Instant,
    /// Audit: messages checked, and what went wrong.
    pub checked: u64,
    pub violations: Vec<String>,
    /// Live counts for the progress line, shared by the run's threads.
    pub progress: Arc<Progress>,
}

/// Counts every thread bumps as it goes, for the progress line.
#[derive(Debug, Default)]
pub struct Progress {
    pub connections: AtomicU64,
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
    pub errors: AtomicU64,
    /// The highest per-second send→deliver p99 since the last line.
    pub p99_us: AtomicU64,
}

impl Progress {
    fn line(&self, elapsed: Duration, last_sent: &mut u64) -> String {
        let sent = self.sent.load(Ordering::Relaxed);
        let line = format!(
            "[{:>4}s] conns {}  sent {} (+{}/s)  delivered {}  errors {}  p99 {:.1} ms",
            elapsed.as_secs(),
            self.connections.load(Ordering::Relaxed),
            sent,
            sent - *last_sent,
            self.delivered.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            self.p99_us.swap(0, Ordering::Relaxed) as f64 / 1000.0,
        );
        *last_sent = sent;
        line
    }
}

/// Latencies above this are clamped (an hour, in µs).
const LATENCY_US_MAX: u64 = 3_600_000_000;

impl Tally {
    fn new(progress: Arc<Progress>, run_start: Instant) -> Result<Tally> {
        let h = || Histogram::new_with_bounds(1, LATENCY_US_MAX, 3);
        Ok(Tally {
            connect_us: h()?,
            send_ack_us: h()?,
            send_deliver_us: h()?,
            catch_up_us: h()?,
            totals: Totals::default(),
            connected_by: Duration::ZERO,
            timeline: Vec::new(),
            timeline_p99: Vec::new(),
            window_us: h()?,
            run_start,
            checked: 0,
            violations: Vec::new(),
            progress,
        })
    }

    /// Adds another thread's tally.
    pub fn merge(&mut self, other: &Tally) -> Result<()> {
        self.connect_us.add(&other.connect_us)?;
        self.send_ack_us.add(&other.send_ack_us)?;
        self.send_deliver_us.add(&other.send_deliver_us)?;
        self.catch_up_us.add(&other.catch_up_us)?;
        self.totals.merge(&other.totals);
        self.connected_by = self.connected_by.max(other.connected_by);
        self.checked += other.checked;
        self.violations.extend(other.violations.iter().cloned());
        if self.timeline.len() < other.timeline.len() {
            self.timeline.resize(other.timeline.len(), (0, 0));
        }
        for (mine, theirs) in self.timeline.iter_mut().zip(&other.timeline) {
            mine.0 += theirs.0;
            mine.1 += theirs.1;
        }
        if self.timeline_p99.len() < other.timeline_p99.len() {
            self.timeline_p99.resize(other.timeline_p99.len(), None);
        }
        for (mine, theirs) in self.timeline_p99.iter_mut().zip(&other.timeline_p99) {
            // An upper bound: the threads' histograms are not kept.
            *mine = (*mine).max(*theirs);
        }
        Ok(())
    }
}

/// Wall-clock nanoseconds since the Unix epoch: send times cross processes.
pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Runs `plan` on its threads and returns their merged tally; with
/// `progress`, prints a progress line to stderr every second meanwhile.
pub fn run(plan: &Plan, progress: bool) -> Result<Tally> {
    let threads = plan.threads.max(1);
    let start = Instant::now();
    let counts = Arc::new(Progress::default());
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (plan, counts) = (plan.clone(), counts.clone());
            std::thread::Builder::new()
                .name(format!("loadgen-{t}"))
                .spawn(move || conn::run_thread(&plan, t, threads, start, counts))
        })
        .collect::<std::io::Result<_>>()?;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reporter = progress.then(|| {
        let (counts, done) = (counts.clone(), done.clone());
        std::thread::spawn(move || {
            let mut last_sent = 0;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                eprintln!("{}", counts.line(start.elapsed(), &mut last_sent));
            }
        })
    });
    let result = join(handles, &counts);
    done.store(true, Ordering::Relaxed);
    if let Some(r) = reporter {
        let _ = r.join();
    }
    result
}

fn join(
    handles: Vec<std::thread::JoinHandle<Result<Tally>>>,
    counts: &Arc<Progress>,
) -> Result<Tally> {
    let mut total = Tally::new(counts.clone(), Instant::now())?;
    for h in handles {
        let tally = h
            .join()
            .map_err(|_| anyhow::anyhow!("a loadgen thread panicked"))??;
        total.merge(&tally)?;
    }
    Ok(total)
}
