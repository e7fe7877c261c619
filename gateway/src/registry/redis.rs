//! The registry's Redis side: one control-plane task (tokio, on its own thread) that owns the
//! Redis connection, keeps the node lease alive and writes the workers' updates in pipelines.
//!
//! Keys (documented for backends in docs/registry.md):
//! - `{prefix}:n:{node}`: HASH `epoch`, `addr`, `started_ms`, `conns`; expires after the lease
//!   TTL unless refreshed (every TTL/3). A node that dies stops being found within the TTL.
//! - `{prefix}:u:{user}`: HASH device -> [`Location::encode`]. Written with HSET on login;
//!   removed on close only while it still holds that connection's record (a Lua
//!   compare-and-delete), so a late close never erases a newer login.
//! - `{prefix}:nodes`: ZSET `node|epoch` scored by the lease's expiry (unix ms), refreshed with
//!   the lease: the live nodes, in one key (a cluster has no cheap "every key matching").
//! - `{prefix}:r:{room}`: SET of `node|epoch` with members in the room; added on the node's
//!   first member, removed on its last. A dead node's entries are dropped by readers.
//! - `{prefix}:nu:{node}|{epoch}`: SET of the users this start of the node holds records of
//!   (SADD on login, SREM when its last record of the user goes), kept an hour past the
//!   lease. When a lease expires, a surviving node claims `{prefix}:sweep:{node}|{epoch}` and
//!   removes that start's records user by user with [`SWEEP`] (see [`Task::sweep`]).
//!
//! Redis being unavailable never blocks a worker: updates wait in the [`Batcher`] (bounded,
//! overflow counted), and when Redis answers again the task re-asserts the lease and every
//! record this node owns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionLike;
use ringgate_codec::backoff::Backoff;

use ringgate_codec::ReasonCode;
use ringgate_codec::link::{KickTarget, LinkFrame, LinkKick};

use super::{Batcher, Location, RegistryOp};
use crate::config::{DevicePolicy, RedisTarget};
use crate::inbox::WorkerMsg;
use crate::inbox::owner_of;
use crate::status::RegistryState;

/// Removes `field` from hash `KEYS[1]` only if it still holds `ARGV[2]`.
pub const COMPARE_AND_DELETE: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0";

/// Records a login: HSET `ARGV[1]` (device) = `ARGV[2]` (record) in `KEYS[1]`, first removing
/// the records the device policy `ARGV[3]` says it replaces (same device always; same
/// platform `ARGV[4]` for one_per_platform; every device for one_per_user). Returns the
/// replaced records, so their nodes can be told to kick those sessions.
pub const PUT_DISPLACE: &str = r"
local displaced = {}
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old and old ~= ARGV[2] then table.insert(displaced, old) end
if ARGV[3] ~= 'many' then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local device, record = all[i], all[i + 1]
    if device ~= ARGV[1] then
      local platform = string.match(record, '([^|]*)$')
      if ARGV[3] == 'one_per_user' or platform == ARGV[4] then
        redis.call('HDEL', KEYS[1], device)
        table.insert(displaced, record)
      end
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return displaced";

/// Removes from user hash `KEYS[1]` every record of the node start `ARGV[1]` (`node|epoch|`,
/// the records' prefix); returns how many.
pub const SWEEP: &str = r"
local n = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if string.sub(all[i + 1], 1, #ARGV[1]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], all[i])
    n = n + 1
  end
end
return n";

/// Takes (or keeps) the sweep of a dead node start: `KEYS[1]` is set to this node `ARGV[1]`
/// for `ARGV[2]` ms unless another node holds it. 1 when this node sweeps.
const CLAIM: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0";

/// Users swept per round trip.
const SWEEP_BATCH: usize = 500;

/// Deletes the lease `KEYS[1]` only if it is still this epoch's (`ARGV[1]`).
const DEREGISTER: &str = r"
if redis.call('HGET', KEYS[1], 'epoch') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// This node, as its lease describes it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub id: String,
    pub epoch: u64,
    pub addr: String,
}

