//! A worker's backend links: the ring that picks one per routing key, links going up and
//! down (failing what waits on them exactly once), reconciling with a new backend set, and
//! the links' timers.

use std::rc::Rc;
use std::time::{Duration, Instant};

use ringgate_codec::ReasonCode;
use ringgate_router::Ring;

use super::link::Link;
use super::state::{LinkKey, Worker};

impl Worker {
    /// The link a routing key goes to: its ring owner, or that key's next choice when the
    /// owner's link is down. The embedded backend has a single link and no ring.
    pub(super) fn route_in<'a>(ring: &Ring, links: &'a mut [Link], key: &[u8]) -> Option<&'a mut Link> {
        let index = if ring.is_empty() { 0 } else { ring.pick(key, |i| links.get(i).is_some_and(Link::is_up))? };
        links.get_mut(index).filter(|l| l.is_up())
    }

    /// A Pong arrived on link `key`: its round trip since the last Ping.
    pub fn link_pong(&mut self, key: LinkKey) {
        if let Some(sent) = self.link_mut(key).and_then(|l| l.ping_sent()) {
            self.metrics.backend_link_rtt_seconds.record(sent.elapsed().as_secs_f64());
        }
    }

    /// The link named `key`.
    pub fn link_mut(&mut self, key: LinkKey) -> Option<&mut Link> {
        self.links.iter_mut().find(|l| l.addr == key)
    }

    /// Link `key` finished its handshake.
    pub fn link_up(&mut self, key: LinkKey, window: usize) {
        if let Some(link) = self.link_mut(key) {
            link.set_up(window);
        }
        self.count_links();
    }

    pub(super) fn count_links(&self) {
        let up = self.links.iter().filter(|l| l.is_up()).count();
        self.metrics.backend_links_up.set(up as f64);
        self.stats.links_up.store(up as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Link `key` died: every Send waiting on it gets `backend_unavailable`, exactly once.
    pub fn link_down(&mut self, key: LinkKey) {
        let pending = self.link_mut(key).map(Link::set_down).unwrap_or_default();
        self.count_links();
        self.fail_pending(pending);
    }

    pub(super) fn fail_pending(&mut self, pending: Vec<(u64, u64)>) {
        for (conn, seq) in pending {
            self.metrics.acked(ReasonCode::BACKEND_UNAVAILABLE, None);
            self.ack(conn, seq, ReasonCode::BACKEND_UNAVAILABLE, None);
        }
        self.flush_dirty();
    }

    /// A new backend set: keeps the links of addresses still present (with their state and
    /// tasks), makes links for new ones and drops the rest (failing their pending Sends).
    /// Returns the new links' addresses and outputs, for the caller to start their tasks,
    /// and the removed addresses, whose tasks the caller stops.
    pub fn set_backends(&mut self, addrs: &[std::net::SocketAddr], link_buffer: usize) -> BackendChange {
        let ring = Ring::new(addrs.iter().copied());
        let mut old: Vec<Link> = std::mem::take(&mut self.links);
        let mut change = BackendChange::default();
        for addr in ring.addrs() {
            match old.iter().position(|l| l.addr == Some(addr)) {
                Some(i) => self.links.push(old.swap_remove(i)),
                None => {
                    let out = Rc::new(std::cell::RefCell::new(super::link::TcpOut::default()));
                    self.links.push(Link::tcp(addr, out.clone(), link_buffer));
                    change.added.push((addr, out));
                }
            }
        }
        self.metrics.ring_size.set(ring.len() as f64);
        self.metrics.ring_keys_moved_ratio.set(keys_moved(&self.ring, &ring));
        self.ring = ring;
        self.count_links();
        for mut gone in old {
            change.removed.extend(gone.addr);
            let pending = gone.set_down();
            self.fail_pending(pending);
        }
        change
    }

    pub(super) fn backend_timers(&mut self, now: Instant) {
        let (timeout, ping) = self
            .config
            .backend
            .as_ref()
            .map_or((Duration::from_secs(10), Duration::from_secs(5)), |b| (b.request_timeout, b.ping_interval));
        let mut expired = Vec::new();
        for link in &mut self.links {
            expired.extend(link.take_expired(now, timeout));
            link.keepalive(now, ping);
        }
        for (conn, seq) in expired {
            self.metrics.acked(ReasonCode::BACKEND_TIMEOUT, None);
            self.ack(conn, seq, ReasonCode::BACKEND_TIMEOUT, None);
        }
    }
}

/// The share of keys whose backend differs between two rings, over a fixed sample.
fn keys_moved(old: &Ring, new: &Ring) -> f64 {
    const SAMPLE: u32 = 1000;
    let moved = (0..SAMPLE)
        .filter(|i| {
            let key = format!("sample-{i}");
            old.owner(key.as_bytes()) != new.owner(key.as_bytes())
        })
        .count();
    moved as f64 / f64::from(SAMPLE)
}

/// What [`Worker::set_backends`] changed.
#[derive(Debug, Default)]
pub(crate) struct BackendChange {
    pub added: Vec<(std::net::SocketAddr, Rc<std::cell::RefCell<super::link::TcpOut>>)>,
    pub removed: Vec<std::net::SocketAddr>,
}
