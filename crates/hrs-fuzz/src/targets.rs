//! One fuzz target per decoder: each takes any bytes, feeds them to the decoder and the
//! validator the receiving role applies, and panics when an invariant breaks (never for a
//! refusal: refusing bad input is their job). A panic inside a decoder is a finding too.
//!
//! Every target is a plain `fn(&[u8])`, so any engine can drive it: the stable driver of
//! this crate under `cargo test`, or a coverage-guided fuzzer (see the crate docs).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use hrs_aggregator::service::AggregatorService;
use hrs_aggregator::{AggregatorConfig, MergeStore, SqliteMergeStore};
use hrs_connection::{Mode, Policy};
use hrs_core::catalog::Catalog;
use hrs_core::config::ConfigError;
use hrs_core::digest::{merged_digest, run_digest};
use hrs_core::encoded::{EncodedError, check_run_encoded};
use hrs_core::encoded_period::check_merged_encoded;
use hrs_core::validate::{RunHeader, check_merged};
use hrs_core::{HierarchyId, Level, Period, SiteCode};
use hrs_proto::v1 as pb;
use hrs_rpc::chunks::{ChunkedPushError, Outgoing, push_run_chunks};
use hrs_rpc::v1::aggregator_client::AggregatorClient;
use hrs_rpc::v1::aggregator_server::{Aggregator as _, AggregatorServer};
use hrs_rpc::v1::connection_point_client::ConnectionPointClient;
use hrs_rpc::v1::intake_client::IntakeClient;
use hrs_sitedb::{PasswordSource, SiteDbSpec};
use prost::Message as _;

use crate::seeds;
use crate::wire::streaming_gap;

/// A scratch folder per test thread, so file-based targets never share a file.
fn scratch() -> PathBuf {
    thread_local! {
        static DIR: RefCell<Option<tempfile::TempDir>> = const { RefCell::new(None) };
    }
    DIR.with(|dir| {
        let mut dir = dir.borrow_mut();
        if dir.is_none() {
            let made = tempfile::tempdir().expect("a scratch folder for file targets");
            // Keyed configurations name this file; its presence lets them load.
            std::fs::write(made.path().join("hierarchy.key"), seeds::HASH_KEY)
                .expect("the hash key file");
            *dir = Some(made);
        }
        dir.as_ref()
            .map(|d| d.path().to_owned())
            .unwrap_or_default()
    })
}

/// Checks a run held decoded as a receiver checks every run: through the one run check,
/// on the run's canonical (prost's) encoding, so a target that starts from a decoded run
/// holds it to the same definition of a valid run as the bytes that arrive.
pub fn check_canonical(run: &pb::Run) -> Result<RunHeader, EncodedError> {
    check_run_encoded(&run.encode_to_vec()).map(|(header, _)| header)
}

/// Checks an encoded run with the run check the aggregator applies to every run, and holds
/// the check's walk of the wire to prost's reading of it: whenever the bytes pass, prost
/// decodes the run and its canonical encoding passes with the same header and digest;
/// whenever prost decodes a run whose canonical encoding passes, the bytes pass too,
/// unless they use what the check refuses by design ([`streaming_gap`]).
pub fn run_encoded(data: &[u8]) {
    let streamed = check_run_encoded(&data.to_vec());
    let decoded = pb::Run::decode(data).ok();
    let checked = decoded.as_ref().map(check_canonical);
    match (&streamed, decoded.as_ref(), checked) {
        (Ok((header, fields)), Some(run), Some(Ok(expected))) => {
            assert_eq!(header.run_id, expected.run_id, "run ids differ");
            assert_eq!(header.site, expected.site, "sites differ");
            assert_eq!(header.period, expected.period, "periods differ");
            assert_eq!(header.level, expected.level, "levels differ");
            assert_eq!(
                header.hierarchy_id, expected.hierarchy_id,
                "hierarchies differ"
            );
            assert_eq!(fields.digest, run_digest(run), "the digests differ");
            let own = pb::Run {
                results: Vec::new(),
                ..run.clone()
            };
            assert_eq!(fields, &own, "the run's own fields differ");
        }
        (Ok(_), None, _) => panic!("the run check accepted a run prost cannot decode"),
        (Ok(_), Some(_), Some(Err(refusal))) => {
            panic!("the run check accepted bytes whose canonical encoding it refuses: {refusal}")
        }
        (Err(error), Some(_), Some(Ok(_))) if streaming_gap(data).is_none() => {
            panic!("the run check refused bytes whose canonical encoding it accepts: {error}");
        }
        _ => {}
    }
}

