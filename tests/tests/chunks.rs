//! Runs travel as resumable streams of chunks: a run larger than any one connection can
//! carry still arrives, each chunk is kept durably as it arrives, and every malformed
//! stream is refused without touching what is stored.

use std::sync::atomic::Ordering;

use hrs_agent::Agent;
use hrs_chaos::{Faults, Proxy};
use hrs_proto::v1 as pb;
use hrs_tests::{Hierarchy, site};
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use tonic::Code;

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn offer(h: &Hierarchy, run: &pb::Run, bytes: &[u8]) -> pb::RunOffer {
    pb::RunOffer {
        run_id: run.run_id.clone(),
        site: run.site.clone(),
        hierarchy_id: h.hierarchy_id.to_string(),
        size: bytes.len() as u64,
        sha256: sha256(bytes),
    }
}

/// Chunks of `bytes[from..to]`, `size` bytes each, the first carrying `offer`.
fn chunks(
    offer: &pb::RunOffer,
    bytes: &[u8],
    from: usize,
    to: usize,
    size: usize,
) -> Vec<pb::RunChunk> {
    bytes[from..to]
        .chunks(size)
        .enumerate()
        .map(|(i, data)| pb::RunChunk {
            offer: (i == 0).then(|| offer.clone()),
            link: None,
            offset: (from + i * size) as u64,
            data: data.to_vec(),
        })
        .collect()
}

async fn held(h: &Hierarchy, offer: &pb::RunOffer) -> pb::ResumeRunResponse {
    h.aggregator_client()
        .await
        .resume_run(pb::ResumeRunRequest {
            offer: Some(offer.clone()),
        })
        .await
        .expect("resume answers")
        .into_inner()
}

