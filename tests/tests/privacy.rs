//! Nothing identifying leaves the hierarchy at Basic or Enhanced: neither in what the
//! connection tool exports for review nor in any byte the intake stored. At Full the same
//! search does find a server name, so the check can fail.

use hrs_core::Level;
use hrs_proto::v1 as pb;
use hrs_tests::{Hierarchy, PERIOD};
use prost::Message as _;

/// Starts an online hierarchy at `level`, delivers the period, and returns it with the
/// bytes of the CSV export.
async fn delivered(level: Level) -> (Hierarchy, Vec<u8>) {
    let h = Hierarchy::builder().primaries(2).level(level).start().await;
    h.collect_everywhere().await;
    h.wait_delivered(PERIOD).await;
    let csv = h.dir.path().join("export.csv");
    let summary = hrs_connection::export_csv(&h.connection_point, &csv).expect("exports");
    assert_eq!(summary.periods, 1);
    assert!(summary.rows > 0, "the export holds rows");
    let export = std::fs::read(&csv).expect("reads the export");
    (h, export)
}

/// Returns the `site` column of every row of an export.
fn exported_sites(export: &[u8]) -> Vec<String> {
    let mut reader = csv::Reader::from_reader(export);
    let headers = reader.headers().expect("a header line").clone();
    let column = headers
        .iter()
        .position(|h| h == "site")
        .expect("a site column");
    reader
        .records()
        .map(|r| r.expect("a CSV record")[column].to_owned())
        .collect()
}

async fn nothing_identifying_leaves_at(level: Level) {
    let (h, export) = delivered(level).await;
    let blobs = h.intake_blobs();
    assert_eq!(blobs.len(), 1, "one submission stored");
    let intake_file = std::fs::read(&h.intake_config.store).expect("reads the intake file");
    // The runs as they left their sites, as the aggregator stored them.
    let runs = h.merged_bytes();
    assert_eq!(runs.len(), h.sites.len());

    let outbound: Vec<(&str, &[u8])> =
        [("export", export.as_slice()), ("intake file", &intake_file)]
            .into_iter()
            .chain(blobs.iter().map(|b| ("intake payload", b.as_slice())))
            .chain(runs.iter().map(|b| ("run pushed by a site", b.as_slice())))
            .collect();
    for code in &h.sites {
        let secrets = h.identifying_values(code);
        assert!(secrets.len() > 100, "{code} holds names and addresses");
        for secret in secrets.iter().filter(|s| s.len() >= 5) {
            for (what, bytes) in &outbound {
                assert!(
                    !contains(bytes, secret.as_bytes()),
                    "{secret:?} of {code} is in the {what} at {level}"
                );
            }
        }
    }

    // Site codes are too short to search for as bytes: check them as whole values.
    let codes: Vec<&str> = h.sites.iter().map(|c| c.as_str()).collect();
    for blob in &blobs {
        let sent = pb::MergedPeriod::decode(blob.as_slice()).expect("payload decodes");
        assert_eq!(sent.sites.len(), codes.len());
        for sent_site in &sent.sites {
            assert!(
                !codes.contains(&sent_site.site.as_str()),
                "site {} left in clear at {level}",
                sent_site.site
            );
        }
    }
    let exported = exported_sites(&export);
    assert!(!exported.is_empty());
    for value in &exported {
        assert!(
            !codes.contains(&value.as_str()),
            "site {value} exported in clear at {level}"
        );
    }
    h.shutdown().await;
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_identifying_leaves_at_enhanced() {
    nothing_identifying_leaves_at(Level::Enhanced).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_identifying_leaves_at_basic() {
    nothing_identifying_leaves_at(Level::Basic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_level_runs_exactly_its_queries() {
    let catalog = hrs_core::catalog::Catalog::builtin().expect("catalog");
    for level in [Level::Basic, Level::Enhanced] {
        let h = Hierarchy::builder().primaries(1).level(level).start().await;
        let run = h.spooled_run(&hrs_tests::site("P01")).await;
        let mut ran: Vec<&str> = run.results.iter().map(|s| s.query_id.as_str()).collect();
        ran.sort_unstable();
        let mut expected: Vec<&str> = catalog
            .at_level(level)
            .filter(|q| q.scope != hrs_core::catalog::Scope::Cas)
            .map(|q| q.id.as_str())
            .collect();
        expected.sort_unstable();
        assert_eq!(
            ran, expected,
            "a {level} run holds exactly the {level} queries"
        );
        for set in &run.results {
            let query: Level = set.level.parse().expect("level");
            assert!(query.allowed_at(level), "{} ran at {level}", set.query_id);
        }
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_exports_a_site_server_name() {
    let (h, export) = delivered(Level::Full).await;
    let text = String::from_utf8_lossy(&export);
    let servers: Vec<String> = h
        .sites
        .iter()
        .flat_map(|code| {
            let conn = rusqlite::Connection::open_with_flags(
                h.site_db(code),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .expect("opens the site database");
            let mut stmt = conn
                .prepare("SELECT DISTINCT ServerName FROM v_SystemResourceList")
                .expect("prepares");
            stmt.query_map([], |r| r.get::<_, String>(0))
                .expect("queries")
                .collect::<Result<Vec<_>, _>>()
                .expect("reads server names")
        })
        .collect();
    assert!(!servers.is_empty());
    assert!(
        servers.iter().any(|s| text.contains(s.as_str())),
        "no site server name in the Full export: the privacy search could not fail"
    );
    h.shutdown().await;
}
