//! The merged period check on the period's encoding: a period straight from its bytes, a
//! window at a time, through the period, site, set and row checks of
//! [`check_merged`](crate::validate::check_merged) and the merged digest, without decoding
//! it whole, so a role's memory stays flat whatever the period's size (one site's run alone
//! may be close to a gigabyte).
//!
//! It accepts and refuses exactly what `check_merged` does with what prost decodes from the
//! same bytes, with the same error, except by design, as the run check of
//! [`encoded`](crate::encoded): wire groups among the period's, a site's or a set's own
//! fields, and encodings past the size limits below.
//!
//! The walk: first the period's own fields, jumping over its sites; then each site in the
//! period's order, its own fields and its sets' fields (rows skipped), checked in
//! `check_merged`'s order; last the rows, in the digest's order (sites by code, each site's
//! sets by query id), each checked and digested as it is read. Only when a row is refused
//! are the rows before it in the period's order read again, so the error reported is the
//! one `check_merged` reports.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use hrs_proto::v1 as pb;
use prost::Message as _;

use crate::bytes::RunBytes;
use crate::catalog::Catalog;
use crate::digest::MergedDigest;
use crate::encoded::EncodedError;
use crate::ids::{Level, Period};
use crate::report::{self, FlatRow};
use crate::validate::{
    Declared, Invalid, check_period_fields, check_row, check_set, check_site_fields,
};
use crate::wire::{
    Cursor, MAX_ALL_SET_FIELDS, MAX_SETS, SetSpan, Shape, field, for_each_row, read_set,
    walk_message,
};

/// Most sites a period may carry: far above any hierarchy, low enough that every site's
/// index fits in memory.
pub(crate) const MAX_SITES: usize = 10_000;
/// Most result sets a period may carry in all its sites together: each set is indexed until
/// its rows are read.
pub(crate) const MAX_PERIOD_SETS: usize = 1 << 18;
/// Most bytes a period's own fields (all but its sites) may take: room for every one of
/// [`MAX_SITES`] to be missing.
const MAX_PERIOD_FIELDS: usize = 4 << 20;
/// Most bytes a site's own fields (all but its results) may take.
const MAX_SITE_FIELDS: usize = 1 << 20;
/// Most bytes of failed queries' errors kept, in all sets together, until the rows are read.
const MAX_KEPT_ERRORS: usize = 16 << 20;

/// Protobuf field numbers walked here (see `run.proto`).
pub(crate) const PERIOD_SITES: u64 = 5;
pub(crate) const SITE_RESULTS: u64 = 4;

/// How a period is walked: its sites indexed, its other fields kept.
const PERIOD_SHAPE: Shape<'static> = Shape {
    path: "period",
    nested: PERIOD_SITES,
    nested_name: "sites",
    noun: "sites",
    max_nested: MAX_SITES,
    max_fields: MAX_PERIOD_FIELDS,
};

/// What an accepted merged period says about itself, for the receiver to store and log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedSummary {
    /// The one-way hash of the hierarchy it comes from.
    pub hierarchy_hash: String,
    /// The period it covers.
    pub period: Period,
    /// The level its data was limited to.
    pub level: Level,
    /// The catalog its result sets answer.
    pub catalog_version: String,
    /// Its digest, checked against its content.
    pub digest: String,
    /// How the hierarchy sent it (`online`, `offline`), empty inside the hierarchy.
    pub mode: String,
    /// Every site in it, in the period's order.
    pub sites: Vec<SiteSummary>,
    /// The sites expected but missing when it was closed.
    pub missing_sites: Vec<String>,
    /// How many rows it carries in all.
    pub rows: u64,
}

/// One site of an accepted merged period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteSummary {
    /// The site's code (or its hash, once the period has left the hierarchy).
    pub site: String,
    /// How many rows the site's result sets carry.
    pub rows: u64,
}

/// A query's result set shape as the catalog declares it, shared by every site's set of
/// that query: a set is held with its columns left out, as they are checked equal to these.
struct QueryShape {
    query_id: String,
    level: String,
    declared: Declared,
}

impl QueryShape {
    /// Returns a set's fields (rows left out) as they arrived, for the digest.
    fn fields(&self, error: &str) -> pb::ResultSet {
        pb::ResultSet {
            query_id: self.query_id.clone(),
            level: self.level.clone(),
            columns: self
                .declared
                .iter()
                .map(|(name, ty, _)| pb::Column {
                    name: name.clone(),
                    r#type: ty.as_str().to_owned(),
                })
                .collect(),
            error: error.to_owned(),
            ..Default::default()
        }
    }
}

