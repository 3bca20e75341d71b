//! The admin listener (`GET /metrics`, Prometheus text format 0.0.4) and the
//! dev fault injection `--dev-drop-delivery-every`.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use protocol::{ConvId, Seq, ServerMsg, UserId};
use support::chat::Device;
use support::{Options, Server, WAIT, http};

const ALICE: u64 = 1;
const BOB: u64 = 2;
const CAROL: u64 = 3;

/// Every metric `/metrics` must list.
const METRICS: [&str; 29] = [
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
    "switchboard_connections",
    "switchboard_sessions",
    "switchboard_messages_appended_total",
    "switchboard_deliveries_total",
    "switchboard_router_dropped_total",
    "switchboard_slow_consumer_closes_total",
    "switchboard_handshakes_total",
    "switchboard_auth_failures_total",
    "switchboard_handshake_failures_total",
    "switchboard_messages_in_total",
    "switchboard_messages_out_total",
    "switchboard_router_queue_depth",
    "switchboard_ip_limit_refusals_total",
    "switchboard_user_limit_closes_total",
    "switchboard_rate_limited_sends_total",
    "switchboard_rate_limit_closes_total",
    "switchboard_errors_total",
    "switchboard_closes_total",
    "switchboard_send_ack_seconds",
    "switchboard_store_commits_total",
    "switchboard_store_write_requests_total",
    "switchboard_store_ops_total",
    "switchboard_store_refused_total",
    "switchboard_store_commit_seconds_total",
    "switchboard_store_commit_latency_seconds",
    "switchboard_store_batch_requests",
];

/// Metrics that traffic must move (`the_operational_metrics_move_with_traffic`).
const MOVING: [&str; 13] = [
    "switchboard_handshakes_total",
    "switchboard_auth_failures_total",
    "switchboard_messages_in_total",
    "switchboard_messages_out_total",
    "switchboard_send_ack_seconds_count",
    "switchboard_store_commits_total",
    "switchboard_store_write_requests_total",
    "switchboard_store_commit_seconds_total",
    "switchboard_store_commit_latency_seconds_count",
    "switchboard_store_batch_requests_count",
    "switchboard_messages_appended_total",
    "switchboard_push_outbox_depth",
    "switchboard_push_jobs_created_total",
];

/// The push metrics, listed when a pushd socket is configured.
const PUSH_METRICS: [&str; 4] = [
    "switchboard_push_outbox_depth",
    "switchboard_push_jobs_created_total",
    "switchboard_push_linked",
    "switchboard_push_acked_total",
];

/// A server with its admin listener on a port of its own.
fn start(options: Options) -> (Server, SocketAddr) {
    let server = options.arg("--admin-listen").arg("127.0.0.1:0").start();
    assert!(
        server.wait_for_log("admin listening", WAIT),
        "no admin listener; log:\n{}",
        server.log()
    );
    let log = server.log();
    let line = log.lines().find(|l| l.contains("admin listening")).unwrap();
    let (_, rest) = line.split_once("addr=").unwrap();
    let admin = rest.split_whitespace().next().unwrap().parse().unwrap();
    (server, admin)
}

/// One scrape: each series (name and labels) and its value, checked to
/// be a number.
fn scrape(admin: SocketAddr) -> BTreeMap<String, String> {
    let response = http::get(admin, "/metrics");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = response.text();
    let mut series = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        if let Err(e) = value.parse::<f64>() {
            panic!("bad value in {line:?}: {e}");
        }
        series.insert(name.to_owned(), value.to_owned());
    }
    for name in METRICS {
        assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
        assert!(text.contains(&format!("# TYPE {name} ")), "{name}:\n{text}");
        assert!(
            series.keys().any(|s| s == name
                || s.starts_with(&format!("{name}{{"))
                || s.starts_with(&format!("{name}_bucket{{"))),
            "no {name} series:\n{text}"
        );
    }
    series
}

/// The sum of `name` (a whole number per shard) over every shard.
fn total(series: &BTreeMap<String, String>, name: &str) -> u64 {
    let prefix = format!("{name}{{shard=\"");
    series
        .iter()
        .filter(|(s, _)| s.starts_with(&prefix))
        .map(|(s, v)| v.parse::<u64>().unwrap_or_else(|e| panic!("{s} {v}: {e}")))
        .sum()
}

