//! Switchboard's criterion benches and what they share.
//!
//! What it is: the `storage` bench (`benches/storage.rs`), which measures the
//! storage crate's group-commit appends and its catch-up and history reads,
//! each next to the same work done by SQLite, plus the two things the bench
//! needs from outside the bench file: a deterministic message generator and
//! the SQLite baseline.
//!
//! Beside it, the `chatbench` binary (`src/bin/chatbench.rs`) measures one
//! running server end to end (1:1 pairs, idle connections). What this crate
//! is not: a load test at scale; that is `loadgen`. Nothing here is used by
//! the engine.
//!
//! Layout:
//! - [`Corpus`] (`corpus.rs`): messages with ~100-byte text bodies spread over
//!   many conversations, each at its conversation's next seq.
//! - [`Error`] (`error.rs`): the baseline's failures.
//! - [`SqliteStore`] (`sqlite.rs`): the baseline, a SQLite database in WAL mode
//!   with a schema equivalent to the store's messages and dedupe keyspaces,
//!   decoding rows into the same `protocol::Message` the store returns.
#![forbid(unsafe_code)]

mod corpus;
mod error;
mod sqlite;

pub use corpus::{BODY_BYTES, Corpus, Post};
pub use error::{Error, Result};
pub use sqlite::SqliteStore;
