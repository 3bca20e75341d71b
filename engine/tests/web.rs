//! The browser client on the public port: every file under `web/` (listed
//! at test time, so the set may change) served byte for byte with its
//! content type, caching and security headers; `HEAD`; `If-None-Match` and
//! 304; the refusals (405 with `Allow`, 404 for anything not embedded, `..`
//! and percent-encoding included); a head as Chromium sends it on a page
//! load; `--no-web`; and `/v1/info`, which the client reads before it signs
//! in.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::path::{Path, PathBuf};

use support::http::{self, Response, get, post};
use support::{Options, Server};

/// A token secret for servers without `--dev`.
const SECRET: &str = "web tests secret, at least 32 bytes long";

/// The policy every HTML page carries.
const CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; \
                   frame-ancestors 'none'; form-action 'self'";

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../web")
}

/// Every file under `web/` as (URL path, file), names starting with `.`
/// skipped; panics if there is no `web/index.html`.
fn web_files() -> Vec<(String, PathBuf)> {
    let dir = web_dir();
    assert!(
        dir.join("index.html").is_file(),
        "{} has no index.html: the browser client is missing (these tests serve what is there)",
        dir.display()
    );
    let mut files = Vec::new();
    let mut dirs = vec![(String::new(), dir)];
    while let Some((prefix, dir)) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            if name.starts_with('.') {
                continue;
            }
            let url = format!("{prefix}/{name}");
            if entry.file_type().unwrap().is_dir() {
                dirs.push((url, entry.path()));
            } else {
                files.push((url, entry.path()));
            }
        }
    }
    files.sort();
    files
}

/// The content type a file must be served with, by its extension: the kinds
/// `web/` holds, written out independently of `build.rs`.
fn content_type(path: &str) -> &'static str {
    let extension = path.rsplit_once('.').map_or("", |(_, e)| e);
    match extension {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "svg" => "image/svg+xml",
        _ => panic!("{path}: a new kind of file in web/; add its expected type here"),
    }
}

fn head(server: &Server, path: &str, fields: &str) -> Response {
    let raw = format!("HEAD {path} HTTP/1.1\r\nHost: test\r\n{fields}\r\n");
    http::request_to_close(server.addr(), raw.as_bytes())
}

fn get_with(server: &Server, path: &str, fields: &str) -> Response {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{fields}\r\n");
    http::request_to_close(server.addr(), raw.as_bytes())
}

/// The headers every 200 and 304 of a file carries.
#[track_caller]
fn assert_file_headers(r: &Response, path: &str) {
    let want_type = content_type(path);
    assert_eq!(r.header("content-type"), Some(want_type), "{path}");
    assert_eq!(r.header("cache-control"), Some("no-cache"), "{path}");
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{path}"
    );
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{path}");
    assert_eq!(r.header("connection"), Some("close"), "{path}");
    let etag = r
        .header("etag")
        .unwrap_or_else(|| panic!("{path}: no ETag"));
    assert!(
        etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
        "{path}: not a strong ETag: {etag}"
    );
    let csp = r.header("content-security-policy");
    if want_type.starts_with("text/html") {
        assert_eq!(csp, Some(CSP), "{path}");
    } else {
        assert_eq!(csp, None, "{path}");
    }
}

#[test]
fn root_is_index_html_with_its_policy() {
    let server = Server::start();
    let index = std::fs::read(web_dir().join("index.html")).unwrap();
    let root = get(server.addr(), "/");
    assert_eq!(root.status, 200, "{}", root.text());
    assert_file_headers(&root, "/index.html");
    assert_eq!(root.body, index, "GET / is web/index.html");
    let named = get(server.addr(), "/index.html");
    assert_eq!((named.status, &named.body), (200, &index));
    assert_eq!(named.header("etag"), root.header("etag"));
    // The query plays no part in finding the file.
    let query = get(server.addr(), "/index.html?x=1");
    assert_eq!((query.status, &query.body), (200, &index));
}

#[test]
fn every_file_under_web_is_served_byte_for_byte() {
    let server = Server::start();
    let files = web_files();
    for (url, file) in &files {
        let want = std::fs::read(file).unwrap();
        let r = get(server.addr(), url);
        assert_eq!(r.status, 200, "{url}: {}", r.text());
        assert_file_headers(&r, url);
        assert!(
            r.body == want,
            "{url}: the body differs from {}",
            file.display()
        );
    }
    // Each file has its own tag (they differ in content, or the test would
    // not know which is which).
    let mut etags: Vec<String> = files
        .iter()
        .map(|(url, _)| get(server.addr(), url).header("etag").unwrap().to_owned())
        .collect();
    etags.sort();
    etags.dedup();
    let mut bodies: Vec<Vec<u8>> = files
        .iter()
        .map(|(_, f)| std::fs::read(f).unwrap())
        .collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(etags.len(), bodies.len(), "one ETag per distinct content");
}

#[test]
fn head_has_the_headers_and_no_body() {
    let server = Server::start();
    for (url, file) in web_files() {
        let len = std::fs::metadata(&file).unwrap().len();
        let got = get(server.addr(), &url);
        let r = head(&server, &url, "");
        assert_eq!(r.status, 200, "{url}");
        assert_file_headers(&r, &url);
        assert_eq!(
            r.header("content-length"),
            Some(len.to_string().as_str()),
            "{url}"
        );
        assert_eq!(r.header("etag"), got.header("etag"), "{url}");
        assert!(r.body.is_empty(), "{url}: HEAD sent {} bytes", r.body.len());
    }
}

