//! A minimal blocking WebSocket client for idle connections: the upgrade
//! request written by hand, then the one `welcome` frame read. No
//! tungstenite, so a connection costs the client only its socket.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use protocol::{Encoding, ServerMsg, UserId};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Largest response head we accept.
const HEAD_BYTES_MAX: usize = 16 * 1024;

/// Largest frame payload we accept (a welcome is a few dozen bytes).
const FRAME_PAYLOAD_BYTES_MAX: usize = 64 * 1024;

const OPCODE_TEXT: u8 = 0x1;
const OPCODE_BINARY: u8 = 0x2;
const OPCODE_CLOSE: u8 = 0x8;
const OPCODE_PING: u8 = 0x9;
const OPCODE_PONG: u8 = 0xA;

/// Connects from `source` (port chosen by the kernel) to `server`, upgrades
/// to a WebSocket at `/ws?encoding=binary` with `token`, and reads the
/// `welcome`, which must name `user`. Every step is bounded by `timeout`.
pub fn open(
    server: SocketAddr,
    source: Ipv4Addr,
    token: &str,
    user: UserId,
    timeout: Duration,
) -> Result<TcpStream> {
    let mut stream = connect(server, source, timeout)?;
    let request = format!(
        "GET /ws?encoding=binary HTTP/1.1\r\n\
         Host: {server}\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .context("writing the upgrade request")?;
    let mut buf = Vec::with_capacity(512);
    let head_len = read_head(&mut stream, &mut buf)?;
    let head = String::from_utf8_lossy(&buf[..head_len]);
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 101") {
        bail!(
            "the server refused the upgrade: {status:?} (body: {:?})",
            String::from_utf8_lossy(&buf[head_len..])
        );
    }
    buf.drain(..head_len);
    match read_welcome(&mut stream, &mut buf)? {
        ServerMsg::Welcome { user: got, .. } if got == user => Ok(stream),
        other => bail!("expected welcome for user {user}, got {other:?}"),
    }
}

fn connect(server: SocketAddr, source: Ipv4Addr, timeout: Duration) -> Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
        .context("creating a socket")?;
    socket
        .bind(&SockAddr::from(SocketAddrV4::new(source, 0)))
        .with_context(|| format!("binding to {source}"))?;
    socket
        .connect_timeout(&SockAddr::from(server), timeout)
        .with_context(|| format!("connecting from {source} to {server}"))?;
    let stream = TcpStream::from(socket);
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    stream
        .set_read_timeout(Some(timeout))
        .context("setting the read timeout")?;
    stream
        .set_write_timeout(Some(timeout))
        .context("setting the write timeout")?;
    Ok(stream)
}

/// Reads until the end of the response head; returns its length with the
/// blank line. Bytes after it stay in `buf`.
fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize> {
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(at + 4);
        }
        ensure!(
            buf.len() <= HEAD_BYTES_MAX,
            "response head over {HEAD_BYTES_MAX} bytes"
        );
        read_more(stream, buf).context("reading the upgrade response")?;
    }
}

/// Reads frames until a data frame, which must be a binary `welcome`.
/// Pings are skipped (the server only pings after a quiet interval).
fn read_welcome(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<ServerMsg> {
    loop {
        let Some(frame) = parse_frame(buf)? else {
            read_more(stream, buf).context("reading the welcome frame")?;
            continue;
        };
        let payload = &buf[frame.header_len..frame.header_len + frame.payload_len];
        match frame.opcode {
            OPCODE_BINARY => {
                ensure!(frame.fin, "a fragmented welcome");
                return Encoding::Binary
                    .decode_server(payload)
                    .map_err(|e| anyhow::anyhow!("undecodable welcome: {e}"));
            }
            OPCODE_PING | OPCODE_PONG => {}
            OPCODE_CLOSE => {
                let code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                bail!(
                    "the server closed the connection (code {code:?}, reason {:?})",
                    String::from_utf8_lossy(payload.get(2..).unwrap_or_default())
                );
            }
            OPCODE_TEXT => bail!("a text frame although we asked for encoding=binary"),
            other => bail!("unexpected frame opcode {other:#x}"),
        }
        buf.drain(..frame.header_len + frame.payload_len);
    }
}

fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<()> {
    let mut chunk = [0u8; 1024];
    let n = stream.read(&mut chunk)?;
    ensure!(n > 0, "the server closed the connection");
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// A complete frame at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
struct Frame {
    fin: bool,
    opcode: u8,
    header_len: usize,
    payload_len: usize,
}

/// The frame at the start of `buf`, or `None` if it has not all arrived.
fn parse_frame(buf: &[u8]) -> Result<Option<Frame>> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    ensure!(b1 & 0x80 == 0, "a masked frame from the server");
    let (header_len, payload_len) = match b1 & 0x7f {
        126 => {
            let Some(len) = buf.get(2..4) else {
                return Ok(None);
            };
            (4, u64::from(u16::from_be_bytes([len[0], len[1]])))
        }
        127 => {
            let Some(len) = buf.get(2..10) else {
                return Ok(None);
            };
            let len: [u8; 8] = len.try_into().expect("a slice of 8 bytes");
            (10, u64::from_be_bytes(len))
        }
        short => (2, u64::from(short)),
    };
    let payload_len = usize::try_from(payload_len)
        .ok()
        .filter(|&len| len <= FRAME_PAYLOAD_BYTES_MAX)
        .with_context(|| format!("a frame of {payload_len} bytes"))?;
    if buf.len() < header_len + payload_len {
        return Ok(None);
    }
    Ok(Some(Frame {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0f,
        header_len,
        payload_len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        assert_eq!(parse_frame(&[0x82]).unwrap(), None);
        assert_eq!(parse_frame(&[0x82, 2, 1]).unwrap(), None);
        let frame = parse_frame(&[0x82, 2, 1, 0, 9]).unwrap().unwrap();
        assert_eq!(
            frame,
            Frame {
                fin: true,
                opcode: OPCODE_BINARY,
                header_len: 2,
                payload_len: 2
            }
        );
        let mut long = vec![0x02, 126, 0x01, 0x00];
        long.resize(4 + 256, 0);
        let frame = parse_frame(&long).unwrap().unwrap();
        assert_eq!(
            (frame.fin, frame.header_len, frame.payload_len),
            (false, 4, 256)
        );
        assert!(parse_frame(&[0x82, 0x82, 0, 0, 0, 0]).is_err(), "masked");
        assert!(
            parse_frame(&[0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0]).is_err(),
            "too long"
        );
    }
}
