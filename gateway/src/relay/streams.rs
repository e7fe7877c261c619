//! Calls between nodes through Redis Streams: one stream per node, `{prefix}:in:{node}`.
//!
//! A node appends what it has for another node to that node's stream (XADD, trimmed with
//! `MAXLEN ~`), one entry per batch: everything queued for that node while the previous
//! write was in flight, as one protobuf `RelayBatch`. Each node reads its own stream with a
//! blocking XREAD on a connection of its own, runs the ops on its workers and appends the
//! answers to the caller's stream. Why streams and not pub/sub: see docs/registry.md.
//!
//! Delivery is at most once: an op whose deadline passed (the caller stopped waiting) or
//! that names an earlier start of this node is dropped unread, and nothing is retried.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use ringgate_codec::ReasonCode;
use ringgate_codec::pb::api as pb;

use super::{Peer, Relay};
use crate::config::RedisTarget;
use crate::inbox::NodeOp;
use crate::registry::redis::{COMPARE_AND_DELETE, Conn, node_member, nodes_key, room_key, user_key};
use crate::registry::{Location, unix_ms};

/// Entries kept per node stream (about: `MAXLEN ~`); each entry is one batch.
const STREAM_LEN: u64 = 10_000;
/// Most messages in one batch.
const BATCH: usize = 512;
/// Deadlines are the caller's clock and are checked on the reader's: this much skew between
/// nodes is tolerated (clocks are expected NTP-synced, well within it).
const CLOCK_SKEW_MS: u64 = 1000;
/// Ops carried out at once for other nodes; more wait (in the stream) for a free slot.
const MAX_OPS_IN_FLIGHT: usize = 4096;

/// What the relay has to write: (target node, message).
pub type Outbox = flume::Receiver<(String, pb::RelayMsg)>;

/// A node's stream.
pub fn stream_key(prefix: &str, node: &str) -> String {
    format!("{prefix}:in:{node}")
}

/// The Redis side of the relay (one per node, shared by the API and the forwarder).
#[derive(Debug, Clone)]
pub struct Remote {
    shared: Arc<Shared>,
}

struct Shared {
    prefix: String,
    me: Peer,
    lease_ttl: Duration,
    conn: Mutex<Option<Conn>>,
    /// Live-node index as last read: `node|epoch` -> lease expiry (unix ms).
    nodes: Mutex<HashMap<String, u64>>,
    /// Calls waiting for an answer: call id -> where the answer goes.
    pending: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<u32>>>,
    next_call: AtomicU64,
    outbox: flume::Sender<(String, pb::RelayMsg)>,
    up: AtomicBool,
    last_error: Mutex<String>,
    metrics: RelayMetrics,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("prefix", &self.prefix).field("me", &self.me).finish_non_exhaustive()
    }
}

/// The relay's metric handles.
struct RelayMetrics {
    sent: metrics::Counter,
    received: metrics::Counter,
    batches_out: metrics::Counter,
    batches_in: metrics::Counter,
    expired: metrics::Counter,
    stale: metrics::Counter,
    undecodable: metrics::Counter,
    write_failed: metrics::Counter,
    unanswered: metrics::Counter,
}

impl RelayMetrics {
    fn new() -> RelayMetrics {
        let dropped = |reason: &'static str| metrics::counter!("ringgate_relay_dropped_total", "reason" => reason);
        RelayMetrics {
            sent: metrics::counter!("ringgate_relay_messages_total", "direction" => "out"),
            received: metrics::counter!("ringgate_relay_messages_total", "direction" => "in"),
            batches_out: metrics::counter!("ringgate_relay_batches_total", "direction" => "out"),
            batches_in: metrics::counter!("ringgate_relay_batches_total", "direction" => "in"),
            expired: dropped("expired"),
            stale: dropped("stale_epoch"),
            undecodable: dropped("undecodable"),
            write_failed: dropped("redis_error"),
            unanswered: metrics::counter!("ringgate_relay_unanswered_total"),
        }
    }
}

