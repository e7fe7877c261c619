//! The PROXY protocol (HAProxy's, v1 text and v2 binary) on a listener behind a load
//! balancer: a trusted proxy (`listen.trusted_proxies`) starts each connection with the
//! client's real address, which the per-address limits then count. `ppp` parses the header;
//! this module only peeks at the socket until the header is complete and then takes exactly
//! its bytes, so what follows (a frame, a ClientHello, an HTTP request) stays in the socket
//! for the transport to read as if there had been no header.

use std::io::Read;
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ppp::{HeaderResult, PartialResult};
use socket2::Socket;

use super::ConnFd;

/// The largest header taken: v1's limit is 107 bytes, and v2's addresses take 36 more than
/// its 16; the rest is TLVs, of which load balancers send a few dozen bytes.
const MAX_HEADER: usize = 1024;
/// A header split over segments is peeked at again after this long (a peek leaves the
/// socket readable, so waiting for readiness would spin).
const REPEEK: Duration = Duration::from_millis(5);

/// What the header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxied {
    /// A client at this address.
    Client(IpAddr),
    /// The proxy speaking for itself (v2 LOCAL, v1 UNKNOWN: health checks): no client address.
    Local,
}

/// Why a header was not taken; each is a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// Not a PROXY header, or a malformed or oversized one.
    Malformed,
    /// Not complete within the handshake deadline.
    Timeout,
    /// The connection closed or failed first.
    Closed,
}

impl ProxyError {
    pub const ALL: [ProxyError; 3] = [ProxyError::Malformed, ProxyError::Timeout, ProxyError::Closed];

    pub fn name(self) -> &'static str {
        match self {
            ProxyError::Malformed => "malformed",
            ProxyError::Timeout => "timeout",
            ProxyError::Closed => "closed",
        }
    }
}

/// Reads the PROXY header at the start of `fd` by `deadline`.
pub async fn read_header(fd: &ConnFd, deadline: Instant) -> Result<Proxied, ProxyError> {
    let mut buf = vec![0u8; MAX_HEADER];
    loop {
        match compio::time::timeout_at(deadline, fd.read_ready()).await {
            Err(_) => return Err(ProxyError::Timeout),
            Ok(Err(_)) => return Err(ProxyError::Closed),
            Ok(Ok(())) => {}
        }
        let n = match peek(fd, &mut buf) {
            Ok(0) => return Err(ProxyError::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return Err(ProxyError::Closed),
        };
        let seen = buf.get(..n).unwrap_or_default();
        let parsed = HeaderResult::parse(seen);
        if parsed.is_incomplete() {
            if n == buf.len() {
                return Err(ProxyError::Malformed);
            }
            if compio::time::timeout_at(deadline, compio::time::sleep(REPEEK)).await.is_err() {
                return Err(ProxyError::Timeout);
            }
            continue;
        }
        let (len, proxied) = header(&parsed).ok_or(ProxyError::Malformed)?;
        take(fd, &mut buf, len)?;
        return Ok(proxied);
    }
}

/// The header's length and what it says; `None` when it is not a valid header.
fn header(parsed: &HeaderResult<'_>) -> Option<(usize, Proxied)> {
    match parsed {
        HeaderResult::V1(Ok(h)) => {
            let proxied = match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => Proxied::Client(IpAddr::V4(a.source_address)),
                ppp::v1::Addresses::Tcp6(a) => Proxied::Client(IpAddr::V6(a.source_address)),
                ppp::v1::Addresses::Unknown => Proxied::Local,
            };
            Some((h.header.len(), proxied))
        }
        HeaderResult::V2(Ok(h)) => {
            let proxied = match (h.command, h.addresses) {
                (ppp::v2::Command::Local, _) => Proxied::Local,
                (_, ppp::v2::Addresses::IPv4(a)) => Proxied::Client(IpAddr::V4(a.source_address)),
                (_, ppp::v2::Addresses::IPv6(a)) => Proxied::Client(IpAddr::V6(a.source_address)),
                // A PROXY over a unix socket or an unspecified family: nothing to count by.
                (_, ppp::v2::Addresses::Unix(_) | ppp::v2::Addresses::Unspecified) => Proxied::Local,
            };
            Some((h.len(), proxied))
        }
        HeaderResult::V1(Err(_)) | HeaderResult::V2(Err(_)) => None,
    }
}

/// Looks at what has arrived without taking it.
fn peek(fd: &ConnFd, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: `u8` and `MaybeUninit<u8>` have the same layout, and recv only writes
    // initialised bytes into an already initialised buffer.
    let uninit = unsafe { &mut *(std::ptr::from_mut(buf) as *mut [MaybeUninit<u8>]) };
    (&**fd as &Socket).peek(uninit)
}

/// Takes the header's `len` bytes (already peeked, so they are there to read).
fn take(fd: &ConnFd, buf: &mut [u8], len: usize) -> Result<(), ProxyError> {
    let mut left = buf.get_mut(..len).ok_or(ProxyError::Malformed)?;
    while !left.is_empty() {
        match (&**fd as &Socket).read(left) {
            Ok(0) | Err(_) => return Err(ProxyError::Closed),
            Ok(n) => left = left.get_mut(n..).unwrap_or_default(),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Option<(usize, Proxied)> {
        header(&HeaderResult::parse(bytes))
    }

    #[test]
    fn v1_and_v2_give_the_client_address_and_length() {
        let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.1 55555 7000\r\nrest";
        assert_eq!(parse(v1), Some((v1.len() - 4, Proxied::Client("192.0.2.7".parse().unwrap()))));
        let v1_6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 55555 7000\r\n";
        assert_eq!(parse(v1_6), Some((v1_6.len(), Proxied::Client("2001:db8::7".parse().unwrap()))));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Some((15, Proxied::Local)));

        let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        v2.extend([0x21, 0x11, 0, 12, 192, 0, 2, 9, 10, 0, 0, 1, 0xd9, 0x03, 0x1b, 0x58]);
        let len = v2.len();
        v2.extend(b"after");
        assert_eq!(parse(&v2), Some((len, Proxied::Client("192.0.2.9".parse().unwrap()))));
        let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        local.extend([0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local), Some((16, Proxied::Local)));
    }

    #[test]
    fn not_a_header_is_refused_and_a_part_waits() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(parse(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), None);
        assert_eq!(parse(b"PROXY TCP4 999.0.2.7 10.0.0.1 1 2\r\n"), None);
        assert!(HeaderResult::parse(b"PROXY TCP4 192.0.2.7 10.0").is_incomplete());
        assert!(HeaderResult::parse(b"\r\n\r\n\0\r\nQU").is_incomplete());
    }
}
