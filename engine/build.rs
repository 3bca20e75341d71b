//! Embeds the browser client. Walks `web/` at the workspace root (names that start with `.`
//! skipped) and writes `$OUT_DIR/web_files.rs`: one `File` per file, sorted by URL path, with
//! its content type, a strong `ETag` (FNV-1a 64 of the bytes) and the bytes themselves through
//! `include_bytes!`, for `src/web.rs`. Without `web/` the table is empty.
//!
//! Only names made of URL-safe characters are embedded: the server looks paths up as they
//! arrive, without percent-decoding, so any other name could never be requested. Such a
//! name is skipped with a warning rather than failing the build.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Bytes of all embedded files together: the binary carries them, so past this the build
/// fails rather than quietly growing it.
const WEB_BYTES_MAX: usize = 16 << 20;

/// One embedded file.
struct Entry {
    /// `/` + the path under `web/`, `/`-separated.
    url: String,
    path: PathBuf,
    content_type: &'static str,
    etag: String,
    len: usize,
}

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let web = manifest_dir
        .parent()
        .expect("the engine crate sits in the workspace")
        .join("web");
    println!("cargo::rerun-if-changed=build.rs");
    // Cargo scans a directory recursively (the newest mtime of anything in it), so this
    // catches files added or removed anywhere under `web/`. If `web/` does not exist, cargo
    // reruns this script on every build until it does: slower, but a `web/` created later is
    // never missed.
    println!("cargo::rerun-if-changed={}", web.display());
    let mut entries = Vec::new();
    if web.is_dir() {
        walk(&web, "", &mut entries);
    }
    entries.sort_by(|a, b| a.url.cmp(&b.url));
    let total: usize = entries.iter().map(|e| e.len).sum();
    assert!(
        total <= WEB_BYTES_MAX,
        "web/ holds {total} bytes, over WEB_BYTES_MAX ({WEB_BYTES_MAX}) in engine/build.rs"
    );
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    let out = out_dir.join("web_files.rs");
    std::fs::write(&out, table(&entries))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}

/// Adds every file under `dir` (whose URL path is `prefix`) to `entries`.
fn walk(dir: &Path, prefix: &str, entries: &mut Vec<Entry>) {
    let listing =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in listing {
        let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            println!("cargo::warning=web: skipped {}: not UTF-8", path.display());
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        if !name.bytes().all(is_url_safe) {
            println!(
                "cargo::warning=web: skipped {}: a name the server cannot be asked for \
                 (use A-Z a-z 0-9 - . _ ~)",
                path.display()
            );
            continue;
        }
        let url = format!("{prefix}/{name}");
        // `file_type` does not follow symbolic links, so a linked directory cannot loop
        // the walk; a link to a file is read through (`fs::read` follows it).
        let file_type = entry
            .file_type()
            .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()));
        if file_type.is_dir() {
            println!("cargo::rerun-if-changed={}", path.display());
            walk(&path, &url, entries);
        } else if path.is_file() {
            println!("cargo::rerun-if-changed={}", path.display());
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            entries.push(Entry {
                content_type: content_type(&name),
                etag: format!("\"{:016x}\"", fnv1a64(&bytes)),
                len: bytes.len(),
                url,
                path,
            });
        }
    }
}

/// RFC 3986 unreserved characters: a path made of them is sent as is.
fn is_url_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

fn content_type(name: &str) -> &'static str {
    let extension = name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// FNV-1a, 64 bits: a validator, not a defence (the files are the server's own).
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The Rust expression `src/web.rs` includes: a slice of `File`s.
fn table(entries: &[Entry]) -> String {
    let mut out = String::from("&[\n");
    for e in entries {
        let path = e
            .path
            .to_str()
            .expect("built from UTF-8 names under a UTF-8 manifest path");
        writeln!(
            out,
            "    File {{ path: {:?}, content_type: {:?}, etag: {:?}, body: include_bytes!({:?}) }},",
            e.url, e.content_type, e.etag, path
        )
        .expect("writing to a String cannot fail");
    }
    out.push(']');
    out
}
