//! Admission control over real sockets: each limit refuses what it should, with its reason,
//! and lets the next address through. Clients pick their source address (127.0.0.x) by
//! binding before they connect.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringgate::config::{AdmissionLimits, IoDriver};
use ringgate_codec::ReasonCode;
use ringgate_codec::session::{ClientConfig, ClientEvent};
use support::*;

const T: Duration = Duration::from_secs(5);

fn limits(change: impl FnOnce(&mut AdmissionLimits)) -> AdmissionLimits {
    let mut l = support::config(IoDriver::Epoll).admission;
    change(&mut l);
    l
}

fn node(driver: IoDriver, admission: AdmissionLimits, workers: usize) -> ringgate::Gateway {
    let mut config = support::config(driver);
    config.admission = admission;
    start_with(config, workers)
}

/// A TCP connection from `source` to `addr`.
fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let src: IpAddr = source.parse().unwrap();
    socket.bind(&SocketAddr::new(src, 0).into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true).unwrap();
    stream
}

/// A logged-in client from `source`, or the reason it was refused.
fn login_from(source: &str, addr: SocketAddr, user: &str, token: Option<String>) -> Result<TestClient, ReasonCode> {
    let stream = connect_from(source, addr);
    let token = token.unwrap_or_else(|| token_for(user, "d"));
    let mut client = TestClient::from_stream(stream, ClientConfig::new(token, user, "d"));
    match client.next_event(T) {
        Some(ClientEvent::Authenticated(_)) => Ok(client),
        Some(ClientEvent::AuthFailed(fail)) => Err(fail.reason),
        Some(ClientEvent::Closed { reason, .. }) => Err(reason),
        other => panic!("{user} from {source}: {other:?}"),
    }
}

/// The reason in the Close a refused raw socket gets.
fn refused_with(stream: &mut TcpStream) -> Option<ReasonCode> {
    close_reason(&read_frames_to_eof(stream, T))
}

fn per_address_caps(driver: IoDriver) {
    let gw = node(
        driver,
        limits(|l| {
            l.max_connections_per_address = 3;
            l.max_unauthenticated_per_address = 2;
        }),
        2,
    );
    let addr = gw.local_addr();
    // Two silent sockets fill the address's unauthenticated cap; the third is told why.
    let silent: Vec<TcpStream> = (0..2).map(|_| connect_from("127.0.0.11", addr)).collect();
    assert!(eventually(T, || gw.active_connections() == 2));
    let mut third = connect_from("127.0.0.11", addr);
    assert_eq!(refused_with(&mut third), Some(ReasonCode::TOO_MANY_CONNECTIONS));
    // Another address is not affected.
    let _other = login_from("127.0.0.12", addr, "other", None).expect("another address logs in");
    drop(silent);
    assert!(eventually(T, || gw.active_connections() == 1));
    // Logged-in connections count against the connection cap.
    let held: Vec<TestClient> =
        (0..3).map(|i| login_from("127.0.0.11", addr, &format!("u{i}"), None).expect("within the cap")).collect();
    assert_eq!(login_from("127.0.0.11", addr, "u3", None).err(), Some(ReasonCode::TOO_MANY_CONNECTIONS));
    drop(held);
    assert!(
        eventually(T, || login_from("127.0.0.11", addr, "u4", None).is_ok()),
        "the address may connect again once its connections closed"
    );
    let metrics = ringgate::metrics::render();
    assert!(
        metric_sum(&metrics, "ringgate_admission_refused_total", &["reason=\"unauthenticated_per_address\""]) >= 1.0
    );
    assert!(metric_sum(&metrics, "ringgate_admission_refused_total", &["reason=\"per_address\""]) >= 1.0);
}

