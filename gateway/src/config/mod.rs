//! The gateway's configuration: TOML in, validated types out.
//!
//! Parsing happens in two steps. Serde reads the file into raw sections whose leaves are
//! untyped TOML values, and `serde_ignored` lists every key the gateway does not know. Then
//! [`Config::from_raw`] turns each leaf into a typed value, recording every bad one with its
//! key path, so `ringgate check-config` reports all problems in one run. A `Config` that
//! exists holds only valid values.

mod error;
pub mod pem;
mod raw;
mod sections;
mod settings;
mod value;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ringgate_codec::session::ServerConfig;

pub use error::{ConfigError, ConfigErrors};
pub use value::parse_duration;

use raw::Raw;
use sections::*;
pub use settings::{
    AdminSettings, AdmissionLimits, ApiSettings, DevicePolicy, DnsTarget, DnsTimers, MemoryLimit, ProxySettings,
    QuicSettings, RedisTarget, TlsSettings, TlsVersions, WsRules,
};
use value::{Extract, boolean, duration_in, int_in, non_empty_string, socket_addr, string};

/// How log lines are written (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event (tracing's default format).
    #[default]
    Text,
    /// One JSON object per line (docs/deploy.md, "Logs").
    Json,
}

/// Which io driver the workers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoDriver {
    /// io_uring, falling back to epoll when io_uring cannot be set up.
    Auto,
    IoUring,
    Epoll,
}

/// How clients prove who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMode {
    /// Signed tokens (JWT: HS256 secrets, RS256/ES256 public keys, a JWKS), docs/auth.md.
    Token(Box<crate::auth::token::TokenRules>),
    /// Every Auth is accepted as the user and device it names. For local trials only.
    None,
}

/// How the backend addresses are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// A fixed list.
    Static(Vec<SocketAddr>),
    /// Every A/AAAA record of a DNS name (DNS round-robin), re-resolved on its TTL.
    Dns(DnsTarget),
}

/// How the node drains (SIGTERM or POST /drain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainConfig {
    /// /readyz fails this long before the node stops accepting, so balancers notice first.
    pub delay: Duration,
    /// GoAways sent per second, so the fleet is not hit by a reconnect storm.
    pub rate: u32,
    /// Connections still open this long after the drain started are closed.
    pub deadline: Duration,
    /// Addresses clients are told to reconnect to (may be empty: the usual address).
    pub alternatives: Vec<String>,
    pub reconnect_after: Duration,
    pub reconnect_jitter: Duration,
}

