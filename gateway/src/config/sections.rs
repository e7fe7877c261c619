//! Conversion of each section from its raw form into typed settings, recording every bad
//! value with its key path.

use std::time::Duration;

use toml::Value;

use super::raw::*;
use super::value::{Extract, boolean, duration_in, int_in, non_empty_string, socket_addr, string};
use super::*;

pub(super) fn device_policy(v: &Value) -> Result<DevicePolicy, String> {
    use DevicePolicy as P;
    match string(v)?.as_str() {
        "many" => Ok(P::Many),
        "one_per_platform" => Ok(P::OnePerPlatform),
        "one_per_user" => Ok(P::OnePerUser),
        other => Err(format!("{other:?} is not one of \"many\", \"one_per_platform\", \"one_per_user\"")),
    }
}

pub(super) fn log_format(v: &Value) -> Result<LogFormat, String> {
    match string(v)?.as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("{other:?} is not one of \"text\", \"json\"")),
    }
}

/// `"90%"` (of the cgroup's or host's memory), `"512MiB"`, `"8GiB"` (KiB, MiB, GiB, TiB), or `"off"`.
pub(super) fn memory_limit(v: &Value) -> Result<MemoryLimit, String> {
    let s = string(v)?;
    let bad = || format!("{s:?} is not a share like \"90%\", a size like \"8GiB\" or \"512MiB\", or \"off\"");
    if s == "off" {
        return Ok(MemoryLimit::Off);
    }
    if let Some(percent) = s.strip_suffix('%') {
        return match percent.parse::<u8>() {
            Ok(p @ 1..=100) => Ok(MemoryLimit::Share(p)),
            _ => Err(bad()),
        };
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = s.split_at(split);
    let shift = match unit {
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        _ => return Err(bad()),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    match n.checked_mul(1 << shift) {
        Some(bytes) if bytes >= 16 << 20 => Ok(MemoryLimit::Bytes(bytes)),
        Some(_) => Err(format!("{s:?} is below 16MiB, less than an idle node uses")),
        None => Err(bad()),
    }
}

pub(super) fn io_driver(v: &Value) -> Result<IoDriver, String> {
    match string(v)?.as_str() {
        "auto" => Ok(IoDriver::Auto),
        "io_uring" => Ok(IoDriver::IoUring),
        "epoll" => Ok(IoDriver::Epoll),
        other => Err(format!("{other:?} is not one of \"auto\", \"io_uring\", \"epoll\"")),
    }
}

pub(super) fn auth_mode(raw: RawAuth, x: &mut Extract) -> AuthMode {
    use crate::auth::token::{self, JwksSource, TokenRules};
    let mode = x.get("auth.mode", raw.mode, "token".to_owned(), string);
    let max_clock_skew = x.get(
        "auth.max_clock_skew",
        raw.max_clock_skew,
        Duration::from_secs(30),
        duration_in(Duration::ZERO, Duration::from_secs(3600)),
    );
    let max_lifetime = x.get(
        "auth.max_token_lifetime",
        raw.max_token_lifetime,
        Duration::from_secs(30 * 86_400),
        duration_in(Duration::from_secs(60), Duration::from_secs(366 * 86_400)),
    );
    let mut secrets = BTreeMap::new();
    let mut keys = token::KeySet::new();
    for (kid, value) in raw.keys {
        let path = format!("auth.keys.{kid}");
        match value.as_str() {
            Some(secret) if secret.len() >= 16 => {
                keys.insert(kid.clone(), token::hmac_key(secret.as_bytes()));
                secrets.insert(kid, secret.as_bytes().to_vec());
            }
            Some(_) => x.invalid(&path, "secret must be at least 16 bytes"),
            None => x.invalid(&path, format!("expected a string, found {}", value.type_str())),
        }
    }
    let mut public = BTreeMap::new();
    for (kid, value) in raw.public_keys {
        let path = format!("auth.public_keys.{kid}");
        if keys.contains_key(&kid) {
            x.invalid(&path, format!("key id {kid:?} is also in auth.keys"));
            continue;
        }
        let parsed = public_key_entry(&value).and_then(|(alg, file)| {
            let pem = std::fs::read(&file).map_err(|e| format!("cannot read {file}: {e}"))?;
            let key = token::public_key(alg, &pem).map_err(|e| format!("{file}: {e}"))?;
            Ok((alg, pem, key))
        });
        match parsed {
            Ok((alg, pem, key)) => {
                keys.insert(kid.clone(), key);
                public.insert(kid, (alg, pem));
            }
            Err(message) => x.invalid(&path, message),
        }
    }
    let jwks = raw.jwks_url.and_then(|v| {
        x.get("auth.jwks_url", Some(v), None, |v| {
            let url = string(v)?;
            // Whoever can change the keys signs tokens for any user: https, or http only to
            // this host (a sidecar).
            let uri: Option<hyper::Uri> = url.parse().ok();
            let host = uri.as_ref().and_then(|u| u.host()).map(|h| h.trim_matches(['[', ']']));
            let loopback = host.is_some_and(|h| {
                h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            });
            let scheme = uri.as_ref().and_then(|u| u.scheme_str());
            if scheme == Some("https") && host.is_some() || scheme == Some("http") && loopback {
                Ok(Some(url))
            } else {
                Err(format!("{url:?} must be an https:// URL (http:// only to 127.x, localhost or [::1])"))
            }
        })
    });
    let refresh = x.get(
        "auth.jwks_refresh",
        raw.jwks_refresh,
        Duration::from_secs(300),
        duration_in(Duration::from_secs(1), Duration::from_secs(86_400)),
    );
    let issuer = raw.issuer.and_then(|v| x.get("auth.issuer", Some(v), None, |v| non_empty_string(v).map(Some)));
    let audience = raw.audience.and_then(|v| x.get("auth.audience", Some(v), None, |v| non_empty_string(v).map(Some)));
    match mode.as_str() {
        "token" => {
            if keys.is_empty() && jwks.is_none() && !x.has_errors_under("auth.") {
                x.invalid(
                    "auth.keys",
                    "auth.mode = \"token\" needs a key: auth.keys.<kid> = \"secret\", auth.public_keys.<kid>, or \
                     auth.jwks_url",
                );
            }
            AuthMode::Token(Box::new(TokenRules {
                secrets,
                public,
                jwks: jwks.map(|url| JwksSource { url, refresh }),
                max_clock_skew,
                max_lifetime,
                issuer,
                audience,
                keys: std::sync::Arc::new(keys),
            }))
        }
        "none" => AuthMode::None,
        other => {
            x.invalid("auth.mode", format!("{other:?} is not one of \"token\", \"none\""));
            AuthMode::None
        }
    }
}

/// `{ alg = "RS256" | "ES256", file = "path.pem" }`.
fn public_key_entry(v: &Value) -> Result<(jsonwebtoken::Algorithm, String), String> {
    let table = v.as_table().ok_or("expected { alg = \"RS256\" or \"ES256\", file = \"key.pem\" }")?;
    let alg = match table.get("alg").and_then(Value::as_str) {
        Some("RS256") => jsonwebtoken::Algorithm::RS256,
        Some("ES256") => jsonwebtoken::Algorithm::ES256,
        other => return Err(format!("alg must be \"RS256\" or \"ES256\", found {other:?}")),
    };
    let file = table.get("file").and_then(Value::as_str).ok_or("file = \"key.pem\" is missing")?;
    Ok((alg, file.to_owned()))
}

pub(super) fn backend(raw: RawBackend, x: &mut Extract) -> BackendConfig {
    let secs = |s| Duration::from_secs(s);
    let discovery = match (raw.addresses, raw.address) {
        (Some(list), None) => {
            // Every bad entry is reported, each with its index; "list one" only for a list
            // that is empty as written.
            let mut addresses = Vec::new();
            match list.as_array() {
                None => x.invalid(
                    "backend.addresses",
                    format!("expected an array of \"ip:port\", found {}", list.type_str()),
                ),
                Some(entries) if entries.is_empty() => {
                    x.invalid("backend.addresses", "list at least one backend address")
                }
                Some(entries) => {
                    for (i, entry) in entries.iter().enumerate() {
                        match socket_addr(entry) {
                            Ok(addr) => addresses.push(addr),
                            Err(e) => x.invalid(&format!("backend.addresses[{i}]"), e),
                        }
                    }
                }
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

pub(super) fn drain(raw: RawDrain, x: &mut Extract) -> DrainConfig {
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

/// `url` with any password replaced (error messages end up in logs and terminals).
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// A URL the Redis client takes: `redis://`, `rediss://` (TLS) or `unix://` / `redis+unix://`.
fn redis_url(url: &str) -> Result<String, String> {
    redis::Client::open(url)
        .map(|_| url.to_owned())
        .map_err(|e| format!("{:?} is not a Redis URL like \"redis://host:6379\" ({e})", redacted(url)))
}

pub(super) fn redis(raw: RawRedis, x: &mut Extract) -> RedisTarget {
    let cluster = x.get("redis.cluster", raw.cluster, Vec::new(), |v| {
        let list = v.as_array().ok_or_else(|| format!("expected an array of redis:// URLs, found {}", v.type_str()))?;
        let urls: Vec<String> = list.iter().map(string).collect::<Result<_, _>>()?;
        let bad: Vec<String> = urls.iter().filter_map(|u| redis_url(u).err()).collect();
        if bad.is_empty() { Ok(urls) } else { Err(bad.join("; ")) }
    });
    let url = x.get("redis.url", raw.url, String::new(), |v| redis_url(&non_empty_string(v)?));
    if url.is_empty() == cluster.is_empty() {
        x.invalid("redis", "give either url = \"redis://host:port\" or cluster = [...], exactly one");
    }
    RedisTarget {
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

pub(super) fn tls(raw: RawTls, x: &mut Extract) -> TlsSettings {
    let path = |x: &mut Extract, key: &str, v| std::path::PathBuf::from(x.get(key, v, String::new(), non_empty_string));
    if raw.cert.is_none() || raw.key.is_none() {
        x.invalid("tls", "needs both cert (the PEM chain) and key (the PEM private key)");
    }
    let cert = path(x, "tls.cert", raw.cert);
    let key = path(x, "tls.key", raw.key);
    // The files now, so a missing or swapped one is reported with everything else.
    if !cert.as_os_str().is_empty() && !key.as_os_str().is_empty() {
        let chain = super::pem::read_chain(&cert).map_err(|e| x.invalid("tls.cert", e)).ok();
        let private = super::pem::read_key(&key).map_err(|e| x.invalid("tls.key", e)).ok();
        if let (Some(chain), Some(private)) = (chain, private)
            && let Err(e) = super::pem::check_pair(&chain, &private, &cert, &key)
        {
            x.invalid("tls", e);
        }
    }
    TlsSettings {
        cert,
        key,
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

pub(super) fn quic(raw: RawQuic, x: &mut Extract) -> QuicSettings {
    let defaults = QuicSettings::default();
    QuicSettings {
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
        retry_above: x.get("quic.retry_above", raw.retry_above, defaults.retry_above as i64, int_in(0, 1 << 20))
            as usize,
        handshake_timeout: x.get(
            "quic.handshake_timeout",
            raw.handshake_timeout,
            defaults.handshake_timeout,
            duration_in(Duration::from_millis(100), Duration::from_secs(60)),
        ),
    }
}

/// A node id: letters, digits, '.', '_' and '-' (it is part of Redis keys and records).
pub(super) fn node_id(v: &Value) -> Result<String, String> {
    let id = non_empty_string(v)?;
    if id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        Ok(id)
    } else {
        Err(format!("{id:?}: use letters, digits, '.', '_' and '-' only"))
    }
}

/// A `[backend]` duration between 1 ms and `max`.
pub(super) fn backend_duration(
    x: &mut Extract,
    key: &str,
    v: Option<Value>,
    default: Duration,
    max: Duration,
) -> Duration {
    x.get(&format!("backend.{key}"), v, default, duration_in(Duration::from_millis(1), max))
}

/// `"name:port"` for DNS discovery.
pub(super) fn dns_name(v: &Value) -> Result<(String, u16), String> {
    let s = string(v)?;
    let (name, port) = s.rsplit_once(':').ok_or_else(|| format!("{s:?} is not name:port"))?;
    let port: u16 = port.parse().map_err(|_| format!("{s:?}: bad port"))?;
    if name.is_empty() || name.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!("{s:?}: give a DNS name here; fixed IPs go in backend.addresses"));
    }
    Ok((name.to_owned(), port))
}

pub(super) fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| {
            h.trim().chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')).collect::<String>()
        })
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ringgate".to_owned())
}

pub(super) fn ws(raw: RawWs, x: &mut Extract) -> WsRules {
    WsRules {
        path: x.get("ws.path", raw.path, "/ws".to_string(), |v| {
            let p = string(v)?;
            if p.starts_with('/') && !p.contains(['?', ' ']) {
                Ok(p)
            } else {
                Err("a path starting with / (no query, no spaces)".into())
            }
        }),
        allowed_origins: x.get("ws.allowed_origins", raw.allowed_origins, Vec::new(), |v| {
            let list = v.as_array().ok_or("a list of origins like [\"https://app.example\"]")?;
            list.iter()
                .map(|o| match o.as_str() {
                    Some(o) if o.starts_with("http://") || o.starts_with("https://") => {
                        Ok(o.trim_end_matches('/').to_string())
                    }
                    _ => Err(format!("{o} is not an origin like \"https://app.example\"")),
                })
                .collect()
        }),
    }
}

pub(super) fn api(raw: RawApi, x: &mut Extract) -> ApiSettings {
    let keys = x.get("api.keys", raw.keys, Vec::new(), |v| {
        let list = v.as_array().ok_or("a list of keys like [\"k1-...\", \"k2-...\"]")?;
        list.iter()
            .map(|k| match k.as_str() {
                Some(k) if k.len() >= 16 && k.bytes().all(|b| b.is_ascii_graphic()) => Ok(k.to_owned()),
                _ => Err(format!("{k} is not a key of at least 16 printable characters")),
            })
            .collect()
    });
    let timeout = x.get(
        "api.timeout",
        raw.timeout,
        Duration::from_secs(1),
        duration_in(Duration::from_millis(10), Duration::from_secs(60)),
    );
    ApiSettings { keys, timeout }
}

pub(super) fn proxies(protocol: Option<Value>, trusted: Option<Value>, x: &mut Extract) -> ProxySettings {
    let trusted = x.get("listen.trusted_proxies", trusted, Vec::new(), |v| {
        let list = v.as_array().ok_or("a list of addresses or networks like [\"10.0.0.0/8\", \"192.0.2.7\"]")?;
        list.iter()
            .map(|n| {
                let s = n.as_str().unwrap_or_default();
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| format!("{n} is not an address or network like \"10.0.0.0/8\""))
            })
            .collect()
    });
    let mut settings = ProxySettings { trusted, ..ProxySettings::default() };
    let names = x.get("listen.proxy_protocol", protocol, Vec::new(), |v| {
        let list = v.as_array().ok_or("a list of listeners like [\"tcp\", \"tls\"]")?;
        list.iter()
            .map(|l| match l.as_str() {
                Some(name @ ("tcp" | "tls" | "ws" | "wss")) => Ok(name.to_owned()),
                _ => Err(format!("{l} is not one of \"tcp\", \"tls\", \"ws\", \"wss\"")),
            })
            .collect::<Result<Vec<_>, _>>()
    });
    for name in &names {
        match name.as_str() {
            "tcp" => settings.tcp = true,
            "tls" => settings.tls = true,
            "ws" => settings.ws = true,
            _ => settings.wss = true,
        }
    }
    if !names.is_empty() && settings.trusted.is_empty() {
        x.invalid(
            "listen.trusted_proxies",
            "listen.proxy_protocol takes headers only from listen.trusted_proxies: list your load balancers' \
             addresses (anyone else could claim any address)",
        );
    }
    settings
}

pub(super) fn admin(raw: RawAdmin, listen: Option<SocketAddr>, x: &mut Extract) -> AdminSettings {
    let key = raw.key.and_then(|v| {
        x.get("admin.key", Some(v), None, |v| match v.as_str() {
            Some(k) if k.len() >= 16 && k.bytes().all(|b| b.is_ascii_graphic()) => Ok(Some(k.to_owned())),
            _ => Err("expected a key of at least 16 printable characters".into()),
        })
    });
    let hosts = x.get("admin.hosts", raw.hosts, Vec::new(), |v| {
        let list = v.as_array().ok_or("a list of host names like [\"gw1.example.internal\"]")?;
        list.iter()
            .map(|h| match h.as_str() {
                Some(h) if !h.is_empty() && !h.contains([':', '/', ' ']) => Ok(h.to_ascii_lowercase()),
                _ => Err(format!("{h} is not a host name (no port, no scheme)")),
            })
            .collect()
    });
    if let Some(addr) = listen
        && !addr.ip().is_loopback()
        && key.is_none()
    {
        x.invalid(
            "admin.key",
            format!(
                "listen.admin = \"{addr}\" is reachable beyond this host: set admin.key (16+ characters), which \
                 POST /drain then needs, or listen on 127.0.0.1"
            ),
        );
    }
    AdminSettings { key, hosts }
}

pub(super) fn admission(raw: &mut RawLimits, x: &mut Extract) -> AdmissionLimits {
    let count = |x: &mut Extract, key: &str, value: Option<Value>, default: i64, min: i64| {
        x.get(&format!("limits.{key}"), value, default, int_in(min, 100_000_000)) as u32
    };
    let seconds = |x: &mut Extract, key: &str, value: Option<Value>, default: u64| {
        x.get(
            &format!("limits.{key}"),
            value,
            Duration::from_secs(default),
            duration_in(Duration::from_millis(100), Duration::from_secs(86_400)),
        )
    };
    AdmissionLimits {
        max_connections_per_address: count(
            x,
            "max_connections_per_address",
            raw.max_connections_per_address.take(),
            2000,
            1,
        ),
        max_unauthenticated_per_address: count(
            x,
            "max_unauthenticated_per_address",
            raw.max_unauthenticated_per_address.take(),
            200,
            1,
        ),
        new_connections_per_address: count(
            x,
            "new_connections_per_address",
            raw.new_connections_per_address.take(),
            100,
            1,
        ),
        new_connections_burst: count(x, "new_connections_burst", raw.new_connections_burst.take(), 400, 1),
        ipv6_prefix: x.get("limits.ipv6_prefix", raw.ipv6_prefix.take(), 64, int_in(16, 128)) as u8,
        flapping_failures: count(x, "flapping_failures", raw.flapping_failures.take(), 20, 0),
        flapping_window: seconds(x, "flapping_window", raw.flapping_window.take(), 60),
        flapping_ban: seconds(x, "flapping_ban", raw.flapping_ban.take(), 60),
        max_unauthenticated: count(x, "max_unauthenticated", raw.max_unauthenticated.take(), 20_000, 1),
        max_tls_handshakes: count(x, "max_tls_handshakes", raw.max_tls_handshakes.take(), 1024, 1),
    }
}
