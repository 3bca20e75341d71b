//! Message assembly: the payload of the message (or control frame) being received, its
//! fragment count, and how much of it is known to be valid UTF-8.

use std::mem;

use super::close;
use super::error::DecodeError;
use super::event::Event;
use super::frame::{Header, OpCode};
use super::limits::Limits;
use super::mask;

/// The data message in progress, if any, and the control frame being received inside it.
///
/// `buf` holds the unmasked payload received so far: the data message's bytes, then those
/// of a control frame while one is being received. It has no capacity between messages:
/// each finished message or control frame takes its bytes with it.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    buf: Vec<u8>,
    /// The data message in progress, set by its first frame, cleared by its last.
    kind: Option<DataKind>,
    /// Frames of the data message so far.
    fragments: u32,
    /// For a text message: `buf[..utf8_valid]` is valid UTF-8 ending on a character
    /// boundary; the bytes after it are a valid prefix of one character (or not yet
    /// checked).
    utf8_valid: u32,
    /// Where the current control frame's payload starts in `buf`.
    control_start: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DataKind {
    Text,
    Binary,
}

impl Assembler {
    pub(crate) const fn new() -> Assembler {
        Assembler {
            buf: Vec::new(),
            kind: None,
            fragments: 0,
            utf8_valid: 0,
            control_start: 0,
        }
    }

    /// Heap bytes held for a partly received message or control frame.
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.buf.capacity()
    }

    /// Whether a data message has started and not finished.
    pub(crate) fn in_message(&self) -> bool {
        self.kind.is_some()
    }

    /// Drops everything, returning the buffer's memory.
    pub(crate) fn clear(&mut self) {
        *self = Assembler::new();
    }

    /// Checks a frame header against fragmentation rules and size limits, and starts the
    /// frame.
    pub(crate) fn begin_frame(
        &mut self,
        header: &Header,
        limits: &Limits,
    ) -> Result<(), DecodeError> {
        if header.opcode.is_control() {
            // The header parser bounded the payload at 125 bytes.
            self.control_start = to_u32(self.buf.len());
            return Ok(());
        }
        match (header.opcode, self.kind) {
            (OpCode::Continuation, None) => return Err(DecodeError::ContinuationWithoutMessage),
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(DecodeError::MessageInterrupted);
            }
            _ => {}
        }
        if header.payload_len > limits.frame_payload_bytes_max() as u64 {
            return Err(DecodeError::FrameTooBig {
                len: header.payload_len,
                max: limits.frame_payload_bytes_max(),
            });
        }
        let message_len = self.buf.len() as u64 + header.payload_len;
        if message_len > limits.message_bytes_max() as u64 {
            return Err(DecodeError::MessageTooBig {
                len: message_len,
                max: limits.message_bytes_max(),
            });
        }
        if self.fragments as usize >= limits.fragments_max() {
            return Err(DecodeError::TooManyFragments {
                max: limits.fragments_max(),
            });
        }
        self.fragments += 1;
        match header.opcode {
            OpCode::Text => self.kind = Some(DataKind::Text),
            OpCode::Binary => self.kind = Some(DataKind::Binary),
            _ => {}
        }
        Ok(())
    }

    /// Appends masked payload bytes, unmasking them with `mask` (the key for the first of
    /// them).
    ///
    /// The buffer grows with the bytes that arrive, not with the lengths headers announce
    /// (a header is cheap to send): to exactly the first piece, so a frame that arrives
    /// whole sits in an allocation of its size, then geometrically, but never past the
    /// message limit (plus a control frame's 125 bytes).
    pub(crate) fn push(&mut self, masked: &[u8], mask: [u8; 4], limits: &Limits) {
        let start = self.buf.len();
        let needed = start + masked.len();
        if needed > self.buf.capacity() {
            let grown = (self.buf.capacity() * 2)
                .min(limits.message_bytes_max())
                .max(needed);
            self.buf.reserve_exact(grown - start);
        }
        self.buf.extend_from_slice(masked);
        mask::apply(&mut self.buf[start..], mask);
    }

    /// Checks the text received so far, failing as soon as it holds a sequence that no
    /// later bytes can make valid.
    pub(crate) fn check_utf8(&mut self) -> Result<(), DecodeError> {
        if self.kind != Some(DataKind::Text) {
            return Ok(());
        }
        let start = self.utf8_valid as usize;
        let valid = match std::str::from_utf8(&self.buf[start..]) {
            Ok(_) => self.buf.len(),
            // A truncated but so far valid character at the end: wait for the rest.
            Err(e) if e.error_len().is_none() => start + e.valid_up_to(),
            Err(_) => return Err(DecodeError::InvalidUtf8),
        };
        self.utf8_valid = to_u32(valid);
        Ok(())
    }

    /// Ends a data frame whose payload has all arrived: the message if it was the last
    /// one, else a check of the text so far.
    pub(crate) fn end_data_frame(&mut self, fin: bool) -> Result<Option<Event>, DecodeError> {
        if !fin {
            self.check_utf8()?;
            return Ok(None);
        }
        let kind = self
            .kind
            .expect("begin_frame set the kind of the message this frame belongs to");
        let buf = mem::take(&mut self.buf);
        self.clear();
        match kind {
            DataKind::Text => String::from_utf8(buf)
                .map(|text| Some(Event::Text(text)))
                .map_err(|_| DecodeError::InvalidUtf8),
            DataKind::Binary => Ok(Some(Event::Binary(buf))),
        }
    }

    /// Ends a control frame whose payload has all arrived.
    pub(crate) fn end_control_frame(&mut self, opcode: OpCode) -> Result<Event, DecodeError> {
        let payload = if self.in_message() {
            self.buf.split_off(self.control_start as usize)
        } else {
            mem::take(&mut self.buf)
        };
        self.control_start = 0;
        match opcode {
            OpCode::Ping => Ok(Event::Ping(payload)),
            OpCode::Pong => Ok(Event::Pong(payload)),
            OpCode::Close => close::parse(payload),
            OpCode::Continuation | OpCode::Text | OpCode::Binary => {
                unreachable!("end_control_frame called for data opcode {opcode:?}")
            }
        }
    }
}

/// A length within a message; [`Limits::new`] keeps every message under `u32::MAX`.
fn to_u32(len: usize) -> u32 {
    u32::try_from(len).expect("Limits keeps message bytes within u32")
}
