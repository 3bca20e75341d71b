//! Close frame payloads (RFC 6455 §5.5.1, §7.4): which codes are valid, and parsing.

use super::error::DecodeError;
use super::event::Event;

/// Whether a client may send `code` in a close frame.
///
/// Valid: 1000–1003, 1007–1011, the IANA-registered 1012–1014 (service restart, try again
/// later, bad gateway; we send 1013 ourselves), and 3000–4999 (libraries and
/// applications). Invalid: everything else, notably 1004 (reserved), 1005, 1006 and 1015
/// (only for reporting, never sent) and 0–999, 1016–2999, 5000 and up.
pub const fn is_valid_received(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Whether the server may send `code`: the same set as [`is_valid_received`].
pub const fn is_sendable(code: u16) -> bool {
    is_valid_received(code)
}

/// Turns an unmasked close frame payload into [`Event::Close`].
pub(crate) fn parse(mut payload: Vec<u8>) -> Result<Event, DecodeError> {
    let code = match payload.as_slice() {
        [] => {
            return Ok(Event::Close {
                code: None,
                reason: String::new(),
            });
        }
        [_] => return Err(DecodeError::CloseOneByte),
        [high, low, ..] => u16::from_be_bytes([*high, *low]),
    };
    if !is_valid_received(code) {
        return Err(DecodeError::InvalidCloseCode(code));
    }
    payload.drain(..2);
    let reason = String::from_utf8(payload).map_err(|_| DecodeError::InvalidCloseReason)?;
    Ok(Event::Close {
        code: Some(code),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::close;

    fn payload(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason);
        p
    }

    #[test]
    fn valid_codes() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            assert!(is_valid_received(code), "{code}");
        }
        for code in [1012, 1013, 1014] {
            assert!(is_valid_received(code), "IANA-registered {code}");
        }
        for code in [
            close::NORMAL,
            close::GOING_AWAY,
            close::PROTOCOL_ERROR,
            close::UNSUPPORTED_DATA,
            close::INVALID_PAYLOAD,
            close::POLICY_VIOLATION,
            close::MESSAGE_TOO_BIG,
            close::INTERNAL_ERROR,
            close::TRY_AGAIN_LATER,
            close::TOKEN_EXPIRED,
            close::SLOW_CONSUMER,
            close::RATE_LIMITED,
            close::TOO_MANY_CONNECTIONS,
            close::IDLE_TIMEOUT,
            close::BAD_MESSAGES,
        ] {
            assert!(is_sendable(code), "protocol::close code {code}");
        }
    }

    #[test]
    fn invalid_codes() {
        for code in [
            0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!is_valid_received(code), "{code}");
            assert_eq!(
                parse(payload(code, b"")),
                Err(DecodeError::InvalidCloseCode(code))
            );
        }
    }

    #[test]
    fn empty_payload_has_no_code() {
        assert_eq!(
            parse(Vec::new()),
            Ok(Event::Close {
                code: None,
                reason: String::new()
            })
        );
    }

    #[test]
    fn one_byte_payload_is_a_protocol_error() {
        let err = parse(vec![3]).unwrap_err();
        assert_eq!(err, DecodeError::CloseOneByte);
        assert_eq!(err.close_code(), close::PROTOCOL_ERROR);
    }

    #[test]
    fn code_and_reason() {
        assert_eq!(
            parse(payload(1000, "bye ✓".as_bytes())),
            Ok(Event::Close {
                code: Some(1000),
                reason: "bye ✓".to_owned()
            })
        );
        assert_eq!(
            parse(payload(4001, b"")),
            Ok(Event::Close {
                code: Some(4001),
                reason: String::new()
            })
        );
    }

    #[test]
    fn invalid_reason_is_invalid_payload() {
        let err = parse(payload(
            1000,
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80",
        ))
        .unwrap_err();
        assert_eq!(err, DecodeError::InvalidCloseReason);
        assert_eq!(err.close_code(), close::INVALID_PAYLOAD);
        let err = parse(payload(1000, b"ok\xff")).unwrap_err();
        assert_eq!(err.close_code(), close::INVALID_PAYLOAD);
    }
}
