//! The connection point's configuration file, shared with the connection tool: which
//! hierarchy it serves, what level of data may leave, and whether it submits online or
//! writes bundles for removable media. Checked in full before any port is bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hrs_core::config::{self, ConfigError};
use hrs_core::hash::Hasher;
use hrs_core::token::Token;
use hrs_core::{HierarchyId, Level};
use serde::Deserialize;

/// How data leaves the hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Submit each period to the intake as soon as it arrives.
    Online,
    /// Write each period as a bundle file for an administrator to carry out.
    Offline,
}

impl Mode {
    /// Returns the mode's name as written in configuration.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Offline => "offline",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the connection point runs, read from a TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionPointConfig {
    /// Address the gRPC service listens on; the top-level aggregator offers periods here.
    pub listen: SocketAddr,
    /// The hierarchy's ID in clear; offered periods must carry its hash, so data of another
    /// hierarchy is never sent under this one's name.
    pub hierarchy_id: HierarchyId,
    /// The level configured now: what leaves is filtered to it, whatever level the data was
    /// collected at.
    #[serde(default = "default_level")]
    pub level: Level,
    /// Online (submit to the intake) or offline (write bundles).
    pub mode: Mode,
    /// The SQLite file holding received periods and their delivery state.
    pub store: PathBuf,
    /// URL of the intake, e.g. `http://127.0.0.1:7400`; required when online.
    #[serde(default)]
    pub intake: Option<String>,
    /// Seconds to wait before retrying an update check that could not submit everything.
    #[serde(default = "default_retry_seconds")]
    pub retry_seconds: u64,
    /// Hours between update checks (online); each check submits every unsent period.
    #[serde(default = "default_check_hours")]
    pub check_hours: u64,
    /// Minutes until the next check after one that found no applicable update.
    #[serde(default = "default_recheck_minutes")]
    pub recheck_minutes: u64,
    /// The hierarchy's hash key file: site codes leaving below Full are then hashed keyed
    /// (HMAC-SHA-256) instead of plain SHA-256, so they cannot be guessed outside.
    #[serde(default)]
    pub hash_key_file: Option<PathBuf>,
    /// This connection point's certificate, its key, and the hierarchy's CA (all three, or
    /// none for plaintext): the aggregator must then connect with the aggregator's
    /// certificate, and the intake is reached over TLS with this one.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// See `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// See `tls_cert`.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// The CA the intake's certificate must come from, for an `https://` intake; defaults
    /// to `tls_ca`. Set it when the intake is not part of the hierarchy's PKI.
    #[serde(default)]
    pub intake_ca: Option<PathBuf>,
    /// A file holding this hierarchy's intake token, for a connection point that cannot
    /// hold a client certificate: sent with every submission, over `https://` only.
    #[serde(default)]
    pub intake_token_file: Option<PathBuf>,
    /// A Prometheus text file the role keeps its refusal counts in, for an exporter's
    /// textfile collector; none when unset.
    #[serde(default)]
    pub metrics_file: Option<PathBuf>,
    /// An HTTP proxy the intake is reached through (CONNECT), `http://host:port`.
    #[serde(default)]
    pub proxy: Option<String>,
    /// The proxy's user, for a proxy that asks for Basic authentication.
    #[serde(default)]
    pub proxy_user: Option<String>,
    /// The environment variable holding the proxy user's password.
    #[serde(default)]
    pub proxy_password_env: Option<String>,
    /// Or a file holding it (one line).
    #[serde(default)]
    pub proxy_password_file: Option<PathBuf>,
    /// Connections served at once (only aggregators connect here).
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Largest message received or sent, in MiB: a merged period.
    #[serde(default = "config::default_max_message_mb")]
    pub max_message_mb: u64,
    /// Longest a call may take, in seconds.
    #[serde(default = "config::default_request_timeout_seconds")]
    pub request_timeout_seconds: u64,
    /// How site codes are hashed on the way out; loaded from `hash_key_file`.
    #[serde(skip)]
    pub hasher: Hasher,
    /// The intake token, loaded from `intake_token_file`.
    #[serde(skip)]
    pub intake_token: Option<Token>,
    /// The proxy, with its password, from the `proxy*` settings.
    #[serde(skip)]
    pub intake_proxy: Option<hrs_rpc::proxy::Proxy>,
    /// The file this configuration was read from, so messages can point at it.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

fn default_level() -> Level {
    Level::Enhanced
}

fn default_retry_seconds() -> u64 {
    30
}

fn default_max_connections() -> u32 {
    64
}

fn default_check_hours() -> u64 {
    24
}

fn default_recheck_minutes() -> u64 {
    60
}

impl ConnectionPointConfig {
    /// Reads, resolves and checks the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut this: Self = config::load(path)?;
        this.store = config::resolve(path, &this.store);
        this.metrics_file = this.metrics_file.map(|file| config::resolve(path, &file));
        this.source = Some(path.to_owned());
        this.hash_key_file = this.hash_key_file.map(|file| config::resolve(path, &file));
        this.hasher = Hasher::from_key_file(this.hash_key_file.as_deref())
            .map_err(|e| config::invalid(path, "hash_key_file", e.to_string()))?;
        this.intake_ca = this.intake_ca.map(|file| config::resolve(path, &file));
        this.intake_token_file = this
            .intake_token_file
            .map(|file| config::resolve(path, &file));
        this.proxy_password_file = this
            .proxy_password_file
            .map(|file| config::resolve(path, &file));
        let password = match (&this.proxy_password_env, &this.proxy_password_file) {
            (Some(_), Some(_)) => {
                return Err(config::invalid(
                    path,
                    "proxy_password_file",
                    "give proxy_password_env or proxy_password_file, not both",
                ));
            }
            (Some(env), None) => Some(hrs_core::secret::PasswordSource::Env(env.clone())),
            (None, Some(file)) => Some(hrs_core::secret::PasswordSource::File(file.clone())),
            (None, None) => None,
        };
        this.intake_proxy = match &this.proxy {
            Some(url) => Some(
                hrs_rpc::proxy::Proxy::from_settings(
                    url,
                    this.proxy_user.as_deref(),
                    password.as_ref(),
                )
                .map_err(|e| config::invalid(path, "proxy", e.to_string()))?,
            ),
            None if this.proxy_user.is_some() || password.is_some() => {
                return Err(config::invalid(
                    path,
                    "proxy",
                    "is required when proxy_user or a proxy password is set",
                ));
            }
            None => None,
        };
        this.intake_token = match &this.intake_token_file {
            Some(file) => Some(
                Token::load(file)
                    .map_err(|e| config::invalid(path, "intake_token_file", e.to_string()))?,
            ),
            None => None,
        };
        // The intake's scheme is not tied to these settings: a vendor's intake may serve
        // TLS under a public certificate that needs no client certificate.
        config::tls_settings(
            path,
            config::TlsSettings {
                cert: &mut this.tls_cert,
                key: &mut this.tls_key,
                ca: &mut this.tls_ca,
            },
            &[],
        )?;
        this.check(path)?;
        Ok(this)
    }

