//! Readings from /proc: a process's resident memory and the kernel's slab memory.

use std::io;

/// Resident set size of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    status_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// The anonymous part of `pid`'s RSS (heap, stacks, rings), in KiB: what a leak grows. The
/// rest of RSS is file pages (the binary's code as paths are first run), clean and shared.
pub fn rss_anon_kib(pid: u32) -> io::Result<u64> {
    status_field(&format!("/proc/{pid}/status"), "RssAnon:")
}

/// Kernel slab memory (reclaimable and not), system-wide, in KiB.
pub fn slab_kib() -> io::Result<u64> {
    status_field("/proc/meminfo", "Slab:")
}

/// Memory the kernel estimates is available for new work (MemAvailable), in KiB.
pub fn mem_available_kib() -> io::Result<u64> {
    status_field("/proc/meminfo", "MemAvailable:")
}

/// Open file descriptors of `pid`.
pub fn open_fds(pid: u32) -> io::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// CPU time `pid` has used (user + system), in milliseconds.
pub fn cpu_ms(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is the first, utime the 12th.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).ok_or_else(|| io::Error::other("bad stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks =
        |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| io::Error::other("bad stat"));
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok((ticks(11)? + ticks(12)?) * 1000 / hz)
}

fn status_field(path: &str, key: &str) -> io::Result<u64> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other(format!("{key} missing from {path}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        assert!(open_fds(std::process::id()).unwrap() >= 3);
        assert!(slab_kib().unwrap() > 0);
        let before = cpu_ms(std::process::id()).unwrap();
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(0u64);
        }
        assert!(cpu_ms(std::process::id()).unwrap() >= before + 20, "50 ms of spinning shows as CPU time");
    }
}
