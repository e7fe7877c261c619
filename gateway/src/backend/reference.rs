//! The reference backend: the behaviour behind both the gateway's embedded backend and the
//! standalone `ringgate-bench backend` binary. It is also the model a backend author reads.
//!
//! It speaks the link protocol (docs/protocol.md, section 3) as a sans-IO state machine: call
//! [`handle`](ReferenceBackend::handle) with each frame read from a link and send what it
//! returns. What a client's Send does depends on its route key:
//!
//! | route key | effect | Ack |
//! |---|---|---|
//! | none, or any other key | the payload comes back to the sender as a Push (echo) | ok |
//! | `join:ROOM` | the sender joins ROOM | ok |
//! | `leave:ROOM` | the sender leaves ROOM | ok |
//! | `room:ROOM` | the payload is pushed to every member of ROOM on every node | ok |
//! | `user:ID` | the payload is pushed to every connection of user ID on every node | ok |
//! | `broadcast` | the payload is pushed to every connection on every node | ok |
//! | `reject` | nothing | backend_rejected |
//!
//! With no route key, the payload `whoami` is answered with this backend's id instead of an
//! echo, so tests can see which backend a key was routed to.

use std::collections::BTreeMap;

use ringgate_codec::ReasonCode;
use ringgate_codec::link::{
    Broadcast, HelloAck, LINK_VERSION, LinkClose, LinkFrame, PushToRoom, PushToUser, RoomMembership, Upstream,
    UpstreamAck,
};

/// Identifies one link of the backend (one gateway worker's connection).
pub type LinkId = u64;

/// Counters a test or benchmark can read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendStats {
    pub upstreams: u64,
    pub conns_opened: u64,
    pub conns_closed: u64,
}

/// A push to a user that waits for a registry lookup (see [`ReferenceBackend::with_registry`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserLookup {
    pub user_id: String,
    /// Link the triggering Send arrived on (its node gets the push if the lookup fails).
    pub from: LinkId,
    pub push: PushToUser,
}

/// The reference backend's state: which links belong to which gateway node.
#[derive(Debug)]
pub struct ReferenceBackend {
    id: String,
    window: u32,
    /// With a registry, pushes to a user go only to the nodes holding the user.
    registry: bool,
    lookups: Vec<UserLookup>,
    /// node id -> (epoch, links of that node)
    nodes: BTreeMap<String, (u64, Vec<LinkId>)>,
    link_node: BTreeMap<LinkId, String>,
    stats: BackendStats,
}

impl ReferenceBackend {
    /// A backend named `id` that accepts `window` unacknowledged Upstreams per link.
    pub fn new(id: impl Into<String>, window: u32) -> Self {
        ReferenceBackend {
            id: id.into(),
            window: window.max(1),
            registry: false,
            lookups: Vec::new(),
            nodes: BTreeMap::new(),
            link_node: BTreeMap::new(),
            stats: BackendStats::default(),
        }
    }

    /// Pushes to a user are sent only to the nodes holding the user, found in the location
    /// registry: [`take_lookups`](Self::take_lookups) hands out the lookups to run, and
    /// [`deliver_user`](Self::deliver_user) sends each push once its nodes are known.
    pub fn with_registry(mut self) -> Self {
        self.registry = true;
        self
    }

    /// Lookups waiting to be run by the caller (emptied).
    pub fn take_lookups(&mut self) -> Vec<UserLookup> {
        std::mem::take(&mut self.lookups)
    }

