//! The agent runs unchanged against a SQL Server site database: P01 reads its data through
//! TDS from an SQL Server-compatible engine (started in this process on loopback,
//! plaintext), and what reaches the aggregator equals what the same data gives from SQLite.

use hrs_core::Value;
use hrs_core::catalog::Catalog;
use hrs_proto::v1 as pb;
use hrs_sitedb::SiteDbSpec;
use hrs_tests::{CLIENTS, Hierarchy, PERIOD, same_rows, seed_of, site};
use prost::Message as _;

/// Starts the engine on 127.0.0.1, port 0, and returns a connection string for it.
async fn start_engine() -> String {
    let config = iridium_server::ServerConfig {
        host: "127.0.0.1".into(),
        port: 0,
        tls_enabled: false,
        ..iridium_server::ServerConfig::default()
    };
    let mut server =
        iridium_server::TdsServer::new_with_database(iridium_core::Database::new(), config);
    let addr = server.bind().await.expect("engine binds");
    tokio::spawn(async move {
        let _ = server.run().await;
    });
    format!(
        "server=tcp:127.0.0.1,{};database=master;user=sa;password=engine-test-password;encrypt=DANGER_PLAINTEXT;ConnectRetryCount=0",
        addr.port()
    )
}

/// A result set's rows as typed values.
fn rows(set: &pb::ResultSet) -> Vec<Vec<Value>> {
    set.rows
        .iter()
        .map(|row| row.values.iter().map(Value::from).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reading_sql_server_delivers_what_sqlite_gives() {
    let h = Hierarchy::builder().primaries(1).start().await;
    let p01 = site("P01");
    let engine = start_engine().await;
    let spec = SiteDbSpec::parse(&engine, None).expect("connection string");
    hrs_sitedb::seed_spec(
        &spec,
        &p01,
        &hrs_sitedb::SiteSize::clients(CLIENTS),
        seed_of(&p01),
    )
    .await
    .expect("seeds the engine");

    // The same data read from SQLite, kept in the spool, never sent.
    let reference = h.spooled_run(&p01).await;

    let mut config = h.agent_config(&p01);
    config.site_db = spec;
    config.spool = h.site_db(&p01).with_extension("tds-spool");
    hrs_agent::Agent::open(config, h.clock.shared())
        .expect("agent opens")
        .run_once(std::time::Duration::from_secs(30))
        .await
        .expect("the agent collects from SQL Server and delivers");
    h.agent(&site("CAS"))
        .run_once(std::time::Duration::from_secs(30))
        .await
        .expect("CAS delivers");
    h.wait_delivered(PERIOD).await;

    let merged = h
        .merged_runs()
        .into_iter()
        .find(|run| run.site == "P01")
        .expect("P01's run is merged");
    let catalog = Catalog::builtin().expect("catalog");
    let mut compared = 0;
    for expected in &reference.results {
        let query = catalog.query(&expected.query_id).expect("catalog query");
        if query.engine_gap.is_some() {
            continue;
        }
        let got = merged
            .results
            .iter()
            .find(|set| set.query_id == expected.query_id)
            .unwrap_or_else(|| panic!("{} missing from the merged run", expected.query_id));
        assert!(got.error.is_empty(), "{}: {}", got.query_id, got.error);
        if let Err(difference) = same_rows(&rows(expected), &rows(got)) {
            panic!("{}: {difference}", got.query_id);
        }
        compared += 1;
    }
    assert!(compared > 40, "only {compared} queries compared");

    // Read through SQL Server or not, nothing identifying leaves the site at Enhanced.
    let bytes = merged.encode_to_vec();
    let secrets = h.identifying_values(&p01);
    assert!(secrets.len() > 100);
    for secret in secrets.iter().filter(|s| s.len() >= 5) {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret:?} left P01 through SQL Server"
        );
    }
    h.shutdown().await;
}
