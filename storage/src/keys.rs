//! Key layouts, one function per keyspace. All integers are big-endian so
//! that byte order is numeric order and prefix scans walk one owner.

use protocol::{ClientMsgId, ConvId, DeviceId, Seq, UserId};

pub(crate) type Key8 = [u8; 8];
pub(crate) type Key16 = [u8; 16];
pub(crate) type Key24 = [u8; 24];

fn cat2(a: u64, b: u64) -> Key16 {
    let mut k = [0; 16];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..].copy_from_slice(&b.to_be_bytes());
    k
}

fn cat3(a: u64, b: u64, c: u64) -> Key24 {
    let mut k = [0; 24];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..16].copy_from_slice(&b.to_be_bytes());
    k[16..].copy_from_slice(&c.to_be_bytes());
    k
}

/// Reads the big-endian u64 at `at` in a key of known layout.
pub(crate) fn u64_at(key: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = key.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// `convs`: conv.
pub(crate) fn conv(conv: ConvId) -> Key8 {
    conv.0.to_be_bytes()
}

/// `messages`: conv, seq.
pub(crate) fn message(conv: ConvId, seq: Seq) -> Key16 {
    cat2(conv.0, seq.0)
}

/// `members`: conv, user.
pub(crate) fn member(conv: ConvId, user: UserId) -> Key16 {
    cat2(conv.0, user.0)
}

/// `user_convs`: user, conv.
pub(crate) fn user_conv(user: UserId, conv: ConvId) -> Key16 {
    cat2(user.0, conv.0)
}

/// `devices`: user, device.
pub(crate) fn device(user: UserId, device: DeviceId) -> Key16 {
    cat2(user.0, device.0)
}

/// `cursors`: user, device, conv.
pub(crate) fn cursor(user: UserId, device: DeviceId, conv: ConvId) -> Key24 {
    cat3(user.0, device.0, conv.0)
}

/// `dedupe`: user, device, client message id.
pub(crate) fn dedupe(user: UserId, device: DeviceId, cmid: ClientMsgId) -> Key24 {
    cat3(user.0, device.0, cmid.0)
}

/// `outbox`: job id.
pub(crate) fn outbox(id: u64) -> Key8 {
    id.to_be_bytes()
}
