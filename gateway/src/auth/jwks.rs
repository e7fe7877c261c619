//! `auth.jwks_url`: the identity provider's public keys (RFC 7517 JSON Web Key Set), fetched
//! on the control plane at start and every `auth.jwks_refresh`, sooner after a failure. A
//! fetch that fails, or answers no usable key, keeps the last good set. Parsing and key
//! building are `jsonwebtoken`'s (`JwkSet`, `DecodingKey::from_jwk`); HTTP is hyper's, TLS
//! rustls' with the system's roots.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::token::{JwksKeys, JwksSource, Key, KeySet};

/// Largest JWKS document read.
const MAX_BODY: usize = 1 << 20;
/// One fetch, connect to last byte.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Retry delay after a failure (capped by the refresh interval), and the least time between
/// two fetches a token with an unknown key id asks for.
const RETRY: Duration = Duration::from_secs(10);

/// Fetches `source` into `keys` until the runtime stops.
pub async fn refresh_loop(source: JwksSource, keys: JwksKeys) {
    let fetched = metrics::counter!("ringgate_jwks_refreshes_total", "result" => "ok");
    let failed = metrics::counter!("ringgate_jwks_refreshes_total", "result" => "error");
    let held = metrics::gauge!("ringgate_jwks_keys");
    let mut failures = 0u64;
    loop {
        let outcome = match tokio::time::timeout(TIMEOUT, fetch(&source.url)).await {
            Ok(Ok(body)) => parse(&body),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {} s", TIMEOUT.as_secs())),
        };
        let wait = match outcome {
            Ok(set) => {
                fetched.increment(1);
                held.set(set.len() as f64);
                if failures > 0 || !keys.loaded() {
                    tracing::info!(url = %source.url, keys = set.len(), "jwks loaded");
                }
                failures = 0;
                keys.set(set);
                source.refresh
            }
            Err(error) => {
                failed.increment(1);
                failures += 1;
                // The first failure, then one in ten: a dead provider must not flood the log.
                if failures % 10 == 1 {
                    tracing::warn!(url = %source.url, error, failures, "jwks fetch failed; the last good keys stay");
                }
                RETRY.min(source.refresh)
            }
        };
        // Until the next refresh, or earlier when a login named a key id the set lacks (at
        // most one fetch per RETRY for those).
        let next = tokio::time::Instant::now() + wait;
        tokio::time::sleep(RETRY.min(wait)).await;
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = keys.wanted.notified() => {}
        }
    }
}

/// GETs `url` (http or https) and returns its body when the status is 200.
async fn fetch(url: &str) -> Result<Bytes, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("not an http:// or https:// URL".into()),
    };
    let host = uri.host().ok_or("the URL has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("connect {host}:{port}: {e}"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, uri.authority().map_or(host.clone(), |a| a.to_string()))
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    if https {
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(client_tls()?))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}: {e}"))?;
        send(TokioIo::new(tls), request).await
    } else {
        send(TokioIo::new(tcp), request).await
    }
}

async fn send<T>(io: T, request: hyper::Request<Empty<Bytes>>) -> Result<Bytes, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    if response.status() != hyper::StatusCode::OK {
        return Err(format!("answered {}", response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_BODY).collect().await.map_err(|e| format!("body: {e}"))?;
    Ok(body.to_bytes())
}

/// rustls client config with the system's trust roots (/etc/ssl/certs).
fn client_tls() -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err("no trusted root certificates found on this system".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The signing keys of a JWKS: those with a `kid`, meant for signatures, of an algorithm the
/// gateway verifies (RS256, ES256; others are skipped). No usable key is an error.
pub fn parse(body: &[u8]) -> Result<KeySet, String> {
    let set: JwkSet = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = KeySet::new();
    for jwk in &set.keys {
        let Some(kid) = &jwk.common.key_id else { continue };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let alg = match (&jwk.common.key_algorithm, &jwk.algorithm) {
            (Some(alg), _) => match alg.to_string().parse::<Algorithm>() {
                Ok(alg @ (Algorithm::RS256 | Algorithm::ES256)) => alg,
                _ => continue,
            },
            (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            (None, AlgorithmParameters::EllipticCurve(ec)) if ec.curve == EllipticCurve::P256 => Algorithm::ES256,
            (None, _) => continue,
        };
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => {
                keys.insert(kid.clone(), Key { alg, key });
            }
            Err(e) => tracing::debug!(kid, error = %e, "jwks key skipped"),
        }
    }
    if keys.is_empty() {
        return Err("the JWKS has no RS256 or ES256 signing key with a kid".into());
    }
    Ok(keys)
}
