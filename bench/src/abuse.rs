//! `ringgate-bench abuse`: a node with the shipped admission defaults (or, `--limits off`,
//! with the per-address limits lifted), attacked as issue 17 describes, each attack from one
//! address of its own while a probe client (127.0.0.2)
//! echoes and fresh TCP, TLS and QUIC logins (127.0.0.3) are timed:
//! - `idle`: 10,000 sockets that never send anything;
//! - `slow-auth`: 10,000 sockets that send the first bytes of an Auth and stall;
//! - `bad-token`: Auths with an invalid token as fast as 4 threads can reconnect;
//! - `hello-replay`: one captured TLS ClientHello replayed on new connections (no crypto);
//! - `quic-initials`: 1,200 QUIC Initials never followed up, from 1,200 ports.
//!
//! Reported per phase (alone, then each attack): the probe's echo p50/p99/max, each login's
//! time, the node's CPU (% of one core, from /proc) and its admission refusals by reason.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringgate_codec::session::{ClientConfig, ClientEvent, ClientSession};
use serde_json::{Value, json};

use crate::gateway::GatewayChild;
use crate::run::{Identity, client_config_for};
use crate::stats::{Percentiles, RunStats};
use crate::transport::{Connector, TransportKind};

const KID: &str = "abuse";
const SECRET: &str = "abuse-secret-0123456789abcdef";

/// One attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Attack {
    Idle,
    SlowAuth,
    BadToken,
    HelloReplay,
    QuicInitials,
}

/// The node under attack and where it listens.
struct Target {
    node: GatewayChild,
    tcp: SocketAddr,
    tls: SocketAddr,
    quic: SocketAddr,
    admin: SocketAddr,
    _dir: tempdir::TempDir,
}

