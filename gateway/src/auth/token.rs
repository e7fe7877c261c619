//! Signed client tokens: JWTs in compact form, verified by the `jsonwebtoken` crate.
//!
//! ```text
//! header = {"alg": "HS256" | "RS256" | "ES256", "typ": "JWT", "kid": "k1"}
//! claims = {"sub": user id, "dev": device id, "plat": "ios", "exp": unix seconds,
//!           "nbf": unix seconds (optional), "iss" / "aud" (checked when configured)}
//! ```
//!
//! The header's `kid` picks one key: an HS256 secret of `[auth.keys]`, an RS256/ES256 public
//! key of `[auth.public_keys]`, or one of the `auth.jwks_url` set. That key's algorithm must
//! be the header's (no algorithm confusion), and its signature is checked before any claim is
//! read; then `exp` (required), `nbf`, `iss` and `aud`, each with `auth.max_clock_skew`, and
//! the lifetime cap. An unknown `kid` is refused like a bad signature, so a forged token
//! cannot learn which key ids exist. docs/auth.md lists the order and the reasons.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ringgate_codec::ReasonCode;
use serde::{Deserialize, Serialize};

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub dev: String,
    #[serde(default)]
    pub plat: String,
    pub exp: u64,
}

/// One verification key and the algorithm tokens signed with it must name.
#[derive(Clone)]
pub struct Key {
    pub alg: Algorithm,
    pub key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({:?})", self.alg)
    }
}

/// Keys by key id.
pub type KeySet = BTreeMap<String, Key>;

/// The keys of `auth.jwks_url` as last fetched, shared by the control plane (which refreshes
/// them) and the workers (which read them at each login, and ask for an early refresh when a
/// token names a key id the set does not have: a provider that rotated).
#[derive(Debug, Default)]
pub struct Jwks {
    keys: RwLock<Arc<KeySet>>,
    /// A fetch has succeeded once.
    loaded: std::sync::atomic::AtomicBool,
    pub wanted: tokio::sync::Notify,
}

pub type JwksKeys = Arc<Jwks>;

impl Jwks {
    /// The current set (empty before the first fetch).
    pub fn current(&self) -> Arc<KeySet> {
        self.keys.read().map(|k| k.clone()).unwrap_or_default()
    }

    pub fn loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Replaces the set after a good fetch.
    pub fn set(&self, keys: KeySet) {
        if let Ok(mut slot) = self.keys.write() {
            *slot = Arc::new(keys);
        }
        self.loaded.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What the config says about tokens (`[auth]`), with its keys ready for verification.
#[derive(Debug, Clone)]
pub struct TokenRules {
    /// Key id -> HS256 secret (`[auth.keys]`), kept to mint tokens (`ringgate token`).
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// Key id -> (algorithm, PEM) of `[auth.public_keys]`.
    pub public: BTreeMap<String, (Algorithm, Vec<u8>)>,
    pub jwks: Option<JwksSource>,
    pub max_clock_skew: Duration,
    /// Tokens whose `exp` is further away than this are refused.
    pub max_lifetime: Duration,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// The secrets and public keys, parsed once.
    pub keys: Arc<KeySet>,
}

impl PartialEq for TokenRules {
    fn eq(&self, other: &Self) -> bool {
        (&self.secrets, &self.public, &self.jwks, self.max_clock_skew, self.max_lifetime, &self.issuer, &self.audience)
            == (
                &other.secrets,
                &other.public,
                &other.jwks,
                other.max_clock_skew,
                other.max_lifetime,
                &other.issuer,
                &other.audience,
            )
    }
}

impl Eq for TokenRules {}

/// Where the JWKS comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksSource {
    pub url: String,
    pub refresh: Duration,
}

/// Why a token was refused. `Display` is the detail (for the log); [`TokenError::client_text`]
/// is what the client's AuthFail says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("token key id {0:?} is unknown")]
    UnknownKey(String),
    #[error("token key id {0:?} is not in the JWKS, which has not been fetched yet")]
    KeysNotLoaded(String),
    #[error("token algorithm {got:?} is not its key's {want:?}")]
    Algorithm { got: Algorithm, want: Algorithm },
    #[error("token signature is wrong")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token is not valid before its nbf")]
    NotYet,
    #[error("token issuer or audience is not the configured one")]
    WrongParty,
    #[error("token expires {seconds} s from now, more than auth.max_token_lifetime")]
    TooLong { seconds: u64 },
    #[error("token sub or dev is empty")]
    EmptyId,
}

