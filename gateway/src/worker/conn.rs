//! One client connection on a worker: its protocol session, its transport, and the task that
//! waits for the transport to become readable (or writable while output is blocked).
//!
//! An idle TCP connection holds no read buffer: its task waits for readiness (a PollOnce op
//! on io_uring, an epoll registration on the fallback), then the worker reads into its one
//! shared buffer. Only a partial frame is copied into the connection's own `input`. A TLS
//! connection works the same way with rustls in between (ciphertext in, plaintext out). A
//! QUIC connection reads and writes its stream through the worker's endpoint
//! (`worker::quic`), whose driver wakes the task when stream data arrives or room frees up.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use compio::runtime::fd::PollFd;
use ringgate_codec::client::Platform;
use ringgate_codec::session::ServerSession;
use socket2::Socket;

use super::state::Worker;

/// The socket of a connection. It lives inside the connection (no separate allocation); the
/// connection's task polls it through the worker.
pub(crate) type ConnFd = PollFd<Socket>;

/// How a connection's bytes travel.
pub(crate) enum Io {
    Tcp(ConnFd),
    /// rustls between the socket and the session (boxed: rustls's state is ~1 KiB, and a
    /// plain TCP connection must not pay for the variant).
    Tls(Box<TlsIo>),
    Quic(Box<QuicIo>),
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Io::Tcp(_) => "Tcp",
            Io::Tls(..) => "Tls",
            Io::Quic(_) => "Quic",
        })
    }
}

/// A TLS connection: its socket and rustls's state.
pub(crate) struct TlsIo {
    pub fd: ConnFd,
    pub tls: rustls::ServerConnection,
}

/// A QUIC connection of the worker's endpoint, whose one bidirectional stream carries the
/// client protocol.
pub(crate) struct QuicIo {
    pub ep: super::quic::Shared,
    pub key: super::quic::QuicKey,
    /// Output taken from the session and not yet accepted by the stream.
    pub pending: Bytes,
}

impl Io {
    pub fn transport(&self) -> super::Transport {
        match self {
            Io::Tcp(_) => super::Transport::Tcp,
            Io::Tls(..) => super::Transport::Tls,
            Io::Quic(_) => super::Transport::Quic,
        }
    }

    /// The socket, for the transports that have one of their own.
    pub fn fd(&self) -> Option<&ConnFd> {
        match self {
            Io::Tcp(fd) => Some(fd),
            Io::Tls(t) => Some(&t.fd),
            Io::Quic(_) => None,
        }
    }
}

/// Who is on an authenticated connection.
#[derive(Debug)]
pub(crate) struct ConnIdentity {
    pub user_id: Box<str>,
    pub device_id: Box<str>,
    pub platform: Platform,
    /// When it authenticated, in seconds since the node started: its registry record's
    /// since_ms is node_epoch + since_s * 1000, which its close reproduces exactly for the
    /// compare-and-delete.
    pub since_s: u32,
    /// Rooms joined; allocated on the first join. Boxed: 8 bytes per idle connection
    /// instead of 24, and most connections never join a room.
    #[allow(clippy::box_collection)]
    pub rooms: Option<Box<Vec<Rc<str>>>>,
}

/// Buffers a connection needs only while data is in motion.
#[derive(Debug, Default)]
struct Bufs {
    /// A partial frame carried over between reads.
    input: BytesMut,
    /// Bytes taken from the session's output and not yet accepted by the socket.
    transit: BytesMut,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub session: ServerSession,
    pub io: Io,
    /// Inline rather than boxed: one allocation per connection fewer.
    pub identity: Option<ConnIdentity>,
    /// The connection's task, woken when it must wait for writability or exit.
    pub waker: Option<Waker>,
    pub want_write: bool,
    /// `None` while idle: an idle connection holds no buffer at all.
    bufs: Option<Box<Bufs>>,
}

