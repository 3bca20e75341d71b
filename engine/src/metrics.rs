//! The admin listener: Prometheus `GET /metrics` (text exposition format
//! 0.0.4) on one plain thread, off the shards.
//!
//! Shards publish their numbers through [`ShardStats`], one per shard, each
//! written by its shard's thread alone with `Relaxed` stores and adds: no
//! lock and no shared cache line on the hot path. The admin thread reads
//! them only when scraped, along with the process's memory, CPU time and
//! descriptors from `/proc/self`.
//!
//! It serves one request per connection, one connection at a time, each
//! bounded in size (`REQUEST_BYTES_MAX`) and time (`REQUEST_TIMEOUT`): an
//! admin port is for a scraper on a trusted network, and a stuck client
//! delays the next scrape, never a shard.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::http::{self, Request, Status};
use crate::push::{PushShared, PushStats};

/// Bytes of one admin request (head and body) read at most.
const REQUEST_BYTES_MAX: usize = 8 * 1024;

/// How long one admin connection may take to send its request, and to take
/// the response.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The Prometheus text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One shard's published numbers. Only the shard's thread writes them.
/// Aligned to two cache lines so shards never write the same one.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct ShardStats {
    /// Open connections (the shard's connection table).
    pub connections: AtomicU64,
    /// Chat sessions homed here.
    pub sessions: AtomicU64,
    /// Messages the conversations owned here made durable (each once,
    /// group events included); their acks and fan-out follow.
    pub messages_appended: AtomicU64,
    /// Live `msg` frames queued to devices homed here (after `synced`).
    pub deliveries: AtomicU64,
    /// Router messages dropped past a full backlog.
    pub router_dropped: AtomicU64,
    /// Connections closed with 4002 (send queue overflow).
    pub slow_consumer_closes: AtomicU64,
    /// Connections refused with 429: too many from their address.
    pub ip_limit_refusals: AtomicU64,
    /// Chat connections closed with 4004: too many for their user.
    pub user_limit_closes: AtomicU64,
    /// `send`s refused with `rate_limited`.
    pub rate_limited_sends: AtomicU64,
    /// Connections closed with 4003 after too many refused sends.
    pub rate_limit_closes: AtomicU64,
    /// Chat upgrades accepted (101).
    pub handshakes: AtomicU64,
    /// Chat upgrades refused for the token (401).
    pub auth_failures: AtomicU64,
    /// Chat upgrades refused for anything else (400, 426, …).
    pub handshake_failures: AtomicU64,
    /// Client messages received by chat sessions.
    pub messages_in: AtomicU64,
    /// Server messages queued to chat clients.
    pub messages_out: AtomicU64,
    /// Router messages waiting for this shard, plus its own backlog.
    pub router_queue_depth: AtomicU64,
    /// Error frames sent, by `ErrorCode::code()` (index 0: unused).
    pub errors: [AtomicU64; ERROR_CODES.len() + 1],
    /// Close frames sent, by [`close_index`].
    pub closes: [AtomicU64; CLOSE_CODES.len() + 1],
    /// `send` received → its `ack` queued, on the sender's home shard.
    pub send_ack: Latency,
    /// Push jobs opened, messages folded into open jobs, jobs or messages
    /// dropped by a bound, jobs kept in memory only, open jobs dropped for a
    /// device that came online (see `push::PushStats` for the forwarder's).
    pub push_created: AtomicU64,
    pub push_coalesced: AtomicU64,
    pub push_dropped: AtomicU64,
    pub push_not_durable: AtomicU64,
    pub push_cancelled: AtomicU64,
    /// Outbox records written and removed by this shard.
    pub push_outbox_written: AtomicU64,
    pub push_outbox_removed: AtomicU64,
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The error codes, in `ErrorCode::code()` order, with their names.
pub(crate) const ERROR_CODES: [(protocol::ErrorCode, &str); 10] = {
    use protocol::ErrorCode as E;
    [
        (E::BadRequest, "bad_request"),
        (E::UnsupportedVersion, "unsupported_version"),
        (E::Forbidden, "forbidden"),
        (E::NotFound, "not_found"),
        (E::RateLimited, "rate_limited"),
        (E::Overloaded, "overloaded"),
        (E::GroupFull, "group_full"),
        (E::TooManyGroups, "too_many_groups"),
        (E::Conflict, "conflict"),
        (E::Internal, "internal"),
    ]
};

