//! The load generator's transports: plain TCP, TLS (rustls over a split TCP stream), QUIC
//! (compio-quic, one client endpoint per thread multiplexing all its connections), and
//! WebSocket over TCP or TLS (the upgrade and framing in [`crate::ws`]).
//!
//! compio's reads own their buffer and are not cancel-safe (a read cancelled after it
//! completed loses its bytes), so every connection reads in a task of its own that is never
//! cancelled, and writes on the other half. TLS therefore drives rustls directly: the
//! reading task decrypts, the writer encrypts, both on one shared rustls state.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use compio::BufResult;
use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::{TcpSocket, TcpStream};

/// The ALPN both ringgate transports speak.
pub const ALPN: &str = "ringgate/1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    Tcp,
    Tls,
    Quic,
    /// WebSocket over TCP (`listen.ws`).
    Ws,
    /// WebSocket over TLS (`listen.wss`).
    Wss,
}

impl TransportKind {
    /// Whether each connection holds a file descriptor in the load generator (and in the
    /// gateway): QUIC connections share one UDP socket.
    pub fn uses_fd_per_connection(self) -> bool {
        !matches!(self, TransportKind::Quic)
    }

    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Tls => "tls",
            TransportKind::Quic => "quic",
            TransportKind::Ws => "ws",
            TransportKind::Wss => "wss",
        }
    }
}

/// Opens connections of one kind; one per load thread.
pub enum Connector {
    Tcp,
    Tls(Arc<rustls::ClientConfig>),
    Quic(compio::quic::Endpoint),
    Ws,
    Wss(Arc<rustls::ClientConfig>),
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Connector::Tcp => "Tcp",
            Connector::Tls(_) => "Tls",
            Connector::Quic(_) => "Quic",
            Connector::Ws => "Ws",
            Connector::Wss(_) => "Wss",
        })
    }
}

/// A certificate verifier that accepts any server certificate: the load generator measures
/// the gateway, it does not authenticate it. Pass `--ca` to verify instead.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A rustls client configuration with ALPN `ringgate/1`, verifying against `ca` (PEM) or
/// accepting any certificate.
pub fn client_tls(ca: Option<&std::path::Path>) -> std::io::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(std::io::Error::other)?;
    let mut config = match ca {
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls::pki_types::CertificateDer::pem_file_iter(path).map_err(std::io::Error::other)? {
                roots.add(cert.map_err(std::io::Error::other)?).map_err(std::io::Error::other)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyServer(provider))).with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![ALPN.as_bytes().to_vec()];
    Ok(config)
}

impl Connector {
    /// A connector for this thread. QUIC binds one UDP socket with a receive buffer large
    /// enough for bursts of handshake flights (the kernel default drops them).
    pub fn new(kind: TransportKind, ca: Option<&std::path::Path>) -> std::io::Result<Connector> {
        Ok(match kind {
            TransportKind::Tcp => Connector::Tcp,
            TransportKind::Tls => Connector::Tls(Arc::new(client_tls(ca)?)),
            TransportKind::Ws => Connector::Ws,
            TransportKind::Wss => {
                // A browser's wss offers HTTP/1.1 over ALPN, not ringgate/1.
                let mut config = client_tls(ca)?;
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                Connector::Wss(Arc::new(config))
            }
            TransportKind::Quic => {
                let crypto = compio::quic::crypto::rustls::QuicClientConfig::try_from(client_tls(ca)?)
                    .map_err(std::io::Error::other)?;
                let mut client = compio::quic::ClientConfig::new(Arc::new(crypto));
                let mut transport = compio::quic::TransportConfig::default();
                transport
                    .max_concurrent_uni_streams(0u32.into())
                    .max_concurrent_bidi_streams(0u32.into())
                    .keep_alive_interval(None)
                    .datagram_receive_buffer_size(None)
                    .mtu_discovery_config(None);
                client.transport_config(Arc::new(transport));
                let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
                let _ = socket.set_recv_buffer_size(4 << 20);
                let _ = socket.set_send_buffer_size(4 << 20);
                socket.set_nonblocking(true)?;
                socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
                let socket = compio::net::UdpSocket::from_std(socket.into())?;
                let endpoint =
                    compio::quic::Endpoint::new(socket, compio::quic::EndpointConfig::default(), None, Some(client))?;
                Connector::Quic(endpoint)
            }
        })
    }

