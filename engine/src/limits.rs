//! Abuse limits: token buckets for sends, and connections per IP address.
//!
//! A [`Bucket`] lives with what it limits (a session; a user on its home
//! shard), so it needs no lock. The per-IP table is the one piece shared by
//! all shards (`SO_REUSEPORT` spreads one address's connections over them);
//! it is touched once when a connection opens and once when it closes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A rate: `per_second` tokens refilled, at most `burst` held. A rate of 0
/// is no limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

impl Rate {
    pub fn is_unlimited(self) -> bool {
        self.per_second <= 0.0
    }
}

/// A token bucket, full when new.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bucket {
    /// Tokens spent below the burst (0: full). Kept as "spent" so a new
    /// bucket needs no rate to start full.
    spent: f64,
    last: Option<Instant>,
}

impl Bucket {
    /// Takes one token at `now`; `false` if the bucket is empty.
    pub fn take(&mut self, now: Instant, rate: Rate) -> bool {
        if rate.is_unlimited() {
            return true;
        }
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * rate.per_second;
            self.spent = (self.spent - refill).max(0.0);
        }
        self.last = Some(now);
        if self.spent + 1.0 > rate.burst.max(1.0) {
            return false;
        }
        self.spent += 1.0;
        true
    }
}

/// Open connections per client address, across every shard.
#[derive(Debug)]
pub struct IpLimits {
    /// 0: no limit.
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`IpLimits`]; gives it back when dropped.
#[derive(Debug)]
pub struct IpSlot {
    limits: Arc<IpLimits>,
    ip: IpAddr,
}

impl IpLimits {
    pub fn new(max: usize) -> Arc<IpLimits> {
        Arc::new(IpLimits {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a new connection from `ip`, or `None` at the limit.
    pub fn admit(self: &Arc<IpLimits>, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(ip).or_default();
        if self.max > 0 && *n >= self.max {
            if *n == 0 {
                open.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(IpSlot {
            limits: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip`.
    pub fn open(&self, ip: IpAddr) -> usize {
        let open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self
            .limits
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const TEN: Rate = Rate {
        per_second: 10.0,
        burst: 5.0,
    };

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let mut b = Bucket::default();
        let t0 = Instant::now();
        assert_eq!((0..8).filter(|_| b.take(t0, TEN)).count(), 5);
        assert!(!b.take(t0 + Duration::from_millis(50), TEN), "half a token");
        assert!(b.take(t0 + Duration::from_millis(100), TEN));
        assert!(!b.take(t0 + Duration::from_millis(100), TEN));
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..8).filter(|_| b.take(later, TEN)).count(), 5);
    }

    #[test]
    fn a_zero_rate_is_no_limit() {
        let mut b = Bucket::default();
        let off = Rate {
            per_second: 0.0,
            burst: 0.0,
        };
        assert!((0..10_000).all(|_| b.take(Instant::now(), off)));
    }

    #[test]
    fn ip_slots_count_per_address_and_return_on_drop() {
        let limits = IpLimits::new(2);
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 3].into();
        let s1 = limits.admit(a).expect("first");
        let s2 = limits.admit(a).expect("second");
        assert!(limits.admit(a).is_none(), "third from the same address");
        let _other = limits.admit(b).expect("another address");
        drop(s1);
        let _s3 = limits.admit(a).expect("room again");
        drop(s2);
        assert_eq!(limits.open(a), 1);
        assert!(IpLimits::new(0).admit(a).is_some(), "0 is no limit");
    }
}
