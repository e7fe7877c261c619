//! Held connections at the gateway's own cost: the `idle` workload over plain TCP (what
//! `idle` and `cluster` drive), at hundreds of thousands of connections per machine.
//!
//! The general path ([`crate::conn`]) gives every connection two tasks, a timer and a parked
//! 16 KiB read; at 100,000 connections that was ~15 KB per connection and most of two cores
//! for the load processes alone. Here a thread waits for readiness (mio), reads into one
//! buffer of its own and keeps a connection's bytes only when a frame is cut in half, and
//! wakes connections for their heartbeats and trickle Sends from one timer wheel instead
//! of a timer each. An idle connection is its socket, its client session and a slot in a
//! table: no task, no buffer, no CPU between its timers.
//!
//! The wheel is ours because it is twenty lines with lazy cancellation keyed on our own
//! table; the timer crates either allocate per timer or own the event loop.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use ringgate_codec::ReasonCode;
use ringgate_codec::session::{ClientEvent, ClientSession, ClientState};
use slab::Slab;

use crate::conn::{self, Workload};
use crate::control::{self, PROGRESS};
use crate::run::{self, LoadSpec};
use crate::stats::RunStats;
use crate::transport::TransportKind;

/// The wheel's resolution: heartbeats and trickle Sends fire within this of their time.
const TICK: Duration = Duration::from_millis(10);
/// Slots: 2,048 ticks (20 s) per turn; later deadlines wait for their turn in a slot.
const SLOTS: usize = 2048;
/// One read buffer per thread.
const READ_BUF: usize = 64 * 1024;
/// Connections a thread has connecting or authenticating at once when no rate is asked.
const MAX_PENDING: usize = 512;

/// Whether `spec` runs here rather than on the general path.
pub fn handles(spec: &LoadSpec) -> bool {
    spec.transport == TransportKind::Tcp && matches!(spec.workload, Workload::Idle { .. })
}

/// A hashed timer wheel of connection keys. Cancelling is lazy: an entry names the tick it
/// was set for, and the owner ignores an entry whose tick is no longer its own, so
/// rescheduling is one push and firing costs nothing for connections that are not due.
#[derive(Debug)]
pub struct Wheel {
    start: Instant,
    /// The next tick to fire.
    now_tick: u64,
    slots: Vec<Vec<(usize, u64)>>,
    len: usize,
}

impl Wheel {
    pub fn new(start: Instant) -> Wheel {
        Wheel { start, now_tick: 0, slots: (0..SLOTS).map(|_| Vec::new()).collect(), len: 0 }
    }

    /// The tick `at` falls in, rounded up so that nothing fires early.
    pub fn tick_of(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.start).as_nanos();
        let tick = nanos.div_ceil(TICK.as_nanos());
        u64::try_from(tick).unwrap_or(u64::MAX).max(self.now_tick)
    }

    /// Schedules `key` at `at`; returns the tick, which the owner keeps to recognise it.
    pub fn schedule(&mut self, key: usize, at: Instant) -> u64 {
        let tick = self.tick_of(at);
        let slot = (tick % SLOTS as u64) as usize;
        if let Some(s) = self.slots.get_mut(slot) {
            s.push((key, tick));
            self.len += 1;
        }
        tick
    }

    /// Entries waiting (stale ones included).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// When the next tick is due (the poll's timeout), if anything waits.
    pub fn next_due(&self) -> Option<Instant> {
        (self.len > 0).then(|| self.start + TICK * u32::try_from(self.now_tick).unwrap_or(u32::MAX))
    }

    /// Moves every entry due by `now` into `out` as (key, tick); later entries that share
    /// a slot stay for their turn.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<(usize, u64)>) {
        let elapsed = now.saturating_duration_since(self.start).as_nanos() / TICK.as_nanos();
        let upto = u64::try_from(elapsed).unwrap_or(u64::MAX);
        // A long stall visits each slot once, not once per missed tick.
        let last = upto.min(self.now_tick + SLOTS as u64 - 1);
        while self.now_tick <= last {
            let slot = (self.now_tick % SLOTS as u64) as usize;
            if let Some(s) = self.slots.get_mut(slot) {
                let before = s.len();
                s.retain(|&(key, tick)| {
                    let due = tick <= upto;
                    if due {
                        out.push((key, tick));
                    }
                    !due
                });
                self.len -= before - s.len();
                if s.is_empty() && s.capacity() > 64 {
                    s.shrink_to(64);
                }
            }
            self.now_tick += 1;
        }
        self.now_tick = self.now_tick.max(upto + 1);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Authenticating,
    Open,
}

