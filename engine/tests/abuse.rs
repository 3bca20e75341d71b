//! Misbehaving clients against the real binary, while a well-behaved pair
//! keeps chatting: each abuse gets its documented HTTP status, error or
//! close code, `/metrics` counts it, and the well-behaved pair loses
//! nothing and is never refused.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::limits::{BODY_BYTES_MAX, FRAME_PAYLOAD_BYTES_MAX, HANDSHAKE_BYTES_MAX};
use protocol::{ClientMsg, ConvId, ErrorCode, Page, ServerMsg, close};
use support::chat::Device;
use support::ws::RawWs;
use support::{Options, Server, WAIT, http};

const CONFIG: &str = r#"
admin_listen = "127.0.0.1:0"
handshake_timeout = "1s"
connections_per_ip_max = 20
connections_per_user_max = 3
send_rate_per_connection = 200.0
send_burst_per_connection = 1500
send_rate_per_user = 400.0
send_burst_per_user = 3000
rate_limited_close_after = 50
"#;

/// The well-behaved pair's pace.
const GOOD_EVERY: Duration = Duration::from_millis(100);

fn metrics(server: &Server) -> String {
    server.admin_metrics()
}

/// The sum of every series of metric `name` whose labels contain `labels`.
fn metric(text: &str, name: &str, labels: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| l.contains(labels))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<u64>().ok()))
        .sum()
}

/// Alice sends to Bob every [`GOOD_EVERY`] until stopped; returns how many
/// she sent (each acked, never refused) and the conversation.
struct GoodPair {
    stop: Arc<AtomicBool>,
    sender: std::thread::JoinHandle<(ConvId, u64)>,
    received: Arc<Mutex<Vec<u64>>>,
    receiver: std::thread::JoinHandle<()>,
}

fn good_pair(server: &Server) -> GoodPair {
    let mut alice = Device::online(server, 1, 1);
    let mut bob = Device::online(server, 2, 1);
    let conv = alice.direct_open(2).conv;
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(Mutex::new(Vec::new()));
    let (s, r) = (stop.clone(), received.clone());
    let bob_thread = std::thread::spawn(move || {
        while !s.load(Ordering::Acquire) || r.lock().expect("lock").is_empty() {
            match bob.client().recv(Duration::from_millis(200)) {
                Ok(Some(ServerMsg::Msg(m))) if m.conv == conv => {
                    r.lock().expect("lock").push(m.seq.0);
                    bob.client()
                        .send(&ClientMsg::Recv { conv, seq: m.seq })
                        .expect("bob acknowledges");
                }
                Ok(_) => {}
                Err(e) => panic!("bob's connection failed: {e}"),
            }
            if s.load(Ordering::Acquire) {
                // Drain what is still on its way, then stop.
                while let Ok(Some(ServerMsg::Msg(m))) = bob.client().recv(Duration::from_secs(1)) {
                    r.lock().expect("lock").push(m.seq.0);
                }
                return;
            }
        }
    });
    let s = stop.clone();
    let sender = std::thread::spawn(move || {
        let mut sent = 0;
        while !s.load(Ordering::Acquire) {
            let ack = alice.send_text(conv, &format!("good {sent}"));
            sent += 1;
            assert_eq!(ack.seq.0, sent, "alice's sends are acked in order");
            std::thread::sleep(GOOD_EVERY);
        }
        (conv, sent)
    });
    GoodPair {
        stop,
        sender,
        received,
        receiver: bob_thread,
    }
}

/// A TCP connection from `source` (any address in 127/8).
fn connect_from(source: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddrV4::new(source, 0).into())?;
    socket.connect_timeout(&to.into(), WAIT)?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT))?;
    Ok(stream)
}

fn status_of(mut stream: TcpStream, request: &[u8]) -> u16 {
    let _ = stream.write_all(request);
    let mut text = Vec::new();
    let _ = stream.read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn bad_handshakes(server: &Server) {
    let addr = server.addr();
    let garbage = http::request(
        addr,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    );
    assert_eq!(garbage.status, 400, "garbage head");
    let mut big = b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', HANDSHAKE_BYTES_MAX));
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(http::request(addr, &big).status, 431, "oversized head");
    let bad_token = "GET /ws?token=not-a-token HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    assert_eq!(
        http::request(addr, bad_token.as_bytes()).status,
        401,
        "bad token"
    );
    let no_key = format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: x\r\n\r\n",
        server.token(30, 1)
    );
    assert_ne!(
        http::request(addr, no_key.as_bytes()).status,
        101,
        "not an upgrade"
    );
    // Slowloris: half a head, then nothing; the handshake timeout is 1 s.
    let mut slow = connect_from(Ipv4Addr::LOCALHOST, addr).expect("connects");
    slow.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .expect("writes");
    let started = Instant::now();
    assert_eq!(status_of(slow, b""), 408, "slowloris");
    assert!(started.elapsed() < Duration::from_secs(3));
}

