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
    #[test]
    fn an_address_is_http_or_https_to_a_host_and_a_port_that_exists() {
        let path = Path::new("agent.toml");
        for fine in [
            "http://127.0.0.1:7401",
            "https://cas.example.internal:7401/",
            "http://cas.example.internal",
            "https://[::1]:443",
            "http://h:65535",
            "http://h:1",
        ] {
            endpoint(path, "upstream", fine).unwrap_or_else(|e| panic!("{fine}: {e}"));
        }
        for (wrong, says) in [
            ("http://127.0.0.1:99999", "port 99999"),
            ("http://127.0.0.1:0", "port 0"),
            ("http://127.0.0.1:65536", "port 65536"),
            ("http://127.0.0.1:74o1", "port 74o1"),
            ("http://127.0.0.1:", "no port"),
            ("ftp://127.0.0.1:7401", "ftp://"),
            ("127.0.0.1:7401", "no http:// or https://"),
            ("http://127.0.0.1:7401/v1", "path"),
            ("http://127.0.0.1:7401?x=1", "query"),
            ("http://127.0.0.1:7401#x", "fragment"),
            ("http://:7401", "no host"),
            ("http:///x", "not a URL"),
            ("", "not a URL"),
        ] {
            let err = endpoint(path, "upstream", wrong)
                .expect_err(wrong)
                .to_string();
            assert!(
                err.contains("agent.toml") && err.contains("upstream:") && err.contains(says),
                "{wrong}: {err}"
            );
        }
    }

    #[test]
    fn an_address_with_a_password_is_refused_without_showing_it() {
        let err = endpoint(
            Path::new("cp.toml"),
            "intake",
            "https://hrs:Hunter2-SECRET@intake.example.com:7400",
        )
        .expect_err("credentials")
        .to_string();
        assert!(err.contains("intake") && err.contains("***@"), "{err}");
        assert!(!err.contains("SECRET") && !err.contains("hrs:"), "{err}");
    }

    /// Whether permission bits stop this process: they do not for root (as in many CI
    /// containers), where a file of mode 000 still opens, so refusals that rest on them
    /// cannot be seen there.
    #[cfg(unix)]
    fn permissions_apply(dir: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt as _;
        let probe = dir.join("mode-000");
        std::fs::write(&probe, "x").expect("writes");
        std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o000)).expect("chmod");
        let applies = std::fs::File::open(&probe).is_err();
        std::fs::remove_file(&probe).expect("removes");
        applies
    }

    #[test]
    fn a_file_the_role_writes_is_refused_as_a_folder_or_under_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("aggregator.toml");
        let folder = dir.path().join("merge.sqlite");
        std::fs::create_dir(&folder).expect("folder");
        let err = writable_file(&path, "store", &folder, Folder::Created)
            .expect_err("a folder")
            .to_string();
        assert!(
            err.contains("aggregator.toml")
                && err.contains("store:")
                && err.contains(&folder.display().to_string())
                && err.contains("is a folder"),
            "{err}"
        );

        let file = dir.path().join("plain");
        std::fs::write(&file, "x").expect("writes");
        let under = file.join("merge.sqlite");
        let err = writable_file(&path, "store", &under, Folder::Created)
            .expect_err("under a file")
            .to_string();
        assert!(
            err.contains("store:") && err.contains(&under.display().to_string()),
            "{err}"
        );

        // A store makes its folders; a metrics file's folder must be there.
        let nested = dir.path().join("new/deeper/merge.sqlite");
        writable_file(&path, "store", &nested, Folder::Created).expect("folders are made");
        let err = writable_file(&path, "metrics.file", &nested, Folder::MustExist)
            .expect_err("no folder")
            .to_string();
        assert!(
            err.contains("metrics.file:") && err.contains("does not exist"),
            "{err}"
        );
        writable_file(&path, "store", &file, Folder::Created).expect("an existing file");
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("lists").count(),
            2,
            "the checks leave nothing behind"
        );
        assert_eq!(std::fs::read(&file).expect("reads"), b"x", "left as it was");
    }

    #[cfg(unix)]
    #[test]
    fn a_file_in_a_folder_the_role_cannot_write_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("intake.toml");
        let locked = dir.path().join("locked");
        std::fs::create_dir(&locked).expect("folder");
        let existing = locked.join("old.sqlite");
        std::fs::write(&existing, "x").expect("writes");
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o444)).expect("chmod");
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).expect("chmod");
        let results = [
            writable_file(&path, "store", &locked.join("i.sqlite"), Folder::Created),
            writable_file(
                &path,
                "store",
                &locked.join("a/b/i.sqlite"),
                Folder::Created,
            ),
            writable_file(&path, "store", &existing, Folder::Created),
        ];
        let applies = permissions_apply(dir.path());
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        // As root the bits do not stop writing, so there is nothing to refuse.
        if !applies {
            return;
        }
        for result in results {
            let err = result.expect_err("not writable").to_string();
            assert!(
                err.contains("store:") && err.contains(&locked.display().to_string()),
                "{err}"
            );
        }
    }

    #[test]
    fn a_file_the_role_reads_must_be_there_and_be_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        let missing = dir.path().join("agent.key");
        let err = readable_file(&path, "tls.key", &missing)
            .expect_err("missing")
            .to_string();
        assert!(
            err.contains("tls.key:")
                && err.contains(&missing.display().to_string())
                && err.contains("does not exist"),
            "{err}"
        );
        let err = readable_file(&path, "tls.key", dir.path())
            .expect_err("a folder")
            .to_string();
        assert!(err.contains("is a folder"), "{err}");
        std::fs::write(&missing, "key").expect("writes");
        readable_file(&path, "tls.key", &missing).expect("readable");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&missing, std::fs::Permissions::from_mode(0o000))
                .expect("chmod");
            // As root a file of mode 000 still opens: only elsewhere is it refused.
            if permissions_apply(dir.path()) {
                let err = readable_file(&path, "tls.key", &missing)
                    .expect_err("unreadable")
                    .to_string();
                assert!(
                    err.contains("tls.key:") && err.contains("cannot be read"),
                    "{err}"
                );
            }
        }
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