    /// The TLS files, when TLS is configured.
    pub fn tls(&self) -> Option<hrs_rpc::tls::TlsFiles> {
        hrs_rpc::tls::TlsFiles::of(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_ca.as_deref(),
        )
    }

    /// The limits on this connection point's callers.
    pub fn limits(&self) -> config::ServerLimits {
        config::ServerLimits {
            max_connections: self.max_connections,
            max_message_mb: self.max_message_mb,
            request_timeout_seconds: self.request_timeout_seconds,
        }
    }

    /// How the intake is reached over TLS: `None` for an `http://` intake; otherwise its
    /// certificate is verified against `intake_ca` (or `tls_ca`), and this connection
    /// point's certificate is presented when it has one.
    pub fn intake_tls(&self) -> Option<hrs_rpc::tls::ClientTls> {
        let url = self.intake.as_deref()?;
        if !url.starts_with("https://") {
            return None;
        }
        Some(hrs_rpc::tls::ClientTls {
            ca: self.intake_ca.clone().or_else(|| self.tls_ca.clone())?,
            identity: self.tls_cert.clone().zip(self.tls_key.clone()),
        })
    }

    /// Checks values that parse but cannot work together, naming the field.
    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        self.limits().check(path, 1)?;
        if self.store.as_os_str().is_empty() {
            return Err(config::invalid(path, "store", "is empty"));
        }
        for (field, value) in [
            ("retry_seconds", self.retry_seconds),
            ("check_hours", self.check_hours),
            ("recheck_minutes", self.recheck_minutes),
        ] {
            if value == 0 {
                return Err(config::invalid(path, field, "must be at least 1"));
            }
        }
        match self.mode {
            Mode::Online => {
                let Some(url) = &self.intake else {
                    return Err(config::invalid(
                        path,
                        "intake",
                        "is required when mode = \"online\" (the intake's URL, e.g. http://127.0.0.1:7400)",
                    ));
                };
                check_url(url).map_err(|problem| config::invalid(path, "intake", problem))?;
                if url.starts_with("https://") && self.intake_tls().is_none() {
                    return Err(config::invalid(
                        path,
                        "intake_ca",
                        "is required for an https:// intake when tls_ca is not set (the CA the intake's certificate comes from)",
                    ));
                }
                if self.intake_token.is_some() && !url.starts_with("https://") {
                    return Err(config::invalid(
                        path,
                        "intake_token_file",
                        "needs an https:// intake: a token must not cross the network in clear",
                    ));
                }
            }
            // Offline, the connection tool carries periods out; nothing to check here.
            Mode::Offline => {}
        }
        Ok(())
    }

    /// Returns how messages name this configuration: its file, when it was read from one.
    pub fn describe(&self) -> String {
        match &self.source {
            Some(path) => path.display().to_string(),
            None => "the connection point configuration".to_owned(),
        }
    }
}

