//! TLS and QUIC end to end, under both io drivers: a real rustls client over TCP and a real
//! quinn client (its own QUIC implementation, on tokio) speaking the client protocol through
//! the codec's client session.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringgate::config::IoDriver;
use ringgate::config::{TlsSettings, TlsVersions};
use ringgate::transport::tls::ALPN;
use ringgate_codec::ReasonCode;
use ringgate_codec::client::ClientFrame;
use ringgate_codec::session::{ClientConfig, ClientEvent, ClientSession};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use support::tempdir::Dir;
use support::{TestClient, eventually, token_for};

both_drivers!(
    tls_client_authenticates_pings_sends_and_receives,
    tls_refuses_a_wrong_alpn_and_plain_text,
    tls_certificates_reload_without_dropping_connections,
    tls_1_2_only_when_configured,
    tls_slow_consumer_is_closed_and_others_are_unaffected,
    quic_client_authenticates_pings_sends_and_receives,
    quic_key_updates_keep_the_connection,
    quic_thousand_connections_each_round_trip,
    quic_silent_client_is_closed_by_idle_timeout,
    quic_garbage_flood_does_not_disturb_established_connections,
    quic_kick_and_go_away_behave_as_on_tcp,
    quic_refuses_when_full_and_times_out_streamless_clients,
    quic_shutdown_closes_with_its_reason,
    quic_handshakes_beyond_the_limit_wait_in_line,
    quic_retry_keeps_abandoned_initials_from_holding_handshake_slots,
    quic_a_node_without_the_connection_resets_it,
    quic_a_wildcard_listener_answers_from_the_address_the_client_used,
    quic_per_address_limits_hold_from_the_handshake_on,
);

/// The process-wide sum of a counter (tests run in parallel, so only lower bounds hold).
fn metric(name: &str) -> f64 {
    support::metric_sum(&ringgate::metrics::render(), name, &[])
}

/// A gateway with TCP, TLS and QUIC listeners and a fresh self-signed certificate.
struct Node {
    gateway: ringgate::Gateway,
    dir: Dir,
    cert: Vec<u8>,
}

fn node_with(driver: IoDriver, tweak: impl FnOnce(&mut ringgate::Config)) -> Node {
    node_on(driver, 2, tweak)
}

/// A node of `workers` workers with TLS and QUIC listeners.
fn node_on(driver: IoDriver, workers: usize, tweak: impl FnOnce(&mut ringgate::Config)) -> Node {
    let dir = Dir::new();
    let cert = support::write_cert(&dir);
    let mut config = support::config(driver);
    config.listen_tls = Some("127.0.0.1:0".parse().unwrap());
    config.listen_quic = Some("127.0.0.1:0".parse().unwrap());
    config.tls = Some(TlsSettings {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
        versions: TlsVersions::Tls13,
    });
    tweak(&mut config);
    Node { gateway: support::start_with(config, workers), dir, cert }
}

fn node(driver: IoDriver) -> Node {
    node_with(driver, |_| {})
}

fn roots(cert_pem: &[u8]) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(cert_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

fn client_tls(cert_pem: &[u8], alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    client_tls_versions(cert_pem, alpn, &[&rustls::version::TLS13])
}

fn client_tls_versions(
    cert_pem: &[u8],
    alpn: &[u8],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots(cert_pem))
        .with_no_client_auth();
    // An empty `alpn`: offer none.
    config.alpn_protocols = if alpn.is_empty() { Vec::new() } else { vec![alpn.to_vec()] };
    Arc::new(config)
}

// ---------------------------------------------------------------------------------------
// TLS: a blocking rustls client.

struct TlsClient {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    session: ClientSession,
    input: BytesMut,
}

impl TlsClient {
    fn connect(addr: SocketAddr, cert_pem: &[u8], alpn: &[u8], user: &str) -> std::io::Result<TlsClient> {
        TlsClient::connect_with(addr, client_tls(cert_pem, alpn), user)
    }

