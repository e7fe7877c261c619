//! The node's memory: a watermark that stops new connections before the kernel's OOM killer
//! would stop every one of them, and an allocator trim that hands freed pages back.
//!
//! glibc's malloc keeps the pages a burst frees (TLS handshakes, a registry re-assert, a
//! reconnect storm) inside its arenas and returns memory to the kernel only from the top of
//! an arena, so a long-lived node's RSS creeps up with each burst and never comes down.
//! `malloc_trim(0)` releases every free page of every arena (`madvise`), so the control plane
//! calls it when the allocator holds enough free memory for it to matter.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::MemoryLimit;

/// RSS is read this often.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// The allocator is asked how much it holds free at most this often...
const TRIM_EVERY: Duration = Duration::from_secs(10);
/// ...and trimmed when that grew by this much since the last trim, or by 1/64 of RSS if more
/// (a trim walks every arena under its lock: on a large heap it runs only for a large gain).
const TRIM_ABOVE: u64 = 1 << 20;
/// Once above the limit, new connections are taken again below this share of it.
const RESUME_AT: f64 = 0.95;

/// The node's RSS against its limit, read by every accept.
#[derive(Debug)]
pub struct MemoryGuard {
    /// Bytes (0: no limit); replaced on a reload.
    limit: AtomicU64,
    rss: AtomicU64,
    high: AtomicBool,
}

impl MemoryGuard {
    /// A guard refusing new connections above `limit` bytes (`None`: never).
    pub fn new(limit: Option<u64>) -> MemoryGuard {
        MemoryGuard {
            limit: AtomicU64::new(limit.unwrap_or(0)),
            rss: AtomicU64::new(rss_bytes().unwrap_or(0)),
            high: AtomicBool::new(false),
        }
    }

    /// Whether new connections are refused (RSS reached the limit and has not yet fallen
    /// below [`RESUME_AT`] of it).
    pub fn is_high(&self) -> bool {
        self.high.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> Option<u64> {
        let limit = self.limit.load(Ordering::Relaxed);
        (limit > 0).then_some(limit)
    }

    /// Takes a reloaded limit (the next sample applies it).
    pub fn set_limit(&self, limit: Option<u64>) {
        self.limit.store(limit.unwrap_or(0), Ordering::Relaxed);
        if limit.is_none() {
            self.high.store(false, Ordering::Relaxed);
        }
    }

    /// RSS at the last sample.
    pub fn rss(&self) -> u64 {
        self.rss.load(Ordering::Relaxed)
    }

    /// Records a sample; returns the new state when it changed.
    fn observe(&self, rss: u64) -> Option<bool> {
        self.rss.store(rss, Ordering::Relaxed);
        let limit = self.limit()?;
        let was = self.is_high();
        let now = if was { rss as f64 >= limit as f64 * RESUME_AT } else { rss >= limit };
        (now != was).then(|| {
            self.high.store(now, Ordering::Relaxed);
            now
        })
    }
}

/// The limit in bytes that `limit` means on this host (`None`: off or unreadable).
pub fn resolve(limit: MemoryLimit) -> Option<u64> {
    match limit {
        MemoryLimit::Off => None,
        MemoryLimit::Bytes(b) => Some(b),
        MemoryLimit::Share(percent) => available().map(|total| total / 100 * u64::from(percent)),
    }
}

/// The memory this process may use: its own cgroup's `memory.max` (cgroup v2) when one is
/// set, else the host's RAM. A limit on a parent group, or under cgroup v1, is not seen:
/// set `limits.max_memory` to a size there.
pub fn available() -> Option<u64> {
    cgroup_limit().or_else(host_memory)
}

fn cgroup_limit() -> Option<u64> {
    // cgroup v2: "0::/path" names the group; its memory.max is a number or "max".
    let groups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = groups.lines().find_map(|l| l.strip_prefix("0::"))?;
    let max = std::fs::read_to_string(format!("/sys/fs/cgroup{path}/memory.max")).ok()?;
    max.trim().parse().ok()
}

fn host_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 =
        info.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// This process's anonymous resident memory (heap, stacks, rings), in bytes: resident minus
/// the file-backed and shared pages, which are the binary's code (paged in as code paths
/// first run, clean and reclaimable) and grow without the node using more memory.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let mut fields = statm.split_whitespace().skip(1);
    let resident: u64 = fields.next()?.parse().ok()?;
    let shared: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(resident.saturating_sub(shared) * u64::try_from(page).ok()?)
}

