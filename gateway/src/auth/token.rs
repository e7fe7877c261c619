//! Signed client tokens: JWT compact form with HS256 (HMAC-SHA256) and a key id.
//!
//! ```text
//! base64url({"alg":"HS256","typ":"JWT","kid":"k1"}) . base64url(claims) . base64url(hmac)
//! claims = {"sub": user id, "dev": device id, "plat": "ios", "exp": unix seconds}
//! ```
//!
//! Any JWT library can mint them, so backends issue tokens without ringgate code. Several
//! keys are accepted at once (rotation): the header's `kid` picks the secret.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use ringgate_codec::ReasonCode;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub dev: String,
    #[serde(default)]
    pub plat: String,
    pub exp: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    kid: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    #[error("token algorithm {0:?} is not HS256")]
    Algorithm(String),
    #[error("token key id {0:?} is unknown")]
    UnknownKey(String),
    #[error("token signature is wrong")]
    Signature,
    #[error("token expired at {exp}, now {now}")]
    Expired { exp: u64, now: u64 },
}

impl TokenError {
    /// The reason code the client's AuthFail carries.
    pub fn reason(&self) -> ReasonCode {
        match self {
            TokenError::UnknownKey(_) => ReasonCode::AUTH_UNKNOWN_KEY,
            TokenError::Expired { .. } => ReasonCode::AUTH_EXPIRED,
            TokenError::Malformed(_) | TokenError::Algorithm(_) | TokenError::Signature => ReasonCode::AUTH_INVALID,
        }
    }
}

/// Mints a token (for `ringgate token` and tests).
pub fn mint(kid: &str, secret: &[u8], claims: &Claims) -> String {
    let header = Header { alg: "HS256".into(), typ: Some("JWT".into()), kid: kid.into() };
    // Serializing these plain structs cannot fail.
    let header = B64.encode(serde_json::to_vec(&header).unwrap_or_default());
    let body = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{header}.{body}");
    let sig = B64.encode(sign(secret, signing_input.as_bytes()));
    format!("{signing_input}.{sig}")
}

/// Checks the token's signature and expiry against `keys` at unix time `now`.
pub fn verify(
    token: &str,
    keys: &BTreeMap<String, Vec<u8>>,
    now: u64,
    max_clock_skew: u64,
) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(body_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("expected three dot-separated parts"));
    };
    let header: Header = decode_json(header_b64)?;
    if header.alg != "HS256" {
        return Err(TokenError::Algorithm(header.alg));
    }
    let secret = keys.get(&header.kid).ok_or(TokenError::UnknownKey(header.kid))?;
    let sig = B64.decode(sig_b64).map_err(|_| TokenError::Malformed("signature is not base64url"))?;
    let signed_len = header_b64.len() + 1 + body_b64.len();
    let signing_input = token.get(..signed_len).ok_or(TokenError::Malformed("truncated"))?;
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| TokenError::Signature)?;
    mac.update(signing_input.as_bytes());
    mac.verify_slice(&sig).map_err(|_| TokenError::Signature)?;
    let claims: Claims = decode_json(body_b64)?;
    if claims.exp.saturating_add(max_clock_skew) < now {
        return Err(TokenError::Expired { exp: claims.exp, now });
    }
    Ok(claims)
}

fn sign(secret: &[u8], input: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length.
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else { return Vec::new() };
    mac.update(input);
    mac.finalize().into_bytes().to_vec()
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, TokenError> {
    let bytes = B64.decode(part).map_err(|_| TokenError::Malformed("part is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed("part is not the expected JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> BTreeMap<String, Vec<u8>> {
        [
            ("k1".to_owned(), b"first-secret-0123456789".to_vec()),
            ("k2".to_owned(), b"second-secret-0123456789".to_vec()),
        ]
        .into_iter()
        .collect()
    }

    fn claims(exp: u64) -> Claims {
        Claims { sub: "alice".into(), dev: "phone".into(), plat: "ios".into(), exp }
    }

    #[test]
    fn round_trip_with_either_key() {
        for kid in ["k1", "k2"] {
            let token = mint(kid, &keys()[kid], &claims(2000));
            assert_eq!(verify(&token, &keys(), 1000, 0), Ok(claims(2000)));
        }
    }

    #[test]
    fn refusals_carry_their_reason() {
        let good = mint("k1", &keys()["k1"], &claims(2000));
        let wrong_secret = mint("k1", b"not-the-right-secret!!", &claims(2000));
        assert_eq!(verify(&wrong_secret, &keys(), 1000, 0), Err(TokenError::Signature));
        let unknown = mint("k9", b"whatever-secret-123456", &claims(2000));
        assert_eq!(verify(&unknown, &keys(), 1000, 0).unwrap_err().reason(), ReasonCode::AUTH_UNKNOWN_KEY);
        assert_eq!(verify(&good, &keys(), 2031, 30).unwrap_err().reason(), ReasonCode::AUTH_EXPIRED);
        assert!(verify(&good, &keys(), 2030, 30).is_ok(), "within the clock skew");
        // Claims swapped under a valid signature.
        let (signed, sig) = good.rsplit_once('.').unwrap();
        let (header, _) = signed.split_once('.').unwrap();
        let forged_body = B64.encode(serde_json::to_vec(&claims(9999)).unwrap());
        let forged = format!("{header}.{forged_body}.{sig}");
        assert_eq!(verify(&forged, &keys(), 1000, 0), Err(TokenError::Signature));
        for junk in ["", "a.b", "a.b.c.d", "!!.??.--"] {
            assert_eq!(verify(junk, &keys(), 0, 0).unwrap_err().reason(), ReasonCode::AUTH_INVALID, "{junk}");
        }
    }
}
