//! One upgraded connection's WebSocket loop: wait for readiness with no
//! buffer of its own, read into the shard's buffer, decode, hand whole
//! messages to a [`Handler`], write replies, answer pings, send heartbeats,
//! enforce the idle timeout, and close cleanly.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use protocol::close;

use crate::shard::{ConnHandle, Shard};
use crate::sys;
use crate::ws::{self, Decoder, Event};

/// Reads per readiness wake-up before the loop yields to other work.
const READS_PER_WAKE_MAX: usize = 16;

/// How long to wait for the client's side of the close handshake before the
/// TCP connection is dropped anyway.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// A whole data message from the client.
#[derive(Debug)]
pub(crate) enum Data {
    Text(String),
    Binary(Vec<u8>),
}

/// What a WebSocket endpoint does with messages.
pub(crate) trait Handler {
    /// Handles one message; appends any reply frames to `out`. An `Err` is a
    /// close code and reason to end the connection with.
    fn on_message(&mut self, data: Data, out: &mut Vec<u8>) -> Result<(), (u16, &'static str)>;

    /// Called before every write and wait: appends frames queued by other
    /// tasks to `out`. An `Err` closes the connection with that code.
    fn poll_out(&mut self, _out: &mut Vec<u8>) -> Result<(), (u16, &'static str)> {
        Ok(())
    }

    /// Everything `poll_out` handed over has been written to the socket.
    fn on_written(&mut self) {}
}

/// The dev echo endpoint (`/v1/dev/echo`), for the conformance suite.
#[derive(Debug)]
pub(crate) struct Echo;

impl Echo {
    /// Autobahn sends messages of up to 16 MiB (cases 9.1.6, 9.2.6) in up to
    /// 65,536 fragments (9.3.1); the chat endpoint keeps the protocol limits.
    /// Dev mode only.
    pub const LIMITS: ws::Limits = ws::Limits::new(16 << 20, 16 << 20, 1 << 20);
}

impl Handler for Echo {
    fn on_message(&mut self, data: Data, out: &mut Vec<u8>) -> Result<(), (u16, &'static str)> {
        match data {
            Data::Text(t) => ws::write_text(out, &t),
            Data::Binary(b) => ws::write_binary(out, &b),
        }
        Ok(())
    }
}

/// The per-connection state of the loop (the decoder is 56 bytes).
struct Conn<'l> {
    decoder: Decoder,
    limits: &'l ws::Limits,
    /// Set once our close frame is queued; the loop then only drains.
    closed: bool,
    /// The client started the close handshake: once our reply is written the
    /// handshake is complete and the server closes TCP first (RFC 6455 §7.1.1).
    peer_closed: bool,
    /// The code of the close frame we queued, for `/metrics`.
    sent_code: Option<u16>,
}

