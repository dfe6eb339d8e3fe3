//! One collection: every catalog query that applies to this site and level, run against
//! the site database and shaped into what may leave the site.

use std::future::Future;
use std::time::Instant;

use hrs_core::catalog::{Catalog, QueryDef, Scope};
use hrs_core::clock::SharedClock;
use hrs_core::hash::Hasher;
use hrs_core::{HierarchyId, Level, Period, SiteCode};
use hrs_proto::v1 as pb;
use hrs_sitedb::{Dialect, Pending, QueryParams, RowSink, SiteDb, SiteDbError};

use crate::config::SiteType;

/// What to collect, and for whom.
#[derive(Debug, Clone)]
pub struct Collection {
    /// The collecting site.
    pub site: SiteCode,
    /// Primary or CAS, which selects queries by scope.
    pub site_type: SiteType,
    /// The hierarchy; hashed into every row.
    pub hierarchy_id: HierarchyId,
    /// The data level; queries above it are not run.
    pub level: Level,
    /// The period collected.
    pub period: Period,
    /// How hashed columns are hashed: plain, or keyed with the hierarchy's key.
    pub hasher: Hasher,
    /// The clock the run's start and end are read from.
    pub clock: SharedClock,
}

/// Returns true when a site of `site_type` runs `query`.
pub(crate) fn applies(query: &QueryDef, site_type: SiteType) -> bool {
    matches!(
        (query.scope, site_type),
        (Scope::Both, _) | (Scope::Primary, SiteType::Primary) | (Scope::Cas, SiteType::Cas)
    )
}

/// Receives a collection as it is produced: each result set's rows one at a time, then
/// the set's own fields. The spool writes them to disk as they come, so a run of any size
/// is never held whole; `hrs collect` keeps them in memory to print.
///
/// Taking a row only buffers it; writing happens in the async methods, awaited between
/// rows, so a sink's disk work never runs on one of the runtime's threads.
pub trait Sink: Send {
    /// Why the sink could not take what it was given; stops the collection.
    type Error: Send;
    /// Takes one row of the result set being collected.
    fn row(&mut self, row: &pb::Row) -> Result<(), Self::Error>;
    /// True when enough rows are buffered that [`Sink::flush`] must run before more come.
    fn full(&self) -> bool;
    /// Writes the rows buffered so far.
    fn flush(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Ends the current result set with its own fields; a failed set's rows are dropped.
    fn end_set(
        &mut self,
        set: &pb::ResultSet,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// What a collection produced besides its result sets.
#[derive(Debug, Clone)]
pub struct Collected {
    /// The run's own fields; its results went to the sink, its digest is not yet set.
    pub header: pb::Run,
    /// Queries run.
    pub queries: usize,
    /// Queries that failed (recorded with their error).
    pub failed_queries: usize,
    /// Result rows across all queries.
    pub rows: u64,
    /// The error each failed query recorded, in the order they ran.
    pub errors: Vec<String>,
}

impl Collected {
    /// True when queries ran and every one failed: the run holds no data at all.
    pub fn nothing_collected(&self) -> bool {
        self.queries > 0 && self.failed_queries == self.queries
    }
}

/// How many distinct errors [`error_sample`] names.
const SAMPLE_ERRORS: usize = 3;

/// Returns a few of the distinct errors failed queries recorded, the most frequent first,
/// each with how many queries hit it: enough to say what to check (a file that is not a
/// database, views that are missing) without listing every query.
pub fn error_sample<'a>(errors: impl IntoIterator<Item = &'a str>) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for error in errors {
        match counts.iter_mut().find(|(seen, _)| *seen == error) {
            Some((_, count)) => *count += 1,
            None => counts.push((error, 1)),
        }
    }
    // Stable, so errors as frequent as each other keep the order the queries ran in.
    counts.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    let mut sample: Vec<String> = counts
        .iter()
        .take(SAMPLE_ERRORS)
        .map(|(error, count)| match count {
            1 => format!("{error:?}"),
            n => format!("{error:?} ({n} queries)"),
        })
        .collect();
    let others: usize = counts.iter().skip(SAMPLE_ERRORS).map(|(_, n)| n).sum();
    match others {
        0 => {}
        1 => sample.push("1 more query with another error".to_owned()),
        n => sample.push(format!("{n} more queries with other errors")),
    }
    sample.join(", ")
}

/// Keeps a whole collection in memory.
#[derive(Debug, Default)]
struct MemorySink {
    sets: Vec<pb::ResultSet>,
    rows: Vec<pb::Row>,
}

impl Sink for MemorySink {
    type Error = std::convert::Infallible;

