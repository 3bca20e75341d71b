//! Errors of this crate.

/// Anything the engine refuses. Callers branch on the layer: an HTTP refusal becomes a
/// response, a WebSocket one a close code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("http: {0}")]
    Http(#[from] crate::http::RequestError),
    #[error("websocket: {0}")]
    WebSocket(#[from] crate::ws::DecodeError),
}

pub type Result<T> = std::result::Result<T, Error>;