    /// Ends this thread's connections for good. For QUIC, closes the endpoint and waits (at
    /// most 2 s) until the CONNECTION_CLOSE of every connection has left, so the gateway sees
    /// the closes instead of waiting out its idle timeout (and retransmitting to a client
    /// that is gone, which inflates its memory while it drains).
    pub async fn finish(self) {
        if let Connector::Quic(endpoint) = self {
            endpoint.close(0u32.into(), b"done");
            let _ = compio::time::timeout(std::time::Duration::from_secs(2), endpoint.shutdown()).await;
        }
    }

    /// Connects to `addr` (from `source` when given, for TCP, TLS and WebSocket) and
    /// completes the TLS, QUIC or WebSocket handshake. Returns the two directions
    /// separately (a read is never cancelled, so it runs in a task of its own) and the
    /// layers both share.
    pub async fn connect(&self, addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<Opened> {
        let tcp = |reader, writer, tls| Opened { reader, writer, tls, ws: None, early: Vec::new() };
        match self {
            Connector::Tcp => {
                let s = tcp_connect(addr, source).await?;
                let _ = s.set_nodelay(true);
                let (r, w) = s.into_split();
                Ok(tcp(ReadHalf::Tcp(r), WriteHalf::Tcp(w), None))
            }
            Connector::Tls(config) => {
                let mut s = tcp_connect(addr, source).await?;
                let _ = s.set_nodelay(true);
                let tls = tls_connect(&mut s, config).await?;
                let (r, w) = s.into_split();
                Ok(tcp(ReadHalf::Tcp(r), WriteHalf::Tcp(w), Some(tls)))
            }
            Connector::Quic(endpoint) => {
                let conn = endpoint
                    .connect(addr, "localhost", None)
                    .map_err(std::io::Error::other)?
                    .await
                    .map_err(std::io::Error::other)?;
                let (send, recv) = conn.open_bi().map_err(std::io::Error::other)?;
                Ok(tcp(ReadHalf::Quic(recv), WriteHalf::Quic(send, conn), None))
            }
            Connector::Ws | Connector::Wss(_) => {
                let mut s = tcp_connect(addr, source).await?;
                let _ = s.set_nodelay(true);
                let mut tls = match self {
                    Connector::Wss(config) => Some(tls_connect(&mut s, config).await?),
                    _ => None,
                };
                let early = upgrade(&mut s, tls.as_mut(), &addr.to_string()).await?;
                let seed = (addr.port() as u32) << 16 ^ source.map_or(0, ip_bits);
                let (r, w) = s.into_split();
                Ok(Opened {
                    reader: ReadHalf::Tcp(r),
                    writer: WriteHalf::Tcp(w),
                    tls,
                    ws: Some(crate::ws::Framing::new(seed)),
                    early,
                })
            }
        }
    }
}

/// A connection just opened: its two directions and the layers between the socket and the
/// client session (TLS state, WebSocket framing), with any plain bytes that arrived behind
/// the WebSocket upgrade's answer.
#[allow(missing_debug_implementations)]
pub struct Opened {
    pub reader: ReadHalf,
    pub writer: WriteHalf,
    pub tls: Option<rustls::ClientConnection>,
    pub ws: Option<crate::ws::Framing>,
    pub early: Vec<u8>,
}

fn ip_bits(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => v6.octets().iter().fold(0, |h, &b| h.rotate_left(5) ^ u32::from(b)),
    }
}

async fn tls_connect(
    s: &mut TcpStream,
    config: &Arc<rustls::ClientConfig>,
) -> std::io::Result<rustls::ClientConnection> {
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    let mut tls = rustls::ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
    handshake(s, &mut tls).await?;
    Ok(tls)
}

