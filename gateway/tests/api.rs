//! The server API (docs/api.md) on three nodes sharing a real redis-server, then a real
//! 3-master Redis Cluster: pushes by API on one node reach users on the others, rooms reach
//! only the nodes with members, presence and room counts, kicks; bad requests, Redis
//! stopped, and a node killed with SIGKILL. Requests are made with curl.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use ringgate::Gateway;
use ringgate::config::{ApiSettings, IoDriver, RedisTarget};
use ringgate_codec::ReasonCode;
use ringgate_codec::session::ClientEvent;
use serde_json::{Value, json};
use support::*;

const T: Duration = Duration::from_secs(5);
const KEY: &str = "test-api-key-0123456789";
const OLD_KEY: &str = "rotated-out-key-0123456789";

/// `curl` `method` `path` on `api` with `key` and a JSON `body`: the status and JSON answer.
fn call(api: SocketAddr, method: &str, path: &str, key: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    let mut curl = Command::new("curl");
    curl.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method]);
    curl.arg(format!("http://{api}{path}"));
    if let Some(key) = key {
        curl.args(["-H", &format!("Authorization: Bearer {key}")]);
    }
    if let Some(body) = body {
        curl.args(["-H", "Content-Type: application/json", "--data-binary", &body.to_string()]);
    }
    let out = curl.output().expect("curl is installed (.ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), serde_json::from_str(body).unwrap_or(Value::Null))
}

fn post(api: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    call(api, "POST", path, Some(KEY), Some(&body))
}

fn get(api: SocketAddr, path: &str) -> (u16, Value) {
    call(api, "GET", path, Some(KEY), None)
}

fn b64(payload: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(payload)
}

fn push_user(api: SocketAddr, user: &str, payload: &[u8]) -> Value {
    let (status, answer) = post(api, "/v1/push", json!({"user": user, "payload": b64(payload)}));
    assert_eq!(status, 200, "{answer}");
    answer
}

fn target(redis: &Store) -> RedisTarget {
    match redis {
        Store::Single(r) => r.target(Duration::from_secs(2)),
        Store::Cluster(c) => c.target(Duration::from_secs(2)),
    }
}

enum Store {
    Single(RedisServer),
    Cluster(RedisCluster),
}

fn node(driver: IoDriver, id: &str, redis: Option<&Store>) -> Gateway {
    let mut config = support::config(driver);
    config.node_id = id.into();
    config.redis = redis.map(target);
    config.api_listen = Some("127.0.0.1:0".parse().unwrap());
    config.api = ApiSettings { keys: vec![OLD_KEY.into(), KEY.into()], timeout: Duration::from_secs(1) };
    let gateway = start_with(config, 2);
    if redis.is_some() {
        assert!(eventually(T, || gateway.registry().is_some_and(|r| r.up)), "{id} holds its lease");
    }
    gateway
}

fn next_push(client: &mut TestClient, timeout: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match client.next_event(left)? {
            ClientEvent::Push(p) => return Some(p.payload.to_vec()),
            _ => continue,
        }
    }
    None
}

/// Waits until presence on `api` shows `user` with `sessions` sessions.
fn wait_sessions(api: SocketAddr, user: &str, sessions: usize) -> Value {
    let mut last = Value::Null;
    let seen = eventually(T, || {
        last = get(api, &format!("/v1/presence/{user}")).1;
        last["sessions"].as_array().is_some_and(|s| s.len() == sessions)
    });
    assert!(seen, "{user} has {sessions} sessions: {last}");
    last
}

