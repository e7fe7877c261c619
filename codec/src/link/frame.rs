//! Gateway <-> backend link frames as validated Rust types, and their conversion from and to
//! the protobuf wire structs in [`crate::pb::link`].

use bytes::Bytes;

use crate::client::Platform;
use crate::error::DecodeError;
use crate::limits::{MAX_ID_LEN, MAX_ROUTE_KEY_LEN, check_len};
use crate::pb::link as pb;
use crate::reason::ReasonCode;

/// Op bytes of the link family (docs/protocol.md, table 3.2).
pub mod op {
    pub const PING: u8 = 0x01;
    pub const PONG: u8 = 0x02;
    pub const HELLO: u8 = 0x10;
    pub const HELLO_ACK: u8 = 0x11;
    pub const CLOSE: u8 = 0x12;
    pub const UPSTREAM: u8 = 0x20;
    pub const UPSTREAM_ACK: u8 = 0x21;
    pub const PUSH_TO_CONN: u8 = 0x30;
    pub const PUSH_TO_USER: u8 = 0x31;
    pub const PUSH_TO_ROOM: u8 = 0x32;
    pub const BROADCAST: u8 = 0x33;
    pub const JOIN_ROOM: u8 = 0x34;
    pub const LEAVE_ROOM: u8 = 0x35;
    pub const KICK: u8 = 0x36;
    pub const PUSH_RESULT: u8 = 0x37;
    pub const CONN_OPENED: u8 = 0x40;
    pub const CONN_CLOSED: u8 = 0x41;
}

/// The one link protocol version this codec speaks.
pub const LINK_VERSION: u32 = 1;

/// One frame of the link family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkFrame {
    Ping,
    Pong,
    Hello(Hello),
    HelloAck(HelloAck),
    Close(LinkClose),
    Upstream(Upstream),
    UpstreamAck(UpstreamAck),
    PushToConn(PushToConn),
    PushToUser(PushToUser),
    PushToRoom(PushToRoom),
    Broadcast(Broadcast),
    JoinRoom(RoomMembership),
    LeaveRoom(RoomMembership),
    Kick(LinkKick),
    PushResult(PushResult),
    ConnOpened(ConnOpened),
    ConnClosed(ConnClosed),
}

/// op 0x10: the gateway introduces itself; the first frame on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub node_id: String,
    pub node_epoch: u64,
    pub worker: u32,
    pub link_version: u32,
    /// Most Upstream frames the gateway will have unacknowledged on this link.
    pub window: u32,
    pub max_frame_len: u32,
}

/// op 0x11: the backend accepts the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloAck {
    pub backend_id: String,
    pub link_version: u32,
    /// Most unacknowledged Upstream frames the backend accepts; the gateway uses the smaller window.
    pub window: u32,
}

/// op 0x12: the sender closes the link after this frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkClose {
    pub reason: ReasonCode,
    pub message: String,
}

/// op 0x20: one client Send, forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Link-local id the backend echoes in its UpstreamAck.
    pub request_id: u64,
    pub conn_id: u64,
    pub user_id: String,
    pub device_id: String,
    pub platform: Platform,
    pub route_key: Option<Bytes>,
    pub seq: u64,
    pub payload: Bytes,
}

/// op 0x21: the backend's answer to one Upstream; becomes the client's Ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAck {
    pub request_id: u64,
    pub code: ReasonCode,
    /// Delivered to the sending connection as a Push before its Ack.
    pub reply: Option<Bytes>,
}

/// op 0x30.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushToConn {
    /// Non-zero asks for a PushResult.
    pub push_id: u64,
    pub conn_id: u64,
    pub payload: Bytes,
}

/// op 0x31: to the user's connections on this node (all devices, or those listed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushToUser {
    pub push_id: u64,
    pub user_id: String,
    pub device_ids: Vec<String>,
    pub payload: Bytes,
    /// Also forwarded to the user's other nodes (with `[redis]`); otherwise this node only.
    pub all_nodes: bool,
}

/// op 0x32: to the room's members on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushToRoom {
    pub push_id: u64,
    pub room: String,
    pub exclude_conn_id: Option<u64>,
    pub payload: Bytes,
    /// Also every other node with members (with `[redis]`); otherwise this node only.
    pub all_nodes: bool,
}

