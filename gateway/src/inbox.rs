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
    /// Close every connection with `server_shutdown` and stop.
    Shutdown,
}

/// What a certificate reload hands each worker.
#[derive(Debug, Clone)]
pub struct NewCerts {
    pub tls: Arc<rustls::ServerConfig>,
    pub wss: Arc<rustls::ServerConfig>,
    pub quic: Option<quinn_proto::ServerConfig>,
}
