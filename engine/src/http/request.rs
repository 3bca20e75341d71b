//! Request heads: incremental, bounded parsing with `httparse`, and the header fields
//! the engine reads.

use std::borrow::Cow;
use std::fmt;

use protocol::limits::{AUTH_TOKEN_BYTES_MAX, HANDSHAKE_BYTES_MAX};

use super::error::RequestError;
use super::query;
use super::{BODY_BYTES_MAX, HEADERS_MAX};

/// A parsed request head, borrowing the bytes it was parsed from.
///
/// Parsing checks what every route depends on: the size bounds, an origin-form target,
/// one `Host` (HTTP/1.1), a valid `Content-Length` within [`BODY_BYTES_MAX`], and no
/// `Transfer-Encoding`. Route-specific checks (method, upgrade, token) are the caller's.
///
/// `Debug` shows header names but no values and no query: they may hold tokens.
pub struct Request<'b> {
    method: &'b str,
    path: &'b str,
    query: &'b str,
    minor_version: u8,
    headers: [httparse::Header<'b>; HEADERS_MAX],
    header_count: u8,
    head_len: usize,
    content_length: usize,
}

impl<'b> Request<'b> {
    /// Parses the request head at the start of `buf`, the bytes read so far.
    ///
    /// `Ok(None)`: the head is incomplete; read more and call again with all the bytes.
    /// The head may not exceed `HANDSHAKE_BYTES_MAX` bytes nor [`HEADERS_MAX`] fields
    /// (both 431). Bytes after the head are the body ([`Request::body`]) or, after an
    /// upgrade, the first WebSocket frames.
    pub fn parse(buf: &'b [u8]) -> Result<Option<Request<'b>>, RequestError> {
        let window = &buf[..buf.len().min(HANDSHAKE_BYTES_MAX)];
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut parsed = httparse::Request::new(&mut headers);
        let head_len = match parsed.parse(window) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() >= HANDSHAKE_BYTES_MAX => {
                return Err(RequestError::HeadTooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooManyHeaders),
            Err(e) => return Err(RequestError::Malformed(e)),
        };
        let method = parsed.method.expect("a complete head has a method");
        let target = parsed.path.expect("a complete head has a target");
        let minor_version = parsed.version.expect("a complete head has a version");
        let header_count = parsed.headers.len();
        let (path, query) = split_target(target)?;
        let mut request = Request {
            method,
            path,
            query,
            minor_version,
            headers,
            header_count: u8::try_from(header_count).expect("HEADERS_MAX fits in u8"),
            head_len,
            content_length: 0,
        };
        request.check_host()?;
        if request.header("transfer-encoding").is_some() {
            return Err(RequestError::TransferEncoding);
        }
        request.content_length = request.parse_content_length()?;
        Ok(Some(request))
    }

    /// `GET`, `POST`, … as sent (methods are case-sensitive).
    pub fn method(&self) -> &'b str {
        self.method
    }

