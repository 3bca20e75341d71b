//! Push notifications end to end: the real engine, pushd and mock provider
//! processes. An offline device with a token gets one notification per
//! coalescing window; an online one none; a device back before dispatch
//! none; invalid tokens are removed; throttling, 5xx and outages are
//! retried, trip the circuit and fail over; and SIGKILL of either daemon
//! loses no job.

// Reason: metric values here are small integers, printed and parsed exactly.
#![allow(clippy::float_cmp)]

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use protocol::{ClientMsg, ConvId, Platform, ServerMsg};
use serde_json::Value;
use support::chat::Device;
use support::pushd::{Mock, Pushd, config, eventually, metric_in};
use support::{Options, Server, WAIT};

/// The coalescing window the tests run with.
const WINDOW: &str = "1s";
const WINDOW_MS: u64 = 1000;

/// How long a notification may take once due (retries included).
const DELIVERY: Duration = Duration::from_secs(15);

fn apns_token(n: u64) -> String {
    format!("{n:064x}")
}

fn fcm_token(n: u64) -> String {
    format!("fcm-token-{n}")
}

/// An engine linked to `pushd`.
fn engine(pushd: &Pushd, shards: u16, data_dir: Option<&Path>) -> Server {
    engine_on(&pushd.socket, shards, data_dir)
}

fn engine_on(socket: &Path, shards: u16, data_dir: Option<&Path>) -> Server {
    let mut o = Options::new()
        .shards(shards)
        .arg("--push-socket")
        .arg(socket)
        .arg("--push-coalesce")
        .arg(WINDOW)
        .arg("--admin-listen")
        .arg("127.0.0.1:0");
    if let Some(d) = data_dir {
        o = o.data_dir(d);
    }
    o.start()
}

fn engine_metrics(server: &Server) -> String {
    server.admin_metrics()
}

fn engine_metric(server: &Server, series: &str) -> f64 {
    metric_in(&engine_metrics(server), series)
}

/// Registers `token` on a connected device, then disconnects it and waits
/// until the engine has let go of the session.
fn register_offline(server: &Server, user: u64, device: u64, platform: Platform, token: &str) {
    let mut d = Device::online(server, user, device);
    let token = token.to_owned();
    let answer = d.request(|rid| ClientMsg::PushRegister {
        rid,
        platform,
        token,
    });
    assert!(matches!(answer, ServerMsg::Ok { .. }), "{answer:?}");
    let before = sessions(server);
    drop(d);
    eventually("the session ended", WAIT, || sessions(server) < before);
}

