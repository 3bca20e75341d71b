//! The browser client: the files under `web/`, embedded at build time (`build.rs`) and served
//! on the public port, `/` being `/index.html`.
//!
//! There is no filesystem access at run time: a request names one of the table's paths or
//! nothing, so `..`, percent-encoded or otherwise unknown paths are simply not found (404).
//! `GET` and `HEAD` only (else 405). Each file has a strong `ETag`; `If-None-Match` naming it
//! gets `304 Not Modified`, and `Cache-Control: no-cache` makes the browser ask every time,
//! so a new build is picked up at once while an unchanged file costs only a 304. HTML pages
//! carry a Content-Security-Policy that allows only the server's own scripts, styles and
//! connections.
//!
//! What it is not: no directory listings or index files other than `/`, no compression, no
//! ranges, no keep-alive (every plain response closes, as everywhere in the engine; a
//! browser opens a connection per file, a handful for the client).

use crate::http::{Request, Status, write_head, write_method_not_allowed, write_not_modified};

/// One embedded file.
#[derive(Debug)]
pub(crate) struct File {
    /// The URL path: `/` + the path under `web/`.
    pub path: &'static str,
    pub content_type: &'static str,
    /// A strong entity tag, quoted (RFC 9110 §8.8.3).
    pub etag: &'static str,
    pub body: &'static [u8],
}

/// Every file under `web/`, sorted by path (build.rs).
static FILES: &[File] = include!(concat!(env!("OUT_DIR"), "/web_files.rs"));

/// The policy of HTML pages: everything from the server itself (the client's WebSocket
/// included), images also as `data:` URLs, no plugins, no inline scripts or styles, no
/// framing by other sites.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self'; \
     img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; \
     base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// The methods a file answers.
const ALLOW: &str = "GET, HEAD";

/// The file a request path names, if any; `/` names `/index.html`. `path` is as it
/// arrived (no query, not percent-decoded).
pub(crate) fn find(path: &str) -> Option<&'static File> {
    let path = if path == "/" { "/index.html" } else { path };
    let i = FILES.binary_search_by(|f| f.path.cmp(path)).ok()?;
    Some(&FILES[i])
}

/// The answer to `req` for `file`: a head, and the body to write after it (empty for
/// `HEAD`, 304 and 405). The body is the embedded bytes themselves, never copied.
pub(crate) fn respond(req: &Request<'_>, file: &'static File) -> (Vec<u8>, &'static [u8]) {
    let mut head = Vec::new();
    let body = match req.method() {
        "GET" => file.body,
        "HEAD" => &[],
        _ => {
            write_method_not_allowed(&mut head, ALLOW);
            return (head, &[]);
        }
    };
    let fields = [
        ("ETag", file.etag),
        ("Cache-Control", "no-cache"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ];
    // The policy, last, is for HTML pages only.
    let fields = if file.content_type.starts_with("text/html") {
        &fields[..]
    } else {
        &fields[..fields.len() - 1]
    };
    if if_none_match_names(req, file.etag) {
        let mut with_type = vec![("Content-Type", file.content_type)];
        with_type.extend_from_slice(fields);
        write_not_modified(&mut head, &with_type);
        return (head, &[]);
    }
    write_head(
        &mut head,
        Status::Ok,
        fields,
        file.content_type,
        file.body.len(),
    );
    (head, body)
}

/// Whether `If-None-Match` is `*` or lists `etag`. The comparison is weak (RFC 9110
/// §13.1.2): `W/"x"` matches `"x"`.
fn if_none_match_names(req: &Request<'_>, etag: &str) -> bool {
    req.list("if-none-match")
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> &'static File {
        static BODY: &[u8] = b"<!doctype html>";
        static FILE: File = File {
            path: "/index.html",
            content_type: "text/html; charset=utf-8",
            etag: "\"00000000000000ab\"",
            body: BODY,
        };
        &FILE
    }

    fn answer(raw: &str) -> (String, &'static [u8]) {
        let req = Request::parse(raw.as_bytes()).unwrap().unwrap();
        let (head, body) = respond(&req, file());
        (String::from_utf8(head).unwrap(), body)
    }

    #[test]
    fn the_table_is_sorted_and_every_entry_well_formed() {
        assert!(
            FILES.windows(2).all(|w| w[0].path < w[1].path),
            "sorted, no duplicates"
        );
        for f in FILES {
            assert!(f.path.starts_with('/'), "{}", f.path);
            assert!(!f.path.contains(".."), "{}", f.path);
            assert!(f.etag.len() == 18, "{}", f.etag);
            assert!(f.etag.starts_with('"'), "{}", f.etag);
            assert!(f.etag.ends_with('"'), "{}", f.etag);
            assert!(!f.content_type.is_empty(), "{}", f.path);
            assert_eq!(find(f.path).map(|g| g.path), Some(f.path));
        }
    }

    #[test]
    fn root_is_index_and_unknown_paths_are_none() {
        assert_eq!(
            find("/").map(|f| f.path),
            find("/index.html").map(|f| f.path)
        );
        for path in [
            "",
            "/nope",
            "/../Cargo.toml",
            "/%2e%2e/Cargo.toml",
            "//index.html",
        ] {
            assert!(find(path).is_none(), "{path}");
        }
    }

    #[test]
    fn get_has_the_body_and_html_the_policy() {
        let (head, body) = answer("GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("\r\nContent-Length: 15\r\n"), "{head}");
        assert!(
            head.contains("\r\nETag: \"00000000000000ab\"\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nCache-Control: no-cache\r\n"), "{head}");
        assert!(
            head.contains(&format!(
                "\r\nContent-Security-Policy: {CONTENT_SECURITY_POLICY}\r\n"
            )),
            "{head}"
        );
        assert_eq!(body, b"<!doctype html>");
        let (head_only, body) = answer("HEAD / HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(head_only, head);
        assert!(body.is_empty());
    }

    #[test]
    fn if_none_match_with_the_tag_is_304() {
        for value in [
            "\"00000000000000ab\"",
            "W/\"00000000000000ab\"",
            "*",
            "\"x\", \"00000000000000ab\"",
        ] {
            let (head, body) = answer(&format!(
                "GET / HTTP/1.1\r\nHost: t\r\nIf-None-Match: {value}\r\n\r\n"
            ));
            assert!(
                head.starts_with("HTTP/1.1 304 Not Modified\r\n"),
                "{value}: {head}"
            );
            assert!(
                head.contains("\r\nETag: \"00000000000000ab\"\r\n"),
                "{head}"
            );
            assert!(!head.contains("Content-Length"), "{head}");
            assert!(body.is_empty());
        }
        let (head, _) =
            answer("GET / HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"00000000000000ac\"\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    }

    #[test]
    fn other_methods_are_405_with_allow() {
        let (head, body) = answer("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 405 "), "{head}");
        assert!(head.contains("\r\nAllow: GET, HEAD\r\n"), "{head}");
        assert!(body.is_empty());
    }
}
