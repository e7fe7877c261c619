//! End-to-end: connection lifecycle against an in-process gateway, real sockets on
//! loopback, under both io drivers.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use ringgate::auth::token::{self, Claims};
use ringgate::config::IoDriver;
use ringgate_codec::Decoded;
use ringgate_codec::ReasonCode;
use ringgate_codec::client::{Auth, ClientDecoder, ClientFrame, Platform};
use ringgate_codec::session::{ClientConfig, ClientEvent};
use support::*;

const T: Duration = Duration::from_secs(5);

fn auth_ok_and_ping_pong(driver: IoDriver) {
    let gw = start(driver);
    assert_eq!(gw.driver(), if driver == IoDriver::Epoll { "epoll" } else { "io_uring" });
    let (mut client, ok) = TestClient::login(gw.local_addr(), "alice", "phone");
    assert_eq!(ok.node_id, "test-node");
    assert_eq!(ok.protocol_version, 1);
    assert_ne!(ok.connection_id, 0);
    client.echo(b"after auth");
    // A Ping gets a Pong, exactly `02 00` on the wire, and counts as life.
    let mut raw = TcpStream::connect(gw.local_addr()).unwrap();
    let auth = ClientFrame::Auth(Auth {
        protocol_version: 1,
        token: token_for("bob", "pc"),
        user_id: "bob".into(),
        device_id: "pc".into(),
        platform: Platform::Desktop,
        resume_token: None,
    });
    raw.write_all(&auth.to_bytes().unwrap()).unwrap();
    raw.set_read_timeout(Some(T)).unwrap();
    let mut input = BytesMut::new();
    loop {
        let mut chunk = [0u8; 512];
        let n = std::io::Read::read(&mut raw, &mut chunk).unwrap();
        assert!(n > 0, "closed before AuthOk");
        input.extend_from_slice(&chunk[..n]);
        match ClientDecoder::default().decode(&mut input).unwrap() {
            Decoded::Frame(ClientFrame::AuthOk(_)) => break,
            Decoded::Frame(other) => panic!("expected AuthOk, got {other:?}"),
            Decoded::NeedMore(_) => {}
        }
    }
    let mut ping = BytesMut::new();
    ringgate_codec::client::encode_ping(&mut ping);
    for _ in 0..3 {
        raw.write_all(&ping).unwrap();
        let mut pong = [0u8; 2];
        std::io::Read::read_exact(&mut raw, &mut pong).unwrap();
        assert_eq!(pong, [0x02, 0x00]);
    }
}

fn auth_refusals(driver: IoDriver) {
    let gw = start(driver);
    let addr = gw.local_addr();
    let cases: Vec<(&str, String, ReasonCode)> = vec![
        (
            "bad signature",
            token::mint(KID, b"wrong-secret-0123456789", &claims("bob", unix_now() + 60)),
            ReasonCode::AUTH_INVALID,
        ),
        ("expired", token::mint(KID, SECRET, &claims("bob", unix_now() - 3600)), ReasonCode::AUTH_EXPIRED),
        // Answered like a bad signature: key ids cannot be probed (docs/auth.md).
        ("wrong key id", token::mint("k9", SECRET, &claims("bob", unix_now() + 60)), ReasonCode::AUTH_INVALID),
        ("garbage token", "not-a-token".into(), ReasonCode::AUTH_INVALID),
        ("user mismatch", token_for("mallory", "phone"), ReasonCode::AUTH_INVALID),
    ];
    for (name, token, reason) in cases {
        let mut client = TestClient::connect_with(addr, ClientConfig::new(token, "bob", "phone"));
        match client.next_event(T) {
            Some(ClientEvent::AuthFailed(fail)) => assert_eq!(fail.reason, reason, "{name}"),
            other => panic!("{name}: expected AuthFail, got {other:?}"),
        }
        assert_eq!(client.closed_reason(T), Some(reason), "{name}");
    }
    assert!(eventually(T, || gw.closed_with(ReasonCode::AUTH_INVALID) == 4));
}

fn claims(user: &str, exp: u64) -> Claims {
    Claims { sub: user.into(), dev: "phone".into(), plat: "ios".into(), exp }
}

fn unknown_protocol_version(driver: IoDriver) {
    let gw = start(driver);
    let mut stream = TcpStream::connect(gw.local_addr()).unwrap();
    let auth = ClientFrame::Auth(Auth {
        protocol_version: 99,
        token: token_for("carol", "pc"),
        user_id: "carol".into(),
        device_id: "pc".into(),
        platform: Platform::Desktop,
        resume_token: None,
    });
    stream.write_all(&auth.to_bytes().unwrap()).unwrap();
    let frames = read_frames_to_eof(&mut stream, T);
    match &frames[..] {
        [ClientFrame::AuthFail(fail), ClientFrame::Close(close)] => {
            assert_eq!(fail.reason, ReasonCode::UNSUPPORTED_VERSION);
            assert_eq!(fail.supported_versions, [1]);
            assert_eq!(close.reason, ReasonCode::UNSUPPORTED_VERSION);
        }
        other => panic!("expected AuthFail + Close, got {other:?}"),
    }
}

fn auth_timeout(driver: IoDriver) {
    let mut config = config(driver);
    config.session.auth_timeout = Duration::from_millis(300);
    let gw = start_with(config, 2);
    let mut stream = TcpStream::connect(gw.local_addr()).unwrap();
    let frames = read_frames_to_eof(&mut stream, T);
    assert_eq!(close_reason(&frames), Some(ReasonCode::AUTH_TIMEOUT), "{frames:?}");
    assert!(eventually(T, || gw.active_connections() == 0));
}

