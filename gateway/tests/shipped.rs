//! What a new user does, end to end: the shipped default config, `ringgate token` and
//! `ringgate run`, and a client written from docs/protocol.md alone (scripts/hello.py).
//! Also: every file in config/ parses.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::{tempdir, wait_listening};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn every_shipped_config_parses() {
    let mut count = 0;
    for entry in std::fs::read_dir(repo().join("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(errors) = ringgate::Config::load(&path) {
                panic!("{}:\n{errors}", path.display());
            }
            count += 1;
        }
    }
    assert!(count >= 2, "config/ should hold the default and at least one example");
}

#[test]
fn default_config_token_and_a_python_client() {
    let binary = env!("CARGO_BIN_EXE_ringgate");
    let dir = tempdir::Dir::new();
    let config = dir.path().join("ringgate.toml");
    let shipped = std::fs::read_to_string(repo().join("config/ringgate.toml")).unwrap();
    assert!(shipped.contains("tcp = \"127.0.0.1:7000\""), "the default listens on 7000");
    assert!(shipped.contains("admin = \"127.0.0.1:9100\""), "the default serves metrics on 9100");
    let ephemeral = shipped
        .replace("tcp = \"127.0.0.1:7000\"", "tcp = \"127.0.0.1:0\"")
        .replace("admin = \"127.0.0.1:9100\"", "admin = \"127.0.0.1:0\"");
    std::fs::write(&config, ephemeral).unwrap();

    let token = Command::new(binary)
        .args(["token", "--config"])
        .arg(&config)
        .args(["--user", "alice", "--device", "laptop", "--ttl", "1h"])
        .output()
        .unwrap();
    assert!(token.status.success(), "{}", String::from_utf8_lossy(&token.stderr));
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();

    let mut gateway = Command::new(binary)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (addr, _) = wait_listening(&mut gateway).expect("gateway starts with the default config");
    let hello = Command::new("python3")
        .arg(repo().join("scripts/hello.py"))
        .args([&addr, &token, "alice", "laptop", "from python"])
        .output()
        .expect("python3 runs");
    gateway.kill().unwrap();
    gateway.wait().unwrap();
    let out = String::from_utf8_lossy(&hello.stdout);
    assert!(hello.status.success(), "hello.py failed:\n{out}\n{}", String::from_utf8_lossy(&hello.stderr));
    assert!(out.contains("push 1: from python") && out.contains("ack 1: code 0"), "{out}");
}

#[test]
fn check_config_reports_every_problem_and_fails() {
    let dir = tempdir::Dir::new();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[io]\ndriver = \"kqueue\"\ncolour = 1\n[auth]\nmode = \"none\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ringgate")).arg("check-config").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("io.driver") && err.contains("io.colour"), "{err}");
}

/// `ringgate doctor` on this machine: a small plan passes; a plan beyond this process's
/// open-file limit fails and names the limit and the fix.
#[test]
fn doctor_on_this_machine() {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let nofile: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap();
    let run = |n: u64| {
        Command::new(env!("CARGO_BIN_EXE_ringgate")).args(["doctor", "--connections", &n.to_string()]).output().unwrap()
    };
    let small = run(100);
    assert!(small.status.success(), "{}", String::from_utf8_lossy(&small.stdout));
    let big = run(nofile * 2);
    assert!(!big.status.success());
    let out = String::from_utf8_lossy(&big.stdout);
    assert!(out.contains("FAIL open files (soft)") && out.contains("LimitNOFILE="), "{out}");
}
