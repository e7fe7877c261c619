//! Client <-> gateway frames as validated Rust types, and their conversion from and to the
//! protobuf wire structs in [`crate::pb::client`].

use std::time::Duration;

use bytes::Bytes;

use crate::error::DecodeError;
use crate::limits::{MAX_ID_LEN, MAX_TOKEN_LEN, check_len};
use crate::pb::client as pb;
use crate::reason::ReasonCode;

/// Op bytes of the client family (docs/protocol.md, table 2.2).
pub mod op {
    pub const PING: u8 = 0x01;
    pub const PONG: u8 = 0x02;
    pub const AUTH: u8 = 0x10;
    pub const AUTH_OK: u8 = 0x11;
    pub const AUTH_FAIL: u8 = 0x12;
    pub const SEND: u8 = 0x20;
    pub const ACK: u8 = 0x21;
    pub const PUSH: u8 = 0x22;
    pub const KICK: u8 = 0x30;
    pub const GO_AWAY: u8 = 0x31;
    pub const CLOSE: u8 = 0x32;
}

/// The one protocol version this codec speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// One frame of the client family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    Ping,
    Pong,
    Auth(Auth),
    AuthOk(AuthOk),
    AuthFail(AuthFail),
    Send(SendFrame),
    Ack(AckFrame),
    Push(PushFrame),
    Kick(Kick),
    GoAway(GoAway),
    Close(Close),
}

impl ClientFrame {
    /// The frame's name as used in docs, logs and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            ClientFrame::Ping => "ping",
            ClientFrame::Pong => "pong",
            ClientFrame::Auth(_) => "auth",
            ClientFrame::AuthOk(_) => "auth_ok",
            ClientFrame::AuthFail(_) => "auth_fail",
            ClientFrame::Send(_) => "send",
            ClientFrame::Ack(_) => "ack",
            ClientFrame::Push(_) => "push",
            ClientFrame::Kick(_) => "kick",
            ClientFrame::GoAway(_) => "go_away",
            ClientFrame::Close(_) => "close",
        }
    }
}

/// The client's platform, for the multi-device policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Platform {
    #[default]
    Unspecified,
    Ios,
    Android,
    Web,
    Desktop,
    /// Any other platform, including values this version does not know.
    Other,
}

impl Platform {
    /// From the wire value; unknown values become `Other`.
    pub fn from_wire(value: i64) -> Platform {
        match value {
            0 => Platform::Unspecified,
            1 => Platform::Ios,
            2 => Platform::Android,
            3 => Platform::Web,
            4 => Platform::Desktop,
            _ => Platform::Other,
        }
    }

    /// The wire value (protobuf enum `Platform`).
    pub fn to_wire(self) -> i32 {
        match self {
            Platform::Unspecified => 0,
            Platform::Ios => 1,
            Platform::Android => 2,
            Platform::Web => 3,
            Platform::Desktop => 4,
            Platform::Other => 5,
        }
    }

    /// Lower-case name, as used in tokens and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Unspecified => "unspecified",
            Platform::Ios => "ios",
            Platform::Android => "android",
            Platform::Web => "web",
            Platform::Desktop => "desktop",
            Platform::Other => "other",
        }
    }

    /// Parses the lower-case name.
    pub fn parse(name: &str) -> Option<Platform> {
        [Platform::Unspecified, Platform::Ios, Platform::Android, Platform::Web, Platform::Desktop, Platform::Other]
            .into_iter()
            .find(|p| p.as_str() == name)
    }
}

/// op 0x10: the first frame a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub protocol_version: u32,
    pub token: String,
    pub user_id: String,
    pub device_id: String,
    pub platform: Platform,
    pub resume_token: Option<Bytes>,
}

/// op 0x11: authentication succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthOk {
    pub connection_id: u64,
    pub node_id: String,
    pub heartbeat_interval: Duration,
    pub server_time_ms: u64,
    pub protocol_version: u32,
    pub max_frame_len: u32,
    pub max_in_flight: u32,
    pub resume_token: Option<Bytes>,
}

/// op 0x12: authentication failed; the gateway closes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFail {
    pub reason: ReasonCode,
    pub message: String,
    pub supported_versions: Vec<u32>,
}

/// op 0x20: an upstream message for the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFrame {
    pub seq: u64,
    pub route_key: Option<Bytes>,
    pub payload: Bytes,
}

/// op 0x21: the outcome of one Send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckFrame {
    pub seq: u64,
    pub code: ReasonCode,
}

/// op 0x22: a downstream message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushFrame {
    pub seq: u64,
    pub payload: Bytes,
}

/// op 0x30: the connection is closed by decision of the server or a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kick {
    pub reason: ReasonCode,
    pub message: String,
}

/// op 0x31: reconnect elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    pub reason: ReasonCode,
    pub alternatives: Vec<String>,
    pub reconnect_after: Duration,
    pub reconnect_jitter: Duration,
}

