//! Configuration: the JSON format, validation with paths, compilation into a [`Snapshot`].
//!
//! A config is data. [`Config`] holds a parsed but not yet validated document; it implements
//! `serde::Deserialize`, so it can come from JSON (built in) or any other serde format.
//! [`Engine::load_config`](crate::Engine::load_config) validates and compiles it in one pass
//! that collects **every** problem, each with a path such as
//! `slots[2].rules[0].when.any[1]: unknown operator "gtt"`. The format is documented in
//! [`docs::config_format`](crate::docs::config_format).

mod bandit;
mod compile;
mod condition;
mod slot;
mod sticky;
mod strict;
mod walk;

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub(crate) use compile::compile;
pub(crate) use condition::prune_regexes;
pub(crate) use sticky::assigns;

#[cfg(doc)]
use crate::Snapshot;

/// A parsed, not yet validated configuration document.
///
/// A config is data: it implements `serde::Deserialize`, so it can come from JSON (built
/// in) or any other serde format. [`Engine::load_config`](crate::Engine::load_config)
/// validates and compiles it into a [`Snapshot`] in one pass that collects **every**
/// problem, each with a path such as `slots[2].rules[0].when.any[1]: unknown operator
/// "gtt"` ([`ConfigError::Invalid`]); [`Config::validate`] checks without loading. The
/// format is documented in [`docs::config_format`](crate::docs::config_format).
///
/// Parsing (from JSON or, through `Deserialize`, any serde format) rejects an object with
/// the same key twice, naming the object's path (`slots[0]: duplicate key "id"`): JSON
/// itself would let the last one win silently, hiding a typo or a bad merge.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Config(pub(crate) serde_json::Value);

impl<'de> Deserialize<'de> for Config {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::DeserializeSeed;
        strict::Strict { path: "", depth: 0 }
            .deserialize(d)
            .map(Config)
    }
}

impl Config {
    /// Parses JSON text. Only syntax (and duplicate keys) are checked here; validation
    /// happens on load.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] with the line and column of the syntax error.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        Self::parse(&mut serde_json::Deserializer::from_str(text))
    }

    /// Parses JSON bytes; see [`Config::from_json`].
    ///
    /// # Errors
    /// [`ConfigError::Parse`] on invalid JSON or UTF-8.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::parse(&mut serde_json::Deserializer::from_slice(bytes))
    }

    fn parse<'de, R: serde_json::de::Read<'de>>(
        d: &mut serde_json::Deserializer<R>,
    ) -> Result<Self, ConfigError> {
        let parse_error = |e: serde_json::Error| ConfigError::Parse {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        };
        let config = Config::deserialize(&mut *d).map_err(parse_error)?;
        d.end().map_err(parse_error)?;
        Ok(config)
    }

    /// The document's `version` field as text, if it has a usable one.
    #[must_use]
    pub fn version(&self) -> Option<String> {
        match self.0.get("version")? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// Checks the whole config as [`Engine::load_config`](crate::Engine::load_config) would,
    /// without loading it anywhere: every problem with its path, or the non-fatal warnings.
    ///
    /// ```
    /// let bad = elvon::Config::from_json(r#"{"version": "1", "slots": [{"id": "s", "variants": [], "default": "x"}]}"#).unwrap();
    /// assert!(bad.validate().unwrap_err().to_string().contains("slots[0]"));
    /// ```
    pub fn validate(&self) -> Result<Vec<ConfigProblem>, ConfigError> {
        let out = compile::compile(self)
            .map(|c| c.warnings)
            .map_err(ConfigError::Invalid);
        prune_regexes();
        out
    }

    /// Serializes the document back to JSON text.
    #[must_use]
    pub fn to_json(&self) -> String {
        self.0.to_string()
    }
}

/// One problem found in a config, with the path of the offending element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    path: String,
    message: String,
}

impl ConfigProblem {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigProblem {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Where: `slots[2].rules[0].when.any[1]`, or `(root)`.
    #[must_use]
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What is wrong.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a config was not loaded. The engine keeps serving its previous snapshot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The text is not valid JSON.
    #[error("config is not valid JSON (line {line}, column {column}): {message}")]
    Parse {
        /// 1-based line of the syntax error.
        line: usize,
        /// 1-based column of the syntax error.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// The document is JSON but not a valid config; every problem is listed.
    #[error("config rejected with {} problem(s):\n{}", .0.len(), ProblemList(.0))]
    Invalid(Vec<ConfigProblem>),
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl ConfigError {
    /// The validation problems (empty for parse and I/O errors).
    #[must_use]
    pub fn problems(&self) -> &[ConfigProblem] {
        match self {
            ConfigError::Invalid(p) => p,
            _ => &[],
        }
    }
}

struct ProblemList<'a>(&'a [ConfigProblem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {p}")?;
        }
        Ok(())
    }
}
