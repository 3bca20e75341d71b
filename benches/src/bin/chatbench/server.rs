//! The `switchboard` process under test: started by us so that we know its
//! pid, read through `/proc/<pid>`, and always stopped when dropped.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::ValueEnum;
use rustix::process::{Pid, Signal};

/// How long the server has to log its `listening` line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stopped server has between SIGTERM and SIGKILL. Above the
/// server's default `shutdown_grace` (5 s).
const STOP_GRACE: Duration = Duration::from_secs(7);

/// Server stderr lines kept for error messages.
const STDERR_TAIL_LINES: usize = 20;

/// The server's `--durability`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    Fsync,
    Os,
    None,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Os => "os",
            Durability::None => "none",
        }
    }
}

/// How to start the server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub path: PathBuf,
    pub shards: u16,
    pub durability: Durability,
    /// Extra environment variables (`MIMALLOC_ALLOW_THP=0` for the idle bench).
    pub env: Vec<(String, String)>,
    /// Extra arguments after the bench's own (`--push-socket ...` for the
    /// push bench).
    pub args: Vec<OsString>,
}

/// What the server wrote to stderr after its `listening` line: the last
/// lines, and how many were warnings or errors.
#[derive(Debug, Default)]
struct StderrLog {
    tail: VecDeque<String>,
    warnings: u64,
    errors: u64,
    /// From the `admin listening addr=...` line, with `--admin-listen`.
    admin: Option<SocketAddr>,
}

/// A running `switchboard --dev` on a fresh data directory. Dropping it
/// stops the process (SIGTERM, then SIGKILL) and deletes the directory.
#[derive(Debug)]
pub struct Server {
    child: Child,
    addr: SocketAddr,
    secret: String,
    options: ServerOptions,
    log: Arc<Mutex<StderrLog>>,
    drain: Option<JoinHandle<()>>,
    // Dropped after the process is gone (fields drop after `Drop::drop`).
    data_dir: tempfile::TempDir,
}

impl Server {
    /// Starts the server and waits for its `listening` line.
    pub fn start(options: &ServerOptions) -> Result<Server> {
        let data_dir = tempfile::Builder::new()
            .prefix("chatbench-")
            .tempdir()
            .context("creating the server's data directory")?;
        let mut command = command(options, data_dir.path());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", options.path.display()))?;
        let stderr = child
            .stderr
            .take()
            .context("the server's stderr is piped")?;
        let log = Arc::new(Mutex::new(StderrLog::default()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let drain = std::thread::Builder::new()
            .name("server-stderr".into())
            .spawn({
                let log = log.clone();
                move || drain_stderr(stderr, &addr_tx, &log)
            })
            .context("spawning the stderr reader")?;
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            secret: String::new(),
            options: options.clone(),
            log,
            drain: Some(drain),
            data_dir,
        };
        server.addr = server.wait_listening(&addr_rx)?;
        let secret_path = server.data_dir.path().join("dev-token-secret");
        let secret = std::fs::read_to_string(&secret_path)
            .with_context(|| format!("reading {}", secret_path.display()))?;
        server.secret = String::from(secret.trim());
        Ok(server)
    }

    fn wait_listening(&mut self, addr_rx: &mpsc::Receiver<SocketAddr>) -> Result<SocketAddr> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match addr_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(addr) => return Ok(addr),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stderr closed: the process is exiting; give it a moment.
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            if let Some(status) = self.child.try_wait().context("polling the server")? {
                bail!(
                    "the server exited ({status}) before listening; its stderr:\n{}",
                    self.stderr_tail()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "the server (pid {}, {}) did not log `listening addr=...` within \
                     {START_TIMEOUT:?}; its stderr:\n{}",
                    self.pid(),
                    self.process_state(),
                    self.stderr_tail()
                );
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shards(&self) -> u16 {
        self.options.shards
    }

    pub fn durability(&self) -> Durability {
        self.options.durability
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The dev token secret; its UTF-8 bytes are the HMAC key (engine/src/server.rs).
    pub fn secret(&self) -> &[u8] {
        self.secret.as_bytes()
    }

    /// Fails if the server has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait().context("polling the server")? {
            None => Ok(()),
            Some(status) => Err(anyhow!(
                "the server exited ({status}) during the run; its stderr:\n{}",
                self.stderr_tail()
            )),
        }
    }

    /// The admin (metrics) address, once the server has logged its
    /// `admin listening` line (only with `--admin-listen` in `args`).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .admin
    }

    /// User plus system CPU time the server has used so far.
    pub fn cpu_time(&self) -> Result<Duration> {
        cpu_time(&self.pid().to_string())
    }

