//! A worker's link to one backend, from the worker's side: request ids, the upstream window,
//! the Sends waiting for their UpstreamAck, and the transport the frames go out on.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Waker;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use ringgate_codec::ReasonCode;
use ringgate_codec::link::{ConnClosed, ConnOpened, LinkFrame, Upstream};

use super::conn::{Conn, ConnIdentity};
use crate::backend::embedded::ToBackend;

/// Bytes waiting to be written on a TCP link, and its writer task's waker.
#[derive(Debug, Default)]
pub(crate) struct TcpOut {
    pub buf: BytesMut,
    pub waker: Option<Waker>,
}

impl TcpOut {
    pub fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

#[derive(Debug)]
pub(crate) enum Transport {
    /// The embedded backend's channel: always up.
    Embedded(flume::Sender<ToBackend>),
    /// A TCP link; its task writes `TcpOut` and reports up/down.
    Tcp(Rc<RefCell<TcpOut>>),
}

#[derive(Debug)]
pub(crate) struct Link {
    pub addr: Option<SocketAddr>,
    link_id: u64,
    transport: Transport,
    up: bool,
    window: usize,
    max_buffer: usize,
    /// request id -> (conn id, client seq, sent at)
    pending: Pending,
    /// When a Ping was last queued (TCP links).
    last_ping: Option<Instant>,
    /// Events dropped because the link was down or its buffer full (handle made once).
    events_dropped: metrics::Counter,
}

impl Link {
    /// The embedded backend's link (worker index as link id).
    pub fn embedded(link_id: u64, tx: flume::Sender<ToBackend>) -> Link {
        Link::new(None, link_id, Transport::Embedded(tx), true, usize::MAX, usize::MAX)
    }

    /// The output of a TCP link that is up (its writer is running).
    pub fn tcp_out(&self) -> Option<Rc<RefCell<TcpOut>>> {
        match &self.transport {
            Transport::Tcp(out) if self.up => Some(out.clone()),
            _ => None,
        }
    }

    /// A TCP link to `addr`, down until its task completes the handshake.
    pub fn tcp(addr: SocketAddr, out: Rc<RefCell<TcpOut>>, max_buffer: usize) -> Link {
        Link::new(Some(addr), 0, Transport::Tcp(out), false, 1, max_buffer)
    }

    fn new(
        addr: Option<SocketAddr>,
        link_id: u64,
        transport: Transport,
        up: bool,
        window: usize,
        max_buffer: usize,
    ) -> Link {
        Link {
            addr,
            link_id,
            transport,
            up,
            window: window.max(1),
            max_buffer,
            pending: Pending::default(),
            last_ping: None,
            events_dropped: metrics::counter!("ringgate_link_events_dropped_total"),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// The handshake completed: Upstreams may flow, at most `window` unacknowledged.
    pub fn set_up(&mut self, window: usize) {
        self.up = true;
        self.window = window.max(1);
    }

    /// The link died: returns every Send still waiting, to be acked `backend_unavailable`.
    pub fn set_down(&mut self) -> Vec<(u64, u64)> {
        self.up = false;
        if let Transport::Tcp(out) = &self.transport {
            out.borrow_mut().buf.clear();
        }
        self.last_ping = None;
        self.pending.drain()
    }

    /// Sends waiting longer than `timeout`, removed: each is acked `backend_timeout`, and a
    /// late UpstreamAck for it finds nothing.
    pub fn take_expired(&mut self, now: Instant, timeout: Duration) -> Vec<(u64, u64)> {
        self.pending.take_older(now, timeout)
    }

    /// When the last Ping went out, if one is outstanding (cleared by [`Link::set_down`]).
    pub fn ping_sent(&self) -> Option<Instant> {
        self.last_ping
    }

    /// Queues a Ping on an up TCP link when `interval` has passed since the last one.
    pub fn keepalive(&mut self, now: Instant, interval: Duration) {
        if !self.up || !matches!(self.transport, Transport::Tcp(_)) {
            return;
        }
        if self.last_ping.is_none_or(|t| now.saturating_duration_since(t) >= interval) {
            self.last_ping = Some(now);
            self.event(LinkFrame::Ping);
        }
    }

    /// Queues a frame; the error says why it could not be (busy or unavailable).
    fn send(&mut self, frame: LinkFrame) -> Result<(), ReasonCode> {
        if !self.up {
            return Err(ReasonCode::BACKEND_UNAVAILABLE);
        }
        match &self.transport {
            Transport::Embedded(tx) => match tx.try_send((self.link_id, frame)) {
                Ok(()) => Ok(()),
                Err(flume::TrySendError::Full(_)) => Err(ReasonCode::BACKEND_BUSY),
                Err(flume::TrySendError::Disconnected(_)) => Err(ReasonCode::BACKEND_UNAVAILABLE),
            },
            Transport::Tcp(out) => {
                let mut out = out.borrow_mut();
                if out.buf.len() >= self.max_buffer {
                    return Err(ReasonCode::BACKEND_BUSY);
                }
                frame.encode(&mut out.buf).map_err(|_| ReasonCode::INTERNAL_ERROR)?;
                out.wake();
                Ok(())
            }
        }
    }

    /// Forwards a client Send as an Upstream. On refusal returns the code to ack the client with.
    pub fn forward(
        &mut self,
        conn_id: u64,
        conn: &Conn,
        seq: u64,
        route_key: Option<Bytes>,
        payload: Bytes,
    ) -> Result<(), ReasonCode> {
        if !self.up {
            return Err(ReasonCode::BACKEND_UNAVAILABLE);
        }
        if self.pending.len() >= self.window {
            return Err(ReasonCode::BACKEND_BUSY);
        }
        let Some(identity) = conn.identity.as_ref() else { return Err(ReasonCode::INTERNAL_ERROR) };
        let request_id = self.pending.insert((conn_id, seq, Instant::now()));
        let upstream = Upstream {
            request_id,
            conn_id,
            user_id: identity.user_id.to_string(),
            device_id: identity.device_id.to_string(),
            platform: identity.platform,
            route_key,
            seq,
            payload,
        };
        if let Err(code) = self.send(LinkFrame::Upstream(upstream)) {
            self.pending.remove(request_id);
            return Err(code);
        }
        Ok(())
    }

    /// The Send an UpstreamAck answers: (conn id, client seq, forwarded at).
    pub fn take_pending(&mut self, request_id: u64) -> Option<(u64, u64, Instant)> {
        self.pending.remove(request_id)
    }

    pub fn conn_opened(&mut self, conn_id: u64, conn: &Conn) {
        let Some(identity) = conn.identity.as_ref() else { return };
        let event = ConnOpened {
            conn_id,
            user_id: identity.user_id.to_string(),
            device_id: identity.device_id.to_string(),
            platform: identity.platform,
            since_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        };
        self.event(LinkFrame::ConnOpened(event));
    }

    pub fn conn_closed(&mut self, conn_id: u64, identity: &ConnIdentity, reason: ReasonCode) {
        let event = ConnClosed {
            conn_id,
            user_id: identity.user_id.to_string(),
            device_id: identity.device_id.to_string(),
            reason,
        };
        self.event(LinkFrame::ConnClosed(event));
    }

    /// Sends a frame that may be dropped under overload (events, push results); counts drops.
    pub fn event(&mut self, frame: LinkFrame) {
        if self.send(frame).is_err() {
            self.events_dropped.increment(1);
        }
    }
}

/// The Upstreams of a link waiting for their UpstreamAck: a slab whose slot index and
/// generation make the request id (`generation << 32 | slot`). Insert and remove are an index
/// away (a hash map here cost ~5% of a worker's CPU under echo load), the size is bounded by
/// the window, and a late or forged ack of a reused slot finds a different generation.
#[derive(Debug, Default)]
struct Pending {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
}

/// (conn id, client seq, forwarded at)
type Waiting = (u64, u64, Instant);

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    entry: Option<Waiting>,
}

impl Pending {
    fn len(&self) -> usize {
        self.live
    }

