//! The aggregator's configuration file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hrs_core::config::{self, ConfigError};
use hrs_core::hash::Hasher;
use hrs_core::link::LinkThresholds;
use hrs_core::{HierarchyId, Level, SiteCode};
use hrs_rpc::tls::TlsFiles;
use serde::Deserialize;

/// Everything an aggregator needs to know, read from one TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    /// Address the gRPC service listens on.
    pub listen: SocketAddr,
    /// The hierarchy this aggregator serves; runs of any other are refused.
    pub hierarchy_id: HierarchyId,
    /// The hierarchy-wide data level; what is forwarded never exceeds it.
    #[serde(default = "default_level")]
    pub level: Level,
    /// The merge store file.
    pub store: PathBuf,
    /// Every site expected to report; runs from any other site are refused, and a period
    /// is complete once each has reported.
    pub sites: Vec<SiteCode>,
    /// The connection point's address, e.g. `http://127.0.0.1:7402`; when absent, merged
    /// periods stay in the store for `hrs view`.
    #[serde(default)]
    pub connection_point: Option<String>,
    /// The next aggregator up, for a region aggregator under a CAS: every site's runs are
    /// relayed to it as they are. Set this or `connection_point`, not both.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Hours after a period's end (Monday 00:00 UTC) after which it is forwarded even with
    /// sites missing.
    #[serde(default = "default_deadline_hours")]
    pub period_deadline_hours: u64,
    /// Minutes a period must go without a new run before a change is forwarded: a period
    /// past its deadline, or one already forwarded that a late or re-sending site changed.
    /// A burst of arrivals so leaves as one submission; 0 forwards every change at once.
    /// A period's first forward with every site present never waits.
    #[serde(default = "default_settle_minutes")]
    pub period_settle_minutes: u64,
    /// Delay between forwarding attempts while the connection point is away, in seconds.
    #[serde(default = "default_retry_seconds")]
    pub retry_seconds: u64,
    /// The hierarchy's hash key file, when its sites hash keyed: runs hashed with any other
    /// key (or with none) are refused, since their hashes would not correlate.
    #[serde(default)]
    pub hash_key_file: Option<PathBuf>,
    /// How often sites check in (their `check_minutes`); each check a site misses counts
    /// as a failed attempt of its link.
    #[serde(default = "default_site_check_minutes")]
    pub site_check_minutes: u64,
    /// Missed checks after which a site's link is degraded.
    #[serde(default = "default_degraded_after")]
    pub link_degraded_after: u32,
    /// Missed checks after which a site's link has failed.
    #[serde(default = "default_failed_after")]
    pub link_failed_after: u32,
    /// Largest run a site may send, in MiB (its encoding); larger offers are refused
    /// before any byte is stored.
    #[serde(default = "default_max_run_mb")]
    pub max_run_mb: u64,
    /// Largest single message (a chunk of a run, a resume, a heartbeat), in MiB; larger
    /// ones are refused with `OutOfRange` before they are read. At least 5: a chunk is up
    /// to 4 MiB.
    #[serde(default = "config::default_max_message_mb")]
    pub max_message_mb: u64,
    /// A Prometheus text file the role keeps its refusal counts in, for an exporter's
    /// textfile collector; none when unset.
    #[serde(default)]
    pub metrics_file: Option<PathBuf>,
    /// Connections served at once; calls on a connection beyond it are refused with
    /// `ResourceExhausted`.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Runs one site may be sending at once; another is refused with `ResourceExhausted`
    /// until one finishes.
    #[serde(default = "default_max_runs_in_flight")]
    pub max_runs_in_flight: u32,
    /// Longest a call may take, in seconds, before it is cancelled (a broken-off upload
    /// resumes where it stopped).
    #[serde(default = "config::default_request_timeout_seconds")]
    pub request_timeout_seconds: u64,
    /// This aggregator's certificate, its key, and the hierarchy's CA (all three, or none
    /// for plaintext): sites must then connect with a certificate from that CA, and each
    /// may write only the data of the site its certificate names.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// See `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// See `tls_cert`.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// The fingerprint of that key, empty without one; read from the file at load.
    #[serde(skip)]
    pub hash_key_id: String,
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

