//! One collection: every catalog query that applies to this site and level, run against
//! the site database and shaped into what may leave the site.

use std::time::Instant;

use hrs_core::catalog::{Catalog, QueryDef, Scope};
use hrs_core::hash::Hasher;
use hrs_core::{HierarchyId, Level, Period, SiteCode};
use hrs_proto::v1 as pb;
use hrs_sitedb::{Dialect, QueryParams, SiteDb};
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

/// Runs the catalog and returns the run, digest included. A failing query is recorded with
/// its error and never stops the others.
pub async fn collect<D: SiteDb>(
    db: &mut D,
    catalog: &Catalog,
    what: &Collection,
    run_id: uuid::Uuid,
    sequence: u64,
) -> pb::Run {
    let started_at = now();
    let params = QueryParams {
        period_start: what.period.start(),
        period_end: what.period.end(),
    };
    let hierarchy_hash = what.hierarchy_id.hashed();
    let mut results = Vec::new();
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
        let outcome = run_query(db, query, &params, &hierarchy_hash, &what.hasher).await;
        let (rows, error) = match outcome {
            Ok(rows) => (rows, String::new()),
            Err(error) => {
                tracing::warn!(query = %query.id, %error, "query failed");
                (Vec::new(), error)
            }
        };
        results.push(pb::ResultSet {
            query_id: query.id.clone(),
            level: query.level.as_str().to_owned(),
            columns,
            rows,
            error,
            duration_ms: u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
    }
    let mut run = pb::Run {
        run_id: run_id.to_string(),
        sequence,
        site: what.site.to_string(),
        hierarchy_id: what.hierarchy_id.to_string(),
        period: what.period.to_string(),
        catalog_version: catalog.version.clone(),
        level: what.level.as_str().to_owned(),
        started_at,
        finished_at: now(),
        results,
        digest: String::new(),
        hash_key_id: what.hasher.key_id(),
    };
    run.digest = hrs_core::digest::run_digest(&run);
    run
}

async fn run_query<D: SiteDb>(
    db: &mut D,
    query: &QueryDef,
    params: &QueryParams,
    hierarchy_hash: &str,
    hasher: &Hasher,
) -> Result<Vec<pb::Row>, String> {
    let sql = match db.dialect() {
        Dialect::Sqlite => Some(query.sqlite.as_str()),
        Dialect::Tsql => query.tsql.as_deref(),
    }
    .ok_or_else(|| "no query text for this database's dialect".to_owned())?;
    let raw = db.query(sql, params).await.map_err(|error| {
        // The full error stays in the site's log; the run carries only its class.
        tracing::warn!(query = %query.id, %error, "query failed at the site database");
        error.public_reason()
    })?;
    raw.into_iter()
        .map(|row| {
            query
                .shape_row(row, hierarchy_hash, hasher)
                .map(|values| pb::Row {
                    values: values.iter().map(pb::Value::from).collect(),
                })
                .map_err(|e| e.to_string())
        })
        .collect()
}
