//! Loading role configuration: TOML files whose errors name the file and the field.

use std::path::{Path, PathBuf};

use serde::Deserialize;
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
    refuse_moved_keys(path, &text)?;
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
    fn a_flat_key_of_the_old_format_names_the_table_that_replaced_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "site_db = \"x\"\ntls_cert = \"agent.pem\"\n").expect("writes");
        let err = load::<Sample>(&path).expect_err("old key");
        let text = err.to_string();
        assert!(
            text.contains("tls_cert") && text.contains("[tls]"),
            "{text}"
        );
        std::fs::write(&path, "site_db = \"x\"\nmax_message_mb = 8\n").expect("writes");
        let err = load::<Sample>(&path).expect_err("old key");
        assert!(err.to_string().contains("[limits]"), "{err}");
    }

    #[test]
    fn limits_take_the_role_default_and_name_the_table_when_out_of_range() {
        let path = Path::new("aggregator.toml");
        let defaults = ServerLimits::with_max_connections(512);
        let set = LimitsTable {
            max_message_mb: Some(16),
            ..LimitsTable::default()
        };
        let limits = set.resolve(path, defaults, 5).expect("in range");
        assert_eq!((limits.max_connections, limits.max_message_mb), (512, 16));
        let small = LimitsTable {
            max_message_mb: Some(1),
            ..LimitsTable::default()
        };
        let err = small
            .resolve(path, defaults, 5)
            .expect_err("below the role's minimum");
        assert!(err.to_string().contains("limits.max_message_mb"), "{err}");
    }

    #[test]
    fn the_per_address_cap_follows_max_connections_and_stays_within_it() {
        let path = Path::new("intake.toml");
        let defaults = ServerLimits::with_max_connections(1024);
        assert_eq!(defaults.max_connections_per_peer, 128);
        let fewer = LimitsTable {
            max_connections: Some(16),
            ..LimitsTable::default()
        };
        let limits = fewer.resolve(path, defaults, 1).expect("in range");
        assert_eq!(limits.max_connections_per_peer, 4);
        for (table, setting) in [
            (
                LimitsTable {
                    max_connections: Some(16),
                    max_connections_per_peer: Some(17),
                    ..LimitsTable::default()
                },
                "limits.max_connections_per_peer",
            ),
            (
                LimitsTable {
                    first_call_seconds: Some(0),
                    ..LimitsTable::default()
                },
                "limits.first_call_seconds",
            ),
            (
                LimitsTable {
                    idle_seconds: Some(0),
                    ..LimitsTable::default()
                },
                "limits.idle_seconds",
            ),
        ] {
            let err = table.resolve(path, defaults, 1).expect_err("out of range");
            assert!(err.to_string().contains(setting), "{err}");
        }
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

/// The settings of the shared tables that an earlier, flat format kept at the top level:
/// an old key is refused naming the table and key that replaced it.
const MOVED_KEYS: &[(&str, &str, &str)] = &[
    ("tls_cert", "tls", "cert"),
    ("tls_key", "tls", "key"),
    ("tls_ca", "tls", "ca"),
    ("max_connections", "limits", "max_connections"),
    ("max_message_mb", "limits", "max_message_mb"),
    (
        "request_timeout_seconds",
        "limits",
        "request_timeout_seconds",
    ),
    ("metrics_file", "metrics", "file"),
];

/// Refuses a top-level key of the flat format, naming the table that replaced it.
fn refuse_moved_keys(path: &Path, text: &str) -> Result<(), ConfigError> {
    let Ok(table) = text.parse::<toml::Table>() else {
        // Not TOML at all: the typed parse reports where.
        return Ok(());
    };
    match MOVED_KEYS
        .iter()
        .find(|(old, _, _)| table.contains_key(*old))
    {
        Some((old, table, key)) => Err(invalid(
            path,
            old,
            format!("moved to the [{table}] table: write `{key} = ...` under `[{table}]`"),
        )),
        None => Ok(()),
    }
}

/// `[tls]`: a role's certificate, its key, and the hierarchy's CA, all three or no table
/// at all (plaintext). Paths are resolved against the file's folder at load.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// This role's certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The hierarchy's CA certificate (PEM).
    pub ca: PathBuf,
}

