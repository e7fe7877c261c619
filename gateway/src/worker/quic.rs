//! A worker's QUIC endpoint, driven by the worker itself.
//!
//! Each worker owns one UDP socket of the node's SO_REUSEPORT group (see
//! `transport::quic` for how packets find their worker) and one `quinn_proto::Endpoint`.
//! One task per worker, [`run`], does all of the endpoint's I/O: it drains the socket when
//! it is readable (readiness, as for TCP connections, so no buffer is parked in the kernel),
//! feeds each datagram to quinn-proto, runs the connections' timers, and sends what they have
//! to send. A connection's own task (`worker::conn::run`) reads and writes its one stream
//! through [`QuicEndpoint::read`] and [`QuicEndpoint::write`], which register the task's
//! waker with the slot when the stream is empty or full.
//!
//! Why not compio-quic, which does the same with a task, two channels, a timer and an
//! MTU-sized transmit buffer per connection: those cost about 5 KB per idle connection here
//! (measured with heaptrack: the connection's task 2.3 KB, its transmit buffer 1.2 KB, its
//! event channels and their wakers ~1.5 KB), a third of the 16 KiB budget. Here a connection
//! is quinn-proto's state in a box plus a few words of slot; the scratch buffers are the
//! worker's.
//!
//! UDP I/O is batched (`worker::udp`): recvmmsg reads up to 32 datagrams per system call,
//! and what a turn sends goes out through sendmmsg, up to 64 datagrams per call. One
//! wake-up drains up to [`RECV_BUDGET`] datagrams before the worker's other tasks get a
//! turn. (No GSO/GRO: sendmmsg and recvmmsg batch the system calls, which is what costs on
//! a gateway's small packets.)

use std::cell::RefCell;
use std::collections::{BTreeSet, VecDeque};
use std::future::{Future, poll_fn};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use compio::runtime::fd::PollFd;
use metrics::Counter;
use quinn_proto::{ConnectionHandle, DatagramEvent, Dir, Event, StreamEvent, StreamId, VarInt};
use ringgate_codec::ReasonCode;

use super::conn::remember;
use super::state::Worker;

/// A worker's endpoint, shared by its driver task and its QUIC connections.
pub(crate) type Shared = Rc<RefCell<QuicEndpoint>>;

/// Datagrams read per wake-up before the driver lets the worker's other tasks run.
const RECV_BUDGET: usize = 256;
/// New connections that may wait for a handshake slot, per slot.
const WAITING_PER_SLOT: usize = 32;
/// How long a closing connection may take to deliver its last bytes before it is closed.
const LINGER: Duration = Duration::from_secs(2);

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Handshake under way, or done but the client has not opened its stream yet; both must
    /// happen by `deadline` (the auth timeout).
    Handshaking { deadline: Instant },
    /// Handed to the worker as a connection.
    Open,
    /// The worker let go of it: the stream is finished, and the connection closes with
    /// `code` once the peer has the last bytes, or at `deadline`.
    Closing { deadline: Instant, code: VarInt },
    /// Closed (or lost); quinn-proto drains it, then the slot goes.
    Closed,
}

/// One connection.
struct Slot {
    conn: quinn_proto::Connection,
    /// Told apart from a later connection that reuses the handle.
    generation: u32,
    stream: Option<StreamId>,
    /// The peer has acknowledged everything sent on the stream, its end included (or
    /// stopped it): a closing connection may close now.
    delivered: bool,
    phase: Phase,
    /// The key under which the slot sits in the endpoint's timer set.
    timer: Option<Instant>,
    /// The connection task to wake when its stream becomes readable or writable or the
    /// connection ends.
    waker: Option<Waker>,
    /// In the endpoint's work queue.
    queued: bool,
}

impl Slot {
    /// When the slot next needs the driver: quinn-proto's timer or the phase's deadline.
    fn deadline(&mut self) -> Option<Instant> {
        let phase = match self.phase {
            Phase::Handshaking { deadline } | Phase::Closing { deadline, .. } => Some(deadline),
            Phase::Open | Phase::Closed => None,
        };
        match (self.conn.poll_timeout(), phase) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn wake(&self) {
        if let Some(waker) = &self.waker {
            waker.wake_by_ref();
        }
    }
}

/// A connection of the endpoint, as its worker connection knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QuicKey {
    handle: usize,
    generation: u32,
}

