//! Helpers for end-to-end tests: an in-process gateway on port 0 and a blocking client
//! built on the codec's client session.
#![allow(dead_code)]

pub mod dns;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use ringgate::auth::token::{self, Claims};
use ringgate::config::IoDriver;
use ringgate::{Config, Gateway, listener};
use ringgate_codec::client::{AuthOk, ClientDecoder, ClientFrame};
use ringgate_codec::session::{ClientConfig, ClientEvent, ClientSession, ClientState};
use ringgate_codec::{Decoded, ReasonCode};

pub const KID: &str = "k1";
pub const SECRET: &[u8] = b"test-secret-0123456789";

/// Runs `$body(driver)` once per io driver, as two tests.
#[macro_export]
macro_rules! both_drivers {
    ($($name:ident),* $(,)?) => {
        mod io_uring {
            $( #[test] fn $name() { super::$name(ringgate::config::IoDriver::IoUring) } )*
        }
        mod epoll {
            $( #[test] fn $name() { super::$name(ringgate::config::IoDriver::Epoll) } )*
        }
    };
}

pub fn config(driver: IoDriver) -> Config {
    let mut config = Config::parse(&format!(
        "[node]\nid = \"test-node\"\n[auth]\nmode = \"token\"\n[auth.keys]\n{KID} = \"{}\"\n",
        std::str::from_utf8(SECRET).unwrap()
    ))
    .unwrap();
    config.io_driver = driver;
    config.listen_tcp = "127.0.0.1:0".parse().unwrap();
    config.timer_tick = Duration::from_millis(20);
    // Tests open thousands of connections from 127.0.0.1 at once; the per-address limits
    // have tests of their own (admission.rs).
    config.admission = ringgate::config::AdmissionLimits {
        max_connections_per_address: 1_000_000,
        max_unauthenticated_per_address: 1_000_000,
        new_connections_per_address: 1_000_000,
        new_connections_burst: 1_000_000,
        flapping_failures: 0,
        max_unauthenticated: 1_000_000,
        max_tls_handshakes: 1_000_000,
        ..config.admission
    };
    config
}

/// `[limits]` lines that lift the per-address limits, for config files of child processes
/// that open many connections from 127.0.0.1.
pub const NO_ADDRESS_LIMITS: &str = "max_connections_per_address = 1000000\nmax_unauthenticated_per_address = 1000000\n\
    new_connections_per_address = 1000000\nnew_connections_burst = 1000000\nflapping_failures = 0\n\
    max_unauthenticated = 1000000\nmax_tls_handshakes = 1000000\n";

/// TCP links to one backend at `addr`, with the timings tests use (window 64, 1 MiB link
/// buffer, 500 ms connect, re-dial 20-200 ms, 5 s request timeout and ping interval); a test
/// changes what it exercises with struct update syntax.
pub fn static_backend(addr: SocketAddr) -> ringgate::config::BackendConfig {
    ringgate::config::BackendConfig {
        discovery: ringgate::config::Discovery::Static(vec![addr]),
        window: 64,
        link_buffer: 1 << 20,
        connect_timeout: Duration::from_millis(500),
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        request_timeout: Duration::from_secs(5),
        ping_interval: Duration::from_secs(5),
    }
}

pub fn start_with(config: Config, workers: usize) -> Gateway {
    let listeners = listener::bind_group(config.listen_tcp, workers, 4096).unwrap();
    Gateway::start(config, listeners).unwrap()
}

pub fn start(driver: IoDriver) -> Gateway {
    start_with(config(driver), 2)
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub fn token_for(user: &str, device: &str) -> String {
    token_on(user, device, "android")
}

/// A token for `user` on `device` of `platform` ("ios", "android", "web", ...).
pub fn token_on(user: &str, device: &str, platform: &str) -> String {
    let claims = Claims { sub: user.into(), dev: device.into(), plat: platform.into(), exp: unix_now() + 3600 };
    token::mint(KID, SECRET, &claims)
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub struct TestClient {
    pub stream: TcpStream,
    pub session: ClientSession,
    input: BytesMut,
    eof: bool,
}

impl TestClient {
    pub fn connect_with(addr: SocketAddr, config: ClientConfig) -> TestClient {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        TestClient::from_stream(stream, config)
    }

    /// A client on an already connected `stream` (its Auth is sent at once).
    pub fn from_stream(stream: TcpStream, config: ClientConfig) -> TestClient {
        let mut client = TestClient {
            stream,
            session: ClientSession::new(config, Instant::now()),
            input: BytesMut::new(),
            eof: false,
        };
        client.flush();
        client
    }

    /// Connects and waits for AuthOk, on a device of `platform`.
    pub fn login_on(addr: SocketAddr, user: &str, device: &str, platform: &str) -> (TestClient, AuthOk) {
        let mut client =
            TestClient::connect_with(addr, ClientConfig::new(token_on(user, device, platform), user, device));
        match client.next_event(Duration::from_secs(5)) {
            Some(ClientEvent::Authenticated(ok)) => (client, ok),
            other => panic!("{user}: expected AuthOk, got {other:?}"),
        }
    }

    pub fn connect(addr: SocketAddr, user: &str, device: &str) -> TestClient {
        TestClient::connect_with(addr, ClientConfig::new(token_for(user, device), user, device))
    }

    /// Connects and waits for AuthOk.
    pub fn login(addr: SocketAddr, user: &str, device: &str) -> (TestClient, AuthOk) {
        let mut client = TestClient::connect(addr, user, device);
        match client.next_event(Duration::from_secs(5)) {
            Some(ClientEvent::Authenticated(ok)) => (client, ok),
            other => panic!("{user}: expected AuthOk, got {other:?}"),
        }
    }

    pub fn flush(&mut self) {
        let out = self.session.output().split();
        if !out.is_empty() {
            let _ = self.stream.write_all(&out);
        }
    }

    pub fn send(&mut self, key: Option<&str>, payload: &[u8]) -> u64 {
        let seq = self.session.send(key.map(str::as_bytes), payload, Instant::now()).unwrap();
        self.flush();
        seq
    }

    /// The next event, reading from the socket as needed; `None` on timeout or EOF.
    pub fn next_event(&mut self, timeout: Duration) -> Option<ClientEvent> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some(event) = self.session.poll_event() {
                return Some(event);
            }
            let now = Instant::now();
            if now >= deadline || self.eof {
                return None;
            }
            self.stream.set_read_timeout(Some(deadline - now)).unwrap();
            match self.stream.read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.input.extend_from_slice(&buf[..n]);
                    self.session.handle_input(&mut self.input, Instant::now());
                    self.flush();
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => self.eof = true,
            }
        }
    }

    /// Reads events until the session ends; returns the close reason (None if the socket
    /// ended without a Close frame).
    pub fn closed_reason(&mut self, timeout: Duration) -> Option<ReasonCode> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.next_event(deadline - Instant::now()) {
                Some(ClientEvent::Closed { reason, .. }) => return Some(reason),
                Some(_) => {}
                None => break,
            }
        }
        match self.session.state() {
            ClientState::Closed(reason) => Some(reason),
            _ => None,
        }
    }

    /// Sends one echo round trip and checks the Push and the Ack.
    pub fn echo(&mut self, payload: &[u8]) {
        let seq = self.send(None, payload);
        let mut got_push = false;
        while !echo_step(self.next_event(Duration::from_secs(5)), seq, payload, &mut got_push) {}
    }
}