/// One held connection.
#[derive(Debug)]
struct Held {
    stream: TcpStream,
    session: ClientSession,
    /// The start of a frame the last read cut off; empty (unallocated) otherwise.
    input: BytesMut,
    phase: Phase,
    started: Instant,
    next_send: Option<Instant>,
    /// The wheel tick this connection is scheduled at.
    tick: u64,
    index: usize,
}

/// One thread's share of the spec's connections: `spec.first + t`, every `threads`-th.
struct Thread<'a> {
    spec: &'a LoadSpec,
    poll: Poll,
    conns: Slab<Held>,
    wheel: Wheel,
    buf: Box<[u8]>,
    scratch: BytesMut,
    stats: RunStats,
    until: Instant,
    /// Round trips before this are recorded apart (early).
    measure_from: Instant,
    send_every: Duration,
    fired: Vec<(usize, u64)>,
    /// Connections connecting or authenticating.
    pending: usize,
}

/// Runs this thread's part of `spec` (see [`handles`]) to its end.
pub fn run_thread(spec: &LoadSpec, t: usize, threads: usize, rate: u64) -> RunStats {
    let Workload::Idle { until_ms, send_every_ms, measure_from_ms } = spec.workload else {
        return RunStats::default();
    };
    let poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            let mut s = RunStats::default();
            s.error(format!("poll: {e}"));
            return s;
        }
    };
    let mine: Vec<usize> = (spec.first + t..spec.first + spec.count).step_by(threads.max(1)).collect();
    let now = Instant::now();
    let mut thread = Thread {
        spec,
        poll,
        conns: Slab::with_capacity(mine.len()),
        wheel: Wheel::new(now),
        buf: vec![0; READ_BUF].into_boxed_slice(),
        scratch: BytesMut::new(),
        stats: RunStats::default(),
        until: conn::instant_at(until_ms),
        measure_from: conn::instant_at(measure_from_ms),
        send_every: Duration::from_millis(send_every_ms),
        fired: Vec::new(),
        pending: 0,
    };
    thread.run(&mine, rate);
    thread.stats
}