    fn connect_with(addr: SocketAddr, config: Arc<rustls::ClientConfig>, user: &str) -> std::io::Result<TlsClient> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        let conn =
            rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).map_err(std::io::Error::other)?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        // Complete the handshake now so its failures show here.
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        let session = ClientSession::new(ClientConfig::new(token_for(user, "d1"), user, "d1"), Instant::now());
        let mut client = TlsClient { stream, session, input: BytesMut::new() };
        client.flush()?;
        Ok(client)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let out = self.session.output().split();
        self.stream.write_all(&out)?;
        self.stream.flush()
    }

    fn write_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        self.stream.flush().unwrap();
    }

    fn next_event(&mut self, timeout: Duration) -> Option<ClientEvent> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some(event) = self.session.poll_event() {
                return Some(event);
            }
            if Instant::now() >= deadline {
                return None;
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => {
                    self.input.extend_from_slice(&buf[..n]);
                    self.session.handle_input(&mut self.input, Instant::now());
                    self.flush().ok()?;
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return None,
            }
        }
    }

    fn login(&mut self) {
        match self.next_event(Duration::from_secs(5)) {
            Some(ClientEvent::Authenticated(_)) => {}
            other => panic!("expected AuthOk over TLS, got {other:?}"),
        }
    }

    /// Pings with a raw Ping frame and waits for the Pong bytes to arrive.
    fn ping(&mut self) {
        self.write_raw(&ClientFrame::Ping.to_bytes().unwrap());
        let mut buf = [0u8; 2];
        self.stream.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [0x02, 0x00], "a Pong");
    }

    fn echo(&mut self, payload: &[u8]) {
        let seq = self.session.send(None, payload, Instant::now()).unwrap();
        self.flush().unwrap();
        let mut got_push = false;
        while !support::echo_step(self.next_event(Duration::from_secs(5)), seq, payload, &mut got_push) {}
    }
}

fn tls_client_authenticates_pings_sends_and_receives(driver: IoDriver) {
    let node = node(driver);
    let addr = node.gateway.tls_addr().unwrap();
    let mut client = TlsClient::connect(addr, &node.cert, ALPN, "alice").unwrap();
    assert_eq!(client.stream.conn.alpn_protocol(), Some(ALPN));
    client.login();
    client.ping();
    for i in 0..20 {
        client.echo(format!("tls-{i}").as_bytes());
    }
    // A big payload crosses several TLS records.
    client.echo(&vec![7u8; 40_000]);
    // The plain listener still serves beside it.
    let (mut plain, _) = TestClient::login(node.gateway.local_addr(), "bob", "d1");
    plain.echo(b"plain");
    assert!(eventually(Duration::from_secs(2), || node.gateway.active_connections() == 2));
}

fn tls_refuses_a_wrong_alpn_and_plain_text(driver: IoDriver) {
    let node = node(driver);
    let addr = node.gateway.tls_addr().unwrap();
    let before = metric("ringgate_tls_failures_total");
    // A client offering another protocol gets the no_application_protocol alert.
    let err = TlsClient::connect(addr, &node.cert, b"h2", "carol").err().expect("wrong ALPN refused");
    assert!(err.to_string().contains("NoApplicationProtocol"), "{err}");
    // A client offering no ALPN at all is served (docs/protocol.md 2.5).
    let mut none = TlsClient::connect(addr, &node.cert, b"", "carl").expect("no ALPN accepted");
    assert_eq!(none.stream.conn.alpn_protocol(), None);
    none.login();
    drop(none);
    assert!(eventually(Duration::from_secs(2), || node.gateway.active_connections() == 0));
    // A plain-text protocol hello on the TLS port: rustls answers with an alert and the
    // connection closes; no frame of ours comes back.
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let session = ClientSession::new(ClientConfig::new(token_for("dave", "d1"), "dave", "d1"), Instant::now());
    let mut session = session;
    raw.write_all(&session.output().split()).unwrap();
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert!(got.first().is_none_or(|&b| b == 0x15), "only a TLS alert record may come back: {got:02x?}");
    assert!(eventually(Duration::from_secs(2), || { metric("ringgate_tls_failures_total") >= before + 2.0 }));
    // Neither disturbed the node: a good client still gets through.
    let mut good = TlsClient::connect(addr, &node.cert, ALPN, "erin").unwrap();
    good.login();
    good.echo(b"still fine");
    assert!(eventually(Duration::from_secs(2), || node.gateway.active_connections() == 1));
}

fn tls_certificates_reload_without_dropping_connections(driver: IoDriver) {
    let node = node(driver);
    let addr = node.gateway.tls_addr().unwrap();
    let mut old_client = TlsClient::connect(addr, &node.cert, ALPN, "frank").unwrap();
    old_client.login();
    // Renew: new files at the same paths, then reload.
    let new_cert = support::write_cert(&node.dir);
    let mut config = support::config(driver);
    config.listen_tls = Some("127.0.0.1:0".parse().unwrap());
    config.listen_quic = Some("127.0.0.1:0".parse().unwrap());
    config.tls = Some(TlsSettings {
        cert: node.dir.path().join("cert.pem"),
        key: node.dir.path().join("key.pem"),
        versions: TlsVersions::Tls13,
    });
    let restart = node.gateway.reload(config.clone());
    assert!(!restart.iter().any(|k| k.starts_with("tls")), "{restart:?}");
    // New handshakes present the new certificate: a client trusting only the old one fails.
    assert!(eventually(Duration::from_secs(2), || TlsClient::connect(addr, &node.cert, ALPN, "x").is_err()));
    let mut new_client = TlsClient::connect(addr, &new_cert, ALPN, "grace").unwrap();
    new_client.login();
    new_client.echo(b"new cert");
    // The connection made before the reload is still up.
    old_client.echo(b"old connection survives");
    // QUIC handshakes use the new certificate too.
    let quic = node.gateway.quic_addr().unwrap();
    rt().block_on(async {
        assert!(QuicClient::connect(quic, &node.cert, "y").await.is_err(), "old certificate still served on QUIC");
        let mut c = QuicClient::connect(quic, &new_cert, "henry").await.unwrap();
        c.login().await;
    });
    // A broken pair is refused and the current one stays.
    std::fs::write(node.dir.path().join("key.pem"), "garbage").unwrap();
    let restart = node.gateway.reload(config);
    assert!(restart.iter().any(|k| k.starts_with("tls")), "{restart:?}");
    let mut after = TlsClient::connect(addr, &new_cert, ALPN, "ivan").unwrap();
    after.login();
}

