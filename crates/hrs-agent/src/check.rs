//! Whether a site database can run the catalog, asked before the first collection: every
//! view the applicable queries read is probed with the agent's own login, then every query
//! is run once with its rows discarded, so an operator learns which queries would fail,
//! why, and what to grant, instead of reading it in a run's errors a week later.

use std::collections::BTreeMap;

use hrs_core::catalog::{Catalog, QueryDef, sources};
use hrs_core::hash::Hasher;
use hrs_core::{Level, Period};
use hrs_sitedb::{Dialect, FailureKind, QueryParams, SiteDb, SiteDbError};

use crate::collect::applies;
use crate::config::SiteType;

/// Microsoft's page on giving a login read-only access to the views only.
pub const VIEW_SECURITY_PAGE: &str =
    "https://learn.microsoft.com/en-us/intune/configmgr/develop/core/understand/sql-view-security";

/// How one view, table or function the catalog reads fared.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceCheck {
    /// Its name, as the queries spell it.
    pub name: String,
    /// `readable`, `missing`, `denied`, `unreachable`, `failed`, or `function` (called
    /// with arguments: judged by the queries that call it).
    pub state: String,
    /// The database's own error, when it could not be read.
    pub error: Option<String>,
    /// The queries that read it.
    pub needed_by: Vec<String>,
}

/// How one query fared when run once.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueryCheck {
    /// The query.
    pub id: String,
    /// Its level.
    pub level: String,
    /// Rows it returned; none when it failed.
    pub rows: Option<u64>,
    /// Why it failed: the kind, then the database's or the catalog's message.
    pub error: Option<String>,
    /// What would make it run.
    pub fix: Option<String>,
}

/// Everything [`check`] found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    /// The level checked at: the queries up to it.
    pub level: String,
    /// Every source the checked queries read, by name.
    pub sources: Vec<SourceCheck>,
    /// Every checked query, in catalog order.
    pub queries: Vec<QueryCheck>,
}

impl CheckReport {
    /// Returns the queries that cannot run.
    pub fn failing(&self) -> impl Iterator<Item = &QueryCheck> {
        self.queries.iter().filter(|q| q.error.is_some())
    }
}

/// The text of `query` this database runs.
fn text(query: &QueryDef, dialect: Dialect) -> Option<&str> {
    match dialect {
        Dialect::Sqlite => Some(query.sqlite.as_str()),
        Dialect::Tsql => query.tsql.as_deref(),
    }
}

/// A statement that returns nothing but needs `source` to exist and the login to be
/// allowed to read it; it names no column, so no column's type can fail it.
fn probe(source: &str, dialect: Dialect) -> String {
    match dialect {
        Dialect::Sqlite => format!("SELECT 1 FROM \"{source}\" LIMIT 0"),
        Dialect::Tsql => format!("SELECT TOP 0 1 AS probe FROM {source}"),
    }
}

/// What to do about a failure of `kind` reading `sources`.
fn fix_for(kind: FailureKind, sources: &[String], dialect: Dialect) -> String {
    let names = sources.join(", ");
    match (kind, dialect) {
        (FailureKind::MissingObject, _) => format!(
            "{names}: not in this database. Point site_db at the site's own database \
             (CM_<site code>) on its site database server; a view a Configuration Manager \
             version does not have stays missing, and only the queries reading it fail"
        ),
        (FailureKind::MissingColumn, _) => format!(
            "a column of {names} is not there: an inventory class or property is not enabled \
             in hardware inventory, or the site runs an older Configuration Manager version"
        ),
        (FailureKind::Denied, Dialect::Tsql) => {
            let grants: Vec<String> = sources
                .iter()
                .map(|s| {
                    let lower = s.to_ascii_lowercase();
                    if lower.starts_with("sys.dm_db_") {
                        "GRANT VIEW DATABASE STATE TO <login's user>".to_owned()
                    } else if lower.starts_with("sys.dm_") {
                        "GRANT VIEW SERVER STATE TO <login>".to_owned()
                    } else if let Some(object) = lower.strip_prefix("msdb.dbo.") {
                        format!("in msdb, GRANT SELECT ON dbo.{object} TO <login's user in msdb>")
                    } else {
                        format!("GRANT SELECT ON {s} TO <login's user>")
                    }
                })
                .collect();
            format!(
                "the login may not read {names}: grant read-only access to the views it reads \
                 and nothing else (least privilege; {VIEW_SECURITY_PAGE}), e.g. {}; \
                 db_datareader on the site database also serves but reads every table",
                grants.join("; ")
            )
        }
        (FailureKind::Denied, Dialect::Sqlite) => {
            format!("the agent's user may not read the file holding {names}")
        }
        (FailureKind::Connection, _) => {
            "the site database did not answer: check site_db and the network".to_owned()
        }
        (FailureKind::Other, _) => format!(
            "the database refused the query's SQL over {names}; run `hrs catalog show` for \
             the text and report the error"
        ),
    }
}

