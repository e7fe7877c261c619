//! `ringgate-bench`: load generator and benchmark suite for ringgate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ringgate_bench::compare::{self, CompareArgs};
use ringgate_bench::gateway::GatewayChild;
use ringgate_bench::scenarios::{self, LoadArgs, PushMode, StormMode};
use ringgate_bench::{cluster, control, fleet};
use serde_json::Value;

#[derive(Parser)]
#[command(name = "ringgate-bench", about = "Load generator and benchmark suite for ringgate")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// Where `push` gets its pushes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Via {
    Backend,
    Api,
}

#[derive(Subcommand)]
enum Cmd {
    /// Open N authenticated connections at a rate, hold them with heartbeats; report the
    /// connect rate, failures by reason and (with --gateway-pid) memory per connection.
    Idle {
        #[command(flatten)]
        load: LoadArgs,
        /// Seconds to hold once the ramp-up is done.
        #[arg(long, default_value_t = 10)]
        hold: u64,
        /// Gateway process(es) whose memory to measure; repeat for several nodes.
        #[arg(long = "gateway-pid")]
        pids: Vec<u32>,
    },
    /// N connections with K Sends in flight each; Acked Sends/s and round-trip latency.
    Echo {
        #[command(flatten)]
        load: LoadArgs,
        #[arg(long, default_value_t = 16)]
        in_flight: usize,
        #[arg(long, default_value_t = 64)]
        payload: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Backend-driven fan-out through the reference backend: pushes to single users, to
    /// rooms of M, or broadcast; delivery rate and latency from request to receipt.
    Push {
        #[command(flatten)]
        load: LoadArgs,
        #[arg(long, value_enum, default_value = "user")]
        mode: PushMode,
        #[arg(long, default_value_t = 100)]
        room_size: usize,
        /// Pushes requested per second.
        #[arg(long, default_value_t = 1000)]
        push_rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Where the pushes come from: the reference backend (a Send per push), or a
        /// service calling the server API (`--api`, or a deployment started with `--spawn`).
        #[arg(long, value_enum, default_value = "backend")]
        via: Via,
        /// The server API's address (with --via api and no --spawn).
        #[arg(long)]
        api: Option<SocketAddr>,
        #[arg(long, default_value = ringgate_bench::api_push::SPAWN_KEY)]
        api_key: String,
        /// Keep-alive API connections, one request in flight on each.
        #[arg(long, default_value_t = 64)]
        api_conns: usize,
        /// Pushes per API request (more than 1 uses POST /v1/push/batch).
        #[arg(long, default_value_t = 1)]
        api_batch: usize,
        /// Start redis-server and nodes a (API) and c, and put the receivers on a (same) or
        /// c (cross); --addr is then ignored.
        #[arg(long, value_enum)]
        spawn: Option<ringgate_bench::api_push::Spawn>,
        #[arg(long, default_value_t = 1)]
        spawn_workers: usize,
        #[arg(long, default_value = "target/release/ringgate")]
        gateway: PathBuf,
    },
    /// Drop every connection at once (or kill / drain the first node) and measure the time
    /// until 99% are back, re-authenticated, with the GoAway's backoff and jitter.
    Storm {
        #[command(flatten)]
        load: LoadArgs,
        #[arg(long, value_enum, default_value = "drop")]
        mode: StormMode,
        /// Reconnect delay and jitter when the server gave none (GoAway gives its own).
        #[arg(long, default_value_t = 100)]
        reconnect_after_ms: u64,
        #[arg(long, default_value_t = 2000)]
        jitter_ms: u64,
        /// Seconds after the storm before the run ends.
        #[arg(long, default_value_t = 15)]
        window: u64,
        /// Start this many gateway nodes (embedded backend, auth off) instead of using
        /// --addr; needed for kill and drain.
        #[arg(long)]
        spawn_nodes: Option<usize>,
        #[arg(long, default_value = "target/release/ringgate")]
        gateway: PathBuf,
    },
    /// A node with the shipped admission defaults under each attack of issue 17, from one
    /// address, while a probe echoes and fresh TCP/TLS/QUIC logins are timed.
    Abuse {
        #[arg(long, default_value = "target/release/ringgate")]
        gateway: PathBuf,
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "idle,slow-auth,bad-token,hello-replay,quic-initials"
        )]
        attacks: Vec<ringgate_bench::abuse::Attack>,
        /// Seconds each phase measures.
        #[arg(long, default_value_t = 5)]
        window: u64,
        /// `off` lifts the per-address limits, to compare with the defaults.
        #[arg(long, default_value = "on")]
        limits: String,
        /// Instead of the attacks: N stalled ClientHellos, then none; the node's RSS before,
        /// at the peak and after (twice).
        #[arg(long)]
        handshake_memory: Option<usize>,
    },
    /// One node with a reference backend and Redis under hours-long churn (held connections,
    /// TCP/TLS/QUIC logins, echoes, closes), a backend restart and a Redis restart: RSS and
    /// open files each minute, errors and Acks.
    Soak {
        #[arg(long, default_value = "target/release/ringgate")]
        gateway: PathBuf,
        /// Minutes to run.
        #[arg(long, default_value_t = 30)]
        minutes: u64,
        /// Seconds to run instead (short runs: the smoke test).
        #[arg(long)]
        seconds: Option<u64>,
        #[arg(long, default_value_t = 2000)]
        held: usize,
        /// New churning connections per second.
        #[arg(long, default_value_t = 20)]
        rate: u64,
        /// Sends each churning connection echoes.
        #[arg(long, default_value_t = 3)]
        echoes: usize,
        /// Seconds between samples.
        #[arg(long, default_value_t = 60)]
        sample_every: u64,
    },
    /// ringgate (io_uring, epoll) vs nginx stream vs HAProxy vs the backend directly, side
    /// by side, interleaved rounds.
    Compare(CompareArgs),
    /// A local cluster: Redis, several gateway nodes and reference backends, at least
    /// 100,000 authenticated connections with heartbeats and a trickle of Sends.
    Cluster(cluster::ClusterArgs),
    /// Internal: run a load slice read as JSON from stdin (started by the other commands).
    #[command(hide = true)]
    Agent,
    /// A client-protocol echo server (the backend nginx and HAProxy proxy to in compare).
    EchoServer {
        #[arg(long, default_value = "127.0.0.1:7200")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
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

/// Prints `value` as JSON, or its human summary.
fn report(value: &Value, json: bool) {
    if json {
        println!("{value}");
        return;
    }
    let get = |k: &str| value.get(k).cloned().unwrap_or(Value::Null);
    let p = |k: &str| {
        let v = get(k);
        format!("p50 {} p90 {} p99 {} p99.9 {} max {}", v["p50"], v["p90"], v["p99"], v["p999"], v["max"])
    };
    let load = || {
        let l = get("load");
        if l.is_object() {
            println!(
                "load generator: {:.0} user bytes per connection (rss {} KiB held, {} at start); {:.3} us CPU per held connection per second",
                l["user_bytes_per_conn"].as_f64().unwrap_or(0.0),
                l["rss_kib"]["held"],
                l["rss_kib"]["base"],
                l["cpu_us_per_conn_per_s"].as_f64().unwrap_or(0.0)
            );
        }
    };
    match value["subcommand"].as_str().unwrap_or_default() {
        "idle" => {
            println!(
                "{} {} connections: connected {} authenticated {} ({:.0}/s), held {} at measurement; login us {}; errors {}",
                get("transport"),
                get("connections"),
                get("connected"),
                get("authenticated"),
                get("connect_rate_per_s").as_f64().unwrap_or(0.0),
                get("held_at_measurement"),
                p("login_us"),
                get("errors")
            );
            if let Some(user) = get("user_bytes_per_conn").as_f64() {
                println!(
                    "gateway rss {} KiB: {user:.0} user bytes per connection; kernel slab {:.0} bytes per connection (both ends)",
                    get("gateway_rss_kib"),
                    get("slab_bytes_per_conn_both_ends").as_f64().unwrap_or(0.0)
                );
            }
            load();
        }
        "echo" => println!(
            "{} {} connections x {} in flight x {} B: acked {} ({:.0}/s); round trip us {}; errors {}",
            get("transport"),
            get("connections"),
            get("in_flight"),
            get("payload"),
            get("acked"),
            get("acked_per_s").as_f64().unwrap_or(0.0),
            p("rtt_us"),
            get("errors")
        ),
        "push" => println!(
            "{} pushes to {} receivers (rooms of {}): requested {} acked {}; delivered {} of {} ({:.0}/s); latency us {}; errors {}",
            get("mode"),
            get("receivers"),
            get("room_size"),
            get("pushes_requested"),
            get("pushes_acked"),
            get("deliveries"),
            get("deliveries_expected"),
            get("deliveries_per_s").as_f64().unwrap_or(0.0),
            p("latency_us"),
            get("errors")
        ),
        "storm" => println!(
            "storm ({}) over {} connections ({} open before): {} of {} expected back; 50% after {} ms, 99% after {} ms, all after {} ms; errors {}",
            get("mode"),
            get("connections"),
            get("open_before_storm"),
            get("reconnected"),
            get("expected_reconnects"),
            get("ms_to_50pct"),
            get("ms_to_99pct"),
            get("ms_to_all"),
            get("errors")
        ),
        "cluster" => {
            println!(
                "{} connections over {} nodes: {} held at measurement (all up: {}), {:.0} logins/s, login us {}; errors {}",
                get("connections"),
                get("nodes"),
                get("held_at_measurement"),
                get("all_up"),
                get("connect_rate_per_s").as_f64().unwrap_or(0.0),
                p("login_us"),
                get("errors")
            );
            println!(
                "gateways rss {} KiB: {:.0} user bytes per connection; kernel slab {:.0} bytes per connection (both ends); redis {} KiB for {} keys",
                get("gateway_rss_kib"),
                get("gateway_user_bytes_per_conn").as_f64().unwrap_or(0.0),
                get("slab_bytes_per_conn_both_ends").as_f64().unwrap_or(0.0),
                get("redis_rss_kib"),
                get("registry_keys")
            );
            println!(
                "trickle: {} Sends acked, round trip us after {} s: {}; during the ramp: {}; {:.0} s in all",
                get("trickle_sends_acked"),
                get("trickle_measured_after_s"),
                p("trickle_rtt_us"),
                p("trickle_rtt_during_ramp_us"),
                get("seconds_total").as_f64().unwrap_or(0.0)
            );
            load();
        }
        _ => println!("{value}"),
    }
}

/// Gateway nodes started for a storm: embedded backend, auth off, quick drain.
fn spawn_storm_nodes(binary: &std::path::Path, n: usize) -> std::io::Result<Vec<GatewayChild>> {
    (0..n)
        .map(|i| {
            let text = format!(
                "[node]\nid = \"storm-{i}\"\n[listen]\ntcp = \"127.0.0.1:0\"\n[io]\nworkers = 1\n[auth]\nmode = \"none\"\n\
                 [limits]\n{limits}\
                 [drain]\ndelay = \"0s\"\nrate = 100000\nreconnect_after = \"100ms\"\nreconnect_jitter = \"2s\"\ndeadline = \"30s\"\n",
                limits = ringgate_bench::gateway::NO_ADDRESS_LIMITS
            );
            GatewayChild::start(binary, &format!("storm-{i}"), &text)
        })
        .collect()
}

fn main() -> ExitCode {
    let command = Cli::parse().command;
    if !matches!(command, Cmd::Agent) {
        control::install_stop_handler();
    }
    // --addr is needed unless the command starts its own nodes.
    let spawns = matches!(&command, Cmd::Push { spawn: Some(_), .. } | Cmd::Storm { spawn_nodes: Some(_), .. });
    let load = match &command {
        Cmd::Idle { load, .. } | Cmd::Echo { load, .. } | Cmd::Push { load, .. } | Cmd::Storm { load, .. } => {
            Some(load)
        }
        _ => None,
    };
    if load.is_some_and(|l| l.addrs.is_empty()) && !spawns {
        eprintln!("ringgate-bench: --addr is required (or a --spawn option that starts the nodes)");
        return ExitCode::FAILURE;
    }
    let result: Result<(), Box<dyn std::error::Error>> = (|| {
        match command {
            Cmd::Idle { load, hold, pids } => {
                report(&scenarios::idle(&load, Duration::from_secs(hold), &pids), load.json)
            }
            Cmd::Echo { load, in_flight, payload, seconds } => {
                report(&scenarios::echo(&load, in_flight, payload, seconds), load.json)
            }
            Cmd::Push {
                mut load,
                mode,
                room_size,
                push_rate,
                seconds,
                payload,
                via,
                api,
                api_key,
                api_conns,
                api_batch,
                spawn,
                spawn_workers,
                gateway,
            } => {
                use ringgate_bench::api_push::{ApiTarget, Deployment, Spawn};
                let deployment = match spawn {
                    Some(_) => Some(Deployment::start(&gateway, spawn_workers)?),
                    None => None,
                };
                if let (Some(d), Some(spawn)) = (&deployment, spawn) {
                    load.addrs = vec![if spawn == Spawn::Same { d.a.addr } else { d.c.addr }];
                }
                let api = match via {
                    Via::Backend => None,
                    Via::Api => {
                        let addr =
                            deployment.as_ref().map(|d| d.api).or(api).ok_or("--via api needs --api or --spawn")?;
                        Some(ApiTarget { addr, key: api_key, conns: api_conns, batch: api_batch })
                    }
                };
                let before = deployment.as_ref().map(Deployment::cpu_ms);
                let mut out = scenarios::push(&load, mode, room_size, push_rate, seconds, payload, api.as_ref());
                if let (Some(d), Some(before), Some(spawn)) = (&deployment, before, spawn) {
                    let after = d.cpu_ms();
                    let deliveries = out["deliveries"].as_u64().unwrap_or(0).max(1) as f64;
                    let per = |i: usize| (after[i] - before[i]) as f64 * 1000.0 / deliveries;
                    out["spawn"] = format!("{spawn:?}").to_lowercase().into();
                    out["cpu_us_per_push"] = serde_json::json!({
                        "redis": per(0), "node_a_api": per(1), "node_c": per(2),
                    });
                }
                report(&out, load.json)
            }
            Cmd::Soak { gateway, minutes, seconds, held, rate, echoes, sample_every } => {
                let args = ringgate_bench::soak::SoakArgs {
                    duration: Duration::from_secs(seconds.unwrap_or(minutes * 60)),
                    held,
                    rate,
                    echoes,
                    sample_every: Duration::from_secs(sample_every),
                };
                println!("{}", ringgate_bench::soak::run(&gateway, &args)?);
            }
            Cmd::Abuse { gateway, attacks, window, limits, handshake_memory } => {
                let out = match handshake_memory {
                    Some(count) => ringgate_bench::abuse::handshake_memory(&gateway, count)?,
                    None => {
                        ringgate_bench::abuse::run(&gateway, &attacks, Duration::from_secs(window), limits != "off")?
                    }
                };
                println!("{out}");
            }
            Cmd::Storm { mut load, mode, reconnect_after_ms, jitter_ms, window, spawn_nodes, gateway } => {
                let nodes = match spawn_nodes {
                    Some(n) => spawn_storm_nodes(&gateway, n.max(1))?,
                    None => Vec::new(),
                };
                if !nodes.is_empty() {
                    load.addrs = nodes.iter().map(|n| n.addr).collect();
                }
                if mode != StormMode::Drop && nodes.is_empty() {
                    return Err("kill and drain need --spawn-nodes (the tool must own the node it stops)".into());
                }
                let mut stop = |mode: StormMode| {
                    if let Some(first) = nodes.first() {
                        first.signal(if mode == StormMode::Kill { libc::SIGKILL } else { libc::SIGTERM });
                    }
                };
                let out = scenarios::storm(
                    &load,
                    mode,
                    (reconnect_after_ms, jitter_ms),
                    Duration::from_secs(window),
                    Some(&mut stop),
                );
                report(&out, load.json);
            }
            Cmd::Compare(args) => {
                let out = compare::run(&args)?;
                if args.json {
                    println!("{out}");
                }
            }
            Cmd::Cluster(args) => {
                let out = cluster::run(&args)?;
                report(&out, args.json);
            }
            Cmd::Agent => fleet::agent_main()?,
            Cmd::EchoServer { listen, threads } => {
                let (tx, rx) = std::sync::mpsc::channel();
                let server = std::thread::spawn(move || ringgate_bench::echo_server::serve(listen, threads, tx));
                if let Ok(addr) = rx.recv_timeout(Duration::from_secs(5)) {
                    eprintln!("echo server listening addr={addr}");
                }
                server.join().map_err(|_| "echo server panicked")??;
            }
            Cmd::Backend { listen, id, window } => backend(listen, id, window)?,
            Cmd::Registry { logins, lookups } => ringgate_bench::registry::run(logins, lookups)?,
            Cmd::Ring { keys } => ringgate_bench::ring::report(keys),
        }
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringgate-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
