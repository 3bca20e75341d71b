//! One WebSocket of the pairs bench: tungstenite over a non-blocking
//! socket, waited on with `poll(2)`.
//!
//! Not `client::Client`: that one waits with `SO_RCVTIMEO`, which the
//! kernel rounds to scheduler ticks (several ms here), so an open-loop
//! sender blocked in a read until its next send time left milliseconds
//! late. `poll` timeouts are high-resolution.

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use protocol::limits::SERVER_MESSAGE_BYTES_MAX;
use protocol::{ClientMsg, Encoding, ServerMsg};
use rustix::event::{PollFd, PollFlags, Timespec};
use tungstenite::client::IntoClientRequest as _;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::HeaderValue;
use tungstenite::http::header::AUTHORIZATION;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// Bounds the TCP connect plus the upgrade.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds a send that finds the socket's buffer full.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// tungstenite's read chunk; the default 128 KiB costs CPU for tiny messages.
const READ_BUFFER_BYTES: usize = 16 * 1024;

#[derive(Debug)]
pub struct Conn {
    ws: WebSocket<TcpStream>,
    encoding: Encoding,
    out: Vec<u8>,
}

impl Conn {
    /// Connects to `/ws` with the token in `Authorization`, asking for
    /// `encoding`, and completes the upgrade.
    pub fn connect(addr: SocketAddr, token: &str, encoding: Encoding) -> Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        stream.set_write_timeout(Some(CONNECT_TIMEOUT))?;
        let query = match encoding {
            Encoding::Binary => "?encoding=binary",
            Encoding::Json => "",
        };
        let mut request = format!("ws://{addr}/ws{query}").into_client_request()?;
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))?;
        request.headers_mut().insert(AUTHORIZATION, bearer);
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .max_message_size(Some(SERVER_MESSAGE_BYTES_MAX))
            .max_frame_size(Some(SERVER_MESSAGE_BYTES_MAX));
        let (ws, _response) =
            tungstenite::client::client_with_config(request, stream, Some(config)).map_err(
                |err| match err {
                    HandshakeError::Failure(tungstenite::Error::Http(response)) => {
                        anyhow!(
                            "the server refused the upgrade with HTTP {}",
                            response.status()
                        )
                    }
                    HandshakeError::Failure(err) => anyhow!("WebSocket upgrade failed: {err}"),
                    HandshakeError::Interrupted(_) => anyhow!("the WebSocket upgrade timed out"),
                },
            )?;
        ws.get_ref()
            .set_nonblocking(true)
            .context("setting O_NONBLOCK")?;
        Ok(Conn {
            ws,
            encoding,
            out: Vec::with_capacity(256),
        })
    }

    /// Sends `msg` in the connection's encoding.
    pub fn send(&mut self, msg: &ClientMsg) -> Result<()> {
        self.out.clear();
        self.encoding.encode(msg, &mut self.out);
        let message = match self.encoding {
            Encoding::Json => {
                Message::text(std::str::from_utf8(&self.out).expect("serde_json writes UTF-8"))
            }
            Encoding::Binary => Message::binary(self.out.clone()),
        };
        match self.ws.send(message) {
            Ok(()) => Ok(()),
            // Queued in tungstenite's buffer; push it out.
            Err(err) if would_block(&err) => self.flush(Instant::now() + WRITE_TIMEOUT),
            Err(err) => Err(err).context("sending"),
        }
    }

    fn flush(&mut self, deadline: Instant) -> Result<()> {
        loop {
            match self.ws.flush() {
                Ok(()) => return Ok(()),
                Err(err) if would_block(&err) => {
                    if !self.wait(PollFlags::OUT, deadline)? {
                        bail!("the server read nothing for {WRITE_TIMEOUT:?}");
                    }
                }
                Err(err) => return Err(err).context("sending"),
            }
        }
    }

    /// The next server message, or `None` if none has arrived by `until`.
    /// Pings are answered; a close frame is an error naming its code.
    pub fn recv(&mut self, until: Instant) -> Result<Option<ServerMsg>> {
        loop {
            let raw = match self.ws.read() {
                Ok(Message::Text(text)) => text.as_bytes().to_vec(),
                Ok(Message::Binary(bytes)) => bytes.to_vec(),
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                Ok(Message::Close(frame)) => {
                    let _ = self.ws.flush();
                    bail!("the server closed the connection: {frame:?}");
                }
                Err(err) if would_block(&err) => {
                    if !self.wait(PollFlags::IN, until)? {
                        return Ok(None);
                    }
                    continue;
                }
                Err(err) => return Err(err).context("receiving"),
            };
            return self
                .encoding
                .decode_server(&raw)
                .map(Some)
                .map_err(|err| anyhow!("undecodable message from the server: {err}: {raw:?}"));
        }
    }

    /// Waits until the socket is ready for `flags` or `until` passes;
    /// false on timeout.
    fn wait(&self, flags: PollFlags, until: Instant) -> Result<bool> {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let timeout = Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(self.ws.get_ref(), flags)];
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(n) => Ok(n > 0),
            Err(rustix::io::Errno::INTR) => Ok(true),
            Err(err) => Err(io::Error::from(err)).context("poll"),
        }
    }

    /// Sends a close frame (1000) and waits briefly for the reply; best effort.
    pub fn close(mut self) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        if self.ws.close(Some(frame)).is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.recv(deadline).is_ok_and(|m| m.is_some()) {}
    }
}

fn would_block(err: &tungstenite::Error) -> bool {
    matches!(err, tungstenite::Error::Io(e) if e.kind() == ErrorKind::WouldBlock)
}
