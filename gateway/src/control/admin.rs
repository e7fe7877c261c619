//! The admin HTTP endpoint, on its own address (never the client port), served by a
//! control-plane thread:
//! - `GET /metrics`: Prometheus text;
//! - `GET /healthz`: 200 while the process runs;
//! - `GET /readyz`: 200 when the node should get new clients, else 503 with the reason
//!   (draining, registry lease not held, no backend reachable);
//! - `POST /drain`: starts draining (`/readyz` fails from then on, so LVS health checks and
//!   DNS-based balancers stop sending new clients).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::metrics::{NodeGauges, render, set_node_gauges};
use crate::status::DiscoveryState;
use crate::status::RegistryState;
use crate::worker::stats::WorkerStats;

/// What the admin endpoint reads from the node.
#[derive(Debug, Clone)]
pub struct AdminView {
    pub driver: &'static str,
    pub node_id: String,
    pub stats: Vec<Arc<WorkerStats>>,
    pub embedded_backend: bool,
    pub registry: Option<Arc<Mutex<RegistryState>>>,
    pub dns: Option<Arc<Mutex<DiscoveryState>>>,
    pub draining: Arc<AtomicBool>,
}

impl AdminView {
    /// `Ok` when ready for new clients, else why not.
    pub fn readiness(&self) -> Result<(), String> {
        if self.draining.load(Ordering::Relaxed) {
            return Err("draining".into());
        }
        if let Some(r) = &self.registry
            && !r.lock().is_ok_and(|s| s.up)
        {
            return Err("registry unavailable".into());
        }
        let links: u64 = self.stats.iter().map(|s| s.links_up.load(Ordering::Relaxed)).sum();
        if !self.embedded_backend && links == 0 {
            return Err("no backend reachable".into());
        }
        Ok(())
    }

    fn gauges(&self) -> NodeGauges {
        NodeGauges {
            driver: self.driver,
            node_id: self.node_id.clone(),
            ready: self.readiness().is_ok(),
            draining: self.draining.load(Ordering::Relaxed),
            registry: self.registry.as_ref().and_then(|r| r.lock().ok().map(|s| s.clone())),
            dns: self.dns.as_ref().and_then(|d| d.lock().ok().map(|s| s.clone())),
        }
    }
}

/// Serves the admin endpoint on `listener` until `stop`'s sender is dropped.
pub fn run(listener: std::net::TcpListener, view: AdminView, stop: flume::Receiver<()>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    rt.block_on(async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        tokio::spawn(serve(stream, view.clone()));
                    }
                }
                _ = stop.recv_async() => return,
            }
        }
    });
}

async fn serve(mut stream: tokio::net::TcpStream, view: AdminView) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut request = text.split_whitespace();
    let (method, path) = (request.next().unwrap_or(""), request.next().unwrap_or(""));
    let (status, body) = respond(&view, method, path);
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn respond(view: &AdminView, method: &str, path: &str) -> (&'static str, String) {
    match (method, path) {
        ("GET", "/metrics") => {
            set_node_gauges(&view.gauges());
            ("200 OK", render())
        }
        ("GET", "/healthz") => ("200 OK", "ok\n".into()),
        ("GET", "/readyz") => match view.readiness() {
            Ok(()) => ("200 OK", "ready\n".into()),
            Err(why) => ("503 Service Unavailable", format!("not ready: {why}\n")),
        },
        ("POST", "/drain") => {
            view.draining.store(true, Ordering::Relaxed);
            tracing::warn!("drain requested through the admin endpoint");
            ("202 Accepted", "draining\n".into())
        }
        _ => ("404 Not Found", "unknown endpoint\n".into()),
    }
}

/// Binds the admin listener now, so a bad address fails the start with a clear error.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}
