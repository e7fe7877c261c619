//! Batched UDP I/O for a worker's QUIC endpoint: many datagrams per system call, with
//! recvmmsg(2) and sendmmsg(2) on the worker's non-blocking socket.
//!
//! The endpoint tells peers not to send datagrams larger than [`SLOT`] (QUIC's
//! max_udp_payload_size transport parameter), so one receive slot holds any datagram a
//! compliant peer sends; a larger one arrives truncated and is dropped.
//!
//! On a socket bound to the unspecified address, each datagram's destination address comes
//! with it (IP_PKTINFO / IPV6_PKTINFO) and replies name it as their source, so a node with
//! several addresses (a VIP on the loopback behind LVS-DR, say) answers from the address the
//! client used.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;

/// Datagrams per receive call.
pub(crate) const SLOTS: usize = 32;
/// Bytes per received datagram (and the largest UDP payload peers may send us).
pub(crate) const SLOT: usize = super::MAX_UDP_PAYLOAD as usize;
/// Datagrams per send call.
const SEND_BATCH: usize = 64;
/// Datagrams waiting for the socket to have room, at most; more are dropped (QUIC's loss
/// recovery resends what matters).
const MAX_QUEUED: usize = 8192;
/// ...and bytes of them: a backlogged socket cannot make the queue hold more than this.
const MAX_QUEUED_BYTES: usize = 4 << 20;

/// Control-message space per datagram, in u64s (aligned for cmsghdr): room for one
/// in6_pktinfo or in_pktinfo message.
const CONTROL: usize = 8;

/// Asks the kernel for each datagram's destination address (see the module docs).
pub(crate) fn enable_packet_info(socket: &socket2::Socket, ipv6: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    let set = |level, name| {
        // SAFETY: setsockopt on a socket we own, with a c_int option value.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                name,
                (&raw const on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    };
    if ipv6 {
        set(libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)?;
        // IPv4 clients of a dual-stack socket (v4-mapped addresses).
        let _ = set(libc::IPPROTO_IP, libc::IP_PKTINFO);
        Ok(())
    } else {
        set(libc::IPPROTO_IP, libc::IP_PKTINFO)
    }
}

/// One received datagram's facts.
#[derive(Clone, Copy)]
struct Meta {
    len: usize,
    namelen: libc::socklen_t,
    truncated: bool,
    /// The address it was sent to, when the socket reports it.
    local: Option<IpAddr>,
}

/// The receive side: one buffer of [`SLOTS`] slots, their source addresses and their
/// control messages.
pub(crate) struct RxBatch {
    buf: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    control: Vec<[u64; CONTROL]>,
    meta: [Meta; SLOTS],
}

impl RxBatch {
    pub fn new() -> RxBatch {
        // SAFETY: an all-zero sockaddr_storage is a valid (AF_UNSPEC) value.
        let empty: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let meta = Meta { len: 0, namelen: 0, truncated: false, local: None };
        RxBatch {
            buf: vec![0; SLOTS * SLOT],
            addrs: vec![empty; SLOTS],
            control: vec![[0; CONTROL]; SLOTS],
            meta: [meta; SLOTS],
        }
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
            hdr.msg_control = self.control[i].as_mut_ptr().cast();
            hdr.msg_controllen = CONTROL * 8;
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
            *meta = Meta {
                len: msg.msg_len as usize,
                namelen: msg.msg_hdr.msg_namelen,
                truncated: msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                local: destination(&msg.msg_hdr),
            };
        }
        Ok(n)
    }

    /// Datagram `i` of the last [`RxBatch::recv`]: its bytes, its source, and the address
    /// it was sent to when the socket reports it; `None` if it was truncated or its source
    /// is not an IP address.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr, Option<IpAddr>)> {
        let meta = self.meta.get(i)?;
        if meta.truncated {
            return None;
        }
        let addr = to_socket_addr(self.addrs.get(i)?, meta.namelen)?;
        let data = self.buf.get(i * SLOT..i * SLOT + meta.len.min(SLOT))?;
        Some((data, addr, meta.local))
    }
}

/// The destination address in a received message's IP_PKTINFO / IPV6_PKTINFO, if any.
fn destination(hdr: &libc::msghdr) -> Option<IpAddr> {
    // SAFETY: `hdr` is a header the kernel filled in; the CMSG_* macros walk its control
    // buffer within msg_controllen, and each payload is read according to its level/type.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_PKTINFO {
                let info = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::in_pktinfo>());
                return Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))));
            }
            if c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_PKTINFO {
                let info = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::in6_pktinfo>());
                let ip = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                return Some(ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4));
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    None
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
    /// Each datagram not yet sent.
    items: std::collections::VecDeque<Item>,
}

