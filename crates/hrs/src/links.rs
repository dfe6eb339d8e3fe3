//! Replication link commands: `hrs status` (an agent's link to its upstream, or every
//! site's link as its aggregator sees it), `hrs reinit` (ask a site to send again) and
//! `hrs release` (let an agent send the runs it holds).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use hrs_core::clock::Clock as _;
use hrs_core::config::ConfigError;

use crate::output::emit;

/// A configuration `hrs status` reads, of whichever role its file is.
enum RoleConfig {
    Agent(Box<hrs_agent::AgentConfig>),
    Aggregator(Box<hrs_aggregator::AggregatorConfig>),
    ConnectionPoint(Box<hrs_connection::ConnectionPointConfig>),
}

impl RoleConfig {
    /// Loads `path` as the role whose configuration it is. Each role's file refuses the
    /// keys of another's, so the role is the one whose own loader accepts the file; when
    /// none does, each role's reason is given.
    fn load(path: &Path) -> Result<Self, ConfigError> {
        let agent = match hrs_agent::AgentConfig::load(path) {
            Ok(config) => return Ok(Self::Agent(Box::new(config))),
            // An unreadable file is so for every role.
            Err(error @ ConfigError::Read { .. }) => return Err(error),
            Err(error) => error,
        };
        let aggregator = match hrs_aggregator::AggregatorConfig::load(path) {
            Ok(config) => return Ok(Self::Aggregator(Box::new(config))),
            Err(error) => error,
        };
        let connection_point = match hrs_connection::ConnectionPointConfig::load(path) {
            Ok(config) => return Ok(Self::ConnectionPoint(Box::new(config))),
            Err(error) => error,
        };
        let reason = |error: &ConfigError| match error {
            ConfigError::Invalid { message, .. } => message.clone(),
            other => other.to_string(),
        };
        Err(ConfigError::Invalid {
            path: path.to_owned(),
            message: format!(
                "hrs status reads an agent's, an aggregator's or a connection point's \
                 configuration, and this is none of them: as an agent's, {}; as an \
                 aggregator's, {}; as a connection point's, {}",
                reason(&agent),
                reason(&aggregator),
                reason(&connection_point)
            ),
        })
    }
}

/// Prints the status of the role whose configuration `config` is.
pub async fn status(config: &Path, format: &str) -> anyhow::Result<()> {
    let config = match RoleConfig::load(config)? {
        RoleConfig::Agent(config) => *config,
        RoleConfig::Aggregator(config) => return aggregator(&config, format),
        RoleConfig::ConnectionPoint(config) => return connection_point(&config, format),
    };
    let agent = hrs_agent::Agent::open(config.clone(), hrs_core::clock::system())?;
    let status = agent.status().await?;
    if format == "json" {
        return Ok(emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&status)?
        ))?);
    }
    let mut out = String::new();
    let or_none = |v: &Option<String>| v.as_deref().map_or_else(|| "never".into(), to_seconds);
    writeln!(out, "site {} -> {}", status.site, status.upstream)?;
    writeln!(
        out,
        "link          {} ({} consecutive failed attempts)",
        status.state, status.consecutive_failures
    )?;
    writeln!(out, "last success  {}", or_none(&status.last_success_at))?;
    writeln!(out, "last attempt  {}", or_none(&status.last_attempt_at))?;
    if let Some(error) = &status.last_error {
        writeln!(out, "last error    {error}")?;
    }
    writeln!(
        out,
        "backlog       {} run(s), {} bytes{}",
        status.backlog_runs,
        status.backlog_bytes,
        status
            .lag_seconds
            .map(|s| format!(", oldest waiting {s} s"))
            .unwrap_or_default()
    )?;
    if status.dropped_runs > 0 {
        writeln!(
            out,
            "DROPPED       {} run(s) to stay within the spool's limits",
            status.dropped_runs
        )?;
    }
    for held in &status.held_runs {
        writeln!(
            out,
            "HELD          run {} of {}, not delivered: {}; release it with `{}`",
            held.run_id,
            held.period,
            held.reason,
            config.release_command(&held.run_id)
        )?;
    }
    writeln!(
        out,
        "collected     {}",
        status
            .last_collected_period
            .as_deref()
            .unwrap_or("nothing yet")
    )?;
    if let Some(last) = &status.failed_collections.last {
        writeln!(
            out,
            "FAILED        {} collection(s) spooled nothing; the last, of {} at {}: {}",
            status.failed_collections.count,
            last.period,
            to_seconds(&last.at),
            last.error
        )?;
    }
    writeln!(out, "site db       {}", status.site_db)?;
    if let Some(certificate) = &status.certificate {
        certificate_lines(&mut out, certificate)?;
    }
    Ok(emit(&out)?)
}

