//! Listening sockets: one per worker, all bound to the same address with SO_REUSEPORT so the
//! kernel spreads new connections over the workers without a shared accept lock.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `count` listeners to `addr` in one SO_REUSEPORT group. With port 0 the first
/// socket picks the port and the rest join it, so tests can bind an ephemeral port.
pub fn bind_group(addr: SocketAddr, count: usize, backlog: i32) -> io::Result<Vec<TcpListener>> {
    ensure_free(addr, Type::STREAM)?;
    let mut listeners = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(false)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(backlog)?;
        let listener: TcpListener = socket.into();
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Fails when another process already listens on `addr`. SO_REUSEPORT would otherwise let a
/// second node (or a forgotten one) join this node's group silently, and the kernel would
/// split new clients between them. A socket without SO_REUSEPORT cannot bind a port a
/// reuseport group holds, which is the probe. Port 0 is always free.
pub fn ensure_free(addr: SocketAddr, kind: Type) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), kind, None)?;
    // SO_REUSEADDR: connections of a previous run in TIME_WAIT must not block a restart;
    // a listening socket still conflicts.
    probe.set_reuse_address(true)?;
    if addr.is_ipv6() {
        probe.set_only_v6(false)?;
    }
    probe.bind(&addr.into()).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(e.kind(), format!("{addr} is already in use (another ringgate node on this port?)"))
        } else {
            e
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_group_on_a_taken_port_is_refused() {
        let first = bind_group("127.0.0.1:0".parse().unwrap(), 2, 16).unwrap();
        let addr = first[0].local_addr().unwrap();
        let err = bind_group(addr, 2, 16).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains("already in use"), "{err}");
        // A connection left in TIME_WAIT by the first node does not block the next one.
        let client = std::net::TcpStream::connect(addr).unwrap();
        let server_side = (0..500)
            .find_map(|_| {
                let got = first.iter().find_map(|l| l.accept().ok());
                if got.is_none() {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                got
            })
            .expect("accepted")
            .0;
        drop(server_side);
        drop(client);
        drop(first);
        assert!(bind_group(addr, 2, 16).is_ok(), "free again once the first node is gone");
    }
}