/// op 0x33: to every authenticated connection on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broadcast {
    pub push_id: u64,
    pub payload: Bytes,
    /// Every live node (with `[redis]`); otherwise this node only.
    pub all_nodes: bool,
}

/// ops 0x34 JoinRoom and 0x35 LeaveRoom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomMembership {
    pub conn_id: u64,
    pub room: String,
}

/// Whom a Kick closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KickTarget {
    Conn(u64),
    /// All of the user's connections on this node, or only those of one device.
    User {
        user_id: String,
        device_id: Option<String>,
    },
}

/// op 0x36.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkKick {
    pub target: KickTarget,
    pub reason: ReasonCode,
    pub message: String,
}

/// op 0x37: how many connections a push reached; code `not_delivered` when none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushResult {
    pub push_id: u64,
    pub delivered: u32,
    pub code: ReasonCode,
}

/// op 0x40.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnOpened {
    pub conn_id: u64,
    pub user_id: String,
    pub device_id: String,
    pub platform: Platform,
    pub since_ms: u64,
}

/// op 0x41.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnClosed {
    pub conn_id: u64,
    pub user_id: String,
    pub device_id: String,
    pub reason: ReasonCode,
}

fn invalid(op: &'static str, field: &'static str, reason: &'static str) -> DecodeError {
    DecodeError::InvalidField { op, field, reason }
}

fn required_id(op: &'static str, field: &'static str, value: &str) -> Result<(), DecodeError> {
    if value.is_empty() {
        return Err(invalid(op, field, "must not be empty"));
    }
    check_len(op, field, value, MAX_ID_LEN)
}

fn required_conn(op: &'static str, conn_id: u64) -> Result<(), DecodeError> {
    if conn_id == 0 { Err(invalid(op, "conn_id", "must not be zero")) } else { Ok(()) }
}

fn non_empty(b: Bytes) -> Option<Bytes> {
    (!b.is_empty()).then_some(b)
}

impl TryFrom<pb::Hello> for Hello {
    type Error = DecodeError;
    fn try_from(w: pb::Hello) -> Result<Self, DecodeError> {
        required_id("hello", "node_id", &w.node_id)?;
        if w.window == 0 {
            return Err(invalid("hello", "window", "must be positive"));
        }
        Ok(Hello {
            node_id: w.node_id,
            node_epoch: w.node_epoch,
            worker: w.worker,
            link_version: w.link_version,
            window: w.window,
            max_frame_len: w.max_frame_len,
        })
    }
}

impl From<&Hello> for pb::Hello {
    fn from(d: &Hello) -> Self {
        pb::Hello {
            node_id: d.node_id.clone(),
            node_epoch: d.node_epoch,
            worker: d.worker,
            link_version: d.link_version,
            window: d.window,
            max_frame_len: d.max_frame_len,
        }
    }
}

impl TryFrom<pb::HelloAck> for HelloAck {
    type Error = DecodeError;
    fn try_from(w: pb::HelloAck) -> Result<Self, DecodeError> {
        check_len("hello_ack", "backend_id", &w.backend_id, MAX_ID_LEN)?;
        if w.window == 0 {
            return Err(invalid("hello_ack", "window", "must be positive"));
        }
        Ok(HelloAck { backend_id: w.backend_id, link_version: w.link_version, window: w.window })
    }
}

impl From<&HelloAck> for pb::HelloAck {
    fn from(d: &HelloAck) -> Self {
        pb::HelloAck { backend_id: d.backend_id.clone(), link_version: d.link_version, window: d.window }
    }
}

impl From<pb::LinkClose> for LinkClose {
    fn from(w: pb::LinkClose) -> Self {
        LinkClose { reason: ReasonCode(w.reason), message: w.message }
    }
}

impl From<&LinkClose> for pb::LinkClose {
    fn from(d: &LinkClose) -> Self {
        pb::LinkClose { reason: d.reason.0, message: d.message.clone() }
    }
}

