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
    pub fn start(
        addr: SocketAddr,
        stats: Arc<[ShardStats]>,
        push: Option<Arc<PushShared>>,
    ) -> std::io::Result<Admin> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("admin".to_owned())
            .spawn(move || serve(&listener, &Sources { stats, push }, &stopped))?;
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

/// What `/metrics` reports on.
struct Sources {
    stats: Arc<[ShardStats]>,
    push: Option<Arc<PushShared>>,
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
            if let Some(push) = &sources.push {
                render_push(&mut body, &push.stats);
            }
            http::write_response(out, Status::Ok, &[], CONTENT_TYPE, body.as_bytes());
        }
        (_, "/metrics") => http::write_text(out, Status::MethodNotAllowed, "use GET\n"),
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

const PER_SHARD: [PerShard; 6] = [
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
    text
}

/// The push forwarder's counters (present when pushd is configured).
fn render_push(text: &mut String, p: &PushStats) {
    let rows: [(&str, &str, &str, &AtomicU64); 10] = [
        (
            "switchboard_push_jobs_created_total",
            "counter",
            "Push jobs opened (one per device and conversation window).",
            &p.created,
        ),
        (
            "switchboard_push_coalesced_total",
            "counter",
            "Messages folded into an open push job.",
            &p.coalesced,
        ),
        (
            "switchboard_push_dropped_total",
            "counter",
            "Push jobs or messages dropped by a bound.",
            &p.dropped,
        ),
        (
            "switchboard_push_not_durable_total",
            "counter",
            "Push jobs whose outbox write failed (kept in memory only).",
            &p.not_durable,
        ),
        (
            "switchboard_push_cancelled_total",
            "counter",
            "Open push jobs dropped because their device came online.",
            &p.cancelled,
        ),
        (
            "switchboard_push_forwarded_total",
            "counter",
            "Push jobs sent to pushd.",
            &p.forwarded,
        ),
        (
            "switchboard_push_acked_total",
            "counter",
            "Push jobs pushd stored (removed from the outbox).",
            &p.acked,
        ),
        (
            "switchboard_push_read_elsewhere_total",
            "counter",
            "Push jobs skipped: the user had read the conversation.",
            &p.read_elsewhere,
        ),
        (
            "switchboard_push_invalid_tokens_total",
            "counter",
            "Push tokens removed after the provider rejected them.",
            &p.invalid_tokens,
        ),
        (
            "switchboard_push_linked",
            "gauge",
            "Whether the forwarder is connected to pushd.",
            &p.linked,
        ),
    ];
    for (name, kind, help, v) in rows {
        header(text, name, kind, help);
        let _ = writeln!(text, "{name} {}", v.load(Ordering::Relaxed));
    }
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
