//! The load subcommands against running gateway nodes: idle, echo, push and storm. Each
//! returns one JSON object with every figure; `main` prints it or a human summary.

pub use crate::conn::PushMode;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::BufMut;
use ringgate_codec::session::ClientEvent;
use serde_json::{Value, json};

use crate::conn::{self, Workload, unix_ms, unix_us};
use crate::control;
use crate::fleet;
use crate::procinfo;
use crate::run::{Identity, LoadSpec};
use crate::stats::{Percentiles, RunStats};
use crate::transport::{Connector, TransportKind};

/// Options every load subcommand takes.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Gateway address; repeat for several nodes (connection i goes to address i mod n).
    /// (Not needed when the command starts its own nodes.)
    #[arg(long = "addr")]
    pub addrs: Vec<SocketAddr>,
    #[arg(long, value_enum, default_value = "tcp")]
    pub transport: TransportKind,
    /// Verify the gateway's TLS/QUIC certificate against this CA (PEM); default: accept any.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// New connections per second over all processes (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Threads per load process.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Spread TCP connections over this many 127.1.x.y source addresses.
    #[arg(long, default_value_t = 64)]
    pub sources: usize,
    /// Load processes (default: as many as the 20,000-open-files limit needs).
    #[arg(long)]
    pub processes: Option<usize>,
    /// Sign tokens with this key, as kid=secret (default: the gateway runs auth.mode = "none").
    #[arg(long)]
    pub token_key: Option<String>,
    /// Print one JSON object with every figure instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

impl LoadArgs {
    pub fn identity(&self) -> Identity {
        match self.token_key.as_deref().and_then(|k| k.split_once('=')) {
            Some((kid, secret)) => Identity::Token { kid: kid.into(), secret: secret.into() },
            None => Identity::NoAuth,
        }
    }

    pub fn spec(&self, workload: Workload) -> LoadSpec {
        LoadSpec {
            addrs: self.addrs.clone(),
            transport: self.transport,
            ca: self.ca.clone(),
            first: 0,
            count: self.connections,
            threads: self.threads,
            rate: self.rate,
            sources: self.sources,
            identity: self.identity(),
            workload,
        }
    }

    /// How long the ramp-up may take at the configured rate, with a margin (1 s for a
    /// small run, proportionally more for big ones).
    pub fn ramp_allowance(&self) -> Duration {
        let n = self.connections as u64;
        let at_rate_ms = (n * 1000).checked_div(self.rate).unwrap_or(n / 2);
        Duration::from_millis(1000 + at_rate_ms + at_rate_ms / 2)
    }
}

fn percentiles_json(p: &Percentiles) -> Value {
    json!({"p50": p.p50_us, "p90": p.p90_us, "p99": p.p99_us, "p999": p.p999_us, "max": p.max_us})
}

/// The figures every load run has.
pub fn common_json(stats: &RunStats) -> Value {
    json!({
        "connected": stats.connected,
        "authenticated": stats.authenticated,
        "connect_rate_per_s": stats.connect_rate(),
        "login_us": percentiles_json(&Percentiles::of(&stats.login_us)),
        "errors": stats.errors,
    })
}

fn merge(into: &mut Value, more: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), more) {
        a.extend(b);
    }
}

/// Memory readings of the gateway processes, for per-connection figures.
#[derive(Debug, Clone, Copy, Default)]
struct Memory {
    rss_kib: u64,
    slab_kib: u64,
}

fn read_memory(pids: &[u32]) -> Memory {
    Memory {
        rss_kib: pids.iter().filter_map(|&p| procinfo::rss_kib(p).ok()).sum(),
        slab_kib: procinfo::slab_kib().unwrap_or(0),
    }
}

/// What the load processes themselves cost between two readings of [`fleet::live`] taken
/// while every connection was held: user memory per connection (at the first) and CPU per
/// held connection per second between them.
pub fn load_cost((t0, from): (Instant, control::Snapshot), (t1, to): (Instant, control::Snapshot)) -> Value {
    let secs = t1.saturating_duration_since(t0).as_secs_f64();
    let cpu_ms = to.cpu_ms.saturating_sub(from.cpu_ms);
    let conn_seconds = from.open.min(to.open) as f64 * secs;
    json!({
        "rss_kib": {"base": from.base_rss_kib, "held": from.rss_kib},
        "user_bytes_per_conn": from.load_bytes_per_conn(),
        "cpu_ms": cpu_ms,
        "window_s": secs,
        "cpu_us_per_conn_per_s": if conn_seconds > 0.0 { cpu_ms as f64 * 1000.0 / conn_seconds } else { 0.0 },
    })
}

