//! `ringgate-bench drivers`: the same gateway binary on io_uring and on epoll, measured side
//! by side in one run, interleaved (A B A B ...) so drift on a shared machine hits both.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ringgate_codec::session::ClientConfig;
use serde::Serialize;

use crate::conn::Workload;
use crate::gateway::{BackendChild, GatewayChild};
use crate::procinfo;
use crate::run::{self, Plan};
use crate::stats::median_min_max;

#[derive(Debug, Clone, clap::Args)]
pub struct DriversArgs {
    /// The ringgate binary (build with `cargo build --release -p ringgate`).
    #[arg(long, default_value = "target/release/ringgate")]
    pub gateway: PathBuf,
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Idle authenticated connections held for the memory measurement.
    #[arg(long, default_value_t = 15_000)]
    pub idle_connections: usize,
    /// Connections of the echo (round-trip) measurement.
    #[arg(long, default_value_t = 1_000)]
    pub echo_connections: usize,
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Measured echo time per round, in seconds (after a 2 s warm-up).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Loopback source addresses to spread connections over.
    #[arg(long, default_value_t = 64)]
    pub sources: usize,
    #[arg(long)]
    pub json: bool,
    /// Route Sends through a reference backend over TCP links instead of the embedded backend.
    #[arg(long)]
    pub tcp_backend: bool,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct RoundResult {
    pub driver: String,
    pub idle_authenticated: u64,
    pub user_bytes_per_conn: f64,
    pub slab_bytes_per_conn_pair: f64,
    pub acked_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub errors: u64,
}

fn identity(i: usize) -> ClientConfig {
    let mut c = ClientConfig::new("", format!("u{i}"), "d");
    c.jitter_seed = i as u64;
    c
}

fn idle_round(gw: &GatewayChild, args: &DriversArgs, result: &mut RoundResult) {
    if args.idle_connections == 0 {
        return;
    }
    let pid = gw.pid();
    let base_rss = procinfo::rss_kib(pid).unwrap_or(0);
    let base_slab = procinfo::slab_kib().unwrap_or(0);
    let base_fds = procinfo::open_fds(pid).unwrap_or(0);
    let n = args.idle_connections;
    let plan = Plan { addr: gw.addr, connections: n, threads: args.threads, rate: 0, identity, sources: args.sources };
    let until = Instant::now() + Duration::from_secs(12) + Duration::from_millis(n as u64 / 5);
    let runner = std::thread::spawn(move || run::run(&plan, move || Workload::Idle { until }));
    let all_in = run::wait_for(until.saturating_duration_since(Instant::now()), || {
        procinfo::open_fds(pid).unwrap_or(0) >= base_fds + n
    });
    std::thread::sleep(Duration::from_secs(1));
    let rss = procinfo::rss_kib(pid).unwrap_or(0);
    let slab = procinfo::slab_kib().unwrap_or(0);
    let stats = runner.join().unwrap_or_default();
    if !all_in {
        eprintln!("  warning: only {} of {n} connections reached the gateway", stats.authenticated);
    }
    result.idle_authenticated = stats.authenticated;
    let held = stats.authenticated.max(1) as f64;
    result.user_bytes_per_conn = rss.saturating_sub(base_rss) as f64 * 1024.0 / held;
    result.slab_bytes_per_conn_pair = slab.saturating_sub(base_slab) as f64 * 1024.0 / held;
    result.errors += stats.errors.values().sum::<u64>();
}

fn echo_round(gw: &GatewayChild, args: &DriversArgs, result: &mut RoundResult) {
    let plan = Plan {
        addr: gw.addr,
        connections: args.echo_connections,
        threads: args.threads,
        rate: 0,
        identity,
        sources: args.sources,
    };
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(2);
    let until = measure_from + Duration::from_secs(args.seconds);
    let (in_flight, payload) = (args.in_flight, args.payload);
    let stats = run::run(&plan, move || Workload::Echo { in_flight, payload, measure_from, until });
    result.acked_per_sec = stats.acked_ok as f64 / args.seconds as f64;
    let p = stats.percentiles();
    result.p50_us = p.p50_us;
    result.p99_us = p.p99_us;
    result.errors += stats.errors.values().sum::<u64>();
}

/// Runs the comparison and prints a table (or JSON).
pub fn run(args: &DriversArgs) -> std::io::Result<()> {
    let mut results: Vec<RoundResult> = Vec::new();
    let backend = if args.tcp_backend { Some(BackendChild::spawn(&args.gateway)?) } else { None };
    for round in 1..=args.rounds {
        for driver in ["io_uring", "epoll"] {
            let gw = GatewayChild::spawn(&args.gateway, driver, args.workers, backend.as_ref().map(|b| b.addr))?;
            if backend.is_some() {
                // Let every worker's link finish its handshake before measuring.
                std::thread::sleep(Duration::from_millis(500));
            }
            let mut r = RoundResult { driver: gw.driver.clone(), ..Default::default() };
            idle_round(&gw, args, &mut r);
            echo_round(&gw, args, &mut r);
            eprintln!(
                "round {round} {driver}: {:.0} B/conn user, {:.0} B/conn-pair slab, {:.0} acked/s, p50 {} us, p99 {} us, {} errors",
                r.user_bytes_per_conn, r.slab_bytes_per_conn_pair, r.acked_per_sec, r.p50_us, r.p99_us, r.errors
            );
            results.push(r);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&results).unwrap_or_default());
        return Ok(());
    }
    print_table(&results, args);
    Ok(())
}

fn print_table(results: &[RoundResult], args: &DriversArgs) {
    let pick = |driver: &str, f: fn(&RoundResult) -> f64| {
        let v: Vec<f64> = results.iter().filter(|r| r.driver == driver).map(f).collect();
        median_min_max(&v)
    };
    println!(
        "ringgate io_uring vs epoll, {} rounds interleaved; idle: {} conns; echo: {} conns x {} in flight x {} B, {} s, {} backend",
        args.rounds,
        args.idle_connections,
        args.echo_connections,
        args.in_flight,
        args.payload,
        args.seconds,
        if args.tcp_backend { "reference over TCP" } else { "embedded" }
    );
    println!("| metric | io_uring median (min-max) | epoll median (min-max) | io_uring / epoll |");
    println!("|---|---|---|---|");
    type Metric = fn(&RoundResult) -> f64;
    let rows: [(&str, Metric); 5] = [
        ("idle user memory, bytes/conn", |r| r.user_bytes_per_conn),
        ("kernel slab, bytes/conn (both ends)", |r| r.slab_bytes_per_conn_pair),
        ("acked Sends/s", |r| r.acked_per_sec),
        ("p50 round trip, us", |r| r.p50_us as f64),
        ("p99 round trip, us", |r| r.p99_us as f64),
    ];
    for (name, f) in rows {
        let (a, amin, amax) = pick("io_uring", f);
        let (b, bmin, bmax) = pick("epoll", f);
        let ratio = if b > 0.0 { a / b } else { f64::NAN };
        println!("| {name} | {a:.0} ({amin:.0}-{amax:.0}) | {b:.0} ({bmin:.0}-{bmax:.0}) | {ratio:.2} |");
    }
}
