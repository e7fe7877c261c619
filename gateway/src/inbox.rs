//! What workers receive: the messages of their inboxes, and how a connection id names the
//! worker that owns it. Below everything that sends to a worker (the control plane, the
//! registry, the embedded backend, other workers); imports only the configuration.

use std::net::SocketAddr;
use std::sync::Arc;

use ringgate_codec::link::LinkFrame;

use crate::config::Config;

/// Bits of a connection id below the worker index. A conn id is never 0.
pub(crate) const WORKER_SHIFT: u32 = 48;

/// The worker that owns connection `conn_id`.
pub(crate) fn owner_of(conn_id: u64) -> Option<usize> {
    usize::try_from(conn_id >> WORKER_SHIFT).ok()?.checked_sub(1)
}

/// Messages a worker receives on its inbox.
#[derive(Debug)]
pub enum WorkerMsg {
    /// A frame from backend link `link` (its address; `None` for the embedded backend), or
    /// one forwarded by the worker that read it.
    /// (Frames are boxed: inboxes keep their peak capacity, so every slot should be small.)
    FromBackend { link: Option<SocketAddr>, frame: Box<LinkFrame> },
    /// A new backend address set from discovery; links are reconciled to it.
    Backends(Arc<[SocketAddr]>),
    /// A node-wide frame another worker read from a link; deliver locally only, and send the
    /// delivered count to `reply` = (origin worker, token) when given.
    Fanout { frame: Box<LinkFrame>, reply: Option<(usize, u64)> },
    /// A user logged in (connection `except`): close the user's sessions here that the device
    /// policy says it replaces.
    Displace { user: Arc<str>, device: Arc<str>, platform: &'static str, except: u64 },
    /// A peer's delivered count for a node-wide push this worker is tallying.
    PushCount { token: u64, delivered: u32 },
    /// Draining: close the listener.
    StopAccepting,
    /// Draining: send GoAway to up to `quota` more connections of this worker.
    GoAway { quota: usize, frame: Arc<ringgate_codec::client::GoAway> },
    /// A reloaded config: limits, auth keys and policy apply to connections from now on.
    Reload(Arc<Config>),
    /// Reloaded certificates: TLS handshakes and QUIC connections from now on use them.
    Certs(Box<NewCerts>),
    /// Close every connection with this reason (a drain's deadline: `server_draining`).
    CloseAll(ringgate_codec::ReasonCode),
    /// A call of the server API (or of another node, through Redis) for this worker's own
    /// connections only; the worker sends one [`NodeAnswer`] to `reply`.
    Node { op: Arc<NodeOp>, reply: flume::Sender<NodeAnswer> },
    /// Close every connection with `server_shutdown` and stop.
    Shutdown,
}

/// What the node is asked to do for its own connections (see [`WorkerMsg::Node`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeOp {
    /// Push to the user's connections: every device, or those listed; every platform, or those.
    PushUser {
        user: String,
        devices: Vec<String>,
        platforms: Vec<String>,
        payload: bytes::Bytes,
    },
    PushConn {
        conn: u64,
        payload: bytes::Bytes,
    },
    PushRoom {
        room: String,
        exclude: Option<u64>,
        payload: bytes::Bytes,
    },
    Broadcast {
        payload: bytes::Bytes,
    },
    /// Close the user's sessions (one device's, or all) with `reason`.
    Kick {
        user: String,
        device: Option<String>,
        reason: ringgate_codec::ReasonCode,
        message: String,
    },
    /// Every connection of the user joins (or leaves) the room.
    Join {
        user: String,
        room: String,
    },
    Leave {
        user: String,
        room: String,
    },
    /// How many of this worker's connections are in the room.
    RoomSize {
        room: String,
    },
    /// The user's sessions here.
    Presence {
        user: String,
    },
}

/// A push a worker read from a backend link that other nodes must also deliver (it asked for
/// `all_nodes`): the control plane finds those nodes and sends `PushCount` with their
/// total to `reply` = (worker, tally token) when given.
#[derive(Debug)]
pub struct Forward {
    pub op: NodeOp,
    pub reply: Option<(usize, u64)>,
}

/// A worker's answer to a [`NodeOp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeAnswer {
    /// Connections pushed to, kicked, joined or left, or room members.
    Count(u32),
    Sessions(Vec<LocalSession>),
}

/// One session, as [`NodeOp::Presence`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSession {
    pub device: String,
    pub platform: String,
    pub conn: u64,
    pub since_ms: u64,
}

/// What a certificate reload hands each worker.
#[derive(Debug, Clone)]
pub struct NewCerts {
    pub tls: Arc<rustls::ServerConfig>,
    pub wss: Arc<rustls::ServerConfig>,
    pub quic: Option<quinn_proto::ServerConfig>,
}
