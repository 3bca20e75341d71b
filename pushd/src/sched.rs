//! The jobs pushd holds, in memory: which is due when, per provider, and
//! which are in flight. The fjall queue is the durable copy; this is the
//! index the dispatchers and the engine link work on.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use protocol::push::Job;
use protocol::{DeviceId, Platform, UnixMillis, UserId};
use tokio::sync::Notify;

use crate::queue::Queued;

/// Ids of recently finished jobs remembered, so a job the engine offers
/// again after pushd sent it (its `Stored` was lost) is not sent twice.
const RECENT_DONE_MAX: usize = 65_536;

/// A provider's index into per-provider arrays.
pub fn provider_ix(p: Platform) -> usize {
    match p {
        Platform::Apns => 0,
        Platform::Fcm => 1,
    }
}

#[derive(Debug)]
struct Entry {
    q: Queued,
    due: Instant,
    in_flight: bool,
    /// Cancelled while in flight: dropped instead of retried.
    cancelled: bool,
}

#[derive(Debug, Default)]
struct Inner {
    jobs: HashMap<u64, Entry>,
    due: [BTreeSet<(Instant, u64)>; 2],
    by_device: HashMap<(UserId, DeviceId), BTreeSet<u64>>,
    recent: HashSet<u64>,
    recent_order: VecDeque<u64>,
}

/// How an offered batch splits.
#[derive(Debug, Default)]
pub struct Offer {
    /// Not held yet: make these durable, then [`Sched::insert`] them.
    pub new: Vec<Queued>,
    /// Already held or recently sent: acknowledge without storing.
    pub known: Vec<u64>,
    /// No room: answer `Busy`.
    pub busy: Vec<u64>,
}

/// The in-memory schedule; one per daemon, shared by the link and the
/// dispatchers.
#[derive(Debug, Default)]
pub struct Sched {
    inner: Mutex<Inner>,
    /// Woken when a provider's earliest due time may have moved earlier.
    pub notify: [Notify; 2],
}

impl Sched {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("sched lock is never poisoned")
    }

    /// Jobs held, waiting or in flight.
    pub fn len(&self) -> usize {
        self.lock().jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Splits an offered batch; holds at most `max` jobs in all.
    pub fn offer(&self, jobs: Vec<Job>, max: usize) -> Offer {
        let inner = self.lock();
        let mut offer = Offer::default();
        let mut seen = HashSet::new();
        for job in jobs {
            if inner.jobs.contains_key(&job.id)
                || inner.recent.contains(&job.id)
                || !seen.insert(job.id)
            {
                offer.known.push(job.id);
            } else if inner.jobs.len() + offer.new.len() >= max {
                offer.busy.push(job.id);
            } else {
                offer.new.push(Queued { job, attempts: 0 });
            }
        }
        offer
    }

    /// Holds `jobs`, due at `due`.
    pub fn insert(&self, jobs: Vec<Queued>, due: Instant) {
        let mut woken = [false; 2];
        {
            let mut inner = self.lock();
            for q in jobs {
                let p = provider_ix(q.job.platform);
                let id = q.job.id;
                inner.due[p].insert((due, id));
                inner
                    .by_device
                    .entry((q.job.user, q.job.device))
                    .or_default()
                    .insert(id);
                inner.jobs.insert(
                    id,
                    Entry {
                        q,
                        due,
                        in_flight: false,
                        cancelled: false,
                    },
                );
                woken[p] = true;
            }
        }
        for (p, w) in woken.iter().enumerate() {
            if *w {
                self.notify[p].notify_one();
            }
        }
    }

    /// The earliest due job of provider `p` if it is due by `now` (now in
    /// flight), else when the next one is due.
    pub fn pop_due(&self, p: usize, now: Instant) -> Result<Queued, Option<Instant>> {
        let mut inner = self.lock();
        let Some(&(due, id)) = inner.due[p].first() else {
            return Err(None);
        };
        if due > now {
            return Err(Some(due));
        }
        inner.due[p].remove(&(due, id));
        let e = inner.jobs.get_mut(&id).expect("a due entry's job is held");
        e.in_flight = true;
        Ok(e.q.clone())
    }

    /// An in-flight job goes back to waiting, due at `at`; `false` (and the
    /// job is dropped) if it was cancelled while in flight.
    pub fn reschedule(&self, q: Queued, at: Instant) -> bool {
        let p = provider_ix(q.job.platform);
        let id = q.job.id;
        {
            let mut inner = self.lock();
            let Some(e) = inner.jobs.get_mut(&id) else {
                return false;
            };
            if e.cancelled {
                let e = inner.jobs.remove(&id).expect("just found");
                unlink_device(&mut inner, &e.q.job, id);
                return false;
            }
            e.q = q;
            e.due = at;
            e.in_flight = false;
            inner.due[p].insert((at, id));
        }
        self.notify[p].notify_one();
        true
    }

    /// An in-flight job is done (sent, dead or invalid).
    pub fn finish(&self, id: u64) {
        let mut inner = self.lock();
        let Some(e) = inner.jobs.remove(&id) else {
            return;
        };
        unlink_device(&mut inner, &e.q.job, id);
        inner.recent.insert(id);
        inner.recent_order.push_back(id);
        if inner.recent_order.len() > RECENT_DONE_MAX
            && let Some(old) = inner.recent_order.pop_front()
        {
            inner.recent.remove(&old);
        }
    }

    /// Drops the device's waiting jobs created before `before`; returns their
    /// ids. A job in flight is sent if this attempt succeeds, and dropped
    /// instead of retried if it fails.
    pub fn cancel(&self, user: UserId, device: DeviceId, before: UnixMillis) -> Vec<u64> {
        let mut inner = self.lock();
        let Some(ids) = inner.by_device.get(&(user, device)) else {
            return Vec::new();
        };
        let ids: Vec<u64> = ids.iter().copied().collect();
        let mut waiting = Vec::new();
        for id in ids {
            let Some(e) = inner.jobs.get_mut(&id) else {
                continue;
            };
            if e.q.job.created >= before {
                continue;
            }
            if e.in_flight {
                e.cancelled = true;
            } else {
                waiting.push(id);
            }
        }
        let ids = waiting;
        for id in &ids {
            let e = inner.jobs.remove(id).expect("filtered ids are held");
            let p = provider_ix(e.q.job.platform);
            inner.due[p].remove(&(e.due, *id));
            unlink_device(&mut inner, &e.q.job, *id);
        }
        ids
    }
}

