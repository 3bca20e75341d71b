//! One shard's push coalescing, sans-IO: which offline devices have a
//! notification open for which conversation, until its window closes.
//!
//! The first message for a (device, conversation) opens a job whose outbox
//! record the caller writes at once (so a crash cannot lose it); later
//! messages inside the window only update the job in memory (newest seq,
//! sender and preview, a count). When the window has passed and the record
//! is durable, the job is due: the caller hands it to the forwarder. A
//! device that comes online drops its open jobs (the caller deletes their
//! records) and, if jobs went to pushd for it recently, asks pushd to
//! cancel them.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use protocol::push::{Job, preview_of};
use protocol::{Content, ConvId, DeviceId, Message, UnixMillis, UserId};
use storage::PushToken;

/// Jobs open at once per shard; past it, new ones are dropped (counted).
pub const OPEN_MAX: usize = 262_144;

/// Devices remembered as having had a job forwarded recently, per shard.
const RECENT_MAX: usize = 262_144;

/// How long after forwarding a device's job a reconnect still cancels it at
/// pushd (a job older than this has long been sent or dead-lettered).
pub const CANCEL_HORIZON: Duration = Duration::from_secs(3600);

/// Job ids: milliseconds since the epoch, then the shard, then a counter.
const SHARD_BITS: u32 = 10;
const COUNTER_BITS: u32 = 12;

#[derive(Debug)]
struct Open {
    job: Job,
    durable: bool,
    /// The window has passed while the record was not yet durable.
    overdue: bool,
}

/// What [`Coalescer::note`] did with a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Noted {
    /// A new job: write its outbox record, then call [`Coalescer::written`].
    Opened(Job),
    /// Folded into the device's open job for the conversation.
    Coalesced,
    /// Too many open jobs on this shard.
    Dropped,
}

/// One shard's coalescer.
#[derive(Debug)]
pub struct Coalescer {
    window: Duration,
    shard: u64,
    last_ms: u64,
    counter: u64,
    open: HashMap<(UserId, DeviceId), HashMap<ConvId, Open>>,
    open_count: usize,
    /// Window ends in order (the window is the same for every job).
    closing: VecDeque<(Instant, UserId, DeviceId, ConvId, u64)>,
    recent: HashMap<(UserId, DeviceId), Instant>,
    recent_order: VecDeque<(Instant, UserId, DeviceId)>,
}

impl Coalescer {
    pub fn new(shard: u16, window: Duration) -> Coalescer {
        Coalescer {
            window,
            shard: u64::from(shard) & ((1 << SHARD_BITS) - 1),
            last_ms: 0,
            counter: 0,
            open: HashMap::new(),
            open_count: 0,
            closing: VecDeque::new(),
            recent: HashMap::new(),
            recent_order: VecDeque::new(),
        }
    }

    /// A new job id: unique per data directory as long as the clock does
    /// not go back past a restart.
    fn next_id(&mut self, now_ms: UnixMillis) -> u64 {
        if now_ms.0 > self.last_ms {
            self.last_ms = now_ms.0;
            self.counter = 0;
        } else if self.counter == (1 << COUNTER_BITS) - 1 {
            // Borrow the next millisecond rather than wrap.
            self.last_ms += 1;
            self.counter = 0;
        } else {
            self.counter += 1;
        }
        (self.last_ms << (SHARD_BITS + COUNTER_BITS)) | (self.shard << COUNTER_BITS) | self.counter
    }

    /// A text message reached `user`'s offline `device`, which has `token`;
    /// in a `private` conversation the job carries no preview. Events and
    /// the author's own messages are not for push: callers filter.
    #[allow(clippy::too_many_arguments)] // Reason: the clock twice, the target, the message.
    pub fn note(
        &mut self,
        now: Instant,
        now_ms: UnixMillis,
        user: UserId,
        device: DeviceId,
        token: &PushToken,
        msg: &Message,
        private: bool,
    ) -> Noted {
        let preview = match &msg.content {
            Content::Text(t) if !private => Some(preview_of(t)),
            Content::Text(_) | Content::Event(_) => None,
        };
        if let Some(open) = self
            .open
            .get_mut(&(user, device))
            .and_then(|m| m.get_mut(&msg.conv))
        {
            let job = &mut open.job;
            job.seq = job.seq.max(msg.seq);
            job.sender = msg.from;
            job.preview = preview;
            job.count = job.count.saturating_add(1);
            job.token.clone_from(&token.token);
            job.platform = token.platform;
            return Noted::Coalesced;
        }
        if self.open_count >= OPEN_MAX {
            return Noted::Dropped;
        }
        let job = Job {
            id: self.next_id(now_ms),
            user,
            device,
            platform: token.platform,
            token: token.token.clone(),
            conv: msg.conv,
            seq: msg.seq,
            sender: msg.from,
            preview,
            unread: 0,
            count: 1,
            created: now_ms,
        };
        let closes = now + self.window;
        self.closing
            .push_back((closes, user, device, msg.conv, job.id));
        self.open.entry((user, device)).or_default().insert(
            msg.conv,
            Open {
                job: job.clone(),
                durable: false,
                overdue: false,
            },
        );
        self.open_count += 1;
        Noted::Opened(job)
    }

