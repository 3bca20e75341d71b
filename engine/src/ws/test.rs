//! Decoder tests: every rule and its close code, split inputs, and round trips through
//! the encoder.

use proptest::prelude::*;
use protocol::close;
use protocol::limits::{CLIENT_MESSAGE_BYTES_MAX, FRAGMENTS_MAX, FRAME_PAYLOAD_BYTES_MAX};

use super::mask;
use super::*;

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONT: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked frame as a client sends it; `first` is the whole first byte.
fn raw_frame(first: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut out = vec![first];
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | u8::try_from(len).unwrap()),
        len @ 126..=0xFFFF => {
            out.push(0x80 | 0x7E);
            out.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        }
        len => {
            out.push(0x80 | 0x7F);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(payload);
    mask::apply(&mut out[start..], key);
    out
}

fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame(if fin { 0x80 } else { 0 } | opcode, payload, MASK)
}

fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    frame(true, CLOSE, &payload)
}

/// Everything the decoder makes of `chunks` fed in order: events, then the error if any.
fn decode_chunks<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
    limits: &Limits,
) -> (Vec<Event>, Option<DecodeError>) {
    let mut decoder = Decoder::new();
    let mut events = Vec::new();
    for chunk in chunks {
        for result in decoder.events(chunk, limits) {
            match result {
                Ok(event) => events.push(event),
                Err(e) => return (events, Some(e)),
            }
        }
    }
    (events, None)
}

fn decode_with(input: &[u8], limits: &Limits) -> (Vec<Event>, Option<DecodeError>) {
    decode_chunks([input], limits)
}

fn decode(input: &[u8]) -> (Vec<Event>, Option<DecodeError>) {
    decode_with(input, &Limits::PROTOCOL)
}

/// The error `input` ends in, checked to be the same fed whole and byte by byte.
fn error_of(input: &[u8]) -> DecodeError {
    error_with(input, &Limits::PROTOCOL)
}

fn error_with(input: &[u8], limits: &Limits) -> DecodeError {
    let whole = decode_with(input, limits);
    let bytes = decode_chunks(input.chunks(1), limits);
    assert_eq!(whole, bytes, "whole vs byte by byte");
    whole.1.expect("input should fail")
}

fn concat(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}

#[test]
fn state_is_small() {
    // 56 bytes on x86_64: the assembler (a Vec and three u32 counters, 40) and the phase
    // (a 14-byte header buffer or the payload cursor, 16).
    let size = std::mem::size_of::<Decoder>();
    assert!(size <= 64, "Decoder is {size} bytes");
    #[cfg(target_pointer_width = "64")]
    assert_eq!(size, 56);
}

#[test]
fn rfc_masked_hello() {
    // RFC 6455 §5.7.
    let input = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_eq!(decode(&input), (vec![Event::Text("Hello".into())], None));
}

#[test]
fn every_event_kind() {
    let input = concat(&[
        frame(true, TEXT, "héllo".as_bytes()),
        frame(true, BINARY, &[0, 1, 2, 255]),
        frame(true, PING, b"p"),
        frame(true, PONG, b""),
        frame(true, TEXT, b""),
        frame(true, BINARY, b""),
        close_frame(1000, b"bye"),
    ]);
    let (events, err) = decode(&input);
    assert_eq!(err, None);
    assert_eq!(
        events,
        vec![
            Event::Text("héllo".into()),
            Event::Binary(vec![0, 1, 2, 255]),
            Event::Ping(b"p".to_vec()),
            Event::Pong(Vec::new()),
            Event::Text(String::new()),
            Event::Binary(Vec::new()),
            Event::Close {
                code: Some(1000),
                reason: "bye".into()
            },
        ]
    );
}

#[test]
fn decode_reports_consumed_bytes() {
    let first = frame(true, TEXT, b"one");
    let second = frame(true, BINARY, b"two");
    let input = concat(&[first.clone(), second.clone()]);
    let mut decoder = Decoder::new();
    let limits = Limits::PROTOCOL;
    let (n, event) = decoder.decode(&input, &limits).unwrap();
    assert_eq!((n, event), (first.len(), Some(Event::Text("one".into()))));
    let (n, event) = decoder.decode(&input[first.len()..], &limits).unwrap();
    assert_eq!(
        (n, event),
        (second.len(), Some(Event::Binary(b"two".to_vec())))
    );
    assert_eq!(decoder.decode(&[], &limits).unwrap(), (0, None));
}

