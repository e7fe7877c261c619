//! The registry's Redis side: one control-plane task (tokio, on its own thread) that owns the
//! Redis connection, keeps the node lease alive and writes the workers' updates in pipelines.
//!
//! Keys (documented for backends in docs/registry.md):
//! - `{prefix}:n:{node}`: HASH `epoch`, `addr`, `started_ms`, `conns`; expires after the lease
//!   TTL unless refreshed (every TTL/3). A node that dies stops being found within the TTL.
//! - `{prefix}:u:{user}`: HASH device -> [`Location::encode`]. Written with HSET on login;
//!   removed on close only while it still holds that connection's record (a Lua
//!   compare-and-delete), so a late close never erases a newer login.
//!
//! Redis being unavailable never blocks a worker: updates wait in the [`Batcher`] (bounded,
//! overflow counted), and when Redis answers again the task re-asserts the lease and every
//! record this node owns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionLike;
use ringgate_codec::backoff::Backoff;

use super::{Batcher, Location, RegistryOp};

/// Removes `field` from hash `KEYS[1]` only if it still holds `ARGV[2]`.
pub const COMPARE_AND_DELETE: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0";

/// Deletes the lease `KEYS[1]` only if it is still this epoch's (`ARGV[1]`).
const DEREGISTER: &str = r"
if redis.call('HGET', KEYS[1], 'epoch') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// Where Redis is and how the registry uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// `redis://host:port/db` or `redis+unix:///path`; ignored when `cluster` is set.
    pub url: String,
    /// Seed nodes of a Redis Cluster.
    pub cluster: Vec<String>,
    pub prefix: String,
    pub lease_ttl: Duration,
    /// Admit new clients while Redis is down (true), or refuse them with auth_unavailable.
    pub fail_open: bool,
    /// Most pending (merged) writes held while Redis is slow or down.
    pub queue: usize,
}

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

/// What the registry task has seen, for tests, readiness and (later) metrics.
#[derive(Debug, Clone, Default)]
pub struct RegistryState {
    pub up: bool,
    pub records: usize,
    pub pending: usize,
    pub overflow: u64,
    pub batches: u64,
    pub failures: u64,
    pub reasserts: u64,
}

pub fn user_key(prefix: &str, user: &str) -> String {
    format!("{prefix}:u:{user}")
}

pub fn node_key(prefix: &str, node: &str) -> String {
    format!("{prefix}:n:{node}")
}

enum Conn {
    Single(redis::aio::ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Conn {
    async fn connect(target: &RedisTarget) -> redis::RedisResult<Conn> {
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

    async fn run(&mut self, pipe: &redis::Pipeline) -> redis::RedisResult<()> {
        match self {
            Conn::Single(c) => pipe.query_async::<()>(c).await,
            Conn::Cluster(c) => run_each(c, pipe).await,
        }
    }
}

/// A cluster pipeline may span slots; sending its commands one by one keeps each on its slot.
async fn run_each(c: &mut impl ConnectionLike, pipe: &redis::Pipeline) -> redis::RedisResult<()> {
    for cmd in pipe.cmd_iter() {
        c.req_packed_command(cmd).await?;
    }
    Ok(())
}

fn add_op(pipe: &mut redis::Pipeline, prefix: &str, op: &RegistryOp) {
    match op {
        RegistryOp::Put { user, device, location } => {
            pipe.hset(user_key(prefix, user), device, location.encode()).ignore();
        }
        RegistryOp::Del { user, device, location } => {
            pipe.cmd("EVAL")
                .arg(COMPARE_AND_DELETE)
                .arg(1)
                .arg(user_key(prefix, user))
                .arg(device)
                .arg(location.encode())
                .ignore();
        }
    }
}

fn add_lease(pipe: &mut redis::Pipeline, prefix: &str, node: &NodeInfo, records: usize, ttl: Duration) {
    let key = node_key(prefix, &node.id);
    pipe.hset_multiple(
        &key,
        &[
            ("epoch", node.epoch.to_string()),
            ("addr", node.addr.clone()),
            ("started_ms", (node.epoch).to_string()),
            ("conns", records.to_string()),
        ],
    )
    .ignore();
    pipe.pexpire(&key, ttl.as_millis() as i64).ignore();
}

/// Runs the registry until `stop`'s sender is dropped, then deregisters the lease.
pub fn run(
    target: RedisTarget,
    node: NodeInfo,
    ops: flume::Receiver<RegistryOp>,
    up: Arc<AtomicBool>,
    state: Arc<Mutex<RegistryState>>,
    stop: flume::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return tracing::error!(error = %e, "registry cannot start"),
    };
    runtime.block_on(Task { target, node, up, state, batcher: Batcher::default(), conn: None }.run(ops, stop));
}

struct Task {
    target: RedisTarget,
    node: NodeInfo,
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
                    _ => retry_at = tokio::time::Instant::now() + backoff.next_delay(),
                }
            }
            if self.conn.is_some() && (reassert || lease_due || self.batcher.pending_len() > 0) {
                match self.flush(reassert).await {
                    Ok(()) => {
                        reassert = false;
                        lease_due = false;
                        self.set_up(true);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "registry write failed; queueing until redis answers");
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

    /// Writes pending ops (and, on `reassert`, the lease and every owned record) in one pipeline.
    async fn flush(&mut self, reassert: bool) -> redis::RedisResult<()> {
        let prefix = self.target.prefix.clone();
        let mut ops = self.batcher.take();
        if reassert {
            // Every owned record, plus the pending removals (their records may predate the outage).
            ops.retain(|op| matches!(op, RegistryOp::Del { .. }));
            ops.extend(self.batcher.mirror_ops());
        }
        let mut pipe = redis::pipe();
        add_lease(&mut pipe, &prefix, &self.node, self.batcher.records(), self.target.lease_ttl);
        for op in &ops {
            add_op(&mut pipe, &prefix, op);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(redis::RedisError::from((redis::ErrorKind::Io, "no connection")));
        };
        match conn.run(&pipe).await {
            Ok(()) => {
                self.with_state(|s| {
                    s.batches += 1;
                    s.reasserts += u64::from(reassert);
                });
                Ok(())
            }
            Err(e) => {
                if !reassert {
                    self.batcher.restore(ops);
                }
                Err(e)
            }
        }
    }

    async fn deregister(&mut self) {
        let Some(conn) = self.conn.as_mut() else { return };
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(DEREGISTER)
            .arg(1)
            .arg(node_key(&self.target.prefix, &self.node.id))
            .arg(self.node.epoch)
            .ignore();
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.run(&pipe)).await;
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
