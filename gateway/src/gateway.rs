//! A gateway node: its workers and its embedded backend, started from already-bound
//! listeners so that tests can bind port 0 and callers own the sockets.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use ringgate_codec::ReasonCode;

use crate::backend::embedded;
use crate::config::Config;
use crate::worker::stats::WorkerStats;
use crate::worker::{self, Backends, WorkerMsg, WorkerSetup};

/// Queue length of each worker's inbox and of the embedded backend's input.
const QUEUE: usize = 65_536;

/// A running gateway node.
#[derive(Debug)]
pub struct Gateway {
    local_addr: SocketAddr,
    driver: &'static str,
    inboxes: Vec<flume::Sender<WorkerMsg>>,
    workers: Vec<JoinHandle<()>>,
    backend: Option<JoinHandle<()>>,
    stats: Vec<Arc<WorkerStats>>,
    node_epoch: u64,
}

impl Gateway {
    /// Starts one worker per listener (see [`crate::listener::bind_group`]).
    pub fn start(config: Config, listeners: Vec<std::net::TcpListener>) -> io::Result<Gateway> {
        let local_addr = listeners.first().ok_or_else(|| io::Error::other("no listener"))?.local_addr()?;
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
        let mut workers = Vec::new();
        let mut stats = Vec::new();
        let mut driver = "unknown";
        for (index, (listener, inbox)) in listeners.into_iter().zip(receivers).enumerate() {
            let worker_stats = Arc::new(WorkerStats::default());
            stats.push(worker_stats.clone());
            let setup = WorkerSetup {
                index,
                config: config.clone(),
                listener,
                inbox,
                peers: senders.clone(),
                backends: backends.clone(),
                node_epoch,
                stats: worker_stats,
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
        tracing::info!(node = %config.node_id, %local_addr, driver, workers = workers.len(), "gateway started");
        drop(backends);
        Ok(Gateway { local_addr, driver, inboxes: senders, workers, backend, stats, node_epoch })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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

    /// Connections closed with `reason` across workers.
    pub fn closed_with(&self, reason: ReasonCode) -> u64 {
        self.stats.iter().map(|s| s.closed_count(reason)).sum()
    }

    /// Closes every connection with `server_shutdown` and waits for the workers to stop.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
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
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}
