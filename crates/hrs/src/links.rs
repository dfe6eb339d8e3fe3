//! Replication link commands: `hrs status` (an agent's link to its upstream, or every
//! site's link as its aggregator sees it) and `hrs reinit` (ask a site to send again).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

use crate::output::emit;

/// Prints the status of the role whose configuration `config` is.
pub async fn status(config: &Path, format: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not a TOML file: {}", config.display(), e.message()))?;
    if table.contains_key("sites") {
        return aggregator(config, format);
    }
    if !table.contains_key("upstream") {
        anyhow::bail!(
            "{}: hrs status reads an agent's configuration (with `upstream`) or an \
             aggregator's (with `sites`)",
            config.display()
        );
    }
    let agent = hrs_agent::Agent::open(hrs_agent::AgentConfig::load(config)?)?;
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
    writeln!(
        out,
        "collected     {}",
        status
            .last_collected_period
            .as_deref()
            .unwrap_or("nothing yet")
    )?;
    writeln!(out, "site db       {}", status.site_db)?;
    if let Some(certificate) = &status.certificate {
        certificate_lines(&mut out, certificate)?;
    }
    Ok(emit(&out)?)
}

/// Prints every configured site's link as the aggregator sees it.
fn aggregator(config: &Path, format: &str) -> anyhow::Result<()> {
    let config = hrs_aggregator::AggregatorConfig::load(config)?;
    if !config.store.exists() {
        anyhow::bail!(
            "no merge store at {}: the aggregator has not run yet",
            config.store.display()
        );
    }
    let store = hrs_aggregator::SqliteMergeStore::open_read_only(&config.store)
        .with_context(|| format!("cannot open merge store {}", config.store.display()))?;
    let links = hrs_aggregator::site_links(&config, &store, time::OffsetDateTime::now_utc())?;
    if format == "json" {
        return Ok(emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&links)?
        ))?);
    }
    let mut out = String::new();
    if let Some(tls) = config.tls() {
        let certificate = hrs_pki::Expiry::of(&tls.cert, time::OffsetDateTime::now_utc())?;
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
        hrs_aggregator::request_reinit(&config, site, period, time::OffsetDateTime::now_utc())?;
    emit(&format!(
        "asked {site} to collect and send again: {}; it does so at its next check \
         (every {} minutes), and `hrs status` shows the request until it has\n",
        periods.join(", "),
        config.site_check_minutes
    ))?;
    Ok(())
}
