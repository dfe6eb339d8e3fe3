//! Offline, the connection point writes each merged period to a bundle file that reads
//! back intact, and sends nothing to the intake.

use hrs_connection::State;
use hrs_tests::{Hierarchy, PERIOD, merged_rows, rows};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_delivers_a_bundle_that_reads_back() {
    let h = Hierarchy::builder()
        .primaries(2)
        .offline(true)
        .start()
        .await;
    h.collect_everywhere().await;
    let state = h.wait_delivered(PERIOD).await;
    assert_eq!(state.state, State::Bundled);
    assert!(state.submission_id.is_none());
    let path = state.bundle_path.expect("a bundled period names its file");
    assert!(path.exists(), "{} does not exist", path.display());
    let outbox = h
        .connection_point
        .outbox
        .as_ref()
        .expect("offline has an outbox");
    assert!(
        path.starts_with(outbox),
        "{} is outside the outbox",
        path.display()
    );

    let bundle = hrs_connection::read_bundle(&path).expect("the bundle verifies");
    assert_eq!(bundle.period, PERIOD);
    assert_eq!(bundle.sites.len(), h.sites.len());
    let merged: usize = h.merged_runs().iter().map(rows).sum();
    assert!(merged > 0);
    assert_eq!(merged_rows(&bundle), merged);
    assert!(
        h.intake_blobs().is_empty(),
        "offline sends nothing to the intake"
    );
    h.shutdown().await;
}
