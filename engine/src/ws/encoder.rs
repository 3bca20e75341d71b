//! Frames the server sends: unmasked, never fragmented (RFC 6455 §5.1, §5.2).

use protocol::limits::CONTROL_PAYLOAD_BYTES_MAX;

use super::close;
use super::frame::{self, OpCode, SERVER_HEADER_BYTES_MAX};

/// The header of one server frame, on the stack, for a vectored write of the header and a
/// payload held elsewhere (a body shared by many connections).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    bytes: [u8; SERVER_HEADER_BYTES_MAX],
    len: u8,
}

impl FrameHeader {
    /// The header of a final, unmasked frame of `opcode` with `payload_len` bytes.
    pub fn new(opcode: OpCode, payload_len: usize) -> FrameHeader {
        if opcode.is_control() {
            assert!(payload_len <= CONTROL_PAYLOAD_BYTES_MAX, "RFC 6455 §5.5");
        }
        assert!(opcode != OpCode::Continuation, "the server never fragments");
        let mut bytes = [0; SERVER_HEADER_BYTES_MAX];
        let len = frame::write_server_header(&mut bytes, opcode, payload_len);
        FrameHeader {
            bytes,
            len: u8::try_from(len).expect("a header is at most 10 bytes"),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Bytes of the header of a server frame with `payload_len` bytes of payload.
pub const fn header_len(payload_len: usize) -> usize {
    if payload_len < 126 {
        2
    } else if payload_len <= 0xFFFF {
        4
    } else {
        10
    }
}

/// Appends the header of a frame of `opcode` with `payload_len` bytes; the caller writes
/// the payload.
pub fn write_header(out: &mut Vec<u8>, opcode: OpCode, payload_len: usize) {
    out.extend_from_slice(FrameHeader::new(opcode, payload_len).as_bytes());
}

/// Appends one frame: header and payload.
pub fn write_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    out.reserve(header_len(payload.len()) + payload.len());
    write_header(out, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// Appends a text frame.
pub fn write_text(out: &mut Vec<u8>, text: &str) {
    write_frame(out, OpCode::Text, text.as_bytes());
}

/// Appends a binary frame.
pub fn write_binary(out: &mut Vec<u8>, data: &[u8]) {
    write_frame(out, OpCode::Binary, data);
}

/// Appends a ping. Panics if `payload` is over 125 bytes.
pub fn write_ping(out: &mut Vec<u8>, payload: &[u8]) {
    write_frame(out, OpCode::Ping, payload);
}

/// Appends a pong. Panics if `payload` is over 125 bytes.
pub fn write_pong(out: &mut Vec<u8>, payload: &[u8]) {
    write_frame(out, OpCode::Pong, payload);
}

/// Appends a close frame with `code` and `reason`.
///
/// A reason over 123 bytes (the room left by the code in a control frame) is cut at the
/// last character boundary that fits. Panics if `code` may not be sent
/// ([`close::is_sendable`]).
pub fn write_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    assert!(
        close::is_sendable(code),
        "close code {code} may not be sent"
    );
    let reason = truncate(reason, CONTROL_PAYLOAD_BYTES_MAX - 2);
    write_header(out, OpCode::Close, 2 + reason.len());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
}

/// Appends a close frame without a status code, the answer to a client's empty close.
pub fn write_close_empty(out: &mut Vec<u8>) {
    write_header(out, OpCode::Close, 0);
}

/// The longest prefix of `text` of at most `bytes_max` bytes that ends on a character
/// boundary.
fn truncate(text: &str, bytes_max: usize) -> &str {
    if text.len() <= bytes_max {
        return text;
    }
    let end = (0..=bytes_max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .expect("0 is a char boundary");
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_examples() {
        // RFC 6455 §5.7: unmasked "Hello", a 256-byte and a 64 KiB binary frame.
        let mut out = Vec::new();
        write_text(&mut out, "Hello");
        assert_eq!(out, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        out.clear();
        write_binary(&mut out, &[0; 256]);
        assert_eq!(out[..4], [0x82, 0x7E, 0x01, 0x00]);
        assert_eq!(out.len(), 4 + 256);
        out.clear();
        write_binary(&mut out, &vec![0; 65536]);
        assert_eq!(out[..10], [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(out.len(), 10 + 65536);
        out.clear();
        write_ping(&mut out, b"Hello");
        assert_eq!(out, [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        out.clear();
        write_pong(&mut out, b"Hello");
        assert_eq!(out[..2], [0x8A, 0x05]);
    }

    #[test]
    fn header_len_matches_written_header() {
        for len in [0, 1, 125, 126, 127, 65535, 65536, 1 << 20] {
            let header = FrameHeader::new(OpCode::Binary, len);
            assert_eq!(header.as_bytes().len(), header_len(len), "{len}");
            let mut out = vec![0xAA];
            write_header(&mut out, OpCode::Binary, len);
            assert_eq!(&out[1..], header.as_bytes());
        }
    }

    #[test]
    fn close_frames() {
        let mut out = Vec::new();
        write_close(&mut out, 1000, "");
        assert_eq!(out, [0x88, 0x02, 0x03, 0xE8]);
        out.clear();
        write_close(&mut out, protocol::close::SLOW_CONSUMER, "slow");
        assert_eq!(out, [0x88, 0x06, 0x0F, 0xA2, b's', b'l', b'o', b'w']);
        out.clear();
        write_close_empty(&mut out);
        assert_eq!(out, [0x88, 0x00]);
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let reason = "é".repeat(100); // 200 bytes
        let mut out = Vec::new();
        write_close(&mut out, 1001, &reason);
        assert_eq!(out[1], 2 + 122);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
        assert_eq!(truncate("abc", 2), "ab");
        assert_eq!(truncate("aé", 2), "a");
    }

    #[test]
    #[should_panic(expected = "may not be sent")]
    fn reserved_close_code_panics() {
        write_close(&mut Vec::new(), 1005, "");
    }

    #[test]
    #[should_panic(expected = "RFC 6455")]
    fn long_ping_panics() {
        write_ping(&mut Vec::new(), &[0; 126]);
    }
}