impl Remote {
    /// Starts the Redis side on the current (control-plane) runtime: the write connection,
    /// the outbox, the live-node refresh and the reader of this node's stream. The reader
    /// runs ops on `relay`'s workers, so it is started by [`Remote::serve`] once the relay
    /// exists.
    pub fn new(target: &RedisTarget, me: Peer) -> (Remote, Outbox) {
        let (outbox, outbox_rx) = flume::bounded(65_536);
        let shared = Shared {
            prefix: target.prefix.clone(),
            me,
            lease_ttl: target.lease_ttl,
            conn: Mutex::new(None),
            nodes: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_call: AtomicU64::new(1),
            outbox,
            up: AtomicBool::new(false),
            last_error: Mutex::new("not connected yet".into()),
            metrics: RelayMetrics::new(),
        };
        (Remote { shared: Arc::new(shared) }, outbox_rx)
    }

    /// Runs the relay's Redis tasks until the runtime stops.
    pub async fn serve(self, target: RedisTarget, relay: Relay, outbox: Outbox) {
        let connect = self.clone();
        let target_w = target.clone();
        tokio::spawn(async move { connect.connect_loop(target_w).await });
        let writer = self.clone();
        tokio::spawn(async move { writer.outbox_loop(outbox).await });
        let refresher = self.clone();
        tokio::spawn(async move { refresher.refresh_loop().await });
        self.read_loop(target, relay).await;
    }

