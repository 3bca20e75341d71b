//! A minimal WebSocket client written by hand, so that a connection costs
//! the client only its socket: the idle bench's blocking upgrade (`open`),
//! and the pieces the group bench's non-blocking members reuse (the upgrade
//! request, the response check, frame parsing, masked client frames).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use protocol::{Encoding, ServerMsg, UserId};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Largest response head we accept.
pub const HEAD_BYTES_MAX: usize = 16 * 1024;

/// Largest frame payload `open` accepts (a welcome is a few dozen bytes).
const WELCOME_PAYLOAD_BYTES_MAX: usize = 64 * 1024;

pub const OPCODE_TEXT: u8 = 0x1;
pub const OPCODE_BINARY: u8 = 0x2;
pub const OPCODE_CLOSE: u8 = 0x8;
pub const OPCODE_PING: u8 = 0x9;
pub const OPCODE_PONG: u8 = 0xA;

/// The masking key of every client frame. RFC 6455 wants it unpredictable
/// to protect proxies; there is none between a bench and its server.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

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
    stream
        .write_all(upgrade_request(server, token).as_bytes())
        .context("writing the upgrade request")?;
    let mut buf = Vec::with_capacity(512);
    let head_len = read_head(&mut stream, &mut buf)?;
    check_upgrade(&buf[..head_len], &buf[head_len..])?;
    buf.drain(..head_len);
    match read_welcome(&mut stream, &mut buf)? {
        ServerMsg::Welcome { user: got, .. } if got == user => Ok(stream),
        other => bail!("expected welcome for user {user}, got {other:?}"),
    }
}

/// The upgrade request to `/ws?encoding=binary`, with `token` as a bearer.
pub fn upgrade_request(server: SocketAddr, token: &str) -> String {
    format!(
        "GET /ws?encoding=binary HTTP/1.1\r\n\
         Host: {server}\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    )
}

/// The length of the response head at the start of `buf`, blank line
/// included, once it has all arrived.
pub fn head_len(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// Fails unless the response `head` is `101 Switching Protocols`; `rest`
/// (what followed the head) is quoted as the body of a refusal.
pub fn check_upgrade(head: &[u8], rest: &[u8]) -> Result<()> {
    let head = String::from_utf8_lossy(head);
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 101") {
        bail!(
            "the server refused the upgrade: {status:?} (body: {:?})",
            String::from_utf8_lossy(rest)
        );
    }
    Ok(())
}

/// Appends one client frame (FIN, masked) of `opcode` holding `payload`.
pub fn write_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    const MASKED: u8 = 0x80;
    out.push(0x80 | opcode);
    let len = payload.len();
    if let Ok(short) = u8::try_from(len)
        && short <= 125
    {
        out.push(MASKED | short);
    } else if let Ok(medium) = u16::try_from(len) {
        out.push(MASKED | 0x7e);
        out.extend_from_slice(&medium.to_be_bytes());
    } else {
        out.push(MASKED | 0x7f);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m));
}

/// The close code and reason of a close frame's payload, for messages.
pub fn describe_close(payload: &[u8]) -> String {
    let code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
    format!(
        "the server closed the connection (code {code:?}, reason {:?})",
        String::from_utf8_lossy(payload.get(2..).unwrap_or_default())
    )
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
        if let Some(len) = head_len(buf) {
            return Ok(len);
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
        let Some(frame) = parse_frame(buf, WELCOME_PAYLOAD_BYTES_MAX)? else {
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
            OPCODE_CLOSE => bail!("{}", describe_close(payload)),
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
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub header_len: usize,
    pub payload_len: usize,
}

/// The server frame at the start of `buf`, or `None` if it has not all
/// arrived. A masked frame or a payload over `payload_max` is an error.
pub fn parse_frame(buf: &[u8], payload_max: usize) -> Result<Option<Frame>> {
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
        .filter(|&len| len <= payload_max)
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

    const MAX: usize = 64 * 1024;

    /// Unmasks a client frame as a server would: (opcode, payload).
    fn unmask(frame: &[u8]) -> (u8, Vec<u8>) {
        assert_eq!(frame[0] & 0x80, 0x80, "FIN");
        assert_eq!(frame[1] & 0x80, 0x80, "masked");
        let (len, at) = match frame[1] & 0x7f {
            126 => (usize::from(u16::from_be_bytes([frame[2], frame[3]])), 4),
            127 => (
                usize::try_from(u64::from_be_bytes(frame[2..10].try_into().unwrap())).unwrap(),
                10,
            ),
            short => (usize::from(short), 2),
        };
        let key = &frame[at..at + 4];
        let payload = &frame[at + 4..];
        assert_eq!(payload.len(), len);
        let clear = payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k);
        (frame[0] & 0x0f, clear.collect())
    }

    #[test]
    fn client_frames() {
        for len in [0_usize, 5, 125, 126, 300, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect();
            let mut out = vec![0xee];
            write_frame(&mut out, OPCODE_BINARY, &payload);
            assert_eq!(out[0], 0xee, "appends");
            assert_eq!(unmask(&out[1..]), (OPCODE_BINARY, payload), "length {len}");
        }
    }

    #[test]
    fn upgrade_response() {
        let response = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x82\x01";
        let len = head_len(response).unwrap();
        assert_eq!(&response[len..], b"\x82\x01");
        assert!(check_upgrade(&response[..len], &[]).is_ok());
        assert_eq!(head_len(b"HTTP/1.1 101 Switching\r\n"), None);
        let refused = check_upgrade(b"HTTP/1.1 401 Unauthorized\r\n\r\n", b"bad token");
        assert!(format!("{:#}", refused.unwrap_err()).contains("401"));
        assert_eq!(
            describe_close(&[0x0f, 0xa2, b'h', b'i']),
            "the server closed the connection (code Some(4002), reason \"hi\")"
        );
    }

    #[test]
    fn frames() {
        assert_eq!(parse_frame(&[0x82], MAX).unwrap(), None);
        assert_eq!(parse_frame(&[0x82, 2, 1], MAX).unwrap(), None);
        let frame = parse_frame(&[0x82, 2, 1, 0, 9], MAX).unwrap().unwrap();
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
        let frame = parse_frame(&long, MAX).unwrap().unwrap();
        assert_eq!(
            (frame.fin, frame.header_len, frame.payload_len),
            (false, 4, 256)
        );
        assert!(
            parse_frame(&[0x82, 0x82, 0, 0, 0, 0], MAX).is_err(),
            "masked"
        );
        assert!(
            parse_frame(&[0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0], MAX).is_err(),
            "too long"
        );
    }
}