/// A worker's handle on the registry.
#[derive(Debug, Clone)]
pub struct RegistryTx {
    pub tx: flume::Sender<RegistryOp>,
    /// Whether Redis answered the last write.
    pub up: Arc<AtomicBool>,
    pub fail_open: bool,
}

pub fn user_key(prefix: &str, user: &str) -> String {
    format!("{prefix}:u:{user}")
}

pub fn node_key(prefix: &str, node: &str) -> String {
    format!("{prefix}:n:{node}")
}

/// The live-node index: `node|epoch` scored by lease expiry (unix ms).
pub fn nodes_key(prefix: &str) -> String {
    format!("{prefix}:nodes")
}

/// The users a node start holds records of.
pub fn users_key(prefix: &str, member: &str) -> String {
    format!("{prefix}:nu:{member}")
}

/// Who sweeps a dead node start.
fn sweep_key(prefix: &str, member: &str) -> String {
    format!("{prefix}:sweep:{member}")
}

/// The nodes with members in `room`.
pub fn room_key(prefix: &str, room: &str) -> String {
    format!("{prefix}:r:{room}")
}

/// A node's entry in the live-node index and in room sets.
pub fn node_member(node: &str, epoch: u64) -> String {
    format!("{node}|{epoch}")
}

/// The list a node pops kicks from: entries `epoch|conn_id`.
pub fn kick_key(prefix: &str, node: &str) -> String {
    format!("{prefix}:kick:{node}")
}

/// A connection to a single Redis or to a Redis Cluster; both multiplex concurrent commands.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(redis::aio::ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Conn {
    pub(crate) async fn connect(target: &RedisTarget) -> redis::RedisResult<Conn> {
        if target.cluster.is_empty() {
            let client = redis::Client::open(target.url.as_str())?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_number_of_retries(1)
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(2)));
            Ok(Conn::Single(redis::aio::ConnectionManager::new_with_config(client, config).await?))
        } else {
            let client = redis::cluster::ClusterClient::builder(target.cluster.clone())
                .connection_timeout(Duration::from_secs(2))
                .response_timeout(Duration::from_secs(2))
                .build()?;
            Ok(Conn::Cluster(client.get_async_connection().await?))
        }
    }

    /// Runs one command; its reply as `T`, `None` when it is not one.
    async fn one<T: redis::FromRedisValue>(&mut self, cmd: redis::Cmd) -> redis::RedisResult<Option<T>> {
        Ok(self.run(&[(cmd, true)]).await?.pop().and_then(|v| redis::from_redis_value(v).ok()))
    }

    /// Runs `cmds` (pipelined on a single node, one by one on a cluster, where they may span
    /// slots) and returns the replies of those marked wanted, in order.
    pub(crate) async fn run(&mut self, cmds: &[(redis::Cmd, bool)]) -> redis::RedisResult<Vec<redis::Value>> {
        match self {
            Conn::Single(c) => {
                // In pipelines of at most PIPELINE commands: a re-assert of a whole node's
                // records would otherwise be encoded, sent and answered in one buffer of
                // hundreds of bytes per record, all of it at once.
                let mut out = Vec::new();
                for part in cmds.chunks(PIPELINE) {
                    let mut pipe = redis::pipe();
                    for (cmd, want) in part {
                        pipe.add_command(cmd.clone());
                        if !want {
                            pipe.ignore();
                        }
                    }
                    let replies: Vec<redis::Value> = pipe.query_async(c).await?;
                    out.extend(replies);
                }
                Ok(out)
            }
            Conn::Cluster(c) => {
                let mut out = Vec::new();
                for (cmd, want) in cmds {
                    let value = c.req_packed_command(cmd).await?;
                    if *want {
                        out.push(value);
                    }
                }
                Ok(out)
            }
        }
    }
}

