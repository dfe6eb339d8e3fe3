//! Checks a receiver applies to every run and merged period before storing it.
//!
//! One definition of what a valid run is: its own fields (`check_run_fields`), each
//! result set (`check_set`) and each row (`check_row`). A run is only ever checked
//! from its encoding, by [`check_run_encoded`](crate::encoded::check_run_encoded), which
//! walks it a window at a time and applies these checks. A merged period's own fields
//! (`check_period_fields`) and each site's (`check_site_fields`) are checked with the same
//! set and row checks, decoded in [`check_merged`] or from the period's encoding in
//! [`check_merged_encoded`](crate::encoded_period::check_merged_encoded).
//!
//! Each failure names the field at fault, so the sender's operator can tell what to fix.

use std::collections::HashSet;

use hrs_proto::v1 as pb;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::catalog::Catalog;
use crate::digest::merged_digest;
use crate::ids::{HierarchyId, Level, Period, SiteCode};
use crate::value::Value;

/// Why a run or merged period was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Invalid {
    /// A field is missing or malformed.
    #[error("field {field}: {problem}")]
    Field {
        /// Path of the field, e.g. `run.results[3].rows[0]`.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The catalog version is not one this build knows.
    #[error("unknown catalog version {0:?}")]
    UnknownCatalog(String),
    /// The digest does not match the content.
    #[error("digest mismatch: message says {claimed}, content hashes to {actual}")]
    Digest {
        /// The digest sent.
        claimed: String,
        /// The digest of what arrived.
        actual: String,
    },
}

fn field(field: impl Into<String>, problem: impl Into<String>) -> Invalid {
    Invalid::Field {
        field: field.into(),
        problem: problem.into(),
    }
}

/// What a well-formed run says about itself, once checked.
#[derive(Debug, Clone)]
pub struct RunHeader {
    /// The run's id.
    pub run_id: uuid::Uuid,
    /// The sending site.
    pub site: SiteCode,
    /// The hierarchy it belongs to.
    pub hierarchy_id: HierarchyId,
    /// The period it covers.
    pub period: Period,
    /// The level it was collected at.
    pub level: Level,
    /// When its collection started, as the site's clock read it.
    pub started_at: OffsetDateTime,
}

/// Longest name-like field (a hashed hierarchy ID or site code, a mode), in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// Longest timestamp field, in bytes: RFC 3339 with room to spare.
pub const MAX_TIMESTAMP_BYTES: usize = 64;

/// The earliest time a run or report may name: before it, no site ran HRS.
const EARLIEST: OffsetDateTime = time::macros::datetime!(2000-01-01 00:00 UTC);

/// How far ahead of the receiver's clock a site's clock may run.
pub const CLOCK_SKEW: time::Duration = time::Duration::days(1);

/// Parses an RFC 3339 time no earlier than 2000, naming the field when it is not one.
fn timestamp(path: &str, value: &str) -> Result<OffsetDateTime, Invalid> {
    bounded(path, value, MAX_TIMESTAMP_BYTES)?;
    let at = OffsetDateTime::parse(value, &Rfc3339).map_err(|_| {
        field(
            path,
            format!("{value:?} is not an RFC 3339 time such as 2026-11-30T06:00:00Z"),
        )
    })?;
    if at < EARLIEST {
        return Err(field(path, format!("{value} is before the year 2000")));
    }
    Ok(at)
}

/// Parses a time that may be empty (never happened).
fn optional_timestamp(path: &str, value: &str) -> Result<Option<OffsetDateTime>, Invalid> {
    if value.is_empty() {
        return Ok(None);
    }
    timestamp(path, value).map(Some)
}

/// Refuses a count above what a store's signed 64-bit integer holds.
fn storable(path: &str, value: u64) -> Result<(), Invalid> {
    if i64::try_from(value).is_err() {
        return Err(field(path, format!("{value} is above {}", i64::MAX)));
    }
    Ok(())
}

/// Checks that a run's times are not ahead of the receiver's clock, `now`, by more than
/// [`CLOCK_SKEW`]: a site whose clock is that far off is told so, not stored.
pub fn check_run_time(header: &RunHeader, now: OffsetDateTime) -> Result<(), Invalid> {
    if header.started_at > now + CLOCK_SKEW {
        return Err(field(
            "run.started_at",
            format!(
                "{} is more than a day after the receiver's clock ({}): check the site's clock",
                crate::clock::rfc3339(header.started_at),
                crate::clock::rfc3339(now)
            ),
        ));
    }
    Ok(())
}

/// Checks a site's report of its link: times in RFC 3339 (or empty), counts storable.
pub fn check_link_report(report: &pb::LinkReport) -> Result<(), Invalid> {
    optional_timestamp("link.last_success_at", &report.last_success_at)?;
    optional_timestamp("link.oldest_pending_at", &report.oldest_pending_at)?;
    storable("link.backlog_runs", report.backlog_runs)?;
    storable("link.backlog_bytes", report.backlog_bytes)?;
    storable("link.dropped_runs", report.dropped_runs)?;
    Ok(())
}

