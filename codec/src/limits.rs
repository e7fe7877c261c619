//! Field limits shared by both frame families. A longer field is a protocol error.

use crate::error::DecodeError;

/// Longest user id, device id, node id or room name, in bytes.
pub const MAX_ID_LEN: usize = 256;
/// Longest token or resume token, in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Longest route key, in bytes (its length prefix is one varint of at most 2 bytes).
pub const MAX_ROUTE_KEY_LEN: usize = 255;
/// Largest body an Auth can have: two tokens and two ids at their limits, each with a tag
/// and a 2-byte length, plus the version and platform. Before a session is open the server
/// reads no larger frame (only Auth and Close are allowed then), so a peer that has not
/// authenticated cannot make the gateway hold `max_frame_len` bytes for it.
pub const MAX_AUTH_BODY_LEN: usize = 2 * (MAX_TOKEN_LEN + 3) + 2 * (MAX_ID_LEN + 3) + 16;
/// Default maximum body length of a client frame.
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 * 1024;
/// Default maximum body length of a link frame: a client frame plus room for link metadata.
pub const DEFAULT_MAX_LINK_FRAME_LEN: usize = 128 * 1024;
/// Room a link frame needs around a client payload: the connection id, user and device ids,
/// the route key, a room name, the Send's sequence number, with their field headers (a few
/// hundred bytes at their limits; the rest is margin).
pub const LINK_ENVELOPE: usize = 16 * 1024;

/// The link frame limit that carries any client frame of at most `client_max_frame_len`
/// bytes, and any push that fits one: the one rule both ends of a link decode with (the
/// gateway from its config, a backend from the gateway's Hello). Never below the default.
pub fn link_frame_len(client_max_frame_len: usize) -> usize {
    client_max_frame_len.saturating_add(LINK_ENVELOPE).max(DEFAULT_MAX_LINK_FRAME_LEN)
}

pub(crate) fn check_len(
    op: &'static str,
    field: &'static str,
    value: impl AsRef<[u8]>,
    max: usize,
) -> Result<(), DecodeError> {
    if value.as_ref().len() > max { Err(DecodeError::InvalidField { op, field, reason: "too long" }) } else { Ok(()) }
}