impl Conn<'_> {
    fn close(&mut self, out: &mut Vec<u8>, code: u16, reason: &str) {
        if !self.closed {
            ws::write_close(out, code, reason);
            self.closed = true;
            self.sent_code = Some(code);
        }
    }

    /// Decodes `input` and handles every event in it.
    fn feed(&mut self, mut input: &[u8], h: &mut impl Handler, out: &mut Vec<u8>) {
        while !self.closed {
            let event = match self.decoder.decode(input, self.limits) {
                Ok((n, Some(event))) => {
                    input = &input[n..];
                    event
                }
                Ok((_, None)) => return,
                Err(e) => {
                    self.close(out, e.close_code(), "");
                    return;
                }
            };
            match event {
                Event::Text(t) => self.handle(h.on_message(Data::Text(t), out), out),
                Event::Binary(b) => self.handle(h.on_message(Data::Binary(b), out), out),
                Event::Ping(p) => ws::write_pong(out, &p),
                Event::Pong(_) => {}
                Event::Close { code, .. } => {
                    self.peer_closed = true;
                    if let Some(code) = code {
                        self.close(out, code, "");
                    } else {
                        ws::write_close_empty(out);
                        self.closed = true;
                    }
                }
            }
        }
    }

    fn handle(&mut self, result: Result<(), (u16, &'static str)>, out: &mut Vec<u8>) {
        if let Err((code, reason)) = result {
            self.close(out, code, reason);
        }
    }

    /// Reads what is available into the shard's buffer and feeds it.
    /// `Err` means the peer is gone.
    fn read_available(
        &mut self,
        stream: &TcpStream,
        shard: &Shard,
        handle: &ConnHandle,
        h: &mut impl Handler,
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        let mut scratch = shard.scratch.borrow_mut();
        for _ in 0..READS_PER_WAKE_MAX {
            match sys::recv_now(stream, &mut scratch) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    handle.heard(Instant::now());
                    self.feed(&scratch[..n], h, out);
                    if n < scratch.len() {
                        // Drained for now; the next readiness wait says
                        // when there is more (saves a recv that would block).
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if self.closed {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Runs the WebSocket loop of one connection to its end. `leftover` holds
/// bytes that arrived after the upgrade request head.
pub(crate) async fn run(
    mut stream: TcpStream,
    leftover: Vec<u8>,
    shard: &Shard,
    handle: &ConnHandle,
    limits: &ws::Limits,
    mut handler: impl Handler,
) {
    let mut conn = Conn {
        decoder: Decoder::new(),
        limits,
        closed: false,
        peer_closed: false,
        sent_code: None,
    };
    let mut out = Vec::new();
    handle.heard(Instant::now());
    conn.feed(&leftover, &mut handler, &mut out);
    drop(leftover);
    loop {
        // Frames queued for the client go out before any close frame, so
        // the acks of a shutdown's last commits still arrive.
        if !conn.closed
            && let Err((code, reason)) = handler.poll_out(&mut out)
        {
            conn.close(&mut out, code, reason);
        }
        if handle.is_closing() {
            conn.close(&mut out, close::GOING_AWAY, "server shutting down");
        } else if handle.is_idle() {
            conn.close(&mut out, close::IDLE_TIMEOUT, "idle timeout");
        } else if handle.is_expired() {
            conn.close(&mut out, close::TOKEN_EXPIRED, "token expired");
        } else if handle.take_ping_due() {
            ws::write_ping(&mut out, b"");
        }
        if !out.is_empty() {
            // A new Vec each time: an idle connection keeps no write buffer.
            // Boxed: the write future (240 bytes) lives only while writing,
            // not in every idle connection's task.
            let (res, _) = Box::pin(stream.write_all(std::mem::take(&mut out))).await;
            if res.is_err() {
                return;
            }
            handler.on_written();
        }
        if let Some(code) = conn.sent_code.take() {
            shard.chat.stats().close(code);
        }
        if conn.peer_closed {
            return;
        }
        if conn.closed {
            // Our close frame is out: half-close so the client sees the end,
            // then wait briefly for its side.
            let _ = Box::pin(stream.shutdown()).await;
            Box::pin(linger(&stream)).await;
            return;
        }
        // Only these two futures live in an idle connection's task; the
        // shard's heartbeat sweep stands in for a per-connection timer.
        monoio::select! {
            ready = stream.readable(false) => {
                if ready.is_err()
                    || conn.read_available(&stream, shard, handle, &mut handler, &mut out).is_err()
                {
                    return;
                }
            }
            () = handle.notified() => {}
        }
    }
}

/// After our close frame: discard what the client still sends until it
/// closes its side or [`CLOSE_LINGER`] passes, so the client sees a clean
/// close rather than a reset.
async fn linger(stream: &TcpStream) {
    let deadline = Instant::now() + CLOSE_LINGER;
    let mut sink = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match monoio::time::timeout(left, stream.readable(false)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return,
        }
        loop {
            match sys::recv_now(stream, &mut sink) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return,
            }
        }
    }
}
