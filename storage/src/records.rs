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

use crate::encryption::{EncryptionKeys, NONCE_LEN};
use crate::error::{Error, Result};
use crate::model::{Conversation, Cursor, Device, Membership, PushJob, PushToken, SendOutcome};

/// The record format of every record but conversations. A reader that
/// meets another value refuses it.
pub(crate) const FORMAT_V1: u8 = 1;

/// Conversations written since they gained `private` ([`ConvRecV2`]);
/// [`FORMAT_V1`] conversations are still read (not private).
pub(crate) const FORMAT_CONV_V2: u8 = 2;

/// Records with a part sealed by [`EncryptionKeys`]: messages with a text
/// body ([`SealedMessageRec`]) and outbox jobs with a preview
/// ([`SealedPushJobRec`]). Their plain forms stay [`FORMAT_V1`].
pub(crate) const FORMAT_SEALED: u8 = 3;

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
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => decode_archive(keyspace, key, body),
        Some((&other, _)) => Err(corrupt(
            keyspace,
            key,
            format!("unknown record format {other}"),
        )),
        None => Err(corrupt(keyspace, key, "empty record".into())),
    }
}

/// Validates and deserializes an archive (a record after its format byte).
fn decode_archive<T>(keyspace: &'static str, key: &[u8], body: &[u8]) -> Result<T>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    rkyv::from_bytes::<T, rancor::Error>(body).map_err(|e| corrupt(keyspace, key, e.to_string()))
}

fn corrupt(keyspace: &'static str, key: &[u8], reason: String) -> Error {
    Error::Corrupt {
        keyspace,
        key: key.to_vec(),
        reason,
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
            let rec = decode_archive::<ConvRecV2>(keyspace, key, body)?;
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

/// A sealed value: ciphertext and tag, with the nonce and the id of the key
/// that sealed it. The associated data is not stored: it is rebuilt from the
/// record's location on read, so a sealed value moved elsewhere fails.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct SealedRec {
    key: u32,
    nonce: [u8; NONCE_LEN],
    ciphertext: Vec<u8>,
}

/// A message with a sealed text body ([`FORMAT_SEALED`]).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct SealedMessageRec {
    id: u64,
    from: u64,
    device: u64,
    ts: u64,
    body: SealedRec,
}

/// An outbox job with a sealed preview ([`FORMAT_SEALED`]); `job.preview`
/// is `None`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct SealedPushJobRec {
    job: PushJobRec,
    preview: SealedRec,
}

/// Associated data: a domain tag, then `parts` big-endian.
fn aad(domain: &[u8], parts: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(domain.len() + parts.len() * 8);
    out.extend_from_slice(domain);
    for p in parts {
        out.extend_from_slice(&p.to_be_bytes());
    }
    out
}

/// Binds a message body to its conversation, seq and plain fields.
fn message_aad(conv: ConvId, seq: Seq, id: u64, from: u64, device: u64, ts: u64) -> Vec<u8> {
    aad(
        b"switchboard/message/1",
        &[conv.0, seq.0, id, from, device, ts],
    )
}

/// Binds a preview to its outbox id and job.
fn preview_aad(id: u64, j: &PushJobRec) -> Vec<u8> {
    let parts = [id, j.user, j.device, j.conv, j.seq, j.sender];
    aad(b"switchboard/push-preview/1", &parts)
}

impl SealedRec {
    fn seal(keys: &EncryptionKeys, aad: &[u8], plain: &str) -> Result<SealedRec> {
        let s = keys.seal(aad, plain.as_bytes())?;
        Ok(SealedRec {
            key: s.key,
            nonce: s.nonce,
            ciphertext: s.ciphertext,
        })
    }

    fn open(
        &self,
        keys: Option<&EncryptionKeys>,
        aad: &[u8],
        keyspace: &'static str,
        key: &[u8],
    ) -> Result<String> {
        let fail = |reason: String| Error::Decrypt {
            keyspace,
            key: key.to_vec(),
            reason,
        };
        let Some(keys) = keys else {
            let reason = format!(
                "sealed with key {}, but encryption is not configured",
                self.key
            );
            return Err(fail(reason));
        };
        let plain = keys
            .open(self.key, &self.nonce, aad, &self.ciphertext)
            .map_err(fail)?;
        String::from_utf8(plain).map_err(|_| fail("sealed text is not UTF-8".into()))
    }
}

