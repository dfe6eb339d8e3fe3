//! The agent's configuration file.

use std::path::{Path, PathBuf};

use hrs_core::config::{self, ConfigError, MetricsTable, TlsFiles};
use hrs_core::hash::{HashKeyError, Hasher};
use hrs_core::link::LinkThresholds;

use crate::spool::SpoolLimits;
use hrs_core::{HierarchyId, Level, Period, SiteCode};
use hrs_sitedb::{PasswordSource, SiteDbSpec};
use serde::Deserialize;

/// Whether the site is a primary or the central administration site; decides which
/// catalog queries apply (each query declares its scope).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SiteType {
    /// A primary site.
    Primary,
    /// The central administration site.
    Cas,
}

/// The agent's file as written: [`AgentConfig::load`] checks it into the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    site: SiteCode,
    #[serde(default = "default_site_type")]
    site_type: SiteType,
    hierarchy_id: HierarchyId,
    #[serde(default = "default_level")]
    level: Level,
    site_db: String,
    #[serde(default)]
    site_db_password_env: Option<String>,
    #[serde(default)]
    site_db_password_file: Option<PathBuf>,
    #[serde(default)]
    hash_key_file: Option<PathBuf>,
    spool: PathBuf,
    #[serde(default)]
    tls: Option<TlsFiles>,
    #[serde(default)]
    metrics: MetricsTable,
    upstream: String,
    #[serde(default)]
    period: Option<Period>,
    #[serde(default = "default_check_minutes")]
    check_minutes: u64,
    #[serde(default = "default_retry_max_seconds")]
    retry_max_seconds: u64,
    #[serde(default = "default_spool_max_mb")]
    spool_max_mb: u64,
    #[serde(default = "default_spool_max_age_days")]
    spool_max_age_days: u64,
    #[serde(default = "default_max_run_mb")]
    max_run_mb: u64,
    #[serde(default = "default_push_chunk_kib")]
    push_chunk_kib: u32,
    #[serde(default = "default_max_failed_share")]
    max_failed_share: f64,
    #[serde(default = "default_degraded_after")]
    link_degraded_after: u32,
    #[serde(default = "default_failed_after")]
    link_failed_after: u32,
}

/// Everything an agent needs to know, checked: read with [`AgentConfig::load`].
///
/// Its `Debug` shows the site database by its summary only: a connection string may hold
/// a password.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// This site's code; the aggregator must list it.
    pub site: SiteCode,
    /// Primary or CAS.
    pub site_type: SiteType,
    /// The hierarchy this site belongs to; sent with every run, checked upstream.
    pub hierarchy_id: HierarchyId,
    /// The hierarchy-wide data level; queries above it never run.
    pub level: Level,
    /// The site database (`site_db`, with its password source): a SQLite file, resolved
    /// against the configuration's folder, or SQL Server.
    pub site_db: SiteDbSpec,
    /// The hierarchy's hash key file: hashed columns are then keyed (HMAC-SHA-256) instead
    /// of plain SHA-256. Every site and the aggregator of a hierarchy use the same key.
    pub hash_key_file: Option<PathBuf>,
    /// The spool file where runs wait until upstream has committed them.
    pub spool: PathBuf,
    /// This site's certificate (from `hrs pki issue --site`), its key, and the hierarchy's
    /// CA (`[tls]`): for TLS to an `https://` upstream; none for plaintext.
    pub tls: Option<TlsFiles>,
    /// `[metrics]`: a Prometheus text file the agent rewrites after every delivery attempt
    /// (spool backlog, dropped runs, link state), for an exporter's textfile collector.
    pub metrics: MetricsTable,
    /// The aggregator's address, e.g. `http://127.0.0.1:7401`.
    pub upstream: String,
    /// Collect this period instead of the last ISO week to have ended (for re-collection
    /// and tests).
    pub period: Option<Period>,
    /// How often the service checks whether a new period is due, in minutes.
    pub check_minutes: u64,
    /// Upper bound of the delay between delivery attempts, in seconds.
    pub retry_max_seconds: u64,
    /// The most the spool may hold, in megabytes; beyond it the oldest runs are dropped.
    pub spool_max_mb: u64,
    /// The longest a run may wait in the spool, in days; older runs are dropped.
    pub spool_max_age_days: u64,
    /// The largest run the agent builds, in MiB (1 to [`MAX_RUN_MB`]): a query whose rows
    /// would take the run past it is recorded as failed instead, so a run that can never
    /// be spooled or accepted upstream is not collected again and again.
    pub max_run_mb: u64,
    /// Size of the chunks a run is sent in, in KiB: a broken link resumes from the last
    /// chunk the upstream holds, so slow or flaky links want smaller chunks.
    pub push_chunk_kib: u32,
    /// The largest share of a run's queries (0 to 1) that may fail for the run to be
    /// delivered unasked: a run above it would replace the site's data upstream with a
    /// fraction of it, so it is spooled but held until an operator releases it
    /// (`hrs release`). A collection where every query failed is never spooled.
    pub max_failed_share: f64,
    /// Consecutive failed deliveries after which the link to the upstream is degraded.
    pub link_degraded_after: u32,
    /// Consecutive failed deliveries after which the link to the upstream has failed.
    pub link_failed_after: u32,
    /// The file this configuration was read from (none when built in code), so messages
    /// can name the command to run against it.
    pub file: Option<PathBuf>,
}

