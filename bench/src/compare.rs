//! `ringgate-bench compare`: the same workload through ringgate (io_uring and epoll, the
//! same binary), through nginx's stream proxy and HAProxy in TCP mode (what a user would
//! deploy instead), and straight to the echo backend (the ceiling), interleaved
//! A B C D E A B C D E ... so drift on a shared machine hits every peer alike.
//!
//! Each round starts each peer fresh (its memory baseline is clean), holds `--idle`
//! authenticated connections to measure memory per connection and the connect rate, then
//! runs the echo workload. The tool writes the peers' configs, starts and stops them.
//!
//! Backends: ringgate routes Sends over its link protocol to two reference backends; nginx
//! and HAProxy relay client bytes to two client-protocol echo servers (`echo-server`), by
//! consistent hashing of the client address. Both backends answer each Send the same way
//! (the payload back as a Push, then an Ack), so the client sees the same traffic.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::control;
use crate::gateway::{BackendChild, EchoChild, GatewayChild};
use crate::scenarios::{self, LoadArgs};
use crate::stats::median_min_max;
use crate::transport::TransportKind;

#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// The ringgate binary (build with `cargo build --release -p ringgate`).
    #[arg(long, default_value = "target/release/ringgate")]
    pub gateway: PathBuf,
    /// Peers, in run order: ringgate-io_uring, ringgate-epoll, nginx, haproxy, direct, and
    /// ringgate-tls / ringgate-quic / ringgate-ws / ringgate-wss (clients over TLS, QUIC,
    /// WebSocket or WebSocket over TLS).
    #[arg(long, value_delimiter = ',', default_value = "ringgate-io_uring,ringgate-epoll,nginx,haproxy,direct")]
    pub peers: Vec<Peer>,
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Idle connections held for the memory measurement (a proxy holds two files per
    /// connection, so 8,000 keeps it under the 20,000-file limit).
    #[arg(long, default_value_t = 8_000)]
    pub idle: usize,
    /// Seconds the idle connections are held.
    #[arg(long, default_value_t = 3)]
    pub hold: u64,
    #[arg(long, default_value_t = 500)]
    pub echo_connections: usize,
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Measured echo seconds per round.
    #[arg(long, default_value_t = 8)]
    pub seconds: u64,
    /// Worker threads/processes of every peer.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum Peer {
    #[value(name = "ringgate-io_uring")]
    #[serde(rename = "ringgate-io_uring")]
    RinggateIoUring,
    #[value(name = "ringgate-epoll")]
    #[serde(rename = "ringgate-epoll")]
    RinggateEpoll,
    #[value(name = "nginx")]
    #[serde(rename = "nginx")]
    Nginx,
    #[value(name = "haproxy")]
    #[serde(rename = "haproxy")]
    Haproxy,
    /// The echo backend reached directly: the ceiling.
    #[value(name = "direct")]
    #[serde(rename = "direct")]
    Direct,
    /// ringgate (io_uring) with clients over TLS.
    #[value(name = "ringgate-tls")]
    #[serde(rename = "ringgate-tls")]
    RinggateTls,
    /// ringgate (io_uring) with clients over QUIC.
    #[value(name = "ringgate-quic")]
    #[serde(rename = "ringgate-quic")]
    RinggateQuic,
    /// ringgate (io_uring) with clients over WebSocket.
    #[value(name = "ringgate-ws")]
    #[serde(rename = "ringgate-ws")]
    RinggateWs,
    /// ringgate (io_uring) with clients over WebSocket over TLS.
    #[value(name = "ringgate-wss")]
    #[serde(rename = "ringgate-wss")]
    RinggateWss,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::RinggateIoUring => "ringgate-io_uring",
            Peer::RinggateEpoll => "ringgate-epoll",
            Peer::Nginx => "nginx",
            Peer::Haproxy => "haproxy",
            Peer::Direct => "direct",
            Peer::RinggateTls => "ringgate-tls",
            Peer::RinggateQuic => "ringgate-quic",
            Peer::RinggateWs => "ringgate-ws",
            Peer::RinggateWss => "ringgate-wss",
        }
    }

    fn transport(self) -> TransportKind {
        match self {
            Peer::RinggateTls => TransportKind::Tls,
            Peer::RinggateQuic => TransportKind::Quic,
            Peer::RinggateWs => TransportKind::Ws,
            Peer::RinggateWss => TransportKind::Wss,
            _ => TransportKind::Tcp,
        }
    }

    fn is_ringgate(self) -> bool {
        !matches!(self, Peer::Nginx | Peer::Haproxy | Peer::Direct)
    }
}

