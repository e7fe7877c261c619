//! Every command in docs/api.md's examples runs as written against a real node (curl, and the
//! `ringgate push` / `ringgate presence` commands), and must succeed: `curl -f` fails on any
//! answer of 400 or more, the ringgate commands on any answer but 200.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ringgate::config::{ApiSettings, IoDriver};
use ringgate_codec::session::ClientEvent;
use support::*;

const KEY: &str = "doc-example-key-0123456789";

/// The commands of the ```sh blocks, continuation lines joined, comments dropped.
fn commands(doc: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut current = String::new();
    for line in doc.lines() {
        if line.starts_with("```") {
            in_block = line == "```sh";
            continue;
        }
        if !in_block || line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

#[test]
fn every_example_in_docs_api_md_runs() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api.md")).unwrap();
    let commands = commands(&doc);
    assert!(commands.len() >= 10, "found only {commands:?}");
    let mut config = support::config(IoDriver::Auto);
    config.node_id = "gw-1".into();
    config.api_listen = Some("127.0.0.1:0".parse().unwrap());
    config.api = ApiSettings { keys: vec![KEY.into()], timeout: Duration::from_secs(1) };
    let gw = start_with(config, 2);
    let (mut alice, _) = TestClient::login_on(gw.local_addr(), "alice", "phone", "ios");
    let (mut bob, _) = TestClient::login(gw.local_addr(), "bob", "laptop");
    let bin = Path::new(env!("CARGO_BIN_EXE_ringgate")).parent().unwrap().to_owned();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    for command in &commands {
        let out = Command::new("sh")
            .args(["-c", command])
            .env("API", gw.api_addr().unwrap().to_string())
            .env("KEY", KEY)
            .env("PATH", &path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{command}\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        for answer in stdout.lines() {
            let parsed: serde_json::Value =
                serde_json::from_str(answer).unwrap_or_else(|e| panic!("{command}: {e}: {answer}"));
            assert!(parsed.is_object(), "{command}: {answer}");
        }
    }
    // The examples did reach the users: alice got pushes, bob was kicked.
    assert!(matches!(alice.next_event(Duration::from_secs(5)), Some(ClientEvent::Push(_))));
    assert_eq!(bob.closed_reason(Duration::from_secs(5)), Some(ringgate_codec::ReasonCode::KICKED));
}
