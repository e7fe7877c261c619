//! Workers: one thread per core, each with its own runtime, listening socket, connections
//! and backend link. Workers talk to each other and to the control plane only through
//! bounded channels.

mod backends;
pub(crate) mod conn;
mod downstream;
mod drain;
pub(crate) mod link;
mod node_ops;
mod policy;
mod rooms;
pub(crate) mod state;
pub mod stats;
mod task;
mod tcp_link;
mod timer;

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use compio::net::TcpListener;
use compio::runtime::JoinHandle;
use ringgate_codec::ReasonCode;
use ringgate_codec::client::{ClientFrame, Close};
use ringgate_codec::link::{Hello, LINK_VERSION};
use socket2::Socket;

use self::downstream::Via;
use self::state::Worker;
use self::stats::WorkerStats;
use crate::admission::AddrKey;
use crate::config::Config;
use crate::inbox::{NewCerts, WorkerMsg};
use crate::status::Transport;
use crate::transport::Io;
use crate::transport::quic::{self, Acceptor, QuicIo};
use crate::transport::ws::WsIo;

/// Everything a worker thread starts from.
pub(crate) struct WorkerSetup {
    pub index: usize,
    pub config: Arc<Config>,
    pub listener: std::net::TcpListener,
    pub tls_listener: Option<std::net::TcpListener>,
    pub ws_listener: Option<std::net::TcpListener>,
    pub wss_listener: Option<std::net::TcpListener>,
    pub quic_socket: Option<std::net::UdpSocket>,
    /// The TLS and QUIC configurations, when either listens.
    pub certs: Option<NewCerts>,
    pub inbox: flume::Receiver<WorkerMsg>,
    pub peers: Vec<flume::Sender<WorkerMsg>>,
    pub backends: Backends,
    pub node_epoch: u64,
    pub registry: Option<crate::registry::redis::RegistryTx>,
    /// The node's admission table, and how many connections the open-file limit allows.
    pub admission: Arc<crate::admission::Admission>,
    /// The node's RSS against `limits.max_memory`.
    pub memory: Arc<crate::memory::MemoryGuard>,
    pub file_capacity: usize,
    /// Where link pushes for other nodes go (`None` on a single node).
    pub forward: Option<flume::Sender<crate::inbox::Forward>>,
    pub stats: Arc<WorkerStats>,
    /// Connections on the whole node (every worker's), which `limits.max_connections` bounds.
    pub node_active: Arc<std::sync::atomic::AtomicUsize>,
    /// The keys of `auth.jwks_url`, as the control plane last fetched them.
    pub jwks: crate::auth::token::JwksKeys,
}

/// Where a worker's Sends go.
#[derive(Debug, Clone)]
pub(crate) enum Backends {
    /// The embedded reference backend's channel.
    Embedded(flume::Sender<crate::backend::embedded::ToBackend>),
    /// TCP links to these backends.
    Tcp(Arc<crate::config::BackendConfig>),
}