/// A checked result set, held until its rows are read.
struct SetEntry {
    shape: Rc<QueryShape>,
    error: String,
    rows: u64,
    start: u64,
    end: u64,
}

/// A checked site with its checked sets, in the period's order.
struct SiteEntry {
    code: String,
    sets: Vec<SetEntry>,
}

/// Checks an encoded merged period as [`check_merged`](crate::validate::check_merged)
/// checks a decoded one (its own fields, every site's fields, result sets and rows against
/// the catalog it names, and its digest), reading it a window at a time. Returns what the
/// period says about itself.
pub fn check_merged_encoded(source: &dyn RunBytes) -> Result<MergedSummary, EncodedError> {
    let (fields, spans) = walk_period(source)?;
    let (period, level, catalog) = check_period_fields(&fields)?;
    let mut cursor = Cursor::new(source, "period");
    let mut sites = Vec::new();
    if let Err(error) = index_sites(&mut cursor, &spans, &catalog, level, &mut sites) {
        return Err(earliest(&mut cursor, &sites, None, error));
    }
    let actual = check_rows_and_digest(&mut cursor, &fields, &sites)?;
    if actual != fields.digest {
        return Err(Invalid::Digest {
            claimed: fields.digest,
            actual,
        }
        .into());
    }
    let sites: Vec<SiteSummary> = sites
        .into_iter()
        .map(|site| SiteSummary {
            rows: site.sets.iter().map(|set| set.rows).sum(),
            site: site.code,
        })
        .collect();
    Ok(MergedSummary {
        hierarchy_hash: fields.hierarchy_hash,
        period,
        level,
        catalog_version: fields.catalog_version,
        digest: fields.digest,
        mode: fields.mode,
        rows: sites.iter().map(|site| site.rows).sum(),
        sites,
        missing_sites: fields.missing_sites,
    })
}

/// Reads the rows of one query's result sets in an encoded period, one row at a time, in
/// the period's order, handing each to `each` with its site and its set's fields (rows left
/// out), so a receiver reads what it needs of a period (a site-list query's versions)
/// without decoding it. It only reads: the period is checked with
/// [`check_merged_encoded`] first.
pub fn for_each_row_of<E: From<EncodedError>>(
    source: &dyn RunBytes,
    query_id: &str,
    mut each: impl FnMut(&str, &pb::ResultSet, &pb::Row) -> Result<(), E>,
) -> Result<(), E> {
    let (_, spans) = walk_period(source)?;
    let mut cursor = Cursor::new(source, "period");
    for (i, &(start, end)) in spans.iter().enumerate() {
        let (site, sets) = walk_site(&mut cursor, i, start, end)?;
        for (j, set) in sets.iter().enumerate() {
            if set.fields.query_id != query_id {
                continue;
            }
            let here = format!("period.sites[{i}].results[{j}]");
            for_each_row(&mut cursor, &here, set.start, set.end, |_, row| {
                each(&site.site, &set.fields, row)
            })?;
        }
    }
    Ok(())
}

/// Hands every flat row of an encoded merged period to `each`, in the order
/// [`flatten`](crate::report::flatten) gives them for the decoded period, reading the
/// period a window at a time: an export of a period of any size holds one row at a time.
/// It only reads: the period is checked with [`check_merged_encoded`] first.
pub fn for_each_flat_row<E: From<EncodedError>>(
    source: &dyn RunBytes,
    mut each: impl FnMut(FlatRow) -> Result<(), E>,
) -> Result<(), E> {
    let (fields, spans) = walk_period(source)?;
    each(report::hierarchy_row(&fields))?;
    // Sites come in code order, ties in the period's: a skim over their own fields first.
    let mut skim = Cursor::skimming(source, "period");
    let mut order = Vec::with_capacity(spans.len());
    for (i, &(start, end)) in spans.iter().enumerate() {
        order.push((site_fields(&mut skim, i, start, end)?.site, i));
    }
    order.sort();
    let mut cursor = Cursor::new(source, "period");
    for (_, i) in order {
        let (start, end) = spans[i];
        let (site, sets) = walk_site(&mut cursor, i, start, end)?;
        let counted: Vec<(&pb::ResultSet, u64)> =
            sets.iter().map(|set| (&set.fields, set.rows)).collect();
        let times = (site.started_at.as_str(), site.finished_at.as_str());
        for row in report::collector_rows_counted(&fields.period, &site.site, times, &counted) {
            each(row)?;
        }
        for (j, set) in sets.iter().enumerate() {
            let here = format!("period.sites[{i}].results[{j}]");
            for_each_row(&mut cursor, &here, set.start, set.end, |r, row| {
                each(report::result_row(
                    &fields.period,
                    &site.site,
                    &set.fields,
                    r,
                    row,
                ))
            })?;
        }
    }
    Ok(())
}

