//! The WebSocket opening handshake, server side (RFC 6455 §4.2).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

use super::error::RequestError;
use super::request::Request;
use super::response::{Status, is_token, write_header, write_status_line};

/// Appended to the client's key before hashing (RFC 6455 §1.3).
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` value: base64 of a SHA-1, always 28 ASCII bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcceptKey([u8; 28]);

impl AcceptKey {
    /// The answer to the client's `Sec-WebSocket-Key`.
    pub fn new(key: &str) -> AcceptKey {
        let mut sha1 = Sha1::new();
        sha1.update(key.as_bytes());
        sha1.update(ACCEPT_GUID);
        let mut out = [0; 28];
        let written = STANDARD
            .encode_slice(sha1.finalize(), &mut out)
            .expect("20 bytes encode to 28 base64 bytes");
        assert_eq!(written, 28);
        AcceptKey(out)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("base64 is ASCII")
    }
}

/// A valid upgrade request, ready for its 101 response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    accept: AcceptKey,
}

impl Handshake {
    /// Checks that `request` is a WebSocket upgrade this server accepts (RFC 6455
    /// §4.2.1), in this order:
    /// - the method is `GET` (else 405 with `Allow: GET`);
    /// - the version is HTTP/1.1 (else 400);
    /// - `Upgrade` lists `websocket` (else 426 with `Upgrade: websocket`);
    /// - `Connection` lists `upgrade` (else 400);
    /// - `Sec-WebSocket-Version` is `13` (else 426 with `Sec-WebSocket-Version: 13`);
    /// - there is one `Sec-WebSocket-Key`, the base64 of 16 bytes (else 400).
    ///
    /// Tokens, origins and subprotocols are the caller's to check.
    pub fn validate(request: &Request<'_>) -> Result<Handshake, RequestError> {
        if request.method() != "GET" {
            return Err(RequestError::MethodNotAllowed { allow: "GET" });
        }
        if !request.is_http11() {
            return Err(RequestError::UpgradeNeedsHttp11);
        }
        if !request.has_token("upgrade", "websocket") {
            return Err(RequestError::UpgradeRequired);
        }
        if !request.has_token("connection", "upgrade") {
            return Err(RequestError::ConnectionNotUpgrade);
        }
        if request.header_str("sec-websocket-version") != Some("13") {
            return Err(RequestError::UnsupportedWebSocketVersion);
        }
        let mut keys = request.header_all("sec-websocket-key");
        let (Some(key), None) = (keys.next(), keys.next()) else {
            return Err(RequestError::BadWebSocketKey);
        };
        let key = std::str::from_utf8(key)
            .map(str::trim)
            .ok()
            .filter(|key| is_valid_key(key))
            .ok_or(RequestError::BadWebSocketKey)?;
        Ok(Handshake {
            accept: AcceptKey::new(key),
        })
    }

    pub fn accept(&self) -> AcceptKey {
        self.accept
    }

    /// Appends the 101 response, with `protocol` (one of [`offered_protocols`]) as
    /// `Sec-WebSocket-Protocol` if given.
    pub fn write_response(&self, out: &mut Vec<u8>, protocol: Option<&str>) {
        write_switching_protocols(out, &self.accept, protocol);
    }
}

/// The subprotocols the client offered in `Sec-WebSocket-Protocol`, in its order of
/// preference; items that are not HTTP tokens are skipped.
pub fn offered_protocols<'b>(request: &Request<'b>) -> impl Iterator<Item = &'b str> {
    request
        .list("sec-websocket-protocol")
        .filter(|p| is_token(p))
}

/// Whether `key` is the base64 of exactly 16 bytes (RFC 6455 §4.2.1 item 5).
fn is_valid_key(key: &str) -> bool {
    let mut decoded = [0; 18];
    key.len() == 24 && STANDARD.decode_slice(key, &mut decoded) == Ok(16)
}

/// Appends `101 Switching Protocols` accepting the upgrade, with `protocol` as the chosen
/// subprotocol. Panics if `protocol` is not an HTTP token.
pub fn write_switching_protocols(out: &mut Vec<u8>, accept: &AcceptKey, protocol: Option<&str>) {
    write_status_line(out, Status::SwitchingProtocols);
    out.extend_from_slice(b"Upgrade: websocket\r\nConnection: Upgrade\r\n");
    write_header(out, "Sec-WebSocket-Accept", accept.as_str());
    if let Some(protocol) = protocol {
        assert!(
            is_token(protocol),
            "subprotocol {protocol:?} is not a token"
        );
        write_header(out, "Sec-WebSocket-Protocol", protocol);
    }
    out.extend_from_slice(b"\r\n");
}
