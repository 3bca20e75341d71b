//! Auth tokens: JWTs signed with HMAC-SHA256 (`alg: HS256`).
//!
//! Claims: `sub` (user id, decimal string), `dev` (device id, decimal string),
//! `iat` and `exp` (seconds since the Unix epoch). Any JWT library can mint a
//! token the engine accepts, given the shared secret. Verification is sans-IO:
//! the caller passes the current time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::ids::{DeviceId, UserId};
use crate::limits::AUTH_TOKEN_BYTES_MAX;

type HmacSha256 = Hmac<Sha256>;

/// `{"alg":"HS256","typ":"JWT"}`, the only header this module writes.
const HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// Shortest secret accepted: RFC 7518 §3.2 asks for at least the hash size.
pub const SECRET_BYTES_MIN: usize = 32;

/// Who a token speaks for, and until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claims {
    pub user: UserId,
    pub device: DeviceId,
    /// Issued at, seconds since the Unix epoch.
    pub issued: u64,
    /// Expires at, seconds since the Unix epoch; invalid from this second on.
    pub expires: u64,
}

#[derive(Serialize, Deserialize)]
struct WireClaims {
    sub: UserId,
    dev: DeviceId,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct WireHeader {
    alg: String,
}

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("unsupported token algorithm {0:?} (want HS256)")]
    UnsupportedAlgorithm(String),
    #[error("bad token signature")]
    BadSignature,
    #[error("token expired at {expires}, now {now}")]
    Expired { expires: u64, now: u64 },
}

/// Why a secret cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("token secret is {0} bytes, need at least {SECRET_BYTES_MIN}")]
pub struct WeakSecret(pub usize);

/// The shared HMAC secret. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct TokenKey {
    mac: HmacSha256,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    pub fn new(secret: &[u8]) -> Result<TokenKey, WeakSecret> {
        if secret.len() < SECRET_BYTES_MIN {
            return Err(WeakSecret(secret.len()));
        }
        let mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
        Ok(TokenKey { mac })
    }

    /// Mints a token for `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        let wire = WireClaims {
            sub: claims.user,
            dev: claims.device,
            iat: claims.issued,
            exp: claims.expires,
        };
        let payload = serde_json::to_vec(&wire).expect("claims always serialize");
        let mut token = String::with_capacity(HEADER_B64.len() + payload.len() * 4 / 3 + 48);
        token.push_str(HEADER_B64);
        token.push('.');
        B64.encode_string(payload, &mut token);
        let mut mac = self.mac.clone();
        mac.update(token.as_bytes());
        let sig = mac.finalize().into_bytes();
        token.push('.');
        B64.encode_string(sig, &mut token);
        token
    }

    /// Checks the signature and expiry of `token` at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        if token.len() > AUTH_TOKEN_BYTES_MAX {
            return Err(TokenError::Malformed("token too long"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("want three dot-separated parts"));
        };
        let header = B64
            .decode(header)
            .map_err(|_| TokenError::Malformed("header not base64url"))?;
        let header: WireHeader = serde_json::from_slice(&header)
            .map_err(|_| TokenError::Malformed("header not JSON"))?;
        if header.alg != "HS256" {
            return Err(TokenError::UnsupportedAlgorithm(header.alg));
        }
        let sig = B64
            .decode(sig)
            .map_err(|_| TokenError::Malformed("signature not base64url"))?;
        let signed_len = token.len() - sig_b64_len(token);
        let mut mac = self.mac.clone();
        mac.update(&token.as_bytes()[..signed_len]);
        // `verify_slice` compares in constant time.
        mac.verify_slice(&sig)
            .map_err(|_| TokenError::BadSignature)?;
        let payload = B64
            .decode(payload)
            .map_err(|_| TokenError::Malformed("payload not base64url"))?;
        let wire: WireClaims = serde_json::from_slice(&payload)
            .map_err(|_| TokenError::Malformed("payload lacks sub, dev, iat or exp"))?;
        if now >= wire.exp {
            return Err(TokenError::Expired {
                expires: wire.exp,
                now,
            });
        }
        Ok(Claims {
            user: wire.sub,
            device: wire.dev,
            issued: wire.iat,
            expires: wire.exp,
        })
    }
}

/// Bytes of the signature part plus its leading dot.
fn sig_b64_len(token: &str) -> usize {
    token.rfind('.').map_or(0, |dot| token.len() - dot)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn claims() -> Claims {
        Claims {
            user: UserId(42),
            device: DeviceId(7),
            issued: 1_000,
            expires: 2_000,
        }
    }

    #[test]
    fn sign_then_verify() {
        let key = TokenKey::new(SECRET).unwrap();
        let token = key.sign(&claims());
        assert_eq!(key.verify(&token, 1_500), Ok(claims()));
    }

    #[test]
    fn header_constant_matches_its_json() {
        assert_eq!(
            B64.decode(HEADER_B64).unwrap(),
            br#"{"alg":"HS256","typ":"JWT"}"#
        );
    }

    #[test]
    fn expired() {
        let key = TokenKey::new(SECRET).unwrap();
        let token = key.sign(&claims());
        assert_eq!(
            key.verify(&token, 2_000),
            Err(TokenError::Expired {
                expires: 2_000,
                now: 2_000
            })
        );
    }

    #[test]
    fn bad_signature_other_key_and_tampered_payload() {
        let key = TokenKey::new(SECRET).unwrap();
        let other = TokenKey::new(b"another secret of at least 32 bytes!").unwrap();
        let token = key.sign(&claims());
        assert_eq!(other.verify(&token, 1_500), Err(TokenError::BadSignature));

        let forged = Claims {
            user: UserId(1),
            ..claims()
        };
        let forged_payload = other.sign(&forged);
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[1] = forged_payload.split('.').nth(1).unwrap();
        assert_eq!(
            key.verify(&parts.join("."), 1_500),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn malformed() {
        let key = TokenKey::new(SECRET).unwrap();
        for bad in [
            "",
            "a",
            "a.b",
            "a.b.c.d",
            "!!.x.y",
            &"a".repeat(AUTH_TOKEN_BYTES_MAX + 1),
        ] {
            assert!(
                matches!(key.verify(bad, 0), Err(TokenError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rejects_alg_none() {
        let key = TokenKey::new(SECRET).unwrap();
        let header = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = B64.encode(br#"{"sub":"1","dev":"1","iat":0,"exp":9999999999}"#);
        let token = format!("{header}.{payload}.");
        assert_eq!(
            key.verify(&token, 0),
            Err(TokenError::UnsupportedAlgorithm("none".into()))
        );
    }

    #[test]
    fn weak_secret() {
        assert_eq!(TokenKey::new(b"short").unwrap_err(), WeakSecret(5));
    }

    /// The payload is plain registered JWT claims, so any JWT library reads it.
    #[test]
    fn payload_is_standard_jwt_claims() {
        let key = TokenKey::new(SECRET).unwrap();
        let token = key.sign(&claims());
        let payload = B64.decode(token.split('.').nth(1).unwrap()).unwrap();
        assert_eq!(payload, br#"{"sub":"42","dev":"7","iat":1000,"exp":2000}"#);
    }
}
