//! Downstream delivery over real TCP links, driven by a backend scripted in this test with
//! the codec alone (what a backend author writes): push to a connection, to a user's devices,
//! to a room, broadcast, kick; PushResults with node-wide counts; pushes to a closed
//! connection or an unknown user reported as not delivered.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ringgate::config::{AuthMode, BackendConfig, IoDriver};
use ringgate_codec::link::*;
use ringgate_codec::session::{ClientConfig, ClientEvent};
use ringgate_codec::{Decoded, ReasonCode};
use support::*;

const T: Duration = Duration::from_secs(5);

struct ScriptedBackend {
    writers: Arc<Mutex<Vec<TcpStream>>>,
    frames: mpsc::Receiver<LinkFrame>,
    seen: Vec<LinkFrame>,
}

impl ScriptedBackend {
    fn start() -> (SocketAddr, ScriptedBackend) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let writers = Arc::new(Mutex::new(Vec::new()));
        let (tx, frames) = mpsc::channel();
        let w = writers.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let tx = tx.clone();
                let w = w.clone();
                std::thread::spawn(move || {
                    let decoder = LinkDecoder::default();
                    let mut input = BytesMut::new();
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        while let Ok(Decoded::Frame(frame)) = decoder.decode(&mut input) {
                            if let LinkFrame::Hello(_) = frame {
                                let ack =
                                    HelloAck { backend_id: "script".into(), link_version: LINK_VERSION, window: 64 };
                                stream.write_all(&LinkFrame::HelloAck(ack).to_bytes().unwrap()).unwrap();
                                w.lock().unwrap().push(stream.try_clone().unwrap());
                            } else if tx.send(frame).is_err() {
                                return;
                            }
                        }
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => input.extend_from_slice(&buf[..n]),
                        }
                    }
                });
            }
        });
        (addr, ScriptedBackend { writers, frames, seen: Vec::new() })
    }

    fn links(&self) -> usize {
        self.writers.lock().unwrap().len()
    }

    /// Sends `frame` on the first link (any link to the node will do).
    fn send(&self, frame: LinkFrame) {
        self.writers.lock().unwrap()[0].write_all(&frame.to_bytes().unwrap()).unwrap();
    }

    /// The first frame received (now or within `T`) that `pick` accepts.
    fn expect<R>(&mut self, what: &str, pick: impl Fn(&LinkFrame) -> Option<R>) -> R {
        let deadline = Instant::now() + T;
        loop {
            if let Some(i) = self.seen.iter().position(|f| pick(f).is_some()) {
                return pick(&self.seen.remove(i)).unwrap();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.frames.recv_timeout(left) {
                Ok(frame) => self.seen.push(frame),
                Err(_) => panic!("backend never got {what}; got {:?}", self.seen),
            }
        }
    }

    fn result(&mut self, push_id: u64) -> PushResult {
        self.expect(&format!("PushResult {push_id}"), |f| match f {
            LinkFrame::PushResult(r) if r.push_id == push_id => Some(*r),
            _ => None,
        })
    }

    fn opened(&mut self, user: &str, device: &str) -> u64 {
        self.expect(&format!("ConnOpened {user}/{device}"), |f| match f {
            LinkFrame::ConnOpened(o) if o.user_id == user && o.device_id == device => Some(o.conn_id),
            _ => None,
        })
    }
}

fn next_push(c: &mut TestClient) -> Option<Bytes> {
    loop {
        match c.next_event(T)? {
            ClientEvent::Push(p) => return Some(p.payload),
            ClientEvent::Closed { .. } => return None,
            _ => {}
        }
    }
}

fn gateway_for(driver: IoDriver, backend: SocketAddr, request_timeout: Duration, ping: Duration) -> ringgate::Gateway {
    let mut config = support::config(driver);
    config.auth = AuthMode::None;
    config.backend = Some(BackendConfig { request_timeout, ping_interval: ping, ..support::static_backend(backend) });
    start_with(config, 2)
}