/// `idle`: open N connections at the given rate, hold them with heartbeats, report the
/// connect rate, failures, and per-connection memory of the gateway processes `pids`.
pub fn idle(args: &LoadArgs, hold: Duration, pids: &[u32]) -> Value {
    let before = read_memory(pids);
    let started = Instant::now();
    let until = unix_ms() + (args.ramp_allowance() + hold).as_millis() as u64;
    let spec = args.spec(Workload::Idle { until_ms: until, send_every_ms: 0, measure_from_ms: 0 });
    let n = args.connections as u64;
    let measure = {
        let pids = pids.to_vec();
        std::thread::spawn(move || {
            // Measure once every connection is up (or just before the end), after 1 s.
            let deadline = conn::instant_at(until.saturating_sub(1500));
            while Instant::now() < deadline && fleet::live().open < n && !control::stopping() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let open = fleet::live().open;
            std::thread::sleep(Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now())));
            let memory = read_memory(&pids);
            // The load processes' own cost: memory now, CPU over the rest of the hold.
            let from = (Instant::now(), fleet::live());
            while Instant::now() < deadline && !control::stopping() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let load = load_cost(from, (Instant::now(), fleet::live()));
            (open, memory, load)
        })
    };
    let stats = fleet::run(&spec, args.processes, !args.quiet);
    let (open, during, load) = measure.join().unwrap_or_default();
    let mut out = json!({
        "subcommand": "idle",
        "transport": args.transport.name(),
        "connections": args.connections,
        "held_at_measurement": open,
        "seconds": started.elapsed().as_secs_f64(),
        "load": load,
    });
    merge(&mut out, common_json(&stats));
    if !pids.is_empty() && open > 0 {
        let user = during.rss_kib.saturating_sub(before.rss_kib) as f64 * 1024.0 / open as f64;
        let slab = during.slab_kib.saturating_sub(before.slab_kib) as f64 * 1024.0 / open as f64;
        merge(
            &mut out,
            json!({
                "gateway_rss_kib": {"before": before.rss_kib, "held": during.rss_kib},
                "user_bytes_per_conn": user,
                // Both ends of a loopback connection live in this kernel; QUIC has none per
                // connection (one UDP socket per worker).
                "slab_bytes_per_conn_both_ends": slab,
            }),
        );
    }
    out
}

/// `echo`: N connections keep K Sends of S bytes in flight for D seconds.
pub fn echo(args: &LoadArgs, in_flight: usize, payload: usize, seconds: u64) -> Value {
    let measure_from = unix_ms() + args.ramp_allowance().as_millis() as u64;
    let until = measure_from + seconds * 1000;
    let spec = args.spec(Workload::Echo { in_flight, payload, measure_from_ms: measure_from, until_ms: until });
    let stats = fleet::run(&spec, args.processes, !args.quiet);
    let mut out = json!({
        "subcommand": "echo",
        "transport": args.transport.name(),
        "connections": args.connections,
        "in_flight": in_flight,
        "payload": payload,
        "seconds": seconds,
        "acked": stats.acked_ok,
        "acked_per_s": stats.acked_ok as f64 / seconds.max(1) as f64,
        "rtt_us": percentiles_json(&stats.percentiles()),
    });
    merge(&mut out, common_json(&stats));
    out
}