/// Commands per pipeline round trip.
const PIPELINE: usize = 1024;

fn eval(script: &str, key: String, args: &[String]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(1).arg(key);
    for a in args {
        cmd.arg(a);
    }
    cmd
}

/// The command for one update; a Put's reply (the records it replaced) is wanted.
fn op_cmd(prefix: &str, op: &RegistryOp, policy: DevicePolicy) -> (redis::Cmd, bool) {
    match op {
        RegistryOp::Put { user, device, location } => {
            let args = [device.clone(), location.encode(), policy.as_str().into(), location.platform.clone()];
            (eval(PUT_DISPLACE, user_key(prefix, user), &args), true)
        }
        RegistryOp::Del { user, device, location } => {
            (eval(COMPARE_AND_DELETE, user_key(prefix, user), &[device.clone(), location.encode()]), false)
        }
        // Room changes are written by `room_cmd` (the batcher keeps them apart).
        RegistryOp::Room { .. } => (redis::cmd("PING"), false),
    }
}

/// Adds this node to a room's set, or removes it.
fn room_cmd(prefix: &str, node: &NodeInfo, room: &str, present: bool) -> (redis::Cmd, bool) {
    let mut cmd = redis::cmd(if present { "SADD" } else { "SREM" });
    cmd.arg(room_key(prefix, room)).arg(node_member(&node.id, node.epoch));
    (cmd, false)
}

/// After an outage: write the record unless the field holds another one, which is a newer
/// login made meanwhile (or a stale record that readers discard).
fn reassert_cmd(prefix: &str, op: &RegistryOp) -> (redis::Cmd, bool) {
    let RegistryOp::Put { user, device, location } = op else { return (redis::cmd("PING"), false) };
    let mut cmd = redis::cmd("HSETNX");
    cmd.arg(user_key(prefix, user)).arg(device).arg(location.encode());
    (cmd, false)
}

fn lease_cmds(prefix: &str, node: &NodeInfo, records: usize, ttl: Duration) -> Vec<(redis::Cmd, bool)> {
    let key = node_key(prefix, &node.id);
    let mut hset = redis::cmd("HSET");
    hset.arg(&key)
        .arg("epoch")
        .arg(node.epoch)
        .arg("addr")
        .arg(&node.addr)
        .arg("started_ms")
        .arg(node.epoch)
        .arg("conns")
        .arg(records);
    let mut expire = redis::cmd("PEXPIRE");
    expire.arg(&key).arg(ttl.as_millis() as u64);
    let now = super::unix_ms();
    let mut live = redis::cmd("ZADD");
    live.arg(nodes_key(prefix)).arg(now + ttl.as_millis() as u64).arg(node_member(&node.id, node.epoch));
    // Entries of nodes dead for an hour go; younger dead ones are skipped by their score.
    let mut prune = redis::cmd("ZREMRANGEBYSCORE");
    prune.arg(nodes_key(prefix)).arg("-inf").arg(now.saturating_sub(3_600_000));
    vec![(hset, false), (expire, false), (live, false), (prune, false)]
}

/// Kick-list pushes for every displaced record held by another node.
fn kick_cmds(prefix: &str, own: &str, replies: &[redis::Value]) -> Vec<(redis::Cmd, bool)> {
    let mut cmds = Vec::new();
    for reply in replies {
        let records: Vec<String> = redis::from_redis_value(reply.clone()).unwrap_or_default();
        for location in records.iter().filter_map(|r| Location::parse(r)) {
            if location.node_id == own {
                continue; // this node's workers already displaced it
            }
            let key = kick_key(prefix, &location.node_id);
            let mut push = redis::cmd("RPUSH");
            push.arg(&key).arg(format!("{}|{}", location.node_epoch, location.conn_id));
            let mut expire = redis::cmd("EXPIRE");
            expire.arg(&key).arg(60);
            cmds.push((push, false));
            cmds.push((expire, false));
        }
    }
    cmds
}

