//! A worker's link to one backend, from the worker's side: request ids, the upstream window,
//! the Sends waiting for their UpstreamAck, and the transport the frames go out on.

use std::cell::RefCell;
use std::collections::HashMap;
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
    next_request: u64,
    /// request id -> (conn id, client seq, sent at)
    pending: HashMap<u64, (u64, u64, Instant)>,
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
            next_request: 0,
            pending: HashMap::new(),
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
        self.pending.drain().map(|(_, (conn, seq, _))| (conn, seq)).collect()
    }

    /// Sends waiting longer than `timeout`, removed: each is acked `backend_timeout`, and a
    /// late UpstreamAck for it finds nothing.
    pub fn take_expired(&mut self, now: Instant, timeout: Duration) -> Vec<(u64, u64)> {
        let mut expired = Vec::new();
        self.pending.retain(|_, &mut (conn, seq, sent)| {
            let keep = now.saturating_duration_since(sent) < timeout;
            if !keep {
                expired.push((conn, seq));
            }
            keep
        });
        expired
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
        let request_id = self.next_request + 1;
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
        self.send(LinkFrame::Upstream(upstream))?;
        self.next_request = request_id;
        self.pending.insert(request_id, (conn_id, seq, Instant::now()));
        Ok(())
    }

    /// The Send an UpstreamAck answers: (conn id, client seq, forwarded at).
    pub fn take_pending(&mut self, request_id: u64) -> Option<(u64, u64, Instant)> {
        self.pending.remove(&request_id)
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
