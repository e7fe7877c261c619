//! Named frames shared by the codec's integration tests: the golden vectors of
//! docs/protocol.md and a seed for the fuzz corpus.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use ringgate_codec::ReasonCode;
use ringgate_codec::client::*;
use ringgate_codec::link::*;

pub fn client_vectors() -> Vec<(&'static str, ClientFrame)> {
    vec![
        ("client/ping", ClientFrame::Ping),
        ("client/pong", ClientFrame::Pong),
        (
            "client/auth",
            ClientFrame::Auth(Auth {
                protocol_version: 1,
                token: "t1".into(),
                user_id: "alice".into(),
                device_id: "phone".into(),
                platform: Platform::Ios,
                resume_token: None,
            }),
        ),
        (
            "client/auth_ok",
            ClientFrame::AuthOk(AuthOk {
                connection_id: 258,
                node_id: "gw-1".into(),
                heartbeat_interval: Duration::from_secs(30),
                server_time_ms: 1_700_000_000_000,
                protocol_version: 1,
                max_frame_len: 65_536,
                max_in_flight: 64,
                resume_token: None,
            }),
        ),
        (
            "client/auth_fail",
            ClientFrame::AuthFail(AuthFail {
                reason: ReasonCode::AUTH_EXPIRED,
                message: "expired".into(),
                supported_versions: vec![1],
            }),
        ),
        (
            "client/send",
            ClientFrame::Send(SendFrame {
                seq: 1,
                route_key: Some(Bytes::from_static(b"room:42")),
                payload: "hi".into(),
            }),
        ),
        ("client/send_no_key", ClientFrame::Send(SendFrame { seq: 300, route_key: None, payload: "abc".into() })),
        ("client/ack", ClientFrame::Ack(AckFrame { seq: 1, code: ReasonCode::OK })),
        ("client/ack_busy", ClientFrame::Ack(AckFrame { seq: 300, code: ReasonCode::BACKEND_BUSY })),
        ("client/push", ClientFrame::Push(PushFrame { seq: 7, payload: "hello".into() })),
        ("client/kick", ClientFrame::Kick(Kick { reason: ReasonCode::REPLACED, message: "replaced".into() })),
        (
            "client/go_away",
            ClientFrame::GoAway(GoAway {
                reason: ReasonCode::SERVER_DRAINING,
                alternatives: vec!["10.0.0.2:7000".into()],
                reconnect_after: Duration::from_millis(1000),
                reconnect_jitter: Duration::from_millis(5000),
            }),
        ),
        ("client/close", ClientFrame::Close(Close { reason: ReasonCode::IDLE_TIMEOUT, message: String::new() })),
    ]
}

pub fn link_vectors() -> Vec<(&'static str, LinkFrame)> {
    let payload = Bytes::from_static(b"x");
    vec![
        ("link/ping", LinkFrame::Ping),
        (
            "link/hello",
            LinkFrame::Hello(Hello {
                node_id: "gw-1".into(),
                node_epoch: 1_700_000_000,
                worker: 0,
                link_version: 1,
                window: 1024,
                max_frame_len: 131_072,
            }),
        ),
        ("link/hello_ack", LinkFrame::HelloAck(HelloAck { backend_id: "be-1".into(), link_version: 1, window: 512 })),
        ("link/close", LinkFrame::Close(LinkClose { reason: ReasonCode::SERVER_SHUTDOWN, message: String::new() })),
        (
            "link/upstream",
            LinkFrame::Upstream(Upstream {
                request_id: 1,
                conn_id: 258,
                user_id: "alice".into(),
                device_id: "phone".into(),
                platform: Platform::Ios,
                route_key: Some(Bytes::from_static(b"room:42")),
                seq: 1,
                payload: "hi".into(),
            }),
        ),
        (
            "link/upstream_ack",
            LinkFrame::UpstreamAck(UpstreamAck { request_id: 1, code: ReasonCode::OK, reply: Some("hi".into()) }),
        ),
        ("link/push_to_conn", LinkFrame::PushToConn(PushToConn { push_id: 9, conn_id: 258, payload: payload.clone() })),
        (
            "link/push_to_user",
            LinkFrame::PushToUser(PushToUser {
                push_id: 0,
                user_id: "alice".into(),
                device_ids: vec![],
                payload: payload.clone(),
                all_nodes: false,
            }),
        ),
        (
            "link/push_to_room",
            LinkFrame::PushToRoom(PushToRoom {
                push_id: 0,
                room: "room:42".into(),
                exclude_conn_id: Some(258),
                payload: payload.clone(),
                all_nodes: false,
            }),
        ),
        ("link/broadcast", LinkFrame::Broadcast(Broadcast { push_id: 0, payload, all_nodes: false })),
        ("link/join_room", LinkFrame::JoinRoom(RoomMembership { conn_id: 258, room: "room:42".into() })),
        ("link/leave_room", LinkFrame::LeaveRoom(RoomMembership { conn_id: 258, room: "room:42".into() })),
        (
            "link/kick",
            LinkFrame::Kick(LinkKick {
                target: KickTarget::User { user_id: "alice".into(), device_id: None },
                reason: ReasonCode::KICKED,
                message: String::new(),
            }),
        ),
        (
            "link/push_result",
            LinkFrame::PushResult(PushResult { push_id: 9, delivered: 0, code: ReasonCode::NOT_DELIVERED }),
        ),
        (
            "link/conn_opened",
            LinkFrame::ConnOpened(ConnOpened {
                conn_id: 258,
                user_id: "alice".into(),
                device_id: "phone".into(),
                platform: Platform::Ios,
                since_ms: 1_700_000_000_000,
            }),
        ),
        (
            "link/conn_closed",
            LinkFrame::ConnClosed(ConnClosed {
                conn_id: 258,
                user_id: "alice".into(),
                device_id: "phone".into(),
                reason: ReasonCode::IDLE_TIMEOUT,
            }),
        ),
    ]
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}