fn tls_1_2_only_when_configured(driver: IoDriver) {
    let tls12 = [&rustls::version::TLS12];
    // The default is TLS 1.3 only: a TLS 1.2-only client is refused.
    let strict = node(driver);
    let addr = strict.gateway.tls_addr().unwrap();
    let err = TlsClient::connect_with(addr, client_tls_versions(&strict.cert, ALPN, &tls12), "old").err();
    assert!(err.is_some(), "TLS 1.2 accepted by a TLS 1.3-only node");
    // With versions = ["1.2", "1.3"] the same client gets in and talks the protocol.
    let lenient = node_with(driver, |c| {
        if let Some(tls) = c.tls.as_mut() {
            tls.versions = TlsVersions::Tls12And13;
        }
    });
    let addr = lenient.gateway.tls_addr().unwrap();
    let mut old = TlsClient::connect_with(addr, client_tls_versions(&lenient.cert, ALPN, &tls12), "old").unwrap();
    assert_eq!(old.stream.conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    old.login();
    old.echo(b"over TLS 1.2");
}

// ---------------------------------------------------------------------------------------
// QUIC: a quinn client on tokio.

/// `eventually` for async tests: the client's QUIC stack runs on the same thread, so the
/// wait must yield to it.
async fn eventually_async(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn quinn_endpoint(cert_pem: &[u8]) -> quinn::Endpoint {
    quinn_endpoint_from(cert_pem, "127.0.0.1")
}

/// A client endpoint whose packets come from `source` (a 127.x address).
fn quinn_endpoint_from(cert_pem: &[u8], source: &str) -> quinn::Endpoint {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client_tls(cert_pem, ALPN)).unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(None);
    config.transport_config(Arc::new(transport));
    // A receive buffer that holds a burst of handshake flights: the kernel default drops
    // them when hundreds of handshakes answer at once, and loss backs off for seconds.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    socket.set_recv_buffer_size(4 << 20).unwrap();
    socket.bind(&SocketAddr::new(source.parse().unwrap(), 0).into()).unwrap();
    let runtime = Arc::new(quinn::TokioRuntime);
    let mut endpoint = quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket.into(), runtime).unwrap();
    endpoint.set_default_client_config(config);
    endpoint
}

struct QuicClient {
    _endpoint: Option<quinn::Endpoint>,
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    session: ClientSession,
    input: BytesMut,
}

impl QuicClient {
    async fn connect(addr: SocketAddr, cert_pem: &[u8], user: &str) -> Result<QuicClient, String> {
        let endpoint = quinn_endpoint(cert_pem);
        let mut client = QuicClient::connect_on(&endpoint, addr, user).await?;
        client._endpoint = Some(endpoint);
        Ok(client)
    }