impl Thread<'_> {
    fn run(&mut self, mine: &[usize], rate: u64) {
        let mut events = Events::with_capacity(1024);
        let pause = conn::pacing(rate);
        let ramp_start = Instant::now();
        let mut next = 0;
        loop {
            let now = Instant::now();
            if now >= self.until || control::stopping() {
                break;
            }
            // Open what the rate allows by now (or what the pending cap allows).
            let allowed = if pause.is_zero() {
                mine.len()
            } else {
                let elapsed = now.duration_since(ramp_start).as_nanos();
                usize::try_from(elapsed / pause.as_nanos() + 1).unwrap_or(usize::MAX)
            };
            while next < mine.len() && next < allowed && (!pause.is_zero() || self.pending < MAX_PENDING) {
                if let Some(&index) = mine.get(next) {
                    self.open(index, now);
                }
                next += 1;
            }
            let mut wake = self.wheel.next_due().unwrap_or(self.until).min(self.until);
            if next < mine.len() && !pause.is_zero() {
                wake = wake.min(ramp_start + pause * u32::try_from(next).unwrap_or(u32::MAX));
            }
            // Wake at least every 200 ms to notice Ctrl-C.
            let timeout = wake.saturating_duration_since(now).min(Duration::from_millis(200));
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != ErrorKind::Interrupted
            {
                self.stats.error(format!("poll: {}", e.kind()));
                break;
            }
            let now = Instant::now();
            for event in &events {
                self.advance(event.token().0, now, true);
            }
            self.wheel.expire(now, &mut self.fired);
            let fired = std::mem::take(&mut self.fired);
            for &(key, tick) in &fired {
                if self.conns.get(key).is_some_and(|held| held.tick == tick) {
                    self.advance(key, now, false);
                }
            }
            self.fired = fired;
            self.fired.clear();
        }
        self.close_all();
    }

    /// Starts connection `index`; a failure at once is counted.
    fn open(&mut self, index: usize, now: Instant) {
        let spec = self.spec;
        let Some(&addr) = spec.addrs.get(index % spec.addrs.len().max(1)) else { return };
        self.stats.connect_started(conn::unix_ms());
        let stream = match connect(addr, run::source_ip(index, spec.sources)) {
            Ok(s) => s,
            Err(e) => {
                self.fail(format!("connect: {}", e.kind()));
                return;
            }
        };
        let session = ClientSession::new(run::client_config(&spec.identity, index), now);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let mut held = Held {
            stream,
            session,
            input: BytesMut::new(),
            phase: Phase::Connecting,
            started: now,
            next_send: None,
            tick: 0,
            index,
        };
        if let Err(e) =
            self.poll.registry().register(&mut held.stream, Token(key), Interest::READABLE | Interest::WRITABLE)
        {
            self.fail(format!("connect: {}", e.kind()));
            return;
        }
        // The auth deadline covers the connect too.
        if let Some(at) = held.session.poll_timeout() {
            held.tick = self.wheel.schedule(key, at);
        }
        entry.insert(held);
        self.pending += 1;
    }

    fn fail(&mut self, what: String) {
        self.stats.error(what);
        control::inc(&PROGRESS.errors);
    }

    /// Moves connection `key` on: its socket when `io` (readiness), its timers always, then
    /// writes what it has queued and schedules its next wake-up. Removes it when it ended.
    fn advance(&mut self, key: usize, now: Instant, io: bool) {
        let Some(held) = self.conns.get_mut(key) else { return };
        let mut ended: Option<String> = None;
        if held.phase == Phase::Connecting {
            match connected(&held.stream) {
                Ok(true) => {
                    held.phase = Phase::Authenticating;
                    self.stats.connected += 1;
                    control::inc(&PROGRESS.connected);
                }
                Ok(false) => {}
                Err(e) => ended = Some(format!("connect: {}", e.kind())),
            }
        }
        if ended.is_none() && io && held.phase != Phase::Connecting {
            ended = read(held, &mut self.buf, &mut self.scratch, now).err();
        }
        if ended.is_none() {
            held.session.handle_timeout(now);
            if held.phase == Phase::Open
                && let Some(at) = held.next_send
                && now >= at
            {
                let _ = held.session.send(None, &[0x5a; 32], now);
                held.next_send = Some(at + self.send_every);
            }
        }
        while let Some(event) = held.session.poll_event() {
            match event {
                ClientEvent::Authenticated(_) => {
                    held.phase = Phase::Open;
                    self.pending -= 1;
                    self.stats.authenticated += 1;
                    self.stats.record_login(now.saturating_duration_since(held.started), conn::unix_ms());
                    control::inc(&PROGRESS.authenticated);
                    control::inc(&PROGRESS.open);
                    let every = self.send_every.as_millis() as u64;
                    // The first Send at a point spread by index, as on the general path.
                    held.next_send = (every > 0)
                        .then(|| now + Duration::from_millis((held.index as u64).wrapping_mul(7919) % every.max(1)));
                }
                ClientEvent::AuthFailed(f) => ended = ended.or(Some(format!("auth: {}", f.reason))),
                ClientEvent::Ack { code, rtt, .. } => {
                    if code.is_ok() {
                        self.stats.acked_ok += 1;
                        if now >= self.measure_from {
                            self.stats.record_rtt(rtt);
                        } else {
                            self.stats.record_early_rtt(rtt);
                        }
                        control::inc(&PROGRESS.acked);
                    } else {
                        self.stats.error(format!("ack: {code}"));
                        control::inc(&PROGRESS.errors);
                    }
                }
                ClientEvent::Closed { reason, .. } => {
                    let what = match held.phase {
                        Phase::Open => format!("io: closed: {reason}"),
                        _ => format!("auth: {reason}"),
                    };
                    ended = ended.or(Some(what));
                }
                _ => {}
            }
        }
        if held.phase != Phase::Connecting
            && let Err(e) = write(held)
        {
            ended = ended.or(Some(format!("io: {e}")));
        }
        if ended.is_none() && matches!(held.session.state(), ClientState::Closed(_)) {
            ended = Some("io: closed".into());
        }
        if let Some(what) = ended {
            let held = self.conns.remove(key);
            if held.phase == Phase::Open {
                control::dec(&PROGRESS.open);
            } else {
                self.pending -= 1;
            }
            let mut stream = held.stream;
            let _ = self.poll.registry().deregister(&mut stream);
            self.fail(what);
            return;
        }
        // Nothing queued or waiting: the session keeps no buffers (the Auth frame's output,
        // the first event's queue, the first Send's table would otherwise stay for good).
        held.session.release_idle_memory();
        let mut wake = held.session.poll_timeout().unwrap_or(self.until);
        if let Some(at) = held.next_send {
            wake = wake.min(at);
        }
        let tick = self.wheel.tick_of(wake);
        if tick != held.tick || !io {
            held.tick = self.wheel.schedule(key, wake);
        }
    }

    /// The end of the run: every connection says Close (normal) and goes.
    fn close_all(&mut self) {
        for mut held in self.conns.drain() {
            if held.phase == Phase::Open {
                control::dec(&PROGRESS.open);
                held.session.close(ReasonCode::NORMAL);
                let _ = write(&mut held);
            }
        }
    }
}