/// Encodes a message; with `keys`, a text body is sealed.
pub(crate) fn encode_message(m: &Message, keys: Option<&EncryptionKeys>) -> Result<Vec<u8>> {
    let (Content::Text(text), Some(keys)) = (&m.content, keys) else {
        return Ok(encode(&MessageRec::from_model(m)));
    };
    let (id, from, device, ts) = (m.id.0, m.from.0, m.device.0, m.ts.0);
    let aad = message_aad(m.conv, m.seq, id, from, device, ts);
    let rec = SealedMessageRec {
        id,
        from,
        device,
        ts,
        body: SealedRec::seal(keys, &aad, text)?,
    };
    Ok(encode_as(FORMAT_SEALED, &rec))
}

/// Decodes a message of either form; a sealed body needs its key in `keys`.
pub(crate) fn decode_message(
    keyspace: &'static str,
    key: &[u8],
    bytes: &[u8],
    (conv, seq): (ConvId, Seq),
    keys: Option<&EncryptionKeys>,
) -> Result<Message> {
    let Some((&FORMAT_SEALED, body)) = bytes.split_first() else {
        return Ok(decode::<MessageRec>(keyspace, key, bytes)?.into_model(conv, seq));
    };
    let r = decode_archive::<SealedMessageRec>(keyspace, key, body)?;
    let aad = message_aad(conv, seq, r.id, r.from, r.device, r.ts);
    let text = r.body.open(keys, &aad, keyspace, key)?;
    Ok(Message {
        conv,
        seq,
        id: MsgId(r.id),
        from: UserId(r.from),
        device: DeviceId(r.device),
        ts: UnixMillis(r.ts),
        content: Content::Text(text),
    })
}

/// Encodes outbox job `id`; with `keys`, its preview is sealed.
pub(crate) fn encode_push_job(
    id: u64,
    j: &PushJob,
    keys: Option<&EncryptionKeys>,
) -> Result<Vec<u8>> {
    let mut job = PushJobRec::from_model(j);
    let Some(keys) = keys else {
        return Ok(encode(&job));
    };
    let Some(preview) = job.preview.take() else {
        return Ok(encode(&job));
    };
    let preview = SealedRec::seal(keys, &preview_aad(id, &job), &preview)?;
    Ok(encode_as(FORMAT_SEALED, &SealedPushJobRec { job, preview }))
}

