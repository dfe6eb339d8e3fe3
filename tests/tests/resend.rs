//! Re-sending a run changes nothing; a newer collection of the same site and period
//! replaces the older one as current, and an older one arriving late does not.

use hrs_aggregator::{MergeStore as _, SqliteMergeStore};
use hrs_proto::v1 as pb;
use hrs_tests::{Hierarchy, PERIOD, site};

/// Everything a re-send must leave alone: the merge store's current runs (as bytes) and
/// the intake's submissions and payload blobs.
async fn snapshot(
    h: &Hierarchy,
) -> (
    Vec<Vec<u8>>,
    Vec<hrs_intake::SubmissionSummary>,
    Vec<Vec<u8>>,
) {
    (
        h.merged_bytes(),
        h.intake_submissions().await,
        h.intake_blobs(),
    )
}

fn current_of(h: &Hierarchy, code: &str) -> Vec<pb::Run> {
    SqliteMergeStore::open_read_only(&h.aggregator_config.store)
        .expect("opens the merge store")
        .current(Some(&hrs_tests::period()), Some(&site(code)))
        .expect("reads the merge store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_run_is_a_duplicate_and_changes_nothing() {
    let h = Hierarchy::builder().primaries(1).start().await;
    h.collect_everywhere().await;
    h.wait_delivered(PERIOD).await;

    let p01 = site("P01");
    let run = h.spooled_run(&p01).await;
    let first = h.push(&run).await.expect("first push commits");
    assert!(!first.duplicate && !first.superseded, "{first:?}");
    assert_eq!(h.intake_submissions().await.len(), 1);
    let before = snapshot(&h).await;

    let again = h
        .push(&run)
        .await
        .expect("a re-send is answered, not refused");
    assert!(again.duplicate, "{again:?}");
    assert_eq!(snapshot(&h).await, before, "a re-send changed the stores");

    // The agent's own path: the run back in the spool is delivered again as a duplicate
    // and leaves the spool.
    let agent = h.agent(&p01);
    let spool = h.spool(&p01);
    spool.remove(&run.run_id).await.expect("clears the spool");
    spool
        .put(&run, "2026-11-30T00:00:00Z".into())
        .await
        .expect("re-spools the run");
    assert_eq!(agent.deliver().await.expect("re-delivers"), 1);
    assert!(spool.pending().await.expect("reads").is_empty());
    assert_eq!(
        snapshot(&h).await,
        before,
        "a re-delivery changed the stores"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_collection_replaces_the_first_as_current() {
    let h = Hierarchy::builder().primaries(1).start().await;
    h.collect_everywhere().await;
    h.wait_delivered(PERIOD).await;
    let p01 = site("P01");
    let first = current_of(&h, "P01");
    assert_eq!(first.len(), 1);
    let submissions = h.intake_submissions().await;

    let summary = h
        .agent(&p01)
        .run_once(std::time::Duration::from_secs(30))
        .await
        .expect("the second collection is delivered");
    assert_ne!(summary.run_id, first[0].run_id);
    let current = current_of(&h, "P01");
    assert_eq!(current.len(), 1, "exactly one current run for P01");
    assert_eq!(
        current[0].run_id, summary.run_id,
        "the newer run is current"
    );
    assert!(current[0].sequence > first[0].sequence);
    assert_eq!(
        h.merged_runs().len(),
        h.sites.len(),
        "one current run per site"
    );
    // Same data collected again: the merged content is unchanged, so nothing new is sent.
    assert_eq!(current[0].digest, first[0].digest);
    assert_eq!(h.intake_submissions().await, submissions);

    // The older run arriving late is kept but does not become current again.
    let mut older = first[0].clone();
    older.run_id = uuid::Uuid::new_v4().to_string();
    let late = h.push(&older).await.expect("a late run is stored");
    assert!(late.superseded, "{late:?}");
    let current = current_of(&h, "P01");
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].run_id, summary.run_id);
    h.shutdown().await;
}
