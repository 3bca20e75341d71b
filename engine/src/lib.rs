//! The Switchboard engine: the `switchboard` server.
//!
//! Built so far:
//! - [`server`]: start and stop; one `SO_REUSEPORT` listener and one pinned
//!   monoio (`io_uring`) runtime per shard (`shard.rs`, `accept.rs`).
//! - `conn.rs`: a connection's HTTP phase, bounded in size and time:
//!   `/healthz`, `/readyz`, the chat upgrade `/ws` (token check, then the
//!   session here or a handoff to the user's home shard), `/v1/info`, the
//!   browser client (`web.rs`: the files under `web/`, embedded by
//!   `build.rs`), and in `--dev` mode the token endpoint (`dev.rs`) and the
//!   echo WebSocket for the conformance suite.
//! - `chat/`: sessions, the per-shard hub that routes between shards, and
//!   the loop that drives conversation owners and catch-ups.
//! - `websocket.rs`: an upgraded connection's loop: readiness waits with no
//!   per-connection read buffer, heartbeats, idle timeout, close handshake.
//! - [`http`] and [`ws`]: the sans-IO HTTP/1.1 and RFC 6455 codec.
//! - [`config`]: defaults, TOML, environment and flags.
//! - [`catchup`]: one device's reconnect catch-up, sans-IO: pages from the
//!   store, live messages that race them, then `synced`, nothing lost or
//!   reordered.
//! - [`conv`]: the conversation owner, sans-IO: membership check, dedupe of
//!   resends, seq assignment in arrival order, ack and fan-out after the write
//!   is durable; storage work paid for with bounded credit.
//! - [`handoff`]: moving an accepted connection to its user's home shard (a
//!   `dup` of the socket plus the bytes read after the request head).
//! - [`store_io`]: the bridge that keeps storage work off the shards: write
//!   completions and read results come back through a bounded [`store_io::Inbox`].
//! - `metrics.rs`: the admin listener, Prometheus `/metrics` on a plain
//!   thread, fed by per-shard atomics.
//! - `sys/`: the crate's only `unsafe` (a non-blocking `recv`).
//!
//! - [`limits`]: token buckets for sends and the per-address connection table.
//! - [`push`]: push jobs for offline devices: per-shard coalescing, the
//!   durable outbox, and the forwarder thread that streams them to pushd.
//!
//! Not yet: permessage-deflate, keep-alive or TLS
//! (terminate TLS in front).

pub mod catchup;
pub mod config;
pub mod conv;
pub mod error;
pub mod handoff;
pub mod http;
pub mod limits;
pub mod push;
pub mod server;
pub mod shutdown;
pub mod store_io;
pub mod ws;

mod accept;
mod chat;
mod conn;
mod dev;
mod metrics;
mod shard;
#[cfg(test)]
mod sim_rng;
mod sys;
mod web;
mod websocket;

pub use error::{Error, Result};
