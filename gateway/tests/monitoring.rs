//! monitoring/: the alert rules pass their promtool unit tests; the dashboard is valid, every
//! expression in it parses, and every metric it or the rules name exists on a real node; a
//! real Prometheus with the shipped rules sees the no-backend alert go pending, fire and
//! resolve; the status page shows a node's real figures in headless Chromium; `log.format =
//! "json"` writes one JSON object per line.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringgate::config::{AuthMode, Discovery, DnsTarget, DnsTimers, IoDriver};
use ringgate_codec::session::{ClientConfig, ClientEvent};
use serde_json::Value;
use support::dns::{Answer, DnsServer};
use support::*;

const T: Duration = Duration::from_secs(5);

fn monitoring(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitoring").join(file)
}

/// Runs promtool (Debian's `prometheus` package; scripts/test.sh installs it) and returns its
/// output; panics with it when promtool fails.
fn promtool(args: &[&str], cwd: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("promtool: {e} (install Debian's prometheus package; scripts/test.sh does)"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn the_rules_pass_their_promtool_unit_tests_and_the_example_config_is_valid() {
    let dir = monitoring("");
    promtool(&["check", "rules", "ringgate.rules.yml"], &dir);
    let out = promtool(&["test", "rules", "rules_test.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
    promtool(&["check", "config", "prometheus.yml"], &dir);
}

/// Every alert of the rules file has a case in rules_test.yml.
#[test]
fn every_alert_has_a_unit_test() {
    let rules = std::fs::read_to_string(monitoring("ringgate.rules.yml")).unwrap();
    let tests = std::fs::read_to_string(monitoring("rules_test.yml")).unwrap();
    let alerts: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).collect();
    assert!(alerts.len() >= 11, "{alerts:?}");
    for alert in alerts {
        assert!(tests.contains(&format!("alertname: {alert}\n")), "{alert} has no case in rules_test.yml");
    }
}

/// The dashboard's panels, and each one's PromQL expressions.
fn dashboard() -> Value {
    let text = std::fs::read_to_string(monitoring("grafana/ringgate.json")).unwrap();
    serde_json::from_str(&text).expect("grafana/ringgate.json is valid JSON")
}

fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            out.push((title, target["expr"].as_str().expect("every target has an expr").to_owned()));
        }
    }
    out
}

#[test]
fn the_dashboard_is_valid_and_every_expression_parses() {
    let d = dashboard();
    let vars: Vec<&str> =
        d["templating"]["list"].as_array().unwrap().iter().filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(vars, ["datasource", "job", "instance"], "a datasource variable, then the fleet and node filters");
    for panel in d["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{} uses the datasource variable", panel["title"]);
    }
    let exprs = expressions(&d);
    assert!(exprs.len() >= 40, "{}", exprs.len());
    // promtool parses PromQL in rules files: one recording rule per expression, with
    // Grafana's variables given values.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in exprs.iter().enumerate() {
        let expr = expr.replace("$__rate_interval", "1m").replace("$job", ".*").replace("$instance", ".*");
        assert!(!expr.contains('$'), "an unknown variable in {expr}");
        rules.push_str(&format!(
            "      - record: dashboard:expr_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let dir = tempdir::Dir::new();
    std::fs::write(dir.path().join("dashboard.rules.yml"), rules).unwrap();
    let out = promtool(&["check", "rules", "dashboard.rules.yml"], dir.path());
    assert!(out.contains(&format!("SUCCESS: {} rules found", exprs.len())), "{out}");
}

/// The metric names in `text`: identifiers starting with `ringgate_` that are not part of a
/// recording rule's name (those hold colons), with histogram suffixes taken off.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut token = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            token.push(c);
            continue;
        }
        if token.starts_with("ringgate_") && !token.contains(':') {
            let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| token.strip_suffix(s)).unwrap_or(&token);
            names.insert(base.to_owned());
        }
        token.clear();
    }
    names
}

