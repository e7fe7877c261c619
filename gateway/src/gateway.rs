//! A gateway node: its workers and its embedded backend, started from already-bound
//! listeners so that tests can bind port 0 and callers own the sockets.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use ringgate_codec::ReasonCode;

use crate::backend::embedded;
use crate::config::Config;
use crate::config::RedisTarget;
use crate::inbox::WorkerMsg;
use crate::registry::redis::{NodeInfo, RegistryIo, RegistryTx};
use crate::status::DiscoveryState;
use crate::status::RegistryState;
use crate::worker::stats::WorkerStats;
use crate::worker::{self, Backends, WorkerSetup};

/// Queue length of each worker's inbox and of the embedded backend's input.
const QUEUE: usize = 65_536;

/// A running gateway node.
#[derive(Debug)]
pub struct Gateway {
    local_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    ws_addr: Option<SocketAddr>,
    wss_addr: Option<SocketAddr>,
    quic_addr: Option<SocketAddr>,
    driver: &'static str,
    inboxes: Vec<flume::Sender<WorkerMsg>>,
    workers: Vec<JoinHandle<()>>,
    backend: Option<JoinHandle<()>>,
    stats: Vec<Arc<WorkerStats>>,
    node_epoch: u64,
    discovery: Mutex<Option<Discovery>>,
    registry: Option<Registry>,
    plane: Option<Plane>,
    api_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    config: Mutex<Arc<Config>>,
    admission: Arc<crate::admission::Admission>,
    memory: Arc<crate::memory::MemoryGuard>,
    draining: Arc<std::sync::atomic::AtomicBool>,
    drain: crate::config::DrainConfig,
    /// `limits.max_connections` as last loaded, for the admin endpoint.
    max_connections: Arc<std::sync::atomic::AtomicUsize>,
}

/// `auth.jwks_url` and its refresh, when tokens come from a JWKS.
fn jwks_source(config: &Config) -> Option<crate::auth::token::JwksSource> {
    match &config.auth {
        crate::config::AuthMode::Token(rules) => rules.jwks.clone(),
        crate::config::AuthMode::None => None,
    }
}

/// What a drain did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainReport {
    /// Connections open when GoAways started.
    pub connections: u64,
    /// Connections still open at the deadline (closed with server_draining).
    pub left_at_deadline: u64,
    pub elapsed: std::time::Duration,
}

