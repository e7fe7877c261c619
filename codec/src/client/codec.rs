//! Decoder and encoders of the client frame family.

use bytes::{BufMut, Bytes, BytesMut};

use super::frame::{AckFrame, ClientFrame, PushFrame, SendFrame, op};
use crate::error::{DecodeError, EncodeError};
use crate::header::{self, Decoded, RawFrame};
use crate::limits::{DEFAULT_MAX_FRAME_LEN, MAX_ROUTE_KEY_LEN};
use crate::pb::client as pb;
use crate::reason::ReasonCode;
use crate::varint;

/// Incremental decoder of client frames.
///
/// # Contract
///
/// [`decode`](Self::decode) looks at the front of `src` and returns exactly one of:
/// - `Ok(Decoded::Frame(frame))`: the frame's bytes were removed from `src`; call again, more
///   frames may follow;
/// - `Ok(Decoded::NeedMore(n))`: `src` holds no whole frame; read at least `n` more bytes
///   (`n >= 1`) and call again; `src` was not changed;
/// - `Err(e)`: the peer broke the protocol; close the connection with `e.reason()`. The
///   contents of `src` are then unspecified.
///
/// Any split of the input into chunks yields the same frames. A declared body length above
/// `max_frame_len` is an error as soon as the length is read, before anything is reserved.
/// No input makes it panic.
#[derive(Debug, Clone, Copy)]
pub struct ClientDecoder {
    max_frame_len: usize,
}

impl Default for ClientDecoder {
    fn default() -> Self {
        ClientDecoder { max_frame_len: DEFAULT_MAX_FRAME_LEN }
    }
}

impl ClientDecoder {
    /// A decoder that accepts bodies of at most `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> Self {
        ClientDecoder { max_frame_len }
    }

    /// The configured maximum body length.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Decodes one frame from the front of `src`; see the type's contract.
    pub fn decode(&self, src: &mut BytesMut) -> Result<Decoded<ClientFrame>, DecodeError> {
        match header::split_frame(src, self.max_frame_len, is_known_op)? {
            Decoded::Frame(raw) => decode_body(raw).map(Decoded::Frame),
            Decoded::NeedMore(n) => Ok(Decoded::NeedMore(n)),
        }
    }
}

fn is_known_op(byte: u8) -> bool {
    matches!(
        byte,
        op::PING
            | op::PONG
            | op::AUTH
            | op::AUTH_OK
            | op::AUTH_FAIL
            | op::SEND
            | op::ACK
            | op::PUSH
            | op::KICK
            | op::GO_AWAY
            | op::CLOSE
    )
}

fn decode_body(RawFrame { op, body }: RawFrame) -> Result<ClientFrame, DecodeError> {
    Ok(match op {
        op::PING => header::expect_empty("ping", &body).map(|()| ClientFrame::Ping)?,
        op::PONG => header::expect_empty("pong", &body).map(|()| ClientFrame::Pong)?,
        op::AUTH => ClientFrame::Auth(header::proto::<pb::Auth>("auth", body)?.try_into()?),
        op::AUTH_OK => ClientFrame::AuthOk(header::proto::<pb::AuthOk>("auth_ok", body)?.try_into()?),
        op::AUTH_FAIL => ClientFrame::AuthFail(header::proto::<pb::AuthFail>("auth_fail", body)?.into()),
        op::SEND => ClientFrame::Send(decode_send(body)?),
        op::ACK => ClientFrame::Ack(decode_ack(&body)?),
        op::PUSH => ClientFrame::Push(decode_push(body)?),
        op::KICK => ClientFrame::Kick(header::proto::<pb::Kick>("kick", body)?.into()),
        op::GO_AWAY => ClientFrame::GoAway(header::proto::<pb::GoAway>("go_away", body)?.into()),
        op::CLOSE => ClientFrame::Close(header::proto::<pb::Close>("close", body)?.into()),
        other => return Err(DecodeError::UnknownOp(other)),
    })
}

/// Reads a varint of at most `max_bytes` from the front of `body`; a short or long one is a
/// malformed body (the frame length already said the body is complete).
fn body_varint(
    op: &'static str,
    body: &[u8],
    max_bytes: usize,
    what: &'static str,
) -> Result<(u64, usize), DecodeError> {
    varint::decode(body, max_bytes).map_err(|_| DecodeError::BadBody { op, reason: what })
}

