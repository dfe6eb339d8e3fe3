//! The outbound reshaping of an encoded period, held to a copy of the connection point's
//! `outbound` applied to the decoded period.

use proptest::prelude::*;

use super::*;
use crate::bytes::chunk_len;
use crate::hash::{HashKey, Hasher};

/// hrs-connection's `outbound` (outbound.rs), which hrs-core cannot depend on, with the
/// policy's level, hasher and mode given apart.
fn outbound(
    period: &pb::MergedPeriod,
    level: Level,
    hasher: &Hasher,
    mode: &str,
) -> pb::MergedPeriod {
    let collected: Level = period.level.parse().unwrap_or(Level::Basic);
    let effective = collected.min(level);
    let site_name = |site: &str| {
        if effective == Level::Full {
            site.to_owned()
        } else {
            hasher.hash(site)
        }
    };
    let sites = period
        .sites
        .iter()
        .map(|site| pb::SiteResults {
            site: site_name(&site.site),
            run_id: String::new(),
            sequence: 0,
            started_at: site.started_at.clone(),
            finished_at: site.finished_at.clone(),
            results: site
                .results
                .iter()
                .filter(|set| {
                    set.level
                        .parse::<Level>()
                        .is_ok_and(|query| query.allowed_at(effective))
                })
                .cloned()
                .collect(),
        })
        .collect();
    let mut out = pb::MergedPeriod {
        hierarchy_hash: period.hierarchy_hash.clone(),
        period: period.period.clone(),
        catalog_version: period.catalog_version.clone(),
        level: effective.as_str().to_owned(),
        sites,
        missing_sites: period.missing_sites.iter().map(|s| site_name(s)).collect(),
        digest: String::new(),
        mode: mode.to_owned(),
    };
    out.digest = merged_digest(&out);
    out
}

/// A keyed hasher with a fixed key (the bytes 0 to 31), so cases are repeatable.
fn keyed() -> Hasher {
    Hasher::Keyed(
        HashKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("a key"),
    )
}

fn reshape(bytes: Arc<dyn RunBytes>, level: Level, hasher: &Hasher, mode: &str) -> MergedEncoding {
    MergedEncoding::outbound(bytes, level, |code| hasher.hash(code), mode).expect("reshapes")
}

fn level() -> impl Strategy<Value = Level> {
    prop::sample::select(vec![Level::Basic, Level::Enhanced, Level::Full])
}

fn hasher() -> impl Strategy<Value = Hasher> {
    any::<bool>().prop_map(|is_keyed| if is_keyed { keyed() } else { Hasher::Plain })
}

fn mode() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", "online", "offline"])
}