    async fn connect_on(endpoint: &quinn::Endpoint, addr: SocketAddr, user: &str) -> Result<QuicClient, String> {
        let conn = endpoint.connect(addr, "localhost").map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
        let (send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let session = ClientSession::new(ClientConfig::new(token_for(user, "d1"), user, "d1"), Instant::now());
        let mut client = QuicClient { _endpoint: None, conn, send, recv, session, input: BytesMut::new() };
        client.flush().await;
        Ok(client)
    }

    async fn flush(&mut self) {
        let out = self.session.output().split();
        if !out.is_empty() {
            let _ = self.send.write_all(&out).await;
        }
    }

    async fn next_event(&mut self, timeout: Duration) -> Option<ClientEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some(event) = self.session.poll_event() {
                return Some(event);
            }
            match tokio::time::timeout_at(deadline, self.recv.read(&mut buf)).await {
                Ok(Ok(Some(n))) => {
                    self.input.extend_from_slice(&buf[..n]);
                    self.session.handle_input(&mut self.input, Instant::now());
                    self.flush().await;
                }
                _ => return None,
            }
        }
    }

    async fn login(&mut self) {
        match self.next_event(Duration::from_secs(5)).await {
            Some(ClientEvent::Authenticated(_)) => {}
            other => panic!("expected AuthOk over QUIC, got {other:?}"),
        }
    }

    async fn ping(&mut self) {
        self.send.write_all(&ClientFrame::Ping.to_bytes().unwrap()).await.unwrap();
        let mut buf = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(5), self.recv.read_exact(&mut buf)).await.unwrap().unwrap();
        assert_eq!(buf, [0x02, 0x00], "a Pong");
    }

    async fn echo(&mut self, payload: &[u8]) {
        let seq = self.session.send(None, payload, Instant::now()).unwrap();
        self.flush().await;
        let mut got_push = false;
        while !support::echo_step(self.next_event(Duration::from_secs(5)).await, seq, payload, &mut got_push) {}
    }

    /// Reads until the server's Close; its reason, and the QUIC close code that followed.
    async fn closed(&mut self, timeout: Duration) -> (Option<ReasonCode>, Option<u64>) {
        let mut reason = None;
        while let Some(event) = self.next_event(timeout).await {
            if let ClientEvent::Closed { reason: r, .. } = event {
                reason = Some(r);
                break;
            }
        }
        let code = match tokio::time::timeout(timeout, self.conn.closed()).await {
            Ok(quinn::ConnectionError::ApplicationClosed(close)) => Some(close.error_code.into_inner()),
            _ => None,
        };
        (reason, code)
    }
}

fn quic_client_authenticates_pings_sends_and_receives(driver: IoDriver) {
    let node = node(driver);
    let addr = node.gateway.quic_addr().unwrap();
    rt().block_on(async {
        let mut client = QuicClient::connect(addr, &node.cert, "alice").await.unwrap();
        client.login().await;
        client.ping().await;
        for i in 0..20 {
            client.echo(format!("quic-{i}").as_bytes()).await;
        }
        client.echo(&vec![9u8; 40_000]).await;
        assert!(eventually_async(Duration::from_secs(2), || node.gateway.active_connections() == 1).await);
        // A client's Close ends it with its reason, as on TCP; the server then finishes the
        // stream and closes the QUIC connection with the reason's code.
        client.session.close(ReasonCode::NORMAL);
        client.flush().await;
        assert!(eventually_async(Duration::from_secs(3), || node.gateway.active_connections() == 0).await);
        let (_, code) = client.closed(Duration::from_secs(3)).await;
        assert_eq!(code, Some(u64::from(ReasonCode::NORMAL.0)));
    });
    assert!(node.gateway.closed_with(ReasonCode::NORMAL) >= 1);
}

/// The server lets go of rustls after the handshake and builds the next key phase's keys
/// only when the peer first uses them (`transport::quic_tls`): key updates, several in a row,
/// must still work in both directions.
fn quic_key_updates_keep_the_connection(driver: IoDriver) {
    let node = node(driver);
    let addr = node.gateway.quic_addr().unwrap();
    rt().block_on(async {
        let mut client = QuicClient::connect(addr, &node.cert, "keys").await.unwrap();
        client.login().await;
        client.echo(b"phase 0").await;
        for phase in 1..=3 {
            // quinn ignores an update until the previous one's old keys are discarded (3 PTOs
            // after the new phase is acknowledged).
            tokio::time::sleep(Duration::from_millis(300)).await;
            client.conn.force_key_update();
            client.echo(format!("phase {phase}").as_bytes()).await;
            client.ping().await;
        }
    });
    assert_eq!(node.gateway.active_connections(), 1);
}

fn quic_thousand_connections_each_round_trip(driver: IoDriver) {
    const N: usize = 1000;
    let node = node(driver);
    let addr = node.gateway.quic_addr().unwrap();
    rt().block_on(async {
        // One client endpoint (one UDP socket) for all: only the connection IDs tell the
        // connections apart, so the gateway's steering by CID is what spreads them. At most
        // 100 handshakes at a time (a client fleet ramps up too); all 1,000 stay open.
        let endpoint = quinn_endpoint(&node.cert);
        let gate = Arc::new(tokio::sync::Semaphore::new(100));
        let tasks: Vec<_> = (0..N)
            .map(|i| {
                let (endpoint, gate) = (endpoint.clone(), gate.clone());
                tokio::spawn(async move {
                    let permit = gate.acquire_owned().await.unwrap();
                    let mut c = QuicClient::connect_on(&endpoint, addr, &format!("u{i}")).await?;
                    c.login().await;
                    drop(permit);
                    Ok::<_, String>(c)
                })
            })
            .collect();
        let mut clients = Vec::new();
        for task in tasks {
            clients.push(task.await.unwrap().unwrap());
        }
        assert_eq!(node.gateway.active_connections(), N as u64);
        // Every one of them round-trips, all at once.
        let echoes: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(i, mut c)| {
                tokio::spawn(async move {
                    c.echo(format!("round-{i}").as_bytes()).await;
                    c
                })
            })
            .collect();
        let mut clients = Vec::new();
        for echo in echoes {
            clients.push(echo.await.unwrap());
        }
        // Both workers hold some: steering spreads connections of one 4-tuple.
        let per_worker: Vec<u64> =
            node.gateway.stats().iter().map(|s| s.active.load(std::sync::atomic::Ordering::Relaxed)).collect();
        assert!(per_worker.iter().all(|&n| n > N as u64 / 5), "{per_worker:?}");
        drop(clients);
    });
}

