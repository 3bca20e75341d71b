//! Each scenario, briefly, against the real `switchboard` binary: the run
//! exits 0, the audit passes, and the outputs are there and parse.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loadgen::summary::Summary;

/// The engine binary next to this test's (cargo builds every workspace
/// binary before running tests).
fn switchboard() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("switchboard");
    assert!(bin.exists(), "build the engine first: {}", bin.display());
    bin
}

/// A dev server on a free loopback port; killed (by pid) on drop.
struct Server {
    child: Child,
    port: u16,
    /// The admin port (`/metrics`).
    admin: u16,
    data: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        Server::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Server {
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new(switchboard())
            .args([
                "--dev",
                "--listen",
                "127.0.0.1:0",
                "--shards",
                "2",
                "--data-dir",
            ])
            .arg(data.path())
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(extra)
            .env("SWITCHBOARD_LOG", "info,fjall=warn,lsm_tree=warn")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening addr=127.0.0.1:").nth(1) {
                    let port: u16 = rest.split(' ').next().unwrap().parse().unwrap();
                    let _ = tx.send((line.contains("admin listening"), port));
                }
            }
        });
        let (mut port, mut admin) = (0, 0);
        while port == 0 || admin == 0 {
            match rx.recv_timeout(Duration::from_secs(10)).unwrap() {
                (true, p) => admin = p,
                (false, p) => port = p,
            }
        }
        Server {
            child,
            port,
            admin,
            data,
        }
    }

    fn secret(&self) -> PathBuf {
        self.data.path().join("dev-token-secret")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn loadgen(server: &Server, out: &Path, args: &[&str]) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    let child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("run")
        .args(args)
        .arg("--server")
        .arg(format!("127.0.0.1:{}", server.port))
        .arg("--secret-file")
        .arg(server.secret())
        .arg("--metrics")
        .arg(format!("127.0.0.1:{}", server.admin))
        .arg("--out")
        .arg(out)
        .arg("--threads")
        .arg("2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(Instant::now() < deadline, "loadgen ran over its bound");
    output
}

fn check_outputs(out: &Path, metrics: &[&str]) -> Summary {
    let summary = Summary::read(&out.join("summary.json")).unwrap();
    for m in metrics {
        let hgrm = std::fs::read_to_string(out.join(format!("{m}.hgrm"))).unwrap();
        assert!(hgrm.contains("Percentile"), "{m}.hgrm: {hgrm}");
        assert!(summary.latency.contains_key(*m), "no {m} in the summary");
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<svg"), "the report has plots");
    summary
}

#[test]
fn chat_delivers_every_acked_message_and_writes_the_outputs() {
    let server = Server::start();
    let out = tempfile::tempdir().unwrap();
    let args = [
        "chat",
        "--conns",
        "40",
        "--rate",
        "400",
        // Long enough for a once-a-second scrape to see the connections open
        // even when a loaded machine takes a second to connect them.
        "--duration",
        "3",
        "--drain",
        "5",
    ];
    let output = loadgen(&server, out.path(), &args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let s = check_outputs(out.path(), &["connect", "send_ack", "send_deliver"]);
    assert!(s.audit.passed, "{:?}", s.audit);
    assert_eq!(s.totals.connections_opened, 40);
    assert!(s.totals.sent >= 300, "{:?}", s.totals);
    assert_eq!(s.totals.acked, s.totals.sent);
    assert_eq!(s.totals.delivered, s.totals.sent);
    assert_eq!(s.audit.checked_messages, s.totals.sent);
    // The server's side, scraped from its /metrics.
    assert!(!s.server.is_empty(), "no server samples");
    assert!(s.server.iter().all(|x| x.rss_bytes > 0));
    assert!(
        s.server
            .iter()
            .any(|x| x.connections.is_some_and(|c| c > 0)),
        "{:?}",
        s.server
    );
}

#[test]
fn connect_holds_connections_over_two_worker_processes() {
    let server = Server::start();
    let out = tempfile::tempdir().unwrap();
    let args = [
        "connect",
        "--conns",
        "300",
        "--connect-rate",
        "1000",
        "--duration",
        "1",
        "--processes",
        "2",
    ];
    let output = loadgen(&server, out.path(), &args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let s = check_outputs(out.path(), &["connect"]);
    assert_eq!(s.totals.connections_opened, 300);
    assert_eq!(s.totals.connect_errors, 0);
    assert_eq!(
        s.latency["connect"].count, 300,
        "both workers' histograms merged"
    );
}

#[test]
fn reconnect_storm_catches_up_on_everything_missed() {
    let server = Server::start();
    let out = tempfile::tempdir().unwrap();
    let args = [
        "reconnect",
        "--conns",
        "40",
        "--rate",
        "400",
        "--duration",
        "2",
        "--down",
        "0.5",
        "--drain",
        "5",
    ];
    let output = loadgen(&server, out.path(), &args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let s = check_outputs(
        out.path(),
        &["connect", "send_ack", "send_deliver", "catch_up"],
    );
    assert!(s.audit.passed, "{:?}", s.audit);
    assert_eq!(
        s.latency["catch_up"].count, 20,
        "every receiver reconnected"
    );
    assert_eq!(
        s.totals.delivered, s.totals.sent,
        "nothing lost across the reconnects"
    );
    assert!(
        s.latency["send_deliver"].count < s.totals.delivered,
        "some messages came by catch-up, not live"
    );
}

#[test]
fn group_fan_out_reaches_every_member_in_order() {
    let server = Server::start();
    let out = tempfile::tempdir().unwrap();
    let args = [
        "group",
        "--conns",
        "60",
        "--group-size",
        "30",
        "--rate",
        "20",
        "--duration",
        "1",
        "--drain",
        "5",
    ];
    let output = loadgen(&server, out.path(), &args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let s = check_outputs(out.path(), &["connect", "send_ack", "send_deliver"]);
    assert!(s.audit.passed, "{:?}", s.audit);
    assert!(s.totals.sent >= 15, "{:?}", s.totals);
    // Two groups of 30: every message reaches the 29 other members.
    assert_eq!(s.totals.delivered, s.totals.sent * 29);
}

/// The audit is real: a server that drops one live delivery in 25 (its
/// dev-only fault flag) fails the run with exit 1 and names the gaps.
#[test]
fn the_audit_fails_when_the_server_drops_a_message() {
    let server = Server::start_with(&["--dev-drop-delivery-every", "25"]);
    let out = tempfile::tempdir().unwrap();
    let args = [
        "chat",
        "--conns",
        "20",
        "--rate",
        "200",
        "--duration",
        "1",
        "--drain",
        "2",
    ];
    let output = loadgen(&server, out.path(), &args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("audit FAILED"), "{stdout}");
    let s = Summary::read(&out.path().join("summary.json")).unwrap();
    assert!(!s.audit.passed);
    assert!(s.audit.violations_total > 0);
    assert!(
        s.audit.violations.iter().any(|v| v.contains("got seq")),
        "{:?}",
        s.audit.violations
    );
}

#[test]
fn soak_keeps_every_message_through_repeated_reconnects() {
    let server = Server::start();
    let out = tempfile::tempdir().unwrap();
    // 10 connections in two groups of 5, 10 in 5 pairs whose receivers
    // come back about every second.
    let args = [
        "soak",
        "--conns",
        "20",
        "--group-share",
        "0.5",
        "--group-size",
        "5",
        "--rate",
        "200",
        "--duration",
        "4",
        "--reconnect-every",
        "1",
        "--down",
        "0.2",
        "--drain",
        "5",
    ];
    let output = loadgen(&server, out.path(), &args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let s = check_outputs(out.path(), &["send_deliver", "catch_up"]);
    assert!(s.audit.passed, "{:?}", s.audit);
    assert_eq!(s.totals.acked, s.totals.sent);
    assert!(
        s.totals.delivered > s.totals.sent,
        "group fan-out: {:?}",
        s.totals
    );
    // Five receivers, each back about three times in four seconds.
    assert!(
        s.latency["catch_up"].count >= 10,
        "{:?}",
        s.latency["catch_up"].count
    );
}
