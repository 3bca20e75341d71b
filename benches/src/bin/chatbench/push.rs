//! `chatbench push`: push notifications end to end, through the engine's
//! outbox and forwarder, `pushd` and `pushd mock-provider`, all three
//! started here as processes.
//!
//! Setup: users 2..=N+1 (device 1 each) connect, register a push token
//! (APNs or FCM) and disconnect; a sender (user 1) opens a direct
//! conversation with each; then we wait until the engine's
//! `switchboard_sessions` says only the sender is left (so every receiver is
//! offline) and the forwarder is linked to pushd. Run: the sender posts M
//! messages at R/s, open loop, round-robin over the conversations, with at
//! most [`WINDOW`] unacknowledged. Every message to an offline device with a
//! token opens a push job or joins the open one of its window
//! (`--push-coalesce`). The run ends when pushd's `pushd_jobs_sent_total`
//! (notifications the provider accepted) reaches the engine's
//! `switchboard_push_jobs_created_total`, polled every [`POLL`].

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::ValueEnum;
use protocol::{
    ClientMsg, ClientMsgId, ConvId, DeviceId, Encoding, Platform, RequestId, ServerMsg, UserId,
};
use rustix::process::{Pid, Signal};
use serde::Serialize;

use crate::conn::Conn;
use crate::server::{self, Server, ServerOptions};
use crate::stats::{Latencies, Summary, round1, round3};

/// Lifetime of the tokens the bench mints.
const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// How long each process has to come up (address file, log lines).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long pushd and the mock have between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Sends (and `direct_open`s) the sender keeps unanswered at most.
const WINDOW: u64 = 256;

/// Threads registering the receivers' tokens, one connection at a time each.
const REGISTER_THREADS: u64 = 4;

/// Bounds each setup step: one answer, all `direct_open`s, the settle.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long after the last send every ack must be in, and pushd must have
/// sent every job the engine created.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// How often `/metrics` is polled while waiting.
const POLL: Duration = Duration::from_millis(50);

/// Bounds one HTTP request to an admin or control endpoint.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// A daemon's first log lines are kept whole (the startup lines we wait
/// for), then only a tail.
const LOG_HEAD_LINES: usize = 200;
const LOG_TAIL_LINES: usize = 20;

/// The fixture credentials the mock provider accepts.
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../pushd/tests/fixtures");
const APNS_KEY_FILE: &str = "AuthKey_TESTKEY123.p8";
const FCM_SERVICE_ACCOUNT: &str = "service-account.json";
const APNS_KEY_ID: &str = "TESTKEY123";
const APNS_TEAM_ID: &str = "TEAM123456";
const APNS_TOPIC: &str = "chat.switchboard.test";

/// The providers, as pushd labels its metrics.
const PROVIDERS: [&str; 2] = ["apns", "fcm"];

/// `--platform`: which provider the receivers' tokens are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Platforms {
    Apns,
    Fcm,
    /// Even users APNs, odd users FCM.
    Mixed,
}

impl Platforms {
    fn of(self, user: u64) -> Platform {
        match self {
            Platforms::Mixed if user.is_multiple_of(2) => Platform::Apns,
            Platforms::Apns => Platform::Apns,
            Platforms::Fcm | Platforms::Mixed => Platform::Fcm,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Platforms::Apns => "apns",
            Platforms::Fcm => "fcm",
            Platforms::Mixed => "mixed",
        }
    }
}

/// A device token unique per user: 64 hex digits for APNs.
fn device_token(platform: Platform, user: u64) -> String {
    match platform {
        Platform::Apns => format!("{user:064x}"),
        Platform::Fcm => format!("fcm-bench-{user}"),
    }
}

#[derive(Debug, Clone)]
pub struct PushOptions {
    pub users: usize,
    pub messages: u64,
    pub rate: f64,
    /// Passed to the server's `--push-coalesce` as is (`0s`, `2s`, `500ms`).
    pub coalesce: String,
    pub provider_latency_ms: u64,
    pub pushd: PathBuf,
    pub platform: Platforms,
    /// pushd's requests in flight per provider.
    pub concurrency: usize,
}

pub fn check_options(options: &PushOptions) -> Result<()> {
    ensure!(
        (1..=1_000_000).contains(&options.users),
        "--users must be 1 to 1,000,000"
    );
    ensure!(
        (1..=10_000_000).contains(&options.messages),
        "--messages must be 1 to 10,000,000"
    );
    ensure!(
        options.rate.is_finite() && options.rate > 0.0,
        "--rate must be a positive number of messages per second"
    );
    ensure!(options.concurrency >= 1, "--concurrency must be at least 1");
    ensure!(
        options.pushd.exists(),
        "{} is missing: build it with `cargo build --release -p pushd`, or pass --pushd",
        options.pushd.display()
    );
    Ok(())
}

