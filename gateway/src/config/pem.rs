//! The TLS certificate chain and key files: read, parsed and checked to make a pair, for
//! config validation (each problem reported with its key path, beside every other error)
//! and for the TLS and QUIC listeners, which load them at start and on every reload.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn show(path: &Path) -> String {
    path.display().to_string()
}

/// The certificates of a PEM file, leaf first.
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", show(path)))?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", show(path)))?;
    if chain.is_empty() {
        return Err(format!("{}: no CERTIFICATE block", show(path)));
    }
    Ok(chain)
}

/// The private key of a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", show(path)))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| format!("{}: no usable private key ({e})", show(path)))
}

/// The key is one rustls can sign with, and the leaf certificate's public key is its own.
pub fn check_pair(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    cert: &Path,
    key_path: &Path,
) -> Result<(), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::sign::CertifiedKey::from_der(chain.to_vec(), key.clone_key(), &provider).map(|_| ()).map_err(|e| {
        format!(
            "{} and {} do not make a pair ({e}); are they swapped or from different certificates?",
            show(cert),
            show(key_path)
        )
    })
}
