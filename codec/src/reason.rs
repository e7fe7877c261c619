//! The one table of close and error reason codes, shared by both frame families.
//!
//! Codes are stable: a code is never renumbered or reused. Receivers must accept codes they
//! do not know (a newer peer may send them) and treat them by range: 1..=19 protocol errors,
//! 20..=29 authentication, 30..=39 connection limits, 40..=49 server decisions,
//! 50..=59 backend outcomes, 60..=69 internal errors.

use std::fmt;

/// A reason code carried by AuthFail, Ack, Kick, GoAway, Close and their link counterparts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReasonCode(pub u32);

/// Whether a client that got this code should reconnect, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Nothing went wrong; no retry needed (Ack success, normal close).
    NotNeeded,
    /// Retrying the same thing will fail the same way until the client changes (a bug, bad token).
    No,
    /// Retrying later, with backoff, may succeed.
    Backoff,
    /// Reconnect now, preferably elsewhere (drain, shutdown).
    Reconnect,
}

macro_rules! reason_table {
    ($( $name:ident = $code:literal, $text:literal, $retry:ident; )*) => {
        impl ReasonCode {
            $( #[doc = $text] pub const $name: ReasonCode = ReasonCode($code); )*

            /// Every code this version knows, in table order.
            pub const ALL: &'static [ReasonCode] = &[$( ReasonCode::$name ),*];

            /// The stable snake_case name, or `None` for a code this version does not know.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $code => Some($text), )*
                    _ => None,
                }
            }

            /// What a client should do after receiving this code.
            pub fn retry(self) -> Retry {
                match self.0 {
                    $( $code => Retry::$retry, )*
                    // Unknown codes: a newer peer; backing off is the safe default.
                    _ => Retry::Backoff,
                }
            }
        }
    };
}

reason_table! {
    OK = 0, "ok", NotNeeded;
    NORMAL = 1, "normal", NotNeeded;
    PROTOCOL_ERROR = 10, "protocol_error", No;
    FRAME_TOO_LARGE = 11, "frame_too_large", No;
    UNKNOWN_OP = 12, "unknown_op", No;
    UNEXPECTED_FRAME = 13, "unexpected_frame", No;
    UNSUPPORTED_VERSION = 14, "unsupported_version", No;
    AUTH_TIMEOUT = 20, "auth_timeout", Backoff;
    AUTH_INVALID = 21, "auth_invalid", No;
    AUTH_EXPIRED = 22, "auth_expired", No;
    AUTH_UNKNOWN_KEY = 23, "auth_unknown_key", No;
    AUTH_UNAVAILABLE = 24, "auth_unavailable", Backoff;
    IDLE_TIMEOUT = 30, "idle_timeout", Backoff;
    SLOW_CONSUMER = 31, "slow_consumer", Backoff;
    TOO_MANY_IN_FLIGHT = 32, "too_many_in_flight", Backoff;
    TOO_MANY_CONNECTIONS = 33, "too_many_connections", Backoff;
    RATE_LIMITED = 34, "rate_limited", Backoff;
    KICKED = 40, "kicked", No;
    REPLACED = 41, "replaced", No;
    SERVER_DRAINING = 42, "server_draining", Reconnect;
    SERVER_SHUTDOWN = 43, "server_shutdown", Reconnect;
    SERVER_OVERLOADED = 44, "server_overloaded", Backoff;
    BACKEND_UNAVAILABLE = 50, "backend_unavailable", Backoff;
    BACKEND_BUSY = 51, "backend_busy", Backoff;
    BACKEND_TIMEOUT = 52, "backend_timeout", Backoff;
    BACKEND_REJECTED = 53, "backend_rejected", No;
    NOT_DELIVERED = 54, "not_delivered", NotNeeded;
    INTERNAL_ERROR = 60, "internal_error", Backoff;
}

impl ReasonCode {
    /// True for `OK`.
    pub fn is_ok(self) -> bool {
        self == ReasonCode::OK
    }
}

impl fmt::Debug for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}({})", self.0),
            None => write!(f, "unknown({})", self.0),
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_are_unique() {
        let mut codes: Vec<u32> = ReasonCode::ALL.iter().map(|c| c.0).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ReasonCode::ALL.len());
        let mut names: Vec<&str> = ReasonCode::ALL.iter().filter_map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ReasonCode::ALL.len());
    }

    #[test]
    fn unknown_codes_are_accepted() {
        let code = ReasonCode(4711);
        assert_eq!(code.name(), None);
        assert_eq!(code.retry(), Retry::Backoff);
        assert_eq!(format!("{code}"), "unknown(4711)");
    }
}
