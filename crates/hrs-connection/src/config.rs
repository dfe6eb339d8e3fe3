//! The connection point's configuration file, shared with the connection tool: which
//! hierarchy it serves, what level of data may leave, and whether it submits online or
//! writes bundles for removable media. Checked in full before any port is bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hrs_core::config::{self, ConfigError, LimitsTable, MetricsTable, ServerLimits, TlsFiles};
use hrs_core::hash::Hasher;
use hrs_core::secret::PasswordSource;
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

/// The connection point's file as written: [`ConnectionPointConfig::load`] checks it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectionPointFile {
    listen: SocketAddr,
    hierarchy_id: HierarchyId,
    #[serde(default = "default_level")]
    level: Level,
    mode: Mode,
    store: PathBuf,
    #[serde(default)]
    intake: Option<String>,
    #[serde(default = "default_retry_seconds")]
    retry_seconds: u64,
    #[serde(default = "default_check_hours")]
    check_hours: u64,
    #[serde(default = "default_recheck_minutes")]
    recheck_minutes: u64,
    #[serde(default)]
    hash_key_file: Option<PathBuf>,
    #[serde(default)]
    intake_ca: Option<PathBuf>,
    #[serde(default)]
    intake_token_file: Option<PathBuf>,
    #[serde(default)]
    proxy: Option<String>,
    #[serde(default)]
    proxy_user: Option<String>,
    #[serde(default)]
    proxy_password_env: Option<String>,
    #[serde(default)]
    proxy_password_file: Option<PathBuf>,
    #[serde(default)]
    tls: Option<TlsFiles>,
    #[serde(default)]
    limits: LimitsTable,
    #[serde(default)]
    metrics: MetricsTable,
}

/// How the connection point runs, checked: read with [`ConnectionPointConfig::load`].
#[derive(Debug, Clone)]
pub struct ConnectionPointConfig {
    /// Address the gRPC service listens on; the top-level aggregator offers periods here.
    pub listen: SocketAddr,
    /// The hierarchy's ID in clear; offered periods must carry its hash, so data of another
    /// hierarchy is never sent under this one's name.
    pub hierarchy_id: HierarchyId,
    /// The level configured now: what leaves is filtered to it, whatever level the data was
    /// collected at.
    pub level: Level,
    /// Online (submit to the intake) or offline (write bundles).
    pub mode: Mode,
    /// The SQLite file holding received periods and their delivery state.
    pub store: PathBuf,
    /// URL of the intake, e.g. `http://127.0.0.1:7400`; required when online.
    pub intake: Option<String>,
    /// Seconds to wait before retrying an update check that could not submit everything.
    pub retry_seconds: u64,
    /// Hours between update checks (online); each check submits every unsent period.
    pub check_hours: u64,
    /// Minutes until the next check after one that found no applicable update.
    pub recheck_minutes: u64,
    /// How site codes are hashed on the way out: keyed (HMAC-SHA-256) with the
    /// hierarchy's `hash_key_file`, so they cannot be guessed outside, else plain SHA-256.
    pub hasher: Hasher,
    /// The CA the intake's certificate must come from, for an `https://` intake; defaults
    /// to `[tls] ca`. Set it when the intake is not part of the hierarchy's PKI.
    pub intake_ca: Option<PathBuf>,
    /// This hierarchy's intake token (from `intake_token_file`), for a connection point
    /// that cannot hold a client certificate: sent with every submission, over `https://`.
    pub intake_token: Option<Token>,
    /// The HTTP proxy the intake is reached through (CONNECT), with its password, from
    /// the `proxy*` settings.
    pub intake_proxy: Option<hrs_rpc::proxy::Proxy>,
    /// This connection point's certificate, its key, and the hierarchy's CA (`[tls]`; none
    /// for plaintext): the aggregator must then connect with the aggregator's certificate,
    /// and the intake is reached over TLS with this one.
    pub tls: Option<TlsFiles>,
    /// The limits on its callers (`[limits]`; only aggregators connect here).
    pub limits: ServerLimits,
    /// Where it keeps its counters (`[metrics]`).
    pub metrics: MetricsTable,
    /// The file this configuration was read from, so messages can point at it.
    pub source: Option<PathBuf>,
}

fn default_level() -> Level {
    Level::Enhanced
}

fn default_retry_seconds() -> u64 {
    30
}

/// Aggregators served at once, unless `[limits]` says otherwise: only they connect here.
const DEFAULT_MAX_CONNECTIONS: u32 = 64;

fn default_check_hours() -> u64 {
    24
}

