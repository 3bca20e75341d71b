//! `chatbench idle`: server memory per idle, authenticated WebSocket.
//!
//! `VmRSS` is read after a few warm-up connections (opened and closed, so
//! that one-off allocations are already made), then again after `--conns`
//! connections have completed the upgrade, read `welcome` and been left
//! alone for `--settle`. The difference over the count is the cost of one
//! idle connection, kernel socket memory excluded (RSS does not count it).

use std::io::ErrorKind;
use std::net::{Ipv4Addr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use protocol::{DeviceId, UserId};
use serde::Serialize;

use crate::handshake;
use crate::server::Server;

/// This machine caps a process at 20,000 open files (MEASURED.md); keep
/// room for the process's other descriptors.
pub const CONNS_MAX: usize = 19_000;

/// Descriptors the client keeps for itself besides the connections.
const FDS_RESERVED: u64 = 100;

/// User ids of the measured connections start here (device 1).
const FIRST_USER: u64 = 1_000_000;

/// User ids of the warm-up connections start here.
const WARMUP_FIRST_USER: u64 = 900_000;

/// Source addresses 127.0.0.2 ..= 127.0.0.254 (all of 127/8 is local), so
/// that no (source, destination) pair needs many ephemeral ports.
const SOURCES: u8 = 253;

const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Time after closing the warm-up connections for the server to free them.
const WARMUP_SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct IdleOptions {
    pub conns: usize,
    pub threads: usize,
    pub warmup: usize,
    pub settle: Duration,
    pub connect_timeout: Duration,
}

pub fn run(server: &mut Server, options: &IdleOptions) -> Result<()> {
    println!(
        "idle: server started with MIMALLOC_ALLOW_THP=0 (transparent huge pages inflate \
         mimalloc's RSS); {} shards",
        server.shards()
    );
    let warmup = open_all(server, options, WARMUP_FIRST_USER, options.warmup)?;
    drop(warmup.conns);
    std::thread::sleep(WARMUP_SETTLE);
    server.check_alive()?;
    let rss_before = server.rss_bytes()?;
    let opened = open_all(server, options, FIRST_USER, options.conns)?;
    std::thread::sleep(options.settle);
    server.check_alive()?;
    let rss_after = server.rss_bytes()?;
    let still_open = count_open(&opened.conns)?;
    let started = Instant::now();
    drop(opened.conns);
    let close_time = started.elapsed();
    server.check_alive()?;
    let report = Report {
        rss_before,
        rss_after,
        open_time: opened.time,
        still_open,
        close_time,
    };
    print_report(server, options, &report);
    ensure!(
        still_open == options.conns,
        "only {still_open} of {} connections were still open after --settle",
        options.conns
    );
    Ok(())
}

pub fn check_options(options: &IdleOptions) -> Result<()> {
    ensure!(
        (1..=CONNS_MAX).contains(&options.conns),
        "--conns must be 1 to {CONNS_MAX}: one process may hold at most 20,000 open files \
         on this machine (MEASURED.md); run several chatbench processes for more"
    );
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    if let Some(limit) = limit {
        ensure!(
            options.conns as u64 + FDS_RESERVED <= limit,
            "--conns {} needs {} open files but `ulimit -n` is {limit}",
            options.conns,
            options.conns as u64 + FDS_RESERVED
        );
    }
    ensure!(options.threads >= 1, "--threads must be at least 1");
    Ok(())
}

#[derive(Debug)]
struct Report {
    rss_before: u64,
    rss_after: u64,
    open_time: Duration,
    still_open: usize,
    close_time: Duration,
}

#[derive(Debug)]
struct Opened {
    conns: Vec<TcpStream>,
    time: Duration,
}

/// Opens `count` connections for users `first_user + i`, spread over the
/// threads (connection i on thread i % threads) and the source addresses.
fn open_all(
    server: &Server,
    options: &IdleOptions,
    first_user: u64,
    count: usize,
) -> Result<Opened> {
    let secret: Arc<[u8]> = server.secret().into();
    let failed = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let threads = options.threads.min(count.max(1));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let job = Job {
            addr: server.addr(),
            secret: secret.clone(),
            failed: failed.clone(),
            opened: opened.clone(),
            timeout: options.connect_timeout,
            first_user,
        };
        let handle = std::thread::Builder::new()
            .name(format!("idle-{t}"))
            .spawn(move || job.run((t..count).step_by(threads)))
            .context("spawning a connection thread")?;
        handles.push(handle);
    }
    let mut conns = Vec::with_capacity(count);
    let mut first_err = None;
    for handle in handles {
        match handle.join() {
            Ok(Ok(mut some)) => conns.append(&mut some),
            Ok(Err(err)) => {
                first_err.get_or_insert(err);
            }
            Err(_) => {
                first_err.get_or_insert(anyhow!("a connection thread panicked"));
            }
        }
    }
    if let Some(err) = first_err {
        return Err(err.context(format!(
            "opening connections: {} of {count} opened before the first failure stopped the rest",
            opened.load(Ordering::Relaxed)
        )));
    }
    Ok(Opened {
        conns,
        time: started.elapsed(),
    })
}

