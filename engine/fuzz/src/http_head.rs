//! `http_request_head`: `Request::parse` on any bytes, the way `conn.rs` calls it (with
//! everything read so far, after every read), then everything the server does with a
//! parsed head: `Handshake::validate`, the 101 response, subprotocols, the token and
//! `encoding` lookups, and the error responses.
//!
//! Input: the first byte picks where the reads end ([`crate::cuts`]); the rest is what
//! the client sent.
//!
//! Properties:
//! - nothing panics;
//! - incremental: the outcome for the first `m` bytes is "incomplete" up to some
//!   transition point and the same outcome (head or error) at every length after it,
//!   whatever the reads; a head completes exactly at its `head_len`, which is within
//!   the input and `HANDSHAKE_BYTES_MAX`; "head too large" comes exactly at
//!   `HANDSHAKE_BYTES_MAX` bytes, and the input stays incomplete only below it;
//! - a parsed head keeps the promises of `Request`'s docs (origin-form target, host
//!   count, no `Transfer-Encoding`, `Content-Length` within the limit and agreeing with
//!   an independent parse, header lookups consistent with the header list, body bounds);
//! - `Handshake::validate` agrees with an independent implementation of its documented
//!   rules, in their order, and an accepted key's `Sec-WebSocket-Accept` is
//!   `base64(SHA-1(key + GUID))` computed here;
//! - the 101 response and every error response are well-formed HTTP/1.1 (checked with
//!   `httparse`) with the status the error maps to and a body as long as its
//!   `Content-Length`; offered subprotocols are tokens that the 101 can carry.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use engine::http::{self, Handshake, Request, RequestError, offered_protocols};
use protocol::limits::{AUTH_TOKEN_BYTES_MAX, HANDSHAKE_BYTES_MAX};
use sha1::{Digest, Sha1};

/// Request-head lengths checked per input at most (besides the binary search), so that
/// byte-by-byte reads of a 16 KiB head stay fast.
const READ_ENDS_MAX: usize = 64;

/// What `Request::parse` made of a prefix, in a comparable form.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Incomplete,
    Head(Head),
    Error(RequestError),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Head {
    method: String,
    path: String,
    query: String,
    http11: bool,
    headers: Vec<(String, Vec<u8>)>,
    head_len: usize,
    content_length: usize,
}

impl Head {
    fn of(r: &Request<'_>) -> Head {
        Head {
            method: r.method().to_owned(),
            path: r.path().to_owned(),
            query: r.query_string().to_owned(),
            http11: r.is_http11(),
            headers: r
                .headers()
                .map(|(n, v)| (n.to_owned(), v.to_vec()))
                .collect(),
            head_len: r.head_len(),
            content_length: r.content_length(),
        }
    }

    /// Values of the fields called `name`, in order (case-insensitive names).
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    fn first_str(&self, name: &str) -> Option<&str> {
        let (_, value) = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))?;
        std::str::from_utf8(value).ok().map(str::trim)
    }

    fn lists(&self, name: &str, token: &str) -> bool {
        self.values(name)
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|item| !item.is_empty() && item.eq_ignore_ascii_case(token))
    }
}

fn outcome(buf: &[u8]) -> Outcome {
    match Request::parse(buf) {
        Ok(None) => Outcome::Incomplete,
        Ok(Some(r)) => Outcome::Head(Head::of(&r)),
        Err(e) => Outcome::Error(e),
    }
}

/// The whole check for one fuzz input.
pub fn check(data: &[u8]) {
    let Some((&seed, buf)) = data.split_first() else {
        return;
    };
    let last = outcome(buf);
    check_incremental(seed, buf, &last);
    match Request::parse(buf) {
        Ok(Some(request)) => check_request(&request, buf),
        Ok(None) => {}
        Err(e) => check_error_response(e),
    }
}

