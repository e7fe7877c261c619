//! Operating a node safely: the admin endpoint refuses other hosts, cross-origin requests and
//! keyless POSTs, and slow clients cannot hold it (or the node's files); readiness under a
//! Redis outage follows `redis.fail_open`; a wrong or unreachable Redis is reported (config
//! check, log, metric) instead of being silent.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringgate::Config;
use ringgate::config::{AuthMode, IoDriver};
use ringgate_codec::ReasonCode;
use ringgate_codec::session::{ClientConfig, ClientEvent};
use support::*;

const T: Duration = Duration::from_secs(5);
const ADMIN_KEY: &str = "admin-key-0123456789";

fn admin_node(hosts: &[&str]) -> ringgate::Gateway {
    let mut config = support::config(IoDriver::Auto);
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    config.admin.key = Some(ADMIN_KEY.into());
    config.admin.hosts = hosts.iter().map(|h| h.to_string()).collect();
    start_with(config, 2)
}

/// One request with exactly these header lines (no Host added).
fn raw(addr: SocketAddr, request: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
fn the_admin_endpoint_refuses_other_hosts_cross_origin_requests_and_keyless_posts() {
    let gw = admin_node(&["gw1.example.internal"]);
    let admin = gw.admin_addr().unwrap();
    let port = admin.port();
    let get = |host: &str| raw(admin, &format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"));
    // Hosts: IP literals, localhost and admin.hosts; nothing else (DNS rebinding), no Host at all.
    assert_eq!(get(&format!("127.0.0.1:{port}")), 200);
    assert_eq!(get(&format!("localhost:{port}")), 200);
    assert_eq!(get(&format!("[::1]:{port}")), 200);
    assert_eq!(get(&format!("GW1.example.internal:{port}")), 200, "admin.hosts, any case");
    assert_eq!(get(&format!("evil.example:{port}")), 403);
    assert_eq!(get("127.0.0.1.evil.example"), 403);
    assert_eq!(get(&format!("[::1]junk:{port}")), 403);
    assert_eq!(get(&format!("127.0.0.1:{port}:80")), 403);
    // An HTTP/1.0 health check without Host (HAProxy's httpchk) is served.
    assert_eq!(raw(admin, "GET /readyz HTTP/1.0\r\n\r\n"), 200, "no Host");

    let post = |headers: &str| http_with(admin, "POST", "/drain", headers).0;
    // A browser page elsewhere posting a form to the admin port.
    assert_eq!(post(&format!("Origin: http://evil.example\r\nAuthorization: Bearer {ADMIN_KEY}\r\n")), 403);
    assert_eq!(post(&format!("Origin: null\r\nAuthorization: Bearer {ADMIN_KEY}\r\n")), 403);
    // No key, a wrong key.
    assert_eq!(post(""), 401);
    assert_eq!(post("Authorization: Bearer admin-key-wrong-0123456\r\n"), 401);
    assert!(!gw.is_draining(), "no refused POST drained the node");
    let (status, m) = http(admin, "GET", "/metrics");
    assert_eq!(status, 200);
    assert_eq!(metric_sum(&m, "ringgate_admin_refused_total", &["status=\"403\""]), 6.0, "{m}");
    assert_eq!(metric_sum(&m, "ringgate_admin_refused_total", &["status=\"401\""]), 2.0);

    // The status page's own requests are same-origin; with the key a POST drains.
    assert_eq!(http_with(admin, "GET", "/status.json", &format!("Origin: http://{admin}\r\n")).0, 200);
    // The auth scheme is case-insensitive.
    assert_eq!(post(&format!("Origin: http://{admin}\r\nAuthorization: bearer {ADMIN_KEY}\r\n")), 202);
    assert!(gw.is_draining());
}

#[test]
fn a_node_whose_admin_address_is_not_loopback_needs_a_key() {
    let base = "[node]\nid = \"n\"\n[auth]\nmode = \"none\"\n[listen]\nadmin = \"0.0.0.0:9100\"\n";
    let errors = Config::parse(base).expect_err("refused without admin.key").to_string();
    assert!(errors.contains("admin.key") && errors.contains("0.0.0.0:9100"), "{errors}");
    let short = Config::parse(&format!("{base}[admin]\nkey = \"short\"\n")).unwrap_err().to_string();
    assert!(short.contains("admin.key"), "{short}");
    let ok = Config::parse(&format!("{base}[admin]\nkey = \"{ADMIN_KEY}\"\nhosts = [\"gw1.internal\"]\n")).unwrap();
    assert_eq!(ok.admin.hosts, ["gw1.internal"]);
    // Loopback needs none.
    Config::parse("[node]\nid = \"n\"\n[auth]\nmode = \"none\"\n[listen]\nadmin = \"127.0.0.1:9100\"\n").unwrap();
    let bad_host = Config::parse(&format!("{base}[admin]\nkey = \"{ADMIN_KEY}\"\nhosts = [\"gw1:80\"]\n"));
    assert!(bad_host.unwrap_err().to_string().contains("admin.hosts"));
}

/// 300 connections that send half a request head: all but the listener's 64 are closed at
/// once, those 64 when the 5 s head deadline passes; the client port is untouched meanwhile.
#[test]
fn slow_request_heads_cannot_hold_the_admin_endpoint_or_the_node() {
    let gw = admin_node(&[]);
    let admin = gw.admin_addr().unwrap();
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(admin).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHo").unwrap();
            s
        })
        .collect();
    // Which ones the node closed: EOF (or reset) instead of a read timeout.
    let closed = |s: &mut TcpStream, wait: Duration| -> bool {
        s.set_read_timeout(Some(wait)).unwrap();
        match s.read_to_end(&mut Vec::new()) {
            Ok(_) => true,
            Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        }
    };
    let early = slow.iter_mut().map(|s| closed(s, Duration::from_millis(20))).filter(|&c| c).count();
    assert!(early >= 300 - 64, "{early} of 300 closed at once (64 may be held)");
    assert!(started.elapsed() < Duration::from_secs(4), "before the head deadline");
    // Clients log in meanwhile.
    let (mut c, _) = TestClient::login(gw.local_addr(), "alice", "phone");
    c.echo(b"still serving");
    // The held ones go at the deadline.
    let all = slow.iter_mut().all(|s| closed(s, Duration::from_secs(8)));
    assert!(all, "every slow connection closed by the 5 s head deadline");
    assert!(started.elapsed() < Duration::from_secs(9), "{:?}", started.elapsed());
    let (status, m) = http(admin, "GET", "/metrics");
    assert_eq!(status, 200, "the endpoint serves again");
    assert!(metric_sum(&m, "ringgate_http_refused_total", &["listener=\"admin\""]) >= (300 - 64) as f64, "{m}");
}