/// Decodes a run with prost and checks its canonical encoding. An accepted run must carry
/// its own digest (as computed whole, not piece by piece), decode again from its canonical
/// encoding, and flow downstream: merged alone into a period, and sent out of the
/// hierarchy at every level, it is a period the connection point and the intake accept.
pub fn run_decoded(data: &[u8]) {
    let Ok(run) = pb::Run::decode(data) else {
        return;
    };
    let Ok(header) = check_canonical(&run) else {
        return;
    };
    assert_eq!(run_digest(&run), run.digest);
    assert_eq!(header.site.as_str(), run.site);
    let canonical = run.encode_to_vec();
    let again = pb::Run::decode(canonical.as_slice()).expect("a canonical encoding decodes");
    // Compared as encodings: a NaN value is not equal to itself.
    assert!(
        again.encode_to_vec() == canonical,
        "the canonical encoding decodes to another run"
    );
    flows_downstream(&run, header.hierarchy_id, header.level);
}

/// Merges an accepted run alone and sends it out at every level: each step must give a
/// period `check_merged` accepts.
fn flows_downstream(run: &pb::Run, hierarchy: HierarchyId, level: Level) {
    let catalog =
        Catalog::by_version(&run.catalog_version).expect("the run check found this catalog");
    let Ok(site) = run.site.parse::<SiteCode>() else {
        panic!("the run check accepted site {:?}", run.site);
    };
    let merged = hrs_aggregator::merge::merge(
        hierarchy,
        level,
        &catalog,
        &[site],
        &run.period,
        vec![run.clone()],
    )
    .period;
    if let Err(error) = check_merged(&merged) {
        panic!("an accepted run merges into a period check_merged refuses: {error}");
    }
    sent_out_is_accepted(&merged);
}

/// The seed hierarchy's hashers, plain and keyed, made once: a keyed one reads a file.
fn hasher(keyed: bool) -> hrs_core::hash::Hasher {
    static HASHERS: OnceLock<[hrs_core::hash::Hasher; 2]> = OnceLock::new();
    let [plain, keyed_one] = HASHERS
        .get_or_init(|| [false, true].map(|keyed| seeds::hasher(keyed).expect("the seed hasher")));
    if keyed {
        keyed_one.clone()
    } else {
        plain.clone()
    }
}

/// Sends an accepted merged period out under each level and hash mode, as the connection
/// point does: the intake must accept every one.
fn sent_out_is_accepted(period: &pb::MergedPeriod) {
    for (level, keyed) in [
        (Level::Basic, true),
        (Level::Enhanced, false),
        (Level::Full, false),
    ] {
        let policy = Policy {
            level,
            mode: Mode::Online,
            hasher: hasher(keyed),
        };
        let out = hrs_connection::outbound(period, &policy);
        if let Err(error) = check_merged(&out) {
            panic!("an accepted period sent out at {level} is refused: {error}");
        }
    }
}

/// Checks an accepted merged period: it carries its own digest and what the connection
/// point makes of it is accepted downstream.
fn accepted_period(period: &pb::MergedPeriod) {
    assert_eq!(merged_digest(period), period.digest);
    sent_out_is_accepted(period);
}

/// Decodes a merged period with prost and checks it as the connection point and the
/// intake do; an accepted one must be accepted downstream too.
pub fn merged_period(data: &[u8]) {
    let Ok(period) = pb::MergedPeriod::decode(data) else {
        return;
    };
    if check_merged(&period).is_ok() {
        accepted_period(&period);
    }
}

/// Reads bytes as an offline bundle (a tar file of periods, a manifest and checksums), as
/// the connection tool's `connect` does. A bundle that is read must hold exactly the
/// periods its manifest lists, each carrying its digest and the manifest's hierarchy.
pub fn offline_bundle(data: &[u8]) {
    let path = scratch().join("fuzzed-bundle.tar");
    std::fs::write(&path, data).expect("writes the scratch bundle");
    let Ok(bundle) = hrs_connection::offline::read_bundle_file(&path) else {
        return;
    };
    assert_eq!(bundle.periods.len(), bundle.manifest.periods.len());
    for (bytes, entry) in bundle.periods.iter().zip(&bundle.manifest.periods) {
        use hrs_core::bytes::RunBytes as _;
        let encoded = bytes
            .read_at(
                0,
                usize::try_from(bytes.size()).expect("a period fits in memory"),
            )
            .expect("a bundle read holds its periods");
        let period = pb::MergedPeriod::decode(&encoded[..]).expect("a bundle's period decodes");
        assert_eq!(
            merged_digest(&period),
            period.digest,
            "a period with a wrong digest"
        );
        assert_eq!(period.digest, entry.digest);
        assert_eq!(period.period, entry.period);
        assert_eq!(period.hierarchy_hash, bundle.manifest.hierarchy_hash);
    }
}

