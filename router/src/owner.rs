//! Ownership: which shard owns a user or a conversation.

use protocol::ids::mix64;
use protocol::{ConvId, UserId};

/// A shard's index, `0..shards`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u16);

impl ShardId {
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

fn owner(id: u64, shards: u16) -> ShardId {
    assert!(shards > 0, "a mesh has at least one shard");
    // `as` cannot truncate: the remainder is below `shards`, a u16.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "remainder < shards <= u16::MAX"
    )]
    ShardId((mix64(id) % u64::from(shards)) as u16)
}

/// The home shard of `user`: all of its devices' connections live there.
pub fn shard_of_user(user: UserId, shards: u16) -> ShardId {
    owner(user.0, shards)
}

/// The shard that assigns `conv`'s sequence numbers.
pub fn shard_of_conv(conv: ConvId, shards: u16) -> ShardId {
    // A different salt from users', so that a user's home shard and the
    // 1:1 conversations it is in are not correlated.
    owner(conv.0 ^ 0x636f_6e76_5f73_616c, shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_is_stable_and_in_range() {
        for n in [1u16, 2, 3, 16, 1024] {
            for id in [0u64, 1, 42, u64::MAX] {
                let s = shard_of_user(UserId(id), n);
                assert!(s.0 < n);
                assert_eq!(s, shard_of_user(UserId(id), n));
                assert!(shard_of_conv(ConvId(id), n).0 < n);
            }
        }
    }

    #[test]
    fn ownership_spreads_evenly() {
        let n = 4u16;
        let mut counts = [0u32; 4];
        for id in 0..40_000u64 {
            counts[shard_of_user(UserId(id), n).index()] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn ownership_values_are_fixed() {
        // Changing the hash moves users between shards on restart of a
        // multi-node deployment; keep it fixed.
        assert_eq!(shard_of_user(UserId(1), 16), shard_of_user(UserId(1), 16));
        assert_eq!(shard_of_user(UserId(1), 1), ShardId(0));
    }
}
