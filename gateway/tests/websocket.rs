//! WebSocket (ws and wss) end to end, under both io drivers: real clients written by others
//! (Python `websockets`, Node `ws`) drive `tests/ws/`'s scripts against an in-process
//! gateway; refusals and protocol violations are sent byte for byte over raw sockets, each
//! with a bystander that must keep working.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringgate::config::{IoDriver, TlsSettings, TlsVersions};
use ringgate::transport::ws::frames::client_frame;
use support::tempdir::Dir;
use support::{eventually, token_for};
use websocket_sans_io::Opcode;

both_drivers!(
    python_client_speaks_the_protocol_over_ws,
    python_client_over_wss_with_a_trusted_self_signed_pair,
    rooms_kicks_and_goaway_reach_websocket_clients,
    node_ws_client_echoes_a_fragmented_40_kb_message,
    refusals_get_their_status_and_are_counted,
    violations_close_with_their_code_and_a_bystander_is_unaffected,
    idle_and_stalled_websockets_are_closed_at_their_deadlines,
);

/// The hex vectors `ws/...` and the handshake example of docs/protocol.md §2.5.
fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md")).unwrap()
}

fn doc_vector(doc: &str, name: &str) -> Vec<u8> {
    let at = doc.find(&format!("# vector: {name}\n")).unwrap_or_else(|| panic!("{name} missing from the doc"));
    let body =
        doc.get(at..).unwrap().lines().skip(1).take_while(|l| !l.starts_with("```")).collect::<Vec<_>>().join(" ");
    body.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect()
}

#[test]
fn the_documents_websocket_examples_hold() {
    use bytes::BytesMut;
    use ringgate::transport::ws::{frames, handshake};
    let doc = doc();
    let mut ping = doc_vector(&doc, "ws/client_ping");
    let (mut data, mut replies) = (Vec::new(), BytesMut::new());
    frames::Reader::new(1024).feed(&mut ping, &mut |d, _| data.extend_from_slice(d), &mut replies).unwrap();
    assert_eq!(data, [0x01, 0x00], "the message carries a Ping frame");
    let mut pong = frames::binary_header(2).as_ref().to_vec();
    pong.extend_from_slice(&[0x02, 0x00]);
    assert_eq!(pong, doc_vector(&doc, "ws/server_pong"));
    // The handshake example: the request's lines, then the response's, as the doc shows them.
    let start = doc.find("  GET /ws HTTP/1.1").unwrap();
    let lines: Vec<&str> = doc.get(start..).unwrap().lines().take_while(|l| !l.trim().starts_with("```")).collect();
    let split = lines.iter().position(|l| l.trim().is_empty()).unwrap();
    let request: String = lines.iter().take(split).map(|l| format!("{}\r\n", l.trim())).collect::<String>() + "\r\n";
    let response: String =
        lines.iter().skip(split + 1).map(|l| format!("{}\r\n", l.trim())).collect::<String>() + "\r\n";
    let rules = handshake::Rules { path: "/ws".into(), allowed_origins: Vec::new() };
    let up = handshake::parse(request.as_bytes(), &rules, &[]).unwrap().unwrap();
    assert_eq!(String::from_utf8(up.response).unwrap(), response);
}

struct Node {
    gateway: ringgate::Gateway,
    dir: Dir,
    config: ringgate::Config,
}

fn node_with(driver: IoDriver, tweak: impl FnOnce(&mut ringgate::Config)) -> Node {
    let dir = Dir::new();
    support::write_cert(&dir);
    let mut config = support::config(driver);
    config.listen_ws = Some("127.0.0.1:0".parse().unwrap());
    config.listen_wss = Some("127.0.0.1:0".parse().unwrap());
    config.tls = Some(TlsSettings {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
        versions: TlsVersions::Tls13,
    });
    config.ws.allowed_origins = vec!["https://app.example".into()];
    config.drain.delay = Duration::ZERO;
    config.drain.rate = 1000;
    config.drain.deadline = Duration::from_millis(500);
    tweak(&mut config);
    Node { gateway: support::start_with(config.clone(), 2), dir, config }
}

