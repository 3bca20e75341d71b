//! The harness for tests against the real `switchboard` binary: start it on
//! loopback port 0 in a temporary data directory, learn its address from the
//! `listening` log line, keep its stderr drained into a buffer the test can
//! read, signal it, and SIGKILL it if it is still running when the handle
//! drops. [`http`] and [`ws`] talk to it in raw bytes.
//!
//! Every wait is bounded; a wait that runs out panics with the server's log.
#![allow(dead_code, reason = "each test file uses part of the harness")]

pub mod http;
pub mod ws;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A wait that should succeed long before it runs out.
pub const WAIT: Duration = Duration::from_secs(5);

/// How long the server may take from spawn to its `listening` line, or to
/// exit when it must refuse to start.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Log bytes kept per server; later lines are still drained, and counted.
const LOG_BYTES_MAX: usize = 4 << 20;

/// How often exit is polled.
const POLL: Duration = Duration::from_millis(10);

/// The log filter: the server's own `info` lines without the store's chatter.
const LOG_FILTER: &str = "info,fjall=warn,lsm_tree=warn";

/// The dev echo WebSocket.
pub const ECHO_PATH: &str = "/v1/dev/echo";

/// Options for the client crate to open the echo endpoint: no token, text.
pub fn echo_options() -> client::ConnectOptions {
    client::ConnectOptions {
        path: ECHO_PATH.to_owned(),
        auth: client::Auth::None,
        ..client::ConnectOptions::new("", protocol::Encoding::Json)
    }
}

/// How to start a server. [`Options::new`]: dev mode, one shard.
#[derive(Clone, Debug)]
pub struct Options {
    dev: bool,
    shards: u16,
    config: Option<String>,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
}

impl Default for Options {
    fn default() -> Options {
        Options::new()
    }
}

impl Options {
    pub fn new() -> Options {
        Options {
            dev: true,
            shards: 1,
            config: None,
            args: Vec::new(),
            envs: Vec::new(),
        }
    }

    pub fn shards(mut self, shards: u16) -> Options {
        self.shards = shards;
        self
    }

    /// Without `--dev`: no token or echo endpoint, and a secret is required.
    pub fn production(mut self) -> Options {
        self.dev = false;
        self
    }

    /// Writes `toml` to a file in the test's directory and passes `--config`.
    pub fn config(mut self, toml: &str) -> Options {
        self.config = Some(toml.to_owned());
        self
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Options {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Options {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Starts the server and waits for its `listening` line.
    pub fn start(self) -> Server {
        let mut server = self.spawn();
        let started = Instant::now();
        let line = server.log.wait_for(START_TIMEOUT, |line| {
            line.contains(" listening ") && line.contains("addr=")
        });
        let Some(line) = line else {
            let exited = server.child.try_wait().ok().flatten();
            panic!(
                "switchboard did not log `listening` within {:?} (exit: {exited:?}); log:\n{}",
                started.elapsed(),
                server.log()
            );
        };
        server.addr = Some(parse_addr(&line));
        server
    }

    /// Runs a server that must refuse to start: waits for it to exit and
    /// for its stderr to end, and returns both.
    pub fn start_and_expect_exit(self) -> Exited {
        let mut server = self.spawn();
        let status = server.wait_exit(START_TIMEOUT);
        server.log.wait_eof(WAIT);
        Exited {
            status,
            log: server.log(),
        }
    }

    fn spawn(self) -> Server {
        let dir = tempfile::tempdir().expect("the temp dir is writable");
        let data_dir = dir.path().join("data");
        std::fs::create_dir(&data_dir).expect("a new temp dir has no `data`");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        // Settings from the environment the tests run in must not leak in.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SWITCHBOARD_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("SWITCHBOARD_LOG", LOG_FILTER)
            .env("NO_COLOR", "1")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--shards")
            .arg(self.shards.to_string());
        if self.dev {
            cmd.arg("--dev");
        }
        if let Some(toml) = &self.config {
            let path = dir.path().join("switchboard.toml");
            std::fs::write(&path, toml).expect("the temp dir is writable");
            cmd.arg("--config").arg(path);
        }
        cmd.args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("cargo built the switchboard binary");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Log::default());
        let sink = log.clone();
        std::thread::Builder::new()
            .name("switchboard-stderr".to_owned())
            .spawn(move || sink.drain(stderr))
            .expect("a thread can be spawned");
        Server {
            child,
            addr: None,
            log,
            data_dir,
            _dir: dir,
        }
    }
}

/// A server that exited on its own, and everything it wrote to stderr.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub log: String,
}

/// A running `switchboard` process. Dropping it SIGKILLs the process if it
/// is still running, then removes its directory.
#[derive(Debug)]
pub struct Server {
    child: Child,
    addr: Option<SocketAddr>,
    log: Arc<Log>,
    data_dir: PathBuf,
    /// Removed after the process is gone (fields drop after `Drop::drop`).
    _dir: tempfile::TempDir,
}

impl Server {
    /// A dev server with one shard.
    pub fn start() -> Server {
        Options::new().start()
    }