/// What a read of a connection's stream found.
pub(crate) enum QuicRead {
    Data(Bytes),
    WouldBlock,
    Gone,
}

/// Counters the endpoint keeps.
pub(crate) struct QuicMetrics {
    pub refused: Counter,
    pub failed: Counter,
}

/// A worker's QUIC endpoint and its connections.
pub(crate) struct QuicEndpoint {
    inner: quinn_proto::Endpoint,
    server: Arc<quinn_proto::ServerConfig>,
    socket: PollFd<UdpSocket>,
    /// Indexed by quinn-proto's connection handle (its own slab: dense, reused lowest first).
    slots: Vec<Option<Box<Slot>>>,
    live: usize,
    timers: BTreeSet<(Instant, usize)>,
    queue: VecDeque<usize>,
    /// Datagrams to send, gathered over a driver turn and sent in batches.
    tx: super::udp::TxQueue,
    /// Transmit scratch space.
    buf: Vec<u8>,
    driver: Option<Waker>,
    /// Handshakes whose stream is open, for the driver to hand to the worker.
    ready: Vec<QuicKey>,
    /// New connections waiting for a handshake slot (see [`QuicEndpoint::incoming`]).
    waiting: VecDeque<(quinn_proto::Incoming, Instant)>,
    handshaking: usize,
    generation: u32,
    accepting: bool,
    /// Shutdown is over: the driver returns (its readiness wait on the socket ends with it).
    stopped: bool,
    max_handshakes: usize,
    auth_timeout: Duration,
    metrics: QuicMetrics,
}

impl std::fmt::Debug for QuicEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicEndpoint").field("live", &self.live).field("handshaking", &self.handshaking).finish()
    }
}

impl QuicEndpoint {
    pub fn new(
        socket: UdpSocket,
        endpoint: quinn_proto::EndpointConfig,
        server: quinn_proto::ServerConfig,
        max_handshakes: usize,
        auth_timeout: Duration,
        metrics: QuicMetrics,
    ) -> io::Result<Shared> {
        socket.set_nonblocking(true)?;
        let server = Arc::new(server);
        let inner = quinn_proto::Endpoint::new(Arc::new(endpoint), Some(server.clone()), false, None);
        Ok(Rc::new(RefCell::new(QuicEndpoint {
            inner,
            server,
            socket: PollFd::new(socket)?,
            slots: Vec::new(),
            live: 0,
            timers: BTreeSet::new(),
            queue: VecDeque::new(),
            tx: super::udp::TxQueue::default(),
            buf: Vec::new(),
            driver: None,
            ready: Vec::new(),
            waiting: VecDeque::new(),
            handshaking: 0,
            generation: 0,
            accepting: true,
            stopped: false,
            max_handshakes,
            auth_timeout,
            metrics,
        })))
    }

    /// Connections held (handshaking, open or closing).
    pub fn live(&self) -> usize {
        self.live
    }

    /// New connections from now on use `server` (a certificate reload).
    pub fn set_server_config(&mut self, server: quinn_proto::ServerConfig) {
        self.server = Arc::new(server);
        self.inner.set_server_config(Some(self.server.clone()));
    }

    /// Draining: refuse new connections from now on (clients are told at once and try
    /// another node).
    pub fn stop_accepting(&mut self) {
        self.accepting = false;
        let mut buf = std::mem::take(&mut self.buf);
        while let Some((incoming, _)) = self.waiting.pop_front() {
            self.refuse(incoming, &mut buf);
        }
        self.buf = buf;
    }

    fn slot(&mut self, h: usize) -> Option<&mut Slot> {
        self.slots.get_mut(h)?.as_deref_mut()
    }

    /// Connection `key` (handle and generation), if it is still the same connection.
    fn slot_of(&mut self, key: QuicKey) -> Option<&mut Slot> {
        self.slot(key.handle).filter(|s| s.generation == key.generation)
    }