    /// The path of the target, still percent-encoded, without the query.
    pub fn path(&self) -> &'b str {
        self.path
    }

    /// The query without the `?`; empty if there was none.
    pub fn query_string(&self) -> &'b str {
        self.query
    }

    /// The first query parameter called `name`, percent-decoded ([`query::param`]).
    pub fn query(&self, name: &str) -> Result<Option<Cow<'b, str>>, RequestError> {
        query::param(self.query, name)
    }

    /// Whether the request is HTTP/1.1 (otherwise HTTP/1.0).
    pub fn is_http11(&self) -> bool {
        self.minor_version == 1
    }

    /// Bytes of the head, up to and including the empty line.
    pub fn head_len(&self) -> usize {
        self.head_len
    }

    /// Bytes of the body, from `Content-Length` (0 without one).
    pub fn content_length(&self) -> usize {
        self.content_length
    }

    /// Bytes of the whole request: head and body.
    pub fn message_len(&self) -> usize {
        self.head_len + self.content_length
    }

    /// The body, if `buf` (the buffer the head was parsed from) holds all of it. If not,
    /// read until the buffer holds [`Request::message_len`] bytes and parse again: the head is
    /// small and bounded, and a `Request` borrows the buffer it came from.
    pub fn body<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        buf.get(self.head_len..self.message_len())
    }

    /// Every header field, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&'b str, &'b [u8])> {
        self.headers[..usize::from(self.header_count)]
            .iter()
            .map(|h| (h.name, h.value))
    }

    /// The value of the first field called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.header_all(name).next()
    }

    /// The value of the first field called `name`, as text without surrounding
    /// whitespace; `None` if it is absent or not UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&'b str> {
        std::str::from_utf8(self.header(name)?).ok().map(str::trim)
    }

    /// Whether any field called `name` lists `token` in its comma-separated value
    /// (case-insensitive), as in `Connection: keep-alive, Upgrade`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.list(name).any(|item| item.eq_ignore_ascii_case(token))
    }

    /// The items of every field called `name`, split on commas, trimmed, empty ones
    /// skipped; fields that are not UTF-8 are skipped.
    pub fn list(&self, name: &str) -> impl Iterator<Item = &'b str> {
        self.header_all(name)
            .filter_map(|value| std::str::from_utf8(value).ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|item| !item.is_empty())
    }

    pub fn host(&self) -> Option<&'b str> {
        self.header_str("host")
    }

    pub fn origin(&self) -> Option<&'b str> {
        self.header_str("origin")
    }

    /// The token of `Authorization: Bearer <token>` (the scheme is case-insensitive).
    pub fn bearer_token(&self) -> Option<&'b str> {
        let (scheme, token) = self.header_str("authorization")?.split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    }

    /// The client's auth token: the bearer token, else the `token` query parameter (for
    /// browsers, which cannot set headers on a WebSocket). A token over
    /// `AUTH_TOKEN_BYTES_MAX` is refused with 401.
    pub fn auth_token(&self) -> Result<Option<Cow<'b, str>>, RequestError> {
        let token = match self.bearer_token() {
            Some(token) => Some(Cow::Borrowed(token)),
            None => self.query("token")?,
        };
        match token {
            Some(token) if token.len() > AUTH_TOKEN_BYTES_MAX => Err(RequestError::Unauthorized),
            token => Ok(token),
        }
    }

    /// The values of every field called `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> impl Iterator<Item = &'b [u8]> {
        self.headers()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }

    /// RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host, an HTTP/1.0 one at most one.
    fn check_host(&self) -> Result<(), RequestError> {
        let count = self.header_all("host").count();
        let expected = if self.is_http11() { 1..=1 } else { 0..=1 };
        if expected.contains(&count) {
            Ok(())
        } else {
            Err(RequestError::BadHost)
        }
    }

    /// Every `Content-Length` must be the same run of digits (RFC 9112 §6.3).
    fn parse_content_length(&self) -> Result<usize, RequestError> {
        let mut length = None;
        for value in self.header_all("content-length") {
            let value = value.trim_ascii();
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(RequestError::BadHeader("Content-Length"));
            }
            if length.is_some_and(|length| length != value) {
                return Err(RequestError::BadHeader("Content-Length"));
            }
            length = Some(value);
        }
        let Some(digits) = length else {
            return Ok(0);
        };
        // Leading zeros are allowed; past them, more than 7 digits is over any limit.
        let first = digits
            .iter()
            .position(|&d| d != b'0')
            .unwrap_or(digits.len());
        let digits = &digits[first..];
        if digits.len() > 7 {
            return Err(RequestError::BodyTooLarge);
        }
        let length = digits
            .iter()
            .fold(0usize, |n, &d| n * 10 + usize::from(d - b'0'));
        if length > BODY_BYTES_MAX {
            return Err(RequestError::BodyTooLarge);
        }
        Ok(length)
    }
}

const _: () = assert!(
    BODY_BYTES_MAX < 10_000_000,
    "parse_content_length reads 7 digits"
);

/// Splits an origin-form target (`/path?query`) into path and query.
fn split_target(target: &str) -> Result<(&str, &str), RequestError> {
    if !target.starts_with('/') {
        return Err(RequestError::BadTarget);
    }
    Ok(target.split_once('?').unwrap_or((target, "")))
}

impl fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers().map(|(name, _)| name).collect();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query_bytes", &self.query.len())
            .field("http11", &self.is_http11())
            .field("headers", &names)
            .field("head_len", &self.head_len)
            .field("content_length", &self.content_length)
            .finish()
    }
}
