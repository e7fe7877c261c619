//! Decoder and encoder of the link frame family.

use bytes::{Bytes, BytesMut};

use super::frame::{LinkFrame, RoomMembership, op};
use crate::error::{DecodeError, EncodeError};
use crate::header::{self, Decoded, RawFrame, proto};
use crate::limits::DEFAULT_MAX_LINK_FRAME_LEN;
use crate::pb::link as pb;

/// Incremental decoder of link frames.
///
/// # Contract
///
/// The same as [`ClientDecoder`](crate::client::ClientDecoder): a frame (its bytes removed
/// from `src`), `NeedMore(n)` with `n >= 1` missing bytes and `src` untouched, or an error
/// after which the link is closed. A declared length above `max_frame_len` (default
/// 128 KiB) is an error before anything is reserved. No input makes it panic.
#[derive(Debug, Clone, Copy)]
pub struct LinkDecoder {
    max_frame_len: usize,
}

impl Default for LinkDecoder {
    fn default() -> Self {
        LinkDecoder { max_frame_len: DEFAULT_MAX_LINK_FRAME_LEN }
    }
}

impl LinkDecoder {
    /// A decoder that accepts bodies of at most `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> Self {
        LinkDecoder { max_frame_len }
    }

    /// Decodes one frame from the front of `src`; see the type's contract.
    pub fn decode(&self, src: &mut BytesMut) -> Result<Decoded<LinkFrame>, DecodeError> {
        match header::split_frame(src, self.max_frame_len, is_known_op)? {
            Decoded::Frame(raw) => decode_body(raw).map(Decoded::Frame),
            Decoded::NeedMore(n) => Ok(Decoded::NeedMore(n)),
        }
    }
}

fn is_known_op(byte: u8) -> bool {
    matches!(byte, op::PING | op::PONG | op::HELLO | op::HELLO_ACK | op::CLOSE | op::UPSTREAM | op::UPSTREAM_ACK)
        || (op::PUSH_TO_CONN..=op::PUSH_RESULT).contains(&byte)
        || matches!(byte, op::CONN_OPENED | op::CONN_CLOSED)
}

fn decode_body(RawFrame { op, body }: RawFrame) -> Result<LinkFrame, DecodeError> {
    use LinkFrame as F;
    Ok(match op {
        op::PING => header::expect_empty("ping", &body).map(|()| F::Ping)?,
        op::PONG => header::expect_empty("pong", &body).map(|()| F::Pong)?,
        op::HELLO => F::Hello(proto::<pb::Hello>("hello", body)?.try_into()?),
        op::HELLO_ACK => F::HelloAck(proto::<pb::HelloAck>("hello_ack", body)?.try_into()?),
        op::CLOSE => F::Close(proto::<pb::LinkClose>("close", body)?.into()),
        op::UPSTREAM => F::Upstream(proto::<pb::Upstream>("upstream", body)?.try_into()?),
        op::UPSTREAM_ACK => F::UpstreamAck(proto::<pb::UpstreamAck>("upstream_ack", body)?.into()),
        op::PUSH_TO_CONN => F::PushToConn(proto::<pb::PushToConn>("push_to_conn", body)?.try_into()?),
        op::PUSH_TO_USER => F::PushToUser(proto::<pb::PushToUser>("push_to_user", body)?.try_into()?),
        op::PUSH_TO_ROOM => F::PushToRoom(proto::<pb::PushToRoom>("push_to_room", body)?.try_into()?),
        op::BROADCAST => F::Broadcast(proto::<pb::Broadcast>("broadcast", body)?.into()),
        op::JOIN_ROOM => F::JoinRoom(RoomMembership::from_wire("join_room", proto("join_room", body)?)?),
        op::LEAVE_ROOM => F::LeaveRoom(RoomMembership::from_wire("leave_room", proto("leave_room", body)?)?),
        op::KICK => F::Kick(proto::<pb::LinkKick>("kick", body)?.try_into()?),
        op::PUSH_RESULT => F::PushResult(proto::<pb::PushResult>("push_result", body)?.into()),
        op::CONN_OPENED => F::ConnOpened(proto::<pb::ConnOpened>("conn_opened", body)?.try_into()?),
        op::CONN_CLOSED => F::ConnClosed(proto::<pb::ConnClosed>("conn_closed", body)?.try_into()?),
        other => return Err(DecodeError::UnknownOp(other)),
    })
}

