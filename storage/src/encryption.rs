//! Encryption at rest: the key ring and sealing with XChaCha20-Poly1305.
//!
//! Each sealed value gets a fresh random 24-byte nonce (the extended nonce is
//! large enough for random nonces to be safe) and records the id of the key
//! that sealed it, so keys can be rotated: new writes use the current key,
//! reads use whichever key the record names.

use std::path::Path;
use std::sync::Arc;

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305, XNonce};

use crate::error::{Error, Result};

/// Bytes of a nonce.
pub(crate) const NONCE_LEN: usize = 24;

/// Hex digits of one key (32 bytes).
const KEY_HEX_LEN: usize = 64;

/// The keys that encrypt message bodies at rest, each with a numeric id.
///
/// The **last** key listed is the current one: every new write is sealed with
/// it. Every key is used for reads, so a rotation appends a new key and keeps
/// the old ones. Removing a key makes the records sealed with it unreadable
/// (there is no re-encryption tool yet).
///
/// Text format ([`EncryptionKeys::parse`]): one key per line as
/// `<id>:<64 hex digits>`, the id a decimal `u32` and the hex digits the
/// 32-byte key (`openssl rand -hex 32` makes one). Entries may also be
/// separated by commas (handy in an environment variable). Blank lines and
/// `#` comments are ignored; ids must be unique.
///
/// Key bytes never appear in `Debug` output, logs or errors: `Debug` shows
/// the ids only.
#[derive(Clone)]
pub struct EncryptionKeys {
    /// In listed order; never empty.
    ring: Arc<[(u32, XChaCha20Poly1305)]>,
}

impl std::fmt::Debug for EncryptionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionKeys")
            .field("ids", &self.ids())
            .field("current", &self.current_id())
            .finish()
    }
}

/// A value sealed by [`EncryptionKeys::seal`].
pub(crate) struct Sealed {
    pub(crate) key: u32,
    pub(crate) nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the 16-byte tag.
    pub(crate) ciphertext: Vec<u8>,
}

impl EncryptionKeys {
    /// Builds a key ring from `(id, key)` pairs; the last is the current key.
    pub fn new(keys: impl IntoIterator<Item = (u32, [u8; 32])>) -> Result<EncryptionKeys> {
        let mut ring: Vec<(u32, XChaCha20Poly1305)> = Vec::new();
        for (i, (id, mut key)) in keys.into_iter().enumerate() {
            let checked = check_key(&ring, id, &key);
            let cipher = XChaCha20Poly1305::new(Key::from_slice(&key));
            wipe(&mut key);
            checked.map_err(|reason| Error::Keys(format!("key #{}: {reason}", i + 1)))?;
            ring.push((id, cipher));
        }
        Self::from_ring(ring)
    }

    /// Parses the text format described on [`EncryptionKeys`].
    pub fn parse(text: &str) -> Result<EncryptionKeys> {
        let mut ring: Vec<(u32, XChaCha20Poly1305)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default();
            for entry in line.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                let at = |reason: String| Error::Keys(format!("line {}: {reason}", n + 1));
                let (id, mut key) = parse_entry(entry).map_err(at)?;
                let checked = check_key(&ring, id, &key);
                let cipher = XChaCha20Poly1305::new(Key::from_slice(&key));
                wipe(&mut key);
                checked.map_err(at)?;
                ring.push((id, cipher));
            }
        }
        Self::from_ring(ring)
    }

    /// Reads and parses a key file. Keep it readable by the server's user
    /// only (`chmod 600`).
    pub fn from_file(path: impl AsRef<Path>) -> Result<EncryptionKeys> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Keys(format!("cannot read key file {}: {e}", path.display())))?;
        let parsed = Self::parse(&text);
        wipe(&mut text.into_bytes());
        parsed.map_err(|e| match e {
            Error::Keys(reason) => Error::Keys(format!("{}: {reason}", path.display())),
            other => other,
        })
    }

    /// Parses the keys held in environment variable `var`.
    pub fn from_env(var: &str) -> Result<EncryptionKeys> {
        let text = std::env::var(var).map_err(|e| Error::Keys(format!("${var}: {e}")))?;
        let parsed = Self::parse(&text);
        wipe(&mut text.into_bytes());
        parsed.map_err(|e| match e {
            Error::Keys(reason) => Error::Keys(format!("${var}: {reason}")),
            other => other,
        })
    }

    fn from_ring(ring: Vec<(u32, XChaCha20Poly1305)>) -> Result<EncryptionKeys> {
        if ring.is_empty() {
            return Err(Error::Keys(
                "no keys (want lines of <id>:<64 hex digits>)".into(),
            ));
        }
        Ok(EncryptionKeys { ring: ring.into() })
    }

    /// The key ids, in listed order.
    pub fn ids(&self) -> Vec<u32> {
        self.ring.iter().map(|(id, _)| *id).collect()
    }

    /// The id of the key new writes are sealed with (the last listed).
    pub fn current_id(&self) -> u32 {
        self.current().0
    }

    fn current(&self) -> &(u32, XChaCha20Poly1305) {
        self.ring.last().expect("a key ring is never empty")
    }

    /// Seals `plain` with the current key and a fresh random nonce; `aad`
    /// (not stored) must be given again to open it.
    pub(crate) fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<Sealed> {
        let (key, cipher) = self.current();
        let mut nonce = [0; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| Error::Encrypt(format!("no random nonce: {e}")))?;
        let ciphertext = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
            .map_err(|_| Error::Encrypt("value too long to seal".into()))?;
        Ok(Sealed {
            key: *key,
            nonce,
            ciphertext,
        })
    }

    /// Opens a sealed value; the error is a reason for [`Error::Decrypt`].
    pub(crate) fn open(
        &self,
        key: u32,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, String> {
        let (_, cipher) = self
            .ring
            .iter()
            .find(|(id, _)| *id == key)
            .ok_or_else(|| format!("sealed with key {key}, which is not configured"))?;
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| {
                format!("authentication failed with key {key} (wrong key or altered record)")
            })
    }
}

