use proptest::prelude::*;

use super::*;
use crate::digest::merged_digest;
use crate::encoded_period::check_merged_encoded;
use crate::encoded_period::tests::{agree, config, edit, edit_bytes};
use crate::fixtures::{self, Counted, PeriodPlan};
use crate::validate::check_merged;
use crate::wire::WINDOW;

/// The header the aggregator would give for a plan's period.
fn header(plan: &PeriodPlan) -> MergedHeader {
    MergedHeader {
        hierarchy_hash: fixtures::hierarchy_hash(),
        period: fixtures::PERIOD.parse().expect("a period"),
        catalog_version: fixtures::catalog().version,
        level: plan.level,
        missing_sites: fixtures::missing(plan)
            .iter()
            .map(|code| code.parse().expect("a site code"))
            .collect(),
    }
}

/// Runs as the store keeps them: their encodings.
fn stored(runs: &[pb::Run]) -> Vec<Arc<dyn RunBytes>> {
    runs.iter()
        .map(|run| Arc::new(run.encode_to_vec()) as Arc<dyn RunBytes>)
        .collect()
}

/// The whole encoding, read at once.
fn whole(encoding: &MergedEncoding) -> Vec<u8> {
    let size = usize::try_from(encoding.size()).expect("a small period");
    encoding.read_at(0, size).expect("reads")
}

fn build(plan: &PeriodPlan, runs: Vec<Arc<dyn RunBytes>>) -> MergedEncoding {
    MergedEncoding::build(header(plan), runs).expect("builds")
}

