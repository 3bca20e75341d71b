//! Store configuration.

use std::path::PathBuf;
use std::time::Duration;

use crate::encryption::EncryptionKeys;

/// What an ack (a successful write completion) guarantees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// The batch is on disk (`fdatasync` of the journal) before completion:
    /// survives a power loss. The default.
    #[default]
    Fsync,
    /// The batch is in the OS page cache before completion: survives a crash
    /// of the process, not of the machine.
    Os,
    /// The batch may sit in a user-space buffer at completion: a process crash
    /// can lose the last moments of acked writes. Benchmarks and tests only.
    None,
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fsync" => Ok(Durability::Fsync),
            "os" => Ok(Durability::Os),
            "none" => Ok(Durability::None),
            other => Err(format!(
                "unknown durability {other:?} (want fsync, os or none)"
            )),
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::Fsync => "fsync",
            Durability::Os => "os",
            Durability::None => "none",
        })
    }
}

/// How to open a [`crate::Store`].
#[derive(Clone, Debug)]
pub struct Config {
    /// The database directory; created if missing. One process at a time.
    pub path: PathBuf,
    pub durability: Durability,
    /// Block cache. Worst case memory: this many bytes.
    pub cache_bytes: u64,
    /// Journal bytes kept before memtables are flushed; bounds restart
    /// (replay) time: about 1 s per 60 MiB measured here.
    pub journal_bytes_max: u64,
    /// Write requests waiting for the writer. A full queue hands the request
    /// back (`Error::Full`). Worst case memory: this many requests.
    pub write_queue_depth: usize,
    /// Ops in one group commit; the writer commits as soon as the queue is
    /// empty or this many ops are staged.
    pub batch_ops_max: usize,
    /// How long the writer waits for more requests before committing a batch
    /// that is not full. Zero (the default) commits whatever is queued: while
    /// one fsync runs, the next batch accumulates by itself.
    pub batch_linger: Duration,
    /// Conversations whose last seq the writer caches; past this the cache is
    /// dropped and rebuilt lazily (16 B per entry plus map overhead).
    pub seq_cache_entries_max: usize,
    /// Fault injection for tests: every batch commit after this many fails as
    /// if its journal persist had failed (nothing is written), which poisons
    /// the store. `None` (the default) in production.
    pub fail_commit_after: Option<u64>,
    /// Encryption at rest of message bodies and push previews; `None` (the
    /// default) stores them plain. Sealed records need their key to be read.
    pub encryption: Option<EncryptionKeys>,
}

impl Config {
    /// Defaults for a store at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Config {
        Config {
            path: path.into(),
            durability: Durability::Fsync,
            cache_bytes: 64 * 1024 * 1024,
            journal_bytes_max: 256 * 1024 * 1024,
            write_queue_depth: 16 * 1024,
            batch_ops_max: 4096,
            batch_linger: Duration::ZERO,
            seq_cache_entries_max: 1 << 20,
            fail_commit_after: None,
            encryption: None,
        }
    }

    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Config {
        self.durability = durability;
        self
    }

    /// Turns on encryption at rest with `keys` (new writes use the current key).
    #[must_use]
    pub fn encryption(mut self, keys: EncryptionKeys) -> Config {
        self.encryption = Some(keys);
        self
    }
}