mod tempdir {
    /// A directory removed on drop.
    pub struct TempDir(pub std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn start(binary: &Path, limits: bool) -> std::io::Result<Target> {
    let dir = std::env::temp_dir().join(format!("ringgate-abuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (cert, key) = ringgate::transport::tls::self_signed(&["localhost".into()]).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("cert.pem"), cert)?;
    std::fs::write(dir.join("key.pem"), key)?;
    let (secure, admin) = (crate::compare::free_port()?, crate::compare::free_port()?);
    // The shipped defaults for everything admission control decides; 2 workers like the
    // default on this 2-core machine.
    let text = format!(
        "[listen]\ntcp = \"127.0.0.1:0\"\ntls = \"127.0.0.1:{secure}\"\nquic = \"127.0.0.1:{secure}\"\nadmin = \"127.0.0.1:{admin}\"\n\
         [io]\nworkers = 2\n[auth]\nmode = \"token\"\n[auth.keys]\n{KID} = \"{SECRET}\"\n\
         [tls]\ncert = \"{c}\"\nkey = \"{k}\"\n{off}",
        c = dir.join("cert.pem").display(),
        k = dir.join("key.pem").display(),
        off = if limits { String::new() } else { format!("[limits]\n{}", crate::gateway::NO_ADDRESS_LIMITS) },
    );
    let node = GatewayChild::start(binary, "abuse", &text)?;
    let ip: IpAddr = [127, 0, 0, 1].into();
    Ok(Target {
        tcp: node.addr,
        tls: (ip, secure).into(),
        quic: (ip, secure).into(),
        admin: (ip, admin).into(),
        node,
        _dir: tempdir::TempDir(dir),
    })
}

fn identity() -> Identity {
    Identity::Token { kid: KID.into(), secret: SECRET.into() }
}

/// The probe: one connection from 127.0.0.2 echoing one Send at a time for `window`.
fn probe(addr: SocketAddr, window: Duration) -> Percentiles {
    let Ok(runtime) = compio::runtime::Runtime::new() else { return Percentiles::default() };
    runtime.block_on(async move {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
        let stats = Rc::new(RefCell::new(RunStats::default()));
        let config = client_config_for(&identity(), "probe".into(), 1);
        let Ok(connector) = Connector::new(TransportKind::Tcp, None) else { return Percentiles::default() };
        let Ok(mut conn) = crate::conn::login(&connector, addr, Some([127, 0, 0, 2].into()), config, &stats).await
        else {
            return Percentiles::default();
        };
        let end = Instant::now() + window;
        while Instant::now() < end {
            let sent = Instant::now();
            if !conn.send(None, b"probe", sent) || conn.flush().await.is_err() {
                break;
            }
            let mut acked = false;
            while !acked && Instant::now() < end + Duration::from_secs(2) {
                while let Some(event) = conn.next_event() {
                    if matches!(event, ClientEvent::Ack { .. }) {
                        acked = true;
                    }
                }
                if !acked && !matches!(compio::time::timeout(Duration::from_secs(2), conn.read()).await, Ok(Ok(true))) {
                    break;
                }
            }
            if acked {
                let _ = h.record(sent.elapsed().as_micros() as u64);
            }
            compio::time::sleep(Duration::from_millis(2)).await;
        }
        Percentiles::of(&h)
    })
}

/// A fresh login over `kind` from 127.0.0.3: how long until AuthOk (`None`: it failed).
fn login_time(kind: TransportKind, addr: SocketAddr) -> Option<f64> {
    let runtime = compio::runtime::Runtime::new().ok()?;
    runtime.block_on(async move {
        let connector = Connector::new(kind, None).ok()?;
        let stats = Rc::new(RefCell::new(RunStats::default()));
        let config = client_config_for(&identity(), format!("fresh-{}", kind.name()), 2);
        let started = Instant::now();
        let source = (kind != TransportKind::Quic).then(|| [127, 0, 0, 3].into());
        let login = compio::time::timeout(
            Duration::from_secs(10),
            crate::conn::login(&connector, addr, source, config, &stats),
        );
        let conn = login.await.ok()?.ok()?;
        let took = started.elapsed().as_secs_f64() * 1000.0;
        conn.abort();
        connector.finish().await;
        Some(took)
    })
}

/// A TCP connection from `source`.
fn connect_from(source: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect(&addr.into())?;
    Ok(socket.into())
}

/// An attack running on threads until `stop`; returns what it sent. Each attack comes from
/// an address of its own (127.0.9.N), so one attack's ban does not carry into the next.
fn launch(attack: Attack, target: &Target, stop: Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<u64>> {
    let from: IpAddr = [127, 0, 9, attack as u8 + 1].into();
    let (tcp, tls, quic) = (target.tcp, target.tls, target.quic);
    let count = Arc::new(AtomicU64::new(0));
    let spawn = |f: Box<dyn FnOnce() -> u64 + Send>| std::thread::spawn(f);
    match attack {
        Attack::Idle | Attack::SlowAuth => {
            let stop = stop.clone();
            vec![spawn(Box::new(move || {
                let partial = auth_bytes("not-a-token");
                let mut held = Vec::new();
                for _ in 0..10_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(mut s) = connect_from(from, tcp) else { continue };
                    if attack == Attack::SlowAuth {
                        let _ = s.write_all(&partial[..3.min(partial.len())]);
                    }
                    held.push(s);
                }
                let opened = held.len() as u64;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                opened
            }))]
        }
        Attack::BadToken => (0..4)
            .map(|_| {
                let (stop, count) = (stop.clone(), count.clone());
                spawn(Box::new(move || {
                    let auth = auth_bytes("not-a-token");
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(mut s) = connect_from(from, tcp) else { continue };
                        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                        let _ = s.write_all(&auth);
                        let mut buf = [0u8; 256];
                        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    count.load(Ordering::Relaxed)
                }))
            })
            .collect(),
        Attack::HelloReplay => (0..4)
            .map(|_| {
                let (stop, count) = (stop.clone(), count.clone());
                spawn(Box::new(move || {
                    let hello = client_hello();
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(mut s) = connect_from(from, tls) else { continue };
                        let _ = s.write_all(&hello);
                        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                        let mut buf = [0u8; 4096];
                        let _ = s.read(&mut buf);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    count.load(Ordering::Relaxed)
                }))
            })
            .collect(),
        Attack::QuicInitials => {
            let stop = stop.clone();
            vec![spawn(Box::new(move || {
                let mut sockets = Vec::new();
                let Some(config) = quic_client_config() else { return 0 };
                for _ in 0..1200 {
                    let mut endpoint =
                        quinn_proto::Endpoint::new(Arc::new(quinn_proto::EndpointConfig::default()), None, false, None);
                    let Ok((_, mut conn)) = endpoint.connect(Instant::now(), config.clone(), quic, "localhost") else {
                        continue;
                    };
                    let Ok(socket) = std::net::UdpSocket::bind(SocketAddr::new(from, 0)) else { continue };
                    let mut buf = Vec::new();
                    while let Some(t) = conn.poll_transmit(Instant::now(), 1, &mut buf) {
                        let _ = socket.send_to(&buf[..t.size], quic);
                        buf.clear();
                    }
                    sockets.push(socket);
                }
                let sent = sockets.len() as u64;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                sent
            }))]
        }
    }
}

fn auth_bytes(token: &str) -> Vec<u8> {
    let mut session = ClientSession::new(ClientConfig::new(token, "mallory", "d"), Instant::now());
    session.output().split().to_vec()
}

fn client_hello() -> Vec<u8> {
    let Ok(config) = crate::transport::client_tls(None) else { return Vec::new() };
    let Ok(mut conn) = rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().expect("a name")) else {
        return Vec::new();
    };
    let mut hello = Vec::new();
    let _ = conn.write_tls(&mut hello);
    hello
}

fn quic_client_config() -> Option<quinn_proto::ClientConfig> {
    let mut tls = crate::transport::client_tls(None).ok()?;
    tls.alpn_protocols = vec![b"ringgate/1".to_vec()];
    let crypto = quinn_proto::crypto::rustls::QuicClientConfig::try_from(tls).ok()?;
    Some(quinn_proto::ClientConfig::new(Arc::new(crypto)))
}

/// The node's admission refusals so far, by reason, from its /metrics.
fn refusals(admin: SocketAddr) -> Value {
    let mut out = serde_json::Map::new();
    let Ok(mut s) = TcpStream::connect(admin) else { return Value::Object(out) };
    let _ = write!(s, "GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    for line in text.lines().filter(|l| l.starts_with("ringgate_admission_refused_total{")) {
        let reason = line.split("reason=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("?").to_owned();
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let entry = out.entry(reason).or_insert(json!(0.0));
        *entry = json!(entry.as_f64().unwrap_or(0.0) + value);
    }
    out.retain(|_, v| v.as_f64().unwrap_or(0.0) > 0.0);
    Value::Object(out)
}

/// Runs the phases; returns one JSON object.
pub fn run(binary: &Path, attacks: &[Attack], window: Duration, limits: bool) -> std::io::Result<Value> {
    let target = start(binary, limits)?;
    let pid = target.node.pid();
    let mut phases = Vec::new();
    let mut phase = |name: &str, attack: Option<Attack>| {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = attack.map(|a| launch(a, &target, stop.clone())).unwrap_or_default();
        // Let the attack build up before measuring.
        std::thread::sleep(Duration::from_millis(if attack.is_some() { 1500 } else { 200 }));
        let cpu_before = crate::procinfo::cpu_ms(pid).unwrap_or(0);
        let started = Instant::now();
        let p = probe(target.tcp, window);
        let logins = json!({
            "tcp_ms": login_time(TransportKind::Tcp, target.tcp),
            "tls_ms": login_time(TransportKind::Tls, target.tls),
            "quic_ms": login_time(TransportKind::Quic, target.quic),
        });
        let cpu = (crate::procinfo::cpu_ms(pid).unwrap_or(0) - cpu_before) as f64
            / started.elapsed().as_millis().max(1) as f64;
        stop.store(true, Ordering::Relaxed);
        let sent: u64 = threads.into_iter().filter_map(|t| t.join().ok()).max().unwrap_or(0);
        phases.push(json!({
            "phase": name,
            "attack_sent": sent,
            "probe_us": {"p50": p.p50_us, "p99": p.p99_us, "max": p.max_us},
            "login": logins,
            "gateway_cpu_pct": (cpu * 100.0).round(),
            "refused_so_far": refusals(target.admin),
        }));
        // Let the node release what the attack left before the next phase.
        std::thread::sleep(Duration::from_secs(2));
    };
    phase("alone", None);
    for &attack in attacks {
        let name = format!("{attack:?}").to_lowercase();
        phase(&name, Some(attack));
    }
    Ok(json!({ "subcommand": "abuse", "address_limits": limits, "window_s": window.as_secs_f64(), "phases": phases }))
}

/// `abuse --handshake-memory N`: what `N` TLS handshakes leave behind. A node with the
/// per-address limits lifted gets `N` connections (from 250 source addresses) that each send
/// a ClientHello and stall (the node builds its handshake state and answers); then all close.
/// The node's RSS (all, and anonymous) idle, at the peak, and 15 s after the last one closed
/// (one allocator trim interval and more), twice over, so a ratchet would show.
pub fn handshake_memory(binary: &Path, count: usize) -> std::io::Result<Value> {
    let target = start(binary, false)?;
    let pid = target.node.pid();
    let rss = || {
        json!({
            "rss_kib": crate::procinfo::rss_kib(pid).unwrap_or(0),
            "rss_anon_kib": crate::procinfo::rss_anon_kib(pid).unwrap_or(0),
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let idle = rss();
    let hello = client_hello();
    let mut rounds = Vec::new();
    for _ in 0..2 {
        let mut held = Vec::with_capacity(count);
        let started = Instant::now();
        for i in 0..count {
            let source: IpAddr = [127, 0, 10, (i % 250 + 1) as u8].into();
            let Ok(mut s) = connect_from(source, target.tls) else { continue };
            if s.write_all(&hello).is_ok() {
                held.push(s);
            }
        }
        let opened_in = started.elapsed();
        std::thread::sleep(Duration::from_millis(500));
        let peak = rss();
        let sent = held.len();
        drop(held);
        std::thread::sleep(Duration::from_secs(15));
        rounds
            .push(json!({ "hellos": sent, "opened_in_s": opened_in.as_secs_f64(), "peak": peak, "after_15s": rss() }));
    }
    let anon = |v: &Value| v["rss_anon_kib"].as_f64().unwrap_or(0.0);
    let last = rounds.last().map(|r| anon(&r["after_15s"])).unwrap_or(0.0);
    Ok(json!({
        "subcommand": "abuse --handshake-memory",
        "idle": idle,
        "rounds": rounds,
        "anon_after_vs_idle_pct": ((last - anon(&idle)) / anon(&idle).max(1.0) * 1000.0).round() / 10.0,
    }))
}