/// Decodes a chunk of a push; the run it carries goes through the run check and its
/// agreement with the check of its canonical encoding ([`run_encoded`]).
pub fn run_chunk(data: &[u8]) {
    let Ok(chunk) = pb::RunChunk::decode(data) else {
        return;
    };
    run_encoded(&chunk.data);
}

/// An aggregator service in this process, over a store in a temporary folder, serving the
/// seed hierarchy. Resumes and heartbeats go straight to its handlers; runs are pushed as
/// agents push them, in chunks over a loopback connection to the same service, since a
/// client stream is only made by a real server.
struct InProcess {
    runtime: tokio::runtime::Runtime,
    service: AggregatorService,
    /// Connected to the service served on 127.0.0.1.
    client: AggregatorClient<tonic::transport::Channel>,
    config: Arc<AggregatorConfig>,
    /// Held through each call: two tests pushing the same seed run at once would meet
    /// each other's chunks in its staging, and the answers would depend on the timing.
    calls: Mutex<()>,
    _dir: tempfile::TempDir,
}

/// Bytes of a run's encoding per chunk when the aggregator target pushes it: small, so
/// the seed runs of a few KiB travel in several chunks.
const PUSH_CHUNK_BYTES: usize = 4 << 10;

/// A runtime of its own for `what`, a service served in this process for as long as it
/// runs, and a listener on a loopback port for it.
fn served_here(
    what: &str,
) -> (
    tokio::runtime::Runtime,
    tokio::net::TcpListener,
    std::net::SocketAddr,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("a runtime for the {what}: {e}"));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap_or_else(|e| panic!("binds a loopback port for the {what}: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("the {what}'s address: {e}"));
    (runtime, listener, addr)
}

fn aggregator() -> &'static InProcess {
    static SERVICE: OnceLock<InProcess> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a folder for the aggregator's store");
        let path = dir.path().join("aggregator.toml");
        std::fs::write(
            &path,
            format!(
                "listen = \"127.0.0.1:0\"\nhierarchy_id = \"{}\"\nstore = \"merge.sqlite\"\n\
                 sites = [\"CAS\", \"P01\", \"P02\"]\nmax_run_mb = 1\n",
                seeds::HIERARCHY_ID
            ),
        )
        .expect("writes the aggregator's configuration");
        let config =
            Arc::new(AggregatorConfig::load(&path).expect("the aggregator's configuration"));
        let store: Arc<dyn MergeStore> =
            Arc::new(SqliteMergeStore::open(&config.store).expect("opens the merge store"));
        let service = AggregatorService::new(
            Arc::clone(&config),
            store,
            Arc::new(tokio::sync::Notify::new()),
            seeds::clock(),
        );
        let (runtime, listener, addr) = served_here("aggregator");
        // Served for as long as the process runs: the service is shared by every test.
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(AggregatorServer::new(service.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let client = runtime
            .block_on(AggregatorClient::connect(format!("http://{addr}")))
            .expect("connects to the aggregator");
        InProcess {
            runtime,
            service,
            client,
            config,
            calls: Mutex::new(()),
            _dir: dir,
        }
    })
}

/// Answers that say the caller sent something wrong, as every refusal of bad input must.
fn is_clear_refusal(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        InvalidArgument | FailedPrecondition | PermissionDenied | AlreadyExists | ResourceExhausted
    )
}

/// Sends a request to an aggregator in this process. The input is an envelope: its first
/// length-delimited field is the request, and the field's number picks the call (1 a push,
/// 2 a resume, 3 a heartbeat; others modulo 3). A push's field is a `RunChunk`: its `data`
/// is the run, pushed in chunks through `hrs_rpc::chunks::push_run_chunks` under its
/// offer's run id, site and hierarchy with its link report (the client makes the offer's
/// size and SHA-256, as agents do). Every refusal must be a clear status naming the problem
/// (never `INTERNAL`), and what is accepted must pass the checks: a push's run the run
/// check and the sender checks, a resume's offer, a heartbeat's site and hierarchy.
pub fn aggregator_service(data: &[u8]) {
    if let Some(Err(status)) = aggregator_call(data) {
        assert!(
            is_clear_refusal(status.code()),
            "answered {:?}: {}",
            status.code(),
            status.message()
        );
        assert!(!status.message().is_empty(), "a refusal without a message");
    }
}

