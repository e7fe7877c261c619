//! QUIC on the workers: one UDP socket and one quinn-proto endpoint per worker, driven by
//! the worker ([`endpoint`]), with batched UDP I/O ([`udp`]) and a slim TLS session ([`tls`]).
//!
//! # Which worker gets a packet
//!
//! Every worker's UDP socket is bound to the same address in one SO_REUSEPORT group, so the
//! kernel picks the socket for each datagram. Left alone it hashes the 4-tuple, which breaks
//! a QUIC connection as soon as the client's address changes (NAT rebinding, Wi-Fi to
//! cellular): its packets would land on a worker that does not know it. Instead:
//!
//! - every connection ID this node issues starts with the index of the worker that owns the
//!   connection ([`WorkerCid`]);
//! - a classic BPF program attached to the group ([`attach_steering`]) reads the first byte
//!   of the destination connection ID (offset 1 in a short header, 6 in a long header) and
//!   returns it modulo the number of workers as the socket index.
//!
//! A client's very first Initial carries a random DCID of its own choosing; the program maps
//! it to some worker deterministically (retransmissions land on the same one), that worker
//! accepts the connection and from then on the client uses the worker's CIDs. We chose
//! steering in the kernel over handing misdirected packets between workers: no cross-thread
//! hop, no shared table, and roaming costs nothing.
//!
//! # Stateless reset
//!
//! All workers and all nodes derive the stateless-reset key from `quic.stateless_reset_key`,
//! so when a balancer moves a connection's packets to a node that does not hold it, that node
//! answers with a reset the client recognises at once instead of the client timing out.
//!
//! # Memory
//!
//! The goal is at most 16 KiB of user memory per idle QUIC connection (quinn with its
//! defaults uses ~37 KiB). Three things get there; bench/README.md has the measurements:
//!
//! - the transport is sized for many idle connections: one bidirectional stream per
//!   connection (quinn-proto preallocates state for every stream a peer may open, 200 by
//!   default), no unidirectional streams, no datagrams, windows sized to the protocol's
//!   frame limit, and no path-MTU probing state;
//! - the TLS session lets go of rustls's state once the handshake is done and builds the
//!   next key phase's keys only when the peer first uses them ([`tls`]);
//! - each worker drives quinn-proto itself ([`endpoint`]): no task, channel, timer or
//!   transmit buffer per connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use quinn_proto::{EndpointConfig, IdleTimeout, ServerConfig, TransportConfig, VarInt};
use socket2::{Domain, Protocol, Socket, Type};

use super::tls::Certs;
use crate::config::QuicSettings;

pub(crate) mod endpoint;
mod tls;
mod udp;

pub(crate) use endpoint::{
    Acceptor, AddressGate, HandshakeLimits, QuicEndpoint, QuicKey, QuicMetrics, QuicRead, Shared,
};

/// A QUIC connection of the worker's endpoint, whose one bidirectional stream carries the
/// client protocol.
pub(crate) struct QuicIo {
    pub ep: Shared,
    pub key: QuicKey,
}

impl QuicIo {
    /// Reads the next chunk of the stream; registers `cx` when there is none.
    pub fn read(&mut self, input: &mut dyn FnMut(&[u8]), cx: &mut std::task::Context<'_>) -> super::ReadOutcome {
        let got = self.ep.borrow_mut().read(self.key, cx);
        match got {
            QuicRead::Data(bytes) => {
                input(&bytes);
                super::ReadOutcome::Data(bytes.len())
            }
            QuicRead::WouldBlock => super::ReadOutcome::WouldBlock,
            QuicRead::Gone => super::ReadOutcome::Gone,
        }
    }

    /// Writes into the stream what it takes; `Blocked` (and `cx` registered) when it has
    /// no room now.
    pub fn write(&mut self, transit: &mut BytesMut, cx: &mut std::task::Context<'_>) -> io::Result<super::Wrote> {
        if transit.is_empty() {
            return Ok(super::Wrote::Bytes(0));
        }
        let wrote = self.ep.borrow_mut().write(self.key, transit, cx)?;
        match wrote {
            Some(0) => Err(io::ErrorKind::WriteZero.into()),
            Some(n) => {
                transit.advance(n);
                Ok(super::Wrote::Bytes(n))
            }
            None => Ok(super::Wrote::Blocked),
        }
    }

    /// Finishes the stream after `unsent` and closes with `reason` (see [`QuicEndpoint::close`]).
    pub fn close(self, reason: ringgate_codec::ReasonCode, unsent: &[u8]) {
        self.ep.borrow_mut().close(self.key, reason, unsent);
    }
}

