//! Plain HTTP responses: a status, a content type, a body, and `Connection: close`.

use std::io::Write;

/// The statuses the engine sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    SwitchingProtocols,
    Ok,
    NotModified,
    BadRequest,
    Unauthorized,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    PayloadTooLarge,
    UpgradeRequired,
    TooManyRequests,
    RequestHeaderFieldsTooLarge,
    InternalServerError,
    NotImplemented,
    ServiceUnavailable,
}

impl Status {
    pub const fn code(self) -> u16 {
        match self {
            Status::SwitchingProtocols => 101,
            Status::Ok => 200,
            Status::NotModified => 304,
            Status::BadRequest => 400,
            Status::Unauthorized => 401,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::PayloadTooLarge => 413,
            Status::UpgradeRequired => 426,
            Status::TooManyRequests => 429,
            Status::RequestHeaderFieldsTooLarge => 431,
            Status::InternalServerError => 500,
            Status::NotImplemented => 501,
            Status::ServiceUnavailable => 503,
        }
    }

    /// The reason phrase (RFC 9110 §15).
    pub const fn reason(self) -> &'static str {
        match self {
            Status::SwitchingProtocols => "Switching Protocols",
            Status::Ok => "OK",
            Status::NotModified => "Not Modified",
            Status::BadRequest => "Bad Request",
            Status::Unauthorized => "Unauthorized",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::RequestTimeout => "Request Timeout",
            Status::PayloadTooLarge => "Content Too Large",
            Status::UpgradeRequired => "Upgrade Required",
            Status::TooManyRequests => "Too Many Requests",
            Status::RequestHeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::InternalServerError => "Internal Server Error",
            Status::NotImplemented => "Not Implemented",
            Status::ServiceUnavailable => "Service Unavailable",
        }
    }
}

/// Appends a complete response with a body, then `Connection: close`: the engine answers
/// one plain request per connection.
///
/// `headers` are extra fields. Names and values come from the server, never from a
/// client; a CR or LF in one would split the response, so it panics.
pub fn write_response(
    out: &mut Vec<u8>,
    status: Status,
    headers: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
) {
    write_head(out, status, headers, content_type, body.len());
    out.extend_from_slice(body);
}

/// Appends the head [`write_response`] writes for a body of `content_length` bytes, without
/// the body: the answer to a `HEAD` request, or the head of a body the caller writes itself.
pub fn write_head(
    out: &mut Vec<u8>,
    status: Status,
    headers: &[(&str, &str)],
    content_type: &str,
    content_length: usize,
) {
    assert!(
        status != Status::SwitchingProtocols,
        "use write_switching_protocols"
    );
    assert!(status != Status::NotModified, "use write_not_modified");
    write_status_line(out, status);
    write_header(out, "Content-Type", content_type);
    write!(out, "Content-Length: {content_length}\r\n").expect("writing to a Vec cannot fail");
    write_fields(out, headers);
}

/// Appends a `304 Not Modified` with `headers` (the validator and caching fields a 200 would
/// carry). It has no content, so no `Content-Length` either: the length of the 200 would be
/// allowed (RFC 9110 §8.6) but says nothing a client needs.
pub fn write_not_modified(out: &mut Vec<u8>, headers: &[(&str, &str)]) {
    write_status_line(out, Status::NotModified);
    write_fields(out, headers);
}

