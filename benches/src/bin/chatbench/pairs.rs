//! `chatbench pairs`: pairs of users, each sender posting into the direct
//! conversation with its receiver; send→ack and send→deliver latency,
//! delivered messages per second, server CPU per message.

pub mod peer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use protocol::{ConvId, DeviceId, Encoding, Seq, UserId};
use serde::Serialize;

use crate::server::{self, Server};
use crate::stats::{Latencies, Summary, round1, round3};
use peer::{Event, Peer, ReceiverReport, SenderReport, Shared};

/// Stack of each connection thread; they hold little on the stack.
const THREAD_STACK_BYTES: usize = 512 * 1024;

/// Lifetime of the tokens the bench mints.
const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Connection threads at most (two per pair).
pub const PAIRS_MAX: usize = 2000;

#[derive(Debug, Clone)]
pub struct PairsOptions {
    pub pairs: usize,
    pub messages: u64,
    pub window: u64,
    pub rate: Option<f64>,
    pub encoding: Encoding,
    pub timeout: Duration,
}

pub type Handles<T> = Vec<JoinHandle<Result<T>>>;

/// What the run measured, before it is printed.
#[derive(Debug)]
struct Outcome {
    delivered: u64,
    wall: Duration,
    cpu: Cpu,
    acks: Latencies,
    deliveries: Latencies,
    send_lag: Latencies,
}

/// CPU time used while the messages flowed.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    server: Duration,
    /// This process: the client side shares the machine's cores.
    client: Duration,
}

pub fn run(server: &mut Server, options: &PairsOptions) -> Result<()> {
    let shared = Arc::new(Shared {
        addr: server.addr(),
        encoding: options.encoding,
        epoch: Instant::now(),
        deadline: Instant::now() + options.timeout,
        timeout: options.timeout,
        pairs: options.pairs,
        messages: options.messages,
        window: options.window,
        rate: options.rate,
        phases: None,
        abort: AtomicBool::new(false),
        start: Mutex::new(None),
        started: Condvar::new(),
    });
    let (events_tx, events) = mpsc::channel();
    let (senders, receivers) = spawn(server, &shared, &events_tx)?;
    drop(events_tx);
    let measured = measure(server, &shared, &events, options);
    // Past the deadline every thread stops by itself and says where it
    // was stuck; before it, a failure stops the others.
    if measured.is_err() && Instant::now() < shared.deadline {
        shared.abort.store(true, Ordering::Relaxed);
    }
    let (senders, receivers, cpu) = match (join(senders), join(receivers), measured) {
        (Ok(s), Ok(r), Ok(cpu)) => (s, r, cpu),
        (s, r, measured) => {
            server.check_alive()?;
            let mut failures = s.err().unwrap_or_default();
            failures.extend(r.err().unwrap_or_default());
            return Err(failure(measured.err(), &failures));
        }
    };
    server.check_alive()?;
    let outcome = verify(options, &senders, &receivers, cpu)?;
    print_report(server, options, &outcome);
    Ok(())
}

pub fn check_options(options: &PairsOptions) -> Result<()> {
    ensure!(
        (1..=PAIRS_MAX).contains(&options.pairs),
        "--pairs must be 1 to {PAIRS_MAX} (one thread per connection)"
    );
    ensure!(
        options.messages >= 1 && usize::try_from(options.messages).is_ok(),
        "--messages must be at least 1"
    );
    ensure!(options.window >= 1, "--window must be at least 1");
    if let Some(rate) = options.rate {
        ensure!(
            rate.is_finite() && rate > 0.0,
            "--rate must be a positive number of messages per second"
        );
    }
    Ok(())
}

/// Starts one thread per connection: senders are users 1, 3, 5, …, the
/// receiver of each is the next user.
pub fn spawn(
    server: &Server,
    shared: &Arc<Shared>,
    events: &mpsc::Sender<Event>,
) -> Result<(Handles<SenderReport>, Handles<ReceiverReport>)> {
    let mut senders = Vec::with_capacity(shared.pairs);
    let mut receivers = Vec::with_capacity(shared.pairs);
    for i in 0..shared.pairs {
        let from = UserId(1 + 2 * i as u64);
        let to = UserId(from.0 + 1);
        let sender = peer(server, format!("sender {i} (user {from})"), from);
        let receiver = peer(server, format!("receiver {i} (user {to})"), to);
        let (s, e) = (shared.clone(), events.clone());
        senders.push(spawn_thread(&sender.name.clone(), move || {
            peer::report_failure(&e, &sender, || peer::sender(&s, &e, &sender, i, to))
        })?);
        let (s, e) = (shared.clone(), events.clone());
        receivers.push(spawn_thread(&receiver.name.clone(), move || {
            peer::report_failure(&e, &receiver, || peer::receiver(&s, &e, &receiver))
        })?);
    }
    Ok((senders, receivers))
}

fn peer(server: &Server, name: String, user: UserId) -> Peer {
    Peer {
        name,
        user,
        token: client::mint_token(server.secret(), user, DeviceId(1), TOKEN_TTL),
    }
}

