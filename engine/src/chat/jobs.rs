//! What storage threads do for a shard: the reads (closures run on a
//! `store_io::ReadPool` thread) and the events that bring results back.

use std::collections::{HashMap, HashSet};

use protocol::{
    ClientMsgId, ConvId, ConvInfo, ConvKind, DeviceId, ErrorCode, Member, MemberReceipts, Message,
    Page, RequestId, Seq, ServerMsg, UserId,
};
use storage::{Completion, Membership, SendOutcome, Store};

use super::cursors::USER_ROW;
use super::hub::error;
use crate::catchup::ConvStart;
use crate::conv::{Loaded, RELAY_MEMBERS_MAX};

/// Devices per member whose `recv` positions a `receipts` reply looks at:
/// the lowest ids that have any cursor (the user row of `read` is one more).
/// The scan costs at most two seeks per device, so a reply costs at most
/// `RELAY_MEMBERS_MAX * 2 * (RECEIPT_DEVICES_MAX + 1)` (33,280) seeks
/// however many conversations its members are in.
const RECEIPT_DEVICES_MAX: usize = 64;

/// Results from storage threads, through the shard's inbox.
#[derive(Debug)]
pub(crate) enum StoreEvent {
    /// Users' devices with push tokens (the push device cache).
    PushDevices {
        devices: super::notify::LoadedDevices,
    },
    Written {
        ticket: u64,
        ok: bool,
    },
    Loaded {
        conv: ConvId,
        loaded: storage::Result<Option<Loaded>>,
    },
    Looked {
        conv: ConvId,
        key: (UserId, DeviceId, ClientMsgId),
        found: storage::Result<Option<SendOutcome>>,
    },
    /// A session's conversation list for its catch-up `gen`.
    Convs {
        conn: u64,
        generation: u32,
        list: storage::Result<Vec<ConvStart>>,
    },
    /// A page of a session's catch-up.
    Page {
        conn: u64,
        generation: u32,
        conv: ConvId,
        msgs: storage::Result<Vec<Message>>,
    },
    /// A finished reply for a session (`history` or an error).
    Reply {
        conn: u64,
        msg: ServerMsg,
    },
    /// How many groups each user is in (for a group operation's limit).
    Counted {
        conv: ConvId,
        order: u64,
        counts: storage::Result<HashMap<UserId, usize>>,
    },
    /// Which of the asked users share a conversation with the session's user.
    Watchable {
        conn: u64,
        rid: RequestId,
        users: storage::Result<Vec<UserId>>,
    },
}

impl From<Completion> for StoreEvent {
    fn from(c: Completion) -> StoreEvent {
        if let Err(e) = &c.result {
            tracing::error!(cause = %e, ticket = c.ticket, "store write failed");
        }
        StoreEvent::Written {
            ticket: c.ticket,
            ok: c.result.is_ok(),
        }
    }
}

/// A conversation as its owner needs it; `None` if it does not exist.
pub(crate) fn load_conv(store: &Store, conv: ConvId) -> storage::Result<Option<Loaded>> {
    let Some(meta) = store.conv(conv)? else {
        return Ok(None);
    };
    Ok(Some(Loaded {
        meta,
        members: store.members(conv)?,
        last_seq: store.last_seq(conv)?,
    }))
}

/// The user's conversations with this device's cursors, for a catch-up.
pub(crate) fn conv_starts(
    store: &Store,
    user: UserId,
    device: DeviceId,
) -> storage::Result<Vec<ConvStart>> {
    let delivered: HashMap<ConvId, Seq> = store
        .cursors(user, device)?
        .into_iter()
        .map(|(c, cur)| (c, cur.delivered))
        .collect();
    let read: HashMap<ConvId, Seq> = store
        .cursors(user, USER_ROW)?
        .into_iter()
        .map(|(c, cur)| (c, cur.read))
        .collect();
    let mut starts = Vec::new();
    for (conv, m, last_seq) in store.user_convs(user)? {
        starts.push(ConvStart {
            conv,
            kind: if conv.is_group() {
                ConvKind::Group
            } else {
                ConvKind::Direct
            },
            last_seq,
            delivered: delivered.get(&conv).copied().unwrap_or(Seq::ZERO),
            read: read.get(&conv).copied().unwrap_or(Seq::ZERO),
            // The machine's `joined` is the last seq the member is not owed.
            joined: visible_after(store, conv, m.joined)?,
        });
    }
    Ok(starts)
}

/// One page of a catch-up (or of a gap in live delivery) for `user`: the
/// messages after `after` that the user may see. None once it is no member;
/// a member who left and was added again gets nothing from its time out.
pub(crate) fn catchup_page(
    store: &Store,
    user: UserId,
    conv: ConvId,
    after: Seq,
    limit: usize,
) -> storage::Result<Vec<Message>> {
    let Some(member) = store.member(conv, user)? else {
        return Ok(Vec::new());
    };
    let floor = visible_after(store, conv, member.joined)?;
    store.messages_after(conv, after.max(floor), limit)
}

