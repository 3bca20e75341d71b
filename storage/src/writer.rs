//! The group-commit writer: one thread that turns many write requests into
//! one atomic fjall batch and one journal persist.
//!
//! Requests arrive on a bounded queue. The writer takes everything queued (up
//! to `batch_ops_max` ops), validates and stages each request on its own (a
//! refused request does not affect its neighbours), commits the staged writes
//! as one batch with the store's durability, and only then completes the
//! requests. While one persist runs, the next batch accumulates by itself.
//!
//! The writer also guards the sequence invariant: it knows each touched
//! conversation's last seq (recovered lazily by a reverse scan) and refuses an
//! append that would leave a gap or reuse a seq.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use fjall::PersistMode;
use protocol::{ClientMsgId, ConvId, Message, Seq};

use crate::config::{Config, Durability};
use crate::encryption::EncryptionKeys;
use crate::error::{Error, Result};
use crate::keys;
use crate::model::SendOutcome;
use crate::ops::{Completion, CompletionSink, Op, WriteRequest};
use crate::records::{
    CursorRec, DeviceRec, MemberRec, SendRec, encode, encode_conv, encode_message, encode_push_job,
};
use crate::tables::{Table, Tables};

/// Counters the writer keeps; read by metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub batches: AtomicU64,
    pub requests: AtomicU64,
    pub refused: AtomicU64,
    pub ops: AtomicU64,
    /// Total time spent in batch commits (including the persist).
    pub commit_nanos: AtomicU64,
    /// Commits by latency: a count per bucket of [`COMMIT_BOUNDS_US`] (not
    /// cumulative), the last one past every bound.
    pub commit_buckets: [AtomicU64; COMMIT_BOUNDS_US.len() + 1],
    /// Commits by write requests in the batch: a count per bucket of
    /// [`BATCH_BOUNDS`], the last one past every bound.
    pub batch_buckets: [AtomicU64; BATCH_BOUNDS.len() + 1],
}

/// Commit latency bucket bounds, µs.
pub const COMMIT_BOUNDS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000,
];

/// Batch size bucket bounds, write requests.
pub const BATCH_BOUNDS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096];

/// The bucket of `value` among `bounds` (the last one past every bound).
fn bucket(bounds: &[u64], value: u64) -> usize {
    bounds
        .iter()
        .position(|&b| value <= b)
        .unwrap_or(bounds.len())
}

/// A key in one keyspace.
type TableKey = (Table, Vec<u8>);

/// Staged writes, last one per key wins: `None` removes the key.
type Staged = HashMap<TableKey, Option<Vec<u8>>>;

pub(crate) struct Writer {
    rx: Receiver<WriteRequest>,
    tables: Tables,
    durability: Option<PersistMode>,
    batch_ops_max: usize,
    linger: Duration,
    seqs: SeqCache,
    poisoned: Arc<AtomicBool>,
    stats: Arc<WriterStats>,
    /// Batch commits attempted so far.
    commits: u64,
    fail_commit_after: Option<u64>,
    /// Seals message bodies and push previews when set.
    encryption: Option<EncryptionKeys>,
}

impl Writer {
    pub(crate) fn new(
        rx: Receiver<WriteRequest>,
        tables: Tables,
        config: &Config,
        poisoned: Arc<AtomicBool>,
        stats: Arc<WriterStats>,
    ) -> Writer {
        let durability = match config.durability {
            Durability::Fsync => Some(PersistMode::SyncData),
            Durability::Os => Some(PersistMode::Buffer),
            Durability::None => None,
        };
        Writer {
            rx,
            tables,
            durability,
            batch_ops_max: config.batch_ops_max.max(1),
            linger: config.batch_linger,
            seqs: SeqCache {
                last: HashMap::new(),
                entries_max: config.seq_cache_entries_max,
            },
            poisoned,
            stats,
            commits: 0,
            fail_commit_after: config.fail_commit_after,
            encryption: config.encryption.clone(),
        }
    }

    /// Runs until every sender is gone and the queue is drained.
    pub(crate) fn run(mut self) {
        while let Some(batch) = self.collect() {
            self.commit(batch);
        }
        if !self.poisoned.load(Ordering::Acquire) {
            // A clean shutdown hands even `Durability::None` writes to the OS.
            if let Err(e) = self.tables.db.persist(PersistMode::SyncData) {
                tracing::error!(cause = %e, "final journal persist failed");
            }
        }
    }

