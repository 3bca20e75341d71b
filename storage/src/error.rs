//! Errors of the storage crate.

use protocol::{ConvId, Seq};

/// Every failure of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The underlying database failed (I/O, corruption it detected, lock held).
    #[error("storage: {op}: {source}")]
    Fjall {
        op: &'static str,
        #[source]
        source: fjall::Error,
    },
    /// A persist failed earlier; nothing is written any more, because data
    /// acknowledged after a failed fsync might not be on disk.
    #[error("storage is poisoned by an earlier failed commit; restart the process")]
    Poisoned,
    /// A stored record failed validation.
    #[error("corrupt record in {keyspace} at key {key:02x?}: {reason}")]
    Corrupt {
        keyspace: &'static str,
        key: Vec<u8>,
        reason: String,
    },
    /// A sealed record could not be opened: its key is not configured, or
    /// authentication failed (wrong key, or the record was altered).
    #[error("cannot decrypt record in {keyspace} at key {key:02x?}: {reason}")]
    Decrypt {
        keyspace: &'static str,
        key: Vec<u8>,
        reason: String,
    },
    /// Encryption keys could not be loaded; the reason names no key material.
    #[error("storage: encryption keys: {0}")]
    Keys(String),
    /// A value could not be sealed (no randomness for a nonce).
    #[error("storage: cannot encrypt: {0}")]
    Encrypt(String),
    /// An append would leave a gap in the conversation's sequence.
    #[error("append to {conv} at seq {got} would leave a gap (next is {expected})")]
    SeqGap {
        conv: ConvId,
        expected: Seq,
        got: Seq,
    },
    /// An append would reuse a sequence number.
    #[error("append to {conv} at seq {got} reuses a seq (last is {last})")]
    SeqReused { conv: ConvId, last: Seq, got: Seq },
    /// The writer's queue is full; the request is handed back. Retry later.
    #[error("storage write queue is full")]
    Full(Box<crate::ops::WriteRequest>),
    /// The writer has stopped (the store is closing).
    #[error("storage writer has stopped")]
    Closed,
    /// The writer thread could not be started.
    #[error("storage: cannot start writer thread: {0}")]
    Spawn(std::io::Error),
}

impl Error {
    pub(crate) fn fjall(op: &'static str) -> impl FnOnce(fjall::Error) -> Error {
        move |source| match source {
            fjall::Error::Poisoned => Error::Poisoned,
            source => Error::Fjall { op, source },
        }
    }

    /// Whether this error means the store accepts no more writes.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::Poisoned | Error::Fjall { .. } | Error::Closed)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