/// The extra fields, `Connection: close` and the empty line that ends a head.
fn write_fields(out: &mut Vec<u8>, headers: &[(&str, &str)]) {
    for (name, value) in headers {
        write_header(out, name, value);
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
}

/// Appends a response with a JSON body.
pub fn write_json(out: &mut Vec<u8>, status: Status, json: &[u8]) {
    write_response(out, status, &[], "application/json", json);
}

/// Appends a `405 Method Not Allowed` with the `Allow` field RFC 9110 §15.5.6 asks for:
/// `allow` lists the methods the resource answers, e.g. `GET, HEAD`.
pub fn write_method_not_allowed(out: &mut Vec<u8>, allow: &str) {
    let text = format!("use {allow}\n");
    write_response(
        out,
        Status::MethodNotAllowed,
        &[("Allow", allow)],
        "text/plain; charset=utf-8",
        text.as_bytes(),
    );
}

/// Appends a response with a plain-text body.
pub fn write_text(out: &mut Vec<u8>, status: Status, text: &str) {
    write_response(
        out,
        status,
        &[],
        "text/plain; charset=utf-8",
        text.as_bytes(),
    );
}

pub(crate) fn write_status_line(out: &mut Vec<u8>, status: Status) {
    write!(out, "HTTP/1.1 {} {}\r\n", status.code(), status.reason())
        .expect("writing to a Vec cannot fail");
}

pub(crate) fn write_header(out: &mut Vec<u8>, name: &str, value: &str) {
    assert!(is_token(name), "invalid header name {name:?}");
    assert!(
        !value.bytes().any(|b| b == b'\r' || b == b'\n'),
        "header value with CR or LF"
    );
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// An HTTP token (RFC 9110 §5.6.2): header names, subprotocol names.
pub(crate) fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_response() {
        let mut out = Vec::new();
        write_json(&mut out, Status::Ok, br#"{"token":"t"}"#);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\
             Connection: close\r\n\r\n{\"token\":\"t\"}"
        );
    }

    #[test]
    fn text_response_with_extra_headers() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            Status::MethodNotAllowed,
            &[("Allow", "GET")],
            "text/plain",
            b"no",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain\r\n\
             Content-Length: 2\r\nAllow: GET\r\nConnection: close\r\n\r\nno"
        );
    }

    #[test]
    fn every_status_parses_back() {
        for status in [
            Status::Ok,
            Status::BadRequest,
            Status::Unauthorized,
            Status::NotFound,
            Status::MethodNotAllowed,
            Status::RequestTimeout,
            Status::PayloadTooLarge,
            Status::UpgradeRequired,
            Status::RequestHeaderFieldsTooLarge,
            Status::InternalServerError,
            Status::NotImplemented,
            Status::ServiceUnavailable,
        ] {
            let mut out = Vec::new();
            write_text(&mut out, status, "body");
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut response = httparse::Response::new(&mut headers);
            let len = response.parse(&out).unwrap().unwrap();
            assert_eq!(response.code, Some(status.code()));
            assert_eq!(response.reason, Some(status.reason()));
            assert_eq!(&out[len..], b"body");
        }
    }

    #[test]
    fn head_has_the_length_of_the_body_it_leaves_out() {
        let mut head = Vec::new();
        write_head(&mut head, Status::Ok, &[("ETag", "\"1\"")], "text/css", 5);
        let mut full = Vec::new();
        write_response(
            &mut full,
            Status::Ok,
            &[("ETag", "\"1\"")],
            "text/css",
            b"a{}\n\n",
        );
        assert_eq!(&full[..head.len()], &head[..]);
        assert_eq!(&full[head.len()..], b"a{}\n\n");
        assert!(
            String::from_utf8(head)
                .unwrap()
                .ends_with("Content-Length: 5\r\nETag: \"1\"\r\nConnection: close\r\n\r\n")
        );
    }

    #[test]
    fn not_modified_has_no_length_and_no_body() {
        let mut out = Vec::new();
        write_not_modified(
            &mut out,
            &[("ETag", "\"ab\""), ("Cache-Control", "no-cache")],
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 304 Not Modified\r\nETag: \"ab\"\r\nCache-Control: no-cache\r\n\
             Connection: close\r\n\r\n"
        );
    }

    #[test]
    #[should_panic(expected = "use write_not_modified")]
    fn not_modified_takes_no_body() {
        write_text(&mut Vec::new(), Status::NotModified, "body");
    }

    #[test]
    #[should_panic(expected = "CR or LF")]
    fn header_injection_panics() {
        write_response(
            &mut Vec::new(),
            Status::Ok,
            &[("X", "a\r\nB: c")],
            "text/plain",
            b"",
        );
    }

    #[test]
    fn tokens() {
        assert!(is_token("chat.v1"));
        assert!(is_token("Sec-WebSocket-Version"));
        assert!(!is_token(""));
        assert!(!is_token("a b"));
        assert!(!is_token("a,b"));
        assert!(!is_token("é"));
    }
}
