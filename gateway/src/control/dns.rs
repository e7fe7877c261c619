//! DNS discovery of backend VIPs, on the control-plane thread (never on a worker): resolve
//! the backend name when the router's [`AddressSet`] says so, feed it the outcome, and
//! publish every new address set to the workers as an immutable snapshot.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};
use ringgate_router::dns::{AddressSet, DnsConfig, Resolution};

use crate::config::DnsTarget;
use crate::inbox::WorkerMsg;
use crate::status::DiscoveryState;

fn resolver(target: &DnsTarget) -> Result<TokioResolver, String> {
    let mut builder = match target.nameserver {
        Some(ns) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = ns.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = ns.port();
            let server = NameServerConfig::new(ns.ip(), true, vec![udp, tcp]);
            Resolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), vec![server]),
                TokioRuntimeProvider::default(),
            )
        }
        None => Resolver::builder_tokio().map_err(|e| e.to_string())?,
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    // The address set keeps its own TTL; a resolver cache would hide changes.
    opts.cache_size = 0;
    opts.timeout = target.timers.timeout;
    opts.attempts = 2;
    builder.build().map_err(|e| e.to_string())
}

async fn resolve(resolver: &TokioResolver, name: &str) -> Resolution {
    match resolver.lookup_ip(name).await {
        Ok(lookup) => {
            let addrs: Vec<_> = lookup.iter().collect();
            let ttl = lookup.valid_until().saturating_duration_since(std::time::Instant::now());
            if addrs.is_empty() { Resolution::Empty } else { Resolution::Answer { addrs, ttl } }
        }
        Err(e) if e.is_no_records_found() => Resolution::Empty,
        Err(e) => Resolution::Failed(e.to_string()),
    }
}

/// Runs discovery on the current thread until `stop`'s sender is dropped.
pub fn run(
    target: DnsTarget,
    workers: Vec<flume::Sender<WorkerMsg>>,
    state: Arc<Mutex<DiscoveryState>>,
    stop: flume::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return tracing::error!(error = %e, "dns discovery cannot start"),
    };
    runtime.block_on(async move {
        let resolver = match resolver(&target) {
            Ok(r) => r,
            Err(e) => return tracing::error!(error = %e, name = %target.name, "dns resolver cannot start"),
        };
        let timers = &target.timers;
        let config = DnsConfig {
            min_ttl: timers.min_ttl,
            max_ttl: timers.max_ttl,
            hold_down: timers.hold_down,
            retry: timers.retry,
        };
        let mut set = AddressSet::new(config, target.port, std::time::Instant::now());
        loop {
            let wait = set.poll_timeout().saturating_duration_since(std::time::Instant::now());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.recv_async() => return,
            }
            let resolution = resolve(&resolver, &target.name).await;
            let ok = matches!(resolution, Resolution::Answer { .. });
            match &resolution {
                Resolution::Failed(e) => {
                    tracing::warn!(name = %target.name, error = %e, "dns resolution failed; keeping the last good set")
                }
                Resolution::Empty => tracing::warn!(name = %target.name, "dns answer empty; keeping the last good set"),
                Resolution::Answer { .. } => {}
            }
            let changed = set.handle_resolution(resolution, std::time::Instant::now());
            if let Ok(mut s) = state.lock() {
                s.stats = set.stats();
                s.current = set.current();
                s.last_good = set.last_good();
                s.last_ok = ok;
            }
            if let Some(addrs) = changed {
                tracing::info!(name = %target.name, ?addrs, "backend set changed");
                let snapshot: Arc<[SocketAddr]> = addrs.into();
                let mut alive = false;
                for w in &workers {
                    alive |= w.send(WorkerMsg::Backends(snapshot.clone())).is_ok();
                }
                if !alive {
                    return;
                }
            }
        }
    });
}