/// Reads a period's own fields, jumping over its sites, and where each site lies.
pub(crate) fn walk_period(
    source: &dyn RunBytes,
) -> Result<(pb::MergedPeriod, Vec<(u64, u64)>), EncodedError> {
    let mut cursor = Cursor::skimming(source, "period");
    let mut spans = Vec::new();
    let own = walk_message(
        &mut cursor,
        0,
        source.size(),
        &PERIOD_SHAPE,
        |_, _, start, end| {
            spans.push((start, end));
            Ok(())
        },
    )?;
    let fields = pb::MergedPeriod::decode(own.as_slice())
        .map_err(|e| field("period", format!("malformed: {e}")))?;
    Ok((fields, spans))
}

/// How the `i`th site, at `path`, is walked: its sets indexed, its other fields kept.
fn site_shape(path: &str) -> Shape<'_> {
    Shape {
        path,
        nested: SITE_RESULTS,
        nested_name: "results",
        noun: "result sets",
        max_nested: MAX_SETS,
        max_fields: MAX_SITE_FIELDS,
    }
}

/// Reads the `i`th site's own fields only, jumping over its sets (best with a skimming
/// cursor).
pub(crate) fn site_fields(
    cursor: &mut Cursor<'_>,
    i: usize,
    start: u64,
    end: u64,
) -> Result<pb::SiteResults, EncodedError> {
    let path = format!("period.sites[{i}]");
    let own = walk_message(cursor, start, end, &site_shape(&path), |_, _, _, _| Ok(()))?;
    pb::SiteResults::decode(own.as_slice()).map_err(|e| field(&path, format!("malformed: {e}")))
}

/// Reads the `i`th site's own fields and its sets' fields, rows skipped.
pub(crate) fn walk_site(
    cursor: &mut Cursor<'_>,
    i: usize,
    start: u64,
    end: u64,
) -> Result<(pb::SiteResults, Vec<SetSpan>), EncodedError> {
    let path = format!("period.sites[{i}]");
    let mut sets = Vec::new();
    let mut set_fields = 0usize;
    let own = walk_message(
        cursor,
        start,
        end,
        &site_shape(&path),
        |cursor, j, start, end| {
            let span = read_set(cursor, &format!("{path}.results[{j}]"), start, end)?;
            set_fields += span.fields.encoded_len();
            if set_fields > MAX_ALL_SET_FIELDS {
                return Err(field(
                    format!("{path}.results"),
                    format!("fields other than rows exceed {MAX_ALL_SET_FIELDS} bytes in all"),
                ));
            }
            sets.push(span);
            Ok(())
        },
    )?;
    let site = pb::SiteResults::decode(own.as_slice())
        .map_err(|e| field(&path, format!("malformed: {e}")))?;
    Ok((site, sets))
}

/// Checks every site's own fields and its sets' fields, in the period's order, and indexes
/// them into `sites`. On a refusal, `sites` holds everything checked before it.
fn index_sites(
    cursor: &mut Cursor<'_>,
    spans: &[(u64, u64)],
    catalog: &Catalog,
    level: Level,
    sites: &mut Vec<SiteEntry>,
) -> Result<(), EncodedError> {
    let mut index = SetIndex::default();
    let mut seen_sites = HashSet::new();
    for (i, &(start, end)) in spans.iter().enumerate() {
        let (site, found) = walk_site(cursor, i, start, end)?;
        check_site_fields(i, &site, &mut seen_sites)?;
        let mut entry = SiteEntry {
            code: site.site,
            sets: Vec::with_capacity(found.len()),
        };
        let mut seen_queries = HashSet::new();
        for (j, set) in found.into_iter().enumerate() {
            let here = format!("period.sites[{i}].results[{j}]");
            let checked = check_set(
                &here,
                &set.fields,
                set.rows > 0,
                catalog,
                level,
                &mut seen_queries,
            )
            .map_err(EncodedError::from)
            .and_then(|declared| index.add(set, declared));
            match checked {
                Ok(set) => entry.sets.push(set),
                Err(error) => {
                    sites.push(entry);
                    return Err(error);
                }
            }
        }
        sites.push(entry);
    }
    Ok(())
}