/// Refuses a field longer than `max` bytes, naming it.
fn bounded(path: &str, value: &str, max: usize) -> Result<(), Invalid> {
    if value.len() > max {
        return Err(field(path, format!("{} bytes; at most {max}", value.len())));
    }
    Ok(())
}

/// Checks a run's own fields (not its results) and finds the catalog it names.
pub(crate) fn check_run_fields(run: &pb::Run) -> Result<(RunHeader, Catalog), Invalid> {
    let run_id =
        uuid::Uuid::parse_str(&run.run_id).map_err(|_| field("run.run_id", "not a UUID"))?;
    let site: SiteCode = run
        .site
        .parse()
        .map_err(|e: crate::ids::IdError| field("run.site", e.to_string()))?;
    let hierarchy_id: HierarchyId = run
        .hierarchy_id
        .parse()
        .map_err(|e: crate::ids::IdError| field("run.hierarchy_id", e.to_string()))?;
    let period: Period = run
        .period
        .parse()
        .map_err(|e: crate::ids::IdError| field("run.period", e.to_string()))?;
    let level: Level = run
        .level
        .parse()
        .map_err(|e: crate::ids::IdError| field("run.level", e.to_string()))?;
    if run.sequence == 0 {
        return Err(field("run.sequence", "must be at least 1"));
    }
    // Stores keep sequences as signed 64-bit integers; a larger one would be clamped and
    // outrank every later run of the site.
    storable("run.sequence", run.sequence)?;
    let started_at = timestamp("run.started_at", &run.started_at)?;
    let finished_at = timestamp("run.finished_at", &run.finished_at)?;
    if finished_at < started_at {
        return Err(field(
            "run.finished_at",
            format!("{} is before run.started_at", run.finished_at),
        ));
    }
    let catalog = Catalog::by_version(&run.catalog_version)
        .ok_or_else(|| Invalid::UnknownCatalog(run.catalog_version.clone()))?;
    Ok((
        RunHeader {
            run_id,
            site,
            hierarchy_id,
            period,
            level,
            started_at,
        },
        catalog,
    ))
}

/// Checks a merged period's shape, every site's results, and its digest.
pub fn check_merged(period: &pb::MergedPeriod) -> Result<(Period, Level), Invalid> {
    let (when, level, catalog) = check_period_fields(period)?;
    let mut seen = HashSet::new();
    for (i, site) in period.sites.iter().enumerate() {
        check_site_fields(i, site, &mut seen)?;
        check_results(
            &format!("period.sites[{i}].results"),
            &site.results,
            &catalog,
            level,
        )?;
    }
    let actual = merged_digest(period);
    if actual != period.digest {
        return Err(Invalid::Digest {
            claimed: period.digest.clone(),
            actual,
        });
    }
    Ok((when, level))
}

/// Checks a merged period's own fields (not its sites) and finds the catalog it names.
pub(crate) fn check_period_fields(
    period: &pb::MergedPeriod,
) -> Result<(Period, Level, Catalog), Invalid> {
    if period.hierarchy_hash.is_empty() {
        return Err(field("period.hierarchy_hash", "is empty"));
    }
    bounded(
        "period.hierarchy_hash",
        &period.hierarchy_hash,
        MAX_NAME_BYTES,
    )?;
    bounded("period.mode", &period.mode, MAX_NAME_BYTES)?;
    for (i, site) in period.missing_sites.iter().enumerate() {
        if site.is_empty() {
            return Err(field(format!("period.missing_sites[{i}]"), "is empty"));
        }
        bounded(&format!("period.missing_sites[{i}]"), site, MAX_NAME_BYTES)?;
    }
    let when: Period = period
        .period
        .parse()
        .map_err(|e: crate::ids::IdError| field("period.period", e.to_string()))?;
    let level: Level = period
        .level
        .parse()
        .map_err(|e: crate::ids::IdError| field("period.level", e.to_string()))?;
    let catalog = Catalog::by_version(&period.catalog_version)
        .ok_or_else(|| Invalid::UnknownCatalog(period.catalog_version.clone()))?;
    Ok((when, level, catalog))
}

/// Checks the own fields (not the results) of a merged period's `i`th site. `seen`
/// collects site codes, which must not repeat.
pub(crate) fn check_site_fields(
    i: usize,
    site: &pb::SiteResults,
    seen: &mut HashSet<String>,
) -> Result<(), Invalid> {
    if site.site.is_empty() {
        return Err(field(format!("period.sites[{i}].site"), "is empty"));
    }
    if !seen.insert(site.site.clone()) {
        return Err(field(format!("period.sites[{i}].site"), "appears twice"));
    }
    bounded(
        &format!("period.sites[{i}].site"),
        &site.site,
        MAX_NAME_BYTES,
    )?;
    bounded(
        &format!("period.sites[{i}].run_id"),
        &site.run_id,
        MAX_NAME_BYTES,
    )?;
    for (name, value) in [
        ("started_at", &site.started_at),
        ("finished_at", &site.finished_at),
    ] {
        timestamp(&format!("period.sites[{i}].{name}"), value)?;
    }
    Ok(())
}