/// Splits `<id>:<hex>` and decodes it; errors name no key material.
fn parse_entry(entry: &str) -> Result<(u32, [u8; 32]), String> {
    let Some((id, hex)) = entry.split_once(':') else {
        return Err("expected <id>:<64 hex digits>".into());
    };
    let id: u32 = id
        .trim()
        .parse()
        .map_err(|_| "key id is not a number from 0 to 4294967295".to_owned())?;
    let hex = hex.trim().as_bytes();
    if hex.len() != KEY_HEX_LEN {
        return Err(format!(
            "key {id} has {} hex digits, want {KEY_HEX_LEN} (32 bytes)",
            hex.len()
        ));
    }
    let mut key = [0u8; 32];
    for (byte, pair) in key.iter_mut().zip(hex.chunks_exact(2)) {
        let (Some(hi), Some(lo)) = (hex_digit(pair[0]), hex_digit(pair[1])) else {
            wipe(&mut key);
            return Err(format!("key {id} has a character that is not a hex digit"));
        };
        *byte = hi << 4 | lo;
    }
    Ok((id, key))
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Refuses a duplicate id or an all-zero key (a key file never filled in).
fn check_key(ring: &[(u32, XChaCha20Poly1305)], id: u32, key: &[u8; 32]) -> Result<(), String> {
    if ring.iter().any(|(have, _)| *have == id) {
        return Err(format!("key id {id} appears twice"));
    }
    if key.iter().all(|b| *b == 0) {
        return Err(format!("key {id} is all zeros"));
    }
    Ok(())
}

/// Best-effort overwrite of secret bytes that are about to be dropped.
fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const K2: &str = "F0E1D2C3B4A5968778695A4B3C2D1E0FF0E1D2C3B4A5968778695A4B3C2D1E0F";

    fn keys_err(text: &str) -> String {
        EncryptionKeys::parse(text)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn parses_ids_in_order_with_comments_blank_lines_and_commas() {
        let text = format!("# keys\n\n1:{K1}  # old\n 7 : {K2} \n");
        let k = EncryptionKeys::parse(&text).expect("parses");
        assert_eq!(k.ids(), vec![1, 7]);
        assert_eq!(k.current_id(), 7);
        let k = EncryptionKeys::parse(&format!("7:{K2},1:{K1},")).expect("parses");
        assert_eq!(k.ids(), vec![7, 1]);
        assert_eq!(k.current_id(), 1);
    }

    #[test]
    fn bad_key_text_is_refused_without_echoing_it() {
        let bad_hex = format!("1:{K1}\n2:{}zz", &K2[..62]);
        let cases = [
            (
                bad_hex.clone(),
                "line 2: key 2 has a character that is not a hex digit",
            ),
            (
                format!("1:{}", &K1[..60]),
                "line 1: key 1 has 60 hex digits, want 64",
            ),
            (
                format!("1:{K1}00"),
                "line 1: key 1 has 66 hex digits, want 64",
            ),
            (format!("3:{K1}\n3:{K2}"), "line 2: key id 3 appears twice"),
            (format!("x:{K1}"), "line 1: key id is not a number"),
            (format!("-1:{K1}"), "line 1: key id is not a number"),
            (K1.to_owned(), "line 1: expected <id>:<64 hex digits>"),
            (
                format!("1:{}", "0".repeat(64)),
                "line 1: key 1 is all zeros",
            ),
            (String::new(), "no keys"),
            ("# nothing\n\n".to_owned(), "no keys"),
        ];
        for (text, want) in cases {
            let got = keys_err(&text);
            assert!(got.contains(want), "{got:?} should contain {want:?}");
            for secret in [K1, K2, &K1[..16], &K2[..16], &K2[..62]] {
                assert!(!got.contains(secret), "{got:?} leaks key text");
            }
        }
    }

    #[test]
    fn debug_shows_ids_only() {
        let k = EncryptionKeys::parse(&format!("1:{K1}\n2:{K2}")).expect("parses");
        let debug = format!("{k:?} {k:#?}");
        assert_eq!(
            format!("{k:?}"),
            "EncryptionKeys { ids: [1, 2], current: 2 }"
        );
        for secret in [K1, K2, &K1[..8], "0, 1, 2, 3", "[0, 1, 2"] {
            assert!(!debug.contains(secret), "{debug} leaks key bytes");
        }
        assert!(!format!("{:?}", crate::Config::new("/x").encryption(k)).contains(&K1[..8]));
    }

    #[test]
    fn from_file_and_env() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys");
        std::fs::write(&path, format!("5:{K1}\n")).expect("write");
        assert_eq!(
            EncryptionKeys::from_file(&path).expect("reads").ids(),
            vec![5]
        );
        std::fs::write(&path, format!("5:{}\n", &K1[..10])).expect("write");
        let err = EncryptionKeys::from_file(&path)
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("keys: line 1: key 5 has 10 hex digits"),
            "{err}"
        );
        assert!(!err.contains(&K1[..10]));
        let missing = EncryptionKeys::from_file(dir.path().join("none")).expect_err("missing");
        assert!(missing.to_string().contains("cannot read key file"));
        let err = EncryptionKeys::from_env("STORAGE_TEST_KEYS_SURELY_UNSET").expect_err("unset");
        assert!(err.to_string().contains("$STORAGE_TEST_KEYS_SURELY_UNSET"));
    }

    #[test]
    fn new_checks_like_parse() {
        let k = EncryptionKeys::new([(1, [1; 32]), (2, [2; 32])]).expect("builds");
        assert_eq!(k.current_id(), 2);
        assert!(EncryptionKeys::new([(1, [1; 32]), (1, [2; 32])]).is_err());
        assert!(EncryptionKeys::new([(1, [0; 32])]).is_err());
        assert!(EncryptionKeys::new([]).is_err());
    }

    #[test]
    fn seal_opens_only_with_its_key_and_aad() {
        let old = EncryptionKeys::new([(1, [1; 32])]).expect("builds");
        let both = EncryptionKeys::new([(1, [1; 32]), (2, [2; 32])]).expect("builds");
        let s = old.seal(b"where", b"hello").expect("seals");
        assert_eq!(s.key, 1);
        assert!(!s.ciphertext.windows(5).any(|w| w == b"hello"));
        let open = |k: &EncryptionKeys, aad: &[u8], ct: &[u8]| k.open(s.key, &s.nonce, aad, ct);
        assert_eq!(
            open(&both, b"where", &s.ciphertext).expect("opens"),
            b"hello"
        );
        assert!(open(&both, b"elsewhere", &s.ciphertext).is_err());
        let mut flipped = s.ciphertext.clone();
        flipped[0] ^= 1;
        let err = open(&both, b"where", &flipped).expect_err("tampered");
        assert!(err.contains("authentication failed"), "{err}");
        let only_new = EncryptionKeys::new([(2, [2; 32])]).expect("builds");
        let err = open(&only_new, b"where", &s.ciphertext).expect_err("no key 1");
        assert_eq!(err, "sealed with key 1, which is not configured");
        let again = old.seal(b"where", b"hello").expect("seals");
        assert_ne!(again.nonce, s.nonce, "a fresh nonce per seal");
    }
}
