//! The `pushd` binary on its own: configuration errors, the admin endpoints,
//! and the engine link protocol spoken by hand (jobs made durable before
//! `Stored`, a wrong `Hello` or an oversized frame dropping the link, a
//! restart keeping the jobs).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use protocol::push::{FRAME_MAX, Job, LINK_VERSION, ToEngine, ToPushd, decode_frame, encode_frame};
use protocol::{ConvId, DeviceId, Platform, Seq, UnixMillis, UserId};

const WAIT: Duration = Duration::from_secs(10);

/// A pushd process; killed on drop.
struct Daemon {
    child: Child,
    admin: SocketAddr,
    lines: mpsc::Receiver<String>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, toml: &str) -> Daemon {
    let config = dir.join("pushd.toml");
    std::fs::write(&config, toml).expect("writable");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pushd"))
        .arg("--config")
        .arg(&config)
        .env("NO_COLOR", "1")
        .env("PUSHD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pushd starts");
    let stderr = child.stderr.take().expect("piped");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Killed on drop from here on, also if the wait below panics.
    let mut d = Daemon {
        child,
        admin: SocketAddr::from(([127, 0, 0, 1], 0)),
        lines,
    };
    let mut admin = None;
    let mut linkable = false;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline && !(linkable && admin.is_some()) {
        let Ok(line) = d.lines.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        if let Some((_, rest)) = line.split_once("addr=") {
            admin = rest.split_whitespace().next().and_then(|a| a.parse().ok());
        }
        linkable |= line.contains("engine link listening");
    }
    d.admin = admin.expect("pushd logged its admin address");
    d
}

fn config(dir: &Path) -> String {
    format!(
        "socket = {:?}\ndata_dir = {:?}\nadmin_listen = \"127.0.0.1:0\"\n",
        dir.join("pushd.sock").display().to_string(),
        dir.join("queue").display().to_string()
    )
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("admin accepts");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .expect("writes");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("reads");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn metric(addr: SocketAddr, series: &str) -> String {
    let (_, text) = get(addr, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .to_owned()
}

fn job(id: u64) -> Job {
    Job {
        id,
        user: UserId(1),
        device: DeviceId(1),
        platform: Platform::Apns,
        token: "ab".repeat(32),
        conv: ConvId(9),
        seq: Seq(id),
        sender: UserId(2),
        preview: Some("hi".into()),
        unread: 1,
        count: 1,
        created: UnixMillis(1),
    }
}

struct Link {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Link {
    fn open(dir: &Path) -> Link {
        let stream = UnixStream::connect(dir.join("pushd.sock")).expect("pushd listens");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        Link {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, msg: &ToPushd) {
        let mut out = Vec::new();
        encode_frame(msg, &mut out);
        self.stream.write_all(&out).expect("pushd reads");
    }

    /// The next frame, or `None` once pushd closes the link.
    fn recv(&mut self) -> Option<ToEngine> {
        loop {
            if let Some((msg, n)) = decode_frame::<ToEngine>(&self.buf).expect("valid frames") {
                self.buf.drain(..n);
                return Some(msg);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

#[test]
fn bad_configuration_is_refused_with_a_message() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "queue_max = 0\n").expect("writable");
    let out = Command::new(env!("CARGO_BIN_EXE_pushd"))
        .arg("--config")
        .arg(&path)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("queue_max"),
        "{out:?}"
    );
    std::fs::write(
        &path,
        "[apns]\nkey_file = \"/nonexistent.p8\"\nkey_id = \"K\"\nteam_id = \"T\"\ntopic = \"x\"\n",
    )
    .expect("writable");
    let out = Command::new(env!("CARGO_BIN_EXE_pushd"))
        .arg("--config")
        .arg(&path)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent.p8"),
        "{out:?}"
    );
}

#[test]
fn jobs_are_stored_before_the_answer_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let d = start(dir.path(), &config(dir.path()));
    assert_eq!(get(d.admin, "/healthz").0, 200);
    assert_eq!(get(d.admin, "/readyz").0, 503, "no engine linked yet");
    let mut link = Link::open(dir.path());
    link.send(&ToPushd::Hello {
        version: LINK_VERSION,
    });
    assert_eq!(
        link.recv(),
        Some(ToEngine::Hello {
            version: LINK_VERSION
        })
    );
    link.send(&ToPushd::Jobs(vec![job(1), job(2), job(1)]));
    assert_eq!(link.recv(), Some(ToEngine::Stored { ids: vec![1, 2, 1] }));
    assert_eq!(get(d.admin, "/readyz").0, 200);
    // No APNs configured: the jobs are dead-lettered, which is also durable.
    let deadline = Instant::now() + WAIT;
    while metric(d.admin, "pushd_jobs_dead_total{provider=\"apns\"}") != "2" {
        assert!(Instant::now() < deadline, "{}", get(d.admin, "/metrics").1);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(metric(d.admin, "pushd_jobs_received_total"), "2");
    assert_eq!(metric(d.admin, "pushd_jobs_duplicate_total"), "1");
    assert_eq!(metric(d.admin, "pushd_queue_depth"), "0");
    drop(d);
    // A job offered again after a restart is taken again (it was not sent).
    let d = start(dir.path(), &config(dir.path()));
    let mut link = Link::open(dir.path());
    link.send(&ToPushd::Hello {
        version: LINK_VERSION,
    });
    assert!(matches!(link.recv(), Some(ToEngine::Hello { .. })));
    link.send(&ToPushd::Jobs(vec![job(3)]));
    assert_eq!(link.recv(), Some(ToEngine::Stored { ids: vec![3] }));
    drop(d);
}

#[test]
fn a_wrong_hello_or_an_oversized_frame_drops_the_link() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let d = start(dir.path(), &config(dir.path()));
    let mut link = Link::open(dir.path());
    link.send(&ToPushd::Hello {
        version: LINK_VERSION + 1,
    });
    // pushd's own Hello may or may not get out before it drops the link.
    let mut first = link.recv();
    if matches!(first, Some(ToEngine::Hello { .. })) {
        first = link.recv();
    }
    assert_eq!(first, None, "a link of another version is dropped");
    let mut link = Link::open(dir.path());
    link.send(&ToPushd::Hello {
        version: LINK_VERSION,
    });
    assert!(matches!(link.recv(), Some(ToEngine::Hello { .. })));
    let len = u32::try_from(FRAME_MAX + 1).expect("fits").to_be_bytes();
    link.stream.write_all(&len).expect("pushd reads");
    assert_eq!(link.recv(), None, "an oversized frame drops the link");
    // pushd itself is fine.
    assert_eq!(get(d.admin, "/healthz").0, 200);
    let mut link = Link::open(dir.path());
    link.send(&ToPushd::Hello {
        version: LINK_VERSION,
    });
    assert!(matches!(link.recv(), Some(ToEngine::Hello { .. })));
}
