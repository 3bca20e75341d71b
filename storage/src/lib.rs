//! Switchboard's message store, on fjall with rkyv records.
//!
//! What it keeps: conversations, messages keyed by (conversation, seq),
//! membership in both directions, devices with push tokens, per-device
//! per-conversation cursors, send dedupe, and the push outbox.
//!
//! What it is not: it assigns no sequence numbers (the conversation's owner
//! does; the store only refuses gaps and reuse), caches nothing for readers,
//! and knows nothing of shards or sessions.
//!
//! Layout:
//! - [`Store`] (`store.rs`): open, submit writes, blocking reads.
//! - [`Op`], [`WriteRequest`], [`CompletionSink`] (`ops.rs`): the write vocabulary.
//! - `writer.rs`: the group-commit writer thread; `read.rs`: reads.
//! - `model.rs`: values as callers see them; `records.rs`: their on-disk form;
//!   `keys.rs`: key layouts; `tables.rs`: keyspaces.
//! - [`EncryptionKeys`] (`encryption.rs`): optional encryption at rest.
//!
//! # What an ack means
//! A write request completes `Ok` only after its batch is committed with the
//! store's [`Durability`]: with `Fsync` (the default) the journal has been
//! `fdatasync`ed, so the write survives a power loss; with `Os` it survives a
//! process crash; with `None` neither is promised. A batch is atomic: after a
//! crash either all of a request's ops are there or none. If a commit fails,
//! the store is poisoned: every later write fails with [`Error::Poisoned`].
//!
//! # Encryption at rest
//! With [`Config::encryption`], the text bodies of messages and the previews
//! of push outbox jobs are sealed with XChaCha20-Poly1305 (a random nonce per
//! record, the key id stored with it, the record's location as associated
//! data). Everything else (ids, timestamps, group events and their titles,
//! conversation titles, push tokens) stays plain. Plain records written
//! before encryption was turned on still read.
#![forbid(unsafe_code)]

mod config;
mod encryption;
mod error;
mod keys;
mod model;
mod ops;
mod read;
mod records;
mod store;
mod tables;
mod writer;

pub use config::{Config, Durability};
pub use encryption::EncryptionKeys;
pub use error::{Error, Result};
pub use model::{Conversation, Cursor, Device, Membership, PushJob, PushToken, SendOutcome};
pub use ops::{ChannelSink, Completion, CompletionSink, Op, WriteRequest};
pub use store::Store;
pub use writer::{BATCH_BOUNDS, COMMIT_BOUNDS_US, WriterStats};