/// Samples RSS into `guard` every second (logging when the limit is crossed either way) and
/// trims the allocator when it holds enough free memory; runs until its task is dropped.
pub async fn watch(guard: Arc<MemoryGuard>) {
    let rss_gauge = metrics::gauge!("ringgate_memory_rss_bytes");
    let limit_gauge = metrics::gauge!("ringgate_memory_limit_bytes");
    let mut trim = Trim::default();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        trim.maybe(Instant::now());
        let Some(rss) = rss_bytes() else { continue };
        rss_gauge.set(rss as f64);
        limit_gauge.set(guard.limit().unwrap_or(0) as f64);
        match guard.observe(rss) {
            Some(true) => tracing::warn!(
                rss_mib = rss >> 20,
                limit_mib = guard.limit().unwrap_or(0) >> 20,
                "memory at limits.max_memory: new connections are refused (server_overloaded) until it falls"
            ),
            Some(false) => {
                tracing::info!(rss_mib = rss >> 20, "memory below limits.max_memory again: taking new connections")
            }
            None => {}
        }
    }
}

/// When the allocator was last trimmed and what it held free after.
#[derive(Debug, Default)]
struct Trim {
    last: Option<Instant>,
    free_after: u64,
}

impl Trim {
    /// Trims when the allocator's free memory grew by [`TRIM_ABOVE`] since the last trim
    /// (free chunks stay counted after a trim, their pages returned); returns the bytes of
    /// RSS a trim gave back.
    fn maybe(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|t| now.duration_since(t) < TRIM_EVERY) {
            return None;
        }
        self.last = Some(now);
        let free = allocator::free_bytes()?;
        let above = TRIM_ABOVE.max(rss_bytes().unwrap_or(0) / 64);
        if free < self.free_after.saturating_add(above) {
            // Free memory reused since shrinks the mark, so the next burst counts in full.
            self.free_after = self.free_after.min(free);
            return None;
        }
        let before = rss_bytes().unwrap_or(0);
        allocator::trim();
        self.free_after = free;
        let returned = before.saturating_sub(rss_bytes().unwrap_or(before));
        metrics::counter!("ringgate_memory_trims_total").increment(1);
        metrics::counter!("ringgate_memory_trimmed_bytes_total").increment(returned);
        tracing::debug!(free, returned, "allocator trimmed");
        Some(returned)
    }
}

/// glibc's malloc; other allocators return memory by themselves (or not at all) and are left alone.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod allocator {
    /// Bytes the allocator holds in free chunks.
    pub fn free_bytes() -> Option<u64> {
        // SAFETY: mallinfo2 only reads the allocator's state (under its locks).
        let info = unsafe { libc::mallinfo2() };
        u64::try_from(info.fordblks).ok()
    }

    pub fn trim() {
        // SAFETY: malloc_trim is safe to call from any thread at any time.
        unsafe { libc::malloc_trim(0) };
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod allocator {
    pub fn free_bytes() -> Option<u64> {
        None
    }

    pub fn trim() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_at_the_limit_and_resumes_below_it() {
        let guard = MemoryGuard::new(Some(1000));
        assert_eq!(guard.observe(999), None);
        assert_eq!(guard.observe(1000), Some(true));
        assert!(guard.is_high());
        // Hysteresis: still refusing just below the limit.
        assert_eq!(guard.observe(960), None);
        assert!(guard.is_high());
        assert_eq!(guard.observe(949), Some(false));
        assert!(!guard.is_high());
    }

    #[test]
    fn no_limit_never_refuses() {
        let guard = MemoryGuard::new(None);
        assert_eq!(guard.observe(u64::MAX), None);
        assert!(!guard.is_high());
    }

    #[test]
    fn reads_this_process_and_host() {
        assert!(rss_bytes().is_some_and(|r| r > 1 << 18));
        assert!(available().is_some_and(|a| a > 1 << 26));
        assert_eq!(resolve(MemoryLimit::Bytes(5)), Some(5));
        assert_eq!(resolve(MemoryLimit::Off), None);
        let share = resolve(MemoryLimit::Share(50)).unwrap_or(0);
        assert!(share > 0 && share < available().unwrap_or(0));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_trim_returns_what_a_burst_freed() {
        // Many small blocks, freed except every 64th (so the heap top stays pinned and glibc
        // cannot return the pages by itself): what only malloc_trim gives back.
        let blocks: Vec<Vec<u8>> = (0..200_000).map(|i| vec![i as u8; 200]).collect();
        let keep: Vec<Vec<u8>> = blocks.into_iter().enumerate().filter(|(i, _)| i % 64 == 0).map(|(_, b)| b).collect();
        let free = allocator::free_bytes().unwrap_or(0);
        assert!(free > 20 << 20, "free after the burst: {free}");
        let mut trim = Trim::default();
        let returned = trim.maybe(Instant::now()).unwrap_or(0);
        assert!(returned > 20 << 20, "RSS returned: {returned}");
        // Not again within TRIM_EVERY (later depends on what the rest of this process frees).
        assert_eq!(trim.maybe(Instant::now()), None);
        drop(keep);
    }
}
