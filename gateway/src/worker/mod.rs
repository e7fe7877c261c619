//! Workers: one thread per core, each with its own runtime, listening socket, connections
//! and backend link. Workers talk to each other and to the control plane only through
//! bounded channels.

mod conn;
mod downstream;
pub(crate) mod link;
pub(crate) mod state;
pub mod stats;
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
use ringgate_codec::link::{Hello, LINK_VERSION, LinkFrame};
use socket2::Socket;

use self::downstream::Via;
use self::state::Worker;
use self::stats::WorkerStats;
use crate::config::Config;

/// Messages a worker receives on its inbox.
#[derive(Debug)]
pub enum WorkerMsg {
    /// A frame from backend link `link` (its address; `None` for the embedded backend), or
    /// one forwarded by the worker that read it.
    /// (Frames are boxed: inboxes keep their peak capacity, so every slot should be small.)
    FromBackend { link: Option<SocketAddr>, frame: Box<LinkFrame> },
    /// A new backend address set from discovery; links are reconciled to it.
    Backends(Arc<[SocketAddr]>),
    /// A node-wide frame another worker read from a link; deliver locally only, and send the
    /// delivered count to `reply` = (origin worker, token) when given.
    Fanout { frame: Box<LinkFrame>, reply: Option<(usize, u64)> },
    /// A user logged in (connection `except`): close the user's sessions here that the device
    /// policy says it replaces.
    Displace { user: Arc<str>, device: Arc<str>, platform: &'static str, except: u64 },
    /// A peer's delivered count for a node-wide push this worker is tallying.
    PushCount { token: u64, delivered: u32 },
    /// Draining: close the listener.
    StopAccepting,
    /// Draining: send GoAway to up to `quota` more connections of this worker.
    GoAway { quota: usize, frame: Arc<ringgate_codec::client::GoAway> },
    /// A reloaded config: limits, auth keys and policy apply to connections from now on.
    Reload(Arc<Config>),
    /// Close every connection with `server_shutdown` and stop.
    Shutdown,
}

/// Everything a worker thread starts from.
pub(crate) struct WorkerSetup {
    pub index: usize,
    pub config: Arc<Config>,
    pub listener: std::net::TcpListener,
    pub inbox: flume::Receiver<WorkerMsg>,
    pub peers: Vec<flume::Sender<WorkerMsg>>,
    pub backends: Backends,
    pub node_epoch: u64,
    pub registry: Option<crate::registry::redis::RegistryTx>,
    pub stats: Arc<WorkerStats>,
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
        w.node_epoch = setup.node_epoch;
        w.registry = setup.registry;
        let worker = Rc::new(RefCell::new(w));
        if let Some(addrs) = links.static_addrs() {
            links.apply(&worker, &addrs);
        }
        let mut accept = Some(compio::runtime::spawn(accept_loop(worker.clone(), listener)));
        let ticks = compio::runtime::spawn(tick_loop(worker.clone()));
        inbox_loop(worker.clone(), setup.inbox, &mut links, &mut accept).await;
        drop(accept);
        drop(ticks);
        drop(links);
        worker.borrow_mut().close_all(ReasonCode::SERVER_SHUTDOWN);
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

async fn accept_loop(worker: Rc<RefCell<Worker>>, listener: TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                worker.borrow().metrics.accept_errors.increment(1);
                tracing::warn!(error = %e, "accept failed");
                // Out of files or memory: give closing connections a moment instead of spinning.
                compio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(fd) = stream.into_poll_fd() else { continue };
        let _ = fd.set_nonblocking(true);
        let _ = fd.set_tcp_nodelay(true);
        let admitted = worker.borrow_mut().admit(fd, Instant::now());
        match admitted {
            Ok(id) => compio::runtime::spawn(conn::run(worker.clone(), id)).detach(),
            Err(fd) => refuse(&fd),
        }
    }
}

/// Tells a client the node is full, then drops it.
fn refuse(fd: &Socket) {
    let close = ClientFrame::Close(Close { reason: ReasonCode::SERVER_OVERLOADED, message: String::new() });
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
    accept: &mut Option<JoinHandle<()>>,
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
                // Dropping the accept task drops (closes) the listening socket.
                WorkerMsg::StopAccepting => drop(accept.take()),
                WorkerMsg::GoAway { quota, frame } => worker.borrow_mut().go_away(quota, &frame),
                WorkerMsg::Reload(config) => worker.borrow_mut().reload(config),
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
