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
    /// Gateway nodes (each holds connections / nodes). Default: as many as the open-files
    /// limit per process needs (one per 18,000 connections).
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Spread connections over this many 127.1.x.y source addresses.
    #[arg(long, default_value_t = 128)]
    pub sources: usize,
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

/// Connections one gateway node is given at most by default: the same file budget as a
/// load process (the 20,000 open files a process may hold here, less a margin).
pub const CONNECTIONS_PER_NODE: usize = fleet::MAX_FDS_PER_PROCESS;

/// Per-connection costs the scale guard counts, in bytes, from the measured figures in
/// bench/README.md ("cluster") with a margin: gateway user memory, kernel memory for both
/// ends of a loopback connection, the load generator's memory, Redis's record.
const GATEWAY_BYTES: u64 = 1_100;
const KERNEL_BYTES_BOTH_ENDS: u64 = 10_000;
const LOAD_BYTES: u64 = 1_500;
const REDIS_BYTES: u64 = 400;
/// Fixed memory per process started (gateway nodes, load processes), and for the rest.
const PER_PROCESS_BYTES: u64 = 24 << 20;
const BASE_BYTES: u64 = 512 << 20;

impl ClusterArgs {
    pub fn node_count(&self) -> usize {
        self.nodes.unwrap_or_else(|| self.connections.div_ceil(CONNECTIONS_PER_NODE)).max(1)
    }
}

/// What a run needs and what this machine has: the guard's inputs, read from /proc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    /// MemAvailable, bytes.
    pub available_bytes: u64,
    /// Open files a process may hold (RLIMIT_NOFILE).
    pub files_per_process: u64,
    /// Ephemeral ports (net.ipv4.ip_local_port_range).
    pub ephemeral_ports: u64,
}

impl Machine {
    /// The readings `ringgate doctor` takes (files, ports) and MemAvailable.
    pub fn read() -> std::io::Result<Machine> {
        let system = ringgate::doctor::read_system();
        let (lo, hi) = system.port_range;
        if hi < lo || hi == 0 {
            return Err(std::io::Error::other(format!("ip_local_port_range unreadable: {lo} {hi}")));
        }
        Ok(Machine {
            available_bytes: procinfo::mem_available_kib()? * 1024,
            files_per_process: system.nofile_soft,
            ephemeral_ports: hi - lo + 1,
        })
    }
}