/// Where client Sends go when the embedded backend is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// Backend addresses (VIPs); every worker keeps a link to each.
    pub discovery: Discovery,
    /// Most unacknowledged Upstreams per link (the backend may lower it).
    pub window: u32,
    /// Most bytes queued for one link; beyond it Sends are answered backend_busy.
    pub link_buffer: usize,
    pub connect_timeout: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// A Send the backend has not answered within this is acked backend_timeout.
    pub request_timeout: Duration,
    /// Links are pinged this often; three intervals of silence drop the link.
    pub ping_interval: Duration,
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: String,
    pub listen_tcp: SocketAddr,
    pub io_driver: IoDriver,
    /// Worker threads; each owns a runtime and a listening socket.
    pub workers: usize,
    pub pin_cpus: bool,
    pub read_buffer: usize,
    pub max_connections: usize,
    /// Above this RSS the node refuses new connections (server_overloaded) and is not ready.
    pub max_memory: MemoryLimit,
    /// Per-connection protocol limits and timers.
    pub session: ServerConfig,
    /// A TLS, WebSocket or wss connection still in its handshake this long after accept is
    /// closed (QUIC has `quic.handshake_timeout`).
    pub handshake_timeout: Duration,
    /// Granularity of the per-worker timer wheel.
    pub timer_tick: Duration,
    pub auth: AuthMode,
    /// `None`: the embedded reference backend.
    pub backend: Option<BackendConfig>,
    /// How many sessions a user may hold at once (across every node with Redis).
    pub device_policy: DevicePolicy,
    /// `None`: the in-process registry (single node).
    pub redis: Option<RedisTarget>,
    /// Address this node advertises in its lease (default: the listen address).
    pub advertise: String,
    /// The admin HTTP endpoint (metrics, health, drain); `None` = off.
    pub admin_listen: Option<SocketAddr>,
    pub admin: AdminSettings,
    /// The server API (docs/api.md); `None` = off.
    pub api_listen: Option<SocketAddr>,
    pub api: ApiSettings,
    /// Per-address and unauthenticated limits (`[limits]`).
    pub admission: AdmissionLimits,
    /// tracing filter, like "info" or "ringgate=debug,info" (RINGGATE_LOG overrides).
    pub log_level: String,
    /// Needs a restart to change.
    pub log_format: LogFormat,
    pub drain: DrainConfig,
    /// A TLS listener beside the plain one (`listen.tls`).
    pub listen_tls: Option<SocketAddr>,
    /// WebSocket listeners (`listen.ws`, and `listen.wss` over TLS).
    pub listen_ws: Option<SocketAddr>,
    pub listen_wss: Option<SocketAddr>,
    /// `[ws]`: the upgrade path and the browser origins allowed.
    pub ws: WsRules,
    pub proxies: ProxySettings,
    /// A QUIC (UDP) listener (`listen.quic`).
    pub listen_quic: Option<SocketAddr>,
    /// Certificate and key for TLS and QUIC; required when either listens.
    pub tls: Option<TlsSettings>,
    pub quic: QuicSettings,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError::Read { file: path.display().to_string(), message: e.to_string() }])
        })?;
        Config::parse(&text)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
        let mut unknown = Vec::new();
        let de = toml::Deserializer::parse(text)
            .map_err(|e| ConfigErrors(vec![ConfigError::Syntax { message: e.to_string() }]))?;
        let raw: Raw = serde_ignored::deserialize(de, |path| unknown.push(path.to_string()))
            .map_err(|e| ConfigErrors(vec![ConfigError::Syntax { message: e.to_string() }]))?;
        let mut errors: Vec<ConfigError> = unknown.into_iter().map(|path| ConfigError::UnknownKey { path }).collect();
        let mut x = Extract::default();
        let config = Config::from_raw(raw, &mut x);
        errors.append(&mut x.errors);
        if errors.is_empty() { Ok(config) } else { Err(ConfigErrors(errors)) }
    }

    fn from_raw(mut raw: Raw, x: &mut Extract) -> Config {
        let admission_limits = admission(&mut raw.limits, x);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let workers = x.get("io.workers", raw.io.workers, 0, int_in(0, 1024)) as usize;
        let heartbeat = x.get(
            "session.heartbeat_interval",
            raw.session.heartbeat_interval,
            Duration::from_secs(30),
            duration_in(Duration::from_millis(100), Duration::from_secs(3600)),
        );
        let session = ServerConfig {
            auth_timeout: x.get(
                "session.auth_timeout",
                raw.session.auth_timeout,
                Duration::from_secs(10),
                duration_in(Duration::from_millis(100), Duration::from_secs(600)),
            ),
            heartbeat_interval: heartbeat,
            idle_multiple: x.get("session.idle_multiple", raw.session.idle_multiple, 3, int_in(1, 100)) as u32,
            max_frame_len: x.get("limits.max_frame_len", raw.limits.max_frame_len, 65_536, int_in(64, 16 << 20))
                as usize,
            max_in_flight: x.get("limits.max_in_flight", raw.limits.max_in_flight, 64, int_in(1, 65_536)) as u32,
            max_outbound: x.get(
                "limits.max_outbound_bytes",
                raw.limits.max_outbound_bytes,
                256 * 1024,
                int_in(1024, 1 << 30),
            ) as usize,
        };
        let max_frame_len = session.max_frame_len;
        // Unset, 3 s or the auth deadline if that is shorter; set, it must fit inside it.
        let explicit = raw.session.handshake_timeout.is_some();
        let handshake_timeout = x.get(
            "session.handshake_timeout",
            raw.session.handshake_timeout,
            Duration::from_secs(3).min(session.auth_timeout),
            duration_in(Duration::from_millis(100), Duration::from_secs(600)),
        );
        if explicit && handshake_timeout > session.auth_timeout {
            x.invalid("session.handshake_timeout", "must be at most session.auth_timeout (the login includes it)");
        }
        if session.max_outbound < session.max_frame_len {
            x.invalid("limits.max_outbound_bytes", "must be at least limits.max_frame_len");
        }
        let listen_tcp = x.get("listen.tcp", raw.listen.tcp, SocketAddr::from(([0, 0, 0, 0], 7000)), socket_addr);
        let listen_tls = raw.listen.tls.and_then(|v| x.get("listen.tls", Some(v), None, |v| socket_addr(v).map(Some)));
        let listen_quic =
            raw.listen.quic.and_then(|v| x.get("listen.quic", Some(v), None, |v| socket_addr(v).map(Some)));
        let listen_ws = raw.listen.ws.and_then(|v| x.get("listen.ws", Some(v), None, |v| socket_addr(v).map(Some)));
        let listen_wss = raw.listen.wss.and_then(|v| x.get("listen.wss", Some(v), None, |v| socket_addr(v).map(Some)));
        let tls = raw.tls.map(|t| tls(t, x));
        if tls.is_none() && (listen_tls.is_some() || listen_quic.is_some() || listen_wss.is_some()) {
            x.invalid(
                "tls",
                "listen.tls, listen.wss and listen.quic need [tls] cert = \"chain.pem\" and key = \"key.pem\"",
            );
        }
        if listen_quic.is_some() && workers > 256 {
            x.invalid(
                "io.workers",
                "at most 256 workers with QUIC (the worker index is one byte of the connection ID)",
            );
        }
        let api_listen = raw.listen.api.and_then(|v| x.get("listen.api", Some(v), None, |v| socket_addr(v).map(Some)));
        let admin_listen =
            raw.listen.admin.and_then(|v| x.get("listen.admin", Some(v), None, |v| socket_addr(v).map(Some)));
        let api_settings = api(raw.api, x);
        if api_listen.is_some() && api_settings.keys.is_empty() {
            x.invalid("api.keys", "listen.api needs at least one key: [api] keys = [\"...\"] (16+ characters)");
        }
        let proxies = proxies(raw.listen.proxy_protocol, raw.listen.trusted_proxies, x);
        listener_clashes(
            &[
                ("listen.tcp", Some(listen_tcp)),
                ("listen.tls", listen_tls),
                ("listen.ws", listen_ws),
                ("listen.wss", listen_wss),
                ("listen.admin", admin_listen),
                ("listen.api", api_listen),
            ],
            x,
        );
        Config {
            listen_ws,
            listen_wss,
            ws: ws(raw.ws.unwrap_or_default(), x),
            proxies,
            listen_tls,
            listen_quic,
            tls,
            quic: quic(raw.quic, x),
            node_id: x.get("node.id", raw.node.id, default_node_id(), node_id),
            advertise: x.get("node.advertise", raw.node.advertise, listen_tcp.to_string(), non_empty_string),
            listen_tcp,
            admin_listen,
            admin: admin(raw.admin, admin_listen, x),
            api_listen,
            api: api_settings,
            admission: admission_limits,
            io_driver: x.get("io.driver", raw.io.driver, IoDriver::Auto, io_driver),
            workers: if workers == 0 { cores } else { workers },
            pin_cpus: x.get("io.pin_cpus", raw.io.pin_cpus, false, boolean),
            read_buffer: x.get("io.read_buffer", raw.io.read_buffer, 65_536, int_in(4096, 16 << 20)) as usize,
            timer_tick: x.get(
                "io.timer_tick",
                raw.io.timer_tick,
                Duration::from_millis(500),
                duration_in(Duration::from_millis(10), Duration::from_secs(10)),
            ),
            max_connections: x.get(
                "limits.max_connections",
                raw.limits.max_connections,
                1_000_000,
                int_in(1, 100_000_000),
            ) as usize,
            max_memory: x.get("limits.max_memory", raw.limits.max_memory, MemoryLimit::Share(90), memory_limit),
            session,
            handshake_timeout,
            auth: auth_mode(raw.auth, x),
            backend: raw.backend.map(|b| {
                let b = backend(b, x);
                // One Send of the largest client frame must fit the link's buffer, or it could
                // only ever be answered backend_busy.
                let frame = ringgate_codec::limits::link_frame_len(max_frame_len);
                if b.link_buffer < frame {
                    x.invalid(
                        "backend.link_buffer_bytes",
                        format!(
                            "{} is less than one link frame of limits.max_frame_len ({}) and its envelope: at least {frame}",
                            b.link_buffer, max_frame_len
                        ),
                    );
                }
                b
            }),
            device_policy: x.get("session.device_policy", raw.session.device_policy, Default::default(), device_policy),
            redis: raw.redis.map(|r| redis(r, x)),
            drain: drain(raw.drain, x),
            log_level: x.get("log.level", raw.log.level, "info".into(), |v| {
                let level = string(v)?;
                tracing_subscriber::EnvFilter::try_new(&level).map(|_| level.clone()).map_err(|e| e.to_string())
            }),
            log_format: x.get("log.format", raw.log.format, LogFormat::Text, log_format),
        }
    }
}

