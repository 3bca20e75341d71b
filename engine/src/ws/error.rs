//! Why the decoder refused a client's bytes, and the close code that says so.

use protocol::close;

/// A client broke RFC 6455 or one of our limits. The connection is done: send a close
/// frame with [`DecodeError::close_code`] and stop reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    #[error("unmasked frame from a client")]
    Unmasked,
    #[error("fragmented control frame")]
    FragmentedControl,
    #[error("control frame payload of {len} bytes, max 125")]
    ControlTooLong { len: u8 },
    #[error("64-bit payload length with the most significant bit set")]
    LengthMsbSet,
    #[error("frame payload of {len} bytes, max {max}")]
    FrameTooBig { len: u64, max: usize },
    #[error("message of at least {len} bytes, max {max}")]
    MessageTooBig { len: u64, max: usize },
    #[error("message in more than {max} fragments")]
    TooManyFragments { max: usize },
    #[error("continuation frame without a message in progress")]
    ContinuationWithoutMessage,
    #[error("new data frame while a fragmented message is in progress")]
    MessageInterrupted,
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    #[error("close frame payload of 1 byte")]
    CloseOneByte,
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    #[error("close reason is not valid UTF-8")]
    InvalidCloseReason,
}

impl DecodeError {
    /// The close code to send for this failure (`protocol::close`).
    ///
    /// Size limits, including the fragment count, are 1009 ("a frame or message over the
    /// size limits", docs/PROTOCOL.md): a client that splits a message into too many
    /// pieces is told the same thing as one that sends too many bytes.
    pub fn close_code(self) -> u16 {
        match self {
            DecodeError::ReservedBits
            | DecodeError::ReservedOpcode(_)
            | DecodeError::Unmasked
            | DecodeError::FragmentedControl
            | DecodeError::ControlTooLong { .. }
            | DecodeError::LengthMsbSet
            | DecodeError::ContinuationWithoutMessage
            | DecodeError::MessageInterrupted
            | DecodeError::CloseOneByte
            | DecodeError::InvalidCloseCode(_) => close::PROTOCOL_ERROR,
            DecodeError::FrameTooBig { .. }
            | DecodeError::MessageTooBig { .. }
            | DecodeError::TooManyFragments { .. } => close::MESSAGE_TOO_BIG,
            DecodeError::InvalidUtf8 | DecodeError::InvalidCloseReason => close::INVALID_PAYLOAD,
        }
    }
}
