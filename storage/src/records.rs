//! The on-disk encoding of every value: one format byte, then an rkyv archive.
//!
//! These types are the storage format and are deliberately separate from the
//! protocol's types: the wire may change without a data migration. Reads go
//! through `rkyv::from_bytes`, which validates the archive before use; the
//! `unaligned` rkyv feature lets that run on fjall's unaligned slices.

use protocol::{
    Content, ConvId, ConvKind, DeviceId, GroupEvent, Message, MsgId, Platform, Role, Seq,
    UnixMillis, UserId,
};
use rkyv::rancor;

use crate::error::{Error, Result};
use crate::model::{Conversation, Cursor, Device, Membership, PushJob, PushToken, SendOutcome};

/// The record format of every record but conversations. A reader that
/// meets another value refuses it.
pub(crate) const FORMAT_V1: u8 = 1;

/// Conversations written since they gained `private` ([`ConvRecV2`]);
/// [`FORMAT_V1`] conversations are still read (not private).
pub(crate) const FORMAT_CONV_V2: u8 = 2;

pub(crate) fn encode<T>(value: &T) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rancor::Error,
            >,
        >,
{
    encode_as(FORMAT_V1, value)
}

fn encode_as<T>(format: u8, value: &T) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rancor::Error,
            >,
        >,
{
    let archived =
        rkyv::to_bytes::<rancor::Error>(value).expect("records always serialize into memory");
    let mut out = Vec::with_capacity(archived.len() + 1);
    out.push(format);
    out.extend_from_slice(&archived);
    out
}

pub(crate) fn decode<T>(keyspace: &'static str, key: &[u8], bytes: &[u8]) -> Result<T>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    let corrupt = |reason: String| Error::Corrupt {
        keyspace,
        key: key.to_vec(),
        reason,
    };
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => {
            rkyv::from_bytes::<T, rancor::Error>(body).map_err(|e| corrupt(e.to_string()))
        }
        Some((&other, _)) => Err(corrupt(format!("unknown record format {other}"))),
        None => Err(corrupt("empty record".into())),
    }
}

/// A conversation as [`FORMAT_V1`] stored it (read only).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct ConvRec {
    group: bool,
    title: String,
    creator: u64,
    created: u64,
    members: u32,
    history_visible: bool,
    participants: Option<(u64, u64)>,
}

/// A conversation ([`FORMAT_CONV_V2`]).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct ConvRecV2 {
    v1: ConvRec,
    private: bool,
}

/// Encodes a conversation in the current format.
pub(crate) fn encode_conv(c: &Conversation) -> Vec<u8> {
    let rec = ConvRecV2 {
        v1: ConvRec {
            group: c.kind == ConvKind::Group,
            title: c.title.clone(),
            creator: c.creator.0,
            created: c.created.0,
            members: c.members,
            history_visible: c.history_visible,
            participants: c.participants.map(|(a, b)| (a.0, b.0)),
        },
        private: c.private,
    };
    encode_as(FORMAT_CONV_V2, &rec)
}

/// Decodes a conversation of either format.
pub(crate) fn decode_conv(
    keyspace: &'static str,
    key: &[u8],
    bytes: &[u8],
    id: ConvId,
) -> Result<Conversation> {
    match bytes.split_first() {
        Some((&FORMAT_CONV_V2, body)) => {
            let rec =
                rkyv::from_bytes::<ConvRecV2, rancor::Error>(body).map_err(|e| Error::Corrupt {
                    keyspace,
                    key: key.to_vec(),
                    reason: e.to_string(),
                })?;
            let mut c = rec.v1.into_model(id);
            c.private = rec.private;
            Ok(c)
        }
        _ => Ok(decode::<ConvRec>(keyspace, key, bytes)?.into_model(id)),
    }
}

