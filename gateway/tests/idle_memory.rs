//! What an idle connection costs a real node: the anonymous memory (heap, not the binary's
//! pages) that 2,000 more logged-in, idle TCP connections add to a `ringgate run` process,
//! per connection, on both io drivers, against a budget. bench/README.md measures ~800
//! bytes on io_uring and ~1,015 on epoll; the budget allows for allocator rounding and
//! page granularity, and fails when an idle connection's heap doubles.

mod support;

use std::time::Duration;

use ringgate_codec::session::{ClientConfig, ClientEvent};
use support::*;

const BUDGET: u64 = 1_600;
const WARM: usize = 500;
const MEASURED: usize = 2_000;

fn anon_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = status.lines().find_map(|l| l.strip_prefix("RssAnon:")).unwrap();
    kib.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() * 1024
}

fn per_idle_connection(driver: &str) -> u64 {
    let dir = tempdir::Dir::new();
    let path = dir.path().join("idle.toml");
    std::fs::write(
        &path,
        format!(
            "[listen]\ntcp = \"127.0.0.1:0\"\n[io]\ndriver = \"{driver}\"\nworkers = 1\n[auth]\nmode = \"none\"\n\
             [limits]\n{NO_ADDRESS_LIMITS}"
        ),
    )
    .unwrap();
    let (child, addr) = spawn_gateway(&path);
    let child = ChildGuard(child);
    let addr = addr.parse().unwrap();
    let login = |i: usize| {
        let mut c = TestClient::connect_with(addr, ClientConfig::new("", format!("idle-{i}"), "d"));
        assert!(matches!(c.next_event(Duration::from_secs(5)), Some(ClientEvent::Authenticated(_))), "login {i}");
        c
    };
    // Warm up: the first connections grow tables and arenas every later one reuses.
    let mut held: Vec<TestClient> = (0..WARM).map(login).collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = anon_bytes(child.0.id());
    held.extend((WARM..WARM + MEASURED).map(login));
    std::thread::sleep(Duration::from_millis(500));
    let after = anon_bytes(child.0.id());
    drop(held);
    after.saturating_sub(before) / MEASURED as u64
}

#[test]
fn an_idle_connection_stays_within_its_memory_budget() {
    for driver in ["io_uring", "epoll"] {
        let per = per_idle_connection(driver);
        assert!(per > 0, "{driver}: nothing measured");
        assert!(per <= BUDGET, "{driver}: {per} bytes of heap per idle connection (budget {BUDGET})");
        eprintln!("{driver}: {per} bytes per idle connection");
    }
}
