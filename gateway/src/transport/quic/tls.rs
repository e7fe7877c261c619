//! The TLS side of a QUIC connection, sized for connections that idle for hours.
//!
//! quinn-proto's own rustls session keeps rustls's whole connection state for the life of
//! the connection (about 3.5 KB per connection here: the state machine, its handshake
//! buffers and a TLS record encrypter and decrypter that QUIC never uses) and builds the
//! next key phase's AES-GCM keys in advance (2 x 576 B). A server needs none of that once
//! the handshake is over: QUIC has no post-handshake TLS messages from a client, and a key
//! update needs only the traffic secrets. So this session
//!
//! - drives rustls exactly like quinn-proto's (`quinn_proto::crypto::rustls`) until the
//!   handshake is complete and rustls has nothing left to write, then drops rustls's state
//!   and keeps the negotiated ALPN and server name (for `handshake_data`) and the secrets;
//! - hands quinn-proto the next key phase's keys as [`NextKey`]s, which hold the secrets and
//!   build the AES-GCM key on first use, i.e. at the peer's first key update.
//!
//! Exporting keying material and the peer's certificates are not offered; ringgate uses
//! neither (clients authenticate with a token inside the stream).

use std::any::Any;
use std::io;
use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use quinn_proto::crypto::rustls::{HandshakeData, QuicServerConfig};
use quinn_proto::crypto::{self, CryptoError, ExportKeyingMaterialError, KeyPair, Keys, UnsupportedVersion};
use quinn_proto::transport_parameters::TransportParameters;
use quinn_proto::{ConnectionId, Side, TransportError, TransportErrorCode};
use rustls::quic::{KeyChange, Secrets, Suite, Version};

/// The crypto configuration of the QUIC listener: quinn-proto's for Initial keys and Retry
/// tags, [`SlimSession`] for every connection.
#[allow(missing_debug_implementations)]
pub struct SlimServerConfig {
    tls: Arc<rustls::ServerConfig>,
    quinn: QuicServerConfig,
    initial: Suite,
}

impl SlimServerConfig {
    pub fn new(tls: Arc<rustls::ServerConfig>) -> io::Result<SlimServerConfig> {
        let initial = tls
            .crypto_provider()
            .cipher_suites
            .iter()
            .find_map(|cs| match (cs.suite(), cs.tls13()) {
                (rustls::CipherSuite::TLS13_AES_128_GCM_SHA256, Some(suite)) => suite.quic_suite(),
                _ => None,
            })
            .ok_or_else(|| io::Error::other("QUIC needs TLS13_AES_128_GCM_SHA256 for Initial packets"))?;
        let quinn =
            QuicServerConfig::try_from(tls.clone()).map_err(|e| io::Error::other(format!("QUIC TLS config: {e}")))?;
        Ok(SlimServerConfig { tls, quinn, initial })
    }
}

impl crypto::ServerConfig for SlimServerConfig {
    fn initial_keys(&self, version: u32, dst_cid: &ConnectionId) -> Result<Keys, UnsupportedVersion> {
        self.quinn.initial_keys(version, dst_cid)
    }

    fn retry_tag(&self, version: u32, orig_dst_cid: &ConnectionId, packet: &[u8]) -> [u8; 16] {
        self.quinn.retry_tag(version, orig_dst_cid, packet)
    }

    fn start_session(self: Arc<Self>, version: u32, params: &TransportParameters) -> Box<dyn crypto::Session> {
        let mut encoded = Vec::new();
        params.write(&mut encoded);
        // quinn-proto calls this only for versions `initial_keys` accepted, so both succeed.
        let version = interpret_version(version).unwrap_or(Version::V1);
        let tls = rustls::quic::ServerConnection::new(self.tls.clone(), version, encoded).ok().map(Box::new);
        Box::new(SlimSession {
            tls,
            version,
            initial: self.initial,
            got_handshake_data: false,
            negotiated: None,
            next: None,
        })
    }
}

