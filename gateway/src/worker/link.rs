//! A worker's link to a backend, from the worker's side: request ids, the upstream window,
//! and the Sends waiting for their UpstreamAck. The transport behind `tx` is the embedded
//! backend's channel today; TCP links plug in behind the same sender.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ringgate_codec::ReasonCode;
use ringgate_codec::link::{ConnClosed, ConnOpened, LinkFrame, Upstream};

use super::conn::{Conn, ConnIdentity};
use crate::backend::embedded::ToBackend;

#[derive(Debug)]
pub(crate) struct Link {
    link_id: u64,
    tx: flume::Sender<ToBackend>,
    window: usize,
    next_request: u64,
    /// request id -> (conn id, client seq)
    pending: HashMap<u64, (u64, u64)>,
    /// Events dropped because the link's queue was full.
    pub events_dropped: u64,
}

impl Link {
    pub fn new(link_id: u64, tx: flume::Sender<ToBackend>, window: usize) -> Link {
        Link { link_id, tx, window: window.max(1), next_request: 0, pending: HashMap::new(), events_dropped: 0 }
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
        if self.pending.len() >= self.window {
            return Err(ReasonCode::BACKEND_BUSY);
        }
        let Some(identity) = conn.identity.as_ref() else { return Err(ReasonCode::INTERNAL_ERROR) };
        self.next_request += 1;
        let request_id = self.next_request;
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
        match self.tx.try_send((self.link_id, LinkFrame::Upstream(upstream))) {
            Ok(()) => {
                self.pending.insert(request_id, (conn_id, seq));
                Ok(())
            }
            Err(flume::TrySendError::Full(_)) => Err(ReasonCode::BACKEND_BUSY),
            Err(flume::TrySendError::Disconnected(_)) => Err(ReasonCode::BACKEND_UNAVAILABLE),
        }
    }

    /// The Send an UpstreamAck answers.
    pub fn take_pending(&mut self, request_id: u64) -> Option<(u64, u64)> {
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
        if self.tx.try_send((self.link_id, frame)).is_err() {
            self.events_dropped += 1;
        }
    }
}