    /// Puts connection `h` on the driver's work queue and wakes the driver.
    fn touch(&mut self, h: usize) {
        let Some(slot) = self.slot(h) else { return };
        if !slot.queued {
            slot.queued = true;
            self.queue.push_back(h);
        }
        if let Some(waker) = &self.driver {
            waker.wake_by_ref();
        }
    }

    /// Reads the next chunk of connection `h`'s stream; registers `cx` when there is none.
    pub fn read(&mut self, key: QuicKey, cx: &Context<'_>) -> QuicRead {
        let h = key.handle;
        let Some(slot) = self.slot_of(key) else { return QuicRead::Gone };
        let Some(id) = slot.stream else { return QuicRead::Gone };
        let mut stream = slot.conn.recv_stream(id);
        let mut chunks = match stream.read(true) {
            Ok(chunks) => chunks,
            Err(_) => return QuicRead::Gone,
        };
        let got = chunks.next(usize::MAX);
        let credit = chunks.finalize().should_transmit();
        let outcome = match got {
            Ok(Some(chunk)) => QuicRead::Data(chunk.bytes),
            Err(quinn_proto::ReadError::Blocked) if !slot.conn.is_closed() => {
                remember(&mut slot.waker, cx);
                QuicRead::WouldBlock
            }
            // Finished, reset, or the connection is closed.
            _ => QuicRead::Gone,
        };
        if credit {
            self.touch(h);
        }
        outcome
    }

    /// Writes into connection `h`'s stream; `Ok(None)` (and `cx` registered) when the
    /// stream has no room now.
    pub fn write(&mut self, key: QuicKey, data: &[u8], cx: &Context<'_>) -> io::Result<Option<usize>> {
        let h = key.handle;
        let Some(slot) = self.slot_of(key) else { return Err(io::ErrorKind::NotConnected.into()) };
        let Some(id) = slot.stream else { return Err(io::ErrorKind::NotConnected.into()) };
        match slot.conn.send_stream(id).write(data) {
            Ok(n) => {
                self.touch(h);
                Ok(Some(n))
            }
            Err(quinn_proto::WriteError::Blocked) => {
                remember(&mut slot.waker, cx);
                Ok(None)
            }
            Err(e) => Err(io::Error::new(io::ErrorKind::BrokenPipe, e)),
        }
    }

    /// The worker let go of connection `h`: send what is `pending`, finish the stream, and
    /// close the connection with `reason` once the peer has it all (or after [`LINGER`]).
    pub fn close(&mut self, key: QuicKey, reason: ReasonCode, pending: &[u8]) {
        let now = Instant::now();
        let h = key.handle;
        let Some(slot) = self.slot_of(key) else { return };
        slot.waker = None;
        let code = VarInt::from_u32(reason.0);
        match (slot.phase, slot.stream) {
            (Phase::Open | Phase::Handshaking { .. }, Some(id)) => {
                let mut send = slot.conn.send_stream(id);
                if !pending.is_empty() {
                    // What the client's flow-control window has no room for is dropped: a
                    // client that has stopped reading does not get to hold the close up.
                    let _ = send.write(pending);
                }
                if send.finish().is_ok() {
                    slot.phase = Phase::Closing { deadline: now + LINGER, code };
                } else {
                    slot.conn.close(now, code, Bytes::new());
                    slot.phase = Phase::Closed;
                }
            }
            (Phase::Closing { .. } | Phase::Closed, _) => {}
            (_, None) => {
                slot.conn.close(now, code, Bytes::new());
                slot.phase = Phase::Closed;
            }
        }
        self.touch(h);
    }

    /// Shutdown: closes every connection that is still handshaking (the worker closes the
    /// open ones itself).
    pub fn close_handshakes(&mut self) {
        let now = Instant::now();
        let mut closed = Vec::new();
        for (h, slot) in self.slots.iter_mut().enumerate() {
            if let Some(slot) = slot
                && matches!(slot.phase, Phase::Handshaking { .. })
            {
                slot.conn.close(now, VarInt::from_u32(ReasonCode::SERVER_SHUTDOWN.0), Bytes::new());
                slot.phase = Phase::Closed;
                closed.push(h);
            }
        }
        self.handshaking = 0;
        for h in closed {
            self.touch(h);
        }
    }

