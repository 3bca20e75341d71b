//! Creating the group: its creator (member 0, who later sends to it) does
//! `group_create` with the first 999 members, then `group_add` with 1,000
//! more at a time, each answered by `conv`.

use std::ops::Range;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use protocol::limits::GROUP_OP_USERS_MAX;
use protocol::{
    ClientMsg, ConvId, ConvInfo, ConvKind, DeviceId, Encoding, ErrorCode, RequestId, ServerMsg,
    UserId,
};

use super::GroupOptions;
use crate::conn::Conn;
use crate::pairs::peer::{self, Shared};
use crate::server::Server;

/// Member i of the group is user `FIRST_USER + i`; member 0 creates it.
/// (The pairs are users 1 ..= 2 x pairs.)
const FIRST_USER: u64 = 2_000_000;

/// Lifetime of the tokens the bench mints.
pub const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// The `rid` of every connection's `sync`.
pub const SYNC_RID: RequestId = RequestId(1);

/// Bound on each request of the setup.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest pause between retries of a request refused as `rate_limited`
/// or `overloaded`.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

const TITLE: &str = "chatbench";

/// The group, once created.
#[derive(Debug, Clone, Copy)]
pub struct Group {
    pub conv: ConvId,
    /// The group's last seq after the setup (its membership events).
    pub base: u64,
}

/// The user of member `index`.
pub fn member_user(index: usize) -> UserId {
    UserId(FIRST_USER + index as u64)
}

/// The members of each request, by index: `group_create` takes 1..1000
/// (999 members besides the creator), each `group_add` the next 1,000.
fn chunks(members: usize) -> Vec<Range<usize>> {
    let mut chunks = Vec::new();
    let mut lo = 1;
    while lo < members {
        let hi = (lo / GROUP_OP_USERS_MAX + 1) * GROUP_OP_USERS_MAX;
        chunks.push(lo..hi.min(members));
        lo = hi;
    }
    chunks
}

/// The seq of the event that added member `index` (≥ 1): `created` is
/// seq 1, the n-th `group_add` seq n + 1.
pub fn joined_seq(index: usize) -> u64 {
    (index / GROUP_OP_USERS_MAX) as u64 + 1
}

/// Connects the creator, creates the group and adds every member.
/// Returns the creator's connection, for sending.
pub fn create_group(
    server: &Server,
    shared: &Shared,
    options: &GroupOptions,
) -> Result<(Conn, Group)> {
    let creator = member_user(0);
    let token = client::mint_token(server.secret(), creator, DeviceId(1), TOKEN_TTL);
    let mut conn = Conn::connect(server.addr(), &token, Encoding::Binary)
        .with_context(|| format!("the group's creator (user {creator}): connecting"))?;
    let result = setup(&mut conn, shared, options);
    result
        .map(|group| (conn, group))
        .with_context(|| format!("the group's creator (user {creator})"))
}

fn setup(conn: &mut Conn, shared: &Shared, options: &GroupOptions) -> Result<Group> {
    match reply(conn, shared, "welcome", |_| true)? {
        ServerMsg::Welcome { user, .. } if user == member_user(0) => {}
        other => bail!("expected our welcome, got {other:?}"),
    }
    conn.send(&ClientMsg::Sync {
        rid: SYNC_RID,
        since: vec![],
    })
    .context("sending sync")?;
    reply(
        conn,
        shared,
        "synced",
        |m| matches!(m, ServerMsg::Synced { rid, .. } if *rid == SYNC_RID),
    )?;
    let mut group: Option<Group> = None;
    for (n, chunk) in chunks(options.members).into_iter().enumerate() {
        let users: Vec<UserId> = chunk.clone().map(member_user).collect();
        let rid = RequestId(u32::try_from(n + 2).context("too many requests")?);
        let (msg, what) = match group {
            None => (
                ClientMsg::GroupCreate {
                    rid,
                    title: TITLE.to_owned(),
                    members: users,
                },
                "group_create".to_owned(),
            ),
            Some(g) => (
                ClientMsg::GroupAdd {
                    rid,
                    conv: g.conv,
                    users,
                },
                format!("group_add #{n} (members {}..{})", chunk.start, chunk.end),
            ),
        };
        let info = request(conn, shared, &msg, rid, &what)?;
        check_conv(&info, chunk.end, n as u64 + 1)
            .with_context(|| format!("the reply to {what}"))?;
        group = Some(Group {
            conv: info.conv,
            base: info.last_seq.0,
        });
    }
    group.context("a group of at least 2 members needs a group_create")
}

