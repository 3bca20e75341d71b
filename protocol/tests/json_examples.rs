//! `docs/PROTOCOL.md` cannot drift from the code: every example in it
//! decodes and re-encodes to itself, and its tag lists and tables match the
//! crate.
//!
//! The doc marks checked blocks with an HTML comment on the line before the
//! fence:
//!
//! - `<!-- client -->` / `<!-- server -->` + a `json` block: one message. It
//!   must decode (with `decode_client` / `decode_server`) and re-encode to
//!   the same JSON, byte for byte once the doc's whitespace is removed, so the
//!   field order shown (which is the binary field order) is the real one.
//! - `<!-- client binary -->` / `<!-- server binary -->` + a block of hex
//!   bytes: the binary encoding of the JSON example just before it.
//! - `<!-- token claims -->` + a `json` block and `<!-- token vector -->` +
//!   `secret: …` / `token: …` lines: a signing test vector.
//!
//! `write_fuzz_seed_corpus` (ignored) turns the same examples into the seed
//! corpus of `protocol/fuzz/`.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use protocol::close;
use protocol::limits;
use protocol::token::{Claims, TokenKey};
use protocol::{
    ClientMsg, Content, ConvKind, DeviceId, Encoding, ErrorCode, GroupEvent, Message, Page,
    Platform, PresenceStatus, ReceiptKind, Role, ServerMsg, UserId,
};
use serde::de;
use serde_json::Value;

fn doc_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/PROTOCOL.md")
}

fn doc() -> String {
    let path = doc_path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Marker {
    Client,
    Server,
    ClientBinary,
    ServerBinary,
    TokenClaims,
    TokenVector,
}

impl Marker {
    fn parse(line: &str) -> Option<Marker> {
        match line.trim() {
            "<!-- client -->" => Some(Marker::Client),
            "<!-- server -->" => Some(Marker::Server),
            "<!-- client binary -->" => Some(Marker::ClientBinary),
            "<!-- server binary -->" => Some(Marker::ServerBinary),
            "<!-- token claims -->" => Some(Marker::TokenClaims),
            "<!-- token vector -->" => Some(Marker::TokenVector),
            _ => None,
        }
    }
}

/// One fenced block of the doc.
#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence, for failure messages.
    line: usize,
    lang: String,
    marker: Option<Marker>,
    text: String,
}

fn blocks(doc: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = doc.lines().enumerate();
    let mut previous = "";
    while let Some((i, line)) = lines.next() {
        if let Some(lang) = line.strip_prefix("```") {
            let mut text = String::new();
            for (_, inner) in lines.by_ref() {
                if inner.starts_with("```") {
                    break;
                }
                text.push_str(inner);
                text.push('\n');
            }
            blocks.push(Block {
                line: i + 1,
                lang: lang.trim().to_owned(),
                marker: Marker::parse(previous),
                text,
            });
            previous = "";
            continue;
        }
        assert!(
            Marker::parse(previous).is_none(),
            "line {i}: a marker must be directly followed by a fenced block"
        );
        previous = line;
    }
    blocks
}

/// `text` without the whitespace outside JSON strings.
fn compact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !c.is_whitespace() {
            out.push(c);
            in_string = c == '"';
        }
    }
    out
}

fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|byte| u8::from_str_radix(byte, 16).unwrap_or_else(|_| panic!("hex byte {byte:?}")))
        .collect()
}

fn encode<T: serde::Serialize>(encoding: Encoding, msg: &T) -> Vec<u8> {
    let mut bytes = Vec::new();
    encoding.encode(msg, &mut bytes);
    bytes
}

/// A message example, decoded.
enum Example {
    Client(ClientMsg),
    Server(ServerMsg),
}

/// Decodes a message example and checks that it re-encodes to itself.
fn check_json_example(block: &Block) -> Example {
    let at = format!("PROTOCOL.md line {}", block.line);
    assert_eq!(
        block.lang, "json",
        "{at}: marked blocks of messages are json"
    );
    let value: Value = serde_json::from_str(&block.text).unwrap_or_else(|e| panic!("{at}: {e}"));
    let bytes = block.text.as_bytes();
    let (example, encoded) = match block.marker {
        Some(Marker::Client) => {
            let msg = Encoding::Json
                .decode_client(bytes)
                .unwrap_or_else(|e| panic!("{at}: {e}"));
            let encoded = encode(Encoding::Json, &msg);
            (Example::Client(msg), encoded)
        }
        Some(Marker::Server) => {
            let msg = Encoding::Json
                .decode_server(bytes)
                .unwrap_or_else(|e| panic!("{at}: {e}"));
            let encoded = encode(Encoding::Json, &msg);
            (Example::Server(msg), encoded)
        }
        other => panic!("{at}: not a message marker: {other:?}"),
    };
    let reencoded: Value = serde_json::from_slice(&encoded).expect("the encoder writes JSON");
    assert_eq!(reencoded, value, "{at}: re-encoded differently");
    let encoded = String::from_utf8(encoded).expect("JSON is UTF-8");
    assert_eq!(
        encoded,
        compact(&block.text),
        "{at}: fields or escapes differ from the encoder's"
    );
    example
}

