//! Certificates and rustls configurations for the TLS listener and for QUIC.
//!
//! Both transports share one certificate chain and key, loaded from PEM files; a SIGHUP
//! loads them again and new handshakes use the new pair while established connections keep
//! theirs. The provider is ring (no C toolchain beyond what ring needs, no aws-lc build).

use std::path::Path;
use std::sync::Arc;

use crate::config::pem::{read_chain, read_key};
use crate::config::{TlsSettings, TlsVersions};

/// The only application protocol a ringgate TLS or QUIC listener speaks (ALPN).
pub const ALPN: &[u8] = b"ringgate/1";

/// What a wss listener negotiates: a WebSocket starts as HTTP/1.1, and browsers offer it.
pub const WS_ALPN: &[u8] = b"http/1.1";

/// Most bytes rustls may hold per connection for a socket that is not taking them (its
/// default is 64 KiB). Output beyond it waits in the connection's own buffer, where the
/// session's `max_outbound` limit sees it and closes a slow consumer; rustls's share of a
/// slow TLS client's memory stays at one TLS record.
pub const BUFFER_LIMIT: usize = 16 * 1024;

/// What both transports' handshakes are made from. Cheap to clone (all `Arc`).
#[derive(Clone)]
pub struct Certs {
    /// For the TCP listener.
    pub tcp: Arc<rustls::ServerConfig>,
    /// For the wss listener: the same, with ALPN `http/1.1` (a client offering none is
    /// accepted too).
    pub wss: Arc<rustls::ServerConfig>,
    /// For QUIC: TLS 1.3 with the same chain and key.
    pub quic: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certs").finish_non_exhaustive()
    }
}

impl Certs {
    /// Loads the PEM files and builds both configurations. The error names the file and
    /// what is wrong with it.
    pub fn load(settings: &TlsSettings) -> Result<Certs, String> {
        let chain = read_chain(&settings.cert)?;
        let key = read_key(&settings.key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&'static rustls::SupportedProtocolVersion] = match settings.versions {
            TlsVersions::Tls13 => &[&rustls::version::TLS13],
            TlsVersions::Tls12And13 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let build = |versions: &[&'static rustls::SupportedProtocolVersion], alpn: &[u8]| {
            let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions)
                .map_err(|e| e.to_string())?
                .with_no_client_auth()
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(|e| {
                    format!("{} and {} do not make a usable pair: {e}", show(&settings.cert), show(&settings.key))
                })?;
            config.alpn_protocols = vec![alpn.to_vec()];
            // Long connections reconnect rarely; tickets would only cost memory and CPU.
            config.send_tls13_tickets = 0;
            // No 0-RTT: an Auth must not be replayable.
            config.max_early_data_size = 0;
            Ok::<_, String>(Arc::new(config))
        };
        Ok(Certs {
            tcp: build(versions, ALPN)?,
            wss: build(versions, WS_ALPN)?,
            quic: build(&[&rustls::version::TLS13], ALPN)?,
        })
    }
}

fn show(path: &Path) -> String {
    path.display().to_string()
}

/// A self-signed certificate for `names`, as (cert PEM, key PEM), for trials and tests
/// (`ringgate cert`). Production uses a certificate from the operator's CA.
pub fn self_signed(names: &[String]) -> Result<(String, String), String> {
    let pair = rcgen::generate_simple_self_signed(names.to_vec()).map_err(|e| e.to_string())?;
    Ok((pair.cert.pem(), pair.signing_key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path) -> TlsSettings {
        let (cert, key) = self_signed(&["localhost".into()]).unwrap();
        std::fs::write(dir.join("cert.pem"), cert).unwrap();
        std::fs::write(dir.join("key.pem"), key).unwrap();
        TlsSettings { cert: dir.join("cert.pem"), key: dir.join("key.pem"), versions: TlsVersions::Tls13 }
    }

    #[test]
    fn loads_a_pair_and_names_the_bad_file() {
        let dir = std::env::temp_dir().join(format!("ringgate-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let settings = write_pair(&dir);
        let certs = Certs::load(&settings).unwrap();
        assert_eq!(certs.tcp.alpn_protocols, [ALPN.to_vec()]);
        assert_eq!(certs.wss.alpn_protocols, [WS_ALPN.to_vec()]);
        assert_eq!(certs.quic.max_early_data_size, 0);

        std::fs::write(dir.join("bad.pem"), "not pem").unwrap();
        let bad = TlsSettings { key: dir.join("bad.pem"), ..settings.clone() };
        let err = Certs::load(&bad).unwrap_err();
        assert!(err.contains("bad.pem"), "{err}");
        let missing = TlsSettings { cert: dir.join("missing.pem"), ..settings.clone() };
        assert!(Certs::load(&missing).unwrap_err().contains("missing.pem"));
        // A key that does not belong to the certificate.
        std::fs::create_dir_all(dir.join("other")).unwrap();
        let other = write_pair(&dir.join("other"));
        let mismatched = TlsSettings { key: other.key.clone(), ..settings };
        assert!(Certs::load(&mismatched).unwrap_err().contains("usable pair"), "mismatch accepted");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
