//! Property tests: every op of both families survives encode -> decode, under any chunking,
//! and no byte string makes a decoder panic.

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use ringgate_codec::client::*;
use ringgate_codec::link::*;
use ringgate_codec::{Decoded, ReasonCode, client, link};

fn id() -> impl Strategy<Value = String> {
    "[a-z0-9:_-]{1,40}"
}
fn opt_id() -> impl Strategy<Value = String> {
    "[a-z0-9]{0,20}"
}
fn payload() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}
fn key() -> impl Strategy<Value = Option<Bytes>> {
    proptest::option::of(proptest::collection::vec(any::<u8>(), 1..=255).prop_map(Bytes::from))
}
fn reason() -> impl Strategy<Value = ReasonCode> {
    any::<u32>().prop_map(ReasonCode)
}
fn millis() -> impl Strategy<Value = Duration> {
    any::<u32>().prop_map(|ms| Duration::from_millis(u64::from(ms)))
}
fn platform() -> impl Strategy<Value = Platform> {
    prop_oneof![
        Just(Platform::Unspecified),
        Just(Platform::Ios),
        Just(Platform::Android),
        Just(Platform::Web),
        Just(Platform::Desktop),
        Just(Platform::Other)
    ]
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        Just(ClientFrame::Ping),
        Just(ClientFrame::Pong),
        (any::<u32>(), opt_id(), opt_id(), opt_id(), platform(), key()).prop_map(|(v, t, u, d, p, r)| {
            ClientFrame::Auth(Auth {
                protocol_version: v,
                token: t,
                user_id: u,
                device_id: d,
                platform: p,
                resume_token: r,
            })
        }),
        (any::<u64>(), opt_id(), 1..u32::MAX, any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>(), key()).prop_map(
            |(c, n, hb, t, v, mf, mi, r)| ClientFrame::AuthOk(AuthOk {
                connection_id: c,
                node_id: n,
                heartbeat_interval: Duration::from_millis(u64::from(hb)),
                server_time_ms: t,
                protocol_version: v,
                max_frame_len: mf,
                max_in_flight: mi,
                resume_token: r,
            })
        ),
        (reason(), opt_id(), proptest::collection::vec(any::<u32>(), 0..4))
            .prop_map(|(r, m, v)| { ClientFrame::AuthFail(AuthFail { reason: r, message: m, supported_versions: v }) }),
        (any::<u64>(), key(), payload()).prop_map(|(seq, route_key, payload)| ClientFrame::Send(SendFrame {
            seq,
            route_key,
            payload
        })),
        (any::<u64>(), reason()).prop_map(|(seq, code)| ClientFrame::Ack(AckFrame { seq, code })),
        (any::<u64>(), payload()).prop_map(|(seq, payload)| ClientFrame::Push(PushFrame { seq, payload })),
        (reason(), opt_id()).prop_map(|(reason, message)| ClientFrame::Kick(Kick { reason, message })),
        (reason(), proptest::collection::vec(id(), 0..3), millis(), millis()).prop_map(|(r, a, after, j)| {
            ClientFrame::GoAway(GoAway { reason: r, alternatives: a, reconnect_after: after, reconnect_jitter: j })
        }),
        (reason(), opt_id()).prop_map(|(reason, message)| ClientFrame::Close(Close { reason, message })),
    ]
}

