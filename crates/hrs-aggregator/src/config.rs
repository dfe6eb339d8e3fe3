//! The aggregator's configuration file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hrs_core::config::{self, ConfigError, LimitsTable, MetricsTable, ServerLimits, TlsFiles};
use hrs_core::hash::Hasher;
use hrs_core::link::LinkThresholds;
use hrs_core::{HierarchyId, Level, SiteCode};
use serde::Deserialize;

/// The aggregator's file as written: [`AggregatorConfig::load`] checks it into the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AggregatorFile {
    listen: SocketAddr,
    hierarchy_id: HierarchyId,
    #[serde(default = "default_level")]
    level: Level,
    store: PathBuf,
    sites: Vec<SiteCode>,
    #[serde(default)]
    connection_point: Option<String>,
    #[serde(default)]
    upstream: Option<String>,
    #[serde(default)]
    regions: Vec<RegionSites>,
    #[serde(default = "default_deadline_hours")]
    period_deadline_hours: u64,
    #[serde(default = "default_settle_minutes")]
    period_settle_minutes: u64,
    #[serde(default = "default_retry_seconds")]
    retry_seconds: u64,
    #[serde(default)]
    hash_key_file: Option<PathBuf>,
    #[serde(default = "default_site_check_minutes")]
    site_check_minutes: u64,
    #[serde(default = "default_degraded_after")]
    link_degraded_after: u32,
    #[serde(default = "default_failed_after")]
    link_failed_after: u32,
    #[serde(default = "default_max_run_mb")]
    max_run_mb: u64,
    #[serde(default = "default_max_runs_in_flight")]
    max_runs_in_flight: u32,
    #[serde(default)]
    tls: Option<TlsFiles>,
    #[serde(default)]
    limits: LimitsTable,
    #[serde(default)]
    metrics: MetricsTable,
}

/// A region aggregator beneath this one (`[[regions]]`): the sites whose runs it may relay.
/// The CAS operator decides which primaries sit under a region, here, so moving a site
/// needs no new certificate, and an old certificate cannot keep relaying a site moved away.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSites {
    /// The region, as its aggregator's certificate names it (`hrs pki issue --region`).
    pub name: hrs_pki::Region,
    /// The sites beneath it; each is also one of this aggregator's `sites`.
    pub sites: Vec<SiteCode>,
}

/// Where an aggregator sends what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Onward {
    /// The top of the hierarchy (`connection_point`): merged periods are offered to the
    /// connection point at this address, e.g. `http://127.0.0.1:7402`.
    ConnectionPoint(String),
    /// A region aggregator under a CAS (`upstream`): every site's runs are relayed to the
    /// next aggregator up, at this address, as they arrive.
    Upstream(String),
    /// Neither: merged periods stay in the store for `hrs view`.
    Kept,
}

