//! Server → client messages.

use serde::{Deserialize, Serialize};

use crate::ids::{ClientMsgId, ConvId, DeviceId, MsgId, RequestId, Seq, UnixMillis, UserId};

/// Everything the server sends. In JSON each message is an object with one
/// key, the `snake_case` variant name: `{"msg": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerMsg {
    /// First message on every connection.
    Welcome {
        user: UserId,
        device: DeviceId,
        version: u8,
        time: UnixMillis,
    },
    /// A `send` is durable and has its place in the conversation.
    Ack {
        cmid: ClientMsgId,
        conv: ConvId,
        seq: Seq,
        id: MsgId,
        ts: UnixMillis,
    },
    /// A message or event in a conversation's stream.
    Msg(Message),
    /// A member's devices received (or the member read) up to `seq`.
    Receipt {
        conv: ConvId,
        user: UserId,
        kind: ReceiptKind,
        seq: Seq,
    },
    Typing {
        conv: ConvId,
        user: UserId,
        active: bool,
    },
    Presence {
        user: UserId,
        status: PresenceStatus,
        last_seen: Option<UnixMillis>,
    },
    /// Reply to `fetch`: messages in ascending seq order. `more` says whether
    /// the page stopped before the end of what was asked.
    History {
        rid: RequestId,
        conv: ConvId,
        msgs: Vec<Message>,
        more: bool,
    },
    /// End of a `sync` catch-up; live messages follow.
    Synced {
        rid: RequestId,
        convs: Vec<ConvSummary>,
    },
    /// Reply to `direct_open`, `conv_get` and the group operations.
    Conv { rid: RequestId, conv: ConvInfo },
    /// Success of a request that returns nothing else.
    Ok { rid: RequestId },
    /// A request failed. `rid` or `cmid` names the failed request, if known.
    Error {
        rid: Option<RequestId>,
        cmid: Option<ClientMsgId>,
        code: ErrorCode,
        message: String,
    },
    /// Reply to `receipts_get`: each member's stored cursors, by ascending
    /// user id (empty for a group too large for receipts).
    Receipts {
        rid: RequestId,
        conv: ConvId,
        members: Vec<MemberReceipts>,
    },
}

/// One entry of a conversation's stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub conv: ConvId,
    pub seq: Seq,
    pub id: MsgId,
    /// The author, or for an event, the user who caused it.
    pub from: UserId,
    pub device: DeviceId,
    pub ts: UnixMillis,
    pub content: Content,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    Text(String),
    Event(GroupEvent),
}

/// A membership or metadata change, in the conversation's own seq stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupEvent {
    Created {
        title: String,
        members: Vec<UserId>,
    },
    Renamed {
        title: String,
    },
    Added {
        users: Vec<UserId>,
    },
    Removed {
        users: Vec<UserId>,
    },
    Left {
        user: UserId,
    },
    RoleChanged {
        user: UserId,
        role: Role,
    },
    /// Whether members see the group's history from before they joined.
    HistoryVisible {
        visible: bool,
    },
    /// Whether the conversation is private (push notifications without a
    /// preview).
    Private {
        private: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Member,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    Delivered,
    Read,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    Online,
    Offline,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvKind {
    Direct,
    Group,
}

/// A conversation's state as one device sees it, in `synced`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvSummary {
    pub conv: ConvId,
    pub kind: ConvKind,
    pub last_seq: Seq,
    /// What this device has confirmed with `recv`.
    pub delivered: Seq,
    /// What this user has confirmed with `read` (on any device).
    pub read: Seq,
}

/// A conversation's metadata and members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvInfo {
    pub conv: ConvId,
    pub kind: ConvKind,
    pub title: String,
    pub members: Vec<Member>,
    pub last_seq: Seq,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user: UserId,
    pub role: Role,
    /// The seq of the event that added this member; it sees messages after it.
    pub joined: Seq,
}

/// How far one member of a conversation has got, in `receipts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReceipts {
    pub user: UserId,
    /// The highest `recv` of any of the member's devices.
    pub delivered: Seq,
    /// The member's `read` (on any device).
    pub read: Seq,
}

/// Why a request failed. The binary encoding is the variant index, which is
/// `code() - 1`: never reorder, only append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The message could not be decoded or breaks a limit.
    BadRequest,
    /// The message's protocol version is not supported.
    UnsupportedVersion,
    /// Not a member of the conversation, or not an admin for an admin operation.
    Forbidden,
    /// The conversation or user does not exist.
    NotFound,
    /// Too many requests; retry after a pause. Retryable.
    RateLimited,
    /// The server is shedding load (a queue is full). Retryable.
    Overloaded,
    /// The group is at its member limit.
    GroupFull,
    /// The user is in the maximum number of groups.
    TooManyGroups,
    /// The request conflicts with the conversation's state (e.g. the user is
    /// already a member, or an id collision).
    Conflict,
    /// The server failed; the request may or may not have taken effect. Retryable.
    Internal,
}

impl ErrorCode {
    /// A stable number for logs and metrics (also the binary tag).
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 1,
            ErrorCode::UnsupportedVersion => 2,
            ErrorCode::Forbidden => 3,
            ErrorCode::NotFound => 4,
            ErrorCode::RateLimited => 5,
            ErrorCode::Overloaded => 6,
            ErrorCode::GroupFull => 7,
            ErrorCode::TooManyGroups => 8,
            ErrorCode::Conflict => 9,
            ErrorCode::Internal => 10,
        }
    }

    /// Whether the same request may succeed if retried later.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited | ErrorCode::Overloaded | ErrorCode::Internal
        )
    }
}

/// Serializes exactly as `ServerMsg::Msg(message.clone())` does, without
/// the clone: a server encodes one stored message for many devices.
#[derive(Clone, Copy, Debug)]
pub struct MsgRef<'a>(pub &'a Message);

/// `ServerMsg::Msg`'s variant index (declaration order, PROTOCOL.md).
const MSG_VARIANT: u32 = 2;

impl Serialize for MsgRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_variant("ServerMsg", MSG_VARIANT, "msg", self.0)
    }
}