impl LinkFrame {
    /// The frame's name as used in docs, logs and metric labels.
    pub fn name(&self) -> &'static str {
        use LinkFrame as F;
        match self {
            F::Ping => "ping",
            F::Pong => "pong",
            F::Hello(_) => "hello",
            F::HelloAck(_) => "hello_ack",
            F::Close(_) => "close",
            F::Upstream(_) => "upstream",
            F::UpstreamAck(_) => "upstream_ack",
            F::PushToConn(_) => "push_to_conn",
            F::PushToUser(_) => "push_to_user",
            F::PushToRoom(_) => "push_to_room",
            F::Broadcast(_) => "broadcast",
            F::JoinRoom(_) => "join_room",
            F::LeaveRoom(_) => "leave_room",
            F::Kick(_) => "kick",
            F::PushResult(_) => "push_result",
            F::ConnOpened(_) => "conn_opened",
            F::ConnClosed(_) => "conn_closed",
        }
    }

    /// Appends the frame's bytes to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        use LinkFrame as F;
        use header::put_proto as put;
        match self {
            F::Ping => header::put_header(op::PING, 0, dst),
            F::Pong => header::put_header(op::PONG, 0, dst),
            F::Hello(m) => put(op::HELLO, &pb::Hello::from(m), dst),
            F::HelloAck(m) => put(op::HELLO_ACK, &pb::HelloAck::from(m), dst),
            F::Close(m) => put(op::CLOSE, &pb::LinkClose::from(m), dst),
            F::Upstream(m) => put(op::UPSTREAM, &pb::Upstream::from(m), dst),
            F::UpstreamAck(m) => put(op::UPSTREAM_ACK, &pb::UpstreamAck::from(m), dst),
            F::PushToConn(m) => put(op::PUSH_TO_CONN, &pb::PushToConn::from(m), dst),
            F::PushToUser(m) => put(op::PUSH_TO_USER, &pb::PushToUser::from(m), dst),
            F::PushToRoom(m) => put(op::PUSH_TO_ROOM, &pb::PushToRoom::from(m), dst),
            F::Broadcast(m) => put(op::BROADCAST, &pb::Broadcast::from(m), dst),
            F::JoinRoom(m) => put(op::JOIN_ROOM, &pb::RoomMembership::from(m), dst),
            F::LeaveRoom(m) => put(op::LEAVE_ROOM, &pb::RoomMembership::from(m), dst),
            F::Kick(m) => put(op::KICK, &pb::LinkKick::from(m), dst),
            F::PushResult(m) => put(op::PUSH_RESULT, &pb::PushResult::from(m), dst),
            F::ConnOpened(m) => put(op::CONN_OPENED, &pb::ConnOpened::from(m), dst),
            F::ConnClosed(m) => put(op::CONN_CLOSED, &pb::ConnClosed::from(m), dst),
        }
    }

    /// The frame's bytes in a new buffer.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut dst = BytesMut::new();
        self.encode(&mut dst)?;
        Ok(dst.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reason::ReasonCode;

    fn decode_all(bytes: &[u8]) -> Result<Decoded<LinkFrame>, DecodeError> {
        LinkDecoder::default().decode(&mut BytesMut::from(bytes))
    }

    #[test]
    fn push_to_conn_zero_is_invalid() {
        let mut buf = BytesMut::new();
        header::put_proto(
            op::PUSH_TO_CONN,
            &pb::PushToConn { push_id: 1, conn_id: 0, payload: Bytes::new() },
            &mut buf,
        )
        .unwrap();
        assert_eq!(
            decode_all(&buf).unwrap_err(),
            DecodeError::InvalidField { op: "push_to_conn", field: "conn_id", reason: "must not be zero" }
        );
    }

    #[test]
    fn kick_needs_a_target() {
        let mut buf = BytesMut::new();
        header::put_proto(op::KICK, &pb::LinkKick { reason: 40, ..Default::default() }, &mut buf).unwrap();
        let err = decode_all(&buf).unwrap_err();
        assert_eq!(err.reason(), ReasonCode::PROTOCOL_ERROR);
    }

    #[test]
    fn unknown_op() {
        assert_eq!(decode_all(&[0x99, 0x00]).unwrap_err(), DecodeError::UnknownOp(0x99));
    }
}
