//! One collection: every catalog query that applies to this site and level, run against
//! the site database and shaped into what may leave the site.

use std::time::Instant;

use hrs_core::catalog::{Catalog, QueryDef, Scope};
use hrs_core::hash::Hasher;
use hrs_core::{HierarchyId, Level, Period, SiteCode};
use hrs_proto::v1 as pb;
use hrs_sitedb::{Dialect, QueryParams, SiteDb, SiteDbError};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

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
}

fn applies(query: &QueryDef, site_type: SiteType) -> bool {
    matches!(
        (query.scope, site_type),
        (Scope::Both, _) | (Scope::Primary, SiteType::Primary) | (Scope::Cas, SiteType::Cas)
    )
}

fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Receives a collection as it is produced: each result set's rows one at a time, then
/// the set's own fields. The spool writes them to disk as they come, so a run of any size
/// is never held whole; `hrs collect` keeps them in memory to print.
pub trait Sink {
    /// Why the sink could not take what it was given; stops the collection.
    type Error;
    /// Takes one row of the result set being collected.
    fn row(&mut self, row: &pb::Row) -> Result<(), Self::Error>;
    /// Ends the current result set with its own fields; a failed set's rows are dropped.
    fn end_set(&mut self, set: &pb::ResultSet) -> Result<(), Self::Error>;
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

    fn end_set(&mut self, set: &pb::ResultSet) -> Result<(), Self::Error> {
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
    let collected = match collect_into(db, catalog, what, run_id, sequence, &mut sink).await {
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

/// Runs every catalog query that applies to this site and level, handing each row to
/// `sink` as it is read and shaped; a query that fails is recorded with its error.
pub async fn collect_into<D: SiteDb, S: Sink + Send>(
    db: &mut D,
    catalog: &Catalog,
    what: &Collection,
    run_id: uuid::Uuid,
    sequence: u64,
    sink: &mut S,
) -> Result<Collected, S::Error>
where
    S::Error: Send,
{
    let started_at = now();
    let params = QueryParams {
        period_start: what.period.start(),
        period_end: what.period.end(),
    };
    let hierarchy_hash = what.hierarchy_id.hashed();
    let (mut queries, mut failed_queries, mut total_rows) = (0, 0, 0);
    for query in catalog
        .at_level(what.level)
        .filter(|q| applies(q, what.site_type))
    {
        let began = Instant::now();
        let columns = query
            .output_columns()
            .into_iter()
            .map(|(name, ty)| pb::Column {
                name,
                r#type: ty.as_str().to_owned(),
            })
            .collect();
        let outcome = run_query(db, query, &params, &hierarchy_hash, &what.hasher, sink).await?;
        let error = match outcome {
            Ok(rows) => {
                total_rows += rows;
                String::new()
            }
            Err(error) => {
                tracing::warn!(query = %query.id, %error, "query failed");
                failed_queries += 1;
                error
            }
        };
        queries += 1;
        sink.end_set(&pb::ResultSet {
            query_id: query.id.clone(),
            level: query.level.as_str().to_owned(),
            columns,
            rows: Vec::new(),
            error,
            duration_ms: u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX),
        })?;
    }
    Ok(Collected {
        header: pb::Run {
            run_id: run_id.to_string(),
            sequence,
            site: what.site.to_string(),
            hierarchy_id: what.hierarchy_id.to_string(),
            period: what.period.to_string(),
            catalog_version: catalog.version.clone(),
            level: what.level.as_str().to_owned(),
            started_at,
            finished_at: now(),
            results: Vec::new(),
            digest: String::new(),
            hash_key_id: what.hasher.key_id(),
        },
        queries,
        failed_queries,
        rows: total_rows,
    })
}

/// Runs one query, handing each shaped row to `sink`. Returns the rows handed over, or
/// the query's error as the run records it; a sink error stops everything.
async fn run_query<D: SiteDb, S: Sink + Send>(
    db: &mut D,
    query: &QueryDef,
    params: &QueryParams,
    hierarchy_hash: &str,
    hasher: &Hasher,
    sink: &mut S,
) -> Result<Result<u64, String>, S::Error>
where
    S::Error: Send,
{
    let sql = match db.dialect() {
        Dialect::Sqlite => Some(query.sqlite.as_str()),
        Dialect::Tsql => query.tsql.as_deref(),
    };
    let Some(sql) = sql else {
        return Ok(Err("no query text for this database's dialect".to_owned()));
    };
    let (mut rows, mut shape_error, mut sink_error) = (0u64, None, None);
    let stopped = || SiteDbError::Stopped("the collector".into());
    let outcome = db
        .query_each(sql, params, &mut |raw| {
            let values = query.shape_row(raw, hierarchy_hash, hasher).map_err(|e| {
                shape_error = Some(e.to_string());
                stopped()
            })?;
            let row = pb::Row {
                values: values.iter().map(pb::Value::from).collect(),
            };
            sink.row(&row).map_err(|e| {
                sink_error = Some(e);
                stopped()
            })?;
            rows += 1;
            Ok(())
        })
        .await;
    if let Some(error) = sink_error {
        return Err(error);
    }
    if let Some(error) = shape_error {
        return Ok(Err(error));
    }
    Ok(outcome.map(|()| rows).map_err(|error| {
        // The full error stays in the site's log; the run carries only its class.
        tracing::warn!(query = %query.id, %error, "query failed at the site database");
        error.public_reason()
    }))
}
