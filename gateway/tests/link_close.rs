//! A link the gateway ends carries a Close with the reason first (docs/protocol.md §1, §3.1):
//! a malformed frame from the backend, a silent backend, and the node shutting down. The
//! backend here is raw sockets and the codec, as a backend author would write it.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use bytes::BytesMut;
use ringgate::config::{AuthMode, BackendConfig, IoDriver};
use ringgate_codec::link::*;
use ringgate_codec::{Decoded, ReasonCode};

both_drivers!(a_link_the_gateway_ends_carries_its_reason);

const T: Duration = Duration::from_secs(10);

/// A backend that answers Hello, then runs `script` on each link (one per worker) and
/// reports the Close the gateway sent on that link before the end of the stream (None if it
/// ended without one).
fn backend(script: fn(&mut TcpStream)) -> (SocketAddr, mpsc::Receiver<Option<LinkClose>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                stream.set_read_timeout(Some(T)).unwrap();
                let (mut input, mut buf) = (BytesMut::new(), [0u8; 4096]);
                let mut hello = false;
                let mut close = None;
                loop {
                    while let Ok(Decoded::Frame(frame)) = LinkDecoder::default().decode(&mut input) {
                        match frame {
                            LinkFrame::Hello(_) if !hello => {
                                hello = true;
                                let ack =
                                    HelloAck { backend_id: "script".into(), link_version: LINK_VERSION, window: 64 };
                                stream.write_all(&LinkFrame::HelloAck(ack).to_bytes().unwrap()).unwrap();
                                script(&mut stream);
                            }
                            LinkFrame::Close(c) => close = Some(c),
                            _ => {}
                        }
                    }
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => input.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send(close);
            });
        }
    });
    (addr, rx)
}

fn gateway(driver: IoDriver, backend: SocketAddr, ping: Duration) -> ringgate::Gateway {
    let mut config = support::config(driver);
    config.auth = AuthMode::None;
    config.backend = Some(BackendConfig {
        // Slow re-dials: each case's first links are the ones checked.
        reconnect_min: Duration::from_secs(5),
        reconnect_max: Duration::from_secs(5),
        ping_interval: ping,
        ..support::static_backend(backend)
    });
    support::start_with(config, 2)
}

fn a_link_the_gateway_ends_carries_its_reason(driver: IoDriver) {
    // A frame with an unknown op: unknown_op.
    let (addr, closes) = backend(|s| s.write_all(&[0x7e, 0x00]).unwrap());
    let _gw = gateway(driver, addr, Duration::from_secs(5));
    for _ in 0..2 {
        let close = closes.recv_timeout(T).expect("link ended").expect("a Close before the end");
        assert_eq!(close.reason, ReasonCode::UNKNOWN_OP, "{close:?}");
    }

    // A backend that never answers the Pings: idle_timeout after three intervals.
    let (addr, closes) = backend(|_| {});
    let _gw = gateway(driver, addr, Duration::from_millis(200));
    for _ in 0..2 {
        let close = closes.recv_timeout(T).expect("link ended").expect("a Close before the end");
        assert_eq!(close.reason, ReasonCode::IDLE_TIMEOUT, "{close:?}");
    }

    // The node shuts down: server_shutdown on every link.
    let (addr, closes) = backend(|_| {});
    let gw = gateway(driver, addr, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    gw.shutdown();
    for _ in 0..2 {
        let close = closes.recv_timeout(T).expect("link ended").expect("a Close before the end");
        assert_eq!(close.reason, ReasonCode::SERVER_SHUTDOWN, "{close:?}");
    }
}
