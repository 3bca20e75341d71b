//! A tiny in-test WebSocket server that speaks enough Switchboard to exercise
//! the client: it checks the token, sends `welcome` and a script of messages
//! in the requested encoding, acks `send`s, and obeys a few commands sent as
//! `send` bodies. One connection per server; every wait is bounded.
#![allow(dead_code, reason = "each test file uses part of the fake server")]

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use protocol::token::TokenKey;
use protocol::{
    ClientMsg, ConvId, DeviceId, Encoding, ErrorCode, MsgId, RequestId, Seq, ServerMsg, UnixMillis,
    UserId,
};
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::http::StatusCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

/// The secret the fake server verifies tokens with.
pub const SECRET: &[u8] = b"client tests secret, 32 bytes or more";
/// A wait that should succeed long before it runs out.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a fake server lives at most, whatever the client does.
const SERVER_LIFETIME: Duration = Duration::from_secs(15);
/// How often the server wakes to check its deadline.
const POLL: Duration = Duration::from_millis(10);
/// The `rid` of the `ok` the server sends once it got the pong to its ping.
pub const PONG_RID: RequestId = RequestId(4242);
/// The ping payload the server sends on the `ping` command.
pub const PING_PAYLOAD: &[u8] = b"are you there";

/// A valid token for user 1, device 2.
pub fn token() -> String {
    client::mint_token(SECRET, UserId(1), DeviceId(2), Duration::from_secs(60))
}

/// A `send` whose body is a command to the fake server:
/// `close <code>` (close with that code, reason "requested"), `drop` (close
/// TCP without a close frame), `ping` (ping, then `ok` with [`PONG_RID`] on
/// the pong), `wrong frame` (one message in the other frame type), `garbage`
/// (one undecodable message). Any other body is acked.
pub fn command(body: &str) -> ClientMsg {
    ClientMsg::Send {
        conv: ConvId(5),
        cmid: protocol::ClientMsgId(77),
        body: body.to_owned(),
    }
}

/// How the client sent its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSeen {
    Header(String),
    Query(String),
    Missing,
}

/// What the fake server saw, for the test to check after the fact.
#[derive(Debug, Default)]
pub struct Report {
    pub token: Option<TokenSeen>,
    /// The encoding requested with `encoding=`.
    pub encoding: Option<Encoding>,
    /// The upgrade was refused with 401.
    pub refused: bool,
    /// Client messages that decoded, with the frame type they came in.
    pub received: Vec<(Encoding, ClientMsg)>,
    /// Payload of the pong to the server's ping.
    pub pong: Option<Vec<u8>>,
    /// The code of the client's close frame.
    pub client_close: Option<u16>,
    /// The connection ended without a close frame from the client.
    pub dropped: bool,
}

/// A fake server running on its own thread.
pub struct FakeServer {
    pub addr: SocketAddr,
    thread: JoinHandle<Report>,
}

impl FakeServer {
    /// Listens on 127.0.0.1, port chosen by the OS, for one connection; after
    /// `welcome` it sends `script`.
    pub fn start(script: Vec<ServerMsg>) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("bound listener has an address");
        let thread = thread::spawn(move || serve(&listener, &script));
        FakeServer { addr, thread }
    }

    /// Waits for the server to finish (at most its lifetime) and returns what
    /// it saw.
    pub fn join(self) -> Report {
        self.thread.join().expect("fake server thread panicked")
    }
}

fn serve(listener: &TcpListener, script: &[ServerMsg]) -> Report {
    let deadline = Instant::now() + SERVER_LIFETIME;
    let mut report = Report::default();
    let Some(stream) = accept(listener, deadline) else {
        return report;
    };
    stream
        .set_read_timeout(Some(WAIT))
        .expect("set read timeout");
    stream
        .set_write_timeout(Some(WAIT))
        .expect("set write timeout");

    let mut claims = None;
    #[allow(
        clippy::result_large_err,
        reason = "tungstenite's Callback fixes the error type"
    )]
    let callback = |request: &Request, response: Response| {
        let (encoding, token) = inspect(request);
        report.encoding = Some(encoding);
        let key = TokenKey::new(SECRET).expect("SECRET is long enough");
        let value = match &token {
            TokenSeen::Header(t) | TokenSeen::Query(t) => key.verify(t, unix_now()).ok(),
            TokenSeen::Missing => None,
        };
        report.token = Some(token);
        if let Some(c) = value {
            claims = Some(c);
            Ok(response)
        } else {
            report.refused = true;
            let mut refusal = ErrorResponse::new(Some("missing or bad token".to_owned()));
            *refusal.status_mut() = StatusCode::UNAUTHORIZED;
            Err(refusal)
        }
    };
    let Ok(mut ws) = tungstenite::accept_hdr(stream, callback) else {
        return report;
    };
    let claims = claims.expect("an accepted upgrade had a valid token");
    let encoding = report.encoding.expect("the callback ran");
    let mut conn = Conn {
        ws: &mut ws,
        encoding,
        next_seq: 1,
    };
    conn.send(&ServerMsg::Welcome {
        user: claims.user,
        device: claims.device,
        version: protocol::VERSION,
        time: UnixMillis::now(),
    });
    for msg in script {
        conn.send(msg);
    }
    conn.ws
        .get_ref()
        .set_read_timeout(Some(POLL))
        .expect("set read timeout");
    conn.run(deadline, &mut report);
    report
}