/// The checked sets of a period held so far, within the period's limits.
#[derive(Default)]
struct SetIndex {
    shapes: HashMap<String, Rc<QueryShape>>,
    sets: usize,
    error_bytes: usize,
}

impl SetIndex {
    /// Holds a checked set, its columns left to the shape of its query.
    fn add(&mut self, set: SetSpan, declared: Declared) -> Result<SetEntry, EncodedError> {
        self.sets += 1;
        if self.sets > MAX_PERIOD_SETS {
            return Err(field(
                "period.sites",
                format!("more than {MAX_PERIOD_SETS} result sets in all"),
            ));
        }
        self.error_bytes += set.fields.error.len();
        if self.error_bytes > MAX_KEPT_ERRORS {
            return Err(field(
                "period.sites",
                format!("errors of failed queries exceed {MAX_KEPT_ERRORS} bytes in all"),
            ));
        }
        let fields = set.fields;
        let shape = self
            .shapes
            .entry(fields.query_id.clone())
            .or_insert_with(|| {
                Rc::new(QueryShape {
                    query_id: fields.query_id,
                    level: fields.level,
                    declared,
                })
            });
        Ok(SetEntry {
            shape: Rc::clone(shape),
            error: fields.error,
            rows: set.rows,
            start: set.start,
            end: set.end,
        })
    }
}

/// Checks and digests every row, in the digest's order, and returns the digest. A refused
/// row is reported only if no row before it in the period's order is refused too.
fn check_rows_and_digest(
    cursor: &mut Cursor<'_>,
    fields: &pb::MergedPeriod,
    sites: &[SiteEntry],
) -> Result<String, EncodedError> {
    let mut by_code: Vec<usize> = (0..sites.len()).collect();
    by_code.sort_by(|&a, &b| sites[a].code.cmp(&sites[b].code));
    let mut digest = MergedDigest::new(fields, sites.len() as u64);
    for i in by_code {
        let site = &sites[i];
        digest.site(&site.code, site.sets.len() as u64);
        let mut by_query: Vec<usize> = (0..site.sets.len()).collect();
        by_query.sort_by(|&a, &b| {
            site.sets[a]
                .shape
                .query_id
                .cmp(&site.sets[b].shape.query_id)
        });
        for j in by_query {
            let set = &site.sets[j];
            digest.set(&set.shape.fields(&set.error), set.rows);
            let here = format!("period.sites[{i}].results[{j}]");
            let read = for_each_row(cursor, &here, set.start, set.end, |r, row| {
                check_row(&here, r, row, &set.shape.declared)?;
                digest.row(row);
                Ok::<_, EncodedError>(())
            });
            if let Err(error) = read {
                return Err(earliest(cursor, sites, Some((i, j)), error));
            }
        }
    }
    Ok(digest.finish())
}

/// Returns the refusal `check_merged` reports first: a refused row among the sets in
/// `sites` before `stop` (all of them without one) in the period's order, or `error`, which
/// was found after them. A read failure is reported as it is.
fn earliest(
    cursor: &mut Cursor<'_>,
    sites: &[SiteEntry],
    stop: Option<(usize, usize)>,
    error: EncodedError,
) -> EncodedError {
    if matches!(error, EncodedError::Read(_)) {
        return error;
    }
    for (i, site) in sites.iter().enumerate() {
        for (j, set) in site.sets.iter().enumerate() {
            if stop.is_some_and(|stop| (i, j) >= stop) {
                return error;
            }
            let here = format!("period.sites[{i}].results[{j}]");
            let read = for_each_row(cursor, &here, set.start, set.end, |r, row| {
                check_row(&here, r, row, &set.shape.declared).map_err(EncodedError::from)
            });
            if let Err(earlier) = read {
                return earlier;
            }
        }
    }
    error
}

#[cfg(test)]
pub(crate) mod tests;