    /// Ends the driver task (after shutdown has given the connections their moment).
    pub fn stop(&mut self) {
        self.stopped = true;
        if let Some(waker) = self.driver.take() {
            waker.wake();
        }
    }

    /// Reads datagrams, a batch per system call, until the socket is empty or the budget
    /// is spent; true if spent.
    fn receive(&mut self, rx: &mut super::udp::RxBatch, now: Instant, full: bool) -> bool {
        for _ in 0..RECV_BUDGET / super::udp::SLOTS {
            let n = match rx.recv(self.socket.as_raw_fd()) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                // ICMP errors surface here (ECONNREFUSED from an earlier send); keep going.
                Err(_) => continue,
            };
            for i in 0..n {
                let Some((datagram, from, local)) = rx.get(i) else { continue };
                self.datagram(BytesMut::from(datagram), from, local, now, full);
            }
            if n < super::udp::SLOTS {
                return false;
            }
        }
        true
    }

    fn datagram(&mut self, data: BytesMut, from: SocketAddr, local: Option<IpAddr>, now: Instant, full: bool) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        match self.inner.handle(now, from, local, None, data, &mut buf) {
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                if let Some(slot) = self.slot(ch.0) {
                    slot.conn.handle_event(event);
                    self.touch(ch.0);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => self.incoming(incoming, now, full, &mut buf),
            Some(DatagramEvent::Response(transmit)) => self.send(&transmit, &buf[..transmit.size]),
            None => {}
        }
        self.buf = buf;
    }

    /// A new connection. At most `max_handshakes` handshakes run at once; more wait in line
    /// (up to [`WAITING_PER_SLOT`] times as many, for at most the auth timeout) instead of
    /// all running at once: in a reconnect storm thousands of concurrent handshakes would
    /// each hold ~30 KB of handshake state for seconds, fragment the heap (RSS stays at the
    /// peak) and time out together, where a line lets each finish quickly. A full or
    /// draining node refuses at once, so the client tries another node.
    fn incoming(&mut self, incoming: quinn_proto::Incoming, now: Instant, full: bool, buf: &mut Vec<u8>) {
        if full || !self.accepting {
            self.refuse(incoming, buf);
        } else if self.handshaking < self.max_handshakes && self.waiting.is_empty() {
            self.accept(incoming, now, buf);
        } else if self.waiting.len() < self.max_handshakes.saturating_mul(WAITING_PER_SLOT) {
            self.waiting.push_back((incoming, now));
        } else {
            self.refuse(incoming, buf);
        }
    }

    fn refuse(&mut self, incoming: quinn_proto::Incoming, buf: &mut Vec<u8>) {
        self.metrics.refused.increment(1);
        buf.clear();
        let transmit = self.inner.refuse(incoming, buf);
        self.send(&transmit, &buf[..transmit.size]);
    }

    /// Starts waiting handshakes while slots are free; refuses those that waited past the
    /// auth timeout.
    fn start_waiting(&mut self, now: Instant, full: bool) {
        let mut buf = std::mem::take(&mut self.buf);
        while self.handshaking < self.max_handshakes
            && let Some((incoming, since)) = self.waiting.pop_front()
        {
            if full || !self.accepting || now.duration_since(since) >= self.auth_timeout {
                self.refuse(incoming, &mut buf);
            } else {
                self.accept(incoming, now, &mut buf);
            }
        }
        self.buf = buf;
    }

    fn accept(&mut self, incoming: quinn_proto::Incoming, now: Instant, buf: &mut Vec<u8>) {
        buf.clear();
        match self.inner.accept(incoming, now, buf, Some(self.server.clone())) {
            Ok((ch, conn)) => {
                let h = ch.0;
                if self.slots.len() <= h {
                    self.slots.resize_with(h + 1, || None);
                }
                self.generation = self.generation.wrapping_add(1);
                let slot = Slot {
                    conn,
                    generation: self.generation,
                    stream: None,
                    delivered: false,
                    phase: Phase::Handshaking { deadline: now + self.auth_timeout },
                    timer: None,
                    waker: None,
                    queued: false,
                };
                if let Some(old) = self.slots.get_mut(h) {
                    *old = Some(Box::new(slot));
                }
                self.live += 1;
                self.handshaking += 1;
                self.touch(h);
            }
            Err(e) => {
                tracing::debug!(error = %e.cause, "quic accept failed");
                self.metrics.failed.increment(1);
                if let Some(transmit) = e.response {
                    self.send(&transmit, &buf[..transmit.size]);
                }
            }
        }
    }

    /// Runs the timers that are due.
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, h)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let Some(slot) = self.slot(h) else { continue };
            slot.timer = None;
            slot.conn.handle_timeout(now);
            match slot.phase {
                Phase::Handshaking { deadline } if deadline <= now => {
                    // No handshake or no stream within the auth timeout.
                    slot.conn.close(now, VarInt::from_u32(ReasonCode::AUTH_TIMEOUT.0), Bytes::new());
                    slot.phase = Phase::Closed;
                    self.handshaking = self.handshaking.saturating_sub(1);
                    self.metrics.failed.increment(1);
                }
                Phase::Closing { deadline, code } if deadline <= now => {
                    slot.conn.close(now, code, Bytes::new());
                    slot.phase = Phase::Closed;
                }
                _ => {}
            }
            self.touch(h);
        }
    }

    /// Processes the connections on the work queue: their events, what they send, their
    /// next timer.
    fn process(&mut self, now: Instant) {
        while let Some(h) = self.queue.pop_front() {
            let mut buf = std::mem::take(&mut self.buf);
            self.drive(h, now, &mut buf);
            self.buf = buf;
        }
    }

    fn drive(&mut self, h: usize, now: Instant, buf: &mut Vec<u8>) {
        let Some(mut slot) = self.slots.get_mut(h).and_then(Option::take) else { return };
        slot.queued = false;
        let ch = ConnectionHandle(h);
        let mut drained = false;
        loop {
            let mut again = false;
            while let Some(event) = slot.conn.poll_endpoint_events() {
                drained |= event.is_drained();
                if let Some(reply) = self.inner.handle_event(ch, event) {
                    slot.conn.handle_event(reply);
                    again = true;
                }
            }
            while let Some(event) = slot.conn.poll() {
                again = true;
                self.on_event(h, &mut slot, event);
            }
            if let Phase::Closing { code, .. } = slot.phase
                && slot.delivered
            {
                slot.conn.close(now, code, Bytes::new());
                slot.phase = Phase::Closed;
                again = true;
            }
            loop {
                buf.clear();
                let Some(transmit) = slot.conn.poll_transmit(now, 1, buf) else { break };
                self.send(&transmit, &buf[..transmit.size]);
            }
            if !again {
                break;
            }
        }
        if let Some(at) = slot.timer.take() {
            self.timers.remove(&(at, h));
        }
        if drained {
            if matches!(slot.phase, Phase::Handshaking { .. }) {
                self.handshaking = self.handshaking.saturating_sub(1);
            }
            slot.wake();
            self.live = self.live.saturating_sub(1);
            return;
        }
        if let Some(at) = slot.deadline() {
            slot.timer = Some(at);
            self.timers.insert((at, h));
        }
        if let Some(place) = self.slots.get_mut(h) {
            *place = Some(slot);
        }
    }

    fn on_event(&mut self, h: usize, slot: &mut Slot, event: Event) {
        match event {
            Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                if slot.stream.is_none()
                    && let Some(id) = slot.conn.streams().accept(Dir::Bi)
                {
                    slot.stream = Some(id);
                    if let Phase::Handshaking { .. } = slot.phase {
                        // The client's stream is open: hand the connection to the worker.
                        slot.phase = Phase::Open;
                        self.handshaking = self.handshaking.saturating_sub(1);
                        self.ready.push(QuicKey { handle: h, generation: slot.generation });
                    }
                }
            }
            Event::ConnectionLost { reason } => {
                if let Phase::Handshaking { .. } = slot.phase {
                    tracing::debug!(error = %reason, "quic handshake failed");
                    self.handshaking = self.handshaking.saturating_sub(1);
                    self.metrics.failed.increment(1);
                }
                slot.phase = Phase::Closed;
                slot.wake();
            }
            Event::Stream(StreamEvent::Finished { .. } | StreamEvent::Stopped { .. }) => {
                slot.delivered = true;
                slot.wake();
            }
            Event::Stream(_) => slot.wake(),
            Event::HandshakeDataReady | Event::Connected | Event::DatagramReceived | Event::DatagramsUnblocked => {}
        }
    }

    /// Queues one datagram; a full batch goes out at once, the rest at the end of the turn.
    fn send(&mut self, transmit: &quinn_proto::Transmit, data: &[u8]) {
        self.tx.push(transmit.destination, transmit.src_ip, data);
        if self.tx.is_full() {
            self.tx.flush(self.socket.as_raw_fd());
        }
    }

    /// Sends what is queued while the socket takes it; true when nothing is left.
    fn flush_tx(&mut self) -> bool {
        self.tx.flush(self.socket.as_raw_fd())
    }
}