/// One thread's share of the connections.
#[derive(Debug)]
struct Job {
    addr: std::net::SocketAddr,
    secret: Arc<[u8]>,
    failed: Arc<AtomicBool>,
    opened: Arc<AtomicUsize>,
    timeout: Duration,
    first_user: u64,
}

impl Job {
    fn run(&self, indexes: impl Iterator<Item = usize>) -> Result<Vec<TcpStream>> {
        let mut conns = Vec::new();
        for i in indexes {
            if self.failed.load(Ordering::Relaxed) {
                break;
            }
            let user = UserId(self.first_user + i as u64);
            #[expect(clippy::cast_possible_truncation, reason = "i % SOURCES is below 253")]
            let source = Ipv4Addr::new(127, 0, 0, 2 + (i % usize::from(SOURCES)) as u8);
            let token = client::mint_token(&self.secret, user, DeviceId(1), TOKEN_TTL);
            match handshake::open(self.addr, source, &token, user, self.timeout) {
                Ok(stream) => conns.push(stream),
                Err(err) => {
                    self.failed.store(true, Ordering::Relaxed);
                    return Err(err.context(format!("connection {i} (user {user}, from {source})")));
                }
            }
            self.opened.fetch_add(1, Ordering::Relaxed);
        }
        Ok(conns)
    }
}

/// Connections the server has not closed: a non-blocking peek finds
/// nothing to read. (Anything readable is a close frame, a ping or EOF.)
fn count_open(conns: &[TcpStream]) -> Result<usize> {
    let mut open = 0;
    let mut byte = [0u8; 1];
    for conn in conns {
        conn.set_nonblocking(true).context("setting O_NONBLOCK")?;
        match conn.peek(&mut byte) {
            Err(err) if err.kind() == ErrorKind::WouldBlock => open += 1,
            Ok(_) | Err(_) => {}
        }
    }
    Ok(open)
}

fn print_report(server: &Server, options: &IdleOptions, report: &Report) {
    let line = JsonLine::new(server, options, report);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "  connections    {} (after {} warm-up), {} threads",
        options.conns, options.warmup, options.threads
    );
    println!(
        "  opened in      {:.3} s: {:.0} conn/s",
        line.open_s, line.conns_per_s
    );
    println!(
        "  server RSS     {:.1} MiB before, {:.1} MiB after {:?} settling",
        mib(report.rss_before),
        mib(report.rss_after),
        options.settle
    );
    println!(
        "  per connection {:.0} bytes of RSS",
        line.rss_per_conn_bytes
    );
    println!(
        "  still open     {} of {} after settling",
        report.still_open, options.conns
    );
    server.print_log_summary();
    println!(
        "  closed all in  {:.3} s; done",
        report.close_time.as_secs_f64()
    );
    println!(
        "{}",
        serde_json::to_string(&line).expect("a struct of numbers and strings serializes")
    );
}

/// The machine-readable report, one JSON object, fields in this order.
#[derive(Debug, Serialize)]
struct JsonLine {
    bench: &'static str,
    conns: usize,
    shards: u16,
    /// Always 0: the server runs with `MIMALLOC_ALLOW_THP=0`.
    mimalloc_allow_thp: u8,
    rss_before_bytes: u64,
    rss_after_bytes: u64,
    rss_per_conn_bytes: f64,
    open_s: f64,
    conns_per_s: f64,
    still_open: usize,
    server_warnings: u64,
    server_errors: u64,
}

impl JsonLine {
    fn new(server: &Server, options: &IdleOptions, report: &Report) -> JsonLine {
        let conns = options.conns as f64;
        #[expect(clippy::cast_possible_wrap, reason = "RSS in bytes is far below 2^63")]
        let delta = report.rss_after as i64 - report.rss_before as i64;
        let (warnings, errors, _) = server.stderr_summary();
        JsonLine {
            bench: "idle",
            conns: options.conns,
            shards: server.shards(),
            mimalloc_allow_thp: 0,
            rss_before_bytes: report.rss_before,
            rss_after_bytes: report.rss_after,
            rss_per_conn_bytes: (delta as f64 / conns).round(),
            open_s: report.open_time.as_secs_f64(),
            conns_per_s: (conns / report.open_time.as_secs_f64().max(1e-9)).round(),
            still_open: report.still_open,
            server_warnings: warnings,
            server_errors: errors,
        }
    }
}
