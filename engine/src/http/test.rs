//! Request parsing and upgrade tests: every refusal and its status.

use proptest::prelude::*;
use protocol::limits::{AUTH_TOKEN_BYTES_MAX, HANDSHAKE_BYTES_MAX};

use super::*;

const UPGRADE: &str = "GET /ws?token=abc%2Edef&encoding=binary HTTP/1.1\r\n\
    Host: chat.example.com\r\n\
    Upgrade: websocket\r\n\
    Connection: keep-alive, Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\
    Sec-WebSocket-Protocol: chat.v1, bad token, chat.v2\r\n\
    Origin: https://chat.example.com\r\n\
    \r\n";

fn parse(head: &str) -> Result<Option<Request<'_>>, RequestError> {
    Request::parse(head.as_bytes())
}

fn request(head: &str) -> Request<'_> {
    parse(head).unwrap().expect("complete head")
}

/// `UPGRADE` with the line starting with `name` replaced by `line` (removed if empty).
fn upgrade_with(name: &str, line: &str) -> String {
    UPGRADE
        .split_inclusive("\r\n")
        .map(|l| if l.starts_with(name) { line } else { l })
        .collect()
}

fn status_of(head: &str) -> u16 {
    let err = parse(head)
        .and_then(|r| Handshake::validate(&r.expect("complete head")).map(|_| ()))
        .unwrap_err();
    err.status().code()
}

#[test]
fn upgrade_request_fields() {
    let req = request(UPGRADE);
    assert_eq!(req.method(), "GET");
    assert_eq!(req.path(), "/ws");
    assert_eq!(req.query_string(), "token=abc%2Edef&encoding=binary");
    assert_eq!(req.query("token").unwrap().as_deref(), Some("abc.def"));
    assert_eq!(req.query("encoding").unwrap().as_deref(), Some("binary"));
    assert!(req.is_http11());
    assert_eq!(req.host(), Some("chat.example.com"));
    assert_eq!(req.origin(), Some("https://chat.example.com"));
    assert!(req.has_token("connection", "upgrade"));
    assert!(req.has_token("Connection", "KEEP-ALIVE"));
    assert!(!req.has_token("connection", "close"));
    assert!(req.has_token("upgrade", "WebSocket"));
    assert_eq!(req.head_len(), UPGRADE.len());
    assert_eq!(req.content_length(), 0);
    assert_eq!(req.auth_token().unwrap().as_deref(), Some("abc.def"));
    let protocols: Vec<_> = offered_protocols(&req).collect();
    assert_eq!(protocols, ["chat.v1", "chat.v2"]);
}

#[test]
fn debug_shows_no_values() {
    let head = upgrade_with("Origin", "Authorization: Bearer secret-token\r\n");
    let debug = format!("{:?}", request(&head));
    assert!(debug.contains("Authorization"));
    assert!(!debug.contains("secret-token"));
    assert!(!debug.contains("abc"), "the query holds a token: {debug}");
}

#[test]
fn incremental_parse_at_every_length() {
    for end in 0..UPGRADE.len() {
        assert!(parse(&UPGRADE[..end]).unwrap().is_none(), "{end}");
    }
    // Bytes after the head (the first frames, or a body) are not part of it.
    let mut buf = UPGRADE.as_bytes().to_vec();
    buf.extend_from_slice(&[0x81, 0x80]);
    assert_eq!(
        Request::parse(&buf).unwrap().unwrap().head_len(),
        UPGRADE.len()
    );
}

#[test]
fn accept_key_rfc_example() {
    // RFC 6455 §1.3.
    assert_eq!(
        AcceptKey::new("dGhlIHNhbXBsZSBub25jZQ==").as_str(),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn switching_protocols_response() {
    let handshake = Handshake::validate(&request(UPGRADE)).unwrap();
    let mut out = Vec::new();
    handshake.write_response(&mut out, None);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    );
    let mut out = Vec::new();
    handshake.write_response(&mut out, Some("chat.v2"));
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.ends_with("Sec-WebSocket-Protocol: chat.v2\r\n\r\n"),
        "{text}"
    );
}

