//! `ws_roundtrip`: messages written with the engine's encoder (`ws::write_text`,
//! `write_binary`, `write_ping`, `write_pong`, `write_close`, `write_close_empty`,
//! `FrameHeader`), turned into the frames a client would send (mask bit, a 4-byte key,
//! masked payload; data messages optionally split into fragments with control frames
//! between them), fed to `engine::ws::Decoder` in arbitrary reads.
//!
//! Properties:
//! - every server frame is final, unmasked, of the right opcode, with the shortest
//!   length encoding (`header_len`) and the payload after it;
//! - the decoder gives back exactly the messages written, in order, up to and including
//!   the first close; a close reason over 123 bytes comes back cut at the last
//!   character boundary that fits;
//! - it does so with limits set exactly to the largest frame, message and fragment
//!   count sent (no off-by-one at the limits); one byte or one fragment less fails with
//!   1009 at the first message that needs it, after every message before it.

use engine::ws::{self, DecodeError, Decoder, Event, FrameHeader, Limits, OpCode};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use protocol::limits::CONTROL_PAYLOAD_BYTES_MAX;

use crate::ws_reference::close_code_is_valid;

/// One message the test sends.
#[derive(Debug)]
enum Msg {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(u16, String),
    CloseEmpty,
}

/// A message with how the client sends it.
#[derive(Debug)]
struct Send {
    msg: Msg,
    key: [u8; 4],
    /// For data messages: where the payload is cut into fragments.
    cuts: Vec<usize>,
    /// For fragmented messages: pings sent between fragments (after fragment `i`).
    pings_after: Vec<usize>,
}

/// The whole check for one fuzz input.
pub fn check(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok((read_seed, sends)) = plan(&mut u) else {
        return;
    };
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    // For each data message before the close: where its events start in `expected`,
    // where its message event is, its length and fragment count.
    let mut data_msgs: Vec<(usize, usize, usize, usize)> = Vec::new();
    let mut closed = false;
    // Largest frame payload of the data messages.
    let mut frame_max = 0;
    for send in &sends {
        let events = write_client(send, &mut stream);
        if closed {
            continue;
        }
        if let Msg::Text(_) | Msg::Binary(_) = send.msg {
            let len = payload_of(&send.msg).len();
            let mut start = 0;
            for &cut in send.cuts.iter().chain([len].iter()) {
                frame_max = frame_max.max(cut - start);
                start = cut;
            }
            let at = expected.len();
            data_msgs.push((at, at + events.len() - 1, len, send.cuts.len() + 1));
        }
        closed = events.iter().any(|e| matches!(e, Event::Close { .. }));
        expected.extend(events);
    }
    let message_max = data_msgs.iter().map(|m| m.2).max().unwrap_or(0);
    let fragments_max = data_msgs.iter().map(|m| m.3).max().unwrap_or(1);

    let reads = crate::pieces(&stream, &crate::cuts(read_seed, stream.len()));
    let (events, error) = decode(&reads, &Limits::PROTOCOL);
    assert_eq!(error, None, "protocol limits");
    assert_eq!(events, expected, "protocol limits");

    let tight = Limits::new(frame_max, message_max, fragments_max);
    let (events, error) = decode(&reads, &tight);
    assert_eq!(error, None, "limits {tight:?}");
    assert_eq!(events, expected, "limits {tight:?}");

    // Everything before message `m` and none of it, then a 1009.
    let fails_at = |m: (usize, usize, usize, usize), limits: &Limits, events: &[Event]| {
        assert!(
            events.len() >= m.0 && events.len() <= m.1,
            "{} events under {limits:?}; the message is event {}, its frames start at {}",
            events.len(),
            m.1,
            m.0
        );
        assert_eq!(events, &expected[..events.len()], "under {limits:?}");
    };
    // One byte under the largest message: the first message of that size fails.
    if message_max > 0 {
        let under = Limits::new(
            frame_max.min(message_max - 1),
            message_max - 1,
            fragments_max,
        );
        let (events, error) = decode(&reads, &under);
        let first = *data_msgs
            .iter()
            .find(|m| m.2 == message_max)
            .expect("a message of the largest size");
        fails_at(first, &under, &events);
        let e = error.expect("a message over the limit");
        assert!(
            matches!(
                e,
                DecodeError::FrameTooBig { .. } | DecodeError::MessageTooBig { .. }
            ),
            "{e:?}"
        );
        assert_eq!(e.close_code(), 1009);
    }
    // One fragment under the most: the first message with that many fails.
    if fragments_max > 1 {
        let under = Limits::new(frame_max, message_max, fragments_max - 1);
        let (events, error) = decode(&reads, &under);
        let first = *data_msgs
            .iter()
            .find(|m| m.3 == fragments_max)
            .expect("a message with the most fragments");
        fails_at(first, &under, &events);
        assert_eq!(
            error,
            Some(DecodeError::TooManyFragments {
                max: fragments_max - 1
            })
        );
    }
}

