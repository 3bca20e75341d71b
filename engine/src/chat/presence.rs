//! Presence of the users homed on a shard: who watches whom, and when each
//! was last seen. Online means "has a connection on its home shard", which
//! the hub knows from its session table; this keeps the rest.

use std::collections::HashMap;

use protocol::{UnixMillis, UserId};

use super::Watcher;

/// Connections watching one user; past it, new watchers get the current
/// status once but no updates.
const WATCHERS_PER_USER_MAX: usize = 10_000;

/// Users whose last-seen time is remembered (in memory: it restarts empty).
/// Past it the table is cleared, and those users report `null` until they
/// are seen again.
const LAST_SEEN_MAX: usize = 1 << 20;

#[derive(Debug, Default)]
pub(crate) struct Presence {
    watchers: HashMap<UserId, Vec<Watcher>>,
    last_seen: HashMap<UserId, UnixMillis>,
}

impl Presence {
    pub fn watchers(&self, user: UserId) -> &[Watcher] {
        self.watchers.get(&user).map_or(&[], Vec::as_slice)
    }

    /// Adds a watcher; `false` if `user` already has the most it may.
    pub fn watch(&mut self, user: UserId, w: Watcher) -> bool {
        let list = self.watchers.entry(user).or_default();
        if list.contains(&w) {
            return true;
        }
        if list.len() >= WATCHERS_PER_USER_MAX {
            return false;
        }
        list.push(w);
        true
    }

    pub fn unwatch(&mut self, user: UserId, w: Watcher) {
        if let Some(list) = self.watchers.get_mut(&user) {
            list.retain(|x| *x != w);
            if list.is_empty() {
                self.watchers.remove(&user);
            }
        }
    }

    pub fn last_seen(&self, user: UserId) -> Option<UnixMillis> {
        self.last_seen.get(&user).copied()
    }

    pub fn went_offline(&mut self, user: UserId, at: UnixMillis) {
        if self.last_seen.len() >= LAST_SEEN_MAX {
            self.last_seen.clear();
        }
        self.last_seen.insert(user, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchers_are_a_set_and_unwatch_forgets_them() {
        let mut p = Presence::default();
        let (u, w) = (UserId(1), Watcher { shard: 0, conn: 7 });
        assert!(p.watch(u, w));
        assert!(p.watch(u, w));
        assert_eq!(p.watchers(u), &[w]);
        p.unwatch(u, w);
        assert!(p.watchers(u).is_empty());
        assert_eq!(p.last_seen(u), None);
        p.went_offline(u, UnixMillis(5));
        assert_eq!(p.last_seen(u), Some(UnixMillis(5)));
    }
}
