//! The gateway's configuration: TOML in, validated types out.
//!
//! Parsing happens in two steps. Serde reads the file into raw sections whose leaves are
//! untyped TOML values, and `serde_ignored` lists every key the gateway does not know. Then
//! [`Config::from_raw`] turns each leaf into a typed value, recording every bad one with its
//! key path, so `ringgate check-config` reports all problems in one run. A `Config` that
//! exists holds only valid values.

mod error;
mod value;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ringgate_codec::session::ServerConfig;
use serde::Deserialize;
use toml::Value;

pub use error::{ConfigError, ConfigErrors};
pub use value::parse_duration;

pub use crate::control::dns::{DnsTarget, DnsTimers};
use value::{Extract, boolean, duration_in, int_in, non_empty_string, socket_addr, string};

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
    /// HMAC-SHA256 (JWT HS256) tokens checked against these keys, by key id.
    Token { keys: BTreeMap<String, Vec<u8>>, max_clock_skew: Duration },
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
    /// Per-connection protocol limits and timers.
    pub session: ServerConfig,
    /// Granularity of the per-worker timer wheel.
    pub timer_tick: Duration,
    pub auth: AuthMode,
    /// `None`: the embedded reference backend.
    pub backend: Option<BackendConfig>,
    /// How many sessions a user may hold at once (across every node with Redis).
    pub device_policy: crate::registry::DevicePolicy,
    /// `None`: the in-process registry (single node).
    pub redis: Option<crate::registry::redis::RedisTarget>,
    /// Address this node advertises in its lease (default: the listen address).
    pub advertise: String,
    /// The admin HTTP endpoint (metrics, health, drain); `None` = off.
    pub admin_listen: Option<SocketAddr>,
    /// tracing filter, like "info" or "ringgate=debug,info" (RINGGATE_LOG overrides).
    pub log_level: String,
    pub drain: DrainConfig,
    /// A TLS listener beside the plain one (`listen.tls`).
    pub listen_tls: Option<SocketAddr>,
    /// A QUIC (UDP) listener (`listen.quic`).
    pub listen_quic: Option<SocketAddr>,
    /// Certificate and key for TLS and QUIC; required when either listens.
    pub tls: Option<crate::transport::tls::TlsSettings>,
    pub quic: crate::transport::quic::QuicSettings,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Raw {
    node: RawNode,
    listen: RawListen,
    io: RawIo,
    limits: RawLimits,
    session: RawSession,
    auth: RawAuth,
    backend: Option<RawBackend>,
    redis: Option<RawRedis>,
    drain: RawDrain,
    log: RawLog,
    tls: Option<RawTls>,
    quic: RawQuic,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawTls {
    cert: Option<Value>,
    key: Option<Value>,
    versions: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawQuic {
    stateless_reset_key: Option<Value>,
    receive_window: Option<Value>,
    send_window: Option<Value>,
    max_handshakes: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawLog {
    level: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawDrain {
    delay: Option<Value>,
    rate: Option<Value>,
    deadline: Option<Value>,
    alternatives: Option<Value>,
    reconnect_after: Option<Value>,
    reconnect_jitter: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawRedis {
    url: Option<Value>,
    cluster: Option<Value>,
    prefix: Option<Value>,
    lease_ttl: Option<Value>,
    fail_open: Option<Value>,
    queue: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawBackend {
    addresses: Option<Value>,
    address: Option<Value>,
    nameserver: Option<Value>,
    min_ttl: Option<Value>,
    max_ttl: Option<Value>,
    hold_down: Option<Value>,
    dns_retry: Option<Value>,
    dns_timeout: Option<Value>,
    request_timeout: Option<Value>,
    ping_interval: Option<Value>,
    window: Option<Value>,
    link_buffer_bytes: Option<Value>,
    connect_timeout: Option<Value>,
    reconnect_min: Option<Value>,
    reconnect_max: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawNode {
    id: Option<Value>,
    advertise: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawListen {
    tcp: Option<Value>,
    admin: Option<Value>,
    tls: Option<Value>,
    quic: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawIo {
    driver: Option<Value>,
    workers: Option<Value>,
    pin_cpus: Option<Value>,
    read_buffer: Option<Value>,
    timer_tick: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawLimits {
    max_frame_len: Option<Value>,
    max_in_flight: Option<Value>,
    max_outbound_bytes: Option<Value>,
    max_connections: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawSession {
    device_policy: Option<Value>,
    auth_timeout: Option<Value>,
    heartbeat_interval: Option<Value>,
    idle_multiple: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawAuth {
    mode: Option<Value>,
    max_clock_skew: Option<Value>,
    keys: BTreeMap<String, Value>,
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

    fn from_raw(raw: Raw, x: &mut Extract) -> Config {
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
        if session.max_outbound < session.max_frame_len {
            x.invalid("limits.max_outbound_bytes", "must be at least limits.max_frame_len");
        }
        let listen_tcp = x.get("listen.tcp", raw.listen.tcp, SocketAddr::from(([0, 0, 0, 0], 7000)), socket_addr);
        let listen_tls = raw.listen.tls.and_then(|v| x.get("listen.tls", Some(v), None, |v| socket_addr(v).map(Some)));
        let listen_quic =
            raw.listen.quic.and_then(|v| x.get("listen.quic", Some(v), None, |v| socket_addr(v).map(Some)));
        let tls = raw.tls.map(|t| tls(t, x));
        if tls.is_none() && (listen_tls.is_some() || listen_quic.is_some()) {
            x.invalid("tls", "listen.tls and listen.quic need [tls] cert = \"chain.pem\" and key = \"key.pem\"");
        }
        if listen_quic.is_some() && workers > 256 {
            x.invalid(
                "io.workers",
                "at most 256 workers with QUIC (the worker index is one byte of the connection ID)",
            );
        }
        Config {
            listen_tls,
            listen_quic,
            tls,
            quic: quic(raw.quic, x),
            node_id: x.get("node.id", raw.node.id, default_node_id(), node_id),
            advertise: x.get("node.advertise", raw.node.advertise, listen_tcp.to_string(), non_empty_string),
            listen_tcp,
            admin_listen: raw
                .listen
                .admin
                .and_then(|v| x.get("listen.admin", Some(v), None, |v| socket_addr(v).map(Some))),
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
            session,
            auth: auth_mode(raw.auth, x),
            backend: raw.backend.map(|b| backend(b, x)),
            device_policy: x.get("session.device_policy", raw.session.device_policy, Default::default(), device_policy),
            redis: raw.redis.map(|r| redis(r, x)),
            drain: drain(raw.drain, x),
            log_level: x.get("log.level", raw.log.level, "info".into(), |v| {
                let level = string(v)?;
                tracing_subscriber::EnvFilter::try_new(&level).map(|_| level.clone()).map_err(|e| e.to_string())
            }),
        }
    }
}

fn device_policy(v: &Value) -> Result<crate::registry::DevicePolicy, String> {
    use crate::registry::DevicePolicy as P;
    match string(v)?.as_str() {
        "many" => Ok(P::Many),
        "one_per_platform" => Ok(P::OnePerPlatform),
        "one_per_user" => Ok(P::OnePerUser),
        other => Err(format!("{other:?} is not one of \"many\", \"one_per_platform\", \"one_per_user\"")),
    }
}

fn io_driver(v: &Value) -> Result<IoDriver, String> {
    match string(v)?.as_str() {
        "auto" => Ok(IoDriver::Auto),
        "io_uring" => Ok(IoDriver::IoUring),
        "epoll" => Ok(IoDriver::Epoll),
        other => Err(format!("{other:?} is not one of \"auto\", \"io_uring\", \"epoll\"")),
    }
}

fn auth_mode(raw: RawAuth, x: &mut Extract) -> AuthMode {
    let mode = x.get("auth.mode", raw.mode, "token".to_owned(), string);
    let max_clock_skew = x.get(
        "auth.max_clock_skew",
        raw.max_clock_skew,
        Duration::from_secs(30),
        duration_in(Duration::ZERO, Duration::from_secs(3600)),
    );
    let mut keys = BTreeMap::new();
    let any_configured = !raw.keys.is_empty();
    for (kid, value) in raw.keys {
        let path = format!("auth.keys.{kid}");
        match value.as_str() {
            Some(secret) if secret.len() >= 16 => {
                keys.insert(kid, secret.as_bytes().to_vec());
            }
            Some(_) => x.invalid(&path, "secret must be at least 16 bytes"),
            None => x.invalid(&path, format!("expected a string, found {}", value.type_str())),
        }
    }
    match mode.as_str() {
        "token" => {
            if !any_configured {
                x.invalid("auth.keys", "auth.mode = \"token\" needs at least one key (auth.keys.<kid> = \"secret\")");
            }
            AuthMode::Token { keys, max_clock_skew }
        }
        "none" => AuthMode::None,
        other => {
            x.invalid("auth.mode", format!("{other:?} is not one of \"token\", \"none\""));
            AuthMode::None
        }
    }
}

fn backend(raw: RawBackend, x: &mut Extract) -> BackendConfig {
    let secs = |s| Duration::from_secs(s);
    let discovery = match (raw.addresses, raw.address) {
        (Some(list), None) => {
            let addresses = x.get("backend.addresses", Some(list), Vec::new(), |v| {
                let list =
                    v.as_array().ok_or_else(|| format!("expected an array of \"ip:port\", found {}", v.type_str()))?;
                list.iter().map(socket_addr).collect()
            });
            if addresses.is_empty() {
                x.invalid("backend.addresses", "list at least one backend address");
            }
            Discovery::Static(addresses)
        }
        (None, Some(name)) => {
            let (name, port) = x.get("backend.address", Some(name), (String::new(), 0), dns_name);
            let timers = DnsTimers {
                min_ttl: backend_duration(x, "min_ttl", raw.min_ttl, secs(5), secs(3600)),
                max_ttl: backend_duration(x, "max_ttl", raw.max_ttl, secs(300), secs(86_400)),
                hold_down: backend_duration(x, "hold_down", raw.hold_down, secs(30), secs(86_400)),
                retry: backend_duration(x, "dns_retry", raw.dns_retry, secs(5), secs(3600)),
                timeout: backend_duration(x, "dns_timeout", raw.dns_timeout, secs(2), secs(60)),
            };
            if timers.min_ttl > timers.max_ttl {
                x.invalid("backend.min_ttl", "must not exceed backend.max_ttl");
            }
            let nameserver =
                raw.nameserver.and_then(|v| x.get("backend.nameserver", Some(v), None, |v| socket_addr(v).map(Some)));
            Discovery::Dns(DnsTarget { name, port, nameserver, timers })
        }
        (Some(_), Some(_)) => {
            x.invalid("backend.address", "give either address (a DNS name) or addresses (a list), not both");
            Discovery::Static(Vec::new())
        }
        (None, None) => {
            x.invalid(
                "backend",
                "needs address = \"name:port\" or addresses = [...]; remove [backend] for the embedded backend",
            );
            Discovery::Static(Vec::new())
        }
    };
    BackendConfig {
        discovery,
        window: x.get("backend.window", raw.window, 1024, int_in(1, 1 << 20)) as u32,
        link_buffer: x.get("backend.link_buffer_bytes", raw.link_buffer_bytes, 4 << 20, int_in(64 << 10, 1 << 30))
            as usize,
        connect_timeout: backend_duration(x, "connect_timeout", raw.connect_timeout, secs(2), secs(60)),
        reconnect_min: backend_duration(x, "reconnect_min", raw.reconnect_min, Duration::from_millis(100), secs(60)),
        reconnect_max: backend_duration(x, "reconnect_max", raw.reconnect_max, secs(5), secs(600)),
        request_timeout: backend_duration(x, "request_timeout", raw.request_timeout, secs(10), secs(600)),
        ping_interval: backend_duration(x, "ping_interval", raw.ping_interval, secs(5), secs(600)),
    }
}

fn drain(raw: RawDrain, x: &mut Extract) -> DrainConfig {
    let d = |x: &mut Extract, key: &str, v, default, max| {
        x.get(&format!("drain.{key}"), v, default, duration_in(Duration::ZERO, max))
    };
    DrainConfig {
        delay: d(x, "delay", raw.delay, Duration::from_secs(5), Duration::from_secs(600)),
        rate: x.get("drain.rate", raw.rate, 1000, int_in(1, 10_000_000)) as u32,
        deadline: d(x, "deadline", raw.deadline, Duration::from_secs(60), Duration::from_secs(86_400)),
        alternatives: x.get("drain.alternatives", raw.alternatives, Vec::new(), |v| {
            let list = v.as_array().ok_or_else(|| format!("expected an array of addresses, found {}", v.type_str()))?;
            list.iter().map(string).collect()
        }),
        reconnect_after: d(
            x,
            "reconnect_after",
            raw.reconnect_after,
            Duration::from_secs(1),
            Duration::from_secs(3600),
        ),
        reconnect_jitter: d(
            x,
            "reconnect_jitter",
            raw.reconnect_jitter,
            Duration::from_secs(10),
            Duration::from_secs(3600),
        ),
    }
}

fn redis(raw: RawRedis, x: &mut Extract) -> crate::registry::redis::RedisTarget {
    let cluster = x.get("redis.cluster", raw.cluster, Vec::new(), |v| {
        let list = v.as_array().ok_or_else(|| format!("expected an array of redis:// URLs, found {}", v.type_str()))?;
        list.iter().map(string).collect()
    });
    let url = x.get("redis.url", raw.url, String::new(), non_empty_string);
    if url.is_empty() == cluster.is_empty() {
        x.invalid("redis", "give either url = \"redis://host:port\" or cluster = [...], exactly one");
    }
    crate::registry::redis::RedisTarget {
        url,
        cluster,
        prefix: x.get("redis.prefix", raw.prefix, "rg".into(), non_empty_string),
        lease_ttl: x.get(
            "redis.lease_ttl",
            raw.lease_ttl,
            Duration::from_secs(15),
            duration_in(Duration::from_millis(300), Duration::from_secs(3600)),
        ),
        fail_open: x.get("redis.fail_open", raw.fail_open, true, boolean),
        queue: x.get("redis.queue", raw.queue, 100_000, int_in(1, 100_000_000)) as usize,
    }
}

fn tls(raw: RawTls, x: &mut Extract) -> crate::transport::tls::TlsSettings {
    use crate::transport::tls::{TlsSettings, TlsVersions};
    let path = |x: &mut Extract, key: &str, v| std::path::PathBuf::from(x.get(key, v, String::new(), non_empty_string));
    if raw.cert.is_none() || raw.key.is_none() {
        x.invalid("tls", "needs both cert (the PEM chain) and key (the PEM private key)");
    }
    TlsSettings {
        cert: path(x, "tls.cert", raw.cert),
        key: path(x, "tls.key", raw.key),
        versions: x.get("tls.versions", raw.versions, TlsVersions::Tls13, |v| {
            let list = v
                .as_array()
                .ok_or_else(|| format!("expected [\"1.3\"] or [\"1.2\", \"1.3\"], found {}", v.type_str()))?;
            let mut names: Vec<String> = list.iter().map(string).collect::<Result<_, _>>()?;
            names.sort();
            match names.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                ["1.3"] => Ok(TlsVersions::Tls13),
                ["1.2", "1.3"] => Ok(TlsVersions::Tls12And13),
                _ => Err(format!("{names:?}: supported are [\"1.3\"] and [\"1.2\", \"1.3\"]")),
            }
        }),
    }
}

fn quic(raw: RawQuic, x: &mut Extract) -> crate::transport::quic::QuicSettings {
    let defaults = crate::transport::quic::QuicSettings::default();
    crate::transport::quic::QuicSettings {
        reset_key: raw.stateless_reset_key.and_then(|v| {
            x.get("quic.stateless_reset_key", Some(v), None, |v| {
                let key = string(v)?;
                if key.len() < 32 {
                    return Err("must be at least 32 bytes, and the same on every node".into());
                }
                Ok(Some(key.into_bytes()))
            })
        }),
        receive_window: x.get(
            "quic.receive_window",
            raw.receive_window,
            i64::from(defaults.receive_window),
            int_in(4096, 1 << 30),
        ) as u32,
        send_window: x.get("quic.send_window", raw.send_window, i64::from(defaults.send_window), int_in(4096, 1 << 30))
            as u32,
        max_handshakes: x.get(
            "quic.max_handshakes",
            raw.max_handshakes,
            defaults.max_handshakes as i64,
            int_in(1, 1 << 20),
        ) as usize,
    }
}

/// A node id: letters, digits, '.', '_' and '-' (it is part of Redis keys and records).
fn node_id(v: &Value) -> Result<String, String> {
    let id = non_empty_string(v)?;
    if id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        Ok(id)
    } else {
        Err(format!("{id:?}: use letters, digits, '.', '_' and '-' only"))
    }
}

/// A `[backend]` duration between 1 ms and `max`.
fn backend_duration(x: &mut Extract, key: &str, v: Option<Value>, default: Duration, max: Duration) -> Duration {
    x.get(&format!("backend.{key}"), v, default, duration_in(Duration::from_millis(1), max))
}

/// `"name:port"` for DNS discovery.
fn dns_name(v: &Value) -> Result<(String, u16), String> {
    let s = string(v)?;
    let (name, port) = s.rsplit_once(':').ok_or_else(|| format!("{s:?} is not name:port"))?;
    let port: u16 = port.parse().map_err(|_| format!("{s:?}: bad port"))?;
    if name.is_empty() || name.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!("{s:?}: give a DNS name here; fixed IPs go in backend.addresses"));
    }
    Ok((name.to_owned(), port))
}

fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| {
            h.trim().chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')).collect::<String>()
        })
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ringgate".to_owned())
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