#[test]
fn if_none_match_with_the_etag_is_304_without_a_body() {
    let server = Server::start();
    let root = get(server.addr(), "/");
    let etag = root.header("etag").unwrap().to_owned();
    for value in [
        etag.clone(),
        format!("W/{etag}"),
        "*".to_owned(),
        format!("\"0\", {etag}"),
    ] {
        let fields = format!("If-None-Match: {value}\r\n");
        for r in [
            get_with(&server, "/", &fields),
            head(&server, "/index.html", &fields),
        ] {
            assert_eq!(r.status, 304, "If-None-Match: {value}");
            assert_file_headers(&r, "/index.html");
            assert_eq!(r.header("etag"), Some(etag.as_str()));
            assert!(r.body.is_empty(), "a 304 with {} bytes", r.body.len());
        }
    }
    // Another tag: the file.
    let r = get_with(&server, "/", "If-None-Match: \"0\"\r\n");
    assert_eq!((r.status, &r.body), (200, &root.body));
}

#[test]
fn other_methods_are_405_and_unknown_paths_404() {
    let server = Server::start();
    for path in ["/", "/index.html"] {
        let r = post(server.addr(), path, b"");
        assert_eq!(r.status, 405, "POST {path}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "POST {path}");
    }
    let r = http::request(
        server.addr(),
        b"DELETE /index.html HTTP/1.1\r\nHost: test\r\n\r\n",
    );
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    for path in [
        "/nope",
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/js/../index.html",
        "/index.html/",
        "/%69ndex.html",
        "//index.html",
        "/.gitignore",
    ] {
        let r = get(server.addr(), path);
        assert_eq!(r.status, 404, "GET {path}: {}", r.text());
    }
    let r = post(server.addr(), "/nope", b"");
    assert_eq!(r.status, 404, "POST to no file");
}

/// What Chromium sends for a page load (a reload, with a cookie of the same
/// site): far fewer than the 32 header lines allowed, quoted `sec-ch-ua`
/// values, compression the server does not use.
#[test]
fn a_chromium_page_load_head_is_accepted() {
    let server = Server::start();
    let host = server.addr();
    let fields = format!(
        "Connection: keep-alive\r\n\
         Cache-Control: max-age=0\r\n\
         sec-ch-ua: \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\", \"Google Chrome\";v=\"131\"\r\n\
         sec-ch-ua-mobile: ?0\r\n\
         sec-ch-ua-platform: \"Linux\"\r\n\
         Upgrade-Insecure-Requests: 1\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
         Chrome/131.0.0.0 Safari/537.36\r\n\
         Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,\
         image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7\r\n\
         Sec-Fetch-Site: same-origin\r\n\
         Sec-Fetch-Mode: navigate\r\n\
         Sec-Fetch-User: ?1\r\n\
         Sec-Fetch-Dest: document\r\n\
         Referer: http://{host}/\r\n\
         Accept-Encoding: gzip, deflate, br, zstd\r\n\
         Accept-Language: en-US,en;q=0.9,de;q=0.8\r\n\
         Cookie: theme=dark; _ga=GA1.1.123456789.1700000000\r\n\
         Priority: u=0, i\r\n\
         If-None-Match: \"0000000000000000\"\r\n"
    );
    let raw = format!("GET / HTTP/1.1\r\nHost: {host}\r\n{fields}\r\n");
    let r = http::request(server.addr(), raw.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, std::fs::read(web_dir().join("index.html")).unwrap());
    // A subresource as the page then asks for it (CORS mode, with Origin).
    let raw = format!(
        "GET /index.html HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n\
         Origin: http://{host}\r\nsec-ch-ua-platform: \"Linux\"\r\nUser-Agent: Mozilla/5.0\r\n\
         sec-ch-ua: \"Chromium\";v=\"131\"\r\nsec-ch-ua-mobile: ?0\r\nAccept: */*\r\n\
         Sec-Fetch-Site: same-origin\r\nSec-Fetch-Mode: cors\r\nSec-Fetch-Dest: script\r\n\
         Referer: http://{host}/\r\nAccept-Encoding: gzip, deflate, br, zstd\r\n\
         Accept-Language: en-US,en;q=0.9\r\n\r\n"
    );
    assert_eq!(http::request(server.addr(), raw.as_bytes()).status, 200);
}

#[test]
fn no_web_turns_the_client_off() {
    let flag = Options::new().arg("--no-web").start();
    let toml = Options::new().config("web = false\n").start();
    for server in [&flag, &toml] {
        for path in ["/", "/index.html"] {
            assert_eq!(get(server.addr(), path).status, 404, "{path}");
        }
        assert_eq!(get(server.addr(), "/v1/info").status, 200);
        assert_eq!(get(server.addr(), "/healthz").status, 200);
    }
}

#[test]
fn info_says_the_protocol_and_whether_dev() {
    let dev = Server::start();
    let production = Options::new()
        .production()
        .env("SWITCHBOARD_TOKEN_SECRET", SECRET)
        .start();
    for (server, is_dev) in [(&dev, true), (&production, false)] {
        let r = get(server.addr(), "/v1/info");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        let want = format!(
            r#"{{"server":"switchboard","protocol":{},"dev":{is_dev}}}"#,
            protocol::VERSION
        );
        assert_eq!(r.text(), want);
        let r = post(server.addr(), "/v1/info", b"");
        assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
    }
    // Served whatever the web setting.
    assert_eq!(get(production.addr(), "/").status, 200);
}