/// Starts the mock provider, pushd and the server (stopped in the reverse
/// order when this returns, also on failure), runs the bench and prints
/// the report.
pub fn run(server_options: &ServerOptions, options: &PushOptions) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("chatbench-push-")
        .tempdir()
        .context("creating the push bench's directory")?;
    let mut mock = Mock::start(options, dir.path())?;
    let mut pushd = Pushd::start(options, dir.path(), mock.addr)?;
    let mut server_options = server_options.clone();
    server_options.args.extend([
        OsString::from("--push-socket"),
        pushd.socket.clone().into_os_string(),
        OsString::from("--push-coalesce"),
        OsString::from(&options.coalesce),
        OsString::from("--admin-listen"),
        OsString::from("127.0.0.1:0"),
    ]);
    let mut server = Server::start(&server_options)?;
    let outcome = measure(&mut server, &mut pushd, &mut mock, options).map_err(|err| {
        let _ = server
            .check_alive()
            .map_err(|e| eprintln!("chatbench: {e:#}"));
        let (_, _, tail) = server.stderr_summary();
        anyhow!(
            "{err:#}\nthe server's last log lines:\n{tail}\npushd's log:\n{}",
            pushd.daemon.log_text()
        )
    })?;
    print_report(&server, &pushd, options, &outcome);
    Ok(())
}

/// What the run measured, before it is printed.
#[derive(Debug)]
struct Outcome {
    setup: Duration,
    sends: SendReport,
    /// When pushd's sent total first reached the engine's created total.
    done: Instant,
    engine: EngineCounters,
    pushd: PushdCounters,
    /// Requests the mock answered 200 during the run: the notifications,
    /// and the FCM OAuth token grant (pushd asks for one on its first FCM
    /// send, which falls in the run).
    accepted: u64,
    cpu: Cpu,
    /// Per provider (apns, fcm), in ms: engine job creation → provider
    /// accepted, and pushd's request → response.
    delivery: [Option<Quantiles>; 2],
    provider: [Option<Quantiles>; 2],
}

fn measure(
    server: &mut Server,
    pushd: &mut Pushd,
    mock: &mut Mock,
    options: &PushOptions,
) -> Result<Outcome> {
    let setup_start = Instant::now();
    let admin = engine_admin(server)?;
    register_devices(server, options)?;
    let token = client::mint_token(server.secret(), UserId(1), DeviceId(1), TOKEN_TTL);
    let mut sender = Conn::connect(server.addr(), &token, Encoding::Binary)
        .context("connecting the sender (user 1)")?;
    let convs = open_convs(&mut sender, options.users)?;
    wait_settled(server, admin)?;
    let setup = setup_start.elapsed();
    eprintln!(
        "chatbench: {} devices registered and offline, {} conversations open ({:.1} s); sending",
        options.users,
        convs.len(),
        setup.as_secs_f64()
    );
    let accepted_before = mock_accepted(mock.addr)?;
    let cpu_before = Cpu::sample(server, pushd, mock)?;
    let sends = Sending::new(&mut sender, options.messages).run(&convs, options.rate)?;
    let (done, engine, pushd_counters) = wait_drained(server, pushd, mock, admin, &sends)?;
    let cpu = Cpu::sample(server, pushd, mock)?.minus(&cpu_before);
    let accepted = mock_accepted(mock.addr)?.saturating_sub(accepted_before);
    let metrics = http_get(pushd.admin, "/metrics").context("reading pushd's /metrics")?;
    sender.close();
    Ok(Outcome {
        setup,
        sends,
        done,
        engine,
        pushd: pushd_counters,
        accepted,
        cpu,
        delivery: PROVIDERS.map(|p| Quantiles::read(&metrics, "pushd_delivery_seconds", p)),
        provider: PROVIDERS.map(|p| Quantiles::read(&metrics, "pushd_provider_latency_seconds", p)),
    })
}

