//! `hrs intake list`: the hierarchies an intake holds submissions of, and their last ones.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use hrs_core::Period;
use hrs_core::clock::rfc3339;
use hrs_intake::{IntakeStore as _, SqliteIntake, SubmissionSummary};
use serde::Serialize;

use crate::output::emit;

/// One hierarchy as the intake knows it.
#[derive(Debug, Serialize)]
struct Hierarchy {
    hierarchy: String,
    submissions: usize,
    periods: usize,
    last_period: String,
    last_level: String,
    last_rows: u64,
    last_accepted_at: String,
}

/// Prints every hierarchy in the intake's store, most recently heard from last.
pub async fn list(config: &Path, format: &str) -> anyhow::Result<()> {
    let config = hrs_intake::IntakeConfig::load(config)?;
    let store = SqliteIntake::open(&config.store)?;
    let mut by_hierarchy: BTreeMap<String, Vec<SubmissionSummary>> = BTreeMap::new();
    for submission in store.submissions().await? {
        by_hierarchy
            .entry(submission.hierarchy_hash.clone())
            .or_default()
            .push(submission);
    }
    // Most recently heard from last; each one's submissions come oldest first.
    let mut heard: Vec<(String, Vec<SubmissionSummary>)> = by_hierarchy.into_iter().collect();
    heard.sort_by_key(|(_, submissions)| submissions.last().map(|s| s.accepted_at));
    let hierarchies: Vec<Hierarchy> = heard
        .into_iter()
        .filter_map(|(hierarchy, submissions)| {
            let last = submissions.last()?;
            let periods: std::collections::BTreeSet<Period> =
                submissions.iter().map(|s| s.period).collect();
            Some(Hierarchy {
                submissions: submissions.len(),
                periods: periods.len(),
                last_period: last.period.to_string(),
                last_level: last.level.clone(),
                last_rows: last.rows,
                last_accepted_at: rfc3339(last.accepted_at),
                hierarchy,
            })
        })
        .collect();
    if format == "json" {
        return Ok(emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&hierarchies)?
        ))?);
    }
    let mut out = String::new();
    writeln!(
        out,
        "{:<46} {:>11} {:>7}  {:<10} {:<8} {:>8}  last accepted",
        "hierarchy", "submissions", "periods", "last", "level", "rows"
    )?;
    for h in &hierarchies {
        writeln!(
            out,
            "{:<46} {:>11} {:>7}  {:<10} {:<8} {:>8}  {}",
            h.hierarchy,
            h.submissions,
            h.periods,
            h.last_period,
            h.last_level,
            h.last_rows,
            h.last_accepted_at
        )?;
    }
    if hierarchies.is_empty() {
        writeln!(out, "(no submissions yet)")?;
    }
    Ok(emit(&out)?)
}
