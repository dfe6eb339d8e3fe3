//! `hrs collect`: the operator's way to see exactly what a site would produce, without
//! spooling or sending anything.

use std::fmt::Write as _;

use anyhow::Context as _;
use hrs_agent::SiteType;
use hrs_agent::collect::{Collection, collect};
use hrs_core::catalog::Catalog;
use hrs_core::hash::Hasher;
use hrs_core::{Period, Value};
use hrs_proto::v1 as pb;
use serde_json::json;

use crate::cli::CollectArgs;

/// Opens the site database `--site-db` names, with `--password-env`/`--password-file`,
/// as the agent would; returns its description (never a secret) with it.
pub(crate) async fn open_site_db(
    site_db: &str,
    password: &crate::cli::PasswordArgs,
) -> anyhow::Result<(String, hrs_sitedb::AnySiteDb)> {
    let spec = hrs_sitedb::SiteDbSpec::parse(site_db, password.source()).context("--site-db")?;
    let db = hrs_sitedb::open(&spec)
        .await
        .with_context(|| format!("cannot open {spec}"))?;
    Ok((spec.to_string(), db))
}

/// Runs the catalog once and prints the run; fails after printing it when every query
/// failed, as the agent would spool nothing of such a run.
pub async fn run(args: CollectArgs) -> anyhow::Result<()> {
    let (site_db, mut db) = open_site_db(&args.site_db, &args.password).await?;
    let catalog = Catalog::builtin()?;
    let clock = hrs_core::clock::system();
    let what = Collection {
        site: args.site.clone(),
        site_type: if args.cas {
            SiteType::Cas
        } else {
            SiteType::Primary
        },
        hierarchy_id: args.hierarchy_id,
        level: args.level,
        period: args
            .period
            .unwrap_or_else(|| Period::last_ended(clock.now())),
        hasher: Hasher::from_key_file(args.hash_key_file.as_deref())?,
        clock,
    };
    let run = collect(&mut db, &catalog, &what, uuid::Uuid::new_v4(), 0).await;
    if args.format == "json" {
        crate::output::emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&run_json(&run))?
        ))?;
    } else {
        print_table(&run)?;
    }
    let errors: Vec<&str> = run
        .results
        .iter()
        .filter(|set| !set.error.is_empty())
        .map(|set| set.error.as_str())
        .collect();
    if !run.results.is_empty() && errors.len() == run.results.len() {
        anyhow::bail!(
            "every one of the {} queries failed at the site database {site_db}: {}; \
             check that --site-db names a site database this login can read",
            errors.len(),
            hrs_agent::collect::error_sample(errors.iter().copied())
        );
    }
    Ok(())
}

fn cell(value: &pb::Value) -> serde_json::Value {
    match Value::from(value) {
        Value::Null => serde_json::Value::Null,
        Value::Text(s) => json!(s),
        Value::Int(i) => json!(i),
        Value::Real(r) => json!(r),
        Value::Bool(b) => json!(b),
    }
}

/// The run as one JSON document: header, then every result set with its rows.
fn run_json(run: &pb::Run) -> serde_json::Value {
    let results: Vec<serde_json::Value> = run
        .results
        .iter()
        .map(|set| {
            json!({
                "query_id": set.query_id,
                "level": set.level,
                "columns": set.columns.iter().map(|c| json!({"name": c.name, "type": c.r#type})).collect::<Vec<_>>(),
                "rows": set.rows.iter().map(|r| r.values.iter().map(cell).collect::<Vec<_>>()).collect::<Vec<_>>(),
                "error": set.error,
                "duration_ms": set.duration_ms,
            })
        })
        .collect();
    json!({
        "site": run.site,
        "period": run.period,
        "level": run.level,
        "catalog_version": run.catalog_version,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "digest": run.digest,
        "results": results,
    })
}

fn print_table(run: &pb::Run) -> std::io::Result<()> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "site {} period {} level {} catalog {} ({} queries)",
        run.site,
        run.period,
        run.level,
        run.catalog_version,
        run.results.len()
    );
    for set in &run.results {
        out.push('\n');
        let status = if set.error.is_empty() {
            format!("{} rows, {} ms", set.rows.len(), set.duration_ms)
        } else {
            format!("FAILED: {}", set.error)
        };
        let _ = writeln!(out, "{} [{}] {status}", set.query_id, set.level);
        let header: Vec<&str> = set.columns.iter().map(|c| c.name.as_str()).collect();
        let rows: Vec<Vec<String>> = set
            .rows
            .iter()
            .map(|r| r.values.iter().map(|v| Value::from(v).display()).collect())
            .collect();
        let widths: Vec<usize> = (0..header.len())
            .map(|i| {
                rows.iter()
                    .map(|r| r.get(i).map_or(0, String::len))
                    .chain([header[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<&str>| {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
        };
        let _ = writeln!(out, "  {}", line(header.clone()));
        for row in &rows {
            let _ = writeln!(out, "  {}", line(row.iter().map(String::as_str).collect()));
        }
    }
    let failed = run.results.iter().filter(|s| !s.error.is_empty()).count();
    out.push('\n');
    let _ = writeln!(out, "digest {} ({failed} queries failed)", run.digest);
    crate::output::emit(&out)
}
