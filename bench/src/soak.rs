//! `ringgate-bench soak`: one node with a reference backend and Redis, for a long time,
//! under churn: `held` TCP connections stay up with a Send every 5 s, while new connections
//! (TCP, TLS and QUIC in turn) open at `rate` per second, log in, echo a few Sends and close.
//! At a third of the run the backend restarts, at two thirds Redis does. The node's RSS and
//! open files are sampled each minute. Goals (issue 23): after the first 5 minutes RSS grows
//! less than 2%; when the churn stops the open files are back to the held count over the
//! idle baseline; no error except those the restarts cause, and each Send gets exactly one Ack.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringgate_codec::ReasonCode;
use ringgate_codec::session::ClientEvent;
use serde_json::{Value, json};

use crate::conn::{Workload, unix_ms};
use crate::gateway::GatewayChild;
use crate::run::{Identity, LoadSpec, client_config_for};
use crate::stats::RunStats;
use crate::transport::{Connector, TransportKind};

const KID: &str = "soak";
const SECRET: &str = "soak-secret-0123456789abcdef";
/// Errors within this long after a restart are the restart's.
const RESTART_SHADOW: Duration = Duration::from_secs(15);

/// When the backend and Redis were restarted.
type Restarts = Arc<std::sync::Mutex<Vec<Instant>>>;

/// What a soak run does.
#[derive(Debug, Clone)]
pub struct SoakArgs {
    pub duration: Duration,
    pub held: usize,
    /// New churning connections per second.
    pub rate: u64,
    /// Sends each churning connection echoes before closing.
    pub echoes: usize,
    pub sample_every: Duration,
}

/// What the churning connections saw.
#[derive(Debug, Default)]
struct Churn {
    logins: u64,
    sends: u64,
    acks: u64,
    acks_ok: u64,
    /// Sends whose Ack never came (the connection ended or 5 s passed).
    missing_acks: u64,
    /// Acks beyond one per Send.
    duplicate_acks: u64,
    /// Failures by reason, split by whether a restart was recent.
    errors: std::collections::BTreeMap<String, u64>,
    restart_errors: std::collections::BTreeMap<String, u64>,
}

fn identity() -> Identity {
    Identity::Token { kid: KID.into(), secret: SECRET.into() }
}

/// A redis-server on `port` (persistence off); killed on drop.
struct Redis(Child);

impl Redis {
    fn start(port: u16) -> std::io::Result<Redis> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Redis(child))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The reference backend on a fixed address (so a restart comes back where links look).