/// The control plane's HTTP thread (admin endpoint, server API, relay).
#[derive(Debug)]
struct Plane {
    stop: Option<flume::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The Redis registry thread and what it has seen.
#[derive(Debug)]
struct Registry {
    state: Arc<Mutex<RegistryState>>,
    stop: Option<flume::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The DNS discovery thread and what it has seen.
#[derive(Debug)]
struct Discovery {
    state: Arc<Mutex<DiscoveryState>>,
    stop: Option<flume::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Gateway {
    /// Starts one worker per listener (see [`crate::listener::bind_group`]).
    pub fn start(config: Config, listeners: Vec<std::net::TcpListener>) -> io::Result<Gateway> {
        let local_addr = listeners.first().ok_or_else(|| io::Error::other("no listener"))?.local_addr()?;
        // Before anything creates a metric handle: a handle made before the recorder exists
        // counts into nothing (the relay's and the API's are made on this thread, while the
        // workers that also install it start on their own).
        crate::metrics::install();
        let mut config = config;
        config.workers = listeners.len();
        let config = Arc::new(config);
        let node_epoch = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_millis() as u64);
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..listeners.len()).map(|_| flume::bounded(QUEUE)).unzip();
        let (backends, backend) = match &config.backend {
            Some(tcp) => (Backends::Tcp(Arc::new(tcp.clone())), None),
            None => {
                let (tx, handle) = embedded::spawn(&config.node_id, node_epoch, senders.clone(), QUEUE)?;
                (Backends::Embedded(tx), Some(handle))
            }
        };
        let (registry, registry_tx) = match &config.redis {
            Some(target) => {
                let node = NodeInfo { id: config.node_id.clone(), epoch: node_epoch, addr: config.advertise.clone() };
                let (r, tx) = start_registry(target.clone(), node, config.device_policy, senders.clone())?;
                (Some(r), Some(tx))
            }
            None => (None, None),
        };
        // Link pushes that other nodes must also deliver go to the relay (only with Redis:
        // a single node has no other nodes).
        let (forward_tx, forward_rx) = match &config.redis {
            Some(_) => {
                let (tx, rx) = flume::bounded(QUEUE);
                (Some(tx), rx)
            }
            None => (None, flume::bounded(1).1),
        };
        let count = listeners.len();
        let certs = match &config.tls {
            Some(settings)
                if config.listen_tls.is_some() || config.listen_quic.is_some() || config.listen_wss.is_some() =>
            {
                Some(load_certs(&config, settings).map_err(io::Error::other)?)
            }
            _ => None,
        };
        let mut tls_listeners = match config.listen_tls {
            Some(addr) => crate::listener::bind_group(addr, count, 65_535)?.into_iter().map(Some).collect(),
            None => Vec::new(),
        };
        let tls_addr =
            tls_listeners.first().and_then(|l: &Option<std::net::TcpListener>| l.as_ref()?.local_addr().ok());
        let mut ws_listeners = bind_optional(config.listen_ws, count)?;
        let mut wss_listeners = bind_optional(config.listen_wss, count)?;
        let ws_addr = ws_listeners.first().and_then(|l| l.as_ref()?.local_addr().ok());
        let wss_addr = wss_listeners.first().and_then(|l| l.as_ref()?.local_addr().ok());
        let mut quic_sockets = match config.listen_quic {
            Some(addr) => crate::transport::quic::bind_group(addr, count)?.into_iter().map(Some).collect(),
            None => Vec::new(),
        };
        let quic_addr = quic_sockets.first().and_then(|s: &Option<std::net::UdpSocket>| s.as_ref()?.local_addr().ok());
        let mut workers = Vec::new();
        let mut stats = Vec::new();
        let mut driver = "unknown";
        let node_active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let jwks = crate::auth::token::JwksKeys::default();
        let admission = Arc::new(crate::admission::Admission::new(config.admission.clone()));
        // The open-file limit caps connections too: refuse (server_overloaded) before
        // accept(2) starts failing.
        let files = crate::admission::file_capacity(crate::admission::open_files());
        let memory = Arc::new(crate::memory::MemoryGuard::new(crate::memory::resolve(config.max_memory)));
        let max_connections = Arc::new(std::sync::atomic::AtomicUsize::new(config.max_connections));
        if let Some(files) = files
            && files < config.max_connections
        {
            tracing::warn!(
                max_connections = config.max_connections,
                file_limit_allows = files,
                "limits.max_connections is above what the open-file limit (ulimit -n) allows; this node refuses \
                 connections beyond it with server_overloaded. Raise LimitNOFILE (see `ringgate doctor`)"
            );
        }
        for (index, (listener, inbox)) in listeners.into_iter().zip(receivers).enumerate() {
            let worker_stats = Arc::new(WorkerStats::default());
            stats.push(worker_stats.clone());
            let setup = WorkerSetup {
                index,
                config: config.clone(),
                listener,
                tls_listener: tls_listeners.get_mut(index).and_then(Option::take),
                ws_listener: ws_listeners.get_mut(index).and_then(Option::take),
                wss_listener: wss_listeners.get_mut(index).and_then(Option::take),
                quic_socket: quic_sockets.get_mut(index).and_then(Option::take),
                certs: certs.clone(),
                inbox,
                peers: senders.clone(),
                backends: backends.clone(),
                node_epoch,
                registry: registry_tx.clone(),
                forward: forward_tx.clone(),
                stats: worker_stats,
                node_active: node_active.clone(),
                jwks: jwks.clone(),
                admission: admission.clone(),
                file_capacity: files.unwrap_or(usize::MAX),
                memory: memory.clone(),
            };
            let (started_tx, started_rx) = std::sync::mpsc::channel();
            let handle = std::thread::Builder::new()
                .name(format!("ringgate-w{index}"))
                .spawn(move || worker::run(setup, started_tx))?;
            match started_rx.recv() {
                Ok(Ok(name)) => driver = name,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(io::Error::other("worker thread died while starting")),
            }
            workers.push(handle);
        }
        drop(backends);
        let discovery = match config.backend.as_ref().map(|b| &b.discovery) {
            Some(crate::config::Discovery::Dns(target)) => Some(start_discovery(target.clone(), senders.clone())?),
            _ => None,
        };
        drop(registry_tx);
        let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
        drop(forward_tx);
        let me = crate::relay::Peer { node: config.node_id.clone(), epoch: node_epoch };
        let remote = config.redis.as_ref().map(|target| {
            let (remote, outbox) = crate::relay::streams::Remote::new(target, me.clone());
            (remote, target.clone(), outbox)
        });
        let relay =
            crate::relay::Relay::new(me, senders.clone(), config.api.timeout, remote.as_ref().map(|r| r.0.clone()));
        let admin = match config.admin_listen {
            Some(addr) => {
                let view = crate::control::admin::AdminView {
                    driver,
                    node_id: config.node_id.clone(),
                    stats: stats.clone(),
                    embedded_backend: config.backend.is_none(),
                    registry: registry.as_ref().map(|r| r.state.clone()),
                    registry_fail_open: config.redis.as_ref().is_some_and(|r| r.fail_open),
                    dns: discovery.as_ref().map(|d| d.state.clone()),
                    draining: draining.clone(),
                    connections: node_active.clone(),
                    max_connections: max_connections.clone(),
                    file_capacity: files,
                    memory: memory.clone(),
                    page: Default::default(),
                    key: config.admin.key.as_ref().map(|k| crate::http::BearerKeys::new([k])),
                    hosts: config.admin.hosts.clone().into(),
                };
                Some((crate::control::plane::bind(addr)?, view))
            }
            None => None,
        };
        let api = match config.api_listen {
            Some(addr) => {
                let api = crate::api::Api::new(relay.clone(), &config.api, config.session.max_frame_len);
                Some((crate::control::plane::bind(addr)?, api))
            }
            None => None,
        };
        let admin_addr = admin.as_ref().and_then(|(l, _)| l.local_addr().ok());
        let api_addr = api.as_ref().and_then(|(l, _)| l.local_addr().ok());
        let jwks = jwks_source(&config).map(|source| (source, jwks));
        let setup = crate::control::plane::PlaneSetup {
            admin,
            api,
            relay,
            remote,
            forwards: forward_rx,
            jwks,
            memory: memory.clone(),
        };
        let plane = start_plane(setup)?;
        let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string());
        tracing::info!(
            node = %config.node_id,
            %local_addr,
            tls = addr(tls_addr).as_deref(),
            ws = addr(ws_addr).as_deref(),
            wss = addr(wss_addr).as_deref(),
            quic = addr(quic_addr).as_deref(),
            driver,
            workers = workers.len(),
            "gateway started"
        );
        if let Some(addr) = admin_addr {
            tracing::info!(%addr, "admin listening");
            if !addr.ip().is_loopback() {
                tracing::warn!(
                    %addr,
                    "the admin endpoint is reachable beyond this host: its GETs (metrics, status) are open to \
                     whoever reaches it, POSTs need admin.key; firewall it to your scrapers"
                );
            }
        }
        if let Some(addr) = api_addr {
            tracing::info!(%addr, "api listening");
        }
        Ok(Gateway {
            local_addr,
            tls_addr,
            ws_addr,
            wss_addr,
            quic_addr,
            driver,
            inboxes: senders,
            workers,
            backend,
            stats,
            node_epoch,
            discovery: Mutex::new(discovery),
            registry,
            plane: Some(plane),
            admission,
            memory,
            admin_addr,
            api_addr,
            draining,
            drain: config.drain.clone(),
            max_connections,
            config: Mutex::new(config.clone()),
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The TLS listener's address, when it listens.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The WebSocket listener's address, when it listens.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
    }

    /// The WebSocket-over-TLS listener's address, when it listens.
    pub fn wss_addr(&self) -> Option<SocketAddr> {
        self.wss_addr
    }

    /// The QUIC (UDP) address, when it listens.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.quic_addr
    }