fn pushes(driver: IoDriver) {
    let (addr, mut backend) = ScriptedBackend::start();
    let gw = gateway_for(driver, addr, Duration::from_secs(10), Duration::from_secs(5));
    assert!(eventually(T, || backend.links() == 2), "one link per worker");
    let login = |user: &str, device: &str| {
        let mut c = TestClient::connect_with(gw.local_addr(), ClientConfig::new("", user, device));
        assert!(matches!(c.next_event(T), Some(ClientEvent::Authenticated(_))));
        c
    };
    let mut phone = login("alice", "phone");
    let mut pc = login("alice", "pc");
    let mut bob = login("bob", "d");
    let mut carol = login("carol", "d");
    let ids: HashMap<&str, u64> = [
        ("phone", backend.opened("alice", "phone")),
        ("pc", backend.opened("alice", "pc")),
        ("bob", backend.opened("bob", "d")),
        ("carol", backend.opened("carol", "d")),
    ]
    .into_iter()
    .collect();
    // Fill both workers so node-wide counts must be summed across them.
    let mut fillers = Vec::new();
    let worker_of = |id: u64| id >> 48;
    let mut workers: std::collections::HashSet<u64> = ids.values().map(|&id| worker_of(id)).collect();
    while workers.len() < 2 {
        let n = fillers.len();
        fillers.push(login("filler", &format!("f{n}")));
        workers.insert(worker_of(backend.opened("filler", &format!("f{n}"))));
    }
    let everyone = 4 + fillers.len() as u32;

    backend.send(LinkFrame::PushToConn(PushToConn { push_id: 1, conn_id: ids["phone"], payload: "p1".into() }));
    assert_eq!(next_push(&mut phone).as_deref(), Some(&b"p1"[..]));
    assert_eq!(backend.result(1), PushResult { push_id: 1, delivered: 1, code: ReasonCode::OK });

    let to_user = |push_id, devices: Vec<String>, payload: &'static str| {
        LinkFrame::PushToUser(PushToUser {
            push_id,
            user_id: "alice".into(),
            device_ids: devices,
            payload: payload.into(),
            all_nodes: false,
        })
    };
    backend.send(to_user(2, vec![], "p2"));
    assert_eq!(next_push(&mut phone).as_deref(), Some(&b"p2"[..]));
    assert_eq!(next_push(&mut pc).as_deref(), Some(&b"p2"[..]));
    assert_eq!(backend.result(2).delivered, 2);
    backend.send(to_user(3, vec!["pc".into()], "p3"));
    assert_eq!(next_push(&mut pc).as_deref(), Some(&b"p3"[..]));
    assert_eq!(backend.result(3).delivered, 1);

    for who in ["bob", "carol"] {
        backend.send(LinkFrame::JoinRoom(RoomMembership { conn_id: ids[who], room: "r".into() }));
    }
    backend.send(LinkFrame::PushToRoom(PushToRoom {
        push_id: 4,
        room: "r".into(),
        exclude_conn_id: None,
        payload: "p4".into(),
        all_nodes: false,
    }));
    assert_eq!(next_push(&mut bob).as_deref(), Some(&b"p4"[..]));
    assert_eq!(next_push(&mut carol).as_deref(), Some(&b"p4"[..]));
    assert_eq!(backend.result(4).delivered, 2);

    backend.send(LinkFrame::Broadcast(Broadcast { push_id: 5, payload: "p5".into(), all_nodes: false }));
    for c in [&mut phone, &mut bob, &mut carol] {
        assert_eq!(next_push(c).as_deref(), Some(&b"p5"[..]));
    }
    // The phone got no p3: its next push is p5.
    assert_eq!(next_push(&mut pc).as_deref(), Some(&b"p5"[..]));
    assert_eq!(backend.result(5).delivered, everyone, "broadcast counted across both workers");

    backend.send(LinkFrame::Kick(LinkKick {
        target: KickTarget::User { user_id: "carol".into(), device_id: None },
        reason: ReasonCode(0),
        message: "bye".into(),
    }));
    match carol.next_event(T) {
        Some(ClientEvent::Kicked(k)) => assert_eq!(k.reason, ReasonCode::KICKED),
        other => panic!("carol: {other:?}"),
    }
    backend.expect("ConnClosed carol", |f| {
        matches!(f, LinkFrame::ConnClosed(c) if c.conn_id == ids["carol"]).then_some(())
    });

    drop(bob);
    backend
        .expect("ConnClosed bob", |f| matches!(f, LinkFrame::ConnClosed(c) if c.conn_id == ids["bob"]).then_some(()));
    backend.send(LinkFrame::PushToConn(PushToConn { push_id: 6, conn_id: ids["bob"], payload: "late".into() }));
    assert_eq!(backend.result(6), PushResult { push_id: 6, delivered: 0, code: ReasonCode::NOT_DELIVERED });
    backend.send(LinkFrame::PushToUser(PushToUser {
        push_id: 7,
        user_id: "nobody".into(),
        device_ids: vec![],
        payload: "x".into(),
        all_nodes: false,
    }));
    assert_eq!(backend.result(7), PushResult { push_id: 7, delivered: 0, code: ReasonCode::NOT_DELIVERED });
}

