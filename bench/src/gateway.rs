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
    pub fn spawn(binary: &Path, driver: &str, workers: usize, backend: Option<SocketAddr>) -> io::Result<GatewayChild> {
        let config = std::env::temp_dir().join(format!("ringgate-bench-{}-{driver}.toml", std::process::id()));
        std::fs::write(
            &config,
            format!(
                "[listen]\ntcp = \"127.0.0.1:0\"\n[io]\ndriver = \"{driver}\"\nworkers = {workers}\n\
                 [limits]\nmax_in_flight = 256\n[auth]\nmode = \"none\"\n{}",
                backend.map(|b| format!("[backend]\naddresses = [\"{b}\"]\nwindow = 16384\n")).unwrap_or_default()
            ),
        )?;
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
}

/// A reference backend child (`ringgate reference-backend`); killed on drop.
#[derive(Debug)]
pub struct BackendChild {
    child: Child,
    pub addr: SocketAddr,
}

impl BackendChild {
    pub fn spawn(binary: &Path) -> io::Result<BackendChild> {
        let mut child = Command::new(binary)
            .args(["reference-backend", "--listen", "127.0.0.1:0", "--id", "bench", "--window", "16384"])
            .env("RINGGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let (addr, _) = wait_for_line(&mut child, "reference backend listening")?;
        let addr = addr.and_then(|a| a.parse().ok()).ok_or_else(|| io::Error::other("no addr in log"))?;
        Ok(BackendChild { child, addr })
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