fn link_frame() -> impl Strategy<Value = LinkFrame> {
    let conn = 1..u64::MAX;
    prop_oneof![
        Just(LinkFrame::Ping),
        Just(LinkFrame::Pong),
        (id(), any::<u64>(), any::<u32>(), any::<u32>(), 1..u32::MAX, any::<u32>()).prop_map(|(n, e, w, v, win, m)| {
            LinkFrame::Hello(Hello {
                node_id: n,
                node_epoch: e,
                worker: w,
                link_version: v,
                window: win,
                max_frame_len: m,
            })
        }),
        (opt_id(), any::<u32>(), 1..u32::MAX).prop_map(|(b, v, w)| LinkFrame::HelloAck(HelloAck {
            backend_id: b,
            link_version: v,
            window: w
        })),
        (reason(), opt_id()).prop_map(|(reason, message)| LinkFrame::Close(LinkClose { reason, message })),
        (any::<u64>(), any::<u64>(), opt_id(), opt_id(), platform(), key(), any::<u64>(), payload()).prop_map(
            |(r, c, u, d, p, k, s, pl)| LinkFrame::Upstream(Upstream {
                request_id: r,
                conn_id: c,
                user_id: u,
                device_id: d,
                platform: p,
                route_key: k,
                seq: s,
                payload: pl,
            })
        ),
        (any::<u64>(), reason(), proptest::option::of(payload()))
            .prop_map(|(r, c, reply)| LinkFrame::UpstreamAck(UpstreamAck { request_id: r, code: c, reply })),
        (any::<u64>(), conn.clone(), payload()).prop_map(|(p, c, pl)| LinkFrame::PushToConn(PushToConn {
            push_id: p,
            conn_id: c,
            payload: pl
        })),
        (any::<u64>(), id(), proptest::collection::vec(id(), 0..3), payload(), any::<bool>()).prop_map(
            |(p, u, d, pl, only)| {
                LinkFrame::PushToUser(PushToUser {
                    push_id: p,
                    user_id: u,
                    device_ids: d,
                    payload: pl,
                    all_nodes: only,
                })
            }
        ),
        (any::<u64>(), id(), proptest::option::of(conn.clone()), payload(), any::<bool>()).prop_map(
            |(p, r, e, pl, only)| {
                LinkFrame::PushToRoom(PushToRoom {
                    push_id: p,
                    room: r,
                    exclude_conn_id: e,
                    payload: pl,
                    all_nodes: only,
                })
            }
        ),
        (any::<u64>(), payload(), any::<bool>()).prop_map(|(p, pl, only)| LinkFrame::Broadcast(Broadcast {
            push_id: p,
            payload: pl,
            all_nodes: only
        })),
        (conn.clone(), id()).prop_map(|(c, r)| LinkFrame::JoinRoom(RoomMembership { conn_id: c, room: r })),
        (conn.clone(), id()).prop_map(|(c, r)| LinkFrame::LeaveRoom(RoomMembership { conn_id: c, room: r })),
        (
            prop_oneof![
                conn.clone().prop_map(KickTarget::Conn),
                (id(), proptest::option::of(id()))
                    .prop_map(|(user_id, device_id)| KickTarget::User { user_id, device_id })
            ],
            reason(),
            opt_id()
        )
            .prop_map(|(target, reason, message)| LinkFrame::Kick(LinkKick { target, reason, message })),
        (any::<u64>(), any::<u32>(), reason()).prop_map(|(p, d, c)| LinkFrame::PushResult(PushResult {
            push_id: p,
            delivered: d,
            code: c
        })),
        (conn.clone(), opt_id(), opt_id(), platform(), any::<u64>()).prop_map(|(c, u, d, p, s)| {
            LinkFrame::ConnOpened(ConnOpened { conn_id: c, user_id: u, device_id: d, platform: p, since_ms: s })
        }),
        (conn, opt_id(), opt_id(), reason()).prop_map(|(c, u, d, r)| {
            LinkFrame::ConnClosed(ConnClosed { conn_id: c, user_id: u, device_id: d, reason: r })
        }),
    ]
}

/// Feeds `bytes` to `decode` in chunks of the given sizes (cycled) and collects the frames.
fn decode_chunked<F, E: std::fmt::Debug>(
    bytes: &[u8],
    chunks: &[usize],
    mut decode: impl FnMut(&mut BytesMut) -> Result<Decoded<F>, E>,
) -> Vec<F> {
    let mut input = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = bytes;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        input.extend_from_slice(chunk);
        loop {
            match decode(&mut input).unwrap() {
                Decoded::Frame(f) => frames.push(f),
                Decoded::NeedMore(missing) => {
                    assert!(missing >= 1);
                    break;
                }
            }
        }
    }
    assert!(input.is_empty(), "{} bytes left over", input.len());
    frames
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn client_round_trip(frames in proptest::collection::vec(client_frame(), 1..8), chunks in proptest::collection::vec(1usize..64, 1..8)) {
        let mut bytes = BytesMut::new();
        for f in &frames {
            f.encode(&mut bytes).unwrap();
        }
        let decoder = ClientDecoder::new(1 << 20);
        prop_assert_eq!(&decode_chunked(&bytes, &[usize::MAX], |b| decoder.decode(b)), &frames);
        prop_assert_eq!(&decode_chunked(&bytes, &chunks, |b| decoder.decode(b)), &frames);
    }

    #[test]
    fn link_round_trip(frames in proptest::collection::vec(link_frame(), 1..8), chunks in proptest::collection::vec(1usize..64, 1..8)) {
        let mut bytes = BytesMut::new();
        for f in &frames {
            f.encode(&mut bytes).unwrap();
        }
        let decoder = LinkDecoder::new(1 << 20);
        prop_assert_eq!(&decode_chunked(&bytes, &[usize::MAX], |b| decoder.decode(b)), &frames);
        prop_assert_eq!(&decode_chunked(&bytes, &chunks, |b| decoder.decode(b)), &frames);
    }

    #[test]
    /// Random bytes mostly fail at the op byte; these reach every body decoder: a known op,
    /// an exact length, and a random body (or one made of a valid frame's body with bytes
    /// flipped), and must decode or fail without a panic, consuming exactly the frame.
    fn body_decoders_never_panic(
        client_op in proptest::sample::select(CLIENT_OPS.to_vec()),
        link_op in proptest::sample::select(LINK_OPS.to_vec()),
        body in proptest::collection::vec(any::<u8>(), 0..600),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
    ) {
        for (op, is_client) in [(client_op, true), (link_op, false)] {
            let mut body = body.clone();
            // Half the time start from a valid frame of the op's family and damage it.
            if flips.len() % 2 == 1 {
                let valid = if is_client { sample_client_body(op) } else { sample_link_body(op) };
                if let Some(valid) = valid {
                    body = valid;
                }
            }
            for &(at, x) in &flips {
                if !body.is_empty() {
                    let i = at % body.len();
                    body[i] ^= x;
                }
            }
            let mut frame = BytesMut::new();
            frame.extend_from_slice(&[op]);
            ringgate_codec::varint::encode(body.len() as u64, &mut frame);
            frame.extend_from_slice(&body);
            frame.extend_from_slice(b"tail");
            let result = if is_client {
                ClientDecoder::default().decode(&mut frame).map(|d| matches!(d, Decoded::Frame(_)))
            } else {
                LinkDecoder::default().decode(&mut frame).map(|d| matches!(d, Decoded::Frame(_)))
            };
            if result == Ok(true) {
                prop_assert_eq!(&frame[..], b"tail", "a decoded frame takes exactly its bytes");
            }
        }
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), chunk in 1usize..32) {
        for max in [16, 65_536] {
            let mut input = BytesMut::new();
            for piece in bytes.chunks(chunk) {
                input.extend_from_slice(piece);
                while let Ok(Decoded::Frame(_)) = ClientDecoder::new(max).decode(&mut input) {}
            }
            let mut input = BytesMut::from(&bytes[..]);
            while let Ok(Decoded::Frame(_)) = LinkDecoder::new(max).decode(&mut input) {}
        }
    }
}