/// The outcome is `Incomplete` below a transition point and `last` from it on.
fn check_incremental(seed: u8, buf: &[u8], last: &Outcome) {
    assert_eq!(outcome(&[]), Outcome::Incomplete);
    let expect_at = |m: usize, transition: usize| {
        let got = outcome(&buf[..m]);
        if m < transition {
            assert_eq!(
                got,
                Outcome::Incomplete,
                "prefix of {m} bytes, before {transition}"
            );
        } else {
            assert_eq!(&got, last, "prefix of {m} bytes, from {transition}");
        }
    };
    let transition = if *last == Outcome::Incomplete {
        assert!(
            buf.len() < HANDSHAKE_BYTES_MAX,
            "{} bytes without a head are still incomplete",
            buf.len()
        );
        buf.len() + 1
    } else {
        // The shortest prefix with an outcome, if outcomes are monotone (which the
        // probes below check).
        let (mut lo, mut hi) = (0, buf.len());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            match outcome(&buf[..mid]) {
                Outcome::Incomplete => lo = mid,
                got => {
                    assert_eq!(&got, last, "prefix of {mid} bytes");
                    hi = mid;
                }
            }
        }
        if hi > 0 {
            expect_at(hi - 1, hi);
        }
        hi
    };
    match last {
        Outcome::Head(head) => {
            assert_eq!(transition, head.head_len, "the head completes at its end");
            assert!(head.head_len <= buf.len());
            assert!(head.head_len <= HANDSHAKE_BYTES_MAX);
        }
        Outcome::Error(RequestError::HeadTooLarge) => {
            assert_eq!(transition, HANDSHAKE_BYTES_MAX, "431 at the limit");
        }
        Outcome::Error(e) => {
            assert!(transition <= HANDSHAKE_BYTES_MAX, "{e:?} past the limit");
        }
        Outcome::Incomplete => {}
    }
    // The reads: every end of one, as `conn.rs` parses after each.
    let mut ends = crate::cuts(seed, buf.len());
    if ends.len() > READ_ENDS_MAX {
        let step = ends.len().div_ceil(READ_ENDS_MAX);
        ends = ends.into_iter().step_by(step).collect();
    }
    for m in ends {
        expect_at(m, transition);
    }
    // And both sides of the transition, as single-byte reads would see it.
    for m in [transition.saturating_sub(2), transition + 1] {
        if m <= buf.len() {
            expect_at(m, transition);
        }
    }
}

/// What `Request`'s docs promise of a parsed head, and everything `conn.rs` then asks it.
fn check_request(r: &Request<'_>, buf: &[u8]) {
    let head = Head::of(r);
    let _ = format!("{r:?}");

    // The target.
    assert!(!r.method().is_empty());
    assert!(r.path().starts_with('/'), "origin-form target");
    assert!(!r.path().contains('?'));
    // httparse skips empty lines before the request line (RFC 9112 §2.2).
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .expect("a complete head has a request line");
    let line = &buf[start..r.head_len()];
    let line = &line[..line.iter().position(|&b| b == b'\n').expect("a line end")];
    assert!(
        line.starts_with(r.method().as_bytes()),
        "the method starts the request line"
    );
    let target = if r.query_string().is_empty() {
        r.path().to_owned()
    } else {
        format!("{}?{}", r.path(), r.query_string())
    };
    assert!(
        line.windows(target.len()).any(|w| w == target.as_bytes()),
        "the request line holds the target"
    );

    // Header fields.
    assert!(head.headers.len() <= http::HEADERS_MAX);
    for (name, value) in &head.headers {
        assert!(!name.is_empty());
        let first = head.values(name).next();
        assert_eq!(r.header(name), first);
        assert_eq!(r.header(&name.to_ascii_uppercase()), first);
        assert_eq!(r.header_all(name).count(), head.values(name).count());
        assert!(r.header_all(name).any(|v| v == value.as_slice()));
        for item in r.list(name) {
            assert!(!item.is_empty() && item.trim() == item);
            assert!(r.has_token(name, item));
        }
    }
    let hosts = head.values("host").count();
    assert!(
        if r.is_http11() {
            hosts == 1
        } else {
            hosts <= 1
        },
        "{hosts} Host fields"
    );
    assert_eq!(r.host(), head.first_str("host"));
    assert!(head.values("transfer-encoding").next().is_none());

    // Content-Length, parsed independently.
    let lengths: Vec<&[u8]> = head
        .values("content-length")
        .map(<[u8]>::trim_ascii)
        .collect();
    let expected = match lengths.first() {
        None => 0,
        Some(first) => {
            assert!(
                lengths.iter().all(|l| l == first),
                "differing Content-Length"
            );
            assert!(!first.is_empty() && first.iter().all(u8::is_ascii_digit));
            let digits = std::str::from_utf8(first).expect("digits are ASCII");
            let significant = digits.trim_start_matches('0');
            let value = if significant.is_empty() {
                0
            } else {
                significant.parse::<u128>().unwrap_or(u128::MAX)
            };
            assert!(value <= http::BODY_BYTES_MAX as u128, "body over the limit");
            usize::try_from(value).expect("within the limit")
        }
    };
    assert_eq!(r.content_length(), expected);
    assert_eq!(r.message_len(), r.head_len() + r.content_length());
    match r.body(buf) {
        Some(body) => {
            assert!(buf.len() >= r.message_len());
            assert_eq!(body.len(), r.content_length());
            assert_eq!(body, &buf[r.head_len()..r.message_len()]);
        }
        None => assert!(buf.len() < r.message_len()),
    }

    // The token: bearer, else `?token=`, bounded.
    if let Some(token) = r.bearer_token() {
        assert!(!token.is_empty() && token.trim() == token);
    }
    match r.auth_token() {
        Ok(Some(token)) => {
            assert!(token.len() <= AUTH_TOKEN_BYTES_MAX);
            if let Some(bearer) = r.bearer_token() {
                assert_eq!(token, Cow::Borrowed(bearer));
            }
        }
        Ok(None) => assert!(r.bearer_token().is_none()),
        Err(e) => {
            assert!(
                matches!(e, RequestError::Unauthorized | RequestError::BadQuery),
                "{e:?}"
            );
            check_error_response(e);
        }
    }
    for name in ["token", "encoding"] {
        if let Err(e) = r.query(name) {
            assert_eq!(e, RequestError::BadQuery);
        }
    }

    check_handshake(r, &head);
}