    /// The bound address, from the `listening` line.
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("a started server has an address")
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Everything the server logged so far, without ANSI codes.
    pub fn log(&self) -> String {
        self.log.lock().text.clone()
    }

    /// Waits until a log line contains `needle`; false if none does in time.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.log
            .wait_for(timeout, |line| line.contains(needle))
            .is_some()
    }

    /// Sockets the server holds open now (from `/proc`): its listeners,
    /// its connections and the signal handler's pair.
    pub fn open_sockets(&self) -> usize {
        self.open_fds()
            .iter()
            .filter(|t| t.starts_with("socket:"))
            .count()
    }

    /// What each open descriptor refers to (`socket:[…]`, paths), sorted.
    pub fn open_fds(&self) -> Vec<String> {
        let dir = format!("/proc/{}/fd", self.child.id());
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {dir}: {e}"));
        let mut targets: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .map(|target| target.display().to_string())
            .collect();
        targets.sort();
        targets
    }

    /// Waits until the server holds at most `sockets` sockets; false if it
    /// still holds more after `timeout`.
    pub fn wait_for_open_sockets_at_most(&self, sockets: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.open_sockets() <= sockets {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Sends SIGTERM (a graceful shutdown).
    pub fn sigterm(&self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .expect("the server has not been reaped, so its pid is still ours");
    }

    /// Waits for the process to exit; panics with the log if it does not
    /// within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("waitpid on our child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "switchboard still running after {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SIGKILL by pid; `Child::kill` will not signal a reaped pid.
            let _ = self.child.kill();
            let deadline = Instant::now() + WAIT;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
        }
    }
}

/// The server's stderr so far, filled by the drain thread.
#[derive(Debug, Default)]
struct Log {
    state: Mutex<LogState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct LogState {
    text: String,
    /// Bytes not kept because the buffer was full.
    dropped_bytes: usize,
    /// Stderr has ended: the process exited (or closed it).
    eof: bool,
}

impl Log {
    fn lock(&self) -> MutexGuard<'_, LogState> {
        // A panicking test thread cannot leave the text half-written.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads stderr line by line until it ends, so the pipe never fills.
    fn drain(&self, stderr: impl Read) {
        let mut reader = BufReader::new(stderr);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).unwrap_or(0);
            let mut state = self.lock();
            if n == 0 {
                state.eof = true;
                self.changed.notify_all();
                return;
            }
            let text = strip_ansi(&String::from_utf8_lossy(&line));
            if state.text.len() + text.len() > LOG_BYTES_MAX {
                state.dropped_bytes += text.len();
            } else {
                state.text.push_str(&text);
                if !text.ends_with('\n') {
                    state.text.push('\n');
                }
            }
            self.changed.notify_all();
        }
    }

    /// The first line that satisfies `pred`, waiting for more lines up to
    /// `timeout`; `None` on timeout or at the end of stderr.
    fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if let Some(line) = state.text.lines().find(|l| pred(l)) {
                return Some(line.to_owned());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if state.eof || left.is_zero() {
                return None;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Waits up to `timeout` for stderr to end.
    fn wait_eof(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while !state.eof {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        true
    }
}

/// Removes ANSI escape sequences (`ESC [ … letter`), in case colours are on
/// despite `NO_COLOR`.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        }
    }
    out
}

/// The address in `... listening addr=127.0.0.1:PORT shards=...`.
fn parse_addr(line: &str) -> SocketAddr {
    let (_, rest) = line
        .split_once("addr=")
        .expect("the caller found `addr=` in the line");
    let field = rest.split_whitespace().next().unwrap_or_default();
    let addr: SocketAddr = field
        .parse()
        .unwrap_or_else(|e| panic!("bad addr {field:?} in the listening line {line:?}: {e}"));
    assert!(addr.ip().is_loopback(), "the server bound {addr}");
    addr
}
