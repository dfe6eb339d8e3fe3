//! Every kind of bad input, sent to a running aggregator and intake: each is refused with
//! its precise status naming what is wrong, is counted in the role's metrics file, and
//! leaves both stores row for row as they were. A replayed run or submission is answered
//! as a duplicate and changes nothing either.

use hrs_proto::v1 as pb;
use hrs_tests::{Hierarchy, PERIOD, StoresDump, site};
use prost::Message as _;
use prost::bytes::{Buf as _, BufMut as _};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

const PUSH_RUN: &str = "/hrs.v1.Aggregator/PushRun";
const PUSH_RUN_CHUNKS: &str = "/hrs.v1.Aggregator/PushRunChunks";
const SUBMIT: &str = "/hrs.v1.Intake/Submit";

/// Another hierarchy's ID.
const OTHER_HIERARCHY: &str = "00000000-0000-4000-8000-000000000001";

/// Sends bytes as they are, so a message can be truncated or carry invalid UTF-8.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

/// Calls `method` at `url` with `body` as the request message, bytes as given.
async fn call_raw(
    url: &str,
    method: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let channel = Channel::from_shared(url.to_owned())
        .expect("url")
        .connect()
        .await
        .expect("connects");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    grpc.unary(
        tonic::Request::new(body),
        PathAndQuery::from_static(method),
        Raw,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// Calls a client-streaming `method` with `messages`, each as given.
async fn stream_raw(
    url: &str,
    method: &'static str,
    messages: Vec<Vec<u8>>,
) -> Result<Vec<u8>, tonic::Status> {
    let channel = Channel::from_shared(url.to_owned())
        .expect("url")
        .connect()
        .await
        .expect("connects");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    grpc.client_streaming(
        tonic::Request::new(tokio_stream::iter(messages)),
        PathAndQuery::from_static(method),
        Raw,
    )
    .await
    .map(tonic::Response::into_inner)
}

fn push(run: &pb::Run) -> Vec<u8> {
    pb::PushRunRequest {
        run: Some(run.clone()),
        link: None,
    }
    .encode_to_vec()
}

fn submit(period: &pb::MergedPeriod) -> Vec<u8> {
    pb::SubmitRequest {
        period: Some(period.clone()),
        client_version: "test".into(),
    }
    .encode_to_vec()
}

/// Replaces the first occurrence of `marker` in `bytes` with invalid UTF-8 of its length.
fn spoil_utf8(mut bytes: Vec<u8>, marker: &[u8]) -> Vec<u8> {
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("the marker is in the message");
    bytes[at] = 0xff;
    bytes[at + 1] = 0xfe;
    bytes
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn redigest(run: &mut pb::Run) {
    run.digest = hrs_core::digest::run_digest(run);
}

fn remerge(period: &mut pb::MergedPeriod) {
    period.digest = hrs_core::digest::merged_digest(period);
}

/// A run with one row short of its declared columns, its digest recomputed.
fn short_row(mut run: pb::Run) -> pb::Run {
    let set = run
        .results
        .iter_mut()
        .find(|set| !set.rows.is_empty())
        .expect("a set with rows");
    set.rows[0].values.pop();
    redigest(&mut run);
    run
}

/// The tables whose rows differ between two dumps, as `role.table`.
fn changed(before: &StoresDump, after: &StoresDump) -> Vec<String> {
    let mut changed = Vec::new();
    for (role, before, after) in [
        ("aggregator", &before.aggregator, &after.aggregator),
        ("intake", &before.intake, &after.intake),
    ] {
        let names: std::collections::BTreeSet<&String> = before
            .iter()
            .chain(after.iter())
            .map(|(name, _)| name)
            .collect();
        for name in names {
            let rows = |dump: &Vec<(String, Vec<Vec<rusqlite::types::Value>>)>| {
                dump.iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, rows)| rows.clone())
            };
            if rows(before) != rows(after) {
                changed.push(format!("{role}.{name}"));
            }
        }
    }
    changed
}

/// One bad input and what it must be answered with.
struct Case {
    what: &'static str,
    method: &'static str,
    messages: Vec<Vec<u8>>,
    code: Code,
    /// Text the status message must contain: the field or the reason.
    names: &'static str,
}

impl Case {
    fn unary(
        what: &'static str,
        method: &'static str,
        message: Vec<u8>,
        code: Code,
        names: &'static str,
    ) -> Self {
        Self {
            what,
            method,
            messages: vec![message],
            code,
            names,
        }
    }
}

fn aggregator_cases(run: &pb::Run) -> Vec<Case> {
    let encoded = push(run);
    let mut cases = vec![
        Case::unary(
            "a truncated message",
            PUSH_RUN,
            encoded[..encoded.len() / 2].to_vec(),
            Code::InvalidArgument,
            "malformed message",
        ),
        Case::unary(
            "bytes that are no message",
            PUSH_RUN,
            vec![0xff; 64],
            Code::InvalidArgument,
            "malformed message",
        ),
        Case::unary(
            "a message without a run",
            PUSH_RUN,
            Vec::new(),
            Code::InvalidArgument,
            "run",
        ),
    ];
    let mut marked = run.clone();
    marked.started_at = "MARKMARK".into();
    cases.push(Case::unary(
        "invalid UTF-8 in a string",
        PUSH_RUN,
        spoil_utf8(push(&marked), b"MARKMARK"),
        Code::InvalidArgument,
        "UTF-8",
    ));
    let spoiled = |spoil: &dyn Fn(&mut pb::Run)| {
        let mut run = run.clone();
        spoil(&mut run);
        redigest(&mut run);
        push(&run)
    };
    cases.extend([
        Case::unary(
            "an unknown site",
            PUSH_RUN,
            spoiled(&|run| run.site = "P99".into()),
            Code::PermissionDenied,
            "P99",
        ),
        Case::unary(
            "another hierarchy",
            PUSH_RUN,
            spoiled(&|run| run.hierarchy_id = OTHER_HIERARCHY.into()),
            Code::PermissionDenied,
            "hierarchy",
        ),
        Case::unary(
            "an unknown catalog version",
            PUSH_RUN,
            spoiled(&|run| run.catalog_version = "1999.1.1".into()),
            Code::FailedPrecondition,
            "1999.1.1",
        ),
        Case::unary(
            "an oversize field",
            PUSH_RUN,
            spoiled(&|run| run.finished_at = "9".repeat(100_000)),
            Code::InvalidArgument,
            "run.finished_at",
        ),
        Case::unary(
            "a row that does not match its declared columns",
            PUSH_RUN,
            push(&short_row(run.clone())),
            Code::InvalidArgument,
            "rows[0]",
        ),
        Case::unary(
            "a digest that does not match",
            PUSH_RUN,
            push(&pb::Run {
                digest: "0".repeat(64),
                ..run.clone()
            }),
            Code::InvalidArgument,
            "digest",
        ),
    ]);

    // Chunked: an offer for a fresh run id, then chunks out of order or oversize.
    let mut fresh = run.clone();
    fresh.run_id = uuid::Uuid::new_v4().to_string();
    redigest(&mut fresh);
    let bytes = fresh.encode_to_vec();
    let offer = pb::RunOffer {
        run_id: fresh.run_id.clone(),
        site: fresh.site.clone(),
        hierarchy_id: fresh.hierarchy_id.clone(),
        size: bytes.len() as u64,
        sha256: sha256_hex(&bytes),
    };
    let chunk = |offset: u64, data: Vec<u8>, with_offer: bool| {
        pb::RunChunk {
            offer: with_offer.then(|| offer.clone()),
            offset,
            data,
            link: None,
        }
        .encode_to_vec()
    };
    cases.push(Case {
        what: "a chunk out of order",
        method: PUSH_RUN_CHUNKS,
        messages: vec![chunk(5, bytes[5..].to_vec(), true)],
        code: Code::Aborted,
        names: "offset",
    });
    cases.push(Case {
        what: "an oversize chunk",
        method: PUSH_RUN_CHUNKS,
        messages: vec![chunk(
            0,
            vec![0; hrs_rpc::chunks::MAX_CHUNK_BYTES + 1],
            true,
        )],
        code: Code::InvalidArgument,
        names: "chunk.data",
    });
    cases.push(Case {
        what: "a truncated chunk",
        method: PUSH_RUN_CHUNKS,
        messages: vec![{
            let whole = chunk(0, bytes.clone(), true);
            whole[..whole.len() - 3].to_vec()
        }],
        code: Code::InvalidArgument,
        names: "malformed message",
    });
    cases
}

fn intake_cases(period: &pb::MergedPeriod) -> Vec<Case> {
    let encoded = submit(period);
    let spoiled = |spoil: &dyn Fn(&mut pb::MergedPeriod)| {
        let mut period = period.clone();
        spoil(&mut period);
        remerge(&mut period);
        submit(&period)
    };
    let mut marked = period.clone();
    marked.mode = "MARKMARK".into();
    vec![
        Case::unary(
            "a truncated message",
            SUBMIT,
            encoded[..encoded.len() / 2].to_vec(),
            Code::InvalidArgument,
            "malformed message",
        ),
        Case::unary(
            "a message without a period",
            SUBMIT,
            Vec::new(),
            Code::InvalidArgument,
            "period",
        ),
        Case::unary(
            "invalid UTF-8 in a string",
            SUBMIT,
            spoil_utf8(submit(&marked), b"MARKMARK"),
            Code::InvalidArgument,
            "UTF-8",
        ),
        Case::unary(
            "an unknown catalog version",
            SUBMIT,
            spoiled(&|p| p.catalog_version = "1999.1.1".into()),
            Code::FailedPrecondition,
            "1999.1.1",
        ),
        Case::unary(
            "an oversize field",
            SUBMIT,
            spoiled(&|p| p.hierarchy_hash = "h".repeat(100_000)),
            Code::InvalidArgument,
            "period.hierarchy_hash",
        ),
        Case::unary(
            "a row that does not match its declared columns",
            SUBMIT,
            spoiled(&|p| {
                let set = p
                    .sites
                    .iter_mut()
                    .flat_map(|s| s.results.iter_mut())
                    .find(|set| !set.rows.is_empty())
                    .expect("a set with rows");
                set.rows[0].values.pop();
            }),
            Code::InvalidArgument,
            "rows[0]",
        ),
        Case::unary(
            "a digest that does not match",
            SUBMIT,
            submit(&pb::MergedPeriod {
                digest: "0".repeat(64),
                ..period.clone()
            }),
            Code::InvalidArgument,
            "digest",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_refused_precisely_counted_and_changes_nothing() {
    let h = Hierarchy::builder().primaries(1).start().await;
    h.collect_everywhere().await;
    h.wait_delivered(PERIOD).await;
    let run = h.spooled_run(&site("P01")).await;
    let submissions = h.intake_submissions().await;
    let period = h.intake_payload(&submissions[0].submission_id).await;
    let before = h.stores();
    let aggregator = format!("http://{}", h.aggregator);
    let intake = h
        .connection_point
        .intake
        .clone()
        .expect("the connection point is online");

    let mut expected: std::collections::BTreeMap<(String, &str, &str), u64> = Default::default();
    for (role, url, cases) in [
        ("aggregator", &aggregator, aggregator_cases(&run)),
        ("intake", &intake, intake_cases(&period)),
    ] {
        for case in cases {
            let outcome = if case.method == PUSH_RUN_CHUNKS {
                stream_raw(url, case.method, case.messages).await
            } else {
                let message = case.messages.into_iter().next().expect("a message");
                call_raw(url, case.method, message).await
            };
            let status = outcome.expect_err(case.what);
            assert_eq!(
                status.code(),
                case.code,
                "{role}, {}: {}",
                case.what,
                status.message()
            );
            assert!(
                status.message().contains(case.names),
                "{role}, {}: {:?} does not name {:?}",
                case.what,
                status.message(),
                case.names
            );
            assert_eq!(
                h.stores(),
                before,
                "{role}, {}: the stores changed",
                case.what
            );
            *expected
                .entry((format!("{:?}", case.code), role, case.method))
                .or_default() += 1;
        }
    }

    // A replay of a delivered run is answered as a duplicate and changes nothing.
    let delivered = h
        .merged_runs()
        .into_iter()
        .find(|run| run.site == "P01")
        .expect("P01's run was delivered");
    let replayed = pb::PushRunResponse::decode(
        call_raw(&aggregator, PUSH_RUN, push(&delivered))
            .await
            .expect("a replayed run is answered")
            .as_slice(),
    )
    .expect("decodes");
    assert!(replayed.duplicate, "a replayed run is a duplicate");
    let resubmitted = pb::SubmitResponse::decode(
        call_raw(&intake, SUBMIT, submit(&period))
            .await
            .expect("a replayed submission is answered")
            .as_slice(),
    )
    .expect("decodes");
    assert!(
        resubmitted.duplicate,
        "a replayed submission is a duplicate"
    );
    // The replay came from the site itself, so it counts as the site's contact; no data
    // changed anywhere.
    assert_eq!(
        changed(&before, &h.stores()),
        vec!["aggregator.site_links".to_owned()],
        "replays changed the stores"
    );

    // Each refusal was counted once, under its method and code.
    for ((code, role, method), count) in expected {
        let file = h.dir.path().join(format!("{role}.prom"));
        let line =
            format!("hrs_{role}_refusals_total{{method=\"{method}\",code=\"{code}\"}} {count}");
        Hierarchy::wait_metric(&file, &line).await;
    }
    h.shutdown().await;
}