fn quic_silent_client_is_closed_by_idle_timeout(driver: IoDriver) {
    let node = node_with(driver, |c| {
        c.session.heartbeat_interval = Duration::from_millis(300);
        c.session.idle_multiple = 2;
    });
    let addr = node.gateway.quic_addr().unwrap();
    rt().block_on(async {
        let mut silent = QuicClient::connect(addr, &node.cert, "silent").await.unwrap();
        silent.login().await;
        let mut alive = QuicClient::connect(addr, &node.cert, "alive").await.unwrap();
        alive.login().await;
        // `alive` heartbeats; `silent` says nothing.
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(1200) {
            alive.ping().await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let (reason, code) = silent.closed(Duration::from_secs(3)).await;
        assert_eq!(reason, Some(ReasonCode::IDLE_TIMEOUT));
        assert_eq!(code, Some(u64::from(ReasonCode::IDLE_TIMEOUT.0)), "the QUIC close carries the reason code");
        alive.echo(b"still here").await;
    });
}

fn quic_garbage_flood_does_not_disturb_established_connections(driver: IoDriver) {
    let node = node(driver);
    let addr = node.gateway.quic_addr().unwrap();
    rt().block_on(async {
        let mut client = QuicClient::connect(addr, &node.cert, "steady").await.unwrap();
        client.login().await;
        client.echo(b"before").await;
        // 20,000 datagrams of junk: random bytes, fake short headers naming each worker,
        // fake Initials of every size.
        let flood = std::thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut buf = [0u8; 1400];
            for i in 0..20_000u32 {
                for b in buf.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
                let len = 1 + (i as usize * 37) % buf.len();
                match i % 3 {
                    0 => buf[0] = 0x40 | (buf[0] & 0x3f),
                    1 => buf[0] = 0xc0,
                    _ => {}
                }
                let _ = socket.send_to(&buf[..len], addr);
            }
        });
        let started = Instant::now();
        let mut rounds = 0;
        while !flood.is_finished() || rounds == 0 {
            client.echo(format!("during-{rounds}").as_bytes()).await;
            rounds += 1;
        }
        flood.join().unwrap();
        client.echo(b"after").await;
        assert!(started.elapsed() < Duration::from_secs(20));
        // New clients still get in.
        let mut late = QuicClient::connect(addr, &node.cert, "late").await.unwrap();
        late.login().await;
        assert_eq!(node.gateway.active_connections(), 2);
        // A client closing its QUIC connection outright (no Close frame) is gone at once.
        late.conn.close(0u32.into(), b"bye");
        client.conn.close(0u32.into(), b"bye");
        assert!(eventually_async(Duration::from_secs(3), || node.gateway.active_connections() == 0).await);
    });
}

fn quic_kick_and_go_away_behave_as_on_tcp(driver: IoDriver) {
    let node = node_with(driver, |c| {
        c.device_policy = ringgate::config::DevicePolicy::OnePerUser;
        c.drain.delay = Duration::ZERO;
        c.drain.deadline = Duration::from_secs(5);
    });
    let addr = node.gateway.quic_addr().unwrap();
    rt().block_on(async {
        // The same user logging in over TCP replaces the QUIC session: Kick, then Close.
        let mut first = QuicClient::connect(addr, &node.cert, "kim").await.unwrap();
        first.login().await;
        let (_tcp, _) = TestClient::login(node.gateway.local_addr(), "kim", "d2");
        let mut kicked = false;
        while let Some(event) = first.next_event(Duration::from_secs(5)).await {
            match event {
                ClientEvent::Kicked(k) => {
                    assert_eq!(k.reason, ReasonCode::REPLACED);
                    kicked = true;
                }
                ClientEvent::Closed { reason, .. } => {
                    assert_eq!(reason, ReasonCode::REPLACED);
                    break;
                }
                _ => {}
            }
        }
        assert!(kicked);
    });
    // A draining node tells QUIC clients to go away; they finish and close.
    assert!(eventually(Duration::from_secs(5), || node.gateway.active_connections() == 0));
    let quic_user = std::thread::spawn({
        let cert = node.cert.clone();
        move || {
            rt().block_on(async {
                let mut c = QuicClient::connect(addr, &cert, "lee").await.unwrap();
                c.login().await;
                let mut told = false;
                // After GoAway the client session closes by itself (nothing in flight).
                while let Some(event) = c.next_event(Duration::from_secs(10)).await {
                    match event {
                        ClientEvent::GoAway { .. } => told = true,
                        ClientEvent::Closed { .. } => break,
                        _ => {}
                    }
                }
                c.flush().await;
                let _ = tokio::time::timeout(Duration::from_secs(3), c.conn.closed()).await;
                told
            })
        }
    });
    assert!(eventually(Duration::from_secs(5), || node.gateway.active_connections() == 1));
    let report = node.gateway.drain();
    assert!(quic_user.join().unwrap(), "no GoAway over QUIC");
    assert_eq!((report.connections, report.left_at_deadline), (1, 0));
}