/// A backend that takes Upstreams and Pings and never answers: the client still gets exactly
/// one Ack (backend_timeout), a late answer is ignored, and the silent link is re-dialled.
fn silent_backend(driver: IoDriver) {
    let (addr, mut backend) = ScriptedBackend::start();
    // Link silence (3 x 200 ms) outlasts the request timeout, so the Send times out first.
    let gw = gateway_for(driver, addr, Duration::from_millis(300), Duration::from_millis(200));
    assert!(eventually(T, || backend.links() == 2));
    let mut c = TestClient::connect_with(gw.local_addr(), ClientConfig::new("", "dave", "d"));
    assert!(matches!(c.next_event(T), Some(ClientEvent::Authenticated(_))));
    let sent = Instant::now();
    let seq = c.send(None, b"anyone?");
    let request_id = backend.expect("Upstream", |f| match f {
        LinkFrame::Upstream(u) => Some(u.request_id),
        _ => None,
    });
    match c.next_event(T) {
        Some(ClientEvent::Ack { seq: s, code, .. }) => {
            assert_eq!((s, code), (seq, ReasonCode::BACKEND_TIMEOUT));
            assert!(sent.elapsed() >= Duration::from_millis(300), "not before the timeout");
        }
        other => panic!("expected a timeout Ack, got {other:?}"),
    }
    backend.expect("Ping", |f| matches!(f, LinkFrame::Ping).then_some(()));
    // A late answer finds nothing pending: no second Ack.
    backend.send(LinkFrame::UpstreamAck(UpstreamAck { request_id, code: ReasonCode::OK, reply: None }));
    assert!(c.next_event(Duration::from_millis(300)).is_none(), "a second Ack for one Send");
    // Three ping intervals without a Pong: the links are dropped and dialled again.
    assert!(eventually(T, || backend.links() >= 4), "silent links re-dialled");
}

/// Two nodes sharing a real redis-server, each linked to its own scripted backend: a push on
/// node A's link reaches the user's sessions on node C too when it asks for all_nodes, and
/// the PushResult counts both nodes.
fn link_pushes_reach_every_node(driver: IoDriver) {
    let dir = tempdir::Dir::new();
    let redis = RedisServer::start(dir.path());
    let node = |id: &str, backend: SocketAddr| {
        let mut config = support::config(driver);
        config.node_id = id.into();
        config.auth = AuthMode::None;
        config.backend = Some(support::static_backend(backend));
        config.redis = Some(redis.target(Duration::from_secs(5)));
        let gw = start_with(config, 2);
        assert!(eventually(T, || gw.registry().is_some_and(|r| r.up && r.pending == 0)));
        gw
    };
    let (addr_a, mut backend_a) = ScriptedBackend::start();
    let (addr_c, mut backend_c) = ScriptedBackend::start();
    let (a, c) = (node("a", addr_a), node("c", addr_c));
    assert!(eventually(T, || backend_a.links() == 2 && backend_c.links() == 2));
    let login = |gw: &ringgate::Gateway, device: &str| {
        let mut client = TestClient::connect_with(gw.local_addr(), ClientConfig::new("", "alice", device));
        assert!(matches!(client.next_event(T), Some(ClientEvent::Authenticated(_))));
        client
    };
    let mut on_a = login(&a, "phone");
    let mut on_c = login(&c, "pc");
    let pc = backend_c.opened("alice", "pc");
    backend_a.opened("alice", "phone");
    assert!(
        eventually(T, || a.registry().is_some_and(|r| r.pending == 0) && c.registry().is_some_and(|r| r.pending == 0))
    );
    let user = |push_id, all_nodes, payload: &'static str| {
        LinkFrame::PushToUser(PushToUser {
            push_id,
            user_id: "alice".into(),
            device_ids: vec![],
            payload: payload.into(),
            all_nodes,
        })
    };
    // Registry writes are asynchronous: wait until node A's forward finds the session on C.
    let mut id = 100;
    let reached_both = eventually(T, || {
        id += 1;
        backend_a.send(user(id, true, "both"));
        backend_a.result(id).delivered == 2
    });
    assert!(reached_both, "a PushToUser on A's link reaches the session on C, counted");
    assert_eq!(next_push(&mut on_a).as_deref(), Some(&b"both"[..]));
    assert_eq!(next_push(&mut on_c).as_deref(), Some(&b"both"[..]));
    while on_a.next_event(Duration::from_millis(100)).is_some() {}
    while on_c.next_event(Duration::from_millis(100)).is_some() {}
    // The direct path: this node's connections only.
    backend_a.send(user(200, false, "here"));
    assert_eq!(backend_a.result(200), PushResult { push_id: 200, delivered: 1, code: ReasonCode::OK });
    assert_eq!(next_push(&mut on_a).as_deref(), Some(&b"here"[..]));
    assert!(on_c.next_event(Duration::from_millis(300)).is_none(), "C's session got nothing");
    // A room joined on C is reached from A's link; a broadcast from A reaches both nodes.
    backend_c.send(LinkFrame::JoinRoom(RoomMembership { conn_id: pc, room: "r".into() }));
    let room = |push_id| {
        LinkFrame::PushToRoom(PushToRoom {
            push_id,
            room: "r".into(),
            exclude_conn_id: None,
            payload: "room".into(),
            all_nodes: true,
        })
    };
    let mut id = 300;
    assert!(eventually(T, || {
        id += 1;
        backend_a.send(room(id));
        backend_a.result(id).delivered == 1
    }));
    assert_eq!(next_push(&mut on_c).as_deref(), Some(&b"room"[..]));
    backend_a.send(LinkFrame::Broadcast(Broadcast { push_id: 400, payload: "all".into(), all_nodes: true }));
    assert_eq!(backend_a.result(400).delivered, 2);
}

both_drivers!(silent_backend, pushes, link_pushes_reach_every_node);
