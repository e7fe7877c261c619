//! Scale-out: three gateway nodes, two reference backends and a real redis-server on
//! loopback. A backend that only knows a user id reaches the user on whichever node holds it
//! (through the registry); a room spans nodes; a login on one node replaces the user's
//! session on another.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ringgate::Gateway;
use ringgate::config::DevicePolicy;
use ringgate::config::RedisTarget;
use ringgate::config::{AuthMode, Discovery, IoDriver};
use ringgate_codec::ReasonCode;
use ringgate_codec::session::{ClientConfig, ClientEvent};
use support::*;

const T: Duration = Duration::from_secs(5);

fn reference_backend(id: &str, redis_url: &str) -> (ChildGuard, SocketAddr) {
    spawn_reference_backend("127.0.0.1:0", id, &["--redis", redis_url])
}

fn node(driver: IoDriver, id: &str, backends: &[SocketAddr], redis_url: &str) -> Gateway {
    let mut config = support::config(driver);
    config.node_id = id.into();
    config.auth = AuthMode::None;
    config.device_policy = DevicePolicy::OnePerUser;
    config.backend = Some(backend_config(Discovery::Static(backends.to_vec())));
    config.redis = Some(RedisTarget {
        url: redis_url.into(),
        cluster: Vec::new(),
        prefix: "rg".into(),
        lease_ttl: Duration::from_secs(3),
        fail_open: true,
        queue: 10_000,
    });
    start_with(config, 2)
}

/// Node B runs as a child process, so the test can kill it with SIGKILL.
fn child_node(driver: IoDriver, dir: &Path, backends: &[SocketAddr], redis_url: &str) -> (ChildGuard, SocketAddr) {
    let driver = if driver == IoDriver::Epoll { "epoll" } else { "io_uring" };
    let list = backends.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
    let path = dir.join("node-b.toml");
    std::fs::write(
        &path,
        format!(
            "[node]\nid = \"node-b\"\n[listen]\ntcp = \"127.0.0.1:0\"\n[io]\ndriver = \"{driver}\"\nworkers = 2\n\
             [session]\ndevice_policy = \"one_per_user\"\n[auth]\nmode = \"none\"\n\
             [backend]\naddresses = [{list}]\nconnect_timeout = \"500ms\"\nreconnect_max = \"200ms\"\n\
             [redis]\nurl = \"{redis_url}\"\nlease_ttl = \"1s\"\n"
        ),
    )
    .unwrap();
    let (child, addr) = spawn_gateway(&path);
    (ChildGuard(child), addr.parse().unwrap())
}

fn login_at(addr: SocketAddr, user: &str, device: &str) -> TestClient {
    let mut c = TestClient::connect_with(addr, ClientConfig::new("", user, device));
    assert!(matches!(c.next_event(T), Some(ClientEvent::Authenticated(_))), "{user} on {addr}");
    c
}

fn login(gw: &Gateway, user: &str, device: &str) -> TestClient {
    login_at(gw.local_addr(), user, device)
}

fn lookup(redis_url: &str, user: &str) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = redis::Client::open(redis_url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let found = ringgate::registry::redis::lookup(&mut conn, "rg", user).await.unwrap();
        found.into_iter().map(|(_, l)| l.node_id).collect()
    })
}

/// Sends with `key` until the backend accepts it (links may still be coming up).
fn send_ok(c: &mut TestClient, key: &str, payload: &[u8]) {
    let ok = eventually(T, || {
        let seq = c.send(Some(key), payload);
        loop {
            match c.next_event(T) {
                Some(ClientEvent::Ack { seq: s, code, .. }) if s == seq => return code.is_ok(),
                Some(_) => {}
                None => return false,
            }
        }
    });
    assert!(ok, "send {key} never acked ok");
}

fn next_push(c: &mut TestClient) -> Option<Vec<u8>> {
    loop {
        match c.next_event(T)? {
            ClientEvent::Push(p) => return Some(p.payload.to_vec()),
            ClientEvent::Closed { .. } => return None,
            _ => {}
        }
    }
}

fn scale_out(driver: IoDriver) {
    let dir = tempdir::Dir::new();
    let redis = RedisServer::start(dir.path());
    let url = redis.url();
    let (_b1, a1) = reference_backend("be-1", &url);
    let (_b2, a2) = reference_backend("be-2", &url);
    let nodes: Vec<Gateway> = ["node-a", "node-c"].iter().map(|id| node(driver, id, &[a1, a2], &url)).collect();
    let (mut node_b, b_addr) = child_node(driver, dir.path(), &[a1, a2], &url);
    assert!(eventually(T, || nodes.iter().all(|n| n.registry().is_some_and(|r| r.up))));

    // A push by user id from a backend: alice is on node A, the Send comes through node C.
    let mut alice = login(&nodes[0], "alice", "phone");
    let mut bob = login(&nodes[1], "bob", "pc");
    assert!(eventually(T, || nodes[0].registry().is_some_and(|r| r.records == 1 && r.pending == 0)));
    send_ok(&mut bob, "user:alice", b"hello alice");
    assert_eq!(next_push(&mut alice).as_deref(), Some(&b"hello alice"[..]));

    // A room with members on nodes A and B, pushed to from node C.
    let mut carol = login_at(b_addr, "carol", "pad");
    send_ok(&mut alice, "join:lobby", b"");
    send_ok(&mut carol, "join:lobby", b"");
    send_ok(&mut bob, "room:lobby", b"to the lobby");
    assert_eq!(next_push(&mut alice).as_deref(), Some(&b"to the lobby"[..]));
    assert_eq!(next_push(&mut carol).as_deref(), Some(&b"to the lobby"[..]));

    // One session per user: alice logging in on node C replaces her session on node A.
    let mut alice_c = login(&nodes[1], "alice", "laptop");
    match alice.next_event(T) {
        Some(ClientEvent::Kicked(k)) => assert_eq!(k.reason, ReasonCode::REPLACED),
        other => panic!("alice on node A was not replaced: {other:?}"),
    }
    // ...and pushes by user id now find her on node C.
    send_ok(&mut bob, "user:alice", b"found you");
    assert_eq!(next_push(&mut alice_c).as_deref(), Some(&b"found you"[..]));

    // kill -9 node B: its users vanish from lookups once its 1 s lease lapses.
    assert!(eventually(T, || lookup(&url, "carol") == ["node-b"]));
    let killed = std::time::Instant::now();
    node_b.0.kill().unwrap();
    node_b.0.wait().unwrap();
    assert!(eventually(T, || lookup(&url, "carol").is_empty()));
    let gone = killed.elapsed();
    assert!(gone <= Duration::from_millis(1600), "carol still found {gone:?} after node B died");
    eprintln!("{driver:?}: node B's users gone from lookups {gone:?} after kill -9 (lease 1 s)");
    drop(carol);
}

both_drivers!(scale_out);
