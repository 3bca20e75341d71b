//! Errors of this crate.

use crate::client::LimitError;

/// A frame could not be turned into a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty message")]
    Empty,
    #[error("message is {len} bytes, max {max}")]
    TooLarge { len: usize, max: usize },
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    #[error("invalid JSON message: {0}")]
    Json(String),
    #[error("invalid binary message: {0}")]
    Binary(String),
    #[error("{0} bytes after the end of the message")]
    TrailingBytes(usize),
    #[error(transparent)]
    Limit(#[from] LimitError),
}

impl DecodeError {
    /// The error code a server answers this failure with.
    pub fn error_code(&self) -> crate::server::ErrorCode {
        match self {
            DecodeError::UnsupportedVersion(_) => crate::server::ErrorCode::UnsupportedVersion,
            _ => crate::server::ErrorCode::BadRequest,
        }
    }
}
