//! Minting auth tokens for tests and tools.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol::token::{Claims, TokenKey};
use protocol::{DeviceId, UserId};

/// A token for `user` on `device`, issued now and valid for `ttl` (whole
/// seconds, rounded down). `Duration::ZERO` gives a token that is already
/// expired: the server refuses a token from second `exp` on.
///
/// # Panics
/// If `secret` is shorter than [`protocol::token::SECRET_BYTES_MIN`]; the
/// server would refuse to start with it, so this is a bug in the caller.
pub fn mint_token(secret: &[u8], user: UserId, device: DeviceId, ttl: Duration) -> String {
    let issued = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    mint_token_with(
        secret,
        &Claims {
            user,
            device,
            issued,
            expires: issued.saturating_add(ttl.as_secs()),
        },
    )
}

/// A token with exactly these claims (for tokens issued in the past or the
/// future).
///
/// # Panics
/// As [`mint_token`].
pub fn mint_token_with(secret: &[u8], claims: &Claims) -> String {
    let key = TokenKey::new(secret).expect("token secrets are at least SECRET_BYTES_MIN bytes");
    key.sign(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"switchboard example secret, not for production";

    #[test]
    fn minted_token_verifies_until_its_ttl() {
        let token = mint_token(SECRET, UserId(42), DeviceId(7), Duration::from_secs(60));
        let key = TokenKey::new(SECRET).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = key.verify(&token, now).unwrap();
        assert_eq!(claims.user, UserId(42));
        assert_eq!(claims.device, DeviceId(7));
        assert_eq!(claims.expires - claims.issued, 60);
        assert!(key.verify(&token, claims.expires).is_err());
    }

    /// The test vector of PROTOCOL.md "Tokens".
    #[test]
    fn mint_with_matches_the_protocol_vector() {
        let claims = Claims {
            user: UserId(42),
            device: DeviceId(7),
            issued: 1_767_225_600,
            expires: 1_767_830_400,
        };
        assert_eq!(
            mint_token_with(SECRET, &claims),
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI0MiIsImRldiI6IjciLCJpYXQiOjE3NjcyMjU2MDAsImV4cCI6MTc2NzgzMDQwMH0.x_W6CN8EEjtmPeyZcEvtv9ZRhOn3nWCQxawTrEJXi-M"
        );
    }
}
