//! Runs a load spec in this process: connections spread over threads, each thread with its
//! own runtime and connector, results merged. [`crate::fleet`] spreads a bigger spec over
//! several such processes.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringgate_codec::session::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::conn::{self, Workload};
use crate::stats::RunStats;
use crate::transport::{Connector, TransportKind};

/// How connections prove who they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Identity {
    /// The gateway runs with auth.mode = "none".
    NoAuth,
    /// HS256 tokens signed with this key.
    Token { kid: String, secret: String },
}

/// A slice of load: connections `first .. first + count` of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadSpec {
    /// Connection i goes to `addrs[i % addrs.len()]` (several nodes of a cluster).
    pub addrs: Vec<SocketAddr>,
    pub transport: TransportKind,
    /// Verify the gateway's certificate against this CA (PEM); `None` accepts any.
    pub ca: Option<PathBuf>,
    pub first: usize,
    pub count: usize,
    pub threads: usize,
    /// Connections opened per second by this slice (0 = as fast as possible).
    pub rate: u64,
    /// Spread TCP connections over this many 127.x.y.z source addresses (0 = OS picks).
    pub sources: usize,
    pub identity: Identity,
    pub workload: Workload,
}

/// The source address of connection `i` when spreading over `sources` loopback addresses:
/// 127.1.0.1, 127.1.0.2, ... (every 127/8 address is loopback on Linux).
pub fn source_ip(i: usize, sources: usize) -> Option<std::net::IpAddr> {
    if sources == 0 {
        return None;
    }
    let n = (i % sources) as u32 + 1;
    Some(std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x7f01_0000 + n)))
}

/// Connection `i`'s client config: user `u{i}`, device `d`, its own jitter seed.
pub fn client_config(identity: &Identity, i: usize) -> ClientConfig {
    client_config_for(identity, format!("u{i}"), i as u64 + 1)
}

/// The client config of `user` (device `d`), with a token when `identity` signs them.
pub fn client_config_for(identity: &Identity, user: String, jitter_seed: u64) -> ClientConfig {
    let token = match identity {
        Identity::NoAuth => String::new(),
        Identity::Token { kid, secret } => {
            let exp = conn::unix_ms() / 1000 + 24 * 3600;
            let claims =
                ringgate::auth::token::Claims { sub: user.clone(), dev: "d".into(), plat: "unspecified".into(), exp };
            ringgate::auth::token::mint(kid, secret.as_bytes(), &claims)
        }
    };
    let mut config = ClientConfig::new(token, user, "d");
    config.jitter_seed = jitter_seed;
    config
}

/// Runs `spec` in this process and returns what its connections saw.
pub fn run(spec: &LoadSpec) -> RunStats {
    let threads = spec.threads.max(1);
    let per_thread_rate = spec.rate.div_ceil(threads as u64);
    crate::control::mark_load_start();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let spec = spec.clone();
            std::thread::spawn(move || {
                if crate::held::handles(&spec) {
                    return crate::held::run_thread(&spec, t, threads, per_thread_rate);
                }
                let runtime = match compio::runtime::Runtime::new() {
                    Ok(r) => r,
                    Err(e) => {
                        let mut s = RunStats::default();
                        s.error(format!("runtime: {e}"));
                        return s;
                    }
                };
                runtime.block_on(thread_load(spec, t, threads, per_thread_rate))
            })
        })
        .collect();
    let mut total = RunStats::default();
    for h in handles {
        if let Ok(stats) = h.join() {
            total.merge(&stats);
        }
    }
    total
}

async fn thread_load(spec: LoadSpec, t: usize, threads: usize, rate: u64) -> RunStats {
    let stats = Rc::new(RefCell::new(RunStats::default()));
    let connector = match Connector::new(spec.transport, spec.ca.as_deref()) {
        Ok(c) => Rc::new(c),
        Err(e) => {
            stats.borrow_mut().error(format!("connector: {e}"));
            return Rc::try_unwrap(stats).map(RefCell::into_inner).unwrap_or_default();
        }
    };
    let addrs: Rc<[SocketAddr]> = spec.addrs.clone().into();
    let mut tasks = Vec::new();
    let pause = conn::pacing(rate);
    let sources = if spec.transport.uses_fd_per_connection() { spec.sources } else { 0 };
    for i in (spec.first + t..spec.first + spec.count).step_by(threads) {
        if crate::control::stopping() || conn::unix_ms() >= spec.workload.until_ms() {
            break;
        }
        let task = conn::run(
            connector.clone(),
            addrs.clone(),
            i,
            source_ip(i, sources),
            client_config(&spec.identity, i),
            spec.workload,
            stats.clone(),
        );
        tasks.push(compio::runtime::spawn(task));
        if !pause.is_zero() {
            compio::time::sleep(pause).await;
        } else if tasks.len() % 128 == 0 {
            // Let the connects progress instead of queueing thousands at once.
            compio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    if let Ok(connector) = Rc::try_unwrap(connector) {
        connector.finish().await;
    }
    Rc::try_unwrap(stats).map(RefCell::into_inner).unwrap_or_default()
}

/// Waits until `cond` holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_cycle_over_loopback() {
        assert_eq!(source_ip(0, 0), None);
        assert_eq!(source_ip(0, 3), Some("127.1.0.1".parse().unwrap()));
        assert_eq!(source_ip(4, 3), Some("127.1.0.2".parse().unwrap()));
        assert_eq!(source_ip(299, 300), Some("127.1.1.44".parse().unwrap()));
    }
}