/// op 0x32: the last frame its sender writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub reason: ReasonCode,
    pub message: String,
}

fn non_empty(b: Bytes) -> Option<Bytes> {
    (!b.is_empty()).then_some(b)
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl TryFrom<pb::Auth> for Auth {
    type Error = DecodeError;
    fn try_from(w: pb::Auth) -> Result<Self, DecodeError> {
        check_len("auth", "token", &w.token, MAX_TOKEN_LEN)?;
        check_len("auth", "user_id", &w.user_id, MAX_ID_LEN)?;
        check_len("auth", "device_id", &w.device_id, MAX_ID_LEN)?;
        check_len("auth", "resume_token", &w.resume_token, MAX_TOKEN_LEN)?;
        Ok(Auth {
            protocol_version: w.protocol_version,
            token: w.token,
            user_id: w.user_id,
            device_id: w.device_id,
            platform: Platform::from_wire(i64::from(w.platform)),
            resume_token: non_empty(w.resume_token),
        })
    }
}

impl From<&Auth> for pb::Auth {
    fn from(d: &Auth) -> Self {
        pb::Auth {
            protocol_version: d.protocol_version,
            token: d.token.clone(),
            user_id: d.user_id.clone(),
            device_id: d.device_id.clone(),
            platform: d.platform.to_wire(),
            resume_token: d.resume_token.clone().unwrap_or_default(),
        }
    }
}

impl TryFrom<pb::AuthOk> for AuthOk {
    type Error = DecodeError;
    fn try_from(w: pb::AuthOk) -> Result<Self, DecodeError> {
        check_len("auth_ok", "node_id", &w.node_id, MAX_ID_LEN)?;
        check_len("auth_ok", "resume_token", &w.resume_token, MAX_TOKEN_LEN)?;
        if w.heartbeat_interval_ms == 0 {
            return Err(DecodeError::InvalidField {
                op: "auth_ok",
                field: "heartbeat_interval_ms",
                reason: "must be positive",
            });
        }
        Ok(AuthOk {
            connection_id: w.connection_id,
            node_id: w.node_id,
            heartbeat_interval: Duration::from_millis(u64::from(w.heartbeat_interval_ms)),
            server_time_ms: w.server_time_ms,
            protocol_version: w.protocol_version,
            max_frame_len: w.max_frame_len,
            max_in_flight: w.max_in_flight,
            resume_token: non_empty(w.resume_token),
        })
    }
}

impl From<&AuthOk> for pb::AuthOk {
    fn from(d: &AuthOk) -> Self {
        pb::AuthOk {
            connection_id: d.connection_id,
            node_id: d.node_id.clone(),
            heartbeat_interval_ms: millis(d.heartbeat_interval),
            server_time_ms: d.server_time_ms,
            protocol_version: d.protocol_version,
            max_frame_len: d.max_frame_len,
            max_in_flight: d.max_in_flight,
            resume_token: d.resume_token.clone().unwrap_or_default(),
        }
    }
}

impl From<pb::AuthFail> for AuthFail {
    fn from(w: pb::AuthFail) -> Self {
        AuthFail { reason: ReasonCode(w.reason), message: w.message, supported_versions: w.supported_versions }
    }
}

impl From<&AuthFail> for pb::AuthFail {
    fn from(d: &AuthFail) -> Self {
        pb::AuthFail {
            reason: d.reason.0,
            message: d.message.clone(),
            supported_versions: d.supported_versions.clone(),
        }
    }
}

impl From<pb::Kick> for Kick {
    fn from(w: pb::Kick) -> Self {
        Kick { reason: ReasonCode(w.reason), message: w.message }
    }
}

impl From<&Kick> for pb::Kick {
    fn from(d: &Kick) -> Self {
        pb::Kick { reason: d.reason.0, message: d.message.clone() }
    }
}

impl From<pb::GoAway> for GoAway {
    fn from(w: pb::GoAway) -> Self {
        GoAway {
            reason: ReasonCode(w.reason),
            alternatives: w.alternatives,
            reconnect_after: Duration::from_millis(u64::from(w.reconnect_after_ms)),
            reconnect_jitter: Duration::from_millis(u64::from(w.reconnect_jitter_ms)),
        }
    }
}

impl From<&GoAway> for pb::GoAway {
    fn from(d: &GoAway) -> Self {
        pb::GoAway {
            reason: d.reason.0,
            alternatives: d.alternatives.clone(),
            reconnect_after_ms: millis(d.reconnect_after),
            reconnect_jitter_ms: millis(d.reconnect_jitter),
        }
    }
}

impl From<pb::Close> for Close {
    fn from(w: pb::Close) -> Self {
        Close { reason: ReasonCode(w.reason), message: w.message }
    }
}

impl From<&Close> for pb::Close {
    fn from(d: &Close) -> Self {
        pb::Close { reason: d.reason.0, message: d.message.clone() }
    }
}