    /// The server's resident set size in bytes.
    pub fn rss_bytes(&self) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_vm_rss(&status).with_context(|| format!("no VmRSS line in {path}"))
    }

    /// The `State:` and `Threads:` lines of `/proc/<pid>/status`, for
    /// diagnosing a hung server.
    fn process_state(&self) -> String {
        let path = format!("/proc/{}/status", self.pid());
        let Ok(status) = std::fs::read_to_string(&path) else {
            return format!("{path} unreadable");
        };
        status
            .lines()
            .filter(|l| l.starts_with("State:") || l.starts_with("Threads:"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Counts of WARN and ERROR lines the server has logged, and its last lines.
    pub fn stderr_summary(&self) -> (u64, u64, String) {
        let log = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tail = log.tail.iter().map(String::as_str).collect::<Vec<_>>();
        (log.warnings, log.errors, tail.join("\n"))
    }

    /// Prints how many WARN and ERROR lines the server logged, and if any,
    /// its last lines (to stderr).
    pub fn print_log_summary(&self) {
        let (warnings, errors, tail) = self.stderr_summary();
        println!("  server log     {warnings} WARN, {errors} ERROR lines");
        if warnings + errors > 0 {
            eprintln!("chatbench: the server's last log lines:\n{tail}");
        }
    }

    fn stderr_tail(&self) -> String {
        self.stderr_summary().2
    }

    /// SIGTERM, up to [`STOP_GRACE`] for a clean exit, then SIGKILL.
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw);
        if let Some(pid) = pid {
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
        eprintln!("chatbench: the server ignored SIGTERM for {STOP_GRACE:?}; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
    }
}

/// User plus system CPU time of process `pid` (or `self`) so far, all
/// threads, at clock-tick resolution (10 ms here).
pub fn cpu_time(pid: &str) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_cpu_time(&stat, rustix::param::clock_ticks_per_second())
        .with_context(|| format!("parsing {path}: {stat:?}"))
}

fn command(options: &ServerOptions, data_dir: &Path) -> Command {
    let mut command = Command::new(&options.path);
    command
        .arg("--dev")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--shards", &options.shards.to_string()])
        .args(["--durability", options.durability.as_str()])
        // The benches measure the engine, not its abuse limits.
        .args([
            "--send-rate-per-connection",
            "0",
            "--send-rate-per-user",
            "0",
        ])
        .args(["--connections-per-ip-max", "0"])
        .args(&options.args);
    // Our own environment must not configure the server behind our back.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SWITCHBOARD_") {
            command.env_remove(key);
        }
    }
    command
        .env("NO_COLOR", "1")
        // `listening addr=...` is logged at info.
        .env("SWITCHBOARD_LOG", "info,fjall=warn,lsm_tree=warn")
        .envs(options.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Reads the server's stderr to its end so that the server never blocks on
/// a full pipe; sends the address from the `listening` line once.
fn drain_stderr(stderr: ChildStderr, addr_tx: &mpsc::Sender<SocketAddr>, log: &Mutex<StderrLog>) {
    let mut found = false;
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        let line = strip_ansi(&line);
        if !found && let Some(addr) = parse_listening(&line) {
            found = true;
            let _ = addr_tx.send(addr);
        }
        let mut log = log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if log.admin.is_none() && line.contains("admin listening") {
            log.admin = parse_listening(&line);
        }
        if line.contains(" WARN ") {
            log.warnings += 1;
        }
        if line.contains(" ERROR ") {
            log.errors += 1;
        }
        if log.tail.len() == STDERR_TAIL_LINES {
            log.tail.pop_front();
        }
        log.tail.push_back(line);
    }
}

/// The address in a line like `... INFO ... listening addr=127.0.0.1:41234 shards=2`.
fn parse_listening(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    let rest = &line[line.find("addr=")? + "addr=".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Removes ANSI escape sequences (`ESC [ ... letter`), in case the server
/// colours its log despite `NO_COLOR`.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// utime + stime from `/proc/<pid>/stat` (fields 14 and 15, in clock ticks).
fn parse_cpu_time(stat: &str, ticks_per_second: u64) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime + stime;
    if ticks_per_second == 0 {
        return None;
    }
    let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(ticks_per_second);
    Some(Duration::from_nanos(u64::try_from(nanos).ok()?))
}

/// `VmRSS:   12345 kB` from `/proc/<pid>/status`, in bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    match words.next()? {
        "kB" => Some(value * 1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line() {
        let line = "2026-01-01T00:00:00.000000Z  INFO shard: engine::server: listening \
                    addr=127.0.0.1:41234 shards=2 durability=fsync dev=true";
        assert_eq!(
            parse_listening(line),
            Some("127.0.0.1:41234".parse().unwrap())
        );
        assert_eq!(parse_listening("INFO starting addr=1.2.3.4:5"), None);
        let coloured = "\u{1b}[32m INFO\u{1b}[0m listening \u{1b}[3maddr\u{1b}[0m=127.0.0.1:9";
        assert_eq!(
            parse_listening(&strip_ansi(coloured)),
            Some("127.0.0.1:9".parse().unwrap())
        );
    }

    #[test]
    fn cpu_time_from_stat() {
        let stat = "1234 (switch board) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 100 200";
        assert_eq!(parse_cpu_time(stat, 100), Some(Duration::from_secs(3)));
    }

    #[test]
    fn vm_rss_from_status() {
        let status = "Name:\tswitchboard\nVmPeak:\t  9 kB\nVmRSS:\t   12345 kB\n";
        assert_eq!(parse_vm_rss(status), Some(12345 * 1024));
    }
}
