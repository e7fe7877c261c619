//! Any node reaches any user: the calls of the server API, and the pushes link backends send
//! with `all_nodes`, carried to the nodes that hold their target.
//!
//! Without `[redis]` the node is alone and every call is delivered by its own workers. With
//! it, the registry says where the target is (user records, the room's node set, the live
//! node index) and [`streams`] carries the call to each of those nodes through Redis: one
//! stream per node, never a connection between nodes. This node's own share never goes
//! through Redis.
//!
//! Everything here runs on the control plane's runtime and talks to workers only through
//! their inboxes ([`WorkerMsg::Node`]).

pub mod streams;

use std::sync::Arc;
use std::time::Duration;

use crate::inbox::{LocalSession, NodeAnswer, NodeOp, WorkerMsg, owner_of};
use crate::registry::Location;

/// What a call did, per node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Connections reached (pushed to, kicked, joined or left; room members for a count).
    pub delivered: u32,
    /// Nobody holds the target: no live session, no node with room members.
    pub offline: bool,
    /// Each node that answered, with its count.
    pub nodes: Vec<(String, u32)>,
    /// Nodes asked that did not answer in time.
    pub unanswered: Vec<String>,
}

/// A session as presence reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub device: String,
    pub platform: String,
    pub node: String,
    pub conn: u64,
    pub since_ms: u64,
}

/// Redis was needed and did not answer: what this node still did on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub error: String,
    pub here: Outcome,
}

/// A node another call goes to: its id and the start (epoch) that holds the target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    pub node: String,
    pub epoch: u64,
}

/// The handle the API and the forwarder share (cheap to clone).
#[derive(Debug, Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    me: Peer,
    workers: Vec<flume::Sender<WorkerMsg>>,
    timeout: Duration,
    remote: Option<streams::Remote>,
}

impl Relay {
    /// A relay for node `me`; `remote` is the Redis side (`None` on a single node).
    pub fn new(
        me: Peer,
        workers: Vec<flume::Sender<WorkerMsg>>,
        timeout: Duration,
        remote: Option<streams::Remote>,
    ) -> Relay {
        Relay { inner: Arc::new(Inner { me, workers, timeout, remote }) }
    }

    pub fn node_id(&self) -> &str {
        &self.inner.me.node
    }

