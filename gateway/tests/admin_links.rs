//! Backend-side metrics over HTTP: links up, link round trips (Ping/Pong), ring size and
//! readiness with a real reference backend. (Own test binary: the recorder is process-wide.)

mod support;

use std::time::Duration;

use ringgate::config::{AuthMode, BackendConfig, IoDriver};
use support::*;

fn scrape(addr: std::net::SocketAddr) -> String {
    http(addr, "GET", "/metrics").1
}

#[test]
fn link_metrics_and_readiness() {
    let (mut backend, addr) = spawn_reference_backend("127.0.0.1:0", "be", &[]);
    let mut config = support::config(IoDriver::Auto);
    config.auth = AuthMode::None;
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    config.backend = Some(BackendConfig { ping_interval: Duration::from_millis(100), ..support::static_backend(addr) });
    let gw = start_with(config, 2);
    let admin = gw.admin_addr().unwrap();
    assert!(eventually(Duration::from_secs(5), || {
        let m = scrape(admin);
        metric_sum(&m, "ringgate_backend_links_up", &[]) == 2.0
            && metric_sum(&m, "ringgate_backend_link_rtt_seconds_count", &[]) >= 2.0
    }));
    let m = scrape(admin);
    assert_eq!(metric_sum(&m, "ringgate_ring_size", &[]), 2.0, "one backend, seen by each of 2 workers");
    assert_eq!(metric_sum(&m, "ringgate_ready", &[]), 1.0);
    // The backend dies: links go down, the node stops being ready.
    backend.kill();
    assert!(eventually(Duration::from_secs(5), || metric_sum(&scrape(admin), "ringgate_backend_links_up", &[]) == 0.0));
    assert_eq!(metric_sum(&scrape(admin), "ringgate_ready", &[]), 0.0);
}
