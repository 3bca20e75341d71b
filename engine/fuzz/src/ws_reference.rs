//! A reference decoder for client frames: RFC 6455 and the engine's documented rules,
//! written for clarity over a whole input (no state across reads, no buffer reuse), to
//! compare `engine::ws::Decoder` with.
//!
//! The rules, per frame, in the order the engine documents them (`ws::frame`,
//! `ws::assembler`, `ws::close`):
//! 1. header: reserved bits (1002); reserved opcode (1002); a control frame without FIN
//!    (1002); no mask bit (1002); a control payload over 125 bytes (1002); a 64-bit
//!    length with its top bit set (1002). Each fails as soon as its byte is there.
//! 2. data frames: a continuation without a message (1002), a text or binary frame
//!    inside one (1002), a frame over the frame limit (1009), a message that would go
//!    over the message limit (1009), more fragments than the limit (1009).
//! 3. payload: text must be UTF-8 (1007), checked at the end of each frame and, for an
//!    incomplete frame, on what has arrived (a truncated character at the end is not an
//!    error until the message ends).
//! 4. close: empty (no code), one byte (1002), a code a client may not send (1002), a
//!    reason that is not UTF-8 (1007). Nothing after a close or an error is read.

use engine::ws::{DecodeError, Event, Limits};

/// What the reference makes of a whole input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub events: Vec<Event>,
    pub end: End,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The input broke a rule.
    Error(DecodeError),
    /// A close frame arrived.
    Closed,
    /// The input ended between frames and messages.
    Idle,
    /// The input ended inside a frame header, a frame, or a fragmented message.
    Partial,
}

/// Close codes a client may send (RFC 6455 §7.4.1 and §7.4.2, IANA's 1012–1014).
pub fn close_code_is_valid(code: u16) -> bool {
    (1000..=1003).contains(&code) || (1007..=1014).contains(&code) || (3000..=4999).contains(&code)
}

/// The close code each error is documented to map to.
pub fn close_code_of(e: DecodeError) -> u16 {
    match e {
        DecodeError::FrameTooBig { .. }
        | DecodeError::MessageTooBig { .. }
        | DecodeError::TooManyFragments { .. } => 1009,
        DecodeError::InvalidUtf8 | DecodeError::InvalidCloseReason => 1007,
        _ => 1002,
    }
}

/// Whether `bytes` is UTF-8 that more bytes could complete.
fn is_utf8_prefix(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

struct Message {
    text: bool,
    bytes: Vec<u8>,
    fragments: usize,
}

pub fn decode(input: &[u8], limits: &Limits) -> Decoded {
    let mut events = Vec::new();
    let end = run(input, limits, &mut events);
    Decoded { events, end }
}

fn run(input: &[u8], limits: &Limits, events: &mut Vec<Event>) -> End {
    let mut message: Option<Message> = None;
    let mut rest = input;
    loop {
        let Some(&b0) = rest.first() else {
            return if message.is_some() {
                End::Partial
            } else {
                End::Idle
            };
        };
        // 1. The header.
        if b0 & 0x70 != 0 {
            return End::Error(DecodeError::ReservedBits);
        }
        let opcode = b0 & 0x0F;
        if !matches!(opcode, 0x0 | 0x1 | 0x2 | 0x8 | 0x9 | 0xA) {
            return End::Error(DecodeError::ReservedOpcode(opcode));
        }
        let fin = b0 & 0x80 != 0;
        let control = opcode >= 0x8;
        if control && !fin {
            return End::Error(DecodeError::FragmentedControl);
        }
        let Some(&b1) = rest.get(1) else {
            return End::Partial;
        };
        if b1 & 0x80 == 0 {
            return End::Error(DecodeError::Unmasked);
        }
        let len7 = b1 & 0x7F;
        if control && len7 > 125 {
            return End::Error(DecodeError::ControlTooLong { len: len7 });
        }
        let (len, mask_at) = match len7 {
            126 => {
                let Some(b) = rest.get(2..4) else {
                    return End::Partial;
                };
                (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
            }
            127 => {
                let Some(b) = rest.get(2..10) else {
                    return End::Partial;
                };
                let len = u64::from_be_bytes(b.try_into().expect("8 bytes"));
                if len >= 1 << 63 {
                    return End::Error(DecodeError::LengthMsbSet);
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        let Some(mask) = rest.get(mask_at..mask_at + 4) else {
            return End::Partial;
        };
        let mask: [u8; 4] = mask.try_into().expect("4 bytes");
        rest = &rest[mask_at + 4..];

        // 2. Fragmentation and limits.
        if !control {
            match (opcode, &message) {
                (0x0, None) => return End::Error(DecodeError::ContinuationWithoutMessage),
                (0x1 | 0x2, Some(_)) => return End::Error(DecodeError::MessageInterrupted),
                _ => {}
            }
            if len > limits.frame_payload_bytes_max() as u64 {
                return End::Error(DecodeError::FrameTooBig {
                    len,
                    max: limits.frame_payload_bytes_max(),
                });
            }
            let so_far = message.as_ref().map_or(0, |m| m.bytes.len());
            let total = so_far as u64 + len;
            if total > limits.message_bytes_max() as u64 {
                return End::Error(DecodeError::MessageTooBig {
                    len: total,
                    max: limits.message_bytes_max(),
                });
            }
            let fragments = message.as_ref().map_or(0, |m| m.fragments);
            if fragments >= limits.fragments_max() {
                return End::Error(DecodeError::TooManyFragments {
                    max: limits.fragments_max(),
                });
            }
            let m = message.get_or_insert_with(|| Message {
                text: opcode == 0x1,
                bytes: Vec::new(),
                fragments: 0,
            });
            m.fragments += 1;
        }

        // 3. The payload, as far as it has arrived.
        let len = usize::try_from(len).expect("bounded by a limit or 125");
        let arrived = len.min(rest.len());
        let payload: Vec<u8> = rest[..arrived]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        rest = &rest[arrived..];
        if control {
            if arrived < len {
                return End::Partial;
            }
            match opcode {
                0x9 => events.push(Event::Ping(payload)),
                0xA => events.push(Event::Pong(payload)),
                _ => {
                    return match close(payload) {
                        Ok(event) => {
                            events.push(event);
                            End::Closed
                        }
                        Err(e) => End::Error(e),
                    };
                }
            }
            continue;
        }
        let m = message.as_mut().expect("set above");
        m.bytes.extend_from_slice(&payload);
        if arrived < len || !fin {
            if m.text && !is_utf8_prefix(&m.bytes) {
                return End::Error(DecodeError::InvalidUtf8);
            }
            if arrived < len {
                return End::Partial;
            }
            continue;
        }
        let m = message.take().expect("set above");
        if m.text {
            match String::from_utf8(m.bytes) {
                Ok(text) => events.push(Event::Text(text)),
                Err(_) => return End::Error(DecodeError::InvalidUtf8),
            }
        } else {
            events.push(Event::Binary(m.bytes));
        }
    }
}

/// A close frame's payload (RFC 6455 §5.5.1).
fn close(payload: Vec<u8>) -> Result<Event, DecodeError> {
    match payload.len() {
        0 => Ok(Event::Close {
            code: None,
            reason: String::new(),
        }),
        1 => Err(DecodeError::CloseOneByte),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !close_code_is_valid(code) {
                return Err(DecodeError::InvalidCloseCode(code));
            }
            let reason = String::from_utf8(payload[2..].to_vec())
                .map_err(|_| DecodeError::InvalidCloseReason)?;
            Ok(Event::Close {
                code: Some(code),
                reason,
            })
        }
    }
}