/// One event of an echo round trip of `seq`: notes the echoed Push, and returns true at its
/// Ack, which must be ok and come after the Push. Panics when no event came.
pub fn echo_step(event: Option<ClientEvent>, seq: u64, payload: &[u8], got_push: &mut bool) -> bool {
    match event {
        Some(ClientEvent::Push(push)) if &push.payload[..] == payload => *got_push = true,
        Some(ClientEvent::Ack { seq: s, code, .. }) if s == seq => {
            assert_eq!(code, ReasonCode::OK);
            assert!(*got_push, "the echo Push comes before the Ack");
            return true;
        }
        Some(_) => {}
        None => panic!("no echo for seq {seq}"),
    }
    false
}

/// The sum of a Prometheus metric's samples (in the text `metrics`) whose label set contains
/// every `labels` pair, like `result="ok"`.
pub fn metric_sum(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|kv| l.contains(kv)))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// Reads raw frames from `stream` until EOF; returns the frames decoded.
pub fn read_frames_to_eof(stream: &mut TcpStream, timeout: Duration) -> Vec<ClientFrame> {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut input = BytesMut::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => input.extend_from_slice(&buf[..n]),
        }
    }
    let mut frames = Vec::new();
    while let Ok(Decoded::Frame(frame)) = ClientDecoder::new(usize::MAX).decode(&mut input) {
        frames.push(frame);
    }
    frames
}

