//! The aggregator refuses runs it must not merge — tampered, from a site it does not
//! serve, of another hierarchy — with the right gRPC code, and its merge store stays
//! byte for byte as it was. A refused run stays in the agent's spool without holding back
//! the runs behind it.

use std::time::Duration;

use hrs_proto::v1 as pb;
use hrs_tests::{Hierarchy, PERIOD, site};
use tonic::Code;

/// Another hierarchy's ID.
const OTHER_HIERARCHY: &str = "00000000-0000-4000-8000-000000000001";

/// Pushes `run` as an agent does (in chunks, after asking what is held) and returns the
/// status it was refused with; panics if it was accepted.
async fn refusal(h: &Hierarchy, run: pb::Run) -> tonic::Status {
    h.push(&run)
        .await
        .expect_err("the aggregator refuses the run")
}

/// Delivers a hierarchy of one primary, then pushes a fresh run of P01 changed by `spoil`
/// and checks it is refused with `code` and leaves the merge store byte for byte as it was.
async fn assert_refused_unchanged(spoil: impl FnOnce(&mut pb::Run), code: Code) {
    let h = Hierarchy::builder().primaries(1).start().await;
    h.collect_everywhere().await;
    h.wait_delivered(PERIOD).await;
    let mut run = h.spooled_run(&site("P01")).await;
    let before = h.merged_bytes();
    spoil(&mut run);
    let status = refusal(&h, run).await;
    assert_eq!(status.code(), code, "{}", status.message());
    assert_eq!(h.merged_bytes(), before, "the merge store changed");
    h.shutdown().await;
}

/// Recomputes a changed run's digest, so only the change itself can be refused.
fn redigest(run: &mut pb::Run) {
    run.digest = hrs_core::digest::run_digest(run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_run_is_invalid_and_changes_nothing() {
    assert_refused_unchanged(
        |run| {
            let result = run
                .results
                .iter_mut()
                .find(|r| !r.rows.is_empty())
                .expect("a result with rows");
            result.rows.pop();
        },
        Code::InvalidArgument,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_an_unknown_site_is_denied_and_changes_nothing() {
    assert_refused_unchanged(
        |run| {
            run.site = "P09".into();
            redigest(run);
        },
        Code::PermissionDenied,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_another_hierarchy_is_denied_and_changes_nothing() {
    assert_refused_unchanged(
        |run| {
            run.hierarchy_id = OTHER_HIERARCHY.into();
            redigest(run);
        },
        Code::PermissionDenied,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_an_unknown_catalog_is_refused_and_changes_nothing() {
    assert_refused_unchanged(
        |run| {
            run.catalog_version = "1999.1".into();
            redigest(run);
        },
        Code::FailedPrecondition,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_hashed_with_another_key_is_refused_and_changes_nothing() {
    assert_refused_unchanged(
        |run| {
            run.hash_key_id = "0123456789abcdef".into();
            redigest(run);
        },
        Code::FailedPrecondition,
    )
    .await;
}

/// Each way a push can carry no run — a stream without a chunk, a first chunk without an
/// offer, an offer of no bytes — is invalid, names what is missing, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_without_a_run_is_invalid() {
    let h = Hierarchy::builder().primaries(1).start().await;
    h.collect_everywhere().await;
    let before = h.merged_bytes();
    let no_bytes = pb::RunOffer {
        run_id: uuid::Uuid::new_v4().to_string(),
        site: "P01".into(),
        hierarchy_id: h.hierarchy_id.to_string(),
        size: 0,
        sha256: hrs_core::bytes::sha256_of(&Vec::new(), 1).expect("hashes nothing"),
    };
    let cases = [
        ("a stream without a chunk", Vec::new(), "field chunk"),
        (
            "a first chunk without an offer",
            vec![pb::RunChunk::default()],
            "field offer: missing",
        ),
        (
            "an offer of no bytes",
            vec![pb::RunChunk {
                offer: Some(no_bytes),
                ..Default::default()
            }],
            "offer.size",
        ),
    ];
    let mut client = h.aggregator_client().await;
    for (what, chunks, names) in cases {
        let status = client
            .push_run_chunks(tokio_stream::iter(chunks))
            .await
            .expect_err(what);
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{what}: {}",
            status.message()
        );
        assert!(
            status.message().contains(names),
            "{what}: {:?} does not name {names:?}",
            status.message()
        );
    }
    assert_eq!(h.merged_bytes(), before, "the merge store changed");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_an_unknown_site_is_refused_at_once_and_keeps_its_run() {
    let h = Hierarchy::builder().primaries(1).start().await;
    let mut config = h.agent_config(&site("P01"));
    config.site = site("P09");
    let spool = config.spool.clone();
    let agent = hrs_agent::Agent::open(config, h.clock.shared()).expect("opens");
    let error = agent
        .run_once(Duration::from_secs(600))
        .await
        .expect_err("refused");
    assert!(error.is_refusal(), "{error}");
    assert!(error.to_string().contains("P09"), "{error}");
    let kept = hrs_agent::spool::Spool::open(&spool)
        .expect("spool")
        .pending()
        .await
        .expect("reads");
    assert_eq!(kept.len(), 1, "a refused run stays spooled");
    assert!(h.merged_runs().is_empty());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_run_does_not_hold_back_the_runs_behind_it() {
    let h = Hierarchy::builder().primaries(1).start().await;
    let p01 = site("P01");
    let agent = h.agent(&p01);
    let spool = h.spool(&p01);
    // An older run the aggregator refuses (another hierarchy), then a good one.
    let mut bad = h.spooled_run(&p01).await;
    spool.remove(&bad.run_id).await.expect("removes");
    bad.run_id = uuid::Uuid::new_v4().to_string();
    bad.sequence = 1;
    bad.hierarchy_id = OTHER_HIERARCHY.into();
    bad.digest = hrs_core::digest::run_digest(&bad);
    spool
        .put(&bad, "2026-11-30T00:00:00Z".into())
        .await
        .expect("spools");
    agent.collect(hrs_tests::period()).await.expect("collects");

    let error = agent.deliver().await.expect_err("the bad run is refused");
    assert!(error.is_refusal(), "{error}");
    let left = spool.pending().await.expect("reads");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].run_id, bad.run_id, "only the refused run is left");
    let merged = h.merged_runs();
    assert_eq!(merged.len(), 1, "the good run was merged");
    assert_ne!(merged[0].run_id, bad.run_id);
    h.shutdown().await;
}