/// The key of a user in a worker's user index: a hash of the id, so the index holds no
/// copy of it. Colliding users share an entry; lookups check each connection's own id.
pub(crate) fn user_key(user_id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    user_id.hash(&mut h);
    h.finish()
}

/// The connections of one user on a worker. Nearly always one, kept inline without an
/// allocation; a second device spills to a Vec.
#[derive(Debug, Default)]
pub(crate) enum ConnIds {
    #[default]
    None,
    One(u64),
    /// Boxed so the enum stays 16 bytes; a user with two devices on one worker is rare.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<u64>>),
}

impl ConnIds {
    pub fn insert(&mut self, id: u64) {
        *self = match std::mem::take(self) {
            ConnIds::None => ConnIds::One(id),
            ConnIds::One(a) => ConnIds::Many(Box::new(vec![a, id])),
            ConnIds::Many(mut v) => {
                v.push(id);
                ConnIds::Many(v)
            }
        };
    }

    pub fn remove(&mut self, id: u64) {
        *self = match std::mem::take(self) {
            ConnIds::One(a) if a == id => ConnIds::None,
            ConnIds::Many(mut v) => {
                v.retain(|&c| c != id);
                match v.as_slice() {
                    [] => ConnIds::None,
                    [a] => ConnIds::One(*a),
                    _ => ConnIds::Many(v),
                }
            }
            other => other,
        };
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, ConnIds::None)
    }

    pub fn to_vec(&self) -> Vec<u64> {
        match self {
            ConnIds::None => Vec::new(),
            ConnIds::One(a) => vec![*a],
            ConnIds::Many(v) => v.to_vec(),
        }
    }
}

/// What a socket error means for a read.
fn io_outcome(e: &io::Error) -> ReadOutcome {
    match e.kind() {
        io::ErrorKind::WouldBlock => ReadOutcome::WouldBlock,
        io::ErrorKind::Interrupted => ReadOutcome::Data(0),
        _ => ReadOutcome::Gone,
    }
}

/// Writes a QUIC connection's pending output into its stream.
fn flush_quic(
    quic: &mut QuicIo,
    session: &mut ServerSession,
    want_write: &mut bool,
    cx: &mut Context<'_>,
) -> io::Result<usize> {
    let mut written = 0;
    loop {
        if quic.pending.is_empty() {
            if session.output().is_empty() {
                *want_write = false;
                return Ok(written);
            }
            quic.pending = std::mem::take(session.output()).freeze();
        }
        let wrote = quic.ep.borrow_mut().write(quic.key, &quic.pending, cx)?;
        match wrote {
            Some(n) if n > 0 => {
                quic.pending.advance(n);
                written += n;
            }
            Some(_) => return Err(io::ErrorKind::WriteZero.into()),
            None => {
                *want_write = true;
                return Ok(written);
            }
        }
    }
}

/// What a read attempt found.
pub(crate) enum ReadOutcome {
    /// This many bytes were appended to `input` (and maybe more are waiting).
    Data(usize),
    /// Nothing more to read now.
    WouldBlock,
    /// The peer closed its side, or the socket failed.
    Gone,
    /// The TLS handshake or a record failed (rustls sent its alert).
    TlsFailed,
}

impl Conn {
    pub fn new(session: ServerSession, io: Io) -> Conn {
        Conn { session, io, identity: None, waker: None, want_write: false, bufs: None }
    }

    /// The session and the input it decodes from, borrowed together.
    pub fn session_and_input(&mut self) -> (&mut ServerSession, &mut BytesMut) {
        let bufs = self.bufs.get_or_insert_with(Box::default);
        (&mut self.session, &mut bufs.input)
    }

    /// True when a partial frame is waiting for the rest of its bytes.
    pub fn has_partial_input(&self) -> bool {
        self.bufs.as_ref().is_some_and(|b| !b.input.is_empty())
    }

