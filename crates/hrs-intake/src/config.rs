//! The intake's configuration file: where it listens, where it keeps submissions, and how
//! long it keeps them. Checked in full before any port is bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hrs_core::config::{self, ConfigError};
use serde::Deserialize;

/// How the intake runs, read from a TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    /// Address the gRPC service listens on, e.g. `127.0.0.1:7400`; connection points and
    /// the connection tool submit here.
    pub listen: SocketAddr,
    /// The SQLite file holding submissions; relative paths are resolved against the
    /// config file's folder so a deployment folder can be moved as a whole.
    pub store: PathBuf,
    /// Days a submission is kept before it is pruned (the vendor keeps data one year).
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// The intake's certificate, its key, and the CA of the hierarchies it serves (all
    /// three, or none for plaintext): connection points must then connect with their
    /// connection point certificate.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// See `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// See `tls_cert`.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
}

fn default_retention_days() -> u32 {
    365
}

impl IntakeConfig {
    /// Reads, resolves and checks the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut this: Self = config::load(path)?;
        this.store = config::resolve(path, &this.store);
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
    pub fn tls(&self) -> Option<hrs_proto::tls::TlsFiles> {
        hrs_proto::tls::TlsFiles::of(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_ca.as_deref(),
        )
    }

    /// Checks values that parse but are out of range, naming the field.
    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        if self.retention_days == 0 {
            return Err(config::invalid(
                path,
                "retention_days",
                "must be at least 1 (days a submission is kept)",
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
}
