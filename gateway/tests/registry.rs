//! The Redis location registry against a real redis-server (started here, persistence off,
//! on a unix socket): records and the node lease, compare-and-delete on close, fail-open
//! through a Redis outage with a full re-assert after, and a killed node going stale.

mod support;

use std::time::Duration;

use ringgate::config::RedisTarget;
use ringgate::config::{AuthMode, IoDriver};
use ringgate::registry::Location;
use ringgate_codec::session::{ClientConfig, ClientEvent};
use support::*;

const T: Duration = Duration::from_secs(5);

/// A single server or a cluster, seen the same way by the tests.
enum Store {
    Single(RedisServer),
    Cluster(RedisCluster),
}

impl Store {
    fn hget(&self, key: &str, field: &str) -> Option<String> {
        match self {
            Store::Single(s) => s.hget(key, field),
            Store::Cluster(c) => {
                let mut conn = redis::cluster::ClusterClient::new(c.urls()).ok()?.get_connection().ok()?;
                redis::cmd("HGET").arg(key).arg(field).query(&mut conn).ok().flatten()
            }
        }
    }

    fn hset(&self, key: &str, field: &str, value: &str) {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(key).arg(field).arg(value);
        match self {
            Store::Single(s) => cmd.exec(&mut s.conn().unwrap()).unwrap(),
            Store::Cluster(c) => {
                cmd.exec(&mut redis::cluster::ClusterClient::new(c.urls()).unwrap().get_connection().unwrap()).unwrap()
            }
        }
    }

    fn pttl(&self, key: &str) -> i64 {
        let mut cmd = redis::cmd("PTTL");
        cmd.arg(key);
        match self {
            Store::Single(s) => cmd.query(&mut s.conn().unwrap()).unwrap(),
            Store::Cluster(c) => {
                cmd.query(&mut redis::cluster::ClusterClient::new(c.urls()).unwrap().get_connection().unwrap()).unwrap()
            }
        }
    }

    fn target(&self, lease: Duration) -> RedisTarget {
        let target = match self {
            Store::Single(s) => s.target(lease),
            Store::Cluster(c) => c.target(lease),
        };
        RedisTarget { queue: 10_000, ..target }
    }
}

fn target(redis: &RedisServer, lease: Duration) -> RedisTarget {
    RedisTarget { queue: 10_000, ..redis.target(lease) }
}

fn login(addr: std::net::SocketAddr, user: &str, device: &str) -> (TestClient, u64) {
    let mut c = TestClient::connect_with(addr, ClientConfig::new("", user, device));
    match c.next_event(T) {
        Some(ClientEvent::Authenticated(ok)) => (c, ok.connection_id),
        other => panic!("{user}: {other:?}"),
    }
}

fn records_and_compare_and_delete(driver: IoDriver) {
    let dir = tempdir::Dir::new();
    records_flow(driver, &Store::Single(RedisServer::start(dir.path())));
}

fn records_flow(driver: IoDriver, redis: &Store) {
    let mut config = support::config(driver);
    config.auth = AuthMode::None;
    config.redis = Some(redis.target(Duration::from_secs(2)));
    let gw = start_with(config, 2);
    assert!(eventually(T, || gw.registry().is_some_and(|r| r.up)), "registry connects");

    // The node lease: this start's epoch, expiring unless refreshed.
    let epoch = redis.hget("rg:n:test-node", "epoch");
    assert_eq!(epoch, Some(gw.node_epoch().to_string()));
    let ttl = redis.pttl("rg:n:test-node");
    assert!(ttl > 0 && ttl <= 2000, "lease ttl {ttl} ms");

    // A login is recorded under user -> device.
    let (alice, conn_id) = login(gw.local_addr(), "alice", "phone");
    assert!(eventually(T, || redis.hget("rg:u:alice", "phone").is_some()));
    let record = Location::parse(&redis.hget("rg:u:alice", "phone").unwrap()).unwrap();
    assert_eq!((record.node_id.as_str(), record.node_epoch, record.conn_id), ("test-node", gw.node_epoch(), conn_id));

    // A newer login elsewhere replaced the record; the old connection's close must not erase it.
    let newer =
        Location { node_id: "other-node".into(), node_epoch: 1, conn_id: 99, since_ms: 1, platform: "ios".into() }
            .encode();
    redis.hset("rg:u:alice", "phone", &newer);
    drop(alice);
    assert!(eventually(T, || gw.registry().is_some_and(|r| r.records == 0 && r.pending == 0)));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(redis.hget("rg:u:alice", "phone"), Some(newer));

    // A plain close removes its own record.
    let (bob, _) = login(gw.local_addr(), "bob", "d");
    assert!(eventually(T, || redis.hget("rg:u:bob", "d").is_some()));
    drop(bob);
    assert!(eventually(T, || redis.hget("rg:u:bob", "d").is_none()));

    // Shutdown deregisters the lease.
    gw.shutdown();
    assert_eq!(redis.hget("rg:n:test-node", "epoch"), None);
}