/// The close codes counted one by one; any other counts as `other`.
pub(crate) const CLOSE_CODES: [u16; 15] = [
    1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 1013, 4001, 4002, 4003, 4004, 4005, 4006,
];

/// Where close code `code` is counted in [`ShardStats::closes`].
pub(crate) fn close_index(code: u16) -> usize {
    CLOSE_CODES
        .iter()
        .position(|&c| c == code)
        .unwrap_or(CLOSE_CODES.len())
}

/// Latency bucket bounds, µs (a Prometheus histogram's `le`s).
const LATENCY_BOUNDS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];

/// A fixed-bucket latency histogram written by one shard.
#[derive(Debug, Default)]
pub(crate) struct Latency {
    /// Per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Latency {
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

impl ShardStats {
    /// One per shard, all zero.
    pub fn for_shards(shards: u16) -> Arc<[ShardStats]> {
        (0..shards).map(|_| ShardStats::default()).collect()
    }

    /// Sets a gauge.
    pub fn set(gauge: &AtomicU64, value: usize) {
        gauge.store(u64::try_from(value).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an error frame.
    pub fn error(&self, code: protocol::ErrorCode) {
        let i = usize::from(code.code()).min(ERROR_CODES.len());
        Self::bump(&self.errors[i]);
    }

    /// Counts a close frame.
    pub fn close(&self, code: u16) {
        Self::bump(&self.closes[close_index(code)]);
    }
}

/// The running admin listener.
#[derive(Debug)]
pub(crate) struct Admin {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Admin {
    /// Binds `addr` and serves on a new thread.
    pub fn start(addr: SocketAddr, sources: Sources) -> std::io::Result<Admin> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("admin".to_owned())
            .spawn(move || serve(&listener, &sources, &stopped))?;
        Ok(Admin { addr, stop, thread })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the thread.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocking accept; it sees the flag and returns.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        if TcpStream::connect_timeout(&wake, REQUEST_TIMEOUT).is_ok() && self.thread.join().is_err()
        {
            tracing::error!("the admin thread panicked");
        }
    }
}

/// What the admin endpoints report on.
pub(crate) struct Sources {
    pub stats: Arc<[ShardStats]>,
    pub push: Option<Arc<PushShared>>,
    pub store: storage::Store,
    pub shutdown: Arc<crate::shutdown::Shutdown>,
}

fn serve(listener: &TcpListener, stats: &Sources, stop: &AtomicBool) {
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match accepted {
            Ok((stream, _)) => {
                if let Err(e) = answer(stream, stats) {
                    tracing::debug!(cause = %e, "admin request failed");
                }
            }
            Err(e) => {
                tracing::warn!(cause = %e, "admin accept failed");
                // Out of descriptors, say: do not spin.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Reads one request and answers it.
fn answer(mut stream: TcpStream, stats: &Sources) -> std::io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let mut out = Vec::new();
    loop {
        match Request::parse(&buf) {
            Ok(Some(req)) => {
                respond(&req, stats, &mut out);
                break;
            }
            Ok(None) => {}
            Err(e) => {
                e.write_response(&mut out);
                break;
            }
        }
        if buf.len() >= REQUEST_BYTES_MAX {
            http::write_text(&mut out, Status::RequestHeaderFieldsTooLarge, "too large\n");
            break;
        }
        let room = chunk.len().min(REQUEST_BYTES_MAX - buf.len());
        let n = stream.read(&mut chunk[..room])?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    stream.write_all(&out)?;
    stream.flush()
}

fn respond(req: &Request<'_>, sources: &Sources, out: &mut Vec<u8>) {
    match (req.method(), req.path()) {
        ("GET", "/metrics") => {
            let mut body = render(&sources.stats);
            render_store(&mut body, sources.store.stats());
            if let Some(push) = &sources.push {
                render_push(&mut body, &sources.stats, &push.stats);
            }
            http::write_response(out, Status::Ok, &[], CONTENT_TYPE, body.as_bytes());
        }
        ("GET", "/healthz") => http::write_text(out, Status::Ok, "ok\n"),
        ("GET", "/readyz") if sources.shutdown.is_requested() => {
            http::write_text(out, Status::ServiceUnavailable, "shutting down\n");
        }
        ("GET", "/readyz") => http::write_text(out, Status::Ok, "ready\n"),
        (_, "/metrics" | "/healthz" | "/readyz") => {
            http::write_text(out, Status::MethodNotAllowed, "use GET\n");
        }
        _ => http::write_text(out, Status::NotFound, "not found\n"),
    }
}

/// A per-shard metric: its name, type, help text and where it is kept.
struct PerShard {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    field: fn(&ShardStats) -> &AtomicU64,
}

const PER_SHARD: [PerShard; 16] = [
    PerShard {
        name: "switchboard_handshakes_total",
        kind: "counter",
        help: "Chat WebSocket upgrades accepted.",
        field: |s| &s.handshakes,
    },
    PerShard {
        name: "switchboard_auth_failures_total",
        kind: "counter",
        help: "Chat upgrades refused for their token (401).",
        field: |s| &s.auth_failures,
    },
    PerShard {
        name: "switchboard_handshake_failures_total",
        kind: "counter",
        help: "Chat upgrades refused for anything but the token.",
        field: |s| &s.handshake_failures,
    },
    PerShard {
        name: "switchboard_messages_in_total",
        kind: "counter",
        help: "Client messages received by chat sessions.",
        field: |s| &s.messages_in,
    },
    PerShard {
        name: "switchboard_messages_out_total",
        kind: "counter",
        help: "Server messages queued to chat clients.",
        field: |s| &s.messages_out,
    },
    PerShard {
        name: "switchboard_router_queue_depth",
        kind: "gauge",
        help: "Router messages waiting for each shard (its queues and its own backlog).",
        field: |s| &s.router_queue_depth,
    },
    PerShard {
        name: "switchboard_connections",
        kind: "gauge",
        help: "Open connections per shard.",
        field: |s| &s.connections,
    },
    PerShard {
        name: "switchboard_sessions",
        kind: "gauge",
        help: "Chat sessions homed on each shard.",
        field: |s| &s.sessions,
    },
    PerShard {
        name: "switchboard_messages_appended_total",
        kind: "counter",
        help: "Messages made durable by the conversations each shard owns.",
        field: |s| &s.messages_appended,
    },
    PerShard {
        name: "switchboard_deliveries_total",
        kind: "counter",
        help: "Live messages queued to devices homed on each shard.",
        field: |s| &s.deliveries,
    },
    PerShard {
        name: "switchboard_router_dropped_total",
        kind: "counter",
        help: "Router messages dropped past a full backlog (live deliveries lost, not data).",
        field: |s| &s.router_dropped,
    },
    PerShard {
        name: "switchboard_slow_consumer_closes_total",
        kind: "counter",
        help: "Connections closed because their send queue overflowed.",
        field: |s| &s.slow_consumer_closes,
    },
    PerShard {
        name: "switchboard_ip_limit_refusals_total",
        kind: "counter",
        help: "Connections refused (429): too many open from their address.",
        field: |s| &s.ip_limit_refusals,
    },
    PerShard {
        name: "switchboard_user_limit_closes_total",
        kind: "counter",
        help: "Chat connections closed (4004): too many open for their user.",
        field: |s| &s.user_limit_closes,
    },
    PerShard {
        name: "switchboard_rate_limited_sends_total",
        kind: "counter",
        help: "Sends refused with rate_limited.",
        field: |s| &s.rate_limited_sends,
    },
    PerShard {
        name: "switchboard_rate_limit_closes_total",
        kind: "counter",
        help: "Connections closed (4003) after too many refused sends.",
        field: |s| &s.rate_limit_closes,
    },
];

/// The exposition text of the process and every shard.
pub(crate) fn render(stats: &[ShardStats]) -> String {
    let mut text = String::with_capacity(2048 + stats.len() * 512);
    render_process(&mut text, &Process::read());
    for m in &PER_SHARD {
        header(&mut text, m.name, m.kind, m.help);
        for (shard, s) in stats.iter().enumerate() {
            let value = (m.field)(s).load(Ordering::Relaxed);
            let _ = writeln!(text, "{}{{shard=\"{shard}\"}} {value}", m.name);
        }
    }
    render_labelled(&mut text, stats);
    render_latency(
        &mut text,
        "switchboard_send_ack_seconds",
        "send received → ack queued, on the sender's home shard.",
        stats,
        |s| &s.send_ack,
    );
    text
}

/// Errors and closes by kind, summed over the shards.
fn render_labelled(text: &mut String, stats: &[ShardStats]) {
    let sum = |f: &dyn Fn(&ShardStats) -> u64| stats.iter().map(f).sum::<u64>();
    header(
        text,
        "switchboard_errors_total",
        "counter",
        "Error frames sent, by code.",
    );
    for (i, (_, name)) in ERROR_CODES.iter().enumerate() {
        let n = sum(&|s| s.errors[i + 1].load(Ordering::Relaxed));
        let _ = writeln!(text, "switchboard_errors_total{{code=\"{name}\"}} {n}");
    }
    header(
        text,
        "switchboard_closes_total",
        "counter",
        "WebSocket close frames sent, by close code.",
    );
    for i in 0..=CLOSE_CODES.len() {
        let n = sum(&|s| s.closes[i].load(Ordering::Relaxed));
        let code = CLOSE_CODES
            .get(i)
            .map_or_else(|| "other".to_owned(), u16::to_string);
        let _ = writeln!(text, "switchboard_closes_total{{code=\"{code}\"}} {n}");
    }
}

/// A Prometheus histogram (seconds) merged over the shards.
fn render_latency(
    text: &mut String,
    name: &str,
    help: &str,
    stats: &[ShardStats],
    field: fn(&ShardStats) -> &Latency,
) {
    header(text, name, "histogram", help);
    let les: Vec<String> = LATENCY_BOUNDS_US
        .iter()
        .map(|us| format!("{}", *us as f64 / 1e6))
        .collect();
    let counts = (0..=LATENCY_BOUNDS_US.len()).map(|i| {
        stats
            .iter()
            .map(|s| field(s).buckets[i].load(Ordering::Relaxed))
            .sum::<u64>()
    });
    let sum_us: u64 = stats
        .iter()
        .map(|s| field(s).sum_us.load(Ordering::Relaxed))
        .sum();
    buckets(text, name, &les, counts, &(sum_us as f64 / 1e6).to_string());
}

/// The storage writer's group commits: totals, and histograms of commit
/// latency and batch size.
fn render_store(text: &mut String, w: &storage::WriterStats) {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let rows: [(&str, &str, String); 5] = [
        (
            "switchboard_store_commits_total",
            "Group commits (each one atomic batch and one journal persist).",
            get(&w.batches).to_string(),
        ),
        (
            "switchboard_store_write_requests_total",
            "Write requests committed.",
            get(&w.requests).to_string(),
        ),
        (
            "switchboard_store_ops_total",
            "Store operations committed.",
            get(&w.ops).to_string(),
        ),
        (
            "switchboard_store_refused_total",
            "Write requests refused (invalid, or the store poisoned).",
            get(&w.refused).to_string(),
        ),
        (
            "switchboard_store_commit_seconds_total",
            "Time spent in group commits, persist included.",
            format!("{:.6}", get(&w.commit_nanos) as f64 / 1e9),
        ),
    ];
    for (name, help, v) in rows {
        header(text, name, "counter", help);
        let _ = writeln!(text, "{name} {v}");
    }
    let seconds: Vec<String> = storage::COMMIT_BOUNDS_US
        .iter()
        .map(|us| format!("{}", *us as f64 / 1e6))
        .collect();
    let sum = format!("{:.6}", get(&w.commit_nanos) as f64 / 1e9);
    let name = "switchboard_store_commit_latency_seconds";
    header(
        text,
        name,
        "histogram",
        "Group commit latency (one atomic batch and one persist).",
    );
    buckets(text, name, &seconds, w.commit_buckets.iter().map(get), &sum);
    let sizes: Vec<String> = storage::BATCH_BOUNDS.iter().map(u64::to_string).collect();
    let name = "switchboard_store_batch_requests";
    header(text, name, "histogram", "Write requests per group commit.");
    buckets(
        text,
        name,
        &sizes,
        w.batch_buckets.iter().map(get),
        &get(&w.requests).to_string(),
    );
}

/// A Prometheus histogram from per-bucket counts (`les` without `+Inf`).
fn buckets(
    text: &mut String,
    name: &str,
    les: &[String],
    counts: impl IntoIterator<Item = u64>,
    sum: &str,
) {
    let mut cumulative = 0;
    for (i, count) in counts.into_iter().enumerate() {
        cumulative += count;
        let le = les.get(i).map_or("+Inf", String::as_str);
        let _ = writeln!(text, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(text, "{name}_sum {sum}");
    let _ = writeln!(text, "{name}_count {cumulative}");
}

/// A push metric kept by the shards: name, help, and where.
type ShardPush = (&'static str, &'static str, fn(&ShardStats) -> &AtomicU64);

const SHARD_PUSH: [ShardPush; 5] = [
    (
        "switchboard_push_jobs_created_total",
        "Push jobs opened (one per device and conversation window).",
        |s| &s.push_created,
    ),
    (
        "switchboard_push_coalesced_total",
        "Messages folded into an open push job.",
        |s| &s.push_coalesced,
    ),
    (
        "switchboard_push_dropped_total",
        "Push jobs or messages dropped by a bound.",
        |s| &s.push_dropped,
    ),
    (
        "switchboard_push_not_durable_total",
        "Push jobs whose outbox write failed (kept in memory only).",
        |s| &s.push_not_durable,
    ),
    (
        "switchboard_push_cancelled_total",
        "Open push jobs dropped because their device came online.",
        |s| &s.push_cancelled,
    ),
];

/// A push metric kept by the forwarder: name, type, help, and where.
type ForwarderPush = (
    &'static str,
    &'static str,
    &'static str,
    fn(&PushStats) -> &AtomicU64,
);

const FORWARDER_PUSH: [ForwarderPush; 5] = [
    (
        "switchboard_push_forwarded_total",
        "counter",
        "Push jobs sent to pushd.",
        |p| &p.forwarded,
    ),
    (
        "switchboard_push_acked_total",
        "counter",
        "Push jobs pushd stored (removed from the outbox).",
        |p| &p.acked,
    ),
    (
        "switchboard_push_read_elsewhere_total",
        "counter",
        "Push jobs skipped: the user had read the conversation.",
        |p| &p.read_elsewhere,
    ),
    (
        "switchboard_push_invalid_tokens_total",
        "counter",
        "Push tokens removed after the provider rejected them.",
        |p| &p.invalid_tokens,
    ),
    (
        "switchboard_push_linked",
        "gauge",
        "Whether the forwarder is connected to pushd.",
        |p| &p.linked,
    ),
];

/// The push counters (present when pushd is configured): the shards',
/// summed, the forwarder's, and the outbox depth from both.
fn render_push(text: &mut String, stats: &[ShardStats], p: &PushStats) {
    let sum = |f: fn(&ShardStats) -> &AtomicU64| -> u64 {
        stats.iter().map(|s| f(s).load(Ordering::Relaxed)).sum()
    };
    for (name, help, field) in SHARD_PUSH {
        header(text, name, "counter", help);
        let _ = writeln!(text, "{name} {}", sum(field));
    }
    for (name, kind, help, field) in FORWARDER_PUSH {
        header(text, name, kind, help);
        let _ = writeln!(text, "{name} {}", field(p).load(Ordering::Relaxed));
    }
    let added = p.outbox_found.load(Ordering::Relaxed) + sum(|s| &s.push_outbox_written);
    let removed = p.outbox_removed.load(Ordering::Relaxed) + sum(|s| &s.push_outbox_removed);
    let name = "switchboard_push_outbox_depth";
    header(
        text,
        name,
        "gauge",
        "Push jobs in the outbox (not yet stored by pushd).",
    );
    let _ = writeln!(text, "{name} {}", added.saturating_sub(removed));
}

/// The process metrics; one left out if `/proc` did not give it.
fn render_process(text: &mut String, process: &Process) {
    let mut metric = |name: &str, kind: &str, help: &str, value: Option<String>| {
        if let Some(value) = value {
            header(text, name, kind, help);
            let _ = writeln!(text, "{name} {value}");
        }
    };
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        process.rss_bytes.map(|v| v.to_string()),
    );
    metric(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        process.cpu_seconds.map(|v| format!("{v:.2}")),
    );
    metric(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        process.open_fds.map(|v| v.to_string()),
    );
}

fn header(text: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(text, "# HELP {name} {help}");
    let _ = writeln!(text, "# TYPE {name} {kind}");
}

/// The process's own numbers from `/proc/self`; `None` where unreadable
/// (not Linux, or `/proc` not mounted), and left out of the text.
#[derive(Debug, Default)]
struct Process {
    rss_bytes: Option<u64>,
    cpu_seconds: Option<f64>,
    open_fds: Option<usize>,
}

impl Process {
    fn read() -> Process {
        let rss_bytes = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| rss_pages(&s))
            .map(|pages| pages * page_bytes());
        let cpu_seconds = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| cpu_ticks(&s))
            .map(|ticks| ticks as f64 / rustix::param::clock_ticks_per_second().max(1) as f64);
        // Minus one: the descriptor of the directory being listed.
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count().saturating_sub(1));
        Process {
            rss_bytes,
            cpu_seconds,
            open_fds,
        }
    }
}

fn page_bytes() -> u64 {
    u64::try_from(rustix::param::page_size()).unwrap_or(4096)
}

/// The resident pages in `/proc/self/statm` (its second field).
fn rss_pages(statm: &str) -> Option<u64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

/// `utime + stime` in clock ticks from `/proc/self/stat` (fields 14 and
/// 15). The command name (field 2) is in parentheses and may hold spaces
/// and parentheses, so fields are counted from the last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3 (state): utime is the 12th field after it.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields_parse() {
        let stat = "1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 9 0 100 1000000 500 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("garbage"), None);
        assert_eq!(rss_pages("1000 250 100 1 0 300 0\n"), Some(250));
        assert_eq!(rss_pages(""), None);
    }

    #[test]
    fn render_has_every_metric_with_help_and_type() {
        let stats = ShardStats::for_shards(2);
        ShardStats::set(&stats[1].connections, 3);
        ShardStats::bump(&stats[0].deliveries);
        let text = render(&stats);
        assert!(text.contains("switchboard_connections{shard=\"1\"} 3\n"));
        assert!(text.contains("switchboard_deliveries_total{shard=\"0\"} 1\n"));
        assert!(text.contains("# TYPE switchboard_deliveries_total counter\n"));
        assert!(text.contains("# TYPE process_resident_memory_bytes gauge\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("name and value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
