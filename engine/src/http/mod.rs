//! HTTP/1.1 as far as the engine needs it: request heads (and small bodies) before the
//! WebSocket upgrade, the upgrade itself, and plain responses. Every response closes the
//! connection; there is no keep-alive, chunked encoding or HTTP/2.
//!
//! - [`request`]: [`Request::parse`], incremental and bounded, over `httparse`.
//! - [`query`]: query parameters and percent-decoding.
//! - [`upgrade`]: RFC 6455 §4.2 handshake checks and `Sec-WebSocket-Accept`.
//! - [`response`]: [`Status`] and the response writers.
//! - [`error`]: [`RequestError`], each mapped to its status and response.

pub mod error;
pub mod query;
pub mod request;
pub mod response;
pub mod upgrade;

#[cfg(test)]
mod test;

pub use error::RequestError;
pub use request::Request;
pub use response::{
    Status, write_head, write_json, write_method_not_allowed, write_not_modified, write_response,
    write_text,
};
pub use upgrade::{AcceptKey, Handshake, offered_protocols, write_switching_protocols};

/// Header lines in one request head (`protocol::limits::HTTP_HEADERS_MAX`).
pub const HEADERS_MAX: usize = protocol::limits::HTTP_HEADERS_MAX;

/// Bytes of a request body (`protocol::limits::HTTP_BODY_BYTES_MAX`). With the head, a
/// connection buffers at most `HANDSHAKE_BYTES_MAX + BODY_BYTES_MAX` before its first
/// response.
pub const BODY_BYTES_MAX: usize = protocol::limits::HTTP_BODY_BYTES_MAX;

const _: () = assert!(HEADERS_MAX <= 256, "header counts are kept in a u8");