#[test]
fn extended_lengths() {
    for len in [125, 126, 127, 65535, 65536, 100_000] {
        let payload: Vec<u8> = (0..len)
            .map(|i: usize| u8::try_from(i % 251).unwrap())
            .collect();
        let (events, err) = decode(&frame(true, BINARY, &payload));
        assert_eq!(err, None, "{len}");
        assert_eq!(events, vec![Event::Binary(payload)], "{len}");
    }
}

#[test]
fn idle_decoder_holds_no_memory() {
    let mut decoder = Decoder::new();
    let limits = Limits::PROTOCOL;
    assert!(decoder.is_idle());
    let input = frame(true, BINARY, &[7; 1000]);
    // Part of the header: held inline, nothing on the heap.
    assert_eq!(decoder.decode(&input[..3], &limits).unwrap(), (3, None));
    assert!(!decoder.is_idle());
    assert_eq!(decoder.buffered_bytes(), 0);
    // Part of the payload: held in the message buffer.
    assert_eq!(
        decoder.decode(&input[3..500], &limits).unwrap(),
        (497, None)
    );
    assert!(decoder.buffered_bytes() >= 500 - 8);
    let (n, event) = decoder.decode(&input[500..], &limits).unwrap();
    assert_eq!(n, input.len() - 500);
    assert_eq!(event, Some(Event::Binary(vec![7; 1000])));
    assert!(decoder.is_idle());
    assert_eq!(decoder.buffered_bytes(), 0);
}

#[test]
fn whole_frame_is_held_in_an_exact_allocation() {
    let mut decoder = Decoder::new();
    let (_, event) = decoder
        .decode(&frame(true, BINARY, &[1; 1000]), &Limits::PROTOCOL)
        .unwrap();
    let Some(Event::Binary(data)) = event else {
        panic!("expected binary")
    };
    assert_eq!(data.capacity(), 1000);
}

#[test]
fn growth_stops_at_the_message_limit() {
    // A message of exactly the limit, in fragments fed 7 bytes at a time: the buffer
    // doubles as it fills but never beyond the limit.
    let limits = Limits::new(1000, 1000, 100);
    let mut frames: Vec<Vec<u8>> = vec![frame(false, BINARY, &[1; 100])];
    frames.extend((0..8).map(|_| frame(false, CONT, &[1; 100])));
    frames.push(frame(false, CONT, &[1; 99]));
    frames.push(frame(true, PING, &[2; 125]));
    let input = concat(&frames);
    let mut decoder = Decoder::new();
    let mut peak = 0;
    let mut events = Vec::new();
    for chunk in input.chunks(7) {
        events.extend(decoder.events(chunk, &limits).map(Result::unwrap));
        peak = peak.max(decoder.buffered_bytes());
    }
    assert_eq!(events, vec![Event::Ping(vec![2; 125])]);
    assert!(peak <= 1000 + 125, "{peak}");
    assert!(peak >= 999, "{peak}");
    let (_, event) = decoder.decode(&frame(true, CONT, &[1]), &limits).unwrap();
    assert_eq!(event, Some(Event::Binary(vec![1; 1000])));
    assert_eq!(decoder.buffered_bytes(), 0);
}

// Fragmentation (RFC 6455 §5.4).

#[test]
fn fragmented_message() {
    let input = concat(&[
        frame(false, TEXT, b"Hel"),
        frame(false, CONT, b""),
        frame(true, CONT, b"lo"),
    ]);
    assert_eq!(decode(&input), (vec![Event::Text("Hello".into())], None));
    let input = concat(&[frame(false, BINARY, &[1]), frame(true, CONT, &[2, 3])]);
    assert_eq!(decode(&input), (vec![Event::Binary(vec![1, 2, 3])], None));
}

