//! Online, the connection point checks for updates on a schedule: at start, whenever a
//! period arrives, every 24 hours after a check that found updates and one hour after one
//! that found none. Each check submits every unsent period and keeps the intake's update
//! manifest, which `hrs status` shows. The schedule runs on a clock the test moves.

use std::time::Duration;

use hrs_connection::{CheckRecord, SqliteOutbox};
use hrs_core::clock::{Clock as _, ManualClock, rfc3339};
use hrs_tests::{Hierarchy, PERIOD};
use time::OffsetDateTime;
use time::macros::datetime;

const HOUR: Duration = Duration::from_secs(3600);

/// The last update check the connection point recorded, once there is one.
fn last_check(h: &Hierarchy) -> Option<CheckRecord> {
    SqliteOutbox::open_existing(&h.connection_point.store)
        .ok()
        .flatten()?
        .last_check_blocking()
        .ok()
        .flatten()
}

/// Waits until the last check ran at `at` and returns it.
async fn wait_check_at(h: &Hierarchy, at: OffsetDateTime) -> CheckRecord {
    for _ in 0..500 {
        if let Some(check) = last_check(h).filter(|c| c.last_check_at == at) {
            return check;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no check at {}; last: {:?}", rfc3339(at), last_check(h));
}

/// An update catalog with one update every demo site is below, and its package.
fn catalog(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::write(dir.join("hrs-2027.01.cab"), b"the 2027.01 update").expect("writes");
    let path = dir.join("updates.toml");
    std::fs::write(
        &path,
        r#"[[updates]]
id = "2027.01"
version = "5.00.9500.1000"
kind = "update"
title = "HRS 2027.01"
released = "2027-01-15"
packages = ["hrs-2027.01.cab"]
"#,
    )
    .expect("writes");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_that_finds_nothing_rechecks_after_an_hour() {
    let start = datetime!(2026-11-23 00:00 UTC);
    let clock = ManualClock::new(start);
    let h = Hierarchy::builder()
        .primaries(1)
        .clock(clock.clone())
        .start()
        .await;
    // The check at start finds nothing: no update catalog at this intake.
    let first = wait_check_at(&h, start).await;
    assert_eq!(first.next_check_at, start + HOUR);

    // A period arriving is submitted by a check at once, whatever the schedule.
    h.collect_everywhere().await;
    h.wait_delivered(PERIOD).await;
    assert_eq!(h.intake_submissions().await.len(), 1);

    // No check before the hour is up: had one run at 59 minutes, the next would be due at
    // 1 h 59 min, and the one at the hour would never come.
    clock.advance(HOUR - Duration::from_secs(60));
    clock.advance(Duration::from_secs(60));
    let hourly = wait_check_at(&h, start + HOUR).await;
    assert_eq!(hourly.next_check_at, start + 2 * HOUR);
    assert_eq!(hourly.last_error, None);
    // The resubmission is a duplicate: still one submission.
    assert_eq!(h.intake_submissions().await.len(), 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_that_finds_updates_keeps_the_manifest_and_checks_again_a_day_later() {
    let start = datetime!(2026-11-23 00:00 UTC);
    let clock = ManualClock::new(start);
    let updates = tempfile::tempdir().expect("tempdir");
    let h = Hierarchy::builder()
        .primaries(1)
        .clock(clock.clone())
        .update_catalog(catalog(updates.path()))
        .start()
        .await;
    wait_check_at(&h, start).await;
    h.collect_everywhere().await;
    h.wait_delivered(PERIOD).await;
    // The check that submitted the period also learnt, from it, what applies.
    let mut check = last_check(&h).expect("a check");
    for _ in 0..500 {
        if check.next_check_at == start + 24 * HOUR {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        check = last_check(&h).expect("a check");
    }
    assert_eq!(check.next_check_at, start + 24 * HOUR);
    let store = SqliteOutbox::open_existing(&h.connection_point.store)
        .expect("opens")
        .expect("exists");
    let manifest = store
        .latest_manifest_blocking()
        .expect("reads")
        .expect("a manifest");
    assert_eq!(manifest.source, "online");
    let ids: Vec<&str> = manifest
        .manifest
        .updates
        .iter()
        .map(|u| u.id.as_str())
        .collect();
    assert_eq!(ids, ["2027.01"]);
    assert!(!manifest.manifest.site_versions.is_empty());

    // An hour later nothing happens; a day later the next check runs.
    clock.advance(HOUR);
    clock.advance(23 * HOUR);
    let daily = wait_check_at(&h, start + 24 * HOUR).await;
    assert_eq!(daily.next_check_at, start + 48 * HOUR);
    assert_eq!(rfc3339(clock.now()), rfc3339(start + 24 * HOUR));
    h.shutdown().await;
}