#[test]
#[should_panic(expected = "not a token")]
fn switching_protocols_refuses_a_bad_subprotocol() {
    let handshake = Handshake::validate(&request(UPGRADE)).unwrap();
    handshake.write_response(&mut Vec::new(), Some("a\r\nb"));
}

// Size limits: 431.

#[test]
fn head_over_the_limit() {
    let filler = "X-Filler: ".to_owned() + &"a".repeat(HANDSHAKE_BYTES_MAX) + "\r\n";
    let head = format!("GET / HTTP/1.1\r\nHost: h\r\n{filler}\r\n");
    assert_eq!(parse(&head).unwrap_err(), RequestError::HeadTooLarge);
    assert_eq!(
        parse(&head[..HANDSHAKE_BYTES_MAX]).unwrap_err(),
        RequestError::HeadTooLarge
    );
    assert!(parse(&head[..HANDSHAKE_BYTES_MAX - 1]).unwrap().is_none());
    assert_eq!(RequestError::HeadTooLarge.status().code(), 431);
}

#[test]
fn head_at_the_limit() {
    let start = "GET / HTTP/1.1\r\nHost: h\r\nX-Filler: ";
    let fill = HANDSHAKE_BYTES_MAX - start.len() - 4;
    let head = format!("{start}{}\r\n\r\n", "a".repeat(fill));
    assert_eq!(head.len(), HANDSHAKE_BYTES_MAX);
    assert_eq!(request(&head).head_len(), HANDSHAKE_BYTES_MAX);
}

#[test]
fn too_many_headers() {
    let lines = (0..HEADERS_MAX)
        .map(|i| format!("X-{i}: v\r\n"))
        .collect::<Vec<_>>()
        .concat();
    let ok = format!(
        "GET / HTTP/1.1\r\nHost: h\r\n{}\r\n",
        &lines[lines.find('\n').unwrap() + 1..]
    );
    assert!(parse(&ok).unwrap().is_some());
    let head = format!("GET / HTTP/1.1\r\nHost: h\r\n{lines}\r\n");
    let err = parse(&head).unwrap_err();
    assert_eq!(err, RequestError::TooManyHeaders);
    assert_eq!(err.status().code(), 431);
}

// Malformed requests: 400.

#[test]
fn malformed_requests() {
    for head in [
        "GET / HTTP/1.1\r\nHost h\r\n\r\n",
        "GET / HTTP/2.0\r\nHost: h\r\n\r\n",
        "GET  HTTP/1.1\r\n\r\n",
        "G\0T / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
    ] {
        let err = parse(head).unwrap_err();
        assert!(
            matches!(err, RequestError::Malformed(_)),
            "{head:?}: {err:?}"
        );
        assert_eq!(err.status().code(), 400);
    }
}