/// Everything an aggregator needs to know, checked: read with [`AggregatorConfig::load`].
#[derive(Debug, Clone)]
pub struct AggregatorConfig {
    /// Address the gRPC service listens on.
    pub listen: SocketAddr,
    /// The hierarchy this aggregator serves; runs of any other are refused.
    pub hierarchy_id: HierarchyId,
    /// The hierarchy-wide data level; what is forwarded never exceeds it.
    pub level: Level,
    /// The merge store file.
    pub store: PathBuf,
    /// Every site expected to report; runs from any other site are refused, and a period
    /// is complete once each has reported.
    pub sites: Vec<SiteCode>,
    /// Where merged data goes: the connection point, the next aggregator up, or nowhere.
    pub onward: Onward,
    /// The region aggregators beneath this one and their sites: with TLS, a region's
    /// certificate relays the runs of its sites only, and with none listed no relayed run
    /// is taken.
    pub regions: Vec<RegionSites>,
    /// Hours after a period's end (Monday 00:00 UTC) after which it is forwarded even with
    /// sites missing.
    pub period_deadline_hours: u64,
    /// Minutes a period must go without a new run before a change is forwarded: a period
    /// past its deadline, or one already forwarded that a late or re-sending site changed.
    /// A burst of arrivals so leaves as one submission; 0 forwards every change at once.
    /// A period's first forward with every site present never waits.
    pub period_settle_minutes: u64,
    /// Delay between forwarding attempts while the connection point is away, in seconds.
    pub retry_seconds: u64,
    /// The hierarchy's hash key file, when its sites hash keyed: runs hashed with any other
    /// key (or with none) are refused, since their hashes would not correlate.
    pub hash_key_file: Option<PathBuf>,
    /// The fingerprint of that key, empty without one.
    pub hash_key_id: String,
    /// How often sites check in (their `check_minutes`); each check a site misses counts
    /// as a failed attempt of its link.
    pub site_check_minutes: u64,
    /// When a site's link counts as degraded, then failed, in missed checks.
    pub link_thresholds: LinkThresholds,
    /// Largest run a site may send, in MiB (its encoding); larger offers are refused
    /// before any byte is stored.
    pub max_run_mb: u64,
    /// Runs one site may be sending at once; another is refused with `ResourceExhausted`
    /// until one finishes.
    pub max_runs_in_flight: u32,
    /// This aggregator's certificate, its key, and the hierarchy's CA (`[tls]`; none for
    /// plaintext): sites must then connect with a certificate from that CA, and each may
    /// write only the data of the site its certificate names (a region's, of its `regions`
    /// sites).
    pub tls: Option<TlsFiles>,
    /// The limits on the aggregator's callers (`[limits]`).
    pub limits: ServerLimits,
    /// Where the aggregator keeps its counters (`[metrics]`).
    pub metrics: MetricsTable,
}

fn default_level() -> Level {
    Level::Enhanced
}

fn default_deadline_hours() -> u64 {
    72
}

fn default_settle_minutes() -> u64 {
    5
}

/// Longest deadline or settling time a period may be given: ten years, in hours.
const MAX_PERIOD_HOURS: u64 = 10 * 366 * 24;

fn default_retry_seconds() -> u64 {
    30
}

fn default_site_check_minutes() -> u64 {
    60
}

/// Sites and region aggregators served at once, unless `[limits]` says otherwise.
const DEFAULT_MAX_CONNECTIONS: u32 = 512;

fn default_max_runs_in_flight() -> u32 {
    2
}

/// The largest run the store can hold: SQLite's blob limit, 10^9 bytes, in MiB.
const MAX_RUN_MB: u64 = 953;

fn default_max_run_mb() -> u64 {
    MAX_RUN_MB
}

fn default_degraded_after() -> u32 {
    LinkThresholds::default().degraded_after
}

fn default_failed_after() -> u32 {
    LinkThresholds::default().failed_after
}

impl AggregatorConfig {
    /// Returns how long after a period closes it is forwarded with sites missing.
    pub fn period_deadline(&self) -> time::Duration {
        time::Duration::hours(i64::try_from(self.period_deadline_hours).unwrap_or(i64::MAX / 3600))
    }

    /// Returns how long a period must be quiet before a change to it is forwarded.
    pub fn period_settle(&self) -> time::Duration {
        time::Duration::minutes(i64::try_from(self.period_settle_minutes).unwrap_or(i64::MAX / 60))
    }

