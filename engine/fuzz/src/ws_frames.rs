//! `ws_frames`: `engine::ws::Decoder` (server side) on any client bytes, fed the way
//! `websocket.rs` feeds it: each read passed to `decode` until it returns no event,
//! reacting to each event as the connection loop does.
//!
//! Input: the first byte picks the limits (bit 0: `Limits::PROTOCOL`, the chat
//! endpoint's, or a scaled-down set whose limits short inputs can reach) and where the
//! reads end (the other bits, [`crate::cuts`]); the rest is what the client sent.
//!
//! Properties:
//! - nothing panics, including the replies `websocket.rs` writes (a pong echoing a
//!   ping, a close echoing the client's code, a close with an error's code);
//! - `decode` consumes at most its input, all of it when it returns no event, and at
//!   least one byte when it returns one; after a close or an error it consumes
//!   everything and returns nothing;
//! - the events and the error are the same fed whole, in the fuzzer's reads, byte by
//!   byte and through `Decoder::events`, and are those of an independent reference
//!   decoder (`ws_reference`), as is the state at the end (idle, closed, mid-frame);
//! - every message is within the message limit, every control payload within 125
//!   bytes, every close code one a client may send with a reason of at most 123 bytes;
//! - every error maps to its documented close code: 1002, 1007 or 1009;
//! - the decoder holds at most the message limit plus one control payload, and no heap
//!   memory when idle or closed.

use engine::ws::{self, DecodeError, Decoder, Event, Limits};
use protocol::limits::CONTROL_PAYLOAD_BYTES_MAX;

use crate::ws_reference::{self, End, close_code_is_valid, close_code_of};

/// Limits that the fuzzer's short inputs can reach, in the same proportions as the
/// protocol's: frame ≤ message, a few fragments.
pub const SMALL_LIMITS: Limits = Limits::new(200, 300, 4);

/// What the engine's decoder made of an input, and its state afterwards.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    events: Vec<Event>,
    error: Option<DecodeError>,
    closed: bool,
    idle: bool,
}

/// The whole check for one fuzz input.
pub fn check(data: &[u8]) {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let limits = if control & 1 == 0 {
        Limits::PROTOCOL
    } else {
        SMALL_LIMITS
    };
    let whole = feed(&[input], &limits);
    let reads = crate::pieces(input, &crate::cuts(control >> 1, input.len()));
    assert_eq!(feed(&reads, &limits), whole, "fed in {} reads", reads.len());
    if input.len() <= 4096 {
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(feed(&bytes, &limits), whole, "fed byte by byte");
    }
    assert_eq!(
        feed_events(&reads, &limits),
        whole,
        "through Decoder::events"
    );

    let reference = ws_reference::decode(input, &limits);
    assert_eq!(
        whole.events, reference.events,
        "events, against the reference"
    );
    let expected_end = match (whole.error, whole.closed, whole.idle) {
        (Some(e), true, false) => End::Error(e),
        (None, true, false) => End::Closed,
        (None, false, true) => End::Idle,
        (None, false, false) => End::Partial,
        state => panic!("impossible end state {state:?}"),
    };
    assert_eq!(expected_end, reference.end, "end, against the reference");

    for event in &whole.events {
        check_event(event, &limits);
    }
    if let Some(e) = whole.error {
        check_error(e, &limits);
    }
}

/// Feeds `reads` in order as `websocket.rs` does, checking every call.
fn feed(reads: &[&[u8]], limits: &Limits) -> Run {
    let mut decoder = Decoder::new();
    let mut run = Run {
        events: Vec::new(),
        error: None,
        closed: false,
        idle: true,
    };
    let mut out = Vec::new();
    for read in reads {
        let mut input = *read;
        loop {
            let was_closed = decoder.is_closed();
            match decoder.decode(input, limits) {
                Ok((n, Some(event))) => {
                    assert!(!was_closed, "an event after the close");
                    assert!(n > 0 && n <= input.len(), "consumed {n} of {}", input.len());
                    input = &input[n..];
                    reply(&event, &mut out);
                    let close = matches!(event, Event::Close { .. });
                    run.events.push(event);
                    check_memory(&decoder, limits);
                    if close {
                        assert!(decoder.is_closed());
                        run.closed = true;
                    }
                }
                Ok((n, None)) => {
                    assert_eq!(n, input.len(), "no event, so every byte consumed");
                    check_memory(&decoder, limits);
                    break;
                }
                Err(e) => {
                    assert!(!was_closed, "an error after the close");
                    assert!(decoder.is_closed());
                    ws::write_close(&mut out, e.close_code(), "");
                    run.error = Some(e);
                    run.closed = true;
                    check_memory(&decoder, limits);
                    // The connection would stop reading; the decoder ignores the rest.
                    assert_eq!(decoder.decode(input, limits), Ok((input.len(), None)));
                    break;
                }
            }
        }
    }
    run.idle = decoder.is_idle();
    assert!(!(run.idle && decoder.is_closed()));
    run
}