/// A node with every optional part on (linked backends found by DNS, Redis, the server API),
/// so every family docs/metrics.md lists is exported.
#[test]
fn every_metric_the_dashboard_and_the_rules_name_exists_on_a_real_node() {
    let dir = tempdir::Dir::new();
    let redis = RedisServer::start(dir.path());
    let (_backend, backend) = spawn_reference_backend("127.0.0.1:0", "be-1", &[]);
    let dns = DnsServer::start(Answer::Records(vec![std::net::Ipv4Addr::LOCALHOST], 1));
    let mut config = support::config(IoDriver::IoUring);
    config.auth = AuthMode::None;
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    config.api_listen = Some("127.0.0.1:0".parse().unwrap());
    config.api.keys = vec!["api-key-0123456789".into()];
    config.redis = Some(redis.target(Duration::from_secs(3)));
    config.backend = Some(backend_config(Discovery::Dns(DnsTarget {
        name: "backends.ringgate.test".into(),
        port: backend.port(),
        nameserver: Some(dns.addr),
        timers: DnsTimers {
            min_ttl: Duration::from_millis(100),
            max_ttl: Duration::from_secs(1),
            hold_down: Duration::from_secs(1),
            retry: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
        },
    })));
    let gw = start_with(config, 2);
    let admin = gw.admin_addr().unwrap();
    // One Send->Ack and one API call, so the histograms have samples.
    let mut c = TestClient::connect_with(gw.local_addr(), ClientConfig::new("", "u1", "d1"));
    assert!(matches!(c.next_event(T), Some(ClientEvent::Authenticated(_))));
    let links = || metric_sum(&http(admin, "GET", "/metrics").1, "ringgate_backend_links_up", &[]);
    assert!(eventually(T, || links() > 0.0), "the DNS-found backend links up");
    c.echo(b"hello");
    let (status, _) = http(gw.api_addr().unwrap(), "GET", "/v1/presence/u1");
    assert_eq!(status, 401, "a request without the key still counts");
    let exported = metric_names(&http(admin, "GET", "/metrics").1);

    let mut named = BTreeSet::new();
    for (_, expr) in expressions(&dashboard()) {
        named.extend(metric_names(&expr));
    }
    named.extend(metric_names(&std::fs::read_to_string(monitoring("ringgate.rules.yml")).unwrap()));
    assert!(named.len() > 30, "{named:?}");
    let missing: Vec<&String> = named.difference(&exported).collect();
    assert!(missing.is_empty(), "named in monitoring/ but not exported by a node: {missing:?}");
}

/// A gateway child process from `toml`; its client address.
fn child_gateway(dir: &Path, name: &str, toml: &str) -> (ChildGuard, SocketAddr) {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    let (child, addr) = spawn_gateway(&path);
    (ChildGuard(child), addr.parse().unwrap())
}

/// The alerts Prometheus holds now: (name, state).
fn alerts(prometheus: SocketAddr) -> Vec<(String, String)> {
    let (status, body) = http(prometheus, "GET", "/api/v1/alerts");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["labels"]["alertname"].as_str().unwrap().to_owned(), a["state"].as_str().unwrap().to_owned()))
        .collect()
}

fn alert_state(prometheus: SocketAddr, name: &str) -> Option<String> {
    alerts(prometheus).into_iter().find(|(n, _)| n == name).map(|(_, s)| s)
}

