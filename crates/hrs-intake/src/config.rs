//! The intake's configuration file: where it listens, where it keeps submissions, how
//! long it keeps them, and which updates it offers. Checked in full (the update catalog
//! too) before any port is bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hrs_core::config::{self, ConfigError, LimitsTable, MetricsTable, ServerLimits, TlsFiles};
use serde::Deserialize;

use crate::updates::UpdateCatalog;

/// The intake's file as written: [`IntakeConfig::load`] checks it into the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct IntakeFile {
    listen: SocketAddr,
    store: PathBuf,
    #[serde(default = "default_retention_days")]
    retention_days: u32,
    #[serde(default = "default_max_submission_mb")]
    max_submission_mb: u64,
    #[serde(default)]
    hierarchy_tokens: Vec<HierarchyToken>,
    #[serde(default)]
    update_catalog: Option<PathBuf>,
    #[serde(default)]
    tls: Option<TlsFiles>,
    #[serde(default)]
    limits: LimitsTable,
    #[serde(default)]
    metrics: MetricsTable,
}

/// How the intake runs, checked: read with [`IntakeConfig::load`], or made in code with
/// [`IntakeConfig::new`].
#[derive(Debug, Clone)]
pub struct IntakeConfig {
    /// Address the gRPC service listens on, e.g. `127.0.0.1:7400`; connection points and
    /// the connection tool submit here.
    pub listen: SocketAddr,
    /// The SQLite file holding submissions; relative paths are resolved against the
    /// config file's folder so a deployment folder can be moved as a whole.
    pub store: PathBuf,
    /// Days a submission is kept before it is pruned (the vendor keeps data one year).
    pub retention_days: u32,
    /// Largest submission (its encoding) a hierarchy may send in chunks, in MiB; a larger
    /// offer is refused before any byte is stored.
    pub max_submission_mb: u64,
    /// Hierarchies whose connection point may present a token instead of a client
    /// certificate (TLS is then still required, client certificates become optional).
    pub hierarchy_tokens: Vec<HierarchyToken>,
    /// The update catalog (TOML) the intake decides update manifests from and serves
    /// packages of; relative to the config file's folder. None: nothing ever applies.
    pub update_catalog: Option<PathBuf>,
    /// The intake's certificate, its key, and the CA of the hierarchies it serves
    /// (`[tls]`; none for plaintext): connection points must then connect with their
    /// connection point certificate, which acts for the hierarchy it names only.
    pub tls: Option<TlsFiles>,
    /// The limits on its callers (`[limits]`).
    pub limits: ServerLimits,
    /// Where it keeps its counters (`[metrics]`).
    pub metrics: MetricsTable,
    /// The catalog as `load` read it, with the file it came from, so `serve` does not
    /// hash every package again.
    loaded_updates: Option<(PathBuf, Arc<UpdateCatalog>)>,
}

/// One hierarchy's token, as the intake keeps it: never the token, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HierarchyToken {
    /// The hashed hierarchy ID, as the hierarchy's submissions carry it.
    pub hierarchy: String,
    /// SHA-256 of the token in lowercase hex (`hrs intake token` prints it).
    pub token_sha256: String,
}

/// Connection points served at once, unless `[limits]` says otherwise.
const DEFAULT_MAX_CONNECTIONS: u32 = 1024;

fn default_retention_days() -> u32 {
    365
}

/// The largest submission the store can hold: SQLite keeps one in a blob, which it caps
/// at 10^9 bytes; in MiB.
pub(crate) const MAX_SUBMISSION_MB: u64 = 953;

fn default_max_submission_mb() -> u64 {
    MAX_SUBMISSION_MB
}

impl IntakeConfig {
    /// An intake listening on `listen` and storing in `store`, every other setting at its
    /// default (plaintext): for tests and demos that build configurations in code.
    pub fn new(listen: SocketAddr, store: PathBuf) -> Self {
        Self {
            listen,
            store,
            retention_days: default_retention_days(),
            max_submission_mb: default_max_submission_mb(),
            hierarchy_tokens: Vec::new(),
            update_catalog: None,
            tls: None,
            limits: ServerLimits::with_max_connections(DEFAULT_MAX_CONNECTIONS),
            metrics: MetricsTable::default(),
            loaded_updates: None,
        }
    }

