//! An agent's link to its upstream goes active → degraded → failed as deliveries keep
//! failing, and back to active with the first success; its backlog is kept meanwhile.

use hrs_core::clock::Clock as _;
use std::sync::atomic::Ordering;

use hrs_agent::Agent;
use hrs_chaos::{Faults, Proxy};
use hrs_core::link::LinkState;
use hrs_tests::{Hierarchy, period, site};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_degrades_fails_and_recovers_with_the_upstream() {
    let h = Hierarchy::builder().primaries(1).start().await;
    // The agent reaches its aggregator through a proxy that can take the link down.
    let proxy = Proxy::start(h.aggregator, Faults::none(), 1)
        .await
        .expect("proxy starts");
    let mut config = h.agent_config(&site("P01"));
    config.link_degraded_after = 2;
    config.link_failed_after = 4;
    config.upstream = format!("http://{}", proxy.addr());
    let metrics = h.dir.path().join("agent-P01.prom");
    config.metrics.file = Some(metrics.clone());
    let agent = Agent::open(config, h.clock.shared()).expect("agent opens");
    let metric = |line: &str| {
        std::fs::read_to_string(&metrics)
            .expect("the metrics file is written")
            .lines()
            .any(|l| l == line)
    };

    proxy.set_down(true);
    agent.collect(period()).await.expect("collects");
    let fresh = agent.status().await.expect("status");
    assert_eq!(fresh.state, LinkState::Active);
    assert_eq!(fresh.backlog_runs, 1);
    assert!(fresh.backlog_bytes > 0);

    let mut seen = Vec::new();
    for _ in 0..4 {
        assert!(agent.deliver().await.is_err(), "the upstream is away");
        let status = agent.status().await.expect("status");
        assert!(status.last_error.is_some());
        assert_eq!(status.backlog_runs, 1, "the run waits in the spool");
        seen.push(status.state);
    }
    assert_eq!(
        seen,
        [
            LinkState::Active,
            LinkState::Degraded,
            LinkState::Degraded,
            LinkState::Failed
        ]
    );
    assert!(proxy.counters().refused.load(Ordering::Relaxed) >= 4);
    assert!(metric("hrs_agent_link_state{state=\"failed\"} 1"));
    assert!(metric("hrs_agent_spool_runs 1"));

    // The upstream comes back.
    proxy.set_down(false);
    assert_eq!(agent.deliver().await.expect("delivers"), 1);
    let status = agent.status().await.expect("status");
    assert_eq!(status.state, LinkState::Active);
    assert_eq!(status.consecutive_failures, 0);
    assert_eq!(status.backlog_runs, 0);
    assert!(status.last_success_at.is_some() && status.last_error.is_none());
    assert!(metric("hrs_agent_link_state{state=\"active\"} 1"));
    assert!(metric("hrs_agent_spool_runs 0"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aggregator_sees_each_sites_link_from_its_contacts() {
    let h = Hierarchy::builder().primaries(2).start().await;
    let (cas, p01, p02) = (site("CAS"), site("P01"), site("P02"));
    for code in [&cas, &p01] {
        h.agent(code)
            .run_once(std::time::Duration::from_secs(30))
            .await
            .expect("delivers");
    }
    let store = hrs_aggregator::SqliteMergeStore::open_read_only(&h.aggregator_config.store)
        .expect("opens the merge store");
    let now = h.clock.now();
    let links = hrs_aggregator::site_links(&h.aggregator_config, &store, now).expect("links");
    let of = |links: &[hrs_aggregator::SiteLink], code: &str| {
        links
            .iter()
            .find(|l| l.site == code)
            .cloned()
            .expect("configured site")
    };
    let delivered = of(&links, "P01");
    assert_eq!(delivered.state, Some(LinkState::Active));
    assert_eq!(delivered.last_period.as_deref(), Some(hrs_tests::PERIOD));
    assert!(delivered.last_delivery_at.is_some());
    assert_eq!(
        delivered.backlog_runs, 0,
        "nothing waited behind the pushed run"
    );
    assert_eq!(
        of(&links, p02.as_str()).state,
        None,
        "P02 never made contact"
    );

    // With nothing to push, a site still checks in: its contact moves, its delivery stays.
    assert_eq!(h.agent(&p01).deliver().await.expect("heartbeat"), 0);
    let after = of(
        &hrs_aggregator::site_links(&h.aggregator_config, &store, now).expect("links"),
        "P01",
    );
    assert!(after.last_contact_at >= delivered.last_contact_at);
    assert_eq!(after.last_delivery_at, delivered.last_delivery_at);
    assert_eq!(after.backlog_runs, 0);

    // Silence counts as missed checks (hourly by default): 12 degrade, 24 fail.
    let later = |hours| now + time::Duration::hours(hours);
    for (hours, state) in [
        (11, LinkState::Active),
        (13, LinkState::Degraded),
        (25, LinkState::Failed),
    ] {
        let links =
            hrs_aggregator::site_links(&h.aggregator_config, &store, later(hours)).expect("links");
        assert_eq!(of(&links, "P01").state, Some(state), "after {hours} h");
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reinitialised_site_sends_its_period_again_and_the_result_is_unchanged() {
    let h = Hierarchy::builder().primaries(1).start().await;
    h.collect_everywhere().await;
    h.wait_delivered(hrs_tests::PERIOD).await;
    let p01 = site("P01");
    let current = |h: &Hierarchy| {
        h.merged_runs()
            .into_iter()
            .map(|run| (run.site, run.run_id, run.digest))
            .collect::<Vec<_>>()
    };
    let before = current(&h);

    let asked = hrs_aggregator::request_reinit(&h.aggregator_config, &p01, None, h.clock.now())
        .expect("reinit requested");
    assert_eq!(asked, [hrs_tests::period()]);
    assert!(matches!(
        hrs_aggregator::request_reinit(&h.aggregator_config, &site("P77"), None, h.clock.now()),
        Err(hrs_aggregator::ReinitError::UnknownSite(_))
    ));

    // The site learns of it at its next check, collects again, and delivers at the one after.
    let agent = h.agent(&p01);
    assert_eq!(agent.deliver().await.expect("heartbeat"), 0);
    assert_eq!(agent.status().await.expect("status").backlog_runs, 1);
    assert_eq!(agent.deliver().await.expect("delivers"), 1);
    assert_eq!(
        agent.deliver().await.expect("heartbeat"),
        0,
        "asked only once"
    );

    let after = current(&h);
    let run_of = |runs: &[(String, String, String)], site: &str| {
        runs.iter()
            .find(|(s, _, _)| s == site)
            .cloned()
            .expect("a current run")
    };
    let (old, new) = (run_of(&before, "P01"), run_of(&after, "P01"));
    assert_ne!(old.1, new.1, "a new run is current");
    assert_eq!(old.2, new.2, "with the same content");
    assert_eq!(run_of(&before, "CAS"), run_of(&after, "CAS"));
    let store = hrs_aggregator::SqliteMergeStore::open_read_only(&h.aggregator_config.store)
        .expect("opens");
    let links =
        hrs_aggregator::site_links(&h.aggregator_config, &store, h.clock.now()).expect("links");
    assert!(
        links.iter().all(|l| l.reinit_pending.is_empty()),
        "{links:?}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_service_delivers_then_stops_on_request() {
    let h = Hierarchy::builder().primaries(1).start().await;
    let p01 = site("P01");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(h.agent(&p01).serve(async move {
        let _ = stopped.await;
    }));
    // Bounded wait for the service's first cycle to reach the aggregator, as the
    // agent's own spool records it.
    let watcher = h.agent(&p01);
    let mut delivered = false;
    for _ in 0..500 {
        let status = watcher.status().await.expect("status");
        if status.last_success_at.is_some() && status.backlog_runs == 0 {
            delivered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(delivered, "the service collected and delivered");
    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(10), service)
        .await
        .expect("stops promptly")
        .expect("joins")
        .expect("stops cleanly");
    assert!(h.merged_runs().iter().any(|run| run.site == "P01"));
    assert_eq!(
        watcher.status().await.expect("status").state,
        LinkState::Active
    );
    h.shutdown().await;
}
