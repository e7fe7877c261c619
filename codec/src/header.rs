//! The frame header both families share: one op byte, then the body length as a varint of
//! at most 4 bytes, then the body.
//!
//! ```text
//! +--------+------------------+-----------------+
//! | op: u8 | len: varint 1..4 | body: len bytes |
//! +--------+------------------+-----------------+
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::varint::{self, VarintError};

/// Longest length varint a decoder accepts.
pub const MAX_LENGTH_BYTES: usize = 4;
/// Largest body length a header can carry (2^28 - 1).
pub const MAX_ENCODABLE_LEN: usize = (1 << 28) - 1;

/// Result of an incremental decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<T> {
    /// A whole frame; its bytes were removed from the input.
    Frame(T),
    /// The input holds no whole frame yet; at least this many more bytes are needed
    /// (never zero). Nothing was removed from the input.
    NeedMore(usize),
}

/// A complete frame split off the input: its op and its body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RawFrame {
    pub op: u8,
    pub body: Bytes,
}

/// Splits one frame off the front of `src`, or says how many bytes are missing.
///
/// The op byte is checked with `known_op` as soon as it arrives, so garbage (an HTTP request,
/// a TLS hello on a plain port) is refused without waiting for a body. The declared length is
/// checked against `max_body` before anything is reserved or split, so a peer cannot make the
/// receiver allocate by declaring a large frame.
pub(crate) fn split_frame(
    src: &mut BytesMut,
    max_body: usize,
    known_op: fn(u8) -> bool,
) -> Result<Decoded<RawFrame>, DecodeError> {
    let Some((&op, rest)) = src.split_first() else {
        return Ok(Decoded::NeedMore(2));
    };
    if !known_op(op) {
        return Err(DecodeError::UnknownOp(op));
    }
    let (len, len_bytes) = match varint::decode(rest, MAX_LENGTH_BYTES) {
        Ok(parsed) => parsed,
        Err(VarintError::Incomplete) => return Ok(Decoded::NeedMore(1)),
        Err(VarintError::Overlong) => return Err(DecodeError::BadLength),
    };
    let body_len = usize::try_from(len).map_err(|_| DecodeError::FrameTooLarge { len, max: max_body })?;
    if body_len > max_body {
        return Err(DecodeError::FrameTooLarge { len, max: max_body });
    }
    let header_len = 1 + len_bytes;
    let total = header_len + body_len;
    if src.len() < total {
        return Ok(Decoded::NeedMore(total - src.len()));
    }
    // Advancing is free; one split shares the buffer (one refcount increment per frame).
    bytes::Buf::advance(src, header_len);
    let body = src.split_to(body_len).freeze();
    Ok(Decoded::Frame(RawFrame { op, body }))
}

/// Writes a frame header for a body of `body_len` bytes.
pub(crate) fn put_header(op: u8, body_len: usize, dst: &mut BytesMut) -> Result<(), EncodeError> {
    if body_len > MAX_ENCODABLE_LEN {
        return Err(EncodeError::FrameTooLarge { len: body_len, max: MAX_ENCODABLE_LEN });
    }
    dst.reserve(1 + varint::encoded_len(body_len as u64) + body_len);
    dst.put_u8(op);
    varint::encode(body_len as u64, dst);
    Ok(())
}

/// Writes a whole protobuf-bodied frame.
pub(crate) fn put_proto(op: u8, msg: &impl prost::Message, dst: &mut BytesMut) -> Result<(), EncodeError> {
    put_header(op, msg.encoded_len(), dst)?;
    msg.encode_raw(dst);
    Ok(())
}

/// Decodes a protobuf body, naming the op in the error.
pub(crate) fn proto<M: prost::Message + Default>(op: &'static str, body: Bytes) -> Result<M, DecodeError> {
    M::decode(body).map_err(|source| DecodeError::BadProto { op, source })
}

/// Checks that a body that must be empty is.
pub(crate) fn expect_empty(op: &'static str, body: &Bytes) -> Result<(), DecodeError> {
    if body.is_empty() { Ok(()) } else { Err(DecodeError::BadBody { op, reason: "body must be empty" }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(_: u8) -> bool {
        true
    }

    #[test]
    fn need_more_counts_missing_bytes() {
        let mut buf = BytesMut::new();
        assert_eq!(split_frame(&mut buf, 100, any).unwrap(), Decoded::NeedMore(2));
        buf.put_u8(0x20);
        assert_eq!(split_frame(&mut buf, 100, any).unwrap(), Decoded::NeedMore(1));
        buf.put_u8(0x05);
        assert_eq!(split_frame(&mut buf, 100, any).unwrap(), Decoded::NeedMore(5));
        buf.put_slice(b"abc");
        assert_eq!(split_frame(&mut buf, 100, any).unwrap(), Decoded::NeedMore(2));
        buf.put_slice(b"de!");
        match split_frame(&mut buf, 100, any).unwrap() {
            Decoded::Frame(raw) => {
                assert_eq!(raw.op, 0x20);
                assert_eq!(&raw.body[..], b"abcde");
            }
            other => panic!("expected a frame, got {other:?}"),
        }
        assert_eq!(&buf[..], b"!");
    }

    #[test]
    fn oversized_length_is_rejected_before_the_body_arrives() {
        // Declares 2^28 - 1 bytes; only the header is present.
        let mut buf = BytesMut::from(&[0x20, 0xff, 0xff, 0xff, 0x7f][..]);
        let capacity = buf.capacity();
        let err = split_frame(&mut buf, 65_536, any).unwrap_err();
        assert_eq!(err, DecodeError::FrameTooLarge { len: (1 << 28) - 1, max: 65_536 });
        assert_eq!(buf.capacity(), capacity, "nothing reserved");
    }

    #[test]
    fn five_byte_length_is_rejected() {
        let mut buf = BytesMut::from(&[0x20, 0x80, 0x80, 0x80, 0x80, 0x01][..]);
        assert_eq!(split_frame(&mut buf, usize::MAX, any).unwrap_err(), DecodeError::BadLength);
    }
}