/// Prints every configured site's link as the aggregator sees it.
fn aggregator(config: &hrs_aggregator::AggregatorConfig, format: &str) -> anyhow::Result<()> {
    if !config.store.exists() {
        anyhow::bail!(
            "no merge store at {}: the aggregator has not run yet",
            config.store.display()
        );
    }
    let store = hrs_aggregator::SqliteMergeStore::open_read_only(&config.store)
        .with_context(|| format!("cannot open merge store {}", config.store.display()))?;
    let links = hrs_aggregator::site_links(config, &store, hrs_core::clock::SystemClock.now())?;
    if format == "json" {
        return Ok(emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&links)?
        ))?);
    }
    let mut out = String::new();
    if let Some(tls) = &config.tls {
        let certificate = hrs_pki::Expiry::of(&tls.cert, hrs_core::clock::SystemClock.now())?;
        certificate_lines(&mut out, &certificate)?;
        writeln!(out)?;
    }
    writeln!(
        out,
        "{:<5} {:<9} {:<20} {:>6} {:<20} {:<9} {:>7} {:>7}  reinit",
        "site", "link", "last contact", "missed", "last delivery", "period", "backlog", "dropped"
    )?;
    for link in &links {
        let state = link.state.map_or("never", |s| s.as_str());
        let dash = |v: &Option<String>| v.as_deref().map_or_else(|| "-".into(), to_seconds);
        writeln!(
            out,
            "{:<5} {:<9} {:<20} {:>6} {:<20} {:<9} {:>7} {:>7}  {}",
            link.site,
            state,
            dash(&link.last_contact_at),
            link.missed_checks,
            dash(&link.last_delivery_at),
            dash(&link.last_period),
            link.backlog_runs,
            link.dropped_runs,
            if link.reinit_pending.is_empty() {
                "-".to_owned()
            } else {
                link.reinit_pending.join(",")
            }
        )?;
    }
    Ok(emit(&out)?)
}

/// A role's certificate and its expiry, with the warning when it is near.
fn certificate_lines(out: &mut String, certificate: &hrs_pki::Expiry) -> std::fmt::Result {
    writeln!(
        out,
        "certificate   {} expires {} ({} days)",
        certificate.file.display(),
        to_seconds(&certificate.not_after),
        certificate.days_left
    )?;
    if let Some(warning) = &certificate.warning {
        writeln!(out, "WARNING       {warning}")?;
    }
    Ok(())
}

/// An RFC 3339 time to the second, for tables.
fn to_seconds(time: &str) -> String {
    match time.get(..19) {
        Some(seconds) if time.len() > 20 => format!("{seconds}Z"),
        _ => time.to_owned(),
    }
}

/// `hrs reinit`: asks a site, through its aggregator, to send periods again.
pub fn reinit(
    config: &Path,
    site: &hrs_core::SiteCode,
    period: Option<&hrs_core::Period>,
) -> anyhow::Result<()> {
    let config = hrs_aggregator::AggregatorConfig::load(config)?;
    let periods =
        hrs_aggregator::request_reinit(&config, site, period, hrs_core::clock::SystemClock.now())?;
    emit(&format!(
        "asked {site} to collect and send again: {}; it does so at its next check \
         (every {} minutes), and `hrs status` shows the request until it has\n",
        periods
            .iter()
            .map(hrs_core::Period::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        config.site_check_minutes
    ))?;
    Ok(())
}

/// `hrs release`: lets an agent deliver the runs it holds (one, or all).
pub async fn release(config: &Path, run: Option<&str>) -> anyhow::Result<()> {
    let config = hrs_agent::AgentConfig::load(config)?;
    let agent = hrs_agent::Agent::open(config, hrs_core::clock::system())?;
    let released = agent.release(run).await?;
    let mut out = String::new();
    for held in &released {
        writeln!(
            out,
            "released run {} of {} (held: {}); it goes with the agent's next delivery, \
             and upstream it becomes the site's current run of {} unless a newer one is there",
            held.run_id, held.period, held.reason, held.period
        )?;
    }
    Ok(emit(&out)?)
}

/// Prints what a connection point holds: each period and whether the intake acknowledged
/// it, the update-check schedule, and the updates available to the hierarchy.
fn connection_point(
    config: &hrs_connection::ConnectionPointConfig,
    format: &str,
) -> anyhow::Result<()> {
    let status = hrs_connection::status(config)?;
    if format == "json" {
        return Ok(emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&status)?
        ))?);
    }
    let mut out = String::new();
    writeln!(
        out,
        "connection point ({}, level {}){}",
        status.mode,
        status.level,
        status
            .intake
            .as_deref()
            .map(|i| format!(" -> {i}"))
            .unwrap_or_default()
    )?;
    for p in &status.periods {
        writeln!(
            out,
            "  {:<10} {:<26} {}",
            p.period,
            p.state,
            p.submission_id
                .as_deref()
                .map(|id| format!("submission {id}"))
                .or_else(|| p.bundle.clone())
                .unwrap_or_default()
        )?;
    }
    if status.periods.is_empty() {
        writeln!(out, "  no period received yet")?;
    }
    match (&status.last_check_at, &status.next_check_at) {
        (Some(last), Some(next)) => {
            writeln!(out, "update check  last {last}, next {next}")?;
            if let Some(error) = &status.last_check_error {
                writeln!(out, "              incomplete: {error}")?;
            }
        }
        _ if status.mode == "offline" => writeln!(
            out,
            "update check  offline: with the connection tool (prepare, connect, import)"
        )?,
        _ => writeln!(out, "update check  none yet")?,
    }
    match &status.manifest_received_at {
        None => writeln!(out, "updates       none known yet")?,
        Some(at) if status.updates.is_empty() => writeln!(
            out,
            "updates       none applicable (as of {at}, {})",
            status.manifest_source.as_deref().unwrap_or_default()
        )?,
        Some(at) => {
            writeln!(
                out,
                "updates       {} available (as of {at}, {}; sites at {})",
                status.updates.len(),
                status.manifest_source.as_deref().unwrap_or_default(),
                status.site_versions.join(", ")
            )?;
            for update in &status.updates {
                writeln!(
                    out,
                    "  {:<12} {:<8} {:<18} {} ({})",
                    update.id, update.kind, update.version, update.title, update.released
                )?;
            }
        }
    }
    for package in &status.imported_packages {
        writeln!(out, "  imported {package}")?;
    }
    Ok(emit(&out)?)
}
