//! `hrs sitedb check`: whether a site database can run the catalog, with the fix for each
//! query that cannot.

use std::fmt::Write as _;

use hrs_agent::SiteType;
use hrs_agent::check::{CheckReport, check as check_db};
use hrs_core::Period;
use hrs_core::catalog::Catalog;
use hrs_core::clock::{Clock as _, SystemClock};

use crate::cli::SitedbCheckArgs;
use crate::output::emit;

/// Runs the check and prints it; fails when a query cannot run.
pub async fn check(args: SitedbCheckArgs) -> anyhow::Result<()> {
    let (spec, mut db) = crate::collect::open_site_db(&args.site_db, &args.password).await?;
    let catalog = Catalog::builtin()?;
    let site_type = if args.cas {
        SiteType::Cas
    } else {
        SiteType::Primary
    };
    let period = args
        .period
        .unwrap_or_else(|| Period::last_ended(SystemClock.now()));
    let report = check_db(&mut db, &catalog, args.level, site_type, period).await;
    if args.format == "json" {
        emit(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        emit(&table(&report, &spec)?)?;
    }
    let failing = report.failing().count();
    if failing > 0 {
        anyhow::bail!(
            "{failing} of {} queries cannot run on {spec}; each fails alone and the others \
             are collected, but fix the above before the agent's first collection",
            report.queries.len()
        );
    }
    Ok(())
}

fn table(report: &CheckReport, spec: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    writeln!(
        out,
        "{spec}: {} queries up to {}, reading {} views and tables",
        report.queries.len(),
        report.level,
        report.sources.len()
    )?;
    writeln!(out)?;
    writeln!(out, "{:<40} {:<14} needed by", "source", "state")?;
    for source in &report.sources {
        let needed = if source.needed_by.len() > 4 {
            format!(
                "{} and {} more",
                source.needed_by[..3].join(", "),
                source.needed_by.len() - 3
            )
        } else {
            source.needed_by.join(", ")
        };
        writeln!(out, "{:<40} {:<14} {needed}", source.name, source.state)?;
        if let Some(error) = &source.error {
            writeln!(out, "    {error}")?;
        }
    }
    let failing: Vec<_> = report.failing().collect();
    writeln!(out)?;
    if failing.is_empty() {
        writeln!(out, "every query runs")?;
    }
    let mut fixes: Vec<&str> = Vec::new();
    for query in failing {
        writeln!(
            out,
            "{:<28} {:<9} {}",
            query.id,
            query.level,
            query.error.as_deref().unwrap_or_default()
        )?;
        if let Some(fix) = query.fix.as_deref().filter(|f| !fixes.contains(f)) {
            fixes.push(fix);
        }
    }
    for fix in fixes {
        writeln!(out, "\nfix: {fix}")?;
    }
    Ok(out)
}