#[test]
fn a_real_prometheus_fires_the_no_backend_alert_and_resolves_it() {
    let dir = tempdir::Dir::new();
    let (mut backend, backend_addr) = spawn_reference_backend("127.0.0.1:0", "be-1", &[]);
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (mut gw, addr) = child_gateway(
        dir.path(),
        "node",
        &format!(
            "[node]\nid = \"prom-node\"\n[listen]\ntcp = \"127.0.0.1:0\"\nadmin = \"{admin}\"\n\
             [auth]\nmode = \"none\"\n[drain]\ndelay = \"30s\"\n\
             [backend]\naddresses = [\"{backend_addr}\"]\nconnect_timeout = \"500ms\"\nreconnect_max = \"200ms\"\n"
        ),
    );
    let prometheus: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: ringgate\n    static_configs:\n      - targets: [\"{admin}\"]\n",
            monitoring("ringgate.rules.yml").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prom = ChildGuard(
        Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={prometheus}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus runs (Debian's prometheus package; scripts/test.sh installs it)"),
    );
    let prom_log = || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    let listening = eventually(Duration::from_secs(30), || std::net::TcpStream::connect(prometheus).is_ok());
    assert!(listening, "prometheus listens:\n{}", prom_log());
    let up = |query: &str| {
        let (status, body) = http(prometheus, "GET", &format!("/api/v1/query?query={query}"));
        status == 200 && body.contains("\"value\":[") && body.contains("\"1\"]")
    };
    // Ready, the rules loaded, the node scraped with its links up, and the alert quiet.
    assert!(eventually(Duration::from_secs(30), || up("up")), "prometheus scrapes the node:\n{}", prom_log());
    assert!(
        eventually(Duration::from_secs(15), || up("sum(ringgate_backend_links_up)%20%3E%20bool%200")),
        "links up in Prometheus:\n{}",
        prom_log()
    );
    // Every dashboard expression runs (not only parses) against the node's real series.
    std::thread::sleep(Duration::from_secs(3));
    let mut answered = 0;
    for (title, expr) in expressions(&dashboard()) {
        let expr = expr.replace("$__rate_interval", "1m").replace("$job", "ringgate.*").replace("$instance", ".*");
        let query: String = form_urlencoded::byte_serialize(expr.as_bytes()).collect();
        let (status, body) = http(prometheus, "GET", &format!("/api/v1/query?query={query}"));
        assert!(status == 200 && body.contains("\"status\":\"success\""), "{title}: {expr}: {body}");
        answered += usize::from(!body.contains("\"result\":[]"));
    }
    assert!(answered >= 25, "{answered} dashboard expressions have data on a live node");
    let (status, rules) = http(prometheus, "GET", "/api/v1/rules");
    assert!(status == 200 && rules.contains("RinggateNoBackendLink"), "the shipped rules are loaded: {rules}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(alert_state(prometheus, "RinggateNoBackendLink"), None, "quiet while the link is up");

    // The backend dies: pending at once, firing after the rule's `for: 30s`.
    let killed = Instant::now();
    backend.kill();
    assert!(
        eventually(Duration::from_secs(15), || alert_state(prometheus, "RinggateNoBackendLink").is_some()),
        "pending: {:?}",
        alerts(prometheus)
    );
    assert_eq!(alert_state(prometheus, "RinggateNoBackendLink").as_deref(), Some("pending"));
    assert!(
        eventually(Duration::from_secs(60), || alert_state(prometheus, "RinggateNoBackendLink").as_deref()
            == Some("firing")),
        "firing: {:?}",
        alerts(prometheus)
    );
    assert!(killed.elapsed() >= Duration::from_secs(30), "not before `for: 30s`");

    // It returns on the same address: the link comes back and the alert resolves.
    let (_backend, _) = spawn_reference_backend(&backend_addr.to_string(), "be-1", &[]);
    assert!(
        eventually(Duration::from_secs(30), || alert_state(prometheus, "RinggateNoBackendLink").is_none()),
        "resolved: {:?}",
        alerts(prometheus)
    );

    // A drain: the dashboard's drain panel shows the connection still on the node.
    let mut held = TestClient::connect_with(addr, ClientConfig::new("", "u1", "d1"));
    assert!(matches!(held.next_event(T), Some(ClientEvent::Authenticated(_))));
    assert_eq!(http(admin, "POST", "/drain").0, 202);
    let (_, drain_expr) = expressions(&dashboard()).into_iter().find(|(t, _)| t == "Drain progress").unwrap();
    let drain_expr =
        drain_expr.replace("$__rate_interval", "1m").replace("$job", "ringgate.*").replace("$instance", ".*");
    let query: String = form_urlencoded::byte_serialize(drain_expr.as_bytes()).collect();
    let draining = || http(prometheus, "GET", &format!("/api/v1/query?query={query}")).1;
    assert!(eventually(Duration::from_secs(10), || draining().contains("\"1\"]")), "{drain_expr}: {}", draining());

    // A node that stops answering scrapes: RinggateNodeNotScraped goes pending (it fires
    // after its `for: 2m`, which the unit tests cover).
    gw.kill();
    assert!(
        eventually(Duration::from_secs(20), || alert_state(prometheus, "RinggateNodeNotScraped").is_some()),
        "{:?}",
        alerts(prometheus)
    );
}

/// The status page in headless Chromium (puppeteer-core, from clients/js) after a scripted
/// load against a child node: what it shows equals the load and the node's /metrics, and it
/// fetched nothing but its own origin. The screenshot is kept (README.md shows one).
#[test]
fn the_status_page_shows_the_node_s_real_figures_in_chromium() {
    let dir = tempdir::Dir::new();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (_gw, addr) = child_gateway(
        dir.path(),
        "node",
        &format!(
            "[node]\nid = \"status-node\"\n[listen]\ntcp = \"127.0.0.1:0\"\nadmin = \"{admin}\"\n\
             [auth]\nmode = \"none\"\n[limits]\nmax_connections = 5000\n"
        ),
    );
    // 20 held connections; 5 of them echo 10 times each.
    let mut clients: Vec<TestClient> = (0..20)
        .map(|i| {
            let mut c = TestClient::connect_with(addr, ClientConfig::new("", format!("user-{i}").as_str(), "web"));
            assert!(matches!(c.next_event(T), Some(ClientEvent::Authenticated(_))));
            c
        })
        .collect();
    for c in clients.iter_mut().take(5) {
        for k in 0..10 {
            c.echo(format!("message {k}").as_bytes());
        }
    }
    // Three the backend refuses (the reference backend's `reject` key): Ack errors.
    let rejecter = &mut clients[6];
    for _ in 0..3 {
        let seq = rejecter.send(Some("reject"), b"no");
        loop {
            match rejecter.next_event(T) {
                Some(ClientEvent::Ack { seq: s, code, .. }) if s == seq => {
                    assert_eq!(code, ringgate_codec::ReasonCode::BACKEND_REJECTED);
                    break;
                }
                Some(_) => {}
                None => panic!("no Ack"),
            }
        }
    }
    // One more keeps echoing while the page watches, for its rates and its p99.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut steady = clients.pop().unwrap();
    let steady = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                steady.echo(b"steady");
                sent += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (steady, sent)
        }
    });
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ringgate-status.png");
    let _ = std::fs::remove_file(&shot);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/monitoring/status_page.mjs");
    let out = Command::new("node")
        .arg(&script)
        .arg(format!("http://{admin}/"))
        .arg(&shot)
        .output()
        .expect("node runs (scripts/test.sh checks for it)");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (steady, steady_sent) = steady.join().unwrap();
    clients.push(steady);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let shown: Value = serde_json::from_str(stdout.lines().find_map(|l| l.strip_prefix("SHOWN ")).unwrap()).unwrap();
    let metrics = http(admin, "GET", "/metrics").1;
    let sum = |name: &str, labels: &[&str]| metric_sum(&metrics, name, labels) as u64;

    assert_eq!(shown["node"], "status-node");
    assert_eq!(shown["ready"], "ready");
    assert_eq!(shown["backend"], "embedded");
    assert_eq!(shown["connections"], "20");
    assert_eq!(shown["capacity"], "5,000");
    assert_eq!(shown["transports"], serde_json::json!({"tcp": "20"}));
    assert_eq!(shown["logins_total"], "20");
    // The page's last poll was during the steady echoes: between the 53 and all of them.
    let sends: u64 = shown["sends_total"].as_str().unwrap().replace(',', "").parse().unwrap();
    assert!(sends > 53 && sends <= 53 + steady_sent, "{sends} of 53 + {steady_sent}");
    assert_eq!(sum("ringgate_sends_total", &[]), 53 + steady_sent, "/metrics agrees with the load");
    let rate: f64 = shown["sends_rate"].as_str().unwrap().parse().unwrap();
    assert!(rate > 1.0 && rate < 100.0, "one echo per ~20 ms at most: {rate}");
    assert_eq!(shown["ack_errors"], "3");
    assert_eq!(sum("ringgate_acks_total", &["reason=\"backend_rejected\""]), 3);
    let p99 = shown["p99"].as_str().unwrap();
    assert!(p99.ends_with(" ms") || p99.ends_with(" s"), "a p99 from the load's Sends: {p99}");
    assert_eq!(shown["links"], "embedded backend");
    assert_eq!(shown["registry"], "in process");
    // Every request the page made went to the node itself.
    let requests = shown["requests"].as_array().unwrap();
    assert!(requests.iter().any(|r| r.as_str().unwrap().ends_with("/status.json")), "{requests:?}");
    for r in requests {
        assert!(r.as_str().unwrap().starts_with(&format!("http://{admin}/")), "an external fetch: {r}");
    }
    assert_eq!(shown["console_errors"], serde_json::json!([]));
    assert!(shown["chart_points"].as_u64().unwrap() >= 3, "the charts draw the samples: {shown}");
    assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000), "no screenshot at {}", shot.display());

    // docs/deploy.md's /status.json example has the fields the node answers, no more, no less.
    let (status, body) = http(admin, "GET", "/status.json");
    assert_eq!(status, 200);
    let real: Value = serde_json::from_str(&body).unwrap();
    let deploy = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/deploy.md")).unwrap();
    let example = deploy.split("**Status page.**").nth(1).and_then(|s| s.split("```json\n").nth(1)).unwrap();
    let documented: Value = serde_json::from_str(example.split("```").next().unwrap()).unwrap();
    fn keys(v: &Value, at: &str, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => m.iter().for_each(|(k, v)| {
                out.insert(format!("{at}.{k}"));
                if k != "by_transport" {
                    keys(v, &format!("{at}.{k}"), out);
                }
            }),
            Value::Array(a) => a.iter().take(1).for_each(|v| keys(v, &format!("{at}[]"), out)),
            _ => {}
        }
    }
    let (mut want, mut got) = (BTreeSet::new(), BTreeSet::new());
    keys(&documented, "", &mut want);
    keys(&real, "", &mut got);
    // The example has no registry or DNS (null there), as this node.
    assert_eq!(want, got, "docs/deploy.md's /status.json example differs from what a node answers: {body}");
    drop(clients);
}

