//! `hrs status`: the health of a role's replication link, as operators check it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

use crate::output::emit;

/// Prints the status of the role whose configuration `config` is.
pub async fn run(config: &Path, format: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not a TOML file: {}", config.display(), e.message()))?;
    if !table.contains_key("upstream") {
        anyhow::bail!(
            "{}: hrs status reads an agent's configuration (one with `upstream`)",
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
    let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "never".into());
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
    Ok(emit(&out)?)
}
