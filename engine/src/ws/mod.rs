//! WebSocket (RFC 6455) for a server: decoding client frames into [`Event`]s and encoding
//! server frames. No extensions (permessage-deflate is not negotiated), no I/O.
//!
//! - [`decoder`]: [`Decoder`], the per-connection state machine, and [`Events`].
//! - [`frame`]: opcodes and frame header parsing.
//! - `assembler` (private): fragment reassembly and incremental UTF-8 checks.
//! - `mask` (private): payload unmasking, eight bytes at a time.
//! - [`close`]: close codes and close frame payloads.
//! - [`encoder`]: server frames into a `Vec<u8>`, or just their header.
//! - [`event`], [`error`], [`limits`]: what comes out, why it failed, the bounds.

mod assembler;
pub mod close;
pub mod decoder;
pub mod encoder;
pub mod error;
pub mod event;
pub mod frame;
pub mod limits;
mod mask;

#[cfg(test)]
mod test;

pub use decoder::{Decoder, Events};
pub use encoder::{
    FrameHeader, header_len, write_binary, write_close, write_close_empty, write_frame,
    write_header, write_ping, write_pong, write_text,
};
pub use error::DecodeError;
pub use event::Event;
pub use frame::OpCode;
pub use limits::Limits;