    /// The io driver the workers run on: "io_uring" or "epoll".
    pub fn driver(&self) -> &'static str {
        self.driver
    }

    /// This start's epoch.
    pub fn node_epoch(&self) -> u64 {
        self.node_epoch
    }

    /// Per-worker counters.
    pub fn stats(&self) -> &[Arc<WorkerStats>] {
        &self.stats
    }

    /// Open connections across workers.
    pub fn active_connections(&self) -> u64 {
        self.stats.iter().map(|s| s.active.load(Ordering::Relaxed)).sum()
    }

    /// Server API and relay calls this node's workers carried out.
    pub fn node_ops(&self) -> u64 {
        self.stats.iter().map(|s| s.node_ops.load(Ordering::Relaxed)).sum()
    }

    /// Connections closed with `reason` across workers.
    pub fn closed_with(&self, reason: ReasonCode) -> u64 {
        self.stats.iter().map(|s| s.closed_count(reason)).sum()
    }

    /// What DNS discovery has seen (`None` without DNS discovery).
    pub fn discovery(&self) -> Option<DiscoveryState> {
        let d = self.discovery.lock().ok()?;
        d.as_ref().and_then(|d| d.state.lock().ok().map(|s| s.clone()))
    }

    /// Applies a reloaded config without dropping connections: limits and timers (for new
    /// connections), auth keys, the device policy and the backend addresses. Returns the keys
    /// that changed but only take effect after a restart.
    pub fn reload(&self, new: Config) -> Vec<&'static str> {
        let Ok(mut current) = self.config.lock() else { return Vec::new() };
        let mut new = new;
        new.workers = current.workers;
        let old = current.clone();
        let mut restart = Vec::new();
        let checks: [(&'static str, bool); 18] = [
            ("admin", old.admin != new.admin),
            ("log.format", old.log_format != new.log_format),
            ("auth.jwks_url", jwks_source(&old) != jwks_source(&new)),
            ("listen.api", old.api_listen != new.api_listen),
            ("api", old.api != new.api),
            ("listen.ws", old.listen_ws != new.listen_ws),
            ("listen.wss", old.listen_wss != new.listen_wss),
            ("node.id", old.node_id != new.node_id),
            ("listen.tcp", old.listen_tcp != new.listen_tcp),
            ("listen.tls", old.listen_tls != new.listen_tls),
            ("listen.quic", old.listen_quic != new.listen_quic || old.quic != new.quic),
            ("listen.admin", old.admin_listen != new.admin_listen),
            (
                "io",
                old.io_driver != new.io_driver || old.pin_cpus != new.pin_cpus || old.read_buffer != new.read_buffer,
            ),
            ("io.timer_tick", old.timer_tick != new.timer_tick),
            // Links decode by it and told their backends in Hello (one rule for frame sizes).
            ("limits.max_frame_len", old.session.max_frame_len != new.session.max_frame_len),
            ("redis", old.redis != new.redis),
            ("drain", old.drain != new.drain),
            ("backend (embedded <-> links)", old.backend.is_some() != new.backend.is_some()),
        ];
        for (key, changed) in checks {
            if changed {
                restart.push(key);
            }
        }
        // The running frame limit stays until a restart, with the links that were sized by it.
        new.session.max_frame_len = old.session.max_frame_len;
        // Each link task keeps the start-up copy of how it talks to its backend (its window,
        // buffer, timers, and a silence limit of three ping intervals); the worker pings with
        // the config's interval, so the running value stays in force until a restart rather
        // than half of it changing (a longer interval would make every link look silent).
        // Addresses and request_timeout are applied.
        if let (Some(old_b), Some(new_b)) = (&old.backend, new.backend.as_mut()) {
            let link = |b: &crate::config::BackendConfig| {
                (b.window, b.link_buffer, b.connect_timeout, b.reconnect_min, b.reconnect_max, b.ping_interval)
            };
            if link(old_b) != link(new_b) {
                restart.push("backend (window, link_buffer, connect_timeout, reconnect_min/max, ping_interval)");
                (new_b.window, new_b.link_buffer, new_b.connect_timeout) =
                    (old_b.window, old_b.link_buffer, old_b.connect_timeout);
                (new_b.reconnect_min, new_b.reconnect_max, new_b.ping_interval) =
                    (old_b.reconnect_min, old_b.reconnect_max, old_b.ping_interval);
            }
        }
        // Certificates are read again on every reload (renewals keep the same paths); a pair
        // that does not load leaves the current one in place.
        if (self.tls_addr.is_some() || self.quic_addr.is_some() || self.wss_addr.is_some())
            && let Some(settings) = &new.tls
        {
            match load_certs(&new, settings) {
                Ok(certs) => {
                    for inbox in &self.inboxes {
                        let _ = inbox.send(WorkerMsg::Certs(Box::new(certs.clone())));
                    }
                    tracing::info!(cert = %settings.cert.display(), "certificates reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "certificate reload failed; the current certificate stays");
                    restart.push("tls (certificate reload failed, see the error above)");
                }
            }
        }
        let new = Arc::new(new);
        if let (Some(old_b), Some(new_b)) = (&old.backend, &new.backend)
            && old_b.discovery != new_b.discovery
        {
            self.apply_discovery(&new_b.discovery);
        }
        self.admission.set_limits(new.admission.clone());
        self.memory.set_limit(crate::memory::resolve(new.max_memory));
        self.max_connections.store(new.max_connections, std::sync::atomic::Ordering::Relaxed);
        for inbox in &self.inboxes {
            let _ = inbox.send(WorkerMsg::Reload(new.clone()));
        }
        *current = new;
        restart
    }

    fn apply_discovery(&self, discovery: &crate::config::Discovery) {
        let Ok(mut slot) = self.discovery.lock() else { return };
        if let Some(mut old) = slot.take() {
            old.stop.take();
            if let Some(t) = old.thread.take() {
                let _ = t.join();
            }
        }
        match discovery {
            crate::config::Discovery::Static(addrs) => {
                let snapshot: Arc<[SocketAddr]> = addrs.clone().into();
                for inbox in &self.inboxes {
                    let _ = inbox.send(WorkerMsg::Backends(snapshot.clone()));
                }
            }
            crate::config::Discovery::Dns(target) => match start_discovery(target.clone(), self.inboxes.clone()) {
                Ok(d) => *slot = Some(d),
                Err(e) => tracing::error!(error = %e, "dns discovery restart failed"),
            },
        }
    }

    /// The admin endpoint's address, when enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The server API's address, when enabled.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
    }

