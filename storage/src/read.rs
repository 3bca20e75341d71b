//! Reads. Every read is a blocking call on the caller's thread: the engine
//! runs them on its storage reader threads, never on a shard.
//!
//! Reads see exactly the committed batches: a completed write is visible to
//! every read that starts after the completion.

use fjall::Keyspace;
use protocol::{ClientMsgId, ConvId, DeviceId, Message, Seq, UserId};

use crate::encryption::EncryptionKeys;
use crate::error::{Error, Result};
use crate::keys;
use crate::model::{Conversation, Cursor, Device, Membership, PushJob, SendOutcome};
use crate::records::{
    CursorRec, DeviceRec, MemberRec, SendRec, decode, decode_conv, decode_message, decode_push_job,
};
use crate::tables::{Table, Tables};

fn get(tables: &Tables, t: Table, key: &[u8]) -> Result<Option<fjall::Slice>> {
    tables.get(t).get(key).map_err(Error::fjall("get"))
}

fn bad_key(t: Table, key: &[u8]) -> Error {
    Error::Corrupt {
        keyspace: t.name(),
        key: key.to_vec(),
        reason: "unexpected key length".into(),
    }
}

/// The highest seq stored for `conv`, or `Seq::ZERO`.
pub(crate) fn last_seq(tables: &Tables, conv: ConvId) -> Result<Seq> {
    let Some(g) = tables.messages.prefix(keys::conv(conv)).next_back() else {
        return Ok(Seq::ZERO);
    };
    let key = g.key().map_err(Error::fjall("scan messages"))?;
    keys::u64_at(&key, 8)
        .map(Seq)
        .ok_or_else(|| bad_key(Table::Messages, &key))
}

pub(crate) fn conv(tables: &Tables, conv: ConvId) -> Result<Option<Conversation>> {
    let key = keys::conv(conv);
    let Some(v) = get(tables, Table::Convs, &key)? else {
        return Ok(None);
    };
    Ok(Some(decode_conv(Table::Convs.name(), &key, &v, conv)?))
}

fn message_at(key: &[u8], value: &[u8], enc: Option<&EncryptionKeys>) -> Result<Message> {
    let (Some(conv), Some(seq)) = (keys::u64_at(key, 0), keys::u64_at(key, 8)) else {
        return Err(bad_key(Table::Messages, key));
    };
    let at = (ConvId(conv), Seq(seq));
    decode_message(Table::Messages.name(), key, value, at, enc)
}

fn collect_messages(
    iter: impl Iterator<Item = fjall::Guard>,
    limit: usize,
    enc: Option<&EncryptionKeys>,
) -> Result<Vec<Message>> {
    let mut out = Vec::with_capacity(limit.min(256));
    for g in iter.take(limit) {
        let (k, v) = g.into_inner().map_err(Error::fjall("scan messages"))?;
        out.push(message_at(&k, &v, enc)?);
    }
    Ok(out)
}

pub(crate) fn message(
    tables: &Tables,
    enc: Option<&EncryptionKeys>,
    conv: ConvId,
    seq: Seq,
) -> Result<Option<Message>> {
    let key = keys::message(conv, seq);
    let Some(v) = get(tables, Table::Messages, &key)? else {
        return Ok(None);
    };
    message_at(&key, &v, enc).map(Some)
}

/// Up to `limit` messages with seq > `after`, ascending.
pub(crate) fn after(
    tables: &Tables,
    enc: Option<&EncryptionKeys>,
    conv: ConvId,
    after: Seq,
    limit: usize,
) -> Result<Vec<Message>> {
    let Some(from) = after.0.checked_add(1) else {
        return Ok(Vec::new());
    };
    let range = keys::message(conv, Seq(from))..=keys::message(conv, Seq(u64::MAX));
    collect_messages(tables.messages.range(range), limit, enc)
}

/// Up to `limit` messages with seq < `before`, the newest of them, ascending.
pub(crate) fn before(
    tables: &Tables,
    enc: Option<&EncryptionKeys>,
    conv: ConvId,
    before: Seq,
    limit: usize,
) -> Result<Vec<Message>> {
    if before.0 <= 1 {
        return Ok(Vec::new());
    }
    let range = keys::message(conv, Seq(1))..keys::message(conv, before);
    let mut out = collect_messages(tables.messages.range(range).rev(), limit, enc)?;
    out.reverse();
    Ok(out)
}

/// Up to `limit` of the newest messages, ascending.
pub(crate) fn latest(
    tables: &Tables,
    enc: Option<&EncryptionKeys>,
    conv: ConvId,
    limit: usize,
) -> Result<Vec<Message>> {
    let newest = tables.messages.prefix(keys::conv(conv)).rev();
    let mut out = collect_messages(newest, limit, enc)?;
    out.reverse();
    Ok(out)
}

