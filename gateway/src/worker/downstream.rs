//! Frames from a backend: acks for Sends, pushes, room membership, kicks.
//!
//! A frame that names a connection of another worker is forwarded to that worker. A frame
//! that addresses the whole node (a user, a room, everyone) is delivered here and fanned out
//! to every other worker; when it asks for `all_nodes`, it also goes to the relay, which
//! carries it to the other nodes holding the user or room members (with `[redis]`). For such
//! a push with a push id, the worker that read it collects every worker's delivered count
//! (and the other nodes' total) and sends one PushResult.

use ringgate_codec::ReasonCode;
use ringgate_codec::link::{KickTarget, LinkFrame, PushResult};

use super::state::{LinkKey, PushTally, Worker};
use crate::inbox::{Forward, NodeOp, WorkerMsg, owner_of};

/// How a backend frame reached this worker.
#[derive(Debug, Clone, Copy)]
pub enum Via {
    /// Read from (or forwarded for) backend link `LinkKey`.
    Link(LinkKey),
    /// A node-wide frame another worker read; `reply` = (origin worker, tally token) when the
    /// origin wants this worker's delivered count.
    Fanout { reply: Option<(usize, u64)> },
}

impl Worker {
    /// Handles one frame from a backend.
    pub fn on_backend(&mut self, via: Via, frame: LinkFrame) {
        let link = match via {
            Via::Link(link) => link,
            Via::Fanout { .. } => None,
        };
        match frame {
            LinkFrame::UpstreamAck(ack) => {
                if let Some((conn, seq, sent)) = self.link_mut(link).and_then(|l| l.take_pending(ack.request_id)) {
                    self.ack_forwarded(conn, seq, ack.code, ack.reply.as_deref(), sent);
                }
            }
            LinkFrame::PushToConn(push) => {
                if !self.is_local(push.conn_id) {
                    return self.forward_to_owner(link, push.conn_id, LinkFrame::PushToConn(push));
                }
                let delivered = self.push(push.conn_id, &push.payload);
                self.report(link, push.push_id, u32::from(delivered));
            }
            LinkFrame::PushToUser(push) => {
                let devices = (!push.device_ids.is_empty()).then_some(push.device_ids.as_slice());
                let targets = self.conns_of(&push.user_id, devices);
                let delivered = self.push_all(targets, &push.payload);
                let others = push.all_nodes.then(|| NodeOp::PushUser {
                    user: push.user_id.clone(),
                    devices: push.device_ids.clone(),
                    platforms: Vec::new(),
                    payload: push.payload.clone(),
                });
                self.node_wide(via, push.push_id, delivered, others, || LinkFrame::PushToUser(push.clone()));
            }
            LinkFrame::PushToRoom(push) => {
                let members: Vec<u64> =
                    self.rooms.get(push.room.as_str()).map(|m| m.iter().copied().collect()).unwrap_or_default();
                let targets = members.into_iter().filter(|&id| Some(id) != push.exclude_conn_id).collect();
                let delivered = self.push_all(targets, &push.payload);
                let others = push.all_nodes.then(|| NodeOp::PushRoom {
                    room: push.room.clone(),
                    exclude: push.exclude_conn_id,
                    payload: push.payload.clone(),
                });
                self.node_wide(via, push.push_id, delivered, others, || LinkFrame::PushToRoom(push.clone()));
            }
            LinkFrame::Broadcast(push) => {
                let everyone = self.conns.iter().filter(|(_, c)| c.identity.is_some()).map(|(id, _)| *id).collect();
                let delivered = self.push_all(everyone, &push.payload);
                let others = push.all_nodes.then(|| NodeOp::Broadcast { payload: push.payload.clone() });
                self.node_wide(via, push.push_id, delivered, others, || LinkFrame::Broadcast(push.clone()));
            }
            LinkFrame::JoinRoom(m) if self.is_local(m.conn_id) => self.join_room(m.conn_id, &m.room),
            LinkFrame::LeaveRoom(m) if self.is_local(m.conn_id) => self.leave_room(m.conn_id, &m.room),
            LinkFrame::JoinRoom(m) => self.forward_to_owner(link, m.conn_id, LinkFrame::JoinRoom(m)),
            LinkFrame::LeaveRoom(m) => self.forward_to_owner(link, m.conn_id, LinkFrame::LeaveRoom(m)),
            LinkFrame::Kick(kick) => self.kick(via, link, kick),
            // Link management frames are handled by the link's transport.
            _ => {}
        }
    }

    fn kick(&mut self, via: Via, link: LinkKey, kick: ringgate_codec::link::LinkKick) {
        let reason = if kick.reason.0 == 0 { ReasonCode::KICKED } else { kick.reason };
        match &kick.target {
            KickTarget::Conn(id) if !self.is_local(*id) => self.forward_to_owner(link, *id, LinkFrame::Kick(kick)),
            KickTarget::Conn(id) => self.close(*id, reason, &kick.message, true),
            KickTarget::User { user_id, device_id } => {
                let devices = device_id.as_ref().map(std::slice::from_ref);
                for id in self.conns_of(user_id, devices) {
                    self.close(id, reason, &kick.message, true);
                }
                self.node_wide(via, 0, 0, None, || LinkFrame::Kick(kick.clone()));
            }
        }
    }

    /// Pushes to every id; returns how many connections took it.
    fn push_all(&mut self, ids: Vec<u64>, payload: &[u8]) -> u32 {
        ids.into_iter().map(|id| u32::from(self.push(id, payload))).sum()
    }

