#![no_main]
//! `TokenKey::verify` on any string. The first byte picks a mode: even, the
//! rest is the token; odd, the rest is a token's `header.payload`, which this
//! target signs with the key so that the fuzzer gets past the signature check
//! to the claims parser. An accepted token is unexpired, and its claims
//! signed again verify to the same claims.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use protocol::token::TokenKey;
use sha2::Sha256;

/// The secret of the test vector in docs/PROTOCOL.md, so that the seed
/// corpus (made from that vector) verifies.
const SECRET: &[u8] = b"switchboard example secret, not for production";

/// Inside the test vector's validity.
const NOW: u64 = 1_767_225_600;

fn sign(signed_part: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("HMAC takes keys of any length");
    mac.update(signed_part.as_bytes());
    format!("{signed_part}.{}", B64.encode(mac.finalize().into_bytes()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let key = TokenKey::new(SECRET).expect("the secret is long enough");
    let token = if mode & 1 == 0 {
        text.to_owned()
    } else {
        sign(text)
    };
    let Ok(claims) = key.verify(&token, NOW) else {
        return;
    };
    assert!(claims.expires > NOW, "accepted an expired token");
    assert_eq!(key.verify(&key.sign(&claims), NOW), Ok(claims));
});