/// Runs a worker on the current thread until it is told to shut down. Reports the driver
/// in use through `started` once the runtime is up.
pub(crate) fn run(setup: WorkerSetup, started: std::sync::mpsc::Sender<io::Result<&'static str>>) {
    let cpu = setup.config.pin_cpus.then_some(setup.index);
    let runtime = match crate::runtime::build(setup.config.io_driver, cpu) {
        Ok(rt) => rt,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    let driver = crate::runtime::driver_name(&runtime);
    let mut links = LinkTasks::new(&setup);
    runtime.block_on(async move {
        let listener = match TcpListener::from_std(setup.listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = started.send(Err(e));
                return;
            }
        };
        let _ = started.send(Ok(driver));
        let initial = match &setup.backends {
            Backends::Embedded(tx) => vec![link::Link::embedded(setup.index as u64, tx.clone())],
            Backends::Tcp(_) => Vec::new(),
        };
        let mut w = Worker::new(setup.index, setup.config.clone(), initial, setup.peers, setup.stats);
        w.node_active = setup.node_active.clone();
        w.node_epoch = setup.node_epoch;
        w.registry = setup.registry;
        w.forward = setup.forward;
        w.admission = setup.admission.clone();
        w.memory = setup.memory.clone();
        w.file_capacity = setup.file_capacity;
        w.jwks = setup.jwks.clone();
        w.tls_config = setup.certs.as_ref().map(|c| c.tls.clone());
        w.wss_config = setup.certs.as_ref().map(|c| c.wss.clone());
        let worker = Rc::new(RefCell::new(w));
        if let Some(addrs) = links.static_addrs() {
            links.apply(&worker, &addrs);
        }
        let mut accepting = Accepting { tasks: Vec::new(), quic: None, quic_driver: None, draining: false };
        accepting.tasks.push(compio::runtime::spawn(accept_loop(worker.clone(), listener, Transport::Tcp)));
        let more = [
            (setup.tls_listener, Transport::Tls),
            (setup.ws_listener, Transport::Ws),
            (setup.wss_listener, Transport::Wss),
        ];
        for (listener, kind) in more {
            let Some(listener) = listener else { continue };
            match TcpListener::from_std(listener) {
                Ok(l) => accepting.tasks.push(compio::runtime::spawn(accept_loop(worker.clone(), l, kind))),
                Err(e) => tracing::error!(error = %e, transport = kind.name(), "listener unusable"),
            }
        }
        if let (Some(socket), Some(server)) = (setup.quic_socket, setup.certs.and_then(|c| c.quic)) {
            match quic_endpoint(&setup.config, setup.index, socket, server, &worker) {
                Ok(endpoint) => {
                    let driver = quic::endpoint::run(endpoint.clone(), QuicAcceptor(worker.clone()));
                    accepting.quic_driver = Some(compio::runtime::spawn(driver));
                    accepting.quic = Some(endpoint);
                }
                Err(e) => tracing::error!(error = %e, "quic endpoint unusable"),
            }
        }
        let ticks = compio::runtime::spawn(tick_loop(worker.clone()));
        inbox_loop(worker.clone(), setup.inbox, &mut links, &mut accepting).await;
        accepting.tasks.clear();
        drop(ticks);
        // Backends learn why their links end: server_shutdown, after what is queued.
        let outs: Vec<_> = worker.borrow().links.iter().filter_map(link::Link::tcp_out).collect();
        for out in &outs {
            tcp_link::queue_close(out, ReasonCode::SERVER_SHUTDOWN, "node shutting down");
        }
        tcp_link::flushed(&outs).await;
        drop(links);
        worker.borrow_mut().close_all(ReasonCode::SERVER_SHUTDOWN);
        // QUIC closes wait for the client to have the last frames; give them a moment.
        if let Some(endpoint) = accepting.quic.take() {
            endpoint.borrow_mut().stop_accepting();
            endpoint.borrow_mut().close_handshakes();
            let deadline = Instant::now() + std::time::Duration::from_secs(3);
            while endpoint.borrow().live() > 0 && Instant::now() < deadline {
                compio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            endpoint.borrow_mut().stop();
            if let Some(driver) = accepting.quic_driver.take() {
                let _ = compio::time::timeout(std::time::Duration::from_secs(1), driver).await;
            }
        }
    });
}

/// The tasks of a worker's TCP backend links, started and stopped as the backend set changes.
struct LinkTasks {
    config: Option<Arc<crate::config::BackendConfig>>,
    hello: Hello,
    tasks: HashMap<SocketAddr, JoinHandle<()>>,
}

impl LinkTasks {
    fn new(setup: &WorkerSetup) -> LinkTasks {
        let config = match &setup.backends {
            Backends::Tcp(config) => Some(config.clone()),
            Backends::Embedded(_) => None,
        };
        let hello = Hello {
            node_id: setup.config.node_id.clone(),
            node_epoch: setup.node_epoch,
            worker: setup.index as u32,
            link_version: LINK_VERSION,
            window: config.as_ref().map_or(1, |c| c.window),
            max_frame_len: setup.config.session.max_frame_len as u32,
        };
        LinkTasks { config, hello, tasks: HashMap::new() }
    }

    /// The configured static address list, if discovery is static.
    fn static_addrs(&self) -> Option<Vec<SocketAddr>> {
        match &self.config.as_ref()?.discovery {
            crate::config::Discovery::Static(addrs) => Some(addrs.clone()),
            crate::config::Discovery::Dns(_) => None,
        }
    }

    /// Reconciles the worker's links with `addrs` and starts or stops link tasks.
    fn apply(&mut self, worker: &Rc<RefCell<Worker>>, addrs: &[SocketAddr]) {
        let Some(config) = self.config.clone() else { return };
        let change = worker.borrow_mut().set_backends(addrs, config.link_buffer);
        for addr in change.removed {
            self.tasks.remove(&addr);
        }
        for (addr, out) in change.added {
            let task = tcp_link::run(worker.clone(), addr, out, self.hello.clone(), config.clone());
            self.tasks.insert(addr, compio::runtime::spawn(task));
        }
    }
}

/// A worker's accepting side: its accept tasks and its QUIC endpoint.
struct Accepting {
    tasks: Vec<JoinHandle<()>>,
    quic: Option<quic::Shared>,
    /// The endpoint's driver runs until the worker has shut down (it carries the open
    /// connections through a drain).
    quic_driver: Option<JoinHandle<()>>,
    /// Draining: certificate reloads must not re-open the QUIC endpoint.
    draining: bool,
}

impl Accepting {
    fn stop(&mut self) {
        self.draining = true;
        // Dropping the accept tasks closes the listening sockets; the QUIC endpoint stays for
        // the established connections and refuses new ones.
        self.tasks.clear();
        if let Some(endpoint) = &self.quic {
            endpoint.borrow_mut().stop_accepting();
        }
    }

    fn reload(&mut self, worker: &Rc<RefCell<Worker>>, certs: NewCerts) {
        worker.borrow_mut().tls_config = Some(certs.tls);
        worker.borrow_mut().wss_config = Some(certs.wss);
        if let (Some(endpoint), Some(server), false) = (&self.quic, certs.quic, self.draining) {
            endpoint.borrow_mut().set_server_config(server);
        }
    }
}

/// The worker's QUIC endpoint on its socket of the group.
fn quic_endpoint(
    config: &Config,
    index: usize,
    socket: std::net::UdpSocket,
    server: quinn_proto::ServerConfig,
    worker: &Rc<RefCell<Worker>>,
) -> io::Result<quic::Shared> {
    let key = quic::reset_key(&config.quic);
    let endpoint_config = quic::endpoint_config(index, &key);
    let w = worker.borrow();
    let metrics = quic::QuicMetrics {
        refused: w.metrics.quic_refused.clone(),
        failed: w.metrics.quic_failed.clone(),
        retried: w.metrics.quic_retried.clone(),
    };
    let limits = quic::HandshakeLimits {
        max_handshakes: config.quic.max_handshakes,
        retry_above: config.quic.retry_above,
        auth_timeout: config.session.auth_timeout,
        handshake_timeout: config.quic.handshake_timeout,
    };
    let gate = quic::AddressGate {
        admission: w.admission.clone(),
        refused: crate::admission::Refusal::ALL.map(|r| w.metrics.refused_counter(crate::metrics::Refused::Address(r))),
    };
    quic::QuicEndpoint::new(socket, endpoint_config, server, limits, metrics, Some(gate))
}

/// The worker as its QUIC endpoint's driver sees it. The driver calls it holding no borrow of
/// the endpoint (the borrow order is worker, then endpoint: see `quic::Shared`).
struct QuicAcceptor(Rc<RefCell<Worker>>);

impl Acceptor for QuicAcceptor {
    fn is_full(&self) -> bool {
        // At the memory limit too: a refused Initial costs one packet, a handshake its state.
        let w = self.0.borrow();
        w.is_full() || w.memory.is_high()
    }

    fn admit(
        &self,
        io: QuicIo,
        peer: crate::admission::AddrKey,
        remote: Option<std::net::IpAddr>,
    ) -> Result<(), (QuicIo, ReasonCode)> {
        // Counted by the endpoint at the handshake's start (a validated address), or counted
        // here now (the address was not validated then).
        let key = match (peer, remote) {
            (0, Some(ip)) => Some(self.0.borrow().admission.key(ip)),
            _ => None,
        };
        let admitted = self.0.borrow_mut().admit(Io::Quic(Box::new(io)), key, Instant::now());
        match admitted {
            Ok(id) => {
                if peer != 0 {
                    self.0.borrow_mut().adopt_peer(id, peer);
                }
                compio::runtime::spawn(task::run(self.0.clone(), id)).detach();
                Ok(())
            }
            Err((Io::Quic(io), why)) => Err((*io, why.reason())),
            Err((other, _)) => {
                crate::transport::close(other, ReasonCode::SERVER_OVERLOADED, &[]);
                Ok(())
            }
        }
    }
}

async fn accept_loop(worker: Rc<RefCell<Worker>>, listener: TcpListener, kind: Transport) {
    // Accept failures (out of files, out of memory) are logged once per interval, with a count.
    let mut failures = 0u64;
    let mut logged: Option<Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                worker.borrow().metrics.accept_errors.increment(1);
                failures += 1;
                if logged.is_none_or(|at| at.elapsed() >= crate::admission::LOG_EVERY) {
                    tracing::warn!(error = %e, failures, "accept failed (logged once per 10 s)");
                    logged = Some(Instant::now());
                    failures = 0;
                }
                // Out of files or memory: give closing connections a moment instead of spinning.
                compio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(fd) = stream.into_poll_fd() else { continue };
        let _ = fd.set_nonblocking(true);
        let _ = fd.set_tcp_nodelay(true);
        let (trusted, header) = {
            let w = worker.borrow();
            let proxies = &w.config.proxies;
            let header = match kind {
                Transport::Tcp => proxies.tcp,
                Transport::Tls => proxies.tls,
                Transport::Ws => proxies.ws,
                Transport::Wss => proxies.wss,
                Transport::Quic => false,
            };
            (proxies.trusts(peer.ip()), header)
        };
        if trusted && header {
            // Its own task: a header split over segments must not hold up the accepts.
            compio::runtime::spawn(proxied(worker.clone(), fd, kind)).detach();
            continue;
        }
        // A trusted proxy's connections count under no address of their own (the proxy is
        // one address for thousands of clients); ws and wss count under X-Forwarded-For's
        // once the upgrade request is read.
        let key = (!trusted).then(|| worker.borrow().admission.key(peer.ip()));
        admit_accepted(&worker, fd, key, kind, Instant::now());
    }
}