fn ws(server: &Server, user: u64) -> RawWs {
    RawWs::connect(
        server.addr(),
        &format!("/ws?token={}", server.token(user, 1)),
    )
}

/// Reads frames until the close frame; its code.
fn closed_with(w: &mut RawWs) -> Option<u16> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match w.recv(WAIT) {
            Ok(f) if f.opcode == support::ws::CLOSE => return f.close_code(),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    }
    None
}

fn bad_frames(server: &Server) {
    let mut w = ws(server, 40);
    w.send(support::ws::BINARY, &vec![0u8; FRAME_PAYLOAD_BYTES_MAX + 1]);
    assert_eq!(
        closed_with(&mut w),
        Some(close::MESSAGE_TOO_BIG),
        "oversized frame"
    );
    let mut w = ws(server, 41);
    w.send(support::ws::TEXT, b"{\"typing\":\xff\xfe}");
    assert_eq!(
        closed_with(&mut w),
        Some(close::INVALID_PAYLOAD),
        "invalid UTF-8"
    );
    let mut w = ws(server, 42);
    w.send_frame(true, support::ws::TEXT, b"{}", false);
    assert_eq!(
        closed_with(&mut w),
        Some(close::PROTOCOL_ERROR),
        "unmasked frame"
    );
    let mut w = ws(server, 43);
    w.send(0x3, b"");
    assert_eq!(
        closed_with(&mut w),
        Some(close::PROTOCOL_ERROR),
        "reserved opcode"
    );
    let mut w = ws(server, 44);
    let chunk = vec![b'a'; 16 * 1024];
    w.send_frame(false, support::ws::TEXT, &chunk, true);
    for _ in 0..(FRAME_PAYLOAD_BYTES_MAX / chunk.len() + 2) {
        w.send_frame(false, support::ws::CONTINUATION, &chunk, true);
    }
    assert_eq!(
        closed_with(&mut w),
        Some(close::MESSAGE_TOO_BIG),
        "fragment flood"
    );
}

fn error_code(msg: &ServerMsg) -> Option<ErrorCode> {
    match msg {
        ServerMsg::Error { code, .. } => Some(*code),
        _ => None,
    }
}

/// Someone else's conversation and group: every access refused.
fn trespass(server: &Server, conv: ConvId) {
    let mut owner = Device::online(server, 50, 1);
    let group = owner
        .group_create("private club", &[51])
        .expect("created")
        .conv;
    let mut mallory = Device::online(server, 52, 1);
    let refused = mallory.send_refused(conv, "let me in");
    assert!(
        matches!(refused, ErrorCode::Forbidden | ErrorCode::NotFound),
        "{refused:?}"
    );
    let fetch = mallory.request(|rid| ClientMsg::Fetch {
        rid,
        conv,
        from: Page::Latest,
        limit: 10,
    });
    assert!(
        matches!(
            error_code(&fetch),
            Some(ErrorCode::Forbidden | ErrorCode::NotFound)
        ),
        "{fetch:?}"
    );
    let add = mallory.request(|rid| ClientMsg::GroupAdd {
        rid,
        conv: group,
        users: vec![protocol::UserId(52)],
    });
    assert_eq!(error_code(&add), Some(ErrorCode::Forbidden), "{add:?}");
    let rename = mallory.request(|rid| ClientMsg::GroupRename {
        rid,
        conv: group,
        title: "mine now".into(),
    });
    assert_eq!(
        error_code(&rename),
        Some(ErrorCode::Forbidden),
        "{rename:?}"
    );
}

/// A flood of sends: `rate_limited` errors, then 4003.
fn send_flood(server: &Server) {
    let mut flooder = Device::online(server, 60, 1);
    let conv = flooder.direct_open(61).conv;
    for i in 0..1_800 {
        if flooder
            .client()
            .send(&ClientMsg::Send {
                conv,
                cmid: support::chat::new_cmid(),
                body: format!("spam {i}"),
            })
            .is_err()
        {
            break;
        }
    }
    let mut limited = 0;
    let code = loop {
        match flooder.client().recv(WAIT) {
            Ok(Some(ServerMsg::Error {
                code: ErrorCode::RateLimited,
                ..
            })) => limited += 1,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the flooder was not closed"),
            Err(e) => break e.close_code(),
        }
    };
    assert!(
        limited >= 1,
        "no rate_limited error before the close ({code:?}); server log:\n{}",
        server.log()
    );
    assert_eq!(code, Some(close::RATE_LIMITED));
}

