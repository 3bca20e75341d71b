//! A circuit breaker per provider endpoint.
//!
//! Closed, it lets everything through and counts consecutive endpoint
//! failures; at the threshold it opens for the cooldown and refuses
//! everything. Then one probe goes through (half-open): its success closes
//! the circuit, its failure re-opens it with the cooldown doubled (up to
//! [`COOLDOWN_MAX`]). Times are passed in, so every transition is testable.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::Config;

/// A failed probe doubles the cooldown up to this (or the configured
/// cooldown, if that is longer).
pub const COOLDOWN_MAX: Duration = Duration::from_secs(60);

/// A circuit's state, as [`Circuit::state`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Requests flow.
    Closed,
    /// Requests are refused until `until`, when a probe is let through.
    Open { until: Instant },
    /// One probe is in flight.
    HalfOpen,
}

impl State {
    /// The state as a metrics gauge: 0 closed, 1 open, 2 half-open.
    pub fn as_gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::Open { .. } => 1,
            State::HalfOpen => 2,
        }
    }
}

/// What [`Circuit::try_acquire`] allows.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permit {
    /// Send; the circuit is closed.
    Allowed,
    /// Send as the one half-open probe; report the result.
    Probe,
    /// Do not send to this endpoint before `retry_at`.
    Rejected { retry_at: Instant },
}

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_since: Instant },
}

#[derive(Debug)]
struct Breaker {
    inner: Inner,
    /// The current cooldown: the configured one, doubled per failed probe.
    cooldown: Duration,
}

/// A circuit breaker for one endpoint; `Sync`, shared by the senders.
#[derive(Debug)]
pub struct Circuit {
    threshold: u32,
    base_cooldown: Duration,
    breaker: Mutex<Breaker>,
}

impl Circuit {
    /// A closed circuit that opens after `failures` consecutive failures
    /// (at least 1) for `cooldown`.
    pub fn new(failures: u32, cooldown: Duration) -> Circuit {
        Circuit {
            threshold: failures.max(1),
            base_cooldown: cooldown,
            breaker: Mutex::new(Breaker {
                inner: Inner::Closed { failures: 0 },
                cooldown,
            }),
        }
    }

    /// A circuit with `circuit_failures` and `circuit_cooldown` from `cfg`.
    pub fn from_config(cfg: &Config) -> Circuit {
        Circuit::new(cfg.circuit_failures, cfg.circuit_cooldown)
    }

    fn lock(&self) -> MutexGuard<'_, Breaker> {
        // Each transition is one assignment: a poisoned lock holds a valid state.
        self.breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a request may go to the endpoint at `now`. An open circuit
    /// past its cooldown turns half-open and lets one probe through; a probe
    /// that has not reported within the cooldown is presumed lost and
    /// another is allowed.
    pub fn try_acquire(&self, now: Instant) -> Permit {
        let mut b = self.lock();
        let cooldown = b.cooldown;
        match b.inner {
            Inner::Closed { .. } => Permit::Allowed,
            Inner::Open { until } if now < until => Permit::Rejected { retry_at: until },
            Inner::HalfOpen { probe_since } if now < probe_since + cooldown => Permit::Rejected {
                retry_at: probe_since + cooldown,
            },
            Inner::Open { .. } | Inner::HalfOpen { .. } => {
                b.inner = Inner::HalfOpen { probe_since: now };
                Permit::Probe
            }
        }
    }

    /// The endpoint answered (any answer that is not its own fault): closes
    /// the circuit and resets the failure count and cooldown.
    pub fn on_success(&self, _now: Instant) {
        let mut b = self.lock();
        b.inner = Inner::Closed { failures: 0 };
        b.cooldown = self.base_cooldown;
    }

