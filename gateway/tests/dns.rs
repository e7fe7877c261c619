//! DNS round-robin discovery against a real DNS server on loopback (an authoritative
//! responder in this test, answering from state the test changes): a VIP added, a VIP
//! removed (hold-down observed), SERVFAIL and an empty answer (last good set kept), a short TTL.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringgate::config::{AuthMode, Discovery, DnsTarget, DnsTimers, IoDriver};
use ringgate_codec::session::{ClientConfig, ClientEvent};
use ringgate_router::Ring;
use support::dns::{Answer, DnsServer};
use support::*;

const T: Duration = Duration::from_secs(5);
const NAME: &str = "backends.ringgate.test";

fn backend(listen: &str, id: &str) -> (ChildGuard, SocketAddr) {
    spawn_reference_backend(listen, id, &[])
}

/// Every client is served by the ring owner of its user among `addrs`.
fn routed_by(clients: &mut [(String, TestClient)], addrs: &[SocketAddr]) -> bool {
    let ring = Ring::new(addrs.iter().copied());
    clients.iter_mut().all(|(user, c)| {
        let owner = ring.owner(user.as_bytes()).unwrap();
        whoami(c).as_deref() == Some(&format!("be-{}", owner.ip()))
    })
}

fn discovery(driver: IoDriver) {
    let (b2, a2) = backend("127.0.0.2:0", "be-127.0.0.2");
    let port = a2.port();
    let (b3, a3) = backend(&format!("127.0.0.3:{port}"), "be-127.0.0.3");
    let (b4, a4) = backend(&format!("127.0.0.4:{port}"), "be-127.0.0.4");
    let ip = |a: SocketAddr| match a.ip() {
        std::net::IpAddr::V4(v4) => v4,
        other => panic!("{other}"),
    };
    let dns = DnsServer::start(Answer::Records(vec![ip(a2), ip(a3)], 0));

    let mut config = support::config(driver);
    config.auth = AuthMode::None;
    let hold_down = Duration::from_millis(1500);
    config.backend = Some(backend_config(Discovery::Dns(DnsTarget {
        name: NAME.into(),
        port,
        nameserver: Some(dns.addr),
        timers: DnsTimers {
            min_ttl: Duration::from_millis(100),
            max_ttl: Duration::from_secs(1),
            hold_down,
            retry: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
        },
    })));
    let gw = start_with(config, 2);
    let current = || gw.discovery().unwrap().current;
    let mut clients: Vec<(String, TestClient)> = (0..12)
        .map(|i| {
            let user = format!("user-{i}");
            let mut c = TestClient::connect_with(gw.local_addr(), ClientConfig::new("", user.as_str(), "d"));
            assert!(matches!(c.next_event(T), Some(ClientEvent::Authenticated(_))));
            (user, c)
        })
        .collect();

    // Two VIPs; TTL 0 is clamped to min_ttl (100 ms), so resolutions come quickly.
    assert!(eventually(T, || current() == [a2, a3]), "{:?}", current());
    assert!(eventually(T, || routed_by(&mut clients, &[a2, a3])));
    let before = gw.discovery().unwrap().stats.resolutions;
    std::thread::sleep(Duration::from_millis(600));
    assert!(gw.discovery().unwrap().stats.resolutions >= before + 3, "short TTL re-resolves");

    // A third VIP joins at once.
    dns.set(Answer::Records(vec![ip(a2), ip(a3), ip(a4)], 0));
    assert!(eventually(T, || current() == [a2, a3, a4]));
    assert!(eventually(T, || routed_by(&mut clients, &[a2, a3, a4])));

    // VIP .3 vanishes from the answers: it stays for the hold-down, then goes.
    dns.set(Answer::Records(vec![ip(a2), ip(a4)], 0));
    let removed_at = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(current(), [a2, a3, a4], "still held down after 500 ms");
    assert!(eventually(T, || current() == [a2, a4]));
    assert!(removed_at.elapsed() >= hold_down - Duration::from_millis(300), "removed before the hold-down");
    assert!(eventually(T, || routed_by(&mut clients, &[a2, a4])));

    // SERVFAIL, then an empty answer: the last good set stays and routing is unchanged.
    let s = gw.discovery().unwrap().stats;
    dns.set(Answer::ServFail);
    assert!(eventually(T, || gw.discovery().unwrap().stats.failures >= s.failures + 2));
    assert_eq!(current(), [a2, a4]);
    assert!(routed_by(&mut clients, &[a2, a4]));
    dns.set(Answer::Empty);
    assert!(eventually(T, || gw.discovery().unwrap().stats.empty >= s.empty + 2));
    assert_eq!(current(), [a2, a4]);
    assert!(routed_by(&mut clients, &[a2, a4]));
    drop((b2, b3, b4));
}

both_drivers!(discovery);
