//! The SQL Server backend against a real TDS engine: `hrs sitedb seed` and `hrs collect`
//! give the same rows through SQLite and through SQL Server's protocol and dialect.
//!
//! The engine is `iridium_server`, an SQL Server-compatible engine started in this process
//! on loopback, plaintext. Queries whose T-SQL needs a feature the engine lacks carry an
//! `engine_gap` in the catalog and are checked only against a real SQL Server, which runs
//! when `HRS_TEST_MSSQL` holds a connection string to a scratch database.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// Starts the engine on 127.0.0.1, port 0, and returns its port.
async fn start_engine_with(config: iridium_server::ServerConfig) -> u16 {
    let mut server =
        iridium_server::TdsServer::new_with_database(iridium_core::Database::new(), config);
    let addr = server.bind().await.expect("engine binds");
    tokio::spawn(async move {
        let _ = server.run().await;
    });
    addr.port()
}

/// Starts the engine in plaintext and returns a connection string for it.
async fn start_engine() -> String {
    let port = start_engine_with(iridium_server::ServerConfig {
        host: "127.0.0.1".into(),
        port: 0,
        tls_enabled: false,
        ..iridium_server::ServerConfig::default()
    })
    .await;
    format!(
        "server=tcp:127.0.0.1,{port};database=master;user=sa;password=engine-test-password;encrypt=DANGER_PLAINTEXT;ConnectRetryCount=0"
    )
}

async fn hrs(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_hrs"))
        .args(args)
        .output()
        .await
        .expect("hrs runs")
}

