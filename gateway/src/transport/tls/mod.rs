//! TLS over TCP: rustls's connection state machine driven from the worker's readiness loop.
//! The worker reads ciphertext into rustls on readiness and takes the plaintext into the
//! connection's input, so an idle TLS connection costs rustls's own state and no buffer of
//! ours. Certificates and the rustls configurations are in [`certs`].

mod certs;

use std::io::{self, Read, Write};

use bytes::{Buf, BytesMut};
use socket2::Socket;

pub use certs::{ALPN, BUFFER_LIMIT, Certs, self_signed};

use super::{ConnFd, Failure, ReadOutcome, Wrote, read_error, wrote};

/// A TLS connection: its socket and rustls's state.
pub(crate) struct TlsIo {
    pub fd: ConnFd,
    pub tls: rustls::ServerConnection,
}

impl TlsIo {
    /// Reads ciphertext once, then hands every plaintext byte rustls has to `input`. A
    /// failed handshake or record writes rustls's alert where the socket takes it.
    pub fn read(&mut self, buf: &mut [u8], input: &mut dyn FnMut(&[u8])) -> ReadOutcome {
        let mut socket: &Socket = &self.fd;
        match self.tls.read_tls(&mut socket) {
            Ok(0) => return ReadOutcome::Gone,
            Ok(_) => {}
            Err(e) => return read_error(&e),
        }
        if let Err(e) = self.tls.process_new_packets() {
            tracing::debug!(error = %e, "tls connection failed");
            self.write_records();
            return ReadOutcome::Failed(Failure::Tls);
        }
        let mut n = 0;
        loop {
            match self.tls.reader().read(buf) {
                Ok(0) => return ReadOutcome::Gone,
                Ok(got) => {
                    input(buf.get(..got).unwrap_or_default());
                    n += got;
                }
                // No more plaintext for now.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Data(n),
                Err(_) => return ReadOutcome::Gone,
            }
        }
    }

    /// Plaintext from `transit` into rustls (it takes up to its buffer limit), then records
    /// out to the socket.
    pub fn write(&mut self, transit: &mut BytesMut) -> io::Result<Wrote> {
        if !transit.is_empty() {
            let took = self.tls.writer().write(transit)?;
            transit.advance(took);
        }
        if self.tls.wants_write() {
            let mut socket: &Socket = &self.fd;
            wrote(self.tls.write_tls(&mut socket))
        } else if !transit.is_empty() {
            // rustls is full and has nothing to write: cannot happen with a buffer limit,
            // but never spin.
            Ok(Wrote::Blocked)
        } else {
            Ok(Wrote::Bytes(0))
        }
    }

    /// Writes what rustls has queued (records, an alert) while the socket takes it.
    fn write_records(&mut self) {
        let mut socket: &Socket = &self.fd;
        while self.tls.wants_write() && self.tls.write_tls(&mut socket).is_ok_and(|n| n > 0) {}
    }

    /// Sends close_notify where the socket takes it, then shuts the socket down.
    pub fn close(mut self) {
        self.tls.send_close_notify();
        self.write_records();
        super::tcp::close(&self.fd);
    }
}
