//! The typed settings of the sections that other modules act on: where Redis and the
//! backends' DNS name are, the TLS pair, QUIC's knobs, the device policy. They live here so
//! that the configuration imports nothing above it; the modules that use them import them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `[ws]`: what WebSocket upgrade requests are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsRules {
    /// The upgrade path (default `/ws`); the query string is ignored.
    pub path: String,
    /// Browser origins allowed (exact `scheme://host[:port]`); empty allows any.
    pub allowed_origins: Vec<String>,
}

/// What one source address, and unauthenticated connections, may take of a node (see
/// `crate::admission`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionLimits {
    pub max_connections_per_address: u32,
    pub max_unauthenticated_per_address: u32,
    /// New connections per second per address (token bucket refill) and the bucket's size.
    pub new_connections_per_address: u32,
    pub new_connections_burst: u32,
    /// IPv6 addresses are counted per this prefix.
    pub ipv6_prefix: u8,
    /// This many failed logins within `flapping_window` ban the address for `flapping_ban`
    /// (doubling on each repeat, up to 64x); 0 turns the ban off.
    pub flapping_failures: u32,
    pub flapping_window: Duration,
    pub flapping_ban: Duration,
    /// Per worker: connections not yet authenticated, and TLS (and wss) connections not yet
    /// authenticated, which includes those still in their handshake.
    pub max_unauthenticated: u32,
    pub max_tls_handshakes: u32,
}

/// Load balancers in front of the node (`listen.trusted_proxies`), and which listeners take
/// a PROXY protocol header from them (`listen.proxy_protocol`). Connections from a trusted
/// proxy are counted by the address it forwards: the PROXY header's, or on ws/wss without
/// one, `X-Forwarded-For`'s.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProxySettings {
    pub trusted: Vec<ipnet::IpNet>,
    pub tcp: bool,
    pub tls: bool,
    pub ws: bool,
    pub wss: bool,
}

impl ProxySettings {
    /// `ip` is one of the trusted proxies (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|net| net.contains(&ip))
    }
}

/// `limits.max_memory`: the RSS above which the node takes no new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLimit {
    /// A share, in percent, of the cgroup's `memory.max` (or the host's RAM without one).
    Share(u8),
    Bytes(u64),
    Off,
}

/// `[api]`: who may call the server API, and how long a call waits for other nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSettings {
    /// Bearer keys accepted at once (several, for rotation).
    pub keys: Vec<String>,
    /// How long a call waits for the nodes it reached to answer (a request may ask less).
    pub timeout: Duration,
}

/// `[admin]`: who may use the admin endpoint (docs/deploy.md, "The admin endpoint").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdminSettings {
    /// Bearer key every POST needs (required when `listen.admin` is not a loopback address).
    pub key: Option<String>,
    /// Host names requests may carry besides IP literals and `localhost` (DNS rebinding).
    pub hosts: Vec<String>,
}

/// Where to find the backends by DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsTarget {
    pub name: String,
    pub port: u16,
    /// An explicit nameserver; `None` uses the system configuration (/etc/resolv.conf).
    pub nameserver: Option<SocketAddr>,
    pub timers: DnsTimers,
}

/// The router's DNS timers, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsTimers {
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    pub hold_down: Duration,
    pub retry: Duration,
    pub timeout: Duration,
}

/// Where Redis is and how the registry uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// `redis://host:port/db` or `redis+unix:///path`; ignored when `cluster` is set.
    pub url: String,
    /// Seed nodes of a Redis Cluster.
    pub cluster: Vec<String>,
    pub prefix: String,
    pub lease_ttl: Duration,
    /// Admit new clients while Redis is down (true), or refuse them with auth_unavailable.
    pub fail_open: bool,
    /// Most pending (merged) writes held while Redis is slow or down.
    pub queue: usize,
}

/// Which TLS versions the TCP listener accepts. QUIC is TLS 1.3 by definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersions {
    /// TLS 1.3 only (the default).
    Tls13,
    /// TLS 1.2 and 1.3, for old client stacks.
    Tls12And13,
}

/// `[tls]`: where the certificate chain and key live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub versions: TlsVersions,
}

/// `[quic]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicSettings {
    /// Secret all nodes share for stateless resets; `None` = random per process.
    pub reset_key: Option<Vec<u8>>,
    /// Per-stream and per-connection receive window, bytes.
    pub receive_window: u32,
    /// Most unacknowledged bytes in flight to one client.
    pub send_window: u32,
    /// Most handshakes run at once per worker; more wait in line (`worker::quic`).
    pub max_handshakes: usize,
    /// With this many handshakes running or waiting, a new client must first prove its
    /// address with a Retry round trip (so spoofed or abandoned Initials hold no slot).
    pub retry_above: usize,
    /// A handshake (and its stream's opening) must finish within this, or its slot is freed.
    pub handshake_timeout: std::time::Duration,
}

impl Default for QuicSettings {
    fn default() -> Self {
        QuicSettings {
            reset_key: None,
            receive_window: 128 * 1024,
            send_window: 256 * 1024,
            max_handshakes: 256,
            retry_above: 64,
            handshake_timeout: std::time::Duration::from_secs(3),
        }
    }
}

/// How many sessions a user may hold at once; a login that breaks the policy replaces the
/// older sessions (they get Kick `replaced`), on whichever node they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DevicePolicy {
    /// Any number of devices; only a re-login of the same device replaces its old session.
    #[default]
    Many,
    /// One session per platform (a phone and a desktop, not two phones).
    OnePerPlatform,
    /// One session per user.
    OnePerUser,
}

impl DevicePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DevicePolicy::Many => "many",
            DevicePolicy::OnePerPlatform => "one_per_platform",
            DevicePolicy::OnePerUser => "one_per_user",
        }
    }

    /// Whether a new session (device, platform) displaces an existing one.
    pub fn displaces(self, new: (&str, &str), old: (&str, &str)) -> bool {
        new.0 == old.0
            || match self {
                DevicePolicy::Many => false,
                DevicePolicy::OnePerPlatform => new.1 == old.1,
                DevicePolicy::OnePerUser => true,
            }
    }
}