    fn row(&mut self, row: &pb::Row) -> Result<(), Self::Error> {
        self.rows.push(row.clone());
        Ok(())
    }

    fn full(&self) -> bool {
        false
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    async fn end_set(&mut self, set: &pb::ResultSet) -> Result<(), Self::Error> {
        let rows = std::mem::take(&mut self.rows);
        self.sets.push(pb::ResultSet {
            rows: if set.error.is_empty() {
                rows
            } else {
                Vec::new()
            },
            ..set.clone()
        });
        Ok(())
    }
}

/// Runs every applicable query and returns the whole run, digest set, in memory: for
/// `hrs collect`, which prints it. The agent streams into its spool with
/// [`collect_into`].
pub async fn collect<D: SiteDb>(
    db: &mut D,
    catalog: &Catalog,
    what: &Collection,
    run_id: uuid::Uuid,
    sequence: u64,
) -> pb::Run {
    let mut sink = MemorySink::default();
    let collected = match collect_into(db, catalog, what, run_id, sequence, None, &mut sink).await {
        Ok(collected) => collected,
        Err(never) => match never {},
    };
    let mut run = pb::Run {
        results: sink.sets,
        ..collected.header
    };
    run.digest = hrs_core::digest::run_digest(&run);
    run
}

/// Longest error text a run records for one query, in bytes; a longer one is cut (the
/// site's log keeps it whole). Bounding it lets a run's size limit reserve room for every
/// query's own fields before the first row, so the limit holds exactly.
pub const MAX_ERROR_BYTES: usize = 1024;

/// Room kept for the text fields a run gets only when it ends (`finished_at`, `digest`),
/// in bytes: more than either ever takes.
const LATE_FIELD_BYTES: usize = 128;

/// Keeps a run within its size limit while it is collected.
///
/// Everything in a run but its rows is bounded before the first query runs: the run's
/// own fields, and each applicable query's set without rows (error at its longest, each
/// length prefix at its widest). That bound is reserved; rows are counted as they come,
/// exactly as they are encoded. A row that would take the run past the limit fails its
/// query: the set is kept with the error and no rows, and what it had taken is freed for
/// the queries after it.
#[derive(Debug)]
struct Budget {
    /// The largest the run's encoding may be, in bytes.
    limit: u64,
    /// The bound on everything but rows, in bytes.
    reserved: u64,
    /// Row bytes of the sets recorded with their rows.
    kept: u64,
    /// Row bytes of the set being collected.
    current: u64,
}

impl Budget {
    fn new<'a>(
        limit: u64,
        header: &pb::Run,
        sets: impl Iterator<Item = &'a pb::ResultSet>,
    ) -> Self {
        use prost::Message as _;
        let late = "x".repeat(LATE_FIELD_BYTES);
        let header = pb::Run {
            finished_at: late.clone(),
            digest: late,
            ..header.clone()
        }
        .encoded_len() as u64;
        let error = "x".repeat(MAX_ERROR_BYTES);
        let sets: u64 = sets
            .map(|set| {
                let bound = pb::ResultSet {
                    error: error.clone(),
                    duration_ms: u64::MAX,
                    ..set.clone()
                }
                .encoded_len() as u64;
                // The set's key, then its length prefix at the widest a varint takes.
                1 + 10 + bound
            })
            .sum();
        Self {
            limit,
            reserved: header.saturating_add(sets),
            kept: 0,
            current: 0,
        }
    }

    /// Counts one row of the current set; returns the size the run would reach when the
    /// row does not fit.
    fn take(&mut self, row: &pb::Row) -> Result<(), u64> {
        use prost::Message as _;
        let len = row.encoded_len();
        // The row's key, length prefix and bytes, as the set's encoding holds it.
        let bytes = 1 + prost::encoding::encoded_len_varint(len as u64) as u64 + len as u64;
        let reached = self
            .reserved
            .saturating_add(self.kept)
            .saturating_add(self.current)
            .saturating_add(bytes);
        if reached > self.limit {
            return Err(reached);
        }
        self.current += bytes;
        Ok(())
    }

