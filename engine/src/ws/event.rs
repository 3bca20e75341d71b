//! What the decoder hands the session: whole messages and control frames.

/// One complete message or control frame from the client.
///
/// Each owns its bytes: they were unmasked into a buffer sized for them, so handing them
/// on (to a codec, another shard) costs no further copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A text message, checked to be UTF-8.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping; answer it with a pong carrying the same payload.
    Ping(Vec<u8>),
    /// A pong.
    Pong(Vec<u8>),
    /// A close frame, already validated. `code` is `None` for an empty payload (the
    /// client gave no status); then `reason` is empty too. The decoder ignores every
    /// byte after it.
    Close { code: Option<u16>, reason: String },
}