/// Decodes outbox job `id` of either form; `None` for an unknown platform.
pub(crate) fn decode_push_job(
    keyspace: &'static str,
    key: &[u8],
    bytes: &[u8],
    id: u64,
    keys: Option<&EncryptionKeys>,
) -> Result<Option<PushJob>> {
    let Some((&FORMAT_SEALED, body)) = bytes.split_first() else {
        return Ok(decode::<PushJobRec>(keyspace, key, bytes)?.into_model());
    };
    let SealedPushJobRec { mut job, preview } = decode_archive(keyspace, key, body)?;
    job.preview = Some(preview.open(keys, &preview_aad(id, &job), keyspace, key)?);
    Ok(job.into_model())
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

    const BODY: &str = "a distinctive body, 42";

    fn keys(ids: &[u32]) -> EncryptionKeys {
        EncryptionKeys::new(
            ids.iter()
                .map(|&id| (id, [u8::try_from(id).expect("small id"); 32])),
        )
        .expect("valid keys")
    }

    fn msg(content: Content) -> Message {
        Message {
            conv: ConvId(7),
            seq: Seq(9),
            id: MsgId(11),
            from: UserId(1),
            device: DeviceId(2),
            ts: UnixMillis(3),
            content,
        }
    }

    fn text() -> Message {
        msg(Content::Text(BODY.into()))
    }

    fn decode_msg(bytes: &[u8], seq: u64, keys: Option<&EncryptionKeys>) -> Result<Message> {
        decode_message("messages", b"k", bytes, (ConvId(7), Seq(seq)), keys)
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    fn decrypt_reason(r: Result<Message>) -> String {
        match r {
            Err(Error::Decrypt { reason, .. }) => reason,
            other => panic!("want a decrypt error, got {other:?}"),
        }
    }

    #[test]
    fn a_sealed_text_body_round_trips_and_is_not_in_the_record() {
        let k = keys(&[1, 2]);
        let bytes = encode_message(&text(), Some(&k)).expect("seals");
        assert_eq!(bytes[0], FORMAT_SEALED);
        assert!(!contains(&bytes, BODY.as_bytes()));
        assert_eq!(decode_msg(&bytes, 9, Some(&k)).expect("opens"), text());
        let plain = encode_message(&text(), None).expect("encodes");
        assert_eq!(plain[0], FORMAT_V1);
        assert!(
            contains(&plain, BODY.as_bytes()),
            "the check above can fail"
        );
    }

    #[test]
    fn events_stay_plain_and_plain_records_read_with_or_without_keys() {
        let k = keys(&[1]);
        let event = msg(Content::Event(GroupEvent::Renamed { title: "t".into() }));
        let bytes = encode_message(&event, Some(&k)).expect("encodes");
        assert_eq!(bytes[0], FORMAT_V1);
        assert_eq!(decode_msg(&bytes, 9, Some(&k)).expect("decodes"), event);
        let plain = encode_message(&text(), None).expect("encodes");
        assert_eq!(decode_msg(&plain, 9, Some(&k)).expect("decodes"), text());
        assert_eq!(decode_msg(&plain, 9, None).expect("decodes"), text());
    }

    #[test]
    fn a_sealed_body_needs_its_key() {
        let bytes = encode_message(&text(), Some(&keys(&[1]))).expect("seals");
        let reason = decrypt_reason(decode_msg(&bytes, 9, None));
        assert_eq!(
            reason,
            "sealed with key 1, but encryption is not configured"
        );
        let reason = decrypt_reason(decode_msg(&bytes, 9, Some(&keys(&[2]))));
        assert_eq!(reason, "sealed with key 1, which is not configured");
        assert_eq!(
            decode_msg(&bytes, 9, Some(&keys(&[2, 1]))).expect("opens"),
            text()
        );
    }

    #[test]
    fn a_tampered_or_moved_ciphertext_fails_authentication() {
        let k = keys(&[1]);
        let bytes = encode_message(&text(), Some(&k)).expect("seals");
        let mut rec = decode_archive::<SealedMessageRec>("messages", b"k", &bytes[1..])
            .expect("a sealed record");
        rec.body.ciphertext[3] ^= 0x01;
        let tampered = encode_as(FORMAT_SEALED, &rec);
        let reason = decrypt_reason(decode_msg(&tampered, 9, Some(&k)));
        assert!(reason.starts_with("authentication failed"), "{reason}");
        let reason = decrypt_reason(decode_msg(&bytes, 10, Some(&k)));
        assert!(
            reason.starts_with("authentication failed"),
            "moved: {reason}"
        );
    }

    #[test]
    fn no_single_bit_flip_of_a_sealed_record_decodes_to_another_message() {
        let k = keys(&[1]);
        let bytes = encode_message(&text(), Some(&k)).expect("seals");
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                if let Ok(m) = decode_msg(&b, 9, Some(&k)) {
                    assert_eq!(m, text(), "byte {i} bit {bit} changed the message");
                }
            }
        }
    }

    fn job(preview: Option<&str>) -> PushJob {
        PushJob {
            user: UserId(4),
            device: DeviceId(5),
            platform: Platform::Fcm,
            token: "tok".into(),
            conv: ConvId(7),
            seq: Seq(9),
            sender: UserId(1),
            preview: preview.map(str::to_owned),
            unread: 2,
            count: 1,
            created: UnixMillis(3),
        }
    }

    #[test]
    fn push_previews_are_sealed_and_bound_to_their_job() {
        let k = keys(&[1]);
        let bytes = encode_push_job(8, &job(Some(BODY)), Some(&k)).expect("seals");
        assert_eq!(bytes[0], FORMAT_SEALED);
        assert!(!contains(&bytes, BODY.as_bytes()));
        let back = decode_push_job("outbox", b"k", &bytes, 8, Some(&k)).expect("opens");
        assert_eq!(back, Some(job(Some(BODY))));
        let moved = decode_push_job("outbox", b"k", &bytes, 9, Some(&k));
        assert!(matches!(moved, Err(Error::Decrypt { .. })), "{moved:?}");
        assert!(decode_push_job("outbox", b"k", &bytes, 8, None).is_err());
        let none = encode_push_job(8, &job(None), Some(&k)).expect("encodes");
        assert_eq!(none[0], FORMAT_V1);
        let back = decode_push_job("outbox", b"k", &none, 8, Some(&k)).expect("decodes");
        assert_eq!(back, Some(job(None)));
        let plain = encode_push_job(8, &job(Some(BODY)), None).expect("encodes");
        assert!(contains(&plain, BODY.as_bytes()));
        let back = decode_push_job("outbox", b"k", &plain, 8, Some(&k)).expect("decodes");
        assert_eq!(back, Some(job(Some(BODY))));
    }
}
