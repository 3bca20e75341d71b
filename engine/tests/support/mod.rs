//! The harness for tests against the real `switchboard` binary: start it on
//! loopback port 0 in a temporary data directory, learn its address from the
//! `listening` log line, keep its stderr drained into a buffer the test can
//! read, signal it, and SIGKILL it if it is still running when the handle
//! drops. [`http`] and [`ws`] talk to it in raw bytes.
//!
//! Every wait is bounded; a wait that runs out panics with the server's log.
#![allow(dead_code, reason = "each test file uses part of the harness")]

/// Runs each named test body `fn(shards: u16)` as two tests, with one shard
/// and with two (`one_shard::…`, `two_shards::…`).
#[macro_export]
macro_rules! with_one_and_two_shards {
    ($($name:ident),* $(,)?) => {
        mod one_shard {
            $( #[test] fn $name() { super::$name(1); } )*
        }
        mod two_shards {
            $( #[test] fn $name() { super::$name(2); } )*
        }
    };
}

pub mod http;
pub mod pushd;
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

/// The dev token endpoint.
pub const DEV_TOKEN_PATH: &str = "/v1/dev/token";

/// The chat WebSocket.
pub const WS_PATH: &str = "/ws";

/// The file in the data directory that holds a dev server's token secret.
const DEV_SECRET_FILE: &str = "dev-token-secret";

/// How long the tokens [`Server::token`] mints stay valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(3600);

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
    /// An existing data directory to run on, kept when the server drops.
    data_dir: Option<PathBuf>,
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
            data_dir: None,
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

    /// Runs on `path` (created if missing) instead of a fresh directory, and
    /// leaves it in place when the server drops: start a second server with
    /// the same `path` to restart on the same store and dev secret.
    pub fn data_dir(mut self, path: impl Into<PathBuf>) -> Options {
        self.data_dir = Some(path.into());
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
        let data_dir = if let Some(path) = &self.data_dir {
            std::fs::create_dir_all(path)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
            path.clone()
        } else {
            let data_dir = dir.path().join("data");
            std::fs::create_dir(&data_dir).expect("a new temp dir has no `data`");
            data_dir
        };
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
    /// One scrape of `/metrics` from the admin listener (the server must run
    /// with `--admin-listen`/`admin_listen`, port 0 is fine: the address is
    /// read from the `admin listening` line).
    pub fn admin_metrics(&self) -> String {
        assert!(self.wait_for_log("admin listening", WAIT), "{}", self.log());
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("admin listening"))
            .expect("logged");
        let addr = line
            .split_once("addr=")
            .and_then(|(_, r)| r.split_whitespace().next())
            .expect("an address in the admin line");
        let raw = "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n";
        http::request(addr.parse().expect("an address"), raw.as_bytes()).text()
    }

    pub fn sigterm(&self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .expect("the server has not been reaped, so its pid is still ours");
    }

    /// Sends SIGKILL (a crash: nothing is flushed, nothing is closed) and
    /// waits for the process to exit and its stderr to end.
    pub fn sigkill(&mut self) -> ExitStatus {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::KILL)
            .expect("the server has not been reaped, so its pid is still ours");
        let status = self.wait_exit(WAIT);
        self.log.wait_eof(WAIT);
        status
    }

    /// The dev token secret the server keeps in its data directory
    /// (`dev-token-secret`); its string bytes are the HMAC key.
    pub fn dev_secret(&self) -> String {
        let path = self.data_dir.join(DEV_SECRET_FILE);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        text.trim().to_owned()
    }

    /// A token for `user` on `device`, valid for [`TOKEN_TTL`], minted with
    /// the dev secret (no request to the server).
    pub fn token(&self, user: u64, device: u64) -> String {
        client::mint_token(
            self.dev_secret().as_bytes(),
            protocol::UserId(user),
            protocol::DeviceId(device),
            TOKEN_TTL,
        )
    }

    /// A token for `user` on `device` from the dev endpoint,
    /// `POST /v1/dev/token`.
    pub fn dev_token(&self, user: u64, device: u64) -> String {
        let body = format!(r#"{{"user":"{user}","device":"{device}"}}"#);
        let response = http::post(self.addr(), DEV_TOKEN_PATH, body.as_bytes());
        assert_eq!(
            response.status,
            200,
            "POST {DEV_TOKEN_PATH} {body}: {}",
            response.text()
        );
        let reply: serde_json::Value = serde_json::from_slice(&response.body)
            .unwrap_or_else(|e| panic!("{DEV_TOKEN_PATH} answered {:?}: {e}", response.text()));
        reply["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {reply}"))
            .to_owned()
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

/// Chat devices for tests of `/ws`: a [`client::Client`] plus the user and
/// device it speaks for, with helpers that send a request and wait (each
/// wait bounded by [`WAIT`]) for its answer, and panic, naming the device,
/// on anything unexpected.
///
/// Messages that arrive while a helper waits for a particular answer are
/// kept, in arrival order, and returned first by [`chat::Device::recv`]; so
/// waiting for an ack never loses a `msg` that came before it.
pub mod chat {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use client::Client;
    use protocol::{
        ClientMsg, ClientMsgId, ConvId, ConvInfo, ConvSummary, DeviceId, Encoding, ErrorCode,
        MemberReceipts, Message, MsgId, Page, Position, RequestId, Seq, ServerMsg, UnixMillis,
        UserId,
    };

    use super::{Server, WAIT};

    /// How long a connection must stay silent for "nothing more arrives".
    pub const QUIET: Duration = Duration::from_millis(500);

    /// Messages one `sync` may stream before the helper gives up on it.
    pub const SYNC_MSGS_MAX: usize = 10_000;

    /// History pages [`Device::fetch_all`] reads at most.
    const FETCH_PAGES_MAX: usize = 1_000;

    /// Client message ids, unique in the test process: a reconnected device
    /// must not reuse one, or its send is taken for a resend.
    static NEXT_CMID: AtomicU64 = AtomicU64::new(1);

    /// A fresh client message id.
    pub fn new_cmid() -> ClientMsgId {
        ClientMsgId(NEXT_CMID.fetch_add(1, Ordering::Relaxed))
    }

    /// The fields of an `ack`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Ack {
        pub cmid: ClientMsgId,
        pub conv: ConvId,
        pub seq: Seq,
        pub id: MsgId,
        pub ts: UnixMillis,
    }

    /// What one `sync` streamed.
    #[derive(Clone, Debug)]
    pub struct Synced {
        /// Every `msg` before `synced`, in arrival order.
        pub msgs: Vec<Message>,
        /// The `synced` summaries.
        pub convs: Vec<ConvSummary>,
    }

    impl Synced {
        /// The summary of `conv`; panics if `synced` has none.
        pub fn summary(&self, conv: ConvId) -> ConvSummary {
            *self
                .convs
                .iter()
                .find(|s| s.conv == conv)
                .unwrap_or_else(|| panic!("no summary for {conv} in {:?}", self.convs))
        }

        /// The messages of `conv`, in arrival order.
        pub fn in_conv(&self, conv: ConvId) -> Vec<Message> {
            self.msgs
                .iter()
                .filter(|m| m.conv == conv)
                .cloned()
                .collect()
        }
    }

    /// One connected device.
    #[derive(Debug)]
    pub struct Device {
        client: Client,
        user: UserId,
        /// This device's id (`device` would repeat the type's name).
        dev: DeviceId,
        next_rid: u32,
        /// Arrived while a helper waited for something else; oldest first.
        backlog: VecDeque<ServerMsg>,
    }

    impl Device {
        /// Connects (JSON) with a token minted from the dev secret and reads
        /// `welcome`. Does not `sync`.
        pub fn connect(server: &Server, user: u64, device: u64) -> Device {
            Device::connect_with(server, user, device, Encoding::Json)
        }

        /// Like [`Device::connect`], asking for `encoding`.
        pub fn connect_with(server: &Server, user: u64, device: u64, encoding: Encoding) -> Device {
            let token = server.token(user, device);
            let client = Client::connect(server.addr(), &token, encoding)
                .unwrap_or_else(|e| panic!("user {user} device {device}: connect failed: {e}"));
            Device::welcome(client, user, device)
        }

        /// Connects and syncs; what the sync streamed is dropped.
        pub fn online(server: &Server, user: u64, device: u64) -> Device {
            let mut d = Device::connect(server, user, device);
            d.sync();
            d
        }

        /// Takes over a connected client and checks its `welcome`.
        pub fn welcome(client: Client, user: u64, device: u64) -> Device {
            let mut d = Device {
                client,
                user: UserId(user),
                dev: DeviceId(device),
                next_rid: 1,
                backlog: VecDeque::new(),
            };
            match d.recv() {
                ServerMsg::Welcome {
                    user: u,
                    device: dev,
                    version,
                    time,
                } => {
                    assert_eq!((u, dev), (d.user, d.dev), "{d}: welcome for another device");
                    assert_eq!(version, protocol::VERSION, "{d}: welcome version");
                    let now = UnixMillis::now().0;
                    assert!(
                        time.0.abs_diff(now) < 60_000,
                        "{d}: welcome time {time:?} is far from the local clock {now}"
                    );
                }
                other => panic!("{d}: expected welcome first, got {other:?}"),
            }
            d
        }

        pub fn user(&self) -> UserId {
            self.user
        }

        pub fn device(&self) -> DeviceId {
            self.dev
        }

        pub fn client(&mut self) -> &mut Client {
            &mut self.client
        }

        /// A fresh request id for this connection.
        pub fn rid(&mut self) -> RequestId {
            let rid = RequestId(self.next_rid);
            self.next_rid += 1;
            rid
        }

        /// Sends `msg` in the connection's encoding.
        pub fn send(&mut self, msg: &ClientMsg) {
            if let Err(e) = self.client.send(msg) {
                panic!("{self}: sending {msg:?} failed: {e}");
            }
        }

        /// The next message, from the backlog or within [`WAIT`]; panics on
        /// timeout or a broken connection.
        pub fn recv(&mut self) -> ServerMsg {
            if let Some(msg) = self.backlog.pop_front() {
                return msg;
            }
            match self.client.recv(WAIT) {
                Ok(Some(msg)) => msg,
                Ok(None) => panic!("{self}: nothing arrived within {WAIT:?}"),
                Err(e) => panic!("{self}: receive failed: {e}"),
            }
        }

        /// The next message, which must be a `msg`.
        pub fn expect_msg(&mut self) -> Message {
            match self.recv() {
                ServerMsg::Msg(m) => m,
                other => panic!("{self}: expected a msg, got {other:?}"),
            }
        }

        /// Everything that arrives until the connection has been quiet for
        /// `quiet` (the backlog first).
        pub fn drain(&mut self, quiet: Duration) -> Vec<ServerMsg> {
            let mut msgs: Vec<ServerMsg> = self.backlog.drain(..).collect();
            match self.client.recv_all(quiet) {
                Ok(more) => msgs.extend(more),
                Err(e) => panic!("{self}: receive failed after {msgs:?}: {e}"),
            }
            msgs
        }

        /// Panics if anything arrives within [`QUIET`] (or is in the backlog).
        pub fn expect_quiet(&mut self) {
            self.expect_quiet_for(QUIET);
        }

        /// Panics if anything arrives within `quiet` (or is in the backlog).
        pub fn expect_quiet_for(&mut self, quiet: Duration) {
            let msgs = self.drain(quiet);
            assert!(msgs.is_empty(), "{self}: expected nothing, got {msgs:?}");
        }

        /// The first message `pred` accepts, from the backlog or within
        /// [`WAIT`]; the others stay in the backlog in order.
        pub fn take(&mut self, what: &str, pred: impl Fn(&ServerMsg) -> bool) -> ServerMsg {
            if let Some(i) = self.backlog.iter().position(&pred) {
                return self.backlog.remove(i).expect("the index was just found");
            }
            let deadline = Instant::now() + WAIT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.client.recv(left) {
                    Ok(Some(msg)) if pred(&msg) => return msg,
                    Ok(Some(msg)) => self.backlog.push_back(msg),
                    Ok(None) => panic!(
                        "{self}: no {what} within {WAIT:?}; meanwhile got {:?}",
                        self.backlog
                    ),
                    Err(e) => panic!(
                        "{self}: receive failed waiting for {what} ({e}); meanwhile got {:?}",
                        self.backlog
                    ),
                }
            }
        }

        /// Sends the request `make(rid)` and returns its answer: the first
        /// message with that `rid` (its reply or an `error`).
        pub fn request(&mut self, make: impl FnOnce(RequestId) -> ClientMsg) -> ServerMsg {
            let rid = self.rid();
            let msg = make(rid);
            self.send(&msg);
            self.take(&format!("answer to {msg:?}"), |m| answers(m) == Some(rid))
        }

        /// `sync` with an empty `since`.
        pub fn sync(&mut self) -> Synced {
            self.sync_since(Vec::new())
        }

        /// `sync`: every `msg` until `synced`, which must answer it.
        pub fn sync_since(&mut self, since: Vec<Position>) -> Synced {
            let rid = self.rid();
            self.send(&ClientMsg::Sync { rid, since });
            let mut msgs = Vec::new();
            while msgs.len() <= SYNC_MSGS_MAX {
                match self.recv() {
                    ServerMsg::Msg(m) => msgs.push(m),
                    ServerMsg::Synced { rid: r, convs } if r == rid => {
                        return Synced { msgs, convs };
                    }
                    other => panic!(
                        "{self}: during sync (after {} msgs) got {other:?}",
                        msgs.len()
                    ),
                }
            }
            panic!("{self}: sync streamed over {SYNC_MSGS_MAX} msgs without synced");
        }

        /// `direct_open`; panics unless answered by `conv`.
        pub fn direct_open(&mut self, user: u64) -> ConvInfo {
            let user = UserId(user);
            match self.request(|rid| ClientMsg::DirectOpen { rid, user }) {
                ServerMsg::Conv { conv, .. } => conv,
                other => panic!("{self}: direct_open {user} answered with {other:?}"),
            }
        }

        /// Sends `body` to `conv` with `cmid`, without waiting.
        pub fn post_with(&mut self, conv: ConvId, cmid: ClientMsgId, body: &str) {
            self.send(&ClientMsg::Send {
                conv,
                cmid,
                body: body.to_owned(),
            });
        }

        /// Sends `body` to `conv` with a fresh cmid, without waiting.
        pub fn post(&mut self, conv: ConvId, body: &str) -> ClientMsgId {
            let cmid = new_cmid();
            self.post_with(conv, cmid, body);
            cmid
        }

        /// The answer to the send with `cmid`: its `ack` or its `error`.
        pub fn answer(&mut self, cmid: ClientMsgId) -> Result<Ack, (ErrorCode, String)> {
            let answer = self.take(&format!("answer to send {cmid}"), |m| {
                matches!(m, ServerMsg::Ack { cmid: c, .. } | ServerMsg::Error { cmid: Some(c), .. }
                    if *c == cmid)
            });
            match answer {
                ServerMsg::Ack {
                    cmid,
                    conv,
                    seq,
                    id,
                    ts,
                } => Ok(Ack {
                    cmid,
                    conv,
                    seq,
                    id,
                    ts,
                }),
                ServerMsg::Error {
                    rid, code, message, ..
                } => {
                    assert_eq!(rid, None, "{self}: an error for send {cmid} has a rid");
                    Err((code, message))
                }
                _ => unreachable!("take returns what the predicate accepted"),
            }
        }

        /// The `ack` of the send with `cmid`; panics on an `error`.
        pub fn wait_ack(&mut self, cmid: ClientMsgId) -> Ack {
            let ack = self
                .answer(cmid)
                .unwrap_or_else(|e| panic!("{self}: send {cmid} refused: {e:?}"));
            assert_eq!(ack.cmid, cmid);
            ack
        }

        /// Sends `body` to `conv` and waits for the `ack`.
        pub fn send_text(&mut self, conv: ConvId, body: &str) -> Ack {
            let cmid = self.post(conv, body);
            let ack = self.wait_ack(cmid);
            assert_eq!(ack.conv, conv, "{self}: ack for another conversation");
            ack
        }

        /// Sends every body to `conv` with at most `window` sends
        /// unacknowledged at a time; the acks in the order of `bodies`.
        pub fn send_many(&mut self, conv: ConvId, bodies: &[String], window: usize) -> Vec<Ack> {
            assert!(window > 0);
            let mut in_flight = VecDeque::new();
            let mut acks = Vec::with_capacity(bodies.len());
            for body in bodies {
                if in_flight.len() == window {
                    let cmid = in_flight.pop_front().expect("the window is full");
                    acks.push(self.wait_ack(cmid));
                }
                in_flight.push_back(self.post(conv, body));
            }
            for cmid in in_flight {
                acks.push(self.wait_ack(cmid));
            }
            for ack in &acks {
                assert_eq!(ack.conv, conv, "{self}: ack for another conversation");
            }
            acks
        }

        /// Sends `body` to `conv` and returns the error code it must get.
        pub fn send_refused(&mut self, conv: ConvId, body: &str) -> ErrorCode {
            let cmid = self.post(conv, body);
            match self.answer(cmid) {
                Ok(ack) => panic!("{self}: send to {conv} was acked: {ack:?}"),
                Err((code, _)) => code,
            }
        }

        /// One history page: `(msgs, more)`, or the error code.
        pub fn try_fetch(
            &mut self,
            conv: ConvId,
            from: Page,
            limit: u16,
        ) -> Result<(Vec<Message>, bool), ErrorCode> {
            match self.request(|rid| ClientMsg::Fetch {
                rid,
                conv,
                from,
                limit,
            }) {
                ServerMsg::History {
                    conv: c,
                    msgs,
                    more,
                    ..
                } => {
                    assert_eq!(c, conv, "{self}: history of another conversation");
                    Ok((msgs, more))
                }
                ServerMsg::Error { code, .. } => Err(code),
                other => panic!("{self}: fetch answered with {other:?}"),
            }
        }

        /// One history page; panics on an error.
        pub fn fetch(&mut self, conv: ConvId, from: Page, limit: u16) -> (Vec<Message>, bool) {
            self.try_fetch(conv, from, limit).unwrap_or_else(|code| {
                panic!("{self}: fetch {conv} {from:?} limit {limit} refused: {code:?}")
            })
        }

        /// The whole history of `conv`, paging forward from the start.
        pub fn fetch_all(&mut self, conv: ConvId) -> Vec<Message> {
            let limit = protocol::limits::FETCH_LIMIT_MAX;
            let mut all: Vec<Message> = Vec::new();
            for _ in 0..FETCH_PAGES_MAX {
                let after = all.last().map_or(Seq::ZERO, |m| m.seq);
                let (page, more) = self.fetch(conv, Page::After(after), limit);
                all.extend(page);
                if !more {
                    return all;
                }
            }
            panic!("{self}: {conv} has over {FETCH_PAGES_MAX} pages of history");
        }

        /// Closes with 1000 and waits for the server's reply.
        pub fn close(self) {
            let name = self.to_string();
            if let Err(e) = self.client.close() {
                panic!("{name}: close failed: {e}");
            }
        }

        /// Drops the connection without a close frame.
        pub fn abort(self) {
            self.client.abort();
        }
    }

    impl std::fmt::Display for Device {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "user {} device {}", self.user, self.dev)
        }
    }

    /// Why a request was refused: the `error`'s code and its text (for the
    /// failure message when a test did not expect it).
    pub type Refusal = (ErrorCode, String);

    /// Group requests (docs/PROTOCOL.md `group_create` and on) and
    /// `conv_get`. Each returns the conversation as its `conv` reply has it
    /// (`()` for `group_leave`, answered by `ok`), or the refusal; anything
    /// else panics.
    impl Device {
        /// Sends the group request `make(rid)` and returns its `conv` reply.
        pub fn group_request(
            &mut self,
            make: impl FnOnce(RequestId) -> ClientMsg,
        ) -> Result<ConvInfo, Refusal> {
            match self.request(make) {
                ServerMsg::Conv { conv, .. } => Ok(conv),
                ServerMsg::Error {
                    cmid: None,
                    code,
                    message,
                    ..
                } => Err((code, message)),
                other => panic!("{self}: a group request answered with {other:?}"),
            }
        }

        /// `group_create` with `members` as they are (duplicates included).
        pub fn group_create(&mut self, title: &str, members: &[u64]) -> Result<ConvInfo, Refusal> {
            let members = members.iter().copied().map(UserId).collect();
            self.group_request(|rid| ClientMsg::GroupCreate {
                rid,
                title: title.to_owned(),
                members,
            })
        }

        pub fn group_rename(&mut self, conv: ConvId, title: &str) -> Result<ConvInfo, Refusal> {
            self.group_request(|rid| ClientMsg::GroupRename {
                rid,
                conv,
                title: title.to_owned(),
            })
        }

        pub fn group_add(&mut self, conv: ConvId, users: &[u64]) -> Result<ConvInfo, Refusal> {
            let users = users.iter().copied().map(UserId).collect();
            self.group_request(|rid| ClientMsg::GroupAdd { rid, conv, users })
        }

        pub fn group_remove(&mut self, conv: ConvId, users: &[u64]) -> Result<ConvInfo, Refusal> {
            let users = users.iter().copied().map(UserId).collect();
            self.group_request(|rid| ClientMsg::GroupRemove { rid, conv, users })
        }

        pub fn group_set_role(
            &mut self,
            conv: ConvId,
            user: u64,
            role: protocol::Role,
        ) -> Result<ConvInfo, Refusal> {
            let user = UserId(user);
            self.group_request(|rid| ClientMsg::GroupSetRole {
                rid,
                conv,
                user,
                role,
            })
        }

        /// `conv_get`: the conversation as it is now, or the refusal.
        pub fn conv_get(&mut self, conv: ConvId) -> Result<ConvInfo, Refusal> {
            self.group_request(|rid| ClientMsg::ConvGet { rid, conv })
        }

        /// `group_leave`, answered by `ok`.
        pub fn group_leave(&mut self, conv: ConvId) -> Result<(), Refusal> {
            match self.request(|rid| ClientMsg::GroupLeave { rid, conv }) {
                ServerMsg::Ok { .. } => Ok(()),
                ServerMsg::Error {
                    cmid: None,
                    code,
                    message,
                    ..
                } => Err((code, message)),
                other => panic!("{self}: group_leave {conv} answered with {other:?}"),
            }
        }
    }

    /// `receipts_get` (docs/PROTOCOL.md).
    impl Device {
        /// The `receipts` reply's entries, or the refusal.
        pub fn receipts_get(&mut self, conv: ConvId) -> Result<Vec<MemberReceipts>, Refusal> {
            match self.request(|rid| ClientMsg::ReceiptsGet { rid, conv }) {
                ServerMsg::Receipts {
                    conv: c, members, ..
                } => {
                    assert_eq!(c, conv, "{self}: receipts of another conversation");
                    Ok(members)
                }
                ServerMsg::Error {
                    cmid: None,
                    code,
                    message,
                    ..
                } => Err((code, message)),
                other => panic!("{self}: receipts_get {conv} answered with {other:?}"),
            }
        }

        /// Asks `receipts_get` until `done` accepts the entries, for at most
        /// [`WAIT`]: the server stores cursors in batches, after their live
        /// receipts. Panics with the last answer if `done` never accepts one.
        pub fn receipts_when(
            &mut self,
            conv: ConvId,
            done: impl Fn(&[MemberReceipts]) -> bool,
        ) -> Vec<MemberReceipts> {
            let deadline = Instant::now() + WAIT;
            loop {
                let got = self
                    .receipts_get(conv)
                    .unwrap_or_else(|e| panic!("{self}: receipts_get {conv} refused: {e:?}"));
                if done(&got) {
                    return got;
                }
                assert!(
                    Instant::now() < deadline,
                    "{self}: receipts of {conv} still {got:?} after {WAIT:?}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// The request a reply or request error answers.
    fn answers(msg: &ServerMsg) -> Option<RequestId> {
        match msg {
            ServerMsg::History { rid, .. }
            | ServerMsg::Synced { rid, .. }
            | ServerMsg::Conv { rid, .. }
            | ServerMsg::Receipts { rid, .. }
            | ServerMsg::Ok { rid } => Some(*rid),
            ServerMsg::Error { rid, .. } => *rid,
            _ => None,
        }
    }
}
