//! Client authentication: checks an Auth frame and says who the client is.

pub mod jwks;
pub mod token;

use ringgate_codec::ReasonCode;
use ringgate_codec::client::{Auth, Platform};

use crate::config::AuthMode;

/// Who an authenticated connection belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub device_id: String,
    pub platform: Platform,
}

/// Why a login was refused: the code and terse text for the client's AuthFail, and the
/// detail for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: ReasonCode,
    pub text: &'static str,
    pub detail: String,
}

impl Refusal {
    fn new(reason: ReasonCode, text: &'static str, detail: impl Into<String>) -> Refusal {
        Refusal { reason, text, detail: detail.into() }
    }
}

/// Checks `auth` under `mode`, with `jwks` the keys of `auth.jwks_url` (when it is set).
pub fn authenticate(mode: &AuthMode, jwks: &token::Jwks, auth: &Auth) -> Result<Identity, Refusal> {
    match mode {
        AuthMode::None => {
            if auth.user_id.is_empty() {
                return Err(Refusal::new(ReasonCode::AUTH_INVALID, "user_id is required", "empty user_id"));
            }
            Ok(Identity { user_id: auth.user_id.clone(), device_id: auth.device_id.clone(), platform: auth.platform })
        }
        AuthMode::Token(rules) => {
            let claims = token::verify(&auth.token, rules, rules.jwks.as_ref().map(|_| jwks))
                .map_err(|e| Refusal::new(e.reason(), e.client_text(), e.to_string()))?;
            let user_matches = auth.user_id.is_empty() || auth.user_id == claims.sub;
            let device_matches = auth.device_id.is_empty() || auth.device_id == claims.dev;
            if !user_matches || !device_matches {
                return Err(Refusal::new(
                    ReasonCode::AUTH_INVALID,
                    "user_id or device_id does not match the token",
                    "the Auth frame's ids differ from the token's",
                ));
            }
            let platform = Platform::parse(&claims.plat).unwrap_or(auth.platform);
            Ok(Identity { user_id: claims.sub, device_id: claims.dev, platform })
        }
    }
}