fn idle_timeout(driver: IoDriver) {
    let mut config = config(driver);
    config.session.heartbeat_interval = Duration::from_millis(200);
    config.session.idle_multiple = 2;
    let gw = start_with(config, 2);
    let (mut quiet, _) = TestClient::login(gw.local_addr(), "quiet", "d");
    let (mut chatty, _) = TestClient::login(gw.local_addr(), "chatty", "d");
    // The chatty client keeps talking past the idle timeout; the quiet one does not.
    for _ in 0..6 {
        chatty.echo(b"still here");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(quiet.closed_reason(T), Some(ReasonCode::IDLE_TIMEOUT));
    chatty.echo(b"and still working");
}

fn echo_and_rooms(driver: IoDriver) {
    let gw = start(driver);
    let addr = gw.local_addr();
    let mut members: Vec<TestClient> = (0..3).map(|i| TestClient::login(addr, &format!("m{i}"), "d").0).collect();
    members[0].echo(b"hello");
    for m in &mut members {
        let seq = m.send(Some("join:lobby"), b"");
        assert!(matches!(m.next_event(T), Some(ClientEvent::Ack { seq: s, code: ReasonCode::OK, .. }) if s == seq));
    }
    members[1].send(Some("room:lobby"), b"to everyone");
    for (i, m) in members.iter_mut().enumerate() {
        let got = (0..3).find_map(|_| match m.next_event(T) {
            Some(ClientEvent::Push(p)) => Some(p.payload),
            _ => None,
        });
        assert_eq!(got.as_deref(), Some(&b"to everyone"[..]), "member {i}");
    }
    let (mut outsider, _) = TestClient::login(addr, "outsider", "d");
    let seq = outsider.send(Some("reject"), b"x");
    assert!(
        matches!(outsider.next_event(T), Some(ClientEvent::Ack { seq: s, code: ReasonCode::BACKEND_REJECTED, .. }) if s == seq)
    );
}

fn bad_input_closes_only_that_connection(driver: IoDriver) {
    let gw = start(driver);
    let addr = gw.local_addr();
    let (mut bystander, _) = TestClient::login(addr, "bystander", "d");

    let mut garbage = TcpStream::connect(addr).unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(close_reason(&read_frames_to_eof(&mut garbage, T)), Some(ReasonCode::UNKNOWN_OP));

    let (mut big, _) = TestClient::login(addr, "big", "d");
    big.stream.write_all(&[0x20, 0xff, 0xff, 0xff, 0x7f]).unwrap();
    assert_eq!(big.closed_reason(T), Some(ReasonCode::FRAME_TOO_LARGE));

    let (mut truncated, _) = TestClient::login(addr, "truncated", "d");
    truncated.stream.write_all(&[0x20, 0x64, 0x01, 0x00, b'x']).unwrap();
    truncated.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(eventually(T, || gw.closed_with(ReasonCode::PROTOCOL_ERROR) == 1), "truncated frame counted");

    bystander.echo(b"unaffected");
    assert_eq!(gw.closed_with(ReasonCode::UNKNOWN_OP), 1);
    assert_eq!(gw.closed_with(ReasonCode::FRAME_TOO_LARGE), 1);
}

fn slow_consumer(driver: IoDriver) {
    let mut config = config(driver);
    config.session.max_outbound = 64 * 1024;
    let gw = start_with(config, 2);
    let addr = gw.local_addr();
    // The slow client authenticates, then never reads again.
    let (slow, _) = TestClient::login(addr, "slow", "d");
    let (mut pusher, _) = TestClient::login(addr, "pusher", "d");
    let payload = vec![7u8; 32 * 1024];
    let mut sent = 0;
    while gw.closed_with(ReasonCode::SLOW_CONSUMER) == 0 && sent < 4000 {
        let seq = pusher.send(Some("user:slow"), &payload);
        loop {
            match pusher.next_event(T) {
                Some(ClientEvent::Ack { seq: s, code, .. }) if s == seq => {
                    assert_eq!(code, ReasonCode::OK);
                    break;
                }
                Some(_) => {}
                None => panic!("pusher got no ack"),
            }
        }
        sent += 1;
    }
    assert!(
        eventually(T, || gw.closed_with(ReasonCode::SLOW_CONSUMER) == 1),
        "slow consumer closed after {sent} pushes"
    );
    pusher.echo(b"pusher unaffected");
    drop(slow);
}

fn five_thousand_round_trips(driver: IoDriver) {
    let mut config = config(driver);
    config.auth = ringgate::config::AuthMode::None;
    let gw = start_with(config, 2);
    let addr = gw.local_addr();
    let mut clients: Vec<TestClient> =
        (0..5000).map(|i| TestClient::connect_with(addr, ClientConfig::new("", format!("u{i}"), "d"))).collect();
    for c in &mut clients {
        assert!(matches!(c.next_event(T), Some(ClientEvent::Authenticated(_))));
    }
    assert!(eventually(T, || gw.active_connections() == 5000));
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(None, format!("msg {i}").as_bytes());
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let expected = format!("msg {i}");
        assert!(matches!(c.next_event(T), Some(ClientEvent::Push(p)) if p.payload == expected.as_bytes()));
        assert!(matches!(c.next_event(T), Some(ClientEvent::Ack { code: ReasonCode::OK, .. })));
    }
    drop(clients);
    assert!(eventually(T, || gw.active_connections() == 0));
}

both_drivers!(
    auth_ok_and_ping_pong,
    auth_refusals,
    unknown_protocol_version,
    auth_timeout,
    idle_timeout,
    echo_and_rooms,
    bad_input_closes_only_that_connection,
    slow_consumer,
    five_thousand_round_trips,
);