/// Refuses a run this machine cannot hold, naming each figure it needs and has: memory for
/// every connection's costs and every process, open files per node, and ephemeral ports
/// (each source address has a full range towards each node: ports are picked per 4-tuple).
pub fn check_capacity(args: &ClusterArgs, m: &Machine) -> Result<(), String> {
    let n = args.connections as u64;
    let nodes = args.node_count() as u64;
    let loads = n.div_ceil(fleet::MAX_FDS_PER_PROCESS as u64).max(1);
    let per_conn = GATEWAY_BYTES + KERNEL_BYTES_BOTH_ENDS + LOAD_BYTES + REDIS_BYTES;
    let need = n * per_conn + (nodes + loads + args.backends as u64) * PER_PROCESS_BYTES + BASE_BYTES;
    let mut problems = Vec::new();
    if need > m.available_bytes {
        problems.push(format!(
            "memory: {} connections need about {:.1} GiB ({per_conn} B each over gateway, kernel, load generator \
             and Redis, plus {} processes), and {:.1} GiB is available",
            n,
            need as f64 / f64::from(1 << 30),
            nodes + loads + args.backends as u64,
            m.available_bytes as f64 / f64::from(1 << 30),
        ));
    }
    let per_node = n.div_ceil(nodes);
    // A node needs a few hundred files of its own (listeners, links, Redis, rings).
    let node_files = m.files_per_process.saturating_sub(500);
    if per_node > node_files {
        problems.push(format!(
            "open files: {per_node} connections per node over {nodes} nodes, and a process may hold {} files \
             (use --nodes {} or more)",
            m.files_per_process,
            n.div_ceil(node_files.max(1)),
        ));
    }
    let ports = args.sources.max(1) as u64 * nodes * m.ephemeral_ports;
    if n > ports {
        problems.push(format!(
            "ephemeral ports: {n} connections, and {} sources x {nodes} nodes x {} ports give {ports}",
            args.sources.max(1),
            m.ephemeral_ports
        ));
    }
    if problems.is_empty() { Ok(()) } else { Err(format!("this machine cannot hold the run: {}", problems.join("; "))) }
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
    check_capacity(args, &Machine::read()?).map_err(std::io::Error::other)?;
    let started = Instant::now();
    let unix_ms_at_start = unix_ms();
    let node_count = args.node_count();
    let (redis, url) = crate::registry::start_redis()?;
    let backends: Vec<BackendChild> = (0..args.backends)
        .map(|_| BackendChild::spawn_with(&args.gateway, &["--redis", &url]))
        .collect::<Result<_, _>>()?;
    let backend_addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let nodes: Vec<GatewayChild> = (0..node_count)
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
    // Round trips count from the ramp's end at the asked rate plus 5 s (a slower ramp
    // shows in `ramp_seconds`); those before are reported apart.
    let measure_from_ms = unix_ms() + (args.connections as u64 * 1000).checked_div(args.rate).unwrap_or(0) + 5_000;
    let spec = LoadSpec {
        addrs: nodes.iter().map(|n| n.addr).collect(),
        transport: TransportKind::Tcp,
        ca: None,
        first: 0,
        count: args.connections,
        threads: args.threads,
        rate: args.rate,
        sources: args.sources,
        identity: Identity::Token { kid: KID.into(), secret: SECRET.into() },
        workload: Workload::Idle { until_ms: until, send_every_ms: args.send_every * 1000, measure_from_ms },
    };
    let progress = !args.quiet;
    let load = std::thread::spawn(move || fleet::run(&spec, None, progress));
    // Wait for every connection, then hold and measure in the middle of the hold.
    let ramp_deadline = Instant::now() + ramp;
    // The ramp ends when every connection is up, or when logins have stopped for 10 s once
    // all were attempted (some failed: their reasons are in `errors`).
    let mut last_progress = (Instant::now(), 0);
    while fleet::live().open < args.connections as u64 && Instant::now() < ramp_deadline && !control::stopping() {
        std::thread::sleep(Duration::from_millis(200));
        let live = fleet::live();
        let progress = live.connected + live.authenticated;
        if progress != last_progress.1 {
            last_progress = (Instant::now(), progress);
        } else if progress > 0 && last_progress.0.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    let ramped_after = started.elapsed();
    let up = fleet::live().open;
    let hold_start = Instant::now();
    let load_from = (Instant::now(), fleet::live());
    while hold_start.elapsed() < Duration::from_secs(args.hold / 2) && !control::stopping() {
        std::thread::sleep(Duration::from_millis(200));
    }
    let held = fleet::live().open;
    let load_cost = crate::scenarios::load_cost(load_from, (Instant::now(), fleet::live()));
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
        "nodes": node_count,
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
        "redis_bytes_per_conn": per(redis_rss.saturating_sub(base_redis)),
        "registry_keys": registry_keys,
        "backends_rss_kib": backend_rss,
        "load": load_cost,
        "trickle_sends_acked": stats.acked_ok,
        "trickle_measured_after_s": (measure_from_ms.saturating_sub(unix_ms_at_start)) as f64 / 1000.0,
        "trickle_rtt_us": pct(&stats.percentiles()),
        "trickle_rtt_during_ramp_us": pct(&Percentiles::of(&stats.rtt_early_us)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ClusterArgs,
    }

    fn args(extra: &[&str]) -> ClusterArgs {
        Cli::parse_from(std::iter::once("cluster").chain(extra.iter().copied())).args
    }

    const HERE: Machine = Machine { available_bytes: 24 << 30, files_per_process: 20_000, ephemeral_ports: 28_232 };

    #[test]
    fn a_million_fits_this_machine_over_enough_nodes() {
        let a = args(&["--connections", "1000000"]);
        assert_eq!(a.node_count(), 56);
        assert_eq!(check_capacity(&a, &HERE), Ok(()));
        assert_eq!(args(&[]).node_count(), 6, "100,000 by default over 6 nodes");
    }

    #[test]
    fn the_guard_names_what_is_short_and_by_how_much() {
        let e = check_capacity(&args(&["--connections", "3000000"]), &HERE).unwrap_err();
        assert!(e.contains("memory: 3000000 connections need about 44.7 GiB") && e.contains("24.0 GiB"), "{e}");
        assert!(!e.contains("open files"), "{e}");
        let e = check_capacity(&args(&["--connections", "100000", "--nodes", "2"]), &HERE).unwrap_err();
        assert!(e.contains("50000 connections per node") && e.contains("--nodes 6 or more"), "{e}");
        assert!(!e.contains("memory"), "{e}");
        let e = check_capacity(
            &args(&["--connections", "40000", "--nodes", "3", "--sources", "0"]),
            &Machine { ephemeral_ports: 10_000, ..HERE },
        )
        .unwrap_err();
        assert!(
            e.contains("ephemeral ports: 40000 connections, and 1 sources x 3 nodes x 10000 ports give 30000"),
            "{e}"
        );
    }

    #[test]
    fn this_machine_can_be_read() {
        let m = Machine::read().unwrap();
        assert!(m.available_bytes > 0 && m.files_per_process > 0 && m.ephemeral_ports > 0, "{m:?}");
    }
}