fn nodes_of(answer: &Value) -> Vec<(String, u64)> {
    answer["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["node"].as_str().unwrap().to_owned(), n["count"].as_u64().unwrap()))
        .collect()
}

fn three_nodes(driver: IoDriver, redis: Store) {
    let (a, b, c) = (node(driver, "a", Some(&redis)), node(driver, "b", Some(&redis)), node(driver, "c", Some(&redis)));
    let api = a.api_addr().unwrap();

    // A push by API on A reaches a user on C.
    let (mut alice, _) = TestClient::login(c.local_addr(), "alice", "phone");
    wait_sessions(api, "alice", 1);
    let answer = push_user(api, "alice", b"to alice");
    assert_eq!(answer["delivered"], 1, "{answer}");
    assert_eq!(answer["offline"], false);
    assert_eq!(nodes_of(&answer), vec![("c".into(), 1)]);
    assert_eq!(next_push(&mut alice, T).as_deref(), Some(&b"to alice"[..]));

    // A user with devices on B and C gets both, or only the platform asked for.
    let (mut bob_ios, _) = TestClient::login_on(b.local_addr(), "bob", "iphone", "ios");
    let (mut bob_android, _) = TestClient::login_on(c.local_addr(), "bob", "pixel", "android");
    let presence = wait_sessions(api, "bob", 2);
    assert_eq!(presence["nodes"], json!(["b", "c"]), "{presence}");
    assert_eq!(presence["platforms"], json!(["android", "ios"]));
    assert_eq!(presence["devices"], json!(["iphone", "pixel"]));
    let answer = push_user(api, "bob", b"both");
    assert_eq!((answer["delivered"].as_u64(), nodes_of(&answer)), (Some(2), vec![("b".into(), 1), ("c".into(), 1)]));
    assert_eq!(next_push(&mut bob_ios, T).as_deref(), Some(&b"both"[..]));
    assert_eq!(next_push(&mut bob_android, T).as_deref(), Some(&b"both"[..]));
    let (status, answer) =
        post(api, "/v1/push", json!({"user": "bob", "platforms": ["ios"], "payload": b64(b"ios only")}));
    assert_eq!((status, answer["delivered"].as_u64()), (200, Some(1)), "{answer}");
    assert_eq!(next_push(&mut bob_ios, T).as_deref(), Some(&b"ios only"[..]));
    assert_eq!(next_push(&mut bob_android, Duration::from_millis(300)), None, "android asked for nothing");

    // A room with members on B and C (joined server-side) gets one copy each; A, with no
    // members, carries out nothing for it.
    let (mut carol, _) = TestClient::login(b.local_addr(), "carol", "d");
    let (mut dave, _) = TestClient::login(c.local_addr(), "dave", "d");
    wait_sessions(api, "carol", 1);
    wait_sessions(api, "dave", 1);
    for user in ["carol", "dave"] {
        let (status, answer) = post(api, "/v1/rooms/lobby/join", json!({"user": user}));
        assert_eq!((status, answer["delivered"].as_u64()), (200, Some(1)), "{answer}");
    }
    let mut room = Value::Null;
    assert!(
        eventually(T, || {
            room = get(api, "/v1/rooms/lobby").1;
            room["members"] == 2
        }),
        "{room}"
    );
    assert_eq!(nodes_of(&room), vec![("b".into(), 1), ("c".into(), 1)]);
    let ops_on_a = a.node_ops();
    let (status, answer) = post(api, "/v1/push", json!({"room": "lobby", "payload": b64(b"room")}));
    assert_eq!((status, answer["delivered"].as_u64()), (200, Some(2)), "{answer}");
    assert_eq!(nodes_of(&answer), vec![("b".into(), 1), ("c".into(), 1)]);
    assert_eq!(next_push(&mut carol, T).as_deref(), Some(&b"room"[..]));
    assert_eq!(next_push(&mut dave, T).as_deref(), Some(&b"room"[..]));
    assert_eq!(next_push(&mut carol, Duration::from_millis(200)), None, "one copy each");
    assert_eq!(a.node_ops(), ops_on_a, "node A has no members and got no traffic for the room");
    // Leaving: the room is empty on C, and a push reaches only carol.
    let (status, _) = post(api, "/v1/rooms/lobby/leave", json!({"user": "dave"}));
    assert_eq!(status, 200);
    assert!(eventually(T, || get(api, "/v1/rooms/lobby").1["members"] == 1));

    // Broadcast reaches every node, A included.
    let (mut erin, _) = TestClient::login(a.local_addr(), "erin", "d");
    let (status, answer) = post(api, "/v1/push", json!({"broadcast": true, "payload": b64(b"all")}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["delivered"], 6, "{answer}");
    assert_eq!(nodes_of(&answer).len(), 3);
    for client in [&mut erin, &mut alice, &mut bob_ios, &mut bob_android, &mut carol, &mut dave] {
        assert_eq!(next_push(client, T).as_deref(), Some(&b"all"[..]));
    }

    // A connection by node and id.
    let (mut frank, frank_ok) = TestClient::login(b.local_addr(), "frank", "d");
    let conn = json!({"node": "b", "conn": frank_ok.connection_id, "payload": b64(b"conn")});
    let (status, answer) = post(api, "/v1/push", conn);
    assert_eq!((status, answer["delivered"].as_u64()), (200, Some(1)), "{answer}");
    assert_eq!(next_push(&mut frank, T).as_deref(), Some(&b"conn"[..]));

    // A batch: one request, answered in order, each push to wherever its user is.
    let pushes = json!({"pushes": [
        {"user": "frank", "payload": b64(b"batch 1")},
        {"user": "nobody", "payload": b64(b"batch 2")},
        {"user": "bob", "platforms": ["android"], "payload": b64(b"batch 3")},
    ]});
    let (status, answer) = post(api, "/v1/push/batch", pushes);
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    let delivered: Vec<_> = results.iter().map(|r| (r["delivered"].as_u64(), r["offline"].as_bool())).collect();
    assert_eq!(delivered, vec![(Some(1), Some(false)), (Some(0), Some(true)), (Some(1), Some(false))], "{answer}");
    assert_eq!(next_push(&mut frank, T).as_deref(), Some(&b"batch 1"[..]));
    assert_eq!(next_push(&mut bob_android, T).as_deref(), Some(&b"batch 3"[..]));

    // Kick by API on A reaches the session on C.
    let (status, answer) = post(api, "/v1/kick", json!({"user": "alice", "reason": "kicked", "message": "bye"}));
    assert_eq!((status, answer["delivered"].as_u64()), (200, Some(1)), "{answer}");
    assert_eq!(alice.closed_reason(T), Some(ReasonCode::KICKED));
    assert!(eventually(T, || push_user(api, "alice", b"gone")["offline"] == true), "alice is offline once kicked");

    // The other nodes' APIs see the same fleet.
    assert_eq!(get(c.api_addr().unwrap(), "/v1/presence/bob").1["sessions"].as_array().map(Vec::len), Some(2));
}

fn three_nodes_on_redis(driver: IoDriver) {
    let dir = tempdir::Dir::new();
    three_nodes(driver, Store::Single(RedisServer::start(dir.path())));
}

fn three_nodes_on_redis_cluster(driver: IoDriver) {
    let dir = tempdir::Dir::new();
    three_nodes(driver, Store::Cluster(RedisCluster::start(dir.path())));
}

/// Bad requests get their status and a message naming what is wrong, on one node without
/// Redis (where pushes are delivered locally).
fn bad_requests(driver: IoDriver) {
    let a = node(driver, "solo", None);
    let api = a.api_addr().unwrap();
    let body = json!({"user": "alice", "payload": b64(b"hi")});
    assert_eq!(call(api, "POST", "/v1/push", None, Some(&body)).0, 401, "no key");
    assert_eq!(call(api, "POST", "/v1/push", Some("wrong-key-0123456789"), Some(&body)).0, 401, "wrong key");
    assert_eq!(call(api, "POST", "/v1/push", Some(OLD_KEY), Some(&body)).0, 200, "both rotated keys work");
    let (status, answer) = call(api, "POST", "/v1/push", Some(KEY), None);
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("malformed JSON"), "{answer}");
    let (status, answer) = post(api, "/v1/push", json!({"user": "alice"}));
    assert_eq!((status, answer["error"].as_str()), (400, Some("missing field: payload")));
    let (status, answer) = post(api, "/v1/kick", json!({"device": "d"}));
    assert_eq!((status, answer["error"].as_str()), (400, Some("missing field: user")));
    let big = vec![b'x'; a_frame_limit() + 1];
    let (status, answer) = post(api, "/v1/push", json!({"user": "alice", "payload": b64(&big)}));
    assert_eq!(status, 413, "{answer}");
    let (status, answer) = post(api, "/v1/push", json!({"room": "nobody-here", "payload": b64(b"x")}));
    assert_eq!((status, &answer["offline"]), (200, &json!(true)), "{answer}");
    let (status, answer) = post(api, "/v1/push", json!({"user": "nobody", "payload": b64(b"x")}));
    assert_eq!((status, &answer["offline"], &answer["delivered"]), (200, &json!(true), &json!(0)));
    let (status, answer) =
        post(api, "/v1/push/batch", json!({"pushes": [{"user": "a", "payload": ""}, {"user": "a"}]}));
    assert_eq!((status, answer["error"].as_str()), (400, Some("pushes[1]: missing field: payload")));
    assert_eq!(get(api, "/v1/nothing").0, 404);
    assert_eq!(call(api, "GET", "/v1/push", Some(KEY), None).0, 405);
    // On one node, delivery and presence are the node's own.
    let (mut alice, _) = TestClient::login(a.local_addr(), "alice", "phone");
    let answer = push_user(api, "alice", b"local");
    assert_eq!((answer["delivered"].as_u64(), nodes_of(&answer)), (Some(1), vec![("solo".into(), 1)]));
    assert_eq!(next_push(&mut alice, T).as_deref(), Some(&b"local"[..]));
    assert_eq!(get(api, "/v1/presence/alice").1["nodes"], json!(["solo"]));
    // Every answer was counted, by endpoint and status.
    let metrics = ringgate::metrics::render();
    let api_lines: Vec<&str> = metrics.lines().filter(|l| l.starts_with("ringgate_api_requests_total{")).collect();
    assert!(
        metric_sum(&metrics, "ringgate_api_requests_total", &["endpoint=\"unauthorized\"", "status=\"401\""]) >= 2.0,
        "{api_lines:#?}"
    );
    assert!(metric_sum(&metrics, "ringgate_api_requests_total", &["endpoint=\"push\"", "status=\"413\""]) >= 1.0);
}

/// The protobuf form of a push and its answer (codec/proto/api.proto), for high-rate callers.
fn protobuf_bodies(driver: IoDriver) {
    use prost::Message;
    use ringgate_codec::pb::api as pb;
    let a = node(driver, "solo", None);
    let api = a.api_addr().unwrap();
    let (mut alice, _) = TestClient::login(a.local_addr(), "alice", "phone");
    let request = pb::PushRequest {
        target: Some(pb::push_request::Target::User(pb::UserTarget { user: "alice".into(), ..Default::default() })),
        payload: b"binary".to_vec().into(),
        timeout_ms: 0,
    };
    let dir = tempdir::Dir::new();
    let body = dir.path().join("push.pb");
    std::fs::write(&body, request.encode_to_vec()).unwrap();
    let out = Command::new("curl")
        .args([
            "-sS",
            "-f",
            "-H",
            &format!("Authorization: Bearer {KEY}"),
            "-H",
            "Content-Type: application/x-protobuf",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(format!("http://{api}/v1/push"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let outcome = pb::Outcome::decode(out.stdout.as_slice()).expect("a protobuf Outcome");
    assert_eq!((outcome.delivered, outcome.offline), (1, false));
    assert_eq!(outcome.nodes, vec![pb::NodeCount { node: "solo".into(), count: 1 }]);
    assert_eq!(next_push(&mut alice, T).as_deref(), Some(&b"binary"[..]));
}

fn a_frame_limit() -> usize {
    support::config(IoDriver::Epoll).session.max_frame_len
}

/// Redis stopped: calls that need it answer 503 naming Redis, and what this node holds is
/// still delivered.
fn redis_stopped(driver: IoDriver) {
    let dir = tempdir::Dir::new();
    let redis = Store::Single(RedisServer::start(dir.path()));
    let (a, c) = (node(driver, "a", Some(&redis)), node(driver, "c", Some(&redis)));
    let api = a.api_addr().unwrap();
    let (mut here, _) = TestClient::login(a.local_addr(), "here", "d");
    let (mut there, _) = TestClient::login(c.local_addr(), "there", "d");
    wait_sessions(api, "here", 1);
    wait_sessions(api, "there", 1);
    let Store::Single(mut server) = redis else { unreachable!() };
    server.stop();
    let (status, answer) = post(api, "/v1/push", json!({"user": "here", "payload": b64(b"still")}));
    assert_eq!(status, 503, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("redis"), "{answer}");
    assert_eq!(answer["delivered_here"], 1, "{answer}");
    assert_eq!(next_push(&mut here, T).as_deref(), Some(&b"still"[..]));
    let (status, _) = post(api, "/v1/push", json!({"user": "there", "payload": b64(b"lost")}));
    assert_eq!(status, 503);
    assert_eq!(get(api, "/v1/presence/there").0, 503);
    assert_eq!(next_push(&mut there, Duration::from_millis(300)), None);
    drop(c);
}

/// A node killed with SIGKILL: pushes to its users answer `offline` within the lease TTL.
fn killed_node(driver: IoDriver) {
    let dir = tempdir::Dir::new();
    let redis = RedisServer::start(dir.path());
    let store = Store::Single(redis);
    let a = node(driver, "a", Some(&store));
    let api = a.api_addr().unwrap();
    let Store::Single(redis) = &store else { unreachable!() };
    let path = dir.path().join("c.toml");
    let driver_name = if driver == IoDriver::Epoll { "epoll" } else { "io_uring" };
    std::fs::write(
        &path,
        format!(
            "[node]\nid = \"c\"\n[listen]\ntcp = \"127.0.0.1:0\"\n[io]\ndriver = \"{driver_name}\"\nworkers = 1\n\
             [auth]\nmode = \"token\"\n[auth.keys]\n{KID} = \"{}\"\n[redis]\nurl = \"{}\"\nlease_ttl = \"2s\"\n",
            std::str::from_utf8(SECRET).unwrap(),
            redis.url()
        ),
    )
    .unwrap();
    let (child, addr) = spawn_gateway(&path);
    let mut child = ChildGuard(child);
    let (_gina, _) = TestClient::login(addr.parse().unwrap(), "gina", "d");
    wait_sessions(api, "gina", 1);
    assert_eq!(push_user(api, "gina", b"alive")["delivered"], 1);
    child.kill();
    let killed = Instant::now();
    let mut last = Value::Null;
    while killed.elapsed() < Duration::from_secs(6) {
        let started = Instant::now();
        last = push_user(api, "gina", b"dead?");
        assert!(started.elapsed() < Duration::from_millis(1500), "a call answers within its timeout");
        if last["offline"] == true {
            break;
        }
    }
    assert_eq!(last["offline"], true, "{last}");
    let ttl = Duration::from_secs(2);
    assert!(killed.elapsed() <= ttl + Duration::from_millis(1200), "offline after {:?}", killed.elapsed());
}

both_drivers!(
    three_nodes_on_redis,
    three_nodes_on_redis_cluster,
    bad_requests,
    protobuf_bodies,
    redis_stopped,
    killed_node
);
