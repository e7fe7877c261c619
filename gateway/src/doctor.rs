//! `ringgate doctor`: compares this machine with what a planned connection count needs and
//! says what to change. The checks are a pure function of readings, tested with synthetic
//! ones; [`read_system`] takes the readings from /proc.

use std::fmt;

/// Kernel memory an idle TCP socket costs (measured ~3.5-4.5 KiB on Linux 6.x), with margin.
const SOCKET_BYTES: u64 = 6 * 1024;
/// The gateway's user memory per idle connection (bench/README.md: 0.8-1.4 KiB measured),
/// with margin, and what a node needs besides.
const GATEWAY_BYTES: u64 = 1536;
const BASE_BYTES: u64 = 1 << 30;
/// Established connections per bucket of the kernel's TCP hash above which every packet's
/// socket lookup walks a long chain (measured: ~8 per bucket made the lookup 12% of all CPU).
const EHASH_LOAD: u64 = 2;

/// What the machine has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readings {
    pub nofile_soft: u64,
    pub nofile_hard: u64,
    pub nr_open: u64,
    pub file_max: u64,
    /// net.ipv4.tcp_mem "high", in 4 KiB pages.
    pub tcp_mem_high: u64,
    pub somaxconn: u64,
    pub syn_backlog: u64,
    pub port_range: (u64, u64),
    /// kernel.io_uring_disabled (absent on kernels without the knob).
    pub io_uring_disabled: Option<u64>,
    /// MemTotal, bytes.
    pub mem_total: u64,
    /// Buckets of the TCP established-connection hash (net.ipv4.tcp_ehash_entries; absent
    /// before Linux 6.1).
    pub tcp_ehash_entries: Option<u64>,
}

/// Which side of a load test this machine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Gateway,
    LoadGen { destinations: u64, sources: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check: &'static str,
    pub severity: Severity,
    pub have: String,
    pub want: String,
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.severity {
            Severity::Ok => "ok  ",
            Severity::Warn => "WARN",
            Severity::Fail => "FAIL",
        };
        write!(f, "{tag} {:<24} have {:<34} want {}", self.check, self.have, self.want)?;
        if self.severity != Severity::Ok {
            write!(f, "\n     fix: {}", self.fix)?;
        }
        Ok(())
    }
}

fn check(name: &'static str, bad: Severity, ok: bool, have: String, want: String, fix: String) -> Finding {
    Finding { check: name, severity: if ok { Severity::Ok } else { bad }, have, want, fix }
}

/// What `connections` connections in `role` need from `r`.
pub fn diagnose(r: &Readings, connections: u64, role: Role) -> Vec<Finding> {
    let files = connections + 1024;
    let mut out = vec![
        check(
            "open files (soft)",
            Severity::Fail,
            r.nofile_soft >= files,
            r.nofile_soft.to_string(),
            format!(">= {files}"),
            format!("LimitNOFILE={files} in the systemd unit (kernel-tuning/ringgate.service), or ulimit -n {files}"),
        ),
        check(
            "open files (hard)",
            Severity::Fail,
            r.nofile_hard >= files,
            r.nofile_hard.to_string(),
            format!(">= {files}"),
            format!("LimitNOFILE={files} (hard limit; root or systemd raises it)"),
        ),
        check(
            "fs.nr_open",
            Severity::Fail,
            r.nr_open >= files,
            r.nr_open.to_string(),
            format!(">= {files}"),
            format!("sysctl -w fs.nr_open={}", files.max(4_194_304)),
        ),
        check(
            "fs.file-max",
            Severity::Fail,
            r.file_max >= files * 11 / 10,
            r.file_max.to_string(),
            format!(">= {}", files * 11 / 10),
            format!("sysctl -w fs.file-max={}", (files * 11 / 10).max(4_194_304)),
        ),
    ];
    let need_pages = (connections * SOCKET_BYTES).div_ceil(4096);
    out.push(check(
        "net.ipv4.tcp_mem high",
        Severity::Warn,
        r.tcp_mem_high >= need_pages,
        format!("{} pages", r.tcp_mem_high),
        format!(">= {need_pages} pages ({} MiB)", need_pages * 4 / 1024),
        format!("sysctl -w net.ipv4.tcp_mem=\"{} {} {}\"", need_pages / 3, need_pages * 2 / 3, need_pages),
    ));
    match role {
        Role::Gateway => {
            let need = connections * (GATEWAY_BYTES + SOCKET_BYTES) + BASE_BYTES;
            out.push(check(
                "memory",
                Severity::Fail,
                r.mem_total >= need,
                format!("{} MiB", r.mem_total >> 20),
                format!(">= {} MiB ({} B per connection, user and kernel)", need >> 20, GATEWAY_BYTES + SOCKET_BYTES),
                format!("a machine with {} GiB or more, or fewer connections per node", need.div_ceil(1 << 30)),
            ));
            if let Some(buckets) = r.tcp_ehash_entries {
                let want = connections.div_ceil(EHASH_LOAD).next_power_of_two();
                out.push(check(
                    "tcp_ehash_entries",
                    Severity::Warn,
                    buckets.saturating_mul(EHASH_LOAD) >= connections,
                    buckets.to_string(),
                    format!(">= {want}"),
                    format!("boot with thash_entries={want} (the size is fixed at boot; a network namespace takes net.ipv4.tcp_child_ehash_entries)"),
                ));
            }
            out.push(check(
                "net.core.somaxconn",
                Severity::Warn,
                r.somaxconn >= 4096,
                r.somaxconn.to_string(),
                ">= 4096".into(),
                "sysctl -w net.core.somaxconn=65535 (reconnect storms overflow small accept queues)".into(),
            ));
            out.push(check(
                "tcp_max_syn_backlog",
                Severity::Warn,
                r.syn_backlog >= 4096,
                r.syn_backlog.to_string(),
                ">= 4096".into(),
                "sysctl -w net.ipv4.tcp_max_syn_backlog=65535".into(),
            ));
            let uring = r.io_uring_disabled.unwrap_or(0);
            out.push(check(
                "kernel.io_uring_disabled",
                Severity::Warn,
                uring == 0,
                uring.to_string(),
                "0".into(),
                "sysctl -w kernel.io_uring_disabled=0 (otherwise ringgate runs on epoll)".into(),
            ));
        }
        Role::LoadGen { destinations, sources } => {
            let ports = r.port_range.1.saturating_sub(r.port_range.0) + 1;
            let capacity = ports * sources.max(1) * destinations.max(1);
            out.push(check(
                "ephemeral ports",
                Severity::Fail,
                capacity >= connections,
                format!("{ports} ports x {sources} sources x {destinations} dest"),
                format!(">= {connections} tuples"),
                format!(
                    "sysctl -w net.ipv4.ip_local_port_range=\"1024 65535\" and spread over >= {} source addresses (--sources)",
                    connections.div_ceil(64_512 * destinations.max(1))
                ),
            ));
        }
    }
    out
}

