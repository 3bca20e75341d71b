//! Client → server messages.

use serde::{Deserialize, Serialize};

use crate::ids::{ClientMsgId, ConvId, RequestId, Seq, UserId};
use crate::limits::{
    BODY_BYTES_MAX, FETCH_LIMIT_MAX, GROUP_OP_USERS_MAX, PRESENCE_SUBSCRIPTIONS_MAX,
    PUSH_TOKEN_BYTES_MAX, SYNC_POSITIONS_MAX, TITLE_BYTES_MAX,
};
use crate::server::Role;

/// Everything a client can send. In JSON each message is an object with one
/// key, the `snake_case` variant name: `{"send": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientMsg {
    /// Post a message. Answered by `ack` (or `error` with the same `cmid`).
    Send {
        conv: ConvId,
        cmid: ClientMsgId,
        body: String,
    },
    /// This device has received everything up to `seq` in `conv`.
    Recv {
        conv: ConvId,
        seq: Seq,
    },
    /// The user has read everything up to `seq` in `conv`.
    Read {
        conv: ConvId,
        seq: Seq,
    },
    /// The user started (`active`) or stopped typing in `conv`.
    Typing {
        conv: ConvId,
        active: bool,
    },
    /// One page of history. Answered by `history`.
    Fetch {
        rid: RequestId,
        conv: ConvId,
        from: Page,
        limit: u16,
    },
    /// Resume: stream everything this device has missed, then `synced`.
    /// `since` overrides the server's stored cursor for the listed conversations.
    Sync {
        rid: RequestId,
        since: Vec<Position>,
    },
    /// Open (create if needed) the 1:1 conversation with `user`. Answered by `conv`.
    DirectOpen {
        rid: RequestId,
        user: UserId,
    },
    /// Create a group; the creator is its first admin. Answered by `conv`.
    GroupCreate {
        rid: RequestId,
        title: String,
        members: Vec<UserId>,
    },
    GroupRename {
        rid: RequestId,
        conv: ConvId,
        title: String,
    },
    GroupAdd {
        rid: RequestId,
        conv: ConvId,
        users: Vec<UserId>,
    },
    GroupRemove {
        rid: RequestId,
        conv: ConvId,
        users: Vec<UserId>,
    },
    GroupLeave {
        rid: RequestId,
        conv: ConvId,
    },
    /// Promote or demote a member (admins only).
    GroupSetRole {
        rid: RequestId,
        conv: ConvId,
        user: UserId,
        role: Role,
    },
    /// Register this device's push token.
    PushRegister {
        rid: RequestId,
        platform: Platform,
        token: String,
    },
    /// Remove this device's push token.
    PushUnregister {
        rid: RequestId,
    },
    /// Receive `presence` for these users (only those sharing a conversation).
    PresenceSubscribe {
        rid: RequestId,
        users: Vec<UserId>,
    },
    /// Whether members added from now on see the group's earlier history
    /// (admins only; default: not visible).
    GroupSetHistory {
        rid: RequestId,
        conv: ConvId,
        visible: bool,
    },
    /// Mark a conversation private: its push notifications carry no
    /// message preview (a group's admins, or either side of a direct
    /// conversation; default: not private).
    ConvSetPrivate {
        rid: RequestId,
        conv: ConvId,
        private: bool,
    },
    /// A conversation's metadata and members, for a client that knows only
    /// its id (from `synced`). Answered by `conv`.
    ConvGet {
        rid: RequestId,
        conv: ConvId,
    },
    /// How far each member of a conversation has received and read, as
    /// stored: for a client that missed the live `receipt`s. Answered by
    /// `receipts`.
    ReceiptsGet {
        rid: RequestId,
        conv: ConvId,
    },
}

/// Where a history page starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Page {
    /// The newest messages.
    Latest,
    /// The newest messages with seq < the given one (the page is still ascending).
    Before(Seq),
    /// Messages with seq > the given one.
    After(Seq),
}

/// A conversation and a seq in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub conv: ConvId,
    pub seq: Seq,
}

/// A push provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Apns,
    Fcm,
}

/// Why a decoded client message is out of bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("{field} is {len} bytes, max {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field} has {len} entries, max {max}")]
    TooMany {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
}

