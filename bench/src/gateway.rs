//! A ringgate gateway started as a child process for a benchmark, with a generated config.

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running gateway child; killed on drop.
#[derive(Debug)]
pub struct GatewayChild {
    child: Child,
    pub addr: SocketAddr,
    pub driver: String,
    config: PathBuf,
}

impl GatewayChild {
    /// Starts `binary run` with [`bench_config`] on an ephemeral loopback port.
    pub fn spawn(binary: &Path, driver: &str, workers: usize, backends: &[SocketAddr]) -> io::Result<GatewayChild> {
        GatewayChild::start(binary, driver, &bench_config(driver, workers, backends, "", ""))
    }

    /// Starts `binary run` with the config `text` (named `name` in the temp directory).
    pub fn start(binary: &Path, name: &str, text: &str) -> io::Result<GatewayChild> {
        let config = std::env::temp_dir().join(format!("ringgate-bench-{}-{name}.toml", std::process::id()));
        std::fs::write(&config, text)?;
        let mut cmd = Command::new(binary);
        cmd.args(["run", "--config"]).arg(&config);
        let (child, addr, driver) = spawn_logged(cmd, "listening;")?;
        Ok(GatewayChild { child, addr, driver: driver.unwrap_or_default(), config })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (SIGTERM drains, SIGKILL kills).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }
}

/// `[limits]` lines that lift admission control's per-address limits: a load generator opens
/// tens of thousands of connections per second from a few dozen 127.1.x.y sources, which is
/// exactly what those limits exist to refuse (the `abuse` figures measure them).
pub const NO_ADDRESS_LIMITS: &str = "max_connections_per_address = 1000000\nmax_unauthenticated_per_address = 1000000\n\
    new_connections_per_address = 1000000\nnew_connections_burst = 1000000\nflapping_failures = 0\n\
    max_unauthenticated = 1000000\nmax_tls_handshakes = 1000000\n";

/// A benchmark node's config: `driver` and `workers`, auth off, 256 Sends in flight, no
/// per-address limits ([`NO_ADDRESS_LIMITS`]), TCP on an
/// ephemeral loopback port plus `more_listen` lines of `[listen]`; Sends go to `backends` over
/// TCP links (window 16,384), or to the embedded backend when there are none; `more` is
/// appended (further sections).
pub fn bench_config(driver: &str, workers: usize, backends: &[SocketAddr], more_listen: &str, more: &str) -> String {
    let backend = if backends.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
        format!("[backend]\naddresses = [{}]\nwindow = 16384\n", list.join(", "))
    };
    format!(
        "[listen]\ntcp = \"127.0.0.1:0\"\n{more_listen}[io]\ndriver = \"{driver}\"\nworkers = {workers}\n\
         [limits]\nmax_in_flight = 256\n{NO_ADDRESS_LIMITS}[auth]\nmode = \"none\"\n{backend}{more}"
    )
}

/// A reference backend child (`ringgate reference-backend`); killed on drop.
#[derive(Debug)]
pub struct BackendChild {
    child: Child,
    pub addr: SocketAddr,
}

impl BackendChild {
    pub fn spawn(binary: &Path) -> io::Result<BackendChild> {
        BackendChild::spawn_with(binary, &[])
    }

    /// A reference backend with extra arguments (like `--redis URL`).
    pub fn spawn_with(binary: &Path, extra: &[&str]) -> io::Result<BackendChild> {
        let mut cmd = Command::new(binary);
        cmd.args(["reference-backend", "--listen", "127.0.0.1:0", "--id", "bench", "--window", "16384"]).args(extra);
        let (child, addr, _) = spawn_logged(cmd, "reference backend listening")?;
        Ok(BackendChild { child, addr })
    }
}

impl BackendChild {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// A client-protocol echo server (`ringgate-bench echo-server`), this binary as a child.
#[derive(Debug)]
pub struct EchoChild {
    child: Child,
    pub addr: SocketAddr,
}

impl EchoChild {
    pub fn spawn(threads: usize) -> io::Result<EchoChild> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["echo-server", "--listen", "127.0.0.1:0", "--threads", &threads.to_string()]);
        let (child, addr, _) = spawn_logged(cmd, "echo server listening")?;
        Ok(EchoChild { child, addr })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for EchoChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BackendChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd` (log level info, stderr piped) and waits for its log line containing
/// `marker`; returns the child, that line's addr= field and its driver= field.
fn spawn_logged(mut cmd: Command, marker: &str) -> io::Result<(Child, SocketAddr, Option<String>)> {
    let mut child = cmd.env("RINGGATE_LOG", "info").stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    let (addr, driver) = wait_for_line(&mut child, marker)?;
    let Some(addr) = addr.and_then(|a| a.parse().ok()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(io::Error::other(format!("no addr in the {marker:?} log line")));
    };
    Ok((child, addr, driver))
}

/// Reads a child's log to the line containing `marker`; returns its addr= and driver= fields
/// and keeps draining the log so the child never blocks on a full pipe.
fn wait_for_line(child: &mut Child, marker: &str) -> io::Result<(Option<String>, Option<String>)> {
    {
        let stderr = child.stderr.take().ok_or_else(|| io::Error::other("no stderr"))?;
        let mut lines = BufReader::new(stderr).lines();
        // The child's last words, for the error when it dies before the marker.
        let mut last: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        let found = loop {
            let Some(line) = lines.next() else {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                let said = Vec::from(last).join(" | ");
                return Err(io::Error::other(format!("child exited ({status}) before logging {marker:?}: {said}")));
            };
            let line = line?;
            if last.len() == 5 {
                last.pop_front();
            }
            last.push_back(line.clone());
            if line.contains(marker) {
                break (field(&line, "addr"), field(&line, "driver"));
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(found)
    }
}

impl Drop for GatewayChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

fn field(line: &str, name: &str) -> Option<String> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    Some(line.get(start..)?.split_whitespace().next()?.trim_matches('"').to_owned())
}
