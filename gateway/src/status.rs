//! Small shared types at the bottom of the gateway: the transport label, and the state
//! snapshots that the control plane publishes and metrics, readiness and tests read. Nothing
//! here imports anything of the gateway.

use std::net::SocketAddr;

use ringgate_router::dns::DnsStats;

/// How a client connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp = 0,
    Tls = 1,
    Quic = 2,
    Ws = 3,
    Wss = 4,
}

impl Transport {
    pub const ALL: [Transport; 5] = [Transport::Tcp, Transport::Tls, Transport::Quic, Transport::Ws, Transport::Wss];

    /// TLS underneath (TLS and wss): the transports whose handshakes cost the most.
    pub fn is_tls(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }

    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Quic => "quic",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }
}

/// What discovery has seen, for tests and (later) metrics.
#[derive(Debug, Clone, Default)]
pub struct DiscoveryState {
    pub stats: DnsStats,
    pub current: Vec<SocketAddr>,
    /// When an answer last carried addresses.
    pub last_good: Option<std::time::Instant>,
    /// The latest lookup carried addresses (false after a failure or an empty answer).
    pub last_ok: bool,
}

/// What the registry task has seen, for tests, readiness and (later) metrics.
#[derive(Debug, Clone, Default)]
pub struct RegistryState {
    pub up: bool,
    pub records: usize,
    pub pending: usize,
    pub overflow: u64,
    pub batches: u64,
    pub failures: u64,
    pub reasserts: u64,
    /// Records of dead nodes this node removed (the sweep).
    pub swept: u64,
}