fn spawn_thread<T: Send + 'static>(
    name: &str,
    body: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<JoinHandle<Result<T>>> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .stack_size(THREAD_STACK_BYTES)
        .spawn(body)
        .with_context(|| format!("spawning the thread of {name}"))
}

/// Waits until every connection is ready, starts the senders, and waits
/// until every message is acked and delivered. Returns the server CPU time
/// used in between.
fn measure(
    server: &mut Server,
    shared: &Shared,
    events: &mpsc::Receiver<Event>,
    options: &PairsOptions,
) -> Result<Cpu> {
    let connections = 2 * options.pairs;
    wait_for(
        events,
        shared,
        "connections to be ready",
        connections,
        |e| matches!(e, Event::Ready),
    )?;
    server.check_alive()?;
    let (server_before, client_before) = (server.cpu_time()?, server::cpu_time("self")?);
    eprintln!("chatbench: {connections} connections ready, sending");
    shared.open_gate();
    wait_for(
        events,
        shared,
        "senders and receivers to finish",
        connections,
        |e| matches!(e, Event::SenderDone | Event::ReceiverDone),
    )?;
    let (server_after, client_after) = (server.cpu_time()?, server::cpu_time("self")?);
    Ok(Cpu {
        server: server_after.saturating_sub(server_before),
        client: client_after.saturating_sub(client_before),
    })
}

/// Counts events accepted by `pred` until there are `count`; fails on the
/// first `Failed` event or at the deadline.
pub fn wait_for(
    events: &mpsc::Receiver<Event>,
    shared: &Shared,
    what: &str,
    count: usize,
    pred: impl Fn(&Event) -> bool,
) -> Result<()> {
    let mut seen = 0;
    while seen < count {
        let left = shared.deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(Event::Failed(why)) => bail!("{why}"),
            Ok(event) if pred(&event) => seen += 1,
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                "timed out (--timeout {:?}) waiting for {what}: {seen} of {count}",
                shared.timeout
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("every connection thread ended while waiting for {what}: {seen} of {count}")
            }
        }
    }
    Ok(())
}

/// Joins every thread. The errors exclude threads stopped only because
/// another failed.
pub fn join<T>(handles: Handles<T>) -> Result<Vec<T>, Vec<anyhow::Error>> {
    let mut reports = Vec::with_capacity(handles.len());
    let mut failures = Vec::new();
    let mut aborted = false;
    for handle in handles {
        let result = handle
            .join()
            .unwrap_or_else(|_| Err(anyhow!("a connection thread panicked")));
        match result {
            Ok(report) => reports.push(report),
            Err(err) if err.root_cause().downcast_ref::<peer::Aborted>().is_some() => {
                aborted = true;
            }
            Err(err) => failures.push(err),
        }
    }
    if failures.is_empty() && !aborted {
        Ok(reports)
    } else {
        Err(failures)
    }
}

/// One error out of the main thread's and the connections' failures.
pub fn failure(main: Option<anyhow::Error>, connections: &[anyhow::Error]) -> anyhow::Error {
    const SHOWN_MAX: usize = 10;
    let mut lines = vec![match main {
        Some(err) => format!("{err:#}"),
        None => "the run failed".to_owned(),
    }];
    if !connections.is_empty() {
        lines.push(format!("{} connections failed:", connections.len()));
        lines.extend(
            connections
                .iter()
                .take(SHOWN_MAX)
                .map(|e| format!("  {e:#}")),
        );
        if connections.len() > SHOWN_MAX {
            lines.push(format!("  … and {} more", connections.len() - SHOWN_MAX));
        }
    }
    anyhow!(lines.join("\n"))
}

/// Checks that every receiver got exactly its sender's messages, seqs
/// 1..=N in order, and merges the measurements.
fn verify(
    options: &PairsOptions,
    senders: &[SenderReport],
    receivers: &[ReceiverReport],
    cpu: Cpu,
) -> Result<Outcome> {
    let mut outcome = Outcome {
        delivered: 0,
        wall: Duration::ZERO,
        cpu,
        acks: Latencies::new(),
        deliveries: Latencies::new(),
        send_lag: Latencies::new(),
    };
    let mut problems = Vec::new();
    let mut first_send_ns = u64::MAX;
    let mut last_delivery_ns = 0_u64;
    for (i, (s, r)) in senders.iter().zip(receivers).enumerate() {
        if let Err(why) = check_stream(s.conv, &r.got, options.messages) {
            problems.push(format!("pair {i}: {why}"));
        }
        outcome.delivered += r.got.len() as u64;
        first_send_ns = first_send_ns.min(s.first_send_ns);
        last_delivery_ns = last_delivery_ns.max(r.last_delivery_ns);
        outcome.acks.merge(&s.acks)?;
        outcome.send_lag.merge(&s.send_lag)?;
        outcome.deliveries.merge(&r.deliveries)?;
    }
    if !problems.is_empty() {
        let shown = problems
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ");
        bail!(
            "delivery check failed for {} of {} pairs:\n  {shown}",
            problems.len(),
            options.pairs
        );
    }
    let expected = options.pairs as u64 * options.messages;
    ensure!(
        outcome.acks.count() == expected,
        "{} acks timed, expected {expected}",
        outcome.acks.count()
    );
    outcome.wall = Duration::from_nanos(last_delivery_ns.saturating_sub(first_send_ns));
    Ok(outcome)
}

