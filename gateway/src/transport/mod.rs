//! Client transports: plain TCP, TLS over TCP, WebSocket (over TCP or TLS), and QUIC. Each carries exactly the client
//! frame protocol, and each lives in its own module behind one narrow interface, [`Io`],
//! which is all the worker's connection code calls:
//!
//! - [`Io::poll_ready`]: wait for the transport (socket readiness, or the QUIC endpoint's
//!   wake-up);
//! - [`Io::read`]: read into the worker's one shared buffer and hand the client-protocol
//!   bytes to the connection's input;
//! - [`Io::stage`] and [`Io::write`]: frame the session's output as the transport needs and
//!   write as much as it takes now;
//! - [`close`]: let go, saying why where the transport can;
//! - [`Io::transport`]: the label metrics use.
//!
//! An idle connection on any transport holds no buffer of ours: the socket transports wait
//! for readiness and then read into the worker's buffer. TLS runs rustls's connection state
//! machine inside that readiness loop ([`tls`]); we drive rustls directly rather than through
//! compio's TLS stream wrapper because that wrapper is an owned-buffer async stream that would
//! park a read with a buffer on every idle connection. QUIC is quinn-proto driven by each
//! worker itself ([`quic`]).

pub(crate) mod proxy;
pub mod quic;
pub(crate) mod tcp;
pub mod tls;
pub mod ws;

use std::io;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use compio::runtime::fd::PollFd;
use ringgate_codec::ReasonCode;
use socket2::Socket;

use crate::status::Transport;

/// The socket of a connection. It lives inside the connection (no separate allocation); the
/// connection's task polls it.
pub(crate) type ConnFd = PollFd<Socket>;

/// How a connection's bytes travel.
pub(crate) enum Io {
    Tcp(ConnFd),
    /// rustls between the socket and the session (boxed: rustls's state is ~1 KiB, and a
    /// plain TCP connection must not pay for the variant).
    Tls(Box<tls::TlsIo>),
    /// WebSocket over TCP (boxed with its socket: the handshake and frame state).
    Ws(Box<ws::WsIo<ConnFd>>),
    /// WebSocket over TLS (rustls's state and the WebSocket's in one allocation).
    Wss(Box<ws::WsIo<tls::TlsIo>>),
    Quic(Box<quic::QuicIo>),
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.transport().name())
    }
}

/// What a transport is ready for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Readiness {
    Readable,
    /// Writable, and the connection asked for it.
    Writable,
    /// The socket failed.
    Failed,
    /// Nothing yet; the task is registered to be woken.
    Pending,
    /// The transport has no readiness of its own (QUIC: the endpoint's driver wakes the
    /// task): read, write what is pending, then wait.
    Driven,
}

/// What a read attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadOutcome {
    /// This many client-protocol bytes went to the input (and maybe more are waiting).
    Data(usize),
    /// Only transport keepalives arrived (WebSocket Ping or Pong): life, but no bytes.
    Alive,
    /// Nothing more to read now.
    WouldBlock,
    /// The peer closed its side, or the socket failed.
    Gone,
    /// The transport's own protocol failed (a TLS handshake or record); the transport has
    /// written its alert where the socket takes it.
    Failed(Failure),
}

/// A failure of a transport's own protocol, counted by the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    Tls,
    Ws(ws::WsFailure),
}

/// What one write attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wrote {
    /// This many bytes left (0 after an interruption: try again).
    Bytes(usize),
    /// The transport is full; wait for writability (QUIC: the endpoint wakes the task).
    Blocked,
}

impl Io {
    pub fn transport(&self) -> Transport {
        match self {
            Io::Tcp(_) => Transport::Tcp,
            Io::Tls(..) => Transport::Tls,
            Io::Ws(_) => Transport::Ws,
            Io::Wss(_) => Transport::Wss,
            Io::Quic(_) => Transport::Quic,
        }
    }

    /// Polls for readiness: readable, or writable when `want_write`.
    pub fn poll_ready(&self, want_write: bool, cx: &mut Context<'_>) -> Readiness {
        let fd = match self {
            Io::Tcp(fd) => fd,
            Io::Tls(t) => &t.fd,
            Io::Ws(w) => w.fd(),
            Io::Wss(w) => w.fd(),
            Io::Quic(_) => return Readiness::Driven,
        };
        let readable = fd.poll_read_ready(cx);
        let writable = if want_write { fd.poll_write_ready(cx) } else { Poll::Pending };
        match (readable, writable) {
            (Poll::Ready(Err(_)), _) | (_, Poll::Ready(Err(_))) => Readiness::Failed,
            (Poll::Ready(Ok(())), _) => Readiness::Readable,
            (_, Poll::Ready(Ok(()))) => Readiness::Writable,
            (Poll::Pending, Poll::Pending) => Readiness::Pending,
        }
    }

