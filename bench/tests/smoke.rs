//! A short run of every ringgate-bench subcommand, checking the JSON it prints: against an
//! in-process gateway (TCP, TLS and QUIC listeners) where the subcommand takes an address,
//! and with the servers the subcommand starts itself (nginx, HAProxy, redis-server, gateway
//! children) where it owns them. Seconds each, not minutes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringgate::config::{TlsSettings, TlsVersions};
use ringgate::{Config, Gateway};
use ringgate_bench::run::wait_for;
use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_ringgate-bench");

/// The ringgate binary, built beside this one by `cargo test --workspace`.
fn ringgate_bin() -> PathBuf {
    let path = PathBuf::from(BENCH).with_file_name("ringgate");
    assert!(path.exists(), "{} missing: run the tests with `cargo test --workspace`", path.display());
    path
}

struct Node {
    gateway: Gateway,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn node() -> Node {
    let dir = std::env::temp_dir().join(format!(
        "ringgate-smoke-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = ringgate::transport::tls::self_signed(&["localhost".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
    let mut config = Config::parse("[auth]\nmode = \"none\"\n[limits]\nmax_in_flight = 256\n").unwrap();
    config.listen_tcp = "127.0.0.1:0".parse().unwrap();
    config.listen_tls = Some("127.0.0.1:0".parse().unwrap());
    config.listen_quic = Some("127.0.0.1:0".parse().unwrap());
    config.listen_ws = Some("127.0.0.1:0".parse().unwrap());
    config.listen_wss = Some("127.0.0.1:0".parse().unwrap());
    config.tls =
        Some(TlsSettings { cert: dir.join("cert.pem"), key: dir.join("key.pem"), versions: TlsVersions::Tls13 });
    let listeners = ringgate::listener::bind_group(config.listen_tcp, 2, 4096).unwrap();
    Node { gateway: Gateway::start(config, listeners).unwrap(), _dir: TempDir(dir) }
}

/// Runs `ringgate-bench args...`, requires success within `limit`, returns its JSON.
fn bench(args: &[&str], limit: Duration) -> Value {
    let started = Instant::now();
    let out = Command::new(BENCH).args(args).stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "ringgate-bench {args:?} failed: {}", String::from_utf8_lossy(&out.stdout));
    assert!(started.elapsed() < limit, "ringgate-bench {args:?} took {:?}", started.elapsed());
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(text.trim().lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {text}"))
}

fn no_errors(v: &Value) {
    assert_eq!(v["errors"].as_object().map(|e| e.len()), Some(0), "errors in {v}");
}

fn addr(a: SocketAddr) -> String {
    a.to_string()
}

#[test]
fn idle_over_each_transport_reports_logins_and_memory() {
    let node = node();
    let pid = std::process::id().to_string();
    for (transport, a) in [
        ("tcp", node.gateway.local_addr()),
        ("tls", node.gateway.tls_addr().unwrap()),
        ("quic", node.gateway.quic_addr().unwrap()),
        ("ws", node.gateway.ws_addr().unwrap()),
        ("wss", node.gateway.wss_addr().unwrap()),
    ] {
        let v = bench(
            &[
                "idle",
                "--addr",
                &addr(a),
                "--transport",
                transport,
                "--connections",
                "40",
                "--hold",
                "1",
                "--gateway-pid",
                &pid,
                "--json",
                "--quiet",
            ],
            Duration::from_secs(30),
        );
        assert_eq!(v["authenticated"], 40, "{transport}: {v}");
        assert_eq!(v["held_at_measurement"], 40, "{transport}: {v}");
        assert!(v["connect_rate_per_s"].as_f64().unwrap() > 0.0);
        assert!(v["user_bytes_per_conn"].is_number(), "{v}");
        assert!(v["login_us"]["p99"].as_u64().unwrap() > 0);
        // The load generator reports its own cost (this process: one load process).
        assert!(v["load"]["rss_kib"]["held"].as_u64().unwrap() > 0, "{v}");
        assert!(v["load"]["rss_kib"]["base"].as_u64().unwrap() > 0, "{v}");
        assert!(v["load"]["cpu_us_per_conn_per_s"].is_number(), "{v}");
        no_errors(&v);
    }
}

#[test]
fn idle_spread_over_processes_aggregates_their_results() {
    let node = node();
    let v = bench(
        &[
            "idle",
            "--addr",
            &addr(node.gateway.local_addr()),
            "--connections",
            "90",
            "--processes",
            "3",
            "--hold",
            "1",
            "--json",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(v["connected"], 90, "{v}");
    assert_eq!(v["authenticated"], 90, "{v}");
    // Three agents' memory is summed: each is a few MiB.
    assert!(v["load"]["rss_kib"]["base"].as_u64().unwrap() > 3 * 1024, "{v}");
    no_errors(&v);
}

#[test]
fn echo_reports_acked_sends_and_latency() {
    let node = node();
    for (transport, a) in [
        ("tcp", node.gateway.local_addr()),
        ("quic", node.gateway.quic_addr().unwrap()),
        ("ws", node.gateway.ws_addr().unwrap()),
        ("wss", node.gateway.wss_addr().unwrap()),
    ] {
        let v = bench(
            &[
                "echo",
                "--addr",
                &addr(a),
                "--transport",
                transport,
                "--connections",
                "8",
                "--in-flight",
                "4",
                "--seconds",
                "1",
                "--json",
                "--quiet",
            ],
            Duration::from_secs(30),
        );
        assert!(v["acked"].as_u64().unwrap() > 100, "{transport}: {v}");
        let rtt = &v["rtt_us"];
        assert!(rtt["p50"].as_u64().unwrap() > 0 && rtt["p50"].as_u64() <= rtt["p99"].as_u64(), "{v}");
        no_errors(&v);
    }
}

#[test]
fn push_delivers_to_users_rooms_and_everyone() {
    let node = node();
    for (mode, expected_per_push) in [("user", 1), ("room", 5), ("broadcast", 20)] {
        let v = bench(
            &[
                "push",
                "--addr",
                &addr(node.gateway.local_addr()),
                "--connections",
                "20",
                "--mode",
                mode,
                "--room-size",
                "5",
                "--push-rate",
                "200",
                "--seconds",
                "1",
                "--json",
                "--quiet",
            ],
            Duration::from_secs(30),
        );
        let acked = v["pushes_acked"].as_u64().unwrap();
        assert!(acked > 50, "{mode}: {v}");
        assert_eq!(v["deliveries_expected"].as_u64().unwrap(), acked * expected_per_push, "{mode}: {v}");
        assert_eq!(v["deliveries"], v["deliveries_expected"], "{mode}: every push delivered: {v}");
        assert!(v["latency_us"]["p99"].as_u64().unwrap() > 0);
        no_errors(&v);
    }
}

#[test]
fn push_via_the_api_across_nodes_and_batched() {
    let gateway = ringgate_bin();
    for (spawn, batch) in [("cross", "1"), ("same", "10")] {
        let v = bench(
            &[
                "push",
                "--via",
                "api",
                "--spawn",
                spawn,
                "--api-batch",
                batch,
                "--api-conns",
                "4",
                "--gateway",
                gateway.to_str().unwrap(),
                "--connections",
                "20",
                "--push-rate",
                "200",
                "--seconds",
                "1",
                "--json",
                "--quiet",
            ],
            Duration::from_secs(40),
        );
        let acked = v["pushes_acked"].as_u64().unwrap();
        assert!(acked > 50, "{spawn}: {v}");
        assert_eq!(v["api_offline"], 0, "{spawn}: every receiver was online: {v}");
        assert_eq!(v["deliveries"], v["deliveries_expected"], "{spawn}: every push delivered: {v}");
        // Across nodes every push goes through Redis; on one node a 1 s run may cost Redis
        // less than one clock tick of CPU (it measured 0 once in CI).
        if spawn != "same" {
            assert!(v["cpu_us_per_push"]["redis"].as_f64().unwrap() > 0.0, "{spawn}: {v}");
        }
        no_errors(&v);
    }
}

#[test]
fn abuse_measures_the_probe_and_logins_under_each_attack() {
    let gateway = ringgate_bin();
    let v = bench(
        &["abuse", "--gateway", gateway.to_str().unwrap(), "--attacks", "bad-token,quic-initials", "--window", "1"],
        Duration::from_secs(60),
    );
    let phases = v["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 3, "{v}");
    for phase in phases {
        assert!(phase["probe_us"]["p99"].as_u64().unwrap() > 0, "{phase}");
        for login in ["tcp_ms", "tls_ms", "quic_ms"] {
            assert!(phase["login"][login].as_f64().is_some(), "{login} failed: {phase}");
        }
    }
    assert!(phases[1]["attack_sent"].as_u64().unwrap() > 20, "{v}");
    assert!(phases[1]["refused_so_far"]["flapping"].as_f64().unwrap() > 0.0, "the bad-token flood got banned: {v}");
}

#[test]
fn soak_restarts_the_backend_and_redis_and_every_send_gets_one_ack() {
    let gateway = ringgate_bin();
    let v = bench(
        &[
            "soak",
            "--gateway",
            gateway.to_str().unwrap(),
            "--seconds",
            "24",
            "--held",
            "50",
            "--rate",
            "10",
            "--sample-every",
            "6",
        ],
        Duration::from_secs(90),
    );
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "both restarts happened: {v}");
    let churn = &v["churn"];
    assert!(churn["logins"].as_u64().unwrap() > 100, "{v}");
    assert_eq!(churn["sends"], churn["acks"], "each Send exactly one Ack: {v}");
    assert_eq!(churn["missing_acks"], 0, "{v}");
    assert_eq!(churn["duplicate_acks"], 0, "{v}");
    assert_eq!(churn["errors"].as_object().map(|e| e.len()), Some(0), "errors outside the restarts: {v}");
    assert_eq!(v["fds_after_churn"], v["fds_expected"], "open files back to the held count: {v}");
    assert_eq!(v["held_connections"]["authenticated"], 50, "{v}");
    assert!(v["samples"].as_array().unwrap().len() >= 4, "{v}");
}

#[test]
fn storm_of_dropped_connections_comes_back() {
    let node = node();
    let v = bench(
        &[
            "storm",
            "--addr",
            &addr(node.gateway.local_addr()),
            "--connections",
            "30",
            "--mode",
            "drop",
            "--jitter-ms",
            "300",
            "--window",
            "3",
            "--json",
            "--quiet",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(v["open_before_storm"], 30, "{v}");
    assert_eq!(v["reconnected"], 30, "{v}");
    let to_99 = v["ms_to_99pct"].as_u64().expect("99% back");
    assert!((100..=1500).contains(&to_99), "reconnects follow the 100 ms + 300 ms jitter: {v}");
}

#[test]
fn push_and_storm_run_over_websocket_too() {
    let node = node();
    for (transport, a) in [("ws", node.gateway.ws_addr().unwrap()), ("wss", node.gateway.wss_addr().unwrap())] {
        let v = bench(
            &[
                "push",
                "--addr",
                &addr(a),
                "--transport",
                transport,
                "--connections",
                "20",
                "--mode",
                "room",
                "--room-size",
                "5",
                "--push-rate",
                "200",
                "--seconds",
                "1",
                "--json",
                "--quiet",
            ],
            Duration::from_secs(30),
        );
        assert!(v["pushes_acked"].as_u64().unwrap() > 50, "{transport}: {v}");
        assert_eq!(v["deliveries"], v["deliveries_expected"], "{transport}: every push delivered: {v}");
        no_errors(&v);
        let v = bench(
            &[
                "storm",
                "--addr",
                &addr(a),
                "--transport",
                transport,
                "--connections",
                "20",
                "--mode",
                "drop",
                "--jitter-ms",
                "300",
                "--window",
                "3",
                "--json",
                "--quiet",
            ],
            Duration::from_secs(30),
        );
        assert_eq!(v["open_before_storm"], 20, "{transport}: {v}");
        assert_eq!(v["reconnected"], 20, "{transport}: {v}");
    }
}

#[test]
fn storm_of_a_killed_node_moves_its_clients() {
    let v = bench(
        &[
            "storm",
            "--spawn-nodes",
            "2",
            "--gateway",
            ringgate_bin().to_str().unwrap(),
            "--addr",
            "127.0.0.1:1",
            "--connections",
            "40",
            "--mode",
            "kill",
            "--jitter-ms",
            "300",
            "--window",
            "3",
            "--json",
            "--quiet",
        ],
        Duration::from_secs(40),
    );
    assert_eq!(v["expected_reconnects"], 20, "{v}");
    assert_eq!(v["reconnected"], 20, "{v}");
    assert!(v["ms_to_99pct"].is_u64(), "{v}");
}

/// Processes whose command line starts with `prefix` (nginx names its workers
/// "nginx: worker process").
fn processes_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| c.starts_with(prefix.as_bytes()))
        .count()
}

#[test]
fn compare_runs_every_peer_and_prints_ratios() {
    let nginx_before = processes_named("nginx");
    let haproxy_before = processes_named("haproxy");
    let v = bench(
        &[
            "compare",
            "--gateway",
            ringgate_bin().to_str().unwrap(),
            "--rounds",
            "1",
            "--idle",
            "40",
            "--hold",
            "1",
            "--echo-connections",
            "4",
            "--seconds",
            "1",
            "--json",
            "--peers",
            "ringgate-io_uring,ringgate-epoll,nginx,haproxy,direct,ringgate-tls,ringgate-quic,ringgate-ws,ringgate-wss",
        ],
        Duration::from_secs(150),
    );
    let rounds = v["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 9);
    for r in rounds {
        assert_eq!(r["idle_held"], 40, "{r}");
        assert!(r["acked_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
    }
    let nginx = &v["summary"]["nginx"]["acked_per_s"];
    assert!((nginx["vs_nginx"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    // Teardown is the tool's job: no nginx master or worker, no HAProxy left behind.
    assert_eq!(processes_named("nginx"), nginx_before, "nginx processes left behind");
    assert_eq!(processes_named("haproxy"), haproxy_before, "haproxy processes left behind");
    assert!(v["summary"]["ringgate-io_uring"]["acked_per_s"]["vs_direct"].as_f64().unwrap() > 0.0);
}

#[test]
fn cluster_starts_everything_and_cleans_up() {
    let v = bench(
        &[
            "cluster",
            "--gateway",
            ringgate_bin().to_str().unwrap(),
            "--connections",
            "300",
            "--nodes",
            "2",
            "--backends",
            "1",
            "--rate",
            "2000",
            "--hold",
            "2",
            "--send-every",
            "1",
            "--quiet",
            "--json",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(v["all_up"], true, "{v}");
    assert!(v["trickle_sends_acked"].as_u64().unwrap() > 100, "{v}");
    assert!(v["registry_keys"].as_u64().unwrap() >= 300, "a location per connection: {v}");
    no_errors(&v);
    // Nothing it started is left running.
    std::thread::sleep(Duration::from_millis(300));
    let ps = Command::new("pgrep").args(["-f", "ringgate-bench-.*cluster-"]).output().unwrap();
    assert!(ps.stdout.is_empty(), "gateway nodes left behind: {}", String::from_utf8_lossy(&ps.stdout));
}

#[test]
fn cluster_refuses_a_run_the_machine_cannot_hold_before_starting_anything() {
    let out = Command::new(BENCH)
        .args(["cluster", "--gateway", ringgate_bin().to_str().unwrap(), "--connections", "50000000", "--quiet"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot hold the run: memory: 50000000 connections need about"), "{err}");
    assert!(err.contains("GiB is available"), "{err}");
    let ps = Command::new("pgrep").args(["-f", "ringgate-bench-.*cluster-"]).output().unwrap();
    assert!(ps.stdout.is_empty(), "nothing was started: {}", String::from_utf8_lossy(&ps.stdout));
}

#[test]
fn ctrl_c_stops_a_run_cleanly_with_what_it_measured() {
    let node = node();
    let started = Instant::now();
    let child = Command::new(BENCH)
        .args(["idle", "--addr", &addr(node.gateway.local_addr()), "--connections", "30", "--hold", "60", "--json"])
        .args(["--processes", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(10), || node.gateway.active_connections() == 30));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(started.elapsed() < Duration::from_secs(20), "stopped long before the 60 s hold");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["authenticated"], 30, "{v}");
    assert!(wait_for(Duration::from_secs(5), || node.gateway.active_connections() == 0), "connections closed");
}

#[test]
fn ring_and_registry_report() {
    let out = Command::new(BENCH).args(["ring", "--keys", "2000"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("moved"), "{}", String::from_utf8_lossy(&out.stdout));
    let out = Command::new(BENCH).args(["registry", "--logins", "2000", "--lookups", "100"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