impl ConvRec {
    fn into_model(self, id: ConvId) -> Conversation {
        Conversation {
            id,
            kind: if self.group {
                ConvKind::Group
            } else {
                ConvKind::Direct
            },
            title: self.title,
            creator: UserId(self.creator),
            created: UnixMillis(self.created),
            members: self.members,
            history_visible: self.history_visible,
            private: false,
            participants: self.participants.map(|(a, b)| (UserId(a), UserId(b))),
        }
    }
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) enum EventRec {
    Created {
        title: String,
        members: Vec<u64>,
    },
    Renamed {
        title: String,
    },
    Added {
        users: Vec<u64>,
    },
    Removed {
        users: Vec<u64>,
    },
    Left {
        user: u64,
    },
    RoleChanged {
        user: u64,
        admin: bool,
    },
    /// Appended last: earlier records keep their tags.
    HistoryVisible {
        visible: bool,
    },
    Private {
        private: bool,
    },
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) enum ContentRec {
    Text(String),
    Event(EventRec),
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct MessageRec {
    id: u64,
    from: u64,
    device: u64,
    ts: u64,
    content: ContentRec,
}

fn ids(users: &[UserId]) -> Vec<u64> {
    users.iter().map(|u| u.0).collect()
}

fn users(ids: Vec<u64>) -> Vec<UserId> {
    ids.into_iter().map(UserId).collect()
}

fn role_is_admin(role: Role) -> bool {
    role == Role::Admin
}

fn role(admin: bool) -> Role {
    if admin { Role::Admin } else { Role::Member }
}

impl MessageRec {
    pub(crate) fn from_model(m: &Message) -> MessageRec {
        let content = match &m.content {
            Content::Text(t) => ContentRec::Text(t.clone()),
            Content::Event(e) => ContentRec::Event(match e {
                GroupEvent::Created { title, members } => EventRec::Created {
                    title: title.clone(),
                    members: ids(members),
                },
                GroupEvent::Renamed { title } => EventRec::Renamed {
                    title: title.clone(),
                },
                GroupEvent::Added { users } => EventRec::Added { users: ids(users) },
                GroupEvent::Removed { users } => EventRec::Removed { users: ids(users) },
                GroupEvent::Left { user } => EventRec::Left { user: user.0 },
                GroupEvent::RoleChanged { user, role } => EventRec::RoleChanged {
                    user: user.0,
                    admin: role_is_admin(*role),
                },
                GroupEvent::HistoryVisible { visible } => {
                    EventRec::HistoryVisible { visible: *visible }
                }
                GroupEvent::Private { private } => EventRec::Private { private: *private },
            }),
        };
        MessageRec {
            id: m.id.0,
            from: m.from.0,
            device: m.device.0,
            ts: m.ts.0,
            content,
        }
    }

    pub(crate) fn into_model(self, conv: ConvId, seq: Seq) -> Message {
        let content = match self.content {
            ContentRec::Text(t) => Content::Text(t),
            ContentRec::Event(e) => Content::Event(match e {
                EventRec::Created { title, members } => GroupEvent::Created {
                    title,
                    members: users(members),
                },
                EventRec::Renamed { title } => GroupEvent::Renamed { title },
                EventRec::Added { users: u } => GroupEvent::Added { users: users(u) },
                EventRec::Removed { users: u } => GroupEvent::Removed { users: users(u) },
                EventRec::Left { user } => GroupEvent::Left { user: UserId(user) },
                EventRec::RoleChanged { user, admin } => GroupEvent::RoleChanged {
                    user: UserId(user),
                    role: role(admin),
                },
                EventRec::HistoryVisible { visible } => GroupEvent::HistoryVisible { visible },
                EventRec::Private { private } => GroupEvent::Private { private },
            }),
        };
        Message {
            conv,
            seq,
            id: MsgId(self.id),
            from: UserId(self.from),
            device: DeviceId(self.device),
            ts: UnixMillis(self.ts),
            content,
        }
    }
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct MemberRec {
    admin: bool,
    joined: u64,
}

impl MemberRec {
    pub(crate) fn from_model(m: Membership) -> MemberRec {
        MemberRec {
            admin: role_is_admin(m.role),
            joined: m.joined.0,
        }
    }

    pub(crate) fn into_model(self) -> Membership {
        Membership {
            role: role(self.admin),
            joined: Seq(self.joined),
        }
    }
}

fn platform_code(p: Platform) -> u8 {
    match p {
        Platform::Apns => 1,
        Platform::Fcm => 2,
    }
}

fn platform(code: u8) -> Option<Platform> {
    match code {
        1 => Some(Platform::Apns),
        2 => Some(Platform::Fcm),
        _ => None,
    }
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct DeviceRec {
    push: Option<(u8, String)>,
    registered: u64,
}

impl DeviceRec {
    pub(crate) fn from_model(d: &Device) -> DeviceRec {
        DeviceRec {
            push: d
                .push
                .as_ref()
                .map(|p| (platform_code(p.platform), p.token.clone())),
            registered: d.registered.0,
        }
    }

    pub(crate) fn into_model(self) -> Option<Device> {
        let push = match self.push {
            Some((code, token)) => Some(PushToken {
                platform: platform(code)?,
                token,
            }),
            None => None,
        };
        Some(Device {
            push,
            registered: UnixMillis(self.registered),
        })
    }
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct CursorRec {
    delivered: u64,
    read: u64,
}

impl CursorRec {
    pub(crate) fn from_model(c: Cursor) -> CursorRec {
        CursorRec {
            delivered: c.delivered.0,
            read: c.read.0,
        }
    }

    pub(crate) fn into_model(self) -> Cursor {
        Cursor {
            delivered: Seq(self.delivered),
            read: Seq(self.read),
        }
    }
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct SendRec {
    conv: u64,
    seq: u64,
    id: u64,
    ts: u64,
}

impl SendRec {
    pub(crate) fn from_model(s: SendOutcome) -> SendRec {
        SendRec {
            conv: s.conv.0,
            seq: s.seq.0,
            id: s.id.0,
            ts: s.ts.0,
        }
    }

    pub(crate) fn into_model(self) -> SendOutcome {
        SendOutcome {
            conv: ConvId(self.conv),
            seq: Seq(self.seq),
            id: MsgId(self.id),
            ts: UnixMillis(self.ts),
        }
    }
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct PushJobRec {
    user: u64,
    device: u64,
    platform: u8,
    token: String,
    conv: u64,
    seq: u64,
    sender: u64,
    preview: Option<String>,
    unread: u32,
    count: u32,
    created: u64,
}

impl PushJobRec {
    pub(crate) fn from_model(j: &PushJob) -> PushJobRec {
        PushJobRec {
            user: j.user.0,
            device: j.device.0,
            platform: platform_code(j.platform),
            token: j.token.clone(),
            conv: j.conv.0,
            seq: j.seq.0,
            sender: j.sender.0,
            preview: j.preview.clone(),
            unread: j.unread,
            count: j.count,
            created: j.created.0,
        }
    }

    pub(crate) fn into_model(self) -> Option<PushJob> {
        Some(PushJob {
            user: UserId(self.user),
            device: DeviceId(self.device),
            platform: platform(self.platform)?,
            token: self.token,
            conv: ConvId(self.conv),
            seq: Seq(self.seq),
            sender: UserId(self.sender),
            preview: self.preview,
            unread: self.unread,
            count: self.count,
            created: UnixMillis(self.created),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(private: bool) -> Conversation {
        Conversation {
            id: ConvId(7),
            kind: ConvKind::Group,
            title: "t".into(),
            creator: UserId(1),
            created: UnixMillis(2),
            members: 3,
            history_visible: true,
            private,
            participants: None,
        }
    }

    #[test]
    fn conversations_round_trip_and_the_first_format_still_reads() {
        for private in [false, true] {
            let bytes = encode_conv(&conv(private));
            assert_eq!(bytes[0], FORMAT_CONV_V2);
            let back = decode_conv("convs", b"k", &bytes, ConvId(7)).expect("decodes");
            assert_eq!(back, conv(private));
        }
        let c = conv(true);
        let v1 = ConvRec {
            group: true,
            title: c.title.clone(),
            creator: 1,
            created: 2,
            members: 3,
            history_visible: true,
            participants: None,
        };
        let bytes = encode(&v1);
        assert_eq!(bytes[0], FORMAT_V1);
        let back = decode_conv("convs", b"k", &bytes, ConvId(7)).expect("a v1 record decodes");
        assert_eq!(back, conv(false), "a v1 conversation is not private");
        assert!(decode_conv("convs", b"k", &[9, 1, 2], ConvId(7)).is_err());
    }
}