/// After a request that left members 0..`members` in the group, its
/// `conv` must say so, at seq `seq`.
fn check_conv(info: &ConvInfo, members: usize, seq: u64) -> Result<()> {
    ensure!(
        info.kind == ConvKind::Group,
        "conv {} is a {:?} conversation",
        info.conv,
        info.kind
    );
    ensure!(
        info.members.len() == members,
        "the group has {} members, expected {members}",
        info.members.len()
    );
    ensure!(
        info.last_seq.0 == seq,
        "the group's last_seq is {}, expected {seq} (one event per request)",
        info.last_seq.0
    );
    Ok(())
}

/// Sends `msg` and returns the `conv` it is answered with, retrying with
/// backoff while it is refused as `rate_limited` or `overloaded`.
fn request(
    conn: &mut Conn,
    shared: &Shared,
    msg: &ClientMsg,
    rid: RequestId,
    what: &str,
) -> Result<ConvInfo> {
    let mut backoff = Duration::from_millis(50);
    loop {
        conn.send(msg).with_context(|| format!("sending {what}"))?;
        let answer = reply(conn, shared, what, |m| match m {
            ServerMsg::Conv { rid: r, .. } | ServerMsg::Ok { rid: r } => *r == rid,
            ServerMsg::Error { rid: r, .. } => *r == Some(rid),
            _ => false,
        })?;
        match answer {
            ServerMsg::Conv { conv, .. } => return Ok(conv),
            ServerMsg::Error {
                code: ErrorCode::RateLimited | ErrorCode::Overloaded,
                ..
            } if Instant::now() + backoff < shared.deadline => {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            ServerMsg::Error { code, message, .. } => {
                bail!("{what} was refused: error {code:?}: {message:?}")
            }
            other => bail!("{what} was answered with {other:?}, not conv"),
        }
    }
}

/// The next message `pred` accepts, within [`REQUEST_TIMEOUT`] and the
/// run's deadline. An `error` naming no request fails.
fn reply(
    conn: &mut Conn,
    shared: &Shared,
    what: &str,
    pred: impl Fn(&ServerMsg) -> bool,
) -> Result<ServerMsg> {
    let until = (Instant::now() + REQUEST_TIMEOUT).min(shared.deadline);
    loop {
        let msg = peer::recv(conn, shared, until)
            .with_context(|| format!("waiting for the reply to {what}"))?
            .with_context(|| format!("no reply to {what} within {REQUEST_TIMEOUT:?}"))?;
        if pred(&msg) {
            return Ok(msg);
        }
        if let ServerMsg::Error {
            rid: None,
            cmid: None,
            ..
        } = msg
        {
            bail!("the server answered with {msg:?} while we waited for {what}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_chunks() {
        assert_eq!(chunks(2), vec![1..2]);
        assert_eq!(chunks(1000), vec![1..1000]);
        assert_eq!(chunks(1001), vec![1..1000, 1000..1001]);
        let big = chunks(10_000);
        assert_eq!(big.len(), 10);
        assert_eq!(big[0], 1..1000);
        assert_eq!(big[9], 9000..10_000);
        assert_eq!(chunks(100_000).len(), 100);
        for (n, chunk) in chunks(4_321).into_iter().enumerate() {
            assert!(chunk.len() <= GROUP_OP_USERS_MAX);
            for index in chunk {
                assert_eq!(joined_seq(index), n as u64 + 1, "member {index}");
            }
        }
    }
}
