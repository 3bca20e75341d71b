//! Errors of this crate.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use protocol::{DecodeError, Encoding, ServerMsg};

/// Everything that can go wrong talking to a Switchboard server.
///
/// Tests branch on [`Error::Refused`] (the server answered the upgrade with an
/// HTTP status) and [`Error::Closed`] (the connection ended, with its close
/// code); the other variants are failures to report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address did not resolve, or resolved to nothing.
    #[error("resolving {addr}: {source}")]
    Resolve { addr: String, source: io::Error },

    /// No TCP connection could be opened.
    #[error("connecting to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },

    /// The server answered the upgrade request with an HTTP status other than
    /// 101 (for example 401 for a missing or bad token). No WebSocket exists.
    #[error("{addr} refused the upgrade with HTTP {status}")]
    Refused {
        addr: SocketAddr,
        status: u16,
        /// As much of the response body as arrived with its head (may be
        /// partial or empty), lossily decoded as UTF-8.
        body: String,
    },

    /// The upgrade did not complete within the connect timeout.
    #[error("WebSocket handshake with {addr} timed out after {waited:?}")]
    HandshakeTimeout { addr: SocketAddr, waited: Duration },

    /// The upgrade failed for another reason (bad response, reset, …).
    #[error("WebSocket handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        source: Box<tungstenite::Error>,
    },

    /// The connection has ended. `code` is the server's close code, or, as
    /// browsers report it, 1005 for a close frame without a code and 1006 for
    /// a connection that dropped without a close frame. Every later call on
    /// the same [`Client`](crate::Client) returns this error again.
    #[error("connection closed with code {code} ({reason:?})")]
    Closed { code: u16, reason: String },

    /// Nothing suitable arrived before the deadline.
    #[error(
        "timed out after {waited:?} waiting for {waiting_for} ({} other messages discarded)",
        discarded.len()
    )]
    Timeout {
        waiting_for: &'static str,
        waited: Duration,
        /// The messages that arrived meanwhile and did not match, oldest first.
        discarded: Vec<ServerMsg>,
    },

    /// The server used the other frame type than the one this connection asked
    /// for with `encoding=`; PROTOCOL.md says it must not.
    #[error("expected a {expected:?} frame from the server, got {got:?}")]
    WrongFrameType { expected: Encoding, got: Encoding },

    /// A message from the server did not decode.
    #[error("undecodable {encoding:?} message from the server: {source}")]
    Decode {
        encoding: Encoding,
        source: DecodeError,
        /// The message as received.
        bytes: Vec<u8>,
    },

    /// [`Client::recv_all`](crate::Client::recv_all) collected its maximum
    /// without the server falling quiet.
    #[error("the server kept sending: {max} messages without a quiet period")]
    TooManyMessages { max: usize },

    /// A WebSocket-level failure on an open connection.
    #[error("{op}: {source}")]
    WebSocket {
        op: &'static str,
        source: Box<tungstenite::Error>,
    },

    /// A socket option could not be set.
    #[error("{op}: {source}")]
    Io { op: &'static str, source: io::Error },
}

impl Error {
    /// The close code if this is [`Error::Closed`].
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Error::Closed { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The HTTP status if this is [`Error::Refused`].
    pub fn refused_status(&self) -> Option<u16> {
        match self {
            Error::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
