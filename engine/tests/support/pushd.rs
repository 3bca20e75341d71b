//! pushd and its mock provider as processes for the push tests: start them
//! on loopback, drive the mock's control API, read what it received, and
//! scrape pushd's `/metrics`. Every wait is bounded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Log, POLL, WAIT, http};

/// The fixture credentials the mock accepts.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pushd/tests/fixtures")
        .join(name)
}

/// The APNs key id of the fixture key.
pub const APNS_KEY_ID: &str = "TESTKEY123";
pub const APNS_TEAM_ID: &str = "TEAM123456";
pub const APNS_TOPIC: &str = "chat.switchboard.test";

/// The `pushd` binary next to `switchboard` (built by `cargo test
/// --workspace`, or `cargo build -p pushd`).
fn pushd_bin() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_switchboard")).with_file_name("pushd");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p pushd` (cargo test --workspace builds it)",
        path.display()
    );
    path
}

/// A child process with its stderr drained into a [`Log`]; `SIGKILL`ed on drop.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    log: Arc<Log>,
}

impl Proc {
    fn spawn(mut cmd: Command, name: &str) -> Proc {
        cmd.env(
            "PUSHD_LOG",
            "info,fjall=warn,lsm_tree=warn,hyper=warn,reqwest=warn",
        )
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Log::default());
        let sink = log.clone();
        std::thread::Builder::new()
            .name(format!("{name}-stderr"))
            .spawn(move || sink.drain(stderr))
            .expect("a thread can be spawned");
        Proc { child, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().text.clone()
    }

    fn wait_for_line(&self, needle: &str, timeout: Duration) -> String {
        self.log
            .wait_for(timeout, |l| l.contains(needle))
            .unwrap_or_else(|| {
                panic!(
                    "no `{needle}` line within {timeout:?}; log:\n{}",
                    self.log()
                )
            })
    }