    /// The outbox write of job `id` completed (if it failed, the job is
    /// still forwarded at its time: a crash before then loses it). Returns
    /// the job if its window has already passed: it is due now.
    pub fn written(
        &mut self,
        now: Instant,
        user: UserId,
        device: DeviceId,
        conv: ConvId,
        id: u64,
    ) -> Option<Job> {
        let open = self.open.get_mut(&(user, device))?.get_mut(&conv)?;
        if open.job.id != id {
            return None;
        }
        open.durable = true;
        if open.overdue {
            return self.take(now, user, device, conv);
        }
        None
    }

    /// The jobs whose window has passed by `now` and whose records are durable.
    pub fn due(&mut self, now: Instant) -> Vec<Job> {
        let mut out = Vec::new();
        while let Some(&(closes, user, device, conv, id)) = self.closing.front() {
            if closes > now {
                break;
            }
            self.closing.pop_front();
            let Some(open) = self
                .open
                .get_mut(&(user, device))
                .and_then(|m| m.get_mut(&conv))
            else {
                continue;
            };
            if open.job.id != id {
                continue;
            }
            if open.durable {
                out.extend(self.take(now, user, device, conv));
            } else {
                open.overdue = true;
            }
        }
        out
    }

    fn take(&mut self, now: Instant, user: UserId, device: DeviceId, conv: ConvId) -> Option<Job> {
        let convs = self.open.get_mut(&(user, device))?;
        let open = convs.remove(&conv)?;
        if convs.is_empty() {
            self.open.remove(&(user, device));
        }
        self.open_count -= 1;
        self.remember(now, user, device);
        Some(open.job)
    }

    fn remember(&mut self, now: Instant, user: UserId, device: DeviceId) {
        self.recent.insert((user, device), now);
        self.recent_order.push_back((now, user, device));
        while let Some(&(at, u, d)) = self.recent_order.front() {
            if self.recent_order.len() <= RECENT_MAX && now.duration_since(at) < CANCEL_HORIZON {
                break;
            }
            self.recent_order.pop_front();
            if self.recent.get(&(u, d)) == Some(&at) {
                self.recent.remove(&(u, d));
            }
        }
    }

    /// When the next window closes, if any job is open.
    pub fn next_close(&self) -> Option<Instant> {
        self.closing.front().map(|c| c.0)
    }

    /// `device` came online: its open jobs are dropped (their ids returned,
    /// for the caller to delete their records), and whether jobs were
    /// forwarded for it recently (the caller asks pushd to cancel them).
    pub fn online(&mut self, now: Instant, user: UserId, device: DeviceId) -> (Vec<u64>, bool) {
        let dropped: Vec<u64> = self
            .open
            .remove(&(user, device))
            .map(|m| m.into_values().map(|o| o.job.id).collect())
            .unwrap_or_default();
        self.open_count -= dropped.len();
        let recent = self
            .recent
            .remove(&(user, device))
            .is_some_and(|at| now.duration_since(at) < CANCEL_HORIZON);
        (dropped, recent)
    }

    /// Jobs open now.
    pub fn open_count(&self) -> usize {
        self.open_count
    }
}

#[cfg(test)]
mod tests {
    use protocol::{MsgId, Platform, Seq};

    use super::*;

    const W: Duration = Duration::from_secs(1);

    fn msg(conv: u64, seq: u64, text: &str) -> Message {
        Message {
            conv: ConvId(conv),
            seq: Seq(seq),
            id: MsgId(seq),
            from: UserId(9),
            device: DeviceId(1),
            ts: UnixMillis(0),
            content: Content::Text(text.into()),
        }
    }