/// A connection from a trusted proxy on a listener with `listen.proxy_protocol`: reads the
/// PROXY header (within the handshake deadline), then admits the connection as its client's.
async fn proxied(worker: Rc<RefCell<Worker>>, fd: crate::transport::ConnFd, kind: Transport) {
    use crate::transport::proxy::{Proxied, read_header};
    let accepted = Instant::now();
    let deadline = accepted + worker.borrow().config.handshake_timeout;
    let header = read_header(&fd, deadline).await;
    worker.borrow().metrics.proxy_header(header);
    match header {
        Ok(Proxied::Client(ip)) => {
            let key = worker.borrow().admission.key(ip);
            admit_accepted(&worker, fd, Some(key), kind, accepted);
        }
        Ok(Proxied::Local) => admit_accepted(&worker, fd, None, kind, accepted),
        Err(e) => {
            tracing::debug!(reason = e.name(), "PROXY header refused");
            crate::transport::tcp::close(&fd);
        }
    }
}

/// Builds the transport of a socket accepted at `accepted` and admits it, counted under
/// `key`'s address; a refused client is told why where its transport can say it. Its
/// handshake and auth deadlines count from `accepted` (a PROXY header's read included).
fn admit_accepted(
    worker: &Rc<RefCell<Worker>>,
    fd: crate::transport::ConnFd,
    key: Option<AddrKey>,
    kind: Transport,
    accepted: Instant,
) {
    let Some(io) = transport_of(&worker.borrow(), fd, kind) else { return };
    let admitted = worker.borrow_mut().admit(io, key, accepted);
    match admitted {
        Ok(id) => compio::runtime::spawn(task::run(worker.clone(), id)).detach(),
        // A refused plain TCP or WebSocket client is told why; a TLS client just sees
        // the close (nothing can be said before its handshake).
        Err((Io::Tcp(fd), why)) => refuse(&fd, why.reason()),
        Err((Io::Ws(ws), why)) if kind == Transport::Ws => {
            let answer = match why.reason() {
                ReasonCode::SERVER_OVERLOADED => crate::transport::ws::handshake::OVERLOADED,
                _ => crate::transport::ws::handshake::TOO_MANY,
            };
            let _ = io::Write::write(&mut &**ws.fd(), answer);
        }
        Err(_) => {}
    }
}

