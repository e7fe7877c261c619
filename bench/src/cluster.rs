//! `ringgate-bench cluster`: a whole deployment on loopback. It starts a redis-server (the
//! location registry), reference backends (pushes looked up in the registry), and several
//! gateway nodes (each may hold at most 20,000 files here, so 100,000 connections need at
//! least 6), then drives token-authenticated connections at them from several load
//! processes with heartbeats and a trickle of Sends, and reports total and per-connection
//! memory, the registry's size, and the round-trip percentiles under that load. Everything
//! it started is stopped (and its files removed) when it ends, Ctrl-C included.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::conn::{Workload, unix_ms};
use crate::gateway::{BackendChild, GatewayChild};
use crate::procinfo;
use crate::run::{Identity, LoadSpec};
use crate::stats::Percentiles;
use crate::transport::TransportKind;
use crate::{control, fleet};

const KID: &str = "bench";
const SECRET: &str = "cluster-bench-secret-0123456789";

#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// The ringgate binary (build with `cargo build --release -p ringgate`).
    #[arg(long, default_value = "target/release/ringgate")]
    pub gateway: PathBuf,
    #[arg(long, default_value_t = 100_000)]
    pub connections: usize,
    /// Gateway nodes (each holds connections / nodes; at most ~19,000 each here).
    #[arg(long, default_value_t = 6)]
    pub nodes: usize,
    #[arg(long, default_value_t = 2)]
    pub backends: usize,
    /// Worker threads per node.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// New connections per second, over all load processes.
    #[arg(long, default_value_t = 5_000)]
    pub rate: u64,
    /// Seconds to hold every connection once all are up.
    #[arg(long, default_value_t = 60)]
    pub hold: u64,
    /// Heartbeat interval the gateways give their clients, seconds.
    #[arg(long, default_value_t = 20)]
    pub heartbeat: u64,
    /// Each connection sends one 32-byte Send this often (seconds): the trickle.
    #[arg(long, default_value_t = 30)]
    pub send_every: u64,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    #[arg(long)]
    pub quiet: bool,
    /// Print one JSON object with every figure instead of the summary.
    #[arg(long)]
    pub json: bool,
}

fn node_config(i: usize, redis: &str, backends: &[std::net::SocketAddr], args: &ClusterArgs) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "[node]\nid = \"cluster-{i}\"\n[listen]\ntcp = \"127.0.0.1:0\"\n[io]\nworkers = {workers}\n\
         [session]\nheartbeat_interval = \"{hb}s\"\n[auth]\nmode = \"token\"\n[auth.keys]\n{KID} = \"{SECRET}\"\n\
         [backend]\naddresses = [{backends}]\n[redis]\nurl = \"{redis}\"\n[limits]\n{limits}",
        limits = crate::gateway::NO_ADDRESS_LIMITS,
        workers = args.workers,
        hb = args.heartbeat,
        backends = list.join(", "),
    )
}

fn rss(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| procinfo::rss_kib(p).ok()).sum()
}

