//! Loading role configuration: TOML files whose errors name the file and the field.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this role, or a value is out of range.
    #[error("config file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
}

/// Reads and parses a TOML configuration file; unknown keys are refused by the target type.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Invalid {
        path: path.to_owned(),
        // The message and position only: toml's own rendering quotes the offending line,
        // which may hold a password.
        message: match e.span() {
            Some(span) => {
                let (line, column) = line_column(&text, span.start);
                let key = key_at(&text, span.start)
                    .map(|k| format!(" (field {k})"))
                    .unwrap_or_default();
                format!("line {line}, column {column}{key}: {}", e.message())
            }
            None => e.message().to_owned(),
        },
    })
}

/// The key assigned on the line holding `offset`, if that line is a `key = value` line:
/// the key names the field without quoting the value.
fn key_at(text: &str, offset: usize) -> Option<&str> {
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    (!key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.\"".contains(c)))
    .then_some(key)
}

/// The 1-based line and column of a byte offset in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        site_db: String,
    }

    #[test]
    fn parse_errors_name_the_place_but_never_quote_the_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "site_db = \"server=h;password=Pa\\ss-SECRET\"\n").expect("writes");
        let err = load::<Sample>(&path).expect_err("bad escape");
        let text = err.to_string();
        assert!(
            text.contains("line 1") && text.contains("site_db"),
            "{text}"
        );
        assert!(!text.contains("SECRET"), "{text}");
    }
}

/// Returns an error naming `path` and a field, for checks that run after parsing.
pub fn invalid(path: &Path, field: &str, problem: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_owned(),
        message: format!("{field}: {problem}"),
    }
}

/// Resolves a path from a config file relative to the file's own folder, so a deployment
/// folder can be moved as a whole.
pub fn resolve(config_path: &Path, value: &Path) -> PathBuf {
    if value.is_absolute() {
        value.to_owned()
    } else {
        config_path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(value)
    }
}

/// A role's three TLS settings (`tls_cert`, `tls_key`, `tls_ca`), as read from its file.
pub struct TlsSettings<'a> {
    /// The role's certificate.
    pub cert: &'a mut Option<PathBuf>,
    /// Its key.
    pub key: &'a mut Option<PathBuf>,
    /// The hierarchy's CA.
    pub ca: &'a mut Option<PathBuf>,
}

/// Resolves a role's TLS settings against its file and checks they come together, and that
/// each address the role connects to (setting name and URL) says the same: `https://` with
/// TLS, `http://` without. Returns the TLS files when set.
pub fn tls_settings(
    path: &Path,
    settings: TlsSettings<'_>,
    urls: &[(&str, Option<&str>)],
) -> Result<Option<TlsFiles>, ConfigError> {
    for file in [&mut *settings.cert, &mut *settings.key, &mut *settings.ca] {
        *file = file.take().map(|f| resolve(path, &f));
    }
    let tls = TlsFiles::from_settings(
        settings.cert.as_deref(),
        settings.key.as_deref(),
        settings.ca.as_deref(),
    )
    .map_err(|missing| invalid(path, missing, "set tls_cert, tls_key and tls_ca together"))?;
    for (field, url) in urls {
        let Some(url) = url else { continue };
        let (wanted, problem) = if tls.is_some() {
            (
                "https://",
                "must be https:// when tls_cert, tls_key and tls_ca are set",
            )
        } else {
            (
                "http://",
                "must be http:// without tls_cert, tls_key and tls_ca",
            )
        };
        if !url.starts_with(wanted) {
            return Err(invalid(path, field, format!("{url:?} {problem}")));
        }
    }
    Ok(tls)
}

/// The limits every server role takes from its configuration, checked in one place so
/// each role names its fields the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// `max_connections`: connections served at once.
    pub max_connections: u32,
    /// `max_message_mb`: largest message received or sent, in MiB.
    pub max_message_mb: u64,
    /// `request_timeout_seconds`: longest a call may take.
    pub request_timeout_seconds: u64,
}

/// Default `max_message_mb` of every server role: a merged period of a large hierarchy.
pub fn default_max_message_mb() -> u64 {
    64
}

/// Default `request_timeout_seconds` of every server role: room for a large upload on a
/// slow link (a cut upload resumes where it stopped).
pub fn default_request_timeout_seconds() -> u64 {
    600
}

/// Largest `max_message_mb` any role accepts: 1 GiB, beyond any legitimate message.
pub const MAX_MESSAGE_MB: u64 = 1024;

impl ServerLimits {
    /// Checks the limits of the file at `path`; `min_message_mb` is the smallest message
    /// limit the role can work with.
    pub fn check(&self, path: &Path, min_message_mb: u64) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return Err(invalid(path, "max_connections", "must be at least 1"));
        }
        if !(min_message_mb..=MAX_MESSAGE_MB).contains(&self.max_message_mb) {
            return Err(invalid(
                path,
                "max_message_mb",
                format!("must be between {min_message_mb} and {MAX_MESSAGE_MB}"),
            ));
        }
        if self.request_timeout_seconds == 0 {
            return Err(invalid(
                path,
                "request_timeout_seconds",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// A role's certificate, its key, and the CA it trusts: the three `tls_*` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// This role's certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The hierarchy's CA certificate (PEM).
    pub ca: PathBuf,
}

impl TlsFiles {
    /// Takes a role's three optional settings: all three make TLS, none means plaintext;
    /// anything else names the first missing setting.
    pub fn from_settings(
        cert: Option<&Path>,
        key: Option<&Path>,
        ca: Option<&Path>,
    ) -> Result<Option<Self>, &'static str> {
        match (cert, key, ca) {
            (Some(cert), Some(key), Some(ca)) => Ok(Some(Self {
                cert: cert.to_owned(),
                key: key.to_owned(),
                ca: ca.to_owned(),
            })),
            (None, None, None) => Ok(None),
            (None, _, _) => Err("tls_cert"),
            (_, None, _) => Err("tls_key"),
            (_, _, None) => Err("tls_ca"),
        }
    }

    /// The TLS files of settings already checked by [`TlsFiles::from_settings`].
    pub fn of(cert: Option<&Path>, key: Option<&Path>, ca: Option<&Path>) -> Option<Self> {
        Self::from_settings(cert, key, ca).ok().flatten()
    }
}