/// Checks every marked block and returns the decoded message examples.
fn examples() -> Vec<Example> {
    let doc = doc();
    let mut examples: Vec<Example> = Vec::new();
    for block in blocks(&doc) {
        let at = format!("PROTOCOL.md line {}", block.line);
        match block.marker {
            None => assert_ne!(block.lang, "json", "{at}: a json block needs a marker"),
            Some(Marker::Client | Marker::Server) => examples.push(check_json_example(&block)),
            Some(Marker::ClientBinary) => {
                let Some(Example::Client(msg)) = examples.last() else {
                    panic!("{at}: a client binary block follows a client example");
                };
                let bytes = hex(&block.text);
                assert_eq!(encode(Encoding::Binary, msg), bytes, "{at}");
                assert_eq!(Encoding::Binary.decode_client(&bytes).as_ref(), Ok(msg));
            }
            Some(Marker::ServerBinary) => {
                let Some(Example::Server(msg)) = examples.last() else {
                    panic!("{at}: a server binary block follows a server example");
                };
                let bytes = hex(&block.text);
                assert_eq!(encode(Encoding::Binary, msg), bytes, "{at}");
                assert_eq!(Encoding::Binary.decode_server(&bytes).as_ref(), Ok(msg));
            }
            // Checked by `token_test_vector`.
            Some(Marker::TokenClaims | Marker::TokenVector) => {}
        }
    }
    examples
}

#[test]
fn every_example_decodes_and_reencodes_to_itself() {
    let examples = examples();
    assert!(examples.len() >= 30, "only {} examples", examples.len());
}

/// The one key of a JSON object.
fn tag(value: &Value) -> String {
    let map = value
        .as_object()
        .expect("an enum with data is a JSON object");
    assert_eq!(map.len(), 1);
    map.keys().next().expect("one key").clone()
}

fn missing<'a>(all: &[&'a str], seen: &BTreeSet<String>) -> Vec<&'a str> {
    all.iter()
        .copied()
        .filter(|name| !seen.contains(*name))
        .collect()
}

#[test]
fn every_message_type_has_an_example() {
    let mut client = BTreeSet::new();
    let mut server = BTreeSet::new();
    let mut events = BTreeSet::new();
    for example in examples() {
        match example {
            Example::Client(msg) => {
                client.insert(tag(&serde_json::to_value(msg).expect("serializes")));
            }
            Example::Server(msg) => {
                let value = serde_json::to_value(&msg).expect("serializes");
                server.insert(tag(&value));
                if let ServerMsg::Msg(Message {
                    content: Content::Event(event),
                    ..
                }) = &msg
                {
                    events.insert(tag(&serde_json::to_value(event).expect("serializes")));
                }
            }
        }
    }
    assert_eq!(
        missing(support::variant_names::<ClientMsg>(), &client),
        [""; 0]
    );
    assert_eq!(
        missing(support::variant_names::<ServerMsg>(), &server),
        [""; 0]
    );
    assert_eq!(
        missing(support::variant_names::<GroupEvent>(), &events),
        [""; 0]
    );
}

/// The doc's line listing `T`'s binary tags.
fn tag_line<T: de::DeserializeOwned>(name: &str) -> String {
    let tags: Vec<String> = support::variant_names::<T>()
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{i} `{v}`"))
        .collect();
    format!("- `{name}`: {}", tags.join(", "))
}

#[test]
fn binary_tag_lists_match() {
    let doc = doc();
    for line in [
        tag_line::<ClientMsg>("ClientMsg"),
        tag_line::<ServerMsg>("ServerMsg"),
        tag_line::<Page>("Page"),
        tag_line::<Platform>("Platform"),
        tag_line::<Content>("Content"),
        tag_line::<GroupEvent>("GroupEvent"),
        tag_line::<Role>("Role"),
        tag_line::<ReceiptKind>("ReceiptKind"),
        tag_line::<PresenceStatus>("PresenceStatus"),
        tag_line::<ConvKind>("ConvKind"),
        tag_line::<ErrorCode>("ErrorCode"),
    ] {
        assert!(doc.lines().any(|l| l == line), "PROTOCOL.md lacks:\n{line}");
    }
}