/// Makes the call an [`aggregator_service`] input describes and checks what was accepted;
/// returns the answer, or None when the input holds no request prost decodes.
pub fn aggregator_call(data: &[u8]) -> Option<Result<(), tonic::Status>> {
    let fields = crate::wire::parse(data, None)?;
    let (call, body) = fields.iter().find_map(|f| match &f.payload {
        crate::wire::Payload::Bytes(body) => Some((f.number, body.as_slice())),
        _ => None,
    })?;
    let aggregator = aggregator();
    let _one_at_a_time = aggregator
        .calls
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let config = &aggregator.config;
    let service = &aggregator.service;
    let ours = |site: &str, hierarchy: &str| {
        site.parse::<SiteCode>()
            .is_ok_and(|s| config.sites.contains(&s))
            && hierarchy
                .parse::<HierarchyId>()
                .is_ok_and(|h| h == config.hierarchy_id)
    };
    let runtime = &aggregator.runtime;
    match call % 3 {
        1 => {
            let chunk = pb::RunChunk::decode(body).ok()?;
            let offer = chunk.offer.unwrap_or_default();
            let outgoing = Outgoing {
                run_id: offer.run_id,
                site: offer.site,
                hierarchy_id: offer.hierarchy_id,
            };
            let run = Arc::new(chunk.data);
            let pushed = runtime.block_on(push_run_chunks(
                &mut aggregator.client.clone(),
                outgoing.clone(),
                chunk.link.unwrap_or_default(),
                Arc::clone(&run) as Arc<dyn hrs_core::bytes::RunBytes>,
                PUSH_CHUNK_BYTES,
            ));
            let answer = match pushed {
                Ok(answer) => Ok(answer),
                Err(ChunkedPushError::Status(status)) => Err(status),
                Err(other) => panic!("the push itself failed: {other}"),
            };
            if answer.is_ok() {
                let (_, fields) = check_run_encoded(run.as_ref()).unwrap_or_else(|error| {
                    panic!("the aggregator accepted a run the run check refuses: {error}")
                });
                assert!(
                    ours(&fields.site, &fields.hierarchy_id),
                    "accepted a run of another site"
                );
                assert_eq!(
                    (&fields.run_id, &fields.site),
                    (&outgoing.run_id, &outgoing.site),
                    "accepted a run under another run's offer"
                );
                assert_eq!(
                    fields.hash_key_id, config.hash_key_id,
                    "accepted another hash key"
                );
            }
            Some(answer.map(drop))
        }
        2 => {
            let request = pb::ResumeRunRequest::decode(body).ok()?;
            let offer = request.offer.clone();
            let answer = runtime.block_on(service.resume_run(tonic::Request::new(request)));
            if answer.is_ok() {
                let offer = offer.expect("a resume without an offer was answered");
                assert!(
                    uuid::Uuid::parse_str(&offer.run_id).is_ok(),
                    "accepted run id {:?}",
                    offer.run_id
                );
                assert!(
                    ours(&offer.site, &offer.hierarchy_id),
                    "accepted an offer of another site"
                );
                assert!(
                    offer.size > 0 && offer.size <= 1 << 20,
                    "accepted size {}",
                    offer.size
                );
                assert!(
                    offer.sha256.len() == 64 && offer.sha256.bytes().all(|b| b.is_ascii_hexdigit()),
                    "accepted sha256 {:?}",
                    offer.sha256
                );
            }
            Some(answer.map(drop))
        }
        _ => {
            let request = pb::HeartbeatRequest::decode(body).ok()?;
            let (site, hierarchy) = (request.site.clone(), request.hierarchy_id.clone());
            let answer = runtime.block_on(service.heartbeat(tonic::Request::new(request)));
            if answer.is_ok() {
                assert!(
                    ours(&site, &hierarchy),
                    "accepted a heartbeat of another site"
                );
            }
            Some(answer.map(drop))
        }
    }
}

/// A receiver of merged periods, served in this process as its role serves them: the
/// connection point (offline, so nothing leaves it) or the intake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receiving {
    /// The connection point, offered periods by the top-level aggregator.
    Point,
    /// The intake, submitted periods by connection points.
    Intake,
}

/// The store a receiver keeps what it accepted in, read back to check it.
enum Kept {
    Point(hrs_connection::SqliteOutbox),
    Intake(hrs_intake::SqliteIntake),
}

