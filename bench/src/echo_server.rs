//! A client-protocol echo server: what nginx and HAProxy proxy to in `compare`, and the
//! "ceiling" reached directly. It answers exactly what ringgate with its reference backend
//! answers (AuthOk, Pong, each Send echoed as a Push then Acked ok), with the codec's own
//! server session, so the load generator cannot tell them apart. Auth is not checked.
//!
//! One thread per core, each with its own runtime and SO_REUSEPORT listener, and a task with
//! a 16 KiB buffer per connection: the straightforward server a backend team would write.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};
use ringgate_codec::client::{AuthOk, PROTOCOL_VERSION};
use ringgate_codec::session::{ServerConfig, ServerEvent, ServerSession};

/// Serves on `addr` with `threads` threads; returns the bound address through `bound` and
/// runs until the process ends.
pub fn serve(addr: SocketAddr, threads: usize, bound: std::sync::mpsc::Sender<SocketAddr>) -> std::io::Result<()> {
    let listeners = ringgate::listener::bind_group(addr, threads.max(1), 65_535)?;
    let _ = bound.send(listeners.first().map(|l| l.local_addr()).transpose()?.unwrap_or(addr));
    let handles: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            std::thread::spawn(move || {
                let Ok(runtime) = compio::runtime::Runtime::new() else { return };
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(l) else { return };
                    while let Ok((stream, _)) = listener.accept().await {
                        let _ = stream.set_nodelay(true);
                        compio::runtime::spawn(connection(stream)).detach();
                    }
                });
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

fn config() -> ServerConfig {
    ServerConfig {
        heartbeat_interval: Duration::from_secs(30),
        max_in_flight: 4096,
        max_outbound: 64 << 20,
        ..ServerConfig::default()
    }
}

async fn connection(mut stream: TcpStream) {
    let config = config();
    let mut session = ServerSession::new(&config, Instant::now());
    let mut input = BytesMut::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut next_id = 0u64;
    loop {
        let compio::BufResult(res, b) = stream.read(buf).await;
        buf = b;
        let n = match res {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        input.extend_from_slice(buf.get(..n).unwrap_or_default());
        let now = Instant::now();
        while let Some(event) = session.handle_input(&mut input, now) {
            match event {
                ServerEvent::Auth(_) => {
                    next_id += 1;
                    let ok = AuthOk {
                        connection_id: next_id,
                        node_id: "echo".into(),
                        heartbeat_interval: config.heartbeat_interval,
                        server_time_ms: 0,
                        protocol_version: PROTOCOL_VERSION,
                        max_frame_len: config.max_frame_len as u32,
                        max_in_flight: config.max_in_flight,
                        resume_token: None,
                    };
                    session.accept(&ok, now);
                }
                ServerEvent::Send(send) => {
                    let _ = session.push(&send.payload);
                    let _ = session.ack(send.seq, ringgate_codec::ReasonCode::OK);
                }
                ServerEvent::Pinged => {}
                ServerEvent::Closed { .. } => {
                    let out = session.output().split();
                    let _ = stream.write_all(out).await;
                    return;
                }
            }
        }
        let out = session.output().split();
        if !out.is_empty() {
            let compio::BufResult(res, _) = stream.write_all(out).await;
            if res.is_err() {
                return;
            }
        }
    }
}