#[test]
fn control_frames_inside_a_fragmented_message() {
    let input = concat(&[
        frame(false, TEXT, b"a"),
        frame(true, PING, b"ping"),
        frame(false, CONT, b"b"),
        frame(true, PONG, b"pong"),
        frame(true, CONT, b"c"),
        frame(true, TEXT, b"next"),
    ]);
    let expected = vec![
        Event::Ping(b"ping".to_vec()),
        Event::Pong(b"pong".to_vec()),
        Event::Text("abc".into()),
        Event::Text("next".into()),
    ];
    assert_eq!(decode(&input), (expected.clone(), None));
    assert_eq!(
        decode_chunks(input.chunks(1), &Limits::PROTOCOL),
        (expected, None)
    );
}

#[test]
fn close_inside_a_fragmented_message() {
    let input = concat(&[frame(false, BINARY, b"a"), close_frame(1001, b"")]);
    assert_eq!(
        decode(&input),
        (
            vec![Event::Close {
                code: Some(1001),
                reason: String::new()
            }],
            None
        )
    );
}

#[test]
fn continuation_without_a_message() {
    let err = error_of(&frame(true, CONT, b"x"));
    assert_eq!(err, DecodeError::ContinuationWithoutMessage);
    assert_eq!(err.close_code(), close::PROTOCOL_ERROR);
    // Also right after a finished message.
    let input = concat(&[frame(true, TEXT, b"x"), frame(false, CONT, b"y")]);
    assert_eq!(error_of(&input), DecodeError::ContinuationWithoutMessage);
}

#[test]
fn new_message_inside_a_fragmented_message() {
    for opcode in [TEXT, BINARY] {
        let input = concat(&[frame(false, TEXT, b"x"), frame(true, opcode, b"y")]);
        let err = error_of(&input);
        assert_eq!(err, DecodeError::MessageInterrupted);
        assert_eq!(err.close_code(), close::PROTOCOL_ERROR);
    }
}

// Header rules.

#[test]
fn reserved_bits_are_a_protocol_error() {
    for rsv in [0x10, 0x20, 0x40] {
        let err = error_of(&raw_frame(0x80 | rsv | TEXT, b"x", MASK));
        assert_eq!(err, DecodeError::ReservedBits);
        assert_eq!(err.close_code(), close::PROTOCOL_ERROR);
    }
    // On a control frame too, and after a valid message.
    let input = concat(&[frame(true, TEXT, b"ok"), raw_frame(0xC0 | PING, b"", MASK)]);
    assert_eq!(
        decode(&input),
        (
            vec![Event::Text("ok".into())],
            Some(DecodeError::ReservedBits)
        )
    );
}

#[test]
fn reserved_opcodes_are_a_protocol_error() {
    for opcode in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        let err = error_of(&raw_frame(0x80 | opcode, b"", MASK));
        assert_eq!(err, DecodeError::ReservedOpcode(opcode));
        assert_eq!(err.close_code(), close::PROTOCOL_ERROR);
    }
}

