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

const PUSH_RUN_CHUNKS: &str = "/hrs.v1.Aggregator/PushRunChunks";
const SUBMIT_CHUNKS: &str = "/hrs.v1.Intake/SubmitChunks";

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

/// Bytes of a run's encoding each chunk carries: several chunks for a run of the test
/// hierarchy, as an agent sends it.
const CHUNK_BYTES: usize = 64 << 10;

/// The offer of a run's encoding `bytes`, naming the site and hierarchy the run names.
fn offer(run: &pb::Run, bytes: &[u8]) -> pb::RunOffer {
    pb::RunOffer {
        run_id: run.run_id.clone(),
        site: run.site.clone(),
        hierarchy_id: run.hierarchy_id.clone(),
        size: bytes.len() as u64,
        sha256: sha256_hex(bytes),
    }
}

/// The chunk stream that sends `bytes` under `offer`, each chunk encoded.
fn stream(offer: &pb::RunOffer, bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .chunks(CHUNK_BYTES)
        .enumerate()
        .map(|(i, data)| {
            pb::RunChunk {
                offer: (i == 0).then(|| offer.clone()),
                link: None,
                offset: (i * CHUNK_BYTES) as u64,
                data: data.to_vec(),
            }
            .encode_to_vec()
        })
        .collect()
}

/// The chunk stream that pushes `run`, offered as what it says it is.
fn push(run: &pb::Run) -> Vec<Vec<u8>> {
    let bytes = run.encode_to_vec();
    stream(&offer(run, &bytes), &bytes)
}

/// The offer of a period's encoding `bytes`, naming the hierarchy, period and digest
/// `period` carries.
fn period_offer(period: &pb::MergedPeriod, bytes: &[u8]) -> pb::PeriodOffer {
    pb::PeriodOffer {
        hierarchy_hash: period.hierarchy_hash.clone(),
        period: period.period.clone(),
        digest: period.digest.clone(),
        size: bytes.len() as u64,
        sha256: sha256_hex(bytes),
        client_version: "test".into(),
    }
}

/// The chunk stream that submits a period's encoding `bytes` under `offer`, each chunk
/// encoded.
fn period_stream(offer: &pb::PeriodOffer, bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .chunks(CHUNK_BYTES)
        .enumerate()
        .map(|(i, data)| {
            pb::PeriodChunk {
                offer: (i == 0).then(|| offer.clone()),
                offset: (i * CHUNK_BYTES) as u64,
                data: data.to_vec(),
            }
            .encode_to_vec()
        })
        .collect()
}

/// The chunk stream that submits `period`, offered as what it says it is.
fn submit(period: &pb::MergedPeriod) -> Vec<Vec<u8>> {
    let bytes = period.encode_to_vec();
    period_stream(&period_offer(period, &bytes), &bytes)
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
    /// A push of `messages`, the chunks of one stream.
    fn push(what: &'static str, messages: Vec<Vec<u8>>, code: Code, names: &'static str) -> Self {
        Self {
            what,
            method: PUSH_RUN_CHUNKS,
            messages,
            code,
            names,
        }
    }

    /// A submission of `messages`, the chunks of one stream.
    fn submit(what: &'static str, messages: Vec<Vec<u8>>, code: Code, names: &'static str) -> Self {
        Self {
            what,
            method: SUBMIT_CHUNKS,
            messages,
            code,
            names,
        }
    }
}