/// A period receiver served on 127.0.0.1 over a store in a temporary folder, for the
/// whole process: the service is shared by every test.
struct PeriodReceiver {
    runtime: tokio::runtime::Runtime,
    channel: tonic::transport::Channel,
    kept: Kept,
    /// Held through each call, as for the aggregator: two tests sending the same seed
    /// period at once would meet each other's chunks in its staging.
    calls: Mutex<()>,
    _dir: tempfile::TempDir,
}

/// Bytes of a period's encoding per chunk when a period target sends it: small, so the
/// seed periods of a few KiB travel in several chunks.
const PERIOD_CHUNK_BYTES: usize = 4 << 10;

fn receiver(receiving: Receiving) -> &'static PeriodReceiver {
    static POINT: OnceLock<PeriodReceiver> = OnceLock::new();
    static INTAKE: OnceLock<PeriodReceiver> = OnceLock::new();
    let cell = match receiving {
        Receiving::Point => &POINT,
        Receiving::Intake => &INTAKE,
    };
    cell.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a folder for the receiver's store");
        let (runtime, listener, addr) = served_here("receiver");
        // Our own handle is opened before the role's, so the two never make the schema at
        // once.
        let kept = match receiving {
            Receiving::Point => {
                let path = dir.path().join("connection-point.toml");
                std::fs::write(
                    &path,
                    format!(
                        "listen = \"127.0.0.1:0\"\nhierarchy_id = \"{}\"\nlevel = \"Enhanced\"\n\
                         mode = \"offline\"\nstore = \"cp.sqlite\"\n",
                        seeds::HIERARCHY_ID
                    ),
                )
                .expect("writes the connection point's configuration");
                let config = hrs_connection::ConnectionPointConfig::load(&path)
                    .expect("the connection point's configuration");
                let kept = hrs_connection::SqliteOutbox::open(&config.store)
                    .expect("opens the connection point's store");
                runtime.spawn(hrs_connection::serve_with_clock(
                    config,
                    listener,
                    std::future::pending(),
                    seeds::clock(),
                ));
                Kept::Point(kept)
            }
            Receiving::Intake => {
                let config = hrs_intake::IntakeConfig::new(addr, dir.path().join("intake.sqlite"));
                let kept = hrs_intake::SqliteIntake::open(&config.store)
                    .expect("opens the intake's store");
                runtime.spawn(hrs_intake::serve_with_clock(
                    config,
                    listener,
                    std::future::pending(),
                    seeds::clock(),
                ));
                Kept::Intake(kept)
            }
        };
        let channel = runtime
            .block_on(
                tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .expect("the receiver's address")
                    .connect(),
            )
            .expect("connects to the receiver");
        PeriodReceiver {
            runtime,
            channel,
            kept,
            calls: Mutex::new(()),
            _dir: dir,
        }
    })
}

/// How a receiver answered a period it accepted.
#[derive(Debug)]
struct Received {
    /// It was stored already.
    duplicate: bool,
    /// The intake's identifier of the submission.
    submission_id: Option<String>,
}

impl Received {
    fn of_point(answer: pb::OfferPeriodResponse) -> Self {
        Self {
            duplicate: answer.duplicate,
            submission_id: None,
        }
    }

    fn of_intake(answer: pb::SubmitResponse) -> Self {
        Self {
            duplicate: answer.duplicate,
            submission_id: Some(answer.submission_id),
        }
    }
}

/// The hash the seed hierarchy's periods carry, the only one the connection point takes.
fn seed_hierarchy_hash() -> String {
    seeds::HIERARCHY_ID
        .parse::<HierarchyId>()
        .map(|h| h.hashed())
        .expect("the seed hierarchy")
}

/// Sends a period to the connection point in this process, as the aggregator does:
/// [`period_service`] with the connection point's invariants.
pub fn connection_point_service(data: &[u8]) {
    period_service(Receiving::Point, data);
}

/// Sends a period to the intake in this process, as a connection point does:
/// [`period_service`] with the intake's invariants.
pub fn intake_service(data: &[u8]) {
    period_service(Receiving::Intake, data);
}

/// Refusals a period receiver may answer bad input with: the clear ones, and `ABORTED` for
/// a stream whose chunks are out of place or that ends before the period does.
fn is_period_refusal(code: tonic::Code) -> bool {
    is_clear_refusal(code) || code == tonic::Code::Aborted
}

