//! The values the store keeps, as callers see them.

use protocol::{ConvId, ConvKind, MsgId, Platform, Role, Seq, UnixMillis, UserId};

/// A conversation's metadata. The conversation's owner writes it whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    pub id: ConvId,
    pub kind: ConvKind,
    /// Empty for direct conversations.
    pub title: String,
    pub creator: UserId,
    pub created: UnixMillis,
    /// Current member count.
    pub members: u32,
    /// Whether a new member may fetch messages from before it joined.
    pub history_visible: bool,
    /// Whether push notifications leave out message previews.
    pub private: bool,
    /// The two users of a direct conversation (lower id first); lets the
    /// engine detect a [`ConvId::direct`] hash collision.
    pub participants: Option<(UserId, UserId)>,
}

/// One user's membership of one conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Membership {
    pub role: Role,
    /// The seq of the event that added the user (0 for a direct conversation).
    pub joined: Seq,
}

/// A user's device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub push: Option<PushToken>,
    pub registered: UnixMillis,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushToken {
    pub platform: Platform,
    pub token: String,
}

/// How far one device has got in one conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Cursor {
    /// Received by the device (`recv`).
    pub delivered: Seq,
    /// Read by the user on this device (`read`).
    pub read: Seq,
}

/// The outcome of a send, kept for dedupe of resends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendOutcome {
    pub conv: ConvId,
    pub seq: Seq,
    pub id: MsgId,
    pub ts: UnixMillis,
}

/// A push notification waiting in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushJob {
    pub user: UserId,
    pub device: protocol::DeviceId,
    pub platform: Platform,
    pub token: String,
    pub conv: ConvId,
    /// The newest message the notification covers.
    pub seq: Seq,
    pub sender: UserId,
    /// A short preview, absent for private conversations.
    pub preview: Option<String>,
    /// Unread messages in the conversation for this user.
    pub unread: u32,
    /// Messages coalesced into this notification.
    pub count: u32,
    pub created: UnixMillis,
}