fn outage_then_reassert(driver: IoDriver) {
    let dir = tempdir::Dir::new();
    let mut redis = RedisServer::start(dir.path());
    let mut config = support::config(driver);
    config.auth = AuthMode::None;
    config.redis = Some(target(&redis, Duration::from_secs(1)));
    let gw = start_with(config.clone(), 2);
    let mut strict = config;
    strict.node_id = "strict-node".into();
    if let Some(r) = strict.redis.as_mut() {
        r.fail_open = false;
    }
    let strict = start_with(strict, 2);
    let (mut early, _) = login(gw.local_addr(), "early", "d");
    assert!(eventually(T, || redis.hget("rg:u:early", "d").is_some()));

    redis.stop();
    assert!(eventually(T, || gw.registry().is_some_and(|r| !r.up)), "outage noticed");
    // Fail-closed: a node configured so refuses new logins while Redis is down.
    assert!(eventually(T, || strict.registry().is_some_and(|r| !r.up)));
    let mut refused = TestClient::connect_with(strict.local_addr(), ClientConfig::new("", "late", "d"));
    match refused.next_event(T) {
        Some(ClientEvent::AuthFailed(f)) => assert_eq!(f.reason, ringgate_codec::ReasonCode::AUTH_UNAVAILABLE),
        other => panic!("fail-closed node admitted a login: {other:?}"),
    }
    // Fail-open, for 10 s under traffic: clients keep working and new ones are admitted.
    let (mut during, _) = login(gw.local_addr(), "during", "d");
    let outage = std::time::Instant::now();
    while outage.elapsed() < Duration::from_secs(10) {
        during.echo(b"still served");
        early.echo(b"still served");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Redis comes back empty (no persistence): the node re-asserts its lease and records.
    let redis = RedisServer::start(dir.path());
    let back = std::time::Instant::now();
    assert!(eventually(Duration::from_secs(10), || redis.hget("rg:u:during", "d").is_some()), "re-asserted");
    eprintln!("{driver:?}: registry complete again {:?} after redis returned", back.elapsed());
    assert!(redis.hget("rg:u:early", "d").is_some());
    assert_eq!(redis.hget("rg:n:test-node", "epoch"), Some(gw.node_epoch().to_string()));
    assert!(gw.registry().unwrap().reasserts >= 2);
}

#[test]
fn killed_node_goes_stale_within_the_lease() {
    let dir = tempdir::Dir::new();
    let redis = RedisServer::start(dir.path());
    let (mut child, addr) = spawn_redis_node(dir.path(), "doomed", &redis.url());
    let (_dave, _) = login(addr.parse().unwrap(), "dave", "d");
    assert!(eventually(T, || redis.hget("rg:u:dave", "d").is_some()));
    let killed = std::time::Instant::now();
    child.kill().unwrap(); // SIGKILL: no deregistration
    child.wait().unwrap();
    assert!(eventually(T, || redis.hget("rg:n:doomed", "epoch").is_none()), "lease expires");
    let gone_after = killed.elapsed();
    assert!(gone_after <= Duration::from_millis(1500), "lease gone {gone_after:?} after kill -9");
    // A reader ignores (and removes) the record whose node lease is gone.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let live = rt.block_on(async {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        ringgate::registry::redis::lookup(&mut conn, "rg", "dave").await.unwrap()
    });
    assert!(live.is_empty(), "stale record returned: {live:?}");
    assert_eq!(redis.hget("rg:u:dave", "d"), None, "stale record cleaned up");
    eprintln!("killed node's users gone from lookups {gone_after:?} after kill -9 (lease 1 s)");
}

/// One user, two nodes sharing Redis, one session per user: a login on node B kicks the
/// session on node A, and Redis then holds only B's record.
fn login_elsewhere_kicks_across_nodes(driver: IoDriver) {
    let dir = tempdir::Dir::new();
    kick_flow(driver, &Store::Single(RedisServer::start(dir.path())));
}

fn kick_flow(driver: IoDriver, redis: &Store) {
    let node = |id: &str| {
        let mut config = support::config(driver);
        config.node_id = id.into();
        config.auth = AuthMode::None;
        config.device_policy = ringgate::config::DevicePolicy::OnePerUser;
        config.redis = Some(redis.target(Duration::from_secs(2)));
        start_with(config, 2)
    };
    let (a, b) = (node("node-a"), node("node-b"));
    assert!(eventually(T, || a.registry().is_some_and(|r| r.up) && b.registry().is_some_and(|r| r.up)));
    let (mut on_a, _) = login(a.local_addr(), "erin", "phone");
    assert!(eventually(T, || redis.hget("rg:u:erin", "phone").is_some()));
    let (mut on_b, b_conn) = login(b.local_addr(), "erin", "laptop");
    match on_a.next_event(T) {
        Some(ClientEvent::Kicked(k)) => assert_eq!(k.reason, ringgate_codec::ReasonCode::REPLACED),
        other => panic!("node A's session was not kicked: {other:?}"),
    }
    assert!(eventually(T, || redis.hget("rg:u:erin", "phone").is_none()));
    let record = Location::parse(&redis.hget("rg:u:erin", "laptop").unwrap()).unwrap();
    assert_eq!((record.node_id.as_str(), record.conn_id), ("node-b", b_conn));
    on_b.echo(b"the new session works");
}

/// The same registry flows against a real 3-master Redis Cluster.
#[test]
fn redis_cluster() {
    let dir = tempdir::Dir::new();
    let cluster = Store::Cluster(RedisCluster::start(dir.path()));
    records_flow(IoDriver::Auto, &cluster);
    kick_flow(IoDriver::Auto, &cluster);
}

both_drivers!(records_and_compare_and_delete, outage_then_reassert, login_elsewhere_kicks_across_nodes);
