//! Tokens as identity providers issue them: RS256 and ES256 with public keys from PEM files
//! and from a JWKS URL (served by Python's http.server; rotated, then gone: the last good set
//! stays), and the rules every token meets: the signature before anything else, the key's
//! algorithm only, `nbf`, a lifetime cap, no empty ids, terse AuthFail texts. Keys are made in
//! the test (rcgen for P-256, openssl for RSA).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ringgate::Config;
use ringgate_codec::ReasonCode;
use ringgate_codec::session::{ClientConfig, ClientEvent};
use serde_json::json;
use support::*;

const T: Duration = Duration::from_secs(5);

/// A P-256 key: its private PEM (to sign), public PEM and JWK coordinates.
struct EcKey {
    private: String,
    public: String,
    x: String,
    y: String,
}

fn ec_key() -> EcKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = pair.public_key_raw().to_vec();
    assert_eq!((raw.len(), raw[0]), (65, 4), "an uncompressed point");
    EcKey {
        private: pair.serialize_pem(),
        public: pair.public_key_pem(),
        x: B64.encode(&raw[1..33]),
        y: B64.encode(&raw[33..]),
    }
}

/// A 2048-bit RSA key made by openssl: private PEM, public PEM, and the JWK modulus.
struct RsaKey {
    private: String,
    public: String,
    n: String,
}

fn rsa_key(dir: &Path) -> RsaKey {
    let key = dir.join("rsa.pem");
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key.to_str().unwrap()]);
    let public = run(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
    let modulus = run(&["rsa", "-in", key.to_str().unwrap(), "-noout", "-modulus"]);
    let hex = modulus.trim().strip_prefix("Modulus=").unwrap();
    let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    RsaKey { private: std::fs::read_to_string(&key).unwrap(), public, n: B64.encode(bytes) }
}

fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: serde_json::Value) -> String {
    let header = Header { kid: Some(kid.into()), ..Header::new(alg) };
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn claims(user: &str) -> serde_json::Value {
    json!({"sub": user, "dev": "phone", "plat": "ios", "exp": unix_now() + 600})
}

/// Logs in with `token`: Ok, or the AuthFail's reason and text.
fn login(addr: SocketAddr, token: String) -> Result<(), (ReasonCode, String)> {
    let mut c = TestClient::connect_with(addr, ClientConfig::new(token, "", ""));
    match c.next_event(T) {
        Some(ClientEvent::Authenticated(_)) => Ok(()),
        Some(ClientEvent::AuthFailed(f)) => Err((f.reason, f.message)),
        other => panic!("{other:?}"),
    }
}

fn node(auth: &str) -> ringgate::Gateway {
    let text = format!("[node]\nid = \"tokens\"\n[auth]\n{auth}\n");
    let mut config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    config.io_driver = ringgate::config::IoDriver::Auto;
    config.listen_tcp = "127.0.0.1:0".parse().unwrap();
    config.admission = support::config(ringgate::config::IoDriver::Auto).admission;
    start_with(config, 1)
}

#[test]
fn rs256_and_es256_public_keys_from_pem_files() {
    let dir = tempdir::Dir::new();
    let (rsa, ec) = (rsa_key(dir.path()), ec_key());
    std::fs::write(dir.path().join("rsa.pub.pem"), &rsa.public).unwrap();
    std::fs::write(dir.path().join("ec.pub.pem"), &ec.public).unwrap();
    let gw = node(&format!(
        "[auth.public_keys]\nidp-rsa = {{ alg = \"RS256\", file = \"{}\" }}\nidp-ec = {{ alg = \"ES256\", file = \"{}\" }}\n",
        dir.path().join("rsa.pub.pem").display(),
        dir.path().join("ec.pub.pem").display()
    ));
    let rsa_signer = EncodingKey::from_rsa_pem(rsa.private.as_bytes()).unwrap();
    let ec_signer = EncodingKey::from_ec_pem(ec.private.as_bytes()).unwrap();
    assert!(login(gw.local_addr(), sign(Algorithm::RS256, "idp-rsa", &rsa_signer, claims("ann"))).is_ok());
    assert!(login(gw.local_addr(), sign(Algorithm::ES256, "idp-ec", &ec_signer, claims("bob"))).is_ok());
    // A key used under another kid's name, or another algorithm than its key's.
    let swapped = sign(Algorithm::ES256, "idp-rsa", &ec_signer, claims("eve"));
    assert_eq!(login(gw.local_addr(), swapped), Err((ReasonCode::AUTH_INVALID, "token not valid".into())));
    // Algorithm confusion: HS256 "signed" with the RSA public key as the secret.
    let confused = sign(Algorithm::HS256, "idp-rsa", &EncodingKey::from_secret(rsa.public.as_bytes()), claims("eve"));
    assert_eq!(login(gw.local_addr(), confused), Err((ReasonCode::AUTH_INVALID, "token not valid".into())));
}

#[test]
fn every_token_meets_the_same_rules() {
    let gw = node(&format!(
        "max_token_lifetime = \"1d\"\nmax_clock_skew = \"5s\"\n[auth.keys]\n{KID} = \"{}\"\n",
        String::from_utf8_lossy(SECRET)
    ));
    let key = EncodingKey::from_secret(SECRET);
    let hs = |claims: serde_json::Value| sign(Algorithm::HS256, KID, &key, claims);
    let addr = gw.local_addr();
    let now = unix_now();
    assert!(login(addr, hs(claims("ann"))).is_ok());
    // Expired: the reason, and no server clock in the text.
    let expired = login(addr, hs(json!({"sub": "ann", "dev": "d", "exp": now - 60}))).unwrap_err();
    assert_eq!(expired, (ReasonCode::AUTH_EXPIRED, "token expired".into()));
    // Not before: refused until nbf (within the skew it passes).
    let later = login(addr, hs(json!({"sub": "ann", "dev": "d", "exp": now + 600, "nbf": now + 300})));
    assert_eq!(later, Err((ReasonCode::AUTH_INVALID, "token not valid yet".into())));
    assert!(login(addr, hs(json!({"sub": "ann", "dev": "d", "exp": now + 600, "nbf": now + 2}))).is_ok());
    // A lifetime over auth.max_token_lifetime; exp = u64::MAX would never expire.
    for exp in [now + 2 * 86_400, u64::MAX] {
        let long = login(addr, hs(json!({"sub": "ann", "dev": "d", "exp": exp})));
        assert_eq!(long, Err((ReasonCode::AUTH_INVALID, "token lifetime too long".into())), "{exp}");
    }
    // No exp at all.
    assert_eq!(login(addr, hs(json!({"sub": "ann", "dev": "d"}))).unwrap_err().0, ReasonCode::AUTH_INVALID);
    // Empty ids.
    for (sub, dev) in [("", "d"), ("ann", "")] {
        let empty = login(addr, hs(json!({"sub": sub, "dev": dev, "exp": now + 600})));
        assert_eq!(empty, Err((ReasonCode::AUTH_INVALID, "token not valid".into())), "{sub:?} {dev:?}");
    }
    // An unknown kid and a forged signature get the same answer: key ids cannot be probed.
    let unknown = sign(Algorithm::HS256, "k-unknown", &key, claims("eve"));
    let forged = sign(Algorithm::HS256, KID, &EncodingKey::from_secret(b"guessed-secret-0123456"), claims("eve"));
    assert_eq!(login(addr, unknown), login(addr, forged));
}

#[test]
fn issuer_and_audience_are_required_when_configured() {
    let gw = node(&format!(
        "issuer = \"https://id.example\"\naudience = \"ringgate\"\n[auth.keys]\n{KID} = \"{}\"\n",
        String::from_utf8_lossy(SECRET)
    ));
    let key = EncodingKey::from_secret(SECRET);
    let with = |extra: serde_json::Value| {
        let mut claims = claims("ann");
        claims.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        login(gw.local_addr(), sign(Algorithm::HS256, KID, &key, claims))
    };
    assert!(with(json!({"iss": "https://id.example", "aud": "ringgate"})).is_ok());
    assert!(with(json!({"iss": "https://id.example", "aud": ["other", "ringgate"]})).is_ok());
    for refused in [
        json!({}),
        json!({"iss": "https://id.example"}),
        json!({"aud": "ringgate"}),
        json!({"iss": "https://evil.example", "aud": "ringgate"}),
        json!({"iss": "https://id.example", "aud": "another-app"}),
    ] {
        assert_eq!(with(refused.clone()).unwrap_err().0, ReasonCode::AUTH_INVALID, "{refused}");
    }
}

/// Until a JWKS has been fetched once, a token of an unknown key id is answered
/// auth_unavailable (the client retries), not auth_invalid (it would give up).
#[test]
fn before_the_first_jwks_fetch_logins_are_unavailable_not_invalid() {
    let port = free_port();
    let gw = node(&format!("jwks_url = \"http://127.0.0.1:{port}/jwks.json\"\n"));
    let ec = ec_key();
    let signer = EncodingKey::from_ec_pem(ec.private.as_bytes()).unwrap();
    let token = sign(Algorithm::ES256, "ec-1", &signer, claims("ann"));
    let refused = login(gw.local_addr(), token);
    assert_eq!(refused, Err((ReasonCode::AUTH_UNAVAILABLE, "keys not available yet".into())));
}

/// Python's http.server serving `dir` on a free port.
fn http_server(dir: &Path) -> (ChildGuard, u16) {
    let port = free_port();
    let child = Command::new("python3")
        .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    assert!(eventually(T, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()), "http.server listens");
    (ChildGuard(child), port)
}

fn jwks(keys: &[serde_json::Value]) -> String {
    json!({ "keys": keys }).to_string()
}

#[test]
fn keys_from_a_jwks_url_are_refreshed_and_the_last_good_set_kept() {
    let dir = tempdir::Dir::new();
    let (rsa, ec1, ec2) = (rsa_key(dir.path()), ec_key(), ec_key());
    let site = dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    let rsa_jwk = json!({"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256", "n": rsa.n, "e": "AQAB"});
    let ec_jwk = |kid: &str, k: &EcKey| json!({"kty": "EC", "kid": kid, "crv": "P-256", "x": k.x, "y": k.y});
    // An encryption key, a symmetric key and a key of an algorithm not verified are skipped.
    let skipped = [
        json!({"kty": "RSA", "kid": "enc-1", "use": "enc", "n": rsa.n, "e": "AQAB"}),
        json!({"kty": "oct", "kid": "oct-1", "k": B64.encode(SECRET)}),
        json!({"kty": "RSA", "kid": "rs512-1", "alg": "RS512", "n": rsa.n, "e": "AQAB"}),
    ];
    let mut first = vec![rsa_jwk.clone(), ec_jwk("ec-1", &ec1)];
    first.extend(skipped.iter().cloned());
    std::fs::write(site.join("jwks.json"), jwks(&first)).unwrap();
    let (mut server, port) = http_server(&site);
    let gw = node(&format!("jwks_url = \"http://127.0.0.1:{port}/jwks.json\"\njwks_refresh = \"1s\"\n"));
    let addr = gw.local_addr();
    let rsa_signer = EncodingKey::from_rsa_pem(rsa.private.as_bytes()).unwrap();
    let ec1_signer = EncodingKey::from_ec_pem(ec1.private.as_bytes()).unwrap();
    let ec2_signer = EncodingKey::from_ec_pem(ec2.private.as_bytes()).unwrap();
    let by_rsa = || sign(Algorithm::RS256, "rsa-1", &rsa_signer, claims("ann"));
    assert!(eventually(T, || login(addr, by_rsa()).is_ok()), "the JWKS is fetched at start");
    assert!(login(addr, sign(Algorithm::ES256, "ec-1", &ec1_signer, claims("bob"))).is_ok(), "alg from the key type");
    let enc = sign(Algorithm::RS256, "enc-1", &rsa_signer, claims("eve"));
    assert_eq!(login(addr, enc).unwrap_err().0, ReasonCode::AUTH_INVALID, "an encryption key signs nothing");
    let oct = sign(Algorithm::HS256, "oct-1", &EncodingKey::from_secret(SECRET), claims("eve"));
    assert_eq!(login(addr, oct).unwrap_err().0, ReasonCode::AUTH_INVALID, "no symmetric key from a JWKS");
    let rs512 = sign(Algorithm::RS512, "rs512-1", &rsa_signer, claims("eve"));
    assert_eq!(login(addr, rs512).unwrap_err().0, ReasonCode::AUTH_INVALID, "RS512 is not verified");

    // The provider rotates: ec-2 in, ec-1 out.
    std::fs::write(site.join("jwks.json"), jwks(&[rsa_jwk, ec_jwk("ec-2", &ec2)])).unwrap();
    let by_ec2 = || sign(Algorithm::ES256, "ec-2", &ec2_signer, claims("cat"));
    assert!(eventually(T, || login(addr, by_ec2()).is_ok()), "the rotated key is picked up");
    assert_eq!(
        login(addr, sign(Algorithm::ES256, "ec-1", &ec1_signer, claims("bob"))).unwrap_err().0,
        ReasonCode::AUTH_INVALID
    );

    // A broken document, then the provider gone: the last good keys stay.
    std::fs::write(site.join("jwks.json"), "{not json").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(login(addr, by_ec2()).is_ok(), "a bad JWKS does not replace the good one");
    server.kill();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(login(addr, by_ec2()).is_ok(), "an unreachable JWKS keeps the last good keys");
    let m = ringgate::metrics::render();
    assert!(metric_sum(&m, "ringgate_jwks_refreshes_total", &["result=\"error\""]) >= 1.0, "{m}");
    assert!(metric_sum(&m, "ringgate_jwks_refreshes_total", &["result=\"ok\""]) >= 2.0);
    assert_eq!(metric_sum(&m, "ringgate_jwks_keys", &[]), 2.0);
}

#[test]
fn bad_key_config_is_reported_with_its_key_path() {
    let dir = tempdir::Dir::new();
    std::fs::write(dir.path().join("garbage.pem"), "not a key").unwrap();
    let text = format!(
        "[node]\nid = \"n\"\n[auth]\njwks_url = \"ftp://idp\"\nmax_token_lifetime = \"10s\"\n[auth.public_keys]\n\
         a = {{ alg = \"RS256\", file = \"{missing}\" }}\nb = {{ alg = \"ES256\", file = \"{garbage}\" }}\nc = {{ alg = \"HS512\", file = \"x\" }}\n",
        missing = dir.path().join("missing.pem").display(),
        garbage = dir.path().join("garbage.pem").display(),
    );
    let e = Config::parse(&text).unwrap_err().to_string();
    // A JWKS over plain http beyond this host: whoever is on the path could swap the keys.
    let http = Config::parse("[node]\nid = \"n\"\n[auth]\njwks_url = \"http://idp.example/jwks.json\"\n");
    assert!(http.unwrap_err().to_string().contains("must be an https:// URL"));
    // A name that only looks like a loopback address.
    let lookalike = Config::parse("[node]\nid = \"n\"\n[auth]\njwks_url = \"http://127.evil.example/jwks.json\"\n");
    assert!(lookalike.unwrap_err().to_string().contains("must be an https:// URL"));
    for needle in [
        "auth.public_keys.a",
        "missing.pem",
        "auth.public_keys.b",
        "auth.public_keys.c",
        "auth.jwks_url",
        "auth.max_token_lifetime",
    ] {
        assert!(e.contains(needle), "{needle} not named in:\n{e}");
    }
}