impl TlsFiles {
    /// These files with their paths resolved against the configuration file at `path`.
    pub fn resolved(self, path: &Path) -> Self {
        Self {
            cert: resolve(path, &self.cert),
            key: resolve(path, &self.key),
            ca: resolve(path, &self.ca),
        }
    }
}

/// Resolves a role's `[tls]` table against its file and checks that each address the
/// role connects to (setting name and URL) says the same: `https://` with TLS, `http://`
/// without.
pub fn tls_settings(
    path: &Path,
    tls: Option<TlsFiles>,
    urls: &[(&str, Option<&str>)],
) -> Result<Option<TlsFiles>, ConfigError> {
    let tls = tls.map(|files| files.resolved(path));
    for (field, url) in urls {
        let Some(url) = url else { continue };
        let (wanted, problem) = if tls.is_some() {
            ("https://", "must be https:// with a [tls] table")
        } else {
            ("http://", "must be http:// without a [tls] table")
        };
        if !url.starts_with(wanted) {
            return Err(invalid(path, field, format!("{url:?} {problem}")));
        }
    }
    Ok(tls)
}

/// `[limits]`: what a server role allows its callers, as written; a key left out takes
/// the role's default ([`LimitsTable::resolve`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsTable {
    /// Connections served at once; calls on a connection beyond it are refused with
    /// `ResourceExhausted`.
    pub max_connections: Option<u32>,
    /// Largest single message received or sent, in MiB; larger ones are refused with
    /// `OutOfRange` before they are read.
    pub max_message_mb: Option<u64>,
    /// Longest a call may take, in seconds, before it is cancelled.
    pub request_timeout_seconds: Option<u64>,
    /// Connections served at once from one address; beyond it a new one is closed at
    /// once, so one address's flood never takes every place under `max_connections`.
    pub max_connections_per_peer: Option<u32>,
    /// Longest a connection may stay open without making a call (its TLS handshake, the
    /// HTTP/2 preface and a first request), in seconds.
    pub first_call_seconds: Option<u64>,
    /// Longest a connection may stay open between calls, in seconds.
    pub idle_seconds: Option<u64>,
}

/// The limits a server role serves with, checked in one place so every role names its
/// fields the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// `limits.max_connections`: connections served at once.
    pub max_connections: u32,
    /// `limits.max_message_mb`: largest message received or sent, in MiB.
    pub max_message_mb: u64,
    /// `limits.request_timeout_seconds`: longest a call may take.
    pub request_timeout_seconds: u64,
    /// `limits.max_connections_per_peer`: connections served at once from one address.
    pub max_connections_per_peer: u32,
    /// `limits.first_call_seconds`: longest a connection may wait to make its first call.
    pub first_call_seconds: u64,
    /// `limits.idle_seconds`: longest a connection may stay open between calls.
    pub idle_seconds: u64,
}

/// Default `first_call_seconds` of every server role: a TLS handshake and a first request
/// take well under a second on any link that can carry a run.
pub const DEFAULT_FIRST_CALL_SECONDS: u64 = 10;

/// Default `idle_seconds` of every server role: callers connect to deliver and close, or
/// call again within a check; an idle connection only holds a place.
pub const DEFAULT_IDLE_SECONDS: u64 = 120;

/// Default `max_message_mb` of every server role: room for the largest chunk of a run or
/// period a receiver takes (4 MiB) with its framing, and for every other message, which is
/// small. Runs and periods travel only in chunks, so nothing larger is legitimate, and a
/// caller cannot make a role decode more than this in one message.
pub const DEFAULT_MAX_MESSAGE_MB: u64 = 8;

