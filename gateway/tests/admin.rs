//! The admin endpoint over HTTP after a scripted scenario: metric names and values, health,
//! readiness, and drain making /readyz fail. (One gateway in this test binary: the metrics
//! recorder is process-wide.)

mod support;

use std::io::Write;
use std::time::Duration;

use ringgate::auth::token::{self, Claims};
use ringgate::config::IoDriver;
use ringgate_codec::session::{ClientConfig, ClientEvent};
use support::*;

const T: Duration = Duration::from_secs(5);

#[test]
fn metrics_health_and_drain() {
    let mut config = support::config(IoDriver::Auto);
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    let gw = start_with(config, 2);
    let admin = gw.admin_addr().expect("admin endpoint enabled");
    let addr = gw.local_addr();

    let (mut alice, _) = TestClient::login(addr, "alice", "phone");
    let (mut bob, _) = TestClient::login(addr, "bob", "pc");
    let forged = token::mint(
        KID,
        b"not-the-secret-0123456",
        &Claims { sub: "eve".into(), dev: "x".into(), plat: String::new(), exp: unix_now() + 60 },
    );
    let mut eve = TestClient::connect_with(addr, ClientConfig::new(forged, "eve", "x"));
    assert!(matches!(eve.next_event(T), Some(ClientEvent::AuthFailed(_))));
    for i in 0..3 {
        alice.echo(format!("m{i}").as_bytes());
    }
    bob.stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(eventually(T, || gw.active_connections() == 1));

    let (status, m) = http(admin, "GET", "/metrics");
    assert_eq!(status, 200);
    assert_eq!(metric_sum(&m, "ringgate_auth_total", &["result=\"ok\""]), 2.0, "{m}");
    assert_eq!(metric_sum(&m, "ringgate_auth_total", &["result=\"auth_invalid\""]), 1.0);
    assert_eq!(metric_sum(&m, "ringgate_connections_accepted_total", &["transport=\"tcp\""]), 3.0);
    assert_eq!(metric_sum(&m, "ringgate_connections_active", &[]), 1.0);
    assert_eq!(metric_sum(&m, "ringgate_connections_closed_total", &["reason=\"unknown_op\""]), 1.0);
    assert_eq!(metric_sum(&m, "ringgate_connections_closed_total", &["reason=\"auth_invalid\""]), 1.0);
    assert_eq!(metric_sum(&m, "ringgate_sends_total", &[]), 3.0);
    assert_eq!(metric_sum(&m, "ringgate_acks_total", &["reason=\"ok\""]), 3.0);
    assert_eq!(metric_sum(&m, "ringgate_send_ack_seconds_count", &[]), 3.0);
    assert!(metric_sum(&m, "ringgate_frames_out_total", &["op=\"push\""]) >= 3.0);
    assert!(metric_sum(&m, "ringgate_bytes_in_total", &[]) > 0.0);
    assert_eq!(metric_sum(&m, "ringgate_frames_in_total", &["op=\"auth\""]), 3.0);
    assert_eq!(metric_sum(&m, "ringgate_frames_in_total", &["op=\"send\""]), 3.0);
    assert_eq!(metric_sum(&m, "ringgate_frames_out_total", &["op=\"auth_ok\""]), 2.0);
    assert_eq!(metric_sum(&m, "ringgate_frames_out_total", &["op=\"auth_fail\""]), 1.0);
    assert_eq!(metric_sum(&m, "ringgate_frames_out_total", &["op=\"ack\""]), 3.0);
    assert!(metric_sum(&m, "ringgate_bytes_out_total", &[]) > 0.0);
    assert_eq!(metric_sum(&m, "ringgate_info", &[&format!("driver=\"{}\"", gw.driver())]), 1.0);
    assert_eq!(metric_sum(&m, "ringgate_build_info", &[]), 1.0);
    assert_eq!(metric_sum(&m, "ringgate_ready", &[]), 1.0);
    assert!(!m.contains("alice") && !m.contains("127.0.0.1"), "no user or address labels");

    assert_eq!(http(admin, "GET", "/healthz").0, 200);
    assert_eq!(http(admin, "GET", "/readyz"), (200, "ready\n".into()));
    assert_eq!(http(admin, "POST", "/drain").0, 202);
    assert_eq!(http(admin, "GET", "/readyz"), (503, "not ready: draining\n".into()));
    assert!(gw.is_draining());
    assert_eq!(http(admin, "GET", "/nope").0, 404);
}