/// The last seq a member who joined `conv` at `joined` may not see: a member
/// sees the event that added it and everything after (PROTOCOL.md), or
/// everything in a group whose history is visible; a direct conversation's
/// members (joined 0) see everything.
fn visible_after(store: &Store, conv: ConvId, joined: Seq) -> storage::Result<Seq> {
    if joined == Seq::ZERO || !conv.is_group() {
        return Ok(Seq::ZERO);
    }
    let visible = store.conv(conv)?.is_some_and(|c| c.history_visible);
    Ok(if visible {
        Seq::ZERO
    } else {
        Seq(joined.0 - 1)
    })
}

/// One `fetch`: membership check, then a page of what the member may see
/// (from the event that added it on), cut at `HISTORY_PAGE_BYTES_MAX`.
pub(crate) fn fetch(
    store: &Store,
    user: UserId,
    rid: RequestId,
    conv: ConvId,
    from: Page,
    limit: u16,
) -> ServerMsg {
    match fetch_page(store, user, conv, from, usize::from(limit)) {
        Ok(Ok((msgs, more))) => ServerMsg::History {
            rid,
            conv,
            msgs,
            more,
        },
        Ok(Err((code, text))) => error(Some(rid), None, code, text),
        Err(e) => {
            tracing::error!(cause = %e, conv = conv.0, "history read failed");
            error(Some(rid), None, ErrorCode::Internal, "history read failed")
        }
    }
}

