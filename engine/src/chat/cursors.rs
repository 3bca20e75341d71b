//! Batched cursor writes. `recv` and `read` arrive far more often than they
//! need to be stored: the owner gathers the newest cursor per key and the
//! shard writes them in one request at a time, so while one write is in
//! flight the next batch collects.
//!
//! Where cursors live: a device's `recv` position is the `delivered` field
//! of its own row (user, device, conv); the user's `read` position is the
//! `read` field of the row of the reserved device id 0 (tokens for device 0
//! are refused at the upgrade).

use std::collections::HashMap;

use protocol::{ConvId, DeviceId, ReceiptKind, Seq, UserId};
use storage::{Cursor, Op};

/// The reserved device id whose cursor row holds the user's read position.
pub(crate) const USER_ROW: DeviceId = DeviceId(0);

/// Cursor updates held for the next write; past it, updates are dropped
/// (counted): a lost update costs a redelivery on the next `sync`, not data.
const DIRTY_MAX: usize = 65_536;

#[derive(Debug, Default)]
pub(crate) struct Cursors {
    dirty: HashMap<(UserId, DeviceId, ConvId), Cursor>,
    in_flight: bool,
    pub dropped: u64,
}

impl Cursors {
    /// Records a new position (the owner only sends advances).
    pub fn set(
        &mut self,
        user: UserId,
        device: DeviceId,
        conv: ConvId,
        kind: ReceiptKind,
        seq: Seq,
    ) {
        let key = match kind {
            ReceiptKind::Delivered => (user, device, conv),
            ReceiptKind::Read => (user, USER_ROW, conv),
        };
        if self.dirty.len() >= DIRTY_MAX && !self.dirty.contains_key(&key) {
            self.dropped += 1;
            return;
        }
        let c = self.dirty.entry(key).or_insert(Cursor {
            delivered: Seq::ZERO,
            read: Seq::ZERO,
        });
        match kind {
            ReceiptKind::Delivered => c.delivered = c.delivered.max(seq),
            ReceiptKind::Read => c.read = c.read.max(seq),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.dirty.is_empty()
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    pub fn set_in_flight(&mut self, on: bool) {
        self.in_flight = on;
    }

    /// The gathered cursors as write ops; the set is empty afterwards.
    pub fn take_ops(&mut self) -> Vec<Op> {
        self.dirty
            .drain()
            .map(|((user, device, conv), cursor)| Op::PutCursor {
                user,
                device,
                conv,
                cursor,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_highest_position_per_row() {
        let mut c = Cursors::default();
        let (u, d, conv) = (UserId(1), DeviceId(2), ConvId(3));
        c.set(u, d, conv, ReceiptKind::Delivered, Seq(5));
        c.set(u, d, conv, ReceiptKind::Delivered, Seq(4));
        c.set(u, DeviceId(9), conv, ReceiptKind::Read, Seq(3));
        let mut ops = c.take_ops();
        ops.sort_by_key(|op| match op {
            Op::PutCursor { device, .. } => device.0,
            _ => u64::MAX,
        });
        assert_eq!(
            ops,
            vec![
                Op::PutCursor {
                    user: u,
                    device: USER_ROW,
                    conv,
                    cursor: Cursor {
                        delivered: Seq::ZERO,
                        read: Seq(3)
                    }
                },
                Op::PutCursor {
                    user: u,
                    device: d,
                    conv,
                    cursor: Cursor {
                        delivered: Seq(5),
                        read: Seq::ZERO
                    }
                },
            ]
        );
        assert!(c.is_empty());
    }
}