/// Reads the fuzzer's plan: the read boundaries, then messages until the input ends.
fn plan(u: &mut Unstructured<'_>) -> Result<(u8, Vec<Send>)> {
    let read_seed = u.arbitrary()?;
    let mut sends = Vec::new();
    while !u.is_empty() && sends.len() < 32 {
        let kind: u8 = u.int_in_range(0..=9)?;
        let key = u.arbitrary()?;
        let msg = match kind {
            0..=2 => Msg::Text(u.arbitrary()?),
            3..=4 => Msg::Binary(u.arbitrary()?),
            5 => Msg::Ping(control_payload(u)?),
            6 => Msg::Pong(control_payload(u)?),
            7 | 8 => {
                let code: u16 = u.arbitrary()?;
                let code = if close_code_is_valid(code) {
                    code
                } else {
                    *u.choose(&[
                        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
                        3000, 4000, 4999,
                    ])?
                };
                Msg::Close(code, u.arbitrary()?)
            }
            _ => Msg::CloseEmpty,
        };
        let mut cuts = Vec::new();
        let mut pings_after = Vec::new();
        if let Msg::Text(_) | Msg::Binary(_) = msg {
            let len = payload_of(&msg).len();
            let fragments: usize = u.int_in_range(1..=8)?;
            for _ in 1..fragments {
                // Fragments may be empty, and may cut a character in two.
                cuts.push(u.int_in_range(0..=len)?);
            }
            cuts.sort_unstable();
            for i in 0..cuts.len() {
                if u.ratio(1, 4)? {
                    pings_after.push(i);
                }
            }
        }
        sends.push(Send {
            msg,
            key,
            cuts,
            pings_after,
        });
    }
    Ok((read_seed, sends))
}

fn control_payload(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let len = u.int_in_range(0..=CONTROL_PAYLOAD_BYTES_MAX)?;
    Ok(u.bytes(len)?.to_vec())
}

fn payload_of(msg: &Msg) -> &[u8] {
    match msg {
        Msg::Text(t) => t.as_bytes(),
        Msg::Binary(b) | Msg::Ping(b) | Msg::Pong(b) => b,
        Msg::Close(..) | Msg::CloseEmpty => &[],
    }
}

