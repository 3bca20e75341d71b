//! Opening a connection: TCP connect, then the HTTP upgrade, both under one
//! deadline.

use std::fmt;
use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use protocol::Encoding;
use tungstenite::client::IntoClientRequest as _;
use tungstenite::handshake::HandshakeError;
use tungstenite::handshake::client::Request;
use tungstenite::http::HeaderValue;
use tungstenite::http::header::AUTHORIZATION;
use tungstenite::protocol::WebSocketConfig;

use crate::error::{Error, Result};

/// Default for [`ConnectOptions::connect_timeout`].
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// Default for [`ConnectOptions::write_timeout`].
pub const WRITE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// Default for [`ConnectOptions::close_timeout`].
pub const CLOSE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);

/// Largest message the client accepts from the server: the protocol's bound
/// on server messages (PROTOCOL.md "Limits").
pub const SERVER_MESSAGE_BYTES_MAX: usize = protocol::limits::SERVER_MESSAGE_BYTES_MAX;

/// How the token travels in the upgrade request.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `?token=<token>` in the query, as browsers do.
    Query(String),
    /// No token at all (to test the refusal).
    None,
}

impl fmt::Debug for Auth {
    // Tokens are credentials: never print them (STYLE.md "Logging").
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Bearer(_) => f.write_str("Bearer(..)"),
            Auth::Query(_) => f.write_str("Query(..)"),
            Auth::None => f.write_str("None"),
        }
    }
}

/// Everything [`Client::connect_with`](crate::Client::connect_with) needs
/// besides the address.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// What the server sends: `Binary` adds `encoding=binary` to the query.
    /// Also how [`Client::send`](crate::Client::send) encodes.
    pub encoding: Encoding,
    pub auth: Auth,
    /// Request path, `/ws` for the engine.
    pub path: String,
    /// Bounds the TCP connect and the HTTP upgrade together.
    pub connect_timeout: Duration,
    /// Bounds each write; a server that stops reading cannot block a send forever.
    pub write_timeout: Duration,
    /// How long [`Client::close`](crate::Client::close) waits for the server's
    /// close reply.
    pub close_timeout: Duration,
}

impl ConnectOptions {
    /// Defaults: path `/ws`, a Bearer header, the default timeouts.
    pub fn new(token: &str, encoding: Encoding) -> ConnectOptions {
        ConnectOptions {
            encoding,
            auth: Auth::Bearer(token.to_owned()),
            path: "/ws".to_owned(),
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            write_timeout: WRITE_TIMEOUT_DEFAULT,
            close_timeout: CLOSE_TIMEOUT_DEFAULT,
        }
    }

    /// The request target: path plus query.
    pub(crate) fn target(&self) -> String {
        let mut params = Vec::new();
        if self.encoding == Encoding::Binary {
            params.push("encoding=binary".to_owned());
        }
        if let Auth::Query(token) = &self.auth {
            params.push(format!("token={}", percent_encode(token)));
        }
        let mut target = self.path.clone();
        if !params.is_empty() {
            target.push(if target.contains('?') { '&' } else { '?' });
            target.push_str(&params.join("&"));
        }
        target
    }
}

/// An open, upgraded connection and what it was opened with.
pub(crate) struct Opened {
    pub(crate) ws: tungstenite::WebSocket<TcpStream>,
    pub(crate) addr: SocketAddr,
}

/// Resolves `addr`, connects to the first address that answers and upgrades,
/// all within `options.connect_timeout`.
pub(crate) fn open(
    addr: impl ToSocketAddrs + fmt::Debug,
    options: &ConnectOptions,
) -> Result<Opened> {
    let started = Instant::now();
    let deadline = started + options.connect_timeout;
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|source| Error::Resolve {
            addr: format!("{addr:?}"),
            source,
        })?
        .collect();
    let mut last_err = None;
    for addr in &addrs {
        let remaining = remaining(deadline);
        match TcpStream::connect_timeout(addr, remaining) {
            Ok(stream) => return upgrade(stream, *addr, options, started, deadline),
            Err(source) => {
                last_err = Some(Error::Connect {
                    addr: *addr,
                    source,
                });
            }
        }
    }
    Err(last_err.unwrap_or_else(|| Error::Resolve {
        addr: format!("{addr:?}"),
        source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
    }))
}

