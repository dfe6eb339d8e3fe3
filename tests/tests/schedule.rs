//! Which week an agent collects, and when: the last ISO week (UTC) to have ended, collected
//! at the agent's first check after it closed, and once. Driven across the ISO year
//! boundary on a clock moved by hand: 2026 has a week 53, and 2027-W01 opens on Monday
//! 4 January 2027.

use std::time::Duration;

use hrs_aggregator::{MergeStore as _, SqliteMergeStore};
use hrs_core::clock::ManualClock;
use hrs_tests::{Hierarchy, site};
use time::macros::datetime;

/// The periods P01 has delivered, as the aggregator holds them.
fn delivered(h: &Hierarchy) -> Vec<String> {
    if !h.aggregator_config.store.exists() {
        return Vec::new();
    }
    SqliteMergeStore::open_read_only(&h.aggregator_config.store)
        .and_then(|store| store.current(None, Some(&site("P01"))))
        .map(|runs| runs.into_iter().map(|run| run.period).collect())
        .unwrap_or_default()
}

/// Waits (at most 30 s) until P01 has delivered exactly `periods`.
async fn wait_delivered(h: &Hierarchy, periods: &[&str]) {
    let mut held = Vec::new();
    for _ in 0..1500 {
        held = delivered(h);
        if held == periods {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("P01 delivered {held:?}, not {periods:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_collects_each_week_once_it_has_ended_across_the_year_boundary() {
    // Thursday 31 December 2026, 30 seconds before midnight: in 2026-W53, so W52 is due.
    let clock = ManualClock::new(datetime!(2026-12-31 23:59:30 UTC));
    let h = Hierarchy::builder()
        .primaries(1)
        .clock(clock.clone())
        .start()
        .await;
    let mut config = h.agent_config(&site("P01"));
    config.period = None;
    let agent = hrs_agent::Agent::open(config, h.clock.shared()).expect("agent opens");
    assert_eq!(agent.due_period().to_string(), "2026-W52");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(agent.serve(async {
        let _ = stopped.await;
    }));
    wait_delivered(&h, &["2026-W52"]).await;

    // New Year's Day is still in W53: nothing new is due.
    clock.advance(Duration::from_secs(60));
    // Monday 4 January 2027 at midnight W53 closes, and is collected at once.
    clock.advance(Duration::from_secs(3 * 24 * 3600 - 30));
    wait_delivered(&h, &["2026-W52", "2026-W53"]).await;

    // A week later, the first week of 2027.
    clock.advance(Duration::from_secs(7 * 24 * 3600));
    wait_delivered(&h, &["2026-W52", "2026-W53", "2027-W01"]).await;

    let _ = stop.send(());
    service
        .await
        .expect("the agent's task ends")
        .expect("the agent stops cleanly");
    // Each week was collected once: no run was ever superseded by another of its week.
    let runs: i64 = rusqlite::Connection::open(&h.aggregator_config.store)
        .expect("opens the merge store")
        .query_row("SELECT COUNT(*) FROM runs WHERE site = 'P01'", [], |r| {
            r.get(0)
        })
        .expect("counts runs");
    assert_eq!(runs, 3);
    h.shutdown().await;
}
