//! Errors of the codec layer. Every decode error closes the connection that produced it;
//! [`DecodeError::reason`] says with which code.

use crate::reason::ReasonCode;

/// Why a frame could not be decoded. Returned once; the connection is then closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The declared body length is above the configured maximum. Nothing was allocated.
    #[error("frame body of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge { len: u64, max: usize },
    /// The length varint is longer than 4 bytes.
    #[error("frame length varint is longer than 4 bytes")]
    BadLength,
    /// The op byte names no frame of this family.
    #[error("unknown op 0x{0:02x}")]
    UnknownOp(u8),
    /// A hand-laid-out body (Send, Ack, Push, Ping, Pong) is malformed.
    #[error("malformed {op} body: {reason}")]
    BadBody { op: &'static str, reason: &'static str },
    /// A protobuf control body did not decode.
    #[error("malformed {op} body: {source}")]
    BadProto {
        op: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    /// A protobuf body decoded but a field holds a value the protocol forbids.
    #[error("invalid {op}.{field}: {reason}")]
    InvalidField { op: &'static str, field: &'static str, reason: &'static str },
}

impl DecodeError {
    /// The reason code the receiver closes the connection with.
    pub fn reason(&self) -> ReasonCode {
        match self {
            DecodeError::FrameTooLarge { .. } => ReasonCode::FRAME_TOO_LARGE,
            DecodeError::UnknownOp(_) => ReasonCode::UNKNOWN_OP,
            DecodeError::BadLength
            | DecodeError::BadBody { .. }
            | DecodeError::BadProto { .. }
            | DecodeError::InvalidField { .. } => ReasonCode::PROTOCOL_ERROR,
        }
    }
}

/// Why a frame could not be encoded. Only local mistakes cause these; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The body would exceed the largest length the frame header can carry, or the
    /// configured maximum.
    #[error("frame body of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge { len: usize, max: usize },
    /// A field holds a value the protocol forbids (for example a route key over 255 bytes).
    #[error("invalid {op}.{field}: {reason}")]
    InvalidField { op: &'static str, field: &'static str, reason: &'static str },
}