/// Probes every source the catalog's queries up to `level` read at a site of `site_type`,
/// then runs each query once (rows counted, shaped as the collector would, and discarded).
/// A query that fails never stops the others.
pub async fn check<D: SiteDb>(
    db: &mut D,
    catalog: &Catalog,
    level: Level,
    site_type: SiteType,
    period: Period,
) -> CheckReport {
    let dialect = db.dialect();
    let params = QueryParams {
        period_start: period.start(),
        period_end: period.end(),
    };
    let queries: Vec<&QueryDef> = catalog
        .at_level(level)
        .filter(|q| applies(q, site_type))
        .collect();

    // Which queries read each source, keyed case-insensitively as SQL Server matches.
    let mut needed: BTreeMap<String, (String, bool, Vec<String>)> = BTreeMap::new();
    for query in &queries {
        for source in text(query, dialect).map(sources).unwrap_or_default() {
            let entry = needed
                .entry(source.name.to_ascii_lowercase())
                .or_insert_with(|| (source.name.clone(), source.function, Vec::new()));
            entry.2.push(query.id.clone());
        }
    }
    let mut states: BTreeMap<String, FailureKind> = BTreeMap::new();
    let mut checked = Vec::new();
    for (key, (name, function, needed_by)) in needed {
        let (state, error) = if function {
            ("function".to_owned(), None)
        } else {
            match db.query(&probe(&name, dialect), &params).await {
                Ok(_) => ("readable".to_owned(), None),
                Err(error) => {
                    let kind = error.kind();
                    states.insert(key, kind);
                    (kind.as_str().to_owned(), Some(error.to_string()))
                }
            }
        };
        checked.push(SourceCheck {
            name,
            state,
            error,
            needed_by,
        });
    }

    let mut results = Vec::new();
    for query in queries {
        let Some(sql) = text(query, dialect) else {
            results.push(QueryCheck {
                id: query.id.clone(),
                level: query.level.as_str().to_owned(),
                rows: None,
                error: Some("no query text for this database's dialect".to_owned()),
                fix: Some("run it on a site database of the other kind".to_owned()),
            });
            continue;
        };
        let read: Vec<String> = sources(sql).into_iter().map(|s| s.name).collect();
        // A source already found unreadable names the cause; the query is not run.
        let unreadable: Vec<(String, FailureKind)> = read
            .iter()
            .filter_map(|s| states.get(&s.to_ascii_lowercase()).map(|k| (s.clone(), *k)))
            .collect();
        let outcome = match unreadable.first() {
            Some((_, kind)) => Err((
                *kind,
                format!(
                    "{}: {}",
                    kind.as_str(),
                    unreadable
                        .iter()
                        .map(|(s, _)| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
            None => run(db, query, sql, &params).await,
        };
        results.push(match outcome {
            Ok(rows) => QueryCheck {
                id: query.id.clone(),
                level: query.level.as_str().to_owned(),
                rows: Some(rows),
                error: None,
                fix: None,
            },
            Err((kind, error)) => {
                let about: Vec<String> = if unreadable.is_empty() {
                    read
                } else {
                    unreadable.into_iter().map(|(s, _)| s).collect()
                };
                QueryCheck {
                    id: query.id.clone(),
                    level: query.level.as_str().to_owned(),
                    rows: None,
                    error: Some(error),
                    fix: Some(fix_for(kind, &about, dialect)),
                }
            }
        });
    }
    CheckReport {
        level: level.as_str().to_owned(),
        sources: checked,
        queries: results,
    }
}

/// Runs one query, counting its rows and checking each as the collector shapes it.
async fn run<D: SiteDb>(
    db: &mut D,
    query: &QueryDef,
    sql: &str,
    params: &QueryParams,
) -> Result<u64, (FailureKind, String)> {
    let mut rows = 0u64;
    let mut shape_error = None;
    let hasher = Hasher::Plain;
    let outcome = db
        .query_each(sql, params, &mut |row| {
            if shape_error.is_none()
                && let Err(error) = query.shape_row(row, "", &hasher)
            {
                shape_error = Some(error.to_string());
            }
            rows += 1;
            Ok(())
        })
        .await;
    match (outcome, shape_error) {
        (Err(error), _) => Err((error.kind(), describe(&error))),
        (Ok(()), Some(error)) => Err((FailureKind::Other, format!("failed: {error}"))),
        (Ok(()), None) => Ok(rows),
    }
}

/// The kind of a failure, then the database's own message (which stays on this machine).
fn describe(error: &SiteDbError) -> String {
    format!("{}: {error}", error.kind().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeded(dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("site.sqlite");
        let site = "P01".parse().expect("site code");
        hrs_sitedb::seed(&path, &site, 20, 3).expect("seeds");
        path
    }

    fn period() -> Period {
        "2026-W48".parse().expect("period")
    }

    #[tokio::test]
    async fn a_seeded_site_database_runs_every_query() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = hrs_sitedb::SqliteSiteDb::open(&seeded(dir.path())).expect("opens");
        let catalog = Catalog::builtin().expect("catalog");
        let report = check(&mut db, &catalog, Level::Full, SiteType::Primary, period()).await;
        let failing: Vec<&QueryCheck> = report.failing().collect();
        assert!(failing.is_empty(), "{failing:#?}");
        assert!(report.sources.iter().all(|s| s.state == "readable"));
        assert!(report.queries.len() > 50);
    }

    #[tokio::test]
    async fn a_missing_source_is_named_with_every_query_it_fails_and_the_others_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = seeded(dir.path());
        let catalog = Catalog::builtin().expect("catalog");
        // The source the most queries read goes.
        let (victim, readers) = {
            let mut db = hrs_sitedb::SqliteSiteDb::open(&path).expect("opens");
            let report = check(&mut db, &catalog, Level::Full, SiteType::Primary, period()).await;
            let most = report
                .sources
                .iter()
                .max_by_key(|s| s.needed_by.len())
                .expect("sources");
            (most.name.clone(), most.needed_by.clone())
        };
        {
            let conn = rusqlite::Connection::open(&path).expect("opens");
            let kind: String = conn
                .query_row(
                    "SELECT type FROM sqlite_master WHERE name = ?1",
                    [&victim],
                    |r| r.get(0),
                )
                .expect("the source is a table or view");
            conn.execute_batch(&format!("DROP {kind} \"{victim}\""))
                .expect("drops");
        }
        let mut db = hrs_sitedb::SqliteSiteDb::open(&path).expect("opens");
        let report = check(&mut db, &catalog, Level::Full, SiteType::Primary, period()).await;
        let source = report
            .sources
            .iter()
            .find(|s| s.name == victim)
            .expect("still listed");
        assert_eq!(source.state, "missing");
        let failing: Vec<&str> = report.failing().map(|q| q.id.as_str()).collect();
        assert_eq!(failing, readers);
        for query in report.failing() {
            let error = query.error.as_deref().unwrap_or_default();
            assert!(error.contains(&victim), "{error}");
            assert!(
                query
                    .fix
                    .as_deref()
                    .is_some_and(|f| f.contains("CM_<site code>"))
            );
        }
        assert!(report.queries.iter().any(|q| q.rows.is_some()));
    }

    #[test]
    fn a_refused_permission_is_fixed_by_granting_select_on_just_that_view() {
        let fix = fix_for(
            FailureKind::Denied,
            &["v_R_System".to_owned(), "sys.dm_os_sys_info".to_owned()],
            Dialect::Tsql,
        );
        assert!(fix.contains("GRANT SELECT ON v_R_System"), "{fix}");
        assert!(fix.contains("GRANT VIEW SERVER STATE"), "{fix}");
        assert!(fix.contains(VIEW_SECURITY_PAGE), "{fix}");
    }
}