/// Decodes every entry under `prefix` whose key is `prefix` + one u64.
fn scan_by_u64<T>(
    ks: &Keyspace,
    t: Table,
    prefix: &[u8],
    mut decode_one: impl FnMut(&[u8], &[u8]) -> Result<T>,
) -> Result<Vec<(u64, T)>> {
    let mut out = Vec::new();
    for g in ks.prefix(prefix) {
        let (k, v) = g.into_inner().map_err(Error::fjall("scan"))?;
        let id = keys::u64_at(&k, prefix.len()).ok_or_else(|| bad_key(t, &k))?;
        out.push((id, decode_one(&k, &v)?));
    }
    Ok(out)
}

fn membership(t: Table) -> impl FnMut(&[u8], &[u8]) -> Result<Membership> {
    move |k, v| Ok(decode::<MemberRec>(t.name(), k, v)?.into_model())
}

pub(crate) fn members(tables: &Tables, conv: ConvId) -> Result<Vec<(UserId, Membership)>> {
    let rows = scan_by_u64(
        &tables.members,
        Table::Members,
        &keys::conv(conv),
        membership(Table::Members),
    )?;
    Ok(rows.into_iter().map(|(u, m)| (UserId(u), m)).collect())
}

pub(crate) fn member(tables: &Tables, conv: ConvId, user: UserId) -> Result<Option<Membership>> {
    let key = keys::member(conv, user);
    let Some(v) = get(tables, Table::Members, &key)? else {
        return Ok(None);
    };
    Ok(Some(
        decode::<MemberRec>(Table::Members.name(), &key, &v)?.into_model(),
    ))
}

pub(crate) fn user_convs(tables: &Tables, user: UserId) -> Result<Vec<(ConvId, Membership)>> {
    let prefix = user.0.to_be_bytes();
    let rows = scan_by_u64(
        &tables.user_convs,
        Table::UserConvs,
        &prefix,
        membership(Table::UserConvs),
    )?;
    Ok(rows.into_iter().map(|(c, m)| (ConvId(c), m)).collect())
}

pub(crate) fn device(tables: &Tables, user: UserId, device: DeviceId) -> Result<Option<Device>> {
    let key = keys::device(user, device);
    let Some(v) = get(tables, Table::Devices, &key)? else {
        return Ok(None);
    };
    decode_device(&key, &v).map(Some)
}

fn decode_device(key: &[u8], v: &[u8]) -> Result<Device> {
    decode::<DeviceRec>(Table::Devices.name(), key, v)?
        .into_model()
        .ok_or_else(|| Error::Corrupt {
            keyspace: Table::Devices.name(),
            key: key.to_vec(),
            reason: "unknown push platform".into(),
        })
}

pub(crate) fn devices(tables: &Tables, user: UserId) -> Result<Vec<(DeviceId, Device)>> {
    let prefix = user.0.to_be_bytes();
    let rows = scan_by_u64(&tables.devices, Table::Devices, &prefix, decode_device)?;
    Ok(rows.into_iter().map(|(d, r)| (DeviceId(d), r)).collect())
}

pub(crate) fn cursor(
    tables: &Tables,
    user: UserId,
    device: DeviceId,
    conv: ConvId,
) -> Result<Option<Cursor>> {
    let key = keys::cursor(user, device, conv);
    let Some(v) = get(tables, Table::Cursors, &key)? else {
        return Ok(None);
    };
    Ok(Some(
        decode::<CursorRec>(Table::Cursors.name(), &key, &v)?.into_model(),
    ))
}

pub(crate) fn cursors(
    tables: &Tables,
    user: UserId,
    device: DeviceId,
) -> Result<Vec<(ConvId, Cursor)>> {
    let prefix = keys::device(user, device);
    let rows = scan_by_u64(&tables.cursors, Table::Cursors, &prefix, |k, v| {
        Ok(decode::<CursorRec>(Table::Cursors.name(), k, v)?.into_model())
    })?;
    Ok(rows.into_iter().map(|(c, r)| (ConvId(c), r)).collect())
}

