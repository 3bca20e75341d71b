//! One-shot HTTP/1.1 over a raw `TcpStream`. The server answers one request
//! per connection and closes it, so a response ends at EOF.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::WAIT;

/// Bytes of a response this harness reads at most.
const RESPONSE_BYTES_MAX: usize = 1 << 20;

/// A parsed response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Connects with read and write timeouts of [`WAIT`].
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, WAIT).expect("the server accepts");
    stream
        .set_read_timeout(Some(WAIT))
        .expect("a connected socket takes a timeout");
    stream
        .set_write_timeout(Some(WAIT))
        .expect("a connected socket takes a timeout");
    stream
}

/// Sends `raw` as is on a new connection and reads the response.
pub fn request(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut stream = connect(addr);
    stream.write_all(raw).expect("the server reads the request");
    read_response(&mut stream, WAIT)
}

pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
    )
}

pub fn post(addr: SocketAddr, path: &str, body: &[u8]) -> Response {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    request(addr, &raw)
}

/// Sends `raw` as is on a new connection and reads until the server closes
/// it. The body is whatever follows the head, whatever `Content-Length`
/// says: for answers that have none (to `HEAD`, or a 304).
pub fn request_to_close(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut stream = connect(addr);
    stream.write_all(raw).expect("the server reads the request");
    let bytes = read_to_close(&mut stream, WAIT);
    let text = || String::from_utf8_lossy(&bytes).into_owned();
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head_len)) = response.parse(&bytes) else {
        panic!("not an HTTP response head: {:?}", text());
    };
    Response {
        status: response.code.expect("a complete head has a status"),
        headers: response
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: bytes[head_len..].to_vec(),
    }
}

/// Reads until the server closes the connection (within `timeout`) and
/// parses what arrived. A reset after the response counts as its end: a
/// server that answers before reading everything resets the connection.
pub fn read_response(stream: &mut TcpStream, timeout: Duration) -> Response {
    let bytes = read_to_close(stream, timeout);
    parse(&bytes).unwrap_or_else(|| {
        panic!(
            "not an HTTP response: {:?}",
            String::from_utf8_lossy(&bytes)
        )
    })
}

/// Reads until one whole response (head and `Content-Length` body) has
/// arrived, within `timeout`, without waiting for the server to close.
pub fn read_response_complete(stream: &mut TcpStream, timeout: Duration) -> Response {
    let deadline = Instant::now() + timeout;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(response) = parse(&bytes) {
            return response;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no complete response within {timeout:?}; got {:?}",
            String::from_utf8_lossy(&bytes)
        );
        stream
            .set_read_timeout(Some(left))
            .expect("a connected socket takes a timeout");
        match stream.read(&mut chunk) {
            Ok(0) => panic!(
                "closed before a complete response: {:?}",
                String::from_utf8_lossy(&bytes)
            ),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read failed after {} bytes: {e}", bytes.len()),
        }
        assert!(bytes.len() <= RESPONSE_BYTES_MAX, "response too long");
    }
}

/// Everything the peer sends until it closes, within `timeout`.
pub fn read_to_close(stream: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the server did not close within {timeout:?}; got {:?}",
            String::from_utf8_lossy(&bytes)
        );
        stream
            .set_read_timeout(Some(left))
            .expect("a connected socket takes a timeout");
        match stream.read(&mut chunk) {
            Ok(0) => return bytes,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset && !bytes.is_empty() => {
                return bytes;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read failed after {} bytes: {e}", bytes.len()),
        }
        assert!(bytes.len() <= RESPONSE_BYTES_MAX, "response too long");
    }
}

fn parse(bytes: &[u8]) -> Option<Response> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head_len) = response.parse(bytes).ok()? else {
        return None;
    };
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let status = response.code?;
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    // Every response carries its length: until it is all there the
    // response is incomplete, and nothing may follow it.
    let length: usize = response.header("content-length")?.parse().ok()?;
    let body = &bytes[head_len..];
    if body.len() < length {
        return None;
    }
    assert_eq!(body.len(), length, "bytes after the response body");
    response.body = body.to_vec();
    Some(response)
}
