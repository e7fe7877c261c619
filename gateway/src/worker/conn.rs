//! One client connection on a worker: its protocol session, its socket, and the task that
//! waits for the socket to become readable (or writable while output is blocked).
//!
//! An idle connection holds no read buffer: its task waits for readiness (a PollOnce op on
//! io_uring, an epoll registration on the fallback), then the worker reads into its one
//! shared buffer. Only a partial frame is copied into the connection's own `input`.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::task::{Poll, Waker};

use bytes::{Buf, BytesMut};
use compio::runtime::fd::PollFd;
use ringgate_codec::client::Platform;
use ringgate_codec::session::ServerSession;
use socket2::Socket;

use super::state::Worker;

/// The socket of a connection, shared by its task (waiting) and the worker (reading, writing).
pub(crate) type ConnFd = Rc<PollFd<Socket>>;

/// Who is on an authenticated connection.
#[derive(Debug)]
pub(crate) struct ConnIdentity {
    pub user_id: Rc<str>,
    pub device_id: String,
    pub platform: Platform,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub session: ServerSession,
    pub fd: ConnFd,
    /// A partial frame carried over between reads; empty (unallocated) when idle.
    pub input: BytesMut,
    /// Bytes taken from the session's output and not yet accepted by the socket.
    pub transit: BytesMut,
    pub identity: Option<Box<ConnIdentity>>,
    pub rooms: Vec<Rc<str>>,
    /// The connection's task, woken when it must wait for writability or exit.
    pub waker: Option<Waker>,
    pub want_write: bool,
}

/// What a read attempt found.
pub(crate) enum ReadOutcome {
    /// Bytes were appended to `input` (and maybe more are waiting).
    Data,
    /// Nothing more to read now.
    WouldBlock,
    /// The peer closed its side, or the socket failed.
    Gone,
}

impl Conn {
    pub fn new(session: ServerSession, fd: ConnFd) -> Conn {
        Conn {
            session,
            fd,
            input: BytesMut::new(),
            transit: BytesMut::new(),
            identity: None,
            rooms: Vec::new(),
            waker: None,
            want_write: false,
        }
    }

    /// Reads once into `buf` and keeps what arrived in `input`.
    pub fn read_into(&mut self, buf: &mut [u8]) -> ReadOutcome {
        match (&*self.fd as &Socket).read(buf) {
            Ok(0) => ReadOutcome::Gone,
            Ok(n) => {
                self.input.extend_from_slice(buf.get(..n).unwrap_or_default());
                ReadOutcome::Data
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => ReadOutcome::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => ReadOutcome::Data,
            Err(_) => ReadOutcome::Gone,
        }
    }

    /// Writes as much pending output as the socket takes now, many frames per write.
    /// Sets `want_write` when the socket is full. Errors mean the connection is gone.
    pub fn flush(&mut self) -> io::Result<()> {
        loop {
            if self.transit.is_empty() {
                if self.session.output().is_empty() {
                    self.want_write = false;
                    self.transit = BytesMut::new();
                    return Ok(());
                }
                self.transit = self.session.output().split();
            }
            match (&*self.fd as &Socket).write(&self.transit) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.transit.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.want_write = true;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Wakes the connection's task so it re-checks what to wait for.
    pub fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Gives back memory an idle connection does not need.
    pub fn trim(&mut self) {
        if self.input.is_empty() && self.input.capacity() > 0 {
            self.input = BytesMut::new();
        }
    }
}

/// The task of connection `id`: waits for readiness and hands each event to the worker.
/// Ends when the worker has removed the connection; dropping the last handle on the socket
/// then cancels any pending readiness op and closes it.
pub(crate) async fn run(worker: Rc<RefCell<Worker>>, id: u64, fd: ConnFd) {
    poll_fn(|cx| {
        loop {
            let mut w = worker.borrow_mut();
            let Some(conn) = w.conns.get_mut(&id) else { return Poll::Ready(()) };
            let want_write = conn.want_write;
            match fd.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {
                    w.on_readable(id);
                    continue;
                }
                Poll::Ready(Err(_)) => {
                    w.on_socket_gone(id);
                    continue;
                }
                Poll::Pending => {}
            }
            if want_write {
                match fd.poll_write_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        w.on_writable(id);
                        continue;
                    }
                    Poll::Ready(Err(_)) => {
                        w.on_socket_gone(id);
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            if let Some(conn) = w.conns.get_mut(&id) {
                match &conn.waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => conn.waker = Some(cx.waker().clone()),
                }
            }
            return Poll::Pending;
        }
    })
    .await;
}
