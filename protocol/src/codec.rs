//! The two encodings of [`ClientMsg`] and [`ServerMsg`].
//!
//! - JSON, in WebSocket text frames: `{"<type>": {...fields}}`, ids that can
//!   exceed 2^53 as decimal strings. The version is that of the connection
//!   (announced in `welcome`); a JSON message carries none.
//! - Binary, in WebSocket binary frames: one version byte ([`VERSION`]) then
//!   the message in postcard (varints, length-prefixed strings, variant index
//!   tags). Compact and allocation-light for native clients and loadgen.
//!
//! Decoders never panic on any input; they reject over-long input before
//! parsing and check every [`crate::limits`] bound after.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::ClientMsg;
use crate::error::DecodeError;
use crate::limits::CLIENT_MESSAGE_BYTES_MAX;
use crate::server::ServerMsg;

/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;

/// Which encoding a frame uses; WebSocket text frames are JSON, binary frames
/// are binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    Json,
    Binary,
}

impl Encoding {
    /// Appends `msg` to `out`.
    pub fn encode<T: Serialize>(self, msg: &T, out: &mut Vec<u8>) {
        match self {
            Encoding::Json => encode_json(msg, out),
            Encoding::Binary => encode_binary(msg, out),
        }
    }

    /// Decodes and validates one client message.
    pub fn decode_client(self, bytes: &[u8]) -> Result<ClientMsg, DecodeError> {
        let msg = self.decode_client_unvalidated(bytes)?;
        msg.validate()?;
        Ok(msg)
    }

    /// Decodes one client message (bounded in size) without checking its
    /// fields' limits, so a server can name the request (`rid`, `cmid`) in
    /// its error; call [`ClientMsg::validate`] before acting on it.
    pub fn decode_client_unvalidated(self, bytes: &[u8]) -> Result<ClientMsg, DecodeError> {
        if bytes.len() > CLIENT_MESSAGE_BYTES_MAX {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: CLIENT_MESSAGE_BYTES_MAX,
            });
        }
        match self {
            Encoding::Json => decode_json(bytes),
            Encoding::Binary => decode_binary(bytes),
        }
    }

    /// Decodes one server message (clients use this; no size bound applies).
    pub fn decode_server(self, bytes: &[u8]) -> Result<ServerMsg, DecodeError> {
        match self {
            Encoding::Json => decode_json(bytes),
            Encoding::Binary => decode_binary(bytes),
        }
    }
}

/// Appends `msg` as JSON to `out`.
pub fn encode_json<T: Serialize>(msg: &T, out: &mut Vec<u8>) {
    // Writing to a Vec cannot fail, and our types have string keys only.
    serde_json::to_writer(out, msg).expect("protocol types always serialize to JSON");
}

/// Appends `msg` as a version byte plus postcard to `out`.
pub fn encode_binary<T: Serialize>(msg: &T, out: &mut Vec<u8>) {
    out.push(VERSION);
    let taken = std::mem::take(out);
    *out = postcard::to_extend(msg, taken).expect("protocol types always serialize to postcard");
}

fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))
}

fn decode_binary<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (&version, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let (msg, tail) =
        postcard::take_from_bytes(rest).map_err(|e| DecodeError::Binary(e.to_string()))?;
    if !tail.is_empty() {
        return Err(DecodeError::TrailingBytes(tail.len()));
    }
    Ok(msg)
}