#[test]
fn unmasked_frames_are_a_protocol_error() {
    let err = error_of(&[0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
    assert_eq!(err, DecodeError::Unmasked);
    assert_eq!(err.close_code(), close::PROTOCOL_ERROR);
}

#[test]
fn fragmented_control_frames_are_a_protocol_error() {
    for opcode in [CLOSE, PING, PONG] {
        let err = error_of(&frame(false, opcode, b""));
        assert_eq!(err, DecodeError::FragmentedControl);
        assert_eq!(err.close_code(), close::PROTOCOL_ERROR);
    }
}

#[test]
fn long_control_frames_are_a_protocol_error() {
    for opcode in [CLOSE, PING, PONG] {
        let err = error_of(&frame(true, opcode, &[0; 126]));
        assert_eq!(err, DecodeError::ControlTooLong { len: 126 });
        assert_eq!(err.close_code(), close::PROTOCOL_ERROR);
    }
    let (events, err) = decode(&frame(true, PING, &[9; 125]));
    assert_eq!((events, err), (vec![Event::Ping(vec![9; 125])], None));
}

#[test]
fn length_with_msb_set_is_a_protocol_error() {
    let mut input = vec![0x82, 0xFF];
    input.extend_from_slice(&u64::MAX.to_be_bytes());
    input.extend_from_slice(&MASK);
    let err = error_of(&input);
    assert_eq!(err, DecodeError::LengthMsbSet);
    assert_eq!(err.close_code(), close::PROTOCOL_ERROR);
}

// Limits.

#[test]
fn frame_over_the_limit_is_too_big() {
    let max = FRAME_PAYLOAD_BYTES_MAX;
    let (events, err) = decode(&frame(true, BINARY, &vec![0; max]));
    assert_eq!((events.len(), err), (1, None));
    let err = error_of(&frame(true, BINARY, &vec![0; max + 1]));
    assert_eq!(
        err,
        DecodeError::FrameTooBig {
            len: (max + 1) as u64,
            max
        }
    );
    assert_eq!(err.close_code(), close::MESSAGE_TOO_BIG);
}

#[test]
fn frame_over_the_limit_fails_on_its_header() {
    // Only the header is sent: no need to wait for 2^62 bytes.
    let mut input = vec![0x82, 0xFF];
    input.extend_from_slice(&(1u64 << 62).to_be_bytes());
    input.extend_from_slice(&MASK);
    assert!(matches!(error_of(&input), DecodeError::FrameTooBig { .. }));
}

#[test]
fn message_over_the_limit_is_too_big() {
    let limits = Limits::new(100, 250, 10);
    let ok = concat(&[
        frame(false, TEXT, &[b'a'; 100]),
        frame(false, CONT, &[b'a'; 100]),
        frame(true, CONT, &[b'a'; 50]),
    ]);
    let (events, err) = decode_with(&ok, &limits);
    assert_eq!((events, err), (vec![Event::Text("a".repeat(250))], None));
    let over = concat(&[
        frame(false, TEXT, &[b'a'; 100]),
        frame(false, CONT, &[b'a'; 100]),
        frame(true, CONT, &[b'a'; 51]),
    ]);
    let err = error_with(&over, &limits);
    assert_eq!(err, DecodeError::MessageTooBig { len: 251, max: 250 });
    assert_eq!(err.close_code(), close::MESSAGE_TOO_BIG);
}

#[test]
fn protocol_message_limit() {
    // The default frame limit equals the message limit, so a message over it needs two
    // frames.
    let half = CLIENT_MESSAGE_BYTES_MAX / 2;
    let input = concat(&[
        frame(false, BINARY, &vec![0; half]),
        frame(true, CONT, &vec![0; half + 1]),
    ]);
    let err = error_of(&input);
    assert!(matches!(err, DecodeError::MessageTooBig { .. }));
    assert_eq!(err.close_code(), close::MESSAGE_TOO_BIG);
}

#[test]
fn too_many_fragments() {
    let mut frames = vec![frame(false, BINARY, b"x")];
    frames.extend((2..FRAGMENTS_MAX).map(|_| frame(false, CONT, b"x")));
    frames.push(frame(true, CONT, b"x"));
    assert_eq!(frames.len(), FRAGMENTS_MAX);
    let (events, err) = decode(&concat(&frames));
    assert_eq!(
        (events, err),
        (vec![Event::Binary(vec![b'x'; FRAGMENTS_MAX])], None)
    );

    let last = frames.len() - 1;
    frames[last] = frame(false, CONT, b"x");
    frames.push(frame(true, CONT, b"x"));
    let err = error_of(&concat(&frames));
    assert_eq!(err, DecodeError::TooManyFragments { max: FRAGMENTS_MAX });
    assert_eq!(err.close_code(), close::MESSAGE_TOO_BIG);
}

#[test]
fn control_frames_do_not_count_as_fragments() {
    let limits = Limits::new(10, 10, 2);
    let input = concat(&[
        frame(false, TEXT, b"a"),
        frame(true, PING, b""),
        frame(true, PING, b""),
        frame(true, CONT, b"b"),
    ]);
    let (events, err) = decode_with(&input, &limits);
    assert_eq!(err, None);
    assert_eq!(events.last(), Some(&Event::Text("ab".into())));
}

// UTF-8.

#[test]
fn invalid_utf8_text_is_invalid_payload() {
    for bad in [
        &b"\xff"[..],
        b"\xc0\xaf",         // overlong
        b"\xed\xa0\x80",     // surrogate
        b"\xf4\x90\x80\x80", // over U+10FFFF
        b"Hello-\xc2",       // truncated at the end
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
    ] {
        let err = error_of(&frame(true, TEXT, bad));
        assert_eq!(err, DecodeError::InvalidUtf8, "{bad:?}");
        assert_eq!(err.close_code(), close::INVALID_PAYLOAD);
    }
    // Binary messages are not checked.
    assert_eq!(decode(&frame(true, BINARY, b"\xff")).1, None);
}

#[test]
fn characters_split_across_fragments_are_valid() {
    let text = "κόσμε€𝄞";
    let bytes = text.as_bytes();
    for split in 0..=bytes.len() {
        let input = concat(&[
            frame(false, TEXT, &bytes[..split]),
            frame(true, CONT, &bytes[split..]),
        ]);
        assert_eq!(
            decode(&input),
            (vec![Event::Text(text.into())], None),
            "{split}"
        );
    }
}

#[test]
fn invalid_utf8_fails_on_the_fragment_that_holds_it() {
    // The second fragment is invalid; the third (final) one is never sent.
    let input = concat(&[
        frame(false, TEXT, "κόσμε".as_bytes()),
        frame(false, CONT, b"\xed\xa0\x80"),
    ]);
    assert_eq!(error_of(&input), DecodeError::InvalidUtf8);
    // A lead byte whose continuation can never be valid fails without its successor.
    let input = concat(&[frame(false, TEXT, b"ok"), frame(false, CONT, b"\xf5")]);
    assert_eq!(error_of(&input), DecodeError::InvalidUtf8);
    // A truncated but valid prefix does not fail until the message ends.
    let input = concat(&[frame(false, TEXT, b"ok"), frame(false, CONT, b"\xf0\x90")]);
    assert_eq!(decode(&input), (vec![], None));
    let input = concat(&[input, frame(true, CONT, b"")]);
    assert_eq!(error_of(&input), DecodeError::InvalidUtf8);
}

#[test]
fn invalid_utf8_fails_inside_a_frame_split_across_reads() {
    // One frame of 1000 bytes whose 10th byte is invalid: the error comes with the read
    // that holds it, not at the end of the frame.
    let mut payload = vec![b'a'; 1000];
    payload[10] = 0xff;
    let input = frame(true, TEXT, &payload);
    let mut decoder = Decoder::new();
    let limits = Limits::PROTOCOL;
    let header_len = 2 + 2 + 4;
    assert_eq!(
        decoder.decode(&input[..header_len + 10], &limits),
        Ok((header_len + 10, None))
    );
    assert_eq!(
        decoder.decode(&input[header_len + 10..header_len + 11], &limits),
        Err(DecodeError::InvalidUtf8)
    );
}

// Close frames.

#[test]
fn close_frames() {
    assert_eq!(
        decode(&frame(true, CLOSE, b"")),
        (
            vec![Event::Close {
                code: None,
                reason: String::new()
            }],
            None
        )
    );
    assert_eq!(
        decode(&close_frame(4999, "✓".as_bytes())),
        (
            vec![Event::Close {
                code: Some(4999),
                reason: "✓".into()
            }],
            None
        )
    );
}

#[test]
fn one_byte_close_is_a_protocol_error() {
    let err = error_of(&frame(true, CLOSE, &[3]));
    assert_eq!(err, DecodeError::CloseOneByte);
    assert_eq!(err.close_code(), close::PROTOCOL_ERROR);
}

#[test]
fn invalid_close_codes_are_a_protocol_error() {
    for code in [
        0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        let err = error_of(&close_frame(code, b""));
        assert_eq!(err, DecodeError::InvalidCloseCode(code));
        assert_eq!(err.close_code(), close::PROTOCOL_ERROR);
    }
}

#[test]
fn invalid_close_reason_is_invalid_payload() {
    let err = error_of(&close_frame(1000, b"\xff"));
    assert_eq!(err, DecodeError::InvalidCloseReason);
    assert_eq!(err.close_code(), close::INVALID_PAYLOAD);
}

#[test]
fn input_after_close_is_ignored() {
    let input = concat(&[
        close_frame(1000, b""),
        frame(true, TEXT, b"late"),
        vec![0xff; 20],
    ]);
    let mut decoder = Decoder::new();
    let events: Vec<_> = decoder.events(&input, &Limits::PROTOCOL).collect();
    assert_eq!(
        events,
        vec![Ok(Event::Close {
            code: Some(1000),
            reason: String::new()
        })]
    );
    assert!(decoder.is_closed());
    assert_eq!(decoder.decode(b"more", &Limits::PROTOCOL), Ok((4, None)));
    assert_eq!(decoder.buffered_bytes(), 0);
}

#[test]
fn input_after_an_error_is_ignored() {
    let mut decoder = Decoder::new();
    let limits = Limits::PROTOCOL;
    let input = concat(&[frame(false, TEXT, b"abc"), frame(true, BINARY, b"")]);
    let results: Vec<_> = decoder.events(&input, &limits).collect();
    assert_eq!(results, vec![Err(DecodeError::MessageInterrupted)]);
    assert!(decoder.is_closed());
    assert_eq!(decoder.buffered_bytes(), 0);
    assert_eq!(
        decoder.decode(&frame(true, TEXT, b"x"), &limits).unwrap().1,
        None
    );
}

// Split inputs.

/// A mix of every frame kind, fragmented messages with interleaved control frames, and
/// all three length encodings.
fn multi_frame_input() -> (Vec<u8>, Vec<Event>) {
    let big: Vec<u8> = (0..70_000u32).map(|i| i.to_le_bytes()[0]).collect();
    let text = "ünïcödé 𝄞 text ".repeat(20);
    let bytes = text.as_bytes();
    let input = concat(&[
        frame(true, TEXT, b"Hello"),
        frame(false, TEXT, &bytes[..7]),
        frame(true, PING, b"in the middle"),
        frame(false, CONT, &bytes[7..150]),
        frame(true, CONT, &bytes[150..]),
        frame(true, BINARY, &big[..300]),
        frame(true, PONG, b""),
        frame(false, BINARY, &big[..10]),
        frame(true, CONT, &big[10..]),
        close_frame(1000, b"done"),
    ]);
    let events = vec![
        Event::Text("Hello".into()),
        Event::Ping(b"in the middle".to_vec()),
        Event::Text(text.clone()),
        Event::Binary(big[..300].to_vec()),
        Event::Pong(Vec::new()),
        Event::Binary(big.clone()),
        Event::Close {
            code: Some(1000),
            reason: "done".into(),
        },
    ];
    (input, events)
}

#[test]
fn one_shot_multi_frame() {
    let (input, expected) = multi_frame_input();
    assert_eq!(decode(&input), (expected, None));
}

#[test]
fn byte_by_byte_multi_frame() {
    let (input, expected) = multi_frame_input();
    assert_eq!(
        decode_chunks(input.chunks(1), &Limits::PROTOCOL),
        (expected, None)
    );
}

#[test]
fn every_split_point() {
    // Smaller than multi_frame_input so that all split points stay fast.
    let input = concat(&[
        frame(true, TEXT, "añb".as_bytes()),
        frame(false, BINARY, &[1; 130]),
        frame(true, PING, b"x"),
        frame(true, CONT, &[2; 3]),
        frame(true, PONG, b"yz"),
        close_frame(1001, b"r"),
    ]);
    let expected = decode(&input);
    assert_eq!(expected.0.len(), 5);
    assert_eq!(expected.1, None);
    for a in 0..=input.len() {
        for b in a..=input.len() {
            let chunks = [&input[..a], &input[a..b], &input[b..]];
            assert_eq!(
                decode_chunks(chunks, &Limits::PROTOCOL),
                expected,
                "{a} {b}"
            );
        }
    }
}

/// Splits `input` at the sorted, deduplicated `cuts`.
fn split_at<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts {
        chunks.push(&input[start..cut]);
        start = cut;
    }
    chunks.push(&input[start..]);
    chunks
}

proptest! {
    #[test]
    fn random_chunks_match_one_shot(cuts in proptest::collection::vec(any::<usize>(), 0..40)) {
        let (input, expected) = multi_frame_input();
        let chunks = split_at(&input, &cuts);
        prop_assert_eq!(decode_chunks(chunks, &Limits::PROTOCOL), (expected, None));
    }

    #[test]
    fn random_bytes_split_anywhere_match_one_shot(
        input in proptest::collection::vec(any::<u8>(), 0..200),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        // Mostly invalid input: errors must be the same however it is split.
        let limits = Limits::new(64, 128, 4);
        let whole = decode_with(&input, &limits);
        prop_assert_eq!(decode_chunks(split_at(&input, &cuts), &limits), whole);
    }
}

// Round trips: encode as the server does, mask as a client does, decode.

/// Turns an unmasked server frame into the same frame masked with `key`.
fn mask_like_a_client(server_frame: &[u8], key: [u8; 4]) -> Vec<u8> {
    let header_len = match server_frame[1] & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    let mut out = server_frame[..header_len].to_vec();
    out[1] |= 0x80;
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(&server_frame[header_len..]);
    mask::apply(&mut out[start..], key);
    out
}

fn arb_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        ".{0,300}".prop_map(Event::Text),
        proptest::collection::vec(any::<u8>(), 0..70_000).prop_map(Event::Binary),
        proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Event::Ping),
        proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Event::Pong),
    ]
}

