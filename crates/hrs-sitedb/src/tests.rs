use hrs_core::catalog::{Privacy, Scope};
use hrs_core::{Catalog, Level, Period, SiteCode, Value};

use super::*;

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(future)
}

fn dump(path: &std::path::Path) -> Vec<Vec<Value>> {
    let mut db = SqliteSiteDb::open(path).expect("opens");
    let params = params();
    let mut all = Vec::new();
    for table in [
        "v_Site",
        "v_SystemResourceList",
        "v_R_System",
        "v_GS_OPERATING_SYSTEM",
        "v_UpdateComplianceStatus",
        "v_StatusMessage",
    ] {
        all.extend(
            block_on(db.query(&format!("SELECT * FROM {table} ORDER BY 1, 2"), &params))
                .expect("dumps"),
        );
    }
    all
}

fn params() -> QueryParams {
    let period: Period = "2026-W48".parse().expect("period");
    QueryParams {
        period_start: period.start(),
        period_end: period.end(),
    }
}

#[test]
fn seeding_is_deterministic_and_follows_the_seed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site: SiteCode = "P01".parse().expect("site");
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    seed(&a, &site, 50, 7).expect("seeds a");
    seed(&b, &site, 50, 7).expect("seeds b");
    seed(&c, &site, 50, 8).expect("seeds c");
    assert_eq!(dump(&a), dump(&b));
    assert_ne!(dump(&a), dump(&c));
}

#[test]
fn every_catalog_query_runs_and_matches_its_declared_columns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = Catalog::builtin().expect("catalog");
    for (site, scope) in [("CAS", Scope::Cas), ("P01", Scope::Primary)] {
        let path = dir.path().join(format!("{site}.sqlite"));
        seed(&path, &site.parse().expect("site"), 50, 1).expect("seeds");
        let mut db = SqliteSiteDb::open(&path).expect("opens");
        for query in &catalog.queries {
            let rows = block_on(db.query(&query.sqlite, &params()))
                .unwrap_or_else(|e| panic!("{} at {site}: {e}", query.id));
            if query.scope == Scope::Both || query.scope == scope {
                assert!(!rows.is_empty(), "{} returns no rows at {site}", query.id);
            }
            check_shapes(query, rows);
        }
    }
}

/// Every row must fit the query's declared columns.
fn check_shapes(query: &hrs_core::catalog::QueryDef, rows: Vec<Vec<Value>>) {
    for row in rows {
        query
            .shape_row(row, "H", &hrs_core::hash::Hasher::Plain)
            .unwrap_or_else(|e| panic!("{}: {e}", query.id));
    }
}

#[test]
fn no_identifying_value_leaves_at_basic_or_enhanced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("site.sqlite");
    let site: SiteCode = "P07".parse().expect("site");
    seed(&path, &site, 60, 3).expect("seeds");
    let secrets = identifying_values(&path).expect("values");
    assert!(
        secrets.iter().any(|s| s.contains('@')),
        "e-mail addresses are seeded"
    );
    let mut db = SqliteSiteDb::open(&path).expect("opens");
    let catalog = Catalog::builtin().expect("catalog");
    let mut leaked_at_full = false;
    for query in &catalog.queries {
        let rows = block_on(db.query(&query.sqlite, &params())).expect("runs");
        for row in rows {
            for value in query
                .shape_row(row, "H", &hrs_core::hash::Hasher::Plain)
                .expect("shapes")
            {
                let Value::Text(text) = value else { continue };
                let leak = secrets.iter().find(|s| {
                    if s.len() < 5 {
                        text == **s
                    } else {
                        text.contains(s.as_str())
                    }
                });
                match (query.level, leak) {
                    (Level::Full, Some(_)) => leaked_at_full = true,
                    (level, Some(secret)) => {
                        panic!("{} ({level}) lets {secret:?} out", query.id)
                    }
                    (_, None) => {}
                }
            }
        }
        if query.level < Level::Full {
            assert!(
                query
                    .columns
                    .iter()
                    .all(|c| c.privacy != Privacy::Identifying)
            );
        }
    }
    assert!(
        leaked_at_full,
        "Full queries carry identifying detail, so the search can find it"
    );
}

#[test]
fn a_missing_database_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        SqliteSiteDb::open(&dir.path().join("none.sqlite")),
        Err(SiteDbError::Missing(_))
    ));
    let none = SiteDbSpec::parse(
        &format!("sqlite:{}", dir.path().join("none.sqlite").display()),
        None,
    )
    .expect("parses");
    assert!(matches!(
        block_on(open(&none)),
        Err(SiteDbError::Missing(_))
    ));
}

#[test]
fn the_setting_chooses_the_backend() {
    let parse = |text: &str| SiteDbSpec::parse(text, None);
    assert!(matches!(parse("sqlite:site.db"), Ok(SiteDbSpec::Sqlite(_))));
    assert!(matches!(
        parse(
            "server=tcp:cm01,1433;database=CM_P01;IntegratedSecurity=SSPI;user=CONTOSO\\hrs;password=x"
        ),
        Ok(SiteDbSpec::SqlServer(_))
    ));
    assert!(
        matches!(parse("site.db"), Ok(SiteDbSpec::Sqlite(_))),
        "a bare path"
    );
    for bad in ["sqlite:", ""] {
        assert!(matches!(parse(bad), Err(SiteDbError::Spec(_))), "{bad}");
    }
    assert!(
        SiteDbSpec::parse("sqlite:x", Some(PasswordSource::Env("X".into()))).is_err(),
        "SQLite takes no password"
    );
}