fn decode_send(body: Bytes) -> Result<SendFrame, DecodeError> {
    let (seq, seq_len) = body_varint("send", &body, 10, "bad seq varint")?;
    let rest = body.get(seq_len..).unwrap_or_default();
    let (key_len, key_len_len) = body_varint("send", rest, 2, "bad route key length")?;
    let key_len = usize::try_from(key_len).unwrap_or(usize::MAX);
    if key_len > MAX_ROUTE_KEY_LEN {
        return Err(DecodeError::BadBody { op: "send", reason: "route key longer than 255 bytes" });
    }
    let key_start = seq_len + key_len_len;
    let key_end = key_start + key_len;
    if key_end > body.len() {
        return Err(DecodeError::BadBody { op: "send", reason: "route key runs past the body" });
    }
    // Both bounds were checked against body.len() above. The payload reuses the body's
    // handle (advance is free) so only a route key costs a refcount increment.
    let route_key = (key_len > 0).then(|| body.slice(key_start..key_end));
    let mut payload = body;
    bytes::Buf::advance(&mut payload, key_end);
    Ok(SendFrame { seq, route_key, payload })
}

fn decode_ack(body: &[u8]) -> Result<AckFrame, DecodeError> {
    let (seq, seq_len) = body_varint("ack", body, 10, "bad seq varint")?;
    let rest = body.get(seq_len..).unwrap_or_default();
    let (code, code_len) = body_varint("ack", rest, 5, "bad code varint")?;
    let code = u32::try_from(code).map_err(|_| DecodeError::BadBody { op: "ack", reason: "code above u32" })?;
    if code_len != rest.len() {
        return Err(DecodeError::BadBody { op: "ack", reason: "trailing bytes" });
    }
    Ok(AckFrame { seq, code: ReasonCode(code) })
}

fn decode_push(body: Bytes) -> Result<PushFrame, DecodeError> {
    let (seq, seq_len) = body_varint("push", &body, 10, "bad seq varint")?;
    // seq_len <= body.len(): the varint was read from body.
    let mut payload = body;
    bytes::Buf::advance(&mut payload, seq_len);
    Ok(PushFrame { seq, payload })
}

impl ClientFrame {
    /// Appends the frame's bytes to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            ClientFrame::Ping => encode_ping(dst),
            ClientFrame::Pong => encode_pong(dst),
            ClientFrame::Auth(a) => header::put_proto(op::AUTH, &pb::Auth::from(a), dst)?,
            ClientFrame::AuthOk(a) => header::put_proto(op::AUTH_OK, &pb::AuthOk::from(a), dst)?,
            ClientFrame::AuthFail(a) => header::put_proto(op::AUTH_FAIL, &pb::AuthFail::from(a), dst)?,
            ClientFrame::Send(s) => encode_send(s.seq, s.route_key.as_deref(), &s.payload, dst)?,
            ClientFrame::Ack(a) => encode_ack(a.seq, a.code, dst),
            ClientFrame::Push(p) => encode_push(p.seq, &p.payload, dst)?,
            ClientFrame::Kick(k) => header::put_proto(op::KICK, &pb::Kick::from(k), dst)?,
            ClientFrame::GoAway(g) => header::put_proto(op::GO_AWAY, &pb::GoAway::from(g), dst)?,
            ClientFrame::Close(c) => header::put_proto(op::CLOSE, &pb::Close::from(c), dst)?,
        }
        Ok(())
    }

    /// The frame's bytes in a new buffer.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut dst = BytesMut::new();
        self.encode(&mut dst)?;
        Ok(dst.freeze())
    }
}

/// Appends a Ping (2 bytes: `01 00`).
pub fn encode_ping(dst: &mut BytesMut) {
    dst.put_slice(&[op::PING, 0]);
}

/// Appends a Pong (2 bytes: `02 00`).
pub fn encode_pong(dst: &mut BytesMut) {
    dst.put_slice(&[op::PONG, 0]);
}

/// Appends a Send. An empty or absent route key is written as length 0.
pub fn encode_send(seq: u64, route_key: Option<&[u8]>, payload: &[u8], dst: &mut BytesMut) -> Result<(), EncodeError> {
    let key = route_key.unwrap_or_default();
    if key.len() > MAX_ROUTE_KEY_LEN {
        return Err(EncodeError::InvalidField { op: "send", field: "route_key", reason: "longer than 255 bytes" });
    }
    let body_len = varint::encoded_len(seq) + varint::encoded_len(key.len() as u64) + key.len() + payload.len();
    header::put_header(op::SEND, body_len, dst)?;
    varint::encode(seq, dst);
    varint::encode(key.len() as u64, dst);
    dst.put_slice(key);
    dst.put_slice(payload);
    Ok(())
}