    /// The default time a call waits for answers.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    pub(crate) fn remote(&self) -> Option<&streams::Remote> {
        self.inner.remote.as_ref()
    }

    /// Pushes to a user's sessions (all, or some devices or platforms) wherever they are.
    pub async fn push_user(
        &self,
        user: &str,
        devices: &[String],
        platforms: &[String],
        payload: bytes::Bytes,
        timeout: Duration,
    ) -> Result<Outcome, Unavailable> {
        let op = NodeOp::PushUser {
            user: user.to_owned(),
            devices: devices.to_vec(),
            platforms: platforms.to_vec(),
            payload,
        };
        let filter = |device: &str, location: &Location| {
            (devices.is_empty() || devices.iter().any(|d| d == device))
                && (platforms.is_empty() || platforms.contains(&location.platform))
        };
        self.to_user(user, op, filter, timeout, true).await
    }

    /// Closes a user's sessions (one device's, or all) wherever they are.
    pub async fn kick(
        &self,
        user: &str,
        device: Option<&str>,
        reason: ringgate_codec::ReasonCode,
        message: &str,
        timeout: Duration,
    ) -> Result<Outcome, Unavailable> {
        let op = NodeOp::Kick {
            user: user.to_owned(),
            device: device.map(str::to_owned),
            reason,
            message: message.to_owned(),
        };
        self.to_user(user, op, |d, _| device.is_none_or(|want| want == d), timeout, true).await
    }

    /// Every connection of the user, on every node, joins (`join`) or leaves the room.
    pub async fn membership(
        &self,
        user: &str,
        room: &str,
        join: bool,
        timeout: Duration,
    ) -> Result<Outcome, Unavailable> {
        let (user, room) = (user.to_owned(), room.to_owned());
        let op =
            if join { NodeOp::Join { user: user.clone(), room } } else { NodeOp::Leave { user: user.clone(), room } };
        self.to_user(&user, op, |_, _| true, timeout, true).await
    }

    /// Pushes to one connection of `node` (this node when `None`).
    pub async fn push_conn(
        &self,
        node: Option<&str>,
        conn: u64,
        payload: bytes::Bytes,
        timeout: Duration,
    ) -> Result<Outcome, Unavailable> {
        let op = NodeOp::PushConn { conn, payload };
        let node = node.unwrap_or(&self.inner.me.node);
        if node == self.inner.me.node {
            return Ok(self.reach(vec![self.inner.me.clone()], op, timeout).await);
        }
        let Some(remote) = self.remote() else { return Ok(Outcome { offline: true, ..Outcome::default() }) };
        match remote.live_epoch(node).await {
            Ok(Some(epoch)) => Ok(self.reach(vec![Peer { node: node.to_owned(), epoch }], op, timeout).await),
            Ok(None) => Ok(Outcome { offline: true, ..Outcome::default() }),
            Err(e) => Err(Unavailable { error: e, here: Outcome::default() }),
        }
    }

    /// Pushes to a room's members on the nodes that have any.
    pub async fn push_room(
        &self,
        room: &str,
        exclude: Option<u64>,
        payload: bytes::Bytes,
        timeout: Duration,
    ) -> Result<Outcome, Unavailable> {
        let op = NodeOp::PushRoom { room: room.to_owned(), exclude, payload };
        self.to_room(room, op, timeout, true).await
    }

    /// Members of a room, per node.
    pub async fn room_size(&self, room: &str, timeout: Duration) -> Result<Outcome, Unavailable> {
        self.to_room(room, NodeOp::RoomSize { room: room.to_owned() }, timeout, true).await
    }

    /// Pushes to every authenticated connection of every live node.
    pub async fn broadcast(&self, payload: bytes::Bytes, timeout: Duration) -> Result<Outcome, Unavailable> {
        self.to_everyone(NodeOp::Broadcast { payload }, timeout, true).await
    }

    /// The user's sessions: from the registry with Redis, else from this node's workers.
    pub async fn presence(&self, user: &str, timeout: Duration) -> Result<Vec<Session>, Unavailable> {
        if let Some(remote) = self.remote() {
            let located = remote.locate(user).await.map_err(|error| Unavailable { error, here: Outcome::default() })?;
            return Ok(located
                .into_iter()
                .map(|(device, l)| Session {
                    device,
                    platform: l.platform,
                    node: l.node_id,
                    conn: l.conn_id,
                    since_ms: l.since_ms,
                })
                .collect());
        }
        let node = self.inner.me.node.clone();
        let answers = self.local_answers(NodeOp::Presence { user: user.to_owned() }, timeout).await;
        let mut sessions: Vec<Session> = answers
            .into_iter()
            .flat_map(|a| match a {
                NodeAnswer::Sessions(s) => s,
                NodeAnswer::Count(_) => Vec::new(),
            })
            .map(|s: LocalSession| Session {
                device: s.device,
                platform: s.platform,
                node: node.clone(),
                conn: s.conn,
                since_ms: s.since_ms,
            })
            .collect();
        sessions.sort_by(|a, b| a.device.cmp(&b.device));
        Ok(sessions)
    }

    /// A link push this node's workers already delivered here: the other nodes' share.
    /// Returns what they delivered (0 when Redis is down: the push stays local).
    pub async fn forward(&self, op: NodeOp) -> u32 {
        let timeout = self.inner.timeout;
        let outcome = match &op {
            NodeOp::PushUser { user, devices, .. } => {
                let (user, devices) = (user.clone(), devices.clone());
                let filter = |device: &str, _: &Location| devices.is_empty() || devices.iter().any(|d| d == device);
                self.to_user(&user, op, filter, timeout, false).await
            }
            NodeOp::PushRoom { room, .. } => {
                let room = room.clone();
                self.to_room(&room, op, timeout, false).await
            }
            NodeOp::Broadcast { .. } => self.to_everyone(op, timeout, false).await,
            _ => return 0,
        };
        match outcome {
            Ok(outcome) => outcome.delivered,
            Err(e) => {
                tracing::debug!(error = %e.error, "link push stays on this node: redis unavailable");
                0
            }
        }
    }

    /// A call to the nodes holding `user`'s sessions that pass `filter`. `with_me`: this
    /// node's own share too (a link forward has delivered it already).
    async fn to_user(
        &self,
        user: &str,
        op: NodeOp,
        filter: impl Fn(&str, &Location) -> bool,
        timeout: Duration,
        with_me: bool,
    ) -> Result<Outcome, Unavailable> {
        let Some(remote) = self.remote() else { return Ok(self.single(op, timeout).await) };
        let located = match remote.locate(user).await {
            Ok(located) => located,
            Err(error) => return Err(self.alone(op, error, timeout, with_me).await),
        };
        let mut peers: Vec<Peer> = located
            .iter()
            .filter(|(device, l)| filter(device, l))
            .map(|(_, l)| Peer { node: l.node_id.clone(), epoch: l.node_epoch })
            .collect();
        peers.sort();
        peers.dedup();
        Ok(self.reach_found(peers, op, timeout, with_me).await)
    }

    async fn to_room(&self, room: &str, op: NodeOp, timeout: Duration, with_me: bool) -> Result<Outcome, Unavailable> {
        let Some(remote) = self.remote() else { return Ok(self.single(op, timeout).await) };
        let peers = match remote.room_nodes(room).await {
            Ok(peers) => peers,
            Err(error) => return Err(self.alone(op, error, timeout, with_me).await),
        };
        Ok(self.reach_found(peers, op, timeout, with_me).await)
    }

    /// A single node: its own workers are the whole answer; offline when they reached nobody.
    async fn single(&self, op: NodeOp, timeout: Duration) -> Outcome {
        let mut outcome = self.reach(vec![self.inner.me.clone()], op, timeout).await;
        outcome.offline = outcome.delivered == 0;
        outcome
    }

    /// `op` to the nodes the registry found (without this one unless `with_me`); offline
    /// when it found none.
    async fn reach_found(&self, mut peers: Vec<Peer>, op: NodeOp, timeout: Duration, with_me: bool) -> Outcome {
        let offline = peers.is_empty();
        if !with_me {
            peers.retain(|p| *p != self.inner.me);
        }
        let mut outcome = self.reach(peers, op, timeout).await;
        outcome.offline = offline;
        outcome
    }

    async fn to_everyone(&self, op: NodeOp, timeout: Duration, with_me: bool) -> Result<Outcome, Unavailable> {
        let mut peers = match self.remote() {
            None => vec![self.inner.me.clone()],
            Some(remote) => match remote.live_nodes().await {
                Ok(peers) => peers,
                Err(error) => return Err(self.alone(op, error, timeout, with_me).await),
            },
        };
        if with_me && !peers.contains(&self.inner.me) {
            peers.push(self.inner.me.clone());
        }
        if !with_me {
            peers.retain(|p| *p != self.inner.me);
        }
        Ok(self.reach(peers, op, timeout).await)
    }

    /// Redis is down: this node still delivers its own share (unless it already has).
    async fn alone(&self, op: NodeOp, error: String, timeout: Duration, with_me: bool) -> Unavailable {
        let here =
            if with_me { self.reach(vec![self.inner.me.clone()], op, timeout).await } else { Outcome::default() };
        Unavailable { error, here }
    }

    /// Sends `op` to every peer at once (this node through its workers, others through
    /// Redis) and collects the answers that arrive within `timeout`.
    async fn reach(&self, peers: Vec<Peer>, op: NodeOp, timeout: Duration) -> Outcome {
        let mut calls = tokio::task::JoinSet::new();
        for peer in peers {
            let (relay, op) = (self.clone(), op.clone());
            calls.spawn(async move {
                let count = if peer == relay.inner.me {
                    relay.local(op, timeout).await
                } else {
                    match relay.remote() {
                        Some(remote) => remote.call(&peer, &op, timeout).await,
                        None => None,
                    }
                };
                (peer.node, count)
            });
        }
        let mut outcome = Outcome::default();
        while let Some(joined) = calls.join_next().await {
            let Ok((node, count)) = joined else { continue };
            match count {
                Some(count) => {
                    outcome.delivered += count;
                    outcome.nodes.push((node, count));
                }
                None => outcome.unanswered.push(node),
            }
        }
        outcome.nodes.sort();
        outcome.unanswered.sort();
        outcome
    }

    /// `op` on this node's workers: the sum of their counts (`None` if none answered).
    pub(crate) async fn local(&self, op: NodeOp, timeout: Duration) -> Option<u32> {
        let answers = self.local_answers(op, timeout).await;
        if answers.is_empty() {
            return None;
        }
        Some(
            answers
                .iter()
                .map(|a| match a {
                    NodeAnswer::Count(n) => *n,
                    NodeAnswer::Sessions(s) => s.len() as u32,
                })
                .sum(),
        )
    }

    async fn local_answers(&self, op: NodeOp, timeout: Duration) -> Vec<NodeAnswer> {
        let workers = &self.inner.workers;
        let targets: Vec<usize> = match &op {
            // A connection lives on the worker its id names.
            NodeOp::PushConn { conn, .. } => owner_of(*conn).filter(|&w| w < workers.len()).into_iter().collect(),
            _ => (0..workers.len()).collect(),
        };
        if targets.is_empty() {
            return vec![NodeAnswer::Count(0)];
        }
        let op = Arc::new(op);
        let (tx, rx) = flume::bounded(targets.len());
        let mut asked = 0;
        for w in targets {
            if workers[w].try_send(WorkerMsg::Node { op: op.clone(), reply: tx.clone() }).is_ok() {
                asked += 1;
            }
        }
        drop(tx);
        let mut answers = Vec::with_capacity(asked);
        let deadline = tokio::time::Instant::now() + timeout;
        while answers.len() < asked {
            match tokio::time::timeout_at(deadline, rx.recv_async()).await {
                Ok(Ok(answer)) => answers.push(answer),
                _ => break,
            }
        }
        answers
    }
}

/// Forwards carried out at once; more wait in the workers' bounded queue (when that is full
/// a push stays on its node, and its PushResult counts only that node).
const MAX_FORWARDS_IN_FLIGHT: usize = 4096;

/// Serves the workers' link forwards until every worker's sender is gone.
pub async fn forward_loop(relay: Relay, forwards: flume::Receiver<crate::inbox::Forward>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDS_IN_FLIGHT));
    while let Ok(forward) = forwards.recv_async().await {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let relay = relay.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let delivered = relay.forward(forward.op).await;
            if let Some((worker, token)) = forward.reply
                && let Some(inbox) = relay.inner.workers.get(worker)
            {
                // Waits for room: a lost count would leave the push's tally open for good.
                let _ = inbox.send_async(WorkerMsg::PushCount { token, delivered }).await;
            }
        });
    }
}
