//! The client side of a WebSocket on monoio, by hand: the upgrade, masked
//! client frames, and server frames parsed out of a read buffer. Enough
//! for loadgen, whose connections must cost the client little.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context, Result, bail, ensure};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

/// Largest upgrade response head accepted.
const HEAD_BYTES_MAX: usize = 16 * 1024;

/// Largest server frame payload accepted (the server's own bound).
pub const FRAME_BYTES_MAX: usize = protocol::limits::SERVER_MESSAGE_BYTES_MAX;

pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The masking key of every client frame: nothing sits between loadgen and
/// its server for RFC 6455's proxy-poisoning concern to apply.
const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x81];

/// Connects from `source` (kernel-chosen port) to `server`. The connect
/// itself is a blocking call on loopback (a SYN answered at once), then the
/// socket joins the runtime.
pub fn connect(server: SocketAddr, source: Ipv4Addr) -> Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket
        .connect(&server.into())
        .with_context(|| format!("connecting from {source} to {server}"))?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    let std: std::net::TcpStream = socket.into();
    Ok(TcpStream::from_std(std)?)
}

/// Sends the upgrade to `/ws?encoding=binary` with `token` and reads the
/// `101`; returns bytes that followed the response head.
pub async fn upgrade(stream: &mut TcpStream, server: SocketAddr, token: &str) -> Result<Vec<u8>> {
    let request = format!(
        "GET /ws?encoding=binary HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    let (res, _) = stream.write_all(request.into_bytes()).await;
    res.context("writing the upgrade request")?;
    let mut buf = Vec::new();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]);
            let status = head.lines().next().unwrap_or_default().to_owned();
            ensure!(
                status.starts_with("HTTP/1.1 101"),
                "upgrade refused: {status}"
            );
            return Ok(buf.split_off(end + 4));
        }
        ensure!(
            buf.len() <= HEAD_BYTES_MAX,
            "upgrade response head too long"
        );
        let (res, chunk) = stream.read(Vec::with_capacity(4096)).await;
        if res.context("reading the upgrade response")? == 0 {
            bail!("connection closed during the upgrade");
        }
        buf.extend_from_slice(&chunk);
    }
}

/// Appends one masked client frame.
pub fn write_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | u8::try_from(len).expect("below 126"));
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0x80 | 0x7e);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0x80 | 0x7f);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
}

/// A whole frame taken from the front of a read buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Takes one frame off the front of `buf`, if a whole one is there. The
/// server sends whole, unmasked messages (no fragmentation).
pub fn take_frame(buf: &mut Vec<u8>) -> Result<Option<Frame>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    ensure!(buf[1] & 0x80 == 0, "the server masked a frame");
    let (len, at) = match buf[1] & 0x7f {
        0x7e if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        0x7f if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (usize::try_from(u64::from_be_bytes(b))?, 10)
        }
        0x7e | 0x7f => return Ok(None),
        n => (usize::from(n), 2),
    };
    ensure!(len <= FRAME_BYTES_MAX, "a {len}-byte frame from the server");
    if buf.len() < at + len {
        return Ok(None);
    }
    let opcode = buf[0] & 0x0f;
    let payload = buf[at..at + len].to_vec();
    buf.drain(..at + len);
    Ok(Some(Frame { opcode, payload }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame: unmasked.
    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        if payload.len() < 126 {
            out.push(u8::try_from(payload.len()).unwrap());
        } else {
            out.push(126);
            out.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn frames_are_taken_whole_and_in_order() {
        let mut buf = server_frame(OP_BINARY, b"one");
        buf.extend(server_frame(OP_PING, b""));
        let big = vec![7u8; 300];
        let second = server_frame(OP_BINARY, &big);
        buf.extend_from_slice(&second[..10]);
        assert_eq!(take_frame(&mut buf).unwrap().unwrap().payload, b"one");
        assert_eq!(take_frame(&mut buf).unwrap().unwrap().opcode, OP_PING);
        assert_eq!(take_frame(&mut buf).unwrap(), None, "half a frame waits");
        buf.extend_from_slice(&second[10..]);
        assert_eq!(take_frame(&mut buf).unwrap().unwrap().payload, big);
        assert!(buf.is_empty());
    }

    #[test]
    fn client_frames_are_masked() {
        let mut out = Vec::new();
        write_frame(&mut out, OP_BINARY, b"abc");
        assert_eq!(out[0], 0x82);
        assert_eq!(out[1], 0x80 | 3);
        let unmasked: Vec<u8> = out[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ MASK[i % 4])
            .collect();
        assert_eq!(unmasked, b"abc");
    }
}