fn new_connection_rate(driver: IoDriver) {
    let gw = node(
        driver,
        limits(|l| {
            l.new_connections_per_address = 5;
            l.new_connections_burst = 5;
        }),
        2,
    );
    let addr = gw.local_addr();
    let started = Instant::now();
    let burst: Vec<TestClient> =
        (0..5).map(|i| login_from("127.0.0.21", addr, &format!("r{i}"), None).expect("the burst")).collect();
    let sixth = login_from("127.0.0.21", addr, "r5", None);
    if started.elapsed() < Duration::from_millis(150) {
        assert_eq!(sixth.err(), Some(ReasonCode::RATE_LIMITED), "no token left yet");
    }
    assert!(login_from("127.0.0.22", addr, "elsewhere", None).is_ok(), "another address has its own bucket");
    std::thread::sleep(Duration::from_millis(250));
    assert!(login_from("127.0.0.21", addr, "later", None).is_ok(), "a token came back (5 per second)");
    drop(burst);
}

fn flapping_ban(driver: IoDriver) {
    let gw = node(
        driver,
        limits(|l| {
            l.flapping_failures = 3;
            l.flapping_window = Duration::from_secs(60);
            l.flapping_ban = Duration::from_secs(1);
        }),
        2,
    );
    let addr = gw.local_addr();
    for _ in 0..3 {
        let bad = login_from("127.0.0.31", addr, "mallory", Some("not-a-token".into()));
        assert_eq!(bad.err(), Some(ReasonCode::AUTH_INVALID));
    }
    // Banned: even a good token from that address is refused for the cool-off...
    assert_eq!(login_from("127.0.0.31", addr, "alice", None).err(), Some(ReasonCode::RATE_LIMITED));
    // ...while another address (a neighbour behind another NAT) logs in.
    assert!(login_from("127.0.0.32", addr, "bob", None).is_ok());
    std::thread::sleep(Duration::from_millis(1100));
    assert!(login_from("127.0.0.31", addr, "alice", None).is_ok(), "the ban ends");
    assert!(
        metric_sum(&ringgate::metrics::render(), "ringgate_admission_refused_total", &["reason=\"flapping\""]) >= 1.0
    );
}

/// Per worker: connections not yet authenticated, and TLS ones (handshakes) among them.
fn worker_caps(driver: IoDriver) {
    let dir = tempdir::Dir::new();
    write_cert(&dir);
    let mut config = support::config(driver);
    config.admission = limits(|l| {
        l.max_unauthenticated = 3;
        l.max_tls_handshakes = 2;
    });
    config.listen_tls = Some("127.0.0.1:0".parse().unwrap());
    config.tls = Some(ringgate::config::TlsSettings {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
        versions: ringgate::config::TlsVersions::Tls13,
    });
    let gw = start_with(config, 1);
    let tls = gw.tls_addr().unwrap();
    // Two stalled ClientHellos (nothing sent) fill the TLS budget: the third TLS connection
    // is closed at once, while plain TCP still gets in.
    let stalled: Vec<TcpStream> = (0..2).map(|i| connect_from(&format!("127.0.0.4{i}"), tls)).collect();
    assert!(eventually(T, || gw.active_connections() == 2));
    let mut third = connect_from("127.0.0.43", tls);
    third.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(third.read(&mut buf).unwrap_or(0), 0, "closed without a handshake");
    let mut plain = connect_from("127.0.0.44", gw.local_addr());
    assert!(eventually(T, || gw.active_connections() == 3));
    // The worker now holds 3 unauthenticated connections: a fourth plain one is refused.
    let mut fourth = connect_from("127.0.0.45", gw.local_addr());
    assert_eq!(refused_with(&mut fourth), Some(ReasonCode::SERVER_OVERLOADED));
    drop(stalled);
    plain.write_all(b"").unwrap();
    drop(plain);
    assert!(eventually(T, || gw.active_connections() == 0));
    // With the budget free again a real ClientHello gets the server's answer.
    let roots = rustls::RootCertStore::empty();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut hello = rustls::ClientConnection::new(Arc::new(client), "localhost".try_into().unwrap()).unwrap();
    let mut fresh = connect_from("127.0.0.46", tls);
    hello.write_tls(&mut fresh).unwrap();
    fresh.set_read_timeout(Some(T)).unwrap();
    assert!(fresh.read(&mut buf).unwrap_or(0) > 0, "the ServerHello comes back");
    let metrics = ringgate::metrics::render();
    assert!(metric_sum(&metrics, "ringgate_admission_refused_total", &["reason=\"tls_handshakes\""]) >= 1.0);
    assert!(metric_sum(&metrics, "ringgate_admission_refused_total", &["reason=\"unauthenticated\""]) >= 1.0);
}

