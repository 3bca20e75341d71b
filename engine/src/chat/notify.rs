//! Push on the home shard: which of a user's devices are offline with a
//! token when a message arrives, their coalesced jobs, and the device cache.
//!
//! The cache holds each recently delivered-to user's devices that have a
//! push token, loaded from the store on first need (one read per batch of
//! users) and kept current by this shard's own `push_register` /
//! `push_unregister` (all of a user's sessions are homed here) and by
//! pushd's invalid-token feedback.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use protocol::push::Job;
use protocol::{Content, ConvId, DeviceId, Message, UserId};
use storage::{Op, PushToken};

use super::hub::{Hub, Ticket, now_millis};
use super::jobs::StoreEvent;
use crate::metrics::add;
use crate::push::coalesce::{Coalescer, Noted};
use crate::push::forwarder::to_record;
use crate::push::{Forward, PushShared};
use crate::store_io::Slots;

/// Push reads and outbox writes a shard may have in flight.
pub(crate) const PUSH_SLOTS: usize = 1024;

/// Users whose devices one cache read loads.
const LOAD_BATCH: usize = 512;

/// Users with cached devices per shard; past it, the cache starts over.
const CACHED_USERS_MAX: usize = 100_000;

/// Outbox records per write request.
const WRITE_BATCH: usize = 4096;

/// A job's identity in the coalescer: user, device, conversation, job id.
type JobKey = (UserId, DeviceId, ConvId, u64);

/// Messages held per user while its devices load.
const PENDING_PER_USER_MAX: usize = 64;

/// Each user's devices with push tokens, as a read returns them.
pub(crate) type LoadedDevices = Vec<(UserId, storage::Result<Vec<(DeviceId, PushToken)>>)>;

/// A user's devices with push tokens, or messages waiting for them.
#[derive(Debug)]
enum Devices {
    Loaded(Vec<(DeviceId, PushToken)>),
    /// Messages (and whether their conversation is private) waiting.
    Loading(Vec<(Arc<Message>, bool)>),
}

/// One shard's push state.
#[derive(Debug)]
pub(crate) struct Notify {
    shared: Arc<PushShared>,
    coalescer: RefCell<Coalescer>,
    devices: RefCell<HashMap<UserId, Devices>>,
    to_load: RefCell<Vec<UserId>>,
    /// Jobs opened this turn, their records not yet submitted.
    opened: RefCell<Vec<Job>>,
    /// Outbox writes in flight: batch → its jobs.
    writing: RefCell<HashMap<u64, Vec<JobKey>>>,
    next_batch: Cell<u64>,
    pub slots: Slots,
}

impl Notify {
    pub fn new(shared: Arc<PushShared>, me: u16, window: std::time::Duration) -> Notify {
        Notify {
            shared,
            coalescer: RefCell::new(Coalescer::new(me, window)),
            devices: RefCell::new(HashMap::new()),
            to_load: RefCell::new(Vec::new()),
            opened: RefCell::new(Vec::new()),
            writing: RefCell::new(HashMap::new()),
            next_batch: Cell::new(0),
            slots: Slots::new(PUSH_SLOTS),
        }
    }

    /// When the next coalescing window closes, if any.
    pub fn next_close(&self) -> Option<Instant> {
        self.coalescer.borrow().next_close()
    }
}

/// A conversation message reached this home shard for `users`.
/// `private`: the conversation's notifications carry no preview.
pub(crate) fn on_deliver(hub: &Hub, msg: &Arc<Message>, users: &[UserId], private: bool) {
    let Some(n) = &hub.notify else {
        return;
    };
    if !matches!(msg.content, Content::Text(_)) {
        return;
    }
    for &user in users {
        if user == msg.from {
            continue;
        }
        let loaded = {
            let mut devices = n.devices.borrow_mut();
            match devices.get_mut(&user) {
                Some(Devices::Loaded(list)) => Some(list.clone()),
                Some(Devices::Loading(pending)) => {
                    if pending.len() < PENDING_PER_USER_MAX {
                        pending.push((msg.clone(), private));
                    } else {
                        add(&hub.stats().push_dropped, 1);
                    }
                    None
                }
                None => {
                    if devices.len() >= CACHED_USERS_MAX {
                        devices.retain(|_, d| matches!(d, Devices::Loading(_)));
                    }
                    devices.insert(user, Devices::Loading(vec![(msg.clone(), private)]));
                    n.to_load.borrow_mut().push(user);
                    None
                }
            }
        };
        if let Some(list) = loaded {
            note(hub, n, user, &list, msg, private);
        }
    }
}

