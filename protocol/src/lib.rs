//! Switchboard's wire protocol: what clients and the engine say to each other.
//!
//! This crate is the protocol and nothing else: it does no I/O, spawns nothing
//! and pulls in no runtime. The engine, the client library, loadgen and the
//! fuzzers all build on it.
//!
//! - [`ids`]: identifier newtypes ([`UserId`], [`ConvId`], [`Seq`], …).
//! - [`client`] / [`server`]: every message in each direction.
//! - [`codec`]: the JSON and binary encodings of those messages.
//! - [`token`]: HS256 JWT auth tokens.
//! - [`limits`]: every protocol bound, with compile-time checks of their relations.
//! - [`close`]: the WebSocket close codes the engine uses.
//! - [`push`]: the engine ↔ pushd link (push jobs, acknowledgements, feedback).
//!
//! `docs/PROTOCOL.md` in the repository describes the protocol for client authors.
#![forbid(unsafe_code)]

pub mod client;
pub mod close;
pub mod codec;
pub mod error;
pub mod ids;
pub mod limits;
pub mod push;
pub mod server;
pub mod token;

pub use client::{ClientMsg, Page, Platform, Position};
pub use codec::{Encoding, VERSION};
pub use error::DecodeError;
pub use ids::{ClientMsgId, ConvId, DeviceId, MsgId, RequestId, Seq, UnixMillis, UserId};
pub use server::{
    Content, ConvInfo, ConvKind, ConvSummary, ErrorCode, GroupEvent, Member, MemberReceipts,
    Message, MsgRef, PresenceStatus, ReceiptKind, Role, ServerMsg,
};
