//! Graceful drain: readiness drops, listeners close, GoAway goes out paced with alternatives,
//! every in-flight Send still gets exactly one Ack, clients move to the other nodes, and a
//! process told SIGTERM exits 0.

mod support;

use std::process::Command;
use std::time::Duration;

use ringgate::config::{AuthMode, IoDriver};
use ringgate_codec::ReasonCode;
use ringgate_codec::session::{ClientConfig, ClientEvent};
use support::*;

const T: Duration = Duration::from_secs(10);
const CLIENTS: usize = 3000;

fn node(driver: IoDriver, id: &str, alternatives: Vec<String>, redis: &RedisServer) -> ringgate::Gateway {
    let mut config = support::config(driver);
    config.node_id = id.into();
    config.auth = AuthMode::None;
    config.redis = Some(ringgate::config::RedisTarget {
        url: redis.url(),
        cluster: Vec::new(),
        prefix: "rg".into(),
        lease_ttl: Duration::from_secs(5),
        fail_open: true,
        queue: 100_000,
    });
    config.drain.delay = Duration::from_millis(100);
    config.drain.rate = 5000;
    config.drain.deadline = Duration::from_secs(20);
    config.drain.alternatives = alternatives;
    config.drain.reconnect_after = Duration::ZERO;
    config.drain.reconnect_jitter = Duration::from_millis(100);
    start_with(config, 2)
}

fn drain_under_traffic(driver: IoDriver) {
    let dir = tempdir::Dir::new();
    let redis = RedisServer::start(dir.path());
    let b = node(driver, "node-b", Vec::new(), &redis);
    let c = node(driver, "node-c", Vec::new(), &redis);
    let alternatives = vec![b.local_addr().to_string(), c.local_addr().to_string()];
    let a = std::sync::Arc::new(node(driver, "node-a", alternatives.clone(), &redis));
    let mut clients: Vec<TestClient> = (0..CLIENTS)
        .map(|i| TestClient::connect_with(a.local_addr(), ClientConfig::new("", format!("u{i}"), "d")))
        .collect();
    for c in &mut clients {
        assert!(matches!(c.next_event(T), Some(ClientEvent::Authenticated(_))));
    }
    // Every client has a Send in flight when the drain starts.
    let seqs: Vec<u64> = clients.iter_mut().map(|c| c.send(None, b"in flight")).collect();
    let mut movers = Vec::new();
    let drainer = {
        let a = a.clone();
        std::thread::spawn(move || a.drain())
    };
    for (i, (c, seq)) in clients.iter_mut().zip(&seqs).enumerate() {
        let (mut acks, mut told) = (0, None);
        loop {
            match c.next_event(T) {
                Some(ClientEvent::Ack { seq: s, code, .. }) if s == *seq => {
                    assert_eq!(code, ReasonCode::OK);
                    acks += 1;
                }
                Some(ClientEvent::GoAway { go_away, .. }) => told = Some(go_away),
                Some(ClientEvent::Closed { reason, by_peer }) => {
                    assert_eq!((reason, by_peer), (ReasonCode::NORMAL, false), "client {i} left by itself");
                    break;
                }
                Some(_) => {}
                None => panic!("client {i}: no GoAway/close (acks {acks})"),
            }
        }
        c.flush();
        assert_eq!(acks, 1, "client {i}: exactly one Ack");
        let go_away = told.expect("GoAway before leaving");
        assert_eq!(go_away.reason, ReasonCode::SERVER_DRAINING);
        assert_eq!(go_away.alternatives, alternatives);
        // Reconnect where told; the other nodes serve it.
        let target = go_away.alternatives[i % 2].parse().unwrap();
        let mut moved = TestClient::connect_with(target, ClientConfig::new("", format!("u{i}"), "d"));
        assert!(matches!(moved.next_event(T), Some(ClientEvent::Authenticated(_))));
        moved.echo(b"after the move");
        movers.push(moved);
    }
    let report = drainer.join().unwrap();
    assert_eq!(report.connections, CLIENTS as u64);
    assert_eq!(report.left_at_deadline, 0);
    assert!(eventually(T, || a.active_connections() == 0));
    // The drained node no longer accepts.
    let refused = std::net::TcpStream::connect(a.local_addr()).map(|mut s| read_frames_to_eof(&mut s, T));
    assert!(refused.is_err() || refused.is_ok_and(|f| f.is_empty()), "drained node still accepting");
    eprintln!("{driver:?}: drained {} connections in {:?}", report.connections, report.elapsed);

    // Node A leaves no registry state behind: no lease, and no user record points at it.
    let a = std::sync::Arc::into_inner(a).expect("drainer done");
    a.shutdown();
    assert_eq!(redis.hget("rg:n:node-a", "epoch"), None, "lease deregistered");
    let mut conn = redis.conn().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("rg:u:*").query(&mut conn).unwrap();
    assert_eq!(keys.len(), CLIENTS, "every user is recorded on its new node");
    for key in keys {
        let records: Vec<String> = redis::cmd("HVALS").arg(&key).query(&mut conn).unwrap();
        assert!(records.iter().all(|r| !r.starts_with("node-a|")), "{key} still points at node A: {records:?}");
    }
    drop(movers);
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let dir = tempdir::Dir::new();
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        "[listen]\ntcp = \"127.0.0.1:0\"\n[auth]\nmode = \"none\"\n[drain]\ndelay = \"100ms\"\ndeadline = \"10s\"\nreconnect_jitter = \"0s\"\n",
    )
    .unwrap();
    let (mut child, addr) = spawn_gateway(&path);
    let (mut client, _) = TestClient::login(addr.parse().unwrap(), "gina", "d");
    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let mut told = false;
    while let Some(event) = client.next_event(T) {
        match event {
            ClientEvent::GoAway { .. } => told = true,
            ClientEvent::Closed { .. } => break,
            _ => {}
        }
    }
    client.flush();
    drop(client);
    assert!(told, "GoAway before the node left");
    let deadline = std::time::Instant::now() + T;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "node did not exit after draining");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "drained node exit status {status}");
}

both_drivers!(drain_under_traffic);
