//! Batched UDP I/O for a worker's QUIC endpoint: many datagrams per system call, with
//! recvmmsg(2) and sendmmsg(2) on the worker's non-blocking socket.
//!
//! The endpoint tells peers not to send datagrams larger than [`SLOT`] (QUIC's
//! max_udp_payload_size transport parameter), so one receive slot holds any datagram a
//! compliant peer sends; a larger one arrives truncated and is dropped.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// Datagrams per receive call.
pub(crate) const SLOTS: usize = 32;
/// Bytes per received datagram (and the largest UDP payload peers may send us).
pub(crate) const SLOT: usize = crate::transport::quic::MAX_UDP_PAYLOAD as usize;
/// Datagrams per send call.
const SEND_BATCH: usize = 64;
/// Datagrams waiting for the socket to have room, at most; more are dropped (QUIC's loss
/// recovery resends what matters).
const MAX_QUEUED: usize = 8192;

/// The receive side: one buffer of [`SLOTS`] slots and their source addresses.
pub(crate) struct RxBatch {
    buf: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    meta: [(usize, u32, bool); SLOTS],
}

impl RxBatch {
    pub fn new() -> RxBatch {
        // SAFETY: an all-zero sockaddr_storage is a valid (AF_UNSPEC) value.
        let empty: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        RxBatch { buf: vec![0; SLOTS * SLOT], addrs: vec![empty; SLOTS], meta: [(0, 0, false); SLOTS] }
    }

    /// Reads up to [`SLOTS`] datagrams; returns how many (WouldBlock when there is none).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut iovecs: [libc::iovec; SLOTS] =
            std::array::from_fn(|_| libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 });
        // SAFETY: an all-zero mmsghdr is valid; every pointer is set below before the call.
        let mut msgs: [libc::mmsghdr; SLOTS] = unsafe { std::mem::zeroed() };
        for (i, (slot, iov)) in self.buf.chunks_exact_mut(SLOT).zip(iovecs.iter_mut()).enumerate() {
            iov.iov_base = slot.as_mut_ptr().cast();
            iov.iov_len = SLOT;
            let hdr = &mut msgs[i].msg_hdr;
            hdr.msg_iov = iov;
            hdr.msg_iovlen = 1;
            hdr.msg_name = (&raw mut self.addrs[i]).cast();
            hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        // SAFETY: `msgs` holds SLOTS headers whose iovecs and names point into `self.buf` and
        // `self.addrs`, which outlive the call and are not otherwise borrowed during it.
        let n = unsafe {
            libc::recvmmsg(fd, msgs.as_mut_ptr(), SLOTS as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (meta, msg) in self.meta.iter_mut().zip(msgs.iter()).take(n) {
            let truncated = msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            *meta = (msg.msg_len as usize, msg.msg_hdr.msg_namelen, truncated);
        }
        Ok(n)
    }

    /// Datagram `i` of the last [`RxBatch::recv`]: its bytes and source, or `None` if it was
    /// truncated or its source is not an IP address.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let &(len, namelen, truncated) = self.meta.get(i)?;
        if truncated {
            return None;
        }
        let addr = to_socket_addr(self.addrs.get(i)?, namelen)?;
        let data = self.buf.get(i * SLOT..i * SLOT + len.min(SLOT))?;
        Some((data, addr))
    }
}

/// The IPv4 or IPv6 address the kernel wrote into `storage` (`len` bytes of it).
fn to_socket_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: an AF_INET address of sockaddr_in's size is a sockaddr_in, and
            // sockaddr_storage is aligned for every socket address type.
            let a = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for AF_INET6 and sockaddr_in6.
            let a = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The send side: datagrams gathered during a driver turn, sent together.
#[derive(Default)]
pub(crate) struct TxQueue {
    data: Vec<u8>,
    /// (offset into `data`, length, destination) of each datagram not yet sent.
    items: std::collections::VecDeque<(usize, usize, socket2::SockAddr)>,
}

impl TxQueue {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn push(&mut self, to: SocketAddr, datagram: &[u8]) {
        if self.items.len() >= MAX_QUEUED {
            return;
        }
        self.items.push_back((self.data.len(), datagram.len(), to.into()));
        self.data.extend_from_slice(datagram);
    }

    pub fn is_full(&self) -> bool {
        self.items.len() >= SEND_BATCH
    }

    /// Sends queued datagrams until none is left (true) or the socket is full (false).
    pub fn flush(&mut self, fd: RawFd) -> bool {
        while !self.items.is_empty() {
            let batch = self.items.len().min(SEND_BATCH);
            let mut iovecs: [libc::iovec; SEND_BATCH] =
                std::array::from_fn(|_| libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 });
            // SAFETY: an all-zero mmsghdr is valid; the first `batch` are filled in below.
            let mut msgs: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
            for (i, (offset, len, to)) in self.items.iter().take(batch).enumerate() {
                let Some(bytes) = self.data.get(*offset..*offset + *len) else { continue };
                iovecs[i].iov_base = bytes.as_ptr().cast_mut().cast();
                iovecs[i].iov_len = *len;
                let hdr = &mut msgs[i].msg_hdr;
                hdr.msg_iov = &raw mut iovecs[i];
                hdr.msg_iovlen = 1;
                hdr.msg_name = to.as_ptr().cast_mut().cast();
                hdr.msg_namelen = to.len();
            }
            // SAFETY: the first `batch` headers point at bytes of `self.data` and addresses in
            // `self.items`, unchanged until the call returns; the kernel only reads them.
            let sent = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), batch as libc::c_uint, libc::MSG_DONTWAIT) };
            if sent < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => return false,
                    io::ErrorKind::Interrupted => continue,
                    // The first datagram could not go (an unreachable peer, say): drop it,
                    // QUIC recovers, and carry on with the rest.
                    _ => {
                        self.items.pop_front();
                    }
                }
            } else {
                self.items.drain(..(sent as usize).min(batch));
            }
        }
        self.data.clear();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn batches_go_out_and_come_back_whole_with_their_sources() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = server.local_addr().unwrap();
        // 40 datagrams from two sockets: more than one receive batch.
        let mut queue = TxQueue::default();
        for i in 0..40u8 {
            queue.push(to, &vec![i; 100 + usize::from(i)]);
        }
        assert!(queue.flush(a.as_raw_fd()));
        b.send_to(&[0xee; SLOT + 10], to).unwrap(); // too large: arrives truncated
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut rx = RxBatch::new();
        let mut got = Vec::new();
        let mut truncated = 0;
        loop {
            match rx.recv(server.as_raw_fd()) {
                Ok(n) => {
                    for i in 0..n {
                        match rx.get(i) {
                            Some((data, from)) => got.push((data.to_vec(), from)),
                            None => truncated += 1,
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got.len(), 40);
        assert_eq!(truncated, 1);
        for (i, (data, from)) in got.iter().enumerate() {
            assert_eq!(data, &vec![i as u8; 100 + i]);
            assert_eq!(*from, a.local_addr().unwrap());
        }
    }

    #[test]
    fn ipv6_sources_come_back_too() {
        let Ok(server) = std::net::UdpSocket::bind("[::1]:0") else { return }; // no IPv6 here
        server.set_nonblocking(true).unwrap();
        let client = std::net::UdpSocket::bind("[::1]:0").unwrap();
        client.send_to(b"six", server.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut rx = RxBatch::new();
        assert_eq!(rx.recv(server.as_raw_fd()).unwrap(), 1);
        let (data, from) = rx.get(0).unwrap();
        assert_eq!((data, from), (&b"six"[..], client.local_addr().unwrap()));
    }
}