/// What `handshake_data` reports once rustls is gone.
struct Negotiated {
    alpn: Option<Vec<u8>>,
    server_name: Option<String>,
}

/// A server-side QUIC TLS session that lets go of rustls after the handshake.
#[allow(missing_debug_implementations)]
pub struct SlimSession {
    /// rustls's state, until the handshake is complete and flushed. `None` from the start
    /// only if rustls refused the configuration, which fails the handshake.
    tls: Option<Box<rustls::quic::ServerConnection>>,
    version: Version,
    initial: Suite,
    got_handshake_data: bool,
    negotiated: Option<Box<Negotiated>>,
    /// Secrets of the next key phase, from the moment 1-RTT keys exist.
    next: Option<Secrets>,
}

impl SlimSession {
    fn negotiated(&self) -> Option<Negotiated> {
        match (&self.tls, &self.negotiated) {
            (Some(tls), _) => Some(Negotiated {
                alpn: tls.alpn_protocol().map(<[u8]>::to_vec),
                server_name: tls.server_name().map(str::to_owned),
            }),
            (None, Some(n)) => Some(Negotiated { alpn: n.alpn.clone(), server_name: n.server_name.clone() }),
            (None, None) => None,
        }
    }
}

impl crypto::Session for SlimSession {
    fn initial_keys(&self, dst_cid: &ConnectionId, side: Side) -> Keys {
        let side = match side {
            Side::Client => rustls::Side::Client,
            Side::Server => rustls::Side::Server,
        };
        let keys = self.initial.keys(dst_cid, side, self.version);
        Keys {
            header: KeyPair { local: Box::new(keys.local.header), remote: Box::new(keys.remote.header) },
            packet: KeyPair { local: Box::new(keys.local.packet), remote: Box::new(keys.remote.packet) },
        }
    }

    fn handshake_data(&self) -> Option<Box<dyn Any>> {
        if !self.got_handshake_data {
            return None;
        }
        let n = self.negotiated()?;
        Some(Box::new(HandshakeData { protocol: n.alpn, server_name: n.server_name }))
    }

    fn peer_identity(&self) -> Option<Box<dyn Any>> {
        // No client certificates: clients authenticate with a token inside the stream.
        None
    }

    fn early_crypto(&self) -> Option<(Box<dyn crypto::HeaderKey>, Box<dyn crypto::PacketKey>)> {
        // 0-RTT is off (max_early_data_size = 0): an Auth must not be replayable.
        let keys = self.tls.as_ref()?.zero_rtt_keys()?;
        Some((Box::new(keys.header), Box::new(keys.packet)))
    }

    fn early_data_accepted(&self) -> Option<bool> {
        None
    }

    fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.is_handshaking())
    }

    fn read_handshake(&mut self, buf: &[u8]) -> Result<bool, TransportError> {
        let Some(tls) = self.tls.as_mut() else {
            if buf.is_empty() {
                return Ok(false);
            }
            // RFC 9001 4.1.3: no post-handshake TLS messages from a client.
            return Err(TransportError {
                code: TransportErrorCode::PROTOCOL_VIOLATION,
                frame: None,
                reason: "TLS data after the handshake".into(),
            });
        };
        if let Err(e) = tls.read_hs(buf) {
            let code = match tls.alert() {
                Some(alert) => TransportErrorCode::crypto(alert.into()),
                None => TransportErrorCode::PROTOCOL_VIOLATION,
            };
            return Err(TransportError { code, frame: None, reason: format!("TLS error: {e}") });
        }
        if !self.got_handshake_data
            && (tls.alpn_protocol().is_some() || tls.server_name().is_some() || !tls.is_handshaking())
        {
            // As in quinn-proto: ClientHello has been read (rustls has no explicit signal).
            self.got_handshake_data = true;
            return Ok(true);
        }
        Ok(false)
    }

    fn transport_parameters(&self) -> Result<Option<TransportParameters>, TransportError> {
        let Some(mut buf) = self.tls.as_ref().and_then(|tls| tls.quic_transport_parameters()) else {
            return Ok(None);
        };
        TransportParameters::read(Side::Server, &mut buf).map(Some).map_err(Into::into)
    }

    fn write_handshake(&mut self, buf: &mut Vec<u8>) -> Option<Keys> {
        let tls = self.tls.as_mut()?;
        let before = buf.len();
        let change = tls.write_hs(buf);
        let done = change.is_none() && buf.len() == before && !tls.is_handshaking() && self.next.is_some();
        if done {
            // Handshake complete and nothing left to send: keep only what later calls need.
            self.negotiated = self.negotiated().map(Box::new);
            self.tls = None;
            return None;
        }
        let keys = match change? {
            KeyChange::Handshake { keys } => keys,
            KeyChange::OneRtt { keys, next } => {
                self.next = Some(next);
                keys
            }
        };
        Some(Keys {
            header: KeyPair { local: Box::new(keys.local.header), remote: Box::new(keys.remote.header) },
            packet: KeyPair { local: Box::new(keys.local.packet), remote: Box::new(keys.remote.packet) },
        })
    }

    fn next_1rtt_keys(&mut self) -> Option<KeyPair<Box<dyn crypto::PacketKey>>> {
        let secrets = self.next.as_mut()?;
        // Both halves derive from the secrets as they are now; then the secrets step on.
        let now = secrets.clone();
        // rustls advances the secrets only as a side effect of building a key set: build
        // one and drop it (once per key update, which is rare).
        drop(secrets.next_packet_keys());
        Some(KeyPair { local: Box::new(NextKey::new(now.clone(), true)), remote: Box::new(NextKey::new(now, false)) })
    }

    fn is_valid_retry(&self, _orig_dst_cid: &ConnectionId, _header: &[u8], _payload: &[u8]) -> bool {
        // Retry packets are for clients to check.
        false
    }

    fn export_keying_material(
        &self,
        _output: &mut [u8],
        _label: &[u8],
        _context: &[u8],
    ) -> Result<(), ExportKeyingMaterialError> {
        // Not offered (rustls's QUIC server connection does not expose it, and ringgate has
        // no use for it).
        Err(ExportKeyingMaterialError)
    }
}

/// One direction's packet key for the next key phase, built on first use.
struct NextKey {
    secrets: Secrets,
    local: bool,
    key: OnceLock<Box<dyn rustls::quic::PacketKey>>,
}

impl NextKey {
    fn new(secrets: Secrets, local: bool) -> NextKey {
        NextKey { secrets, local, key: OnceLock::new() }
    }

    // quinn-proto implements its key trait for the box, so the box is what is lent.
    #[allow(clippy::borrowed_box)]
    fn key(&self) -> &Box<dyn rustls::quic::PacketKey> {
        self.key.get_or_init(|| {
            let set = self.secrets.clone().next_packet_keys();
            if self.local { set.local } else { set.remote }
        })
    }
}

impl crypto::PacketKey for NextKey {
    fn encrypt(&self, packet: u64, buf: &mut [u8], header_len: usize) {
        crypto::PacketKey::encrypt(self.key(), packet, buf, header_len)
    }

    fn decrypt(&self, packet: u64, header: &[u8], payload: &mut BytesMut) -> Result<(), CryptoError> {
        crypto::PacketKey::decrypt(self.key(), packet, header, payload)
    }

    fn tag_len(&self) -> usize {
        crypto::PacketKey::tag_len(self.key())
    }

    fn confidentiality_limit(&self) -> u64 {
        crypto::PacketKey::confidentiality_limit(self.key())
    }

    fn integrity_limit(&self) -> u64 {
        crypto::PacketKey::integrity_limit(self.key())
    }
}

fn interpret_version(version: u32) -> Option<Version> {
    match version {
        0xff00_001d..=0xff00_0020 => Some(Version::V1Draft),
        0x0000_0001 | 0xff00_0021..=0xff00_0022 => Some(Version::V1),
        _ => None,
    }
}
