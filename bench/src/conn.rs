//! One load-generator connection: connect, authenticate, then run its workload. Protocol
//! logic is the codec's client session; this file only moves bytes and keeps score.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use ringgate_codec::ReasonCode;
use ringgate_codec::backoff::Backoff;
use ringgate_codec::session::{ClientConfig, ClientEvent, ClientSession, ClientState};
use serde::{Deserialize, Serialize};

use crate::control::{self, PROGRESS};
use crate::stats::RunStats;
use crate::transport::{Connector, Opened, ReadHalf, WriteHalf};
use crate::ws::Framing;

/// What `push` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PushMode {
    /// Each push goes to one user (route key `user:u{k}`).
    User,
    /// Each push goes to a room of `--room-size` members (`room:room{k}`).
    Room,
    /// Each push goes to every connection (`broadcast`).
    Broadcast,
}

/// What a connection does once authenticated. Times are unix milliseconds, so that every
/// process of a run agrees on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Workload {
    /// Stay connected until `until_ms`, sending heartbeats, and (when `send_every_ms` > 0)
    /// a 32-byte Send every so often, whose round trips are recorded (those acked before
    /// `measure_from_ms` apart, as early).
    Idle {
        until_ms: u64,
        send_every_ms: u64,
        #[serde(default)]
        measure_from_ms: u64,
    },
    /// Keep `in_flight` Sends of `payload` bytes outstanding until `until_ms`; only round
    /// trips completing after `measure_from_ms` are recorded.
    Echo { in_flight: usize, payload: usize, measure_from_ms: u64, until_ms: u64 },
    /// Join room `room{i / room_size}` (when `room_size` > 0), then take pushes until
    /// `until_ms`, recording each one's latency from the timestamp it carries.
    Receive { room_size: usize, until_ms: u64 },
    /// Stay connected until `until_ms`, and whenever the connection ends reconnect (to the
    /// next address) after the GoAway's hint or a jittered backoff. With `drop_at_ms` the
    /// client drops its own connection at that moment.
    /// Re-authentications are recorded in ms since `base_ms`.
    Storm { drop_at_ms: Option<u64>, until_ms: u64, reconnect_after_ms: u64, jitter_ms: u64, base_ms: u64 },
}

impl Workload {
    pub fn until_ms(&self) -> u64 {
        match *self {
            Workload::Idle { until_ms, .. }
            | Workload::Echo { until_ms, .. }
            | Workload::Receive { until_ms, .. }
            | Workload::Storm { until_ms, .. } => until_ms,
        }
    }
}

/// Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Unix time in microseconds: push payloads carry it (every process of a run is on this
/// machine, so their clocks agree).
pub fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// The Instant at unix time `ms` (past times map to now).
pub fn instant_at(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms.saturating_sub(unix_ms()))
}

/// What the reading task and the connection's workload share.
struct Shared {
    session: ClientSession,
    input: BytesMut,
    tls: Option<rustls::ClientConnection>,
    ws: Option<Framing>,
    eof: bool,
}

impl Shared {
    /// Takes plain bytes off the socket (decrypted already): unwraps WebSocket frames, or
    /// passes them on as they are.
    fn take_plain(&mut self, plain: &mut [u8]) {
        match &mut self.ws {
            Some(ws) => {
                if !ws.unwrap(plain, &mut self.input) {
                    self.eof = true;
                }
            }
            None => self.input.extend_from_slice(plain),
        }
    }
}

/// A connection: its session, its writing half, and the task that reads (never cancelled;
/// it wakes the workload through `signal` whenever input was decoded).
#[allow(missing_debug_implementations)]
pub struct Conn {
    shared: Rc<RefCell<Shared>>,
    writer: WriteHalf,
    signal: flume::Receiver<()>,
    _reader: compio::runtime::JoinHandle<()>,
}