/// The registry task's connections to the rest of the node.
#[derive(Debug)]
pub struct RegistryIo {
    /// Updates from the workers.
    pub ops: flume::Receiver<RegistryOp>,
    /// Worker inboxes, for kicks of sessions replaced by logins on other nodes.
    pub workers: Vec<flume::Sender<WorkerMsg>>,
    pub up: Arc<AtomicBool>,
    pub state: Arc<Mutex<RegistryState>>,
    /// Dropping its sender stops the task (after a final flush and deregistration).
    pub stop: flume::Receiver<()>,
}

/// Runs the registry until `io.stop`'s sender is dropped, then deregisters the lease.
pub fn run(target: RedisTarget, node: NodeInfo, policy: DevicePolicy, io: RegistryIo) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return tracing::error!(error = %e, "registry cannot start"),
    };
    let RegistryIo { ops, workers, up, state, stop } = io;
    runtime.block_on(async move {
        let kicks = tokio::spawn(kick_loop(target.clone(), node.clone(), workers));
        Task { target, node, policy, up, state, batcher: Batcher::default(), conn: None }.run(ops, stop).await;
        kicks.abort();
    });
}

struct Task {
    target: RedisTarget,
    node: NodeInfo,
    policy: DevicePolicy,
    up: Arc<AtomicBool>,
    state: Arc<Mutex<RegistryState>>,
    batcher: Batcher,
    conn: Option<Conn>,
}