/// A non-blocking connect from `source` (any port) when given. The port is chosen at
/// connect time (IP_BIND_ADDRESS_NO_PORT), so one source address serves a full ephemeral
/// range towards each gateway address rather than one range shared by all of them.
fn connect(addr: SocketAddr, source: Option<std::net::IpAddr>) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        bind_address_no_port(&socket)?;
        socket.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
    }
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

fn bind_address_no_port(socket: &socket2::Socket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own with a c_int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Whether a non-blocking connect has finished (Err: it failed).
fn connected(stream: &TcpStream) -> std::io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads until the socket would block, decoding as it goes. A connection's own buffer holds
/// only a frame cut in half; whole frames are decoded from the thread's `scratch`.
fn read(held: &mut Held, buf: &mut [u8], scratch: &mut BytesMut, now: Instant) -> Result<(), String> {
    loop {
        let n = match held.stream.read(buf) {
            Ok(0) => return Err("io: eof".into()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("io: {}", e.kind())),
        };
        let data = buf.get(..n).unwrap_or_default();
        if held.input.is_empty() {
            scratch.clear();
            scratch.extend_from_slice(data);
            held.session.handle_input(scratch, now);
            if !scratch.is_empty() {
                held.input = BytesMut::from(&scratch[..]);
                scratch.clear();
            }
        } else {
            held.input.extend_from_slice(data);
            held.session.handle_input(&mut held.input, now);
            if held.input.is_empty() {
                // Free the allocation: an idle connection holds no buffer.
                held.input = BytesMut::new();
            }
        }
        if matches!(held.session.state(), ClientState::Closed(_)) {
            return Ok(());
        }
    }
}

/// Writes what the session queued until done or the socket would block (the rest waits for
/// the next writable event).
fn write(held: &mut Held) -> std::io::Result<()> {
    let out = held.session.output();
    while !out.is_empty() {
        match held.stream.write(out) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => out.advance(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringgate_codec::client::{AuthOk, ClientFrame, encode_push};
    use ringgate_codec::session::ClientConfig;

    /// Reads until `held` has taken everything the peer wrote so far (the socket is
    /// non-blocking; loopback delivers within a few ms).
    fn read_all(held: &mut Held, buf: &mut [u8], scratch: &mut BytesMut) {
        for _ in 0..50 {
            read(held, buf, scratch, Instant::now()).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn a_connection_keeps_bytes_only_for_a_frame_cut_in_half() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = connect(listener.local_addr().unwrap(), None).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let now = Instant::now();
        let mut held = Held {
            stream,
            session: ClientSession::new(ClientConfig::new(String::new(), "u1", "d"), now),
            input: BytesMut::new(),
            phase: Phase::Authenticating,
            started: now,
            next_send: None,
            tick: 0,
            index: 0,
        };
        let mut frames = BytesMut::new();
        let ok = AuthOk {
            connection_id: 1,
            node_id: "n".into(),
            heartbeat_interval: Duration::from_secs(20),
            server_time_ms: 0,
            protocol_version: 1,
            max_frame_len: 65536,
            max_in_flight: 16,
            resume_token: None,
        };
        ClientFrame::AuthOk(ok).encode(&mut frames).unwrap();
        encode_push(1, &[7; 300], &mut frames).unwrap();
        let (mut buf, mut scratch) = (vec![0u8; READ_BUF], BytesMut::new());
        // The AuthOk whole and the push cut in half: only the half is kept.
        let cut = frames.len() - 150;
        server.write_all(&frames[..cut]).unwrap();
        read_all(&mut held, &mut buf, &mut scratch);
        assert!(matches!(held.session.poll_event(), Some(ClientEvent::Authenticated(_))));
        assert!(held.session.poll_event().is_none());
        assert!(!held.input.is_empty() && held.input.len() < 300, "the push's first part: {}", held.input.len());
        assert!(held.input.capacity() < READ_BUF, "not the thread's buffer");
        server.write_all(&frames[cut..]).unwrap();
        read_all(&mut held, &mut buf, &mut scratch);
        assert!(matches!(held.session.poll_event(), Some(ClientEvent::Push(p)) if p.payload.len() == 300));
        assert_eq!(held.input.capacity(), 0, "an idle connection holds no buffer");
        // Whole frames straight from the thread's buffer leave none either.
        let mut more = BytesMut::new();
        encode_push(2, &[8; 40], &mut more).unwrap();
        server.write_all(&more).unwrap();
        read_all(&mut held, &mut buf, &mut scratch);
        assert!(matches!(held.session.poll_event(), Some(ClientEvent::Push(_))));
        assert_eq!(held.input.capacity(), 0);
        // The peer going away ends the connection.
        drop(server);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(read(&mut held, &mut buf, &mut scratch, Instant::now()), Err("io: eof".into()));
    }

    fn fire(w: &mut Wheel, at: Instant) -> Vec<usize> {
        let mut out = Vec::new();
        w.expire(at, &mut out);
        let mut keys: Vec<usize> = out.into_iter().map(|(k, _)| k).collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn wheel_fires_each_entry_at_its_tick_never_early() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        w.schedule(1, t0 + Duration::from_millis(25));
        w.schedule(2, t0 + Duration::from_millis(30));
        w.schedule(3, t0 + Duration::from_millis(5));
        assert_eq!(w.len(), 3);
        assert_eq!(fire(&mut w, t0 + Duration::from_millis(9)), Vec::<usize>::new(), "5 ms rounds up to tick 1");
        assert_eq!(fire(&mut w, t0 + Duration::from_millis(10)), vec![3]);
        assert_eq!(fire(&mut w, t0 + Duration::from_millis(29)), Vec::<usize>::new());
        assert_eq!(fire(&mut w, t0 + Duration::from_millis(30)), vec![1, 2]);
        assert!(w.is_empty());
        assert_eq!(w.next_due(), None);
    }

    #[test]
    fn wheel_keeps_deadlines_beyond_one_turn_for_their_turn() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        let turn = TICK * SLOTS as u32;
        // Same slot, one and two turns later.
        w.schedule(1, t0 + TICK * 3);
        w.schedule(2, t0 + TICK * 3 + turn);
        w.schedule(3, t0 + TICK * 3 + turn * 2);
        assert_eq!(fire(&mut w, t0 + TICK * 3), vec![1]);
        assert_eq!(fire(&mut w, t0 + TICK * 3 + turn - TICK), Vec::<usize>::new());
        assert_eq!(fire(&mut w, t0 + TICK * 3 + turn), vec![2]);
        // A stall of several turns fires what became due, once.
        assert_eq!(fire(&mut w, t0 + turn * 5), vec![3]);
        assert!(w.is_empty());
        // After the stall, scheduling "in the past" fires at the next tick.
        w.schedule(4, t0);
        assert_eq!(fire(&mut w, t0 + turn * 5 + TICK), vec![4]);
    }

    #[test]
    fn wheel_entries_carry_their_tick_so_rescheduled_ones_are_recognised_as_stale() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        let first = w.schedule(7, t0 + TICK * 2);
        let second = w.schedule(7, t0 + TICK * 4);
        assert_ne!(first, second);
        let mut out = Vec::new();
        w.expire(t0 + TICK * 4, &mut out);
        assert_eq!(out, vec![(7, first), (7, second)], "the owner keeps `second` and skips `first`");
    }
}
