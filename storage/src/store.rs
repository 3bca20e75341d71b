//! [`Store`]: open, submit writes, read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};
use protocol::{ClientMsgId, ConvId, DeviceId, Message, Seq, UserId};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{Conversation, Cursor, Device, Membership, PushJob, SendOutcome};
use crate::ops::{ChannelSink, Op, WriteRequest};
use crate::read;
use crate::tables::Tables;
use crate::writer::{Writer, WriterStats};

/// The message store. Cheap to clone and shareable across threads; the last
/// clone to drop stops the writer after it has committed everything queued.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    tables: Tables,
    tx: Option<Sender<WriteRequest>>,
    writer: Option<JoinHandle<()>>,
    poisoned: Arc<AtomicBool>,
    stats: Arc<WriterStats>,
    config: Config,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.config.path)
            .field("durability", &self.inner.config.durability)
            .field("encryption", &self.inner.config.encryption)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.writer.take()
            && h.join().is_err()
        {
            tracing::error!("storage writer thread panicked");
        }
    }
}

impl Store {
    /// Opens (creating if needed) the store at `config.path` and starts its
    /// writer thread. Replays the journal: a crash loses at most writes that
    /// were never completed.
    pub fn open(config: Config) -> Result<Store> {
        let db = fjall::Database::builder(&config.path)
            .cache_size(config.cache_bytes)
            .max_journaling_size(config.journal_bytes_max)
            // The writer decides when the journal is persisted (durability).
            .manual_journal_persist(true)
            .open()
            .map_err(Error::fjall("open database"))?;
        let tables = Tables::open(db)?;
        if let Some(keys) = &config.encryption {
            tracing::info!(keys = ?keys.ids(), current = keys.current_id(), "storage: encryption at rest on");
        }
        let (tx, rx) = crossbeam_channel::bounded(config.write_queue_depth.max(1));
        let poisoned = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(WriterStats::default());
        let writer = Writer::new(rx, tables.clone(), &config, poisoned.clone(), stats.clone());
        let handle = std::thread::Builder::new()
            .name("storage-writer".into())
            .spawn(move || writer.run())
            .map_err(Error::Spawn)?;
        Ok(Store {
            inner: Arc::new(Inner {
                tables,
                tx: Some(tx),
                writer: Some(handle),
                poisoned,
                stats,
                config,
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn stats(&self) -> &WriterStats {
        &self.inner.stats
    }

    /// Whether a failed commit has stopped all writes.
    pub fn is_poisoned(&self) -> bool {
        self.inner.poisoned.load(Ordering::Acquire)
    }

    fn enc(&self) -> Option<&crate::encryption::EncryptionKeys> {
        self.inner.config.encryption.as_ref()
    }

    fn tx(&self) -> &Sender<WriteRequest> {
        self.inner
            .tx
            .as_ref()
            .expect("the sender lives until Inner drops")
    }

    /// Queues a request without blocking. A full queue hands it back in
    /// [`Error::Full`]; its completion arrives through its sink.
    pub fn try_submit(&self, req: WriteRequest) -> Result<()> {
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        self.tx().try_send(req).map_err(|e| match e {
            TrySendError::Full(req) => Error::Full(Box::new(req)),
            TrySendError::Disconnected(_) => Error::Closed,
        })
    }

    /// Queues a request, waiting while the queue is full. Not for shard threads.
    pub fn submit(&self, req: WriteRequest) -> Result<()> {
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        self.tx().send(req).map_err(|_| Error::Closed)
    }

    /// Commits `ops` atomically and waits for the outcome. Not for shard threads.
    pub fn write(&self, ops: Vec<Op>) -> Result<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.submit(WriteRequest::new(ops, 0, Arc::new(ChannelSink(tx))))?;
        rx.recv().map_err(|_| Error::Closed)?.result
    }

    /// Moves every in-memory table to disk tables and waits for it, so a
    /// restart has no journal to replay. Blocking; for shutdown and tools.
    pub fn flush(&self) -> Result<()> {
        let t = &self.inner.tables;
        for ks in [
            &t.convs,
            &t.messages,
            &t.members,
            &t.user_convs,
            &t.devices,
            &t.cursors,
            &t.dedupe,
            &t.outbox,
        ] {
            ks.rotate_memtable_and_wait()
                .map_err(Error::fjall("flush memtable"))?;
        }
        Ok(())
    }

    /// The conversation's last stored seq (`Seq::ZERO` if it has none).
    pub fn last_seq(&self, conv: ConvId) -> Result<Seq> {
        read::last_seq(&self.inner.tables, conv)
    }

    pub fn conv(&self, conv: ConvId) -> Result<Option<Conversation>> {
        read::conv(&self.inner.tables, conv)
    }

    pub fn message(&self, conv: ConvId, seq: Seq) -> Result<Option<Message>> {
        read::message(&self.inner.tables, self.enc(), conv, seq)
    }

    /// Catch-up: up to `limit` messages after `after`, ascending.
    pub fn messages_after(&self, conv: ConvId, after: Seq, limit: usize) -> Result<Vec<Message>> {
        read::after(&self.inner.tables, self.enc(), conv, after, limit)
    }

    /// Pagination: the `limit` newest messages before `before`, ascending.
    pub fn messages_before(&self, conv: ConvId, before: Seq, limit: usize) -> Result<Vec<Message>> {
        read::before(&self.inner.tables, self.enc(), conv, before, limit)
    }

    /// The `limit` newest messages, ascending.
    pub fn messages_latest(&self, conv: ConvId, limit: usize) -> Result<Vec<Message>> {
        read::latest(&self.inner.tables, self.enc(), conv, limit)
    }

    pub fn members(&self, conv: ConvId) -> Result<Vec<(UserId, Membership)>> {
        read::members(&self.inner.tables, conv)
    }

    pub fn member(&self, conv: ConvId, user: UserId) -> Result<Option<Membership>> {
        read::member(&self.inner.tables, conv, user)
    }

    /// The user's conversations with its membership and each one's last seq.
    pub fn user_convs(&self, user: UserId) -> Result<Vec<(ConvId, Membership, Seq)>> {
        read::user_convs(&self.inner.tables, user)?
            .into_iter()
            .map(|(c, m)| Ok((c, m, self.last_seq(c)?)))
            .collect()
    }

    pub fn device(&self, user: UserId, device: DeviceId) -> Result<Option<Device>> {
        read::device(&self.inner.tables, user, device)
    }

    pub fn devices(&self, user: UserId) -> Result<Vec<(DeviceId, Device)>> {
        read::devices(&self.inner.tables, user)
    }

    pub fn cursor(&self, user: UserId, device: DeviceId, conv: ConvId) -> Result<Option<Cursor>> {
        read::cursor(&self.inner.tables, user, device, conv)
    }

    /// Every cursor of one device.
    pub fn cursors(&self, user: UserId, device: DeviceId) -> Result<Vec<(ConvId, Cursor)>> {
        read::cursors(&self.inner.tables, user, device)
    }

    /// One user's cursors in one conversation, a row per device by ascending
    /// device id, from the `devices_max` lowest device ids that have any
    /// cursor. Costs at most two seeks per
    /// device, whatever else the user has cursors for.
    pub fn conv_cursors(
        &self,
        user: UserId,
        conv: ConvId,
        devices_max: usize,
    ) -> Result<Vec<(DeviceId, Cursor)>> {
        read::conv_cursors(&self.inner.tables, user, conv, devices_max)
    }

    /// The recorded outcome of an earlier send with this client message id.
    pub fn dedupe(
        &self,
        user: UserId,
        device: DeviceId,
        cmid: ClientMsgId,
    ) -> Result<Option<SendOutcome>> {
        read::dedupe(&self.inner.tables, user, device, cmid)
    }

    /// Up to `limit` outbox jobs with id ≥ `from`, in id order.
    pub fn outbox(&self, from: u64, limit: usize) -> Result<Vec<(u64, PushJob)>> {
        read::outbox(&self.inner.tables, self.enc(), from, limit)
    }
}