impl Task {
    async fn run(mut self, ops: flume::Receiver<RegistryOp>, stop: flume::Receiver<()>) {
        self.batcher = Batcher::new(self.target.queue);
        let mut lease = tokio::time::interval((self.target.lease_ttl / 3).max(Duration::from_millis(10)));
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2), self.node.epoch);
        let mut retry_at = tokio::time::Instant::now();
        let mut reassert = true;
        let mut lease_due = true;
        let mut log = FailureLog::default();
        loop {
            tokio::select! {
                op = ops.recv_async() => match op {
                    Ok(op) => {
                        self.batcher.push(op);
                        while let Ok(op) = ops.try_recv() {
                            self.batcher.push(op);
                        }
                    }
                    Err(_) => break,
                },
                _ = lease.tick() => lease_due = true,
                _ = tokio::time::sleep_until(retry_at), if self.conn.is_none() => {}
                _ = stop.recv_async() => break,
            }
            if self.conn.is_none() && tokio::time::Instant::now() >= retry_at {
                match tokio::time::timeout(Duration::from_secs(3), Conn::connect(&self.target)).await {
                    Ok(Ok(conn)) => {
                        self.conn = Some(conn);
                        reassert = true;
                        backoff.reset();
                    }
                    failed => {
                        let error = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "no answer within 3 s".to_owned(),
                        };
                        log.failed("registry cannot connect to redis; retrying", &error);
                        retry_at = tokio::time::Instant::now() + backoff.next_delay();
                        self.set_up(false);
                        self.with_state(|s| s.failures += 1);
                    }
                }
            }
            if self.conn.is_some() && (reassert || lease_due || self.batcher.pending_len() > 0) {
                let sweep_due = lease_due;
                match self.flush(reassert).await {
                    Ok(()) => {
                        reassert = false;
                        lease_due = false;
                        self.set_up(true);
                        log.recovered();
                        if sweep_due && let Err(e) = self.sweep().await {
                            tracing::debug!(error = %e, "registry sweep of dead nodes failed; retried next lease tick");
                        }
                    }
                    Err(e) => {
                        log.failed("registry write failed; queueing until redis answers", &e.to_string());
                        self.conn = None;
                        retry_at = tokio::time::Instant::now() + backoff.next_delay();
                        self.set_up(false);
                        self.with_state(|s| s.failures += 1);
                    }
                }
            }
            let (records, pending, overflow) =
                (self.batcher.records(), self.batcher.pending_len(), self.batcher.overflow);
            self.with_state(|s| {
                s.records = records;
                s.pending = pending;
                s.overflow = overflow;
            });
        }
        // Closes queued during shutdown still get written, then the lease goes.
        while let Ok(op) = ops.try_recv() {
            self.batcher.push(op);
        }
        if self.conn.is_some() && self.batcher.pending_len() > 0 {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.flush(false)).await;
        }
        self.deregister().await;
    }

    /// Writes pending ops (and, on `reassert`, the lease and every owned record) in one
    /// pipeline, then tells other nodes to kick the sessions the logins replaced.
    async fn flush(&mut self, reassert: bool) -> redis::RedisResult<()> {
        let prefix = self.target.prefix.clone();
        let ops = self.batcher.take();
        let rooms = self.batcher.take_rooms();
        let mut cmds = lease_cmds(&prefix, &self.node, self.batcher.records(), self.target.lease_ttl);
        if reassert {
            cmds.extend(self.batcher.mirror_ops().iter().map(|op| reassert_cmd(&prefix, op)));
            cmds.extend(self.batcher.rooms().map(|room| room_cmd(&prefix, &self.node, room, true)));
        }
        cmds.extend(rooms.iter().map(|(room, present)| room_cmd(&prefix, &self.node, room, *present)));
        // The node's user index: added to before the records are written, removed from after
        // (an index naming a user without records costs a sweep one lookup; a record no index
        // names would never be swept). Its replies are not wanted.
        let index = users_key(&prefix, &node_member(&self.node.id, self.node.epoch));
        if reassert {
            let users: Vec<&str> = self.batcher.users().collect();
            for chunk in users.chunks(1000) {
                let mut add = redis::cmd("SADD");
                add.arg(&index).arg(chunk);
                cmds.push((add, false));
            }
        }
        for op in &ops {
            if let RegistryOp::Put { user, .. } = op {
                let mut add = redis::cmd("SADD");
                add.arg(&index).arg(user);
                cmds.push((add, false));
            }
        }
        // It outlives the lease by the hour the node's live-node entry does, so a sweep can
        // find it; after that both are gone.
        let mut expire = redis::cmd("PEXPIRE");
        expire.arg(&index).arg(self.target.lease_ttl.as_millis() as u64 + 3_600_000);
        cmds.push((expire, false));
        cmds.extend(ops.iter().map(|op| op_cmd(&prefix, op, self.policy)));
        // A user leaves the index after its last record here is deleted, not before.
        for op in &ops {
            if let RegistryOp::Del { user, .. } = op
                && !self.batcher.holds_user(user)
            {
                let mut remove = redis::cmd("SREM");
                remove.arg(&index).arg(user);
                cmds.push((remove, false));
            }
        }
        let Some(conn) = self.conn.as_mut() else {
            self.batcher.restore(ops);
            self.batcher.restore_rooms(rooms);
            return Err(redis::RedisError::from((redis::ErrorKind::Io, "no connection")));
        };
        let replies = match conn.run(&cmds).await {
            Ok(replies) => replies,
            Err(e) => {
                self.batcher.restore(ops);
                self.batcher.restore_rooms(rooms);
                return Err(e);
            }
        };
        let kicks = kick_cmds(&prefix, &self.node.id, &replies);
        if !kicks.is_empty() {
            conn.run(&kicks).await?;
        }
        self.with_state(|s| {
            s.batches += 1;
            s.reasserts += u64::from(reassert);
        });
        Ok(())
    }

    /// Removes the records of node starts whose lease expired without a deregistration (a
    /// killed node, a lost host), one node start at a time, claimed so that one survivor
    /// sweeps it, for at most a sixth of the lease TTL per call (the registry's own writes
    /// wait meanwhile). A start counts as dead only while its lease key is gone or holds
    /// another epoch: that expiry is Redis's clock, not this node's, and a node cut off from
    /// Redis that comes back renews it and stops the sweep. Users are read, swept, and only
    /// then removed from the start's index, so a sweep that fails half way loses nobody.
    async fn sweep(&mut self) -> redis::RedisResult<()> {
        let started = std::time::Instant::now();
        let budget = self.target.lease_ttl / 6;
        let prefix = self.target.prefix.clone();
        let me = node_member(&self.node.id, self.node.epoch);
        let claim_ms = (self.target.lease_ttl * 3).as_millis().to_string();
        let state = self.state.clone();
        let Some(conn) = self.conn.as_mut() else { return Ok(()) };
        let mut expired = redis::cmd("ZRANGEBYSCORE");
        expired.arg(nodes_key(&prefix)).arg("-inf").arg(format!("({}", super::unix_ms()));
        let members: Vec<String> = conn.one(expired).await?.unwrap_or_default();
        for member in members.into_iter().filter(|m| *m != me) {
            let Some((node, epoch)) = member.rsplit_once('|') else { continue };
            let claim = eval(CLAIM, sweep_key(&prefix, &member), &[me.clone(), claim_ms.clone()]);
            let claimed: i64 = conn.one(claim).await?.unwrap_or(0);
            if claimed != 1 {
                continue;
            }
            let index = users_key(&prefix, &member);
            let records = format!("{member}|");
            loop {
                if started.elapsed() >= budget {
                    return Ok(());
                }
                // Alive after all (its lease is back): leave it.
                let mut lease = redis::cmd("HGET");
                lease.arg(node_key(&prefix, node)).arg("epoch");
                let live: Option<String> = conn.one(lease).await?.flatten();
                if live.as_deref() == Some(epoch) {
                    break;
                }
                let mut some = redis::cmd("SRANDMEMBER");
                some.arg(&index).arg(SWEEP_BATCH);
                let users: Vec<String> = conn.one(some).await?.unwrap_or_default();
                if users.is_empty() {
                    let mut unlist = redis::cmd("ZREM");
                    unlist.arg(nodes_key(&prefix)).arg(&member);
                    let mut done = redis::cmd("DEL");
                    done.arg(sweep_key(&prefix, &member));
                    conn.run(&[(unlist, false), (done, false)]).await?;
                    break;
                }
                let mut cmds: Vec<(redis::Cmd, bool)> = users
                    .iter()
                    .map(|u| (eval(SWEEP, user_key(&prefix, u), std::slice::from_ref(&records)), true))
                    .collect();
                let mut swept = redis::cmd("SREM");
                swept.arg(&index).arg(&users);
                cmds.push((swept, false));
                let removed: u64 =
                    conn.run(&cmds).await?.into_iter().filter_map(|v| redis::from_redis_value::<u64>(v).ok()).sum();
                if let Ok(mut s) = state.lock() {
                    s.swept += removed;
                }
                tracing::debug!(node = %member, users = users.len(), removed, "swept records of a dead node");
            }
        }
        Ok(())
    }

    async fn deregister(&mut self) {
        let Some(conn) = self.conn.as_mut() else { return };
        let key = node_key(&self.target.prefix, &self.node.id);
        let cmd = eval(DEREGISTER, key, &[self.node.epoch.to_string()]);
        let member = node_member(&self.node.id, self.node.epoch);
        let mut cmds = vec![(cmd, false)];
        // With every record removed, nothing is left to sweep. Records still held (closes
        // that could not be written) stay findable: the start's entry in the live-node index
        // expires by its score, and a survivor sweeps them.
        if self.batcher.records() == 0 && self.batcher.pending_len() == 0 {
            let mut unlist = redis::cmd("ZREM");
            unlist.arg(nodes_key(&self.target.prefix)).arg(&member);
            let mut index = redis::cmd("DEL");
            index.arg(users_key(&self.target.prefix, &member));
            cmds.extend([(unlist, false), (index, false)]);
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.run(&cmds)).await;
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
        self.with_state(|s| s.up = up);
    }

    fn with_state(&self, f: impl FnOnce(&mut RegistryState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }
}

