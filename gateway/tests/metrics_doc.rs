//! docs/metrics.md names every metric family the gateway exports, and nothing else: the
//! families a running node with Redis and the API renders (after a login and an echo) must
//! each be in the document, and each family the document names must be defined in the code.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use ringgate::config::IoDriver;

fn documented() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md")).unwrap();
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|name| name.starts_with("ringgate_"))
        .map(str::to_owned)
        .collect()
}

fn sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

#[test]
fn every_exported_family_is_documented_and_every_documented_one_exists() {
    // With Redis and the server API on, so their families render too.
    let dir = support::tempdir::Dir::new();
    let redis = support::RedisServer::start(dir.path());
    let mut config = support::config(IoDriver::IoUring);
    config.redis = Some(redis.target(std::time::Duration::from_secs(5)));
    config.api_listen = Some("127.0.0.1:0".parse().unwrap());
    config.api.keys = vec!["metrics-doc-key-0123456789".into()];
    let gw = support::start_with(config, 2);
    let (mut c, _) = support::TestClient::login(gw.local_addr(), "metrics-user", "d1");
    c.echo(b"count me");
    let rendered = ringgate::metrics::render();
    let exported: BTreeSet<String> = rendered
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with("ringgate_"))
        .map(str::to_owned)
        .collect();
    assert!(exported.len() >= 20, "only {} families rendered:\n{rendered}", exported.len());
    let documented = documented();
    let missing: Vec<_> = exported.difference(&documented).collect();
    assert!(missing.is_empty(), "exported but not in docs/metrics.md: {missing:?}");

    let mut code = String::new();
    sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut code);
    let stale: Vec<_> = documented.iter().filter(|name| !code.contains(&format!("\"{name}\""))).collect();
    assert!(stale.is_empty(), "in docs/metrics.md but defined nowhere: {stale:?}");
}