    /// Reads, resolves and checks the configuration file at `path`, then the files it
    /// names ([`IntakeConfig::check_files`]), then loads the update catalog: everything
    /// the intake needs to know before it starts, without opening its store or binding.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut this = Self::read(path)?;
        this.check_files(path)?;
        if let Some(catalog) = this.update_catalog.clone() {
            // Last: hashing the packages is the slow part, and pointless if the rest is wrong.
            let updates = UpdateCatalog::load(&catalog).map_err(|e| match e {
                ConfigError::Read { path: file, source } => config::invalid(
                    path,
                    "update_catalog",
                    format!("cannot read {}: {source}", file.display()),
                ),
                other => other,
            })?;
            this.loaded_updates = Some((catalog, Arc::new(updates)));
        }
        Ok(this)
    }

    /// Reads, resolves and checks the configuration file at `path` without touching the
    /// files it names or the update catalog: for a file written for another machine, whose
    /// paths need not exist here, such as the examples in `deploy/`, or to find its store.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let file: IntakeFile = config::load(path)?;
        let update_catalog = match &file.update_catalog {
            Some(catalog) if catalog.as_os_str().is_empty() => {
                return Err(config::invalid(path, "update_catalog", "is empty"));
            }
            Some(catalog) => Some(config::resolve(path, catalog)),
            None => None,
        };
        let this = Self {
            listen: file.listen,
            store: config::resolve(path, &file.store),
            retention_days: file.retention_days,
            max_submission_mb: file.max_submission_mb,
            hierarchy_tokens: file.hierarchy_tokens,
            update_catalog,
            tls: config::tls_settings(path, file.tls, &[])?,
            limits: file.limits.resolve(
                path,
                ServerLimits::with_max_connections(DEFAULT_MAX_CONNECTIONS),
                1,
            )?,
            metrics: file.metrics.resolved(path),
            loaded_updates: None,
        };
        this.check(path)?;
        Ok(this)
    }

    /// Checks the files this configuration names as the intake will use them: the store
    /// and the metrics file can be written, the TLS files and the update catalog read.
    pub fn check_files(&self, path: &Path) -> Result<(), ConfigError> {
        if let Some(tls) = &self.tls {
            tls.check(path)?;
        }
        if let Some(catalog) = &self.update_catalog {
            config::readable_file(path, "update_catalog", catalog)?;
        }
        config::writable_file(path, "store", &self.store, config::Folder::Created)?;
        self.metrics.check(path)
    }

    /// Returns the update catalog: the one `load` read while `update_catalog` still names
    /// it, else read now (hashing every package: run it off the async runtime); empty when
    /// `update_catalog` is unset.
    pub fn updates(&self) -> Result<Arc<UpdateCatalog>, ConfigError> {
        let Some(catalog) = &self.update_catalog else {
            return Ok(Arc::new(UpdateCatalog::empty()));
        };
        match &self.loaded_updates {
            Some((file, loaded)) if file == catalog => Ok(Arc::clone(loaded)),
            _ => Ok(Arc::new(UpdateCatalog::load(catalog)?)),
        }
    }

    /// Checks values that parse but are out of range, naming the field.
    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        if !self.hierarchy_tokens.is_empty() && self.tls.is_none() {
            return Err(config::invalid(
                path,
                "hierarchy_tokens",
                "need TLS (a [tls] table): a token must not cross the network in clear",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, token) in self.hierarchy_tokens.iter().enumerate() {
            let field = format!("hierarchy_tokens[{i}]");
            if token.hierarchy.is_empty() {
                return Err(config::invalid(
                    path,
                    &format!("{field}.hierarchy"),
                    "is empty",
                ));
            }
            if !seen.insert(&token.hierarchy) {
                return Err(config::invalid(
                    path,
                    &format!("{field}.hierarchy"),
                    format!("{} has a token already", token.hierarchy),
                ));
            }
            let hex = token.token_sha256.len() == 64
                && token
                    .token_sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex {
                return Err(config::invalid(
                    path,
                    &format!("{field}.token_sha256"),
                    "must be 64 lowercase hex digits (the SHA-256 `hrs intake token` prints)",
                ));
            }
        }
        if self.retention_days == 0 {
            return Err(config::invalid(
                path,
                "retention_days",
                "must be at least 1 (days a submission is kept)",
            ));
        }
        if !(1..=MAX_SUBMISSION_MB).contains(&self.max_submission_mb) {
            return Err(config::invalid(
                path,
                "max_submission_mb",
                format!(
                    "must be between 1 and {MAX_SUBMISSION_MB} (SQLite keeps a submission in one blob of at most 10^9 bytes)"
                ),
            ));
        }
        if self.store.as_os_str().is_empty() {
            return Err(config::invalid(path, "store", "is empty"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("intake.toml");
        std::fs::write(&path, text).expect("writes config");
        path
    }

    #[test]
    fn resolves_store_and_defaults_retention() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(
            dir.path(),
            "listen = \"127.0.0.1:7400\"\nstore = \"data/intake.sqlite\"\n",
        );
        let config = IntakeConfig::load(&path).expect("loads");
        assert_eq!(config.store, dir.path().join("data/intake.sqlite"));
        assert_eq!(config.retention_days, 365);
        assert_eq!(config.max_submission_mb, MAX_SUBMISSION_MB);
    }

    #[test]
    fn a_store_or_metrics_file_that_cannot_be_written_is_refused_at_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("intake.sqlite")).expect("folder");
        let path = write(
            dir.path(),
            "listen = \"127.0.0.1:0\"\nstore = \"intake.sqlite\"\n",
        );
        let err = IntakeConfig::load(&path).expect_err("a folder").to_string();
        let folder = dir.path().join("intake.sqlite").display().to_string();
        assert!(
            err.contains("intake.toml")
                && err.contains("store:")
                && err.contains(&folder)
                && err.contains("is a folder"),
            "{err}"
        );
        IntakeConfig::read(&path).expect("read looks at no store");

        let path = write(
            dir.path(),
            "listen = \"127.0.0.1:0\"\nstore = \"i.sqlite\"\n[metrics]\nfile = \"gone/intake.prom\"\n",
        );
        let err = IntakeConfig::load(&path)
            .expect_err("no folder for the metrics")
            .to_string();
        assert!(
            err.contains("metrics.file:") && err.contains("gone"),
            "{err}"
        );
    }

    #[test]
    fn max_submission_mb_is_within_what_the_store_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = "listen = \"127.0.0.1:7400\"\nstore = \"i.sqlite\"\n";
        for bad in ["0", "954", "2048"] {
            let path = write(dir.path(), &format!("{base}max_submission_mb = {bad}\n"));
            let err = IntakeConfig::load(&path).expect_err(bad).to_string();
            assert!(err.contains("max_submission_mb"), "{bad}: {err}");
        }
        let path = write(dir.path(), &format!("{base}max_submission_mb = 100\n"));
        assert_eq!(
            IntakeConfig::load(&path).expect("loads").max_submission_mb,
            100
        );
    }

    #[test]
    fn refuses_zero_retention_and_unknown_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(
            dir.path(),
            "listen = \"127.0.0.1:7400\"\nstore = \"i.sqlite\"\nretention_days = 0\n",
        );
        let err = IntakeConfig::load(&path)
            .expect_err("zero retention")
            .to_string();
        assert!(err.contains("retention_days"), "{err}");

        let path = write(
            dir.path(),
            "listen = \"127.0.0.1:7400\"\nstore = \"i.sqlite\"\nretention = 3\n",
        );
        let err = IntakeConfig::load(&path)
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("retention"), "{err}");
    }

    #[test]
    fn update_catalog_is_resolved_loaded_and_named_in_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = "listen = \"127.0.0.1:7400\"\nstore = \"i.sqlite\"\n";
        let config = IntakeConfig::load(&write(dir.path(), base)).expect("loads");
        assert!(config.update_catalog.is_none());
        assert!(config.updates().expect("empty").updates().is_empty());

        let updates = dir.path().join("updates");
        std::fs::create_dir_all(&updates).expect("folder");
        std::fs::write(updates.join("a.cab"), "a").expect("package");
        std::fs::write(
            updates.join("updates.toml"),
            "[[updates]]\nid = \"2026.12\"\nversion = \"5.00.9135.1000\"\nkind = \"update\"\ntitle = \"HRS 2026.12\"\nreleased = \"2026-12-01\"\npackages = [\"a.cab\"]\n",
        )
        .expect("catalog");
        let path = write(
            dir.path(),
            &format!("{base}update_catalog = \"updates/updates.toml\"\n"),
        );
        let config = IntakeConfig::load(&path).expect("loads");
        assert_eq!(
            config.update_catalog.as_deref(),
            Some(updates.join("updates.toml").as_path())
        );
        let loaded = config.updates().expect("loaded");
        assert_eq!(loaded.updates()[0].packages[0].path, updates.join("a.cab"));
        assert!(
            Arc::ptr_eq(&loaded, &config.updates().expect("again")),
            "read once"
        );

        for (line, field) in [
            ("update_catalog = \"missing.toml\"\n", "update_catalog"),
            ("update_catalog = \"\"\n", "update_catalog"),
        ] {
            let err = IntakeConfig::load(&write(dir.path(), &format!("{base}{line}")))
                .expect_err(line)
                .to_string();
            assert!(err.contains(field) && err.contains("intake.toml"), "{err}");
        }
        // The loop above rewrote the file; a package gone from the catalog's folder is named.
        let path = write(
            dir.path(),
            &format!("{base}update_catalog = \"updates/updates.toml\"\n"),
        );
        std::fs::remove_file(updates.join("a.cab")).expect("removes");
        let err = IntakeConfig::load(&path)
            .expect_err("package gone")
            .to_string();
        assert!(
            err.contains("updates[0].packages[0]") && err.contains("updates.toml"),
            "{err}"
        );
    }

    #[test]
    fn tokens_need_tls_and_a_sha256_and_one_per_hierarchy() {
        let dir = tempfile::tempdir().expect("tempdir");
        for file in ["i.pem", "i.key", "ca.pem"] {
            std::fs::write(dir.path().join(file), "x").expect("writes");
        }
        let base = "listen = \"127.0.0.1:7400\"\nstore = \"i.sqlite\"\n";
        let tls = "[tls]\ncert = \"i.pem\"\nkey = \"i.key\"\nca = \"ca.pem\"\n";
        let token = |hierarchy: &str, sha: &str| {
            format!("[[hierarchy_tokens]]\nhierarchy = \"{hierarchy}\"\ntoken_sha256 = \"{sha}\"\n")
        };
        let good = "a".repeat(64);
        for (text, field) in [
            (format!("{base}{}", token("H", &good)), "hierarchy_tokens"),
            (
                format!("{base}{tls}{}", token("H", "ABC")),
                "hierarchy_tokens[0].token_sha256",
            ),
            (
                format!("{base}{tls}{}", token("", &good)),
                "hierarchy_tokens[0].hierarchy",
            ),
            (
                format!("{base}{tls}{}{}", token("H", &good), token("H", &good)),
                "hierarchy_tokens[1].hierarchy",
            ),
        ] {
            let err = IntakeConfig::load(&write(dir.path(), &text))
                .expect_err(field)
                .to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
        let config = IntakeConfig::load(&write(
            dir.path(),
            &format!("{base}{tls}{}", token("H", &good)),
        ))
        .expect("loads");
        assert_eq!(
            config.hierarchy_tokens,
            [HierarchyToken {
                hierarchy: "H".into(),
                token_sha256: good.clone(),
            }]
        );
    }
}