fn sessions(server: &Server) -> f64 {
    engine_metrics(server)
        .lines()
        .filter(|l| l.starts_with("switchboard_sessions{"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

fn apns_to(received: &[Value], token: &str) -> Vec<Value> {
    received
        .iter()
        .filter(|r| r["provider"] == "apns" && r["token"] == token)
        .cloned()
        .collect()
}

fn fcm_to(received: &[Value], token: &str) -> Vec<Value> {
    received
        .iter()
        .filter(|r| r["provider"] == "fcm" && r["token"] == token)
        .cloned()
        .collect()
}

struct Rig {
    dir: tempfile::TempDir,
    mock: Mock,
    pushd: Pushd,
    server: Server,
}

fn rig(shards: u16, mock_args: &[&str], pushd_extra: &str) -> Rig {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mock = Mock::start(mock_args);
    let pushd = Pushd::start(dir.path(), &config(dir.path(), &mock, None, pushd_extra));
    let server = engine(&pushd, shards, None);
    pushd.wait_linked(1);
    Rig {
        dir,
        mock,
        pushd,
        server,
    }
}

fn conv_with(sender: &mut Device, user: u64) -> ConvId {
    sender.direct_open(user).conv
}

#[test]
fn an_offline_device_gets_one_notification_per_window() {
    for shards in [1, 2] {
        let r = rig(shards, &[], "");
        let mut alice = Device::online(&r.server, 1, 1);
        register_offline(&r.server, 2, 1, Platform::Apns, &apns_token(21));
        register_offline(&r.server, 2, 2, Platform::Fcm, &fcm_token(22));
        let conv = conv_with(&mut alice, 2);
        for i in 1..=3 {
            alice.send_text(conv, &format!("m{i}"));
        }
        let got = r.mock.wait_accepted(2, DELIVERY);
        std::thread::sleep(Duration::from_millis(WINDOW_MS + 500));
        let got_later = r.mock.notifications(200);
        assert_eq!(got_later.len(), 2, "one per device in the window: {got:#?}");
        let apns = &apns_to(&got_later, &apns_token(21))[0];
        assert_eq!(apns["headers"]["apns-collapse-id"], conv.0.to_string());
        assert_eq!(apns["headers"]["apns-push-type"], "alert");
        assert_eq!(apns["body"]["aps"]["badge"], 3, "{apns:#}");
        assert_eq!(
            apns["body"]["aps"]["alert"]["body"], "m3",
            "the newest message's preview"
        );
        let fcm = &fcm_to(&got_later, &fcm_token(22))[0];
        assert_eq!(fcm["body"]["message"]["data"]["count"], "3", "{fcm:#}");
        assert_eq!(fcm["body"]["message"]["data"]["conv"], conv.0.to_string());
        // A later message opens a new window: one more each.
        alice.send_text(conv, "m4");
        let got = r.mock.wait_accepted(4, DELIVERY);
        let apns = apns_to(&got, &apns_token(21));
        assert_eq!(apns.len(), 2);
        assert_eq!(apns[1]["body"]["aps"]["badge"], 4);
        assert_eq!(
            engine_metric(&r.server, "switchboard_push_jobs_created_total"),
            4.0
        );
        assert_eq!(
            engine_metric(&r.server, "switchboard_push_coalesced_total"),
            4.0
        );
        eventually("acked jobs leave the outbox", WAIT, || {
            engine_metric(&r.server, "switchboard_push_acked_total") >= 4.0
        });
        assert_eq!(
            r.pushd.metric("pushd_jobs_sent_total{provider=\"apns\"}"),
            2.0
        );
        assert_eq!(
            r.pushd.metric("pushd_jobs_sent_total{provider=\"fcm\"}"),
            2.0
        );
        drop(r.dir);
    }
}

#[test]
fn a_private_conversation_notifies_without_a_preview() {
    let r = rig(2, &[], "");
    let mut alice = Device::online(&r.server, 1, 1);
    register_offline(&r.server, 2, 1, Platform::Apns, &apns_token(31));
    register_offline(&r.server, 2, 2, Platform::Fcm, &fcm_token(32));
    let conv = conv_with(&mut alice, 2);
    let answer = alice.request(|rid| ClientMsg::ConvSetPrivate {
        rid,
        conv,
        private: true,
    });
    assert!(matches!(answer, ServerMsg::Conv { .. }), "{answer:?}");
    alice.send_text(conv, "the secret plan");
    let got = r.mock.wait_accepted(2, DELIVERY);
    let text = serde_json::to_string(&got).expect("JSON");
    assert!(!text.contains("secret"), "a preview leaked: {text}");
    let apns = &apns_to(&got, &apns_token(31))[0];
    assert_eq!(
        apns["body"]["aps"]["badge"], 2,
        "the private event and the text are unread"
    );
    // Back to normal: previews again.
    let answer = alice.request(|rid| ClientMsg::ConvSetPrivate {
        rid,
        conv,
        private: false,
    });
    assert!(matches!(answer, ServerMsg::Conv { .. }), "{answer:?}");
    std::thread::sleep(Duration::from_millis(WINDOW_MS + 200));
    alice.send_text(conv, "the open plan");
    let got = r.mock.wait_accepted(4, DELIVERY);
    let apns = apns_to(&got, &apns_token(31));
    assert_eq!(apns[1]["body"]["aps"]["alert"]["body"], "the open plan");
}

#[test]
fn an_online_device_gets_none() {
    let r = rig(2, &[], "");
    let mut alice = Device::online(&r.server, 1, 1);
    let mut bob = Device::online(&r.server, 2, 1);
    let token = apns_token(5);
    let answer = bob.request(|rid| ClientMsg::PushRegister {
        rid,
        platform: Platform::Apns,
        token,
    });
    assert!(matches!(answer, ServerMsg::Ok { .. }), "{answer:?}");
    let conv = conv_with(&mut alice, 2);
    alice.send_text(conv, "hello");
    assert_eq!(bob.expect_msg().conv, conv);
    std::thread::sleep(Duration::from_millis(WINDOW_MS * 2));
    assert!(
        r.mock.notifications(200).is_empty(),
        "{:#?}",
        r.mock.received()
    );
    assert_eq!(
        engine_metric(&r.server, "switchboard_push_jobs_created_total"),
        0.0
    );
}

#[test]
fn a_device_back_before_dispatch_gets_none() {
    let r = rig(1, &[], "");
    let mut alice = Device::online(&r.server, 1, 1);
    register_offline(&r.server, 2, 1, Platform::Apns, &apns_token(7));
    let conv = conv_with(&mut alice, 2);
    alice.send_text(conv, "are you there");
    eventually("the job opens", WAIT, || {
        engine_metric(&r.server, "switchboard_push_jobs_created_total") == 1.0
    });
    // Back inside the window: the open job is dropped.
    let _bob = Device::online(&r.server, 2, 1);
    std::thread::sleep(Duration::from_millis(WINDOW_MS * 2));
    assert!(
        r.mock.notifications(200).is_empty(),
        "{:#?}",
        r.mock.received()
    );
    assert_eq!(
        engine_metric(&r.server, "switchboard_push_cancelled_total"),
        1.0
    );
}

#[test]
fn a_device_back_while_pushd_holds_its_job_gets_none() {
    let r = rig(1, &[], "");
    r.mock.fault(r#"{"status":503}"#);
    let mut alice = Device::online(&r.server, 1, 1);
    register_offline(&r.server, 2, 1, Platform::Apns, &apns_token(8));
    let conv = conv_with(&mut alice, 2);
    alice.send_text(conv, "ping");
    eventually("pushd holds the job", DELIVERY, || {
        r.pushd.metric("pushd_jobs_received_total") == 1.0
    });
    let _bob = Device::online(&r.server, 2, 1);
    eventually("pushd cancels it", WAIT, || {
        r.pushd.metric("pushd_jobs_cancelled_total") == 1.0
    });
    r.mock.reset();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        r.mock.notifications(200).is_empty(),
        "{:#?}",
        r.mock.received()
    );
    assert_eq!(r.pushd.metric("pushd_queue_depth"), 0.0);
}

#[test]
fn invalid_tokens_are_removed_from_the_engine() {
    let apns = apns_token(9);
    let fcm = fcm_token(10);
    let r = rig(2, &["--invalid-token", &apns, "--invalid-token", &fcm], "");
    let mut alice = Device::online(&r.server, 1, 1);
    register_offline(&r.server, 2, 1, Platform::Apns, &apns);
    register_offline(&r.server, 2, 2, Platform::Fcm, &fcm);
    let conv = conv_with(&mut alice, 2);
    alice.send_text(conv, "one");
    eventually("both tokens reported and removed", DELIVERY, || {
        engine_metric(&r.server, "switchboard_push_invalid_tokens_total") == 2.0
    });
    let received = r.mock.received();
    assert_eq!(apns_to(&received, &apns)[0]["status"], 410);
    assert_eq!(apns_to(&received, &apns)[0]["reason"], "Unregistered");
    assert_eq!(fcm_to(&received, &fcm)[0]["status"], 404);
    let sends = received.iter().filter(|r| r["provider"] != "oauth").count();
    alice.send_text(conv, "two");
    std::thread::sleep(Duration::from_millis(WINDOW_MS * 2));
    let later = r
        .mock
        .received()
        .into_iter()
        .filter(|r| r["provider"] != "oauth")
        .count();
    assert_eq!(later, sends, "no job for a removed token");
    assert_eq!(
        r.pushd
            .metric("pushd_invalid_tokens_total{provider=\"apns\"}"),
        1.0
    );
    // Restarted devices register again and get pushes again.
    register_offline(&r.server, 2, 1, Platform::Apns, &apns_token(11));
    alice.send_text(conv, "three");
    let got = r.mock.wait_accepted(1, DELIVERY);
    assert_eq!(got[0]["token"], apns_token(11));
}

#[test]
fn throttling_and_unavailability_are_retried_honouring_retry_after() {
    let r = rig(1, &[], "");
    r.mock
        .fault(r#"{"status":429,"retry_after_s":2,"remaining":1,"provider":"apns"}"#);
    let mut alice = Device::online(&r.server, 1, 1);
    register_offline(&r.server, 2, 1, Platform::Apns, &apns_token(12));
    let conv = conv_with(&mut alice, 2);
    alice.send_text(conv, "slow down");
    r.mock.wait_accepted(1, DELIVERY);
    let sent: Vec<Value> = apns_to(&r.mock.received(), &apns_token(12));
    assert_eq!(sent.len(), 2, "{sent:#?}");
    assert_eq!(sent[0]["status"], 429);
    let waited = sent[1]["at_ms"].as_u64().expect("ms") - sent[0]["at_ms"].as_u64().expect("ms");
    assert!(waited >= 2000, "Retry-After 2 s, retried after {waited} ms");
    // 503 twice, then accepted: retried with backoff.
    r.mock.reset();
    r.mock
        .fault(r#"{"status":503,"remaining":2,"provider":"fcm"}"#);
    register_offline(&r.server, 3, 1, Platform::Fcm, &fcm_token(13));
    let conv = conv_with(&mut alice, 3);
    alice.send_text(conv, "are you up");
    r.mock.wait_accepted(1, DELIVERY);
    // Only this job's requests reach FCM after the reset (the mock records
    // no token for a request it faults before reading the body).
    let sent: Vec<Value> = r
        .mock
        .received()
        .into_iter()
        .filter(|r| r["provider"] == "fcm")
        .collect();
    let statuses: Vec<u64> = sent.iter().filter_map(|s| s["status"].as_u64()).collect();
    assert_eq!(statuses, vec![503, 503, 200]);
    assert!(r.pushd.metric("pushd_jobs_retried_total{provider=\"fcm\"}") >= 2.0);
    assert_eq!(
        r.pushd
            .metric("pushd_jobs_failed_total{provider=\"apns\",reason=\"TooManyRequests\"}"),
        1.0
    );
}

#[test]
fn an_outage_opens_the_circuit_keeps_the_jobs_and_delivers_after_recovery() {
    let r = rig(2, &[], "");
    r.mock.fault(r#"{"status":503}"#);
    let mut alice = Device::online(&r.server, 1, 1);
    let users = [2_u64, 3, 4, 5];
    for &u in &users {
        register_offline(&r.server, u, 1, Platform::Apns, &apns_token(100 + u));
    }
    for &u in &users {
        let conv = conv_with(&mut alice, u);
        alice.send_text(conv, "outage");
    }
    eventually("the circuit opens", DELIVERY, || {
        r.pushd
            .metric("pushd_circuit_state{provider=\"apns\",endpoint=\"primary\"}")
            == 1.0
    });
    // Jobs whose windows closed after the circuit opened arrive too; all
    // are kept while it is open.
    eventually("pushd holds all 4 jobs", DELIVERY, || {
        r.pushd.metric("pushd_jobs_received_total") == 4.0
    });
    assert_eq!(r.pushd.metric("pushd_queue_depth"), 4.0);
    assert_eq!(
        r.pushd.metric("pushd_jobs_sent_total{provider=\"apns\"}"),
        0.0
    );
    r.mock.reset();
    let got = r.mock.wait_accepted(4, DELIVERY);
    let tokens: HashSet<String> = got
        .iter()
        .filter_map(|g| g["token"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(tokens.len(), 4, "{got:#?}");
    eventually("the circuit closes", WAIT, || {
        r.pushd
            .metric("pushd_circuit_state{provider=\"apns\",endpoint=\"primary\"}")
            == 0.0
    });
    assert_eq!(r.pushd.metric("pushd_queue_depth"), 0.0);
}

#[test]
fn the_secondary_endpoint_serves_while_the_primary_is_down() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let primary = Mock::start(&["--fault-status", "503"]);
    let secondary = Mock::start(&[]);
    let pushd = Pushd::start(
        dir.path(),
        &config(dir.path(), &primary, Some(&secondary), ""),
    );
    let server = engine(&pushd, 1, None);
    pushd.wait_linked(1);
    let mut alice = Device::online(&server, 1, 1);
    for u in 2..=7 {
        register_offline(&server, u, 1, Platform::Apns, &apns_token(200 + u));
    }
    for u in 2..=7 {
        let conv = conv_with(&mut alice, u);
        alice.send_text(conv, "failover");
    }
    let got = secondary.wait_accepted(6, DELIVERY);
    assert_eq!(got.len(), 6);
    let primary_tries = primary.notifications(503).len();
    assert!(
        (3..=9).contains(&primary_tries),
        "the primary saw {primary_tries} tries: its circuit opened after 3 failures"
    );
    assert!(primary.notifications(200).is_empty());
}

/// `n` offline users, each with an APNs token, each sent one message.
fn offline_jobs(server: &Server, n: u64, token_base: u64) -> HashSet<String> {
    let mut alice = Device::online(server, 1, 1);
    let mut tokens = HashSet::new();
    for u in 2..2 + n {
        register_offline(server, u, 1, Platform::Apns, &apns_token(token_base + u));
        tokens.insert(apns_token(token_base + u));
    }
    for u in 2..2 + n {
        let conv = conv_with(&mut alice, u);
        alice.send_text(conv, "durable");
    }
    tokens
}

fn accepted_tokens(mock: &Mock) -> HashSet<String> {
    mock.notifications(200)
        .iter()
        .filter_map(|g| g["token"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn sigkill_of_pushd_loses_no_job() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mock = Mock::start(&["--latency-ms", "200"]);
    let toml = config(dir.path(), &mock, None, "");
    let mut pushd = Pushd::start(dir.path(), &toml);
    let server = engine(&pushd, 2, None);
    pushd.wait_linked(1);
    let tokens = offline_jobs(&server, 40, 1000);
    eventually("pushd has taken jobs", DELIVERY, || {
        pushd.metric("pushd_jobs_received_total") >= 40.0
    });
    eventually("some are being sent", DELIVERY, || {
        !mock.received().is_empty()
    });
    pushd.proc.sigkill();
    let pushd = Pushd::start(dir.path(), &toml);
    pushd.wait_linked(1);
    eventually("every job reaches the provider", DELIVERY * 2, || {
        accepted_tokens(&mock) == tokens
    });
}

#[test]
fn sigkill_of_the_engine_loses_no_job() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let data = dir.path().join("engine");
    let mock = Mock::start(&[]);
    let toml = config(dir.path(), &mock, None, "");
    let socket = dir.path().join("pushd.sock");
    // No pushd yet: jobs wait in the engine's outbox, windows open.
    let mut server = engine_on(&socket, 2, Some(&data));
    let tokens = offline_jobs(&server, 40, 2000);
    eventually("every job is opened", WAIT, || {
        engine_metric(&server, "switchboard_push_jobs_created_total") == 40.0
    });
    std::thread::sleep(Duration::from_millis(300));
    server.sigkill();
    let pushd = Pushd::start(dir.path(), &toml);
    let _server = engine_on(&socket, 2, Some(&data));
    pushd.wait_linked(1);
    eventually("every job reaches the provider", DELIVERY, || {
        accepted_tokens(&mock) == tokens
    });
}
