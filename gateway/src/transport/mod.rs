//! Client transports beside plain TCP: TLS over TCP and QUIC.
//!
//! Both carry exactly the client frame protocol. TLS runs rustls's connection state machine
//! inside the worker's readiness loop (see `worker::conn`): the worker reads ciphertext into
//! its one shared buffer and hands it to rustls, so an idle TLS connection costs rustls's own
//! state and no buffer of ours. We drive rustls directly rather than through compio's TLS
//! stream wrapper because that wrapper is an owned-buffer async stream: it would park a read
//! with a buffer on every idle connection, which is what the plain TCP path avoids.
//! QUIC is quinn-proto driven by each worker itself (see [`quic`] and `worker::quic`).

pub mod quic;
pub mod quic_tls;
pub mod tls;

use ringgate_codec::ReasonCode;

use crate::worker::conn::Io;

/// Lets go of a finished connection's transport. TCP: shutdown(2), which also completes any
/// pending readiness op at once, so the fd is released even when cancelling that op is
/// delayed, and the peer gets its FIN now. TLS: close_notify first. QUIC: the stream is
/// finished and the connection closed with the reason code once the peer has the last bytes
/// (or after a linger of 2 s), by the worker's QUIC endpoint.
pub(crate) fn close(io: Io, reason: ReasonCode) {
    match io {
        Io::Tcp(fd) => {
            let _ = fd.shutdown(std::net::Shutdown::Both);
        }
        Io::Tls(t) => {
            let crate::worker::conn::TlsIo { fd, mut tls } = *t;
            tls.send_close_notify();
            let mut socket: &socket2::Socket = &fd;
            while tls.wants_write() && tls.write_tls(&mut socket).is_ok_and(|n| n > 0) {}
            let _ = fd.shutdown(std::net::Shutdown::Both);
        }
        Io::Quic(quic) => quic.ep.borrow_mut().close(quic.key, reason, &quic.pending),
    }
}
