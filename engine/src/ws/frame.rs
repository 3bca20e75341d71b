//! Frame headers (RFC 6455 §5.2): opcodes, and parsing the header of a client's frame.

use protocol::limits::CONTROL_PAYLOAD_BYTES_MAX;

use super::error::DecodeError;

const FIN_BIT: u8 = 0x80;
const RSV_BITS: u8 = 0x70;
const OPCODE_BITS: u8 = 0x0F;
const MASK_BIT: u8 = 0x80;
const LEN7_BITS: u8 = 0x7F;
const LEN_16: u8 = 126;
const LEN_64: u8 = 127;

/// Bytes of the longest frame header a client can send: 2, an 8-byte length, a 4-byte mask.
pub const CLIENT_HEADER_BYTES_MAX: usize = 14;

/// Bytes of the longest frame header the server sends: 2 and an 8-byte length, no mask.
pub const SERVER_HEADER_BYTES_MAX: usize = 10;

/// A frame's opcode; the reserved ones (3–7, 0xB–0xF) have no variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl OpCode {
    /// The opcode in the low four bits of `bits`, or `None` if it is reserved.
    pub const fn from_bits(bits: u8) -> Option<OpCode> {
        match bits & OPCODE_BITS {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// Close, ping and pong: never fragmented, at most 125 bytes of payload.
    pub const fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// The header of one frame from a client, checked against everything a header alone
/// can break.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub fin: bool,
    pub opcode: OpCode,
    pub mask: [u8; 4],
    pub payload_len: u64,
}

/// Parses the header of a client's frame at the start of `bytes`.
///
/// `Ok(None)` means more bytes are needed, which can only happen while `bytes` is shorter
/// than [`CLIENT_HEADER_BYTES_MAX`]. Each rule is checked as soon as the bytes it needs are
/// there, so a bad first byte fails before the rest of the header arrives. Payload limits
/// depend on the message in progress and are the decoder's to check.
pub(crate) fn parse_header(bytes: &[u8]) -> Result<Option<(Header, usize)>, DecodeError> {
    let Some(&first) = bytes.first() else {
        return Ok(None);
    };
    if first & RSV_BITS != 0 {
        return Err(DecodeError::ReservedBits);
    }
    let opcode =
        OpCode::from_bits(first).ok_or(DecodeError::ReservedOpcode(first & OPCODE_BITS))?;
    let fin = first & FIN_BIT != 0;
    if opcode.is_control() && !fin {
        return Err(DecodeError::FragmentedControl);
    }
    let Some(&second) = bytes.get(1) else {
        return Ok(None);
    };
    if second & MASK_BIT == 0 {
        return Err(DecodeError::Unmasked);
    }
    let len7 = second & LEN7_BITS;
    if opcode.is_control() && usize::from(len7) > CONTROL_PAYLOAD_BYTES_MAX {
        return Err(DecodeError::ControlTooLong { len: len7 });
    }
    let (payload_len, mask_at) = match len7 {
        LEN_16 => {
            let Some(len) = array(bytes, 2) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes(len)), 4)
        }
        LEN_64 => {
            let Some(len) = array(bytes, 2) else {
                return Ok(None);
            };
            let len = u64::from_be_bytes(len);
            if len >> 63 != 0 {
                return Err(DecodeError::LengthMsbSet);
            }
            (len, 10)
        }
        len => (u64::from(len), 2),
    };
    let Some(mask) = array(bytes, mask_at) else {
        return Ok(None);
    };
    let header = Header {
        fin,
        opcode,
        mask,
        payload_len,
    };
    Ok(Some((header, mask_at + 4)))
}

/// The `N` bytes at `at`, if there are that many.
fn array<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at + N)?.try_into().ok()
}

