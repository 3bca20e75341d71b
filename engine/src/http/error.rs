//! Why a request was refused, and the response that says so.

use super::response::{Status, write_response};

/// A request the engine refuses. Each maps to one status ([`RequestError::status`]) and
/// one response ([`RequestError::write_response`]), after which the connection closes.
///
/// The messages name no client-supplied value, so they are safe to send and to log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request head over the size limit")]
    HeadTooLarge,
    #[error("too many header fields")]
    TooManyHeaders,
    #[error("malformed request: {0}")]
    Malformed(httparse::Error),
    #[error("request target is not an absolute path")]
    BadTarget,
    #[error("missing or repeated Host header")]
    BadHost,
    #[error("invalid {0} header")]
    BadHeader(&'static str),
    #[error("invalid percent-encoding in the query")]
    BadQuery,
    #[error("request body over the size limit")]
    BodyTooLarge,
    #[error("transfer codings are not supported; send Content-Length")]
    TransferEncoding,
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("not found")]
    NotFound,
    #[error("missing or invalid token")]
    Unauthorized,
    #[error("WebSocket upgrade needs HTTP/1.1")]
    UpgradeNeedsHttp11,
    #[error("expected Upgrade: websocket")]
    UpgradeRequired,
    #[error("Connection header lacks the upgrade option")]
    ConnectionNotUpgrade,
    #[error("unsupported WebSocket version; this server speaks 13")]
    UnsupportedWebSocketVersion,
    #[error("invalid Sec-WebSocket-Key")]
    BadWebSocketKey,
    #[error("the server is overloaded; retry later")]
    Unavailable,
}

impl RequestError {
    pub fn status(self) -> Status {
        match self {
            RequestError::HeadTooLarge | RequestError::TooManyHeaders => {
                Status::RequestHeaderFieldsTooLarge
            }
            RequestError::Malformed(_)
            | RequestError::BadTarget
            | RequestError::BadHost
            | RequestError::BadHeader(_)
            | RequestError::BadQuery
            | RequestError::UpgradeNeedsHttp11
            | RequestError::ConnectionNotUpgrade
            | RequestError::BadWebSocketKey => Status::BadRequest,
            RequestError::BodyTooLarge => Status::PayloadTooLarge,
            RequestError::TransferEncoding => Status::NotImplemented,
            RequestError::MethodNotAllowed { .. } => Status::MethodNotAllowed,
            RequestError::NotFound => Status::NotFound,
            RequestError::Unauthorized => Status::Unauthorized,
            RequestError::UpgradeRequired | RequestError::UnsupportedWebSocketVersion => {
                Status::UpgradeRequired
            }
            RequestError::Unavailable => Status::ServiceUnavailable,
        }
    }

    /// Appends the full response: the status, the headers it requires (`Allow` for 405,
    /// `WWW-Authenticate` for 401, `Upgrade` and `Sec-WebSocket-Version` for 426,
    /// `Retry-After` for 503), and this error's message as a plain-text body.
    pub fn write_response(self, out: &mut Vec<u8>) {
        let allow;
        let headers: &[(&str, &str)] = match self {
            RequestError::MethodNotAllowed { allow: methods } => {
                allow = [("Allow", methods)];
                &allow
            }
            RequestError::Unauthorized => &[("WWW-Authenticate", "Bearer")],
            RequestError::UpgradeRequired | RequestError::UnsupportedWebSocketVersion => {
                &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")]
            }
            RequestError::Unavailable => &[("Retry-After", "5")],
            _ => &[],
        };
        let body = format!("{self}\n");
        write_response(
            out,
            self.status(),
            headers,
            "text/plain; charset=utf-8",
            body.as_bytes(),
        );
    }
}