fn aggregator_cases(run: &pb::Run) -> Vec<Case> {
    // Every run pushed below is a new one, as an agent's next run would be: a run id the
    // aggregator already committed would be answered from what it committed.
    let fresh = |spoil: &dyn Fn(&mut pb::Run)| {
        let mut run = run.clone();
        run.run_id = uuid::Uuid::new_v4().to_string();
        spoil(&mut run);
        run
    };
    let spoiled = |spoil: &dyn Fn(&mut pb::Run)| {
        let mut run = fresh(spoil);
        redigest(&mut run);
        push(&run)
    };
    let whole = push(&fresh(&|_| ()));
    let first = whole.first().expect("a run has a first chunk");
    let mut cases = vec![
        Case::push(
            "a truncated message",
            vec![first[..first.len() / 2].to_vec()],
            Code::InvalidArgument,
            "malformed message",
        ),
        Case::push(
            "bytes that are no message",
            vec![vec![0xff; 64]],
            Code::InvalidArgument,
            "malformed message",
        ),
        Case::push(
            "a stream without a chunk",
            Vec::new(),
            Code::InvalidArgument,
            "chunk",
        ),
        Case::push(
            "a first chunk without an offer",
            vec![Vec::new()],
            Code::InvalidArgument,
            "offer",
        ),
    ];
    let truncated = {
        let run = fresh(&|_| ());
        let bytes = run.encode_to_vec();
        // Cut inside the last field, so its length runs past the end wherever it lies.
        let cut = &bytes[..bytes.len() - 1];
        stream(&offer(&run, cut), cut)
    };
    cases.push(Case::push(
        "a truncated run, offered as it is",
        truncated,
        Code::InvalidArgument,
        "truncated",
    ));
    let marked = fresh(&|run| run.started_at = "MARKMARK".into());
    let spoilt_run = spoil_utf8(marked.encode_to_vec(), b"MARKMARK");
    cases.push(Case::push(
        "invalid UTF-8 in a string of the run",
        stream(&offer(&marked, &spoilt_run), &spoilt_run),
        Code::InvalidArgument,
        "UTF-8",
    ));
    let mut marked_offer = push(&fresh(&|run| run.site = "MARKMARK".into()));
    marked_offer[0] = spoil_utf8(marked_offer[0].clone(), b"MARKMARK");
    cases.push(Case::push(
        "invalid UTF-8 in a string of the offer",
        marked_offer,
        Code::InvalidArgument,
        "UTF-8",
    ));
    let other_run_in_our_offer = {
        let mut run = fresh(&|run| run.hierarchy_id = OTHER_HIERARCHY.into());
        redigest(&mut run);
        let bytes = run.encode_to_vec();
        let offer = pb::RunOffer {
            hierarchy_id: fresh(&|_| ()).hierarchy_id,
            ..offer(&run, &bytes)
        };
        stream(&offer, &bytes)
    };
    cases.extend([
        Case::push(
            "an unknown site",
            spoiled(&|run| run.site = "P99".into()),
            Code::PermissionDenied,
            "P99",
        ),
        Case::push(
            "another hierarchy",
            spoiled(&|run| run.hierarchy_id = OTHER_HIERARCHY.into()),
            Code::PermissionDenied,
            "hierarchy",
        ),
        Case::push(
            "a run of another hierarchy, offered as this one's",
            other_run_in_our_offer,
            Code::PermissionDenied,
            "hierarchy",
        ),
        Case::push(
            "an unknown catalog version",
            spoiled(&|run| run.catalog_version = "1999.1.1".into()),
            Code::FailedPrecondition,
            "1999.1.1",
        ),
        Case::push(
            "an oversize field",
            spoiled(&|run| run.finished_at = "9".repeat(100_000)),
            Code::InvalidArgument,
            "run.finished_at",
        ),
        Case::push(
            "a row that does not match its declared columns",
            push(&short_row(fresh(&|_| ()))),
            Code::InvalidArgument,
            "rows[0]",
        ),
        Case::push(
            "a digest that does not match",
            push(&fresh(&|run| run.digest = "0".repeat(64))),
            Code::InvalidArgument,
            "digest",
        ),
    ]);

    // Chunks out of order, oversize, or cut short.
    let run = fresh(&|_| ());
    let bytes = run.encode_to_vec();
    let offered = offer(&run, &bytes);
    let chunk = |offset: u64, data: Vec<u8>| {
        pb::RunChunk {
            offer: Some(offered.clone()),
            offset,
            data,
            link: None,
        }
        .encode_to_vec()
    };
    cases.extend([
        Case::push(
            "a chunk out of order",
            vec![chunk(5, bytes[5..].to_vec())],
            Code::Aborted,
            "offset",
        ),
        Case::push(
            "an oversize chunk",
            vec![chunk(0, vec![0; hrs_rpc::chunks::MAX_CHUNK_BYTES + 1])],
            Code::InvalidArgument,
            "chunk.data",
        ),
        Case::push(
            "a truncated chunk",
            vec![{
                let whole = chunk(0, bytes.clone());
                whole[..whole.len() - 3].to_vec()
            }],
            Code::InvalidArgument,
            "malformed message",
        ),
    ]);
    cases
}

