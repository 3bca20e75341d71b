//! `loadgen`: drives a Switchboard server with a scenario and reports HDR
//! latency histograms (`.hgrm`), a JSON summary and an HTML report; fails
//! (exit 1) when the correctness audit finds a lost or reordered message.
//!
//! One process holds at most ~19,000 sockets here (open files are capped at
//! 20,000), so a run with more connections spreads over worker processes
//! (`--processes`, by default enough for 18,000 each), each running the
//! same binary on its slice of users and pairs; the parent merges their
//! summaries.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod run;
mod scrape;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use loadgen::summary::Summary;

use run::{Plan, Scenario};

/// Connections one worker process holds at most (the open-file cap is
/// 20,000 per process on the machines we know; leave room for the rest).
const CONNS_PER_PROCESS_MAX: usize = 18_000;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Load generator and correctness checker for Switchboard"
)]
enum Cli {
    /// Run a scenario against a server.
    Run(Box<RunArgs>),
    /// Put two runs' summaries side by side.
    Compare { a: PathBuf, b: PathBuf },
    /// Render a summary's HTML report again.
    Report {
        summary: PathBuf,
        /// Where the HTML goes.
        #[arg(long, default_value = "report.html")]
        out: PathBuf,
    },
}

#[derive(Clone, Debug, clap::Args)]
struct RunArgs {
    scenario: Scenario,
    /// The server's public address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    server: SocketAddr,
    /// A file holding the server's token secret (a dev server keeps it in
    /// `<data-dir>/dev-token-secret`); tokens are minted locally.
    #[arg(long, env = "LOADGEN_SECRET_FILE")]
    secret_file: PathBuf,
    /// Connections in all (for `chat`, two per pair).
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// The first user id; connection `i` is user `first_user + i`.
    #[arg(long, default_value_t = 10_000_000)]
    first_user: u64,
    /// Source addresses to connect from, as a range `a.b.c.d-a.b.c.e`.
    #[arg(long, default_value = "127.0.0.2-127.0.0.200")]
    sources: String,
    /// Connections opened per second, in all.
    #[arg(long, default_value_t = 2000.0)]
    connect_rate: f64,
    /// `chat`: messages per second, in all (open loop).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds over which the message rate ramps up linearly to `--rate`.
    #[arg(long, default_value_t = 0.0)]
    ramp: f64,
    /// `chat`: bytes per message body.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Seconds of load once connected.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds receivers may take to catch up after the senders stop.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
    /// `reconnect`: when receivers drop, as a fraction of `--duration`.
    #[arg(long, default_value_t = 0.5)]
    reconnect_at: f64,
    /// `reconnect`: seconds the receivers stay away.
    #[arg(long, default_value_t = 1.0)]
    down: f64,
    /// `reconnect`: the share of receivers that drop (1 = all at once).
    #[arg(long, default_value_t = 1.0)]
    reconnect_share: f64,
    /// `soak`: seconds between one receiver's reconnects.
    #[arg(long, default_value_t = 30.0)]
    reconnect_every: f64,
    /// `group`: members per group, the sender included.
    #[arg(long, default_value_t = 100)]
    group_size: usize,
    /// `soak`: the share of the connections in groups (the rest in pairs).
    #[arg(long, default_value_t = 0.2)]
    group_share: f64,
    /// Threads per process (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Worker processes (default: enough for 18,000 connections each).
    #[arg(long)]
    processes: Option<usize>,
    /// The server's admin address, scraped for `/metrics` (RSS, CPU,
    /// connections) once a second; `none` to skip.
    #[arg(long, default_value = "127.0.0.1:9090")]
    metrics: String,
    /// Where the summary, `.hgrm` files and report go.
    #[arg(long, default_value = "loadgen-out")]
    out: PathBuf,
    /// Internal: this process is worker `i` of `--processes`.
    #[arg(long, hide = true)]
    worker: Option<usize>,
}

