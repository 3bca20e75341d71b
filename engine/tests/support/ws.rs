//! A raw WebSocket client: a hand-written upgrade request, hand-built
//! frames (masked or not, valid or not), and a frame reader. It answers
//! nothing on its own, so tests control every byte the server sees.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::WAIT;
use super::http::connect;

pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// The example key of RFC 6455 §1.3 and its accept value.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The mask this client puts on frames; not zero, so a server that forgets
/// to unmask echoes garbage.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// The 7-bit length values that announce a 16-bit and a 64-bit length.
const LENGTH_16: u8 = 126;
const LENGTH_64: u8 = 127;

/// Bytes of a frame this client accepts from the server.
const FRAME_PAYLOAD_BYTES_MAX: u64 = 16 << 20;

/// One frame from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The code of a close frame; `None` for an empty one.
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, CLOSE, "not a close frame: {self:?}");
        let code = self.payload.get(..2)?;
        Some(u16::from_be_bytes([code[0], code[1]]))
    }
}

/// An upgraded connection driven byte by byte.
#[derive(Debug)]
pub struct RawWs {
    stream: TcpStream,
    /// Read but not yet parsed.
    buf: Vec<u8>,
}

impl RawWs {
    /// Upgrades a new connection to `path` and checks the 101.
    pub fn connect(addr: SocketAddr, path: &str) -> RawWs {
        let mut stream = connect(addr);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .expect("the server reads the upgrade request");
        let mut ws = RawWs {
            stream,
            buf: Vec::new(),
        };
        let deadline = Instant::now() + WAIT;
        let head_len = loop {
            if let Some(i) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            ws.fill(deadline).expect("the server answers the upgrade");
        };
        let head = String::from_utf8_lossy(&ws.buf[..head_len]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101 "), "upgrade refused: {head}");
        assert!(
            head.lines()
                .any(|l| l
                    .split_once(':')
                    .is_some_and(|(n, v)| n.eq_ignore_ascii_case("sec-websocket-accept")
                        && v.trim() == ACCEPT)),
            "wrong or missing Sec-WebSocket-Accept: {head}"
        );
        ws.buf.drain(..head_len);
        ws
    }

    /// Sends one masked, final frame.
    pub fn send(&mut self, opcode: u8, payload: &[u8]) {
        self.send_frame(true, opcode, payload, true);
    }

    /// Sends a close frame with `code`.
    pub fn send_close(&mut self, code: u16) {
        self.send(CLOSE, &code.to_be_bytes());
    }

    /// Sends any frame, including ones a client must not send (unmasked).
    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8], masked: bool) {
        let frame = encode(fin, opcode, payload, masked.then_some(MASK));
        self.send_bytes(&frame);
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .expect("the server reads what we send");
    }

    /// The next frame, within `timeout`. `UnexpectedEof` if the server closed
    /// the connection, `TimedOut` if nothing complete arrived in time.
    pub fn recv(&mut self, timeout: Duration) -> io::Result<Frame> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((frame, used)) = decode(&self.buf) {
                self.buf.drain(..used);
                return Ok(frame);
            }
            self.fill(deadline)?;
        }
    }

    /// The next frame, which must be a close frame; returns its code.
    pub fn recv_close(&mut self, timeout: Duration) -> Option<u16> {
        let frame = self.recv(timeout).expect("a close frame");
        frame.close_code()
    }

    /// Waits for the server to close TCP after its close frame.
    pub fn expect_eof(&mut self, timeout: Duration) {
        match self.recv(timeout) {
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {}
            other => panic!("expected the server to close TCP, got {other:?}"),
        }
    }

    /// Reads once more into `buf`, before `deadline`.
    fn fill(&mut self, deadline: Instant) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // After the server's close a reset is the same as an end.
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    return Err(ErrorKind::UnexpectedEof.into());
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// One frame in wire format.
pub fn encode(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(u8::from(fin) << 7 | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | u8::try_from(n).expect("n <= 125")),
        n @ 126..=0xffff => {
            out.push(mask_bit | LENGTH_16);
            out.extend_from_slice(&u16::try_from(n).expect("n <= 0xffff").to_be_bytes());
        }
        n => {
            out.push(mask_bit | LENGTH_64);
            out.extend_from_slice(&u64::try_from(n).expect("usize fits in u64").to_be_bytes());
        }
    }
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A complete server frame at the start of `buf` and its length.
fn decode(buf: &[u8]) -> Option<(Frame, usize)> {
    let [b0, b1, ..] = *buf else {
        return None;
    };
    assert_eq!(b0 & 0x70, 0, "the server set reserved bits");
    assert_eq!(b1 & 0x80, 0, "the server masked a frame");
    let (len, mut at) = match b1 & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)),
            4,
        ),
        LENGTH_64 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    assert!(len <= FRAME_PAYLOAD_BYTES_MAX, "frame of {len} bytes");
    let len = usize::try_from(len).expect("checked against a small maximum");
    let payload = buf.get(at..at + len)?.to_vec();
    at += len;
    let frame = Frame {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0f,
        payload,
    };
    Some((frame, at))
}