/// The reason of the last Close frame among `frames`.
pub fn close_reason(frames: &[ClientFrame]) -> Option<ReasonCode> {
    frames.iter().rev().find_map(|f| match f {
        ClientFrame::Close(c) => Some(c.reason),
        _ => None,
    })
}

/// Reads the child's log until the "listening" line; returns (addr, driver).
pub fn wait_listening(child: &mut Child) -> Option<(String, String)> {
    wait_log_field(child, "listening;", "addr", "driver")
}

/// Reads the child's log until a line containing `marker`; returns two of its fields. The
/// rest of the log is drained in the background so the child never blocks on the pipe.
pub fn wait_log_field(child: &mut Child, marker: &str, a: &str, b: &str) -> Option<(String, String)> {
    let stderr = child.stderr.take()?;
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line.ok()?;
        if line.contains(marker) {
            let field = |name: &str| {
                let start = line.find(&format!("{name}="))? + name.len() + 1;
                let rest = &line[start..];
                Some(rest.split_whitespace().next()?.trim_matches('"').to_owned())
            };
            let found = (field(a)?, field(b)?);
            std::thread::spawn(move || for _ in lines {});
            return Some(found);
        }
    }
    None
}

/// A temporary directory removed on drop.
pub mod tempdir {
    use std::path::{Path, PathBuf};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new() -> Dir {
            let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
            let path = std::env::temp_dir().join(format!("ringgate-test-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Which backend served `client`'s user: the reference backend answers the payload `whoami`
/// (no route key) with its id. `None` when the Send was refused (backend unavailable).
pub fn whoami(client: &mut TestClient) -> Option<String> {
    let seq = client.send(None, b"whoami");
    let mut who = None;
    loop {
        match client.next_event(Duration::from_secs(5))? {
            ClientEvent::Push(p) => who = Some(String::from_utf8(p.payload.to_vec()).ok()?),
            ClientEvent::Ack { seq: s, code, .. } if s == seq => return if code.is_ok() { who } else { None },
            _ => {}
        }
    }
}

fn dummy_target(lease: Duration) -> ringgate::config::RedisTarget {
    ringgate::config::RedisTarget {
        url: String::new(),
        cluster: Vec::new(),
        prefix: "rg".into(),
        lease_ttl: lease,
        fail_open: true,
        queue: 100_000,
    }
}

/// One HTTP/1.1 request (`Connection: close`) to the admin endpoint or the API: the status
/// and the body.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    http_with(addr, method, path, "")
}

/// [`http`] with more header lines (each ending in `\r\n`).
pub fn http_with(addr: SocketAddr, method: &str, path: &str, headers: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let status = reply.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// A real redis-server (persistence off) on a unix socket in `dir`; killed on drop.
pub struct RedisServer {
    child: Child,
    socket: PathBuf,
}

impl RedisServer {
    pub fn start(dir: &Path) -> RedisServer {
        let socket = dir.join("redis.sock");
        let _ = std::fs::remove_file(&socket);
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no", "--unixsocketperm", "700", "--unixsocket"])
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        let server = RedisServer { child, socket };
        assert!(eventually(Duration::from_secs(5), || server.conn().is_some()), "redis-server starts");
        server
    }

    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    pub fn conn(&self) -> Option<redis::Connection> {
        redis::Client::open(self.url()).ok()?.get_connection().ok()
    }

    /// A `[redis]` section for this server: prefix `rg`, lease `lease`, fail-open.
    pub fn target(&self, lease: Duration) -> ringgate::config::RedisTarget {
        ringgate::config::RedisTarget { url: self.url(), ..dummy_target(lease) }
    }

    pub fn hget(&self, key: &str, field: &str) -> Option<String> {
        redis::cmd("HGET").arg(key).arg(field).query(&mut self.conn()?).ok().flatten()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A 3-master Redis Cluster on loopback: real cluster-enabled redis-servers joined with
/// `redis-cli --cluster create`.
pub struct RedisCluster {
    nodes: Vec<Child>,
    ports: Vec<u16>,
}

impl RedisCluster {
    pub fn start(dir: &Path) -> RedisCluster {
        let ports = free_cluster_ports(3);
        let nodes: Vec<Child> = ports
            .iter()
            .map(|port| {
                Command::new("redis-server")
                    .current_dir(dir)
                    .args(["--port", &port.to_string(), "--cluster-enabled", "yes", "--save", "", "--appendonly", "no"])
                    .args(["--cluster-config-file", &format!("nodes-{port}.conf"), "--bind", "127.0.0.1"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let cluster = RedisCluster { nodes, ports };
        for port in &cluster.ports {
            let url = format!("redis://127.0.0.1:{port}");
            assert!(eventually(Duration::from_secs(5), || redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .is_ok()));
        }
        let addrs: Vec<String> = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "redis-cli --cluster create");
        let ok = || {
            let out = Command::new("redis-cli").args(["-p", &cluster.ports[0].to_string(), "cluster", "info"]).output();
            out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
        };
        assert!(eventually(Duration::from_secs(15), ok), "cluster converges");
        cluster
    }

    /// A `[redis]` section for this cluster, as [`RedisServer::target`].
    pub fn target(&self, lease: Duration) -> ringgate::config::RedisTarget {
        ringgate::config::RedisTarget { url: String::new(), cluster: self.urls(), ..dummy_target(lease) }
    }

    pub fn urls(&self) -> Vec<String> {
        self.ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.kill();
            let _ = n.wait();
        }
    }
}

/// Ports whose cluster bus port (+10000) is free too.
fn free_cluster_ports(n: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    while ports.len() < n {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() && !ports.contains(&port)
        {
            ports.push(port);
        }
    }
    ports
}

/// A loopback port nothing listens on now (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child node `id` on the Redis at `redis_url` with a 1 s lease and no auth, from a config
/// written in `dir`; returns it and its client address once it listens.
pub fn spawn_redis_node(dir: &Path, id: &str, redis_url: &str) -> (Child, String) {
    let path = dir.join(format!("{id}.toml"));
    std::fs::write(
        &path,
        format!(
            "[node]\nid = \"{id}\"\n[listen]\ntcp = \"127.0.0.1:0\"\n[auth]\nmode = \"none\"\n\
             [redis]\nurl = \"{redis_url}\"\nlease_ttl = \"1s\"\n"
        ),
    )
    .unwrap();
    spawn_gateway(&path)
}

/// Runs `ringgate run --config PATH` as a child process; returns it and its client address
/// once it is listening.
pub fn spawn_gateway(path: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringgate"))
        .args(["run", "--config"])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the ringgate binary runs");
    let (addr, _) = wait_listening(&mut child).expect("gateway starts");
    (child, addr)
}

/// Backend settings for tests: fast reconnects and short timeouts.
pub fn backend_config(discovery: ringgate::config::Discovery) -> ringgate::config::BackendConfig {
    ringgate::config::BackendConfig {
        discovery,
        window: 1024,
        link_buffer: 4 << 20,
        connect_timeout: Duration::from_millis(500),
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        request_timeout: Duration::from_secs(10),
        ping_interval: Duration::from_secs(5),
    }
}

/// A child process, killed and reaped when dropped.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// SIGKILL now, and wait for it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `ringgate reference-backend --listen LISTEN --id ID EXTRA...`, once it listens.
pub fn spawn_reference_backend(listen: &str, id: &str, extra: &[&str]) -> (ChildGuard, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringgate"))
        .args(["reference-backend", "--listen", listen, "--id", id])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the ringgate binary runs");
    let (addr, _) = wait_log_field(&mut child, "reference backend listening", "addr", "id").expect("backend starts");
    (ChildGuard(child), addr.parse().expect("a socket address"))
}

/// Writes a fresh self-signed pair for `localhost` as `cert.pem` and `key.pem` in `dir`;
/// returns the certificate PEM (for clients to trust).
pub fn write_cert(dir: &tempdir::Dir) -> Vec<u8> {
    let (cert, key) = ringgate::transport::tls::self_signed(&["localhost".into()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), key).unwrap();
    cert.into_bytes()
}