/// Default `request_timeout_seconds` of every server role: room for a large upload on a
/// slow link (a cut upload resumes where it stopped).
pub const DEFAULT_REQUEST_TIMEOUT_SECONDS: u64 = 600;

/// Largest `max_message_mb` any role accepts: 1 GiB, beyond any legitimate message.
pub const MAX_MESSAGE_MB: u64 = 1024;

/// Default `max_connections_per_peer` for `max_connections`: an eighth of the places (at
/// least four), so one address holds at most that many and the rest stay for others.
fn default_per_peer(max_connections: u32) -> u32 {
    (max_connections / 8).max(4).min(max_connections)
}

impl ServerLimits {
    /// A role's defaults: `max_connections` is the role's own, the rest every role's.
    pub fn with_max_connections(max_connections: u32) -> Self {
        Self {
            max_connections,
            max_message_mb: DEFAULT_MAX_MESSAGE_MB,
            request_timeout_seconds: DEFAULT_REQUEST_TIMEOUT_SECONDS,
            max_connections_per_peer: default_per_peer(max_connections),
            first_call_seconds: DEFAULT_FIRST_CALL_SECONDS,
            idle_seconds: DEFAULT_IDLE_SECONDS,
        }
    }
}

impl LimitsTable {
    /// The limits of the file at `path`: what it sets, else the role's `defaults`;
    /// `min_message_mb` is the smallest message limit the role can work with.
    pub fn resolve(
        self,
        path: &Path,
        defaults: ServerLimits,
        min_message_mb: u64,
    ) -> Result<ServerLimits, ConfigError> {
        let max_connections = self.max_connections.unwrap_or(defaults.max_connections);
        let limits = ServerLimits {
            max_connections,
            max_message_mb: self.max_message_mb.unwrap_or(defaults.max_message_mb),
            request_timeout_seconds: self
                .request_timeout_seconds
                .unwrap_or(defaults.request_timeout_seconds),
            // Follows a `max_connections` the file sets, unless set itself.
            max_connections_per_peer: self
                .max_connections_per_peer
                .unwrap_or(default_per_peer(max_connections)),
            first_call_seconds: self
                .first_call_seconds
                .unwrap_or(defaults.first_call_seconds),
            idle_seconds: self.idle_seconds.unwrap_or(defaults.idle_seconds),
        };
        if limits.max_connections == 0 {
            return Err(invalid(
                path,
                "limits.max_connections",
                "must be at least 1",
            ));
        }
        if !(min_message_mb..=MAX_MESSAGE_MB).contains(&limits.max_message_mb) {
            return Err(invalid(
                path,
                "limits.max_message_mb",
                format!("must be between {min_message_mb} and {MAX_MESSAGE_MB}"),
            ));
        }
        if limits.request_timeout_seconds == 0 {
            return Err(invalid(
                path,
                "limits.request_timeout_seconds",
                "must be at least 1",
            ));
        }
        if !(1..=limits.max_connections).contains(&limits.max_connections_per_peer) {
            return Err(invalid(
                path,
                "limits.max_connections_per_peer",
                format!(
                    "must be between 1 and limits.max_connections ({})",
                    limits.max_connections
                ),
            ));
        }
        for (setting, value) in [
            ("limits.first_call_seconds", limits.first_call_seconds),
            ("limits.idle_seconds", limits.idle_seconds),
        ] {
            if value == 0 {
                return Err(invalid(path, setting, "must be at least 1"));
            }
        }
        Ok(limits)
    }
}

/// `[metrics]`: where a role keeps its counters for Prometheus.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsTable {
    /// A Prometheus text file kept up to date for an exporter's textfile collector; none
    /// when unset.
    pub file: Option<PathBuf>,
}

impl MetricsTable {
    /// This table with its paths resolved against the configuration file at `path`.
    pub fn resolved(self, path: &Path) -> Self {
        Self {
            file: self.file.map(|file| resolve(path, &file)),
        }
    }
}