/// Opens or extends a job for each of `user`'s offline devices in `list`.
fn note(
    hub: &Hub,
    n: &Notify,
    user: UserId,
    list: &[(DeviceId, PushToken)],
    msg: &Message,
    private: bool,
) {
    if list.is_empty() {
        return;
    }
    let online = online_devices(hub, user);
    let now = Instant::now();
    let now_ms = now_millis();
    for (device, token) in list {
        if online.contains(device) {
            continue;
        }
        let noted = n
            .coalescer
            .borrow_mut()
            .note(now, now_ms, user, *device, token, msg, private);
        match noted {
            Noted::Opened(job) => {
                add(&hub.stats().push_created, 1);
                n.opened.borrow_mut().push(job);
            }
            Noted::Coalesced => add(&hub.stats().push_coalesced, 1),
            Noted::Dropped => add(&hub.stats().push_dropped, 1),
        }
    }
}

/// Writes the outbox records of the jobs opened this turn, in batches of
/// `WRITE_BATCH` (one write request and slot each); a batch's completion
/// makes its jobs durable.
fn write_opened(hub: &Hub, n: &Notify) {
    loop {
        let jobs: Vec<Job> = {
            let mut opened = n.opened.borrow_mut();
            let take = opened.len().min(WRITE_BATCH);
            opened.drain(..take).collect()
        };
        if jobs.is_empty() {
            return;
        }
        let keys: Vec<JobKey> = jobs
            .iter()
            .map(|j| (j.user, j.device, j.conv, j.id))
            .collect();
        let ops = jobs
            .iter()
            .map(|j| Op::PutOutbox {
                id: j.id,
                job: to_record(j),
            })
            .collect();
        let batch = n.next_batch.get();
        n.next_batch.set(batch + 1);
        let submitted = n.slots.try_reserve() && {
            let ok = hub.write(ops, Ticket::Push { batch });
            if !ok {
                n.slots.release();
            }
            ok
        };
        if submitted {
            add(&hub.stats().push_outbox_written, keys.len() as u64);
            n.writing.borrow_mut().insert(batch, keys);
        } else {
            // No room to write: these jobs live in memory only (a crash
            // before they reach pushd loses them).
            add(&hub.stats().push_not_durable, keys.len() as u64);
            for k in keys {
                job_written(n, k);
            }
        }
    }
}

/// The outbox write of `batch` completed.
pub(crate) fn written(hub: &Hub, batch: u64, ok: bool) {
    let Some(n) = &hub.notify else {
        return;
    };
    n.slots.release();
    let keys = n.writing.borrow_mut().remove(&batch).unwrap_or_default();
    if !ok {
        tracing::warn!(
            jobs = keys.len(),
            "push outbox write failed; jobs kept in memory only"
        );
        add(&hub.stats().push_not_durable, keys.len() as u64);
    }
    for k in keys {
        job_written(n, k);
    }
}

fn job_written(n: &Notify, (user, device, conv, id): JobKey) {
    let due = n
        .coalescer
        .borrow_mut()
        .written(Instant::now(), user, device, conv, id);
    if let Some(job) = due {
        n.shared.forward(Forward::Due(job));
    }
}

/// The connected devices of `user` on this shard.
fn online_devices(hub: &Hub, user: UserId) -> Vec<DeviceId> {
    let by_user = hub.by_user.borrow();
    let sessions = hub.sessions.borrow();
    by_user
        .get(&user)
        .into_iter()
        .flatten()
        .filter_map(|c| sessions.get(c).map(|s| s.device))
        .collect()
}

/// Once per pump turn: loads devices asked for, hands due jobs to the
/// forwarder, and forgets tokens pushd reported invalid.
pub(crate) fn tick(hub: &Hub) {
    let Some(n) = &hub.notify else {
        return;
    };
    loop {
        match n.shared.next_gone(hub.me) {
            Ok(Some(g)) => forget(n, g.user, g.device, Some(&g.token)),
            Ok(None) => break,
            Err(()) => {
                n.devices
                    .borrow_mut()
                    .retain(|_, d| matches!(d, Devices::Loading(_)));
                break;
            }
        }
    }
    load(hub, n);
    write_opened(hub, n);
    let due = n.coalescer.borrow_mut().due(Instant::now());
    for job in due {
        n.shared.forward(Forward::Due(job));
    }
}