#[test]
fn error_code_table_matches() {
    let doc = doc();
    for (index, name) in support::variant_names::<ErrorCode>().iter().enumerate() {
        let code: ErrorCode =
            serde_json::from_value(Value::String((*name).to_owned())).expect("a variant name");
        assert_eq!(
            usize::from(code.code()),
            index + 1,
            "binary tag is code - 1"
        );
        let retryable = if code.retryable() { "yes" } else { "no" };
        let row = format!("| `{name}` | {} | {retryable} |", code.code());
        assert!(
            doc.lines().any(|l| l.starts_with(&row)),
            "PROTOCOL.md lacks a row starting {row}"
        );
    }
}

#[test]
fn close_code_table_matches() {
    let doc = doc();
    for (code, name) in [
        (close::NORMAL, "NORMAL"),
        (close::GOING_AWAY, "GOING_AWAY"),
        (close::PROTOCOL_ERROR, "PROTOCOL_ERROR"),
        (close::UNSUPPORTED_DATA, "UNSUPPORTED_DATA"),
        (close::INVALID_PAYLOAD, "INVALID_PAYLOAD"),
        (close::POLICY_VIOLATION, "POLICY_VIOLATION"),
        (close::MESSAGE_TOO_BIG, "MESSAGE_TOO_BIG"),
        (close::INTERNAL_ERROR, "INTERNAL_ERROR"),
        (close::TRY_AGAIN_LATER, "TRY_AGAIN_LATER"),
        (close::TOKEN_EXPIRED, "TOKEN_EXPIRED"),
        (close::SLOW_CONSUMER, "SLOW_CONSUMER"),
        (close::RATE_LIMITED, "RATE_LIMITED"),
        (close::TOO_MANY_CONNECTIONS, "TOO_MANY_CONNECTIONS"),
        (close::IDLE_TIMEOUT, "IDLE_TIMEOUT"),
        (close::BAD_MESSAGES, "BAD_MESSAGES"),
    ] {
        let row = format!("| {code} | `{name}` |");
        assert!(
            doc.lines().any(|l| l.starts_with(&row)),
            "PROTOCOL.md lacks a row starting {row}"
        );
    }
}

#[test]
fn limits_table_matches() {
    let doc = doc();
    for (name, value) in [
        ("BODY_BYTES_MAX", limits::BODY_BYTES_MAX),
        ("TITLE_BYTES_MAX", limits::TITLE_BYTES_MAX),
        ("PUSH_TOKEN_BYTES_MAX", limits::PUSH_TOKEN_BYTES_MAX),
        ("AUTH_TOKEN_BYTES_MAX", limits::AUTH_TOKEN_BYTES_MAX),
        ("ERROR_TEXT_BYTES_MAX", limits::ERROR_TEXT_BYTES_MAX),
        ("GROUP_OP_USERS_MAX", limits::GROUP_OP_USERS_MAX),
        ("GROUP_MEMBERS_MAX", limits::GROUP_MEMBERS_MAX),
        (
            "PRESENCE_SUBSCRIPTIONS_MAX",
            limits::PRESENCE_SUBSCRIPTIONS_MAX,
        ),
        ("SYNC_POSITIONS_MAX", limits::SYNC_POSITIONS_MAX),
        ("FETCH_LIMIT_MAX", usize::from(limits::FETCH_LIMIT_MAX)),
        ("HISTORY_PAGE_BYTES_MAX", limits::HISTORY_PAGE_BYTES_MAX),
        ("CLIENT_MESSAGE_BYTES_MAX", limits::CLIENT_MESSAGE_BYTES_MAX),
        ("FRAME_PAYLOAD_BYTES_MAX", limits::FRAME_PAYLOAD_BYTES_MAX),
        (
            "CONTROL_PAYLOAD_BYTES_MAX",
            limits::CONTROL_PAYLOAD_BYTES_MAX,
        ),
        ("FRAGMENTS_MAX", limits::FRAGMENTS_MAX),
        ("HANDSHAKE_BYTES_MAX", limits::HANDSHAKE_BYTES_MAX),
        ("HTTP_HEADERS_MAX", limits::HTTP_HEADERS_MAX),
        ("HTTP_BODY_BYTES_MAX", limits::HTTP_BODY_BYTES_MAX),
        ("SERVER_MESSAGE_BYTES_MAX", limits::SERVER_MESSAGE_BYTES_MAX),
    ] {
        let row = format!("| `{name}` | {value} |");
        assert!(
            doc.lines().any(|l| l.starts_with(&row)),
            "PROTOCOL.md lacks a row starting {row}"
        );
    }
    assert_eq!(
        limits::DEV_TOKEN_TTL.as_secs(),
        7 * 24 * 3600,
        "the doc says 7 days"
    );
    assert!(doc.contains("`DEV_TOKEN_TTL` (7 days)"));
}