proptest! {
    #![proptest_config(config(256))]

    /// Whatever the period's level and layout (none: prost's encoding) and the policy's
    /// level, hasher and mode, the reshaped encoding decodes to what `outbound` makes of the
    /// decoded period (byte for byte what prost encodes of it when prost encoded the
    /// period), carries its digest, and the period check accepts it.
    #[test]
    fn the_encoding_decodes_to_what_outbound_makes_of_the_period(
        plan in fixtures::period_plan(),
        layout in prop::option::of(fixtures::layout()),
        policy in level(),
        hasher in hasher(),
        mode in mode(),
    ) {
        let period = fixtures::period(&plan);
        let bytes = match &layout {
            Some(layout) => fixtures::lay_out(&period, layout),
            None => period.encode_to_vec(),
        };
        prop_assert!(check_merged_encoded(&bytes).is_ok(), "the period given is valid");
        let decoded = pb::MergedPeriod::decode(bytes.as_slice()).expect("decodes");
        let expected = outbound(&decoded, policy, &hasher, mode);

        let encoding = reshape(Arc::new(bytes), policy, &hasher, mode);
        let out = whole(&encoding);
        prop_assert_eq!(pb::MergedPeriod::decode(out.as_slice()).expect("decodes"), expected.clone());
        if layout.is_none() {
            prop_assert_eq!(&out, &expected.encode_to_vec());
        }
        prop_assert_eq!(encoding.digest(), merged_digest(&expected));
        prop_assert_eq!(encoding.digest(), expected.digest.as_str());
        let summary = check_merged_encoded(&encoding).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(summary.digest, expected.digest);
        prop_assert_eq!(summary.level, plan.level.min(policy));
        prop_assert_eq!(summary.mode, mode);
    }

    /// Building reads the period a window at a time; any range of the encoding reads as the
    /// same range of the whole, and reads of the period only what of it lies in that range.
    #[test]
    fn a_range_reads_only_the_period_it_overlaps(
        plan in fixtures::period_plan(),
        layout in fixtures::layout(),
        policy in level(),
        ranges in prop::collection::vec(
            (any::<prop::sample::Index>(), any::<prop::sample::Index>()),
            1..8,
        ),
    ) {
        let source = Arc::new(Counted::new(fixtures::lay_out(&fixtures::period(&plan), &layout)));
        let encoding = reshape(Arc::clone(&source) as Arc<dyn RunBytes>, policy, &Hasher::Plain, "online");
        let reads = source.reads();
        prop_assert!(reads.iter().all(|(_, len)| *len <= WINDOW), "{:?}", reads);
        let all = whole(&encoding);
        drop(source.reads());
        for (at, len) in &ranges {
            let offset = at.index(all.len() + 1);
            let len = len.index(all.len() - offset + 1);
            let read = encoding.read_at(offset as u64, len).expect("reads");
            prop_assert_eq!(&read[..], &all[offset..offset + len]);
            let from_period: usize = source.reads().iter().map(|(_, n)| n).sum();
            prop_assert!(from_period <= len, "{} bytes of the period read for {}", from_period, len);
        }
        prop_assert!(encoding.read_at(all.len() as u64, 1).is_err());
        prop_assert!(encoding.read_at(u64::MAX, 2).is_err());
    }
}

/// The encoding of a plan's period, merged by the aggregator.
fn encoded(plan: &PeriodPlan) -> Vec<u8> {
    fixtures::period(plan).encode_to_vec()
}

/// The codes of a period's sites and missing sites.
fn codes(period: &pb::MergedPeriod) -> Vec<String> {
    let sites = period.sites.iter().map(|site| site.site.clone());
    sites.chain(period.missing_sites.iter().cloned()).collect()
}

#[test]
fn every_period_level_under_every_policy_level_is_what_outbound_makes() {
    let levels = [Level::Basic, Level::Enhanced, Level::Full];
    assert!(keyed().hash("P01") < keyed().hash("CAS"));
    for period_level in levels {
        let mut plan = one_full_run(period_level);
        // A second site, P01: after CAS by code, before it by keyed hash, so the digest
        // takes the sites in another order than the period's.
        plan.runs.push(fixtures::RunPlan {
            code: 3,
            sequence: 8,
            ..plan.runs[0].clone()
        });
        let period = fixtures::period(&plan);
        for policy in levels {
            let encoding = reshape(Arc::new(period.encode_to_vec()), policy, &keyed(), "online");
            let expected = outbound(&period, policy, &keyed(), "online");
            assert_eq!(
                whole(&encoding),
                expected.encode_to_vec(),
                "{period_level:?} under {policy:?}"
            );
            assert_eq!(encoding.digest(), expected.digest);
            check_merged_encoded(&encoding).expect("valid");
        }
    }
}

#[test]
fn the_lower_level_wins_and_codes_leave_only_at_full() {
    let reshaped = |period: Level, policy: Level| {
        let encoding = reshape(
            Arc::new(encoded(&one_full_run(period))),
            policy,
            &Hasher::Plain,
            "offline",
        );
        pb::MergedPeriod::decode(whole(&encoding).as_slice()).expect("decodes")
    };
    let inside = fixtures::period(&one_full_run(Level::Full));
    let hashed: Vec<String> = codes(&inside)
        .iter()
        .map(|c| Hasher::Plain.hash(c))
        .collect();

    let full = reshaped(Level::Full, Level::Full);
    assert_eq!(full.level, "Full");
    assert_eq!(codes(&full), codes(&inside));
    assert_eq!(full.sites[0].results.len(), inside.sites[0].results.len());
    assert!(
        full.sites
            .iter()
            .all(|site| site.run_id.is_empty() && site.sequence == 0)
    );
    assert_eq!(full.mode, "offline");

    // A policy below the period's level drops the sets above it and hashes the codes.
    let enhanced = reshaped(Level::Full, Level::Enhanced);
    assert_eq!(enhanced.level, "Enhanced");
    assert_eq!(codes(&enhanced), hashed);
    assert!(
        enhanced.sites[0]
            .results
            .iter()
            .all(|set| set.level != "Full")
    );
    assert!(enhanced.sites[0].results.len() < inside.sites[0].results.len());

    // A period collected below the policy's level never claims more, nor shows codes.
    let basic = reshaped(Level::Basic, Level::Full);
    assert_eq!(basic.level, "Basic");
    assert_eq!(codes(&basic), hashed);
    assert!(
        basic.sites[0]
            .results
            .iter()
            .all(|set| set.level == "Basic")
    );
}