    /// Reads once (into `buf` for socket transports) and keeps what arrived as input. A QUIC
    /// stream registers `cx` when nothing is there. TLS failures are `Gone` after rustls's
    /// alert has been written where the socket takes it.
    pub fn read_into(&mut self, buf: &mut [u8], cx: &mut Context<'_>) -> ReadOutcome {
        let n = match &mut self.io {
            Io::Tcp(fd) => match (&**fd as &Socket).read(buf) {
                Ok(0) => return ReadOutcome::Gone,
                Ok(n) => n,
                Err(e) => return io_outcome(&e),
            },
            Io::Tls(t) => {
                let TlsIo { fd, tls } = &mut **t;
                let mut socket: &Socket = fd;
                match tls.read_tls(&mut socket) {
                    Ok(0) => return ReadOutcome::Gone,
                    Ok(_) => {}
                    Err(e) => return io_outcome(&e),
                }
                if let Err(e) = tls.process_new_packets() {
                    tracing::debug!(error = %e, "tls connection failed");
                    while tls.wants_write() && tls.write_tls(&mut socket).is_ok_and(|n| n > 0) {}
                    return ReadOutcome::TlsFailed;
                }
                let mut n = 0;
                loop {
                    match tls.reader().read(buf) {
                        Ok(0) => return ReadOutcome::Gone,
                        Ok(got) => {
                            let bufs = self.bufs.get_or_insert_with(Box::default);
                            bufs.input.extend_from_slice(buf.get(..got).unwrap_or_default());
                            n += got;
                        }
                        // No more plaintext for now.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Data(n),
                        Err(_) => return ReadOutcome::Gone,
                    }
                }
            }
            Io::Quic(quic) => {
                let got = quic.ep.borrow_mut().read(quic.key, cx);
                match got {
                    super::quic::QuicRead::Data(bytes) => {
                        let bufs = self.bufs.get_or_insert_with(Box::default);
                        bufs.input.extend_from_slice(&bytes);
                        return ReadOutcome::Data(bytes.len());
                    }
                    super::quic::QuicRead::WouldBlock => return ReadOutcome::WouldBlock,
                    super::quic::QuicRead::Gone => return ReadOutcome::Gone,
                }
            }
        };
        let bufs = self.bufs.get_or_insert_with(Box::default);
        bufs.input.extend_from_slice(buf.get(..n).unwrap_or_default());
        ReadOutcome::Data(n)
    }