/// A process metric's value.
fn number(series: &BTreeMap<String, String>, name: &str) -> f64 {
    series[name].parse().unwrap()
}

/// Scrapes until `name`, summed over the shards, satisfies `pred`; panics
/// with the last value after [`WAIT`].
fn wait_total(admin: SocketAddr, name: &str, pred: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = total(&scrape(admin), name);
        if pred(value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{name} stayed at {value}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn direct(a: u64, b: u64) -> ConvId {
    ConvId::direct(UserId(a), UserId(b))
}

#[test]
fn metrics_lists_every_metric_and_follows_connections() {
    let (server, admin) = start(Options::new().shards(2));
    let first = scrape(admin);
    assert!(number(&first, "process_resident_memory_bytes") > 0.0);
    assert!(number(&first, "process_open_fds") > 0.0);
    assert!(number(&first, "process_cpu_seconds_total") >= 0.0);
    for shard in 0..2 {
        assert!(first.contains_key(&format!("switchboard_connections{{shard=\"{shard}\"}}")));
    }
    assert_eq!(total(&first, "switchboard_connections"), 0);
    assert_eq!(total(&first, "switchboard_sessions"), 0);

    let mut alice = Device::online(&server, ALICE, 1);
    let mut bob = Device::online(&server, BOB, 1);
    let carol = Device::online(&server, CAROL, 1);
    wait_total(admin, "switchboard_connections", |v| v == 3);
    wait_total(admin, "switchboard_sessions", |v| v == 3);

    alice.direct_open(BOB);
    alice.send_text(direct(ALICE, BOB), "hello");
    assert_eq!(bob.expect_msg().seq, Seq(1));
    wait_total(admin, "switchboard_messages_appended_total", |v| v == 1);
    wait_total(admin, "switchboard_deliveries_total", |v| v == 1);
    let now = scrape(admin);
    assert_eq!(total(&now, "switchboard_router_dropped_total"), 0);
    assert_eq!(total(&now, "switchboard_slow_consumer_closes_total"), 0);

    alice.close();
    bob.close();
    carol.abort();
    wait_total(admin, "switchboard_connections", |v| v == 0);
    wait_total(admin, "switchboard_sessions", |v| v == 0);
}

/// The value of one unlabelled series (or the sum of a labelled one).
fn value(series: &BTreeMap<String, String>, name: &str) -> f64 {
    series
        .iter()
        .filter(|(s, _)| *s == name || s.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

#[test]
fn the_operational_metrics_move_with_traffic() {
    let dir = tempfile::tempdir().unwrap();
    // A pushd socket nobody listens on: push jobs wait in the outbox.
    let socket = dir.path().join("pushd.sock");
    let (server, admin) = start(
        Options::new()
            .shards(2)
            .arg("--push-socket")
            .arg(&socket)
            .arg("--push-coalesce")
            .arg("100ms"),
    );
    let before = scrape(admin);
    let text = http::get(admin, "/metrics").text();
    for name in PUSH_METRICS {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name}:\n{text}");
    }
    for path in ["/healthz", "/readyz"] {
        assert_eq!(http::get(admin, path).status, 200, "{path}");
    }
    let upgrade = "GET /ws?token=nonsense HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";
    assert_eq!(http::request(server.addr(), upgrade.as_bytes()).status, 401);
    let mut bob = Device::online(&server, BOB, 1);
    let token = "ab".repeat(32);
    let ok = bob.request(|rid| protocol::ClientMsg::PushRegister {
        rid,
        platform: protocol::Platform::Apns,
        token,
    });
    assert!(matches!(ok, ServerMsg::Ok { .. }), "{ok:?}");
    bob.close();
    wait_total(admin, "switchboard_sessions", |v| v == 0);
    let mut alice = Device::online(&server, ALICE, 1);
    alice.direct_open(BOB);
    for i in 0..3 {
        alice.send_text(direct(ALICE, BOB), &format!("m{i}"));
    }
    let deadline = Instant::now() + WAIT;
    let after = loop {
        let now = scrape(admin);
        if value(&now, "switchboard_push_outbox_depth") >= 1.0 || Instant::now() > deadline {
            break now;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for name in MOVING {
        assert!(
            value(&after, name) > value(&before, name),
            "{name}: {} → {}",
            value(&before, name),
            value(&after, name)
        );
    }
    // No pushd; three sends, three acks: the histogram counted each.
    let exact = |name: &str| after[name].parse::<u64>().unwrap();
    assert_eq!(exact("switchboard_push_linked"), 0);
    assert_eq!(exact("switchboard_send_ack_seconds_count"), 3);
    assert_eq!(exact("switchboard_send_ack_seconds_bucket{le=\"+Inf\"}"), 3);
}

#[test]
fn other_admin_paths_and_methods_are_refused() {
    let (server, admin) = start(Options::new());
    assert_eq!(http::get(admin, "/nope").status, 404);
    assert_eq!(http::get(admin, "/metrics/x").status, 404);
    assert_eq!(http::post(admin, "/metrics", b"{}").status, 405);
    // Not on the public port.
    assert_eq!(http::get(server.addr(), "/metrics").status, 404);
    // Still serving after them.
    scrape(admin);
}

#[test]
fn a_taken_admin_port_does_not_stop_the_server() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let server = Options::new().arg("--admin-listen").arg(&port).start();
    assert!(
        server.wait_for_log("cannot bind the admin address", WAIT),
        "{}",
        server.log()
    );
    assert!(!server.log().contains("admin listening"));
    assert_eq!(http::get(server.addr(), "/healthz").status, 200);
    let mut alice = Device::online(&server, ALICE, 1);
    alice.direct_open(BOB);
    alice.send_text(direct(ALICE, BOB), "still up");
}

#[test]
fn dropping_every_third_live_delivery_loses_it_live_only() {
    let options = Options::new().arg("--dev-drop-delivery-every").arg("3");
    let (server, admin) = start(options);
    assert!(server.wait_for_log("dev fault injection", WAIT));
    let mut alice = Device::online(&server, ALICE, 1);
    let mut bob = Device::online(&server, BOB, 1);
    let conv = direct(ALICE, BOB);
    alice.direct_open(BOB);
    let bodies: Vec<String> = (1..=9).map(|i| format!("m{i}")).collect();
    let acks = alice.send_many(conv, &bodies, 1);
    assert_eq!(acks.last().unwrap().seq, Seq(9));

    let got: Vec<Seq> = bob
        .drain(Duration::from_millis(500))
        .into_iter()
        .filter_map(|m| match m {
            ServerMsg::Msg(m) if m.conv == conv => Some(m.seq),
            _ => None,
        })
        .collect();
    let kept = [1, 2, 4, 5, 7, 8].map(Seq);
    assert_eq!(got, kept, "live deliveries with every third dropped");
    let stored: Vec<Seq> = bob.fetch_all(conv).iter().map(|m| m.seq).collect();
    assert_eq!(
        stored,
        (1..=9).map(Seq).collect::<Vec<_>>(),
        "all still fetchable"
    );
    // The sender's device gets none of its own back, and none is counted.
    assert!(
        alice
            .drain(Duration::from_millis(100))
            .iter()
            .all(|m| !matches!(m, ServerMsg::Msg(_)))
    );
    let metrics = scrape(admin);
    assert_eq!(total(&metrics, "switchboard_deliveries_total"), 6);
    assert_eq!(total(&metrics, "switchboard_messages_appended_total"), 9);
}

#[test]
fn dropping_deliveries_is_refused_outside_dev_mode() {
    let exited = Options::new()
        .production()
        .env("SWITCHBOARD_TOKEN_SECRET", "x".repeat(32))
        .arg("--dev-drop-delivery-every")
        .arg("3")
        .start_and_expect_exit();
    assert!(!exited.status.success());
    assert!(
        exited
            .log
            .contains("dev_drop_delivery_every needs dev mode"),
        "{}",
        exited.log
    );
}