/// A full node refuses a QUIC connection at once (CONNECTION_REFUSED, counted) rather than
/// letting it time out; a client that completes the handshake but never opens its stream is
/// closed at the auth timeout (counted as a failed handshake).
fn quic_refuses_when_full_and_times_out_streamless_clients(driver: IoDriver) {
    let full = node_with(driver, |c| c.max_connections = 0);
    let refused_before = metric("ringgate_quic_refused_total");
    rt().block_on(async {
        let endpoint = quinn_endpoint(&full.cert);
        let started = Instant::now();
        let err = endpoint.connect(full.gateway.quic_addr().unwrap(), "localhost").unwrap().await.err();
        assert!(
            matches!(&err, Some(quinn::ConnectionError::ConnectionClosed(c))
                if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2), "refused at once");
    });
    assert!(metric("ringgate_quic_refused_total") >= refused_before + 1.0);

    let node = node_with(driver, |c| c.session.auth_timeout = Duration::from_millis(400));
    let failed_before = metric("ringgate_quic_handshake_failures_total");
    rt().block_on(async {
        let endpoint = quinn_endpoint(&node.cert);
        let conn = endpoint.connect(node.gateway.quic_addr().unwrap(), "localhost").unwrap().await.unwrap();
        // The handshake is done; the client never opens its stream.
        let closed = tokio::time::timeout(Duration::from_secs(3), conn.closed()).await.expect("closed by the server");
        match closed {
            quinn::ConnectionError::ApplicationClosed(c) => {
                assert_eq!(c.error_code.into_inner(), u64::from(ReasonCode::AUTH_TIMEOUT.0));
            }
            other => panic!("expected the auth timeout's close, got {other:?}"),
        }
    });
    assert!(metric("ringgate_quic_handshake_failures_total") >= failed_before + 1.0);
    assert_eq!(node.gateway.active_connections(), 0);
}

/// Stopping the node closes its QUIC connections with `server_shutdown`: the Close frame in
/// the stream, then the QUIC close with the same code.
fn quic_shutdown_closes_with_its_reason(driver: IoDriver) {
    let Node { gateway, dir: _dir, cert } = node(driver);
    let addr = gateway.quic_addr().unwrap();
    rt().block_on(async {
        let mut client = QuicClient::connect(addr, &cert, "stay").await.unwrap();
        client.login().await;
        let stopping = std::thread::spawn(move || gateway.shutdown());
        let (reason, code) = client.closed(Duration::from_secs(5)).await;
        assert_eq!(reason, Some(ReasonCode::SERVER_SHUTDOWN));
        assert_eq!(code, Some(u64::from(ReasonCode::SERVER_SHUTDOWN.0)));
        stopping.join().unwrap();
    });
}

/// With two handshake slots per worker, 100 clients connecting at once all get in: the rest
/// wait in line for a slot instead of being refused.
fn quic_handshakes_beyond_the_limit_wait_in_line(driver: IoDriver) {
    const N: usize = 100;
    let node = node_with(driver, |c| c.quic.max_handshakes = 2);
    let addr = node.gateway.quic_addr().unwrap();
    rt().block_on(async {
        let endpoint = quinn_endpoint(&node.cert);
        let tasks: Vec<_> = (0..N)
            .map(|i| {
                let endpoint = endpoint.clone();
                tokio::spawn(async move {
                    let mut c = QuicClient::connect_on(&endpoint, addr, &format!("line{i}")).await?;
                    c.login().await;
                    Ok::<_, String>(c)
                })
            })
            .collect();
        let mut clients = Vec::new();
        for task in tasks {
            clients.push(task.await.unwrap());
        }
        let failed: Vec<_> = clients.iter().filter_map(|c| c.as_ref().err()).collect();
        assert!(failed.is_empty(), "{} of {N} failed: {:?}", failed.len(), failed.first());
        assert!(eventually_async(Duration::from_secs(2), || node.gateway.active_connections() == N as u64).await);
    });
}

