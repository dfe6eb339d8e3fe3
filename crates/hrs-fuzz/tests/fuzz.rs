//! The short run of every fuzz target: its seeds, then a few hundred random and mutated
//! inputs each (see the crate docs for longer campaigns).

fn fuzz(name: &str) {
    let target = hrs_fuzz::target(name).unwrap_or_else(|| panic!("no fuzz target {name}"));
    hrs_fuzz::fuzz(target);
}

/// One test per target, named after it, so a campaign can pick targets by name.
macro_rules! fuzz_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                fuzz(stringify!($name));
            }
        )*

        #[test]
        fn every_target_has_a_test() {
            let tested = [$(stringify!($name)),*];
            for target in hrs_fuzz::TARGETS {
                assert!(tested.contains(&target.name), "no test runs {}", target.name);
            }
        }
    };
}

fuzz_tests!(
    run_encoded,
    run_decoded,
    merged_period,
    offline_bundle,
    run_chunk,
    aggregator_service,
    connection_point_service,
    intake_service,
    agent_config,
    aggregator_config,
    connection_point_config,
    intake_config,
    connection_string,
    ids,
);

/// The aggregator in this process accepts the seed requests of its own sites, so the
/// aggregator target's invariants on accepted calls are exercised, not vacuous.
#[test]
fn the_aggregator_target_accepts_its_seeds() {
    let target = hrs_fuzz::target("aggregator_service").expect("the aggregator target");
    let answers: Vec<_> = (target.seeds)()
        .iter()
        .map(|seed| hrs_fuzz::targets::aggregator_call(seed).expect("a seed decodes"))
        .collect();
    let accepted = answers.iter().filter(|a| a.is_ok()).count();
    // Of each kind, the runs of P01 and the CAS hashed plain, P02's failed run, and every
    // configured site's heartbeat; the keyed run alone is refused (another hash key).
    assert!(accepted >= answers.len() - 2, "{answers:?}");
}

/// The connection point and the intake in this process accept the seed calls (each
/// period sent, its resume, its raw stream), so the period targets' invariants on what is
/// accepted are exercised, not vacuous.
#[test]
fn the_period_receivers_accept_their_seeds() {
    use hrs_fuzz::targets::Receiving;
    for (name, receiving) in [
        ("connection_point_service", Receiving::Point),
        ("intake_service", Receiving::Intake),
    ] {
        let target = hrs_fuzz::target(name).expect("the period target");
        for seed in (target.seeds)() {
            let answer = hrs_fuzz::targets::period_call(receiving, &seed).expect("a seed decodes");
            assert!(answer.is_ok(), "{name}: {answer:?}");
        }
    }
}
