//! The forwarder: one thread that streams due push jobs from the outbox to
//! pushd over its Unix socket, and applies what pushd answers.
//!
//! A job leaves the outbox only after pushd's `Stored`. While there is no
//! link (pushd down or restarting), jobs stay in the outbox; on every new
//! link, and whenever the shards' queue overflowed or pushd was busy, the
//! forwarder scans the outbox for due jobs. The first scan after the engine
//! starts takes every job (windows open before a crash are closed by it).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};
use protocol::push::{
    FRAME_MAX, JOBS_PER_FRAME_MAX, Job, LINK_VERSION, ToEngine, ToPushd, decode_frame, encode_frame,
};
use protocol::{DeviceId, UnixMillis, UserId};
use storage::{Completion, CompletionSink, Op, Store, WriteRequest};

use super::{Forward, Gone, PushShared, bump};
use crate::chat::USER_ROW;

/// Jobs sent to pushd and not yet answered, at most; past it the forwarder
/// stops taking due jobs until answers come.
const IN_FLIGHT_MAX: usize = 16_384;

/// Outbox records read per scan step.
const SCAN_PAGE: usize = 256;

/// Cancellations remembered (and repeated on every new link) at most.
const CANCELS_MAX: usize = 65_536;

/// How long a cancellation is remembered.
const CANCEL_KEEP: Duration = super::coalesce::CANCEL_HORIZON;

/// Waits between connection attempts: from the first to the last, doubling.
const RECONNECT_FIRST: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// A write to pushd that takes longer than this breaks the link.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the forwarder waits for pushd's `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// After a `Busy`, how long before jobs are offered again.
const BUSY_BACKOFF: Duration = Duration::from_secs(1);

/// How often the forwarder looks at the rescan flag.
const TICK: Duration = Duration::from_millis(100);

/// What the forwarder is built from.
#[derive(Debug)]
pub struct ForwarderInit {
    pub store: Store,
    pub socket: PathBuf,
    /// The coalescing window: an outbox record younger than this may still
    /// be open on its shard.
    pub window: Duration,
    pub shards: u16,
    pub shared: Arc<PushShared>,
    pub rx: Receiver<Forward>,
    pub stop: Arc<AtomicBool>,
}

/// Starts the forwarder thread; it ends soon after `stop` is set.
pub fn start(init: ForwarderInit) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("push-forwarder".into())
        .spawn(move || Forwarder::new(init).run())
}

/// Write completions the forwarder does not wait for.
struct Ignore;

impl CompletionSink for Ignore {
    fn complete(&self, done: Vec<Completion>) {
        for c in done {
            if let Err(e) = c.result {
                tracing::error!(cause = %e, "push outbox delete failed; the job may be sent again");
            }
        }
    }
}

struct Forwarder {
    init: ForwarderInit,
    /// Jobs sent on the current link, not yet answered.
    in_flight: HashSet<u64>,
    cancels: HashMap<(UserId, DeviceId), UnixMillis>,
    cancel_order: VecDeque<(Instant, UserId, DeviceId)>,
    /// No scan has run since the engine started.
    first_scan: bool,
    busy_until: Option<Instant>,
    sink: Arc<dyn CompletionSink>,
}

/// The link broke (or the engine stops); reconnect or end.
struct LinkDown;

impl Forwarder {
    fn new(init: ForwarderInit) -> Forwarder {
        Forwarder {
            init,
            in_flight: HashSet::new(),
            cancels: HashMap::new(),
            cancel_order: VecDeque::new(),
            first_scan: true,
            busy_until: None,
            sink: Arc::new(Ignore),
        }
    }

    fn stopping(&self) -> bool {
        self.init.stop.load(Ordering::Acquire)
    }

