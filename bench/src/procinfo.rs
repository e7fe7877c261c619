//! Readings from /proc: a process's resident memory and the kernel's slab memory.

use std::io;

/// Resident set size of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    status_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Kernel slab memory (reclaimable and not), system-wide, in KiB.
pub fn slab_kib() -> io::Result<u64> {
    status_field("/proc/meminfo", "Slab:")
}

/// Open file descriptors of `pid`.
pub fn open_fds(pid: u32) -> io::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
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
    }
}