    /// Ends the current set: its rows stay in the run, or (a failed set) leave it.
    fn end_set(&mut self, kept: bool) {
        if kept {
            self.kept += self.current;
        }
        self.current = 0;
    }
}

/// Why a query's set carries an error instead of rows.
enum Failed {
    /// The query failed; not yet logged.
    Query(String),
    /// Its rows would have taken the run past its size limit; logged where found.
    TooLarge(String),
}

/// Cuts an error to [`MAX_ERROR_BYTES`], on a character boundary.
fn bounded(mut error: String) -> String {
    const MARK: &str = "…";
    if error.len() > MAX_ERROR_BYTES {
        let mut cut = MAX_ERROR_BYTES - MARK.len();
        while !error.is_char_boundary(cut) {
            cut -= 1;
        }
        error.truncate(cut);
        error.push_str(MARK);
    }
    error
}

/// Runs every catalog query that applies to this site and level, handing each row to
/// `sink` as it is read and shaped; a query that fails is recorded with its error.
///
/// With `max_run_bytes`, the run's encoding never exceeds it: a query whose rows would
/// take it past the limit is recorded as failed, saying so, and the queries after it
/// still run.
pub async fn collect_into<D: SiteDb, S: Sink>(
    db: &mut D,
    catalog: &Catalog,
    what: &Collection,
    run_id: uuid::Uuid,
    sequence: u64,
    max_run_bytes: Option<u64>,
    sink: &mut S,
) -> Result<Collected, S::Error> {
    let mut header = pb::Run {
        run_id: run_id.to_string(),
        sequence,
        site: what.site.to_string(),
        hierarchy_id: what.hierarchy_id.to_string(),
        period: what.period.to_string(),
        catalog_version: catalog.version.clone(),
        level: what.level.as_str().to_owned(),
        started_at: what.clock.stamp(),
        finished_at: String::new(),
        results: Vec::new(),
        digest: String::new(),
        hash_key_id: what.hasher.key_id(),
    };
    let params = QueryParams {
        period_start: what.period.start(),
        period_end: what.period.end(),
    };
    let hierarchy_hash = what.hierarchy_id.hashed();
    // Each applicable query's set without its rows, error and duration: what it records.
    let sets: Vec<(&QueryDef, pb::ResultSet)> = catalog
        .at_level(what.level)
        .filter(|q| applies(q, what.site_type))
        .map(|query| {
            let columns = query
                .output_columns()
                .into_iter()
                .map(|(name, ty)| pb::Column {
                    name,
                    r#type: ty.as_str().to_owned(),
                })
                .collect();
            let set = pb::ResultSet {
                query_id: query.id.clone(),
                level: query.level.as_str().to_owned(),
                columns,
                ..Default::default()
            };
            (query, set)
        })
        .collect();
    let mut budget =
        max_run_bytes.map(|limit| Budget::new(limit, &header, sets.iter().map(|(_, set)| set)));
    let (mut queries, mut failed_queries, mut total_rows) = (0, 0, 0);
    let mut errors = Vec::new();
    for (query, set) in sets {
        let began = Instant::now();
        let outcome = run_query(
            db,
            query,
            &params,
            &hierarchy_hash,
            &what.hasher,
            budget.as_mut(),
            sink,
        )
        .await?;
        let error = match outcome {
            Ok(rows) => {
                total_rows += rows;
                String::new()
            }
            Err(Failed::Query(error)) => {
                tracing::warn!(query = %query.id, %error, "query failed");
                failed_queries += 1;
                bounded(error)
            }
            Err(Failed::TooLarge(error)) => {
                failed_queries += 1;
                bounded(error)
            }
        };
        if let Some(budget) = budget.as_mut() {
            budget.end_set(error.is_empty());
        }
        if !error.is_empty() {
            errors.push(error.clone());
        }
        queries += 1;
        sink.end_set(&pb::ResultSet {
            error,
            duration_ms: u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX),
            ..set
        })
        .await?;
    }
    header.finished_at = what.clock.stamp();
    Ok(Collected {
        header,
        queries,
        failed_queries,
        rows: total_rows,
        errors,
    })
}