both_drivers!(
    per_address_caps,
    new_connection_rate,
    flapping_ban,
    worker_caps,
    proxy_protocol,
    forwarded_for,
    handshake_deadline
);

/// A node whose open-file limit is lower than its max_connections: it warns at start,
/// refuses with server_overloaded once it holds what the limit allows (instead of accept(2)
/// failing and logins timing out), fails /readyz saying why, and recovers by itself.
#[test]
fn the_open_file_limit_is_a_connection_limit() {
    use std::os::unix::process::CommandExt;
    let dir = tempdir::Dir::new();
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let path = dir.path().join("files.toml");
    std::fs::write(
        &path,
        format!(
            "[listen]\ntcp = \"127.0.0.1:0\"\nadmin = \"{admin}\"\n[io]\ndriver = \"epoll\"\nworkers = 1\n\
             [auth]\nmode = \"none\"\n[limits]\n{}",
            NO_ADDRESS_LIMITS
        ),
    )
    .unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ringgate"));
    command
        .args(["run", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: setrlimit in the child between fork and exec touches only its own limits.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 300, rlim_max: 300 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = ChildGuard(command.spawn().unwrap());
    let field = |line: &str, name: &str| -> Option<String> {
        let start = line.find(&format!("{name}="))? + name.len() + 1;
        Some(line[start..].split_whitespace().next()?.trim_matches('"').to_owned())
    };
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.0.stderr.take().unwrap()));
    let (mut allows, mut addr) = (None, None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("open-file limit") {
            allows = field(&line, "file_limit_allows");
        }
        if line.contains("listening;") {
            addr = field(&line, "addr");
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let allows: usize = allows.expect("the start warns that max_connections is above the file limit").parse().unwrap();
    assert!((100..300).contains(&allows), "{allows}");
    let addr: SocketAddr = addr.expect("listening").parse().unwrap();
    let mut held = Vec::new();
    let mut refused = None;
    for i in 0..allows + 20 {
        let source = format!("127.0.1.{}", i % 200 + 1);
        match login_from(&source, addr, &format!("f{i}"), Some(String::new())) {
            Ok(client) => held.push(client),
            Err(reason) => {
                refused = Some((i, reason));
                break;
            }
        }
    }
    let (at, reason) = refused.expect("a connection beyond the limit is refused");
    assert_eq!(reason, ReasonCode::SERVER_OVERLOADED);
    assert_eq!(at, allows, "refused exactly at what the file limit allows");
    let (status, body) = http(admin, "GET", "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("open-file limit"), "{body}");
    held.truncate(10);
    assert!(
        eventually(T, || login_from("127.0.2.1", addr, "again", Some(String::new())).is_ok()),
        "room again once connections closed"
    );
    assert_eq!(http(admin, "GET", "/readyz").0, 200);
}

/// Reloaded limits apply to connections from then on.
#[test]
fn reloaded_limits_apply() {
    let mut config = support::config(IoDriver::Epoll);
    config.admission.max_connections_per_address = 1;
    let gw = start_with(config.clone(), 2);
    let _first = login_from("127.0.0.51", gw.local_addr(), "a", None).unwrap();
    assert_eq!(login_from("127.0.0.51", gw.local_addr(), "b", None).err(), Some(ReasonCode::TOO_MANY_CONNECTIONS));
    config.admission.max_connections_per_address = 2;
    assert!(gw.reload(config).is_empty(), "nothing needs a restart");
    assert!(login_from("127.0.0.51", gw.local_addr(), "b", None).is_ok());
}

/// The PROXY protocol from a trusted proxy: the header's client address is what the
/// per-address limits count (v1, v2; LOCAL counts under none), on plain TCP and TLS. A
/// header from anyone else is not taken, and a trusted proxy's connection without one is
/// refused and counted.
fn proxy_protocol(driver: IoDriver) {
    let dir = tempdir::Dir::new();
    let cert = write_cert(&dir);
    let mut config = support::config(driver);
    config.admission.max_connections_per_address = 1;
    config.proxies = ringgate::config::ProxySettings {
        trusted: vec!["127.0.0.61/32".parse().unwrap()],
        tcp: true,
        tls: true,
        ..Default::default()
    };
    config.listen_tls = Some("127.0.0.1:0".parse().unwrap());
    config.tls = Some(ringgate::config::TlsSettings {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
        versions: ringgate::config::TlsVersions::Tls13,
    });
    let gw = start_with(config, 2);
    let addr = gw.local_addr();
    let before = ringgate::metrics::render();
    let via = |source: &str, header: &[u8], user: &str| {
        let mut stream = connect_from(source, addr);
        stream.write_all(header).unwrap();
        let mut client = TestClient::from_stream(stream, ClientConfig::new(token_for(user, "d"), user, "d"));
        match client.next_event(T) {
            Some(ClientEvent::Authenticated(_)) => Ok(client),
            Some(ClientEvent::Closed { reason, .. }) => Err(Some(reason)),
            _ => Err(None),
        }
    };
    let v1 = |client: &str| format!("PROXY TCP4 {client} 10.0.0.1 40000 7000\r\n").into_bytes();
    let v2 = |client: [u8; 4]| {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.extend([0x21, 0x11, 0, 12]);
        h.extend(client);
        h.extend([10, 0, 0, 1, 0x9c, 0x40, 0x1b, 0x58]);
        h
    };
    let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";

    let _a = via("127.0.0.61", &v1("198.51.100.7"), "a").expect("a client behind the proxy");
    // That client address is at its cap (1); the proxy's own address is not what counts.
    assert_eq!(via("127.0.0.61", &v1("198.51.100.7"), "b").err(), Some(Some(ReasonCode::TOO_MANY_CONNECTIONS)));
    let _c = via("127.0.0.61", &v2([198, 51, 100, 8]), "c").expect("another client, by a v2 header");
    assert_eq!(via("127.0.0.61", &v2([198, 51, 100, 8]), "d").err(), Some(Some(ReasonCode::TOO_MANY_CONNECTIONS)));
    // The proxy's health checks (LOCAL) count under no address: two at once pass.
    let _h1 = via("127.0.0.61", local, "h1").expect("LOCAL");
    let _h2 = via("127.0.0.61", local, "h2").expect("a second LOCAL");
    // From anyone else a header is not taken: the bytes are a malformed frame.
    assert!(via("127.0.0.62", &v1("198.51.100.9"), "e").is_err(), "an untrusted source cannot claim an address");
    assert!(via("127.0.0.63", b"", "f").is_ok(), "a direct client from elsewhere is itself");
    // A trusted proxy's connection must start with a header.
    assert!(via("127.0.0.61", b"", "g").is_err(), "no header from the proxy");

    // TLS: the header first, then the handshake.
    let tls_config = tls_client(&cert);
    type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;
    let tls_login = |header: &[u8], user: &str| -> Option<Tls> {
        let mut tcp = connect_from("127.0.0.61", gw.tls_addr().unwrap());
        tcp.write_all(header).unwrap();
        tcp.set_read_timeout(Some(T)).unwrap();
        let conn = rustls::ClientConnection::new(tls_config.clone(), "localhost".try_into().unwrap()).unwrap();
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        let mut session = ringgate_codec::session::ClientSession::new(
            ClientConfig::new(token_for(user, "d"), user, "d"),
            Instant::now(),
        );
        if stream.write_all(&session.output().split()).and_then(|()| stream.flush()).is_err() {
            return None;
        }
        let mut input = bytes::BytesMut::new();
        let mut buf = [0u8; 4096];
        loop {
            match session.poll_event() {
                Some(ClientEvent::Authenticated(_)) => return Some(stream),
                Some(_) => return None,
                None => {}
            }
            match stream.read(&mut buf) {
                Ok(n) if n > 0 => {
                    input.extend_from_slice(&buf[..n]);
                    session.handle_input(&mut input, Instant::now());
                }
                _ => return None,
            }
        }
    };
    let _t1 = tls_login(&v2([203, 0, 113, 5]), "t1").expect("TLS behind a PROXY v2 header");
    assert!(tls_login(&v2([203, 0, 113, 5]), "t2").is_none(), "the same client address is at its cap over TLS too");
    let _t3 = tls_login(&v1("203.0.113.6"), "t3").expect("TLS behind a PROXY v1 header");

    let after = ringgate::metrics::render();
    let grew = |labels: &[&str]| {
        metric_sum(&after, "ringgate_proxy_headers_total", labels)
            - metric_sum(&before, "ringgate_proxy_headers_total", labels)
    };
    assert!(grew(&["result=\"client\""]) >= 7.0, "{after}");
    assert!(grew(&["result=\"local\""]) >= 2.0);
    assert!(grew(&["result=\"malformed\""]) >= 1.0);
}

/// A rustls client trusting the node's self-signed `cert`, offering ringgate's ALPN.
fn tls_client(cert: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile_certs(cert) {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ringgate::transport::tls::ALPN.to_vec()];
    Arc::new(config)
}

/// The PEM certificates in `pem`.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem).map(Result::unwrap).collect()
}

/// A WebSocket upgrade from `source` with `extra` header lines; the bytes the node sent
/// within `wait` (the 101, and a Close if it was refused after it).
fn ws_upgrade_from(source: &str, addr: SocketAddr, extra: &str, wait: Duration) -> (TcpStream, Vec<u8>) {
    let mut stream = connect_from(source, addr);
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    (stream, got)
}

/// The WebSocket close code in what a node sent after its 101, if any.
fn ws_close_code(bytes: &[u8]) -> Option<u16> {
    let head = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let mut rest = &bytes[head..];
    while rest.len() >= 2 {
        let (op, len) = (rest[0] & 0x0f, usize::from(rest[1] & 0x7f));
        let (start, len) = match len {
            126 => (4, usize::from(u16::from_be_bytes([rest[2], rest[3]]))),
            _ => (2, len),
        };
        if op == 0x8 {
            return Some(u16::from_be_bytes([rest[start], rest[start + 1]]));
        }
        rest = rest.get(start + len..)?;
    }
    None
}

/// Behind an HTTP proxy (trusted), a WebSocket counts under its X-Forwarded-For; from
/// anyone else the header is ignored.
fn forwarded_for(driver: IoDriver) {
    let mut config = support::config(driver);
    config.admission.max_connections_per_address = 1;
    config.listen_ws = Some("127.0.0.1:0".parse().unwrap());
    config.proxies =
        ringgate::config::ProxySettings { trusted: vec!["127.0.0.71/32".parse().unwrap()], ..Default::default() };
    let gw = start_with(config, 2);
    let ws = gw.ws_addr().unwrap();
    let quiet = Duration::from_millis(400);
    let refused = 4000 + u16::try_from(ReasonCode::TOO_MANY_CONNECTIONS.0).unwrap();
    let xff = |ip: &str| format!("X-Forwarded-For: 6.6.6.6, {ip}\r\n");

    let (_a, got) = ws_upgrade_from("127.0.0.71", ws, &xff("198.51.100.20"), quiet);
    assert!(got.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&got));
    assert_eq!(ws_close_code(&got), None, "the first from that client is held");
    let (_b, got) = ws_upgrade_from("127.0.0.71", ws, &xff("198.51.100.20"), quiet);
    assert_eq!(ws_close_code(&got), Some(refused), "the same forwarded client is over its cap");
    let (_c, got) = ws_upgrade_from("127.0.0.71", ws, &xff("198.51.100.21"), quiet);
    assert_eq!(ws_close_code(&got), None, "another forwarded client is not");
    // Without the header a trusted proxy's connections count under no address.
    let (_d, got) = ws_upgrade_from("127.0.0.71", ws, "", quiet);
    assert_eq!(ws_close_code(&got), None);
    let (_e, got) = ws_upgrade_from("127.0.0.71", ws, "", quiet);
    assert_eq!(ws_close_code(&got), None);
    // An untrusted source's header is ignored: it counts under its own address.
    let (_f, got) = ws_upgrade_from("127.0.0.72", ws, &xff("198.51.100.30"), quiet);
    assert_eq!(ws_close_code(&got), None);
    let (mut g, _) = ws_upgrade_from("127.0.0.72", ws, &xff("198.51.100.31"), Duration::ZERO);
    g.set_read_timeout(Some(T)).unwrap();
    let mut answer = Vec::new();
    let _ = g.read_to_end(&mut answer);
    assert!(answer.starts_with(b"HTTP/1.1 429"), "{}", String::from_utf8_lossy(&answer));
}

/// A TLS or WebSocket handshake not finished within session.handshake_timeout is closed
/// then, long before the auth deadline; a finished one waits for its Auth as before.
fn handshake_deadline(driver: IoDriver) {
    let dir = tempdir::Dir::new();
    write_cert(&dir);
    let mut config = support::config(driver);
    config.handshake_timeout = Duration::from_millis(500);
    config.session.auth_timeout = Duration::from_secs(10);
    config.listen_ws = Some("127.0.0.1:0".parse().unwrap());
    config.listen_tls = Some("127.0.0.1:0".parse().unwrap());
    config.tls = Some(ringgate::config::TlsSettings {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
        versions: ringgate::config::TlsVersions::Tls13,
    });
    let gw = start_with(config, 1);
    let before =
        metric_sum(&ringgate::metrics::render(), "ringgate_tls_failures_total", &["reason=\"handshake_timeout\""]);
    let closed_within = |mut stream: TcpStream, sent: &[u8]| {
        stream.write_all(sent).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let started = Instant::now();
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
        started.elapsed()
    };
    // A stalled ClientHello (nothing sent), and half a WebSocket upgrade request.
    let tls = closed_within(connect_from("127.0.0.81", gw.tls_addr().unwrap()), b"");
    assert!(tls >= Duration::from_millis(400) && tls < Duration::from_secs(3), "TLS closed after {tls:?}");
    let ws = closed_within(connect_from("127.0.0.81", gw.ws_addr().unwrap()), b"GET /ws HTTP/1.1\r\nHost: gw\r\n");
    assert!(ws >= Duration::from_millis(400) && ws < Duration::from_secs(3), "ws closed after {ws:?}");
    let after =
        metric_sum(&ringgate::metrics::render(), "ringgate_tls_failures_total", &["reason=\"handshake_timeout\""]);
    assert!(after >= before + 1.0);
    // A finished upgrade is past its handshake: still open well after the deadline.
    let (mut open, got) = ws_upgrade_from("127.0.0.82", gw.ws_addr().unwrap(), "", Duration::from_millis(1200));
    assert!(got.starts_with(b"HTTP/1.1 101") && ws_close_code(&got).is_none());
    open.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut buf = [0u8; 16];
    assert!(open.read(&mut buf).is_err(), "neither data nor EOF: the connection waits for its Auth");
}

/// `limits.max_memory`: a node whose anonymous RSS reaches it refuses new connections with
/// server_overloaded, fails /readyz saying why, and takes connections again by itself once
/// memory falls (the allocator trim hands the freed pages back). The limit is set by a
/// SIGHUP reload a few MiB above the idle node's RSS; held TLS connections (rustls's state is
/// ~9 KB each) push it over.
#[test]
fn the_memory_limit_stops_new_connections_and_recovers() {
    let dir = tempdir::Dir::new();
    let cert = write_cert(&dir);
    let (tcp, tls, admin) = (free_port(), free_port(), free_port());
    let path = dir.path().join("memory.toml");
    let text = |max_memory: &str| {
        format!(
            "[listen]\ntcp = \"127.0.0.1:{tcp}\"\ntls = \"127.0.0.1:{tls}\"\nadmin = \"127.0.0.1:{admin}\"\n\
             [tls]\ncert = \"{}\"\nkey = \"{}\"\n[io]\ndriver = \"epoll\"\nworkers = 1\n[auth]\nmode = \"none\"\n\
             [session]\nauth_timeout = \"120s\"\n[limits]\nmax_memory = \"{max_memory}\"\n{NO_ADDRESS_LIMITS}",
            dir.path().join("cert.pem").display(),
            dir.path().join("key.pem").display(),
        )
    };
    std::fs::write(&path, text("off")).unwrap();
    let (child, _) = spawn_gateway(&path);
    let child = ChildGuard(child);
    let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let (tcp, tls): (SocketAddr, SocketAddr) =
        (format!("127.0.0.1:{tcp}").parse().unwrap(), format!("127.0.0.1:{tls}").parse().unwrap());
    let rss = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        // What the limit measures: anonymous memory (not the binary's file pages).
        let kib = status.lines().find_map(|l| l.strip_prefix("RssAnon:")).unwrap();
        kib.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() * 1024
    };
    let pid = child.0.id();
    let idle = rss(pid);
    // At least the smallest limit a config may set (16 MiB).
    let limit_mib = (idle / (1 << 20) + 8).max(16);
    std::fs::write(&path, text(&format!("{limit_mib}MiB"))).unwrap();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success());
    assert!(
        eventually(T, || {
            metric_sum(&http(admin, "GET", "/metrics").1, "ringgate_memory_limit_bytes", &[])
                == (limit_mib << 20) as f64
        }),
        "the reloaded limit is in force"
    );
    assert!(login_from("127.0.0.101", tcp, "before", Some(String::new())).is_ok());

    let config = tls_client(&cert);
    let mut held = Vec::new();
    let mut high = false;
    for i in 0..6000 {
        let tcp_stream = connect_from(&format!("127.0.1.{}", i % 250 + 1), tls);
        tcp_stream.set_read_timeout(Some(T)).unwrap();
        let conn = rustls::ClientConnection::new(config.clone(), "localhost".try_into().unwrap()).unwrap();
        let mut stream = rustls::StreamOwned::new(conn, tcp_stream);
        if (0..10).all(|_| !stream.conn.is_handshaking() || stream.conn.complete_io(&mut stream.sock).is_ok())
            && !stream.conn.is_handshaking()
        {
            held.push(stream);
        }
        if i % 200 == 199 && http(admin, "GET", "/readyz").0 == 503 {
            high = true;
            break;
        }
    }
    assert!(high, "{} TLS connections held and RSS {} of {limit_mib} MiB", held.len(), rss(pid) >> 20);
    let (status, body) = http(admin, "GET", "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("max_memory"), "{body}");
    assert_eq!(login_from("127.0.0.102", tcp, "over", Some(String::new())).err(), Some(ReasonCode::SERVER_OVERLOADED));
    let metrics = http(admin, "GET", "/metrics").1;
    assert!(metric_sum(&metrics, "ringgate_admission_refused_total", &["reason=\"memory\""]) >= 1.0);

    drop(held);
    assert!(
        eventually(Duration::from_secs(40), || http(admin, "GET", "/readyz").0 == 200),
        "memory falls back under the limit by itself: RSS {} MiB of {limit_mib}",
        rss(pid) >> 20
    );
    assert!(login_from("127.0.0.103", tcp, "after", Some(String::new())).is_ok());
    let metrics = http(admin, "GET", "/metrics").1;
    assert!(metric_sum(&metrics, "ringgate_memory_trims_total", &[]) >= 1.0, "the allocator was trimmed");
}