async fn read_loop(mut reader: ReadHalf, shared: Rc<RefCell<Shared>>, signal: flume::Sender<()>) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut plain = Vec::new();
    loop {
        let compio::BufResult(res, b) = reader.read(buf).await;
        buf = b;
        let n = match res {
            Ok(n) if n > 0 => n,
            _ => {
                shared.borrow_mut().eof = true;
                let _ = signal.try_send(());
                return;
            }
        };
        let mut sh = shared.borrow_mut();
        match sh.tls.as_mut() {
            Some(tls) => {
                let data = buf.get(..n).unwrap_or_default();
                let ok = tls.read_tls(&mut &*data).is_ok() && tls.process_new_packets().is_ok();
                plain.clear();
                let _ = std::io::Read::read_to_end(&mut tls.reader(), &mut plain);
                sh.take_plain(&mut plain);
                if !ok {
                    sh.eof = true;
                }
            }
            None => sh.take_plain(buf.get_mut(..n).unwrap_or_default()),
        }
        let Shared { session, input, eof, .. } = &mut *sh;
        session.handle_input(input, Instant::now());
        let done = *eof;
        drop(sh);
        let _ = signal.try_send(());
        if done {
            return;
        }
    }
}

impl Conn {
    fn new(opened: Opened, session: ClientSession) -> Conn {
        let Opened { reader, writer, tls, ws, mut early } = opened;
        let mut shared = Shared { session, input: BytesMut::new(), tls, ws, eof: false };
        shared.take_plain(&mut early);
        let shared = Rc::new(RefCell::new(shared));
        let (tx, rx) = flume::bounded(1);
        let reader = compio::runtime::spawn(read_loop(reader, shared.clone(), tx));
        Conn { shared, writer, signal: rx, _reader: reader }
    }

    /// Writes what the session has queued (in a WebSocket frame, then encrypted, as the
    /// connection's layers ask).
    pub async fn flush(&mut self) -> std::io::Result<()> {
        let out = {
            let mut sh = self.shared.borrow_mut();
            let Shared { session, tls, ws, .. } = &mut *sh;
            let plain = session.output().split();
            let plain = match ws {
                Some(ws) if !plain.is_empty() => ws.wrap(&plain),
                _ => plain.to_vec(),
            };
            match tls {
                Some(tls) => {
                    if !plain.is_empty() {
                        std::io::Write::write_all(&mut tls.writer(), &plain)?;
                    }
                    let mut out = Vec::new();
                    while tls.wants_write() {
                        tls.write_tls(&mut out)?;
                    }
                    out
                }
                None => plain,
            }
        };
        if out.is_empty() {
            return Ok(());
        }
        self.writer.write_all(out).await
    }

    /// Waits until the reading task decoded more input; false once the peer has gone.
    pub async fn read(&mut self) -> std::io::Result<bool> {
        if self.shared.borrow().eof {
            return Ok(false);
        }
        let _ = self.signal.recv_async().await;
        Ok(!self.shared.borrow().eof)
    }

    /// As [`read`](Self::read), giving up at `deadline` (Ok(true) then: nothing happened).
    async fn read_until(&mut self, deadline: Instant) -> std::io::Result<bool> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match compio::time::timeout(wait, self.read()).await {
            Ok(r) => r,
            Err(_) => Ok(true),
        }
    }

    pub fn next_event(&self) -> Option<ClientEvent> {
        self.shared.borrow_mut().session.poll_event()
    }

    pub fn send(&self, key: Option<&[u8]>, payload: &[u8], now: Instant) -> bool {
        self.shared.borrow_mut().session.send(key, payload, now).is_ok()
    }

    pub fn close_session(&self, reason: ReasonCode) {
        self.shared.borrow_mut().session.close(reason);
    }

    fn handle_timeout(&self, now: Instant) {
        self.shared.borrow_mut().session.handle_timeout(now);
    }

    /// When a workload waiting for input must look again: the session's next timer (a
    /// heartbeat is due), the end of the run, or 200 ms from `now` to notice Ctrl-C.
    fn wake_at(&self, now: Instant, until: Instant) -> Instant {
        let timer = self.shared.borrow().session.poll_timeout();
        timer.unwrap_or(until).min(until).min(now + Duration::from_millis(200))
    }

    fn state(&self) -> ClientState {
        self.shared.borrow().session.state()
    }

    /// Drops the connection without a Close frame.
    pub fn abort(mut self) {
        self.writer.abort();
    }
}