    fn token() -> PushToken {
        PushToken {
            platform: Platform::Apns,
            token: "ab".repeat(32),
        }
    }

    #[test]
    fn messages_in_a_window_become_one_job_with_a_count() {
        let mut c = Coalescer::new(3, W);
        let t0 = Instant::now();
        let (u, d) = (UserId(1), DeviceId(2));
        let Noted::Opened(job) = c.note(
            t0,
            UnixMillis(1000),
            u,
            d,
            &token(),
            &msg(7, 1, "hi"),
            false,
        ) else {
            panic!("opens");
        };
        assert_eq!(
            c.note(
                t0,
                UnixMillis(1001),
                u,
                d,
                &token(),
                &msg(7, 2, "again"),
                false
            ),
            Noted::Coalesced
        );
        assert!(c.written(t0, u, d, ConvId(7), job.id).is_none());
        assert!(c.due(t0 + W / 2).is_empty());
        assert_eq!(c.next_close(), Some(t0 + W));
        let due = c.due(t0 + W);
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].seq, due[0].count, due[0].preview.as_deref()),
            (Seq(2), 2, Some("again"))
        );
        assert_eq!(c.open_count(), 0);
        assert!(matches!(
            c.note(
                t0 + W,
                UnixMillis(2000),
                u,
                d,
                &token(),
                &msg(7, 3, "new"),
                false
            ),
            Noted::Opened(_)
        ));
    }

    #[test]
    fn a_window_that_passes_before_the_write_is_due_on_the_write() {
        let mut c = Coalescer::new(0, W);
        let t0 = Instant::now();
        let Noted::Opened(job) = c.note(
            t0,
            UnixMillis(5),
            UserId(1),
            DeviceId(1),
            &token(),
            &msg(1, 1, "a"),
            true,
        ) else {
            panic!("opens");
        };
        assert!(c.due(t0 + W * 2).is_empty());
        assert_eq!(
            job.preview, None,
            "a private conversation's job has no preview"
        );
        let due = c.written(t0 + W * 2, UserId(1), DeviceId(1), ConvId(1), job.id);
        assert_eq!(due.map(|j| j.id), Some(job.id));
    }

    #[test]
    #[allow(clippy::many_single_char_names)] // Reason: user, device, and three jobs.
    fn coming_online_drops_open_jobs_and_cancels_recent_ones() {
        let mut c = Coalescer::new(0, W);
        let t0 = Instant::now();
        let (u, d) = (UserId(1), DeviceId(1));
        let Noted::Opened(a) = c.note(t0, UnixMillis(5), u, d, &token(), &msg(1, 1, "a"), false)
        else {
            panic!("opens")
        };
        c.written(t0, u, d, ConvId(1), a.id);
        assert_eq!(c.due(t0 + W).len(), 1);
        let Noted::Opened(b) = c.note(
            t0 + W,
            UnixMillis(6),
            u,
            d,
            &token(),
            &msg(2, 1, "b"),
            false,
        ) else {
            panic!("opens")
        };
        assert_eq!(c.online(t0 + W, u, d), (vec![b.id], true));
        assert_eq!(c.online(t0 + W, u, d), (vec![], false), "cancelled once");
        assert_eq!(c.open_count(), 0);
        assert!(
            c.due(t0 + W * 3).is_empty(),
            "the dropped job's window closes to nothing"
        );
    }

    #[test]
    fn ids_are_unique_and_increasing_even_past_the_counter() {
        let mut c = Coalescer::new(5, W);
        let mut last = 0;
        for _ in 0..10_000 {
            let id = c.next_id(UnixMillis(1_700_000_000_000));
            assert!(id > last);
            last = id;
        }
        let other = Coalescer::new(6, W).next_id(UnixMillis(1_700_000_000_000));
        assert_ne!(
            other & 0x3f_f000,
            last & 0x3f_f000,
            "the shard is part of the id"
        );
    }

    #[test]
    fn the_open_bound_drops_new_jobs() {
        let mut c = Coalescer::new(0, W);
        c.open_count = OPEN_MAX;
        assert_eq!(
            c.note(
                Instant::now(),
                UnixMillis(1),
                UserId(1),
                DeviceId(1),
                &token(),
                &msg(1, 1, "a"),
                false,
            ),
            Noted::Dropped
        );
    }
}