/// The transport for an accepted socket of a `kind` listener; `None` when TLS is not set up.
fn transport_of(worker: &Worker, fd: crate::transport::ConnFd, kind: Transport) -> Option<Io> {
    let tls = |fd, config: &Option<Arc<rustls::ServerConfig>>| {
        let config = config.clone()?;
        let mut session = rustls::ServerConnection::new(config).ok()?;
        session.set_buffer_limit(Some(crate::transport::tls::BUFFER_LIMIT));
        Some(crate::transport::tls::TlsIo { fd, tls: session })
    };
    let settings = || worker.ws_settings.clone();
    Some(match kind {
        Transport::Tls => Io::Tls(Box::new(tls(fd, &worker.tls_config)?)),
        Transport::Ws => Io::Ws(Box::new(WsIo::new(fd, settings()))),
        Transport::Wss => Io::Wss(Box::new(WsIo::new(tls(fd, &worker.wss_config)?, settings()))),
        Transport::Tcp | Transport::Quic => Io::Tcp(fd),
    })
}

/// Tells a client why it is refused, then drops it.
fn refuse(fd: &Socket, reason: ReasonCode) {
    let close = ClientFrame::Close(Close { reason, message: String::new() });
    if let Ok(bytes) = close.to_bytes() {
        let _ = io::Write::write(&mut &*fd, &bytes);
    }
}