/// Connects and authenticates; records the login's time and counts it.
pub async fn login(
    connector: &Connector,
    addr: SocketAddr,
    source: Option<IpAddr>,
    config: ClientConfig,
    stats: &Rc<RefCell<RunStats>>,
) -> Result<Conn, String> {
    let started = Instant::now();
    stats.borrow_mut().connect_started(unix_ms());
    let opened = connector.connect(addr, source).await.map_err(|e| format!("connect: {}", e.kind()))?;
    stats.borrow_mut().connected += 1;
    control::inc(&PROGRESS.connected);
    let mut conn = Conn::new(opened, ClientSession::new(config, Instant::now()));
    conn.flush().await.map_err(|e| format!("auth: {}", e.kind()))?;
    loop {
        while let Some(event) = conn.next_event() {
            match event {
                ClientEvent::Authenticated(_) => {
                    stats.borrow_mut().authenticated += 1;
                    stats.borrow_mut().record_login(started.elapsed(), unix_ms());
                    control::inc(&PROGRESS.authenticated);
                    return Ok(conn);
                }
                ClientEvent::AuthFailed(f) => return Err(format!("auth: {}", f.reason)),
                ClientEvent::Closed { reason, .. } => return Err(format!("auth: {reason}")),
                _ => {}
            }
        }
        match conn.read().await {
            Ok(true) => {}
            Ok(false) => return Err("auth: eof".into()),
            Err(e) => return Err(format!("auth: {}", e.kind())),
        }
    }
}

fn fail(stats: &Rc<RefCell<RunStats>>, what: String) {
    stats.borrow_mut().error(what);
    control::inc(&PROGRESS.errors);
}

/// Runs connection `index` to completion, recording into `stats`.
pub async fn run(
    connector: Rc<Connector>,
    addrs: Rc<[SocketAddr]>,
    index: usize,
    source: Option<IpAddr>,
    config: ClientConfig,
    workload: Workload,
    stats: Rc<RefCell<RunStats>>,
) {
    let Some(&addr) = addrs.get(index % addrs.len().max(1)) else { return };
    if let Workload::Storm { .. } = workload {
        return storm(&connector, &addrs, index, source, config, workload, &stats).await;
    }
    let mut conn = match login(&connector, addr, source, config, &stats).await {
        Ok(c) => c,
        Err(e) => return fail(&stats, e),
    };
    control::inc(&PROGRESS.open);
    let result = match workload {
        Workload::Idle { until_ms, send_every_ms, measure_from_ms } => {
            let window = (instant_at(measure_from_ms), instant_at(until_ms));
            idle(&mut conn, window, send_every_ms, index, &stats).await
        }
        Workload::Echo { in_flight, payload, measure_from_ms, until_ms } => {
            echo(&mut conn, in_flight, payload, (instant_at(measure_from_ms), instant_at(until_ms)), &stats).await
        }
        Workload::Receive { room_size, until_ms } => receive(&mut conn, index, room_size, until_ms, &stats).await,
        Workload::Storm { .. } => Ok(()),
    };
    control::dec(&PROGRESS.open);
    if let Err(e) = result {
        fail(&stats, format!("io: {e}"));
    }
    conn.close_session(ReasonCode::NORMAL);
    let _ = conn.flush().await;
}