fn node(driver: IoDriver) -> Node {
    node_with(driver, |_| {})
}

impl Node {
    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.gateway.ws_addr().unwrap())
    }
}

/// Tokens for every user/device the scripts log in as, as the scripts read them.
fn tokens() -> String {
    let pairs = [
        ("alice", "web"),
        ("rw", "web"),
        ("rt", "tcp"),
        ("kim", "phone"),
        ("gary", "web"),
        ("nina", "node"),
        ("tab-a", "web"),
        ("tab-b", "web"),
    ];
    let map: serde_json::Map<String, serde_json::Value> =
        pairs.iter().map(|(u, d)| (format!("{u}/{d}"), token_for(u, d).into())).collect();
    serde_json::Value::Object(map).to_string()
}

fn script(name: &str) -> String {
    format!("{}/tests/ws/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs a client script to completion (bounded) and returns its stdout; panics with its
/// output when it fails.
fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args).env("RINGGATE_TOKENS", tokens()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap_or_else(|e| panic!("{program}: {e} (run scripts/test.sh, which installs it)"));
    let out = wait_bounded(child, Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{program} {args:?} failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    text
}

fn wait_bounded(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn metric(name: &str, labels: &[&str]) -> f64 {
    support::metric_sum(&ringgate::metrics::render(), name, labels)
}

fn python_client_speaks_the_protocol_over_ws(driver: IoDriver) {
    let n = node(driver);
    let accepted = metric("ringgate_connections_accepted_total", &["transport=\"ws\""]);
    let out = run("python3", &[&script("ws_client.py"), "basics", &n.ws_url()], &[]);
    for step in [
        "auth and subprotocol",
        "ringgate ping/pong",
        "websocket ping/pong",
        "40 KB echo over fragments",
        "frames cut anywhere",
        "clean close: 4000 + normal",
    ] {
        assert!(out.contains(&format!("ok {step}")), "{step} missing:\n{out}");
    }
    assert!(metric("ringgate_connections_accepted_total", &["transport=\"ws\""]) > accepted);
}

fn python_client_over_wss_with_a_trusted_self_signed_pair(driver: IoDriver) {
    let n = node(driver);
    let url = format!("wss://localhost:{}/ws", n.gateway.wss_addr().unwrap().port());
    let ca = n.dir.path().join("cert.pem");
    let out = run("python3", &[&script("ws_client.py"), "basics", &url], &[("RINGGATE_CA", ca.to_str().unwrap())]);
    assert!(out.contains("ok 40 KB echo over fragments"), "{out}");

    // A reload with a new pair applies to new wss handshakes: a client trusting only the
    // new certificate connects.
    support::write_cert(&n.dir);
    let mut config = n.config.clone();
    config.tls =
        Some(TlsSettings { cert: ca.clone(), key: n.dir.path().join("key.pem"), versions: TlsVersions::Tls13 });
    assert!(n.gateway.reload(config).is_empty(), "a certificate reload needs no restart");
    let out = run("python3", &[&script("ws_client.py"), "basics", &url], &[("RINGGATE_CA", ca.to_str().unwrap())]);
    assert!(out.contains("ok 40 KB echo over fragments"), "{out}");
}

fn rooms_kicks_and_goaway_reach_websocket_clients(driver: IoDriver) {
    let n = node(driver);
    let py = script("ws_client.py");
    let out = run("python3", &[&py, "room", &n.ws_url(), &n.gateway.local_addr().to_string()], &[]);
    assert!(out.contains("ok room fan-out across websocket and tcp"), "{out}");
    let out = run("python3", &[&py, "kicked", &n.ws_url()], &[]);
    assert!(out.contains("ok kick replaced, close 4041"), "{out}");

    // GoAway during a drain, then the deadline close.
    let mut child = Command::new("python3")
        .args([&py, "hold", &n.ws_url(), "20"])
        .env("RINGGATE_TOKENS", tokens())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    let mut byte = [0u8; 1];
    while !seen.contains("ready") && stdout.read(&mut byte).unwrap_or(0) == 1 {
        seen.push(byte[0] as char);
    }
    // The script ignores GoAway: the drain's deadline passes and shutdown closes it.
    n.gateway.drain();
    n.gateway.shutdown();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let _ = child.wait();
    assert!(rest.contains("ok goaway"), "{seen}{rest}");
    assert!(rest.contains("ok closed 40"), "a 4000 + reason close after GoAway: {rest}");
}

fn node_ws_client_echoes_a_fragmented_40_kb_message(driver: IoDriver) {
    let n = node(driver);
    let out = run("node", &[&script("ws_client.mjs"), &n.ws_url()], &[]);
    for step in ["auth", "websocket ping/pong", "40 KB echo over fragments", "clean close 1000 echoed"] {
        assert!(out.contains(&format!("ok {step}")), "{step} missing:\n{out}");
    }
}

/// Sends `request` on a raw socket and returns everything the gateway answered.
fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn upgrade(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

fn refusals_get_their_status_and_are_counted(driver: IoDriver) {
    let n = node(driver);
    let addr = n.gateway.ws_addr().unwrap();
    let cases = [
        (upgrade("/nope", ""), "404", "wrong_path"),
        (upgrade("/ws", "Origin: https://evil.example\r\n"), "403", "bad_origin"),
        (upgrade("/ws", "Sec-WebSocket-Protocol: mqtt\r\n"), "400", "bad_subprotocol"),
        ("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), "426", "no_upgrade"),
        (format!("GET /ws HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000)), "431", "request_too_large"),
    ];
    for (request, status, reason) in cases {
        let before = metric("ringgate_ws_failures_total", &[&format!("reason=\"{reason}\"")]);
        let answer = String::from_utf8_lossy(&exchange(addr, request.as_bytes())).into_owned();
        assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "{reason}: {answer}");
        assert!(
            eventually(Duration::from_secs(2), || metric(
                "ringgate_ws_failures_total",
                &[&format!("reason=\"{reason}\"")]
            ) > before),
            "{reason} not counted"
        );
    }
    // The same refusals from a real client library.
    let py = script("ws_client.py");
    let out = run("python3", &[&py, "refused", &n.ws_url(), "https://evil.example"], &[]);
    assert!(out.contains("ok status 403"), "{out}");
    let out = run("python3", &[&py, "refused", &n.ws_url(), "", "mqtt"], &[]);
    assert!(out.contains("ok status 400"), "{out}");
}

/// Completes a handshake and authenticates on a raw socket; returns it with anything read
/// past the 101 response.
fn raw_login(addr: SocketAddr, user: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(upgrade("/ws", "Sec-WebSocket-Protocol: ringgate.v1\r\n").as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed during the handshake");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101 "), "{}", String::from_utf8_lossy(&head));
    let auth = ringgate_codec::client::ClientFrame::Auth(ringgate_codec::client::Auth {
        protocol_version: 1,
        token: token_for(user, "raw"),
        user_id: user.into(),
        device_id: "raw".into(),
        platform: ringgate_codec::client::Platform::Android,
        resume_token: None,
    });
    s.write_all(&client_frame(Opcode::Binary, true, [9, 8, 7, 6], &auth.to_bytes().unwrap())).unwrap();
    // AuthOk arrives as one binary message: 0x82, a length, then op 0x11.
    let mut start = [0u8; 3];
    s.read_exact(&mut start).unwrap();
    assert_eq!(start[0], 0x82, "{start:?}");
    s
}

/// Reads until EOF and returns the code of the last WebSocket Close in what came.
fn close_code(s: &mut TcpStream) -> Option<u16> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let at = out.windows(2).rposition(|w| w[0] == 0x88 && w[1] >= 2)?;
    Some(u16::from_be_bytes([*out.get(at + 2)?, *out.get(at + 3)?]))
}

fn violations_close_with_their_code_and_a_bystander_is_unaffected(driver: IoDriver) {
    let n = node(driver);
    let addr = n.gateway.ws_addr().unwrap();
    let mut tcp_bystander = support::TestClient::login(n.gateway.local_addr(), "bystander", "tcp").0;
    let big = vec![0u8; 64 * 1024 + 1024];
    let cases: [(Vec<u8>, u16, &str); 3] = [
        (client_frame(Opcode::Text, true, [1, 2, 3, 4], b"hi"), 1003, "text_frame"),
        (vec![0x82, 0x02, 0x01, 0x00], 1002, "unmasked_frame"),
        (client_frame(Opcode::Binary, true, [1, 2, 3, 4], &big), 1009, "message_too_big"),
    ];
    for (bad, code, reason) in cases {
        let before = metric("ringgate_ws_failures_total", &[&format!("reason=\"{reason}\"")]);
        let mut s = raw_login(addr, "violator");
        s.write_all(&bad).unwrap();
        assert_eq!(close_code(&mut s), Some(code), "{reason}");
        assert!(
            metric("ringgate_ws_failures_total", &[&format!("reason=\"{reason}\"")]) > before,
            "{reason} not counted"
        );
        tcp_bystander.echo(b"still here");
    }
}

fn idle_and_stalled_websockets_are_closed_at_their_deadlines(driver: IoDriver) {
    let n = node_with(driver, |c| {
        c.session.heartbeat_interval = Duration::from_millis(200);
        c.session.idle_multiple = 2;
        c.session.auth_timeout = Duration::from_millis(500);
    });
    let addr = n.gateway.ws_addr().unwrap();
    // Authenticated and then silent: closed at the idle deadline with 4000 + idle_timeout.
    let mut idle = raw_login(addr, "sleepy");
    let started = Instant::now();
    assert_eq!(close_code(&mut idle), Some(4030));
    assert!(started.elapsed() < Duration::from_secs(3));
    // A WebSocket Ping counts as life: pinging every 100 ms keeps the connection past it.
    let mut alive = raw_login(addr, "pinger");
    for _ in 0..10 {
        alive.write_all(&client_frame(Opcode::Ping, true, [5, 5, 5, 5], b"x")).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    alive.write_all(&client_frame(Opcode::Binary, true, [5, 5, 5, 5], &[0x01, 0x00])).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !seen.windows(2).any(|w| w == [0x01 + 1, 0x00]) {
        let got = alive.read(&mut buf).unwrap();
        assert!(got > 0, "closed although it pinged");
        seen.extend_from_slice(buf.get(..got).unwrap());
    }
    // A handshake that never completes: dropped at the auth deadline, counted.
    let before = metric("ringgate_ws_failures_total", &["reason=\"handshake_timeout\""]);
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stalled.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut out = Vec::new();
    let _ = stalled.read_to_end(&mut out);
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    assert!(metric("ringgate_ws_failures_total", &["reason=\"handshake_timeout\""]) > before);
}

/// The chat demo (examples/chat/, on the SDK's browser bundle) in headless Chromium
/// (puppeteer-core), two tabs over ws and then wss: each logs in with its token through the
/// page's form and joins a room; what one types shows in the other's log, with its Ack; the
/// page's Origin is the one allowed. One driver: the transport is the same code
/// under both, which the tests above cover.
#[test]
fn the_sdk_in_headless_chromium_talks_over_ws_and_wss() {
    let http_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let n = node_with(IoDriver::IoUring, |c| c.ws.allowed_origins = vec![format!("http://127.0.0.1:{http_port}")]);
    let wss = format!("wss://{}/ws", n.gateway.wss_addr().unwrap());
    let accepted = metric("ringgate_connections_accepted_total", &["transport=\"wss\""]);
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ringgate-chat.png");
    let _ = std::fs::remove_file(&shot);
    let out =
        run("node", &[&script("browser.mjs"), &http_port.to_string(), shot.to_str().unwrap(), &n.ws_url(), &wss], &[]);
    for scheme in ["ws", "wss"] {
        for step in [
            "two tabs logged in and joined",
            "tab A's message was acked",
            "tab A's message shows in both tabs",
            "tab B's answer shows in tab A",
        ] {
            assert!(out.contains(&format!("ok {scheme} {step}")), "{scheme} {step} missing:\n{out}");
        }
    }
    // The screenshot is kept as a test artifact (README.md shows one).
    assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000), "no screenshot at {}", shot.display());
    assert!(metric("ringgate_connections_accepted_total", &["transport=\"wss\""]) >= accepted + 2.0);
}