/// The largest `max_run_mb`, and its default: SQLite keeps a spooled run in one blob of at
/// most 10^9 bytes, and the aggregator takes runs up to this size (its own `max_run_mb`).
pub const MAX_RUN_MB: u64 = 953;

fn default_max_run_mb() -> u64 {
    MAX_RUN_MB
}

fn default_spool_max_mb() -> u64 {
    1024
}

fn default_spool_max_age_days() -> u64 {
    // A year of weekly runs, like the intake's retention: the upstream may be away long.
    365
}

fn default_push_chunk_kib() -> u32 {
    1024
}

/// Half: a seeded or healthy site database fails no query, and a SQL Server login that
/// cannot read the server's system views fails at most the few queries on them (9 of 42 at
/// Basic, 12 of 90 at Full), so only a site database mostly missing or unreadable holds
/// its run.
pub const DEFAULT_MAX_FAILED_SHARE: f64 = 0.5;

fn default_max_failed_share() -> f64 {
    DEFAULT_MAX_FAILED_SHARE
}

fn default_degraded_after() -> u32 {
    LinkThresholds::default().degraded_after
}

fn default_failed_after() -> u32 {
    LinkThresholds::default().failed_after
}

fn default_site_type() -> SiteType {
    SiteType::Primary
}

fn default_level() -> Level {
    Level::Enhanced
}

fn default_check_minutes() -> u64 {
    60
}

fn default_retry_max_seconds() -> u64 {
    300
}