/// One query's rows on their way from the site database to the sink: each shaped, counted
/// against the run's budget, and handed over; what stopped them is kept for
/// [`run_query`] to report.
struct QueryRows<'a, S: Sink> {
    query: &'a QueryDef,
    hierarchy_hash: &'a str,
    hasher: &'a Hasher,
    budget: Option<&'a mut Budget>,
    sink: &'a mut S,
    rows: u64,
    shape_error: Option<String>,
    sink_error: Option<S::Error>,
    /// The size the run would have reached, and its limit.
    too_large: Option<(u64, u64)>,
}

/// What a stopped query returns to the site database; the reason is kept beside it.
fn stopped() -> SiteDbError {
    SiteDbError::Stopped("the collector".into())
}

impl<S: Sink> RowSink for QueryRows<'_, S> {
    fn row(&mut self, raw: Vec<hrs_core::Value>) -> Result<(), SiteDbError> {
        let values = self
            .query
            .shape_row(raw, self.hierarchy_hash, self.hasher)
            .map_err(|e| {
                self.shape_error = Some(e.to_string());
                stopped()
            })?;
        let row = pb::Row {
            values: values.iter().map(pb::Value::from).collect(),
        };
        if let Some(budget) = self.budget.as_deref_mut() {
            // Reading on would only fill the spool with rows the run cannot keep.
            budget.take(&row).map_err(|reached| {
                self.too_large = Some((reached, budget.limit));
                stopped()
            })?;
        }
        self.sink.row(&row).map_err(|e| {
            self.sink_error = Some(e);
            stopped()
        })?;
        self.rows += 1;
        Ok(())
    }

    fn pending(&mut self) -> Option<Pending<'_>> {
        if !self.sink.full() {
            return None;
        }
        Some(Box::pin(async move {
            self.sink.flush().await.map_err(|e| {
                self.sink_error = Some(e);
                stopped()
            })
        }))
    }
}

