//! Errors of the benches crate's baseline.

use protocol::{ConvId, Seq};

/// Every failure of [`crate::SqliteStore`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// An append whose seq is not its conversation's last seq + 1.
    #[error("append to {conv} at seq {got} does not follow its last seq {last}")]
    SeqNotNext { conv: ConvId, last: Seq, got: Seq },
    /// The baseline has no encoding for group events.
    #[error("the SQLite baseline stores text messages only")]
    NotText,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