/// A device that never reads: closed with 4002; it catches up afterwards.
fn slow_consumer(server: &Server) {
    let mut sender = Device::online(server, 70, 1);
    let conv = sender.direct_open(71).conv;
    let mut reader = ws(server, 71);
    reader.send(support::ws::TEXT, br#"{"sync":{"rid":1,"since":[]}}"#);
    let body = "z".repeat(BODY_BYTES_MAX);
    let bodies: Vec<String> = (0..1_200).map(|_| body.clone()).collect();
    sender.send_many(conv, &bodies, 64);
    assert_eq!(closed_with(&mut reader), Some(close::SLOW_CONSUMER));
    let mut again = Device::connect(server, 71, 1);
    assert_eq!(
        again.sync().in_conv(conv).len(),
        bodies.len(),
        "nothing acked is lost"
    );
}

fn connection_limits(server: &Server) {
    // Per user: the fourth connection of user 80 is closed with 4004.
    let _held: Vec<Device> = (1..=3).map(|d| Device::connect(server, 80, d)).collect();
    let mut fourth = RawWs::connect(server.addr(), &format!("/ws?token={}", server.token(80, 4)));
    assert_eq!(closed_with(&mut fourth), Some(close::TOO_MANY_CONNECTIONS));
    // Per address: 20 open from 127.0.0.9, the 21st gets 429.
    let source = Ipv4Addr::new(127, 0, 0, 9);
    let held: Vec<TcpStream> = (0..20)
        .map(|_| connect_from(source, server.addr()).expect("connects"))
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let extra = connect_from(source, server.addr()).expect("connects");
    assert_eq!(
        status_of(extra, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
        429
    );
    drop(held);
}

fn token_expiry(server: &Server) {
    let token = client::mint_token(
        server.dev_secret().as_bytes(),
        protocol::UserId(90),
        protocol::DeviceId(1),
        Duration::from_secs(2),
    );
    let mut w = RawWs::connect(server.addr(), &format!("/ws?token={token}"));
    assert_eq!(closed_with(&mut w), Some(close::TOKEN_EXPIRED));
}

#[test]
fn misbehaving_clients_get_their_codes_and_a_good_pair_loses_nothing() {
    let server = Options::new().shards(2).config(CONFIG).start();
    let before = metrics(&server);
    let good = good_pair(&server);
    bad_handshakes(&server);
    bad_frames(&server);
    let conv = ConvId::direct(protocol::UserId(1), protocol::UserId(2));
    trespass(&server, conv);
    send_flood(&server);
    slow_consumer(&server);
    connection_limits(&server);
    token_expiry(&server);
    good.stop.store(true, Ordering::Release);
    let (conv_sent, sent) = good.sender.join().expect("alice never failed");
    assert_eq!(conv_sent, conv);
    good.receiver.join().expect("bob never failed");
    let received = good.received.lock().expect("lock").clone();
    assert_eq!(
        received,
        (1..=sent).collect::<Vec<_>>(),
        "bob got every message once, in order"
    );
    assert!(
        sent >= 20,
        "the pair kept chatting throughout ({sent} messages)"
    );

    let after = metrics(&server);
    let moved = |name: &str, labels: &str| {
        let (b, a) = (metric(&before, name, labels), metric(&after, name, labels));
        assert!(a > b, "{name}{{{labels}}} did not move ({b} → {a})");
    };
    moved("switchboard_auth_failures_total", "");
    moved("switchboard_handshake_failures_total", "");
    moved("switchboard_handshakes_total", "");
    moved("switchboard_rate_limited_sends_total", "");
    moved("switchboard_rate_limit_closes_total", "");
    moved("switchboard_slow_consumer_closes_total", "");
    moved("switchboard_user_limit_closes_total", "");
    moved("switchboard_ip_limit_refusals_total", "");
    moved("switchboard_errors_total", "code=\"forbidden\"");
    moved("switchboard_errors_total", "code=\"rate_limited\"");
    for code in [1002, 1007, 1009, 4001, 4002, 4003, 4004] {
        moved("switchboard_closes_total", &format!("code=\"{code}\""));
    }
    moved("switchboard_messages_in_total", "");
    moved("switchboard_messages_out_total", "");
    moved("switchboard_send_ack_seconds_count", "");
}