    /// The endpoint failed (5xx, timeout, connection error). Closed: counts,
    /// and opens at the threshold. Half-open: the probe failed; re-opens
    /// with the cooldown doubled. Open: already counted; ignored.
    pub fn on_failure(&self, now: Instant) {
        let mut b = self.lock();
        match b.inner {
            Inner::Closed { failures } => {
                let failures = failures.saturating_add(1);
                b.inner = if failures >= self.threshold {
                    Inner::Open {
                        until: now + b.cooldown,
                    }
                } else {
                    Inner::Closed { failures }
                };
            }
            Inner::HalfOpen { .. } => {
                b.cooldown = (b.cooldown * 2).min(COOLDOWN_MAX.max(self.base_cooldown));
                b.inner = Inner::Open {
                    until: now + b.cooldown,
                };
            }
            Inner::Open { .. } => {}
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        match self.lock().inner {
            Inner::Closed { .. } => State::Closed,
            Inner::Open { until } => State::Open { until },
            Inner::HalfOpen { .. } => State::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOL: Duration = Duration::from_secs(5);

    fn opened(t: Instant) -> Circuit {
        let c = Circuit::new(3, COOL);
        for _ in 0..3 {
            c.on_failure(t);
        }
        c
    }

    #[test]
    fn closed_counts_consecutive_failures_and_opens_at_the_threshold() {
        let t = Instant::now();
        let c = Circuit::new(3, COOL);
        assert_eq!(c.try_acquire(t), Permit::Allowed);
        c.on_failure(t);
        c.on_failure(t);
        c.on_success(t); // resets the count
        c.on_failure(t);
        c.on_failure(t);
        assert_eq!(c.state(), State::Closed);
        assert_eq!(c.try_acquire(t), Permit::Allowed);
        c.on_failure(t);
        assert_eq!(c.state(), State::Open { until: t + COOL });
        assert_eq!(c.state().as_gauge(), 1);
    }

    #[test]
    fn open_refuses_until_the_cooldown_then_allows_one_probe() {
        let t = Instant::now();
        let c = opened(t);
        assert_eq!(
            c.try_acquire(t + Duration::from_secs(1)),
            Permit::Rejected { retry_at: t + COOL }
        );
        c.on_failure(t + Duration::from_secs(1)); // a late failure: ignored
        assert_eq!(c.state(), State::Open { until: t + COOL });
        assert_eq!(c.try_acquire(t + COOL), Permit::Probe);
        assert_eq!(c.state(), State::HalfOpen);
        assert_eq!(c.state().as_gauge(), 2);
        // Only one probe at a time.
        assert_eq!(
            c.try_acquire(t + COOL + Duration::from_secs(1)),
            Permit::Rejected {
                retry_at: t + COOL * 2
            }
        );
    }

    #[test]
    fn a_successful_probe_closes_and_resets() {
        let t = Instant::now();
        let c = opened(t);
        assert_eq!(c.try_acquire(t + COOL), Permit::Probe);
        c.on_failure(t + COOL); // the probe failed: cooldown 10 s
        assert_eq!(c.try_acquire(t + COOL * 3), Permit::Probe);
        c.on_success(t + COOL * 3);
        assert_eq!(c.state(), State::Closed);
        assert_eq!(c.state().as_gauge(), 0);
        assert_eq!(c.try_acquire(t + COOL * 3), Permit::Allowed);
        // The cooldown is back to the configured one.
        let t2 = t + COOL * 4;
        for _ in 0..3 {
            c.on_failure(t2);
        }
        assert_eq!(c.state(), State::Open { until: t2 + COOL });
    }

    #[test]
    fn failed_probes_double_the_cooldown_up_to_the_cap() {
        let t = Instant::now();
        let c = opened(t);
        let mut now = t + COOL;
        let mut expected = COOL;
        for _ in 0..8 {
            assert_eq!(c.try_acquire(now), Permit::Probe);
            c.on_failure(now);
            expected = (expected * 2).min(COOLDOWN_MAX);
            assert_eq!(
                c.state(),
                State::Open {
                    until: now + expected
                }
            );
            now += expected;
        }
        assert_eq!(expected, COOLDOWN_MAX);
    }

    #[test]
    fn a_long_configured_cooldown_is_not_cut_by_the_cap() {
        let t = Instant::now();
        let long = Duration::from_secs(120);
        let c = Circuit::new(1, long);
        c.on_failure(t);
        assert_eq!(c.try_acquire(t + long), Permit::Probe);
        c.on_failure(t + long);
        assert_eq!(
            c.state(),
            State::Open {
                until: t + long * 2
            }
        );
    }

    #[test]
    fn a_lost_probe_does_not_wedge_the_circuit() {
        let t = Instant::now();
        let c = opened(t);
        assert_eq!(c.try_acquire(t + COOL), Permit::Probe);
        // The probe never reports; after another cooldown a new one goes.
        assert!(matches!(
            c.try_acquire(t + COOL + COOL / 2),
            Permit::Rejected { .. }
        ));
        assert_eq!(c.try_acquire(t + COOL * 2), Permit::Probe);
        assert_eq!(c.state(), State::HalfOpen);
    }

    #[test]
    fn a_zero_threshold_means_one_and_config_is_used() {
        let t = Instant::now();
        let c = Circuit::new(0, COOL);
        c.on_failure(t);
        assert!(matches!(c.state(), State::Open { .. }));
        let cfg = Config::default();
        let c = Circuit::from_config(&cfg);
        for _ in 1..cfg.circuit_failures {
            c.on_failure(t);
        }
        assert_eq!(c.state(), State::Closed);
        c.on_failure(t);
        assert_eq!(
            c.state(),
            State::Open {
                until: t + cfg.circuit_cooldown
            }
        );
    }
}