/// Sends the WebSocket upgrade (through `tls` when given) and reads its answer; returns
/// the plain bytes that followed it.
async fn upgrade(
    stream: &mut TcpStream,
    mut tls: Option<&mut rustls::ClientConnection>,
    host: &str,
) -> std::io::Result<Vec<u8>> {
    let request = crate::ws::request(host);
    let out = match tls.as_deref_mut() {
        Some(tls) => {
            std::io::Write::write_all(&mut tls.writer(), &request)?;
            let mut out = Vec::new();
            while tls.wants_write() {
                tls.write_tls(&mut out)?;
            }
            out
        }
        None => request,
    };
    stream.write_all(out).await.0?;
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        if let Some(n) = crate::ws::response(&answer)? {
            return Ok(answer.split_off(n));
        }
        let BufResult(n, b) = stream.read(buf).await;
        buf = b;
        let n = n?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let data = buf.get(..n).unwrap_or_default();
        match tls.as_deref_mut() {
            Some(tls) => {
                tls.read_tls(&mut &*data)?;
                tls.process_new_packets().map_err(std::io::Error::other)?;
                let _ = std::io::Read::read_to_end(&mut tls.reader(), &mut answer);
            }
            None => answer.extend_from_slice(data),
        }
    }
}

/// Drives a rustls client handshake over `stream` (no read is ever cancelled here).
async fn handshake(stream: &mut TcpStream, tls: &mut rustls::ClientConnection) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    while tls.is_handshaking() {
        if tls.wants_write() {
            let mut out = Vec::new();
            while tls.wants_write() {
                tls.write_tls(&mut out)?;
            }
            stream.write_all(out).await.0?;
            continue;
        }
        let BufResult(n, b) = stream.read(buf).await;
        buf = b;
        let n = n?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        tls.read_tls(&mut buf.get(..n).unwrap_or_default())?;
        if let Err(e) = tls.process_new_packets() {
            // Send the alert, then fail.
            let mut out = Vec::new();
            while tls.wants_write() && tls.write_tls(&mut out).is_ok() {}
            let _ = stream.write_all(out).await;
            return Err(std::io::Error::other(e));
        }
    }
    Ok(())
}

/// Connects from `source` (any port) when given, so many 127.x.y.z sources multiply the
/// ephemeral ports available towards one gateway address.
async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(ip) = source else { return TcpStream::connect(addr).await };
    let socket = if ip.is_ipv4() { TcpSocket::new_v4().await? } else { TcpSocket::new_v6().await? };
    socket.bind(SocketAddr::new(ip, 0)).await?;
    socket.connect(addr).await
}

/// The receiving direction of a connection.
#[allow(missing_debug_implementations)]
pub enum ReadHalf {
    Tcp(TcpStream),
    Quic(compio::quic::RecvStream),
}

impl ReadHalf {
    pub async fn read(&mut self, buf: Vec<u8>) -> BufResult<usize, Vec<u8>> {
        match self {
            ReadHalf::Tcp(s) => s.read(buf).await,
            ReadHalf::Quic(r) => r.read(buf).await,
        }
    }
}

/// The sending direction of a connection.
#[allow(missing_debug_implementations)]
pub enum WriteHalf {
    Tcp(TcpStream),
    Quic(compio::quic::SendStream, compio::quic::Connection),
}

impl WriteHalf {
    pub async fn write_all(&mut self, buf: Vec<u8>) -> std::io::Result<()> {
        match self {
            WriteHalf::Tcp(s) => s.write_all(buf).await.0,
            WriteHalf::Quic(send, _) => send.write_all(buf).await.0,
        }
    }

    /// Ends the connection at once (a storm's dropped client, or the end of a run).
    pub fn abort(&mut self) {
        match self {
            WriteHalf::Tcp(s) => {
                let _ = s.shutdown_write_now();
            }
            WriteHalf::Quic(_, conn) => conn.close(0u32.into(), b""),
        }
    }
}

trait ShutdownNow {
    fn shutdown_write_now(&self) -> std::io::Result<()>;
}

impl ShutdownNow for TcpStream {
    fn shutdown_write_now(&self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: shutdown(2) on a socket this stream owns.
        let rc = unsafe { libc::shutdown(self.as_raw_fd(), libc::SHUT_RDWR) };
        if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    }
}
