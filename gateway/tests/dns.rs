//! DNS round-robin discovery against a real DNS server on loopback (an authoritative
//! responder in this test, answering from state the test changes): a VIP added, a VIP
//! removed (hold-down observed), SERVFAIL and an empty answer (last good set kept), a short TTL.

mod support;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use ringgate::config::{AuthMode, Discovery, DnsTarget, DnsTimers, IoDriver};
use ringgate_codec::session::{ClientConfig, ClientEvent};
use ringgate_router::Ring;
use support::*;

const T: Duration = Duration::from_secs(5);
const NAME: &str = "backends.ringgate.test";

#[derive(Debug, Clone)]
enum Answer {
    Records(Vec<Ipv4Addr>, u32),
    ServFail,
    Empty,
}

struct DnsServer {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DnsServer {
    fn start(answer: Answer) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = socket.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(answer));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (answer.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else { continue };
                let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
                let mut response = Message::response(query.metadata.id, query.metadata.op_code);
                response.metadata.authoritative = true;
                response.queries = query.queries.clone();
                match a.lock().unwrap().clone() {
                    Answer::Records(ips, ttl) => {
                        for q in query.queries.iter().filter(|q| q.query_type() == RecordType::A) {
                            for ip in &ips {
                                response.answers.push(Record::from_rdata(q.name().clone(), ttl, RData::A(A(*ip))));
                            }
                        }
                    }
                    Answer::ServFail => response.metadata.response_code = ResponseCode::ServFail,
                    Answer::Empty => {}
                }
                let _ = socket.send_to(&response.to_vec().unwrap(), peer);
            }
        });
        DnsServer { addr, answer, stop, thread: Some(thread) }
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

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