#[test]
fn every_vector_decodes_identically_one_byte_at_a_time() {
    let mut client_stream = BytesMut::new();
    let expected: Vec<ClientFrame> = common::client_vectors().into_iter().map(|(_, f)| f).collect();
    for f in &expected {
        f.encode(&mut client_stream).unwrap();
    }
    let decoder = ClientDecoder::default();
    assert_eq!(decode_chunked(&client_stream, &[1], |b| decoder.decode(b)), expected);
    assert_eq!(decode_chunked(&client_stream, &[3, 1, 7, 2], |b| decoder.decode(b)), expected);

    let mut link_stream = BytesMut::new();
    let expected: Vec<LinkFrame> = common::link_vectors().into_iter().map(|(_, f)| f).collect();
    for f in &expected {
        f.encode(&mut link_stream).unwrap();
    }
    let decoder = LinkDecoder::default();
    assert_eq!(decode_chunked(&link_stream, &[1], |b| decoder.decode(b)), expected);
    assert_eq!(decode_chunked(&link_stream, &[5, 2, 11], |b| decoder.decode(b)), expected);
}

#[test]
fn need_more_is_exact_once_the_header_is_known() {
    let frame = ClientFrame::Push(PushFrame { seq: 1, payload: Bytes::from(vec![7u8; 1000]) });
    let bytes = frame.to_bytes().unwrap();
    let header_len = 3; // op + 2-byte length
    let mut input = BytesMut::from(&bytes[..header_len]);
    assert_eq!(ClientDecoder::default().decode(&mut input).unwrap(), Decoded::NeedMore(bytes.len() - header_len));
}

const CLIENT_OPS: [u8; 11] = [
    client::op::PING,
    client::op::PONG,
    client::op::AUTH,
    client::op::AUTH_OK,
    client::op::AUTH_FAIL,
    client::op::SEND,
    client::op::ACK,
    client::op::PUSH,
    client::op::KICK,
    client::op::GO_AWAY,
    client::op::CLOSE,
];

const LINK_OPS: [u8; 17] = [
    link::op::PING,
    link::op::PONG,
    link::op::HELLO,
    link::op::HELLO_ACK,
    link::op::CLOSE,
    link::op::UPSTREAM,
    link::op::UPSTREAM_ACK,
    link::op::PUSH_TO_CONN,
    link::op::PUSH_TO_USER,
    link::op::PUSH_TO_ROOM,
    link::op::BROADCAST,
    link::op::JOIN_ROOM,
    link::op::LEAVE_ROOM,
    link::op::KICK,
    link::op::PUSH_RESULT,
    link::op::CONN_OPENED,
    link::op::CONN_CLOSED,
];

/// The body of the golden vector of client op `op`, if there is one.
fn sample_client_body(op: u8) -> Option<Vec<u8>> {
    common::client_vectors().into_iter().map(|(_, f)| f.to_bytes().unwrap()).find(|b| b[0] == op).map(|b| strip(&b))
}

fn sample_link_body(op: u8) -> Option<Vec<u8>> {
    common::link_vectors().into_iter().map(|(_, f)| f.to_bytes().unwrap()).find(|b| b[0] == op).map(|b| strip(&b))
}

/// A frame's body: past its op byte and its varint length.
fn strip(frame: &[u8]) -> Vec<u8> {
    let len_bytes = frame[1..].iter().position(|b| b & 0x80 == 0).map_or(1, |i| i + 1);
    frame[1 + len_bytes..].to_vec()
}
