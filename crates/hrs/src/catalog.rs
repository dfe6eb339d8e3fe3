//! `hrs catalog`: the query catalog as operators review it before anything runs.

use std::fmt::Write as _;

use anyhow::Context as _;
use hrs_core::Level;
use hrs_core::catalog::{Catalog, Privacy, QueryDef};
use hrs_core::hash::{HashKey, Hasher};
use serde::Serialize;

use crate::output::emit;

/// One query as `hrs catalog list --format json` prints it.
#[derive(Debug, Serialize)]
struct Listed<'a> {
    id: &'a str,
    level: &'a str,
    category: &'a str,
    scope: String,
    description: &'a str,
    columns: Vec<&'a str>,
    /// Why the bundled TDS test engine cannot run the T-SQL text, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    engine_gap: Option<&'a str>,
}

/// Prints the catalog's queries, all or those collected at `level`.
pub fn list(level: Option<Level>, format: &str) -> anyhow::Result<()> {
    let mut out = String::new();
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
            engine_gap: q.engine_gap.as_deref(),
        })
        .collect();
    if format == "json" {
        writeln!(out, "{}", serde_json::to_string_pretty(&queries)?)?;
        emit(&out)?;
        return Ok(());
    }
    let id_width = queries.iter().map(|q| q.id.len()).max().unwrap_or(2).max(2);
    writeln!(
        out,
        "catalog {} ({} queries)",
        catalog.version,
        queries.len()
    )?;
    writeln!(
        out,
        "{:<id_width$}  {:<8}  {:<20}  description",
        "id", "level", "category"
    )?;
    for q in &queries {
        writeln!(
            out,
            "{:<id_width$}  {:<8}  {:<20}  {}",
            q.id, q.level, q.category, q.description
        )?;
    }
    emit(&out)?;
    Ok(())
}

/// Prints one query in full: SQL per dialect, declared columns, and their privacy.
pub fn show(id: &str) -> anyhow::Result<()> {
    let mut out = String::new();
    let catalog = Catalog::builtin()?;
    let query = catalog.query(id).with_context(|| {
        format!(
            "no query {id:?} in catalog {}: see `hrs catalog list`",
            catalog.version
        )
    })?;
    writeln!(
        out,
        "{} ({}, {}, scope {:?})",
        query.id, query.level, query.category, query.scope
    )?;
    writeln!(out, "{}", query.description)?;
    writeln!(out)?;
    writeln!(
        out,
        "columns (each row starts with the hashed hierarchy_id):"
    )?;
    for column in &query.columns {
        let privacy = match column.privacy {
            Privacy::None => "sent as is",
            Privacy::Hash => "one-way hashed at the site",
            Privacy::Drop => "dropped at the site, never sent",
            Privacy::Identifying => "identifying, sent in clear (Full only)",
        };
        writeln!(out, "  {:<24} {:<5} {privacy}", column.name, column.ty)?;
    }
    writeln!(out)?;
    writeln!(out, "SQLite:\n  {}", query.sqlite.trim())?;
    match &query.tsql {
        Some(tsql) => writeln!(out, "T-SQL:\n  {}", tsql.trim())?,
        None => writeln!(out, "T-SQL: not written yet")?,
    }
    if let Some(gap) = &query.engine_gap {
        writeln!(out)?;
        writeln!(
            out,
            "cross-checked against a real SQL Server only (test engine gap: {gap})"
        )?;
    }
    emit(&out)?;
    Ok(())
}

/// Finds a shipped catalog by version, or names the versions there are.
fn shipped(version: &str) -> anyhow::Result<Catalog> {
    Catalog::by_version(version).with_context(|| {
        format!(
            "no catalog version {version:?} in this build; known: {}",
            Catalog::known_versions().join(", ")
        )
    })
}

/// Prints what changed from catalog `a` to catalog `b`: queries added, removed, changed.
pub fn diff(a: &str, b: &str) -> anyhow::Result<()> {
    let mut out = String::new();
    let (old, new) = (shipped(a)?, shipped(b)?);
    writeln!(out, "catalog {} -> {}", old.version, new.version)?;
    let mut counts = (0, 0, 0);
    for query in &new.queries {
        match old.query(&query.id) {
            None => {
                counts.0 += 1;
                writeln!(out, "+ {} ({}, {})", query.id, query.level, query.category)?;
            }
            Some(before) => {
                let changes = changes(before, query);
                if !changes.is_empty() {
                    counts.2 += 1;
                    writeln!(out, "~ {}: {}", query.id, changes.join(", "))?;
                }
            }
        }
    }
    for query in &old.queries {
        if new.query(&query.id).is_none() {
            counts.1 += 1;
            writeln!(out, "- {} ({}, {})", query.id, query.level, query.category)?;
        }
    }
    writeln!(
        out,
        "{} added, {} removed, {} changed",
        counts.0, counts.1, counts.2
    )?;
    emit(&out)?;
    Ok(())
}

/// Names what differs between two versions of one query.
fn changes(a: &QueryDef, b: &QueryDef) -> Vec<String> {
    let mut out = Vec::new();
    if a.level != b.level {
        out.push(format!("level {} -> {}", a.level, b.level));
    }
    if a.category != b.category {
        out.push(format!("category {} -> {}", a.category, b.category));
    }
    if a.scope != b.scope {
        out.push("scope".into());
    }
    if a.description != b.description {
        out.push("description".into());
    }
    if a.sqlite.trim() != b.sqlite.trim() {
        out.push("SQLite text".into());
    }
    if a.tsql.as_deref().map(str::trim) != b.tsql.as_deref().map(str::trim) {
        out.push("T-SQL text".into());
    }
    let describe = |q: &QueryDef| -> Vec<String> {
        q.columns
            .iter()
            .map(|c| format!("{} {} {:?}", c.name, c.ty, c.privacy))
            .collect()
    };
    if describe(a) != describe(b) {
        out.push("columns or privacy".into());
    }
    out
}

/// `hrs hash`: prints a value's hash as the catalog applies it, plain or keyed, or writes a
/// new hierarchy key.
pub fn hash(
    value: Option<&str>,
    key_file: Option<&std::path::Path>,
    new_key: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let mut out = String::new();
    if let Some(path) = new_key {
        let key = HashKey::generate();
        hrs_core::files::write_owner_only(path, format!("{}\n", key.to_base64()).as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        writeln!(
            out,
            "wrote a new hash key to {} (id {})",
            path.display(),
            key.id()
        )?;
        emit(&out)?;
        return Ok(());
    }
    let value = value.context("give a VALUE to hash")?;
    let hasher = Hasher::from_key_file(key_file)?;
    writeln!(out, "{}", hasher.hash(value))?;
    emit(&out)?;
    Ok(())
}