/// One peer's figures in one round.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Round {
    pub peer: String,
    pub round: usize,
    pub idle_held: u64,
    pub user_bytes_per_conn: f64,
    pub slab_bytes_per_conn: f64,
    pub connects_per_s: f64,
    pub acked_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub errors: u64,
}

/// A running peer: its address and the processes whose memory counts.
enum Running {
    Gateway(GatewayChild),
    /// A gateway whose clients use its TLS, QUIC, ws or wss listener at this address.
    Secure(GatewayChild, std::net::SocketAddr, PathBuf),
    Echo(EchoChild),
    Proxy {
        child: Child,
        addr: std::net::SocketAddr,
        dir: PathBuf,
    },
}

impl Running {
    fn addr(&self) -> std::net::SocketAddr {
        match self {
            Running::Gateway(g) => g.addr,
            Running::Secure(_, addr, _) => *addr,
            Running::Echo(e) => e.addr,
            Running::Proxy { addr, .. } => *addr,
        }
    }

    /// The proxy's processes: nginx's master and workers, HAProxy's one process.
    fn pids(&self) -> Vec<u32> {
        match self {
            Running::Gateway(g) | Running::Secure(g, ..) => vec![g.pid()],
            Running::Echo(e) => vec![e.pid()],
            Running::Proxy { child, .. } => {
                let mut pids = vec![child.id()];
                pids.extend(children_of(child.id()));
                pids
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        match self {
            Running::Proxy { child, dir, .. } => {
                stop_tree(child);
                let _ = std::fs::remove_dir_all(dir);
            }
            Running::Secure(_, _, dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            _ => {}
        }
    }
}

/// Stops a proxy and its workers: SIGTERM to the parent (nginx's master then stops its
/// workers; killing the master outright would orphan them, still listening), up to 5 s
/// for it to exit, then SIGKILL for whatever is left.
fn stop_tree(child: &mut Child) {
    let workers = children_of(child.id());
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let exited = crate::run::wait_for(Duration::from_secs(5), || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
    }
    for pid in workers {
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            // SAFETY: kill(2) on a worker of the proxy we started (still its process).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_owned)))
                .flatten()
                .is_some_and(|ppid| ppid == pid.to_string())
        })
        .collect()
}

/// A loopback TCP port free now (for a child's listener chosen up front).
pub(crate) fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_port(addr: std::net::SocketAddr) -> bool {
    crate::run::wait_for(Duration::from_secs(10), || std::net::TcpStream::connect(addr).is_ok())
}

fn start_nginx(workers: usize, backends: &[std::net::SocketAddr]) -> std::io::Result<Running> {
    let dir = std::env::temp_dir().join(format!("ringgate-compare-nginx-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("logs"))?;
    let port = free_port()?;
    let module = ["/usr/lib/nginx/modules/ngx_stream_module.so", "/usr/share/nginx/modules/ngx_stream_module.so"]
        .iter()
        .find(|p| Path::new(p).exists())
        .map(|p| format!("load_module {p};\n"))
        .unwrap_or_default();
    let servers: String = backends.iter().map(|b| format!("    server {b};\n")).collect();
    let conf = format!(
        "{module}user root;\nworker_processes {workers};\ndaemon off;\npid {dir}/nginx.pid;\n\
         error_log {dir}/logs/error.log warn;\nworker_rlimit_nofile 19000;\n\
         events {{ worker_connections 18000; multi_accept on; }}\n\
         stream {{\n  upstream echo {{\n    hash $remote_addr consistent;\n{servers}  }}\n\
         server {{\n    listen 127.0.0.1:{port} reuseport;\n    proxy_pass echo;\n    proxy_timeout 1h;\n  }}\n}}\n",
        dir = dir.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| std::io::Error::other(format!("nginx: {e} (apt-get install nginx libnginx-mod-stream)")))?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let master = child.id();
    let running = Running::Proxy { child, addr, dir };
    if !wait_port(addr) {
        return Err(std::io::Error::other("nginx did not start listening (see its error.log)"));
    }
    // The workers' memory is what counts: wait until they exist before taking pids.
    if !crate::run::wait_for(Duration::from_secs(5), || children_of(master).len() >= workers) {
        return Err(std::io::Error::other("nginx workers did not start"));
    }
    Ok(running)
}

fn start_haproxy(workers: usize, backends: &[std::net::SocketAddr]) -> std::io::Result<Running> {
    let dir = std::env::temp_dir().join(format!("ringgate-compare-haproxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let servers: String = backends.iter().enumerate().map(|(i, b)| format!("  server s{i} {b}\n")).collect();
    let conf = format!(
        "global\n  maxconn 9000\n  nbthread {workers}\n\
         defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n\
         backend be\n  balance source\n  hash-type consistent\n{servers}"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, conf)?;
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| std::io::Error::other(format!("haproxy: {e} (apt-get install haproxy)")))?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let running = Running::Proxy { child, addr, dir };
    if !wait_port(addr) {
        return Err(std::io::Error::other("haproxy did not start listening"));
    }
    Ok(running)
}

/// ringgate with a fresh self-signed certificate and the listener `peer` uses: TLS and QUIC
/// on one port, or ws or wss (only that one, so that each peer's memory is its own and a
/// binary older than WebSocket can be compared on TLS and QUIC).
fn start_secure(peer: Peer, args: &CompareArgs, backends: &[std::net::SocketAddr]) -> std::io::Result<Running> {
    let dir = std::env::temp_dir().join(format!("ringgate-compare-{}-{}", peer.name(), std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let status = Command::new(&args.gateway).arg("cert").arg("--out").arg(&dir).stdout(Stdio::null()).status()?;
    if !status.success() {
        return Err(std::io::Error::other("ringgate cert failed"));
    }
    let (port, ws, wss) = (free_port()?, free_port()?, free_port()?);
    let text = crate::gateway::bench_config(
        "io_uring",
        args.workers,
        backends,
        &match peer {
            Peer::RinggateWs => format!("ws = \"127.0.0.1:{ws}\"\n"),
            Peer::RinggateWss => format!("wss = \"127.0.0.1:{wss}\"\n"),
            _ => format!("tls = \"127.0.0.1:{port}\"\nquic = \"127.0.0.1:{port}\"\n"),
        },
        &format!("[tls]\ncert = \"{dir}/cert.pem\"\nkey = \"{dir}/key.pem\"\n", dir = dir.display()),
    );
    let gw = GatewayChild::start(&args.gateway, peer.name(), &text)?;
    let port = match peer {
        Peer::RinggateWs => ws,
        Peer::RinggateWss => wss,
        _ => port,
    };
    Ok(Running::Secure(gw, std::net::SocketAddr::from(([127, 0, 0, 1], port)), dir))
}

struct Backends {
    links: Vec<BackendChild>,
    echoes: Vec<EchoChild>,
}

fn start(peer: Peer, args: &CompareArgs, b: &Backends) -> std::io::Result<Running> {
    let link_addrs: Vec<_> = b.links.iter().map(|l| l.addr).collect();
    let echo_addrs: Vec<_> = b.echoes.iter().map(|e| e.addr).collect();
    let running = match peer {
        Peer::RinggateIoUring => {
            Running::Gateway(GatewayChild::spawn(&args.gateway, "io_uring", args.workers, &link_addrs)?)
        }
        Peer::RinggateEpoll => {
            Running::Gateway(GatewayChild::spawn(&args.gateway, "epoll", args.workers, &link_addrs)?)
        }
        Peer::Nginx => start_nginx(args.workers, &echo_addrs)?,
        Peer::Haproxy => start_haproxy(args.workers, &echo_addrs)?,
        Peer::Direct => Running::Echo(EchoChild::spawn(args.workers)?),
        Peer::RinggateTls | Peer::RinggateQuic | Peer::RinggateWs | Peer::RinggateWss => {
            start_secure(peer, args, &link_addrs)?
        }
    };
    if peer.is_ringgate() {
        // Let every worker's backend links finish their handshakes.
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(running)
}

fn load_args(args: &CompareArgs, peer: Peer, addr: std::net::SocketAddr, connections: usize) -> LoadArgs {
    LoadArgs {
        addrs: vec![addr],
        transport: peer.transport(),
        ca: None,
        connections,
        rate: 0,
        threads: args.threads,
        sources: 64,
        processes: None,
        token_key: None,
        json: true,
        quiet: true,
    }
}

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_f64().unwrap_or(0.0)
}

fn measure(peer: Peer, round: usize, args: &CompareArgs, backends: &Backends) -> std::io::Result<Round> {
    let running = start(peer, args, backends)?;
    let pids = running.pids();
    let mut r = Round { peer: peer.name().into(), round, ..Default::default() };
    if args.idle > 0 {
        let idle =
            scenarios::idle(&load_args(args, peer, running.addr(), args.idle), Duration::from_secs(args.hold), &pids);
        r.idle_held = f(&idle, &["held_at_measurement"]) as u64;
        r.user_bytes_per_conn = f(&idle, &["user_bytes_per_conn"]);
        r.slab_bytes_per_conn = f(&idle, &["slab_bytes_per_conn_both_ends"]);
        r.connects_per_s = f(&idle, &["connect_rate_per_s"]);
        r.errors += idle["errors"].as_object().map_or(0, |e| e.values().filter_map(Value::as_u64).sum());
        // Let the closes finish before the echo run.
        std::thread::sleep(Duration::from_millis(500));
    }
    if args.seconds > 0 && !control::stopping() {
        let echo = scenarios::echo(
            &load_args(args, peer, running.addr(), args.echo_connections),
            args.in_flight,
            args.payload,
            args.seconds,
        );
        r.acked_per_s = f(&echo, &["acked_per_s"]);
        r.p50_us = f(&echo, &["rtt_us", "p50"]) as u64;
        r.p99_us = f(&echo, &["rtt_us", "p99"]) as u64;
        r.errors += echo["errors"].as_object().map_or(0, |e| e.values().filter_map(Value::as_u64).sum());
    }
    Ok(r)
}

/// Runs the comparison; returns the per-round results and the summary as JSON and prints
/// the table unless `--json`.
pub fn run(args: &CompareArgs) -> std::io::Result<Value> {
    let needs_links = args.peers.iter().any(|p| p.is_ringgate());
    let needs_echo = args.peers.iter().any(|p| matches!(p, Peer::Nginx | Peer::Haproxy));
    let backends = Backends {
        links: if needs_links {
            vec![BackendChild::spawn(&args.gateway)?, BackendChild::spawn(&args.gateway)?]
        } else {
            Vec::new()
        },
        echoes: if needs_echo { vec![EchoChild::spawn(1)?, EchoChild::spawn(1)?] } else { Vec::new() },
    };
    let mut rounds = Vec::new();
    'rounds: for round in 1..=args.rounds {
        for &peer in &args.peers {
            if control::stopping() {
                break 'rounds;
            }
            let r = measure(peer, round, args, &backends)?;
            eprintln!(
                "round {round} {:<18} idle {:>6} held, {:>6.0} B/conn user, {:>6.0} B/conn slab, {:>7.0} conn/s; echo {:>8.0} acked/s p50 {} us p99 {} us; {} errors",
                r.peer,
                r.idle_held,
                r.user_bytes_per_conn,
                r.slab_bytes_per_conn,
                r.connects_per_s,
                r.acked_per_s,
                r.p50_us,
                r.p99_us,
                r.errors
            );
            rounds.push(r);
        }
    }
    let summary = summarize(&rounds, &args.peers);
    if !args.json {
        print_table(&summary, args);
    }
    Ok(json!({"subcommand": "compare", "rounds": rounds, "summary": summary}))
}

type Metric = fn(&Round) -> f64;

const METRICS: [(&str, Metric); 6] = [
    ("user_bytes_per_conn", |r| r.user_bytes_per_conn),
    ("slab_bytes_per_conn", |r| r.slab_bytes_per_conn),
    ("connects_per_s", |r| r.connects_per_s),
    ("acked_per_s", |r| r.acked_per_s),
    ("p50_us", |r| r.p50_us as f64),
    ("p99_us", |r| r.p99_us as f64),
];

/// Medians (min, max) per peer and metric, with ratios to nginx and to the ceiling.
fn summarize(rounds: &[Round], peers: &[Peer]) -> Value {
    let median = |peer: &str, m: Metric| {
        let v: Vec<f64> = rounds.iter().filter(|r| r.peer == peer).map(m).collect();
        median_min_max(&v)
    };
    let mut out = serde_json::Map::new();
    for peer in peers {
        let mut per = serde_json::Map::new();
        for (name, m) in METRICS {
            let (med, min, max) = median(peer.name(), m);
            let nginx = median("nginx", m).0;
            let direct = median("direct", m).0;
            per.insert(
                name.into(),
                json!({
                    "median": med, "min": min, "max": max,
                    "vs_nginx": if nginx > 0.0 { Some(med / nginx) } else { None },
                    "vs_direct": if direct > 0.0 { Some(med / direct) } else { None },
                }),
            );
        }
        out.insert(peer.name().into(), Value::Object(per));
    }
    Value::Object(out)
}

fn print_table(summary: &Value, args: &CompareArgs) {
    println!(
        "{} rounds interleaved; idle {} conns held {} s; echo {} conns x {} in flight x {} B for {} s; {} workers each",
        args.rounds,
        args.idle,
        args.hold,
        args.echo_connections,
        args.in_flight,
        args.payload,
        args.seconds,
        args.workers
    );
    println!(
        "| peer | idle user B/conn | kernel slab B/conn | connects/s | acked Sends/s | p50 us | p99 us | user mem vs nginx | kernel vs nginx | conn/s vs nginx | acked/s vs nginx | acked/s vs direct | p50 vs nginx | p99 vs nginx |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let cell = |v: &Value| {
        format!(
            "{:.0} ({:.0}-{:.0})",
            v["median"].as_f64().unwrap_or(0.0),
            v["min"].as_f64().unwrap_or(0.0),
            v["max"].as_f64().unwrap_or(0.0)
        )
    };
    let ratio = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.2}"));
    for peer in &args.peers {
        let p = &summary[peer.name()];
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            peer.name(),
            cell(&p["user_bytes_per_conn"]),
            cell(&p["slab_bytes_per_conn"]),
            cell(&p["connects_per_s"]),
            cell(&p["acked_per_s"]),
            cell(&p["p50_us"]),
            cell(&p["p99_us"]),
            ratio(&p["user_bytes_per_conn"]["vs_nginx"]),
            ratio(&p["slab_bytes_per_conn"]["vs_nginx"]),
            ratio(&p["connects_per_s"]["vs_nginx"]),
            ratio(&p["acked_per_s"]["vs_nginx"]),
            ratio(&p["acked_per_s"]["vs_direct"]),
            ratio(&p["p50_us"]["vs_nginx"]),
            ratio(&p["p99_us"]["vs_nginx"]),
        );
    }
}
