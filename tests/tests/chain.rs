//! Hierarchies deeper than two tiers: a region aggregator relays its sites' runs to the
//! CAS aggregator above it, and the CAS delivers the whole hierarchy's period.

use std::time::Duration;

use hrs_aggregator::AggregatorConfig;
use hrs_tests::{Hierarchy, PERIOD, site};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_aggregator_relays_its_sites_to_the_cas() {
    // The CAS aggregator expects the CAS and two primaries; the primaries report to a
    // region aggregator instead, which relays up.
    let h = Hierarchy::builder().primaries(2).start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let region_addr = listener.local_addr().expect("address");
    let region = AggregatorConfig {
        listen: region_addr,
        sites: vec![site("P01"), site("P02")],
        store: h.dir.path().join("region.sqlite"),
        onward: hrs_aggregator::Onward::Upstream(format!("http://{}", h.aggregator)),
        ..h.aggregator_config.clone()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(hrs_aggregator::serve(
        region.clone(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));

    for code in ["P01", "P02"] {
        let mut config = h.agent_config(&site(code));
        config.upstream = format!("http://{region_addr}");
        hrs_agent::Agent::open(config, h.clock.shared())
            .expect("agent opens")
            .run_once(Duration::from_secs(30))
            .await
            .expect("delivers to the region");
    }
    h.agent(&site("CAS"))
        .run_once(Duration::from_secs(30))
        .await
        .expect("the CAS delivers to its own aggregator");

    // The CAS completes the period only once the region has relayed both primaries.
    h.wait_delivered(PERIOD).await;
    let mut at_cas: Vec<(String, String)> = h
        .merged_runs()
        .into_iter()
        .map(|run| (run.site, run.digest))
        .collect();
    at_cas.sort();
    let region_store =
        hrs_aggregator::SqliteMergeStore::open_read_only(&region.store).expect("region store");
    use hrs_aggregator::MergeStore as _;
    let mut at_region: Vec<(String, String)> = region_store
        .current(Some(&hrs_tests::period()), None)
        .expect("region runs")
        .into_iter()
        .map(|run| (run.site, run.digest))
        .collect();
    at_region.sort();
    assert_eq!(at_cas.len(), 3);
    assert!(
        at_region.iter().all(|run| at_cas.contains(run)),
        "the CAS holds the region's runs as they are"
    );
    assert!(region_store.unrelayed().expect("unrelayed").is_empty());
    let _ = stop.send(());
    server.await.expect("joins").expect("region serves");
    h.shutdown().await;
}
