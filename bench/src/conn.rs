//! One load-generator connection: connect, authenticate, then hold idle with heartbeats or
//! run an echo loop with a fixed number of Sends in flight. Protocol logic is the codec's
//! client session; this file only moves bytes.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::{TcpSocket, TcpStream};
use ringgate_codec::ReasonCode;
use ringgate_codec::session::{ClientConfig, ClientEvent, ClientSession};

use crate::stats::RunStats;

/// What a connection does once authenticated.
#[derive(Debug, Clone, Copy)]
pub enum Workload {
    /// Stay connected until `until`, sending heartbeats.
    Idle { until: Instant },
    /// Keep `in_flight` Sends of `payload` bytes outstanding until `until`; only round trips
    /// completing after `measure_from` are recorded.
    Echo { in_flight: usize, payload: usize, measure_from: Instant, until: Instant },
}

struct Conn {
    stream: TcpStream,
    session: ClientSession,
    input: BytesMut,
    buf: Vec<u8>,
}

impl Conn {
    async fn flush(&mut self) -> std::io::Result<()> {
        let out = self.session.output().split();
        if out.is_empty() {
            return Ok(());
        }
        let compio::BufResult(res, _) = self.stream.write_all(out).await;
        res
    }

    /// Reads once and feeds the session; false on EOF.
    async fn read(&mut self) -> std::io::Result<bool> {
        let buf = std::mem::take(&mut self.buf);
        let compio::BufResult(res, buf) = self.stream.read(buf).await;
        let n = res?;
        self.input.extend_from_slice(&buf[..n]);
        self.buf = buf;
        self.session.handle_input(&mut self.input, Instant::now());
        Ok(n > 0)
    }
}

/// Runs one connection to completion, recording into `stats`.
pub async fn run(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    config: ClientConfig,
    workload: Workload,
    stats: Rc<RefCell<RunStats>>,
) {
    let stream = match connect(addr, source).await {
        Ok(s) => s,
        Err(e) => return stats.borrow_mut().error(format!("connect: {}", e.kind())),
    };
    let _ = stream.set_nodelay(true);
    stats.borrow_mut().connected += 1;
    let mut conn = Conn {
        stream,
        session: ClientSession::new(config, Instant::now()),
        input: BytesMut::new(),
        buf: Vec::with_capacity(16 * 1024),
    };
    if let Err(reason) = authenticate(&mut conn).await {
        return stats.borrow_mut().error(format!("auth: {reason}"));
    }
    stats.borrow_mut().authenticated += 1;
    let result = match workload {
        Workload::Idle { until } => idle(&mut conn, until).await,
        Workload::Echo { in_flight, payload, measure_from, until } => {
            echo(&mut conn, in_flight, payload, measure_from, until, &stats).await
        }
    };
    if let Err(e) = result {
        stats.borrow_mut().error(format!("io: {e}"));
    }
    conn.session.close(ReasonCode::NORMAL);
    let _ = conn.flush().await;
}

/// Connects from `source` (any port) when given, so many 127.x.y.z sources multiply the
/// ephemeral ports available towards one gateway address.
async fn connect(addr: SocketAddr, source: Option<std::net::IpAddr>) -> std::io::Result<TcpStream> {
    let Some(ip) = source else { return TcpStream::connect(addr).await };
    let socket = if ip.is_ipv4() { TcpSocket::new_v4().await? } else { TcpSocket::new_v6().await? };
    socket.bind(SocketAddr::new(ip, 0)).await?;
    socket.connect(addr).await
}

async fn authenticate(conn: &mut Conn) -> Result<(), String> {
    conn.flush().await.map_err(|e| e.kind().to_string())?;
    loop {
        while let Some(event) = conn.session.poll_event() {
            match event {
                ClientEvent::Authenticated(_) => return Ok(()),
                ClientEvent::AuthFailed(f) => return Err(f.reason.to_string()),
                ClientEvent::Closed { reason, .. } => return Err(reason.to_string()),
                _ => {}
            }
        }
        match conn.read().await {
            Ok(true) => {}
            Ok(false) => return Err("eof".into()),
            Err(e) => return Err(e.kind().to_string()),
        }
    }
}

async fn idle(conn: &mut Conn, until: Instant) -> std::io::Result<()> {
    // The server answers each Ping with a Pong (2 bytes), read right after the Ping.
    loop {
        let now = Instant::now();
        let wake = conn.session.poll_timeout().unwrap_or(until).min(until);
        if wake > now {
            compio::time::sleep(wake - now).await;
        }
        let now = Instant::now();
        if now >= until {
            return Ok(());
        }
        conn.session.handle_timeout(now);
        if matches!(conn.session.state(), ringgate_codec::session::ClientState::Closed(_)) {
            return Err(std::io::Error::other("session closed"));
        }
        let pinged = !conn.session.output().is_empty();
        conn.flush().await?;
        if pinged {
            if !conn.read().await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            while conn.session.poll_event().is_some() {}
        }
    }
}

async fn echo(
    conn: &mut Conn,
    in_flight: usize,
    payload: usize,
    measure_from: Instant,
    until: Instant,
    stats: &Rc<RefCell<RunStats>>,
) -> std::io::Result<()> {
    let body = vec![0x5a_u8; payload];
    let mut outstanding = 0;
    for _ in 0..in_flight {
        if conn.session.send(None, &body, Instant::now()).is_ok() {
            outstanding += 1;
        }
    }
    conn.flush().await?;
    while outstanding > 0 {
        if !conn.read().await? {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let now = Instant::now();
        while let Some(event) = conn.session.poll_event() {
            match event {
                ClientEvent::Ack { code, rtt, .. } => {
                    outstanding -= 1;
                    let mut s = stats.borrow_mut();
                    if code.is_ok() {
                        if now >= measure_from && now < until {
                            s.acked_ok += 1;
                            s.record_rtt(rtt);
                        }
                    } else {
                        s.error(format!("ack: {code}"));
                    }
                    drop(s);
                    if now < until && conn.session.send(None, &body, now).is_ok() {
                        outstanding += 1;
                    }
                }
                ClientEvent::Push(_) => stats.borrow_mut().pushes += 1,
                ClientEvent::Closed { reason, .. } => return Err(std::io::Error::other(format!("closed: {reason}"))),
                _ => {}
            }
        }
        conn.flush().await?;
    }
    Ok(())
}

/// The pause between connection attempts for a target rate per second.
pub fn pacing(rate: u64) -> Duration {
    1_000_000_000_u64.checked_div(rate).map_or(Duration::ZERO, Duration::from_nanos)
}