impl TryFrom<pb::Upstream> for Upstream {
    type Error = DecodeError;
    fn try_from(w: pb::Upstream) -> Result<Self, DecodeError> {
        check_len("upstream", "user_id", &w.user_id, MAX_ID_LEN)?;
        check_len("upstream", "device_id", &w.device_id, MAX_ID_LEN)?;
        check_len("upstream", "route_key", &w.route_key, MAX_ROUTE_KEY_LEN)?;
        Ok(Upstream {
            request_id: w.request_id,
            conn_id: w.conn_id,
            user_id: w.user_id,
            device_id: w.device_id,
            platform: Platform::from_wire(i64::from(w.platform)),
            route_key: non_empty(w.route_key),
            seq: w.seq,
            payload: w.payload,
        })
    }
}

impl From<&Upstream> for pb::Upstream {
    fn from(d: &Upstream) -> Self {
        pb::Upstream {
            request_id: d.request_id,
            conn_id: d.conn_id,
            user_id: d.user_id.clone(),
            device_id: d.device_id.clone(),
            platform: d.platform.to_wire() as u32,
            route_key: d.route_key.clone().unwrap_or_default(),
            seq: d.seq,
            payload: d.payload.clone(),
        }
    }
}

impl From<pb::UpstreamAck> for UpstreamAck {
    fn from(w: pb::UpstreamAck) -> Self {
        UpstreamAck { request_id: w.request_id, code: ReasonCode(w.code), reply: w.reply }
    }
}

impl From<&UpstreamAck> for pb::UpstreamAck {
    fn from(d: &UpstreamAck) -> Self {
        pb::UpstreamAck { request_id: d.request_id, code: d.code.0, reply: d.reply.clone() }
    }
}

impl TryFrom<pb::PushToConn> for PushToConn {
    type Error = DecodeError;
    fn try_from(w: pb::PushToConn) -> Result<Self, DecodeError> {
        required_conn("push_to_conn", w.conn_id)?;
        Ok(PushToConn { push_id: w.push_id, conn_id: w.conn_id, payload: w.payload })
    }
}

impl From<&PushToConn> for pb::PushToConn {
    fn from(d: &PushToConn) -> Self {
        pb::PushToConn { push_id: d.push_id, conn_id: d.conn_id, payload: d.payload.clone() }
    }
}

impl TryFrom<pb::PushToUser> for PushToUser {
    type Error = DecodeError;
    fn try_from(w: pb::PushToUser) -> Result<Self, DecodeError> {
        required_id("push_to_user", "user_id", &w.user_id)?;
        for device in &w.device_ids {
            required_id("push_to_user", "device_ids", device)?;
        }
        Ok(PushToUser {
            push_id: w.push_id,
            user_id: w.user_id,
            device_ids: w.device_ids,
            payload: w.payload,
            all_nodes: w.all_nodes,
        })
    }
}

impl From<&PushToUser> for pb::PushToUser {
    fn from(d: &PushToUser) -> Self {
        pb::PushToUser {
            push_id: d.push_id,
            user_id: d.user_id.clone(),
            device_ids: d.device_ids.clone(),
            payload: d.payload.clone(),
            all_nodes: d.all_nodes,
        }
    }
}

impl TryFrom<pb::PushToRoom> for PushToRoom {
    type Error = DecodeError;
    fn try_from(w: pb::PushToRoom) -> Result<Self, DecodeError> {
        required_id("push_to_room", "room", &w.room)?;
        Ok(PushToRoom {
            push_id: w.push_id,
            room: w.room,
            exclude_conn_id: (w.exclude_conn_id != 0).then_some(w.exclude_conn_id),
            payload: w.payload,
            all_nodes: w.all_nodes,
        })
    }
}

impl From<&PushToRoom> for pb::PushToRoom {
    fn from(d: &PushToRoom) -> Self {
        pb::PushToRoom {
            push_id: d.push_id,
            room: d.room.clone(),
            exclude_conn_id: d.exclude_conn_id.unwrap_or(0),
            payload: d.payload.clone(),
            all_nodes: d.all_nodes,
        }
    }
}

impl From<pb::Broadcast> for Broadcast {
    fn from(w: pb::Broadcast) -> Self {
        Broadcast { push_id: w.push_id, payload: w.payload, all_nodes: w.all_nodes }
    }
}