impl TokenError {
    /// The reason code the client's AuthFail carries.
    pub fn reason(&self) -> ReasonCode {
        match self {
            TokenError::Expired => ReasonCode::AUTH_EXPIRED,
            // The gateway cannot check it yet; the client retries with backoff.
            TokenError::KeysNotLoaded(_) => ReasonCode::AUTH_UNAVAILABLE,
            _ => ReasonCode::AUTH_INVALID,
        }
    }

    /// What the client is told: nothing about keys, clocks or which check failed beyond
    /// what it needs to act (mint a new token, or fix the minting).
    pub fn client_text(&self) -> &'static str {
        match self {
            TokenError::Expired => "token expired",
            TokenError::NotYet => "token not valid yet",
            TokenError::TooLong { .. } => "token lifetime too long",
            TokenError::KeysNotLoaded(_) => "keys not available yet",
            _ => "token not valid",
        }
    }
}

/// Builds the key of an HS256 secret.
pub fn hmac_key(secret: &[u8]) -> Key {
    Key { alg: Algorithm::HS256, key: DecodingKey::from_secret(secret) }
}

/// Builds the key of an RS256 or ES256 public key in PEM form.
pub fn public_key(alg: Algorithm, pem: &[u8]) -> Result<Key, String> {
    let key = match alg {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(pem),
        Algorithm::ES256 => DecodingKey::from_ec_pem(pem),
        other => return Err(format!("algorithm {other:?} is not RS256 or ES256")),
    };
    key.map(|key| Key { alg, key }).map_err(|e| format!("not a {alg:?} public key in PEM form: {e}"))
}

/// Mints an HS256 token (for `ringgate token` and tests).
pub fn mint(kid: &str, secret: &[u8], claims: &Claims) -> String {
    let header = Header { kid: Some(kid.to_owned()), ..Header::new(Algorithm::HS256) };
    // HS256 signing of a plain struct cannot fail.
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap_or_default()
}

