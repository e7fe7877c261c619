//! `ringgate-bench`: load generator for ringgate.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use ringgate_bench::conn::Workload;
use ringgate_bench::drivers::{self, DriversArgs};
use ringgate_bench::procinfo;
use ringgate_bench::run::{self, Plan};
use ringgate_codec::session::ClientConfig;

#[derive(Parser)]
#[command(name = "ringgate-bench", about = "Load generator for ringgate")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Open N authenticated connections and hold them with heartbeats.
    Idle {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Connections per second (0 = as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Seconds to hold.
        #[arg(long, default_value_t = 10)]
        hold: u64,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long, default_value_t = 64)]
        sources: usize,
        /// Gateway pid: report its memory per connection.
        #[arg(long)]
        gateway_pid: Option<u32>,
    },
    /// N connections with K Sends in flight each; report Acked Sends/s and latency.
    Echo {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 100)]
        connections: usize,
        #[arg(long, default_value_t = 16)]
        in_flight: usize,
        #[arg(long, default_value_t = 64)]
        payload: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long, default_value_t = 64)]
        sources: usize,
    },
    /// io_uring vs epoll, side by side in one run, on gateway child processes.
    Drivers(DriversArgs),
    /// Run the reference backend (the same implementation as `ringgate reference-backend`).
    Backend {
        #[arg(long, default_value = "127.0.0.1:7100")]
        listen: SocketAddr,
        #[arg(long, default_value = "reference")]
        id: String,
        #[arg(long, default_value_t = 4096)]
        window: u32,
    },
    /// Registry throughput (logins written per second, pipelined) and lookup latency, against
    /// a redis-server started for the run.
    Registry {
        #[arg(long, default_value_t = 100_000)]
        logins: usize,
        #[arg(long, default_value_t = 10_000)]
        lookups: usize,
    },
    /// Consistent-hashing quality: keys moved when a backend is added or removed, balance.
    Ring {
        #[arg(long, default_value_t = 100_000)]
        keys: usize,
    },
}

fn identity(i: usize) -> ClientConfig {
    ClientConfig::new("", format!("u{i}"), "d")
}

fn backend(listen: SocketAddr, id: String, window: u32) -> std::io::Result<()> {
    let runtime = compio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = ringgate::listener::bind_group(listen, 1, 4096)?.remove(0);
        let listener = compio::net::TcpListener::from_std(listener)?;
        eprintln!("reference backend {id} listening on {}", listener.local_addr()?);
        ringgate::backend::server::serve(listener, id, window, None).await;
        Ok(())
    })
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Idle { addr, connections, rate, hold, threads, sources, gateway_pid } => {
            let before = gateway_pid.and_then(|p| procinfo::rss_kib(p).ok());
            let plan = Plan { addr, connections, threads, rate, identity, sources };
            let until = Instant::now() + Duration::from_secs(hold);
            let measure = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(hold.saturating_sub(1)));
                gateway_pid.and_then(|p| procinfo::rss_kib(p).ok())
            });
            let stats = run::run(&plan, move || Workload::Idle { until });
            let during = measure.join().ok().flatten();
            println!("connected {} authenticated {} errors {:?}", stats.connected, stats.authenticated, stats.errors);
            if let (Some(b), Some(d)) = (before, during) {
                let per = d.saturating_sub(b) as f64 * 1024.0 / stats.authenticated.max(1) as f64;
                println!("gateway rss {b} KiB -> {d} KiB: {per:.0} bytes per connection");
            }
            ExitCode::SUCCESS
        }
        Cmd::Echo { addr, connections, in_flight, payload, seconds, threads, sources } => {
            let plan = Plan { addr, connections, threads, rate: 0, identity, sources };
            let measure_from = Instant::now() + Duration::from_secs(1);
            let until = measure_from + Duration::from_secs(seconds);
            let stats = run::run(&plan, move || Workload::Echo { in_flight, payload, measure_from, until });
            let p = stats.percentiles();
            println!(
                "acked {} ({:.0}/s) p50 {} us p90 {} us p99 {} us p99.9 {} us errors {:?}",
                stats.acked_ok,
                stats.acked_ok as f64 / seconds as f64,
                p.p50_us,
                p.p90_us,
                p.p99_us,
                p.p999_us,
                stats.errors
            );
            ExitCode::SUCCESS
        }
        Cmd::Backend { listen, id, window } => match backend(listen, id, window) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ringgate-bench: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Registry { logins, lookups } => match ringgate_bench::registry::run(logins, lookups) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ringgate-bench: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Ring { keys } => {
            ringgate_bench::ring::report(keys);
            ExitCode::SUCCESS
        }
        Cmd::Drivers(args) => match drivers::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ringgate-bench: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