#[test]
fn seeding_replaces_only_what_the_seeder_made() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site: SiteCode = "P01".parse().expect("site");
    let foreign = dir.path().join("production.sqlite");
    rusqlite::Connection::open(&foreign)
        .and_then(|c| {
            c.execute_batch(
                "CREATE TABLE v_R_System (Name0 TEXT); INSERT INTO v_R_System VALUES ('keep');",
            )
        })
        .expect("a database seeding did not make");
    let err = seed(&foreign, &site, 5, 1).expect_err("refuses to replace it");
    assert!(matches!(err, SiteDbError::NotSeeded(_)), "{err}");
    let kept: String = rusqlite::Connection::open(&foreign)
        .and_then(|c| c.query_row("SELECT Name0 FROM v_R_System", [], |r| r.get(0)))
        .expect("still there");
    assert_eq!(kept, "keep");

    let seeded = dir.path().join("seeded.sqlite");
    seed(&seeded, &site, 5, 1).expect("seeds");
    seed(&seeded, &site, 5, 2).expect("reseeds its own database");
}

/// The views file's entries: view name to the columns it lists.
fn listed_views() -> std::collections::BTreeMap<String, Vec<String>> {
    let text = include_str!("../../hrs-core/catalog/views.md");
    let mut views = std::collections::BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("## ") {
            let name = name.trim_matches('`').to_owned();
            views.insert(name.clone(), Vec::new());
            current = Some(name);
        } else if let (Some(view), Some(row)) = (&current, line.strip_prefix("| `")) {
            if let Some((column, _)) = row.split_once('`') {
                views.get_mut(view).expect("listed").push(column.to_owned());
            }
        } else if line.starts_with("- page: ") {
            assert!(
                line.contains("https://learn.microsoft.com/"),
                "{current:?} names no page"
            );
        }
    }
    views
}

#[test]
fn the_views_file_lists_every_view_and_column_the_catalog_reads() {
    let listed = listed_views();
    let catalog = Catalog::builtin().expect("catalog");
    for query in &catalog.queries {
        let tsql = query.tsql.as_deref().expect("every query has T-SQL");
        let words: std::collections::HashSet<String> = tsql
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map(str::to_ascii_lowercase)
            .collect();
        for source in hrs_core::catalog::sources(tsql) {
            let columns = listed
                .get(&source.name)
                .unwrap_or_else(|| panic!("{}: {} is not in views.md", query.id, source.name));
            // Every column of the sample's copy of the view that the text names is listed.
            // The stand-in of sys.dm_exec_query_stats also carries what the function gives.
            let name = match source.name.as_str() {
                "sys.dm_exec_sql_text" => "sys.dm_exec_query_stats",
                name => name,
            };
            let table = crate::schema::TABLES
                .iter()
                .find(|t| t.name == name || t.system == Some(name))
                .unwrap_or_else(|| panic!("{}: the sample has no {name}", query.id));
            for (column, _) in table.columns {
                if words.contains(&column.to_ascii_lowercase()) {
                    let listed_anywhere = if name == "sys.dm_exec_query_stats" {
                        ["sys.dm_exec_query_stats", "sys.dm_exec_sql_text"]
                            .iter()
                            .any(|v| {
                                listed
                                    .get(*v)
                                    .is_some_and(|c| c.iter().any(|c| c == column))
                            })
                    } else {
                        columns.iter().any(|c| c == column)
                    };
                    assert!(
                        listed_anywhere,
                        "{}: {}.{column} is not in views.md",
                        query.id, source.name
                    );
                }
            }
        }
    }
}

#[test]
fn no_deployment_baseline_or_collection_name_leaves_in_clear_below_full() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("site.sqlite");
    seed(&path, &"P01".parse().expect("site"), 60, 4).expect("seeds");
    let conn = rusqlite::Connection::open(&path).expect("opens");
    let names: Vec<String> = conn
        .prepare(
            "SELECT SoftwareName FROM v_DeploymentSummary UNION SELECT CollectionName FROM v_DeploymentSummary
             UNION SELECT Name FROM v_Collection WHERE CollectionID NOT LIKE 'SMS%'
             UNION SELECT DisplayName FROM v_LocalizedCIProperties",
        )
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .expect("names");
    assert!(names.iter().any(|n| n == "Security Baseline - Windows 11"));
    let mut db = SqliteSiteDb::open(&path).expect("opens");
    let catalog = Catalog::builtin().expect("catalog");
    for query in catalog.at_level(Level::Enhanced) {
        let rows = block_on(db.query(&query.sqlite, &params())).expect("runs");
        for row in rows {
            let shaped = query
                .shape_row(row, "H", &hrs_core::hash::Hasher::Plain)
                .expect("shapes");
            for value in shaped {
                if let Value::Text(text) = value {
                    assert!(
                        !names.contains(&text),
                        "{} lets the name {text:?} out in clear",
                        query.id
                    );
                }
            }
        }
    }
}

#[test]
fn a_reader_that_stops_gets_its_own_error_and_the_database_stays_usable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("empty.sqlite");
    rusqlite::Connection::open(&path).expect("creates");
    let mut db = SqliteSiteDb::open(&path).expect("opens");
    // A billion rows: the query must stop when its caller does.
    let endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 1000000000) \
                   SELECT i FROM n";
    let mut seen = 0;
    let stopped = block_on(db.query_each(endless, &params(), &mut |_| {
        seen += 1;
        Err(SiteDbError::RowWidth("enough"))
    }));
    assert!(
        matches!(stopped, Err(SiteDbError::RowWidth("enough"))),
        "{stopped:?}"
    );
    assert_eq!(seen, 1);
    let rows = block_on(db.query("SELECT 7", &params())).expect("the next query runs");
    assert_eq!(rows, vec![vec![Value::Int(7)]]);
}
