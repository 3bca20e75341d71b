//! Every protocol-level bound, in one place.
//!
//! Engine-side limits that operators tune (rates, timeouts, queue depths) are
//! config fields with defaults; the constants here are the hard ceilings that
//! clients can rely on and that the codecs enforce. Relations between them are
//! checked at compile time at the bottom of this file.

use std::time::Duration;

/// Bytes of a message body (UTF-8 text).
pub const BODY_BYTES_MAX: usize = 16 * 1024;

/// Bytes of a group title.
pub const TITLE_BYTES_MAX: usize = 256;

/// Bytes of a push token (APNs tokens are 64 hex chars, FCM tokens ~160–200).
pub const PUSH_TOKEN_BYTES_MAX: usize = 512;

/// Bytes of an auth token (a JWT) in a header or query parameter.
pub const AUTH_TOKEN_BYTES_MAX: usize = 2048;

/// Bytes of an error message text sent to a client.
pub const ERROR_TEXT_BYTES_MAX: usize = 256;

/// Bytes a client message may spend on everything but variable-length fields
/// (type tag, ids, numbers, punctuation), generously rounded up.
pub const ENVELOPE_BYTES_MAX: usize = 1024;

/// Worst-case JSON expansion of one byte of string content (`\u0000`).
pub const JSON_ESCAPE_FACTOR: usize = 6;

/// Worst-case JSON bytes of one id in a list (`"18446744073709551615",`).
pub const JSON_ID_BYTES_MAX: usize = 23;

/// Users named in one group create/add/remove request.
pub const GROUP_OP_USERS_MAX: usize = 1_000;

/// Members of one group; the engine's configurable limit can only be lower.
pub const GROUP_MEMBERS_MAX: usize = 100_000;

/// Users one connection may subscribe to for presence.
pub const PRESENCE_SUBSCRIPTIONS_MAX: usize = 1_000;

/// Conversation positions a client may pass in one `sync`.
pub const SYNC_POSITIONS_MAX: usize = 2_000;

/// Worst-case JSON bytes of one sync position
/// (`{"conv":"18446744073709551615","seq":18446744073709551615},`).
pub const JSON_POSITION_BYTES_MAX: usize = 59;

/// Messages in one history page.
pub const FETCH_LIMIT_MAX: u16 = 100;

/// Bytes of one encoded server message the engine builds for a history page;
/// a page stops early (with `more = true`) rather than exceed it.
pub const HISTORY_PAGE_BYTES_MAX: usize = 1024 * 1024;

/// Bytes of one client→server WebSocket message after reassembly of fragments.
/// Sized so that any valid client message fits in JSON, whatever its escaping.
pub const CLIENT_MESSAGE_BYTES_MAX: usize = 128 * 1024;

/// Bytes of one server→client message. The largest is a `conv` reply for a
/// full group; clients size their receive limit from this.
pub const SERVER_MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Worst-case JSON bytes of one member in a `conv` reply
/// (`{"user":"18446744073709551615","role":"member","joined":18446744073709551615},`).
pub const JSON_MEMBER_BYTES_MAX: usize = 78;

/// Bytes of one WebSocket frame payload from a client.
pub const FRAME_PAYLOAD_BYTES_MAX: usize = CLIENT_MESSAGE_BYTES_MAX;

/// Bytes of a WebSocket control frame payload (RFC 6455 §5.5).
pub const CONTROL_PAYLOAD_BYTES_MAX: usize = 125;

/// Fragments one client message may be split into.
pub const FRAGMENTS_MAX: usize = 64;

/// Bytes of an HTTP request head (request line and headers) before upgrade.
/// Browsers send the site's cookies on the upgrade, hence the room.
pub const HANDSHAKE_BYTES_MAX: usize = 16 * 1024;

/// Header lines in one HTTP request head; more is refused with 431. Browsers
/// send 10–20 on an upgrade. Costs 32 bytes each, on the stack, while parsing.
pub const HTTP_HEADERS_MAX: usize = 32;

/// Bytes of an HTTP request body (the dev token endpoint's small JSON); more is
/// refused with 413.
pub const HTTP_BODY_BYTES_MAX: usize = 4 * 1024;

/// Lifetime the dev token endpoint gives its tokens.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

const _: () = assert!(
    BODY_BYTES_MAX * JSON_ESCAPE_FACTOR + ENVELOPE_BYTES_MAX <= CLIENT_MESSAGE_BYTES_MAX,
    "a maximal send must fit in one client message in JSON"
);
const _: () = assert!(
    TITLE_BYTES_MAX * JSON_ESCAPE_FACTOR
        + GROUP_OP_USERS_MAX * JSON_ID_BYTES_MAX
        + ENVELOPE_BYTES_MAX
        <= CLIENT_MESSAGE_BYTES_MAX,
    "a maximal group create must fit in one client message in JSON"
);
const _: () = assert!(
    PUSH_TOKEN_BYTES_MAX * JSON_ESCAPE_FACTOR + ENVELOPE_BYTES_MAX <= CLIENT_MESSAGE_BYTES_MAX
);
const _: () = assert!(
    PRESENCE_SUBSCRIPTIONS_MAX * JSON_ID_BYTES_MAX + ENVELOPE_BYTES_MAX <= CLIENT_MESSAGE_BYTES_MAX
);
const _: () = assert!(
    SYNC_POSITIONS_MAX * JSON_POSITION_BYTES_MAX + ENVELOPE_BYTES_MAX <= CLIENT_MESSAGE_BYTES_MAX,
    "a maximal sync must fit in one client message in JSON"
);
const _: () = assert!(FRAME_PAYLOAD_BYTES_MAX <= CLIENT_MESSAGE_BYTES_MAX);
const _: () = assert!(CONTROL_PAYLOAD_BYTES_MAX <= 125, "RFC 6455 §5.5");
const _: () = assert!(GROUP_OP_USERS_MAX <= GROUP_MEMBERS_MAX);
const _: () = assert!(
    BODY_BYTES_MAX * JSON_ESCAPE_FACTOR + ENVELOPE_BYTES_MAX <= HISTORY_PAGE_BYTES_MAX,
    "a history page always has room for at least one message"
);
const _: () = assert!(AUTH_TOKEN_BYTES_MAX < HANDSHAKE_BYTES_MAX);
const _: () = assert!(
    GROUP_MEMBERS_MAX * JSON_MEMBER_BYTES_MAX
        + TITLE_BYTES_MAX * JSON_ESCAPE_FACTOR
        + ENVELOPE_BYTES_MAX
        <= SERVER_MESSAGE_BYTES_MAX,
    "a conv reply for a full group fits in one server message"
);
const _: () = assert!(HISTORY_PAGE_BYTES_MAX <= SERVER_MESSAGE_BYTES_MAX);
const _: () = assert!(HTTP_BODY_BYTES_MAX <= HANDSHAKE_BYTES_MAX);