/// Two nodes on one Redis, fail_open true and false; Redis dies. The fail-open node stays
/// ready (degraded, said in the body and on the status page) and admits logins; the
/// fail-closed one fails /readyz and refuses logins with auth_unavailable.
#[test]
fn readiness_under_a_redis_outage_follows_fail_open() {
    let dir = tempdir::Dir::new();
    let mut redis = RedisServer::start(dir.path());
    let node = |fail_open: bool| {
        let mut config = support::config(IoDriver::Auto);
        config.node_id = format!("open-{fail_open}");
        config.auth = AuthMode::None;
        config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
        let mut target = redis.target(Duration::from_millis(900));
        target.fail_open = fail_open;
        config.redis = Some(target);
        start_with(config, 1)
    };
    let (open, closed) = (node(true), node(false));
    let ready = |gw: &ringgate::Gateway| http(gw.admin_addr().unwrap(), "GET", "/readyz");
    assert!(eventually(T, || ready(&open) == (200, "ready\n".into())), "{:?}", ready(&open));
    assert!(eventually(T, || ready(&closed).0 == 200), "{:?}", ready(&closed));

    redis.stop();
    assert!(eventually(T, || ready(&closed).0 == 503), "{:?}", ready(&closed));
    assert!(ready(&closed).1.contains("registry unavailable"), "{:?}", ready(&closed));
    // Each node notices the outage at its own next write: wait until this one has too.
    assert!(eventually(T, || ready(&open).1.contains("degraded")), "{:?}", ready(&open));
    let (status, body) = ready(&open);
    assert_eq!(status, 200, "a shared Redis must not pull every fail-open node: {body}");
    assert!(body.starts_with("ready, degraded: registry unavailable"), "{body}");
    let status: serde_json::Value =
        serde_json::from_str(&http(open.admin_addr().unwrap(), "GET", "/status.json").1).unwrap();
    assert_eq!((status["ready"].as_bool(), status["registry"]["up"].as_bool()), (Some(true), Some(false)));
    assert!(status["degraded"].as_str().is_some_and(|d| d.contains("registry")), "{status}");

    let login = |gw: &ringgate::Gateway| {
        let mut c = TestClient::connect_with(gw.local_addr(), ClientConfig::new("", "u", "d"));
        c.next_event(T)
    };
    assert!(matches!(login(&open), Some(ClientEvent::Authenticated(_))));
    match login(&closed) {
        Some(ClientEvent::AuthFailed(f)) => assert_eq!(f.reason, ReasonCode::AUTH_UNAVAILABLE),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_redis_url_that_is_not_one_is_a_config_error() {
    let base = "[node]\nid = \"n\"\n[auth]\nmode = \"none\"\n";
    let e = Config::parse(&format!("{base}[redis]\nurl = \"http://127.0.0.1:6379\"\n")).unwrap_err().to_string();
    assert!(e.contains("redis.url") && e.contains("not a Redis URL"), "{e}");
    let e =
        Config::parse(&format!("{base}[redis]\ncluster = [\"redis://a:1\", \"tcp://b:2\"]\n")).unwrap_err().to_string();
    assert!(e.contains("redis.cluster") && e.contains("tcp://b:2") && !e.contains("redis://a:1\" is"), "{e}");
    Config::parse(&format!("{base}[redis]\nurl = \"redis://127.0.0.1:6379/0\"\n")).unwrap();
    Config::parse(&format!("{base}[redis]\nurl = \"unix:///run/redis.sock\"\n")).unwrap();
}

/// A node pointed at a port where no Redis listens: it says so in its log at warn (once, not
/// per retry), counts the failures and exports registry_up 0 from the first scrape.
#[test]
fn an_unreachable_redis_is_logged_and_counted() {
    let dir = tempdir::Dir::new();
    let unused: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(
        &path,
        format!(
            "[node]\nid = \"lonely\"\n[listen]\ntcp = \"127.0.0.1:0\"\nadmin = \"{admin}\"\n[auth]\nmode = \"none\"\n\
             [redis]\nurl = \"redis://{unused}\"\nfail_open = false\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("node.log");
    let _node = ChildGuard(
        std::process::Command::new(env!("CARGO_BIN_EXE_ringgate"))
            .args(["run", "--config"])
            .arg(&path)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(eventually(T, || text().contains("listening")), "{}", text());
    let metrics =
        || std::net::TcpStream::connect(admin).ok().map(|_| http(admin, "GET", "/metrics").1).unwrap_or_default();
    // From the first scrape: the series is there, at 0.
    assert!(metrics().contains("ringgate_registry_up 0"), "{}", metrics());
    assert!(eventually(T, || metric_sum(&metrics(), "ringgate_registry_failures", &[]) >= 3.0), "{}", metrics());
    assert_eq!(metric_sum(&metrics(), "ringgate_registry_up", &[]), 0.0);
    let warned: Vec<String> =
        text().lines().filter(|l| l.contains("registry cannot connect")).map(str::to_owned).collect();
    assert_eq!(warned.len(), 1, "one line, not one per retry:\n{}", text());
    assert!(warned[0].contains("WARN") && warned[0].contains("Connection refused"), "{}", warned[0]);
    assert!(http(admin, "GET", "/readyz").1.contains("registry unavailable"));
}

/// Every config problem at once, each with its key path: the certificate files (missing,
/// swapped) beside the rest, listeners that clash, every bad backend address.
#[test]
fn config_errors_name_their_keys_and_come_together() {
    let dir = tempdir::Dir::new();
    write_cert(&dir);
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let base = "[node]\nid = \"n\"\n[auth]\nmode = \"none\"\n";
    let swapped = format!(
        "{base}[listen]\ntcp = \"0.0.0.0:7000\"\nadmin = \"127.0.0.1:7000\"\ntls = \"127.0.0.1:7443\"\nquic = \"127.0.0.1:7443\"\n\
         [tls]\ncert = \"{}\"\nkey = \"{}\"\n[io]\nworkers = -1\n[backend]\naddresses = [\"10.0.0.1:9000\", \"nope\", \"10.0.0.2\"]\n",
        key.display(),
        cert.display()
    );
    let e = Config::parse(&swapped).unwrap_err().to_string();
    for needle in [
        "tls.cert",
        "tls.key",
        "io.workers",
        "listen.admin",
        "clashes with listen.tcp",
        "backend.addresses[1]",
        "backend.addresses[2]",
    ] {
        assert!(e.contains(needle), "{needle} missing from:\n{e}");
    }
    assert!(!e.contains("listen.quic"), "QUIC is UDP: it may share 7443 with TLS:\n{e}");
    assert!(!e.contains("at least one backend address"), "no spurious complaint:\n{e}");

    // A pair from two different certificates: named as not making a pair.
    let other = tempdir::Dir::new();
    write_cert(&other);
    let mixed =
        format!("{base}[tls]\ncert = \"{}\"\nkey = \"{}\"\n", cert.display(), other.path().join("key.pem").display());
    let e = Config::parse(&mixed).unwrap_err().to_string();
    assert!(e.contains("do not make a pair"), "{e}");
    let missing =
        format!("{base}[tls]\ncert = \"{}\"\nkey = \"{}\"\n", dir.path().join("none.pem").display(), key.display());
    let e = Config::parse(&missing).unwrap_err().to_string();
    assert!(e.contains("tls.cert") && e.contains("none.pem"), "{e}");
    Config::parse(&format!("{base}[tls]\ncert = \"{}\"\nkey = \"{}\"\n", cert.display(), key.display())).unwrap();

    // check-config prints them all and fails.
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, &swapped).unwrap();
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_ringgate")).arg("check-config").arg(&file).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("tls.cert") && text.contains("backend.addresses[2]") && text.contains("listen.admin"),
        "{text}"
    );
}

/// A node SIGKILLed with 40 users online leaves their records in Redis; once its lease
/// expires the surviving node removes them (and only them), its user index and its entry in
/// the live-node index, within the bound docs/registry.md states (lease TTL × 4/3).
#[test]
fn a_killed_node_s_records_are_swept_by_a_survivor() {
    let dir = tempdir::Dir::new();
    let redis = RedisServer::start(dir.path());
    let ttl = Duration::from_secs(1);
    let mut config = support::config(IoDriver::Auto);
    config.node_id = "survivor".into();
    config.auth = AuthMode::None;
    config.redis = Some(redis.target(ttl));
    let survivor = start_with(config, 1);
    let (child, addr) = spawn_redis_node(dir.path(), "doomed", &redis.url());
    let mut doomed = ChildGuard(child);
    let addr: SocketAddr = addr.parse().unwrap();
    let login = |at: SocketAddr, user: &str| {
        let mut c = TestClient::connect_with(at, ClientConfig::new("", user, "phone"));
        assert!(matches!(c.next_event(T), Some(ClientEvent::Authenticated(_))));
        c
    };
    let _theirs: Vec<TestClient> = (0..40).map(|i| login(addr, &format!("user-{i}"))).collect();
    let doomed_member = || -> String {
        let mut c = redis.conn().unwrap();
        let members: Vec<String> = redis::cmd("ZRANGE").arg("rg:nodes").arg(0).arg(-1).query(&mut c).unwrap();
        members.into_iter().find(|m| m.starts_with("doomed|")).unwrap()
    };
    // user-0 is online on the survivor too, on another device: that record must stay.
    let mut ours = TestClient::connect_with(survivor.local_addr(), ClientConfig::new("", "user-0", "laptop"));
    assert!(matches!(ours.next_event(T), Some(ClientEvent::Authenticated(_))));
    let mut conn = redis.conn().unwrap();
    let count = |conn: &mut redis::Connection, node: &str| -> usize {
        (0..40)
            .map(|i| {
                let h: std::collections::HashMap<String, String> =
                    redis::cmd("HGETALL").arg(format!("rg:u:user-{i}")).query(conn).unwrap();
                h.values().filter(|r| r.starts_with(&format!("{node}|"))).count()
            })
            .sum()
    };
    assert!(eventually(T, || count(&mut conn, "doomed") == 40), "the doomed node's records are written");
    let index: Vec<String> = redis::cmd("KEYS").arg("rg:nu:doomed|*").query(&mut conn).unwrap();
    assert_eq!(index.len(), 1, "{index:?}");
    let indexed: usize = redis::cmd("SCARD").arg(&index[0]).query(&mut conn).unwrap();
    assert_eq!(indexed, 40);
    // A live node whose live-node score looks expired (a clock far behind, a slow refresh) is
    // not swept: its lease key, expiring by Redis's own clock, says it lives.
    let member = doomed_member();
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        // Expired 10 s ago by this clock (not an hour: that entry would be pruned).
        let stale = ringgate::registry::unix_ms() - 10_000;
        let _: () = redis::cmd("ZADD").arg("rg:nodes").arg(stale).arg(&member).query(&mut conn).unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(count(&mut conn, "doomed"), 40, "a live node's records stay");
    assert_eq!(survivor.registry().unwrap().swept, 0);

    doomed.kill();
    let killed = Instant::now();
    assert!(eventually(Duration::from_secs(10), || count(&mut conn, "doomed") == 0), "swept");
    let took = killed.elapsed();
    eprintln!("swept {took:?} after SIGKILL");
    assert!(took <= ttl * 4 / 3 + Duration::from_millis(900), "within lease TTL x 4/3 (+ scheduling): {took:?}");
    assert_eq!(count(&mut conn, "survivor"), 1, "the survivor's own record of user-0 stays");
    let left: Vec<String> = redis::cmd("KEYS").arg("rg:nu:doomed|*").query(&mut conn).unwrap();
    assert!(left.is_empty(), "the index is gone: {left:?}");
    let members: Vec<String> = redis::cmd("ZRANGE").arg("rg:nodes").arg(0).arg(-1).query(&mut conn).unwrap();
    assert!(members.iter().all(|m| !m.starts_with("doomed|")), "{members:?}");
    let state = survivor.registry().unwrap();
    assert_eq!(state.swept, 40);
}