/// TCP listeners that would bind the same port on overlapping addresses (equal, or either
/// the wildcard). QUIC is UDP and may share a port number with them.
fn listener_clashes(listeners: &[(&str, Option<SocketAddr>)], x: &mut Extract) {
    let set: Vec<(&str, SocketAddr)> = listeners.iter().filter_map(|(k, a)| Some((*k, (*a)?))).collect();
    for (i, (key_a, a)) in set.iter().enumerate() {
        for (key_b, b) in &set[i + 1..] {
            // 0.0.0.0 covers every IPv4 address; [::] (dual-stack) covers every address.
            let covers = |w: &SocketAddr, o: &SocketAddr| w.ip().is_unspecified() && (w.is_ipv6() || o.is_ipv4());
            let overlap = a.ip() == b.ip() || covers(a, b) || covers(b, a);
            if a.port() == b.port() && a.port() != 0 && overlap {
                x.invalid(key_b, format!("{b} clashes with {key_a} = \"{a}\": each listener needs its own port"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_a_key() {
        let errors = Config::parse("").unwrap_err();
        assert!(errors.mentions("auth.keys"), "{errors}");
        let config = Config::parse("[auth]\nmode = \"none\"\n").unwrap();
        assert_eq!(config.auth, AuthMode::None);
        assert_eq!(config.session.auth_timeout, Duration::from_secs(10));
    }

    #[test]
    fn a_link_buffer_smaller_than_one_largest_frame_is_refused() {
        let with = |extra: &str| {
            Config::parse(&format!(
                "[auth]\nmode = \"none\"\n[limits]\nmax_frame_len = 4194304\nmax_outbound_bytes = 8388608\n[backend]\naddresses = [\"127.0.0.1:9\"]\n{extra}"
            ))
        };
        let errors = with("").unwrap_err();
        assert!(errors.mentions("backend.link_buffer_bytes"), "{errors}");
        assert!(with("link_buffer_bytes = 8388608\n").is_ok());
    }

    #[test]
    fn memory_limit_forms() {
        let parse = |v: &str| Config::parse(&format!("[auth]\nmode = \"none\"\n[limits]\nmax_memory = \"{v}\"\n"));
        assert_eq!(Config::parse("[auth]\nmode = \"none\"\n").unwrap().max_memory, MemoryLimit::Share(90));
        assert_eq!(parse("75%").unwrap().max_memory, MemoryLimit::Share(75));
        assert_eq!(parse("8GiB").unwrap().max_memory, MemoryLimit::Bytes(8 << 30));
        assert_eq!(parse("512MiB").unwrap().max_memory, MemoryLimit::Bytes(512 << 20));
        assert_eq!(parse("off").unwrap().max_memory, MemoryLimit::Off);
        for bad in ["0%", "101%", "8GB", "8 GiB", "GiB", "1KiB", "99999999999TiB"] {
            let errors = parse(bad).unwrap_err();
            assert!(errors.mentions("limits.max_memory"), "{bad}: {errors}");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
            [io]
            driver = "kqueue"
            workers = -1
            colour = "blue"
            [listen]
            tcp = "nowhere"
            [session]
            heartbeat_interval = "30 seconds"
            [auth]
            mode = "token"
            keys = { k1 = "short" }
            [extra]
            x = 1
        "#;
        let errors = Config::parse(text).unwrap_err();
        for path in [
            "io.driver",
            "io.workers",
            "io.colour",
            "listen.tcp",
            "session.heartbeat_interval",
            "auth.keys.k1",
            "extra",
        ] {
            assert!(errors.mentions(path), "{path} missing from:\n{errors}");
        }
        assert_eq!(errors.0.len(), 7, "{errors}");
    }

    #[test]
    fn syntax_errors_are_reported() {
        assert!(matches!(&Config::parse("[io").unwrap_err().0[..], [ConfigError::Syntax { .. }]));
        assert!(matches!(&Config::parse("io = 3").unwrap_err().0[..], [ConfigError::Syntax { .. }]));
    }
}