    /// Blocks for the first request, then takes what is queued.
    fn collect(&mut self) -> Option<Vec<WriteRequest>> {
        let first = self.rx.recv().ok()?;
        let mut ops = first.ops.len();
        let mut batch = vec![first];
        let deadline = Instant::now() + self.linger;
        while ops < self.batch_ops_max {
            let next = match self.rx.try_recv() {
                Ok(r) => r,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match self.rx.recv_timeout(left) {
                        Ok(r) => r,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            ops += next.ops.len();
            batch.push(next);
        }
        Some(batch)
    }

    fn commit(&mut self, batch: Vec<WriteRequest>) {
        let started = Instant::now();
        self.seqs.trim();
        let mut staged = Staged::new();
        let mut results: Vec<Result<()>> = Vec::with_capacity(batch.len());
        let poisoned = self.poisoned.load(Ordering::Acquire);
        for req in &batch {
            results.push(if poisoned {
                Err(Error::Poisoned)
            } else {
                self.stage(req, &mut staged)
            });
        }
        let ops: usize = batch.iter().map(|r| r.ops.len()).sum();
        if !staged.is_empty() {
            let mut b = self.tables.db.batch().durability(self.durability);
            for ((table, key), value) in staged {
                match value {
                    Some(v) => b.insert(self.tables.get(table), key, v),
                    None => b.remove(self.tables.get(table), key),
                }
            }
            let injected = self.fail_commit_after.is_some_and(|n| self.commits >= n);
            let committed = if injected {
                drop(b);
                Err("injected commit failure (Config::fail_commit_after)".to_owned())
            } else {
                b.commit().map_err(|e| e.to_string())
            };
            self.commits += 1;
            if let Err(e) = committed {
                // Acked data must be on disk; after a failed persist we cannot
                // know what is, so nothing more is written (fjall poisons too).
                tracing::error!(cause = %e, "group commit failed; store is poisoned");
                self.poisoned.store(true, Ordering::Release);
                self.seqs.last.clear();
                for r in &mut results {
                    if r.is_ok() {
                        *r = Err(Error::Poisoned);
                    }
                }
            }
        }
        let refused = results.iter().filter(|r| r.is_err()).count();
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .requests
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.stats
            .refused
            .fetch_add(refused as u64, Ordering::Relaxed);
        self.stats.ops.fetch_add(ops as u64, Ordering::Relaxed);
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.stats.commit_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.stats.commit_buckets[bucket(&COMMIT_BOUNDS_US, nanos / 1_000)]
            .fetch_add(1, Ordering::Relaxed);
        self.stats.batch_buckets[bucket(&BATCH_BOUNDS, batch.len() as u64)]
            .fetch_add(1, Ordering::Relaxed);
        complete(batch, results);
    }

    /// Validates one request and, if every op is valid, adds its writes to
    /// `staged`. On refusal nothing of the request is staged.
    fn stage(&mut self, req: &WriteRequest, staged: &mut Staged) -> Result<()> {
        let mut w = Writes {
            list: Vec::with_capacity(req.ops.len() * 2),
            seqs: Vec::new(),
        };
        for op in &req.ops {
            self.stage_op(op, &mut w)?;
        }
        for (conv, seq) in w.seqs {
            self.seqs.last.insert(conv, seq);
        }
        staged.extend(w.list);
        Ok(())
    }

    fn stage_op(&mut self, op: &Op, w: &mut Writes) -> Result<()> {
        match op {
            Op::PutConv(c) => w.put(Table::Convs, &keys::conv(c.id), encode_conv(c)),
            Op::Append { msg, dedupe } => self.stage_append(msg, *dedupe, w)?,
            Op::PutMember {
                conv,
                user,
                membership,
            } => {
                let rec = encode(&MemberRec::from_model(*membership));
                w.put(
                    Table::UserConvs,
                    &keys::user_conv(*user, *conv),
                    rec.clone(),
                );
                w.put(Table::Members, &keys::member(*conv, *user), rec);
            }
            Op::RemoveMember { conv, user } => {
                w.del(Table::Members, &keys::member(*conv, *user));
                w.del(Table::UserConvs, &keys::user_conv(*user, *conv));
            }
            Op::PutDevice {
                user,
                device,
                record,
            } => {
                let rec = encode(&DeviceRec::from_model(record));
                w.put(Table::Devices, &keys::device(*user, *device), rec);
            }
            Op::RemoveDevice { user, device } => {
                w.del(Table::Devices, &keys::device(*user, *device));
            }
            Op::PutCursor {
                user,
                device,
                conv,
                cursor,
            } => w.put(
                Table::Cursors,
                &keys::cursor(*user, *device, *conv),
                encode(&CursorRec::from_model(*cursor)),
            ),
            Op::PutOutbox { id, job } => {
                let rec = encode_push_job(*id, job, self.encryption.as_ref())?;
                w.put(Table::Outbox, &keys::outbox(*id), rec);
            }
            Op::RemoveOutbox { id } => w.del(Table::Outbox, &keys::outbox(*id)),
        }
        Ok(())
    }

    fn stage_append(
        &mut self,
        msg: &Message,
        dedupe: Option<ClientMsgId>,
        w: &mut Writes,
    ) -> Result<()> {
        let last = match w.seqs.iter().rev().find(|(c, _)| *c == msg.conv) {
            Some((_, s)) => *s,
            None => self.seqs.last(&self.tables, msg.conv)?,
        };
        check_next(msg.conv, last, msg.seq)?;
        let rec = encode_message(msg, self.encryption.as_ref())?;
        w.seqs.push((msg.conv, msg.seq));
        w.put(Table::Messages, &keys::message(msg.conv, msg.seq), rec);
        if let Some(cmid) = dedupe {
            let outcome = SendOutcome {
                conv: msg.conv,
                seq: msg.seq,
                id: msg.id,
                ts: msg.ts,
            };
            let rec = encode(&SendRec::from_model(outcome));
            w.put(
                Table::Dedupe,
                &keys::dedupe(msg.from, msg.device, cmid),
                rec,
            );
        }
        Ok(())
    }
}

/// One request's staged writes and the conversation seqs it advances.
struct Writes {
    list: Vec<(TableKey, Option<Vec<u8>>)>,
    seqs: Vec<(ConvId, Seq)>,
}

impl Writes {
    fn put(&mut self, t: Table, key: &[u8], value: Vec<u8>) {
        self.list.push(((t, key.to_vec()), Some(value)));
    }

    fn del(&mut self, t: Table, key: &[u8]) {
        self.list.push(((t, key.to_vec()), None));
    }
}

fn check_next(conv: ConvId, last: Seq, got: Seq) -> Result<()> {
    if got <= last {
        return Err(Error::SeqReused { conv, last, got });
    }
    let expected = last.next();
    if got != expected {
        return Err(Error::SeqGap {
            conv,
            expected,
            got,
        });
    }
    Ok(())
}

/// Hands every result to its request's sink, one call per sink.
fn complete(batch: Vec<WriteRequest>, results: Vec<Result<()>>) {
    let mut by_sink: Vec<(Arc<dyn CompletionSink>, Vec<Completion>)> = Vec::new();
    for (req, result) in batch.into_iter().zip(results) {
        let done = Completion {
            ticket: req.ticket,
            result,
        };
        match by_sink.iter_mut().find(|(s, _)| Arc::ptr_eq(s, &req.sink)) {
            Some((_, v)) => v.push(done),
            None => by_sink.push((req.sink, vec![done])),
        }
    }
    for (sink, done) in by_sink {
        sink.complete(done);
    }
}

/// The last committed (or staged) seq of recently touched conversations.
struct SeqCache {
    last: HashMap<ConvId, Seq>,
    entries_max: usize,
}

impl SeqCache {
    fn last(&mut self, tables: &Tables, conv: ConvId) -> Result<Seq> {
        match self.last.entry(conv) {
            Entry::Occupied(e) => Ok(*e.get()),
            Entry::Vacant(e) => Ok(*e.insert(crate::read::last_seq(tables, conv)?)),
        }
    }

    /// Bounds memory: forget everything when full (entries are recomputable).
    fn trim(&mut self) {
        if self.last.len() >= self.entries_max {
            self.last.clear();
        }
    }
}