async fn tick_loop(worker: Rc<RefCell<Worker>>) {
    let tick = worker.borrow().config.timer_tick;
    let mut interval = compio::time::interval(tick);
    loop {
        interval.tick().await;
        let mut w = worker.borrow_mut();
        w.on_tick(Instant::now());
        w.flush_dirty();
    }
}

async fn inbox_loop(
    worker: Rc<RefCell<Worker>>,
    inbox: flume::Receiver<WorkerMsg>,
    links: &mut LinkTasks,
    accepting: &mut Accepting,
) {
    while let Ok(msg) = inbox.recv_async().await {
        let mut next = Some(msg);
        let mut handled = 0;
        while let Some(msg) = next.take() {
            match msg {
                WorkerMsg::FromBackend { link, frame } => worker.borrow_mut().on_backend(Via::Link(link), *frame),
                WorkerMsg::Fanout { frame, reply } => worker.borrow_mut().on_backend(Via::Fanout { reply }, *frame),
                WorkerMsg::PushCount { token, delivered } => worker.borrow_mut().on_push_count(token, delivered),
                WorkerMsg::Displace { user, device, platform, except } => {
                    worker.borrow_mut().displace(&user, &device, platform, except)
                }
                WorkerMsg::Backends(addrs) => links.apply(&worker, &addrs),
                WorkerMsg::StopAccepting => accepting.stop(),
                WorkerMsg::Certs(certs) => accepting.reload(&worker, *certs),
                WorkerMsg::GoAway { quota, frame } => worker.borrow_mut().go_away(quota, &frame),
                WorkerMsg::Reload(config) => worker.borrow_mut().reload(config),
                WorkerMsg::CloseAll(reason) => worker.borrow_mut().close_all(reason),
                WorkerMsg::Node { op, reply } => {
                    let answer = worker.borrow_mut().on_node_op(&op);
                    let _ = reply.try_send(answer);
                }
                WorkerMsg::Shutdown => return,
            }
            handled += 1;
            // Drain a batch so one write per connection carries many frames.
            if handled < 1024 {
                next = inbox.try_recv().ok();
            }
        }
        worker.borrow_mut().flush_dirty();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn inbox_slots_stay_small() {
        // Inboxes keep their peak capacity; a login burst queues one message per login.
        assert!(std::mem::size_of::<super::WorkerMsg>() <= 64, "{}", std::mem::size_of::<super::WorkerMsg>());
    }
}