impl From<&Broadcast> for pb::Broadcast {
    fn from(d: &Broadcast) -> Self {
        pb::Broadcast { push_id: d.push_id, payload: d.payload.clone(), all_nodes: d.all_nodes }
    }
}

impl RoomMembership {
    pub(crate) fn from_wire(op: &'static str, w: pb::RoomMembership) -> Result<Self, DecodeError> {
        required_conn(op, w.conn_id)?;
        required_id(op, "room", &w.room)?;
        Ok(RoomMembership { conn_id: w.conn_id, room: w.room })
    }
}

impl From<&RoomMembership> for pb::RoomMembership {
    fn from(d: &RoomMembership) -> Self {
        pb::RoomMembership { conn_id: d.conn_id, room: d.room.clone() }
    }
}

impl TryFrom<pb::LinkKick> for LinkKick {
    type Error = DecodeError;
    fn try_from(w: pb::LinkKick) -> Result<Self, DecodeError> {
        let target = if w.conn_id != 0 {
            KickTarget::Conn(w.conn_id)
        } else {
            required_id("kick", "user_id", &w.user_id)?;
            check_len("kick", "device_id", &w.device_id, MAX_ID_LEN)?;
            let device_id = (!w.device_id.is_empty()).then_some(w.device_id);
            KickTarget::User { user_id: w.user_id, device_id }
        };
        Ok(LinkKick { target, reason: ReasonCode(w.reason), message: w.message })
    }
}

impl From<&LinkKick> for pb::LinkKick {
    fn from(d: &LinkKick) -> Self {
        let (conn_id, user_id, device_id) = match &d.target {
            KickTarget::Conn(id) => (*id, String::new(), String::new()),
            KickTarget::User { user_id, device_id } => (0, user_id.clone(), device_id.clone().unwrap_or_default()),
        };
        pb::LinkKick { conn_id, user_id, device_id, reason: d.reason.0, message: d.message.clone() }
    }
}

impl From<pb::PushResult> for PushResult {
    fn from(w: pb::PushResult) -> Self {
        PushResult { push_id: w.push_id, delivered: w.delivered, code: ReasonCode(w.code) }
    }
}

impl From<&PushResult> for pb::PushResult {
    fn from(d: &PushResult) -> Self {
        pb::PushResult { push_id: d.push_id, delivered: d.delivered, code: d.code.0 }
    }
}

impl TryFrom<pb::ConnOpened> for ConnOpened {
    type Error = DecodeError;
    fn try_from(w: pb::ConnOpened) -> Result<Self, DecodeError> {
        required_conn("conn_opened", w.conn_id)?;
        check_len("conn_opened", "user_id", &w.user_id, MAX_ID_LEN)?;
        check_len("conn_opened", "device_id", &w.device_id, MAX_ID_LEN)?;
        Ok(ConnOpened {
            conn_id: w.conn_id,
            user_id: w.user_id,
            device_id: w.device_id,
            platform: Platform::from_wire(i64::from(w.platform)),
            since_ms: w.since_ms,
        })
    }
}

impl From<&ConnOpened> for pb::ConnOpened {
    fn from(d: &ConnOpened) -> Self {
        pb::ConnOpened {
            conn_id: d.conn_id,
            user_id: d.user_id.clone(),
            device_id: d.device_id.clone(),
            platform: d.platform.to_wire() as u32,
            since_ms: d.since_ms,
        }
    }
}

impl TryFrom<pb::ConnClosed> for ConnClosed {
    type Error = DecodeError;
    fn try_from(w: pb::ConnClosed) -> Result<Self, DecodeError> {
        required_conn("conn_closed", w.conn_id)?;
        check_len("conn_closed", "user_id", &w.user_id, MAX_ID_LEN)?;
        check_len("conn_closed", "device_id", &w.device_id, MAX_ID_LEN)?;
        Ok(ConnClosed { conn_id: w.conn_id, user_id: w.user_id, device_id: w.device_id, reason: ReasonCode(w.reason) })
    }
}

impl From<&ConnClosed> for pb::ConnClosed {
    fn from(d: &ConnClosed) -> Self {
        pb::ConnClosed {
            conn_id: d.conn_id,
            user_id: d.user_id.clone(),
            device_id: d.device_id.clone(),
            reason: d.reason.0,
        }
    }
}
