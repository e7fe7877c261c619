//! One client connection on a worker: its protocol session, its transport, who is on it, and
//! the buffers it holds only while data is in motion. Its task is in `worker::task`.
//!
//! An idle TCP connection holds no read buffer: its task waits for readiness (a PollOnce op
//! on io_uring, an epoll registration on the fallback), then the worker reads into its one
//! shared buffer. Only a partial frame is copied into the connection's own `input`. A TLS
//! connection works the same way with rustls in between (ciphertext in, plaintext out). A
//! QUIC connection reads and writes its stream through the worker's endpoint, whose driver
//! wakes the task when stream data arrives or room frees up. Which transport a connection
//! uses is known only to [`crate::transport`]; this module calls its interface.

use std::io;
use std::rc::Rc;
use std::task::{Context, Waker};

use bytes::BytesMut;
use ringgate_codec::client::Platform;
use ringgate_codec::session::ServerSession;

use crate::transport::{Io, ReadOutcome, Wrote};

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
    /// The source address as admission control counts it (0: not counted, QUIC).
    pub peer: crate::admission::AddrKey,
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

impl Conn {
    pub fn new(session: ServerSession, io: Io) -> Conn {
        Conn { session, io, identity: None, waker: None, want_write: false, bufs: None, peer: 0 }
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

    /// Reads once through the transport (with `buf`, the worker's shared buffer, as
    /// scratch) and keeps what arrived as input.
    pub fn read_into(&mut self, buf: &mut [u8], cx: &mut Context<'_>) -> ReadOutcome {
        let bufs = &mut self.bufs;
        let mut input = |bytes: &[u8]| bufs.get_or_insert_with(Box::default).input.extend_from_slice(bytes);
        self.io.read(buf, &mut input, cx)
    }

    /// Writes as much pending output as the transport takes now, many frames per write, and
    /// returns the bytes written. Sets `want_write` when the transport is full; a QUIC stream
    /// then wakes `cx` when it has room. Errors mean the connection is gone.
    pub fn flush(&mut self, cx: &mut Context<'_>) -> io::Result<usize> {
        let mut written = 0;
        loop {
            let pending = self.bufs.as_ref().is_some_and(|b| !b.transit.is_empty());
            if !pending && !self.io.wants_write() {
                if self.session.output().is_empty() {
                    self.want_write = false;
                    self.trim();
                    return Ok(written);
                }
                // Take the whole buffer: `split()` would leave its empty tail holding the
                // allocation for as long as the connection idles.
                let out = std::mem::take(self.session.output());
                let bufs = self.bufs.get_or_insert_with(Box::default);
                self.io.stage(out, &mut bufs.transit);
            }
            let bufs = self.bufs.get_or_insert_with(Box::default);
            match self.io.write(&mut bufs.transit, cx)? {
                Wrote::Bytes(n) => written += n,
                Wrote::Blocked => {
                    self.want_write = true;
                    return Ok(written);
                }
            }
        }
    }

    /// Whether the transport has bytes of its own to write (TLS handshake records).
    pub fn transport_wants_write(&self) -> bool {
        self.io.wants_write()
    }

    /// Lets go of the transport, handing it the output it never took.
    pub fn close_transport(self, reason: ringgate_codec::ReasonCode) {
        let unsent = self.bufs.as_ref().map_or(&[][..], |b| &b.transit[..]);
        crate::transport::close(self.io, reason, unsent);
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
