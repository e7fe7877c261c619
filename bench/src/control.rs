//! Process-wide run control: the Ctrl-C flag every loop checks, and the progress counters
//! the progress line (and a parent process) reads while a run is going.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// Live counters of this process, for the progress line. The exact figures are in the
/// per-thread [`crate::stats::RunStats`] merged at the end.
#[derive(Debug)]
pub struct Progress {
    pub connected: AtomicU64,
    pub authenticated: AtomicU64,
    /// Connections currently open and authenticated.
    pub open: AtomicU64,
    pub errors: AtomicU64,
    pub acked: AtomicU64,
    pub pushes: AtomicU64,
}

pub static PROGRESS: Progress = Progress {
    connected: AtomicU64::new(0),
    authenticated: AtomicU64::new(0),
    open: AtomicU64::new(0),
    errors: AtomicU64::new(0),
    acked: AtomicU64::new(0),
    pushes: AtomicU64::new(0),
};

/// A snapshot of [`PROGRESS`], summable over processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub connected: u64,
    pub authenticated: u64,
    pub open: u64,
    pub errors: u64,
    pub acked: u64,
    pub pushes: u64,
    /// The load process's resident memory now, and when its load started (KiB), and the
    /// CPU time it has used (ms): what the load generator itself costs.
    #[serde(default)]
    pub rss_kib: u64,
    #[serde(default)]
    pub base_rss_kib: u64,
    #[serde(default)]
    pub cpu_ms: u64,
}

/// This process's RSS when its load started (KiB; 0 = not started).
static BASE_RSS_KIB: AtomicU64 = AtomicU64::new(0);

/// Notes this process's RSS as the base its load's memory is measured from.
pub fn mark_load_start() {
    let rss = crate::procinfo::rss_kib(std::process::id()).unwrap_or(0);
    BASE_RSS_KIB.store(rss, Ordering::Relaxed);
}

impl Snapshot {
    pub fn now() -> Snapshot {
        let p = &PROGRESS;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            connected: get(&p.connected),
            authenticated: get(&p.authenticated),
            open: get(&p.open),
            errors: get(&p.errors),
            acked: get(&p.acked),
            pushes: get(&p.pushes),
            rss_kib: crate::procinfo::rss_kib(std::process::id()).unwrap_or(0),
            base_rss_kib: get(&BASE_RSS_KIB),
            cpu_ms: crate::procinfo::cpu_ms(std::process::id()).unwrap_or(0),
        }
    }

    /// The load processes' user memory per open connection, in bytes.
    pub fn load_bytes_per_conn(&self) -> f64 {
        self.rss_kib.saturating_sub(self.base_rss_kib) as f64 * 1024.0 / self.open.max(1) as f64
    }

    pub fn add(&mut self, o: &Snapshot) {
        self.connected += o.connected;
        self.authenticated += o.authenticated;
        self.open += o.open;
        self.errors += o.errors;
        self.acked += o.acked;
        self.pushes += o.pushes;
        self.rss_kib += o.rss_kib;
        self.base_rss_kib += o.base_rss_kib;
        self.cpu_ms += o.cpu_ms;
    }
}

pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub fn dec(counter: &AtomicU64) {
    counter.fetch_sub(1, Ordering::Relaxed);
}

/// Whether Ctrl-C (SIGINT) or SIGTERM asked the run to stop.
pub fn stopping() -> bool {
    STOP.load(Ordering::Relaxed)
}

pub fn request_stop() {
    STOP.store(true, Ordering::Relaxed);
}

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM set the stop flag instead of killing the process, so a run
/// stops opening connections, closes what it holds, stops the servers it started and
/// prints what it measured so far.
pub fn install_stop_handler() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: installing a handler that only performs an atomic store.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}