/// The doc's token test vector.
fn token_vector(doc: &str) -> TokenVector {
    let blocks = blocks(doc);
    let find = |marker| {
        blocks
            .iter()
            .find(|b| b.marker == Some(marker))
            .unwrap_or_else(|| panic!("PROTOCOL.md has no {marker:?} block"))
    };
    let claims_block = find(Marker::TokenClaims);
    let claims: Value = serde_json::from_str(&claims_block.text).expect("claims are JSON");
    let id = |key: &str| -> u64 {
        claims[key]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{key} is a decimal string"))
    };
    let secs = |key: &str| claims[key].as_u64().unwrap_or_else(|| panic!("{key}"));
    let claims = Claims {
        user: UserId(id("sub")),
        device: DeviceId(id("dev")),
        issued: secs("iat"),
        expires: secs("exp"),
    };
    let vector = &find(Marker::TokenVector).text;
    let field = |name: &str| {
        vector
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("token vector lacks {name}"))
            .to_owned()
    };
    let secret = field("secret: ");
    let token = field("token: ");
    TokenVector {
        claims,
        claims_json: claims_block.text.clone(),
        secret,
        token,
    }
}

struct TokenVector {
    claims: Claims,
    /// The claims example as written in the doc.
    claims_json: String,
    secret: String,
    token: String,
}

#[test]
fn token_test_vector() {
    let doc = doc();
    let TokenVector {
        claims,
        claims_json,
        secret,
        token,
    } = token_vector(&doc);
    let key = TokenKey::new(secret.as_bytes()).expect("the doc's secret is long enough");
    let signed = key.sign(&claims);
    assert_eq!(signed, token, "PROTOCOL.md's test vector token");
    assert_eq!(key.verify(&token, claims.issued), Ok(claims));
    let payload = token.split('.').nth(1).expect("three parts");
    let payload = B64.decode(payload).expect("base64url");
    assert_eq!(
        String::from_utf8(payload).expect("UTF-8"),
        compact(&claims_json),
        "the claims example is the token's payload"
    );
    let header = B64
        .decode(token.split('.').next().expect("three parts"))
        .expect("base64url");
    let header = format!("{}\n", String::from_utf8(header).expect("UTF-8"));
    assert!(doc.contains(&header), "PROTOCOL.md shows the header");
}

/// Writes the doc's examples as the fuzz seed corpus; run by hand after
/// changing the doc:
/// `cargo test -p protocol --test json_examples -- --ignored write_fuzz_seed_corpus`.
#[test]
#[ignore = "writes files into protocol/fuzz/corpus; run by hand"]
fn write_fuzz_seed_corpus() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let write = |target: &str, name: String, bytes: &[u8]| {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        std::fs::write(dir.join(name), bytes).expect("write seed");
    };
    let mut client = 0;
    let mut server = 0;
    for example in examples() {
        match example {
            Example::Client(msg) => {
                client += 1;
                let name = tag(&serde_json::to_value(&msg).expect("serializes"));
                let name = format!("{client:02}-{name}");
                write(
                    "decode_client_json",
                    name.clone(),
                    &encode(Encoding::Json, &msg),
                );
                write(
                    "decode_client_binary",
                    name,
                    &encode(Encoding::Binary, &msg),
                );
            }
            Example::Server(msg) => {
                server += 1;
                let name = tag(&serde_json::to_value(&msg).expect("serializes"));
                let name = format!("{server:02}-{name}");
                write(
                    "decode_server_json",
                    name.clone(),
                    &encode(Encoding::Json, &msg),
                );
                write(
                    "decode_server_binary",
                    name,
                    &encode(Encoding::Binary, &msg),
                );
            }
        }
    }
    // token_verify: a mode byte, then a token (mode 0) or a token's
    // `header.payload` that the target signs itself (mode 1).
    let doc = doc();
    let token = token_vector(&doc).token;
    let unsigned = token.rsplit_once('.').expect("three parts").0;
    write(
        "token_verify",
        "0-vector".into(),
        &[b"\0", token.as_bytes()].concat(),
    );
    write(
        "token_verify",
        "1-vector".into(),
        &[b"\x01", unsigned.as_bytes()].concat(),
    );
}