    /// Reads the file, resolves its paths against the file's folder, checks its values,
    /// then the files it names ([`AggregatorConfig::check_files`]): everything the
    /// aggregator needs to know before it starts, without opening its store or binding.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let this = Self::read(path)?;
        this.check_files(path)?;
        Ok(this)
    }

    /// Reads the file, resolves its paths and checks its values, reading only the hash key
    /// (to check it is one): for a file written for another machine, whose paths need not
    /// exist here, such as the examples in `deploy/`, or to find the store of one.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let file: AggregatorFile = config::load(path)?;
        // A chunk of up to 4 MiB, with its framing, must fit in one message.
        let limits = file.limits.resolve(
            path,
            ServerLimits::with_max_connections(DEFAULT_MAX_CONNECTIONS),
            5,
        )?;
        if file.max_runs_in_flight == 0 {
            return Err(config::invalid(
                path,
                "max_runs_in_flight",
                "must be at least 1",
            ));
        }
        // SQLite keeps a run in one blob, which it caps at 10^9 bytes.
        if file.max_run_mb == 0 || file.max_run_mb > MAX_RUN_MB {
            return Err(config::invalid(
                path,
                "max_run_mb",
                format!("must be between 1 and {MAX_RUN_MB}"),
            ));
        }
        if file.sites.is_empty() {
            return Err(config::invalid(path, "sites", "lists no site"));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = file.sites.iter().find(|s| !seen.insert(*s)) {
            return Err(config::invalid(
                path,
                "sites",
                format!("{dup} is listed twice"),
            ));
        }
        check_regions(path, &file.sites, &file.regions)?;
        let onward = match (&file.connection_point, &file.upstream) {
            (Some(_), Some(_)) => {
                return Err(config::invalid(
                    path,
                    "upstream",
                    "set connection_point (at the top of the hierarchy) or upstream (a region \
                     under another aggregator), not both",
                ));
            }
            (Some(url), None) => Onward::ConnectionPoint(url.clone()),
            (None, Some(url)) => Onward::Upstream(url.clone()),
            (None, None) => Onward::Kept,
        };
        for (field, url) in [
            ("connection_point", &file.connection_point),
            ("upstream", &file.upstream),
        ] {
            if let Some(url) = url {
                config::endpoint(path, field, url)?;
            }
        }
        if file.period_deadline_hours > MAX_PERIOD_HOURS {
            return Err(config::invalid(
                path,
                "period_deadline_hours",
                format!("must be at most {MAX_PERIOD_HOURS} (ten years)"),
            ));
        }
        if file.period_settle_minutes > MAX_PERIOD_HOURS * 60 {
            return Err(config::invalid(
                path,
                "period_settle_minutes",
                format!("must be at most {} (ten years)", MAX_PERIOD_HOURS * 60),
            ));
        }
        if file.retry_seconds == 0 {
            return Err(config::invalid(path, "retry_seconds", "must be at least 1"));
        }
        if file.site_check_minutes == 0 {
            return Err(config::invalid(
                path,
                "site_check_minutes",
                "must be at least 1",
            ));
        }
        let link_thresholds = LinkThresholds {
            degraded_after: file.link_degraded_after,
            failed_after: file.link_failed_after,
        };
        link_thresholds
            .check()
            .map_err(|problem| config::invalid(path, "link_degraded_after", problem))?;
        let hash_key_file = file.hash_key_file.map(|f| config::resolve(path, &f));
        if let Some(key) = &hash_key_file {
            config::readable_file(path, "hash_key_file", key)?;
        }
        let tls = config::tls_settings(
            path,
            file.tls,
            &[
                ("connection_point", file.connection_point.as_deref()),
                ("upstream", file.upstream.as_deref()),
            ],
        )?;
        let hash_key_id = Hasher::from_key_file(hash_key_file.as_deref())
            .map_err(|e| config::invalid(path, "hash_key_file", e.to_string()))?
            .key_id();
        Ok(Self {
            listen: file.listen,
            hierarchy_id: file.hierarchy_id,
            level: file.level,
            store: config::resolve(path, &file.store),
            sites: file.sites,
            onward,
            regions: file.regions,
            period_deadline_hours: file.period_deadline_hours,
            period_settle_minutes: file.period_settle_minutes,
            retry_seconds: file.retry_seconds,
            hash_key_file,
            hash_key_id,
            site_check_minutes: file.site_check_minutes,
            link_thresholds,
            max_run_mb: file.max_run_mb,
            max_runs_in_flight: file.max_runs_in_flight,
            tls,
            limits,
            metrics: file.metrics.resolved(path),
        })
    }

    /// Checks the files this configuration names as the aggregator will use them: the
    /// store and the metrics file can be written, the TLS files and the hash key read.
    pub fn check_files(&self, path: &Path) -> Result<(), ConfigError> {
        if let Some(key) = &self.hash_key_file {
            config::readable_file(path, "hash_key_file", key)?;
        }
        if let Some(tls) = &self.tls {
            tls.check(path)?;
        }
        config::writable_file(path, "store", &self.store, config::Folder::Created)?;
        self.metrics.check(path)
    }
}