#[test]
fn target_must_be_a_path() {
    for target in ["http://h/ws", "*", "ws"] {
        let head = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(
            parse(&head).unwrap_err(),
            RequestError::BadTarget,
            "{target}"
        );
    }
    let req = request("GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((req.path(), req.query_string()), ("/healthz", ""));
}

#[test]
fn host_rules() {
    assert_eq!(
        parse("GET / HTTP/1.1\r\n\r\n").unwrap_err(),
        RequestError::BadHost
    );
    assert_eq!(
        parse("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n").unwrap_err(),
        RequestError::BadHost
    );
    assert!(!request("GET / HTTP/1.0\r\n\r\n").is_http11());
    assert_eq!(RequestError::BadHost.status().code(), 400);
}

#[test]
fn bad_query_is_refused_when_read() {
    let req = request("GET /ws?token=%zz HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(req.auth_token().unwrap_err(), RequestError::BadQuery);
    assert_eq!(RequestError::BadQuery.status().code(), 400);
}

// Bodies.

#[test]
fn post_body() {
    let head = "POST /dev/token HTTP/1.1\r\nHost: h\r\nContent-Length: 013\r\n\r\n";
    let body = br#"{"user":"1"}x"#;
    let mut buf = head.as_bytes().to_vec();
    buf.extend_from_slice(&body[..5]);
    let req = Request::parse(&buf).unwrap().unwrap();
    assert_eq!(req.content_length(), 13);
    assert_eq!(req.message_len(), head.len() + 13);
    assert_eq!(req.body(&buf), None, "incomplete");
    // The caller reads until it has req.message_len() bytes, then parses again.
    buf.extend_from_slice(&body[5..]);
    let req = Request::parse(&buf).unwrap().unwrap();
    assert_eq!(req.body(&buf), Some(&body[..]));
}

#[test]
fn content_length_rules() {
    let with = |values: &[&str]| {
        let lines = values
            .iter()
            .map(|v| format!("Content-Length: {v}\r\n"))
            .collect::<Vec<_>>()
            .concat();
        Request::parse(format!("POST / HTTP/1.1\r\nHost: h\r\n{lines}\r\n").as_bytes())
            .map(|r| r.unwrap().content_length())
    };
    assert_eq!(with(&["4096"]), Ok(BODY_BYTES_MAX));
    assert_eq!(with(&["0"]), Ok(0));
    assert_eq!(with(&["5", "5"]), Ok(5));
    assert_eq!(with(&["4097"]), Err(RequestError::BodyTooLarge));
    assert_eq!(
        with(&["99999999999999999999999"]),
        Err(RequestError::BodyTooLarge)
    );
    assert_eq!(RequestError::BodyTooLarge.status().code(), 413);
    for bad in [
        &["+5"][..],
        &["-1"],
        &["5, 5"],
        &["0x10"],
        &["5", "6"],
        &[""],
    ] {
        assert_eq!(
            with(bad),
            Err(RequestError::BadHeader("Content-Length")),
            "{bad:?}"
        );
    }
}

#[test]
fn transfer_encoding_is_not_supported() {
    let head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    let err = parse(head).unwrap_err();
    assert_eq!(err, RequestError::TransferEncoding);
    assert_eq!(err.status().code(), 501);
}

// Tokens.

#[test]
fn bearer_token() {
    for (line, token) in [
        ("Authorization: Bearer abc.def\r\n", Some("abc.def")),
        ("Authorization: bearer  abc \r\n", Some("abc")),
        ("Authorization: Basic dXNlcjpwYXNz\r\n", None),
        ("Authorization: Bearer\r\n", None),
        ("Authorization: Bearer \r\n", None),
    ] {
        let head = format!("GET /ws HTTP/1.1\r\nHost: h\r\n{line}\r\n");
        assert_eq!(request(&head).bearer_token(), token, "{line:?}");
    }
    // The header wins over the query.
    let head = "GET /ws?token=q HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer h\r\n\r\n";
    assert_eq!(request(head).auth_token().unwrap().as_deref(), Some("h"));
    let head = "GET /ws HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_eq!(request(head).auth_token().unwrap(), None);
}

#[test]
fn overlong_token_is_unauthorized() {
    let token = "a".repeat(AUTH_TOKEN_BYTES_MAX + 1);
    let head = format!("GET /ws?token={token} HTTP/1.1\r\nHost: h\r\n\r\n");
    let err = request(&head).auth_token().unwrap_err();
    assert_eq!(err, RequestError::Unauthorized);
    assert_eq!(err.status().code(), 401);
    let head = format!("GET /ws?token={} HTTP/1.1\r\nHost: h\r\n\r\n", &token[1..]);
    assert!(request(&head).auth_token().unwrap().is_some());
}

// Upgrade validation.

#[test]
fn upgrade_method_must_be_get() {
    let head = UPGRADE.replacen("GET", "POST", 1);
    assert_eq!(status_of(&head), 405);
    let err = Handshake::validate(&request(&head)).unwrap_err();
    assert_eq!(err, RequestError::MethodNotAllowed { allow: "GET" });
}

#[test]
fn upgrade_needs_http11() {
    assert_eq!(status_of(&UPGRADE.replacen("HTTP/1.1", "HTTP/1.0", 1)), 400);
}

#[test]
fn upgrade_header_must_list_websocket() {
    assert_eq!(status_of(&upgrade_with("Upgrade", "")), 426);
    assert_eq!(status_of(&upgrade_with("Upgrade", "Upgrade: h2c\r\n")), 426);
    let head = upgrade_with("Upgrade", "Upgrade: foo/2, WebSocket\r\n");
    assert!(Handshake::validate(&request(&head)).is_ok());
}

#[test]
fn connection_header_must_list_upgrade() {
    assert_eq!(status_of(&upgrade_with("Connection", "")), 400);
    assert_eq!(
        status_of(&upgrade_with("Connection", "Connection: keep-alive\r\n")),
        400
    );
    // Not a substring match.
    assert_eq!(
        status_of(&upgrade_with("Connection", "Connection: upgraded\r\n")),
        400
    );
    // Split over two lines.
    let head = upgrade_with(
        "Connection",
        "Connection: keep-alive\r\nConnection: UPGRADE\r\n",
    );
    assert!(Handshake::validate(&request(&head)).is_ok());
}

#[test]
fn websocket_version_must_be_13() {
    for line in [
        "",
        "Sec-WebSocket-Version: 8\r\n",
        "Sec-WebSocket-Version: 13, 8\r\n",
        "Sec-WebSocket-Version: 14\r\n",
    ] {
        let head = upgrade_with("Sec-WebSocket-Version", line);
        let err = Handshake::validate(&request(&head)).unwrap_err();
        assert_eq!(err, RequestError::UnsupportedWebSocketVersion, "{line:?}");
        assert_eq!(err.status().code(), 426);
        let mut out = Vec::new();
        err.write_response(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{text}");
    }
}

#[test]
fn websocket_key_must_be_16_bytes_of_base64() {
    for line in [
        "",
        "Sec-WebSocket-Key: \r\n",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ\r\n", // no padding
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZSE=\r\n", // 17 bytes
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j\r\n",   // 15 bytes
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==\r\n", // trailing bits
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j*Q==\r\n",
    ] {
        let head = upgrade_with("Sec-WebSocket-Key", line);
        let err = Handshake::validate(&request(&head)).unwrap_err();
        assert_eq!(err, RequestError::BadWebSocketKey, "{line:?}");
        assert_eq!(err.status().code(), 400);
    }
}

#[test]
fn error_responses() {
    let cases = [
        (RequestError::NotFound, 404, None),
        (
            RequestError::Unauthorized,
            401,
            Some("WWW-Authenticate: Bearer"),
        ),
        (
            RequestError::MethodNotAllowed { allow: "GET, POST" },
            405,
            Some("Allow: GET, POST"),
        ),
        (
            RequestError::UpgradeRequired,
            426,
            Some("Upgrade: websocket"),
        ),
        (RequestError::TooManyHeaders, 431, None),
        (RequestError::Unavailable, 503, Some("Retry-After: 5")),
        (RequestError::TransferEncoding, 501, None),
    ];
    for (err, code, header) in cases {
        let mut out = Vec::new();
        err.write_response(&mut out);
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut response = httparse::Response::new(&mut headers);
        let len = response.parse(&out).unwrap().unwrap();
        assert_eq!(response.code, Some(code));
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
        if let Some(header) = header {
            assert!(text.contains(&format!("\r\n{header}\r\n")), "{text}");
        }
        assert_eq!(&out[len..], format!("{err}\n").as_bytes());
    }
}

/// Parses and validates `buf` the way a server would; only the outcome matters.
fn outcome(buf: &[u8]) -> Result<Option<(usize, Option<Handshake>)>, RequestError> {
    Ok(Request::parse(buf)?.map(|r| (r.head_len(), Handshake::validate(&r).ok())))
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = outcome(&buf);
    }

    #[test]
    fn mutated_upgrades_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let mut buf = UPGRADE.as_bytes().to_vec();
        for (at, byte) in edits {
            let at = at % buf.len();
            buf[at] = byte;
        }
        let full = outcome(&buf);
        // A prefix never yields a different complete head than the whole.
        if let Ok(Some((head_len, handshake))) = full {
            prop_assert_eq!(outcome(&buf[..head_len]), Ok(Some((head_len, handshake))));
            prop_assert_eq!(outcome(&buf[..head_len - 1]), Ok(None));
        }
    }
}
