//! The Switchboard engine, in progress. So far it is the sans-IO codec the server's
//! `io_uring` loop will drive: bytes in, values and bytes out.
//!
//! - [`http`]: HTTP/1.1 request heads and small bodies (parsed with `httparse`), the
//!   WebSocket upgrade (RFC 6455 §4.2) and plain responses, each refusal mapped to its
//!   status.
//! - [`ws`]: WebSocket frames from clients decoded into whole messages and control frames
//!   ([`ws::Decoder`], which keeps no read buffer between reads), and server frames
//!   encoded ([`ws::write_text`], [`ws::FrameHeader`] for vectored writes).
//! - [`error`]: the crate's [`Error`], wrapping the per-layer errors callers branch on.
//!
//! What it is not, yet: no sockets, no runtime, no shards, sessions or routing; no
//! permessage-deflate, no keep-alive or chunked HTTP, no TLS. `examples/ws_echo_std.rs`
//! is a blocking echo server over this codec, for the Autobahn conformance suite only.
#![forbid(unsafe_code)]

pub mod error;
pub mod http;
pub mod ws;

pub use error::{Error, Result};