#[test]
fn sets_whose_level_does_not_parse_are_dropped() {
    // Not a period the check accepts, but nothing unproven may leave even so.
    let mut period = fixtures::period(&one_full_run(Level::Full));
    period.sites[0].results[1].level = "Everything".into();
    let encoding = reshape(
        Arc::new(period.encode_to_vec()),
        Level::Full,
        &Hasher::Plain,
        "",
    );
    let out = whole(&encoding);
    let expected = outbound(&period, Level::Full, &Hasher::Plain, "");
    assert_eq!(
        expected.sites[0].results.len() + 1,
        period.sites[0].results.len()
    );
    assert_eq!(out, expected.encode_to_vec());
    assert_eq!(encoding.digest(), expected.digest);
}

#[test]
fn a_broken_period_is_refused() {
    let mut bytes = encoded(&one_full_run(Level::Full));
    bytes.truncate(bytes.len() - 3);
    let refused = MergedEncoding::outbound(Arc::new(bytes), Level::Full, str::to_owned, "").err();
    assert!(
        matches!(refused, Some(BuildError::Period(_))),
        "{refused:?}"
    );
}

/// A period of several MiB, reshaped and read in windows of at most 1 MiB: building reads
/// the period a window at a time and about twice, each window read reads at most its own
/// length of the period, and the windows put together are what `outbound` makes of it.
#[test]
fn a_large_period_is_reshaped_and_read_a_window_at_a_time() {
    let catalog = fixtures::catalog();
    let plan = one_full_run(Level::Full);
    let mut runs = fixtures::runs(&plan, &catalog);
    let run = &mut runs[0];
    // A Basic set, so it is kept at the policy's level below.
    let set = run
        .results
        .iter_mut()
        .find(|set| set.level == "Basic" && set.error.is_empty())
        .expect("a Basic set");
    let query = catalog.query(&set.query_id).expect("a catalog query");
    set.rows
        .extend((0..100_000).map(|n| fixtures::row(query, n)));
    run.digest = crate::digest::run_digest(run);
    let period = fixtures::merge(Level::Full, &catalog, fixtures::missing(&plan), runs);
    let source = Arc::new(Counted::new(period.encode_to_vec()));
    let size = source.size();
    assert!(size > 4 << 20, "{size}");

    let hasher = keyed();
    let encoding = reshape(
        Arc::clone(&source) as Arc<dyn RunBytes>,
        Level::Enhanced,
        &hasher,
        "online",
    );
    let reads = source.reads();
    assert!(reads.iter().all(|(_, len)| *len <= WINDOW), "{reads:?}");
    let read: usize = reads.iter().map(|(_, len)| len).sum();
    assert!(
        read as u64 <= 2 * size + 64 * 1024,
        "read {read} bytes of {size}"
    );

    let window = 1 << 20;
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < encoding.size() {
        let len = chunk_len(encoding.size(), offset, window);
        out.extend(encoding.read_at(offset, len).expect("reads"));
        let reads = source.reads();
        assert!(
            reads.iter().map(|(_, n)| n).sum::<usize>() <= len,
            "{reads:?}"
        );
        offset += len as u64;
    }
    let expected = outbound(&period, Level::Enhanced, &hasher, "online");
    assert_eq!(out, expected.encode_to_vec());
    let summary = check_merged_encoded(&encoding).expect("valid");
    assert_eq!(summary.digest, expected.digest);
    let rows: usize = expected.sites[0].results.iter().map(|s| s.rows.len()).sum();
    assert!(rows > 100_000);
    assert_eq!(summary.rows, rows as u64);
}