fn default_max_connections() -> u32 {
    512
}

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

    /// The TLS files, when TLS is configured.
    pub fn tls(&self) -> Option<TlsFiles> {
        TlsFiles::of(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_ca.as_deref(),
        )
    }

    /// Returns when a site's link counts as degraded, then failed, in missed checks.
    pub fn link_thresholds(&self) -> LinkThresholds {
        LinkThresholds {
            degraded_after: self.link_degraded_after,
            failed_after: self.link_failed_after,
        }
    }

    /// The limits on the aggregator's callers.
    pub fn limits(&self) -> config::ServerLimits {
        config::ServerLimits {
            max_connections: self.max_connections,
            max_message_mb: self.max_message_mb,
            request_timeout_seconds: self.request_timeout_seconds,
        }
    }

    /// Reads the file, resolves its paths against the file's folder, and checks its values.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: Self = config::load(path)?;
        cfg.store = config::resolve(path, &cfg.store);
        cfg.metrics_file = cfg.metrics_file.map(|file| config::resolve(path, &file));
        // A chunk of up to 4 MiB, with its framing, must fit in one message.
        cfg.limits().check(path, 5)?;
        if cfg.max_runs_in_flight == 0 {
            return Err(config::invalid(
                path,
                "max_runs_in_flight",
                "must be at least 1",
            ));
        }
        // SQLite keeps a run in one blob, which it caps at 10^9 bytes.
        if cfg.max_run_mb == 0 || cfg.max_run_mb > MAX_RUN_MB {
            return Err(config::invalid(
                path,
                "max_run_mb",
                format!("must be between 1 and {MAX_RUN_MB}"),
            ));
        }
        if cfg.sites.is_empty() {
            return Err(config::invalid(path, "sites", "lists no site"));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = cfg.sites.iter().find(|s| !seen.insert(*s)) {
            return Err(config::invalid(
                path,
                "sites",
                format!("{dup} is listed twice"),
            ));
        }
        if let Some(url) = &cfg.connection_point
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(config::invalid(
                path,
                "connection_point",
                format!("{url:?} is not an http:// or https:// address"),
            ));
        }
        if let Some(url) = &cfg.upstream {
            if cfg.connection_point.is_some() {
                return Err(config::invalid(
                    path,
                    "upstream",
                    "set connection_point (at the top of the hierarchy) or upstream (a region \
                     under another aggregator), not both",
                ));
            }
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(config::invalid(
                    path,
                    "upstream",
                    format!("{url:?} is not an http:// or https:// address"),
                ));
            }
        }
        if cfg.period_deadline_hours > MAX_PERIOD_HOURS {
            return Err(config::invalid(
                path,
                "period_deadline_hours",
                format!("must be at most {MAX_PERIOD_HOURS} (ten years)"),
            ));
        }
        if cfg.period_settle_minutes > MAX_PERIOD_HOURS * 60 {
            return Err(config::invalid(
                path,
                "period_settle_minutes",
                format!("must be at most {} (ten years)", MAX_PERIOD_HOURS * 60),
            ));
        }
        if cfg.retry_seconds == 0 {
            return Err(config::invalid(path, "retry_seconds", "must be at least 1"));
        }
        if cfg.site_check_minutes == 0 {
            return Err(config::invalid(
                path,
                "site_check_minutes",
                "must be at least 1",
            ));
        }
        cfg.link_thresholds()
            .check()
            .map_err(|problem| config::invalid(path, "link_degraded_after", problem))?;
        cfg.hash_key_file = cfg.hash_key_file.map(|file| config::resolve(path, &file));
        let (connection_point, upstream) = (cfg.connection_point.clone(), cfg.upstream.clone());
        config::tls_settings(
            path,
            config::TlsSettings {
                cert: &mut cfg.tls_cert,
                key: &mut cfg.tls_key,
                ca: &mut cfg.tls_ca,
            },
            &[
                ("connection_point", connection_point.as_deref()),
                ("upstream", upstream.as_deref()),
            ],
        )?;
        cfg.hash_key_id = Hasher::from_key_file(cfg.hash_key_file.as_deref())
            .map_err(|e| config::invalid(path, "hash_key_file", e.to_string()))?
            .key_id();
        Ok(cfg)
    }
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
        assert!(region.upstream.is_some() && region.connection_point.is_none());

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
}