    /// Drains the node: /readyz fails at once; after `drain.delay` the listeners close; then
    /// GoAway goes out at `drain.rate` per second; returns when every connection has left or
    /// at `drain.deadline`, when the rest are closed with server_draining. Call
    /// [`shutdown`](Self::shutdown) after it (which deregisters the registry lease).
    pub fn drain(&self) -> DrainReport {
        let started = std::time::Instant::now();
        self.draining.store(true, Ordering::Relaxed);
        tracing::warn!(delay_ms = self.drain.delay.as_millis() as u64, rate = self.drain.rate, "draining");
        std::thread::sleep(self.drain.delay);
        for inbox in &self.inboxes {
            let _ = inbox.send(WorkerMsg::StopAccepting);
        }
        let connections = self.active_connections();
        let frame = Arc::new(ringgate_codec::client::GoAway {
            reason: ReasonCode::SERVER_DRAINING,
            alternatives: self.drain.alternatives.clone(),
            reconnect_after: self.drain.reconnect_after,
            reconnect_jitter: self.drain.reconnect_jitter,
        });
        let tick = std::time::Duration::from_millis(10);
        let deadline = started + self.drain.deadline;
        // `drain.rate` is for the node: each tick hands out what is due by then, split over
        // the workers, the remainder going to the next worker in turn.
        let pacing_from = std::time::Instant::now();
        let (mut handed, mut next) = (0u64, 0usize);
        let workers = self.inboxes.len().max(1);
        while self.active_connections() > 0 && std::time::Instant::now() < deadline {
            let due = (self.drain.rate as f64 * pacing_from.elapsed().as_secs_f64()) as u64 + 1;
            let quota = due.saturating_sub(handed) as usize;
            handed = handed.max(due);
            let (base, extra) = (quota / workers, quota % workers);
            for k in 0..workers {
                let share = base + usize::from(k < extra);
                if share > 0
                    && let Some(inbox) = self.inboxes.get((next + k) % workers)
                {
                    let _ = inbox.try_send(WorkerMsg::GoAway { quota: share, frame: frame.clone() });
                }
            }
            next = (next + extra) % workers;
            std::thread::sleep(tick);
        }
        let left_at_deadline = self.active_connections();
        if left_at_deadline > 0 {
            // The deadline: whoever ignored the GoAway is closed, with the drain's reason.
            for inbox in &self.inboxes {
                let _ = inbox.send(WorkerMsg::CloseAll(ReasonCode::SERVER_DRAINING));
            }
            let closing = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while self.active_connections() > 0 && std::time::Instant::now() < closing {
                std::thread::sleep(tick);
            }
        }
        tracing::warn!(connections, left_at_deadline, "drain finished");
        DrainReport { connections, left_at_deadline, elapsed: started.elapsed() }
    }