/// Binds `count` UDP sockets to `addr` in one SO_REUSEPORT group, in worker order (a
/// socket's index in the group is its worker's index), and attaches the CID steering program.
pub fn bind_group(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::UdpSocket>> {
    let count = count.clamp(1, 256);
    crate::listener::ensure_free(addr, Type::DGRAM)?;
    let mut sockets = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_port(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(false)?;
        }
        // Handshake bursts arrive faster than one worker turn; the kernel default (~208 KiB)
        // drops Initials under a connect storm. Capped by net.core.rmem_max (kernel-tuning/).
        let _ = socket.set_recv_buffer_size(4 << 20);
        let _ = socket.set_send_buffer_size(4 << 20);
        if addr.ip().is_unspecified() {
            // Bound to every address: learn each datagram's destination address, so replies
            // leave from it ([`udp`]). Behind LVS-DR the client addressed the VIP, and a
            // reply from the host's primary address would be dropped by the client.
            udp::enable_packet_info(&socket, addr.is_ipv6())?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        let socket: std::net::UdpSocket = socket.into();
        addr = socket.local_addr()?;
        sockets.push(socket);
    }
    if let Some(first) = sockets.first() {
        attach_steering(first, count)?;
    }
    Ok(sockets)
}

/// Attaches the reuseport program that picks the socket from the first byte of the
/// destination connection ID (see the module docs).
fn attach_steering(socket: &std::net::UdpSocket, workers: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    const fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
        libc::sock_filter { code, jt, jf, k }
    }
    let ld_byte = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
    let program = [
        // A = first byte of the UDP payload (the program sees the payload, not the header).
        op(ld_byte, 0, 0, 0),
        // Long header (0x80 set): the DCID starts at byte 6, else at byte 1.
        op((libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16, 0, 2, 0x80),
        op(ld_byte, 0, 0, 6),
        op((libc::BPF_JMP | libc::BPF_JA) as u16, 0, 0, 1),
        op(ld_byte, 0, 0, 1),
        op((libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K) as u16, 0, 0, workers as u32),
        op((libc::BPF_RET | libc::BPF_A) as u16, 0, 0, 0),
    ];
    let fprog = libc::sock_fprog { len: program.len() as u16, filter: program.as_ptr().cast_mut() };
    // SAFETY: `fprog` points at `program`, which outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&raw const fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Issues 8-byte connection IDs whose first byte is the owning worker's index.
#[derive(Debug)]
pub struct WorkerCid {
    worker: u8,
    rng: ring::rand::SystemRandom,
}

/// Length of the connection IDs ringgate issues.
pub const CID_LEN: usize = 8;

impl WorkerCid {
    pub fn new(worker: usize) -> WorkerCid {
        WorkerCid { worker: worker as u8, rng: ring::rand::SystemRandom::new() }
    }
}

impl quinn_proto::ConnectionIdGenerator for WorkerCid {
    fn generate_cid(&mut self) -> quinn_proto::ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        bytes[0] = self.worker;
        // The OS random source does not fail on Linux; a zero tail would still be a valid,
        // correctly steered CID.
        let _ = ring::rand::SecureRandom::fill(&self.rng, &mut bytes[1..]);
        quinn_proto::ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// The endpoint configuration of worker `worker`: its CID generator and the shared reset key.
pub fn endpoint_config(worker: usize, reset_key: &[u8]) -> EndpointConfig {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset_key);
    let mut config = EndpointConfig::new(Arc::new(key));
    config.cid_generator(move || Box::new(WorkerCid::new(worker)));
    // Peers must not send datagrams larger than a receive slot of the batched socket I/O
    // ([`udp`]); 2,048 is above any Internet path's MTU.
    let _ = config.max_udp_payload_size(MAX_UDP_PAYLOAD);
    config
}

/// The largest UDP payload peers may send (the `max_udp_payload_size` transport parameter).
pub const MAX_UDP_PAYLOAD: u16 = 2048;

/// The server configuration: the certificate and a transport sized for idle connections.
/// `idle` is how long the protocol lets a connection stay silent; QUIC's own idle timeout is
/// set a little beyond it so the protocol's close (with its reason) comes first.
pub fn server_config(
    certs: &Certs,
    settings: &QuicSettings,
    idle: Duration,
    max_frame_len: usize,
) -> io::Result<ServerConfig> {
    let crypto = tls::SlimServerConfig::new(certs.quic.clone())?;
    let mut config = ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = TransportConfig::default();
    let window = settings.receive_window.max(max_frame_len as u32 + 16);
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(window))
        .receive_window(VarInt::from_u32(window))
        .send_window(u64::from(settings.send_window))
        .datagram_receive_buffer_size(None)
        .datagram_send_buffer_size(0)
        .mtu_discovery_config(None)
        .crypto_buffer_size(4096)
        .keep_alive_interval(None)
        .max_idle_timeout(Some(IdleTimeout::try_from(idle + Duration::from_secs(2)).map_err(io::Error::other)?));
    config.transport_config(Arc::new(transport));
    config.migration(true);
    Ok(config)
}

/// The reset key: the configured secret, or a random one for a single node.
pub fn reset_key(settings: &QuicSettings) -> Vec<u8> {
    match &settings.reset_key {
        Some(key) => key.clone(),
        None => {
            let mut key = vec![0u8; 32];
            let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key);
            key
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn_proto::ConnectionIdGenerator;

    #[test]
    fn cids_carry_the_worker_and_differ() {
        let mut cids = WorkerCid::new(3);
        let a = cids.generate_cid();
        let b = cids.generate_cid();
        assert_eq!(a.len(), CID_LEN);
        assert_eq!(a[0], 3);
        assert_ne!(a, b);
    }

    #[test]
    fn the_group_binds_and_takes_the_steering_program() {
        let sockets = bind_group("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let port = sockets[0].local_addr().unwrap().port();
        assert!(sockets.iter().all(|s| s.local_addr().unwrap().port() == port));
        // Datagrams whose short-header DCID names worker i arrive on socket i.
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for worker in [2u8, 0, 1, 2] {
            client.send_to(&[0x40, worker, 9, 9, 9, 9, 9, 9, 9], sockets[0].local_addr().unwrap()).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            let mut buf = [0u8; 64];
            for (i, s) in sockets.iter().enumerate() {
                let got = s.recv_from(&mut buf).ok();
                assert_eq!(got.is_some(), i == usize::from(worker), "worker {worker}, socket {i}");
            }
        }
        // A long header (Initial) is steered by byte 6, the DCID's first byte.
        client.send_to(&[0xc0, 0, 0, 0, 1, 8, 4, 1, 1, 1, 1, 1, 1, 1], sockets[0].local_addr().unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut buf = [0u8; 64];
        assert!(sockets[1].recv_from(&mut buf).is_ok(), "4 % 3 = 1");
    }
}
