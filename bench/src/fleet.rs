//! Spreads a load over several processes of this binary when one process may not hold it
//! (each process may hold at most 20,000 open files here), shows a progress line, and
//! aggregates what the processes measured.
//!
//! A parent writes each agent's [`LoadSpec`] slice as JSON to the agent's stdin; the agent
//! (`ringgate-bench agent`) prints `progress {...}` lines on stderr while it runs and one
//! [`WireStats`] JSON object on stdout at the end. Ctrl-C reaches the agents too (they are in
//! the terminal's process group, and the parent forwards it), so everyone stops opening
//! connections, closes what it holds and reports what it measured.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::control::{self, Snapshot};
use crate::run::{self, LoadSpec};
use crate::stats::{RunStats, WireStats};

/// Most connections one load process opens when each needs a file: the per-process limit
/// here is 20,000, and the process needs a few hundred for itself.
pub const MAX_FDS_PER_PROCESS: usize = 18_000;

/// Most QUIC connections per load process (they share one UDP socket per thread; the cap
/// keeps each process's client state and CPU share reasonable).
pub const MAX_QUIC_PER_PROCESS: usize = 25_000;

/// The latest progress of the running load (this process's or its agents'), for callers
/// that wait for connections to be up before measuring.
static LIVE: Mutex<Snapshot> = Mutex::new(Snapshot {
    connected: 0,
    authenticated: 0,
    open: 0,
    errors: 0,
    acked: 0,
    pushes: 0,
    rss_kib: 0,
    base_rss_kib: 0,
    cpu_ms: 0,
});

pub fn live() -> Snapshot {
    LIVE.lock().map(|s| *s).unwrap_or_default()
}

/// How many processes `spec` needs.
pub fn processes_for(spec: &LoadSpec) -> usize {
    let per = if spec.transport.uses_fd_per_connection() { MAX_FDS_PER_PROCESS } else { MAX_QUIC_PER_PROCESS };
    spec.count.div_ceil(per).max(1)
}

/// Splits `spec` into `n` contiguous slices with the rate divided between them.
pub fn split(spec: &LoadSpec, n: usize) -> Vec<LoadSpec> {
    let n = n.clamp(1, spec.count.max(1));
    let base = spec.count / n;
    let extra = spec.count % n;
    let mut first = spec.first;
    (0..n)
        .map(|k| {
            let count = base + usize::from(k < extra);
            let slice = LoadSpec { first, count, rate: spec.rate.div_ceil(n as u64), ..spec.clone() };
            first += count;
            slice
        })
        .collect()
}

/// Runs `spec` over `processes` load processes (`None`: as many as the file limit needs),
/// printing a progress line to stderr every 2 s when `progress` is set.
pub fn run(spec: &LoadSpec, processes: Option<usize>, progress: bool) -> RunStats {
    let n = processes.unwrap_or_else(|| processes_for(spec)).max(1);
    let done = Arc::new(AtomicBool::new(false));
    if let Ok(mut l) = LIVE.lock() {
        *l = Snapshot::default();
    }
    if n == 1 {
        let base = Snapshot::now();
        let printer = spawn_printer(
            spec.count,
            done.clone(),
            progress,
            Box::new(move || {
                let now = Snapshot::now();
                Snapshot {
                    connected: now.connected - base.connected,
                    authenticated: now.authenticated - base.authenticated,
                    open: now.open,
                    errors: now.errors - base.errors,
                    acked: now.acked - base.acked,
                    pushes: now.pushes - base.pushes,
                    ..now
                }
            }),
        );
        let stats = run::run(spec);
        done.store(true, Ordering::Relaxed);
        let _ = printer.join();
        return stats;
    }
    let slices = split(spec, n);
    let snapshots = Arc::new(Mutex::new(vec![Snapshot::default(); slices.len()]));
    let mut agents = Vec::new();
    let mut total = RunStats::default();
    for (k, slice) in slices.iter().enumerate() {
        match spawn_agent(slice, k, snapshots.clone()) {
            Ok(agent) => agents.push(agent),
            Err(e) => total.error(format!("agent: {e}")),
        }
    }
    let printer = {
        let snaps = snapshots.clone();
        spawn_printer(
            spec.count,
            done.clone(),
            progress,
            Box::new(move || {
                let mut sum = Snapshot::default();
                for s in snaps.lock().map(|s| s.clone()).unwrap_or_default() {
                    sum.add(&s);
                }
                sum
            }),
        )
    };
    // Forward Ctrl-C to agents started outside the terminal's process group.
    let forwarded = AtomicBool::new(false);
    let pids: Vec<u32> = agents.iter().map(|a| a.child.id()).collect();
    let watcher_done = done.clone();
    let watcher = std::thread::spawn(move || {
        while !watcher_done.load(Ordering::Relaxed) {
            if control::stopping() && !forwarded.swap(true, Ordering::Relaxed) {
                for &pid in &pids {
                    // SAFETY: kill(2) with a pid of our own child.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    for agent in agents {
        match agent.finish() {
            Ok(stats) => total.merge(&stats),
            Err(e) => total.error(format!("agent: {e}")),
        }
    }
    done.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let _ = printer.join();
    total
}

struct Agent {
    child: Child,
    stderr: Option<std::thread::JoinHandle<()>>,
}

fn spawn_agent(spec: &LoadSpec, k: usize, snapshots: Arc<Mutex<Vec<Snapshot>>>) -> std::io::Result<Agent> {
    let exe = std::env::current_exe()?;
    let mut child =
        Command::new(exe).arg("agent").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let json = serde_json::to_vec(spec).map_err(std::io::Error::other)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&json)?;
    }
    let stderr = child.stderr.take().map(|err| {
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                match line.strip_prefix("progress ").and_then(|j| serde_json::from_str::<Snapshot>(j).ok()) {
                    Some(snap) => {
                        if let Ok(mut s) = snapshots.lock()
                            && let Some(slot) = s.get_mut(k)
                        {
                            *slot = snap;
                        }
                    }
                    None => eprintln!("[agent {k}] {line}"),
                }
            }
        })
    });
    Ok(Agent { child, stderr })
}