/// Appends an Ack.
pub fn encode_ack(seq: u64, code: ReasonCode, dst: &mut BytesMut) {
    let body_len = varint::encoded_len(seq) + varint::encoded_len(u64::from(code.0));
    dst.reserve(2 + body_len);
    dst.put_u8(op::ACK);
    // At most 15 bytes: one length byte.
    varint::encode(body_len as u64, dst);
    varint::encode(seq, dst);
    varint::encode(u64::from(code.0), dst);
}

/// Appends a Push.
pub fn encode_push(seq: u64, payload: &[u8], dst: &mut BytesMut) -> Result<(), EncodeError> {
    header::put_header(op::PUSH, varint::encoded_len(seq) + payload.len(), dst)?;
    varint::encode(seq, dst);
    dst.put_slice(payload);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Result<Decoded<ClientFrame>, DecodeError> {
        ClientDecoder::default().decode(&mut BytesMut::from(bytes))
    }

    #[test]
    fn heartbeats_are_two_bytes() {
        let mut buf = BytesMut::new();
        encode_ping(&mut buf);
        assert_eq!(&buf[..], [0x01, 0x00]);
        assert_eq!(ClientFrame::Pong.to_bytes().unwrap().len(), 2);
    }

    #[test]
    fn send_header_is_at_most_eight_bytes_below_16_kib() {
        let payload = vec![0u8; 16 * 1024 - 16];
        let mut buf = BytesMut::new();
        encode_send((1 << 28) - 1, None, &payload, &mut buf).unwrap();
        assert!(buf.len() - payload.len() <= 8, "header was {} bytes", buf.len() - payload.len());
    }

    #[test]
    fn bad_bodies_are_typed_errors() {
        assert_eq!(decode_all(&[0x01, 0x01, 0x00]).unwrap_err().reason(), ReasonCode::PROTOCOL_ERROR);
        assert_eq!(decode_all(&[0x7e, 0x00]).unwrap_err(), DecodeError::UnknownOp(0x7e));
        // Send whose route key length points past the body.
        let err = decode_all(&[0x20, 0x02, 0x01, 0x05]).unwrap_err();
        assert!(matches!(err, DecodeError::BadBody { op: "send", .. }), "{err:?}");
        // Ack with a trailing byte.
        let err = decode_all(&[0x21, 0x03, 0x01, 0x00, 0x00]).unwrap_err();
        assert!(matches!(err, DecodeError::BadBody { op: "ack", .. }), "{err:?}");
        // Auth whose protobuf body is a truncated field.
        let err = decode_all(&[0x10, 0x02, 0x12, 0x05]).unwrap_err();
        assert!(matches!(err, DecodeError::BadProto { op: "auth", .. }), "{err:?}");
        // Send with an empty body has no seq.
        let err = decode_all(&[0x20, 0x00]).unwrap_err();
        assert!(matches!(err, DecodeError::BadBody { op: "send", .. }), "{err:?}");
    }

    #[test]
    fn oversized_route_key_is_refused_both_ways() {
        let key = vec![b'k'; 256];
        let mut buf = BytesMut::new();
        assert!(encode_send(1, Some(&key), b"", &mut buf).is_err());
        assert!(buf.is_empty());
        // Hand-built: key length 256 (varint 0x80 0x02).
        let mut frame = vec![0x20, 0x83, 0x02, 0x01, 0x80, 0x02];
        frame.extend_from_slice(&key);
        assert!(matches!(decode_all(&frame).unwrap_err(), DecodeError::BadBody { op: "send", .. }));
    }

    #[test]
    fn auth_with_overlong_user_is_invalid() {
        let auth = pb::Auth { user_id: "u".repeat(257), ..Default::default() };
        let mut buf = BytesMut::new();
        header::put_proto(op::AUTH, &auth, &mut buf).unwrap();
        let err = decode_all(&buf).unwrap_err();
        assert_eq!(err, DecodeError::InvalidField { op: "auth", field: "user_id", reason: "too long" });
    }
}