/// `Handshake::validate` against its documented rules, then its 101 response.
fn check_handshake(r: &Request<'_>, head: &Head) {
    let got = Handshake::validate(r);
    let expected = expected_handshake(head);
    match (&got, &expected) {
        (Ok(hs), Ok(key)) => {
            let mut sha1 = Sha1::new();
            sha1.update(key.as_bytes());
            sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
            let accept = STANDARD.encode(sha1.finalize());
            assert_eq!(hs.accept().as_str(), accept, "Sec-WebSocket-Accept");
            let mut out = Vec::new();
            hs.write_response(&mut out, None);
            let fields = parse_response(&out, 101);
            assert_eq!(
                field(&fields, "sec-websocket-accept"),
                Some(accept.as_str())
            );
            assert!(field(&fields, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")));
            assert!(
                field(&fields, "connection").is_some_and(|v| v.eq_ignore_ascii_case("upgrade"))
            );
            assert_eq!(field(&fields, "sec-websocket-protocol"), None);
            for protocol in offered_protocols(r) {
                assert!(is_token(protocol), "offered {protocol:?}");
                let mut out = Vec::new();
                hs.write_response(&mut out, Some(protocol));
                let fields = parse_response(&out, 101);
                assert_eq!(field(&fields, "sec-websocket-protocol"), Some(protocol));
            }
        }
        (Err(e), Err(expected)) => {
            assert_eq!(e, expected, "Handshake::validate");
            check_error_response(*e);
        }
        _ => panic!("Handshake::validate gave {got:?}, its rules say {expected:?}"),
    }
}

/// RFC 6455 §4.2.1 as `Handshake::validate` documents it, checked in its order; on
/// success, the key.
fn expected_handshake(head: &Head) -> Result<String, RequestError> {
    if head.method != "GET" {
        return Err(RequestError::MethodNotAllowed { allow: "GET" });
    }
    if !head.http11 {
        return Err(RequestError::UpgradeNeedsHttp11);
    }
    if !head.lists("upgrade", "websocket") {
        return Err(RequestError::UpgradeRequired);
    }
    if !head.lists("connection", "upgrade") {
        return Err(RequestError::ConnectionNotUpgrade);
    }
    if head.first_str("sec-websocket-version") != Some("13") {
        return Err(RequestError::UnsupportedWebSocketVersion);
    }
    let keys: Vec<&[u8]> = head.values("sec-websocket-key").collect();
    let [key] = keys.as_slice() else {
        return Err(RequestError::BadWebSocketKey);
    };
    let key = std::str::from_utf8(key)
        .map_err(|_| RequestError::BadWebSocketKey)?
        .trim();
    match STANDARD.decode(key) {
        Ok(bytes) if bytes.len() == 16 && key.len() == 24 => Ok(key.to_owned()),
        _ => Err(RequestError::BadWebSocketKey),
    }
}

/// An error's response: complete, with its status, `Connection: close`, and a body of
/// its `Content-Length`.
fn check_error_response(e: RequestError) {
    let _ = e.to_string();
    let status = e.status();
    let mut out = Vec::new();
    e.write_response(&mut out);
    let fields = parse_response(&out, status.code());
    assert_eq!(field(&fields, "connection"), Some("close"));
    let length: usize = field(&fields, "content-length")
        .and_then(|v| v.parse().ok())
        .expect("a Content-Length");
    let head_len = out.len() - length;
    assert_eq!(&out[head_len..], format!("{e}\n").as_bytes());
}

/// Parses a response the server wrote; returns its header fields.
fn parse_response(out: &[u8], code: u16) -> Vec<(String, String)> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let status = response.parse(out).expect("a well-formed response");
    let httparse::Status::Complete(len) = status else {
        panic!("an incomplete response: {:?}", String::from_utf8_lossy(out));
    };
    assert_eq!(response.version, Some(1));
    assert_eq!(response.code, Some(code));
    let fields: Vec<(String, String)> = response
        .headers
        .iter()
        .map(|h| {
            let value = std::str::from_utf8(h.value).expect("the server writes UTF-8");
            (h.name.to_ascii_lowercase(), value.to_owned())
        })
        .collect();
    if code == 101 {
        assert_eq!(len, out.len(), "a 101 has no body");
    } else {
        let length: usize = field(&fields, "content-length")
            .and_then(|v| v.parse().ok())
            .expect("a Content-Length");
        assert_eq!(len + length, out.len(), "the body is Content-Length bytes");
    }
    fields
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// An HTTP token (RFC 9110 §5.6.2).
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
