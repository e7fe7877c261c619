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
    /// Starts `binary run` with `driver` and `workers`, auth off, on an ephemeral loopback
    /// port; Sends go to `backend` over TCP links, or to the embedded backend when `None`.
    pub fn spawn(binary: &Path, driver: &str, workers: usize, backends: &[SocketAddr]) -> io::Result<GatewayChild> {
        let backend = if backends.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
            format!("[backend]\naddresses = [{}]\nwindow = 16384\n", list.join(", "))
        };
        let text = format!(
            "[listen]\ntcp = \"127.0.0.1:0\"\n[io]\ndriver = \"{driver}\"\nworkers = {workers}\n\
             [limits]\nmax_in_flight = 256\n[auth]\nmode = \"none\"\n{backend}"
        );
        GatewayChild::start(binary, driver, &text)
    }

    /// Starts `binary run` with the config `text` (named `name` in the temp directory).
    pub fn start(binary: &Path, name: &str, text: &str) -> io::Result<GatewayChild> {
        let config = std::env::temp_dir().join(format!("ringgate-bench-{}-{name}.toml", std::process::id()));
        std::fs::write(&config, text)?;
        let mut child = Command::new(binary)
            .args(["run", "--config"])
            .arg(&config)
            .env("RINGGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let (addr, got) = wait_for_line(&mut child, "listening")?;
        let addr = addr.and_then(|a| a.parse().ok()).ok_or_else(|| io::Error::other("no addr in log"))?;
        Ok(GatewayChild { child, addr, driver: got.unwrap_or_default(), config })
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
        let mut child = Command::new(binary)
            .args(["reference-backend", "--listen", "127.0.0.1:0", "--id", "bench", "--window", "16384"])
            .args(extra)
            .env("RINGGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let (addr, _) = wait_for_line(&mut child, "reference backend listening")?;
        let addr = addr.and_then(|a| a.parse().ok()).ok_or_else(|| io::Error::other("no addr in log"))?;
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
        let mut child = Command::new(std::env::current_exe()?)
            .args(["echo-server", "--listen", "127.0.0.1:0", "--threads", &threads.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let (addr, _) = wait_for_line(&mut child, "echo server listening")?;
        let addr = addr.and_then(|a| a.parse().ok()).ok_or_else(|| io::Error::other("no addr in log"))?;
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

/// Reads a child's log to the line containing `marker`; returns its addr= and driver= fields
/// and keeps draining the log so the child never blocks on a full pipe.
fn wait_for_line(child: &mut Child, marker: &str) -> io::Result<(Option<String>, Option<String>)> {
    {
        let stderr = child.stderr.take().ok_or_else(|| io::Error::other("no stderr"))?;
        let mut lines = BufReader::new(stderr).lines();
        let found = loop {
            let Some(line) = lines.next() else {
                let _ = child.kill();
                return Err(io::Error::other(format!("child exited before logging {marker:?}")));
            };
            let line = line?;
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
