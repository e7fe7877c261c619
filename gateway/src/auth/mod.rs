//! Client authentication: checks an Auth frame and says who the client is.

pub mod token;

use std::time::{SystemTime, UNIX_EPOCH};

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

/// Checks `auth` under `mode`. On refusal returns the reason code and a message for AuthFail.
pub fn authenticate(mode: &AuthMode, auth: &Auth) -> Result<Identity, (ReasonCode, String)> {
    match mode {
        AuthMode::None => {
            if auth.user_id.is_empty() {
                return Err((ReasonCode::AUTH_INVALID, "user_id is required".into()));
            }
            Ok(Identity { user_id: auth.user_id.clone(), device_id: auth.device_id.clone(), platform: auth.platform })
        }
        AuthMode::Token { keys, max_clock_skew } => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let claims = token::verify(&auth.token, keys, now, max_clock_skew.as_secs())
                .map_err(|e| (e.reason(), e.to_string()))?;
            let user_matches = auth.user_id.is_empty() || auth.user_id == claims.sub;
            let device_matches = auth.device_id.is_empty() || auth.device_id == claims.dev;
            if !user_matches || !device_matches {
                return Err((ReasonCode::AUTH_INVALID, "user_id or device_id does not match the token".into()));
            }
            let platform = Platform::parse(&claims.plat).unwrap_or(auth.platform);
            Ok(Identity { user_id: claims.sub, device_id: claims.dev, platform })
        }
    }
}
