//! The plain HTTP endpoints of a running server: health and readiness, the
//! dev token endpoint, and the refusals (404, 405, 400, 413, 431), each
//! checked over a raw TCP connection. Without `--dev` the dev endpoints do
//! not exist.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use client::Client;
use protocol::limits::{DEV_TOKEN_TTL, HANDSHAKE_BYTES_MAX, HTTP_BODY_BYTES_MAX};
use protocol::token::TokenKey;
use protocol::{DeviceId, UserId};
use support::http::{self, get, post};
use support::{Options, Server, echo_options};

/// A token secret for servers without `--dev`.
const SECRET: &str = "http endpoint tests secret, at least 32 bytes";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn health_and_readiness_answer_200_and_close() {
    let server = Server::start();
    let health = get(server.addr(), "/healthz");
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));
    assert_eq!(health.header("connection"), Some("close"));
    let ready = get(server.addr(), "/readyz");
    assert_eq!((ready.status, ready.text().as_str()), (200, "ready\n"));
}

#[test]
fn unknown_path_is_404() {
    let server = Server::start();
    // `/` is the browser client (tests/web.rs).
    for path in ["/nope", "/healthz/", "/v1/dev"] {
        assert_eq!(get(server.addr(), path).status, 404, "{path}");
    }
}

#[test]
fn wrong_method_on_health_is_405() {
    let server = Server::start();
    assert_eq!(post(server.addr(), "/healthz", b"").status, 405);
    assert_eq!(post(server.addr(), "/readyz", b"").status, 405);
    let put = http::request(
        server.addr(),
        b"PUT /healthz HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(put.status, 405);
}

#[test]
fn dev_token_verifies_with_the_secret_in_the_data_dir() {
    let server = Server::start();
    let before = unix_now();
    let response = post(
        server.addr(),
        "/v1/dev/token",
        br#"{"user":"42","device":"1"}"#,
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    let reply: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(reply["user"], "42");
    assert_eq!(reply["device"], "1");

    // dev.rs keeps the secret as 64 hex characters and keys the HMAC with
    // the characters themselves, not the 32 bytes they spell.
    let secret = std::fs::read_to_string(server.data_dir().join("dev-token-secret")).unwrap();
    let secret = secret.trim();
    assert_eq!(secret.len(), 64);
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()), "{secret}");
    let key = TokenKey::new(secret.as_bytes()).unwrap();
    let token = reply["token"].as_str().unwrap();
    let claims = key.verify(token, unix_now()).unwrap();
    assert_eq!(claims.user, UserId(42));
    assert_eq!(claims.device, DeviceId(1));
    assert!(claims.issued >= before, "{claims:?}");
    assert_eq!(claims.expires - claims.issued, DEV_TOKEN_TTL.as_secs());
    assert_eq!(reply["expires"], claims.expires);

    let other = TokenKey::new(&[b'0'; 64]).unwrap();
    assert!(other.verify(token, unix_now()).is_err(), "any key verifies");
}

#[test]
fn dev_token_refuses_a_bad_body_with_400() {
    let server = Server::start();
    for body in [
        &b""[..],
        b"not json",
        b"{}",
        br#"{"user":"42"}"#,
        br#"{"user":"x","device":"1"}"#,
        br#"{"user":"42","device":"1","admin":true}"#,
        b"\xff\xfe",
    ] {
        let response = post(server.addr(), "/v1/dev/token", body);
        assert_eq!(response.status, 400, "{:?}", String::from_utf8_lossy(body));
    }
}

#[test]
fn dev_token_body_limit_is_4_kib() {
    let server = Server::start();
    // Exactly at the limit: a valid request padded with JSON whitespace.
    let mut body = br#"{"user":"42","device":"1"}"#.to_vec();
    body.resize(HTTP_BODY_BYTES_MAX, b' ');
    let at_limit = post(server.addr(), "/v1/dev/token", &body);
    assert_eq!(at_limit.status, 200, "{}", at_limit.text());

    // One byte over: refused from the Content-Length alone. The body is not
    // sent: the server answers without reading it, and unread bytes would
    // turn its close into a reset that can race the response.
    let over = http::request(
        server.addr(),
        format!(
            "POST /v1/dev/token HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
            HTTP_BODY_BYTES_MAX + 1
        )
        .as_bytes(),
    );
    assert_eq!(over.status, 413, "{}", over.text());
}

#[test]
fn request_head_over_the_limit_is_431() {
    let server = Server::start();
    // Exactly HANDSHAKE_BYTES_MAX bytes and still no end of head: the server
    // reads all of them, so it closes cleanly after its answer.
    let mut head = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Pad: ".to_vec();
    head.resize(HANDSHAKE_BYTES_MAX, b'a');
    let response = http::request(server.addr(), &head);
    assert_eq!(response.status, 431, "{}", response.text());

    // A complete head just under the limit is fine.
    let mut head = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Pad: ".to_vec();
    head.resize(HANDSHAKE_BYTES_MAX - 4, b'a');
    head.extend_from_slice(b"\r\n\r\n");
    let response = http::request(server.addr(), &head);
    assert_eq!(response.status, 200, "{}", response.text());
}

#[test]
fn without_dev_the_dev_endpoints_are_404() {
    let server = Options::new()
        .production()
        .env("SWITCHBOARD_TOKEN_SECRET", SECRET)
        .start();
    assert_eq!(get(server.addr(), "/healthz").status, 200);
    let token = post(
        server.addr(),
        "/v1/dev/token",
        br#"{"user":"42","device":"1"}"#,
    );
    assert_eq!(token.status, 404);

    match Client::connect_with(server.addr(), &echo_options()) {
        Err(client::Error::Refused { status, .. }) => assert_eq!(status, 404),
        other => panic!("expected a 404 refusal, got {other:?}"),
    }
    assert!(
        !server.data_dir().join("dev-token-secret").exists(),
        "a production server made a dev secret"
    );
}