/// 600 Initials that are never followed up (each from its own port: an attacker who sends
/// the first packet and does no crypto) while a node runs 8 handshakes and asks for a Retry
/// from 4: they cost a Retry packet each and hold no slot, so a real client still logs in
/// at once (before Retry, 600 such Initials made a handshake take ~9 s).
fn quic_retry_keeps_abandoned_initials_from_holding_handshake_slots(driver: IoDriver) {
    let node = node_with(driver, |c| {
        c.quic.max_handshakes = 8;
        c.quic.retry_above = 4;
    });
    let addr = node.gateway.quic_addr().unwrap();
    let retries_before = metric("ringgate_quic_retries_total");
    // The Initials, made by quinn-proto's client side and sent from sockets then dropped.
    let client_crypto = quinn_proto::crypto::rustls::QuicClientConfig::try_from(client_tls(&node.cert, ALPN)).unwrap();
    let client_config = quinn_proto::ClientConfig::new(Arc::new(client_crypto));
    let mut sockets = Vec::new();
    for _ in 0..600 {
        let mut endpoint =
            quinn_proto::Endpoint::new(Arc::new(quinn_proto::EndpointConfig::default()), None, false, None);
        let (_, mut conn) = endpoint.connect(Instant::now(), client_config.clone(), addr, "localhost").unwrap();
        let mut buf = Vec::new();
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        while let Some(transmit) = conn.poll_transmit(Instant::now(), 1, &mut buf) {
            socket.send_to(&buf[..transmit.size], addr).unwrap();
            buf.clear();
        }
        sockets.push(socket);
    }
    rt().block_on(async {
        let started = Instant::now();
        let mut client = QuicClient::connect(addr, &node.cert, "legit").await.expect("a real client connects");
        client.login().await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "a login under the flood took {took:?}");
    });
    assert!(metric("ringgate_quic_retries_total") >= retries_before + 500.0, "the Initials got Retries");
    drop(sockets);
}

/// Nodes share the stateless-reset key: when a balancer moves a client's packets to a node
/// that does not hold its connection, that node's reset ends the connection at once instead
/// of the client waiting out its idle timeout.
fn quic_a_node_without_the_connection_resets_it(driver: IoDriver) {
    let key = b"one stateless-reset key for every node".to_vec();
    let a = node_with(driver, |c| c.quic.reset_key = Some(key.clone()));
    let b = node_with(driver, |c| c.quic.reset_key = Some(key.clone()));
    let (a_addr, b_addr) = (a.gateway.quic_addr().unwrap(), b.gateway.quic_addr().unwrap());
    rt().block_on(async {
        // The "balancer": a UDP relay that forwards the client's datagrams to node A, and to
        // node B once `target` is switched; replies go back to the client.
        let relay = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let relay_addr = relay.local_addr().unwrap();
        let target = Arc::new(std::sync::Mutex::new(a_addr));
        let forward = tokio::spawn({
            let (relay, target) = (relay.clone(), target.clone());
            async move {
                let mut client: Option<SocketAddr> = None;
                let mut buf = vec![0u8; 65_536];
                loop {
                    let Ok((n, from)) = relay.recv_from(&mut buf).await else { return };
                    let to = if from == a_addr || from == b_addr {
                        client
                    } else {
                        client = Some(from);
                        Some(*target.lock().unwrap())
                    };
                    if let Some(to) = to {
                        let _ = relay.send_to(&buf[..n], to).await;
                    }
                }
            }
        });
        let mut client = QuicClient::connect(relay_addr, &a.cert, "moved").await.unwrap();
        client.login().await;
        client.echo(b"through the relay to node A").await;
        *target.lock().unwrap() = b_addr;
        let started = Instant::now();
        // A Send big enough that node B may answer it with a reset (it never answers tiny
        // packets, so resets cannot be used to amplify).
        client.session.send(None, &[7u8; 300], Instant::now()).unwrap();
        client.flush().await;
        let closed =
            tokio::time::timeout(Duration::from_secs(5), client.conn.closed()).await.expect("reset, not idle timeout");
        assert!(matches!(closed, quinn::ConnectionError::Reset), "{closed:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "reset took {:?}", started.elapsed());
        forward.abort();
    });
}

/// A QUIC listener on 0.0.0.0 answers from the address each client sent to (as behind
/// LVS-DR, where clients address a VIP the host also holds): a client of 127.0.0.2 gets its
/// answers from 127.0.0.2, not from the host's primary loopback address, which a QUIC client
/// would drop as coming from an unknown peer.
fn quic_a_wildcard_listener_answers_from_the_address_the_client_used(driver: IoDriver) {
    let node = node_with(driver, |c| c.listen_quic = Some("0.0.0.0:0".parse().unwrap()));
    let port = node.gateway.quic_addr().unwrap().port();
    rt().block_on(async {
        for ip in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
            let addr = SocketAddr::new(ip.parse().unwrap(), port);
            let mut client = tokio::time::timeout(Duration::from_secs(5), QuicClient::connect(addr, &node.cert, ip))
                .await
                .unwrap_or_else(|_| panic!("no handshake through {addr}"))
                .unwrap();
            client.login().await;
            client.echo(ip.as_bytes()).await;
        }
    });
}

