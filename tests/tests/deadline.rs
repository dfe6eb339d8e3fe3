//! When a period leaves the aggregator: at once when its last site reports; at its
//! deadline (72 hours after the week closes) with the sites present; again when a missing
//! site arrives or a site's data changes, once the period has been quiet for the settling
//! time, so a burst of arrivals makes one submission. The hierarchy's clock is moved by
//! hand, so none of this depends on today's date.

use std::time::Duration;

use hrs_core::clock::Clock as _;
use hrs_core::{Period, SiteCode};
use hrs_tests::{Hierarchy, PERIOD, SETTLE_MINUTES, period, site};

const SETTLE: Duration = Duration::from_secs(SETTLE_MINUTES * 60);

/// Collects and delivers once at each of `sites`.
async fn deliver(h: &Hierarchy, sites: &[&str]) {
    for code in sites {
        h.agent(&site(code))
            .run_once(Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("agent {code}: {e}"));
    }
}

/// Moves the hierarchy's clock to `deadline + by` of [`PERIOD`].
fn move_past_deadline(h: &Hierarchy, by: Duration) {
    let deadline = period().closes_at()
        + time::Duration::hours(
            i64::try_from(h.aggregator_config.period_deadline_hours).expect("hours"),
        )
        + by;
    let ahead = deadline - h.clock.now();
    h.clock
        .advance(Duration::try_from(ahead).expect("the deadline is ahead of the clock"));
}

/// The missing sites of the merged period behind a submission.
async fn missing(h: &Hierarchy, submission_id: &str) -> usize {
    h.intake_payload(submission_id).await.missing_sites.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_period_leaves_at_its_deadline_with_the_sites_present_then_again_when_the_last_arrives() {
    let h = Hierarchy::builder().primaries(2).start().await;
    // Two of three sites report on Monday morning: the period waits for the third.
    deliver(&h, &["CAS", "P01"]).await;
    assert!(h.intake_submissions().await.is_empty());

    // At the deadline it leaves, once, with P02 missing.
    move_past_deadline(&h, Duration::ZERO);
    let first = h.wait_submissions(1).await;
    assert_eq!(first[0].period, period());
    assert_eq!(missing(&h, &first[0].submission_id).await, 1);

    // P02 reports late: the period goes again, complete, once it has been quiet.
    deliver(&h, &["P02"]).await;
    h.clock.advance(SETTLE);
    let both = h.wait_submissions(2).await;
    assert_eq!(missing(&h, &both[1].submission_id).await, 0);
    assert_eq!(
        h.wait_delivered(PERIOD).await.submission_id.as_deref(),
        Some(both[1].submission_id.as_str())
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrivals_after_the_deadline_leave_as_one_submission_once_the_period_is_quiet() {
    let h = Hierarchy::builder().primaries(3).start().await;
    // Nothing reported in time; then three sites arrive within the same second.
    move_past_deadline(&h, Duration::from_secs(3600));
    deliver(&h, &["CAS", "P01", "P02"]).await;

    // One submission, once no run has arrived for the settling time, P03 missing.
    h.clock.advance(SETTLE);
    let once = h.wait_submissions(1).await;
    assert_eq!(missing(&h, &once[0].submission_id).await, 1);
    assert_eq!(
        h.wait_delivered(PERIOD).await.submission_id.as_deref(),
        Some(once[0].submission_id.as_str()),
        "the period offered is the one with every early arrival"
    );

    // P03 completes it: one more submission, not one per arrival.
    deliver(&h, &["P03"]).await;
    h.clock.advance(SETTLE);
    let twice = h.wait_submissions(2).await;
    assert_eq!(missing(&h, &twice[1].submission_id).await, 0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_period_leaves_at_once_and_a_changed_one_after_the_settling_time() {
    let h = Hierarchy::builder().primaries(1).start().await;
    h.collect_everywhere().await;
    let first = h.wait_submissions(1).await;
    assert_eq!(missing(&h, &first[0].submission_id).await, 0);

    // P01 sends a newer run with other content: the change leaves only once the period
    // has been quiet, and then once.
    let p01: SiteCode = site("P01");
    let mut run = h.spooled_run(&p01).await;
    h.spool(&p01)
        .remove(&run.run_id)
        .await
        .expect("clears the spool");
    run.run_id = uuid::Uuid::new_v4().to_string();
    run.sequence += 1;
    run.results.retain(|set| set.query_id != "B-SITE-LIST");
    run.digest = hrs_core::digest::run_digest(&run);
    let pushed = h.push(&run).await.expect("the newer run is taken");
    assert!(!pushed.duplicate && !pushed.superseded, "{pushed:?}");

    // The next week, complete, leaves at once: the forwarder looked at the changed W48
    // first, in the same pass, and let it wait.
    let next = period().next();
    for code in &h.sites {
        let mut config = h.agent_config(code);
        config.period = Some(next);
        hrs_agent::Agent::open(config, h.clock.shared())
            .expect("agent opens")
            .run_once(Duration::from_secs(30))
            .await
            .expect("delivers the next week");
    }
    let held = h.wait_submissions(2).await;
    assert_eq!(
        held.iter().map(|s| s.period).collect::<Vec<_>>(),
        [period(), next],
        "the changed week left before it was quiet"
    );

    h.clock.advance(SETTLE);
    let all = h.wait_submissions(3).await;
    assert_eq!(all[2].period, period());
    assert_ne!(all[0].digest, all[2].digest);
    h.shutdown().await;
}

#[test]
fn the_test_period_is_the_week_due_at_the_pinned_time() {
    assert_eq!(Period::last_ended(hrs_tests::NOW), period());
}