/// Appends `send` as the client sends it; returns the events the server should see: the
/// pings between fragments, then the message.
fn write_client(send: &Send, stream: &mut Vec<u8>) -> Vec<Event> {
    let mut server = Vec::new();
    let (opcode, event) = match &send.msg {
        Msg::Text(t) => {
            ws::write_text(&mut server, t);
            (OpCode::Text, Event::Text(t.clone()))
        }
        Msg::Binary(b) => {
            ws::write_binary(&mut server, b);
            (OpCode::Binary, Event::Binary(b.clone()))
        }
        Msg::Ping(p) => {
            ws::write_ping(&mut server, p);
            (OpCode::Ping, Event::Ping(p.clone()))
        }
        Msg::Pong(p) => {
            ws::write_pong(&mut server, p);
            (OpCode::Pong, Event::Pong(p.clone()))
        }
        Msg::Close(code, reason) => {
            ws::write_close(&mut server, *code, reason);
            let cut = cut_reason(reason);
            (
                OpCode::Close,
                Event::Close {
                    code: Some(*code),
                    reason: cut.to_owned(),
                },
            )
        }
        Msg::CloseEmpty => {
            ws::write_close_empty(&mut server);
            (
                OpCode::Close,
                Event::Close {
                    code: None,
                    reason: String::new(),
                },
            )
        }
    };
    let payload = check_server_frame(&server, opcode);
    if let Msg::Close(code, reason) = &send.msg {
        assert_eq!(payload[..2], code.to_be_bytes());
        assert_eq!(&payload[2..], cut_reason(reason).as_bytes());
    } else if !matches!(send.msg, Msg::CloseEmpty) {
        assert_eq!(payload, payload_of(&send.msg));
    }
    if send.cuts.is_empty() {
        mask_frame(&server, send.key, stream);
        return vec![event];
    }
    let mut events = Vec::new();
    // Fragments: the encoder's header for each piece, with FIN and the opcode set as a
    // fragmenting client sets them.
    let mut start = 0;
    let ends: Vec<usize> = send.cuts.iter().copied().chain([payload.len()]).collect();
    for (i, &end) in ends.iter().enumerate() {
        let piece = &payload[start..end];
        start = end;
        let mut frame = FrameHeader::new(OpCode::Binary, piece.len())
            .as_bytes()
            .to_vec();
        let first_opcode = if i == 0 { opcode as u8 } else { 0 };
        let fin = if i + 1 == ends.len() { 0x80 } else { 0 };
        frame[0] = fin | first_opcode;
        frame.extend_from_slice(piece);
        let key = [
            send.key[0],
            send.key[1],
            send.key[2],
            send.key[3].wrapping_add(i as u8),
        ];
        mask_frame(&frame, key, stream);
        if send.pings_after.contains(&i) {
            let payload = format!("between fragments {i} and {}", i + 1).into_bytes();
            let mut ping = Vec::new();
            ws::write_ping(&mut ping, &payload);
            mask_frame(&ping, key, stream);
            events.push(Event::Ping(payload));
        }
    }
    events.push(event);
    events
}

/// The payload of a server frame, checking its header.
fn check_server_frame(frame: &[u8], opcode: OpCode) -> &[u8] {
    assert_eq!(frame[0], 0x80 | opcode as u8, "final, no reserved bits");
    assert_eq!(frame[1] & 0x80, 0, "server frames are unmasked");
    let (len, header) = match frame[1] {
        126 => (usize::from(u16::from_be_bytes([frame[2], frame[3]])), 4),
        127 => {
            let len = u64::from_be_bytes(frame[2..10].try_into().expect("8 bytes"));
            (usize::try_from(len).expect("fits"), 10)
        }
        n => (usize::from(n), 2),
    };
    assert_eq!(header, ws::header_len(len), "shortest length encoding");
    assert_eq!(header + len, frame.len());
    assert_eq!(
        &frame[..header],
        FrameHeader::new(opcode, len).as_bytes(),
        "write_frame writes FrameHeader"
    );
    &frame[header..]
}

/// A client's copy of an unmasked frame: the mask bit, the key, the masked payload.
fn mask_frame(frame: &[u8], key: [u8; 4], out: &mut Vec<u8>) {
    let header = match frame[1] & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    out.push(frame[0]);
    out.push(frame[1] | 0x80);
    out.extend_from_slice(&frame[2..header]);
    out.extend_from_slice(&key);
    out.extend(
        frame[header..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4]),
    );
}

/// The longest prefix of at most 123 bytes ending on a character boundary.
fn cut_reason(reason: &str) -> &str {
    let mut end = reason.len().min(CONTROL_PAYLOAD_BYTES_MAX - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

fn decode(reads: &[&[u8]], limits: &Limits) -> (Vec<Event>, Option<DecodeError>) {
    let mut decoder = Decoder::new();
    let mut events = Vec::new();
    for read in reads {
        for result in decoder.events(read, limits) {
            match result {
                Ok(event) => events.push(event),
                Err(e) => return (events, Some(e)),
            }
        }
    }
    (events, None)
}