/// `got` must be exactly seqs 1..=n of `conv`, in order.
pub fn check_stream(conv: ConvId, got: &[(ConvId, Seq)], n: u64) -> Result<(), String> {
    for (i, &(c, seq)) in got.iter().enumerate() {
        let want = i as u64 + 1;
        if c != conv || seq.0 != want {
            return Err(format!(
                "message {want} received was conv {c} seq {}; expected conv {conv} seq {want} \
                 ({} received in all)",
                seq.0,
                got.len()
            ));
        }
    }
    if got.len() as u64 == n {
        Ok(())
    } else {
        Err(format!("received {} messages, expected {n}", got.len()))
    }
}

fn print_report(server: &Server, options: &PairsOptions, outcome: &Outcome) {
    let line = JsonLine::new(server, options, outcome);
    let load = match options.rate {
        Some(rate) => format!("open loop, {rate} msg/s per sender"),
        None => format!("closed loop, window {}", options.window),
    };
    println!(
        "pairs: {} pairs x {} messages, {}, {load}; server: {} shards, durability {}",
        line.pairs, line.messages, line.encoding, line.shards, line.durability
    );
    println!(
        "  delivered      {} msgs in {:.3} s: {:.0} msg/s",
        line.delivered, line.wall_s, line.msgs_per_s
    );
    println!("  latency (µs):");
    println!("{}", line.ack_us.line("send→ack"));
    println!("{}", line.deliver_us.line("send→deliver"));
    if let Some(lag) = &line.send_lag_us {
        println!("{}", lag.line("send lag"));
    }
    println!(
        "  server CPU     {:.3} s: {:.1} µs per delivered message",
        line.server_cpu_s, line.server_cpu_us_per_msg
    );
    println!(
        "  client CPU     {:.3} s (chatbench itself, on the same cores)",
        line.client_cpu_s
    );
    server.print_log_summary();
    println!(
        "{}",
        serde_json::to_string(&line).expect("a struct of numbers and strings serializes")
    );
}

/// The machine-readable report, one JSON object, fields in this order.
#[derive(Debug, Serialize)]
struct JsonLine {
    bench: &'static str,
    pairs: usize,
    messages: u64,
    encoding: &'static str,
    /// The closed loop's window, absent in open loop.
    window: Option<u64>,
    /// The open loop's rate per sender, absent in closed loop.
    rate: Option<f64>,
    shards: u16,
    durability: &'static str,
    delivered: u64,
    wall_s: f64,
    msgs_per_s: f64,
    ack_us: Summary,
    deliver_us: Summary,
    /// Open loop only: how late sends left against their schedule.
    send_lag_us: Option<Summary>,
    server_cpu_s: f64,
    server_cpu_us_per_msg: f64,
    client_cpu_s: f64,
    server_warnings: u64,
    server_errors: u64,
}

impl JsonLine {
    fn new(server: &Server, options: &PairsOptions, outcome: &Outcome) -> JsonLine {
        let wall_s = outcome.wall.as_secs_f64();
        let msgs_per_s = if wall_s > 0.0 {
            outcome.delivered as f64 / wall_s
        } else {
            0.0
        };
        let cpu_s = outcome.cpu.server.as_secs_f64();
        let (warnings, errors, _) = server.stderr_summary();
        JsonLine {
            bench: "pairs",
            pairs: options.pairs,
            messages: options.messages,
            encoding: match options.encoding {
                Encoding::Binary => "binary",
                Encoding::Json => "json",
            },
            window: options.rate.is_none().then_some(options.window),
            rate: options.rate,
            shards: server.shards(),
            durability: server.durability().as_str(),
            delivered: outcome.delivered,
            wall_s,
            msgs_per_s: round1(msgs_per_s),
            ack_us: outcome.acks.summary(),
            deliver_us: outcome.deliveries.summary(),
            send_lag_us: options.rate.map(|_| outcome.send_lag.summary()),
            server_cpu_s: round3(cpu_s),
            server_cpu_us_per_msg: round1(cpu_s * 1e6 / outcome.delivered.max(1) as f64),
            client_cpu_s: round3(outcome.cpu.client.as_secs_f64()),
            server_warnings: warnings,
            server_errors: errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_check() {
        let conv = ConvId(9);
        let good: Vec<_> = (1..=3).map(|s| (conv, Seq(s))).collect();
        assert!(check_stream(conv, &good, 3).is_ok());
        assert!(check_stream(conv, &good, 4).is_err());
        assert!(check_stream(conv, &good[..2], 3).is_err());
        let dup = [(conv, Seq(1)), (conv, Seq(1)), (conv, Seq(2))];
        assert!(check_stream(conv, &dup, 3).is_err());
        let other = [(ConvId(8), Seq(1))];
        assert!(check_stream(conv, &other, 1).is_err());
    }
}