fn accept(listener: &TcpListener, deadline: Instant) -> Option<TcpStream> {
    listener
        .set_nonblocking(true)
        .expect("set listener nonblocking");
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).expect("set stream blocking");
                return Some(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(e) => panic!("accept failed: {e}"),
        }
    }
    None
}

/// The requested encoding and where the token was.
fn inspect(request: &Request) -> (Encoding, TokenSeen) {
    let query = request.uri().query().unwrap_or("");
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    };
    let encoding = if param("encoding") == Some("binary") {
        Encoding::Binary
    } else {
        Encoding::Json
    };
    let header = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let token = match (header, param("token")) {
        (Some(t), _) => TokenSeen::Header(t.to_owned()),
        (None, Some(t)) => TokenSeen::Query(t.to_owned()),
        (None, None) => TokenSeen::Missing,
    };
    (encoding, token)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

struct Conn<'a> {
    ws: &'a mut WebSocket<TcpStream>,
    encoding: Encoding,
    next_seq: u64,
}

impl Conn<'_> {
    fn send(&mut self, msg: &ServerMsg) {
        let mut bytes = Vec::new();
        self.encoding.encode(msg, &mut bytes);
        self.send_as(self.encoding, bytes);
    }

    fn send_as(&mut self, encoding: Encoding, bytes: Vec<u8>) {
        let message = match encoding {
            Encoding::Json => Message::text(String::from_utf8(bytes).expect("JSON is UTF-8")),
            Encoding::Binary => Message::binary(bytes),
        };
        // The client may already be gone; the test notices that on its side.
        let _ = self.ws.send(message);
    }

    /// Reads and answers until the connection ends or `deadline`.
    fn run(&mut self, deadline: Instant, report: &mut Report) {
        while Instant::now() < deadline {
            let message = match self.ws.read() {
                Ok(m) => m,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(tungstenite::Error::ConnectionClosed) => return,
                Err(_) => {
                    report.dropped = report.client_close.is_none();
                    return;
                }
            };
            let (encoding, bytes) = match message {
                Message::Text(t) => (Encoding::Json, t.as_bytes().to_vec()),
                Message::Binary(b) => (Encoding::Binary, b.to_vec()),
                Message::Pong(p) => {
                    report.pong = Some(p.to_vec());
                    self.send(&ServerMsg::Ok { rid: PONG_RID });
                    continue;
                }
                Message::Close(frame) => {
                    report.client_close = Some(frame.map_or(1005, |f| u16::from(f.code)));
                    continue;
                }
                Message::Ping(_) | Message::Frame(_) => continue,
            };
            match encoding.decode_client(&bytes) {
                Ok(msg) => {
                    report.received.push((encoding, msg.clone()));
                    if self.obey(&msg) == Flow::Stop {
                        return;
                    }
                }
                Err(e) => self.send(&ServerMsg::Error {
                    rid: None,
                    cmid: None,
                    code: e.error_code(),
                    message: "undecodable".to_owned(),
                }),
            }
        }
    }

    fn obey(&mut self, msg: &ClientMsg) -> Flow {
        let ClientMsg::Send { conv, cmid, body } = msg else {
            if let Some(rid) = msg.rid() {
                self.send(&ServerMsg::Error {
                    rid: Some(rid),
                    cmid: None,
                    code: ErrorCode::NotFound,
                    message: "the fake server only acks sends".to_owned(),
                });
            }
            return Flow::Go;
        };
        if let Some(code) = body.strip_prefix("close ") {
            let code: u16 = code.parse().expect("close command takes a number");
            let frame = CloseFrame {
                code: code.into(),
                reason: "requested".into(),
            };
            // Keep reading afterwards: the client's reply ends the loop.
            let _ = self.ws.close(Some(frame));
            return Flow::Go;
        }
        match body.as_str() {
            "drop" => {
                let _ = self.ws.get_ref().shutdown(std::net::Shutdown::Both);
                return Flow::Stop;
            }
            "ping" => {
                let _ = self.ws.send(Message::Ping(PING_PAYLOAD.to_vec().into()));
            }
            "wrong frame" => {
                let other = match self.encoding {
                    Encoding::Json => Encoding::Binary,
                    Encoding::Binary => Encoding::Json,
                };
                let mut bytes = Vec::new();
                other.encode(&ServerMsg::Ok { rid: RequestId(1) }, &mut bytes);
                self.send_as(other, bytes);
            }
            "garbage" => {
                // Version 9 in binary; an unknown type in JSON.
                let bytes = match self.encoding {
                    Encoding::Json => br#"{"nonsense":{}}"#.to_vec(),
                    Encoding::Binary => vec![9, 0],
                };
                self.send_as(self.encoding, bytes);
            }
            _ => {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.send(&ServerMsg::Ack {
                    cmid: *cmid,
                    conv: *conv,
                    seq: Seq(seq),
                    id: MsgId(1000 + seq),
                    ts: UnixMillis::now(),
                });
            }
        }
        Flow::Go
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flow {
    Go,
    Stop,
}