fn upgrade(
    stream: TcpStream,
    addr: SocketAddr,
    options: &ConnectOptions,
    started: Instant,
    deadline: Instant,
) -> Result<Opened> {
    let io = |op| move |source| Error::Io { op, source };
    stream.set_nodelay(true).map_err(io("set TCP_NODELAY"))?;
    // A clone shares the socket, so timeouts set through it apply to the
    // stream the handshake owns.
    let control = stream.try_clone().map_err(io("clone socket"))?;
    let set_deadline = |control: &TcpStream| -> Result<()> {
        let left = remaining(deadline);
        control
            .set_read_timeout(Some(left))
            .map_err(io("set read timeout"))?;
        control
            .set_write_timeout(Some(left))
            .map_err(io("set write timeout"))
    };
    set_deadline(&control)?;

    let request = request(addr, options).map_err(|source| Error::Handshake {
        addr,
        source: Box::new(source),
    })?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(SERVER_MESSAGE_BYTES_MAX))
        .max_frame_size(Some(SERVER_MESSAGE_BYTES_MAX));
    let mut attempt = tungstenite::client::client_with_config(request, stream, Some(config));
    loop {
        match attempt {
            Ok((ws, _response)) => {
                control
                    .set_write_timeout(Some(nonzero(options.write_timeout)))
                    .map_err(io("set write timeout"))?;
                return Ok(Opened { ws, addr });
            }
            // With a blocking socket this means a read or write timed out.
            Err(HandshakeError::Interrupted(mid)) => {
                if Instant::now() >= deadline {
                    return Err(Error::HandshakeTimeout {
                        addr,
                        waited: started.elapsed(),
                    });
                }
                set_deadline(&control)?;
                attempt = mid.handshake();
            }
            Err(HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                let body = response
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
                    .into_owned();
                return Err(Error::Refused {
                    addr,
                    status: response.status().as_u16(),
                    body,
                });
            }
            Err(HandshakeError::Failure(source)) => {
                return Err(Error::Handshake {
                    addr,
                    source: Box::new(source),
                });
            }
        }
    }
}

/// The upgrade request: target, `Host`, the WebSocket headers and the token.
fn request(addr: SocketAddr, options: &ConnectOptions) -> tungstenite::Result<Request> {
    let mut request = format!("ws://{addr}{}", options.target()).into_client_request()?;
    if let Auth::Bearer(token) = &options.auth {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| tungstenite::Error::HttpFormat(e.into()))?;
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    Ok(request)
}

/// Time left until `deadline`, at least 1 ms: a zero socket timeout is an
/// error in std, and every caller wants one more try anyway.
pub(crate) fn remaining(deadline: Instant) -> Duration {
    nonzero(deadline.saturating_duration_since(Instant::now()))
}

pub(crate) fn nonzero(d: Duration) -> Duration {
    d.max(Duration::from_millis(1))
}

/// Percent-encodes everything but RFC 3986 unreserved characters. A JWT is
/// all unreserved, so real tokens pass unchanged; junk tokens in tests stay a
/// valid query.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            write!(out, "%{b:02X}").expect("writing to a String cannot fail");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_json_bearer_has_no_query() {
        let options = ConnectOptions::new("t", Encoding::Json);
        assert_eq!(options.target(), "/ws");
    }

    #[test]
    fn target_binary_query_token() {
        let mut options = ConnectOptions::new("", Encoding::Binary);
        options.auth = Auth::Query("a.b-c_d".to_owned());
        assert_eq!(options.target(), "/ws?encoding=binary&token=a.b-c_d");
    }

    #[test]
    fn target_escapes_junk_tokens_and_keeps_an_existing_query() {
        let mut options = ConnectOptions::new("", Encoding::Json);
        options.path = "/ws?x=1".to_owned();
        options.auth = Auth::Query("a b&é".to_owned());
        assert_eq!(options.target(), "/ws?x=1&token=a%20b%26%C3%A9");
    }

    #[test]
    fn auth_debug_hides_the_token() {
        let shown = format!("{:?}", ConnectOptions::new("secret-token", Encoding::Json));
        assert!(!shown.contains("secret-token"), "{shown}");
    }
}