/// The server's admin address, from its `admin listening` line (logged
/// right after `listening`).
fn engine_admin(server: &mut Server) -> Result<SocketAddr> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(addr) = server.admin_addr() {
            return Ok(addr);
        }
        server.check_alive()?;
        ensure!(
            Instant::now() < deadline,
            "the server logged no `admin listening addr=...` within {START_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Setup

/// Users 2..=N+1 each connect, register a token and disconnect, on
/// [`REGISTER_THREADS`] threads.
fn register_devices(server: &Server, options: &PushOptions) -> Result<()> {
    let (addr, secret, platform) = (server.addr(), server.secret(), options.platform);
    let last = options.users as u64 + 1;
    std::thread::scope(|scope| {
        let handles = (0..REGISTER_THREADS)
            .map(|t| {
                scope.spawn(move || {
                    let mut user = 2 + t;
                    while user <= last {
                        register_one(addr, secret, user, platform.of(user))?;
                        user += REGISTER_THREADS;
                    }
                    Ok::<(), anyhow::Error>(())
                })
            })
            .collect::<Vec<_>>();
        for handle in handles {
            handle
                .join()
                .map_err(|_| anyhow!("a registering thread panicked"))??;
        }
        Ok(())
    })
}

fn register_one(addr: SocketAddr, secret: &[u8], user: u64, platform: Platform) -> Result<()> {
    let token = client::mint_token(secret, UserId(user), DeviceId(1), TOKEN_TTL);
    let mut conn = Conn::connect(addr, &token, Encoding::Binary)
        .with_context(|| format!("connecting user {user}"))?;
    let rid = RequestId(1);
    conn.send(&ClientMsg::PushRegister {
        rid,
        platform,
        token: device_token(platform, user),
    })
    .with_context(|| format!("user {user}: sending push_register"))?;
    let deadline = Instant::now() + SETUP_TIMEOUT;
    loop {
        match conn.recv(deadline)? {
            None => bail!("user {user}: no answer to push_register within {SETUP_TIMEOUT:?}"),
            Some(ServerMsg::Ok { rid: r }) if r == rid => break,
            Some(msg @ ServerMsg::Error { .. }) => bail!("user {user}: push_register: {msg:?}"),
            Some(_) => {}
        }
    }
    conn.close();
    Ok(())
}

/// `direct_open` with users 2..=users+1, [`WINDOW`] at a time; request id
/// i answers for user i+1.
fn open_convs(conn: &mut Conn, users: usize) -> Result<Vec<ConvId>> {
    let mut convs: Vec<Option<ConvId>> = vec![None; users];
    let (mut asked, mut got) = (0_usize, 0_usize);
    let deadline = Instant::now() + SETUP_TIMEOUT;
    while got < users {
        while asked < users && ((asked - got) as u64) < WINDOW {
            asked += 1;
            let rid = RequestId(u32::try_from(asked).context("too many users for request ids")?);
            conn.send(&ClientMsg::DirectOpen {
                rid,
                user: UserId(asked as u64 + 1),
            })
            .context("sending direct_open")?;
        }
        let msg = conn.recv(deadline)?.with_context(|| {
            format!("{got} of {users} direct_open answered within {SETUP_TIMEOUT:?}")
        })?;
        match msg {
            ServerMsg::Conv { rid, conv } => {
                let slot = usize::try_from(rid.0)
                    .ok()
                    .and_then(|i| i.checked_sub(1))
                    .and_then(|i| convs.get_mut(i))
                    .with_context(|| format!("a conv answer for rid {} never asked", rid.0))?;
                ensure!(slot.is_none(), "a second conv answer for rid {}", rid.0);
                *slot = Some(conv.conv);
                got += 1;
            }
            ServerMsg::Error { .. } => bail!("direct_open failed: {msg:?}"),
            _ => {}
        }
    }
    Ok(convs.into_iter().flatten().collect())
}

/// Waits until the engine has let go of every receiver's session (only the
/// sender's is left) and its forwarder is linked to pushd: a message to a
/// device whose session is still there would push nothing.
fn wait_settled(server: &mut Server, admin: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    loop {
        let text = http_get(admin, "/metrics").context("reading the server's /metrics")?;
        let sessions = metric_sum(&text, "switchboard_sessions");
        let linked = metric::<u64>(&text, "switchboard_push_linked").unwrap_or(0);
        if sessions <= 1.0 && linked == 1 {
            return Ok(());
        }
        server.check_alive()?;
        ensure!(
            Instant::now() < deadline,
            "after {SETUP_TIMEOUT:?} the server still has {sessions} sessions (want 1, the \
             sender's) and switchboard_push_linked is {linked} (want 1)"
        );
        std::thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------
// The run

/// What the sender measured.
#[derive(Debug)]
struct SendReport {
    first: Instant,
    last: Instant,
    acks: Latencies,
    /// How late each send left against its schedule.
    lag: Latencies,
}

/// The sender's open loop: sends on schedule, acks as they come.
#[derive(Debug)]
struct Sending<'a> {
    conn: &'a mut Conn,
    total: u64,
    /// Sends so far; message k (0-based) has cmid k+1.
    sent: u64,
    acked: u64,
    sent_at: Vec<Option<Instant>>,
    acks: Latencies,
    lag: Latencies,
}

impl<'a> Sending<'a> {
    fn new(conn: &'a mut Conn, total: u64) -> Sending<'a> {
        Sending {
            conn,
            total,
            sent: 0,
            acked: 0,
            sent_at: vec![None; usize::try_from(total).unwrap_or(0)],
            acks: Latencies::new(),
            lag: Latencies::new(),
        }
    }

    /// Sends every message at `rate` per second, round-robin over `convs`,
    /// then waits for the remaining acks.
    fn run(mut self, convs: &[ConvId], rate: f64) -> Result<SendReport> {
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(self.total as f64 / rate) + DRAIN_TIMEOUT;
        let mut last = start;
        for k in 0..self.total {
            let due = start + Duration::from_secs_f64(k as f64 / rate);
            self.wait_turn(due, deadline)?;
            let conv = convs[usize::try_from(k).unwrap_or(0) % convs.len()];
            self.conn
                .send(&ClientMsg::Send {
                    conv,
                    cmid: ClientMsgId(k + 1),
                    body: format!("bench message {}", k + 1),
                })
                .with_context(|| format!("sending message {}", k + 1))?;
            last = Instant::now();
            self.sent_at[index(k + 1)] = Some(last);
            self.sent += 1;
            self.lag
                .record_nanos(nanos(last.saturating_duration_since(due)));
        }
        while self.acked < self.total {
            self.receive(deadline, deadline)?;
        }
        Ok(SendReport {
            first: start,
            last,
            acks: self.acks,
            lag: self.lag,
        })
    }

    /// Handles acks until `due` has come and the window has room.
    fn wait_turn(&mut self, due: Instant, deadline: Instant) -> Result<()> {
        loop {
            let full = self.sent - self.acked >= WINDOW;
            if !full && Instant::now() >= due {
                return Ok(());
            }
            self.receive(if full { deadline } else { due }, deadline)?;
        }
    }

    /// Handles at most one message arriving by `until`.
    fn receive(&mut self, until: Instant, deadline: Instant) -> Result<()> {
        ensure!(
            Instant::now() < deadline,
            "timed out: {} of {} messages acked ({} sent)",
            self.acked,
            self.total,
            self.sent
        );
        match self.conn.recv(until.min(deadline))? {
            Some(ServerMsg::Ack { cmid, .. }) => self.ack(cmid),
            Some(msg @ ServerMsg::Error { .. }) => bail!("the server refused a send: {msg:?}"),
            Some(_) | None => Ok(()),
        }
    }

    fn ack(&mut self, cmid: ClientMsgId) -> Result<()> {
        ensure!(
            (1..=self.sent).contains(&cmid.0),
            "ack for cmid {} which was never sent",
            cmid.0
        );
        let sent_at = self.sent_at[index(cmid.0)]
            .take()
            .with_context(|| format!("a second ack for cmid {}", cmid.0))?;
        self.acks.record_nanos(nanos(sent_at.elapsed()));
        self.acked += 1;
        Ok(())
    }
}

/// The slot of cmid `cmid` (1-based) in `sent_at`.
fn index(cmid: u64) -> usize {
    usize::try_from(cmid - 1).unwrap_or(usize::MAX)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Polls both `/metrics` until pushd has sent (the provider accepted) as
/// many jobs as the engine created and every message is accounted for
/// (opened or joined a job, or was dropped). Returns when, and the counters.
fn wait_drained(
    server: &mut Server,
    pushd: &mut Pushd,
    mock: &mut Mock,
    admin: SocketAddr,
    sends: &SendReport,
) -> Result<(Instant, EngineCounters, PushdCounters)> {
    let deadline = sends.last + DRAIN_TIMEOUT;
    let messages = sends.acks.count();
    loop {
        let engine = EngineCounters::read(admin)?;
        let counters = PushdCounters::read(pushd.admin)?;
        let now = Instant::now();
        let noted = engine.created + engine.coalesced + engine.dropped;
        if noted >= messages && counters.sent() >= engine.created {
            return Ok((now, engine, counters));
        }
        server.check_alive()?;
        pushd.daemon.check_alive()?;
        mock.daemon.check_alive()?;
        ensure!(
            now < deadline,
            "pushd sent {} notifications of the {} jobs the engine created ({noted} of \
             {messages} messages noted) within {DRAIN_TIMEOUT:?} of the last send\n  \
             engine: {engine:?}\n  pushd: {counters:?}",
            counters.sent(),
            engine.created
        );
        std::thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------
// Metrics

/// The engine's push counters.
#[derive(Debug, Clone, Copy, Default)]
struct EngineCounters {
    created: u64,
    coalesced: u64,
    dropped: u64,
    cancelled: u64,
    forwarded: u64,
    acked: u64,
    read_elsewhere: u64,
}

impl EngineCounters {
    fn read(admin: SocketAddr) -> Result<EngineCounters> {
        let text = http_get(admin, "/metrics").context("reading the server's /metrics")?;
        let get = |name: &str| -> Result<u64> {
            metric(&text, &format!("switchboard_push_{name}_total")).with_context(|| {
                format!("no switchboard_push_{name}_total in the server's /metrics")
            })
        };
        Ok(EngineCounters {
            created: get("jobs_created")?,
            coalesced: get("coalesced")?,
            dropped: get("dropped")?,
            cancelled: get("cancelled")?,
            forwarded: get("forwarded")?,
            acked: get("acked")?,
            read_elsewhere: get("read_elsewhere")?,
        })
    }
}

/// pushd's counters, per provider where pushd has them.
#[derive(Debug, Clone, Copy, Default)]
struct PushdCounters {
    received: u64,
    sent: [u64; 2],
    retried: [u64; 2],
    dead: [u64; 2],
    queue_depth: i64,
}

impl PushdCounters {
    fn read(admin: SocketAddr) -> Result<PushdCounters> {
        let text = http_get(admin, "/metrics").context("reading pushd's /metrics")?;
        let get = |series: &str| -> Result<u64> {
            metric(&text, series).with_context(|| format!("no {series} in pushd's /metrics"))
        };
        let per = |name: &str| -> Result<[u64; 2]> {
            Ok([
                get(&format!("{name}{{provider=\"apns\"}}"))?,
                get(&format!("{name}{{provider=\"fcm\"}}"))?,
            ])
        };
        Ok(PushdCounters {
            received: get("pushd_jobs_received_total")?,
            sent: per("pushd_jobs_sent_total")?,
            retried: per("pushd_jobs_retried_total")?,
            dead: per("pushd_jobs_dead_total")?,
            queue_depth: metric(&text, "pushd_queue_depth")
                .context("no pushd_queue_depth in pushd's /metrics")?,
        })
    }

    fn sent(&self) -> u64 {
        self.sent.iter().sum()
    }
}

/// p50, p90, p99 and p99.9 of a pushd summary, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
struct Quantiles {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
}

impl Quantiles {
    /// `None` if `provider` has no samples (pushd then prints no quantiles).
    fn read(text: &str, name: &str, provider: &str) -> Option<Quantiles> {
        let q = |q: &str| {
            metric::<f64>(
                text,
                &format!("{name}{{provider=\"{provider}\",quantile=\"{q}\"}}"),
            )
            .map(|s| round1(s * 1000.0))
        };
        Some(Quantiles {
            p50: q("0.5")?,
            p90: q("0.9")?,
            p99: q("0.99")?,
            p999: q("0.999")?,
        })
    }

    fn line(q: Option<&Quantiles>, name: &str) -> String {
        match q {
            Some(q) => format!(
                "  {name:<14} p50 {:>9.1}  p90 {:>9.1}  p99 {:>9.1}  p99.9 {:>9.1}",
                q.p50, q.p90, q.p99, q.p999
            ),
            None => format!("  {name:<14} (no samples)"),
        }
    }
}

/// The value of the line of Prometheus text `text` that is `series` (name
/// and labels) followed by a space.
fn metric<T: FromStr>(text: &str, series: &str) -> Option<T> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// The sum over every label set of metric `name`.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|r| r.starts_with('{') || r.starts_with(' '))
        .filter_map(|r| {
            r.rsplit_once(' ')
                .and_then(|(_, v)| v.trim().parse::<f64>().ok())
        })
        .sum()
}

/// Notifications (and OAuth token grants) the mock answered 200 so far.
fn mock_accepted(addr: SocketAddr) -> Result<u64> {
    let body = http_get(addr, "/control/stats").context("reading the mock's /control/stats")?;
    let stats: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("/control/stats is not JSON: {body}"))?;
    stats["accepted"]
        .as_u64()
        .with_context(|| format!("no `accepted` count in /control/stats: {body}"))
}

/// `GET path` over HTTP/1.1 with `Connection: close`; the body of a 200.
fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .with_context(|| format!("sending GET {path} to {addr}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer to GET {path} from {addr}"))?;
    let text = String::from_utf8(raw).context("a non-UTF-8 HTTP answer")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP header in the answer to GET {path}: {text:?}"))?;
    ensure!(
        head.split_whitespace().nth(1) == Some("200"),
        "GET http://{addr}{path}: {head}"
    );
    ensure!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "GET http://{addr}{path}: a chunked answer"
    );
    Ok(body.to_owned())
}

// ---------------------------------------------------------------------------
// CPU

/// CPU time (user + system) used by each process.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    server: Duration,
    pushd: Duration,
    mock: Duration,
    /// This process: the client side shares the machine's cores.
    client: Duration,
}

impl Cpu {
    fn sample(server: &Server, pushd: &Pushd, mock: &Mock) -> Result<Cpu> {
        Ok(Cpu {
            server: server.cpu_time()?,
            pushd: pushd.daemon.cpu_time()?,
            mock: mock.daemon.cpu_time()?,
            client: server::cpu_time("self")?,
        })
    }

    fn minus(&self, before: &Cpu) -> Cpu {
        Cpu {
            server: self.server.saturating_sub(before.server),
            pushd: self.pushd.saturating_sub(before.pushd),
            mock: self.mock.saturating_sub(before.mock),
            client: self.client.saturating_sub(before.client),
        }
    }
}

// ---------------------------------------------------------------------------
// Processes

/// What a daemon wrote to stderr: its first lines, then a tail.
#[derive(Debug, Default)]
struct DaemonLog {
    head: Vec<String>,
    tail: VecDeque<String>,
    warnings: u64,
    errors: u64,
}

/// A child process with its stderr drained; stopped (SIGTERM, then
/// SIGKILL) when dropped.
#[derive(Debug)]
struct Daemon {
    name: &'static str,
    child: Child,
    log: Arc<Mutex<DaemonLog>>,
    drain: Option<JoinHandle<()>>,
}

impl Daemon {
    fn spawn(mut command: Command, name: &'static str) -> Result<Daemon> {
        // Our own environment must not configure pushd behind our back.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PUSHD_") {
                command.env_remove(key);
            }
        }
        command
            .env(
                "PUSHD_LOG",
                "info,fjall=warn,lsm_tree=warn,hyper=warn,reqwest=warn,h2=warn",
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().with_context(|| {
            format!(
                "starting {name} ({})",
                command.get_program().to_string_lossy()
            )
        })?;
        let stderr = child
            .stderr
            .take()
            .context("the daemon's stderr is piped")?;
        let mut daemon = Daemon {
            name,
            child,
            log: Arc::new(Mutex::new(DaemonLog::default())),
            drain: None,
        };
        let log = daemon.log.clone();
        daemon.drain = Some(
            std::thread::Builder::new()
                .name(format!("{name}-stderr"))
                .spawn(move || drain_stderr(stderr, &log))
                .context("spawning a stderr reader")?,
        );
        Ok(daemon)
    }

    fn lock(&self) -> MutexGuard<'_, DaemonLog> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cpu_time(&self) -> Result<Duration> {
        server::cpu_time(&self.child.id().to_string())
    }

    fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait().context("polling a daemon")? {
            None => Ok(()),
            Some(status) => Err(anyhow!(
                "{} exited ({status}); its log:\n{}",
                self.name,
                self.log_text()
            )),
        }
    }

    /// The first line logged that contains `needle`, waiting for it.
    fn wait_line(&mut self, needle: &str) -> Result<String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let found = self
                .lock()
                .head
                .iter()
                .find(|l| l.contains(needle))
                .cloned();
            if let Some(line) = found {
                return Ok(line);
            }
            self.check_alive()?;
            ensure!(
                Instant::now() < deadline,
                "{} logged no `{needle}` line within {START_TIMEOUT:?}; its log:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first and the last lines logged.
    fn log_text(&self) -> String {
        let log = self.lock();
        let mut lines: Vec<&str> = log
            .head
            .iter()
            .take(LOG_TAIL_LINES)
            .map(String::as_str)
            .collect();
        if log.head.len() > LOG_TAIL_LINES || !log.tail.is_empty() {
            lines.push("…");
        }
        let skip = log
            .head
            .len()
            .saturating_sub(LOG_TAIL_LINES)
            .max(LOG_TAIL_LINES);
        lines.extend(log.head.iter().skip(skip).map(String::as_str));
        lines.extend(log.tail.iter().map(String::as_str));
        lines.join("\n")
    }

    fn counts(&self) -> (u64, u64) {
        let log = self.lock();
        (log.warnings, log.errors)
    }

    /// SIGTERM, up to [`STOP_GRACE`] for a clean exit, then SIGKILL.
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Some(pid) = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw) {
            // Our own child, not yet reaped, so the pid is still ours.
            let _ = rustix::process::kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "chatbench: {} ignored SIGTERM for {STOP_GRACE:?}; killing it",
            self.name
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
    }
}