impl MetricsTable {
    /// Checks at load that the metrics file can be written where it is configured: the
    /// role rewrites it whole (a new file beside it, renamed over it) and makes no folder.
    pub fn check(&self, path: &Path) -> Result<(), ConfigError> {
        match &self.file {
            Some(file) => writable_file(path, "metrics.file", file, Folder::MustExist),
            None => Ok(()),
        }
    }
}

impl TlsFiles {
    /// Checks at load that the certificate, the key and the CA can be read, so a missing
    /// or unreadable one is named before the role starts rather than at its first call.
    pub fn check(&self, path: &Path) -> Result<(), ConfigError> {
        readable_file(path, "tls.cert", &self.cert)?;
        readable_file(path, "tls.key", &self.key)?;
        readable_file(path, "tls.ca", &self.ca)
    }
}

/// Checks an address setting that a role connects to: `http://` or `https://`, a host,
/// a port (written or the scheme's) from 1 to 65535, and nothing after it but `/`.
///
/// tonic accepts a port it cannot use and a path it ignores, so such a mistake would
/// otherwise show only as an unreachable upstream once the role runs.
pub fn endpoint(path: &Path, field: &str, value: &str) -> Result<(), ConfigError> {
    let shown = without_credentials(value);
    let refuse = |problem: String| invalid(path, field, format!("{shown:?} {problem}"));
    let example = "e.g. http://host:7401 or https://host:7401";
    if value.contains('#') {
        return Err(refuse(format!(
            "has a fragment (#): give scheme, host and port only, {example}"
        )));
    }
    let uri: http::Uri = value
        .parse()
        .map_err(|_| refuse(format!("is not a URL, {example}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(scheme) => {
            return Err(refuse(format!(
                "is a {scheme}:// address: give an http:// or https:// one, {example}"
            )));
        }
        None => {
            return Err(refuse(format!(
                "has no http:// or https:// before the host, {example}"
            )));
        }
    }
    let Some(authority) = uri.authority() else {
        return Err(refuse(format!("names no host, {example}")));
    };
    if authority.as_str().contains('@') {
        return Err(refuse(
            "carries a user or password before the host: roles never send them from a URL, \
             and logs would show them"
                .to_owned(),
        ));
    }
    let host = authority.host();
    if host.is_empty() {
        return Err(refuse(format!("names no host, {example}")));
    }
    // `Uri` drops a port that does not fit in 16 bits instead of refusing it, so the
    // written port is read from the text after the host.
    if let Some(port) = authority.as_str()[host.len()..].strip_prefix(':') {
        match port.parse::<u32>() {
            Ok(1..=65535) => {}
            _ if port.is_empty() => {
                return Err(refuse("has no port after its ':'".to_owned()));
            }
            _ => {
                return Err(refuse(format!(
                    "has port {port}: a port is from 1 to 65535"
                )));
            }
        }
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(refuse(format!(
            "has a path or query: give scheme, host and port only, {example}"
        )));
    }
    Ok(())
}

/// `value` with whatever stands between `://` and an `@` of its host part replaced by
/// `***`, so a message never repeats a password written into a URL.
fn without_credentials(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => value.to_owned(),
    }
}

