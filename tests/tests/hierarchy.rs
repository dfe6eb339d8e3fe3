//! A whole online hierarchy end to end: every site's agent collects and delivers, the
//! aggregator merges one current run per site, and the connection point submits the
//! merged period to the intake with site codes hashed.

use std::time::Duration;

use hrs_connection::State;
use hrs_tests::{Hierarchy, PERIOD, merged_rows, rows};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_period_reaches_the_intake_with_every_site() {
    let h = Hierarchy::builder().primaries(3).start().await;
    for code in &h.sites {
        let summary = h
            .agent(code)
            .run_once(Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("agent {code}: {e}"));
        assert_eq!(summary.period.to_string(), PERIOD);
        assert!(summary.rows > 0, "{code} collected nothing");
    }

    let state = h.wait_delivered(PERIOD).await;
    assert_eq!(state.state, State::Submitted);
    let submission_id = state.submission_id.expect("a submitted period has an id");

    let runs = h.merged_runs();
    let sites: Vec<&str> = runs.iter().map(|r| r.site.as_str()).collect();
    assert_eq!(
        sites,
        ["CAS", "P01", "P02", "P03"],
        "one current run per site"
    );
    for run in &runs {
        assert_eq!(run.period, PERIOD);
        assert!(rows(run) > 0, "{} has no rows", run.site);
    }
    let merged: usize = runs.iter().map(rows).sum();

    let submissions = h.intake_submissions().await;
    assert_eq!(submissions.len(), 1, "{submissions:?}");
    assert_eq!(submissions[0].submission_id, submission_id);
    assert_eq!(submissions[0].period.to_string(), PERIOD);
    assert_eq!(submissions[0].hierarchy_hash, h.hierarchy_id.hashed());
    assert_eq!(submissions[0].rows, merged as u64);

    let sent = h.intake_payload(&submission_id).await;
    assert_eq!(sent.sites.len(), h.sites.len());
    for sent_site in &sent.sites {
        assert!(
            !h.sites.iter().any(|code| code.as_str() == sent_site.site),
            "site {} left in clear",
            sent_site.site
        );
    }
    assert!(!sent.sites.iter().any(|s| s.site == "P01"));
    assert_eq!(merged_rows(&sent), merged);
    h.shutdown().await;
}