/// Sends a call to a period receiver in this process and checks the answer. The input is
/// an envelope: its first length-delimited field is the request, and the field's number
/// picks the call (1 a period sent, 2 a resume, 3 a raw stream; others modulo 3). A
/// sent period's field is a `PeriodChunk`: its `data` is the period's encoding, sent in
/// chunks through the client helper under its offer's hierarchy, period and digest (the
/// client makes the size and SHA-256, as senders do). A raw stream is every field 3 of
/// the envelope, each a `PeriodChunk` sent as it is, offsets and offers included. Every
/// refusal must be a clear status naming the problem (never `INTERNAL`), and what is
/// accepted must pass the checks: a period stored is what its offer names and passes
/// `check_merged` (from its encoding, `check_merged_encoded`), and flows downstream; a
/// resume's offer is well formed.
fn period_service(receiving: Receiving, data: &[u8]) {
    if let Some(Err(status)) = period_call(receiving, data) {
        assert!(
            is_period_refusal(status.code()),
            "answered {:?}: {}",
            status.code(),
            status.message()
        );
        assert!(!status.message().is_empty(), "a refusal without a message");
    }
}

/// Makes the call a [`period_service`] input describes and checks what was accepted;
/// returns the answer, or None when the input holds no request prost decodes.
pub fn period_call(receiving: Receiving, data: &[u8]) -> Option<Result<(), tonic::Status>> {
    let fields = crate::wire::parse(data, None)?;
    let (call, body) = fields.iter().find_map(|f| match &f.payload {
        crate::wire::Payload::Bytes(body) => Some((f.number, body.as_slice())),
        _ => None,
    })?;
    let receiver = receiver(receiving);
    let _one_at_a_time = receiver
        .calls
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let runtime = &receiver.runtime;
    let channel = receiver.channel.clone();
    match call % 3 {
        1 => {
            let chunk = pb::PeriodChunk::decode(body).ok()?;
            let offer = chunk.offer.unwrap_or_default();
            let period = Arc::new(chunk.data);
            let source = Arc::clone(&period) as Arc<dyn hrs_core::bytes::RunBytes>;
            let sent = runtime.block_on(async {
                match receiving {
                    Receiving::Point => hrs_rpc::chunks::offer_period_chunks(
                        &mut ConnectionPointClient::new(channel),
                        offer.clone(),
                        source,
                        PERIOD_CHUNK_BYTES,
                    )
                    .await
                    .map(Received::of_point),
                    Receiving::Intake => hrs_rpc::submit::submit_period_chunks(
                        &mut IntakeClient::new(channel),
                        offer.clone(),
                        source,
                        PERIOD_CHUNK_BYTES,
                    )
                    .await
                    .map(Received::of_intake),
                }
            });
            let answer = match sent {
                Ok(answer) => answer,
                Err(ChunkedPushError::Status(status)) => return Some(Err(status)),
                Err(other) => panic!("the upload itself failed: {other}"),
            };
            if !answer.duplicate {
                // Stored from these bytes: the receivers' check of a period's encoding
                // accepted them.
                let summary = check_merged_encoded(period.as_ref()).unwrap_or_else(|error| {
                    panic!("stored a period whose encoding the period check refuses: {error}")
                });
                assert_eq!(
                    (&summary.period.to_string(), &summary.digest),
                    (&offer.period, &offer.digest),
                    "stored a period other than the one offered"
                );
            }
            received(receiving, receiver, &offer, &answer);
            Some(Ok(()))
        }
        2 => {
            let request = pb::ResumePeriodRequest::decode(body).ok()?;
            let offer = request.offer.clone();
            let answer = runtime.block_on(async {
                match receiving {
                    Receiving::Point => ConnectionPointClient::new(channel)
                        .resume_period(request)
                        .await
                        .map(drop),
                    Receiving::Intake => IntakeClient::new(channel)
                        .resume_submission(request)
                        .await
                        .map(drop),
                }
            });
            if answer.is_ok() {
                let offer = offer.expect("a resume without an offer was answered");
                well_formed(receiving, &offer);
            }
            Some(answer)
        }
        _ => {
            let chunks: Vec<pb::PeriodChunk> = fields
                .iter()
                .filter(|f| f.number == call)
                .filter_map(|f| match &f.payload {
                    crate::wire::Payload::Bytes(chunk) => {
                        pb::PeriodChunk::decode(chunk.as_slice()).ok()
                    }
                    _ => None,
                })
                .collect();
            let offer = chunks.first()?.offer.clone();
            let stream = tokio_stream::iter(chunks);
            let answer = runtime.block_on(async {
                match receiving {
                    Receiving::Point => ConnectionPointClient::new(channel)
                        .offer_period_chunks(stream)
                        .await
                        .map(|answer| Received::of_point(answer.into_inner())),
                    Receiving::Intake => IntakeClient::new(channel)
                        .submit_chunks(stream)
                        .await
                        .map(|answer| Received::of_intake(answer.into_inner())),
                }
            });
            Some(answer.map(|answer| {
                let offer = offer.expect("a stream without an offer was answered");
                received(receiving, receiver, &offer, &answer);
            }))
        }
    }
}