async fn send(
    h: &Hierarchy,
    chunks: Vec<pb::RunChunk>,
) -> Result<pb::PushRunResponse, tonic::Status> {
    h.aggregator_client()
        .await
        .push_run_chunks(tokio_stream::iter(chunks))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_larger_than_any_connection_carries_arrives_by_resuming() {
    let h = Hierarchy::builder().primaries(1).start().await;
    let p01 = site("P01");
    let size = h.spooled_run(&p01).await.encoded_len() as u64;
    // Every connection is cut before it has carried half the run: only resuming gets it
    // across.
    let faults = Faults {
        cut_chance: 1.0,
        cut_after_max_bytes: size / 2,
        max_delay: std::time::Duration::ZERO,
        max_lifetime: std::time::Duration::ZERO,
    };
    let proxy = Proxy::start(h.aggregator, faults, 7)
        .await
        .expect("proxy starts");
    let mut config = h.agent_config(&p01);
    config.upstream = format!("http://{}", proxy.addr());
    config.push_chunk_kib = 4;
    let agent = Agent::open(config, h.clock.shared()).expect("agent opens");

    let mut attempts = 0;
    while agent.status().await.expect("status").backlog_runs > 0 {
        attempts += 1;
        assert!(attempts <= 200, "the run never arrived");
        let _ = agent.deliver().await;
    }
    assert!(attempts > 1, "one connection carried the whole run");
    assert!(proxy.counters().cut.load(Ordering::Relaxed) > 0);
    let merged = h.merged_runs();
    assert_eq!(merged.len(), 1);
    assert_eq!(merged[0].site, "P01");
    assert_eq!(merged[0].encoded_len() as u64, size);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_short_keeps_what_arrived_and_resumes_there() {
    let h = Hierarchy::builder().primaries(1).start().await;
    let run = h.spooled_run(&site("P01")).await;
    let bytes = run.encode_to_vec();
    let offer = offer(&h, &run, &bytes);
    let half = bytes.len() / 2;

    let status = send(&h, chunks(&offer, &bytes, 0, half, 1000))
        .await
        .expect_err("half a run is not a run");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(
        status.message().contains("resume from"),
        "{}",
        status.message()
    );
    assert_eq!(held(&h, &offer).await.held_bytes, half as u64);
    assert!(h.merged_runs().is_empty());

    // Starting over from zero is refused: the aggregator already holds the first half.
    let status = send(&h, chunks(&offer, &bytes, 0, bytes.len(), 1000))
        .await
        .expect_err("out of order");
    assert_eq!(status.code(), Code::Aborted);
    assert!(
        status.message().contains("chunk.offset"),
        "{}",
        status.message()
    );

    let answer = send(&h, chunks(&offer, &bytes, half, bytes.len(), 1000))
        .await
        .expect("the rest completes the run");
    assert!(!answer.duplicate);
    assert_eq!(h.merged_bytes(), vec![bytes.clone()]);

    // Once committed, a resume says so, and a resend is a duplicate.
    let resumed = held(&h, &offer).await;
    assert!(resumed.committed.is_some_and(|c| c.duplicate));
    let again = send(&h, chunks(&offer, &bytes, 0, bytes.len(), 4096))
        .await
        .expect("a resend is answered");
    assert!(again.duplicate);
    assert_eq!(h.merged_bytes(), vec![bytes]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_streams_are_refused_and_change_nothing() {
    let h = Hierarchy::builder().primaries(1).start().await;
    let run = h.spooled_run(&site("P01")).await;
    let bytes = run.encode_to_vec();
    let good = offer(&h, &run, &bytes);
    let all = |offer: &pb::RunOffer| chunks(offer, &bytes, 0, bytes.len(), 4096);

    let refuse = |chunks: Vec<pb::RunChunk>, code: Code, says: &'static str| {
        let h = &h;
        async move {
            let status = send(h, chunks).await.expect_err(says);
            assert_eq!(status.code(), code, "{says}: {status:?}");
            assert!(
                status.message().contains(says),
                "{says}: {}",
                status.message()
            );
            assert!(h.merged_runs().is_empty(), "{says}: nothing is merged");
        }
    };

    refuse(Vec::new(), Code::InvalidArgument, "chunk").await;
    let mut no_offer = all(&good);
    no_offer[0].offer = None;
    refuse(no_offer, Code::InvalidArgument, "offer").await;
    let mut second_offer = all(&good);
    second_offer[1].offer = Some(good.clone());
    refuse(second_offer, Code::InvalidArgument, "chunk.offer").await;
    refuse(
        all(&pb::RunOffer {
            site: "P09".into(),
            ..good.clone()
        }),
        Code::PermissionDenied,
        "P09",
    )
    .await;
    refuse(
        all(&pb::RunOffer {
            size: 2 << 30,
            ..good.clone()
        }),
        Code::InvalidArgument,
        "offer.size",
    )
    .await;
    refuse(
        all(&pb::RunOffer {
            sha256: "zz".into(),
            ..good.clone()
        }),
        Code::InvalidArgument,
        "offer.sha256",
    )
    .await;
    let huge = vec![pb::RunChunk {
        offer: Some(pb::RunOffer {
            size: 8 << 20,
            ..good.clone()
        }),
        link: None,
        offset: 0,
        data: vec![0; 5 << 20],
    }];
    refuse(huge, Code::InvalidArgument, "chunk.data").await;

    // Bytes that do not hash to the offer are dropped, not kept for a resume.
    let mut tampered = bytes.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    refuse(
        chunks(&good, &tampered, 0, tampered.len(), 4096),
        Code::InvalidArgument,
        "hash to",
    )
    .await;
    assert_eq!(held(&h, &good).await.held_bytes, 0);

    // An offer whose bytes carry another run is refused too.
    let other = pb::Run {
        run_id: uuid::Uuid::new_v4().to_string(),
        ..run.clone()
    };
    let other_bytes = other.encode_to_vec();
    let mismatched = pb::RunOffer {
        size: other_bytes.len() as u64,
        sha256: sha256(&other_bytes),
        ..good.clone()
    };
    refuse(
        chunks(&mismatched, &other_bytes, 0, other_bytes.len(), 4096),
        Code::InvalidArgument,
        "the offer named",
    )
    .await;

    // After all that, the good run still goes in whole.
    let answer = send(&h, all(&good)).await.expect("the good run is taken");
    assert!(!answer.duplicate);
    assert_eq!(h.merged_bytes(), vec![bytes]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_sends_at_most_its_runs_in_flight_at_once() {
    let h = Hierarchy::builder().primaries(1).start().await;
    let run = h.spooled_run(&site("P01")).await;
    let limit = h.aggregator_config.max_runs_in_flight as usize;
    let runs: Vec<(pb::RunOffer, Vec<u8>)> = (0..=limit)
        .map(|_| {
            let copy = pb::Run {
                run_id: uuid::Uuid::new_v4().to_string(),
                ..run.clone()
            };
            let bytes = copy.encode_to_vec();
            (offer(&h, &copy, &bytes), bytes)
        })
        .collect();

    // As many uploads as allowed start and stay open, each with one chunk sent.
    let mut open = Vec::new();
    for (offer, bytes) in &runs[..limit] {
        let (sender, queue) = tokio::sync::mpsc::channel(4);
        sender
            .send(chunks(offer, bytes, 0, 1000, 1000).remove(0))
            .await
            .expect("queued");
        let mut client = h.aggregator_client().await;
        let call = tokio::spawn(async move {
            client
                .push_run_chunks(tokio_stream::wrappers::ReceiverStream::new(queue))
                .await
        });
        let mut waited = 0;
        while held(&h, offer).await.held_bytes < 1000 {
            waited += 1;
            assert!(waited < 500, "the first chunk never arrived");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        open.push((sender, call));
    }

    // One more is refused while they are open, and nothing of it is kept.
    let (extra, extra_bytes) = &runs[limit];
    let status = send(&h, chunks(extra, extra_bytes, 0, extra_bytes.len(), 4096))
        .await
        .expect_err("beyond the limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("max_runs_in_flight"),
        "{}",
        status.message()
    );
    assert_eq!(held(&h, extra).await.held_bytes, 0);

    // When one upload breaks off, the next is taken.
    let (sender, call) = open.pop().expect("an open upload");
    drop(sender);
    let ended = call.await.expect("joins").expect_err("it broke off");
    assert_eq!(ended.code(), Code::Aborted);
    send(&h, chunks(extra, extra_bytes, 0, extra_bytes.len(), 4096))
        .await
        .expect("now within the limit");
    drop(open);
    h.shutdown().await;
}
