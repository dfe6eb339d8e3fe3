//! A whole hierarchy end to end: every role a real gRPC server on loopback, every site's
//! agent collecting from its own seeded database.

mod support;

use hrs_agent::spool::Spool;
use hrs_core::{Level, SiteCode};
use hrs_intake::{IntakeStore as _, SqliteIntake};
use hrs_proto::v1 as pb;
use hrs_proto::v1::aggregator_client::AggregatorClient;
use prost::Message as _;
use support::{Hierarchy, rows};
use tonic::Code;

async fn client(h: &Hierarchy) -> AggregatorClient<tonic::transport::Channel> {
    AggregatorClient::connect(format!("http://{}", h.aggregator))
        .await
        .expect("connects")
}

/// Collects a run at `site` into its spool without sending it, and returns it.
async fn spooled_run(h: &Hierarchy, site: &SiteCode) -> pb::Run {
    let agent = h.agent(site);
    agent
        .collect(support::PERIOD.parse().expect("period"))
        .await
        .expect("collects");
    let spool = Spool::open(&h.agent_config(site).spool).expect("spool");
    spool
        .pending()
        .await
        .expect("pending")
        .pop()
        .expect("a run")
        .run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_period_reaches_the_intake_with_every_site() {
    let h = Hierarchy::start(3, Level::Enhanced, false).await;
    h.collect_everywhere().await;
    let state = h.wait_delivered().await;
    assert!(state.submission_id.is_some());

    let runs = h.merged_runs();
    let sites: Vec<&str> = runs.iter().map(|r| r.site.as_str()).collect();
    assert_eq!(sites, ["CAS", "P01", "P02", "P03"]);
    assert!(runs.iter().all(|r| rows(r) > 0));

    let intake = SqliteIntake::open(&h.intake_store).expect("intake store");
    let submissions = intake.submissions().await.expect("submissions");
    assert_eq!(submissions.len(), 1);
    let sent = intake
        .payload(&submissions[0].submission_id)
        .await
        .expect("reads")
        .expect("stored");
    let sent_rows: usize = sent
        .sites
        .iter()
        .flat_map(|s| &s.results)
        .map(|r| r.rows.len())
        .sum();
    assert_eq!(sent_rows, runs.iter().map(rows).sum::<usize>());
    for site in &sent.sites {
        assert!(
            !h.sites.iter().any(|code| code.as_str() == site.site),
            "{} left in clear",
            site.site
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_run_changes_nothing_and_a_newer_one_replaces_it() {
    let h = Hierarchy::start(1, Level::Enhanced, false).await;
    h.collect_everywhere().await;
    h.wait_delivered().await;
    let before = h.merged_runs();
    let intake_before = h.intake_payloads();

    let p01: SiteCode = "P01".parse().expect("site");
    let run = spooled_run(&h, &p01).await;
    let mut client = client(&h).await;
    let first = client
        .push_run(pb::PushRunRequest {
            run: Some(run.clone()),
        })
        .await
        .expect("first push")
        .into_inner();
    assert!(!first.duplicate);
    let again = client
        .push_run(pb::PushRunRequest {
            run: Some(run.clone()),
        })
        .await
        .expect("re-send")
        .into_inner();
    assert!(again.duplicate);

    let after = h.merged_runs();
    assert_eq!(after.len(), before.len(), "one current run per site");
    let current = after.iter().find(|r| r.site == "P01").expect("P01");
    assert_eq!(current.run_id, run.run_id, "the newer run is current");
    // Same data collected again: the merged content, and so what was sent, is unchanged.
    assert_eq!(
        before.iter().map(|r| r.digest.clone()).collect::<Vec<_>>(),
        after.iter().map(|r| r.digest.clone()).collect::<Vec<_>>()
    );
    assert_eq!(h.intake_payloads(), intake_before);

    // An older run arriving late is kept but does not replace the current one.
    let mut older = run.clone();
    older.run_id = uuid::Uuid::new_v4().to_string();
    older.sequence = 1;
    let late = client
        .push_run(pb::PushRunRequest { run: Some(older) })
        .await
        .expect("late push")
        .into_inner();
    assert!(late.superseded);
    let current = h
        .merged_runs()
        .into_iter()
        .find(|r| r.site == "P01")
        .expect("P01");
    assert_eq!(current.run_id, run.run_id);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_identifying_value_leaves_at_basic_or_enhanced() {
    for level in [Level::Basic, Level::Enhanced] {
        let h = Hierarchy::start(2, level, false).await;
        h.collect_everywhere().await;
        h.wait_delivered().await;
        let csv = h.dir.path().join("export.csv");
        hrs_connection::export_csv(&h.connection_point, &csv).expect("exports");
        let export = std::fs::read(&csv).expect("reads export");
        let mut outbound = vec![export];
        outbound.extend(h.intake_payloads());
        outbound.push(std::fs::read(&h.intake_store).expect("intake file"));
        let secrets = h.identifying_values();
        assert!(secrets.len() > 100, "the sites hold names and addresses");
        for bytes in &outbound {
            let text = String::from_utf8_lossy(bytes);
            for secret in secrets.iter().filter(|s| s.len() >= 5) {
                assert!(
                    !text.contains(secret.as_str()),
                    "{secret:?} left at {level}"
                );
            }
        }
        for payload in h.intake_payloads() {
            let sent = pb::MergedPeriod::decode(payload.as_slice()).expect("decodes");
            assert!(
                sent.sites.iter().all(|s| s.site.len() > 3),
                "site codes are hashed"
            );
        }
        h.stop().await;
    }

    // The same search finds identifying detail at Full, so it can fail.
    let h = Hierarchy::start(1, Level::Full, false).await;
    h.collect_everywhere().await;
    h.wait_delivered().await;
    let csv = h.dir.path().join("export.csv");
    hrs_connection::export_csv(&h.connection_point, &csv).expect("exports");
    let text = std::fs::read_to_string(&csv).expect("reads export");
    assert!(
        h.identifying_values()
            .iter()
            .any(|s| s.len() >= 5 && text.contains(s.as_str()))
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pushes_are_refused_and_change_nothing() {
    let h = Hierarchy::start(1, Level::Enhanced, false).await;
    h.collect_everywhere().await;
    h.wait_delivered().await;
    let runs_before = h.merged_runs();
    let run = spooled_run(&h, &"P01".parse().expect("site")).await;
    let mut client = client(&h).await;

    let mut tampered = run.clone();
    tampered.results[0].rows.pop();
    let mut foreign = run.clone();
    foreign.site = "P09".into();
    foreign.digest = hrs_core::digest::run_digest(&foreign);
    let mut other_hierarchy = run.clone();
    other_hierarchy.hierarchy_id = "00000000-0000-4000-8000-000000000001".into();
    other_hierarchy.digest = hrs_core::digest::run_digest(&other_hierarchy);
    let mut unknown_catalog = run.clone();
    unknown_catalog.catalog_version = "1999.1".into();
    for (bad, code) in [
        (tampered, Code::InvalidArgument),
        (foreign, Code::PermissionDenied),
        (other_hierarchy, Code::PermissionDenied),
        (unknown_catalog, Code::FailedPrecondition),
    ] {
        let status = client
            .push_run(pb::PushRunRequest { run: Some(bad) })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code, "{}", status.message());
    }
    let status = client
        .push_run(pb::PushRunRequest { run: None })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("run"));

    assert_eq!(h.merged_runs(), runs_before);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_delivers_a_bundle_that_reads_back() {
    let h = Hierarchy::start(2, Level::Enhanced, true).await;
    h.collect_everywhere().await;
    let state = h.wait_delivered().await;
    let path = state.bundle_path.expect("bundle written");
    let bundle = hrs_connection::read_bundle(&path).expect("bundle verifies");
    let bundled: usize = bundle
        .sites
        .iter()
        .flat_map(|s| &s.results)
        .map(|r| r.rows.len())
        .sum();
    assert_eq!(bundled, h.merged_runs().iter().map(rows).sum::<usize>());
    assert!(h.intake_payloads().is_empty(), "offline sends nothing");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_an_unknown_site_is_refused_at_once_and_keeps_its_run() {
    let h = Hierarchy::start(1, Level::Enhanced, false).await;
    let mut config = h.agent_config(&"P01".parse().expect("site"));
    config.site = "P09".parse().expect("site");
    let spool = config.spool.clone();
    let agent = hrs_agent::Agent::open(config).expect("opens");
    let error = agent
        .run_once(std::time::Duration::from_secs(600))
        .await
        .expect_err("refused");
    assert!(error.is_refusal(), "{error}");
    assert!(error.to_string().contains("P09"), "{error}");
    let kept = Spool::open(&spool)
        .expect("spool")
        .pending()
        .await
        .expect("reads");
    assert_eq!(kept.len(), 1, "a refused run stays spooled");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_run_does_not_hold_back_the_runs_behind_it() {
    let h = Hierarchy::start(1, Level::Enhanced, false).await;
    let config = h.agent_config(&"P01".parse().expect("site"));
    let agent = hrs_agent::Agent::open(config.clone()).expect("opens");
    // An older run the aggregator refuses (another hierarchy), then a good one.
    let spool = Spool::open(&config.spool).expect("spool");
    let mut bad = spooled_run(&h, &"P01".parse().expect("site")).await;
    spool.remove(&bad.run_id).await.expect("removes");
    bad.run_id = uuid::Uuid::new_v4().to_string();
    bad.sequence = 1;
    bad.hierarchy_id = "00000000-0000-4000-8000-000000000001".into();
    bad.digest = hrs_core::digest::run_digest(&bad);
    spool.put(&bad, "t".into()).await.expect("spools");
    agent
        .collect(support::PERIOD.parse().expect("period"))
        .await
        .expect("collects");

    let error = agent.deliver().await.expect_err("the bad run is refused");
    assert!(error.is_refusal(), "{error}");
    let left = spool.pending().await.expect("reads");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].run_id, bad.run_id, "only the refused run is left");
    assert_eq!(h.merged_runs().len(), 1, "the good run was merged");
    h.stop().await;
}