impl Agent {
    fn finish(mut self) -> Result<RunStats, String> {
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            let _ = stdout.read_to_string(&mut out);
        }
        let status = self.child.wait().map_err(|e| e.to_string())?;
        if let Some(t) = self.stderr.take() {
            let _ = t.join();
        }
        let wire: WireStats = serde_json::from_str(out.trim())
            .map_err(|e| format!("{status}, no result ({e}): {:?}", out.chars().take(200).collect::<String>()))?;
        Ok(RunStats::from(&wire))
    }
}

/// `ringgate-bench agent`: runs the spec read from stdin, reports progress on stderr and the
/// result on stdout.
pub fn agent_main() -> std::io::Result<()> {
    control::install_stop_handler();
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let spec: LoadSpec = serde_json::from_str(&input).map_err(std::io::Error::other)?;
    let done = Arc::new(AtomicBool::new(false));
    let reporter = {
        let done = done.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Ok(line) = serde_json::to_string(&Snapshot::now()) {
                    eprintln!("progress {line}");
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let stats = run::run(&spec);
    done.store(true, Ordering::Relaxed);
    let _ = reporter.join();
    println!("{}", serde_json::to_string(&WireStats::from(&stats)).map_err(std::io::Error::other)?);
    Ok(())
}

type Source = Box<dyn Fn() -> Snapshot + Send>;

/// Keeps [`live`] current and, with `print`, prints
/// `[  12s] open 4500/10000 authenticated 4600 (380/s) errors 0 acked 0 pushes 0`
/// every 2 s to stderr until `done`.
fn spawn_printer(total: usize, done: Arc<AtomicBool>, print: bool, source: Source) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut last = (Instant::now(), 0u64);
        let mut next = Instant::now() + Duration::from_secs(2);
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
            let s = source();
            if let Ok(mut l) = LIVE.lock() {
                *l = s;
            }
            if !print || Instant::now() < next {
                continue;
            }
            next += Duration::from_secs(2);
            let rate = (s.authenticated.saturating_sub(last.1)) as f64 / last.0.elapsed().as_secs_f64().max(0.001);
            last = (Instant::now(), s.authenticated);
            eprintln!(
                "[{:>5}s] open {}/{total} authenticated {} ({rate:.0}/s) errors {} acked {} pushes {}{}",
                started.elapsed().as_secs(),
                s.open,
                s.authenticated,
                s.errors,
                s.acked,
                s.pushes,
                if control::stopping() { " (stopping)" } else { "" }
            );
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Workload;
    use crate::run::Identity;
    use crate::transport::TransportKind;

    fn spec(count: usize, transport: TransportKind) -> LoadSpec {
        LoadSpec {
            addrs: vec!["127.0.0.1:7000".parse().unwrap()],
            transport,
            ca: None,
            first: 0,
            count,
            threads: 2,
            rate: 1000,
            sources: 64,
            identity: Identity::NoAuth,
            workload: Workload::Idle { until_ms: 0, send_every_ms: 0, measure_from_ms: 0 },
        }
    }

    #[test]
    fn slices_cover_every_connection_once_within_the_file_limit() {
        let s = spec(100_001, TransportKind::Tcp);
        let n = processes_for(&s);
        assert_eq!(n, 6);
        let slices = split(&s, n);
        assert_eq!(slices.iter().map(|p| p.count).sum::<usize>(), 100_001);
        assert!(slices.iter().all(|p| p.count <= MAX_FDS_PER_PROCESS));
        for pair in slices.windows(2) {
            assert_eq!(pair[0].first + pair[0].count, pair[1].first, "contiguous");
        }
        assert!(slices.iter().all(|p| p.rate == 167), "the rate is shared");
        // QUIC shares one socket per thread: fewer processes.
        assert_eq!(processes_for(&spec(40_000, TransportKind::Quic)), 2);
        assert_eq!(processes_for(&spec(10, TransportKind::Tcp)), 1);
        // Never more slices than connections.
        assert_eq!(split(&spec(2, TransportKind::Tcp), 5).len(), 2);
    }
}
