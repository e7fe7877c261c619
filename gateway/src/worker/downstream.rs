//! Frames from a backend: acks for Sends, pushes, room membership, kicks.
//!
//! A frame that names a connection of another worker is forwarded to that worker. A frame
//! that addresses the whole node (a user, a room, everyone) is delivered here and fanned out
//! to every other worker, since a backend sends it on one link per node.

use ringgate_codec::ReasonCode;
use ringgate_codec::link::{KickTarget, LinkFrame, PushResult};

use super::WorkerMsg;
use super::state::{LinkKey, Worker, owner_of};

impl Worker {
    /// Handles a frame read from this worker's link (`fanned_out` false) or passed on by
    /// another worker (`fanned_out` true, deliver locally only).
    /// `link` names the backend link the frame came from, on this or the forwarding worker
    /// (its address; `None` for the embedded backend).
    pub fn on_backend(&mut self, link: LinkKey, frame: LinkFrame, fanned_out: bool) {
        match frame {
            LinkFrame::UpstreamAck(ack) => {
                if let Some((conn, seq)) = self.link_mut(link).and_then(|l| l.take_pending(ack.request_id)) {
                    self.ack(conn, seq, ack.code, ack.reply.as_deref());
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
                self.fan_out(fanned_out, || LinkFrame::PushToUser(push.clone()));
                let devices = (!push.device_ids.is_empty()).then_some(push.device_ids.as_slice());
                for id in self.conns_of(&push.user_id, devices) {
                    self.push(id, &push.payload);
                }
            }
            LinkFrame::PushToRoom(push) => {
                self.fan_out(fanned_out, || LinkFrame::PushToRoom(push.clone()));
                let members: Vec<u64> =
                    self.rooms.get(push.room.as_str()).map(|m| m.iter().copied().collect()).unwrap_or_default();
                for id in members.into_iter().filter(|&id| Some(id) != push.exclude_conn_id) {
                    self.push(id, &push.payload);
                }
            }
            LinkFrame::Broadcast(push) => {
                self.fan_out(fanned_out, || LinkFrame::Broadcast(push.clone()));
                let everyone: Vec<u64> =
                    self.conns.iter().filter(|(_, c)| c.identity.is_some()).map(|(id, _)| *id).collect();
                for id in everyone {
                    self.push(id, &push.payload);
                }
            }
            LinkFrame::JoinRoom(m) if self.is_local(m.conn_id) => self.join_room(m.conn_id, &m.room),
            LinkFrame::LeaveRoom(m) if self.is_local(m.conn_id) => self.leave_room(m.conn_id, &m.room),
            LinkFrame::JoinRoom(m) => self.forward_to_owner(link, m.conn_id, LinkFrame::JoinRoom(m)),
            LinkFrame::LeaveRoom(m) => self.forward_to_owner(link, m.conn_id, LinkFrame::LeaveRoom(m)),
            LinkFrame::Kick(kick) => {
                let reason = if kick.reason.0 == 0 { ReasonCode::KICKED } else { kick.reason };
                match &kick.target {
                    KickTarget::Conn(id) if !self.is_local(*id) => {
                        self.forward_to_owner(link, *id, LinkFrame::Kick(kick))
                    }
                    KickTarget::Conn(id) => self.close(*id, reason, &kick.message, true),
                    KickTarget::User { user_id, device_id } => {
                        self.fan_out(fanned_out, || LinkFrame::Kick(kick.clone()));
                        let devices = device_id.as_ref().map(std::slice::from_ref);
                        for id in self.conns_of(user_id, devices) {
                            self.close(id, reason, &kick.message, true);
                        }
                    }
                }
            }
            // Link management frames are handled by the link's transport.
            _ => {}
        }
    }

    fn is_local(&self, conn_id: u64) -> bool {
        owner_of(conn_id) == Some(self.index)
    }

    fn forward_to_owner(&mut self, link: LinkKey, conn_id: u64, frame: LinkFrame) {
        let delivered = owner_of(conn_id)
            .and_then(|w| self.peers.get(w))
            .is_some_and(|peer| peer.try_send(WorkerMsg::FromBackend { link, frame: frame.clone() }).is_ok());
        if !delivered && let LinkFrame::PushToConn(push) = &frame {
            self.report(link, push.push_id, 0);
        }
    }

    fn fan_out(&mut self, already: bool, frame: impl Fn() -> LinkFrame) {
        if already {
            return;
        }
        for (i, peer) in self.peers.iter().enumerate() {
            // A full peer inbox drops the copy; pushes are best effort under overload.
            if i != self.index {
                let _ = peer.try_send(WorkerMsg::Fanout(frame()));
            }
        }
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