    /// Whether the last Redis command of the relay succeeded.
    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Relaxed)
    }

    fn conn(&self) -> Result<Conn, String> {
        let conn = self.shared.conn.lock().ok().and_then(|c| c.clone());
        conn.ok_or_else(|| format!("redis unavailable: {}", self.last_error()))
    }

    fn last_error(&self) -> String {
        self.shared.last_error.lock().map(|e| e.clone()).unwrap_or_default()
    }

    fn note<T>(&self, result: &redis::RedisResult<T>) {
        match result {
            Ok(_) => self.shared.up.store(true, Ordering::Relaxed),
            Err(e) => {
                self.shared.up.store(false, Ordering::Relaxed);
                if let Ok(mut last) = self.shared.last_error.lock() {
                    *last = e.to_string();
                }
            }
        }
    }

    /// Runs one command on the shared connection; errors name Redis.
    async fn query<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, String> {
        let mut conn = self.conn()?;
        let result = conn.run(&[(cmd, true)]).await;
        self.note(&result);
        let mut values = result.map_err(|e| format!("redis unavailable: {e}"))?;
        let value = values.pop().unwrap_or(redis::Value::Nil);
        redis::from_redis_value(value).map_err(|e| format!("redis answered something unexpected: {e}"))
    }

    async fn connect_loop(self, target: RedisTarget) {
        loop {
            match tokio::time::timeout(Duration::from_secs(3), Conn::connect(&target)).await {
                Ok(Ok(conn)) => {
                    if let Ok(mut slot) = self.shared.conn.lock() {
                        *slot = Some(conn);
                    }
                    self.shared.up.store(true, Ordering::Relaxed);
                    // Both connection kinds reconnect by themselves from here on.
                    return;
                }
                Ok(Err(e)) => self.note::<()>(&Err(e)),
                Err(_) => self.note::<()>(&Err((redis::ErrorKind::Io, "connect timed out").into())),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The live sessions of `user`: records whose node holds a lease of the record's epoch.
    /// Records of dead nodes are removed on the way (compare-and-delete).
    pub async fn locate(&self, user: &str) -> Result<Vec<(String, Location)>, String> {
        let key = user_key(&self.shared.prefix, user);
        let records: Vec<(String, String)> = self.query(redis::cmd("HGETALL").arg(&key).clone()).await?;
        let mut live = Vec::with_capacity(records.len());
        for (device, raw) in records {
            let Some(location) = Location::parse(&raw) else { continue };
            if self.is_live(&location.node_id, location.node_epoch).await? {
                live.push((device, location));
            } else {
                let mut cad = redis::cmd("EVAL");
                cad.arg(COMPARE_AND_DELETE).arg(1).arg(&key).arg(&device).arg(&raw);
                let _: Result<i64, String> = self.query(cad).await;
            }
        }
        Ok(live)
    }

    /// The live nodes with members in `room`; dead nodes' entries are removed on the way.
    pub async fn room_nodes(&self, room: &str) -> Result<Vec<Peer>, String> {
        let key = room_key(&self.shared.prefix, room);
        let members: Vec<String> = self.query(redis::cmd("SMEMBERS").arg(&key).clone()).await?;
        let mut live = Vec::new();
        for member in members {
            let Some(peer) = parse_member(&member) else { continue };
            if self.is_live(&peer.node, peer.epoch).await? {
                live.push(peer);
            } else {
                let _: Result<i64, String> = self.query(redis::cmd("SREM").arg(&key).arg(&member).clone()).await;
            }
        }
        Ok(live)
    }

    /// Every node holding a lease now.
    pub async fn live_nodes(&self) -> Result<Vec<Peer>, String> {
        let now = unix_ms();
        let index = self.read_index(now).await?;
        Ok(index.keys().filter_map(|m| parse_member(m)).collect())
    }

    /// The epoch of `node`'s live start, if it has one.
    pub async fn live_epoch(&self, node: &str) -> Result<Option<u64>, String> {
        let now = unix_ms();
        let cached = self.newest_epoch(node, now);
        if cached.is_some() {
            return Ok(cached);
        }
        self.read_index(now).await?;
        Ok(self.newest_epoch(node, now))
    }

    fn newest_epoch(&self, node: &str, now: u64) -> Option<u64> {
        let nodes = self.shared.nodes.lock().ok()?;
        nodes
            .iter()
            .filter(|(_, expiry)| **expiry > now)
            .filter_map(|(m, _)| parse_member(m))
            .filter(|p| p.node == node)
            .map(|p| p.epoch)
            .max()
    }

    /// Whether (node, epoch) holds a lease: from the index as last read, else asked now.
    async fn is_live(&self, node: &str, epoch: u64) -> Result<bool, String> {
        let member = node_member(node, epoch);
        let now = unix_ms();
        if self.shared.nodes.lock().ok().and_then(|n| n.get(&member).copied()).is_some_and(|expiry| expiry > now) {
            return Ok(true);
        }
        let score: Option<f64> =
            self.query(redis::cmd("ZSCORE").arg(nodes_key(&self.shared.prefix)).arg(&member).clone()).await?;
        let expiry = score.map_or(0, |s| s as u64);
        if expiry > now
            && let Ok(mut nodes) = self.shared.nodes.lock()
        {
            nodes.insert(member, expiry);
        }
        Ok(expiry > now)
    }

    /// Reads the live-node index into the cache; returns it.
    async fn read_index(&self, now: u64) -> Result<HashMap<String, u64>, String> {
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(nodes_key(&self.shared.prefix)).arg(now).arg("+inf").arg("WITHSCORES");
        let entries: Vec<(String, f64)> = self.query(cmd).await?;
        let index: HashMap<String, u64> = entries.into_iter().map(|(m, s)| (m, s as u64)).collect();
        if let Ok(mut nodes) = self.shared.nodes.lock() {
            nodes.clone_from(&index);
        }
        Ok(index)
    }

    /// Keeps the live-node cache fresh and this node's stream from expiring while it lives.
    async fn refresh_loop(self) {
        let period = (self.shared.lease_ttl / 3).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let _ = self.read_index(unix_ms()).await;
            let keep = (self.shared.lease_ttl * 3).max(Duration::from_secs(60)).as_millis() as u64;
            let mut expire = redis::cmd("PEXPIRE");
            expire.arg(stream_key(&self.shared.prefix, &self.shared.me.node)).arg(keep);
            let _: Result<i64, String> = self.query(expire).await;
        }
    }

    /// Sends `op` to `peer` and waits for its count; `None` when none came within `timeout`.
    pub async fn call(&self, peer: &Peer, op: &NodeOp, timeout: Duration) -> Option<u32> {
        let body = to_body(op)?;
        let call = self.shared.next_call.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Ok(mut pending) = self.shared.pending.lock() {
            pending.insert(call, tx);
        }
        // However this call ends (answered, timed out, or its caller gone: a dropped HTTP
        // request drops this future), its entry goes.
        let _forget = Forget { shared: &self.shared, call };
        let msg = pb::RelayMsg {
            call,
            from_node: self.shared.me.node.clone(),
            from_epoch: self.shared.me.epoch,
            to_epoch: peer.epoch,
            deadline_ms: unix_ms() + timeout.as_millis() as u64,
            body: Some(body),
            room: op_room(op),
        };
        let answer = if self.shared.outbox.try_send((peer.node.clone(), msg)).is_ok() {
            tokio::time::timeout(timeout, rx).await.ok().and_then(Result::ok)
        } else {
            None
        };
        if answer.is_none() {
            self.shared.metrics.unanswered.increment(1);
        }
        answer
    }

    /// Calls waiting for an answer now.
    pub fn pending_calls(&self) -> usize {
        self.shared.pending.lock().map_or(0, |p| p.len())
    }

    /// Writes what is queued, one XADD per target node per round: a round is whatever
    /// queued while the previous one was being written.
    async fn outbox_loop(self, outbox: Outbox) {
        while let Ok(first) = outbox.recv_async().await {
            let mut by_node: HashMap<String, Vec<pb::RelayMsg>> = HashMap::new();
            let (node, msg) = first;
            by_node.entry(node).or_default().push(msg);
            let mut taken = 1;
            while taken < BATCH * 8
                && let Ok((node, msg)) = outbox.try_recv()
            {
                by_node.entry(node).or_default().push(msg);
                taken += 1;
            }
            let mut writes = tokio::task::JoinSet::new();
            for (node, msgs) in by_node {
                for chunk in msgs.chunks(BATCH) {
                    let count = chunk.len() as u64;
                    let body = pb::RelayBatch { msgs: chunk.to_vec() }.encode_to_vec();
                    let mut xadd = redis::cmd("XADD");
                    xadd.arg(stream_key(&self.shared.prefix, &node))
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(STREAM_LEN)
                        .arg("*")
                        .arg("b")
                        .arg(body);
                    let remote = self.clone();
                    writes.spawn(async move {
                        let written: Result<String, String> = remote.query(xadd).await;
                        (written.is_ok(), count)
                    });
                }
            }
            while let Some(Ok((ok, count))) = writes.join_next().await {
                if ok {
                    self.shared.metrics.batches_out.increment(1);
                    self.shared.metrics.sent.increment(count);
                } else {
                    self.shared.metrics.write_failed.increment(count);
                }
            }
        }
    }

    /// Reads this node's stream on a connection of its own (XREAD blocks it) and handles
    /// each message: answers complete waiting calls, ops run on the workers.
    async fn read_loop(self, target: RedisTarget, relay: Relay) {
        let key = stream_key(&self.shared.prefix, &self.shared.me.node);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_OPS_IN_FLIGHT));
        // Start after the stream's last entry (an earlier start's messages are not ours),
        // then from the last id read, so a reconnect resumes where it stopped (what the
        // stream kept meanwhile is still delivered). Not "$": each XREAD with "$" would skip
        // what arrived between two reads.
        let mut last: Option<String> = None;
        loop {
            let mut conn = match tokio::time::timeout(Duration::from_secs(3), Conn::connect(&target)).await {
                Ok(Ok(conn)) => conn,
                _ => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            if last.is_none() {
                let mut newest = redis::cmd("XREVRANGE");
                newest.arg(&key).arg("+").arg("-").arg("COUNT").arg(1);
                let Ok(mut values) = conn.run(&[(newest, true)]).await else {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                };
                let entries: Option<redis::streams::StreamRangeReply> =
                    values.pop().and_then(|v| redis::from_redis_value(v).ok());
                let id = entries.and_then(|r| r.ids.first().map(|e| e.id.clone()));
                last = Some(id.unwrap_or_else(|| "0-0".into()));
            }
            let mut last_id = last.clone().unwrap_or_else(|| "0-0".into());
            loop {
                let mut xread = redis::cmd("XREAD");
                xread.arg("COUNT").arg(64).arg("BLOCK").arg(1000).arg("STREAMS").arg(&key).arg(&last_id);
                let reply = conn.run(&[(xread, true)]).await;
                let Ok(mut values) = reply else { break };
                let Some(value) = values.pop() else { continue };
                let read: Option<redis::streams::StreamReadReply> = redis::from_redis_value(value).ok();
                for stream in read.map(|r| r.keys).unwrap_or_default() {
                    for entry in stream.ids {
                        last_id.clone_from(&entry.id);
                        last = Some(entry.id.clone());
                        self.shared.metrics.batches_in.increment(1);
                        let batch = entry
                            .map
                            .get("b")
                            .and_then(|v| redis::from_redis_value::<Vec<u8>>(v.clone()).ok())
                            .and_then(|b| pb::RelayBatch::decode(b.as_slice()).ok());
                        match batch {
                            Some(batch) => self.handle(&relay, batch, &slots).await,
                            None => self.shared.metrics.undecodable.increment(1),
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn handle(&self, relay: &Relay, batch: pb::RelayBatch, slots: &Arc<tokio::sync::Semaphore>) {
        let now = unix_ms();
        for msg in batch.msgs {
            self.shared.metrics.received.increment(1);
            if let Some(pb::relay_msg::Body::Answer(answer)) = &msg.body {
                if msg.to_epoch != self.shared.me.epoch {
                    self.shared.metrics.stale.increment(1);
                    continue;
                }
                let waiting = self.shared.pending.lock().ok().and_then(|mut p| p.remove(&msg.call));
                if let Some(tx) = waiting {
                    let _ = tx.send(answer.count);
                }
                continue;
            }
            if msg.to_epoch != self.shared.me.epoch {
                self.shared.metrics.stale.increment(1);
                continue;
            }
            if msg.deadline_ms.saturating_add(CLOCK_SKEW_MS) < now {
                self.shared.metrics.expired.increment(1);
                continue;
            }
            let Some(op) = from_body(&msg) else {
                self.shared.metrics.undecodable.increment(1);
                continue;
            };
            let (relay, remote) = (relay.clone(), self.clone());
            let wait =
                Duration::from_millis(msg.deadline_ms.saturating_add(CLOCK_SKEW_MS).saturating_sub(now).min(60_000));
            // At most MAX_OPS_IN_FLIGHT at once: a slow worker holds the reader back (and
            // the stream holds the rest) instead of tasks piling up.
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => match slots.clone().acquire_owned().await {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
            };
            tokio::spawn(async move {
                let _slot = slot;
                let count = relay.local(op, wait).await.unwrap_or(0);
                if msg.call != 0 {
                    let answer = pb::RelayMsg {
                        call: msg.call,
                        from_node: remote.shared.me.node.clone(),
                        from_epoch: remote.shared.me.epoch,
                        to_epoch: msg.from_epoch,
                        deadline_ms: msg.deadline_ms,
                        body: Some(pb::relay_msg::Body::Answer(pb::RelayAnswer { count })),
                        room: String::new(),
                    };
                    let _ = remote.shared.outbox.try_send((msg.from_node, answer));
                }
            });
        }
    }
}

/// Removes a call's entry from the pending map when the call ends.
struct Forget<'a> {
    shared: &'a Shared,
    call: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if let Ok(mut pending) = self.shared.pending.lock() {
            pending.remove(&self.call);
        }
    }
}

fn parse_member(member: &str) -> Option<Peer> {
    let (node, epoch) = member.rsplit_once('|')?;
    Some(Peer { node: node.to_owned(), epoch: epoch.parse().ok()? })
}

fn op_room(op: &NodeOp) -> String {
    match op {
        NodeOp::Join { room, .. } | NodeOp::Leave { room, .. } => room.clone(),
        _ => String::new(),
    }
}

/// The wire form of an op (`None` for presence, which is read from the registry instead).
fn to_body(op: &NodeOp) -> Option<pb::relay_msg::Body> {
    use pb::push_request::Target;
    use pb::relay_msg::Body;
    let push = |target, payload: &bytes::Bytes| {
        Body::Push(pb::PushRequest { target: Some(target), payload: payload.clone(), timeout_ms: 0 })
    };
    Some(match op {
        NodeOp::PushUser { user, devices, platforms, payload } => push(
            Target::User(pb::UserTarget { user: user.clone(), devices: devices.clone(), platforms: platforms.clone() }),
            payload,
        ),
        NodeOp::PushConn { conn, payload } => {
            push(Target::Conn(pb::ConnTarget { node: String::new(), conn: *conn }), payload)
        }
        NodeOp::PushRoom { room, exclude, payload } => {
            push(Target::Room(pb::RoomTarget { room: room.clone(), exclude_conn: exclude.unwrap_or(0) }), payload)
        }
        NodeOp::Broadcast { payload } => push(Target::Broadcast(true), payload),
        NodeOp::Kick { user, device, reason, message } => Body::Kick(pb::KickRequest {
            user: user.clone(),
            device: device.clone().unwrap_or_default(),
            reason: reason.0,
            message: message.clone(),
        }),
        NodeOp::Join { user, .. } => Body::JoinUser(user.clone()),
        NodeOp::Leave { user, .. } => Body::LeaveUser(user.clone()),
        NodeOp::RoomSize { room } => Body::RoomSize(room.clone()),
        NodeOp::Presence { .. } => return None,
    })
}

/// The op a relay message carries (`None` for a malformed one).
fn from_body(msg: &pb::RelayMsg) -> Option<NodeOp> {
    use pb::push_request::Target;
    use pb::relay_msg::Body;
    Some(match msg.body.as_ref()? {
        Body::Push(push) => {
            let payload = push.payload.clone();
            match push.target.as_ref()? {
                Target::User(u) => NodeOp::PushUser {
                    user: u.user.clone(),
                    devices: u.devices.clone(),
                    platforms: u.platforms.clone(),
                    payload,
                },
                Target::Conn(c) => NodeOp::PushConn { conn: c.conn, payload },
                Target::Room(r) => NodeOp::PushRoom {
                    room: r.room.clone(),
                    exclude: (r.exclude_conn != 0).then_some(r.exclude_conn),
                    payload,
                },
                Target::Broadcast(_) => NodeOp::Broadcast { payload },
            }
        }
        Body::Kick(k) => NodeOp::Kick {
            user: k.user.clone(),
            device: (!k.device.is_empty()).then(|| k.device.clone()),
            reason: ReasonCode(k.reason),
            message: k.message.clone(),
        },
        Body::JoinUser(user) => NodeOp::Join { user: user.clone(), room: msg.room.clone() },
        Body::LeaveUser(user) => NodeOp::Leave { user: user.clone(), room: msg.room.clone() },
        Body::RoomSize(room) => NodeOp::RoomSize { room: room.clone() },
        Body::Answer(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_relayed_op_survives_the_wire() {
        let payload = bytes::Bytes::from_static(b"hi");
        let ops = [
            NodeOp::PushUser {
                user: "u".into(),
                devices: vec!["d".into()],
                platforms: vec!["ios".into()],
                payload: payload.clone(),
            },
            NodeOp::PushConn { conn: 7 << 48 | 3, payload: payload.clone() },
            NodeOp::PushRoom { room: "r".into(), exclude: Some(9), payload: payload.clone() },
            NodeOp::PushRoom { room: "r".into(), exclude: None, payload: payload.clone() },
            NodeOp::Broadcast { payload },
            NodeOp::Kick { user: "u".into(), device: None, reason: ReasonCode::KICKED, message: "bye".into() },
            NodeOp::Kick {
                user: "u".into(),
                device: Some("d".into()),
                reason: ReasonCode::REPLACED,
                message: String::new(),
            },
            NodeOp::Join { user: "u".into(), room: "r".into() },
            NodeOp::Leave { user: "u".into(), room: "r".into() },
            NodeOp::RoomSize { room: "r".into() },
        ];
        for op in ops {
            let msg = pb::RelayMsg { body: to_body(&op), room: op_room(&op), ..Default::default() };
            let wire = pb::RelayBatch { msgs: vec![msg] }.encode_to_vec();
            let back = pb::RelayBatch::decode(wire.as_slice()).unwrap();
            assert_eq!(from_body(&back.msgs[0]), Some(op));
        }
        assert_eq!(parse_member("gw-a.1|42"), Some(Peer { node: "gw-a.1".into(), epoch: 42 }));
        assert_eq!(parse_member("gw-a"), None);
    }
}