/// Checks that each result set names a catalog query allowed at `level` and that its
/// columns and rows match what the catalog declares.
fn check_results(
    path: &str,
    results: &[pb::ResultSet],
    catalog: &Catalog,
    level: Level,
) -> Result<(), Invalid> {
    let mut seen = HashSet::new();
    for (i, set) in results.iter().enumerate() {
        let here = format!("{path}[{i}]");
        let declared = check_set(&here, set, !set.rows.is_empty(), catalog, level, &mut seen)?;
        for (r, row) in set.rows.iter().enumerate() {
            check_row(&here, r, row, &declared)?;
        }
    }
    Ok(())
}

/// The columns a query declares: name, type, and whether the catalog hashes it.
pub(crate) type Declared = Vec<(String, crate::catalog::ColumnType, bool)>;

/// Checks one result set's fields (not its rows) against the catalog, and returns the
/// columns its rows must match. `seen` collects query ids, which must not repeat.
pub(crate) fn check_set(
    here: &str,
    set: &pb::ResultSet,
    has_rows: bool,
    catalog: &Catalog,
    level: Level,
    seen: &mut HashSet<String>,
) -> Result<Declared, Invalid> {
    let query = catalog.query(&set.query_id).ok_or_else(|| {
        field(
            format!("{here}.query_id"),
            format!("{:?} is not in catalog {}", set.query_id, catalog.version),
        )
    })?;
    if !seen.insert(set.query_id.clone()) {
        return Err(field(format!("{here}.query_id"), "appears twice"));
    }
    if set.level != query.level.as_str() {
        return Err(field(
            format!("{here}.level"),
            format!("is {:?}, the catalog says {}", set.level, query.level),
        ));
    }
    if !query.level.allowed_at(level) {
        return Err(field(
            format!("{here}.query_id"),
            format!("is a {} query in a {level} run", query.level),
        ));
    }
    let declared = query.output_columns();
    let matches = set.columns.len() == declared.len()
        && set
            .columns
            .iter()
            .zip(&declared)
            .all(|(c, (name, ty))| c.name == *name && c.r#type == ty.as_str());
    if !matches {
        return Err(field(
            format!("{here}.columns"),
            "do not match the catalog's declared columns",
        ));
    }
    if !set.error.is_empty() && has_rows {
        return Err(field(
            format!("{here}.rows"),
            "a failed query carries no rows",
        ));
    }
    let hashed = |name: &str| {
        query
            .columns
            .iter()
            .any(|c| c.name == name && c.privacy == crate::catalog::Privacy::Hash)
    };
    Ok(declared
        .into_iter()
        .map(|(name, ty)| {
            let hashed = hashed(&name);
            (name, ty, hashed)
        })
        .collect())
}

/// Checks one row against its result set's declared columns.
pub(crate) fn check_row(
    here: &str,
    r: usize,
    row: &pb::Row,
    declared: &Declared,
) -> Result<(), Invalid> {
    if row.values.len() != declared.len() {
        return Err(field(
            format!("{here}.rows[{r}]"),
            format!(
                "has {} values, {} columns are declared",
                row.values.len(),
                declared.len()
            ),
        ));
    }
    for (value, (name, ty, hashed)) in row.values.iter().zip(declared) {
        let value = Value::from(value);
        if !ty.admits(&value) {
            return Err(field(
                format!("{here}.rows[{r}].{name}"),
                format!("is not of the declared type {ty}"),
            ));
        }
        // A clear value in a hashed column would leave the hierarchy as it is.
        if let (true, Value::Text(text)) = (*hashed, &value)
            && !crate::hash::is_hash(text)
        {
            return Err(field(
                format!("{here}.rows[{r}].{name}"),
                "is hashed by the catalog but does not hold a hash",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ColumnType;

    fn row(values: &[Value]) -> pb::Row {
        pb::Row {
            values: values.iter().map(pb::Value::from).collect(),
        }
    }

    #[test]
    fn a_hashed_column_holding_clear_text_is_refused_naming_it() {
        let declared: Declared = vec![
            ("server".to_owned(), ColumnType::Text, true),
            ("packages".to_owned(), ColumnType::Int, false),
        ];
        let hashed = crate::hash::hash_value("p01-cm01.contoso.example");
        assert!(
            check_row(
                "results[0]",
                0,
                &row(&[Value::Text(hashed), Value::Int(3)]),
                &declared
            )
            .is_ok()
        );
        assert!(
            check_row(
                "results[0]",
                0,
                &row(&[Value::Null, Value::Int(3)]),
                &declared
            )
            .is_ok()
        );
        let clear = row(&[
            Value::Text("p01-cm01.contoso.example".into()),
            Value::Int(3),
        ]);
        let error = check_row("results[0]", 0, &clear, &declared).expect_err("refused");
        assert!(
            error.to_string().contains("results[0].rows[0].server"),
            "{error}"
        );
        assert!(!error.to_string().contains("contoso"), "{error}");
    }
}