fn unlink_device(inner: &mut Inner, job: &Job, id: u64) {
    let key = (job.user, job.device);
    if let Some(set) = inner.by_device.get_mut(&key) {
        set.remove(&id);
        if set.is_empty() {
            inner.by_device.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use protocol::{ConvId, Seq};

    use super::*;

    fn job(id: u64, device: u64, created: u64) -> Job {
        Job {
            id,
            user: UserId(1),
            device: DeviceId(device),
            platform: Platform::Apns,
            token: "t".into(),
            conv: ConvId(1),
            seq: Seq(id),
            sender: UserId(2),
            preview: None,
            unread: 1,
            count: 1,
            created: UnixMillis(created),
        }
    }

    #[test]
    fn offers_split_new_known_and_busy() {
        let s = Sched::default();
        let o = s.offer(vec![job(1, 1, 0), job(2, 1, 0)], 10);
        assert_eq!(o.new.len(), 2);
        s.insert(o.new, Instant::now());
        let o = s.offer(
            vec![job(2, 1, 0), job(3, 1, 0), job(4, 1, 0), job(3, 1, 0)],
            3,
        );
        assert_eq!(o.known, vec![2, 3]);
        assert_eq!(o.busy, vec![4]);
        assert_eq!(o.new.len(), 1);
    }

    #[test]
    fn due_order_reschedule_finish_and_recent() {
        let s = Sched::default();
        let t0 = Instant::now();
        s.insert(
            vec![Queued {
                job: job(1, 1, 0),
                attempts: 0,
            }],
            t0,
        );
        s.insert(
            vec![Queued {
                job: job(2, 1, 0),
                attempts: 0,
            }],
            t0 + Duration::from_secs(5),
        );
        let q = s.pop_due(0, t0).expect("job 1 is due");
        assert_eq!(q.job.id, 1);
        assert_eq!(
            s.pop_due(0, t0).err(),
            Some(Some(t0 + Duration::from_secs(5)))
        );
        assert!(s.reschedule(Queued { attempts: 1, ..q }, t0 + Duration::from_secs(1)));
        let q = s
            .pop_due(0, t0 + Duration::from_secs(2))
            .expect("job 1 again");
        assert_eq!((q.job.id, q.attempts), (1, 1));
        s.finish(1);
        assert_eq!(s.len(), 1);
        assert_eq!(s.offer(vec![job(1, 1, 0)], 10).known, vec![1]);
        assert_eq!(s.pop_due(1, t0), Err(None));
    }

    #[test]
    fn cancel_drops_waiting_jobs_of_the_device_before_the_time() {
        let s = Sched::default();
        let t0 = Instant::now();
        let jobs = [
            job(1, 1, 100),
            job(2, 1, 200),
            job(3, 2, 100),
            job(4, 1, 50),
        ];
        s.insert(
            jobs.iter()
                .cloned()
                .map(|job| Queued { job, attempts: 0 })
                .collect(),
            t0,
        );
        let first = s.pop_due(0, t0).expect("due");
        assert_eq!(first.job.id, 1);
        let mut gone = s.cancel(UserId(1), DeviceId(1), UnixMillis(150));
        gone.sort_unstable();
        assert_eq!(
            gone,
            vec![4],
            "job 1 is in flight, job 2 is newer, job 3 another device"
        );
        assert_eq!(s.len(), 3);
        assert!(
            !s.reschedule(first, t0),
            "a job cancelled in flight is not retried"
        );
        assert_eq!(s.len(), 2);
    }
}