fn sysctl(key: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/{}", key.replace('.', "/"))).ok().map(|s| s.trim().to_owned())
}

fn num(key: &str) -> u64 {
    sysctl(key).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn field(text: &str, n: usize) -> u64 {
    text.split_whitespace().nth(n).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Readings of this process and kernel.
pub fn read_system() -> Readings {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let nofile = limits.lines().find(|l| l.starts_with("Max open files")).unwrap_or_default();
    let nofile = nofile.trim_start_matches("Max open files");
    let tcp_mem = sysctl("net.ipv4.tcp_mem").unwrap_or_default();
    let ports = sysctl("net.ipv4.ip_local_port_range").unwrap_or_default();
    Readings {
        nofile_soft: field(nofile, 0),
        nofile_hard: field(nofile, 1),
        nr_open: num("fs.nr_open"),
        file_max: num("fs.file-max"),
        tcp_mem_high: field(&tcp_mem, 2),
        somaxconn: num("net.core.somaxconn"),
        syn_backlog: num("net.ipv4.tcp_max_syn_backlog"),
        port_range: (field(&ports, 0), field(&ports, 1)),
        io_uring_disabled: sysctl("kernel.io_uring_disabled").and_then(|s| s.parse().ok()),
        mem_total: meminfo("MemTotal:") * 1024,
        tcp_ehash_entries: sysctl("net.ipv4.tcp_ehash_entries").and_then(|s| s.parse().ok()),
    }
}

/// A /proc/meminfo field, in KiB (0 when absent).
fn meminfo(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines().find(|l| l.starts_with(key)).map_or(0, |l| field(l, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roomy() -> Readings {
        Readings {
            nofile_soft: 2_000_000,
            nofile_hard: 2_000_000,
            nr_open: 4_194_304,
            file_max: 4_194_304,
            tcp_mem_high: 2_359_296,
            somaxconn: 65_535,
            syn_backlog: 65_535,
            port_range: (1024, 65_535),
            io_uring_disabled: Some(0),
            mem_total: 64 << 30,
            tcp_ehash_entries: Some(524_288),
        }
    }

    fn worst(findings: &[Finding]) -> Severity {
        findings.iter().map(|f| f.severity).max().unwrap_or(Severity::Ok)
    }

    #[test]
    fn a_tuned_machine_passes() {
        assert_eq!(worst(&diagnose(&roomy(), 1_000_000, Role::Gateway)), Severity::Ok);
    }

    #[test]
    fn each_shortfall_is_named_with_a_fix() {
        let r = Readings {
            nofile_soft: 20_000,
            tcp_mem_high: 100_000,
            io_uring_disabled: Some(2),
            mem_total: 4 << 30,
            tcp_ehash_entries: Some(262_144),
            ..roomy()
        };
        let f = diagnose(&r, 1_000_000, Role::Gateway);
        let bad: Vec<&str> = f.iter().filter(|f| f.severity != Severity::Ok).map(|f| f.check).collect();
        assert_eq!(
            bad,
            ["open files (soft)", "net.ipv4.tcp_mem high", "memory", "tcp_ehash_entries", "kernel.io_uring_disabled"]
        );
        assert!(f[0].fix.contains("LimitNOFILE=1001024"));
        let memory = f.iter().find(|f| f.check == "memory").unwrap();
        assert_eq!(memory.severity, Severity::Fail);
        assert!(memory.want.contains(">= 8348 MiB") && memory.fix.contains("9 GiB"), "{memory}");
        let ehash = f.iter().find(|f| f.check == "tcp_ehash_entries").unwrap();
        assert!(ehash.fix.contains("thash_entries=524288"), "{ehash}");
        // A kernel without the knob is not warned about.
        let old = Readings { tcp_ehash_entries: None, ..roomy() };
        assert!(diagnose(&old, 1_000_000, Role::Gateway).iter().all(|f| f.check != "tcp_ehash_entries"));
    }

    #[test]
    fn load_generators_need_ports_or_sources() {
        let r = Readings { port_range: (32_768, 60_999), ..roomy() };
        let one = diagnose(&r, 100_000, Role::LoadGen { destinations: 1, sources: 1 });
        assert_eq!(one.last().map(|f| f.severity), Some(Severity::Fail));
        let spread = diagnose(&r, 100_000, Role::LoadGen { destinations: 1, sources: 4 });
        assert_eq!(spread.last().map(|f| f.severity), Some(Severity::Ok));
    }
}
