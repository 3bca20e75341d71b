//! The frame decoder: client bytes in, [`Event`]s out, holding only what an unfinished
//! frame or message needs between reads.

use super::assembler::Assembler;
use super::error::DecodeError;
use super::event::Event;
use super::frame::{self, CLIENT_HEADER_BYTES_MAX, Header, OpCode};
use super::limits::Limits;
use super::mask;

/// Decodes the frames a client sends to the server.
///
/// The decoder is built for connections that hold no read buffer: the server reads into
/// a per-shard scratch buffer, passes what it read to [`Decoder::decode`] (or
/// [`Decoder::events`]) and can reuse the scratch buffer as soon as the call returns. The
/// decoder consumes every byte it is given and keeps, between calls, only
///
/// - up to 13 bytes of a frame header cut by the end of a read, inline;
/// - the unmasked payload of a message (or control frame) that has started and not
///   finished, in a `Vec` that exists only while such a message is in progress.
///
/// An idle connection's decoder owns no heap memory (see [`Decoder::buffered_bytes`]). The
/// limits live outside it, once per shard, and are passed to each call.
///
/// After a [`DecodeError`] or an [`Event::Close`] the decoder ignores the rest of its
/// input: the connection is closing.
#[derive(Debug, Default)]
pub struct Decoder {
    assembler: Assembler,
    phase: Phase,
}

#[derive(Debug)]
enum Phase {
    /// Between frames: the first `len` bytes of the next header are in `buf`.
    Header {
        buf: [u8; CLIENT_HEADER_BYTES_MAX],
        len: u8,
    },
    /// Inside a frame's payload: `remaining` bytes to go, to unmask starting with `mask`.
    Payload {
        opcode: OpCode,
        fin: bool,
        mask: [u8; 4],
        remaining: u32,
    },
    /// A close frame arrived, or the input broke the protocol.
    Closed,
}

impl Phase {
    const START: Phase = Phase::Header {
        buf: [0; CLIENT_HEADER_BYTES_MAX],
        len: 0,
    };
}

impl Default for Phase {
    fn default() -> Phase {
        Phase::START
    }
}

impl Decoder {
    pub const fn new() -> Decoder {
        Decoder {
            assembler: Assembler::new(),
            phase: Phase::START,
        }
    }

    /// Decodes `input` up to the end of the next complete message or control frame.
    ///
    /// Returns how many bytes of `input` it consumed and the event, if one completed:
    /// - `(n, Some(event))`: call again with `&input[n..]` for the events after it;
    /// - `(input.len(), None)`: every byte was consumed and no event is complete yet. The
    ///   caller keeps nothing; the decoder holds what it needs for the next call.
    ///
    /// After an error or a close frame it consumes all input and returns no event.
    pub fn decode(
        &mut self,
        input: &[u8],
        limits: &Limits,
    ) -> Result<(usize, Option<Event>), DecodeError> {
        let result = self.step(input, limits);
        match &result {
            Err(_) | Ok((_, Some(Event::Close { .. }))) => {
                self.phase = Phase::Closed;
                self.assembler.clear();
            }
            Ok(_) => {}
        }
        result
    }

