//! Identifier newtypes.
//!
//! Every id is a `u64` on the wire. In the binary encoding it is a varint; in
//! JSON, ids that can exceed 2^53 ([`UserId`], [`DeviceId`], [`ConvId`],
//! [`MsgId`], [`ClientMsgId`]) are decimal strings so that JavaScript clients
//! never lose precision. [`Seq`] stays a JSON number: a conversation would need
//! 2^53 messages to overflow it.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    // itoa into a stack buffer would avoid this allocation, but
                    // JSON is the browser path, not the hot one.
                    s.collect_str(&self.0)
                } else {
                    s.serialize_u64(self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    d.deserialize_any(IdVisitor).map($name)
                } else {
                    u64::deserialize(d).map($name)
                }
            }
        }
    };
}

/// Accepts a decimal string (canonical) or a non-negative integer.
struct IdVisitor;

impl Visitor<'_> for IdVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a u64 id as a decimal string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        // `u64::from_str` accepts a leading '+'; ids are canonical digits only.
        if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(E::invalid_value(de::Unexpected::Str(v), &self));
        }
        v.parse()
            .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }
}

string_id!(
    /// A user account.
    UserId
);
string_id!(
    /// One device of a user; unique within that user.
    DeviceId
);
string_id!(
    /// A conversation: 1:1 ("direct") or group. The top bit says which.
    ConvId
);
string_id!(
    /// A server-assigned, globally unique message id.
    MsgId
);
string_id!(
    /// A sender-chosen id for one send; a resend with the same id is deduped.
    ClientMsgId
);

const GROUP_BIT: u64 = 1 << 63;

impl ConvId {
    /// The id of the 1:1 conversation between `a` and `b`; symmetric in its
    /// arguments. The result never has the group bit set.
    ///
    /// The hash is part of the on-disk format: changing it orphans every
    /// stored direct conversation.
    pub fn direct(a: UserId, b: UserId) -> ConvId {
        let (lo, hi) = if a <= b { (a.0, b.0) } else { (b.0, a.0) };
        let h = mix64(mix64(lo ^ 0x5357_4254_4452_4354) ^ hi);
        ConvId(h & !GROUP_BIT)
    }

    /// A group conversation id from a 63-bit number (the high bit is forced).
    pub fn group(n: u64) -> ConvId {
        ConvId(n | GROUP_BIT)
    }

    pub fn is_group(self) -> bool {
        self.0 & GROUP_BIT != 0
    }
}

/// splitmix64's finaliser: a fixed, well-distributed 64-bit mix.
pub const fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A position in one conversation's message stream. The first message is 1;
/// `Seq(0)` means "before the first message".
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    pub const ZERO: Seq = Seq(0);

    /// The next sequence number.
    ///
    /// # Panics
    /// At `u64::MAX`, which no conversation reaches.
    #[must_use]
    pub fn next(self) -> Seq {
        Seq(self
            .0
            .checked_add(1)
            .expect("a conversation never holds 2^64 messages"))
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Milliseconds since the Unix epoch, UTC.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// The current wall-clock time.
    pub fn now() -> UnixMillis {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        UnixMillis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A client-chosen request id, echoed in the reply or error for that request.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct RequestId(pub u32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_id_is_symmetric_and_not_a_group() {
        let a = UserId(7);
        let b = UserId(u64::MAX);
        assert_eq!(ConvId::direct(a, b), ConvId::direct(b, a));
        assert!(!ConvId::direct(a, b).is_group());
        assert_ne!(ConvId::direct(a, b), ConvId::direct(a, UserId(8)));
    }

    #[test]
    fn direct_id_is_stable() {
        // On-disk format: this value must never change.
        assert_eq!(
            ConvId::direct(UserId(1), UserId(2)).0,
            783_840_558_297_962_166
        );
    }

    #[test]
    fn group_ids_have_the_group_bit() {
        assert!(ConvId::group(5).is_group());
        assert_eq!(ConvId::group(5), ConvId::group(5 | GROUP_BIT));
    }

    #[test]
    fn json_ids_are_strings_and_reject_junk() {
        assert_eq!(
            serde_json::to_string(&UserId(u64::MAX)).unwrap(),
            "\"18446744073709551615\""
        );
        assert_eq!(
            serde_json::from_str::<UserId>("\"42\"").unwrap(),
            UserId(42)
        );
        assert_eq!(serde_json::from_str::<UserId>("42").unwrap(), UserId(42));
        for bad in [
            "\"+1\"",
            "\"\"",
            "\"-1\"",
            "-1",
            "\"18446744073709551616\"",
            "1.5",
            "null",
        ] {
            assert!(serde_json::from_str::<UserId>(bad).is_err(), "{bad}");
        }
    }
}