fn main() -> ExitCode {
    match Cli::parse() {
        Cli::Run(args) => match run_cmd(&args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("loadgen: {e:#}");
                ExitCode::from(2)
            }
        },
        Cli::Report { summary, out } => {
            let rendered = Summary::read(&summary)
                .map_err(anyhow::Error::from)
                .and_then(|s| Ok(loadgen::report::write(&out, &s)?));
            match rendered {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("loadgen: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Cli::Compare { a, b } => match compare(&a, &b) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loadgen: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}

fn compare(a: &Path, b: &Path) -> Result<()> {
    let (a, b) = (Summary::read(a)?, Summary::read(b)?);
    print!("{}", loadgen::compare::compare(&a, &b));
    Ok(())
}

/// Runs the scenario (here, or over worker processes); `false` if the
/// audit failed.
fn run_cmd(args: &RunArgs) -> Result<bool> {
    ensure!(args.conns > 0, "--conns must be at least 1");
    ensure!(
        args.duration > 0.0 && args.drain >= 0.0,
        "--duration must be positive"
    );
    let processes = args
        .processes
        .unwrap_or_else(|| args.conns.div_ceil(CONNS_PER_PROCESS_MAX))
        .max(1);
    ensure!(
        args.conns.div_ceil(processes) <= CONNS_PER_PROCESS_MAX,
        "{} connections over {processes} processes is over {CONNS_PER_PROCESS_MAX} per process",
        args.conns
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let scraper = match (args.worker, args.metrics.as_str()) {
        (None, "none") | (Some(_), _) => None,
        (None, addr) => Some(scrape::Scraper::start(
            addr.parse().with_context(|| format!("--metrics {addr}"))?,
        )),
    };
    let mut summary = match args.worker {
        Some(i) => run_here(args, i, processes)?,
        None if processes == 1 => run_here(args, 0, 1)?,
        None => run_workers(args, processes)?,
    };
    if let Some(s) = scraper {
        summary.server = s.finish();
    }
    if args.worker.is_none() {
        write_outputs(&summary, &args.out)?;
        print_summary(&summary, &args.out);
    } else {
        summary.write(&args.out.join("summary.json"))?;
    }
    Ok(summary.audit.passed)
}

/// Parses `a.b.c.d-a.b.c.e` (or one address) into the addresses in it.
fn parse_sources(range: &str) -> Result<Vec<Ipv4Addr>> {
    let (a, b) = range.split_once('-').unwrap_or((range, range));
    let (a, b): (Ipv4Addr, Ipv4Addr) = (a.trim().parse()?, b.trim().parse()?);
    ensure!(u32::from(a) <= u32::from(b), "empty source range {range}");
    ensure!(
        u32::from(b) - u32::from(a) < 1 << 16,
        "source range {range} is too wide"
    );
    Ok((u32::from(a)..=u32::from(b)).map(Ipv4Addr::from).collect())
}

/// The part `[from, to)` of `n` items that worker `i` of `p` takes.
fn share(n: usize, i: usize, p: usize) -> (usize, usize) {
    (n * i / p, n * (i + 1) / p)
}

/// Runs worker `i` of `processes` in this process.
fn run_here(args: &RunArgs, i: usize, processes: usize) -> Result<Summary> {
    let secret = std::fs::read_to_string(&args.secret_file)
        .with_context(|| format!("reading the token secret {}", args.secret_file.display()))?;
    // Split whole units: a pair, a group, or one connection.
    let unit = match args.scenario {
        Scenario::Connect => 1,
        Scenario::Chat | Scenario::Reconnect | Scenario::Soak => 2,
        Scenario::Group => args.group_size.max(2),
    };
    let (from, to) = share(args.conns / unit, i, processes);
    let fraction = (to - from) as f64 / (args.conns / unit).max(1) as f64;
    let plan = Plan {
        scenario: args.scenario,
        server: args.server,
        secret: secret.trim().as_bytes().to_vec(),
        conns: (to - from) * unit,
        first_user: args.first_user + (from * unit) as u64,
        schedule_offset: 0,
        sources: parse_sources(&args.sources)?,
        connect_rate: args.connect_rate * fraction,
        rate: args.rate * fraction,
        ramp: Duration::from_secs_f64(args.ramp.max(0.0)),
        payload: args.payload,
        duration: Duration::from_secs_f64(args.duration),
        drain: Duration::from_secs_f64(args.drain),
        reconnect_at: args.reconnect_at.clamp(0.0, 1.0),
        down: Duration::from_secs_f64(args.down.max(0.0)),
        reconnect_share: args.reconnect_share.clamp(0.0, 1.0),
        reconnect_every: Duration::from_secs_f64(args.reconnect_every.max(1.0)),
        group_size: args.group_size.max(2),
        group_share: args.group_share.clamp(0.0, 1.0),
        threads: args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
    };
    let started = std::time::SystemTime::now();
    let clock = std::time::Instant::now();
    // Workers stay quiet: the parent's terminal would get one line each.
    let tally = run::run(&plan, args.worker.is_none())?;
    summarize(args, plan.rate, &tally, started, clock.elapsed())
}

/// Runs `processes` copies of this binary, each on its share, and merges
/// their summaries.
fn run_workers(args: &RunArgs, processes: usize) -> Result<Summary> {
    let exe = std::env::current_exe().context("finding the loadgen binary")?;
    let mut children = Vec::new();
    for i in 0..processes {
        let out = args.out.join(format!("worker-{i}"));
        let child = std::process::Command::new(&exe)
            .args(worker_args(args, i, processes, &out))
            .spawn()
            .with_context(|| format!("starting worker {i}"))?;
        children.push((i, out, child));
    }
    let mut merged: Option<Summary> = None;
    for (i, out, mut child) in children {
        let status = child.wait()?;
        // Exit 1 is a failed audit, which the merged summary shows.
        if !status.success() && status.code() != Some(1) {
            bail!("worker {i} failed: {status}");
        }
        let part = Summary::read(&out.join("summary.json"))?;
        match &mut merged {
            None => merged = Some(part),
            Some(m) => m.merge(&part)?,
        }
    }
    merged.context("no worker ran")
}

/// The command line of worker `i`: the same run, on its share.
fn worker_args(args: &RunArgs, i: usize, processes: usize, out: &Path) -> Vec<std::ffi::OsString> {
    let scenario = match args.scenario {
        Scenario::Connect => "connect",
        Scenario::Chat => "chat",
        Scenario::Reconnect => "reconnect",
        Scenario::Group => "group",
        Scenario::Soak => "soak",
    };
    let mut v: Vec<std::ffi::OsString> = vec!["run".into(), scenario.into()];
    let mut flag = |name: &str, value: String| {
        v.push(format!("--{name}").into());
        v.push(value.into());
    };
    flag("server", args.server.to_string());
    flag("secret-file", args.secret_file.display().to_string());
    flag("conns", args.conns.to_string());
    flag("first-user", args.first_user.to_string());
    flag("sources", args.sources.clone());
    flag("connect-rate", args.connect_rate.to_string());
    flag("rate", args.rate.to_string());
    flag("payload", args.payload.to_string());
    flag("ramp", args.ramp.to_string());
    flag("duration", args.duration.to_string());
    flag("drain", args.drain.to_string());
    flag("reconnect-at", args.reconnect_at.to_string());
    flag("down", args.down.to_string());
    flag("reconnect-share", args.reconnect_share.to_string());
    flag("group-size", args.group_size.to_string());
    flag("reconnect-every", args.reconnect_every.to_string());
    flag("group-share", args.group_share.to_string());
    if let Some(t) = args.threads {
        flag("threads", t.to_string());
    }
    flag("processes", processes.to_string());
    flag("worker", i.to_string());
    flag("out", out.display().to_string());
    flag("metrics", "none".to_owned());
    v
}

/// Turns one process's tally into a summary.
fn summarize(
    args: &RunArgs,
    rate: f64,
    tally: &run::Tally,
    started: std::time::SystemTime,
    took: Duration,
) -> Result<Summary> {
    use loadgen::summary::{Audit, Latency, Rates, Sample};
    let mut latency = std::collections::BTreeMap::new();
    for (name, h) in [
        ("connect", &tally.connect_us),
        ("send_ack", &tally.send_ack_us),
        ("send_deliver", &tally.send_deliver_us),
        ("catch_up", &tally.catch_up_us),
    ] {
        if !h.is_empty() {
            latency.insert(name.to_owned(), Latency::from_histogram(h)?);
        }
    }
    let seconds = took.as_secs_f64().max(1e-9);
    let params = serde_json::to_value(Params::from(args))?;
    let params = params
        .as_object()
        .map(|m| m.clone().into_iter().collect())
        .unwrap_or_default();
    Ok(Summary {
        version: loadgen::summary::VERSION,
        scenario: format!("{:?}", args.scenario).to_lowercase(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_unix_ms: started
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0)),
        duration_s: seconds,
        params,
        totals: tally.totals,
        rates: Rates {
            // This process's share: merged summaries add them up.
            target_msgs_per_s: (args.scenario != Scenario::Connect).then_some(rate),
            achieved_msgs_per_s: tally.totals.delivered as f64 / args.duration.max(1e-9),
            // Over the connect phase: from the start to the last one up.
            connects_per_s: tally.totals.connections_opened as f64
                / tally.connected_by.as_secs_f64().max(1e-9),
        },
        latency,
        timeline: tally
            .timeline
            .iter()
            .enumerate()
            .map(|(t, (sent, delivered))| Sample {
                t_s: t as u64,
                connections: tally.totals.connections_opened,
                sent: *sent,
                acked: 0,
                delivered: *delivered,
                errors: 0,
                send_deliver_p99_us: tally.timeline_p99.get(t).copied().flatten(),
            })
            .collect(),
        server: Vec::new(),
        audit: {
            let mut audit = Audit {
                checked_messages: tally.checked,
                ..Audit::default()
            };
            for v in &tally.violations {
                audit.violation(v.clone());
            }
            audit
        },
    })
}

/// The run's parameters, as recorded in the summary.
#[derive(serde::Serialize)]
struct Params {
    server: String,
    conns: usize,
    connect_rate: f64,
    rate: f64,
    payload: usize,
    duration_s: f64,
    sources: String,
}

impl From<&RunArgs> for Params {
    fn from(a: &RunArgs) -> Params {
        Params {
            server: a.server.to_string(),
            conns: a.conns,
            connect_rate: a.connect_rate,
            rate: a.rate,
            payload: a.payload,
            duration_s: a.duration,
            sources: a.sources.clone(),
        }
    }
}

/// `summary.json`, one `.hgrm` per latency metric, `report.html`.
fn write_outputs(summary: &Summary, out: &Path) -> Result<()> {
    summary.write(&out.join("summary.json"))?;
    for (name, latency) in &summary.latency {
        let h = latency.histogram()?;
        loadgen::hgrm::write(
            &out.join(format!("{name}.hgrm")),
            &h,
            loadgen::hgrm::Unit::Micros,
        )?;
    }
    let html = loadgen::report::render(summary);
    std::fs::write(out.join("report.html"), html)
        .with_context(|| format!("writing {}/report.html", out.display()))?;
    Ok(())
}

fn print_summary(s: &Summary, out: &Path) {
    let t = &s.totals;
    println!(
        "{}: {} connections ({} failed), sent {}, acked {}, delivered {} ({:.0} msgs/s)",
        s.scenario,
        t.connections_opened,
        t.connect_errors,
        t.sent,
        t.acked,
        t.delivered,
        s.rates.achieved_msgs_per_s
    );
    for (name, l) in &s.latency {
        println!(
            "  {name:<13} p50 {:>9} µs  p99 {:>9} µs  p99.9 {:>9} µs  max {:>9} µs  (n={})",
            l.p50_us, l.p99_us, l.p999_us, l.max_us, l.count
        );
    }
    let audit = if s.audit.passed { "passed" } else { "FAILED" };
    println!(
        "  audit {audit}: {} messages checked, {} violations",
        s.audit.checked_messages, s.audit.violations_total
    );
    for v in &s.audit.violations {
        println!("    {v}");
    }
    println!("  outputs in {}", out.display());
}