/// Whether a role makes the missing folders of a file it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folder {
    /// It makes them, as every store does: the nearest folder that exists must then let
    /// the role create in it.
    Created,
    /// It does not: the file's own folder must exist and let the role create in it.
    MustExist,
}

/// Checks at load that a file the role creates or rewrites (a store, a metrics file) can
/// be: not a folder, writable if it exists, and in a folder the role may create files in
/// (SQLite keeps its journal beside the store, metrics files are renamed into place).
///
/// A refused path is an operator's mistake that restarting cannot mend, so it is a
/// [`ConfigError`] naming the setting and the path, not a failure of the running role.
/// The folder is tried by creating an empty file in it and removing it at once: the only
/// test that answers for permissions, ownership, ACLs and read-only mounts alike.
pub fn writable_file(
    path: &Path,
    field: &str,
    file: &Path,
    folder: Folder,
) -> Result<(), ConfigError> {
    let refuse = |problem: String| invalid(path, field, problem);
    let shown = file.display();
    if file.as_os_str().is_empty() {
        return Err(refuse("is empty".to_owned()));
    }
    match std::fs::metadata(file) {
        Ok(meta) if meta.is_dir() => {
            return Err(refuse(format!("{shown} is a folder, not a file")));
        }
        Ok(meta) if !meta.is_file() => {
            return Err(refuse(format!("{shown} is not a regular file")));
        }
        Ok(_) => {
            // Opened for writing without truncating: the file is left as it was.
            std::fs::OpenOptions::new()
                .write(true)
                .open(file)
                .map_err(|e| refuse(format!("{shown} cannot be written: {e}")))?;
        }
        // What stands in the way is named by the walk up the folders below.
        Err(_) => {}
    }
    let parent = parent_of(file);
    let mut at = parent;
    let existing = loop {
        match std::fs::metadata(at) {
            Ok(meta) if meta.is_dir() => break at,
            Ok(_) => {
                return Err(refuse(format!(
                    "{shown} cannot be made: {} is a file, not a folder",
                    at.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if folder == Folder::MustExist {
                    return Err(refuse(format!(
                        "{shown} cannot be made: its folder {} does not exist",
                        parent.display()
                    )));
                }
                at = match at.parent() {
                    Some(up) if !up.as_os_str().is_empty() => up,
                    // A relative path's first folder is missing: the role creates it here.
                    Some(_) if at != Path::new(".") => Path::new("."),
                    _ => return Err(refuse(format!("{shown} cannot be made: {e}"))),
                };
            }
            Err(e) => {
                return Err(refuse(format!(
                    "{shown} cannot be reached: {}: {e}",
                    at.display()
                )));
            }
        }
    };
    creatable_in(existing).map_err(|e| {
        refuse(if existing == parent {
            format!(
                "{shown} cannot be written: no file can be created in its folder {}: {e}",
                parent.display()
            )
        } else {
            format!(
                "{shown} cannot be written: its folder {} does not exist and cannot be \
                 created in {}: {e}",
                parent.display(),
                existing.display()
            )
        })
    })
}

/// The folder `file` is in, `.` for a bare file name.
fn parent_of(file: &Path) -> &Path {
    match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Creates an empty file in `folder` and removes it, to learn whether the role may
/// create files there.
fn creatable_in(folder: &Path) -> std::io::Result<()> {
    // Unique within the process, so checks on several threads never share a name.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut tries = 0;
    loop {
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let probe = folder.join(format!(".hrs-write-check-{}-{n}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
        {
            Ok(_) => return std::fs::remove_file(&probe),
            // Left by a check that was killed: try another name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 100 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Checks at load that a file the role reads (a key, a certificate, a password file)
/// exists, is a file and opens for reading, naming the setting and the path when not.
pub fn readable_file(path: &Path, field: &str, file: &Path) -> Result<(), ConfigError> {
    let refuse = |problem: String| invalid(path, field, problem);
    let shown = file.display();
    match std::fs::metadata(file) {
        Ok(meta) if meta.is_dir() => Err(refuse(format!("{shown} is a folder, not a file"))),
        // Opening a pipe or a device could block the load, and none is a file to read.
        Ok(meta) if !meta.is_file() => Err(refuse(format!("{shown} is not a regular file"))),
        Ok(_) => std::fs::File::open(file)
            .map(drop)
            .map_err(|e| refuse(format!("{shown} cannot be read: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(refuse(format!("{shown} does not exist")))
        }
        Err(e) => Err(refuse(format!("{shown} cannot be read: {e}"))),
    }
}
