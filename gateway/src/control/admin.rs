//! The admin HTTP endpoint, on its own address (never the client port), served by the
//! control plane's HTTP server ([`crate::http`]):
//! - `GET /metrics`: Prometheus text;
//! - `GET /healthz`: 200 while the process runs;
//! - `GET /readyz`: 200 when the node should get new clients, else 503 with the reason
//!   (draining, registry lease not held, no backend reachable);
//! - `POST /drain`: starts draining (`/readyz` fails from then on, so LVS health checks and
//!   DNS-based balancers stop sending new clients);
//! - `GET /` and `GET /status.json`: the node's status page ([`super::page`]).
//!
//! Every request is refused unless its `Host` is an IP address, `localhost` or one of
//! `admin.hosts` (a browser tricked by DNS rebinding sends the attacker's name), and unless
//! its `Origin`, when it has one, is that same host (a cross-origin form or fetch from a page
//! elsewhere). With `admin.key` set, a POST needs `Authorization: Bearer KEY`; a node whose
//! admin address is not loopback does not start without one. At most [`LIMITS`] connections
//! at once, each closed when a request head does not arrive in time.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use hyper::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, HOST, HeaderValue, ORIGIN};

use super::page::{self, NodeFacts, StatusPage};
use crate::http::{BearerKeys, Limits};
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
    /// `redis.fail_open`: logins go on while Redis is down, so readiness does too.
    pub registry_fail_open: bool,
    pub dns: Option<Arc<Mutex<DiscoveryState>>>,
    pub draining: Arc<AtomicBool>,
    /// Connections on the node; `limits.max_connections` (reloadable); the most the
    /// open-file limit allows, when it sets a limit.
    pub connections: Arc<AtomicUsize>,
    pub max_connections: Arc<AtomicUsize>,
    pub file_capacity: Option<usize>,
    pub memory: Arc<crate::memory::MemoryGuard>,
    pub page: Arc<StatusPage>,
    /// `admin.key`, when set.
    pub key: Option<BearerKeys>,
    /// `admin.hosts`, lowercase.
    pub hosts: Arc<[String]>,
}

/// The admin listener: a few scrapers and operators, never a crowd.
pub const LIMITS: Limits = Limits {
    name: "admin",
    max_connections: 64,
    header_timeout: Duration::from_secs(5),
    max_age: Duration::from_secs(60),
};

impl AdminView {
    /// `Ok` when ready for new clients, else why not.
    pub fn readiness(&self) -> Result<(), String> {
        if self.draining.load(Ordering::Relaxed) {
            return Err("draining".into());
        }
        if !self.registry_fail_open && self.registry_down() {
            return Err("registry unavailable (redis.fail_open = false: logins are refused)".into());
        }
        if let Some(files) = self.file_capacity
            && files < self.max_connections.load(Ordering::Relaxed)
        {
            let held = self.connections.load(Ordering::Relaxed);
            if held >= files {
                return Err(format!("at the open-file limit: {held} connections, the most ulimit -n allows here"));
            }
        }
        if self.memory.is_high() {
            return Err(format!(
                "at limits.max_memory: RSS {} MiB of {} MiB; new connections are refused",
                self.memory.rss() >> 20,
                self.memory.limit().unwrap_or(0) >> 20
            ));
        }
        if !self.embedded_backend && self.links_up() == 0 {
            return Err("no backend reachable".into());
        }
        Ok(())
    }

    /// Redis is configured and not answering.
    fn registry_down(&self) -> bool {
        self.registry.as_ref().is_some_and(|r| !r.lock().is_ok_and(|s| s.up))
    }

    /// What a ready node says beside "ready": a degradation that does not stop logins.
    fn degraded(&self) -> Option<&'static str> {
        (self.registry_fail_open && self.registry_down())
            .then_some("registry unavailable; logins go on (redis.fail_open), pushes by user or room may miss")
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
            degraded: self.degraded(),
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

/// Why a request may not be served: its status and the reason.
fn refusal(view: &AdminView, request: &crate::http::Request) -> Option<(u16, &'static str)> {
    let headers = request.headers();
    // No Host at all is an HTTP/1.0 health check (HAProxy's httpchk, keepalived): no browser
    // sends that, so it is not what the Host rule guards against.
    let host = match headers.get(HOST).map(|h| h.to_str()) {
        None => None,
        Some(Ok(host)) => Some(host),
        Some(Err(_)) => return Some((400, "the Host header is not text\n")),
    };
    if let Some(host) = host
        && !host_allowed(host, &view.hosts)
    {
        return Some((403, "Host not allowed: use an IP address, localhost, or a name listed in admin.hosts\n"));
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let same = host.is_some_and(|host| {
            origin.to_str().ok().and_then(|o| o.strip_prefix("http://")).is_some_and(|o| o.eq_ignore_ascii_case(host))
        });
        if !same {
            return Some((403, "cross-origin request refused\n"));
        }
    }
    if request.method() == hyper::Method::POST
        && let Some(key) = &view.key
        && !key.admit(headers)
    {
        return Some((401, "POST needs Authorization: Bearer <admin.key>\n"));
    }
    None
}

/// `host` (with or without its port) is an IP literal, localhost, or one of `allowed`.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let port_ok = |rest: &str| rest.is_empty() || rest.strip_prefix(':').is_some_and(|p| p.parse::<u16>().is_ok());
    let name = match host.strip_prefix('[') {
        Some(v6) => {
            let Some((ip, rest)) = v6.split_once(']') else { return false };
            return ip.parse::<std::net::Ipv6Addr>().is_ok() && port_ok(rest);
        }
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.parse::<u16>().is_ok() => name,
            Some(_) => return false,
            None => host,
        },
    };
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// Serves one admin request.
pub async fn handle(view: AdminView, request: crate::http::Request) -> crate::http::Response {
    if let Some((status, why)) = refusal(&view, &request) {
        crate::metrics::admin_refused(status);
        return crate::http::respond(status, "text/plain; charset=utf-8", why);
    }
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
        ("GET", "/readyz") => match (view.readiness(), view.degraded()) {
            (Ok(()), None) => (200, "ready\n".into()),
            (Ok(()), Some(why)) => (200, format!("ready, degraded: {why}\n")),
            (Err(why), _) => (503, format!("not ready: {why}\n")),
        },
        ("POST", "/drain") => {
            view.draining.store(true, Ordering::Relaxed);
            tracing::warn!("drain requested through the admin endpoint");
            (202, "draining\n".into())
        }
        _ => (404, "unknown endpoint\n".into()),
    }
}
