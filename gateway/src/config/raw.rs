//! The configuration file as serde reads it: sections whose leaves are untyped TOML values,
//! turned into typed values by [`super::Config::from_raw`] and [`super::sections`].

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Value;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Raw {
    pub(super) node: RawNode,
    pub(super) listen: RawListen,
    pub(super) io: RawIo,
    pub(super) limits: RawLimits,
    pub(super) session: RawSession,
    pub(super) auth: RawAuth,
    pub(super) backend: Option<RawBackend>,
    pub(super) redis: Option<RawRedis>,
    pub(super) drain: RawDrain,
    pub(super) log: RawLog,
    pub(super) tls: Option<RawTls>,
    pub(super) ws: Option<RawWs>,
    pub(super) quic: RawQuic,
    pub(super) api: RawApi,
    pub(super) admin: RawAdmin,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawAdmin {
    pub(super) key: Option<Value>,
    pub(super) hosts: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawApi {
    pub(super) keys: Option<Value>,
    pub(super) timeout: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawTls {
    pub(super) cert: Option<Value>,
    pub(super) key: Option<Value>,
    pub(super) versions: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawQuic {
    pub(super) stateless_reset_key: Option<Value>,
    pub(super) receive_window: Option<Value>,
    pub(super) send_window: Option<Value>,
    pub(super) max_handshakes: Option<Value>,
    pub(super) retry_above: Option<Value>,
    pub(super) handshake_timeout: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawLog {
    pub(super) level: Option<Value>,
    pub(super) format: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawDrain {
    pub(super) delay: Option<Value>,
    pub(super) rate: Option<Value>,
    pub(super) deadline: Option<Value>,
    pub(super) alternatives: Option<Value>,
    pub(super) reconnect_after: Option<Value>,
    pub(super) reconnect_jitter: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawRedis {
    pub(super) url: Option<Value>,
    pub(super) cluster: Option<Value>,
    pub(super) prefix: Option<Value>,
    pub(super) lease_ttl: Option<Value>,
    pub(super) fail_open: Option<Value>,
    pub(super) queue: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawBackend {
    pub(super) addresses: Option<Value>,
    pub(super) address: Option<Value>,
    pub(super) nameserver: Option<Value>,
    pub(super) min_ttl: Option<Value>,
    pub(super) max_ttl: Option<Value>,
    pub(super) hold_down: Option<Value>,
    pub(super) dns_retry: Option<Value>,
    pub(super) dns_timeout: Option<Value>,
    pub(super) request_timeout: Option<Value>,
    pub(super) ping_interval: Option<Value>,
    pub(super) window: Option<Value>,
    pub(super) link_buffer_bytes: Option<Value>,
    pub(super) connect_timeout: Option<Value>,
    pub(super) reconnect_min: Option<Value>,
    pub(super) reconnect_max: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawNode {
    pub(super) id: Option<Value>,
    pub(super) advertise: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawWs {
    pub(super) path: Option<Value>,
    pub(super) allowed_origins: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawListen {
    pub(super) tcp: Option<Value>,
    pub(super) admin: Option<Value>,
    pub(super) api: Option<Value>,
    pub(super) tls: Option<Value>,
    pub(super) quic: Option<Value>,
    pub(super) ws: Option<Value>,
    pub(super) wss: Option<Value>,
    pub(super) proxy_protocol: Option<Value>,
    pub(super) trusted_proxies: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawIo {
    pub(super) driver: Option<Value>,
    pub(super) workers: Option<Value>,
    pub(super) pin_cpus: Option<Value>,
    pub(super) read_buffer: Option<Value>,
    pub(super) timer_tick: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawLimits {
    pub(super) max_frame_len: Option<Value>,
    pub(super) max_in_flight: Option<Value>,
    pub(super) max_outbound_bytes: Option<Value>,
    pub(super) max_connections: Option<Value>,
    pub(super) max_memory: Option<Value>,
    pub(super) max_connections_per_address: Option<Value>,
    pub(super) max_unauthenticated_per_address: Option<Value>,
    pub(super) new_connections_per_address: Option<Value>,
    pub(super) new_connections_burst: Option<Value>,
    pub(super) ipv6_prefix: Option<Value>,
    pub(super) flapping_failures: Option<Value>,
    pub(super) flapping_window: Option<Value>,
    pub(super) flapping_ban: Option<Value>,
    pub(super) max_unauthenticated: Option<Value>,
    pub(super) max_tls_handshakes: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawSession {
    pub(super) device_policy: Option<Value>,
    pub(super) auth_timeout: Option<Value>,
    pub(super) handshake_timeout: Option<Value>,
    pub(super) heartbeat_interval: Option<Value>,
    pub(super) idle_multiple: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawAuth {
    pub(super) mode: Option<Value>,
    pub(super) max_clock_skew: Option<Value>,
    pub(super) max_token_lifetime: Option<Value>,
    pub(super) issuer: Option<Value>,
    pub(super) audience: Option<Value>,
    pub(super) jwks_url: Option<Value>,
    pub(super) jwks_refresh: Option<Value>,
    pub(super) keys: BTreeMap<String, Value>,
    pub(super) public_keys: BTreeMap<String, Value>,
}