    /// Writes as much pending output as the transport takes now, many frames per write, and
    /// returns the bytes written. Sets `want_write` when the transport is full; a QUIC stream
    /// then wakes `cx` when it has room. Errors mean the connection is gone.
    pub fn flush(&mut self, cx: &mut Context<'_>) -> io::Result<usize> {
        if let Io::Quic(quic) = &mut self.io {
            return flush_quic(quic, &mut self.session, &mut self.want_write, cx);
        }
        let mut written = 0;
        loop {
            let pending = self.bufs.as_ref().is_some_and(|b| !b.transit.is_empty());
            let tls_pending = self.tls_wants_write();
            if !pending && !tls_pending {
                if self.session.output().is_empty() {
                    self.want_write = false;
                    self.trim();
                    return Ok(written);
                }
                // Take the whole buffer: `split()` would leave its empty tail holding the
                // allocation for as long as the connection idles.
                let out = std::mem::take(self.session.output());
                self.bufs.get_or_insert_with(Box::default).transit = out;
            }
            let step = match &mut self.io {
                Io::Tcp(fd) => match self.bufs.as_mut() {
                    Some(bufs) if !bufs.transit.is_empty() => {
                        let n = (&**fd as &Socket).write(&bufs.transit);
                        if let Ok(n) = n {
                            bufs.transit.advance(n);
                        }
                        n
                    }
                    _ => Ok(0),
                },
                Io::Tls(t) => {
                    let TlsIo { fd, tls } = &mut **t;
                    // Plaintext into rustls (it takes up to its buffer limit), then records out.
                    if let Some(bufs) = self.bufs.as_mut()
                        && !bufs.transit.is_empty()
                    {
                        let took = tls.writer().write(&bufs.transit)?;
                        bufs.transit.advance(took);
                    }
                    if tls.wants_write() {
                        let mut socket: &Socket = fd;
                        tls.write_tls(&mut socket)
                    } else if self.bufs.as_ref().is_some_and(|b| !b.transit.is_empty()) {
                        // rustls is full and has nothing to write: cannot happen with a
                        // buffer limit, but never spin.
                        Err(io::ErrorKind::WouldBlock.into())
                    } else {
                        continue;
                    }
                }
                Io::Quic(_) => Ok(0),
            };
            match step {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.want_write = true;
                    return Ok(written);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether rustls has handshake records or an alert waiting to be written.
    pub fn tls_wants_write(&self) -> bool {
        matches!(&self.io, Io::Tls(t) if t.tls.wants_write())
    }

    /// Gives back the buffers once nothing is in motion.
    pub fn trim(&mut self) {
        if self.bufs.as_ref().is_some_and(|b| b.input.is_empty() && b.transit.is_empty()) {
            self.bufs = None;
        }
    }

    /// Wakes the connection's task so it re-checks what to wait for.
    pub fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// The task of connection `id`: waits for readiness and hands each event to the worker.
/// Ends when the worker has removed the connection; dropping the last handle on the socket
/// then cancels any pending readiness op and closes it.
pub(crate) async fn run(worker: Rc<RefCell<Worker>>, id: u64) {
    poll_fn(|cx| {
        loop {
            let mut w = worker.borrow_mut();
            let Some(conn) = w.conns.get_mut(&id) else { return Poll::Ready(()) };
            let Some(fd) = conn.io.fd() else {
                // QUIC: read until the stream has registered this task, then write what is
                // pending until the stream takes it all or registers this task too.
                w.on_readable(id, cx);
                if w.conns.get(&id).is_some_and(|c| c.want_write) {
                    w.flush_conn(id, cx);
                }
                let Some(conn) = w.conns.get_mut(&id) else { return Poll::Ready(()) };
                remember(&mut conn.waker, cx);
                return Poll::Pending;
            };
            let readable = fd.poll_read_ready(cx);
            let writable = if conn.want_write { fd.poll_write_ready(cx) } else { Poll::Pending };
            match (readable, writable) {
                (Poll::Ready(Err(_)), _) | (_, Poll::Ready(Err(_))) => {
                    w.on_socket_gone(id);
                    continue;
                }
                (Poll::Ready(Ok(())), _) => {
                    w.on_readable(id, cx);
                    continue;
                }
                (_, Poll::Ready(Ok(()))) => {
                    w.flush_conn(id, cx);
                    continue;
                }
                (Poll::Pending, Poll::Pending) => {}
            }
            remember(&mut conn.waker, cx);
            return Poll::Pending;
        }
    })
    .await;
}

/// Keeps the task's waker so the worker can wake it (a Waker clone only when it changed).
pub(crate) fn remember(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_ids_stay_inline_for_one() {
        let mut ids = ConnIds::default();
        ids.insert(1);
        assert!(matches!(ids, ConnIds::One(1)));
        ids.insert(2);
        ids.insert(3);
        assert_eq!(ids.to_vec(), [1, 2, 3]);
        ids.remove(2);
        ids.remove(1);
        assert!(matches!(ids, ConnIds::One(3)));
        ids.remove(3);
        assert!(ids.is_empty());
    }

    #[test]
    fn an_idle_connection_stays_in_the_256_byte_allocation_class() {
        // Box<Conn> is one allocation per connection: 248 bytes of payload is the most a
        // 256-byte malloc chunk holds (bench/README.md measures the whole per-connection cost).
        assert!(std::mem::size_of::<Conn>() <= 248, "Conn is {} bytes", std::mem::size_of::<Conn>());
        assert!(std::mem::size_of::<ConnIdentity>() <= 48);
        assert!(std::mem::size_of::<ServerSession>() <= 88);
    }
}