    pub fn sigkill(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("the child can be waited for")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address in a `… addr=HOST:PORT …` or `… on http://HOST:PORT` line.
fn addr_in(line: &str) -> SocketAddr {
    let field = line
        .split_once("addr=")
        .map(|(_, r)| r)
        .or_else(|| line.split_once("http://").map(|(_, r)| r))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_default();
    field
        .parse()
        .unwrap_or_else(|e| panic!("no address in {line:?}: {e}"))
}

/// `pushd mock-provider` on a loopback port.
#[derive(Debug)]
pub struct Mock {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Mock {
    /// Starts a mock that accepts the fixture credentials, with `args` added.
    pub fn start(args: &[&str]) -> Mock {
        let dir = tempfile::tempdir().expect("a temp dir");
        let addr_file = dir.path().join("addr");
        let mut cmd = Command::new(pushd_bin());
        cmd.arg("mock-provider")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--addr-file")
            .arg(&addr_file)
            .arg("--apns-key")
            .arg(fixture("AuthKey_TESTKEY123.p8"))
            .args([
                "--apns-key-id",
                APNS_KEY_ID,
                "--apns-team-id",
                APNS_TEAM_ID,
                "--apns-topic",
                APNS_TOPIC,
            ])
            .arg("--fcm-service-account")
            .arg(fixture("service-account.json"))
            .args(args);
        let proc = Proc::spawn(cmd, "mock-provider");
        let deadline = Instant::now() + WAIT;
        // The mock writes its address to the file (atomically, by rename).
        let url = loop {
            if let Ok(url) = std::fs::read_to_string(&addr_file) {
                break url;
            }
            assert!(
                Instant::now() < deadline,
                "mock-provider wrote no address; log:\n{}",
                proc.log()
            );
            std::thread::sleep(POLL);
        };
        Mock {
            addr: addr_in(url.trim()),
            proc,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn call(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: mock\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = http::request(self.addr, raw.as_bytes());
        (r.status, r.text())
    }

    /// Replaces the fault state (see `pushd mock-provider` docs).
    pub fn fault(&self, json: &str) {
        let (status, text) = self.call("POST", "/control/fault", json);
        assert_eq!(status, 200, "fault {json}: {text}");
    }

    pub fn reset(&self) {
        let (status, text) = self.call("POST", "/control/reset", "");
        assert_eq!(status, 200, "reset: {text}");
    }

    /// Every provider request so far (OAuth token requests included).
    pub fn received(&self) -> Vec<Value> {
        let (status, text) = self.call("GET", "/control/received", "");
        assert_eq!(status, 200, "received: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("received is not JSON ({e}): {text}"))
    }

    /// Notification requests (APNs and FCM sends) answered `status`.
    pub fn notifications(&self, status: u16) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|r| r["provider"] != "oauth" && r["status"] == status)
            .collect()
    }

    /// Waits until at least `n` notifications were accepted (200); returns them.
    pub fn wait_accepted(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.notifications(200);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} notifications accepted within {timeout:?}: {:#?}",
                got.len(),
                self.received()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A running pushd with its own directory.
#[derive(Debug)]
pub struct Pushd {
    pub proc: Proc,
    pub socket: PathBuf,
    pub admin: SocketAddr,
}

/// pushd settings for tests: fast backoff and circuits, providers on `mock`
/// (and `secondary`, if given).
#[allow(clippy::unnecessary_debug_formatting)] // Reason: `{:?}` quotes paths as TOML strings.
pub fn config(dir: &Path, primary: &Mock, secondary: Option<&Mock>, extra: &str) -> String {
    let second = secondary.map_or(String::new(), |m| format!("secondary = {:?}", m.url()));
    format!(
        r#"socket = {socket:?}
data_dir = {data:?}
admin_listen = "127.0.0.1:0"
backoff_base = "100ms"
backoff_max = "2s"
circuit_failures = 3
circuit_cooldown = "1s"
{extra}

[apns]
key_file = {key:?}
key_id = "{APNS_KEY_ID}"
team_id = "{APNS_TEAM_ID}"
topic = "{APNS_TOPIC}"
primary = {url:?}
{second}
timeout = "2s"

[fcm]
service_account_file = {sa:?}
token_uri = "{url}/token"
primary = {url:?}
{second}
timeout = "2s"
"#,
        socket = dir.join("pushd.sock"),
        data = dir.join("pushd"),
        key = fixture("AuthKey_TESTKEY123.p8"),
        sa = fixture("service-account.json"),
        url = primary.url(),
    )
}

impl Pushd {
    /// Starts pushd on `toml` (written to `dir`) and waits until it listens.
    pub fn start(dir: &Path, toml: &str) -> Pushd {
        let path = dir.join("pushd.toml");
        std::fs::write(&path, toml).expect("the test dir is writable");
        let mut cmd = Command::new(pushd_bin());
        cmd.arg("--config").arg(&path);
        let proc = Proc::spawn(cmd, "pushd");
        let admin = addr_in(&proc.wait_for_line("admin listening", WAIT));
        proc.wait_for_line("engine link listening", WAIT);
        Pushd {
            proc,
            socket: dir.join("pushd.sock"),
            admin,
        }
    }

    /// Waits until an engine has linked `n` times in all.
    pub fn wait_linked(&self, n: usize) {
        let deadline = Instant::now() + WAIT * 2;
        while self.proc.log().matches("engine linked").count() < n {
            assert!(
                Instant::now() < deadline,
                "the engine did not link; pushd log:\n{}",
                self.proc.log()
            );
            std::thread::sleep(POLL);
        }
    }

    pub fn metrics(&self) -> String {
        let raw = "GET /metrics HTTP/1.1\r\nHost: pushd\r\nConnection: close\r\n\r\n";
        http::request(self.admin, raw.as_bytes()).text()
    }

    /// The value of the metric line that starts with `series` (name and labels).
    pub fn metric(&self, series: &str) -> f64 {
        metric_in(&self.metrics(), series)
    }
}

/// The value of the line of `text` that starts with `series `.
pub fn metric_in(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{series}` in\n{text}"))
}

/// Waits until `f` holds, up to `timeout`; panics with `what` otherwise.
pub fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