fn default_recheck_minutes() -> u64 {
    60
}

impl ConnectionPointConfig {
    /// Reads, resolves and checks the configuration file at `path`, then the files it
    /// names ([`ConnectionPointConfig::check_files`]): everything the connection point
    /// and the connection tool need to know before they start, without opening the store
    /// or binding.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let this = Self::read(path)?;
        this.check_files(path)?;
        Ok(this)
    }

    /// Reads, resolves and checks the configuration file at `path`, reading only the files
    /// its values are made of (the hash key, the intake token, the proxy password): for a
    /// file written for another machine, whose other paths need not exist here, such as
    /// the examples in `deploy/`.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let file: ConnectionPointFile = config::load(path)?;
        let hash_key_file = file.hash_key_file.map(|f| config::resolve(path, &f));
        if let Some(key) = &hash_key_file {
            config::readable_file(path, "hash_key_file", key)?;
        }
        let hasher = Hasher::from_key_file(hash_key_file.as_deref())
            .map_err(|e| config::invalid(path, "hash_key_file", e.to_string()))?;
        let proxy_password_file = file.proxy_password_file.map(|f| config::resolve(path, &f));
        if let Some(password) = &proxy_password_file {
            config::readable_file(path, "proxy_password_file", password)?;
        }
        let password = match (&file.proxy_password_env, &proxy_password_file) {
            (Some(_), Some(_)) => {
                return Err(config::invalid(
                    path,
                    "proxy_password_file",
                    "give proxy_password_env or proxy_password_file, not both",
                ));
            }
            (env, file) => PasswordSource::from_options(env.as_deref(), file.as_deref()),
        };
        let intake_proxy = match &file.proxy {
            Some(url) => Some(
                hrs_rpc::proxy::Proxy::from_settings(
                    url,
                    file.proxy_user.as_deref(),
                    password.as_ref(),
                )
                .map_err(|e| config::invalid(path, "proxy", e.to_string()))?,
            ),
            None if file.proxy_user.is_some() || password.is_some() => {
                return Err(config::invalid(
                    path,
                    "proxy",
                    "is required when proxy_user or a proxy password is set",
                ));
            }
            None => None,
        };
        let intake_token = match &file.intake_token_file {
            Some(token_file) => {
                let token_file = config::resolve(path, token_file);
                config::readable_file(path, "intake_token_file", &token_file)?;
                Some(
                    Token::load(&token_file)
                        .map_err(|e| config::invalid(path, "intake_token_file", e.to_string()))?,
                )
            }
            None => None,
        };
        // The intake's scheme is not tied to these settings: a vendor's intake may serve
        // TLS under a public certificate that needs no client certificate.
        let tls = config::tls_settings(path, file.tls, &[])?;
        let this = Self {
            listen: file.listen,
            hierarchy_id: file.hierarchy_id,
            level: file.level,
            mode: file.mode,
            store: config::resolve(path, &file.store),
            intake: file.intake,
            retry_seconds: file.retry_seconds,
            check_hours: file.check_hours,
            recheck_minutes: file.recheck_minutes,
            hasher,
            intake_ca: file.intake_ca.map(|f| config::resolve(path, &f)),
            intake_token,
            intake_proxy,
            tls,
            limits: file.limits.resolve(
                path,
                ServerLimits::with_max_connections(DEFAULT_MAX_CONNECTIONS),
                1,
            )?,
            metrics: file.metrics.resolved(path),
            source: Some(path.to_owned()),
        };
        this.check(path)?;
        Ok(this)
    }

    /// How the intake is reached over TLS: `None` for an `http://` intake; otherwise its
    /// certificate is verified against `intake_ca` (or `[tls] ca`), and this connection
    /// point's certificate is presented when it has one.
    pub fn intake_tls(&self) -> Option<hrs_rpc::tls::ClientTls> {
        let url = self.intake.as_deref()?;
        if !url.starts_with("https://") {
            return None;
        }
        Some(hrs_rpc::tls::ClientTls {
            ca: self
                .intake_ca
                .clone()
                .or_else(|| self.tls.as_ref().map(|tls| tls.ca.clone()))?,
            identity: self
                .tls
                .as_ref()
                .map(|tls| (tls.cert.clone(), tls.key.clone())),
        })
    }

    /// Checks the files this configuration names as the connection point will use them:
    /// the store and the metrics file can be written, the TLS files and the intake's CA
    /// read. (The hash key, token and proxy password are read by [`Self::read`].)
    pub fn check_files(&self, path: &Path) -> Result<(), ConfigError> {
        if let Some(tls) = &self.tls {
            tls.check(path)?;
        }
        if let Some(ca) = &self.intake_ca {
            config::readable_file(path, "intake_ca", ca)?;
        }
        config::writable_file(path, "store", &self.store, config::Folder::Created)?;
        self.metrics.check(path)
    }

    /// The CA the intake's signatures (on acknowledgements and update manifests) are
    /// checked against: `intake_ca`, else `[tls] ca`; none for a connection point without
    /// a PKI, which then has nothing to check them with.
    pub fn intake_signature_ca(&self) -> Option<&Path> {
        self.intake_ca
            .as_deref()
            .or_else(|| self.tls.as_ref().map(|tls| tls.ca.as_path()))
    }

    /// Checks values that parse but cannot work together, naming the field.
    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        if self.store.as_os_str().is_empty() {
            return Err(config::invalid(path, "store", "is empty"));
        }
        // Checked in either mode: offline, the connection tool may still be pointed at it.
        if let Some(url) = &self.intake {
            config::endpoint(path, "intake", url)?;
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
                if url.starts_with("https://") && self.intake_tls().is_none() {
                    return Err(config::invalid(
                        path,
                        "intake_ca",
                        "is required for an https:// intake without a [tls] table (the CA the intake's certificate comes from)",
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
        std::fs::write(dir.path().join("intake-ca.pem"), "x").expect("writes");
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
    fn an_intake_or_proxy_address_that_cannot_be_reached_is_refused_at_load() {
        for mode in ["online", "offline"] {
            for (url, says) in [
                ("http://127.0.0.1:99999", "port 99999"),
                ("http://127.0.0.1:0", "port 0"),
                ("ftp://127.0.0.1:7400", "ftp://"),
                ("http://127.0.0.1:7400/submit", "path"),
            ] {
                let (_dir, err) = load(&format!("{BASE}mode = \"{mode}\"\nintake = \"{url}\"\n"));
                let err = err.expect_err(url).to_string();
                assert!(
                    err.contains("cp.toml") && err.contains("intake:") && err.contains(says),
                    "{mode}, {url}: {err}"
                );
            }
        }
        for (proxy, says) in [
            ("http://127.0.0.1:99999", "65535"),
            ("http://127.0.0.1:0", "port 0"),
            ("ftp://127.0.0.1:3128", "ftp://"),
        ] {
            let (_dir, err) = load(&format!(
                "{BASE}mode = \"online\"\nintake = \"http://127.0.0.1:7400\"\nproxy = \"{proxy}\"\n"
            ));
            let err = err.expect_err(proxy).to_string();
            assert!(
                err.contains("proxy:") && err.contains(says),
                "{proxy}: {err}"
            );
        }
    }

    #[test]
    fn a_store_that_is_a_folder_or_a_file_that_cannot_be_read_is_named_at_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("cp.sqlite")).expect("folder");
        let path = dir.path().join("cp.toml");
        std::fs::write(&path, format!("{BASE}mode = \"offline\"\n")).expect("writes");
        let err = ConnectionPointConfig::load(&path)
            .expect_err("a folder")
            .to_string();
        let folder = dir.path().join("cp.sqlite").display().to_string();
        assert!(
            err.contains("store:") && err.contains(&folder) && err.contains("is a folder"),
            "{err}"
        );
        ConnectionPointConfig::read(&path).expect("read looks at no store");
        std::fs::remove_dir(dir.path().join("cp.sqlite")).expect("removes");
        std::fs::create_dir(dir.path().join("tokens")).expect("folder");

        for (line, field, file) in [
            (
                "intake = \"https://127.0.0.1:7400\"\nintake_ca = \"intake-ca.pem\"\n",
                "intake_ca",
                "intake-ca.pem",
            ),
            (
                "intake = \"http://127.0.0.1:7400\"\nintake_token_file = \"tokens\"\n",
                "intake_token_file",
                "tokens",
            ),
            (
                "intake = \"http://127.0.0.1:7400\"\nhash_key_file = \"hierarchy.key\"\n",
                "hash_key_file",
                "hierarchy.key",
            ),
        ] {
            std::fs::write(&path, format!("{BASE}mode = \"online\"\n{line}")).expect("writes");
            let err = ConnectionPointConfig::load(&path)
                .expect_err(field)
                .to_string();
            let shown = dir.path().join(file).display().to_string();
            assert!(
                err.contains(&format!("{field}:")) && err.contains(&shown),
                "{field}: {err}"
            );
        }
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