fn bytes(field: &'static str, s: &str, max: usize) -> Result<(), LimitError> {
    if s.len() > max {
        return Err(LimitError::TooLong {
            field,
            len: s.len(),
            max,
        });
    }
    Ok(())
}

fn count<T>(field: &'static str, v: &[T], max: usize) -> Result<(), LimitError> {
    if v.len() > max {
        return Err(LimitError::TooMany {
            field,
            len: v.len(),
            max,
        });
    }
    Ok(())
}

fn non_empty(field: &'static str, s: &str) -> Result<(), LimitError> {
    if s.is_empty() {
        return Err(LimitError::Empty { field });
    }
    Ok(())
}

impl ClientMsg {
    /// Checks every size bound of `limits`. The decoders call this, so a
    /// decoded message is always within bounds.
    pub fn validate(&self) -> Result<(), LimitError> {
        match self {
            ClientMsg::Send { body, .. } => {
                non_empty("body", body)?;
                bytes("body", body, BODY_BYTES_MAX)
            }
            ClientMsg::Fetch { limit, .. } => {
                if *limit == 0 || *limit > FETCH_LIMIT_MAX {
                    return Err(LimitError::TooMany {
                        field: "limit",
                        len: usize::from(*limit),
                        max: usize::from(FETCH_LIMIT_MAX),
                    });
                }
                Ok(())
            }
            ClientMsg::Sync { since, .. } => count("since", since, SYNC_POSITIONS_MAX),
            ClientMsg::GroupCreate { title, members, .. } => {
                bytes("title", title, TITLE_BYTES_MAX)?;
                count("members", members, GROUP_OP_USERS_MAX)
            }
            ClientMsg::GroupRename { title, .. } => bytes("title", title, TITLE_BYTES_MAX),
            ClientMsg::GroupAdd { users, .. } | ClientMsg::GroupRemove { users, .. } => {
                if users.is_empty() {
                    return Err(LimitError::Empty { field: "users" });
                }
                count("users", users, GROUP_OP_USERS_MAX)
            }
            ClientMsg::PushRegister { token, .. } => {
                non_empty("token", token)?;
                bytes("token", token, PUSH_TOKEN_BYTES_MAX)
            }
            ClientMsg::PresenceSubscribe { users, .. } => {
                count("users", users, PRESENCE_SUBSCRIPTIONS_MAX)
            }
            ClientMsg::Recv { .. }
            | ClientMsg::Read { .. }
            | ClientMsg::Typing { .. }
            | ClientMsg::DirectOpen { .. }
            | ClientMsg::GroupLeave { .. }
            | ClientMsg::GroupSetRole { .. }
            | ClientMsg::GroupSetHistory { .. }
            | ClientMsg::ConvSetPrivate { .. }
            | ClientMsg::ConvGet { .. }
            | ClientMsg::ReceiptsGet { .. }
            | ClientMsg::PushUnregister { .. } => Ok(()),
        }
    }

    /// The request id this message carries, if any; errors echo it.
    pub fn rid(&self) -> Option<RequestId> {
        match self {
            ClientMsg::Fetch { rid, .. }
            | ClientMsg::Sync { rid, .. }
            | ClientMsg::DirectOpen { rid, .. }
            | ClientMsg::GroupCreate { rid, .. }
            | ClientMsg::GroupRename { rid, .. }
            | ClientMsg::GroupAdd { rid, .. }
            | ClientMsg::GroupRemove { rid, .. }
            | ClientMsg::GroupLeave { rid, .. }
            | ClientMsg::GroupSetRole { rid, .. }
            | ClientMsg::GroupSetHistory { rid, .. }
            | ClientMsg::ConvSetPrivate { rid, .. }
            | ClientMsg::ConvGet { rid, .. }
            | ClientMsg::ReceiptsGet { rid, .. }
            | ClientMsg::PushRegister { rid, .. }
            | ClientMsg::PushUnregister { rid }
            | ClientMsg::PresenceSubscribe { rid, .. } => Some(*rid),
            ClientMsg::Send { .. }
            | ClientMsg::Recv { .. }
            | ClientMsg::Read { .. }
            | ClientMsg::Typing { .. } => None,
        }
    }
}