    /// Whether a drain was requested.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What the Redis registry has seen (`None` on a single node without Redis).
    pub fn registry(&self) -> Option<RegistryState> {
        self.registry.as_ref().and_then(|r| r.state.lock().ok().map(|s| s.clone()))
    }

    /// Closes every connection with `server_shutdown` and waits for the workers to stop.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(p) = self.plane.as_mut() {
            p.stop.take();
            if let Some(t) = p.thread.take() {
                let _ = t.join();
            }
        }
        if let Ok(mut slot) = self.discovery.lock()
            && let Some(d) = slot.as_mut()
        {
            d.stop.take();
            if let Some(t) = d.thread.take() {
                let _ = t.join();
            }
        }
        for inbox in &self.inboxes {
            let _ = inbox.send(WorkerMsg::Shutdown);
        }
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
        self.inboxes.clear();
        if let Some(backend) = self.backend.take() {
            let _ = backend.join();
        }
        // Workers are gone, so their closes are queued: the registry flushes and deregisters.
        if let Some(r) = self.registry.as_mut() {
            r.stop.take();
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// The TLS and wss configurations and, when QUIC listens, the QUIC server configuration.
fn load_certs(config: &Config, settings: &crate::config::TlsSettings) -> Result<crate::inbox::NewCerts, String> {
    let certs = crate::transport::tls::Certs::load(settings)?;
    let quic = match config.listen_quic {
        Some(_) => {
            let idle = config.session.heartbeat_interval * config.session.idle_multiple;
            let server =
                crate::transport::quic::server_config(&certs, &config.quic, idle, config.session.max_frame_len)
                    .map_err(|e| e.to_string())?;
            Some(server)
        }
        None => None,
    };
    Ok(crate::inbox::NewCerts { tls: certs.tcp, wss: certs.wss, quic })
}

fn start_plane(setup: crate::control::plane::PlaneSetup) -> io::Result<Plane> {
    let (stop_tx, stop_rx) = flume::bounded::<()>(1);
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("ringgate-control".into())
        .spawn(move || crate::control::plane::run(setup, stop_rx, started_tx))?;
    started_rx.recv().map_err(|_| io::Error::other("control plane thread died while starting"))??;
    Ok(Plane { stop: Some(stop_tx), thread: Some(thread) })
}

/// Binds a reuseport group for an optional listener, one socket per worker.
fn bind_optional(addr: Option<SocketAddr>, count: usize) -> io::Result<Vec<Option<std::net::TcpListener>>> {
    match addr {
        Some(addr) => Ok(crate::listener::bind_group(addr, count, 65_535)?.into_iter().map(Some).collect()),
        None => Ok(Vec::new()),
    }
}

fn start_discovery(target: crate::config::DnsTarget, workers: Vec<flume::Sender<WorkerMsg>>) -> io::Result<Discovery> {
    let state = Arc::new(Mutex::new(DiscoveryState::default()));
    let (stop_tx, stop_rx) = flume::bounded::<()>(1);
    let thread_state = state.clone();
    let thread = std::thread::Builder::new()
        .name("ringgate-dns".into())
        .spawn(move || crate::control::dns::run(target, workers, thread_state, stop_rx))?;
    Ok(Discovery { state, stop: Some(stop_tx), thread: Some(thread) })
}

fn start_registry(
    target: RedisTarget,
    node: NodeInfo,
    policy: crate::config::DevicePolicy,
    workers: Vec<flume::Sender<WorkerMsg>>,
) -> io::Result<(Registry, RegistryTx)> {
    let state = Arc::new(Mutex::new(RegistryState::default()));
    let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = flume::bounded(QUEUE);
    let (stop_tx, stop_rx) = flume::bounded::<()>(1);
    let handle = RegistryTx { tx, up: up.clone(), fail_open: target.fail_open };
    let thread_state = state.clone();
    let thread = std::thread::Builder::new().name("ringgate-registry".into()).spawn(move || {
        let io = RegistryIo { ops: rx, workers, up, state: thread_state, stop: stop_rx };
        crate::registry::redis::run(target, node, policy, io)
    })?;
    Ok((Registry { state, stop: Some(stop_tx), thread: Some(thread) }, handle))
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}