/// The driver's wake-up for the earliest connection timer.
type Timer = Pin<Box<dyn Future<Output = ()>>>;

/// The driver task of a worker's endpoint; see the module docs. Runs until
/// [`QuicEndpoint::stop`].
pub(crate) async fn run(ep: Shared, worker: Rc<RefCell<Worker>>) {
    let mut rx = super::udp::RxBatch::new();
    let mut sleep: Option<(Instant, Timer)> = None;
    poll_fn(|cx| {
        loop {
            let full = worker.borrow().is_full();
            let (ready, spent) = {
                let mut e = ep.borrow_mut();
                if e.stopped {
                    return Poll::Ready(());
                }
                let now = Instant::now();
                let spent = e.receive(&mut rx, now, full);
                e.expire(now);
                e.process(now);
                // Processing frees handshake slots; fill them now (and process the new
                // handshakes) rather than on the next wake-up, which may be a while off.
                e.start_waiting(now, full);
                e.process(now);
                e.flush_tx();
                (std::mem::take(&mut e.ready), spent)
            };
            if !ready.is_empty() {
                admit(&ep, &worker, ready);
                continue;
            }
            let mut e = ep.borrow_mut();
            remember(&mut e.driver, cx);
            if spent || !e.queue.is_empty() {
                // More to do: yield to the worker's other tasks first.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match e.socket.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(err)) => {
                    tracing::error!(error = %err, "quic socket failed");
                    return Poll::Ready(());
                }
                Poll::Pending => {}
            }
            if !e.tx.is_empty() && e.socket.poll_write_ready(cx).is_ready() {
                continue;
            }
            match e.timers.first().map(|&(at, _)| at) {
                Some(at) => {
                    if sleep.as_ref().is_none_or(|(due, _)| *due != at) {
                        sleep = Some((at, Box::pin(compio::time::sleep_until(at))));
                    }
                    if let Some((_, timer)) = sleep.as_mut()
                        && timer.as_mut().poll(cx).is_ready()
                    {
                        sleep = None;
                        continue;
                    }
                }
                None => sleep = None,
            }
            return Poll::Pending;
        }
    })
    .await;
}

/// Hands connections whose stream is open to the worker.
fn admit(ep: &Shared, worker: &Rc<RefCell<Worker>>, ready: Vec<QuicKey>) {
    for key in ready {
        let io = super::conn::Io::Quic(Box::new(super::conn::QuicIo { ep: ep.clone(), key, pending: Bytes::new() }));
        let admitted = worker.borrow_mut().admit(io, Instant::now());
        match admitted {
            Ok(id) => compio::runtime::spawn(super::conn::run(worker.clone(), id)).detach(),
            Err(_) => ep.borrow_mut().close(key, ReasonCode::SERVER_OVERLOADED, &[]),
        }
    }
}