/// Unix seconds now: the clock jsonwebtoken checks `exp` and `nbf` against.
pub fn unix_now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Checks `token` against `rules`' keys and then the JWKS's (`jwks`; `None` without a
/// JWKS URL), now.
pub fn verify(token: &str, rules: &TokenRules, jwks: Option<&Jwks>) -> Result<Claims, TokenError> {
    let now = unix_now();
    let header = jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
    let kid = header.kid.ok_or_else(|| TokenError::Malformed("the header has no kid".into()))?;
    let fetched = jwks.map(Jwks::current);
    let key = match rules.keys.get(&kid).or_else(|| fetched.as_ref().and_then(|set| set.get(&kid))) {
        Some(key) => key,
        None => {
            return Err(match jwks {
                // Perhaps a key the provider has just published: fetch again soon.
                Some(jwks) if jwks.loaded() => {
                    jwks.wanted.notify_one();
                    TokenError::UnknownKey(kid)
                }
                Some(jwks) => {
                    jwks.wanted.notify_one();
                    TokenError::KeysNotLoaded(kid)
                }
                None => TokenError::UnknownKey(kid),
            });
        }
    };
    if header.alg != key.alg {
        return Err(TokenError::Algorithm { got: header.alg, want: key.alg });
    }
    let mut validation = Validation::new(key.alg);
    validation.leeway = rules.max_clock_skew.as_secs();
    validation.validate_nbf = true;
    // exp always; iss and aud when configured (a token without them is not for this gateway).
    let mut required = vec!["exp"];
    required.extend(rules.issuer.as_ref().map(|_| "iss"));
    required.extend(rules.audience.as_ref().map(|_| "aud"));
    validation.set_required_spec_claims(&required);
    match &rules.issuer {
        Some(iss) => validation.set_issuer(&[iss]),
        None => validation.iss = None,
    }
    match &rules.audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    // Signature first, then exp, nbf, iss and aud: jsonwebtoken reads no claim of a token
    // whose signature fails.
    let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYet,
            ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => TokenError::WrongParty,
            ErrorKind::InvalidSignature => TokenError::Signature,
            _ => TokenError::Malformed(e.to_string()),
        })?
        .claims;
    let limit = now.saturating_add(rules.max_lifetime.as_secs()).saturating_add(rules.max_clock_skew.as_secs());
    if claims.exp > limit {
        return Err(TokenError::TooLong { seconds: claims.exp.saturating_sub(now) });
    }
    if claims.sub.is_empty() || claims.dev.is_empty() {
        return Err(TokenError::EmptyId);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> TokenRules {
        let secrets: BTreeMap<String, Vec<u8>> = [
            ("k1".to_owned(), b"first-secret-0123456789".to_vec()),
            ("k2".to_owned(), b"second-secret-0123456789".to_vec()),
        ]
        .into_iter()
        .collect();
        let keys = secrets.iter().map(|(k, s)| (k.clone(), hmac_key(s))).collect();
        TokenRules {
            secrets,
            public: BTreeMap::new(),
            jwks: None,
            max_clock_skew: Duration::ZERO,
            max_lifetime: Duration::from_secs(30 * 86_400),
            issuer: None,
            audience: None,
            keys: Arc::new(keys),
        }
    }

    fn claims(exp: u64) -> Claims {
        Claims { sub: "alice".into(), dev: "phone".into(), plat: "ios".into(), exp }
    }

    fn check(token: &str) -> Result<Claims, TokenError> {
        verify(token, &rules(), None)
    }

    #[test]
    fn round_trip_with_either_key() {
        let now = unix_now();
        for kid in ["k1", "k2"] {
            let token = mint(kid, &rules().secrets[kid], &claims(now + 60));
            assert_eq!(check(&token), Ok(claims(now + 60)));
        }
    }

    #[test]
    fn refusals_carry_their_reason_and_say_little() {
        let now = unix_now();
        let wrong_secret = mint("k1", b"not-the-right-secret!!", &claims(now + 60));
        assert_eq!(check(&wrong_secret), Err(TokenError::Signature));
        let unknown = mint("k9", b"whatever-secret-123456", &claims(now + 60));
        let e = check(&unknown).unwrap_err();
        assert_eq!(e, TokenError::UnknownKey("k9".into()));
        // An unknown key id looks like a bad signature to the client.
        assert_eq!((e.reason(), e.client_text()), (ReasonCode::AUTH_INVALID, "token not valid"));
        let expired = mint("k1", &rules().secrets["k1"], &claims(now - 1));
        let e = check(&expired).unwrap_err();
        assert_eq!((e.reason(), e.client_text()), (ReasonCode::AUTH_EXPIRED, "token expired"));
        assert!(!e.client_text().contains(&now.to_string()[..6]), "no server clock in the AuthFail");
        assert!(matches!(check("not.a.token"), Err(TokenError::Malformed(_))));
        assert!(matches!(check("onlyonepart"), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn a_token_for_ever_is_refused() {
        let now = unix_now();
        let forever = mint("k1", &rules().secrets["k1"], &claims(u64::MAX));
        assert!(matches!(check(&forever), Err(TokenError::TooLong { .. })));
        let month = mint("k1", &rules().secrets["k1"], &claims(now + 30 * 86_400));
        assert!(check(&month).is_ok(), "exactly the limit passes");
        let more = mint("k1", &rules().secrets["k1"], &claims(now + 30 * 86_400 + 100));
        assert!(matches!(check(&more), Err(TokenError::TooLong { .. })));
    }

    #[test]
    fn empty_ids_are_refused() {
        let now = unix_now();
        let token = mint("k1", &rules().secrets["k1"], &Claims { sub: String::new(), ..claims(now + 60) });
        assert_eq!(check(&token), Err(TokenError::EmptyId));
        let token = mint("k1", &rules().secrets["k1"], &Claims { dev: String::new(), ..claims(now + 60) });
        assert_eq!(check(&token), Err(TokenError::EmptyId));
    }
}
