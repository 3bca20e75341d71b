//! The bounds the decoder enforces, held once per shard rather than per connection.

use protocol::limits::{CLIENT_MESSAGE_BYTES_MAX, FRAGMENTS_MAX, FRAME_PAYLOAD_BYTES_MAX};

/// Size limits on what a client may send.
///
/// The engine uses [`Limits::PROTOCOL`], the ceilings clients are promised in
/// `protocol::limits`. Other values exist for tools such as the Autobahn echo example,
/// whose test cases send messages of up to 16 MiB in up to 65,536 fragments.
///
/// Worst-case memory per connection: the buffer of one message being assembled, at most
/// `message_bytes_max` bytes plus one control frame payload (125 bytes): 128 KiB with
/// [`Limits::PROTOCOL`]. An idle connection holds none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[expect(
    clippy::struct_field_names,
    reason = "STYLE.md puts units and qualifiers last: `_bytes_max`, `_max`"
)]
pub struct Limits {
    frame_payload_bytes_max: usize,
    message_bytes_max: usize,
    fragments_max: usize,
}

impl Limits {
    /// The limits of `protocol::limits`.
    pub const PROTOCOL: Limits = Limits::new(
        FRAME_PAYLOAD_BYTES_MAX,
        CLIENT_MESSAGE_BYTES_MAX,
        FRAGMENTS_MAX,
    );

    /// Limits on one frame's payload, one reassembled message, and the frames one
    /// message may be split into.
    ///
    /// The decoder keeps payload counters in `u32`s, so the message limit is at most
    /// 2 GiB, leaving room for a control frame inside a message.
    pub const fn new(
        frame_payload_bytes_max: usize,
        message_bytes_max: usize,
        fragments_max: usize,
    ) -> Limits {
        assert!(frame_payload_bytes_max <= message_bytes_max);
        assert!(message_bytes_max <= u32::MAX as usize / 2);
        assert!(fragments_max >= 1);
        assert!(fragments_max <= u32::MAX as usize);
        Limits {
            frame_payload_bytes_max,
            message_bytes_max,
            fragments_max,
        }
    }

    /// Bytes of one data frame's payload.
    pub const fn frame_payload_bytes_max(&self) -> usize {
        self.frame_payload_bytes_max
    }

    /// Bytes of one message after reassembly.
    pub const fn message_bytes_max(&self) -> usize {
        self.message_bytes_max
    }

    /// Frames one message may be split into.
    pub const fn fragments_max(&self) -> usize {
        self.fragments_max
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::PROTOCOL
    }
}
