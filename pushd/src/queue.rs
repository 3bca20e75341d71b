//! pushd's durable state on fjall: the jobs it has taken, the dead-lettered
//! ones, and invalid-token feedback the engine has not confirmed yet.
//!
//! Taking jobs is one atomic batch persisted with `SyncData` before the
//! engine is told `Stored`. Removing a sent job and recording an attempt
//! are not synced: after a crash they can only be lost towards sending a job
//! again (at least once), never towards losing one.

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use protocol::push::Job;
use protocol::{DeviceId, UnixMillis, UserId};
use serde::{Deserialize, Serialize};

/// A job as pushd keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    pub job: Job,
    /// Sends tried so far.
    pub attempts: u32,
}

/// A job pushd gave up on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dead {
    pub job: Job,
    pub attempts: u32,
    pub reason: String,
    pub at: UnixMillis,
}

/// A token a provider refused for good, until the engine confirms it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feedback {
    pub user: UserId,
    pub device: DeviceId,
    pub token: String,
}

/// The queue's keyspaces. Cheap to clone; every method blocks on disk.
#[derive(Clone)]
pub struct Queue {
    db: Database,
    jobs: Keyspace,
    dead: Keyspace,
    feedback: Keyspace,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").finish_non_exhaustive()
    }
}

fn key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

fn id_of(k: &[u8]) -> anyhow::Result<u64> {
    let b: [u8; 8] = k
        .try_into()
        .map_err(|_| anyhow::anyhow!("pushd queue key of {} bytes, want 8", k.len()))?;
    Ok(u64::from_be_bytes(b))
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).expect("queue records always serialize")
}

impl Queue {
    pub fn open(dir: &Path) -> anyhow::Result<Queue> {
        let db = Database::builder(dir)
            .open()
            .map_err(|e| anyhow::anyhow!("cannot open pushd queue at {}: {e}", dir.display()))?;
        let ks = |name: &str| {
            db.keyspace(name, KeyspaceCreateOptions::default)
                .map_err(|e| anyhow::anyhow!("cannot open keyspace {name}: {e}"))
        };
        Ok(Queue {
            jobs: ks("jobs")?,
            dead: ks("dead")?,
            feedback: ks("feedback")?,
            db,
        })
    }

    /// Makes `jobs` durable (one synced batch).
    pub fn take(&self, jobs: &[Queued]) -> anyhow::Result<()> {
        let mut b = self.db.batch().durability(Some(PersistMode::SyncData));
        for q in jobs {
            b.insert(&self.jobs, key(q.job.id), encode(q));
        }
        b.commit().map_err(|e| anyhow::anyhow!("queue commit: {e}"))
    }

    /// Records a job's attempt count (not synced).
    pub fn update(&self, q: &Queued) -> anyhow::Result<()> {
        self.jobs
            .insert(key(q.job.id), encode(q))
            .map_err(|e| anyhow::anyhow!("queue update: {e}"))
    }

    /// Forgets sent or cancelled jobs (not synced).
    pub fn remove(&self, ids: &[u64]) -> anyhow::Result<()> {
        let mut b = self.db.batch();
        for &id in ids {
            b.remove(&self.jobs, key(id));
        }
        b.commit().map_err(|e| anyhow::anyhow!("queue remove: {e}"))
    }

    /// Every job held, in id order.
    pub fn all(&self) -> anyhow::Result<Vec<Queued>> {
        let mut out = Vec::new();
        for g in self.jobs.iter() {
            let (k, v) = g
                .into_inner()
                .map_err(|e| anyhow::anyhow!("scan jobs: {e}"))?;
            let q: Queued = postcard::from_bytes(&v)
                .map_err(|e| anyhow::anyhow!("corrupt job {}: {e}", id_of(&k).unwrap_or(0)))?;
            out.push(q);
        }
        Ok(out)
    }

    /// Moves a job to the dead letters (synced with the removal), keeping
    /// at most `dead_max` of them: the oldest go first.
    pub fn bury(&self, seq: u64, dead: &Dead, dead_max: usize) -> anyhow::Result<()> {
        let mut b = self.db.batch().durability(Some(PersistMode::SyncData));
        b.remove(&self.jobs, key(dead.job.id));
        b.insert(&self.dead, key(seq), encode(dead));
        if let Some(old) = seq.checked_sub(dead_max as u64) {
            b.remove(&self.dead, key(old));
        }
        b.commit().map_err(|e| anyhow::anyhow!("queue bury: {e}"))
    }

    /// The next dead-letter sequence number (one past the newest).
    pub fn next_dead_seq(&self) -> anyhow::Result<u64> {
        match self.dead.last_key_value() {
            Some(g) => {
                let k = g.key().map_err(|e| anyhow::anyhow!("scan dead: {e}"))?;
                Ok(id_of(&k)? + 1)
            }
            None => Ok(0),
        }
    }

    /// The dead letters, oldest first, at most `limit`.
    pub fn dead(&self, limit: usize) -> anyhow::Result<Vec<Dead>> {
        let mut out = Vec::new();
        for g in self.dead.iter().take(limit) {
            let v = g.value().map_err(|e| anyhow::anyhow!("scan dead: {e}"))?;
            out.push(postcard::from_bytes(&v).map_err(|e| anyhow::anyhow!("corrupt dead: {e}"))?);
        }
        Ok(out)
    }

    /// Records invalid-token feedback for job `id` and forgets the job (synced).
    pub fn give_feedback(&self, id: u64, fb: &Feedback) -> anyhow::Result<()> {
        let mut b = self.db.batch().durability(Some(PersistMode::SyncData));
        b.remove(&self.jobs, key(id));
        b.insert(&self.feedback, key(id), encode(fb));
        b.commit()
            .map_err(|e| anyhow::anyhow!("queue feedback: {e}"))
    }

    /// Feedback the engine has not confirmed.
    pub fn feedback(&self) -> anyhow::Result<Vec<(u64, Feedback)>> {
        let mut out = Vec::new();
        for g in self.feedback.iter() {
            let (k, v) = g
                .into_inner()
                .map_err(|e| anyhow::anyhow!("scan feedback: {e}"))?;
            let fb =
                postcard::from_bytes(&v).map_err(|e| anyhow::anyhow!("corrupt feedback: {e}"))?;
            out.push((id_of(&k)?, fb));
        }
        Ok(out)
    }

    /// The engine has applied this feedback.
    pub fn feedback_done(&self, ids: &[u64]) -> anyhow::Result<()> {
        let mut b = self.db.batch();
        for &id in ids {
            b.remove(&self.feedback, key(id));
        }
        b.commit()
            .map_err(|e| anyhow::anyhow!("queue feedback done: {e}"))
    }

    /// Syncs everything written so far (at shutdown).
    pub fn sync(&self) -> anyhow::Result<()> {
        self.db
            .persist(PersistMode::SyncAll)
            .map_err(|e| anyhow::anyhow!("queue persist: {e}"))
    }
}