    /// Stores `entry`; returns its request id (never 0).
    fn insert(&mut self, entry: Waiting) -> u64 {
        let index = self.free.pop().map_or_else(
            || {
                self.slots.push(Slot::default());
                self.slots.len() - 1
            },
            |i| i as usize,
        );
        self.live += 1;
        match self.slots.get_mut(index) {
            Some(slot) => {
                slot.generation = slot.generation.wrapping_add(1).max(1);
                slot.entry = Some(entry);
                (u64::from(slot.generation) << 32) | index as u64
            }
            None => 0,
        }
    }

    fn remove(&mut self, request_id: u64) -> Option<Waiting> {
        let index = (request_id & 0xffff_ffff) as usize;
        let slot = self.slots.get_mut(index)?;
        if u64::from(slot.generation) != request_id >> 32 {
            return None;
        }
        let entry = slot.entry.take()?;
        self.free.push(index as u32);
        self.live -= 1;
        Some(entry)
    }

    /// Every waiting Send, removed.
    fn drain(&mut self) -> Vec<(u64, u64)> {
        self.take_where(|_| true)
    }

    /// The Sends forwarded `timeout` or longer before `now`, removed.
    fn take_older(&mut self, now: Instant, timeout: Duration) -> Vec<(u64, u64)> {
        self.take_where(|&(_, _, sent)| now.saturating_duration_since(sent) >= timeout)
    }

    fn take_where(&mut self, mut pred: impl FnMut(&Waiting) -> bool) -> Vec<(u64, u64)> {
        let mut taken = Vec::new();
        if self.live == 0 {
            return taken;
        }
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if let Some(entry) = slot.entry.filter(|e| pred(e)) {
                slot.entry = None;
                self.free.push(index as u32);
                self.live -= 1;
                taken.push((entry.0, entry.1));
            }
        }
        taken
    }
}

#[cfg(test)]
mod pending_tests {
    use super::*;

    #[test]
    fn ids_are_unique_among_waiting_and_stale_acks_find_nothing() {
        let mut p = Pending::default();
        let now = Instant::now();
        let a = p.insert((1, 10, now));
        let b = p.insert((2, 20, now));
        assert_ne!(a, b);
        assert_ne!(a, 0);
        assert_eq!(p.len(), 2);
        assert_eq!(p.remove(a), Some((1, 10, now)));
        assert_eq!(p.remove(a), None, "acked twice");
        // The slot is reused with a new generation: the old id does not match it.
        let c = p.insert((3, 30, now));
        assert_eq!(c & 0xffff_ffff, a & 0xffff_ffff);
        assert_ne!(c, a);
        assert_eq!(p.remove(a), None);
        assert_eq!(p.remove(0xdead_0000_0007), None, "unknown slot");
        assert_eq!(p.len(), 2);
        let later = now + Duration::from_secs(5);
        let mut old = p.take_older(later, Duration::from_secs(5));
        old.sort();
        assert_eq!(old, [(2, 20), (3, 30)]);
        assert_eq!(p.len(), 0);
        assert_eq!(p.remove(b), None, "expired");
        let d = p.insert((4, 40, later));
        assert_eq!(p.drain(), [(4, 40)]);
        assert_eq!(p.remove(d), None);
        assert_eq!(p.len(), 0);
    }
}
