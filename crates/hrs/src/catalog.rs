//! `hrs catalog`: the query catalog as operators review it before anything runs.

use anyhow::Context as _;
use hrs_core::Level;
use hrs_core::catalog::{Catalog, Privacy};
use serde::Serialize;

/// One query as `hrs catalog list --format json` prints it.
#[derive(Debug, Serialize)]
struct Listed<'a> {
    id: &'a str,
    level: &'a str,
    category: &'a str,
    scope: String,
    description: &'a str,
    columns: Vec<&'a str>,
}

/// Prints the catalog's queries, all or those collected at `level`.
pub fn list(level: Option<Level>, format: &str) -> anyhow::Result<()> {
    let catalog = Catalog::builtin()?;
    let queries: Vec<Listed<'_>> = catalog
        .queries
        .iter()
        .filter(|q| level.is_none_or(|l| q.level.allowed_at(l)))
        .map(|q| Listed {
            id: &q.id,
            level: q.level.as_str(),
            category: &q.category,
            scope: format!("{:?}", q.scope).to_lowercase(),
            description: &q.description,
            columns: q.columns.iter().map(|c| c.name.as_str()).collect(),
        })
        .collect();
    if format == "json" {
        println!("{}", serde_json::to_string_pretty(&queries)?);
        return Ok(());
    }
    let id_width = queries.iter().map(|q| q.id.len()).max().unwrap_or(2).max(2);
    println!("catalog {} ({} queries)", catalog.version, queries.len());
    println!(
        "{:<id_width$}  {:<8}  {:<20}  description",
        "id", "level", "category"
    );
    for q in &queries {
        println!(
            "{:<id_width$}  {:<8}  {:<20}  {}",
            q.id, q.level, q.category, q.description
        );
    }
    Ok(())
}

/// Prints one query in full: SQL per dialect, declared columns, and their privacy.
pub fn show(id: &str) -> anyhow::Result<()> {
    let catalog = Catalog::builtin()?;
    let query = catalog.query(id).with_context(|| {
        format!(
            "no query {id:?} in catalog {}: see `hrs catalog list`",
            catalog.version
        )
    })?;
    println!(
        "{} ({}, {}, scope {:?})",
        query.id, query.level, query.category, query.scope
    );
    println!("{}", query.description);
    println!();
    println!("columns (each row starts with the hashed hierarchy_id):");
    for column in &query.columns {
        let privacy = match column.privacy {
            Privacy::None => "sent as is",
            Privacy::Hash => "one-way hashed at the site",
            Privacy::Drop => "dropped at the site, never sent",
            Privacy::Identifying => "identifying, sent in clear (Full only)",
        };
        println!("  {:<24} {:<5} {privacy}", column.name, column.ty);
    }
    println!();
    println!("SQLite:\n  {}", query.sqlite.trim());
    match &query.tsql {
        Some(tsql) => println!("T-SQL:\n  {}", tsql.trim()),
        None => println!("T-SQL: not written yet"),
    }
    Ok(())
}