fn arb_close() -> impl Strategy<Value = Event> {
    let code = prop_oneof![1000u16..=1003, 1007u16..=1014, 3000u16..=4999];
    (code, "[a-zé✓]{0,40}").prop_map(|(code, reason)| Event::Close {
        code: Some(code),
        reason,
    })
}

fn encode(event: &Event, out: &mut Vec<u8>) {
    match event {
        Event::Text(text) => write_text(out, text),
        Event::Binary(data) => write_binary(out, data),
        Event::Ping(data) => write_ping(out, data),
        Event::Pong(data) => write_pong(out, data),
        Event::Close {
            code: Some(code),
            reason,
        } => write_close(out, *code, reason),
        Event::Close { code: None, .. } => write_close_empty(out),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn encode_mask_decode_round_trips(
        events in proptest::collection::vec(arb_event(), 0..8),
        close in proptest::option::of(arb_close()),
        key in any::<[u8; 4]>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let events: Vec<Event> = events.into_iter().chain(close).collect();
        let mut input = Vec::new();
        for event in &events {
            let mut server_frame = Vec::new();
            encode(event, &mut server_frame);
            input.extend(mask_like_a_client(&server_frame, key));
        }
        prop_assert_eq!(decode(&input), (events.clone(), None));
        prop_assert_eq!(decode_chunks(split_at(&input, &cuts), &Limits::PROTOCOL), (events, None));
    }

    #[test]
    fn fragmented_round_trips(
        text in ".{0,200}",
        data in proptest::collection::vec(any::<u8>(), 0..2000),
        cuts in proptest::collection::vec(any::<usize>(), 0..(FRAGMENTS_MAX - 1)),
        pings in proptest::collection::vec(any::<bool>(), FRAGMENTS_MAX),
    ) {
        // Each message split into fragments at `cuts`, a ping after some fragments.
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for (opcode, payload) in [(TEXT, text.as_bytes()), (BINARY, &data[..])] {
            let pieces = split_at(payload, &cuts);
            let last = pieces.len() - 1;
            for (i, piece) in pieces.iter().enumerate() {
                let op = if i == 0 { opcode } else { CONT };
                input.extend(frame(i == last, op, piece));
                if pings[i] && i != last {
                    input.extend(frame(true, PING, &[u8::try_from(i).unwrap()]));
                    expected.push(Event::Ping(vec![u8::try_from(i).unwrap()]));
                }
            }
            expected.push(if opcode == TEXT {
                Event::Text(text.clone())
            } else {
                Event::Binary(data.clone())
            });
        }
        prop_assert_eq!(decode(&input), (expected.clone(), None));
        prop_assert_eq!(decode_chunks(split_at(&input, &cuts), &Limits::PROTOCOL), (expected, None));
    }
}