/// A TLS client that stops reading is closed as a slow consumer like a TCP one: rustls holds
/// at most one record's worth for it (`transport::tls::BUFFER_LIMIT`), the rest waits where
/// the session's `max_outbound` limit sees it.
fn tls_slow_consumer_is_closed_and_others_are_unaffected(driver: IoDriver) {
    let node = node_with(driver, |c| c.session.max_outbound = 64 * 1024);
    let mut slow = TlsClient::connect(node.gateway.tls_addr().unwrap(), &node.cert, ALPN, "slowtls").unwrap();
    slow.login();
    // From here on `slow` never reads.
    let (mut pusher, _) = TestClient::login(node.gateway.local_addr(), "pusher", "d1");
    let payload = vec![7u8; 32 * 1024];
    let mut sent = 0;
    while node.gateway.closed_with(ReasonCode::SLOW_CONSUMER) == 0 && sent < 4000 {
        let seq = pusher.send(Some("user:slowtls"), &payload);
        loop {
            match pusher.next_event(Duration::from_secs(5)) {
                Some(ClientEvent::Ack { seq: s, .. }) if s == seq => break,
                Some(_) => {}
                None => panic!("pusher got no ack"),
            }
        }
        sent += 1;
    }
    assert!(
        eventually(Duration::from_secs(5), || node.gateway.closed_with(ReasonCode::SLOW_CONSUMER) == 1),
        "the slow TLS client was not closed after {sent} pushes of 32 KiB"
    );
    pusher.echo(b"pusher unaffected");
    drop(slow);
}

/// QUIC connections count against their address's limits like TCP's. A validated address
/// (here: a Retry, asked for once a handshake is running) counts from the start of its
/// handshake, and gives its place back when the handshake ends without a connection (no
/// stream before the auth deadline); an address not validated is only checked (a spoofer
/// must not use up another address's limits) and counts once the worker takes the
/// connection. Over a limit a client is refused (CONNECTION_REFUSED) while another address
/// connects.
fn quic_per_address_limits_hold_from_the_handshake_on(driver: IoDriver) {
    // One worker: the Retry threshold counts the handshakes of one endpoint.
    let node = node_on(driver, 1, |c| {
        c.admission.max_connections_per_address = 2;
        c.admission.max_unauthenticated_per_address = 1;
        c.session.auth_timeout = Duration::from_millis(600);
        c.quic.retry_above = 1;
    });
    let addr = node.gateway.quic_addr().unwrap();
    let refused = |err: Option<quinn::ConnectionError>| {
        matches!(&err, Some(quinn::ConnectionError::ConnectionClosed(c))
            if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED)
    };
    let before = metric("ringgate_admission_refused_total");
    rt().block_on(async {
        let here = quinn_endpoint_from(&node.cert, "127.0.0.91");
        // The first handshake (not validated: nothing runs yet) never opens its stream. It
        // holds a handshake, so the next clients answer a Retry first.
        let streamless = here.connect(addr, "localhost").unwrap().await.unwrap();
        // The second, validated, holds the address's one unauthenticated place...
        let second = here.connect(addr, "localhost").unwrap().await.unwrap();
        let err = here.connect(addr, "localhost").unwrap().await.err();
        assert!(refused(err), "a third connection not logged in from the address");
        // ...until the auth deadline closes both; then the place is free again.
        for conn in [streamless, second] {
            tokio::time::timeout(Duration::from_secs(3), conn.closed()).await.expect("closed at the deadline");
        }
        let mut a = QuicClient::connect_on(&here, addr, "qa").await.unwrap();
        a.login().await;
        let mut b = QuicClient::connect_on(&here, addr, "qb").await.unwrap();
        b.login().await;
        let err = here.connect(addr, "localhost").unwrap().await.err();
        assert!(refused(err), "a third connection from the address is over its cap (2)");
        let elsewhere = quinn_endpoint_from(&node.cert, "127.0.0.92");
        let mut c = QuicClient::connect_on(&elsewhere, addr, "qc").await.unwrap();
        c.login().await;
        a.conn.close(0u32.into(), b"");
        drop(a);
        let mut again = None;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if let Ok(client) = QuicClient::connect_on(&here, addr, "qd").await {
                again = Some(client);
                break;
            }
        }
        again.expect("the address may connect again once one of its connections closed").login().await;
    });
    assert!(metric("ringgate_admission_refused_total") >= before + 2.0);
}
