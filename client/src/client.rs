//! [`Client`]: one blocking WebSocket connection to a Switchboard server.

use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use protocol::{ClientMsg, Encoding, ServerMsg, close};
use tungstenite::error::ProtocolError;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use crate::connect::{self, Auth, ConnectOptions, nonzero, remaining};
use crate::error::{Error, Result};

/// Most messages [`Client::recv_all`] collects before giving up on the server
/// ever falling quiet. Bounds its time to `(RECV_ALL_MESSAGES_MAX + 1) * quiet`.
pub const RECV_ALL_MESSAGES_MAX: usize = 100_000;

/// Close code for a close frame without a code (RFC 6455 §7.1.5).
pub const NO_STATUS: u16 = 1005;

/// Close code for a connection that ended without a close frame (RFC 6455
/// §7.1.5).
pub const ABNORMAL_CLOSURE: u16 = 1006;

/// Bounds the best-effort close frame written on drop.
const DROP_WRITE_TIMEOUT: Duration = Duration::from_millis(100);

/// One server message as it arrived, undecoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawMessage {
    /// A text frame (JSON).
    Text(String),
    /// A binary frame (version byte plus postcard).
    Binary(Vec<u8>),
}

impl RawMessage {
    /// The encoding its frame type stands for.
    pub fn encoding(&self) -> Encoding {
        match self {
            RawMessage::Text(_) => Encoding::Json,
            RawMessage::Binary(_) => Encoding::Binary,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            RawMessage::Text(text) => text.as_bytes(),
            RawMessage::Binary(bytes) => bytes,
        }
    }
}

/// A blocking connection to a Switchboard server.
///
/// Every call is bounded in time: reads by the timeout passed in, writes by
/// [`ConnectOptions::write_timeout`]. Pings from the server are answered
/// while reading. Once the connection has ended every call returns the same
/// [`Error::Closed`].
///
/// Dropping a `Client` writes a close frame (1000) if the connection is still
/// open, without waiting for the reply; [`Client::abort`] drops it without one.
pub struct Client {
    ws: WebSocket<TcpStream>,
    addr: SocketAddr,
    encoding: Encoding,
    close_timeout: Duration,
    /// Set once the connection has ended: `(code, reason)`.
    closed: Option<(u16, String)>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .field("encoding", &self.encoding)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `ws://{addr}/ws` with `Authorization: Bearer {token}`,
    /// asking the server for `encoding`. `addr` is anything
    /// [`ToSocketAddrs`] takes: a `SocketAddr`, `"127.0.0.1:8080"`,
    /// `("localhost", 8080)`.
    pub fn connect(
        addr: impl ToSocketAddrs + fmt::Debug,
        token: &str,
        encoding: Encoding,
    ) -> Result<Client> {
        Client::connect_with(addr, &ConnectOptions::new(token, encoding))
    }

    /// Like [`Client::connect`], with the token in the query (`?token=`) as a
    /// browser sends it.
    pub fn connect_with_query_token(
        addr: impl ToSocketAddrs + fmt::Debug,
        token: &str,
        encoding: Encoding,
    ) -> Result<Client> {
        let mut options = ConnectOptions::new(token, encoding);
        options.auth = Auth::Query(token.to_owned());
        Client::connect_with(addr, &options)
    }