fn load(hub: &Hub, n: &Notify) {
    loop {
        let users: Vec<UserId> = {
            let mut to_load = n.to_load.borrow_mut();
            let take = to_load.len().min(LOAD_BATCH);
            to_load.drain(..take).collect()
        };
        if users.is_empty() {
            return;
        }
        let reserved = n.slots.try_reserve();
        let submitted = reserved
            && hub
                .reads
                .try_read(&hub.inbox, {
                    let users = users.clone();
                    move |s| StoreEvent::PushDevices {
                        devices: load_devices(s, users),
                    }
                })
                .is_ok();
        if !submitted {
            if reserved {
                n.slots.release();
            }
            // No room: these users' pending messages get no push.
            let mut devices = n.devices.borrow_mut();
            for u in users {
                if let Some(Devices::Loading(p)) = devices.remove(&u) {
                    add(&hub.stats().push_dropped, p.len() as u64);
                }
            }
            return;
        }
    }
}

/// Runs on a read thread.
fn load_devices(store: &storage::Store, users: Vec<UserId>) -> LoadedDevices {
    users
        .into_iter()
        .map(|u| {
            let list = store.devices(u).map(|ds| {
                ds.into_iter()
                    .filter_map(|(d, rec)| rec.push.map(|p| (d, p)))
                    .collect()
            });
            (u, list)
        })
        .collect()
}

/// Devices loaded: notes the messages that waited for them.
pub(crate) fn on_devices(hub: &Hub, loaded: LoadedDevices) {
    let Some(n) = &hub.notify else {
        return;
    };
    n.slots.release();
    for (user, list) in loaded {
        let list = list.unwrap_or_else(|e| {
            tracing::error!(cause = %e, "cannot read a user's devices for push");
            Vec::new()
        });
        let pending = n
            .devices
            .borrow_mut()
            .insert(user, Devices::Loaded(list.clone()));
        if let Some(Devices::Loading(msgs)) = pending {
            for (msg, private) in msgs {
                note(hub, n, user, &list, &msg, private);
            }
        }
    }
}

/// A device connected: drop its open jobs and cancel what pushd holds.
pub(crate) fn on_online(hub: &Hub, user: UserId, device: DeviceId) {
    let Some(n) = &hub.notify else {
        return;
    };
    n.opened
        .borrow_mut()
        .retain(|j| j.user != user || j.device != device);
    let (dropped, recent) = n
        .coalescer
        .borrow_mut()
        .online(Instant::now(), user, device);
    let mut cancel = recent;
    if !dropped.is_empty() {
        add(&hub.stats().push_cancelled, dropped.len() as u64);
        let ops: Vec<Op> = dropped
            .into_iter()
            .map(|id| Op::RemoveOutbox { id })
            .collect();
        let count = ops.len() as u64;
        let removed = n.slots.try_reserve() && {
            add(&hub.stats().push_outbox_removed, count);
            let ok = hub.write(ops, Ticket::PushRemoved);
            if !ok {
                n.slots.release();
            }
            ok
        };
        // Records left in the outbox are skipped by the forwarder's
        // cancellation list.
        cancel |= !removed;
    }
    if cancel {
        n.shared.forward(Forward::Cancel {
            user,
            device,
            before: now_millis(),
        });
    }
}

/// The device's token changed (`push_register`, `push_unregister`).
pub(crate) fn on_token(hub: &Hub, user: UserId, device: DeviceId, push: Option<&PushToken>) {
    let Some(n) = &hub.notify else {
        return;
    };
    let mut devices = n.devices.borrow_mut();
    if let Some(Devices::Loaded(list)) = devices.get_mut(&user) {
        list.retain(|(d, _)| *d != device);
        if let Some(p) = push {
            list.push((device, p.clone()));
        }
    }
}

/// Forgets `device`'s token in the cache (if it is still `token`).
fn forget(n: &Notify, user: UserId, device: DeviceId, token: Option<&str>) {
    let mut devices = n.devices.borrow_mut();
    if let Some(Devices::Loaded(list)) = devices.get_mut(&user) {
        list.retain(|(d, p)| *d != device || token.is_some_and(|t| t != p.token));
    }
}
