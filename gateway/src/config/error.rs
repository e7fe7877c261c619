//! Errors of config loading. Every problem names its key path; loading reports all of them.

use std::fmt;

/// One problem with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read.
    Read { file: String, message: String },
    /// The file is not valid TOML, or a section has the wrong shape.
    Syntax { message: String },
    /// A key the gateway does not know (a typo, or a key from another version).
    UnknownKey { path: String },
    /// A known key with a value it cannot take.
    Invalid { path: String, message: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { file, message } => write!(f, "{file}: {message}"),
            ConfigError::Syntax { message } => write!(f, "syntax: {message}"),
            ConfigError::UnknownKey { path } => write!(f, "{path}: unknown key"),
            ConfigError::Invalid { path, message } => write!(f, "{path}: {message}"),
        }
    }
}

/// All the problems found in one config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} problem(s) in the config:", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// True when some error names exactly this key path.
    pub fn mentions(&self, path: &str) -> bool {
        self.0.iter().any(|e| match e {
            ConfigError::UnknownKey { path: p } | ConfigError::Invalid { path: p, .. } => p == path,
            _ => false,
        })
    }
}