/// `user`'s cursors in `conv`, one per device, by ascending device id, from
/// the `devices_max` lowest device ids that have any cursor. A skip scan: at
/// most two seeks per device (one lands on the device's first row, one on its
/// row for `conv` or past it), never a walk over the user's other
/// conversations.
pub(crate) fn conv_cursors(
    tables: &Tables,
    user: UserId,
    conv: ConvId,
    devices_max: usize,
) -> Result<Vec<(DeviceId, Cursor)>> {
    let end = keys::cursor(user, DeviceId(u64::MAX), ConvId(u64::MAX));
    // Each device's first row, then (if that is before `conv`) its row for
    // `conv` or the next device's first row.
    let mut from = keys::cursor(user, DeviceId(0), ConvId(0));
    let mut out = Vec::new();
    let mut seen = 0;
    let mut current = None;
    loop {
        let Some(g) = tables.cursors.range(from..=end).next() else {
            break;
        };
        let (k, v) = g.into_inner().map_err(Error::fjall("scan cursors"))?;
        let (Some(device), Some(c), 24) = (keys::u64_at(&k, 8), keys::u64_at(&k, 16), k.len())
        else {
            return Err(bad_key(Table::Cursors, &k));
        };
        if current != Some(device) {
            if seen == devices_max {
                break;
            }
            seen += 1;
            current = Some(device);
        }
        if c < conv.0 {
            from = keys::cursor(user, DeviceId(device), conv);
            continue;
        }
        if c == conv.0 {
            let cursor = decode::<CursorRec>(Table::Cursors.name(), &k, &v)?.into_model();
            out.push((DeviceId(device), cursor));
        }
        let Some(next) = device.checked_add(1) else {
            break;
        };
        from = keys::cursor(user, DeviceId(next), ConvId(0));
    }
    Ok(out)
}

pub(crate) fn dedupe(
    tables: &Tables,
    user: UserId,
    device: DeviceId,
    cmid: ClientMsgId,
) -> Result<Option<SendOutcome>> {
    let key = keys::dedupe(user, device, cmid);
    let Some(v) = get(tables, Table::Dedupe, &key)? else {
        return Ok(None);
    };
    Ok(Some(
        decode::<SendRec>(Table::Dedupe.name(), &key, &v)?.into_model(),
    ))
}

/// Up to `limit` outbox jobs with id ≥ `from`, in id order.
pub(crate) fn outbox(
    tables: &Tables,
    enc: Option<&EncryptionKeys>,
    from: u64,
    limit: usize,
) -> Result<Vec<(u64, PushJob)>> {
    let mut out = Vec::new();
    for g in tables.outbox.range(keys::outbox(from)..).take(limit) {
        let (k, v) = g.into_inner().map_err(Error::fjall("scan outbox"))?;
        let id = keys::u64_at(&k, 0).ok_or_else(|| bad_key(Table::Outbox, &k))?;
        let job = decode_push_job(Table::Outbox.name(), &k, &v, id, enc)?.ok_or_else(|| {
            Error::Corrupt {
                keyspace: Table::Outbox.name(),
                key: k.to_vec(),
                reason: "unknown push platform".into(),
            }
        })?;
        out.push((id, job));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Durability};
    use crate::model::Cursor;
    use crate::ops::Op;
    use crate::store::Store;
    use protocol::{ConvId, DeviceId, Seq, UserId};

    fn put(user: u64, device: u64, conv: u64, delivered: u64) -> Op {
        Op::PutCursor {
            user: UserId(user),
            device: DeviceId(device),
            conv: ConvId(conv),
            cursor: Cursor {
                delivered: Seq(delivered),
                read: Seq(0),
            },
        }
    }

    fn rows(got: &[(DeviceId, Cursor)]) -> Vec<(u64, u64)> {
        got.iter().map(|(d, c)| (d.0, c.delivered.0)).collect()
    }

    /// Devices with and without a row for the conversation, rows before and
    /// after it, neighbouring users and the largest device id: the skip scan
    /// finds exactly the conversation's rows of the user, and stops after
    /// `devices_max` devices.
    #[test]
    fn conv_cursors_skips_to_each_device_row() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store =
            Store::open(Config::new(dir.path()).durability(Durability::None)).expect("open store");
        let (user, conv) = (7, 50);
        store
            .write(vec![
                put(user - 1, 1, conv, 99),
                put(user, 0, conv, 1),
                put(user, 1, conv - 1, 99),
                put(user, 1, conv, 2),
                put(user, 1, conv + 1, 99),
                put(user, 2, conv + 1, 99),
                put(user, 3, conv - 1, 99),
                put(user, 4, conv, 4),
                put(user, u64::MAX, conv, 5),
                put(user + 1, 0, conv, 99),
            ])
            .expect("write cursors");
        let read = |max| {
            let got = store.conv_cursors(UserId(user), ConvId(conv), max);
            rows(&got.expect("read cursors"))
        };
        assert_eq!(read(usize::MAX), [(0, 1), (1, 2), (4, 4), (u64::MAX, 5)]);
        assert_eq!(read(5), [(0, 1), (1, 2), (4, 4)]);
        assert_eq!(read(2), [(0, 1), (1, 2)]);
        assert_eq!(read(0), []);
        let none = store.conv_cursors(UserId(user), ConvId(conv + 2), usize::MAX);
        assert_eq!(none.expect("read cursors"), []);
    }
}
