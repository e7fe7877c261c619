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

both_drivers!(per_address_caps, new_connection_rate, flapping_ban, worker_caps);

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
