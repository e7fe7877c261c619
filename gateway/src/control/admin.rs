//! The admin HTTP endpoint, on its own address (never the client port), served by the
//! control plane's HTTP server ([`crate::http`]):
//! - `GET /metrics`: Prometheus text;
//! - `GET /healthz`: 200 while the process runs;
//! - `GET /readyz`: 200 when the node should get new clients, else 503 with the reason
//!   (draining, registry lease not held, no backend reachable);
//! - `POST /drain`: starts draining (`/readyz` fails from then on, so LVS health checks and
//!   DNS-based balancers stop sending new clients);
//! - `GET /` and `GET /status.json`: the node's status page ([`super::page`]).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hyper::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, HeaderValue};

use super::page::{self, NodeFacts, StatusPage};
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
    /// Connections on the node; `limits.max_connections` (reloadable); the most the
    /// open-file limit allows, when it sets a limit.
    pub connections: Arc<AtomicUsize>,
    pub max_connections: Arc<AtomicUsize>,
    pub file_capacity: Option<usize>,
    pub page: Arc<StatusPage>,
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
        if let Some(files) = self.file_capacity
            && files < self.max_connections.load(Ordering::Relaxed)
        {
            let held = self.connections.load(Ordering::Relaxed);
            if held >= files {
                return Err(format!("at the open-file limit: {held} connections, the most ulimit -n allows here"));
            }
        }
        if !self.embedded_backend && self.links_up() == 0 {
            return Err("no backend reachable".into());
        }
        Ok(())
    }

    /// The most connections the node takes now.
    pub fn capacity(&self) -> usize {
        let max = self.max_connections.load(Ordering::Relaxed);
        self.file_capacity.map_or(max, |f| f.min(max))
    }

    fn links_up(&self) -> u64 {
        self.stats.iter().map(|s| s.links_up.load(Ordering::Relaxed)).sum()
    }

    fn facts(&self) -> NodeFacts {
        NodeFacts {
            node: self.node_id.clone(),
            driver: self.driver,
            backend: self.backend(),
            readiness: self.readiness(),
            draining: self.draining.load(Ordering::Relaxed),
            capacity: self.capacity(),
            links_up: self.links_up(),
            registry: self.registry.as_ref().and_then(|r| r.lock().ok().map(|s| s.clone())),
            dns: self.dns.as_ref().and_then(|d| d.lock().ok().map(|s| s.clone())),
        }
    }

    fn backend(&self) -> &'static str {
        if self.embedded_backend { "embedded" } else { "links" }
    }

    /// The Prometheus text, with the node's gauges brought up to date first.
    fn metrics(&self) -> String {
        set_node_gauges(&self.gauges());
        render()
    }

    fn gauges(&self) -> NodeGauges {
        NodeGauges {
            driver: self.driver,
            backend: self.backend(),
            capacity: self.capacity(),
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
    match (request.method().as_str(), request.uri().path()) {
        ("GET", "/") => {
            let mut response = crate::http::respond(200, "text/html; charset=utf-8", page::HTML);
            response.headers_mut().insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(page::CSP));
            response
        }
        ("GET", "/status.json") => {
            let status = view.page.status(view.facts(), || view.metrics());
            let body = serde_json::to_vec(&status).unwrap_or_default();
            let mut response = crate::http::respond(200, "application/json", body);
            response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        (method, path) => {
            let (status, body) = respond(&view, method, path);
            crate::http::respond(status, "text/plain; version=0.0.4", body)
        }
    }
}

fn respond(view: &AdminView, method: &str, path: &str) -> (u16, String) {
    match (method, path) {
        ("GET", "/metrics") => (200, view.metrics()),
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