async fn hrs_ok(args: &[&str]) -> String {
    let out = hrs(args).await;
    assert!(
        out.status.success(),
        "hrs {} failed: {}",
        args.first().copied().unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

async fn seed(site_db: &str, site: &str) {
    hrs_ok(&[
        "sitedb",
        "seed",
        "--site-db",
        site_db,
        "--site",
        site,
        "--clients",
        "60",
        "--seed",
        "5",
    ])
    .await;
}

async fn collect(site_db: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "collect",
        "--site-db",
        site_db,
        "--level",
        "Full",
        "--period",
        "2026-W48",
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(&hrs_ok(&args).await).expect("collect prints JSON")
}

/// A run's rows per query, typed again from the JSON `hrs collect` prints.
type Rows = Vec<Vec<hrs_core::Value>>;

/// Each query's rows, or the error it hit.
fn rows_by_query(run: &Value) -> BTreeMap<String, Result<Rows, String>> {
    run["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|set| {
            let id = set["query_id"].as_str().expect("query_id").to_owned();
            let error = set["error"].as_str().unwrap_or_default();
            if !error.is_empty() {
                return (id, Err(error.to_owned()));
            }
            let rows: Rows = serde_json::from_value(set["rows"].clone()).expect("typed rows");
            (id, Ok(rows))
        })
        .collect()
}

/// The catalog's engine gaps: query id to the reason.
async fn engine_gaps() -> BTreeMap<String, String> {
    let list: Value = serde_json::from_str(&hrs_ok(&["catalog", "list", "--format", "json"]).await)
        .expect("catalog list is JSON");
    list.as_array()
        .expect("array")
        .iter()
        .filter_map(|q| {
            Some((
                q["id"].as_str()?.to_owned(),
                q["engine_gap"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// Seeds both backends with the same data of a primary and of a CAS, collects at Full from
/// each, and compares every query (all of them when `gaps` is empty).
async fn cross_check(tsql_db: &str, gaps: &BTreeMap<String, String>, dir: &Path) {
    for (site, extra) in [("P01", &[][..]), ("CAS", &["--site", "CAS", "--cas"][..])] {
        cross_check_site(tsql_db, gaps, dir, site, extra).await;
    }
}

async fn cross_check_site(
    tsql_db: &str,
    gaps: &BTreeMap<String, String>,
    dir: &Path,
    site: &str,
    extra: &[&str],
) {
    let sqlite_db = format!("sqlite:{}", dir.join(format!("{site}.sqlite")).display());
    seed(&sqlite_db, site).await;
    seed(tsql_db, site).await;
    let reference = rows_by_query(&collect(&sqlite_db, extra).await);
    let tsql = rows_by_query(&collect(tsql_db, extra).await);
    assert_eq!(
        reference.keys().collect::<Vec<_>>(),
        tsql.keys().collect::<Vec<_>>(),
        "both backends run the same queries"
    );
    let mut compared = 0;
    let mut failures = Vec::new();
    for (id, expected) in &reference {
        let expected = expected
            .as_ref()
            .unwrap_or_else(|e| panic!("{id} fails on SQLite: {e}"));
        if gaps.contains_key(id) {
            continue;
        }
        compared += 1;
        match &tsql[id] {
            Err(error) => {
                failures.push(format!("{id} at {site}: fails on the TDS engine: {error}"))
            }
            Ok(rows) => {
                if let Err(difference) = hrs_tests::same_rows(expected, rows) {
                    failures.push(format!("{id} at {site}: rows differ: {difference}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(compared > 0);
    eprintln!(
        "{site}: {compared} queries give the same rows on both backends; {} left to a real SQL Server",
        gaps.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_and_collect_give_the_same_rows_on_sqlite_and_the_tds_engine() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let engine = start_engine().await;
    let gaps = engine_gaps().await;
    cross_check(&engine, &gaps, tmp.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_output_and_errors_name_the_setting() {
    let engine = start_engine().await;
    // A misspelt password keyword is named; its value is not echoed.
    let without_password = engine.replace("password=engine-test-password;", "");
    let typo = format!("{without_password};pasword=hunter2");
    let out = hrs(&["collect", "--site-db", &typo]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("pasword"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    // In a string that holds a password, an unknown keyword may be the password's tail
    // after an unquoted ';': it is not echoed, and the error says to quote.
    let split = engine.replace("engine-test-password", "Tr0ub;4dor=x");
    let out = hrs(&["collect", "--site-db", &split]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        !stderr.contains("4dor") && !stderr.contains("Tr0ub"),
        "{stderr}"
    );
    assert!(stderr.contains("quote"), "{stderr}");
    // An unreachable server fails fast with the server named, never the password.
    let closed = "server=tcp:127.0.0.1,1;user=sa;password=hunter2;encrypt=DANGER_PLAINTEXT;ConnectRetryCount=0";
    let out = hrs(&["collect", "--site-db", closed]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("127.0.0.1,1"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    // A password from the environment works like one in the string.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hrs"))
        .args([
            "collect",
            "--site-db",
            &without_password,
            "--password-env",
            "HRS_TEST_SITE_DB_PASSWORD",
            "--level",
            "Basic",
            "--format",
            "json",
        ])
        .env("HRS_TEST_SITE_DB_PASSWORD", "engine-test-password")
        .output()
        .await
        .expect("hrs runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("engine-test-password"));
}

/// The engine's own TLS does not interoperate with rustls (its handshake is framed in a
/// way rustls rejects), so TLS is proven here by refusal: a connection that requires TLS
/// fails against a server that offers none, rather than falling back to plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tls_never_falls_back_to_plaintext() {
    let engine = start_engine().await;
    let required = engine.replace("encrypt=DANGER_PLAINTEXT", "encrypt=true");
    let out = hrs(&["collect", "--site-db", &required, "--level", "Basic"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "collected without TLS");
    assert!(!stderr.contains("engine-test-password"), "{stderr}");
    assert!(stderr.contains("127.0.0.1"), "{stderr}");
    assert!(stderr.contains("encryption"), "{stderr}");
}

/// Runs only when `HRS_TEST_MSSQL` names a scratch SQL Server database (its seeded tables
/// are replaced): every query, the engine's gaps included, must agree with SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_sql_server_gives_the_same_rows_as_sqlite() {
    let Ok(connection) = std::env::var("HRS_TEST_MSSQL") else {
        eprintln!("HRS_TEST_MSSQL is not set: skipping the real SQL Server cross-check");
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    cross_check(&connection, &BTreeMap::new(), tmp.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sitedb_check_runs_every_query_on_the_tds_engine_and_names_a_dropped_view() {
    let site_db = start_engine().await;
    seed(&site_db, "P01").await;
    let gaps = engine_gaps().await;
    let check = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        hrs(&args).await
    };
    let args = |db: &str| {
        [
            "sitedb",
            "check",
            "--site-db",
            db,
            "--period",
            "2026-W48",
            "--format",
            "json",
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let out = check(args(&site_db)).await;
    let report: Value = serde_json::from_slice(&out.stdout).expect("the check prints JSON");
    let failing: Vec<&str> = report["queries"]
        .as_array()
        .expect("queries")
        .iter()
        .filter(|q| !q["error"].is_null())
        .filter_map(|q| q["id"].as_str())
        .filter(|id| !gaps.contains_key(*id))
        .collect();
    assert!(failing.is_empty(), "fail on the engine: {failing:?}");
    let sources = report["sources"].as_array().expect("sources");
    assert!(sources.len() > 10);
    // SQL Server's views the engine lacks are needed only by its gap queries.
    let needed_by_compared = |s: &&Value| {
        s["needed_by"].as_array().is_some_and(|ids| {
            ids.iter()
                .any(|id| !gaps.contains_key(id.as_str().unwrap_or_default()))
        })
    };
    let unreadable: Vec<&Value> = sources
        .iter()
        .filter(needed_by_compared)
        .filter(|s| s["state"] != "readable")
        .collect();
    assert!(unreadable.is_empty(), "{unreadable:?}");

    // The source most queries read is dropped: it is named, with each query it fails.
    let most = sources
        .iter()
        .max_by_key(|s| s["needed_by"].as_array().map_or(0, Vec::len))
        .expect("a source");
    let name = most["name"].as_str().expect("name").to_owned();
    let conn = site_db.clone();
    drop_table(&conn, &name).await;
    let out = check(args(&site_db)).await;
    assert!(!out.status.success(), "the check passes without {name}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("the check prints JSON");
    let source = report["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["name"] == name.as_str())
        .expect("the dropped source is listed");
    assert_eq!(source["state"], "missing", "{source}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot run"), "{stderr}");
}

/// Drops a seeded table through the TDS protocol.
async fn drop_table(site_db: &str, table: &str) {
    let spec = hrs_sitedb::MssqlSpec::parse(site_db, None).expect("connection string");
    let mut db = hrs_sitedb::MssqlSiteDb::open(spec).await.expect("connects");
    let params = hrs_sitedb::QueryParams {
        period_start: hrs_core::Period::last_ended(hrs_tests::NOW).start(),
        period_end: hrs_core::Period::last_ended(hrs_tests::NOW).end(),
    };
    use hrs_sitedb::SiteDb as _;
    db.query(&format!("DROP TABLE {table}"), &params)
        .await
        .expect("drops the table");
}