/// `push`: N receivers (in rooms of M for room mode); a driver sends pushes through the
/// reference backend at `rate` per second for `seconds`; reports delivery rate and latency
/// from the push request to client receipt.
///
/// With `api`, the pushes go through that node's server API instead (`--via api`).
pub fn push(
    args: &LoadArgs,
    mode: PushMode,
    room_size: usize,
    push_rate: u64,
    seconds: u64,
    payload: usize,
    api: Option<&crate::api_push::ApiTarget>,
) -> Value {
    let room_size = if mode == PushMode::Room { room_size.max(1) } else { 0 };
    let n = args.connections;
    let until = unix_ms() + (args.ramp_allowance() + Duration::from_secs(seconds + 16)).as_millis() as u64;
    let spec = args.spec(Workload::Receive { room_size, until_ms: until });
    let progress = !args.quiet;
    let receivers = std::thread::spawn(move || fleet::run(&spec, None, progress));
    let ramp_deadline = Instant::now() + args.ramp_allowance();
    while fleet::live().open < n as u64 && Instant::now() < ramp_deadline && !control::stopping() {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Joins are Sends too; let them land before the first room push.
    std::thread::sleep(Duration::from_millis(500));
    let mut api_seen = None;
    let driver = match api {
        None => drive_pushes(args, mode, n, room_size, push_rate, seconds, payload),
        Some(api) => {
            // The registry is written after the logins; the last user's record comes last.
            crate::api_push::wait_online(api, &format!("u{}", n.saturating_sub(1)), Duration::from_secs(20));
            let rooms = if room_size > 0 { n.div_ceil(room_size) } else { 0 };
            let seen = crate::api_push::drive(api, mode, n, rooms, push_rate, seconds, payload);
            api_seen = Some(seen);
            DriverResult { sent: seen.sent, acked: seen.answered, errors: seen.errors }
        }
    };
    let per_push = match mode {
        PushMode::User => 1,
        PushMode::Room => room_size.min(n) as u64,
        PushMode::Broadcast => n as u64,
    };
    let expected = driver.acked * per_push;
    // Deliveries still queued arrive within 10 s (a backlog shows as latency), then the
    // receivers stop.
    let settle = Instant::now() + Duration::from_secs(10);
    while fleet::live().pushes < expected && Instant::now() < settle && !control::stopping() {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    control::request_stop();
    let stats = receivers.join().unwrap_or_default();
    let mut out = json!({
        "subcommand": "push",
        "transport": args.transport.name(),
        "mode": format!("{mode:?}").to_lowercase(),
        "receivers": n,
        "room_size": room_size,
        "seconds": seconds,
        "pushes_requested": driver.sent,
        "pushes_acked": driver.acked,
        "push_errors": driver.errors,
        "deliveries_expected": expected,
        "deliveries": stats.pushes,
        "delivery_ratio": if expected > 0 { stats.pushes as f64 / expected as f64 } else { 0.0 },
        "deliveries_per_s": stats.pushes as f64 / seconds.max(1) as f64,
        "latency_us": percentiles_json(&Percentiles::of(&stats.push_us)),
    });
    if let Some(seen) = api_seen {
        out["via"] = "api".into();
        out["api_connections"] = api.map_or(0, |a| a.conns).into();
        out["api_batch"] = api.map_or(0, |a| a.batch).into();
        out["api_delivered_reported"] = seen.delivered.into();
        out["api_offline"] = seen.offline.into();
    }
    merge(&mut out, common_json(&stats));
    out
}

#[derive(Debug, Default)]
struct DriverResult {
    sent: u64,
    acked: u64,
    errors: u64,
}

/// Sends pushes from 4 connections of users `driver{k}` (not receivers) at `rate` per
/// second in total, each carrying its send time.
fn drive_pushes(
    args: &LoadArgs,
    mode: PushMode,
    receivers: usize,
    room_size: usize,
    rate: u64,
    seconds: u64,
    payload: usize,
) -> DriverResult {
    const DRIVERS: usize = 4;
    let Some(&addr) = args.addrs.first() else { return DriverResult::default() };
    let (transport, ca, identity) = (args.transport, args.ca.clone(), args.identity());
    let Ok(runtime) = compio::runtime::Runtime::new() else { return DriverResult::default() };
    runtime.block_on(async move {
        let Ok(connector) = Connector::new(transport, ca.as_deref()) else { return DriverResult::default() };
        let stats = std::rc::Rc::new(std::cell::RefCell::new(RunStats::default()));
        let mut conns = Vec::new();
        for k in 0..DRIVERS {
            let config = crate::run::client_config_for(&identity, format!("driver{k}"), 1);
            if let Ok(c) = conn::login(&connector, addr, None, config, &stats).await {
                conns.push(c);
            }
        }
        let mut result = DriverResult::default();
        if conns.is_empty() {
            result.errors = 1;
            return result;
        }
        let rooms = if room_size > 0 { receivers.div_ceil(room_size) } else { 0 };
        let started = Instant::now();
        let end = started + Duration::from_secs(seconds);
        let mut body = bytes::BytesMut::with_capacity(payload.max(8));
        let mut k = 0u64;
        // Every 10 ms, send what the target rate says is due by now (low rates too).
        let mut next = started;
        while Instant::now() < end && !control::stopping() {
            let due = (rate as f64 * started.elapsed().as_secs_f64()) as u64;
            while k < due {
                let target = match mode {
                    PushMode::User => format!("user:u{}", (k as usize * 7919) % receivers.max(1)),
                    PushMode::Room => format!("room:room{}", k as usize % rooms.max(1)),
                    PushMode::Broadcast => "broadcast".into(),
                };
                body.clear();
                body.put_u64(unix_us());
                body.resize(payload.max(8), 0);
                let which = k as usize % conns.len();
                let Some(c) = conns.get_mut(which) else { break };
                if c.send(Some(target.as_bytes()), &body, Instant::now()) {
                    result.sent += 1;
                } else {
                    result.errors += 1;
                }
                k += 1;
            }
            for c in &mut conns {
                let _ = c.flush().await;
            }
            drain_acks(&mut conns, &mut result);
            next += Duration::from_millis(10);
            let now = Instant::now();
            if next > now {
                // Read what is there while waiting for the next batch.
                for c in &mut conns {
                    let _ = compio::time::timeout(next.saturating_duration_since(Instant::now()) / 4, c.read()).await;
                }
                compio::time::sleep(next.saturating_duration_since(Instant::now())).await;
            }
        }
        // Collect the remaining Acks.
        let settle = Instant::now() + Duration::from_secs(2);
        while result.acked + result.errors < result.sent && Instant::now() < settle {
            for c in &mut conns {
                let _ = compio::time::timeout(Duration::from_millis(20), c.read()).await;
            }
            drain_acks(&mut conns, &mut result);
        }
        for c in conns {
            c.abort();
        }
        connector.finish().await;
        result
    })
}

fn drain_acks(conns: &mut [conn::Conn], result: &mut DriverResult) {
    for c in conns {
        while let Some(event) = c.next_event() {
            if let ClientEvent::Ack { code, .. } = event {
                if code.is_ok() {
                    result.acked += 1;
                } else {
                    result.errors += 1;
                }
            }
        }
    }
}

/// How a storm starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StormMode {
    /// Every client drops its connection at the same moment and reconnects.
    Drop,
    /// The first node is killed (SIGKILL); its clients reconnect to the others.
    Kill,
    /// The first node drains (SIGTERM): GoAway tells its clients when to reconnect.
    Drain,
}

/// `storm`: hold N connections over the nodes, then at the storm moment drop them all
/// (or stop node 0), and measure when they are back, re-authenticated.
pub fn storm(
    args: &LoadArgs,
    mode: StormMode,
    (reconnect_after_ms, jitter_ms): (u64, u64),
    window: Duration,
    kill_node: Option<&mut dyn FnMut(StormMode)>,
) -> Value {
    let base = unix_ms();
    let storm_at = base + args.ramp_allowance().as_millis() as u64;
    let until = storm_at + window.as_millis() as u64;
    let drop_at = (mode == StormMode::Drop).then_some(storm_at);
    let spec = args.spec(Workload::Storm {
        drop_at_ms: drop_at,
        until_ms: until,
        reconnect_after_ms,
        jitter_ms,
        base_ms: base,
    });
    let progress = !args.quiet;
    let processes = args.processes;
    let load = std::thread::spawn(move || fleet::run(&spec, processes, progress));
    // The most held before the storm: read at the storm moment itself, the snapshot (taken
    // every 50 ms) may already show the drop that the clients make at that same moment.
    let open_before = {
        let at = conn::instant_at(storm_at);
        let mut most = 0;
        while Instant::now() < at && !control::stopping() {
            most = most.max(fleet::live().open);
            std::thread::sleep(Duration::from_millis(20));
        }
        most
    };
    if let Some(stop) = kill_node
        && mode != StormMode::Drop
    {
        stop(mode);
    }
    let stats = load.join().unwrap_or_default();
    let expected = match mode {
        StormMode::Drop => open_before,
        StormMode::Kill | StormMode::Drain => open_before.div_ceil(args.addrs.len().max(1) as u64),
    };
    // ms after the storm by which 50/99/100% of the expected connections were back,
    // authenticated; null when that share never came back within the window.
    let offset = storm_at - base;
    let at = |share: f64| -> Option<u64> {
        let need = (share * expected as f64).ceil() as u64;
        if need == 0 || stats.reconnected < need {
            return None;
        }
        let q = need as f64 / stats.reconnected as f64;
        Some(stats.reauth_at_ms.value_at_quantile(q).saturating_sub(offset))
    };
    let mut out = json!({
        "subcommand": "storm",
        "transport": args.transport.name(),
        "mode": format!("{mode:?}").to_lowercase(),
        "connections": args.connections,
        "open_before_storm": open_before,
        "expected_reconnects": expected,
        "reconnected": stats.reconnected,
        "reconnect_after_ms": reconnect_after_ms,
        "jitter_ms": jitter_ms,
        "ms_to_50pct": at(0.5),
        "ms_to_99pct": at(0.99),
        "ms_to_all": at(1.0),
    });
    merge(&mut out, common_json(&stats));
    out
}
