//! Backend links over TCP to real reference backends (child processes): routing by the
//! ring, failover when one is killed under load with exactly one Ack per Send, and return
//! when it restarts.

mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringgate::config::{AuthMode, Discovery, IoDriver};
use ringgate_codec::ReasonCode;
use ringgate_codec::session::{ClientConfig, ClientEvent};
use ringgate_router::Ring;
use support::*;

const T: Duration = Duration::from_secs(5);

struct Backend {
    process: ChildGuard,
    addr: SocketAddr,
    id: String,
}

impl Backend {
    fn spawn(listen: &str, id: &str) -> Backend {
        let (process, addr) = spawn_reference_backend(listen, id, &[]);
        Backend { process, addr, id: id.to_owned() }
    }

    fn kill(&mut self) {
        self.process.kill();
    }
}

fn failover(driver: IoDriver) {
    let mut backends: Vec<Backend> = (0..3).map(|i| Backend::spawn("127.0.0.1:0", &format!("be-{i}"))).collect();
    let id_of: HashMap<SocketAddr, String> = backends.iter().map(|b| (b.addr, b.id.clone())).collect();
    let mut config = support::config(driver);
    config.auth = AuthMode::None;
    config.backend = Some(backend_config(Discovery::Static(backends.iter().map(|b| b.addr).collect())));
    let ring = Ring::new(backends.iter().map(|b| b.addr));
    let gw = start_with(config, 2);
    let addr = gw.local_addr();
    let users: Vec<String> = (0..24).map(|i| format!("user-{i}")).collect();
    let mut clients: Vec<TestClient> =
        users.iter().map(|u| TestClient::connect_with(addr, ClientConfig::new("", u.as_str(), "d"))).collect();
    for c in &mut clients {
        assert!(matches!(c.next_event(T), Some(ClientEvent::Authenticated(_))));
    }
    // Every user lands on its ring owner once the links are up.
    for (user, c) in users.iter().zip(&mut clients) {
        let owner = &id_of[&ring.owner(user.as_bytes()).unwrap()];
        assert!(eventually(T, || whoami(c).as_ref() == Some(owner)), "{user} not routed to {owner}");
    }

    // Load: every client fills its in-flight window, then one backend dies with Sends pending.
    let victim = backends[1].addr;
    let mut sent: Vec<HashSet<u64>> = Vec::new();
    for c in &mut clients {
        let mut seqs = HashSet::new();
        while let Ok(seq) = c.session.send(None, b"load", Instant::now()) {
            seqs.insert(seq);
        }
        c.flush();
        sent.push(seqs);
    }
    let killed_at = Instant::now();
    backends[1].kill();
    let mut codes: HashMap<ReasonCode, usize> = HashMap::new();
    for (c, seqs) in clients.iter_mut().zip(&sent) {
        let mut acked = HashSet::new();
        while acked.len() < seqs.len() {
            match c.next_event(T) {
                Some(ClientEvent::Ack { seq, code, .. }) => {
                    assert!(seqs.contains(&seq), "ack for a seq never sent");
                    assert!(acked.insert(seq), "two acks for seq {seq}");
                    *codes.entry(code).or_default() += 1;
                }
                Some(_) => {}
                None => panic!("{} of {} sends never acked", seqs.len() - acked.len(), seqs.len()),
            }
        }
    }
    assert!(codes.keys().all(|c| [ReasonCode::OK, ReasonCode::BACKEND_UNAVAILABLE].contains(c)), "{codes:?}");

    // The victim's users move to their next choice; nobody else moves.
    let survivors = Ring::new(backends.iter().map(|b| b.addr).filter(|a| *a != victim));
    let mut failover_ms = None;
    for (user, c) in users.iter().zip(&mut clients) {
        let owner = ring.owner(user.as_bytes()).unwrap();
        let expected = &id_of[&survivors.owner(user.as_bytes()).unwrap()];
        if owner == victim {
            assert!(eventually(T, || whoami(c).as_ref() == Some(expected)), "{user} did not fail over");
            failover_ms.get_or_insert(killed_at.elapsed().as_millis());
        } else {
            assert_eq!(whoami(c).as_ref(), Some(expected), "{user} moved although its backend is up");
        }
    }
    eprintln!("{driver:?}: acks after kill {codes:?}; first rerouted Send {failover_ms:?} ms after the kill");

    // Restart the victim on the same address: its users come back.
    backends[1] = Backend::spawn(&victim.to_string(), "be-1");
    for (user, c) in users.iter().zip(&mut clients) {
        let owner = &id_of[&ring.owner(user.as_bytes()).unwrap()];
        assert!(eventually(T, || whoami(c).as_ref() == Some(owner)), "{user} did not return to {owner}");
    }
}

both_drivers!(failover, large_frames_cross_the_link);

/// One rule for frame sizes: with `limits.max_frame_len` above the link default (128 KiB),
/// a Send of nearly that size crosses the link to a real backend process (which decodes by
/// the limit the gateway's Hello gives), and its echo comes back over the link and to the
/// client. With fixed 128 KiB link decoders the link died on it (backend_unavailable).
fn large_frames_cross_the_link(driver: IoDriver) {
    let backend = Backend::spawn("127.0.0.1:0", "be-big");
    let mut config = support::config(driver);
    config.auth = AuthMode::None;
    config.session.max_frame_len = 512 * 1024;
    config.session.max_outbound = 4 << 20;
    config.backend = Some(backend_config(Discovery::Static(vec![backend.addr])));
    let gw = start_with(config, 1);
    let mut client = ClientConfig::new("", "big", "d");
    client.max_frame_len = 1 << 20;
    let mut c = TestClient::connect_with(gw.local_addr(), client);
    assert!(matches!(c.next_event(T), Some(ClientEvent::Authenticated(_))));
    assert!(eventually(T, || whoami(&mut c).as_deref() == Some("be-big")), "the link is up");
    for size in [200 * 1024, 500 * 1024] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        c.echo(&payload);
    }
    assert_eq!(whoami(&mut c).as_deref(), Some("be-big"), "the same link, still up");
}