    /// The events in `input`, in order, consuming all of it. After an error the iterator
    /// ends.
    pub fn events<'a>(&'a mut self, input: &'a [u8], limits: &'a Limits) -> Events<'a> {
        Events {
            decoder: self,
            input,
            limits,
            done: false,
        }
    }

    /// Whether the decoder is between messages with no partial frame: the state an idle
    /// connection should be in.
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Header { len: 0, .. }) && !self.assembler.in_message()
    }

    /// Whether a close frame or an error ended decoding.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Heap bytes held for a partly received message (zero when idle).
    pub fn buffered_bytes(&self) -> usize {
        self.assembler.buffered_bytes()
    }

    fn step(
        &mut self,
        input: &[u8],
        limits: &Limits,
    ) -> Result<(usize, Option<Event>), DecodeError> {
        let mut consumed = 0;
        loop {
            let rest = &input[consumed..];
            match &mut self.phase {
                Phase::Closed => return Ok((input.len(), None)),
                Phase::Header { buf, len } => {
                    let Some((header, used)) = read_header(buf, len, rest)? else {
                        return Ok((input.len(), None));
                    };
                    consumed += used;
                    if let Some(event) = self.begin_frame(&header, limits)? {
                        return Ok((consumed, Some(event)));
                    }
                }
                Phase::Payload {
                    opcode,
                    fin,
                    mask,
                    remaining,
                } => {
                    if rest.is_empty() {
                        return Ok((consumed, None));
                    }
                    let take = rest.len().min(*remaining as usize);
                    self.assembler.push(&rest[..take], *mask, limits);
                    consumed += take;
                    *remaining -= u32::try_from(take).expect("take <= remaining, a u32");
                    if *remaining > 0 {
                        *mask = mask::advance(*mask, take);
                        // The input ends inside this frame; fail fast on bad text.
                        if !opcode.is_control() {
                            self.assembler.check_utf8()?;
                        }
                        return Ok((consumed, None));
                    }
                    let (opcode, fin) = (*opcode, *fin);
                    self.phase = Phase::START;
                    if let Some(event) = self.end_frame(opcode, fin)? {
                        return Ok((consumed, Some(event)));
                    }
                }
            }
        }
    }

    /// Starts a frame whose header has been read; a frame without payload ends at once.
    fn begin_frame(
        &mut self,
        header: &Header,
        limits: &Limits,
    ) -> Result<Option<Event>, DecodeError> {
        self.assembler.begin_frame(header, limits)?;
        if header.payload_len == 0 {
            self.phase = Phase::START;
            return self.end_frame(header.opcode, header.fin);
        }
        self.phase = Phase::Payload {
            opcode: header.opcode,
            fin: header.fin,
            mask: header.mask,
            remaining: u32::try_from(header.payload_len)
                .expect("begin_frame bounded the payload by a limit that fits in u32"),
        };
        Ok(None)
    }

    fn end_frame(&mut self, opcode: OpCode, fin: bool) -> Result<Option<Event>, DecodeError> {
        if opcode.is_control() {
            self.assembler.end_control_frame(opcode).map(Some)
        } else {
            self.assembler.end_data_frame(fin)
        }
    }
}

/// Reads a frame header from the `len` bytes already in `buf` followed by `input`.
///
/// On `Ok(Some((header, used)))`, `used` bytes of `input` completed it and `buf` is empty
/// again; on `Ok(None)` all of `input` has been appended to `buf`.
fn read_header(
    buf: &mut [u8; CLIENT_HEADER_BYTES_MAX],
    len: &mut u8,
    input: &[u8],
) -> Result<Option<(Header, usize)>, DecodeError> {
    let held = usize::from(*len);
    if held == 0 {
        // The common case: the whole header is in the input; parse it in place.
        if let Some(parsed) = frame::parse_header(input)? {
            return Ok(Some(parsed));
        }
        assert!(input.len() < CLIENT_HEADER_BYTES_MAX);
        buf[..input.len()].copy_from_slice(input);
        *len = u8::try_from(input.len()).expect("shorter than a header");
        return Ok(None);
    }
    let take = input.len().min(CLIENT_HEADER_BYTES_MAX - held);
    buf[held..held + take].copy_from_slice(&input[..take]);
    if let Some((header, header_len)) = frame::parse_header(&buf[..held + take])? {
        assert!(
            header_len > held,
            "a header complete in buf would have been parsed before"
        );
        *len = 0;
        return Ok(Some((header, header_len - held)));
    }
    assert!(take == input.len());
    *len = u8::try_from(held + take).expect("shorter than a header");
    Ok(None)
}

/// The events in one input; see [`Decoder::events`].
#[derive(Debug)]
pub struct Events<'a> {
    decoder: &'a mut Decoder,
    input: &'a [u8],
    limits: &'a Limits,
    done: bool,
}

impl Iterator for Events<'_> {
    type Item = Result<Event, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.decoder.decode(self.input, self.limits) {
            Ok((consumed, event)) => {
                self.input = &self.input[consumed..];
                self.done = event.is_none();
                event.map(Ok)
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