    /// Connects with every option spelled out.
    pub fn connect_with(
        addr: impl ToSocketAddrs + fmt::Debug,
        options: &ConnectOptions,
    ) -> Result<Client> {
        let opened = connect::open(addr, options)?;
        Ok(Client {
            ws: opened.ws,
            addr: opened.addr,
            encoding: options.encoding,
            close_timeout: options.close_timeout,
            closed: None,
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The encoding the server was asked for, and [`Client::send`] uses.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Sends `msg` in this connection's encoding: a text frame of JSON or a
    /// binary frame of version byte plus postcard.
    pub fn send(&mut self, msg: &ClientMsg) -> Result<()> {
        self.send_encoded(msg, self.encoding)
    }

    /// Sends `msg` in `encoding`, whatever the connection asked the server
    /// for (PROTOCOL.md lets a client use either frame type for any message).
    pub fn send_encoded(&mut self, msg: &ClientMsg, encoding: Encoding) -> Result<()> {
        let mut bytes = Vec::new();
        encoding.encode(msg, &mut bytes);
        let message = match encoding {
            Encoding::Json => {
                Message::text(String::from_utf8(bytes).expect("serde_json writes UTF-8"))
            }
            Encoding::Binary => Message::binary(bytes),
        };
        self.write(message)
    }

    /// Sends `text` as one text frame, as is (for bad-input tests).
    pub fn send_raw_text(&mut self, text: &str) -> Result<()> {
        self.write(Message::text(text))
    }

    /// Sends `bytes` as one binary frame, as is (for bad-input tests).
    pub fn send_raw_binary(&mut self, bytes: &[u8]) -> Result<()> {
        self.write(Message::binary(bytes.to_vec()))
    }

    /// The next server message, or `None` if none arrives within `timeout`.
    ///
    /// A frame of the other type than the one asked for is
    /// [`Error::WrongFrameType`]; an undecodable one is [`Error::Decode`]. The
    /// connection stays usable after both.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<ServerMsg>> {
        self.recv_by(Instant::now() + timeout)
    }

    /// The next server message undecoded, or `None` on timeout.
    pub fn recv_raw(&mut self, timeout: Duration) -> Result<Option<RawMessage>> {
        self.read_by(Instant::now() + timeout)
    }

    /// Receives until `pred` accepts a message, discarding the others, and
    /// returns it. Fails with [`Error::Timeout`] (listing what it discarded)
    /// if none does within `timeout`.
    pub fn recv_until(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&ServerMsg) -> bool,
    ) -> Result<ServerMsg> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut discarded = Vec::new();
        loop {
            match self.recv_by(deadline)? {
                Some(msg) if pred(&msg) => return Ok(msg),
                Some(msg) => discarded.push(msg),
                None => {
                    return Err(Error::Timeout {
                        waiting_for: "a matching message",
                        waited: started.elapsed(),
                        discarded,
                    });
                }
            }
        }
    }

    /// Collects messages until none arrives for `quiet`. Fails with
    /// [`Error::TooManyMessages`] after [`RECV_ALL_MESSAGES_MAX`].
    pub fn recv_all(&mut self, quiet: Duration) -> Result<Vec<ServerMsg>> {
        let mut msgs = Vec::new();
        while let Some(msg) = self.recv(quiet)? {
            if msgs.len() == RECV_ALL_MESSAGES_MAX {
                return Err(Error::TooManyMessages {
                    max: RECV_ALL_MESSAGES_MAX,
                });
            }
            msgs.push(msg);
        }
        Ok(msgs)
    }

    /// Closes with 1000 and waits up to [`ConnectOptions::close_timeout`] for
    /// the server's close reply. Messages arriving meanwhile are dropped. A
    /// connection the server already closed closes without error.
    pub fn close(mut self) -> Result<()> {
        if self.closed.is_some() {
            return Ok(());
        }
        let started = Instant::now();
        let deadline = started + self.close_timeout;
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        self.closed = Some((close::NORMAL, String::new()));
        match self.ws.close(Some(frame)) {
            Ok(()) => {}
            Err(err) if is_gone(&err) => return Ok(()),
            Err(err) => return Err(websocket("send close", err)),
        }
        loop {
            self.set_read_deadline(deadline)?;
            match self.ws.read() {
                // The server's reply ends the handshake; RFC 6455 has the
                // server drop TCP next, which Drop does for us anyway.
                Ok(Message::Close(_)) => return Ok(()),
                Ok(_) => {}
                Err(err) if is_timeout(&err) => {
                    if Instant::now() >= deadline {
                        return Err(Error::Timeout {
                            waiting_for: "the server's close reply",
                            waited: started.elapsed(),
                            discarded: Vec::new(),
                        });
                    }
                }
                Err(err) if is_gone(&err) => return Ok(()),
                Err(err) => return Err(websocket("wait for close reply", err)),
            }
        }
    }

    /// Drops the TCP connection without a close frame, as a crashed client
    /// would.
    pub fn abort(mut self) {
        // Shutdown fails only on a socket that is already gone.
        let _ = self.ws.get_ref().shutdown(Shutdown::Both);
        self.closed = Some((ABNORMAL_CLOSURE, String::new()));
    }

