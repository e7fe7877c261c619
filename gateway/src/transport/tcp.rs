//! Plain TCP: the connection's socket, read into the worker's shared buffer on readiness.

use std::io::{self, Read, Write};

use bytes::{Buf, BytesMut};
use socket2::Socket;

use super::{ConnFd, ReadOutcome, Wrote, read_error, wrote};

/// Reads once into `buf` and hands what arrived to `input`.
pub(crate) fn read(fd: &ConnFd, buf: &mut [u8], input: &mut dyn FnMut(&[u8])) -> ReadOutcome {
    match (&**fd as &Socket).read(buf) {
        Ok(0) => ReadOutcome::Gone,
        Ok(n) => {
            input(buf.get(..n).unwrap_or_default());
            ReadOutcome::Data(n)
        }
        Err(e) => read_error(&e),
    }
}

/// Writes what the socket takes of `transit`.
pub(crate) fn write(fd: &ConnFd, transit: &mut BytesMut) -> io::Result<Wrote> {
    if transit.is_empty() {
        return Ok(Wrote::Bytes(0));
    }
    let result = wrote((&**fd as &Socket).write(transit));
    if let Ok(Wrote::Bytes(n)) = result {
        transit.advance(n);
    }
    result
}

/// Shuts the socket down both ways.
pub(crate) fn close(fd: &ConnFd) {
    let _ = fd.shutdown(std::net::Shutdown::Both);
}