/// Writes the header of an unmasked, unfragmented server frame into `out` and returns its
/// length.
pub(crate) fn write_server_header(
    out: &mut [u8; SERVER_HEADER_BYTES_MAX],
    opcode: OpCode,
    payload_len: usize,
) -> usize {
    out[0] = FIN_BIT | opcode as u8;
    if let Ok(len) = u8::try_from(payload_len)
        && len < LEN_16
    {
        out[1] = len;
        2
    } else if let Ok(len) = u16::try_from(payload_len) {
        out[1] = LEN_16;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        out[1] = LEN_64;
        let len = u64::try_from(payload_len).expect("usize fits in u64 on supported targets");
        out[2..10].copy_from_slice(&len.to_be_bytes());
        10
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(bytes: &[u8]) -> Result<Option<(Header, usize)>, DecodeError> {
        parse_header(bytes)
    }

    #[test]
    fn opcodes() {
        for bits in 0..=0xFu8 {
            let op = OpCode::from_bits(bits);
            let reserved = matches!(bits, 3..=7 | 0xB..=0xF);
            assert_eq!(op.is_none(), reserved, "{bits:#x}");
            if let Some(op) = op {
                assert_eq!(op as u8, bits);
                assert_eq!(op.is_control(), bits >= 8);
            }
        }
    }

    #[test]
    fn short_header() {
        let (h, n) = header(&[0x81, 0x85, 1, 2, 3, 4]).unwrap().unwrap();
        assert_eq!(n, 6);
        assert_eq!(
            h,
            Header {
                fin: true,
                opcode: OpCode::Text,
                mask: [1, 2, 3, 4],
                payload_len: 5
            }
        );
    }

    #[test]
    fn extended_lengths() {
        let (h, n) = header(&[0x02, 0xFE, 0x01, 0x00, 9, 9, 9, 9])
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.payload_len, n, h.fin, h.opcode),
            (256, 8, false, OpCode::Binary)
        );
        let mut b = vec![0x82, 0xFF];
        b.extend_from_slice(&(1u64 << 40).to_be_bytes());
        b.extend_from_slice(&[0; 4]);
        let (h, n) = header(&b).unwrap().unwrap();
        assert_eq!((h.payload_len, n), (1 << 40, 14));
    }

    #[test]
    fn incomplete_at_every_length() {
        let mut b = vec![0x82, 0xFF];
        b.extend_from_slice(&70_000u64.to_be_bytes());
        b.extend_from_slice(&[1, 2, 3, 4]);
        for end in 0..b.len() {
            assert_eq!(header(&b[..end]), Ok(None), "{end}");
        }
        assert!(header(&b).unwrap().is_some());
    }

    #[test]
    fn length_msb_must_be_zero() {
        let mut b = vec![0x82, 0xFF];
        b.extend_from_slice(&(1u64 << 63).to_be_bytes());
        assert_eq!(header(&b), Err(DecodeError::LengthMsbSet));
    }

    #[test]
    fn reserved_bits() {
        for rsv in [0x40, 0x20, 0x10, 0x70] {
            assert_eq!(header(&[0x81 | rsv]), Err(DecodeError::ReservedBits));
        }
    }

    #[test]
    fn reserved_opcodes_fail_on_the_first_byte() {
        for op in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(header(&[0x80 | op]), Err(DecodeError::ReservedOpcode(op)));
        }
    }

    #[test]
    fn unmasked() {
        assert_eq!(header(&[0x81, 0x05]), Err(DecodeError::Unmasked));
    }

    #[test]
    fn control_frames() {
        assert_eq!(header(&[0x09]), Err(DecodeError::FragmentedControl));
        assert_eq!(header(&[0x08]), Err(DecodeError::FragmentedControl));
        assert_eq!(
            header(&[0x89, 0x80 | 0x7E]),
            Err(DecodeError::ControlTooLong { len: 126 })
        );
        assert_eq!(
            header(&[0x8A, 0x80 | 0x7F]),
            Err(DecodeError::ControlTooLong { len: 127 })
        );
        let (h, _) = header(&[0x89, 0x80 | 0x7D, 0, 0, 0, 0]).unwrap().unwrap();
        assert_eq!(h.payload_len, 125);
    }

    #[test]
    fn server_header_lengths() {
        let mut out = [0; SERVER_HEADER_BYTES_MAX];
        assert_eq!(write_server_header(&mut out, OpCode::Text, 0), 2);
        assert_eq!(out[..2], [0x81, 0]);
        assert_eq!(write_server_header(&mut out, OpCode::Binary, 125), 2);
        assert_eq!(out[..2], [0x82, 125]);
        assert_eq!(write_server_header(&mut out, OpCode::Binary, 126), 4);
        assert_eq!(out[..4], [0x82, 126, 0, 126]);
        assert_eq!(write_server_header(&mut out, OpCode::Binary, 65535), 4);
        assert_eq!(out[..4], [0x82, 126, 0xFF, 0xFF]);
        assert_eq!(write_server_header(&mut out, OpCode::Close, 65536), 10);
        assert_eq!(out[..10], [0x88, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }
}
