//! A worker's QUIC endpoint, driven by the worker itself.
//!
//! Each worker owns one UDP socket of the node's SO_REUSEPORT group (see
//! `transport::quic` for how packets find their worker) and one `quinn_proto::Endpoint`.
//! One task per worker, [`run`], does all of the endpoint's I/O: it drains the socket when
//! it is readable (readiness, as for TCP connections, so no buffer is parked in the kernel),
//! feeds each datagram to quinn-proto, runs the connections' timers, and sends what they have
//! to send. A connection's own task (the worker's connection task, through [`super::QuicIo`]) reads and writes its one stream
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
//! UDP I/O is batched (`super::udp`): recvmmsg reads up to 32 datagrams per system call,
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

use crate::admission::AddrKey;
use bytes::{Bytes, BytesMut};
use compio::runtime::fd::PollFd;
use metrics::Counter;
use quinn_proto::{ConnectionHandle, DatagramEvent, Dir, Event, StreamEvent, StreamId, VarInt};
use ringgate_codec::ReasonCode;

use crate::transport::remember;

mod driver;
pub(crate) use driver::{Acceptor, run};

/// A worker's endpoint, shared by its driver task and its QUIC connections.
///
/// # Borrow order
///
/// The worker (`Rc<RefCell<Worker>>`) and its endpoint are borrowed in that order only: a
/// connection's [`QuicIo`](super::QuicIo) borrows the endpoint while the worker is borrowed
/// (reading, writing, closing from inside the worker's state), so nothing may call into the
/// worker while it holds a borrow of the endpoint. The driver keeps to it by taking what it
/// needs out of the endpoint, dropping that borrow, and only then calling its
/// [`Acceptor`] (which borrows the worker); the endpoint never holds a worker handle. Borrowing
/// the other way round panics at run time (`already borrowed`), on the first QUIC connection
/// that reaches the path, which the QUIC tests of `gateway/tests/transports.rs` run.
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
    /// Its address's key in the admission table (0: none); counted there by the endpoint
    /// until the handshake ends, then by the worker if it takes the connection.
    peer: AddrKey,
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
    /// Retries sent (address validation while busy).
    pub retried: Counter,
}

/// Per-address admission for QUIC: the node's table (the same limits as TCP's), and
/// `ringgate_admission_refused_total` by [`crate::admission::Refusal::ALL`].
pub(crate) struct AddressGate {
    pub admission: Arc<crate::admission::Admission>,
    pub refused: [Counter; crate::admission::Refusal::ALL.len()],
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
    waiting: VecDeque<(quinn_proto::Incoming, Instant, AddrKey)>,
    handshaking: usize,
    generation: u32,
    accepting: bool,
    /// Shutdown is over: the driver returns (its readiness wait on the socket ends with it).
    stopped: bool,
    max_handshakes: usize,
    /// Handshakes running or waiting from which new clients get a Retry first.
    retry_above: usize,
    /// How long a connection may wait in line for a handshake slot.
    auth_timeout: Duration,
    /// How long an admitted handshake (and its stream's opening) may take.
    handshake_timeout: Duration,
    metrics: QuicMetrics,
    gate: Option<AddressGate>,
}

/// How many handshakes an endpoint runs, when it asks for a Retry, and how long they may take.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeLimits {
    pub max_handshakes: usize,
    pub retry_above: usize,
    pub auth_timeout: Duration,
    pub handshake_timeout: Duration,
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
        limits: HandshakeLimits,
        metrics: QuicMetrics,
        gate: Option<AddressGate>,
    ) -> io::Result<Shared> {
        let HandshakeLimits { max_handshakes, retry_above, auth_timeout, handshake_timeout } = limits;
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
            retry_above,
            auth_timeout,
            handshake_timeout: handshake_timeout.min(auth_timeout),
            metrics,
            gate,
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
        let now = Instant::now();
        while let Some((incoming, _, peer)) = self.waiting.pop_front() {
            self.release(peer, now);
            self.refuse(incoming, &mut buf);
        }
        self.buf = buf;
    }

    /// Counts a new connection from `incoming`'s address when that address is validated (a
    /// Retry's token), and only checks it otherwise; `Err` when a per-address limit refuses
    /// it (counted by reason). The key it returns is what the connection counts under from
    /// now on: 0 for none yet (no gate, or not validated: the worker counts it on taking it).
    fn admit_address(&self, incoming: &quinn_proto::Incoming, now: Instant) -> Result<AddrKey, ()> {
        let Some(gate) = &self.gate else { return Ok(0) };
        let key = gate.admission.key(incoming.remote_address().ip());
        let counted = if incoming.remote_address_validated() {
            gate.admission.admit(key, now).map(|()| key)
        } else {
            gate.admission.would_refuse(key, now).map_or(Ok(0), Err)
        };
        counted.map_err(|refusal| {
            if let Some(i) = crate::admission::Refusal::ALL.iter().position(|r| *r == refusal) {
                gate.refused[i].increment(1);
            }
        })
    }

    /// The client address of connection `key`.
    pub(crate) fn remote_of(&mut self, key: QuicKey) -> Option<IpAddr> {
        self.slot_of(key).map(|s| s.conn.remote_address().ip())
    }

    /// A connection counted by [`Self::admit_address`] ended before the worker took it.
    fn release(&self, peer: AddrKey, now: Instant) {
        if let Some(gate) = &self.gate
            && peer != 0
        {
            gate.admission.closed(peer, false, now);
        }
    }

    /// The address key of connection `key`, which the worker takes over with it.
    pub(crate) fn peer_of(&mut self, key: QuicKey) -> AddrKey {
        self.slot_of(key).map_or(0, |s| s.peer)
    }

    /// The worker refused connection `key`: its address no longer counts it.
    pub(crate) fn refused_by_worker(&mut self, key: QuicKey) {
        let peer = self.peer_of(key);
        self.release(peer, Instant::now());
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
                closed.push((h, slot.peer));
            }
        }
        self.handshaking = 0;
        for (h, peer) in closed {
            self.release(peer, now);
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
}