    /// Reads once, using `buf` (the worker's shared buffer) as scratch, and hands what
    /// arrived to `input`. A QUIC stream registers `cx` when nothing is there.
    pub fn read(&mut self, buf: &mut [u8], input: &mut dyn FnMut(&[u8]), cx: &mut Context<'_>) -> ReadOutcome {
        match self {
            Io::Tcp(fd) => tcp::read(fd, buf, input),
            Io::Tls(t) => t.read(buf, input),
            Io::Ws(w) => w.read(buf, input),
            Io::Wss(w) => w.read(buf, input),
            Io::Quic(q) => q.read(input, cx),
        }
    }

    /// Takes the session's output for sending: appends it to `transit`, framed as the
    /// transport needs. `transit` always ends on a frame boundary.
    pub fn stage(&mut self, out: BytesMut, transit: &mut BytesMut) {
        match self {
            Io::Ws(w) => w.stage(out, transit),
            Io::Wss(w) => w.stage(out, transit),
            _ if transit.is_empty() => *transit = out,
            _ => transit.extend_from_slice(&out),
        }
    }

    /// Whether the transport has bytes of its own waiting (TLS handshake records, alerts,
    /// WebSocket handshake responses and Pongs).
    pub fn wants_write(&self) -> bool {
        match self {
            Io::Tls(t) => t.tls.wants_write(),
            Io::Ws(w) => w.wants_write(),
            Io::Wss(w) => w.wants_write(),
            Io::Tcp(_) | Io::Quic(_) => false,
        }
    }

    /// The client address a trusted proxy forwarded in a WebSocket upgrade, once.
    pub fn take_forwarded(&mut self) -> Option<std::net::IpAddr> {
        match self {
            Io::Ws(w) => w.take_forwarded(),
            Io::Wss(w) => w.take_forwarded(),
            _ => None,
        }
    }

    /// Still in its TLS or WebSocket handshake.
    pub fn handshaking(&self) -> bool {
        match self {
            Io::Tls(t) => t.tls.is_handshaking(),
            Io::Ws(w) => w.handshaking(),
            Io::Wss(w) => w.handshaking(),
            Io::Tcp(_) | Io::Quic(_) => false,
        }
    }

    /// A connection given up before its transport's own handshake finished (a WebSocket
    /// upgrade that never came): its failure, for the counters.
    pub fn abandoned(&self) -> Option<Failure> {
        match self {
            Io::Ws(w) => w.abandoned(),
            Io::Wss(w) => w.abandoned(),
            _ => None,
        }
    }

    /// Writes from `transit` (and the transport's own pending bytes) what the transport
    /// takes now, advancing `transit` past what it took. Errors mean the connection is gone.
    pub fn write(&mut self, transit: &mut BytesMut, cx: &mut Context<'_>) -> io::Result<Wrote> {
        match self {
            Io::Tcp(fd) => tcp::write(fd, transit),
            Io::Tls(t) => t.write(transit),
            Io::Ws(w) => w.write(transit),
            Io::Wss(w) => w.write(transit),
            Io::Quic(q) => q.write(transit, cx),
        }
    }
}

/// Lets go of a finished connection's transport; `unsent` is output the transport did not
/// take. TCP: shutdown(2), which also completes any pending readiness op at once, so the fd
/// is released even when cancelling that op is delayed, and the peer gets its FIN now. TLS:
/// close_notify first. WebSocket: its Close frame first (see [`ws`]). QUIC: the stream is finished and the connection closed with the
/// reason code once the peer has the last bytes (or after a linger of 2 s), by the worker's
/// QUIC endpoint.
pub(crate) fn close(io: Io, reason: ReasonCode, unsent: &[u8]) {
    match io {
        Io::Tcp(fd) => tcp::close(&fd),
        Io::Tls(t) => (*t).close(),
        Io::Ws(w) => (*w).close(reason, unsent),
        Io::Wss(w) => (*w).close(reason, unsent),
        Io::Quic(q) => (*q).close(reason, unsent),
    }
}

/// Maps a socket error of a read.
pub(crate) fn read_error(e: &io::Error) -> ReadOutcome {
    match e.kind() {
        io::ErrorKind::WouldBlock => ReadOutcome::WouldBlock,
        io::ErrorKind::Interrupted => ReadOutcome::Data(0),
        _ => ReadOutcome::Gone,
    }
}

/// Maps the result of a socket write.
pub(crate) fn wrote(result: io::Result<usize>) -> io::Result<Wrote> {
    match result {
        Ok(0) => Err(io::ErrorKind::WriteZero.into()),
        Ok(n) => Ok(Wrote::Bytes(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Wrote::Blocked),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Wrote::Bytes(0)),
        Err(e) => Err(e),
    }
}

/// Keeps a task's waker so it can be woken (a Waker clone only when it changed).
pub(crate) fn remember(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}
