//! A small, blocking client for the Switchboard protocol (`docs/PROTOCOL.md`).
//!
//! It is for integration tests that start the real `switchboard` server, and
//! for command-line tools: one [`Client`] is one WebSocket over a
//! `std::net::TcpStream` (via `tungstenite`), driven from the calling thread.
//! Every call is bounded in time: connecting by a connect timeout, reading by
//! the timeout each call takes (set with `set_read_timeout` on the socket),
//! writing by a write timeout. Nothing blocks forever.
//!
//! It is not a production client: no TLS, no reconnect or resend logic, no
//! local message store, no async. `loadgen` has its own async client for many
//! connections per thread.
//!
//! ```no_run
//! use std::time::Duration;
//! use client::{Client, mint_token};
//! use protocol::{ClientMsg, DeviceId, Encoding, RequestId, ServerMsg, UserId};
//!
//! let secret = b"a shared secret of at least 32 bytes";
//! let token = mint_token(secret, UserId(1), DeviceId(1), Duration::from_secs(60));
//! let mut c = Client::connect("127.0.0.1:8080", &token, Encoding::Binary)?;
//! let welcome = c.recv(Duration::from_secs(5))?;
//! assert!(matches!(welcome, Some(ServerMsg::Welcome { .. })));
//! c.send(&ClientMsg::Sync { rid: RequestId(1), since: vec![] })?;
//! c.recv_until(Duration::from_secs(5), |m| matches!(m, ServerMsg::Synced { .. }))?;
//! c.close()?;
//! # Ok::<(), client::Error>(())
//! ```
//!
//! Modules:
//!
//! - [`client`]: [`Client`]: send, receive (with timeouts), close.
//! - [`connect`]: [`ConnectOptions`] and [`Auth`]: how the upgrade request
//!   carries the token and the encoding, and the timeouts.
//! - [`token`]: [`mint_token`], HS256 tokens from a shared secret.
//! - [`error`]: the one [`Error`] enum; tests match [`Error::Refused`] (HTTP
//!   status, no upgrade) and [`Error::Closed`] (close code).
#![forbid(unsafe_code)]

pub mod client;
pub mod connect;
pub mod error;
pub mod token;

pub use client::{ABNORMAL_CLOSURE, Client, NO_STATUS, RECV_ALL_MESSAGES_MAX, RawMessage};
pub use connect::{Auth, ConnectOptions};
pub use error::{Error, Result};
pub use token::{mint_token, mint_token_with};