    /// After local delivery of a node-wide frame: fan it out (when read from a link), hand
    /// `others` (the same push for the other nodes) to the relay, and account for the
    /// PushResult, or report this worker's count to the origin.
    fn node_wide(
        &mut self,
        via: Via,
        push_id: u64,
        delivered: u32,
        others: Option<NodeOp>,
        frame: impl Fn() -> LinkFrame,
    ) {
        match via {
            Via::Fanout { reply: Some((origin, token)) } => {
                let sent = self
                    .peers
                    .get(origin)
                    .is_some_and(|p| p.try_send(WorkerMsg::PushCount { token, delivered }).is_ok());
                if !sent {
                    // The origin's tally expires and reports what it has (best effort).
                    self.metrics.peer_dropped("push_count");
                }
            }
            Via::Fanout { reply: None } => {}
            Via::Link(link) => {
                let token = (push_id != 0).then(|| self.next_tally_token());
                let reply = token.map(|t| (self.index, t));
                let mut asked = 0;
                let mut dropped = 0;
                for (i, peer) in self.peers.iter().enumerate() {
                    // A full peer inbox drops the copy (counted); pushes are best effort
                    // under overload, and the PushResult counts only who got it.
                    if i != self.index {
                        match peer.try_send(WorkerMsg::Fanout { frame: Box::new(frame()), reply }) {
                            Ok(()) => asked += 1,
                            Err(_) => dropped += 1,
                        }
                    }
                }
                for _ in 0..dropped {
                    self.metrics.peer_dropped("push");
                }
                // The other nodes' count joins the tally when the relay reports it.
                if let (Some(op), Some(forward)) = (others, &self.forward)
                    && forward.try_send(Forward { op, reply }).is_ok()
                {
                    asked += 1;
                }
                if let Some(token) = token {
                    let started = std::time::Instant::now();
                    let tally = PushTally { link, push_id, delivered, waiting: asked, started };
                    self.tally(token, tally);
                }
            }
        }
    }

    /// Starts tally `token`; reports at once when no peer was asked.
    fn tally(&mut self, token: u64, tally: PushTally) {
        if tally.waiting == 0 {
            self.report(tally.link, tally.push_id, tally.delivered);
        } else {
            self.push_tallies.insert(token, tally);
        }
    }

    /// A peer's delivered count for tally `token`.
    pub fn on_push_count(&mut self, token: u64, delivered: u32) {
        let Some(t) = self.push_tallies.get_mut(&token) else { return };
        t.delivered += delivered;
        t.waiting = t.waiting.saturating_sub(1);
        if t.waiting == 0
            && let Some(t) = self.push_tallies.remove(&token)
        {
            self.report(t.link, t.push_id, t.delivered);
        }
    }

    /// Reports the tallies that waited [`TALLY_TIMEOUT`](super::state::TALLY_TIMEOUT) with
    /// what they have: a count lost on the way must not keep a push's result (and its
    /// entry) forever.
    pub fn expire_tallies(&mut self, now: std::time::Instant) {
        let due: Vec<u64> = self
            .push_tallies
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(t.started) >= super::state::TALLY_TIMEOUT)
            .map(|(token, _)| *token)
            .collect();
        for token in due {
            if let Some(t) = self.push_tallies.remove(&token) {
                self.report(t.link, t.push_id, t.delivered);
            }
        }
    }

    fn is_local(&self, conn_id: u64) -> bool {
        owner_of(conn_id) == Some(self.index)
    }

    fn forward_to_owner(&mut self, link: LinkKey, conn_id: u64, frame: LinkFrame) {
        let Some(owner) = owner_of(conn_id).filter(|&w| w < self.peers.len()) else {
            // No worker of this node has such a connection: a push is answered not delivered.
            if let LinkFrame::PushToConn(push) = &frame {
                self.report(link, push.push_id, 0);
            }
            return;
        };
        if let LinkFrame::PushToConn(push) = &frame {
            // A push is best effort: a full owner makes it not_delivered, at once.
            let push_id = push.push_id;
            let sent = self
                .peers
                .get(owner)
                .is_some_and(|peer| peer.try_send(WorkerMsg::FromBackend { link, frame: Box::new(frame) }).is_ok());
            if !sent {
                self.metrics.peer_dropped("push");
                self.report(link, push_id, 0);
            }
            return;
        }
        // Joins, leaves and kicks change what the connection is: they wait for room.
        self.send_reliably(owner, WorkerMsg::FromBackend { link, frame: Box::new(frame) });
    }

    fn report(&mut self, link: LinkKey, push_id: u64, delivered: u32) {
        if push_id == 0 {
            return;
        }
        let code = if delivered == 0 { ReasonCode::NOT_DELIVERED } else { ReasonCode::OK };
        if let Some(link) = self.link_mut(link) {
            link.event(LinkFrame::PushResult(PushResult { push_id, delivered, code }));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::super::state::{PushTally, TALLY_TIMEOUT, Worker};

    #[test]
    fn a_tally_missing_counts_is_reported_after_its_timeout() {
        let config = Arc::new(crate::config::Config::parse("[auth]\nmode = \"none\"\n").unwrap());
        let mut w = Worker::new(0, config, Vec::new(), Vec::new(), Arc::default());
        let started = Instant::now();
        let tally = PushTally { link: None, push_id: 7, delivered: 1, waiting: 1, started };
        w.push_tallies.insert(1, tally);
        w.expire_tallies(started + Duration::from_secs(1));
        assert_eq!(w.push_tallies.len(), 1, "still waiting for the peer's count");
        w.expire_tallies(started + TALLY_TIMEOUT);
        assert!(w.push_tallies.is_empty(), "given up on the lost count");
    }
}