fn drain_stderr(stderr: ChildStderr, log: &Mutex<DaemonLog>) {
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
        if line.contains(" WARN ") {
            log.warnings += 1;
        }
        if line.contains(" ERROR ") {
            log.errors += 1;
        }
        if log.head.len() < LOG_HEAD_LINES {
            log.head.push(line);
            continue;
        }
        if log.tail.len() == LOG_TAIL_LINES {
            log.tail.pop_front();
        }
        log.tail.push_back(line);
    }
}

/// `pushd mock-provider` on a loopback port, accepting the fixture credentials.
#[derive(Debug)]
struct Mock {
    daemon: Daemon,
    addr: SocketAddr,
}

impl Mock {
    fn start(options: &PushOptions, dir: &Path) -> Result<Mock> {
        let addr_file = dir.join("mock.addr");
        let mut command = Command::new(&options.pushd);
        command
            .arg("mock-provider")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--addr-file")
            .arg(&addr_file)
            .arg("--apns-key")
            .arg(Path::new(FIXTURES).join(APNS_KEY_FILE))
            .args(["--apns-key-id", APNS_KEY_ID])
            .args(["--apns-team-id", APNS_TEAM_ID])
            .args(["--apns-topic", APNS_TOPIC])
            .arg("--fcm-service-account")
            .arg(Path::new(FIXTURES).join(FCM_SERVICE_ACCOUNT))
            .args(["--latency-ms", &options.provider_latency_ms.to_string()]);
        let mut daemon = Daemon::spawn(command, "mock-provider")?;
        let deadline = Instant::now() + START_TIMEOUT;
        // The mock writes `http://IP:PORT` to the file (atomically, by rename).
        let url = loop {
            if let Ok(url) = std::fs::read_to_string(&addr_file) {
                break url;
            }
            daemon.check_alive()?;
            ensure!(
                Instant::now() < deadline,
                "mock-provider wrote no address within {START_TIMEOUT:?}; its log:\n{}",
                daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let addr = url
            .trim()
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("mock-provider wrote {url:?}, not http://IP:PORT"))?;
        Ok(Mock { daemon, addr })
    }
}

/// A running pushd with its queue in the bench's directory.
#[derive(Debug)]
struct Pushd {
    daemon: Daemon,
    admin: SocketAddr,
    socket: PathBuf,
}

impl Pushd {
    fn start(options: &PushOptions, dir: &Path, mock: SocketAddr) -> Result<Pushd> {
        let socket = dir.join("pushd.sock");
        let config = dir.join("pushd.toml");
        std::fs::write(
            &config,
            pushd_config(dir, &socket, mock, options.concurrency),
        )
        .with_context(|| format!("writing {}", config.display()))?;
        let mut command = Command::new(&options.pushd);
        command.arg("--config").arg(&config);
        let mut daemon = Daemon::spawn(command, "pushd")?;
        let line = daemon.wait_line("admin listening")?;
        let admin = line
            .split_once("addr=")
            .and_then(|(_, r)| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("no address in pushd's line {line:?}"))?;
        daemon.wait_line("engine link listening")?;
        Ok(Pushd {
            daemon,
            admin,
            socket,
        })
    }
}

/// pushd's configuration: both providers on the mock, defaults otherwise.
fn pushd_config(dir: &Path, socket: &Path, mock: SocketAddr, concurrency: usize) -> String {
    let url = format!("http://{mock}");
    let fixtures = Path::new(FIXTURES);
    format!(
        r#"socket = {socket}
data_dir = {data}
admin_listen = "127.0.0.1:0"

[apns]
key_file = {key}
key_id = "{APNS_KEY_ID}"
team_id = "{APNS_TEAM_ID}"
topic = "{APNS_TOPIC}"
primary = "{url}"
concurrency = {concurrency}

[fcm]
service_account_file = {account}
token_uri = "{url}/token"
primary = "{url}"
concurrency = {concurrency}
"#,
        socket = toml_path(socket),
        data = toml_path(&dir.join("pushd")),
        key = toml_path(&fixtures.join(APNS_KEY_FILE)),
        account = toml_path(&fixtures.join(FCM_SERVICE_ACCOUNT)),
    )
}

/// `path` as a TOML basic string.
fn toml_path(path: &Path) -> String {
    let escaped = path
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!("\"{escaped}\"")
}

// ---------------------------------------------------------------------------
// Report

fn print_report(server: &Server, pushd: &Pushd, options: &PushOptions, outcome: &Outcome) {
    let line = JsonLine::new(server, pushd, options, outcome);
    println!(
        "push: {} users ({}), {} messages at {} msg/s, coalesce {}, provider latency {} ms, \
         pushd concurrency {}; server: {} shards, durability {}",
        line.users,
        line.platform,
        line.messages,
        line.rate,
        line.coalesce,
        line.provider_latency_ms,
        line.concurrency,
        line.shards,
        line.durability
    );
    println!(
        "  setup          {:.1} s (register, direct_open, sessions gone)",
        line.setup_s
    );
    println!(
        "  sent           {} msgs in {:.3} s: {:.0} msg/s",
        line.messages, line.send_s, line.sent_per_s
    );
    println!(
        "  push jobs      {} created, {} messages coalesced into them, {} dropped; \
         pushd received {}, sent {} (apns {}, fcm {}), retried {}",
        line.jobs_created,
        line.messages_coalesced,
        line.jobs_dropped,
        line.pushd_received,
        line.pushd_sent_apns + line.pushd_sent_fcm,
        line.pushd_sent_apns,
        line.pushd_sent_fcm,
        line.pushd_retried
    );
    println!(
        "  provider       {} accepted by the mock (OAuth token grants included) in {:.3} s \
         (first send → all sent): {:.0} jobs/s; last send → all sent {:.3} s",
        line.mock_accepted, line.drain_s, line.jobs_per_s, line.tail_s
    );
    print_latencies(&line);
    println!(
        "  CPU            server {:.3} s, pushd {:.3} s, mock {:.3} s, chatbench {:.3} s",
        line.server_cpu_s, line.pushd_cpu_s, line.mock_cpu_s, line.client_cpu_s
    );
    println!(
        "  CPU per 1,000 jobs: server {:.1} ms, pushd {:.1} ms",
        line.server_cpu_ms_per_1k_jobs, line.pushd_cpu_ms_per_1k_jobs
    );
    println!(
        "  logs           server {} WARN, {} ERROR; pushd {} WARN, {} ERROR",
        line.server_warnings, line.server_errors, line.pushd_warnings, line.pushd_errors
    );
    println!(
        "{}",
        serde_json::to_string(&line).expect("a struct of numbers and strings serializes")
    );
}

fn print_latencies(line: &JsonLine) {
    println!("  latency (µs):");
    println!("{}", line.ack_us.line("send→ack"));
    println!("{}", line.send_lag_us.line("send lag"));
    println!("  delivery, engine job created → provider accepted (ms):");
    println!(
        "{}",
        Quantiles::line(line.delivery_ms_apns.as_ref(), "apns")
    );
    println!("{}", Quantiles::line(line.delivery_ms_fcm.as_ref(), "fcm"));
    println!("  provider request → response (ms):");
    println!(
        "{}",
        Quantiles::line(line.provider_ms_apns.as_ref(), "apns")
    );
    println!("{}", Quantiles::line(line.provider_ms_fcm.as_ref(), "fcm"));
}

/// The machine-readable report, one JSON object, fields in this order.
#[derive(Debug, Serialize)]
struct JsonLine {
    bench: &'static str,
    users: usize,
    messages: u64,
    rate: f64,
    coalesce: String,
    provider_latency_ms: u64,
    platform: &'static str,
    concurrency: usize,
    shards: u16,
    durability: &'static str,
    setup_s: f64,
    /// First send → last send.
    send_s: f64,
    sent_per_s: f64,
    ack_us: Summary,
    send_lag_us: Summary,
    jobs_created: u64,
    messages_coalesced: u64,
    jobs_dropped: u64,
    jobs_cancelled: u64,
    jobs_read_elsewhere: u64,
    jobs_forwarded: u64,
    jobs_acked: u64,
    pushd_received: u64,
    pushd_sent_apns: u64,
    pushd_sent_fcm: u64,
    pushd_retried: u64,
    pushd_dead: u64,
    pushd_queue_depth: i64,
    mock_accepted: u64,
    /// First send → pushd's sent total reached the engine's created total.
    drain_s: f64,
    jobs_per_s: f64,
    /// Last send → the same.
    tail_s: f64,
    delivery_ms_apns: Option<Quantiles>,
    delivery_ms_fcm: Option<Quantiles>,
    provider_ms_apns: Option<Quantiles>,
    provider_ms_fcm: Option<Quantiles>,
    server_cpu_s: f64,
    pushd_cpu_s: f64,
    mock_cpu_s: f64,
    client_cpu_s: f64,
    server_cpu_ms_per_1k_jobs: f64,
    pushd_cpu_ms_per_1k_jobs: f64,
    server_warnings: u64,
    server_errors: u64,
    pushd_warnings: u64,
    pushd_errors: u64,
}

impl JsonLine {
    fn new(server: &Server, pushd: &Pushd, options: &PushOptions, o: &Outcome) -> JsonLine {
        let send_s = o
            .sends
            .last
            .saturating_duration_since(o.sends.first)
            .as_secs_f64();
        let drain_s = o
            .done
            .saturating_duration_since(o.sends.first)
            .as_secs_f64();
        let per_s = |n: u64, s: f64| if s > 0.0 { round1(n as f64 / s) } else { 0.0 };
        let jobs = o.engine.created.max(1) as f64;
        let per_1k = |d: Duration| round1(d.as_secs_f64() * 1e6 / jobs);
        let (server_warnings, server_errors, _) = server.stderr_summary();
        let (pushd_warnings, pushd_errors) = pushd.daemon.counts();
        JsonLine {
            bench: "push",
            users: options.users,
            messages: options.messages,
            rate: options.rate,
            coalesce: options.coalesce.clone(),
            provider_latency_ms: options.provider_latency_ms,
            platform: options.platform.as_str(),
            concurrency: options.concurrency,
            shards: server.shards(),
            durability: server.durability().as_str(),
            setup_s: round3(o.setup.as_secs_f64()),
            send_s: round3(send_s),
            sent_per_s: per_s(options.messages, send_s),
            ack_us: o.sends.acks.summary(),
            send_lag_us: o.sends.lag.summary(),
            jobs_created: o.engine.created,
            messages_coalesced: o.engine.coalesced,
            jobs_dropped: o.engine.dropped,
            jobs_cancelled: o.engine.cancelled,
            jobs_read_elsewhere: o.engine.read_elsewhere,
            jobs_forwarded: o.engine.forwarded,
            jobs_acked: o.engine.acked,
            pushd_received: o.pushd.received,
            pushd_sent_apns: o.pushd.sent[0],
            pushd_sent_fcm: o.pushd.sent[1],
            pushd_retried: o.pushd.retried.iter().sum(),
            pushd_dead: o.pushd.dead.iter().sum(),
            pushd_queue_depth: o.pushd.queue_depth,
            mock_accepted: o.accepted,
            drain_s: round3(drain_s),
            jobs_per_s: per_s(o.accepted, drain_s),
            tail_s: round3(o.done.saturating_duration_since(o.sends.last).as_secs_f64()),
            delivery_ms_apns: o.delivery[0],
            delivery_ms_fcm: o.delivery[1],
            provider_ms_apns: o.provider[0],
            provider_ms_fcm: o.provider[1],
            server_cpu_s: round3(o.cpu.server.as_secs_f64()),
            pushd_cpu_s: round3(o.cpu.pushd.as_secs_f64()),
            mock_cpu_s: round3(o.cpu.mock.as_secs_f64()),
            client_cpu_s: round3(o.cpu.client.as_secs_f64()),
            server_cpu_ms_per_1k_jobs: per_1k(o.cpu.server),
            pushd_cpu_ms_per_1k_jobs: per_1k(o.cpu.pushd),
            server_warnings,
            server_errors,
            pushd_warnings,
            pushd_errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_lines() {
        let text = "# HELP x y\nswitchboard_sessions{shard=\"0\"} 3\n\
                    switchboard_sessions{shard=\"1\"} 2\nswitchboard_sessions_total 9\n\
                    pushd_jobs_sent_total{provider=\"apns\"} 17\n\
                    pushd_delivery_seconds{provider=\"fcm\",quantile=\"0.5\"} 0.0125\n";
        assert!((metric_sum(text, "switchboard_sessions") - 5.0).abs() < 1e-9);
        assert_eq!(
            metric::<u64>(text, "pushd_jobs_sent_total{provider=\"apns\"}"),
            Some(17)
        );
        assert_eq!(metric::<u64>(text, "pushd_jobs_sent_total"), None);
        let q = Quantiles::read(
            &text.replace("0.5\"}", "0.5\"} 0.0125\nx"),
            "pushd_delivery_seconds",
            "fcm",
        );
        assert!(q.is_none(), "p90 and beyond are missing");
        let p50 = metric::<f64>(
            text,
            "pushd_delivery_seconds{provider=\"fcm\",quantile=\"0.5\"}",
        );
        assert!(p50.is_some_and(|v| (v - 0.0125).abs() < 1e-12));
        assert!(Quantiles::read(text, "pushd_delivery_seconds", "apns").is_none());
    }

    #[test]
    fn tokens_and_platforms() {
        assert_eq!(Platforms::Mixed.of(2), Platform::Apns);
        assert_eq!(Platforms::Mixed.of(3), Platform::Fcm);
        assert_eq!(device_token(Platform::Apns, 255).len(), 64);
        assert!(device_token(Platform::Apns, 255).ends_with("ff"));
        assert_eq!(device_token(Platform::Fcm, 7), "fcm-bench-7");
        assert_eq!(toml_path(Path::new("/a\"b")), "\"/a\\\"b\"");
    }
}