fn intake_cases(period: &pb::MergedPeriod) -> Vec<Case> {
    let whole = submit(period);
    let first = whole.first().expect("a period has a first chunk");
    let spoiled = |spoil: &dyn Fn(&mut pb::MergedPeriod)| {
        let mut period = period.clone();
        spoil(&mut period);
        remerge(&mut period);
        submit(&period)
    };
    // A string the digest covers, so the offer is not answered from the stored submission
    // before its bytes are read.
    let mut marked = period.clone();
    marked.catalog_version = "MARKMARK".into();
    remerge(&mut marked);
    let spoilt_period = spoil_utf8(marked.encode_to_vec(), b"MARKMARK");
    // The oversize field is the period's own, under an offer naming the hierarchy as it is.
    let oversize = {
        let mut long = period.clone();
        long.hierarchy_hash = "h".repeat(100_000);
        remerge(&mut long);
        let bytes = long.encode_to_vec();
        let offer = pb::PeriodOffer {
            hierarchy_hash: period.hierarchy_hash.clone(),
            ..period_offer(&long, &bytes)
        };
        period_stream(&offer, &bytes)
    };
    vec![
        Case::submit(
            "a truncated message",
            vec![first[..first.len() / 2].to_vec()],
            Code::InvalidArgument,
            "malformed message",
        ),
        Case::submit(
            "a first chunk without an offer",
            vec![Vec::new()],
            Code::InvalidArgument,
            "chunk.offer",
        ),
        Case::submit(
            "invalid UTF-8 in a string",
            period_stream(&period_offer(&marked, &spoilt_period), &spoilt_period),
            Code::InvalidArgument,
            "UTF-8",
        ),
        Case::submit(
            "an unknown catalog version",
            spoiled(&|p| p.catalog_version = "1999.1.1".into()),
            Code::FailedPrecondition,
            "1999.1.1",
        ),
        Case::submit(
            "an oversize field",
            oversize,
            Code::InvalidArgument,
            "period.hierarchy_hash",
        ),
        Case::submit(
            "a row that does not match its declared columns",
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
        Case::submit(
            "a digest that does not match",
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
            let status = stream_raw(url, case.method, case.messages)
                .await
                .expect_err(case.what);
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

    // A replay of a delivered run is answered as a duplicate and changes nothing, whether
    // its chunks are streamed again as they are or it is sent as an agent sends it (which
    // learns from its resume that the run is committed).
    let delivered = h
        .merged_runs()
        .into_iter()
        .find(|run| run.site == "P01")
        .expect("P01's run was delivered");
    let replayed = pb::PushRunResponse::decode(
        stream_raw(&aggregator, PUSH_RUN_CHUNKS, push(&delivered))
            .await
            .expect("a replayed run is answered")
            .as_slice(),
    )
    .expect("decodes");
    assert!(replayed.duplicate, "a replayed run is a duplicate");
    let resent = h.push(&delivered).await.expect("a re-sent run is answered");
    assert!(resent.duplicate, "a re-sent run is a duplicate");
    let resubmitted = pb::SubmitResponse::decode(
        stream_raw(&intake, SUBMIT_CHUNKS, submit(&period))
            .await
            .expect("a replayed submission is answered")
            .as_slice(),
    )
    .expect("decodes");
    assert!(
        resubmitted.duplicate,
        "a replayed submission is a duplicate"
    );
    // The aggregator answers a replayed run from what its staging recorded at the commit,
    // without reading it again: no row changed anywhere, not even the site's link.
    assert_eq!(
        changed(&before, &h.stores()),
        Vec::<String>::new(),
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