impl AgentConfig {
    /// Reads the file, resolves its paths against the file's folder, checks its values,
    /// then the files it names ([`AgentConfig::check_files`]): everything the agent needs
    /// to know before it starts, without opening its spool or reaching its upstream.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let this = Self::read(path)?;
        this.check_files(path)?;
        Ok(this)
    }

    /// Reads the file, resolves its paths and checks its values, reading only the hash key
    /// (to check it is one): for a file written for another machine, whose paths need not
    /// exist here, such as the examples in `deploy/`.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let file: AgentFile = config::load(path)?;
        config::endpoint(path, "upstream", &file.upstream)?;
        // `sqlite:PATH`, or a bare path as earlier configurations wrote it.
        let sqlite_path = match file.site_db.strip_prefix("sqlite:") {
            Some(path) => Some(path.to_owned()),
            None if !file.site_db.contains('=') => Some(file.site_db.clone()),
            None => None,
        };
        let site_db = match sqlite_path.filter(|p| !p.trim().is_empty()) {
            Some(db_path) => format!(
                "sqlite:{}",
                config::resolve(path, Path::new(&db_path)).display()
            ),
            None => file.site_db.clone(),
        };
        let password_file = file
            .site_db_password_file
            .map(|file| config::resolve(path, &file));
        if file.site_db_password_env.is_some() && password_file.is_some() {
            return Err(config::invalid(
                path,
                "site_db_password_file",
                "set either site_db_password_env or site_db_password_file, not both",
            ));
        }
        let password = PasswordSource::from_options(
            file.site_db_password_env.as_deref(),
            password_file.as_deref(),
        );
        let site_db = SiteDbSpec::parse(&site_db, password)
            .map_err(|e| config::invalid(path, "site_db", e.to_string()))?;
        if file.spool_max_mb == 0 {
            return Err(config::invalid(path, "spool_max_mb", "must be at least 1"));
        }
        if file.spool_max_age_days == 0 {
            return Err(config::invalid(
                path,
                "spool_max_age_days",
                "must be at least 1",
            ));
        }
        if !(1..=MAX_RUN_MB).contains(&file.max_run_mb) {
            return Err(config::invalid(
                path,
                "max_run_mb",
                format!("must be between 1 and {MAX_RUN_MB}"),
            ));
        }
        let max_kib = hrs_rpc::chunks::MAX_CHUNK_BYTES / 1024;
        if file.push_chunk_kib == 0 || file.push_chunk_kib as usize > max_kib {
            return Err(config::invalid(
                path,
                "push_chunk_kib",
                format!("must be between 1 and {max_kib}"),
            ));
        }
        if !(0.0..=1.0).contains(&file.max_failed_share) {
            return Err(config::invalid(
                path,
                "max_failed_share",
                format!(
                    "{} is not a share: it must be between 0 and 1 (0.5 holds a run when more \
                     than half of its queries failed)",
                    file.max_failed_share
                ),
            ));
        }
        let thresholds = LinkThresholds {
            degraded_after: file.link_degraded_after,
            failed_after: file.link_failed_after,
        };
        thresholds
            .check()
            .map_err(|problem| config::invalid(path, "link_degraded_after", problem))?;
        let hash_key_file = file.hash_key_file.map(|file| config::resolve(path, &file));
        if let Some(key) = &hash_key_file {
            config::readable_file(path, "hash_key_file", key)?;
        }
        Hasher::from_key_file(hash_key_file.as_deref())
            .map_err(|e| config::invalid(path, "hash_key_file", e.to_string()))?;
        let tls = config::tls_settings(path, file.tls, &[("upstream", Some(&file.upstream))])?;
        if file.check_minutes == 0 {
            return Err(config::invalid(path, "check_minutes", "must be at least 1"));
        }
        if file.retry_max_seconds == 0 {
            return Err(config::invalid(
                path,
                "retry_max_seconds",
                "must be at least 1",
            ));
        }
        Ok(Self {
            site: file.site,
            site_type: file.site_type,
            hierarchy_id: file.hierarchy_id,
            level: file.level,
            site_db,
            hash_key_file,
            spool: config::resolve(path, &file.spool),
            tls,
            metrics: file.metrics.resolved(path),
            upstream: file.upstream,
            period: file.period,
            check_minutes: file.check_minutes,
            retry_max_seconds: file.retry_max_seconds,
            spool_max_mb: file.spool_max_mb,
            spool_max_age_days: file.spool_max_age_days,
            max_run_mb: file.max_run_mb,
            push_chunk_kib: file.push_chunk_kib,
            max_failed_share: file.max_failed_share,
            link_degraded_after: file.link_degraded_after,
            link_failed_after: file.link_failed_after,
            file: Some(path.to_owned()),
        })
    }

    /// Checks the files this configuration names as the agent will use them: the spool and
    /// the metrics file can be written, the TLS files, the hash key and the password file
    /// can be read, and a SQLite site database, when it exists, is a readable file.
    ///
    /// A site database that does not exist yet is left to the collection, which names it
    /// (it may be seeded or restored after the agent is installed).
    pub fn check_files(&self, path: &Path) -> Result<(), ConfigError> {
        match &self.site_db {
            SiteDbSpec::Sqlite(db) => {
                if !matches!(db.try_exists(), Ok(false)) {
                    config::readable_file(path, "site_db", db)?;
                }
            }
            SiteDbSpec::SqlServer(spec) => {
                if let Some(PasswordSource::File(file)) = spec.password_source() {
                    config::readable_file(path, "site_db_password_file", file)?;
                }
            }
        }
        if let Some(key) = &self.hash_key_file {
            config::readable_file(path, "hash_key_file", key)?;
        }
        if let Some(tls) = &self.tls {
            tls.check(path)?;
        }
        config::writable_file(path, "spool", &self.spool, config::Folder::Created)?;
        self.metrics.check(path)
    }

    /// Returns the site database as logs may show it: never its password.
    pub fn site_db_summary(&self) -> String {
        self.site_db.to_string()
    }

    /// Returns the spool's limits.
    pub fn spool_limits(&self) -> SpoolLimits {
        SpoolLimits {
            max_bytes: self.spool_max_mb.saturating_mul(1024 * 1024),
            max_age_seconds: self.spool_max_age_days.saturating_mul(86_400),
        }
    }

    /// Returns the largest run the agent builds, in bytes.
    pub fn max_run_bytes(&self) -> u64 {
        self.max_run_mb.saturating_mul(1024 * 1024)
    }

    /// Returns the command that releases `run_id`, held in this agent's spool.
    pub fn release_command(&self, run_id: &str) -> String {
        let config = self
            .file
            .as_deref()
            .map_or_else(|| "AGENT.toml".to_owned(), |f| f.display().to_string());
        format!("hrs release --config {config} --run {run_id}")
    }

    /// Returns when the link to the upstream counts as degraded, then failed.
    pub fn link_thresholds(&self) -> LinkThresholds {
        LinkThresholds {
            degraded_after: self.link_degraded_after,
            failed_after: self.link_failed_after,
        }
    }

    /// Returns how this site hashes: keyed when a key file is configured.
    pub fn hasher(&self) -> Result<Hasher, HashKeyError> {
        Hasher::from_key_file(self.hash_key_file.as_deref())
    }

    /// Returns the period a collection at `now` covers: the configured one, else the last
    /// ISO week to have ended.
    pub fn period_at(&self, now: time::OffsetDateTime) -> Period {
        self.period.unwrap_or_else(|| Period::last_ended(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads an agent configuration whose only variable is its `site_db` line.
    fn load_with_site_db(site_db: &str) -> (tempfile::TempDir, AgentConfig) {
        let (dir, config) = try_load(site_db, "");
        (dir, config.expect("loads"))
    }

    /// Loads an agent configuration of `site_db` and `extra` lines.
    fn try_load(
        site_db: &str,
        extra: &str,
    ) -> (tempfile::TempDir, Result<AgentConfig, ConfigError>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            format!(
                "site = \"P01\"\nhierarchy_id = \"3b1f7a52-9c4e-4d7a-8f0e-2a6c5d9e1b47\"\n\
                 site_db = \"{site_db}\"\nspool = \"spool.sqlite\"\n\
                 upstream = \"http://127.0.0.1:7401\"\n{extra}"
            ),
        )
        .expect("writes");
        let config = AgentConfig::load(&path);
        (dir, config)
    }

    #[test]
    fn max_run_mb_defaults_to_the_largest_and_stays_within_it() {
        let (_dir, config) = load_with_site_db("site.sqlite");
        assert_eq!(config.max_run_mb, MAX_RUN_MB);
        assert_eq!(config.max_run_bytes(), 953 << 20);
        assert!(config.max_run_bytes() < 1_000_000_000);
        let (_dir, config) = try_load("site.sqlite", "max_run_mb = 1\n");
        assert_eq!(config.expect("loads").max_run_bytes(), 1 << 20);
        for wrong in [0, 954] {
            let (_dir, config) = try_load("site.sqlite", &format!("max_run_mb = {wrong}\n"));
            let error = config.expect_err("refused").to_string();
            assert!(
                error.contains("max_run_mb") && error.contains("between 1 and 953"),
                "{error}"
            );
        }
    }

    #[test]
    fn max_failed_share_defaults_to_half_and_must_be_a_share() {
        let (_dir, config) = load_with_site_db("site.sqlite");
        assert_eq!(config.max_failed_share, 0.5);
        for fine in ["0", "0.25", "1"] {
            let (_dir, config) = try_load("site.sqlite", &format!("max_failed_share = {fine}\n"));
            config.unwrap_or_else(|e| panic!("max_failed_share = {fine}: {e}"));
        }
        for wrong in ["2", "-0.1", "1.5", "nan"] {
            let (_dir, config) = try_load("site.sqlite", &format!("max_failed_share = {wrong}\n"));
            let error = config.expect_err(wrong).to_string();
            assert!(
                error.contains("max_failed_share") && error.contains("between 0 and 1"),
                "{wrong}: {error}"
            );
        }
    }

    #[test]
    fn debug_never_shows_the_site_database_password() {
        let (_dir, config) = load_with_site_db(
            "server=tcp:cm01,1433;database=CM_P01;user=hrs;password=Hunter2-SECRET",
        );
        let shown = format!("{config:?}");
        assert!(shown.contains("cm01"), "{shown}");
        assert!(!shown.contains("SECRET"), "{shown}");
    }

    #[test]
    fn a_bare_path_is_a_sqlite_file_next_to_the_config() {
        let (dir, config) = load_with_site_db("site.sqlite");
        assert_eq!(
            config.site_db_summary(),
            format!("sqlite:{}", dir.path().join("site.sqlite").display())
        );
    }

    #[test]
    fn an_upstream_with_a_port_that_cannot_be_is_refused_at_load() {
        for (upstream, says) in [
            ("http://127.0.0.1:99999", "port 99999"),
            ("http://127.0.0.1:0", "port 0"),
            ("ftp://127.0.0.1:7401", "ftp://"),
            ("http://127.0.0.1:7401/push", "path"),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("agent.toml");
            std::fs::write(
                &path,
                format!(
                    "site = \"P01\"\nhierarchy_id = \"3b1f7a52-9c4e-4d7a-8f0e-2a6c5d9e1b47\"\n\
                     site_db = \"site.sqlite\"\nspool = \"spool.sqlite\"\nupstream = \"{upstream}\"\n"
                ),
            )
            .expect("writes");
            let err = AgentConfig::load(&path).expect_err(upstream).to_string();
            assert!(
                err.contains("agent.toml") && err.contains("upstream") && err.contains(says),
                "{upstream}: {err}"
            );
        }
    }

    #[test]
    fn a_site_db_or_a_spool_that_is_a_folder_is_refused_naming_the_setting_and_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("site.sqlite")).expect("folder");
        let path = dir.path().join("agent.toml");
        let text = |site_db: &str, spool: &str| {
            format!(
                "site = \"P01\"\nhierarchy_id = \"3b1f7a52-9c4e-4d7a-8f0e-2a6c5d9e1b47\"\n\
                 site_db = \"{site_db}\"\nspool = \"{spool}\"\nupstream = \"http://127.0.0.1:7401\"\n"
            )
        };
        std::fs::write(&path, text("sqlite:site.sqlite", "spool.sqlite")).expect("writes");
        let err = AgentConfig::load(&path).expect_err("a folder").to_string();
        let folder = dir.path().join("site.sqlite").display().to_string();
        assert!(
            err.contains("site_db:") && err.contains(&folder) && err.contains("is a folder"),
            "{err}"
        );

        std::fs::write(&path, text("missing.sqlite", "site.sqlite")).expect("writes");
        let err = AgentConfig::load(&path).expect_err("a folder").to_string();
        assert!(
            err.contains("spool:") && err.contains(&folder) && err.contains("is a folder"),
            "{err}"
        );

        // A site database not there yet is the collection's to report.
        std::fs::write(&path, text("missing.sqlite", "spool.sqlite")).expect("writes");
        AgentConfig::load(&path).expect("loads");
        assert!(!dir.path().join("spool.sqlite").exists(), "no spool made");
    }

    #[test]
    fn tls_and_key_files_are_read_at_load_and_named_when_they_cannot_be() {
        let (dir, config) = try_load("site.sqlite", "hash_key_file = \"hierarchy.key\"\n");
        let err = config.expect_err("no key file").to_string();
        let key = dir.path().join("hierarchy.key").display().to_string();
        assert!(
            err.contains("hash_key_file:") && err.contains(&key) && err.contains("does not exist"),
            "{err}"
        );

        let dir = tempfile::tempdir().expect("tempdir");
        for file in ["p01.pem", "ca.pem"] {
            std::fs::write(dir.path().join(file), "x").expect("writes");
        }
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "site = \"P01\"\nhierarchy_id = \"3b1f7a52-9c4e-4d7a-8f0e-2a6c5d9e1b47\"\n\
             site_db = \"site.sqlite\"\nspool = \"spool.sqlite\"\n\
             upstream = \"https://127.0.0.1:7401\"\n\
             [tls]\ncert = \"p01.pem\"\nkey = \"p01.key\"\nca = \"ca.pem\"\n",
        )
        .expect("writes");
        let err = AgentConfig::load(&path).expect_err("no key").to_string();
        let key = dir.path().join("p01.key");
        assert!(
            err.contains("tls.key:") && err.contains(&key.display().to_string()),
            "{err}"
        );
        AgentConfig::read(&path).expect("read looks at no file");
        std::fs::write(&key, "x").expect("writes");
        AgentConfig::load(&path).expect("loads");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o000)).expect("chmod");
            // Root (as in many CI containers) reads a file of mode 000: nothing to refuse.
            if std::fs::File::open(&key).is_err() {
                let err = AgentConfig::load(&path)
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
