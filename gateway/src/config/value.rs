//! Typed extraction of config leaves that records every failure with its key path instead of
//! stopping at the first.

use std::net::SocketAddr;
use std::time::Duration;

use toml::Value;

use super::error::ConfigError;

/// Collects errors while raw values are turned into typed ones.
#[derive(Debug, Default)]
pub(crate) struct Extract {
    pub errors: Vec<ConfigError>,
}

impl Extract {
    pub fn invalid(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError::Invalid { path: path.to_owned(), message: message.into() });
    }

    /// An error was recorded for a key under `prefix` (`"auth."`).
    pub fn has_errors_under(&self, prefix: &str) -> bool {
        self.errors.iter().any(|e| matches!(e, ConfigError::Invalid { path, .. } if path.starts_with(prefix)))
    }

    /// The value at `path` parsed by `parse`, `default` when absent, `default` plus an
    /// error when present but bad.
    pub fn get<T>(
        &mut self,
        path: &str,
        value: Option<Value>,
        default: T,
        parse: impl FnOnce(&Value) -> Result<T, String>,
    ) -> T {
        match value {
            None => default,
            Some(v) => parse(&v).unwrap_or_else(|message| {
                self.invalid(path, message);
                default
            }),
        }
    }
}

pub(crate) fn string(v: &Value) -> Result<String, String> {
    v.as_str().map(str::to_owned).ok_or_else(|| format!("expected a string, found {}", v.type_str()))
}

pub(crate) fn non_empty_string(v: &Value) -> Result<String, String> {
    let s = string(v)?;
    if s.is_empty() { Err("must not be empty".into()) } else { Ok(s) }
}

pub(crate) fn boolean(v: &Value) -> Result<bool, String> {
    v.as_bool().ok_or_else(|| format!("expected true or false, found {}", v.type_str()))
}

/// An integer in `[min, max]`.
pub(crate) fn int_in(min: i64, max: i64) -> impl FnOnce(&Value) -> Result<i64, String> {
    move |v| {
        let n = v.as_integer().ok_or_else(|| format!("expected an integer, found {}", v.type_str()))?;
        if (min..=max).contains(&n) { Ok(n) } else { Err(format!("{n} is outside {min}..={max}")) }
    }
}

pub(crate) fn socket_addr(v: &Value) -> Result<SocketAddr, String> {
    let s = string(v)?;
    s.parse().map_err(|_| format!("{s:?} is not an ip:port address (like \"0.0.0.0:7000\" or \"[::]:7000\")"))
}

/// A duration written as `"250ms"`, `"10s"`, `"5m"` or `"1h"`, within `[min, max]`.
pub(crate) fn duration_in(min: Duration, max: Duration) -> impl FnOnce(&Value) -> Result<Duration, String> {
    move |v| {
        let s = string(v)?;
        let d = parse_duration(&s)?;
        if d < min || d > max {
            return Err(format!("{s} is outside {min:?}..={max:?}"));
        }
        Ok(d)
    }
}

/// Parses `"250ms"`, `"10s"`, `"5m"`, `"1h"` or `"30d"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is not a duration like \"10s\" or \"250ms\""))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => return Err(format!("{s:?}: unit must be ms, s, m, h or d")),
    };
    ms.map(Duration::from_millis).ok_or_else(|| format!("{s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("10 s").is_err());
        assert!(parse_duration("99999999999999999h").is_err());
    }
}