    fn run(mut self) {
        self.count_outbox();
        let mut wait = RECONNECT_FIRST;
        let mut warned = false;
        while !self.stopping() {
            match UnixStream::connect(&self.init.socket) {
                Ok(stream) => {
                    wait = RECONNECT_FIRST;
                    warned = false;
                    tracing::info!(socket = %self.init.socket.display(), "linked to pushd");
                    let _ = self.link(stream);
                    self.init.shared.stats.linked.store(0, Ordering::Relaxed);
                    self.in_flight.clear();
                    if !self.stopping() {
                        tracing::warn!("pushd link lost; jobs wait in the outbox");
                    }
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(socket = %self.init.socket.display(), cause = %e, "cannot reach pushd; jobs wait in the outbox");
                        warned = true;
                    }
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(RECONNECT_MAX);
                }
            }
        }
    }

    /// Counts the records the outbox holds at start (for its depth gauge).
    fn count_outbox(&self) {
        let mut from = 0;
        let mut found = 0;
        loop {
            match self.init.store.outbox(from, SCAN_PAGE) {
                Ok(page) => {
                    let Some(&(last, _)) = page.last() else {
                        break;
                    };
                    found += page.len() as u64;
                    from = last + 1;
                }
                Err(e) => {
                    tracing::error!(cause = %e, "cannot count the push outbox");
                    break;
                }
            }
        }
        bump(&self.init.shared.stats.outbox_found, found);
        if found > 0 {
            tracing::info!(jobs = found, "push outbox holds jobs from an earlier run");
        }
    }

    /// Runs one link until it breaks or the engine stops.
    fn link(&mut self, mut stream: UnixStream) -> Result<(), LinkDown> {
        stream
            .set_write_timeout(Some(WRITE_TIMEOUT))
            .map_err(|_| LinkDown)?;
        let reader = stream.try_clone().map_err(|_| LinkDown)?;
        let (tx, answers) = crossbeam_channel::bounded::<ToEngine>(1024);
        std::thread::Builder::new()
            .name("push-link-reader".into())
            .spawn(move || read_loop(reader, &tx))
            .map_err(|_| LinkDown)?;
        send(
            &mut stream,
            &ToPushd::Hello {
                version: LINK_VERSION,
            },
        )?;
        match answers.recv_timeout(HELLO_TIMEOUT) {
            Ok(ToEngine::Hello { version }) if version == LINK_VERSION => {}
            other => {
                tracing::warn!(?other, "pushd did not say Hello version {LINK_VERSION}");
                return Err(LinkDown);
            }
        }
        self.init.shared.stats.linked.store(1, Ordering::Relaxed);
        let cancels: Vec<_> = self
            .cancels
            .iter()
            .map(|(&(user, device), &before)| ToPushd::Cancel {
                user,
                device,
                before,
            })
            .collect();
        for c in &cancels {
            send(&mut stream, c)?;
        }
        self.init.shared.rescan.store(true, Ordering::Release);
        let result = self.serve(&mut stream, &answers);
        let _ = stream.shutdown(std::net::Shutdown::Both);
        result
    }

    fn serve(
        &mut self,
        stream: &mut UnixStream,
        answers: &Receiver<ToEngine>,
    ) -> Result<(), LinkDown> {
        let rx = self.init.rx.clone();
        let mut batch: Vec<Job> = Vec::new();
        while !self.stopping() {
            let busy = self.busy_until.is_some_and(|t| Instant::now() < t);
            if !busy
                && self.in_flight.len() < IN_FLIGHT_MAX
                && self.init.shared.rescan.swap(false, Ordering::AcqRel)
            {
                self.scan(stream)?;
            }
            let take_jobs = !busy && self.in_flight.len() < IN_FLIGHT_MAX;
            let never = crossbeam_channel::never();
            let jobs_rx = if take_jobs { &rx } else { &never };
            select! {
                recv(jobs_rx) -> f => match f {
                    Ok(f) => self.on_forward(stream, f, &mut batch)?,
                    Err(_) => return Err(LinkDown),
                },
                recv(answers) -> a => match a {
                    Ok(a) => self.on_answer(stream, a)?,
                    Err(_) => return Err(LinkDown),
                },
                default(TICK) => {}
            }
            // Take whatever else is queued without waiting, then send it.
            while take_jobs
                && batch.len() < JOBS_PER_FRAME_MAX
                && self.in_flight.len() < IN_FLIGHT_MAX
            {
                match rx.try_recv() {
                    Ok(f) => self.on_forward(stream, f, &mut batch)?,
                    Err(_) => break,
                }
            }
            self.offer(stream, &mut batch)?;
        }
        Err(LinkDown)
    }

    fn on_forward(
        &mut self,
        stream: &mut UnixStream,
        f: Forward,
        batch: &mut Vec<Job>,
    ) -> Result<(), LinkDown> {
        match f {
            Forward::Due(job) => self.consider(job, batch),
            Forward::Cancel {
                user,
                device,
                before,
            } => {
                self.offer(stream, batch)?;
                self.remember_cancel(user, device, before);
                send(
                    stream,
                    &ToPushd::Cancel {
                        user,
                        device,
                        before,
                    },
                )?;
            }
        }
        if batch.len() >= JOBS_PER_FRAME_MAX {
            self.offer(stream, batch)?;
        }
        Ok(())
    }

    /// Adds `job` to the batch unless it is in flight, cancelled or read.
    fn consider(&mut self, mut job: Job, batch: &mut Vec<Job>) {
        if self.in_flight.contains(&job.id) {
            return;
        }
        let stats = &self.init.shared.stats;
        let cancelled = self
            .cancels
            .get(&(job.user, job.device))
            .is_some_and(|before| job.created < *before);
        let read = match self.init.store.cursor(job.user, USER_ROW, job.conv) {
            Ok(c) => c.map_or(0, |c| c.read.0),
            Err(e) => {
                tracing::warn!(cause = %e, "cannot read the unread count; sending without it");
                0
            }
        };
        if cancelled || read >= job.seq.0 {
            if read >= job.seq.0 {
                bump(&stats.read_elsewhere, 1);
            }
            self.delete(vec![job.id]);
            return;
        }
        job.unread = u32::try_from(job.seq.0 - read).unwrap_or(u32::MAX);
        self.in_flight.insert(job.id);
        batch.push(job);
    }

    fn offer(&mut self, stream: &mut UnixStream, batch: &mut Vec<Job>) -> Result<(), LinkDown> {
        if batch.is_empty() {
            return Ok(());
        }
        bump(&self.init.shared.stats.forwarded, batch.len() as u64);
        send(stream, &ToPushd::Jobs(std::mem::take(batch)))
    }

    fn on_answer(&mut self, stream: &mut UnixStream, a: ToEngine) -> Result<(), LinkDown> {
        match a {
            ToEngine::Hello { .. } => {
                tracing::warn!("pushd said Hello twice");
                return Err(LinkDown);
            }
            ToEngine::Stored { ids } => {
                for id in &ids {
                    self.in_flight.remove(id);
                }
                bump(&self.init.shared.stats.acked, ids.len() as u64);
                self.delete(ids);
            }
            ToEngine::Busy { ids } => {
                for id in &ids {
                    self.in_flight.remove(id);
                }
                tracing::warn!(jobs = ids.len(), "pushd is full; jobs wait in the outbox");
                self.busy_until = Some(Instant::now() + BUSY_BACKOFF);
                self.init.shared.rescan.store(true, Ordering::Release);
            }
            ToEngine::InvalidToken {
                id,
                user,
                device,
                token,
            } => {
                self.forget_token(user, device, token);
                send(stream, &ToPushd::FeedbackDone { ids: vec![id] })?;
            }
        }
        Ok(())
    }

    /// Deletes acknowledged (or skipped) jobs from the outbox.
    fn delete(&self, ids: Vec<u64>) {
        bump(&self.init.shared.stats.outbox_removed, ids.len() as u64);
        let ops = ids.into_iter().map(|id| Op::RemoveOutbox { id }).collect();
        if let Err(e) = self
            .init
            .store
            .submit(WriteRequest::new(ops, 0, self.sink.clone()))
        {
            tracing::error!(cause = %e, "cannot delete pushed jobs; they may be sent again");
        }
    }

    /// Removes `token` from the device if it is still the device's, and
    /// tells the home shard to forget it.
    fn forget_token(&self, user: UserId, device: DeviceId, token: String) {
        let store = &self.init.store;
        match store.device(user, device) {
            Ok(Some(mut d)) if d.push.as_ref().is_some_and(|p| p.token == token) => {
                d.push = None;
                match store.write(vec![Op::PutDevice {
                    user,
                    device,
                    record: d,
                }]) {
                    Ok(()) => {
                        bump(&self.init.shared.stats.invalid_tokens, 1);
                        tracing::info!(
                            user = user.0,
                            device = device.0,
                            "invalid push token removed"
                        );
                    }
                    Err(e) => tracing::error!(cause = %e, "cannot remove an invalid push token"),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(cause = %e, "cannot read a device to remove its token"),
        }
        let home = router::shard_of_user(user, self.init.shards).0;
        self.init.shared.token_gone(
            home,
            Gone {
                user,
                device,
                token,
            },
        );
    }

    fn remember_cancel(&mut self, user: UserId, device: DeviceId, before: UnixMillis) {
        let now = Instant::now();
        self.cancels.insert((user, device), before);
        self.cancel_order.push_back((now, user, device));
        while let Some(&(at, u, d)) = self.cancel_order.front() {
            if self.cancel_order.len() <= CANCELS_MAX && now.duration_since(at) < CANCEL_KEEP {
                break;
            }
            self.cancel_order.pop_front();
            self.cancels.remove(&(u, d));
        }
    }

    /// Offers every due outbox job not in flight (all of them on the first
    /// scan since start), until the in-flight bound.
    fn scan(&mut self, stream: &mut UnixStream) -> Result<(), LinkDown> {
        let all = std::mem::replace(&mut self.first_scan, false);
        let due_before = crate::chat::now_millis()
            .0
            .saturating_sub(u64::try_from(self.init.window.as_millis()).unwrap_or(u64::MAX));
        let mut from = 0;
        let mut batch = Vec::new();
        loop {
            let page = match self.init.store.outbox(from, SCAN_PAGE) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(cause = %e, "cannot scan the push outbox");
                    self.init.shared.rescan.store(true, Ordering::Release);
                    return Ok(());
                }
            };
            let Some(&(last, _)) = page.last() else {
                break;
            };
            for (id, j) in page {
                if !all && j.created.0 > due_before {
                    continue;
                }
                if self.in_flight.len() >= IN_FLIGHT_MAX {
                    self.init.shared.rescan.store(true, Ordering::Release);
                    return self.offer(stream, &mut batch);
                }
                self.consider(to_job(id, j), &mut batch);
                if batch.len() >= JOBS_PER_FRAME_MAX {
                    self.offer(stream, &mut batch)?;
                }
            }
            from = last + 1;
        }
        self.offer(stream, &mut batch)
    }
}