/// `log.format = "json"`: every line the node writes is one JSON object; the login refusals,
/// closes and drain a pipeline looks for carry their fields.
#[test]
fn json_logs_are_one_object_per_line_with_the_fields_pipelines_need() {
    let dir = tempdir::Dir::new();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(
        &path,
        format!(
            "[log]\nformat = \"json\"\nlevel = \"info,ringgate::conn=debug,ringgate::auth=debug\"\n\
             [node]\nid = \"json-node\"\n[listen]\ntcp = \"127.0.0.1:0\"\nadmin = \"{admin}\"\n\
             [drain]\ndelay = \"0s\"\n[auth.keys]\n{KID} = \"{}\"\n",
            String::from_utf8_lossy(SECRET)
        ),
    )
    .unwrap();
    let log = dir.path().join("node.log");
    let mut child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_ringgate"))
            .args(["run", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let lines = || -> Vec<Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object ({e}): {l}")))
            .collect()
    };
    let find =
        |message: &str| lines().into_iter().find(|l| l["message"].as_str().is_some_and(|m| m.starts_with(message)));
    assert!(eventually(T, || find("listening").is_some()), "{:?}", lines());
    let listening = find("listening").unwrap();
    assert_eq!(listening["level"], "INFO");
    assert!(listening["timestamp"].is_string() && listening["target"].is_string(), "{listening}");
    let addr: SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();

    // A refused login: a token signed with another secret.
    let claims = ringgate::auth::token::Claims {
        sub: "mallory".into(),
        dev: "d".into(),
        plat: "web".into(),
        exp: unix_now() + 300,
    };
    let bad = ringgate::auth::token::mint(KID, b"another-secret-0123456789", &claims);
    let mut c = TestClient::connect_with(addr, ClientConfig::new(bad, "mallory", "d"));
    assert!(matches!(c.next_event(T), Some(ClientEvent::AuthFailed(_)) | Some(ClientEvent::Closed { .. })));
    assert!(eventually(T, || find("login refused").is_some()), "{:?}", lines());
    let refused = find("login refused").unwrap();
    assert_eq!(refused["target"], "ringgate::auth");
    assert_eq!(refused["reason"], "auth_invalid");
    assert_eq!(refused["transport"], "tcp");
    assert!(refused["conn"].is_u64() && refused["detail"].is_string(), "{refused}");

    // A login that closes normally.
    let (mut ok, _) = TestClient::login(addr, "alice", "phone");
    ok.session.close(ringgate_codec::ReasonCode::NORMAL);
    ok.flush();
    assert_eq!(ok.closed_reason(T), Some(ringgate_codec::ReasonCode::NORMAL));
    let closed = || lines().into_iter().find(|l| l["message"] == "connection closed" && l["user"] == "alice");
    assert!(eventually(T, || closed().is_some()), "{:?}", lines());
    let closed = closed().unwrap();
    assert_eq!((closed["reason"].as_str(), closed["device"].as_str()), (Some("normal"), Some("phone")));

    // A drain through the admin endpoint, to the end.
    assert_eq!(http(admin, "POST", "/drain").0, 202);
    let exited = eventually(Duration::from_secs(15), || child.0.try_wait().ok().flatten().is_some());
    assert!(exited, "{:?}", lines());
    let drained = find("drained").expect("a drained line");
    assert!(drained["connections"].is_u64() && drained["elapsed_ms"].is_u64(), "{drained}");
    assert!(find("draining").is_some_and(|l| l["rate"].is_u64()), "{:?}", lines());
}