/// Runs one query, handing each shaped row to `sink` while it fits `budget`. Returns the
/// rows handed over, or why the run records the query as failed; a sink error stops
/// everything.
async fn run_query<D: SiteDb, S: Sink>(
    db: &mut D,
    query: &QueryDef,
    params: &QueryParams,
    hierarchy_hash: &str,
    hasher: &Hasher,
    budget: Option<&mut Budget>,
    sink: &mut S,
) -> Result<Result<u64, Failed>, S::Error> {
    let sql = match db.dialect() {
        Dialect::Sqlite => Some(query.sqlite.as_str()),
        Dialect::Tsql => query.tsql.as_deref(),
    };
    let Some(sql) = sql else {
        return Ok(Err(Failed::Query(
            "no query text for this database's dialect".to_owned(),
        )));
    };
    let mut each = QueryRows {
        query,
        hierarchy_hash,
        hasher,
        budget,
        sink,
        rows: 0,
        shape_error: None,
        sink_error: None,
        too_large: None,
    };
    let outcome = db.query_each(sql, params, &mut each).await;
    let rows = each.rows;
    if let Some(error) = each.sink_error {
        return Err(error);
    }
    if let Some(error) = each.shape_error {
        return Ok(Err(Failed::Query(error)));
    }
    if let Some((reached, limit)) = each.too_large {
        tracing::warn!(
            query = %query.id,
            rows_read = rows,
            reached,
            limit,
            "run size limit reached: the query is recorded as failed, without its rows"
        );
        return Ok(Err(Failed::TooLarge(format!(
            "run size limit: with this query's rows the run would reach {reached} bytes, \
             above the agent's limit of {limit} bytes (max_run_mb); its rows are left out"
        ))));
    }
    Ok(outcome.map(|()| rows).map_err(|error| {
        // The full error stays in the site's log; the run carries only its class.
        tracing::warn!(query = %query.id, %error, "query failed at the site database");
        Failed::Query(error.public_reason())
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use prost::Message as _;

    /// Seeds a site whose `F-UPDATE-STATUS` alone takes close to 3 MB (one row per update
    /// and status), every other query far less.
    pub(crate) fn seed_large_site(path: &std::path::Path) {
        let size = hrs_sitedb::SiteSize {
            clients: 1_000,
            updates: 100_000,
            updates_per_client: 40,
        };
        let site: SiteCode = "P01".parse().expect("site code");
        hrs_sitedb::seed_sized(path, &site, &size, 1).expect("seeds");
    }

    /// Collects everything at Full level into memory, within `limit` when given.
    async fn run_within(db: &mut hrs_sitedb::SqliteSiteDb, limit: Option<u64>) -> pb::Run {
        let what = Collection {
            site: "P01".parse().expect("site code"),
            site_type: SiteType::Primary,
            hierarchy_id: "3b1f7a52-9c4e-4d7a-8f0e-2a6c5d9e1b47".parse().expect("id"),
            level: Level::Full,
            period: "2026-W48".parse().expect("period"),
            hasher: Hasher::from_key_file(None).expect("hasher"),
            clock: hrs_core::clock::ManualClock::new(time::macros::datetime!(2026-11-30 06:00 UTC))
                .shared(),
        };
        let catalog = Catalog::builtin().expect("catalog");
        let mut sink = MemorySink::default();
        let collected = collect_into(db, &catalog, &what, uuid::Uuid::nil(), 1, limit, &mut sink)
            .await
            .expect("collects");
        let mut run = pb::Run {
            results: sink.sets,
            ..collected.header
        };
        run.digest = hrs_core::digest::run_digest(&run);
        run
    }

    #[tokio::test]
    async fn a_query_that_would_take_the_run_past_its_limit_fails_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("site.sqlite");
        seed_large_site(&path);
        let mut db = hrs_sitedb::SqliteSiteDb::open(&path).expect("opens");

        let whole = run_within(&mut db, None).await;
        assert!(whole.results.iter().all(|set| set.error.is_empty()));
        let size = whole.encoded_len() as u64;
        assert!(size > 2 << 20, "the seeded run is only {size} bytes");

        // Room for all: nothing fails.
        let roomy = run_within(&mut db, Some(size + (1 << 20))).await;
        assert!(roomy.results.iter().all(|set| set.error.is_empty()));

        for limit in [256 << 10, 1 << 20, size - 1] {
            let run = run_within(&mut db, Some(limit)).await;
            assert!(
                run.encoded_len() as u64 <= limit,
                "a run of {} bytes within {limit}",
                run.encoded_len()
            );
            assert_eq!(run.results.len(), whole.results.len());
            let mut failed = Vec::new();
            for (set, full) in run.results.iter().zip(&whole.results) {
                assert_eq!(
                    (&set.query_id, &set.columns),
                    (&full.query_id, &full.columns)
                );
                if set.error.is_empty() {
                    assert_eq!(set.rows, full.rows, "{}", set.query_id);
                } else {
                    // Failed for its size alone, saying how far it took the run.
                    assert!(set.rows.is_empty());
                    assert!(
                        set.error.starts_with("run size limit")
                            && set.error.contains(&format!("limit of {limit} bytes")),
                        "{}",
                        set.error
                    );
                    failed.push(set.query_id.as_str());
                }
            }
            assert!(failed.contains(&"F-UPDATE-STATUS"), "{failed:?}");
            if limit >= 1 << 20 {
                // The queries after the largest still ran and kept their rows.
                assert_eq!(failed, ["F-UPDATE-STATUS"]);
            }
        }
    }

    #[test]
    fn the_error_sample_names_the_commonest_errors_and_counts_the_rest() {
        let one = std::iter::repeat_n("sqlite: file is not a database", 70);
        assert_eq!(
            error_sample(one),
            "\"sqlite: file is not a database\" (70 queries)"
        );
        let many = ["a", "b", "b", "c", "d", "e", "e"];
        assert_eq!(
            error_sample(many),
            "\"b\" (2 queries), \"e\" (2 queries), \"a\", 2 more queries with other errors"
        );
    }

    #[test]
    fn a_long_error_is_cut_on_a_character_boundary() {
        assert_eq!(bounded("short".into()), "short");
        let long = "é".repeat(MAX_ERROR_BYTES);
        let cut = bounded(long.clone());
        assert!(cut.len() <= MAX_ERROR_BYTES && cut.ends_with('…'));
        assert!(long.starts_with(cut.trim_end_matches('…')));
    }
}