impl TxQueue {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queues `datagram` for `to`, to leave from address `from` when given; drops it when the
    /// queue holds [`MAX_QUEUED`] datagrams or [`MAX_QUEUED_BYTES`].
    pub fn push(&mut self, to: SocketAddr, from: Option<IpAddr>, datagram: &[u8]) {
        if self.items.len() >= MAX_QUEUED || self.data.len() + datagram.len() > MAX_QUEUED_BYTES {
            return;
        }
        self.items.push_back(Item { offset: self.data.len(), len: datagram.len(), to: to.into(), from });
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
            let mut control = [[0u64; CONTROL]; SEND_BATCH];
            for (i, item) in self.items.iter().take(batch).enumerate() {
                let Some(bytes) = self.data.get(item.offset..item.offset + item.len) else { continue };
                iovecs[i].iov_base = bytes.as_ptr().cast_mut().cast();
                iovecs[i].iov_len = item.len;
                let hdr = &mut msgs[i].msg_hdr;
                hdr.msg_iov = &raw mut iovecs[i];
                hdr.msg_iovlen = 1;
                hdr.msg_name = item.to.as_ptr().cast_mut().cast();
                hdr.msg_namelen = item.to.len();
                if let Some(from) = item.from {
                    set_source(hdr, &mut control[i], from);
                }
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
                self.sent((sent as usize).min(batch));
            }
        }
        self.data.clear();
        true
    }

    /// The first `n` datagrams left. Their bytes are given back once they are half of the
    /// buffer, so a socket that stays backlogged while some datagrams go (the queue never
    /// empty) does not grow the buffer by everything ever queued.
    fn sent(&mut self, n: usize) {
        self.items.drain(..n.min(self.items.len()));
        let Some(front) = self.items.front().map(|i| i.offset) else {
            self.data.clear();
            return;
        };
        if front > 0 && front >= self.data.len() / 2 {
            self.data.drain(..front);
            for item in &mut self.items {
                item.offset -= front;
            }
        }
    }
}

/// A queued datagram: where its bytes are in the queue's buffer, its destination, and the
/// source address it must leave from (when the socket is bound to every address).
struct Item {
    offset: usize,
    len: usize,
    to: socket2::SockAddr,
    from: Option<IpAddr>,
}

/// Names `from` as the source address of the message `hdr`, in `control`.
fn set_source(hdr: &mut libc::msghdr, control: &mut [u64; CONTROL], from: IpAddr) {
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = CONTROL * 8;
    // SAFETY: `control` is 64 bytes, aligned for cmsghdr, and takes one cmsghdr with an
    // in_pktinfo or in6_pktinfo payload (the CMSG_SPACE of either fits); msg_controllen is
    // then set to exactly what was written.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(hdr);
        if cmsg.is_null() {
            return;
        }
        match from {
            IpAddr::V4(ip) => {
                (*cmsg).cmsg_level = libc::IPPROTO_IP;
                (*cmsg).cmsg_type = libc::IP_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::in_pktinfo>() as u32) as usize;
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr { s_addr: u32::from(ip).to_be() },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::in_pktinfo>(), info);
                hdr.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<libc::in_pktinfo>() as u32) as usize;
            }
            IpAddr::V6(ip) => {
                (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
                (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::in6_pktinfo>() as u32) as usize;
                let info = libc::in6_pktinfo { ipi6_addr: libc::in6_addr { s6_addr: ip.octets() }, ipi6_ifindex: 0 };
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::in6_pktinfo>(), info);
                hdr.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<libc::in6_pktinfo>() as u32) as usize;
            }
        }
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
            queue.push(to, None, &vec![i; 100 + usize::from(i)]);
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
                            Some((data, from, _)) => got.push((data.to_vec(), from)),
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
    fn a_backlogged_queue_gives_sent_bytes_back() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut queue = TxQueue::default();
        queue.push(to, None, &[1; 1000]);
        // A datagram leaves for each one queued, but the queue is never empty.
        for i in 0..10_000u32 {
            queue.push(to, None, &[i as u8; 1000]);
            queue.sent(1);
        }
        assert_eq!(queue.items.len(), 1);
        assert!(queue.data.len() <= 2 * 1000, "{} bytes held for one datagram", queue.data.len());
        let front = queue.items.front().map(|i| i.offset).unwrap();
        assert_eq!(queue.data[front..front + 1000], [(9_999u32 as u8); 1000]);
        // And the bytes bound holds whatever the datagram count.
        let mut full = TxQueue::default();
        for _ in 0..MAX_QUEUED {
            full.push(to, None, &[0; 1400]);
        }
        assert!(full.data.len() <= MAX_QUEUED_BYTES && full.items.len() < MAX_QUEUED);
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
        let (data, from, _) = rx.get(0).unwrap();
        assert_eq!((data, from), (&b"six"[..], client.local_addr().unwrap()));
    }
}