    /// Sends `lookup`'s push on one link of each of `nodes` (the user's nodes per the registry).
    pub fn deliver_user(&self, lookup: UserLookup, nodes: &[String], out: &mut Vec<(LinkId, LinkFrame)>) {
        for node in nodes {
            if let Some(link) = self.nodes.get(node).and_then(|(_, links)| links.first()) {
                out.push((*link, LinkFrame::PushToUser(lookup.push.clone())));
            }
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> BackendStats {
        self.stats
    }

    /// Forgets a link that closed.
    pub fn link_closed(&mut self, link: LinkId) {
        if let Some(node) = self.link_node.remove(&link)
            && let Some((_, links)) = self.nodes.get_mut(&node)
        {
            links.retain(|&l| l != link);
            if links.is_empty() {
                self.nodes.remove(&node);
            }
        }
    }

    /// Handles one frame read from `link`, appending `(link, frame)` pairs to send to `out`.
    pub fn handle(&mut self, link: LinkId, frame: LinkFrame, out: &mut Vec<(LinkId, LinkFrame)>) {
        match frame {
            LinkFrame::Hello(hello) => {
                if hello.link_version != LINK_VERSION {
                    let close = LinkClose { reason: ReasonCode::UNSUPPORTED_VERSION, message: "link version".into() };
                    out.push((link, LinkFrame::Close(close)));
                    return;
                }
                self.register(link, hello.node_id, hello.node_epoch);
                let ack = HelloAck { backend_id: self.id.clone(), link_version: LINK_VERSION, window: self.window };
                out.push((link, LinkFrame::HelloAck(ack)));
            }
            LinkFrame::Ping => out.push((link, LinkFrame::Pong)),
            LinkFrame::Upstream(up) => self.upstream(link, up, out),
            LinkFrame::ConnOpened(_) => self.stats.conns_opened += 1,
            LinkFrame::ConnClosed(_) => self.stats.conns_closed += 1,
            LinkFrame::Close(_) => self.link_closed(link),
            _ => {}
        }
    }

    fn register(&mut self, link: LinkId, node: String, epoch: u64) {
        let entry = self.nodes.entry(node.clone()).or_insert((epoch, Vec::new()));
        if entry.0 != epoch {
            // The node restarted: its old links are gone.
            *entry = (epoch, Vec::new());
        }
        entry.1.push(link);
        self.link_node.insert(link, node);
    }

    /// One link per known node, the one the frame arrived on for its own node.
    fn one_link_per_node(&self, arrived_on: LinkId) -> Vec<LinkId> {
        let own = self.link_node.get(&arrived_on);
        let mut links: Vec<LinkId> = self
            .nodes
            .iter()
            .filter(|(node, _)| Some(*node) != own)
            .filter_map(|(_, (_, links))| links.first().copied())
            .collect();
        links.push(arrived_on);
        links
    }

    fn upstream(&mut self, link: LinkId, up: Upstream, out: &mut Vec<(LinkId, LinkFrame)>) {
        self.stats.upstreams += 1;
        let key = up.route_key.as_deref().and_then(|k| std::str::from_utf8(k).ok()).unwrap_or("");
        let mut code = ReasonCode::OK;
        let mut reply = None;
        if let Some(room) = key.strip_prefix("join:") {
            out.push((link, LinkFrame::JoinRoom(RoomMembership { conn_id: up.conn_id, room: room.into() })));
        } else if let Some(room) = key.strip_prefix("leave:") {
            out.push((link, LinkFrame::LeaveRoom(RoomMembership { conn_id: up.conn_id, room: room.into() })));
        } else if let Some(room) = key.strip_prefix("room:") {
            // The direct path: this backend sends on one link of every node itself.
            let push = PushToRoom {
                push_id: 0,
                room: room.into(),
                exclude_conn_id: None,
                payload: up.payload,
                all_nodes: false,
            };
            self.to_every_node(link, LinkFrame::PushToRoom(push), out);
        } else if let Some(user) = key.strip_prefix("user:") {
            let push = PushToUser {
                push_id: 0,
                user_id: user.into(),
                device_ids: Vec::new(),
                payload: up.payload,
                all_nodes: false,
            };
            if self.registry {
                self.lookups.push(UserLookup { user_id: user.into(), from: link, push });
            } else {
                self.to_every_node(link, LinkFrame::PushToUser(push), out);
            }
        } else if key == "broadcast" {
            self.to_every_node(
                link,
                LinkFrame::Broadcast(Broadcast { push_id: 0, payload: up.payload, all_nodes: false }),
                out,
            );
        } else if key == "reject" {
            code = ReasonCode::BACKEND_REJECTED;
        } else if key.is_empty() && &up.payload[..] == b"whoami" {
            reply = Some(bytes::Bytes::from(self.id.clone()));
        } else {
            reply = Some(up.payload);
        }
        out.push((link, LinkFrame::UpstreamAck(UpstreamAck { request_id: up.request_id, code, reply })));
    }

    fn to_every_node(&self, link: LinkId, frame: LinkFrame, out: &mut Vec<(LinkId, LinkFrame)>) {
        for target in self.one_link_per_node(link) {
            out.push((target, frame.clone()));
        }
    }
}

/// An Upstream for tests.
#[cfg(test)]
fn upstream(request_id: u64, key: Option<&'static str>, payload: &'static str) -> LinkFrame {
    LinkFrame::Upstream(Upstream {
        request_id,
        conn_id: 77,
        user_id: "alice".into(),
        device_id: "phone".into(),
        platform: ringgate_codec::client::Platform::Ios,
        route_key: key.map(|k| bytes::Bytes::from_static(k.as_bytes())),
        seq: request_id,
        payload: bytes::Bytes::from_static(payload.as_bytes()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringgate_codec::link::Hello;

    fn hello(node: &str, epoch: u64) -> LinkFrame {
        LinkFrame::Hello(Hello {
            node_id: node.into(),
            node_epoch: epoch,
            worker: 0,
            link_version: LINK_VERSION,
            window: 16,
            max_frame_len: 1 << 16,
        })
    }

    #[test]
    fn echo_join_room_and_reject() {
        let mut b = ReferenceBackend::new("be", 8);
        let mut out = Vec::new();
        b.handle(1, hello("n1", 1), &mut out);
        assert!(matches!(&out[..], [(1, LinkFrame::HelloAck(a))] if a.window == 8));
        out.clear();
        b.handle(1, upstream(5, None, "hi"), &mut out);
        assert!(
            matches!(&out[..], [(1, LinkFrame::UpstreamAck(a))] if a.request_id == 5 && a.reply.as_deref() == Some(&b"hi"[..]))
        );
        out.clear();
        b.handle(1, upstream(6, Some("join:lobby"), ""), &mut out);
        assert!(matches!(&out[0], (1, LinkFrame::JoinRoom(m)) if m.room == "lobby" && m.conn_id == 77));
        out.clear();
        b.handle(1, upstream(7, Some("reject"), ""), &mut out);
        assert!(matches!(&out[..], [(1, LinkFrame::UpstreamAck(a))] if a.code == ReasonCode::BACKEND_REJECTED));
    }

    #[test]
    fn with_a_registry_user_pushes_go_only_to_the_users_nodes() {
        let mut b = ReferenceBackend::new("be", 8).with_registry();
        let mut out = Vec::new();
        for (link, node) in [(1, "n1"), (2, "n2"), (3, "n3")] {
            b.handle(link, hello(node, 1), &mut out);
        }
        out.clear();
        b.handle(1, upstream(1, Some("user:alice"), "hi"), &mut out);
        assert!(out.iter().all(|(_, f)| !matches!(f, LinkFrame::PushToUser(_))), "nothing before the lookup");
        let lookups = b.take_lookups();
        assert_eq!(lookups.len(), 1);
        assert_eq!(lookups[0].user_id, "alice");
        out.clear();
        b.deliver_user(lookups[0].clone(), &["n3".into(), "gone".into()], &mut out);
        assert_eq!(out.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn room_push_goes_to_one_link_of_every_node() {
        let mut b = ReferenceBackend::new("be", 8);
        let mut out = Vec::new();
        for (link, node) in [(1, "n1"), (2, "n1"), (3, "n2"), (4, "n3")] {
            b.handle(link, hello(node, 1), &mut out);
        }
        out.clear();
        b.handle(2, upstream(1, Some("room:r"), "x"), &mut out);
        let mut targets: Vec<LinkId> =
            out.iter().filter(|(_, f)| matches!(f, LinkFrame::PushToRoom(_))).map(|(l, _)| *l).collect();
        targets.sort_unstable();
        assert_eq!(targets, [2, 3, 4]);
        // A restart of n2 (new epoch) drops its old link.
        b.handle(5, hello("n2", 2), &mut out);
        b.link_closed(4);
        out.clear();
        b.handle(1, upstream(2, Some("broadcast"), "x"), &mut out);
        let mut targets: Vec<LinkId> =
            out.iter().filter(|(_, f)| matches!(f, LinkFrame::Broadcast(_))).map(|(l, _)| *l).collect();
        targets.sort_unstable();
        assert_eq!(targets, [1, 5]);
    }
}