/// Checks `[[regions]]`: each names a region once, and lists sites of this aggregator,
/// none of them under two regions (a site's runs come through one region).
fn check_regions(
    path: &Path,
    sites: &[SiteCode],
    regions: &[RegionSites],
) -> Result<(), ConfigError> {
    let mut names = std::collections::HashSet::new();
    let mut placed = std::collections::HashMap::new();
    for (i, region) in regions.iter().enumerate() {
        let field = |key: &str| format!("regions[{i}].{key}");
        if !names.insert(&region.name) {
            return Err(config::invalid(
                path,
                &field("name"),
                format!("region {} is listed twice", region.name),
            ));
        }
        if region.sites.is_empty() {
            return Err(config::invalid(path, &field("sites"), "lists no site"));
        }
        for site in &region.sites {
            if !sites.contains(site) {
                return Err(config::invalid(
                    path,
                    &field("sites"),
                    format!("{site} is not one of this aggregator's sites"),
                ));
            }
            if let Some(other) = placed.insert(site, &region.name) {
                return Err(config::invalid(
                    path,
                    &field("sites"),
                    format!("{site} is beneath region {other} already"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aggregator_forwards_to_a_connection_point_or_relays_upstream_not_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("aggregator.toml");
        let base = "listen = \"127.0.0.1:0\"\nhierarchy_id = \"3b1f7a52-9c4e-4d7a-8f0e-2a6c5d9e1b47\"\n\
                    store = \"m.sqlite\"\nsites = [\"P01\"]\n";
        std::fs::write(
            &path,
            format!("{base}upstream = \"http://127.0.0.1:7401\"\n"),
        )
        .expect("writes");
        let region = AggregatorConfig::load(&path).expect("a region aggregator");
        assert!(matches!(region.onward, Onward::Upstream(_)));

        std::fs::write(
            &path,
            format!(
                "{base}upstream = \"http://127.0.0.1:7401\"\nconnection_point = \"http://127.0.0.1:7402\"\n"
            ),
        )
        .expect("writes");
        let err = AggregatorConfig::load(&path).expect_err("both");
        assert!(err.to_string().contains("upstream"), "{err}");
    }

    #[test]
    fn regions_list_sites_of_this_aggregator_each_beneath_one_region() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("aggregator.toml");
        let base = "listen = \"127.0.0.1:0\"\nhierarchy_id = \"3b1f7a52-9c4e-4d7a-8f0e-2a6c5d9e1b47\"\n\
                    store = \"m.sqlite\"\nsites = [\"CAS\", \"P01\", \"P02\"]\n";
        let load = |regions: &str| {
            std::fs::write(&path, format!("{base}{regions}")).expect("writes");
            AggregatorConfig::load(&path)
        };
        let config = load("[[regions]]\nname = \"EU\"\nsites = [\"P01\", \"P02\"]\n")
            .expect("a CAS above a region");
        assert_eq!(config.regions.len(), 1);
        assert_eq!(config.regions[0].name.as_str(), "EU");
        assert!(load("").expect("no regions").regions.is_empty());
        for (regions, field, problem) in [
            (
                "[[regions]]\nname = \"EU\"\nsites = [\"P03\"]\n",
                "regions[0].sites",
                "P03 is not one of this aggregator's sites",
            ),
            (
                "[[regions]]\nname = \"EU\"\nsites = [\"P01\"]\n\
                 [[regions]]\nname = \"US\"\nsites = [\"P01\"]\n",
                "regions[1].sites",
                "P01 is beneath region EU already",
            ),
            (
                "[[regions]]\nname = \"EU\"\nsites = [\"P01\"]\n\
                 [[regions]]\nname = \"EU\"\nsites = [\"P02\"]\n",
                "regions[1].name",
                "listed twice",
            ),
            (
                "[[regions]]\nname = \"EU\"\nsites = []\n",
                "regions[0].sites",
                "lists no site",
            ),
        ] {
            let error = load(regions).expect_err(problem).to_string();
            assert!(
                error.contains(field) && error.contains(problem),
                "{regions}: {error}"
            );
        }
        let error = load("[[regions]]\nname = \"E U\"\nsites = [\"P01\"]\n")
            .expect_err("a bad name")
            .to_string();
        assert!(error.contains("region name"), "{error}");
    }

    /// Writes an aggregator configuration of `extra` lines in a fresh folder and loads it.
    fn load_with(extra: &str) -> (tempfile::TempDir, Result<AggregatorConfig, ConfigError>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("aggregator.toml");
        std::fs::write(
            &path,
            format!(
                "listen = \"127.0.0.1:0\"\nhierarchy_id = \"3b1f7a52-9c4e-4d7a-8f0e-2a6c5d9e1b47\"\n\
                 sites = [\"P01\"]\n{extra}"
            ),
        )
        .expect("writes");
        let config = AggregatorConfig::load(&path);
        (dir, config)
    }

    #[test]
    fn a_connection_point_or_upstream_that_cannot_be_reached_is_refused_at_load() {
        for field in ["connection_point", "upstream"] {
            for (url, says) in [
                ("http://127.0.0.1:99999", "port 99999"),
                ("http://127.0.0.1:0", "port 0"),
                ("ftp://127.0.0.1:7402", "ftp://"),
                ("127.0.0.1:7402", "no http://"),
            ] {
                let (_dir, config) =
                    load_with(&format!("store = \"m.sqlite\"\n{field} = \"{url}\"\n"));
                let err = config.expect_err(url).to_string();
                assert!(
                    err.contains("aggregator.toml")
                        && err.contains(&format!("{field}:"))
                        && err.contains(says),
                    "{field} = {url}: {err}"
                );
            }
        }
    }

    #[test]
    fn a_malformed_listen_address_is_refused_naming_it() {
        for listen in ["127.0.0.1:99999", "127.0.0.1", "localhost:7401"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("aggregator.toml");
            std::fs::write(
                &path,
                format!(
                    "listen = \"{listen}\"\nhierarchy_id = \"3b1f7a52-9c4e-4d7a-8f0e-2a6c5d9e1b47\"\n\
                     store = \"m.sqlite\"\nsites = [\"P01\"]\n"
                ),
            )
            .expect("writes");
            let err = AggregatorConfig::load(&path).expect_err(listen).to_string();
            assert!(
                err.contains("aggregator.toml") && err.contains("listen"),
                "{listen}: {err}"
            );
        }
    }

    #[test]
    fn a_store_that_is_a_folder_or_a_tls_file_that_is_missing_is_refused_at_load() {
        let (dir, config) = load_with("store = \"data\"\n");
        assert!(config.is_ok(), "no folder there yet: the file is made");
        std::fs::create_dir(dir.path().join("data")).expect("folder");
        let path = dir.path().join("aggregator.toml");
        let err = AggregatorConfig::load(&path)
            .expect_err("a folder")
            .to_string();
        let folder = dir.path().join("data").display().to_string();
        assert!(
            err.contains("store:") && err.contains(&folder) && err.contains("is a folder"),
            "{err}"
        );

        let (dir, config) = load_with(
            "store = \"m.sqlite\"\n[tls]\ncert = \"a.pem\"\nkey = \"a.key\"\nca = \"ca.pem\"\n",
        );
        let err = config.expect_err("no TLS files").to_string();
        let cert = dir.path().join("a.pem").display().to_string();
        assert!(err.contains("tls.cert:") && err.contains(&cert), "{err}");
        AggregatorConfig::read(&dir.path().join("aggregator.toml")).expect("read looks at no file");
        assert!(!dir.path().join("m.sqlite").exists(), "no store made");
    }
}
