//! WebSocket conformance: the Autobahn TestSuite's case files, driven by `kosoku -m
//! fuzzingclient` (PyPI; no Docker), against an echo server built on the gateway's own
//! sans-IO WebSocket layer (`transport::ws::handshake` and `frames::Reader`, in its
//! text-accepting harness mode; the gateway itself refuses text with 1003).
//!
//! Sections 1-7, 9 and 10 run; 12 and 13 (permessage-deflate) are not negotiated by
//! ringgate (docs/protocol.md §2.5). Every case must pass: kosoku exits non-zero and
//! names the case otherwise.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringgate::transport::ws::frames::{self, Part, Reader};
use ringgate::transport::ws::handshake::{self, Rules};
use websocket_sans_io::Opcode;

/// Autobahn's 9.x cases send messages of up to 16 MiB.
const MAX_MESSAGE: u64 = 64 << 20;

/// Serves one connection: the upgrade, then every message echoed with its opcode, Pings
/// answered, a Close echoed, a violation closed with its code.
fn serve(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let rules = Rules { path: "/".into(), allowed_origins: Vec::new() };
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = Vec::new();
    let mut input = loop {
        let Ok(n) = stream.read(&mut buf) else { return };
        if n == 0 {
            return;
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
        match handshake::parse(&head, &rules, &[]) {
            Ok(None) => continue,
            Ok(Some(upgrade)) => {
                if stream.write_all(&upgrade.response).is_err() {
                    return;
                }
                break head.split_off(upgrade.consumed);
            }
            Err(refusal) => {
                let _ = stream.write_all(&refusal.response());
                return;
            }
        }
    };
    let mut reader = Reader::with_text(MAX_MESSAGE);
    let mut message = Vec::new();
    loop {
        // Pongs go out before the messages completed in the same read: a message ends after
        // any control frame inside it.
        let mut out = BytesMut::new();
        let mut replies = BytesMut::new();
        let fed = reader.feed(
            &mut input,
            &mut |bytes, part| match part {
                Part::Binary => message.extend_from_slice(bytes),
                Part::End => frames::encode(Opcode::Binary, &std::mem::take(&mut message), &mut out),
                Part::Text => frames::encode(Opcode::Text, bytes, &mut out),
            },
            &mut replies,
        );
        if stream.write_all(&replies).is_err() {
            return;
        }
        match fed {
            Ok(fed) => {
                if stream.write_all(&out).is_err() {
                    return;
                }
                if let Some(code) = fed.close {
                    let mut close = BytesMut::new();
                    frames::encode_close(code.unwrap_or(frames::code::NORMAL), "", &mut close);
                    let _ = stream.write_all(&close);
                    let _ = stream.shutdown(std::net::Shutdown::Write);
                    drain(&mut stream);
                    return;
                }
            }
            Err(violation) => {
                let _ = stream.write_all(&out);
                let mut close = BytesMut::new();
                frames::encode_close(violation.code(), "", &mut close);
                let _ = stream.write_all(&close);
                let _ = stream.shutdown(std::net::Shutdown::Write);
                drain(&mut stream);
                return;
            }
        }
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        input.clear();
        input.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
}

/// Reads until the peer closes (bounded), so the close handshake ends with the client.
fn drain(stream: &mut TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut sink = [0u8; 4096];
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
}

#[test]
fn autobahn_sections_1_to_7_9_and_10_pass_against_the_sans_io_layer() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    let out = std::env::temp_dir().join(format!("ringgate-autobahn-{}", std::process::id()));
    let mut cmd = Command::new("kosoku");
    cmd.args(["-m", "fuzzingclient", &addr.to_string(), "-p", "2", "-o"]).arg(&out);
    for section in ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"] {
        cmd.args(["-i", section]);
    }
    let started = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("kosoku (pip install kosoku)");
    let limit = Duration::from_secs(600);
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("kosoku did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let _ = std::fs::remove_dir_all(&out);
    assert!(output.status.success(), "Autobahn cases failed:\n{stdout}\n{stderr}");
    let passed: usize = stdout
        .lines()
        .find_map(|l| l.strip_suffix(" cases passed"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no summary from kosoku:\n{stdout}\n{stderr}"));
    assert!(passed >= 250, "only {passed} cases ran:\n{stdout}");
    eprintln!("{passed} Autobahn cases passed in {:?}", started.elapsed());
}