/// Heartbeats until `until` (or Ctrl-C); the server answers each Ping with a Pong. With
/// `send_every_ms`, also a Send that often, the first at a point spread by `index`.
async fn idle(
    conn: &mut Conn,
    (measure_from, until): (Instant, Instant),
    send_every_ms: u64,
    index: usize,
    stats: &Rc<RefCell<RunStats>>,
) -> std::io::Result<()> {
    let every = Duration::from_millis(send_every_ms);
    let mut next_send = (send_every_ms > 0)
        .then(|| Instant::now() + Duration::from_millis((index as u64).wrapping_mul(7919) % send_every_ms.max(1)));
    loop {
        let now = Instant::now();
        if now >= until || control::stopping() {
            return Ok(());
        }
        if let Some(at) = next_send
            && now >= at
        {
            let _ = conn.send(None, &[0x5a; 32], now);
            next_send = Some(at + every);
        }
        let mut wake = conn.wake_at(now, until);
        if let Some(at) = next_send {
            wake = wake.min(at);
        }
        conn.flush().await?;
        if !conn.read_until(wake).await? {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let now = Instant::now();
        conn.handle_timeout(now);
        while let Some(event) = conn.next_event() {
            match event {
                ClientEvent::Closed { reason, .. } => return Err(std::io::Error::other(format!("closed: {reason}"))),
                ClientEvent::Ack { code, rtt, .. } => {
                    let mut s = stats.borrow_mut();
                    if code.is_ok() {
                        s.acked_ok += 1;
                        if now >= measure_from {
                            s.record_rtt(rtt);
                        } else {
                            s.record_early_rtt(rtt);
                        }
                        control::inc(&PROGRESS.acked);
                    } else {
                        s.error(format!("ack: {code}"));
                        control::inc(&PROGRESS.errors);
                    }
                }
                _ => {}
            }
        }
        conn.flush().await?;
    }
}

async fn echo(
    conn: &mut Conn,
    in_flight: usize,
    payload: usize,
    (measure_from, until): (Instant, Instant),
    stats: &Rc<RefCell<RunStats>>,
) -> std::io::Result<()> {
    let body = vec![0x5a_u8; payload];
    let mut outstanding = 0;
    for _ in 0..in_flight {
        if conn.send(None, &body, Instant::now()) {
            outstanding += 1;
        }
    }
    conn.flush().await?;
    while outstanding > 0 {
        if !conn.read().await? {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let now = Instant::now();
        let more = now < until && !control::stopping();
        while let Some(event) = conn.next_event() {
            match event {
                ClientEvent::Ack { code, rtt, .. } => {
                    outstanding -= 1;
                    let mut s = stats.borrow_mut();
                    if code.is_ok() {
                        if now >= measure_from && now < until {
                            s.acked_ok += 1;
                            s.record_rtt(rtt);
                            control::inc(&PROGRESS.acked);
                        }
                    } else {
                        s.error(format!("ack: {code}"));
                        control::inc(&PROGRESS.errors);
                    }
                    drop(s);
                    if more && conn.send(None, &body, now) {
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

/// The room receiver `index` joins when rooms have `room_size` members.
pub fn room_of(index: usize, room_size: usize) -> Option<String> {
    (room_size > 0).then(|| format!("room{}", index / room_size))
}

/// The timestamp a push payload starts with (unix µs, 8 bytes big-endian).
pub fn push_stamp(payload: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(payload.get(..8)?.try_into().ok()?))
}

async fn receive(
    conn: &mut Conn,
    index: usize,
    room_size: usize,
    until_ms: u64,
    stats: &Rc<RefCell<RunStats>>,
) -> std::io::Result<()> {
    let until = instant_at(until_ms);
    if let Some(room) = room_of(index, room_size) {
        let key = format!("join:{room}");
        let _ = conn.send(Some(key.as_bytes()), b"", Instant::now());
        conn.flush().await?;
    }
    loop {
        let now = Instant::now();
        if now >= until || control::stopping() {
            return Ok(());
        }
        let wake = conn.wake_at(now, until);
        if !conn.read_until(wake).await? {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        conn.handle_timeout(Instant::now());
        let received = unix_us();
        while let Some(event) = conn.next_event() {
            match event {
                ClientEvent::Push(push) => {
                    let mut s = stats.borrow_mut();
                    s.pushes += 1;
                    if let Some(sent) = push_stamp(&push.payload) {
                        s.record_push(Duration::from_micros(received.saturating_sub(sent)));
                    }
                    control::inc(&PROGRESS.pushes);
                }
                ClientEvent::Ack { code, .. } if !code.is_ok() => fail(stats, format!("ack: {code}")),
                ClientEvent::Closed { reason, .. } => return Err(std::io::Error::other(format!("closed: {reason}"))),
                _ => {}
            }
        }
        conn.flush().await?;
    }
}

/// A storm's connection: logs in, holds, and whenever the connection ends (the server went
/// away, told it to go, or the client dropped it at `drop_at_ms`) logs in again on the next
/// address after the wait the protocol asks for, recording when it is back.
async fn storm(
    connector: &Connector,
    addrs: &[SocketAddr],
    index: usize,
    source: Option<IpAddr>,
    config: ClientConfig,
    workload: Workload,
    stats: &Rc<RefCell<RunStats>>,
) {
    let Workload::Storm { drop_at_ms, until_ms, reconnect_after_ms, jitter_ms, base_ms } = workload else { return };
    let until = instant_at(until_ms);
    // Failed reconnects back off from 50 ms to 2 s, whatever the storm's own delay, so a node
    // that is down is not hammered in a tight loop.
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2), config.jitter_seed);
    let mut jitter = ringgate_codec::backoff::Jitter::new(config.jitter_seed);
    let mut target = index % addrs.len().max(1);
    let mut dropped = false;
    let mut first = true;
    while Instant::now() < until && !control::stopping() {
        let Some(&addr) = addrs.get(target) else { return };
        let mut conn = match login(connector, addr, source, config.clone(), stats).await {
            Ok(c) => c,
            Err(e) => {
                fail(stats, e);
                target = (target + 1) % addrs.len().max(1);
                compio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        backoff.reset();
        if !first {
            stats.borrow_mut().record_reauth(unix_ms().saturating_sub(base_ms));
        }
        first = false;
        control::inc(&PROGRESS.open);
        let drop_at = drop_at_ms.filter(|_| !dropped).map(instant_at);
        let ended = hold(&mut conn, until, drop_at).await;
        control::dec(&PROGRESS.open);
        let wait = match ended {
            Held::Until => {
                conn.close_session(ReasonCode::NORMAL);
                let _ = conn.flush().await;
                return;
            }
            Held::Dropped => {
                dropped = true;
                conn.abort();
                Duration::from_millis(reconnect_after_ms) + jitter.up_to(Duration::from_millis(jitter_ms))
            }
            Held::GoAway(wait) => wait,
            Held::Lost => {
                target = (target + 1) % addrs.len().max(1);
                Duration::from_millis(reconnect_after_ms) + jitter.up_to(Duration::from_millis(jitter_ms))
            }
        };
        if matches!(ended, Held::GoAway(_)) {
            target = (target + 1) % addrs.len().max(1);
        }
        compio::time::sleep(wait).await;
    }
}

enum Held {
    /// The run is over.
    Until,
    /// The client dropped the connection itself.
    Dropped,
    /// The server said to go away and reconnect after this long.
    GoAway(Duration),
    /// The connection ended.
    Lost,
}

async fn hold(conn: &mut Conn, until: Instant, drop_at: Option<Instant>) -> Held {
    let mut go_away = None;
    loop {
        let now = Instant::now();
        if now >= until || control::stopping() {
            return Held::Until;
        }
        if drop_at.is_some_and(|d| now >= d) {
            return Held::Dropped;
        }
        let mut wake = conn.wake_at(now, until);
        if let Some(d) = drop_at {
            wake = wake.min(d);
        }
        // Events decoded before the end (a GoAway, a Close) are handled before giving up.
        let alive = conn.read_until(wake).await.unwrap_or(false);
        conn.handle_timeout(Instant::now());
        while let Some(event) = conn.next_event() {
            match event {
                ClientEvent::GoAway { reconnect_in, .. } => go_away = Some(reconnect_in),
                ClientEvent::Closed { .. } => {
                    let _ = conn.flush().await;
                    return go_away.map_or(Held::Lost, Held::GoAway);
                }
                _ => {}
            }
        }
        if !alive || conn.flush().await.is_err() || matches!(conn.state(), ClientState::Closed(_)) {
            return go_away.map_or(Held::Lost, Held::GoAway);
        }
    }
}

/// The pause between connection attempts for a target rate per second.
pub fn pacing(rate: u64) -> Duration {
    1_000_000_000_u64.checked_div(rate).map_or(Duration::ZERO, Duration::from_nanos)
}
