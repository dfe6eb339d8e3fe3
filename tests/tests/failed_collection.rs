//! A site database that is garbage is a failed collection, never a run that replaces the
//! site's data upstream; a run with too many failed queries waits in the spool until an
//! operator releases it, and only then becomes the site's current run.

use std::time::Duration;

use hrs_agent::{Agent, AgentConfig, AgentError};
use hrs_aggregator::{MergeStore as _, SqliteMergeStore};
use hrs_tests::{Hierarchy, PERIOD, site};

/// The run id of a site's current run of [`PERIOD`] at the aggregator.
fn current_run_id(h: &Hierarchy, code: &str) -> String {
    let runs = SqliteMergeStore::open_read_only(&h.aggregator_config.store)
        .expect("opens the merge store")
        .current(Some(&hrs_tests::period()), Some(&site(code)))
        .expect("reads the merge store");
    assert_eq!(runs.len(), 1, "{code} has one current run");
    runs[0].run_id.clone()
}

/// Opens P01's agent, on its own spool, reading `config`'s site database instead.
fn agent_with(h: &Hierarchy, config: AgentConfig) -> Agent {
    Agent::open(config, h.clock.shared()).expect("opens the agent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_site_database_keeps_the_current_run_and_a_held_run_waits_for_release() {
    let h = Hierarchy::builder().primaries(1).start().await;
    h.collect_everywhere().await;
    h.wait_delivered(PERIOD).await;
    let p01 = site("P01");
    let good_run = current_run_id(&h, "P01");
    let before = h.merged_bytes();

    // Garbage where the site database was: nothing spooled, nothing sent, exit non-zero.
    let garbage = h.dir.path().join("garbage.sqlite");
    std::fs::write(&garbage, b"not a site database ".repeat(3_300)).expect("writes");
    let garbled = agent_with(
        &h,
        AgentConfig {
            site_db: hrs_sitedb::SiteDbSpec::Sqlite(garbage),
            ..h.agent_config(&p01)
        },
    );
    let error = garbled
        .run_once(Duration::from_secs(30))
        .await
        .expect_err("a garbage site database fails the collection");
    assert!(
        matches!(error, AgentError::NothingCollected { .. })
            && error.to_string().contains("file is not a database"),
        "{error}"
    );
    assert!(h.spool(&p01).pending().await.expect("reads").is_empty());
    assert_eq!(h.merged_bytes(), before, "P01's current run changed");

    // One view gone and no failure allowed: the run is spooled but held, not sent.
    let partial = h.dir.path().join("partial.sqlite");
    std::fs::copy(h.site_db(&p01), &partial).expect("copies the site database");
    rusqlite::Connection::open(&partial)
        .expect("opens")
        .execute_batch("DROP TABLE v_Site")
        .expect("drops a view");
    let strict = agent_with(
        &h,
        AgentConfig {
            site_db: hrs_sitedb::SiteDbSpec::Sqlite(partial),
            max_failed_share: 0.0,
            ..h.agent_config(&p01)
        },
    );
    let error = strict
        .run_once(Duration::from_secs(30))
        .await
        .expect_err("a held run is an error of --once");
    let AgentError::Held { run_id, .. } = &error else {
        panic!("expected a held run, got {error}");
    };
    let message = error.to_string();
    assert!(
        message.contains("queries failed")
            && message.contains(&format!("hrs release --config AGENT.toml --run {run_id}")),
        "{message}"
    );
    assert_eq!(
        h.merged_bytes(),
        before,
        "a held run reached the aggregator"
    );
    assert_eq!(current_run_id(&h, "P01"), good_run);

    // The operator's word: released, it is delivered and becomes current.
    let released = strict.release(None).await.expect("releases");
    assert_eq!(released.len(), 1);
    assert_eq!(&released[0].run_id, run_id);
    assert_eq!(strict.deliver().await.expect("delivers"), 1);
    assert_eq!(&current_run_id(&h, "P01"), run_id);
    h.shutdown().await;
}
