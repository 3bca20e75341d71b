//! From the members' arrival times to fan-out latencies, and the checks
//! that every member got what it should.

use crate::stats::Latencies;

use super::member::MemberReport;

/// `got` (a member's live group messages, (seq, arrival)) must be exactly
/// seqs base+1 ..= base+count, in order.
pub fn check_member(got: &[(u64, u64)], base: u64, count: u64) -> Result<(), String> {
    for (i, &(seq, _)) in got.iter().enumerate() {
        let want = base + 1 + i as u64;
        if seq != want {
            return Err(format!(
                "group message {} received was seq {seq}, expected seq {want} ({} received \
                 in all, expected seqs {}..={})",
                i + 1,
                got.len(),
                base + 1,
                base + count
            ));
        }
    }
    if got.len() as u64 == count {
        Ok(())
    } else {
        Err(format!(
            "received {} group messages, expected {count}",
            got.len()
        ))
    }
}

/// Latencies of the group's messages over the online members.
#[derive(Debug)]
pub struct FanOut {
    /// Per message: scheduled send → the last member's delivery.
    pub last: Latencies,
    /// Per message: scheduled send → the median member's delivery.
    pub median: Latencies,
    /// Every delivery to every member.
    pub each: Latencies,
    pub deliveries: u64,
    /// The last delivery of all, ns since the epoch.
    pub last_delivery_ns: u64,
    /// The first message's scheduled send, ns since the epoch.
    pub first_send_ns: u64,
}

/// `sent_ns[k]`: when message k (seq base+1+k) was due; `members`: each
/// member's deliveries, checked by [`check_member`] (one per message, in
/// order).
pub fn fan_out(sent_ns: &[u64], members: &[&[(u64, u64)]]) -> FanOut {
    let mut fan = FanOut {
        last: Latencies::new(),
        median: Latencies::new(),
        each: Latencies::new(),
        deliveries: 0,
        last_delivery_ns: 0,
        first_send_ns: sent_ns.first().copied().unwrap_or(0),
    };
    let mut arrivals = Vec::with_capacity(members.len());
    for (k, &sent) in sent_ns.iter().enumerate() {
        arrivals.clear();
        arrivals.extend(members.iter().map(|got| got[k].1));
        arrivals.sort_unstable();
        let Some(&last) = arrivals.last() else {
            continue;
        };
        for &at in &arrivals {
            fan.each.record_nanos(at.saturating_sub(sent));
        }
        // Nearest rank: the lower middle of an even count.
        let median = arrivals[(arrivals.len() - 1) / 2];
        fan.last.record_nanos(last.saturating_sub(sent));
        fan.median.record_nanos(median.saturating_sub(sent));
        fan.deliveries += arrivals.len() as u64;
        fan.last_delivery_ns = fan.last_delivery_ns.max(last);
    }
    fan
}

/// The members' `sync` catch-up against what the group contract says:
/// every event from the one that added the member (`joined`) to `base`.
#[derive(Debug, Default)]
pub struct CatchUp {
    /// Catch-up messages, all members.
    pub msgs: u64,
    /// Members whose catch-up differed.
    pub mismatched: usize,
    /// The first of them.
    pub example: Option<String>,
}

pub fn catch_up(members: &[MemberReport], base: u64) -> CatchUp {
    let mut out = CatchUp::default();
    for m in members {
        out.msgs += m.caught_up;
        let expected = (m.joined, base);
        let contiguous = m.caught_up == base + 1 - m.joined.min(base + 1);
        if m.catch_up_seqs != Some(expected) || !contiguous {
            out.mismatched += 1;
            out.example.get_or_insert_with(|| {
                format!(
                    "user {} (joined at seq {}) caught up on {} messages, seqs {:?}; expected \
                     {}..={base}",
                    m.user, m.joined, m.caught_up, m.catch_up_seqs, m.joined
                )
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::UserId;

    #[test]
    fn member_streams() {
        let good = [(11, 5), (12, 6), (13, 7)];
        assert!(check_member(&good, 10, 3).is_ok());
        assert!(check_member(&good, 10, 4).is_err(), "one missing");
        assert!(check_member(&good[..2], 10, 3).is_err());
        assert!(check_member(&good, 9, 3).is_err(), "wrong base");
        let dup = [(11, 5), (11, 6), (12, 7)];
        assert!(check_member(&dup, 10, 3).is_err());
        let swapped = [(12, 5), (11, 6)];
        let err = check_member(&swapped, 10, 2).unwrap_err();
        assert!(err.contains("was seq 12, expected seq 11"), "{err}");
        let extra = [(11, 5), (12, 6)];
        assert!(check_member(&extra, 10, 1).is_err());
        assert!(check_member(&[], 10, 0).is_ok());
    }

    #[test]
    fn latencies_over_members() {
        // Two messages due at 1,000 and 2,000 ns, four members.
        let sent = [1_000_000, 2_000_000];
        let a = [(1, 1_010_000), (2, 2_050_000)];
        let b = [(1, 1_020_000), (2, 2_060_000)];
        let c = [(1, 1_030_000), (2, 2_070_000)];
        let d = [(1, 1_900_000), (2, 2_080_000)];
        let members: Vec<&[(u64, u64)]> = vec![&a, &b, &d, &c];
        let fan = fan_out(&sent, &members);
        assert_eq!(fan.deliveries, 8);
        assert_eq!(fan.each.count(), 8);
        assert_eq!(fan.last.count(), 2);
        assert_eq!(fan.last_delivery_ns, 2_080_000);
        assert_eq!(fan.first_send_ns, 1_000_000);
        let last = fan.last.summary();
        // 80 µs and 900 µs; p50 is the lower.
        assert!((last.p50 - 80.0).abs() < 0.5, "{last:?}");
        assert!((last.max - 900.0).abs() < 1.0, "{last:?}");
        let median = fan.median.summary();
        // The second arrival of each: 20 µs and 60 µs.
        assert!((median.p50 - 20.0).abs() < 0.5, "{median:?}");
        assert!((median.max - 60.0).abs() < 0.5, "{median:?}");
    }

    fn report(joined: u64, caught_up: u64, seqs: Option<(u64, u64)>) -> MemberReport {
        MemberReport {
            user: UserId(5),
            joined,
            caught_up,
            catch_up_seqs: seqs,
            got: Vec::new(),
            strays: 0,
            first_stray: None,
        }
    }

    #[test]
    fn catch_up_against_joined() {
        let good = [report(1, 3, Some((1, 3))), report(3, 1, Some((3, 3)))];
        let c = catch_up(&good, 3);
        assert_eq!((c.msgs, c.mismatched), (4, 0));
        let bad = [report(2, 3, Some((1, 3))), report(2, 0, None)];
        let c = catch_up(&bad, 3);
        assert_eq!(c.mismatched, 2);
        assert!(c.example.unwrap().contains("expected 2..=3"));
    }
}
