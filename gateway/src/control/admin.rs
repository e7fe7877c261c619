//! The admin HTTP endpoint, on its own address (never the client port), served by the
//! control plane's HTTP server ([`crate::http`]):
//! - `GET /metrics`: Prometheus text;
//! - `GET /healthz`: 200 while the process runs;
//! - `GET /readyz`: 200 when the node should get new clients, else 503 with the reason
//!   (draining, registry lease not held, no backend reachable);
//! - `POST /drain`: starts draining (`/readyz` fails from then on, so LVS health checks and
//!   DNS-based balancers stop sending new clients).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

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
    /// Connections on the node, and the most the open-file limit allows (when below
    /// `limits.max_connections`).
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    pub capacity: Option<usize>,
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
        if let Some(capacity) = self.capacity {
            let held = self.connections.load(Ordering::Relaxed);
            if held >= capacity {
                return Err(format!("at the open-file limit: {held} connections, the most ulimit -n allows here"));
            }
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

/// Serves one admin request.
pub async fn handle(view: AdminView, request: crate::http::Request) -> crate::http::Response {
    let (status, body) = respond(&view, request.method().as_str(), request.uri().path());
    crate::http::respond(status, "text/plain; version=0.0.4", body)
}

fn respond(view: &AdminView, method: &str, path: &str) -> (u16, String) {
    match (method, path) {
        ("GET", "/metrics") => {
            set_node_gauges(&view.gauges());
            (200, render())
        }
        ("GET", "/healthz") => (200, "ok\n".into()),
        ("GET", "/readyz") => match view.readiness() {
            Ok(()) => (200, "ready\n".into()),
            Err(why) => (503, format!("not ready: {why}\n")),
        },
        ("POST", "/drain") => {
            view.draining.store(true, Ordering::Relaxed);
            tracing::warn!("drain requested through the admin endpoint");
            (202, "draining\n".into())
        }
        _ => (404, "unknown endpoint\n".into()),
    }
}