/// Checks an offer a receiver answered: of a period, a size and SHA-256 as sent, a
/// digest's shape, and for the connection point the seed hierarchy.
fn well_formed(receiving: Receiving, offer: &pb::PeriodOffer) {
    let hex = |text: &str| text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit());
    assert!(
        offer.period.parse::<Period>().is_ok(),
        "accepted period {:?}",
        offer.period
    );
    assert!(offer.size > 0, "accepted an empty offer");
    assert!(hex(&offer.sha256), "accepted sha256 {:?}", offer.sha256);
    assert!(hex(&offer.digest), "accepted digest {:?}", offer.digest);
    if receiving == Receiving::Point {
        assert_eq!(
            offer.hierarchy_hash,
            seed_hierarchy_hash(),
            "accepted another hierarchy"
        );
    }
}

/// Checks what a receiver stored for an offer it accepted: the period the offer names,
/// passing `check_merged`, and accepted downstream. The connection point keeps only the
/// newest version of a period, so one answered as a duplicate may have been replaced since.
fn received(
    receiving: Receiving,
    receiver: &PeriodReceiver,
    offer: &pb::PeriodOffer,
    answer: &Received,
) {
    use hrs_connection::OutboxStore as _;
    use hrs_intake::IntakeStore as _;
    let stored = receiver.runtime.block_on(async {
        match &receiver.kept {
            Kept::Point(outbox) => outbox
                .stored()
                .await
                .expect("reads the connection point's store")
                .into_iter()
                .find(|p| p.period == offer.period && p.digest == offer.digest),
            Kept::Intake(intake) => {
                let id = answer
                    .submission_id
                    .as_deref()
                    .expect("the intake names its submission");
                Some(
                    intake
                        .payload(id)
                        .await
                        .expect("reads the intake's store")
                        .expect("an accepted submission is stored"),
                )
            }
        }
    });
    let Some(period) = stored else {
        assert!(
            answer.duplicate,
            "accepted a period the connection point does not keep"
        );
        return;
    };
    assert_eq!(
        (&period.hierarchy_hash, &period.period, &period.digest),
        (&offer.hierarchy_hash, &offer.period, &offer.digest),
        "stored a period other than the one offered"
    );
    if receiving == Receiving::Point {
        assert_eq!(
            period.hierarchy_hash,
            seed_hierarchy_hash(),
            "stored another hierarchy's period"
        );
    }
    if let Err(error) = check_merged(&period) {
        panic!("stored a period check_merged refuses: {error}");
    }
    accepted_period(&period);
}

/// Returns whether an error message says where the problem is: a line and column of the
/// file, a field as serde names one, or a field as the checks after parsing name one
/// (`field: problem`, see `hrs_core::config::invalid`).
pub fn names_a_place(message: &str) -> bool {
    let checked_field = message.split_once(": ").is_some_and(|(field, _)| {
        !field.is_empty()
            && field
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
    });
    message.starts_with("line ") || message.contains("field") || checked_field
}

/// Loads bytes as a configuration file of one role: it loads, or the error names the file
/// and, unless the file could not be read as text, a field or a line of it. Each role's
/// `read` is the loader, not its `load`: a fuzzed path may name any folder of this machine,
/// and checking that a store could be written there tries to create a file in it.
fn config<T>(data: &[u8], name: &str, load: fn(&Path) -> Result<T, ConfigError>) -> Option<T> {
    let path = scratch().join(name);
    std::fs::write(&path, data).expect("writes the scratch configuration");
    match load(&path) {
        Ok(config) => Some(config),
        Err(error) => {
            let text = error.to_string();
            assert!(
                text.contains(&path.display().to_string()),
                "the error does not name the file: {text}"
            );
            if let ConfigError::Invalid { message, .. } = &error {
                assert!(
                    names_a_place(message),
                    "the error names no field or line: {text}"
                );
            }
            None
        }
    }
}

/// Returns the password a site database setting carries when it is an ADO.NET connection
/// string (a `sqlite:` setting or a bare path holds none: all of it is the path), if it
/// appears exactly once in `text`, so it can be told apart from the rest.
pub fn password_in(text: &str) -> Option<String> {
    if text.starts_with("sqlite:") || !text.contains('=') {
        return None;
    }
    let pairs: connection_string::AdoNetString = text.parse().ok()?;
    let password = pairs
        .get("password")
        .or_else(|| pairs.get("pwd"))?
        .trim()
        .to_owned();
    (!password.is_empty() && text.matches(password.as_str()).count() == 1).then_some(password)
}