fn backend(binary: &Path, addr: SocketAddr) -> std::io::Result<Child> {
    let child = Command::new(binary)
        .args(["reference-backend", "--listen", &addr.to_string(), "--id", "soak", "--window", "16384"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(addr).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

fn sample(pid: u32, since: Instant) -> Value {
    json!({
        "minute": (since.elapsed().as_secs_f64() / 60.0 * 10.0).round() / 10.0,
        "rss_kib": crate::procinfo::rss_kib(pid).unwrap_or(0),
        "rss_anon_kib": crate::procinfo::rss_anon_kib(pid).unwrap_or(0),
        "fds": crate::procinfo::open_fds(pid).unwrap_or(0),
        "cpu_ms": crate::procinfo::cpu_ms(pid).unwrap_or(0),
    })
}

/// Runs the soak; returns its figures.
pub fn run(binary: &Path, args: &SoakArgs) -> std::io::Result<Value> {
    let dir = std::env::temp_dir().join(format!("ringgate-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (cert, key) = ringgate::transport::tls::self_signed(&["localhost".into()]).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("cert.pem"), cert)?;
    std::fs::write(dir.join("key.pem"), key)?;
    let free = crate::compare::free_port;
    let (secure, redis_port, backend_port) = (free()?, free()?, free()?);
    let backend_addr: SocketAddr = ([127, 0, 0, 1], backend_port).into();
    let mut redis = Some(Redis::start(redis_port)?);
    let mut be = Some(backend(binary, backend_addr)?);
    let text = format!(
        "[listen]\ntcp = \"127.0.0.1:0\"\ntls = \"127.0.0.1:{secure}\"\nquic = \"127.0.0.1:{secure}\"\n\
         [io]\nworkers = 2\n[limits]\n{limits}[auth]\nmode = \"token\"\n[auth.keys]\n{KID} = \"{SECRET}\"\n\
         [tls]\ncert = \"{c}\"\nkey = \"{k}\"\n[backend]\naddresses = [\"{backend_addr}\"]\nreconnect_max = \"500ms\"\n\
         [redis]\nurl = \"redis://127.0.0.1:{redis_port}\"\nlease_ttl = \"3s\"\n",
        limits = crate::gateway::NO_ADDRESS_LIMITS,
        c = dir.join("cert.pem").display(),
        k = dir.join("key.pem").display(),
    );
    let node = GatewayChild::start(binary, "soak", &text)?;
    let pid = node.pid();
    let ip: IpAddr = [127, 0, 0, 1].into();
    let (tcp, tls, quic) = (node.addr, SocketAddr::new(ip, secure), SocketAddr::new(ip, secure));
    std::thread::sleep(Duration::from_secs(1));
    let idle = sample(pid, Instant::now());

    let started = Instant::now();
    let end_ms = unix_ms() + args.duration.as_millis() as u64;
    let held_spec = LoadSpec {
        addrs: vec![tcp],
        transport: TransportKind::Tcp,
        ca: None,
        first: 0,
        count: args.held,
        threads: 1,
        rate: 500,
        sources: 16,
        identity: identity(),
        workload: Workload::Idle { until_ms: end_ms + 15_000, send_every_ms: 5_000, measure_from_ms: 0 },
    };
    let held = std::thread::spawn(move || crate::fleet::run(&held_spec, Some(1), false));
    let restarts: Restarts = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (args, restarts, stop) = (args.clone(), restarts.clone(), stop.clone());
        std::thread::spawn(move || churn_loop(&args, [tcp, tls, quic], &restarts, &stop))
    };

    let mut samples = vec![];
    let mut events = vec![];
    let third = args.duration / 3;
    let mut next_sample = started;
    let (mut backend_restarted, mut redis_restarted) = (false, false);
    while started.elapsed() < args.duration {
        if Instant::now() >= next_sample {
            samples.push(sample(pid, started));
            next_sample += args.sample_every;
        }
        if !backend_restarted && started.elapsed() >= third {
            backend_restarted = true;
            restarts.lock().map(|mut r| r.push(Instant::now())).ok();
            if let Some(mut child) = be.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            std::thread::sleep(Duration::from_secs(2));
            be = Some(backend(binary, backend_addr)?);
            events.push(json!({"minute": started.elapsed().as_secs() / 60, "event": "backend restarted (2 s down)"}));
        }
        if !redis_restarted && started.elapsed() >= third * 2 {
            redis_restarted = true;
            restarts.lock().map(|mut r| r.push(Instant::now())).ok();
            drop(redis.take());
            std::thread::sleep(Duration::from_secs(2));
            redis = Some(Redis::start(redis_port)?);
            events.push(json!({"minute": started.elapsed().as_secs() / 60, "event": "redis restarted (2 s down)"}));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let churned = churn.join().unwrap_or_default();
    // The churn is over, the held connections still up: files should be back to baseline + held.
    std::thread::sleep(Duration::from_secs(5));
    let after_churn = sample(pid, started);
    let held_stats: RunStats = held.join().unwrap_or_default();
    drop((be, redis));

    // Growth from minute 5 to after the churn, of all of RSS and of its anonymous part.
    let growth = |field: &str| {
        let value = |v: &Value| v[field].as_f64().unwrap_or(0.0);
        let at5 = samples.iter().find(|s| s["minute"].as_f64().unwrap_or(0.0) >= 5.0).map(value)?;
        let pct = (value(&after_churn) - at5) / at5.max(1.0) * 100.0;
        Some((pct * 100.0).round() / 100.0)
    };
    let fds_expected = idle["fds"].as_u64().unwrap_or(0) + args.held as u64;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "subcommand": "soak",
        "duration_s": args.duration.as_secs(),
        "held": args.held,
        "churn_rate_per_s": args.rate,
        "echoes_per_connection": args.echoes,
        "idle": idle,
        "samples": samples,
        "after_churn": after_churn,
        "events": events,
        "rss_growth_after_minute_5_pct": growth("rss_kib"),
        "anon_rss_growth_after_minute_5_pct": growth("rss_anon_kib"),
        "fds_after_churn": after_churn["fds"],
        "fds_expected": fds_expected,
        "churn": {
            "logins": churned.logins,
            "sends": churned.sends,
            "acks": churned.acks,
            "acks_ok": churned.acks_ok,
            "missing_acks": churned.missing_acks,
            "duplicate_acks": churned.duplicate_acks,
            "errors": churned.errors,
            "errors_within_15s_of_a_restart": churned.restart_errors,
        },
        "held_connections": {
            "authenticated": held_stats.authenticated,
            "acked_ok": held_stats.acked_ok,
            "errors": held_stats.errors,
        },
    }))
}

/// Opens `rate` connections a second (TCP, TLS, QUIC in turn) until `stop`; each logs in,
/// echoes `echoes` Sends one at a time and closes.
fn churn_loop(args: &SoakArgs, addrs: [SocketAddr; 3], restarts: &Restarts, stop: &AtomicBool) -> Churn {
    let Ok(runtime) = compio::runtime::Runtime::new() else { return Churn::default() };
    let churn = Rc::new(RefCell::new(Churn::default()));
    let kinds = [TransportKind::Tcp, TransportKind::Tls, TransportKind::Quic];
    runtime.block_on(async {
        // Inside the runtime: the QUIC connector's endpoint needs it.
        let connectors: Vec<Rc<Connector>> =
            kinds.iter().filter_map(|k| Connector::new(*k, None).ok().map(Rc::new)).collect();
        if connectors.len() != kinds.len() {
            return;
        }
        let gap = Duration::from_micros(1_000_000 / args.rate.max(1));
        let mut next = Instant::now();
        let mut i = 0usize;
        let mut tasks = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let wait = next.saturating_duration_since(Instant::now());
            compio::time::sleep(wait).await;
            next += gap;
            let k = i % kinds.len();
            let (connector, addr) = (connectors[k].clone(), addrs[k]);
            let churn = churn.clone();
            let echoes = args.echoes;
            let restarts = restarts.clone();
            let source = (kinds[k] != TransportKind::Quic).then(|| crate::run::source_ip(i, 16)).flatten();
            let config = client_config_for(&identity(), format!("churn-{i}"), 2);
            tasks.push(compio::runtime::spawn(async move {
                one(&connector, addr, source, config, echoes, &churn, &restarts).await;
            }));
            i += 1;
            // Keep the handles of running tasks only.
            tasks.retain(|t: &compio::runtime::JoinHandle<()>| !t.is_finished());
        }
        for t in tasks {
            let _ = t.await;
        }
        for c in connectors {
            if let Ok(c) = Rc::try_unwrap(c) {
                c.finish().await;
            }
        }
    });
    Rc::try_unwrap(churn).map(RefCell::into_inner).unwrap_or_default()
}

async fn one(
    connector: &Connector,
    addr: SocketAddr,
    source: Option<IpAddr>,
    config: ringgate_codec::session::ClientConfig,
    echoes: usize,
    churn: &Rc<RefCell<Churn>>,
    restarts: &Restarts,
) {
    let fail = |what: String| {
        let restart = restarts.lock().map(|r| r.iter().any(|t| t.elapsed() < RESTART_SHADOW)).unwrap_or(false);
        let mut c = churn.borrow_mut();
        let table = if restart { &mut c.restart_errors } else { &mut c.errors };
        *table.entry(what).or_default() += 1;
    };
    let stats = Rc::new(RefCell::new(RunStats::default()));
    let login =
        compio::time::timeout(Duration::from_secs(10), crate::conn::login(connector, addr, source, config, &stats));
    let mut conn = match login.await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return fail(e),
        Err(_) => return fail("login: timeout".into()),
    };
    churn.borrow_mut().logins += 1;
    // Every Ack this connection receives, to find one Send answered twice.
    let mut acks_seen = 0u64;
    let mut sent = 0u64;
    for _ in 0..echoes {
        if !conn.send(None, b"soak", Instant::now()) || conn.flush().await.is_err() {
            fail("send: connection gone".into());
            break;
        }
        churn.borrow_mut().sends += 1;
        sent += 1;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut acked = None;
        while acked.is_none() && Instant::now() < deadline {
            while let Some(event) = conn.next_event() {
                if let ClientEvent::Ack { code, .. } = event {
                    acks_seen += 1;
                    acked = acked.or(Some(code));
                }
            }
            if acked.is_none() {
                let wait = deadline.saturating_duration_since(Instant::now());
                if !matches!(compio::time::timeout(wait, conn.read()).await, Ok(Ok(true))) {
                    break;
                }
            }
        }
        match acked {
            Some(code) => {
                let mut c = churn.borrow_mut();
                c.acks += 1;
                if code == ReasonCode::OK {
                    c.acks_ok += 1;
                } else {
                    drop(c);
                    fail(format!("ack: {code}"));
                }
            }
            None => {
                churn.borrow_mut().missing_acks += 1;
                fail("ack: none".into());
                break;
            }
        }
    }
    // Whatever else arrives shortly (a second Ack would) before closing.
    let _ = compio::time::timeout(Duration::from_millis(20), conn.read()).await;
    while let Some(event) = conn.next_event() {
        if matches!(event, ClientEvent::Ack { .. }) {
            acks_seen += 1;
        }
    }
    churn.borrow_mut().duplicate_acks += acks_seen.saturating_sub(sent);
    conn.close_session(ReasonCode::NORMAL);
    let _ = conn.flush().await;
    conn.abort();
}
