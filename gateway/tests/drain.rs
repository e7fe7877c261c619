//! Graceful drain: readiness drops, listeners close, GoAway goes out paced with alternatives,
//! every in-flight Send still gets exactly one Ack, clients move to the other nodes, and a
//! process told SIGTERM exits 0.

mod support;

use std::io::Read;
use std::process::Command;
use std::time::Duration;

use bytes::BytesMut;
use ringgate_codec::Decoded;
use ringgate_codec::client::{ClientDecoder, ClientFrame};

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
    config.redis = Some(redis.target(Duration::from_secs(5)));
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

both_drivers!(drain_under_traffic, drain_rate_deadline_and_connection_limit_are_per_node);

/// `drain.rate` paces the whole node (not each worker), the deadline closes whoever ignored
/// the GoAway with `server_draining`, and `limits.max_connections` bounds the node (not each
/// worker): two workers, five allowed, seven tried, five in, in every trial.
fn drain_rate_deadline_and_connection_limit_are_per_node(driver: IoDriver) {
    let mut config = support::config(driver);
    config.auth = AuthMode::None;
    config.drain.delay = Duration::ZERO;
    config.drain.rate = 100;
    config.drain.deadline = Duration::from_secs(3);
    let gw = std::sync::Arc::new(start_with(config, 2));
    let mut clients: Vec<TestClient> = (0..200)
        .map(|i| TestClient::connect_with(gw.local_addr(), ClientConfig::new("", format!("u{i}"), "d")))
        .collect();
    for c in &mut clients {
        assert!(matches!(c.next_event(T), Some(ClientEvent::Authenticated(_))));
    }
    let started = std::time::Instant::now();
    let drainer = {
        let gw = gw.clone();
        std::thread::spawn(move || gw.drain())
    };
    // The clients ignore their GoAway (raw reads from here: a client session would leave).
    // The last of 200 is due at 100/s after ~2 s; a read notes a GoAway no earlier than it came.
    let mut last_go_away = Duration::ZERO;
    let mut rest = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        c.stream.set_read_timeout(Some(T)).unwrap();
        let mut input = BytesMut::new();
        let mut buf = [0u8; 4096];
        'frames: loop {
            while let Ok(Decoded::Frame(frame)) = ClientDecoder::new(usize::MAX).decode(&mut input) {
                if matches!(frame, ClientFrame::GoAway(_)) {
                    last_go_away = last_go_away.max(started.elapsed());
                    break 'frames;
                }
            }
            let n = c.stream.read(&mut buf).unwrap_or(0);
            assert!(n > 0, "client {i}: no GoAway");
            input.extend_from_slice(&buf[..n]);
        }
        rest.push(input);
    }
    assert!(last_go_away >= Duration::from_millis(1700), "200 GoAways at 100/s took only {last_go_away:?}");
    for (i, (c, mut input)) in clients.iter_mut().zip(rest).enumerate() {
        input.extend_from_slice(&read_frames_to_eof_raw(&mut c.stream));
        let mut frames = Vec::new();
        while let Ok(Decoded::Frame(frame)) = ClientDecoder::new(usize::MAX).decode(&mut input) {
            frames.push(frame);
        }
        assert_eq!(close_reason(&frames), Some(ReasonCode::SERVER_DRAINING), "client {i} at the deadline");
    }
    let report = drainer.join().unwrap();
    assert_eq!(report.left_at_deadline, 200);
    assert_eq!(gw.active_connections(), 0);

    let mut config = support::config(driver);
    config.auth = AuthMode::None;
    config.max_connections = 5;
    let gw = start_with(config, 2);
    for trial in 0..5 {
        let mut clients: Vec<TestClient> = (0..7)
            .map(|i| TestClient::connect_with(gw.local_addr(), ClientConfig::new("", format!("t{trial}u{i}"), "d")))
            .collect();
        let admitted = clients
            .iter_mut()
            .map(|c| matches!(c.next_event(T), Some(ClientEvent::Authenticated(_))))
            .filter(|&ok| ok)
            .count();
        assert_eq!(admitted, 5, "trial {trial}: 5 of 7 admitted");
        drop(clients);
        assert!(eventually(T, || gw.active_connections() == 0), "trial {trial}");
    }
}

fn read_frames_to_eof_raw(stream: &mut std::net::TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let _ = std::io::Read::read_to_end(stream, &mut all);
    all
}