fn to_job(id: u64, j: storage::PushJob) -> Job {
    Job {
        id,
        user: j.user,
        device: j.device,
        platform: j.platform,
        token: j.token,
        conv: j.conv,
        seq: j.seq,
        sender: j.sender,
        preview: j.preview,
        unread: j.unread,
        count: j.count,
        created: j.created,
    }
}

/// The outbox record of a job.
pub fn to_record(j: &Job) -> storage::PushJob {
    storage::PushJob {
        user: j.user,
        device: j.device,
        platform: j.platform,
        token: j.token.clone(),
        conv: j.conv,
        seq: j.seq,
        sender: j.sender,
        preview: j.preview.clone(),
        unread: j.unread,
        count: j.count,
        created: j.created,
    }
}

fn send(stream: &mut UnixStream, msg: &ToPushd) -> Result<(), LinkDown> {
    let mut buf = Vec::new();
    encode_frame(msg, &mut buf);
    stream.write_all(&buf).map_err(|e| {
        tracing::warn!(cause = %e, "pushd link write failed");
        LinkDown
    })
}

/// Reads pushd's frames into `tx` until the link closes.
fn read_loop(mut stream: UnixStream, tx: &crossbeam_channel::Sender<ToEngine>) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let mut used = 0;
        loop {
            match decode_frame::<ToEngine>(&buf[used..]) {
                Ok(Some((msg, n))) => {
                    used += n;
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(cause = %e, "bad frame from pushd");
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                    return;
                }
            }
        }
        buf.drain(..used);
        if buf.len() > FRAME_MAX + 4 {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