/// A password that appears nowhere else: put in place of the one an input carries, any
/// output that holds it shows the password, whatever the password was (a password such as
/// `tls_ca` or `database` may appear in an output for other reasons).
pub const MARKER: &str = "HrsFuzzPw7Qz";

/// Returns `text` with its password, if it has one, replaced by [`MARKER`].
pub fn marked(text: &str, password: &str) -> Option<String> {
    (!text.contains(MARKER)).then(|| text.replacen(password, MARKER, 1))
}

/// Loads bytes as an agent configuration. When it loads with a SQL Server password in
/// `site_db`, the same file with that password replaced by [`MARKER`] must not show it:
/// not in its `Debug`, its summary, or its error.
pub fn agent_config(data: &[u8]) {
    let Some(loaded) = config(data, "agent.toml", hrs_agent::AgentConfig::read) else {
        return;
    };
    let _ = format!("{loaded:?} {}", loaded.site_db_summary());
    let text = String::from_utf8_lossy(data);
    // The setting as written: the loaded config holds it parsed.
    let site_db = toml::from_str::<toml::Table>(&text)
        .ok()
        .and_then(|table| table.get("site_db")?.as_str().map(str::to_owned));
    let Some(marked) = site_db
        .as_deref()
        .and_then(password_in)
        .filter(|password| text.matches(password.as_str()).count() == 1)
        .and_then(|password| marked(&text, &password))
    else {
        return;
    };
    let path = scratch().join("agent-marked.toml");
    std::fs::write(&path, marked).expect("writes the scratch configuration");
    let shown = match hrs_agent::AgentConfig::read(&path) {
        Ok(config) => format!("{config:?} {}", config.site_db_summary()),
        Err(error) => error.to_string(),
    };
    assert!(!shown.contains(MARKER), "shows the password: {shown}");
}

/// Loads bytes as an aggregator configuration.
pub fn aggregator_config(data: &[u8]) {
    config(data, "aggregator.toml", AggregatorConfig::read);
}

/// Loads bytes as a connection point configuration.
pub fn connection_point_config(data: &[u8]) {
    config(
        data,
        "connection-point.toml",
        hrs_connection::ConnectionPointConfig::read,
    );
}

/// Loads bytes as an intake configuration.
pub fn intake_config(data: &[u8]) {
    config(data, "intake.toml", hrs_intake::IntakeConfig::read);
}

/// Parses text as a site database setting (`sqlite:PATH` or an ADO.NET connection string),
/// with the password in the string and from a variable: never a panic, and with the
/// string's password replaced by [`MARKER`], no error, summary or public reason shows it.
pub fn connection_string(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let marked = password_in(&text).and_then(|password| marked(&text, &password));
    for source in [
        None,
        Some(PasswordSource::Env("HRS_FUZZ_NO_SUCH_VARIABLE".into())),
    ] {
        let shown = |text: &str| match SiteDbSpec::parse(text, source.clone()) {
            Ok(spec) => format!("{spec} {spec:?}"),
            Err(error) => format!("{error} {error:?} {}", error.public_reason()),
        };
        shown(&text);
        // The SQL Server parser on its own too, for what the setting would send elsewhere.
        let _ = hrs_sitedb::MssqlSpec::parse(&text, source.clone());
        if let Some(marked) = &marked {
            let shown = shown(marked);
            assert!(!shown.contains(MARKER), "shows the password: {shown}");
        }
    }
}

/// Parses text as each kind of identifier: what parses must print as something that
/// parses back to the same value.
pub fn ids(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(site) = text.parse::<SiteCode>() {
        assert_eq!(site.as_str(), text, "a site code is kept as written");
    }
    if let Ok(level) = text.parse::<Level>() {
        assert!(level.as_str().eq_ignore_ascii_case(text));
    }
    if let Ok(id) = text.parse::<HierarchyId>() {
        assert_eq!(id.to_string().parse::<HierarchyId>().ok(), Some(id));
    }
    if let Ok(period) = text.parse::<Period>() {
        assert_eq!(period.to_string().parse::<Period>().ok(), Some(period));
        assert!(period.start() < period.end());
        assert_eq!(Period::containing(period.start()), period);
        assert_eq!(Period::containing(period.end()), period);
    }
}