/// Runs the cluster; returns every figure as JSON.
pub fn run(args: &ClusterArgs) -> std::io::Result<Value> {
    let started = Instant::now();
    let (redis, url) = crate::registry::start_redis()?;
    let backends: Vec<BackendChild> = (0..args.backends)
        .map(|_| BackendChild::spawn_with(&args.gateway, &["--redis", &url]))
        .collect::<Result<_, _>>()?;
    let backend_addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let nodes: Vec<GatewayChild> = (0..args.nodes)
        .map(|i| {
            GatewayChild::start(&args.gateway, &format!("cluster-{i}"), &node_config(i, &url, &backend_addrs, args))
        })
        .collect::<Result<_, _>>()?;
    let pids: Vec<u32> = nodes.iter().map(GatewayChild::pid).collect();
    // Let every worker's links to the backends come up.
    std::thread::sleep(Duration::from_secs(1));
    let base_rss = rss(&pids);
    let base_slab = procinfo::slab_kib().unwrap_or(0);
    let base_redis = rss(&[redis.pid()]);
    // The rate is a target: on 2 shared cores token minting, registry writes and the other
    // processes slow the ramp (~2,000/s measured), so allow three times the nominal ramp.
    let ramp = Duration::from_secs(3 * (args.connections as u64 / args.rate.max(1)) + 30);
    let until = unix_ms() + (ramp + Duration::from_secs(args.hold)).as_millis() as u64;
    let spec = LoadSpec {
        addrs: nodes.iter().map(|n| n.addr).collect(),
        transport: TransportKind::Tcp,
        ca: None,
        first: 0,
        count: args.connections,
        threads: args.threads,
        rate: args.rate,
        sources: 128,
        identity: Identity::Token { kid: KID.into(), secret: SECRET.into() },
        workload: Workload::Idle { until_ms: until, send_every_ms: args.send_every * 1000 },
    };
    let progress = !args.quiet;
    let load = std::thread::spawn(move || fleet::run(&spec, None, progress));
    // Wait for every connection, then hold and measure in the middle of the hold.
    let ramp_deadline = Instant::now() + ramp;
    while fleet::live().open < args.connections as u64 && Instant::now() < ramp_deadline && !control::stopping() {
        std::thread::sleep(Duration::from_millis(200));
    }
    let ramped_after = started.elapsed();
    let up = fleet::live().open;
    let hold_start = Instant::now();
    while hold_start.elapsed() < Duration::from_secs(args.hold / 2) && !control::stopping() {
        std::thread::sleep(Duration::from_millis(200));
    }
    let held = fleet::live().open;
    let gw_rss = rss(&pids);
    let slab = procinfo::slab_kib().unwrap_or(0);
    let redis_rss = rss(&[redis.pid()]);
    let backend_rss = rss(&backends.iter().map(BackendChild::pid).collect::<Vec<_>>());
    let registry_keys = registry_size(&url);
    // The rest of the hold, then the connections close (the workload's own end is a bound
    // sized for a slow ramp).
    while hold_start.elapsed() < Duration::from_secs(args.hold) && !control::stopping() {
        std::thread::sleep(Duration::from_millis(200));
    }
    control::request_stop();
    let stats = load.join().unwrap_or_default();
    let per = |kib: u64| kib as f64 * 1024.0 / held.max(1) as f64;
    let out = json!({
        "subcommand": "cluster",
        "connections": args.connections,
        "nodes": args.nodes,
        "workers_per_node": args.workers,
        "backends": args.backends,
        "all_up": held >= args.connections as u64,
        "open_when_ramp_ended": up,
        "ramp_seconds": ramped_after.as_secs_f64(),
        "held_at_measurement": held,
        "connect_rate_per_s": stats.connect_rate(),
        "login_us": pct(&Percentiles::of(&stats.login_us)),
        "gateway_rss_kib": {"before": base_rss, "held": gw_rss},
        "gateway_user_bytes_per_conn": per(gw_rss.saturating_sub(base_rss)),
        "slab_bytes_per_conn_both_ends": per(slab.saturating_sub(base_slab)),
        "redis_rss_kib": {"before": base_redis, "held": redis_rss},
        "registry_keys": registry_keys,
        "backends_rss_kib": backend_rss,
        "trickle_sends_acked": stats.acked_ok,
        "trickle_rtt_us": pct(&stats.percentiles()),
        "errors": stats.errors,
        "seconds_total": started.elapsed().as_secs_f64(),
    });
    drop(nodes);
    drop(backends);
    drop(redis);
    Ok(out)
}

fn pct(p: &Percentiles) -> Value {
    json!({"p50": p.p50_us, "p90": p.p90_us, "p99": p.p99_us, "p999": p.p999_us, "max": p.max_us})
}

fn registry_size(url: &str) -> Option<u64> {
    let mut conn = redis::Client::open(url).ok()?.get_connection().ok()?;
    redis::cmd("DBSIZE").query(&mut conn).ok()
}