/// The same through `Decoder::events`, which ends at an error.
fn feed_events(reads: &[&[u8]], limits: &Limits) -> Run {
    let mut decoder = Decoder::new();
    let mut run = Run {
        events: Vec::new(),
        error: None,
        closed: false,
        idle: true,
    };
    for read in reads {
        for result in decoder.events(read, limits) {
            assert!(run.error.is_none(), "Events went on after an error");
            match result {
                Ok(event) => run.events.push(event),
                Err(e) => run.error = Some(e),
            }
        }
    }
    run.closed = decoder.is_closed();
    run.idle = decoder.is_idle();
    run
}

/// What the connection loop writes back for `event`.
fn reply(event: &Event, out: &mut Vec<u8>) {
    match event {
        Event::Ping(payload) => ws::write_pong(out, payload),
        Event::Close {
            code: Some(code), ..
        } => ws::write_close(out, *code, ""),
        Event::Close { code: None, .. } => ws::write_close_empty(out),
        Event::Text(_) | Event::Binary(_) | Event::Pong(_) => {}
    }
}

fn check_memory(decoder: &Decoder, limits: &Limits) {
    let held = decoder.buffered_bytes();
    assert!(
        held <= limits.message_bytes_max() + CONTROL_PAYLOAD_BYTES_MAX,
        "{held} bytes buffered"
    );
    if decoder.is_idle() || decoder.is_closed() {
        assert_eq!(held, 0, "an idle or closed decoder holds memory");
    }
}

fn check_event(event: &Event, limits: &Limits) {
    match event {
        Event::Text(text) => {
            assert!(text.len() <= limits.message_bytes_max());
            assert!(std::str::from_utf8(text.as_bytes()).is_ok());
        }
        Event::Binary(data) => assert!(data.len() <= limits.message_bytes_max()),
        Event::Ping(payload) | Event::Pong(payload) => {
            assert!(payload.len() <= CONTROL_PAYLOAD_BYTES_MAX);
        }
        Event::Close { code, reason } => {
            assert!(reason.len() <= CONTROL_PAYLOAD_BYTES_MAX - 2);
            match code {
                Some(code) => assert!(close_code_is_valid(*code), "close code {code}"),
                None => assert!(reason.is_empty()),
            }
        }
    }
}

fn check_error(e: DecodeError, limits: &Limits) {
    let _ = e.to_string();
    let code = e.close_code();
    assert!(matches!(code, 1002 | 1007 | 1009), "{e:?} → {code}");
    assert_eq!(code, close_code_of(e), "{e:?}");
    match e {
        DecodeError::FrameTooBig { len, max } => {
            assert_eq!(max, limits.frame_payload_bytes_max());
            assert!(len > max as u64);
        }
        DecodeError::MessageTooBig { len, max } => {
            assert_eq!(max, limits.message_bytes_max());
            assert!(len > max as u64);
        }
        DecodeError::TooManyFragments { max } => assert_eq!(max, limits.fragments_max()),
        DecodeError::ControlTooLong { len } => {
            assert!(usize::from(len) > CONTROL_PAYLOAD_BYTES_MAX)
        }
        DecodeError::InvalidCloseCode(code) => assert!(!close_code_is_valid(code)),
        DecodeError::ReservedOpcode(op) => assert!(matches!(op, 3..=7 | 0xB..=0xF)),
        _ => {}
    }
}
