//! Development mode: a token endpoint and a persistent local token secret,
//! so that the README's run command gives a usable server. Never on in
//! production (`--dev` is off by default).

use std::io::{self, Write};
use std::path::Path;

use protocol::limits::DEV_TOKEN_TTL;
use protocol::token::{Claims, TokenKey};
use protocol::{DeviceId, UserId};
use serde::{Deserialize, Serialize};

use crate::http::{self, Status};

/// The file in the data directory that keeps the dev token secret, so that
/// tokens stay valid across restarts of a dev server.
const SECRET_FILE: &str = "dev-token-secret";

/// Reads the dev secret from the data directory, creating it on first use.
pub fn load_or_create_secret(data_dir: &Path) -> io::Result<String> {
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 64 => return Ok(s.trim().to_owned()),
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is shorter than 64 hex characters", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data_dir)?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
    let secret: String = bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    });
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    Ok(secret)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    user: UserId,
    device: DeviceId,
}

#[derive(Serialize)]
struct TokenReply {
    token: String,
    user: UserId,
    device: DeviceId,
    expires: u64,
}

/// Answers `POST /v1/dev/token {"user": "42", "device": "1"}` with a token
/// valid for [`DEV_TOKEN_TTL`].
pub fn token_endpoint(key: &TokenKey, body: &[u8], now: u64, out: &mut Vec<u8>) {
    let Ok(req) = serde_json::from_slice::<TokenRequest>(body) else {
        http::write_json(
            out,
            Status::BadRequest,
            br#"{"error":"want {\"user\": \"<id>\", \"device\": \"<id>\"}"}"#,
        );
        return;
    };
    if req.device.0 == 0 {
        // Reserved: the server keeps per-user state under device 0.
        http::write_json(
            out,
            Status::BadRequest,
            br#"{"error":"device ids start at 1"}"#,
        );
        return;
    }
    let expires = now + DEV_TOKEN_TTL.as_secs();
    let claims = Claims {
        user: req.user,
        device: req.device,
        issued: now,
        expires,
    };
    let reply = TokenReply {
        token: key.sign(&claims),
        user: req.user,
        device: req.device,
        expires,
    };
    let json = serde_json::to_vec(&reply).expect("a token reply always serializes");
    http::write_json(out, Status::Ok, &json);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::new(&[7; 32]).unwrap()
    }

    #[test]
    fn token_endpoint_mints_a_verifiable_token() {
        let mut out = Vec::new();
        token_endpoint(&key(), br#"{"user":"42","device":"3"}"#, 1_000, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        let claims = key().verify(v["token"].as_str().unwrap(), 1_001).unwrap();
        assert_eq!((claims.user, claims.device), (UserId(42), DeviceId(3)));
    }

    #[test]
    fn token_endpoint_refuses_bad_bodies() {
        for body in [
            &b""[..],
            b"{}",
            br#"{"user":"x","device":"1"}"#,
            br#"{"user":"1","device":"0"}"#,
            b"\xff",
        ] {
            let mut out = Vec::new();
            token_endpoint(&key(), body, 0, &mut out);
            assert!(out.starts_with(b"HTTP/1.1 400"), "{body:?}");
        }
    }

    #[test]
    fn secret_persists() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_secret(dir.path()).unwrap();
        let b = load_or_create_secret(dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
    }
}