type Refusal = (ErrorCode, &'static str);

/// `user`'s membership of `conv`, or why a member's request is refused:
/// `not_found` if `conv` does not exist, `forbidden` if `user` is not in it.
fn membership(
    store: &Store,
    user: UserId,
    conv: ConvId,
) -> storage::Result<Result<Membership, Refusal>> {
    if let Some(member) = store.member(conv, user)? {
        return Ok(Ok(member));
    }
    if store.conv(conv)?.is_none() {
        return Ok(Err((ErrorCode::NotFound, "no such conversation")));
    }
    Ok(Err((
        ErrorCode::Forbidden,
        "not a member of this conversation",
    )))
}

fn fetch_page(
    store: &Store,
    user: UserId,
    conv: ConvId,
    from: Page,
    limit: usize,
) -> storage::Result<Result<(Vec<Message>, bool), Refusal>> {
    let member = match membership(store, user, conv)? {
        Ok(member) => member,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let floor = visible_after(store, conv, member.joined)?;
    // One more than asked says whether anything lies beyond the page.
    let (mut msgs, mut more) = match from {
        Page::Latest => {
            let mut m = store.messages_latest(conv, limit + 1)?;
            let more = m.len() > limit;
            if more {
                m.remove(0);
            }
            (m, more)
        }
        Page::Before(s) => {
            let mut m = store.messages_before(conv, s, limit + 1)?;
            let more = m.len() > limit;
            if more {
                m.remove(0);
            }
            (m, more)
        }
        Page::After(s) => {
            let mut m = store.messages_after(conv, s.max(floor), limit + 1)?;
            let more = m.len() > limit;
            m.truncate(limit);
            (m, more)
        }
    };
    // What precedes the member's join is not its history.
    msgs.retain(|m| m.seq > floor);
    if !matches!(from, Page::After(_)) {
        more &= msgs.first().is_some_and(|m| m.seq.0 > floor.0 + 1);
    }
    more |= cut_to_page_bytes(&mut msgs, from);
    Ok(Ok((msgs, more)))
}

/// One `conv_get`: the membership check of `fetch`, then the conversation
/// as a `conv` reply has it, members by ascending user id.
pub(crate) fn conv_get(store: &Store, user: UserId, rid: RequestId, conv: ConvId) -> ServerMsg {
    match conv_info(store, user, conv) {
        Ok(Ok(info)) => ServerMsg::Conv { rid, conv: info },
        Ok(Err((code, text))) => error(Some(rid), None, code, text),
        Err(e) => {
            tracing::error!(cause = %e, conv = conv.0, "conversation read failed");
            error(
                Some(rid),
                None,
                ErrorCode::Internal,
                "conversation read failed",
            )
        }
    }
}

fn conv_info(
    store: &Store,
    user: UserId,
    conv: ConvId,
) -> storage::Result<Result<ConvInfo, Refusal>> {
    // The reads are not one snapshot, and a group change commits its
    // metadata, members and events in one write. Reading `last_seq` first
    // makes the rest at least as new as it: a client that applies the
    // events after `last_seq` to this state may see a change twice (each is
    // idempotent on a membership list), never miss one.
    let last_seq = store.last_seq(conv)?;
    if let Err(refusal) = membership(store, user, conv)? {
        return Ok(Err(refusal));
    }
    let Some(meta) = store.conv(conv)? else {
        return Ok(Err((ErrorCode::NotFound, "no such conversation")));
    };
    let mut members: Vec<Member> = store
        .members(conv)?
        .into_iter()
        .map(|(user, m)| Member {
            user,
            role: m.role,
            joined: m.joined,
        })
        .collect();
    members.sort_unstable_by_key(|m| m.user);
    Ok(Ok(ConvInfo {
        conv,
        kind: meta.kind,
        title: meta.title,
        members,
        last_seq,
    }))
}

/// One `receipts_get`: the membership check of `fetch`, then each member's
/// stored cursors by ascending user id; none for a group past
/// `RELAY_MEMBERS_MAX`, which gets no receipts at all.
pub(crate) fn receipts(store: &Store, user: UserId, rid: RequestId, conv: ConvId) -> ServerMsg {
    match member_receipts(store, user, conv) {
        Ok(Ok(members)) => ServerMsg::Receipts { rid, conv, members },
        Ok(Err((code, text))) => error(Some(rid), None, code, text),
        Err(e) => {
            tracing::error!(cause = %e, conv = conv.0, "receipts read failed");
            error(Some(rid), None, ErrorCode::Internal, "receipts read failed")
        }
    }
}

fn member_receipts(
    store: &Store,
    user: UserId,
    conv: ConvId,
) -> storage::Result<Result<Vec<MemberReceipts>, Refusal>> {
    if let Err(refusal) = membership(store, user, conv)? {
        return Ok(Err(refusal));
    }
    let Some(meta) = store.conv(conv)? else {
        return Ok(Err((ErrorCode::NotFound, "no such conversation")));
    };
    // The stored count spares reading a large group's members; the list
    // read is checked again in case the two disagree.
    if usize::try_from(meta.members).map_or(true, |n| n > RELAY_MEMBERS_MAX) {
        return Ok(Ok(Vec::new()));
    }
    let members = store.members(conv)?;
    if members.len() > RELAY_MEMBERS_MAX {
        return Ok(Ok(Vec::new()));
    }
    let mut out = Vec::with_capacity(members.len());
    for (member, _) in members {
        let mut entry = MemberReceipts {
            user: member,
            delivered: Seq::ZERO,
            read: Seq::ZERO,
        };
        for (device, cursor) in store.conv_cursors(member, conv, RECEIPT_DEVICES_MAX + 1)? {
            if device == USER_ROW {
                entry.read = cursor.read;
            } else {
                entry.delivered = entry.delivered.max(cursor.delivered);
            }
        }
        out.push(entry);
    }
    out.sort_unstable_by_key(|m| m.user);
    Ok(Ok(out))
}

/// Drops messages past `HISTORY_PAGE_BYTES_MAX` of JSON from the end the
/// client pages away from; `true` if any were dropped.
fn cut_to_page_bytes(msgs: &mut Vec<Message>, from: Page) -> bool {
    let budget = protocol::limits::HISTORY_PAGE_BYTES_MAX - protocol::limits::ENVELOPE_BYTES_MAX;
    let mut scratch = Vec::new();
    let mut size = |m: &Message| {
        scratch.clear();
        protocol::codec::encode_json(m, &mut scratch);
        scratch.len() + 1
    };
    let mut total = 0;
    let keep = match from {
        // Paging forward: keep the oldest.
        Page::After(_) => msgs
            .iter()
            .take_while(|m| {
                total += size(m);
                total <= budget
            })
            .count(),
        // Paging back: keep the newest.
        Page::Latest | Page::Before(_) => msgs
            .iter()
            .rev()
            .take_while(|m| {
                total += size(m);
                total <= budget
            })
            .count(),
    };
    if keep == msgs.len() {
        return false;
    }
    match from {
        Page::After(_) => msgs.truncate(keep),
        Page::Latest | Page::Before(_) => {
            msgs.drain(..msgs.len() - keep);
        }
    }
    true
}

/// How many groups each of `users` is in.
pub(crate) fn group_counts(
    store: &Store,
    users: &[UserId],
) -> storage::Result<HashMap<UserId, usize>> {
    users
        .iter()
        .map(|&u| {
            let n = store
                .user_convs(u)?
                .iter()
                .filter(|(c, _, _)| c.is_group())
                .count();
            Ok((u, n))
        })
        .collect()
}

/// Which of `targets` share a conversation with `user` (presence is only
/// reported to them).
pub(crate) fn watchable(
    store: &Store,
    user: UserId,
    targets: &[UserId],
) -> storage::Result<Vec<UserId>> {
    let mine: HashSet<ConvId> = store
        .user_convs(user)?
        .into_iter()
        .map(|(c, _, _)| c)
        .collect();
    let mut ok = Vec::new();
    for &t in targets {
        if t == user || ok.contains(&t) {
            continue;
        }
        if mine.contains(&ConvId::direct(user, t))
            || store
                .user_convs(t)?
                .iter()
                .any(|(c, _, _)| mine.contains(c))
        {
            ok.push(t);
        }
    }
    Ok(ok)
}
