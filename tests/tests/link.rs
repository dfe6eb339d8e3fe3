//! An agent's link to its upstream goes active → degraded → failed as deliveries keep
//! failing, and back to active with the first success; its backlog is kept meanwhile.

use hrs_agent::Agent;
use hrs_core::link::LinkState;
use hrs_tests::{Hierarchy, period, site};

/// An address on loopback where nothing listens: the upstream is away.
async fn closed_address() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("address");
    drop(listener);
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_degrades_fails_and_recovers_with_the_upstream() {
    let h = Hierarchy::builder().primaries(1).start().await;
    let p01 = site("P01");
    let mut config = h.agent_config(&p01);
    config.link_degraded_after = 2;
    config.link_failed_after = 4;
    let reachable = config.upstream.clone();
    config.upstream = closed_address().await;

    let away = Agent::open(config.clone()).expect("agent opens");
    away.collect(period()).await.expect("collects");
    let fresh = away.status().await.expect("status");
    assert_eq!(fresh.state, LinkState::Active);
    assert_eq!(fresh.backlog_runs, 1);
    assert!(fresh.backlog_bytes > 0);

    let mut seen = Vec::new();
    for _ in 0..4 {
        assert!(away.deliver().await.is_err(), "the upstream is away");
        let status = away.status().await.expect("status");
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

    // The upstream is back: the same spool, now reaching it.
    config.upstream = reachable;
    let back = Agent::open(config).expect("agent opens");
    assert_eq!(
        back.status().await.expect("status").state,
        LinkState::Failed
    );
    assert_eq!(back.deliver().await.expect("delivers"), 1);
    let status = back.status().await.expect("status");
    assert_eq!(status.state, LinkState::Active);
    assert_eq!(status.consecutive_failures, 0);
    assert_eq!(status.backlog_runs, 0);
    assert!(status.last_success_at.is_some() && status.last_error.is_none());
    h.shutdown().await;
}