/// Redis failures in the log at warn: the first at once, then one line per
/// [`FailureLog::EVERY`] with the count since, and one line when Redis answers again.
#[derive(Debug, Default)]
struct FailureLog {
    failures: u64,
    since: Option<std::time::Instant>,
    logged: Option<std::time::Instant>,
}

impl FailureLog {
    const EVERY: Duration = Duration::from_secs(30);

    fn failed(&mut self, what: &str, error: &str) {
        let now = std::time::Instant::now();
        self.failures += 1;
        self.since.get_or_insert(now);
        if self.logged.is_none_or(|t| now.duration_since(t) >= Self::EVERY) {
            self.logged = Some(now);
            tracing::warn!(error, failures = self.failures, "{what} (logged once per 30 s)");
        }
    }

    fn recovered(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                failures = self.failures,
                down_ms = since.elapsed().as_millis() as u64,
                "registry: redis answers again"
            );
        }
        *self = FailureLog::default();
    }
}

/// Pops kicks addressed to this node (sessions another node's login replaced) and hands each
/// to the worker holding the connection, as a backend Kick would be.
async fn kick_loop(target: RedisTarget, node: NodeInfo, workers: Vec<flume::Sender<WorkerMsg>>) {
    let key = kick_key(&target.prefix, &node.id);
    loop {
        let Ok(Ok(mut conn)) = tokio::time::timeout(Duration::from_secs(3), Conn::connect(&target)).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        loop {
            let mut blpop = redis::cmd("BLPOP");
            blpop.arg(&key).arg(1);
            let reply = match conn.run(&[(blpop, true)]).await {
                Ok(mut replies) => replies.pop(),
                Err(_) => break,
            };
            let popped: Option<(String, String)> = reply.and_then(|v| redis::from_redis_value(v).ok());
            let Some((_, entry)) = popped else { continue };
            let Some((epoch, conn_id)) = entry.split_once('|') else { continue };
            let (Ok(epoch), Ok(conn_id)) = (epoch.parse::<u64>(), conn_id.parse::<u64>()) else { continue };
            if epoch != node.epoch {
                continue; // meant for an earlier start of this node
            }
            let kick = LinkKick {
                target: KickTarget::Conn(conn_id),
                reason: ReasonCode::REPLACED,
                message: "logged in elsewhere".into(),
            };
            if let Some(worker) = owner_of(conn_id).and_then(|w| workers.get(w)) {
                let _ = worker.try_send(WorkerMsg::FromBackend { link: None, frame: Box::new(LinkFrame::Kick(kick)) });
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Where `user` is connected, as a backend would look it up: every device's record whose
/// node still holds a lease with the record's epoch. Stale records are removed on the way
/// (compare-and-delete, so a concurrent newer login is never touched).
pub async fn lookup(
    conn: &mut impl ConnectionLike,
    prefix: &str,
    user: &str,
) -> redis::RedisResult<Vec<(String, Location)>> {
    let key = user_key(prefix, user);
    let records: Vec<(String, String)> = redis::cmd("HGETALL").arg(&key).query_async(conn).await?;
    let mut live = Vec::new();
    for (device, raw) in records {
        let Some(location) = Location::parse(&raw) else { continue };
        let epoch: Option<u64> =
            redis::cmd("HGET").arg(node_key(prefix, &location.node_id)).arg("epoch").query_async(conn).await?;
        if epoch == Some(location.node_epoch) {
            live.push((device, location));
        } else {
            redis::cmd("EVAL").arg(COMPARE_AND_DELETE).arg(1).arg(&key).arg(&device).arg(&raw).exec_async(conn).await?;
        }
    }
    Ok(live)
}
