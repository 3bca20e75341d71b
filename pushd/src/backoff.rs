//! Retry delays: exponential backoff with full jitter, and `Retry-After`.

use std::time::Duration;

/// A provider's `Retry-After` is honoured up to this long.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

/// The delay before retry number `attempt` (0 for the first retry): uniform
/// in `[0, min(max, base·2^attempt)]` ("full jitter") with `rand01` in
/// `[0, 1)` choosing the point, then at least `retry_after` (capped at
/// [`RETRY_AFTER_MAX`]) when the provider gave one.
pub fn delay(
    attempt: u32,
    base: Duration,
    max: Duration,
    retry_after: Option<Duration>,
    rand01: f64,
) -> Duration {
    // 2^31 · base saturates Duration long before u32 shifts overflow.
    let cap = base.saturating_mul(1u32 << attempt.min(31)).min(max);
    let r = if rand01.is_nan() {
        0.0
    } else {
        rand01.clamp(0.0, 1.0)
    };
    // `mul_f64` panics where rounding lands past Duration::MAX; this saturates.
    let jittered = Duration::try_from_secs_f64(cap.as_secs_f64() * r)
        .unwrap_or(cap)
        .min(cap);
    match retry_after {
        Some(ra) => jittered.max(ra.min(RETRY_AFTER_MAX)),
        None => jittered,
    }
}

/// A uniformly distributed number in `[0, 1)` from the OS's random source
/// (falling back to the clock's nanoseconds should that fail).
pub fn jitter() -> f64 {
    let bits = getrandom::u64().unwrap_or_else(|_| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        u64::from(nanos).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    });
    // The top 53 bits, scaled: exactly representable, always below 1.
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(300);

    #[test]
    fn delays_stay_within_the_doubling_cap() {
        for attempt in 0..20 {
            let cap = (BASE * 2u32.pow(attempt)).min(MAX);
            assert_eq!(delay(attempt, BASE, MAX, None, 0.0), Duration::ZERO);
            let top = delay(attempt, BASE, MAX, None, 0.999_999);
            assert!(top <= cap && top >= cap.mul_f64(0.99), "{attempt}: {top:?}");
            assert!(delay(attempt, BASE, MAX, None, 0.5) <= cap);
        }
        assert_eq!(delay(0, BASE, MAX, None, 1.0), BASE);
        assert_eq!(delay(1, BASE, MAX, None, 0.5), BASE);
    }

    #[test]
    fn the_cap_is_monotone_and_ends_at_max() {
        let mut last = Duration::ZERO;
        for attempt in 0..64 {
            let d = delay(attempt, BASE, MAX, None, 1.0);
            assert!(d >= last && d <= MAX);
            last = d;
        }
        assert_eq!(last, MAX);
    }

    #[test]
    fn huge_attempts_do_not_overflow() {
        assert_eq!(delay(1000, BASE, MAX, None, 1.0), MAX);
        assert_eq!(
            delay(u32::MAX, Duration::MAX, Duration::MAX, None, 1.0),
            Duration::MAX
        );
        assert!(delay(1000, BASE, MAX, None, 0.25) <= MAX);
    }

    #[test]
    fn odd_random_values_are_clamped() {
        assert_eq!(delay(3, BASE, MAX, None, f64::NAN), Duration::ZERO);
        assert_eq!(delay(3, BASE, MAX, None, -1.0), Duration::ZERO);
        assert_eq!(delay(3, BASE, MAX, None, 7.0), BASE * 8);
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let ra = Some(Duration::from_secs(30));
        assert_eq!(delay(0, BASE, MAX, ra, 0.5), Duration::from_secs(30));
        // A longer jittered delay stands.
        assert_eq!(delay(20, BASE, MAX, Some(Duration::from_secs(1)), 1.0), MAX);
        // Above backoff_max, below the cap: honoured.
        let long = Some(Duration::from_secs(1200));
        assert_eq!(delay(0, BASE, MAX, long, 0.0), Duration::from_secs(1200));
        let absurd = Some(Duration::from_secs(86_400 * 365));
        assert_eq!(delay(0, BASE, MAX, absurd, 0.0), RETRY_AFTER_MAX);
    }

    #[test]
    fn jitter_is_in_the_unit_interval_and_varies() {
        let draws: Vec<f64> = (0..100).map(|_| jitter()).collect();
        assert!(draws.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(draws.windows(2).any(|w| w[0].to_bits() != w[1].to_bits()));
    }
}