proptest! {
    #![proptest_config(config(256))]

    /// Whatever the runs and the order they are given in, the encoding is prost's encoding
    /// of what `merge` makes of them, byte for byte; it carries the merged digest, and both
    /// period checks accept it.
    #[test]
    fn the_encoding_is_prosts_encoding_of_the_merge(
        plan in fixtures::period_plan(),
        rotate in any::<prop::sample::Index>(),
    ) {
        let catalog = fixtures::catalog();
        let runs = fixtures::runs(&plan, &catalog);
        let expected = fixtures::merge(plan.level, &catalog, fixtures::missing(&plan), runs.clone());
        let mut given = stored(&runs);
        let turn = rotate.index(given.len());
        given.rotate_left(turn);
        let encoding = build(&plan, given);
        let bytes = whole(&encoding);
        prop_assert_eq!(&bytes, &expected.encode_to_vec());
        prop_assert_eq!(pb::MergedPeriod::decode(bytes.as_slice()).expect("decodes"), expected.clone());
        prop_assert_eq!(encoding.digest(), merged_digest(&expected));
        prop_assert!(check_merged(&expected).is_ok());
        let summary = check_merged_encoded(&encoding).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(summary.digest, expected.digest);
        prop_assert_eq!(summary.sites.len(), expected.sites.len());
    }

    /// Any range of the encoding reads as the same range of the whole, and reads of the
    /// runs only what of them lies in it.
    #[test]
    fn a_range_reads_only_the_runs_it_overlaps(
        plan in fixtures::period_plan(),
        ranges in prop::collection::vec(
            (any::<prop::sample::Index>(), any::<prop::sample::Index>()),
            1..8,
        ),
    ) {
        let catalog = fixtures::catalog();
        let runs: Vec<Arc<Counted>> = fixtures::runs(&plan, &catalog)
            .iter()
            .map(|run| Arc::new(Counted::new(run.encode_to_vec())))
            .collect();
        let given = runs.iter().map(|run| Arc::clone(run) as Arc<dyn RunBytes>).collect();
        let encoding = build(&plan, given);
        let all = whole(&encoding);
        runs.iter().for_each(|run| drop(run.reads()));
        for (at, len) in &ranges {
            let offset = at.index(all.len() + 1);
            let len = len.index(all.len() - offset + 1);
            let read = encoding.read_at(offset as u64, len).expect("reads");
            prop_assert_eq!(&read[..], &all[offset..offset + len]);
            let from_runs: usize = runs.iter().flat_map(|run| run.reads()).map(|(_, n)| n).sum();
            prop_assert!(from_runs <= len, "{} bytes of runs read for {}", from_runs, len);
        }
        prop_assert!(encoding.read_at(all.len() as u64, 1).is_err());
        prop_assert!(encoding.read_at(u64::MAX, 2).is_err());
    }

    /// Edited bytes of a built encoding are refused or accepted by the encoded check as by
    /// `check_merged` of what prost decodes from them.
    #[test]
    fn edited_encodings_are_read_as_check_merged_reads_them(
        plan in fixtures::period_plan(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        let catalog = fixtures::catalog();
        let mut bytes = whole(&build(&plan, stored(&fixtures::runs(&plan, &catalog))));
        for edit in &edits {
            edit_bytes(&mut bytes, edit);
        }
        agree(&bytes)?;
    }
}

/// A plan of one site's run at Full, with sets of every level, merged at `level`.
fn one_full_run(level: Level) -> PeriodPlan {
    PeriodPlan {
        runs: vec![fixtures::RunPlan {
            code: 1,
            level: Level::Full,
            sequence: 3,
            sets: (0..12)
                .map(|q| fixtures::SetPlan {
                    query: q * 8 + 1,
                    rows: vec![q as u64, 7],
                    failed: q == 5,
                })
                .map(|mut set| {
                    if set.failed {
                        set.rows.clear();
                    }
                    set
                })
                .collect(),
        }],
        level,
    }
}

#[test]
fn a_period_keeps_only_the_sets_its_level_allows_in_the_runs_order() {
    let plan = one_full_run(Level::Basic);
    let catalog = fixtures::catalog();
    let runs = fixtures::runs(&plan, &catalog);
    let levels: HashSet<&str> = runs[0]
        .results
        .iter()
        .map(|set| set.level.as_str())
        .collect();
    assert_eq!(levels.len(), 3, "the run has sets of every level");
    let bytes = whole(&build(&plan, stored(&runs)));
    let period = pb::MergedPeriod::decode(bytes.as_slice()).expect("decodes");
    let kept: Vec<&str> = period.sites[0]
        .results
        .iter()
        .map(|set| set.query_id.as_str())
        .collect();
    let basic: Vec<&str> = runs[0]
        .results
        .iter()
        .filter(|set| set.level == "Basic")
        .map(|set| set.query_id.as_str())
        .collect();
    assert!(!basic.is_empty());
    assert_eq!(kept, basic);
}

#[test]
fn the_mode_is_appended_to_the_encoding_outside_the_digest() {
    let plan = one_full_run(Level::Full);
    let encoding = build(&plan, stored(&fixtures::runs(&plan, &fixtures::catalog())));
    let mut bytes = whole(&encoding);
    assert!(mode_field("").is_empty());
    bytes.extend(mode_field("online"));
    let period = pb::MergedPeriod::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(period.mode, "online");
    let summary = check_merged_encoded(&bytes).expect("valid");
    assert_eq!(summary.mode, "online");
    assert_eq!(summary.digest, encoding.digest());
    // A later mode wins, as prost reads it.
    bytes.extend(mode_field("offline"));
    assert_eq!(check_merged_encoded(&bytes).expect("valid").mode, "offline");
}

#[test]
fn building_reads_each_run_a_window_at_a_time_and_about_twice() {
    let catalog = fixtures::catalog();
    let plan = one_full_run(Level::Full);
    let mut run = fixtures::runs(&plan, &catalog).remove(0);
    let query = catalog
        .query(&run.results[0].query_id)
        .expect("a catalog query");
    run.results[0]
        .rows
        .extend((0..60_000).map(|n| fixtures::row(query, n)));
    run.digest = crate::digest::run_digest(&run);
    let source = Arc::new(Counted::new(run.encode_to_vec()));
    let size = source.size();
    assert!(size > 3 * WINDOW as u64, "{size}");

    let encoding = build(&plan, vec![Arc::clone(&source) as Arc<dyn RunBytes>]);
    let reads = source.reads();
    assert!(reads.iter().all(|(_, len)| *len <= WINDOW), "{reads:?}");
    let read: usize = reads.iter().map(|(_, len)| len).sum();
    assert!(
        read as u64 <= 2 * size + 64 * 1024,
        "read {read} bytes of {size}"
    );
    let summary = check_merged_encoded(&encoding).expect("valid");
    assert_eq!(summary.rows, 60_000 + 22);
}

#[test]
fn runs_of_another_period_a_site_twice_and_broken_runs_are_refused() {
    let catalog = fixtures::catalog();
    let plan = one_full_run(Level::Full);
    let run = fixtures::runs(&plan, &catalog).remove(0);

    let mut other = run.clone();
    other.period = "2026-W47".into();
    let refused = MergedEncoding::build(header(&plan), stored(&[other])).err();
    assert!(
        matches!(refused, Some(BuildError::OtherPeriod { ref found, .. }) if found == "2026-W47"),
        "{refused:?}"
    );

    let refused = MergedEncoding::build(header(&plan), stored(&[run.clone(), run.clone()])).err();
    assert!(
        matches!(refused, Some(BuildError::SiteTwice(ref site)) if site == "CAS"),
        "{refused:?}"
    );

    let mut cut = run.encode_to_vec();
    cut.truncate(cut.len() - 3);
    let refused = MergedEncoding::build(header(&plan), vec![Arc::new(cut)]).err();
    assert!(
        matches!(refused, Some(BuildError::Run { index: 0, .. })),
        "{refused:?}"
    );
}

mod outbound;