/// Checks that `url` is an http(s) URL tonic can connect to.
fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    }
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .map(drop)
        .map_err(|e| format!("{url:?} is not a valid URL: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "listen = \"127.0.0.1:7300\"\n\
        hierarchy_id = \"6f9619ff-8b86-d011-b42d-00c04fc964ff\"\n\
        store = \"cp.sqlite\"\n";

    fn load(
        text: &str,
    ) -> (
        tempfile::TempDir,
        Result<ConnectionPointConfig, ConfigError>,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cp.toml");
        std::fs::write(&path, text).expect("writes config");
        let result = ConnectionPointConfig::load(&path);
        (dir, result)
    }

    #[test]
    fn a_token_goes_only_over_https_to_a_verified_intake_and_is_never_printed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = Token::generate();
        std::fs::write(dir.path().join("intake.token"), token.expose()).expect("writes");
        let write = |text: &str| {
            let path = dir.path().join("cp.toml");
            std::fs::write(&path, text).expect("writes config");
            ConnectionPointConfig::load(&path)
        };
        let online = format!("{BASE}mode = \"online\"\nintake_token_file = \"intake.token\"\n");

        let err = write(&format!("{online}intake = \"http://127.0.0.1:7400\"\n"))
            .expect_err("a token in clear")
            .to_string();
        assert!(err.contains("intake_token_file"), "{err}");
        let err = write(&format!("{online}intake = \"https://127.0.0.1:7400\"\n"))
            .expect_err("no CA for the intake")
            .to_string();
        assert!(err.contains("intake_ca"), "{err}");

        let config = write(&format!(
            "{online}intake = \"https://127.0.0.1:7400\"\nintake_ca = \"intake-ca.pem\"\n"
        ))
        .expect("loads");
        assert_eq!(config.intake_token.as_ref(), Some(&token));
        let tls = config.intake_tls().expect("https");
        assert_eq!(tls.ca, dir.path().join("intake-ca.pem"));
        assert_eq!(tls.identity, None, "no client certificate to present");
        assert!(!format!("{config:?}").contains(token.expose()));

        std::fs::write(dir.path().join("intake.token"), "short").expect("writes");
        let err = write(&format!(
            "{online}intake = \"https://127.0.0.1:7400\"\nintake_ca = \"intake-ca.pem\"\n"
        ))
        .expect_err("a short token")
        .to_string();
        assert!(
            err.contains("intake_token_file") && !err.contains("short"),
            "{err}"
        );
    }

    #[test]
    fn online_needs_an_intake() {
        let (_dir, err) = load(&format!("{BASE}mode = \"online\"\n"));
        let err = err.expect_err("no intake").to_string();
        assert!(err.contains("intake"), "{err}");

        let (_dir, config) = load(&format!("{BASE}mode = \"offline\"\n"));
        config.expect("offline needs nothing more: the connection tool carries periods out");

        let (_dir, err) = load(&format!(
            "{BASE}mode = \"online\"\nintake = \"127.0.0.1:7400\"\n"
        ));
        let err = err.expect_err("not a URL").to_string();
        assert!(err.contains("intake"), "{err}");

        let (_dir, err) = load(&format!("{BASE}mode = \"Online\"\n"));
        assert!(err.is_err(), "modes are lowercase");
    }

    #[test]
    fn resolves_paths_and_applies_defaults() {
        let (dir, config) = load(&format!("{BASE}mode = \"offline\"\n"));
        let config = config.expect("loads");
        assert_eq!(config.store, dir.path().join("cp.sqlite"));
        assert_eq!((config.check_hours, config.recheck_minutes), (24, 60));
        assert_eq!(config.level, Level::Enhanced);
        assert_eq!(config.retry_seconds, 30);
        assert_eq!(config.mode, Mode::Offline);
        assert_eq!(config.source, Some(dir.path().join("cp.toml")));
    }

    #[test]
    fn refuses_unknown_keys() {
        let (_dir, err) = load(&format!(
            "{BASE}mode = \"online\"\nintake = \"http://127.0.0.1:7400\"\nproxy = \"x\"\n"
        ));
        let err = err.expect_err("unknown key").to_string();
        assert!(err.contains("proxy"), "{err}");
    }
}