    fn recv_by(&mut self, deadline: Instant) -> Result<Option<ServerMsg>> {
        let Some(raw) = self.read_by(deadline)? else {
            return Ok(None);
        };
        let got = raw.encoding();
        if got != self.encoding {
            return Err(Error::WrongFrameType {
                expected: self.encoding,
                got,
            });
        }
        match got.decode_server(raw.bytes()) {
            Ok(msg) => Ok(Some(msg)),
            Err(source) => Err(Error::Decode {
                encoding: got,
                source,
                bytes: raw.bytes().to_vec(),
            }),
        }
    }

    /// Reads the next data message, answering pings, until `deadline`. Makes
    /// at least one read attempt even if `deadline` has passed.
    fn read_by(&mut self, deadline: Instant) -> Result<Option<RawMessage>> {
        self.check_open()?;
        loop {
            self.set_read_deadline(deadline)?;
            match self.ws.read() {
                Ok(Message::Text(text)) => return Ok(Some(RawMessage::Text(text.to_string()))),
                Ok(Message::Binary(bytes)) => return Ok(Some(RawMessage::Binary(bytes.to_vec()))),
                Ok(Message::Ping(_)) => {
                    // tungstenite queued the pong; write it now rather than on
                    // the next read, which may never come.
                    match self.ws.flush() {
                        Ok(()) => {}
                        Err(err) if is_timeout(&err) => {}
                        Err(err) => return Err(self.fail("answer ping", err)),
                    }
                }
                Ok(Message::Pong(_) | Message::Frame(_)) => {}
                Ok(Message::Close(frame)) => {
                    // The reply is queued; send it so the server sees a clean
                    // close handshake. It may fail if the server already left.
                    let _ = self.ws.flush();
                    let (code, reason) = frame.map_or((NO_STATUS, String::new()), |f| {
                        (u16::from(f.code), f.reason.to_string())
                    });
                    self.closed = Some((code, reason));
                    return Err(self.closed_error());
                }
                Err(err) if is_timeout(&err) => {}
                Err(err) => return Err(self.fail("read", err)),
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    fn write(&mut self, message: Message) -> Result<()> {
        self.check_open()?;
        self.ws.send(message).map_err(|err| self.fail("send", err))
    }

    fn set_read_deadline(&self, deadline: Instant) -> Result<()> {
        self.ws
            .get_ref()
            .set_read_timeout(Some(remaining(deadline)))
            .map_err(|source| Error::Io {
                op: "set read timeout",
                source,
            })
    }

    fn check_open(&self) -> Result<()> {
        match self.closed {
            Some(_) => Err(self.closed_error()),
            None => Ok(()),
        }
    }

    fn closed_error(&self) -> Error {
        let (code, reason) = self
            .closed
            .clone()
            .unwrap_or((ABNORMAL_CLOSURE, String::new()));
        Error::Closed { code, reason }
    }

    /// Turns a tungstenite error into ours, recording a dropped connection
    /// as closed with 1006.
    fn fail(&mut self, op: &'static str, err: tungstenite::Error) -> Error {
        if is_gone(&err) {
            if self.closed.is_none() {
                self.closed = Some((ABNORMAL_CLOSURE, String::new()));
            }
            return self.closed_error();
        }
        websocket(op, err)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if self.closed.is_some() {
            return;
        }
        // Best effort, bounded by a short write timeout; never reads.
        let socket = self.ws.get_ref();
        if socket
            .set_write_timeout(Some(nonzero(DROP_WRITE_TIMEOUT)))
            .is_ok()
        {
            let frame = CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            };
            let _ = self.ws.close(Some(frame));
        }
    }
}

fn websocket(op: &'static str, err: tungstenite::Error) -> Error {
    Error::WebSocket {
        op,
        source: Box::new(err),
    }
}

/// A read or write timed out (`WouldBlock` on Unix, `TimedOut` on Windows).
fn is_timeout(err: &tungstenite::Error) -> bool {
    matches!(err, tungstenite::Error::Io(e)
        if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

/// The connection is over, with or without a close handshake.
fn is_gone(err: &tungstenite::Error) -> bool {
    match err {
        tungstenite::Error::ConnectionClosed
        | tungstenite::Error::AlreadyClosed
        | tungstenite::Error::Protocol(
            ProtocolError::ResetWithoutClosingHandshake | ProtocolError::SendAfterClosing,
        ) => true,
        tungstenite::Error::Io(e) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
                | io::ErrorKind::NotConnected
        ),
        _ => false,
    }
}
