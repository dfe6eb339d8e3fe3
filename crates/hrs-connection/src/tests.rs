//! The connection point against a real intake on loopback, offline bundles, the outbound
//! filter, and the connection tool's export.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hrs_core::digest::merged_digest;
use hrs_core::hash::{Hasher, hash_value};
use hrs_core::{Catalog, ColumnType, HierarchyId, Level, QueryDef, Value};
use hrs_intake::{IntakeConfig, IntakeStore as _, SqliteIntake};
use hrs_proto::v1 as pb;
use hrs_rpc::v1::connection_point_client::ConnectionPointClient;
use prost::Message as _;
use sha2::Digest as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;

const HIERARCHY: &str = "6f9619ff-8b86-d011-b42d-00c04fc964ff";
const OTHER_HIERARCHY: &str = "0b7f3f0e-0c39-4a5e-9d43-2f3c1e1a9b11";
const SITES: [&str; 2] = ["P01", "P02"];

fn hierarchy() -> HierarchyId {
    HIERARCHY.parse().expect("guid")
}

fn sample(ty: ColumnType) -> Value {
    match ty {
        // A hash fits every text column, hashed ones included.
        ColumnType::Text => Value::Text(hrs_core::hash::hash_value("sample")),
        ColumnType::Int => Value::Int(7),
        ColumnType::Real => Value::Real(0.1),
        ColumnType::Bool => Value::Bool(true),
    }
}

/// Returns a result set of one row for a catalog query, shaped as the catalog declares.
fn catalog_set(query: &QueryDef) -> pb::ResultSet {
    let columns = query.output_columns();
    pb::ResultSet {
        query_id: query.id.clone(),
        level: query.level.as_str().into(),
        columns: columns
            .iter()
            .map(|(name, ty)| pb::Column {
                name: name.clone(),
                r#type: ty.as_str().into(),
            })
            .collect(),
        rows: vec![pb::Row {
            values: columns
                .iter()
                .map(|(_, ty)| (&sample(*ty)).into())
                .collect(),
        }],
        error: String::new(),
        duration_ms: 4,
    }
}

/// Returns a result set that the catalog need not know, for tests that never validate.
fn synthetic_set(query_id: &str, level: Level, rows: usize) -> pb::ResultSet {
    pb::ResultSet {
        query_id: query_id.into(),
        level: level.as_str().into(),
        columns: vec![pb::Column {
            name: "n".into(),
            r#type: "int".into(),
        }],
        rows: (0..rows)
            .map(|i| pb::Row {
                values: vec![(&Value::Int(i as i64)).into()],
            })
            .collect(),
        error: String::new(),
        duration_ms: 1,
    }
}

/// Returns a merged period at `level` of sites P01 and P02 (P03 missing), each with the
/// given result sets, carrying run ids as the aggregator sends them, with a correct digest.
fn merged(period: &str, level: Level, sets: Vec<pb::ResultSet>) -> pb::MergedPeriod {
    let mut merged = pb::MergedPeriod {
        hierarchy_hash: hierarchy().hashed(),
        period: period.into(),
        catalog_version: Catalog::builtin().expect("builtin catalog").version,
        level: level.as_str().into(),
        sites: SITES
            .iter()
            .enumerate()
            .map(|(i, site)| pb::SiteResults {
                site: (*site).into(),
                run_id: format!("00000000-0000-4000-8000-00000000000{i}"),
                sequence: 3,
                started_at: "2026-11-30T01:00:00Z".into(),
                finished_at: "2026-11-30T01:00:02Z".into(),
                results: sets.clone(),
            })
            .collect(),
        missing_sites: vec!["P03".into()],
        digest: String::new(),
        mode: String::new(),
    };
    merged.digest = merged_digest(&merged);
    merged
}

/// Returns a valid Full-level merged period with one row of every catalog query.
fn catalog_period(period: &str) -> pb::MergedPeriod {
    let catalog = Catalog::builtin().expect("builtin catalog");
    let sets = catalog.at_level(Level::Full).map(catalog_set).collect();
    merged(period, Level::Full, sets)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Waits (bounded) until `check` holds.
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(found) = check() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

struct Server<E> {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), E>>,
}

impl<E: std::fmt::Debug> Server<E> {
    async fn stop(self) {
        self.stop.send(()).expect("server still running");
        self.task.await.expect("joins").expect("serves cleanly");
    }
}

/// The time [`clock`] reads.
const AT: time::OffsetDateTime = time::macros::datetime!(2026-11-30 06:00 UTC);

/// The clock every role and tool of these tests reads: pinned, so they pass on any date.
fn clock() -> hrs_core::clock::ManualClock {
    hrs_core::clock::ManualClock::new(AT)
}

fn week(text: &str) -> hrs_core::Period {
    text.parse().expect("a period")
}

async fn start_intake(dir: &Path) -> (Server<hrs_intake::IntakeError>, PathBuf) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("local addr");
    let store = dir.join("intake.sqlite");
    let config = IntakeConfig::new(addr, store.clone());
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(hrs_intake::serve_with_clock(
        config,
        listener,
        async {
            drop(rx.await);
        },
        clock().shared(),
    ));
    (Server { addr, stop, task }, store)
}

/// The policy of an online connection point at `level`, hashing plainly.
fn policy(level: Level) -> Policy {
    Policy {
        level,
        mode: Mode::Online,
        hasher: Hasher::Plain,
    }
}

fn point_config(dir: &Path, mode: Mode, intake: Option<SocketAddr>) -> ConnectionPointConfig {
    ConnectionPointConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        hierarchy_id: hierarchy(),
        level: Level::Enhanced,
        mode,
        store: dir.join("cp.sqlite"),
        intake: intake.map(|a| format!("http://{a}")),
        retry_seconds: 1,
        check_hours: 24,
        recheck_minutes: 60,
        intake_ca: None,
        intake_token: None,
        intake_proxy: None,
        tls: None,
        limits: hrs_core::config::ServerLimits::with_max_connections(64),
        metrics: hrs_core::config::MetricsTable::default(),
        hasher: Hasher::Plain,
        source: None,
    }
}

async fn start_point(config: &ConnectionPointConfig) -> Server<ConnectionError> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("local addr");
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_with_clock(
        config.clone(),
        listener,
        async {
            drop(rx.await);
        },
        clock().shared(),
    ));
    Server { addr, stop, task }
}

async fn point_client(addr: SocketAddr) -> ConnectionPointClient<tonic::transport::Channel> {
    ConnectionPointClient::connect(format!("http://{addr}"))
        .await
        .expect("connects")
}

/// What an offer of `period` names before its size and SHA-256 are filled in: what the
/// aggregator sends.
fn offer_of(period: &pb::MergedPeriod) -> pb::PeriodOffer {
    pb::PeriodOffer {
        hierarchy_hash: period.hierarchy_hash.clone(),
        period: period.period.clone(),
        digest: period.digest.clone(),
        ..Default::default()
    }
}

/// Offers `period` as the aggregator does: in chunks of its encoding, from where the
/// connection point's held bytes end.
async fn offer(
    client: &mut ConnectionPointClient<tonic::transport::Channel>,
    period: &pb::MergedPeriod,
) -> Result<pb::OfferPeriodResponse, tonic::Status> {
    let source = Arc::new(period.encode_to_vec());
    match hrs_rpc::chunks::offer_period_chunks(
        client,
        offer_of(period),
        source,
        hrs_rpc::chunks::DEFAULT_CHUNK_BYTES,
    )
    .await
    {
        Ok(answer) => Ok(answer),
        Err(hrs_rpc::chunks::ChunkedPushError::Status(status)) => Err(status),
        Err(other) => panic!("the offer could not be sent: {other}"),
    }
}

/// Stores `period` in `store` as the connection point stores one offered in chunks:
/// staged whole, then committed as received `at`.
async fn keep(
    store: &SqliteOutbox,
    period: &pb::MergedPeriod,
    at: time::OffsetDateTime,
) -> Result<Offered, StoreError> {
    use hrs_store::staging::{Appended, Staged};
    let bytes = period.encode_to_vec();
    let offer = pb::PeriodOffer {
        size: bytes.len() as u64,
        sha256: crate::bundle::sha256_hex(&bytes),
        ..offer_of(period)
    };
    match store.stage(&offer, at, at).await? {
        Staged::Settled(_) => return Ok(Offered::Duplicate),
        Staged::Open { held: 0, .. } => {}
        other => panic!("staging {}: {other:?}", period.period),
    }
    let appended = store.stage_append(&offer, 0, bytes).await?;
    assert_eq!(appended, Appended::Held(offer.size), "staged whole");
    let level = period.level.parse().expect("a level");
    store.commit_staged(&offer, level, at).await
}

/// Waits until `period` at `digest` has left in the given state.
async fn delivered(
    config: &ConnectionPointConfig,
    period: &str,
    digest: &str,
    state: State,
) -> PeriodState {
    let period = week(period);
    eventually(&format!("{period} to be {state}"), || {
        periods(config)
            .ok()?
            .into_iter()
            .find(|p| p.period == period && p.digest == digest && p.state == state)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_submits_once_hashed_and_resends_newer_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (intake, intake_store) = start_intake(dir.path()).await;
    let config = point_config(dir.path(), Mode::Online, Some(intake.addr));
    let point = start_point(&config).await;
    let mut client = point_client(point.addr).await;

    let period = catalog_period("2026-W48");
    let answer = offer(&mut client, &period).await.expect("accepted");
    assert!(!answer.duplicate);

    let state = delivered(&config, "2026-W48", &period.digest, State::Submitted).await;
    let store = SqliteIntake::open(&intake_store).expect("opens intake store");
    let submissions = store.submissions().await.expect("lists");
    assert_eq!(submissions.len(), 1);
    assert_eq!(
        state.submission_id.as_deref(),
        Some(submissions[0].submission_id.as_str())
    );
    let payload = store
        .payload(&submissions[0].submission_id)
        .await
        .expect("reads")
        .expect("stored");
    let expected = outbound(&period, &policy(Level::Enhanced));
    assert_eq!(payload, expected);
    assert_eq!(payload.level, "Enhanced");
    let bytes = payload.encode_to_vec();
    for site in ["P01", "P02", "P03"] {
        assert!(
            !contains(&bytes, site),
            "{site} left the hierarchy in clear"
        );
    }
    let mut names: Vec<&str> = payload.sites.iter().map(|s| s.site.as_str()).collect();
    names.sort_unstable();
    let mut hashed = vec![hash_value("P01"), hash_value("P02")];
    hashed.sort();
    assert_eq!(names, hashed);
    assert_eq!(payload.missing_sites, vec![hash_value("P03")]);

    // A re-offer changes nothing, here or at the intake.
    let again = offer(&mut client, &period)
        .await
        .expect("re-offer accepted");
    assert!(again.duplicate);
    assert_eq!(store.submissions().await.expect("lists").len(), 1);
    let states = periods(&config).expect("reads states");
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].state, State::Submitted);

    // Bad offers are refused with the right code and leave the store as it was.
    let mut other = period.clone();
    other.hierarchy_hash = hrs_core::hash::hash_value(OTHER_HIERARCHY);
    other.digest = merged_digest(&other);
    let status = offer(&mut client, &other)
        .await
        .expect_err("other hierarchy refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    let mut tampered = period.clone();
    tampered.missing_sites.clear();
    let status = offer(&mut client, &tampered)
        .await
        .expect_err("tampered refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("digest"), "{}", status.message());
    let status = client
        .offer_period_chunks(tokio_stream::iter([pb::PeriodChunk::default()]))
        .await
        .expect_err("a stream without an offer refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), "field offer: missing");
    assert_eq!(periods(&config).expect("reads states"), states);
    let staged = outbox_count(&config.store, "SELECT COUNT(*) FROM staged_period_chunks");
    assert_eq!(staged, 0, "refused offers leave no chunks behind");

    // A newer merged version of the period replaces the older one and is sent again.
    let mut newer = period.clone();
    newer.missing_sites.clear();
    newer.digest = merged_digest(&newer);
    let answer = offer(&mut client, &newer).await.expect("newer accepted");
    assert!(!answer.duplicate);
    delivered(&config, "2026-W48", &newer.digest, State::Submitted).await;
    let submissions = store.submissions().await.expect("lists");
    assert_eq!(submissions.len(), 2);
    let latest = store
        .latest(&period.hierarchy_hash, &week("2026-W48"))
        .await
        .expect("reads")
        .expect("present");
    assert_eq!(latest, outbound(&newer, &policy(Level::Enhanced)));

    drop(client);
    point.stop().await;
    intake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_retries_until_the_intake_appears() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Reserve a port for the intake, then leave it closed while the period arrives.
    let reserved = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let intake_addr = reserved.local_addr().expect("local addr");
    drop(reserved);
    let config = point_config(dir.path(), Mode::Online, Some(intake_addr));
    let point = start_point(&config).await;
    let mut client = point_client(point.addr).await;
    let period = catalog_period("2026-W47");
    offer(&mut client, &period)
        .await
        .expect("accepted while the intake is away");
    let states = periods(&config).expect("reads states");
    assert_eq!(states[0].state, State::Pending);

    let listener = TcpListener::bind(intake_addr)
        .await
        .expect("rebinds the port");
    let intake_store = dir.path().join("intake.sqlite");
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(hrs_intake::serve_with_clock(
        IntakeConfig::new(intake_addr, intake_store.clone()),
        listener,
        async {
            drop(rx.await);
        },
        clock().shared(),
    ));
    delivered(&config, "2026-W47", &period.digest, State::Submitted).await;
    let store = SqliteIntake::open(&intake_store).expect("opens");
    assert_eq!(store.submissions().await.expect("lists").len(), 1);

    drop(client);
    point.stop().await;
    Server {
        addr: intake_addr,
        stop,
        task,
    }
    .stop()
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_keeps_periods_until_prepared_into_a_bundle_that_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = point_config(dir.path(), Mode::Offline, None);
    let point = start_point(&config).await;
    let mut client = point_client(point.addr).await;
    let period = catalog_period("2026-W48");
    offer(&mut client, &period).await.expect("accepted");
    drop(client);
    point.stop().await;
    let states = crate::periods(&config).expect("reads");
    assert_eq!(states.len(), 1);
    assert_eq!(
        states[0].state,
        State::Pending,
        "offline, nothing leaves by itself"
    );

    let media = dir.path().join("media");
    let prepared = crate::offline::prepare(&config, &media, &crate::offline::Silent, &clock())
        .expect("prepares");
    let path = prepared.path.expect("a bundle");
    assert_eq!(prepared.periods, [week("2026-W48")]);
    let states = crate::periods(&config).expect("reads");
    assert_eq!(states[0].state, State::Bundled);
    assert_eq!(states[0].bundle_path.as_deref(), Some(path.as_path()));

    let bundle = crate::offline::read_bundle_file(&path).expect("verifies");
    let expected = outbound(&period, &Policy::of(&config));
    assert_eq!(bundle.decoded().expect("decodes"), [expected]);
    assert_eq!(bundle.manifest.periods[0].received_digest, period.digest);
    assert_eq!(bundle.manifest.hierarchy_hash, hierarchy().hashed());
    let bytes = std::fs::read(&path).expect("reads file");
    for site in ["P01", "P02", "P03"] {
        assert!(!contains(&bytes, site), "{site} written in clear");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&media)
        .expect("lists media")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // A second prepare bundles the same unsent period again.
    let again = crate::offline::prepare(&config, &media, &crate::offline::Silent, &clock())
        .expect("prepares again");
    assert_eq!(again.periods, [week("2026-W48")]);

    // One byte changed inside a period's file (its data starts after the first header)
    // is found, whichever check catches it.
    let mut tampered = bytes.clone();
    tampered[512 + bundle.manifest.periods[0].bytes as usize / 2] ^= 1;
    let copy = dir.path().join("hrs-tampered.tar");
    std::fs::write(&copy, &tampered).expect("writes copy");
    let err = crate::offline::read_bundle_file(&copy).expect_err("tampered bundle refused");
    assert!(
        matches!(err, crate::offline::OfflineError::Tampered { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("hrs-tampered.tar"), "{err}");
}

#[tokio::test]
async fn a_bundle_edited_with_its_checksums_rewritten_is_refused_on_its_digest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = point_config(dir.path(), Mode::Offline, None);
    let store = SqliteOutbox::open(&config.store).expect("opens");
    keep(&store, &catalog_period("2026-W48"), AT)
        .await
        .expect("stored");
    let media = dir.path().join("media");
    let prepared = crate::offline::prepare(&config, &media, &crate::offline::Silent, &clock())
        .expect("prepares");
    let path = prepared.path.expect("a bundle");

    // Unpack, change one value of the period, fix every checksum to match, pack again.
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut archive = tar::Archive::new(std::fs::File::open(&path).expect("opens"));
    for entry in archive.entries().expect("lists") {
        let mut entry = entry.expect("reads");
        let name = entry.path().expect("named").to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).expect("reads");
        files.push((name, bytes));
    }
    let hex = |bytes: &[u8]| -> String {
        sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let mut period = pb::MergedPeriod::decode(&files[0].1[..]).expect("decodes");
    // A value changed within its type, as a careful hand edit would.
    let value = &mut period.sites[0].results[0].rows[0].values[1];
    *value = match Value::from(&*value) {
        Value::Text(text) => (&Value::Text(format!("{text}x"))).into(),
        Value::Int(n) => (&Value::Int(n + 1)).into(),
        other => panic!("an unexpected value {other:?}"),
    };
    files[0].1 = period.encode_to_vec();
    let mut manifest: crate::offline::BundleManifest =
        serde_json::from_slice(&files[1].1).expect("manifest");
    manifest.periods[0].sha256 = hex(&files[0].1);
    manifest.periods[0].bytes = files[0].1.len() as u64;
    files[1].1 = serde_json::to_vec_pretty(&manifest).expect("json");
    files[2].1 = format!(
        "{}  manifest.json\n{}  {}\n",
        hex(&files[1].1),
        hex(&files[0].1),
        files[0].0
    )
    .into_bytes();
    let mut builder = tar::Builder::new(Vec::new());
    for (name, bytes) in &files {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, name, &bytes[..])
            .expect("packs");
    }
    let resigned = dir.path().join("hrs-resigned.tar");
    std::fs::write(&resigned, builder.into_inner().expect("packs")).expect("writes");
    let err = crate::offline::read_bundle_file(&resigned).expect_err("refused");
    assert!(
        matches!(err, crate::offline::OfflineError::Tampered { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("digest"), "{err}");
}

#[test]
fn outbound_filters_by_level_and_hashes_sites_below_full() {
    let sets = vec![
        synthetic_set("B", Level::Basic, 1),
        synthetic_set("E", Level::Enhanced, 1),
        synthetic_set("F", Level::Full, 1),
    ];
    let period = merged("2026-W48", Level::Full, sets);

    let enhanced = outbound(&period, &policy(Level::Enhanced));
    assert_eq!(enhanced.level, "Enhanced");
    for site in &enhanced.sites {
        let ids: Vec<&str> = site.results.iter().map(|r| r.query_id.as_str()).collect();
        assert_eq!(ids, ["B", "E"]);
        assert!(site.run_id.is_empty());
        assert_eq!(site.sequence, 0);
    }
    let names: Vec<&str> = enhanced.sites.iter().map(|s| s.site.as_str()).collect();
    assert_eq!(names, [hash_value("P01"), hash_value("P02")]);
    assert_eq!(enhanced.missing_sites, [hash_value("P03")]);
    assert_eq!(enhanced.digest, merged_digest(&enhanced));
    assert_ne!(enhanced.digest, period.digest);

    let full = outbound(&period, &policy(Level::Full));
    let names: Vec<&str> = full.sites.iter().map(|s| s.site.as_str()).collect();
    assert_eq!(names, ["P01", "P02"]);
    assert_eq!(full.missing_sites, ["P03"]);
    assert_eq!(full.sites[0].results.len(), 3);
    assert!(full.sites[0].run_id.is_empty());

    let basic = outbound(&period, &policy(Level::Basic));
    assert_eq!(basic.level, "Basic");
    assert_eq!(basic.sites[0].results.len(), 1);

    // Configuring Full later does not send more than was collected, nor sites in clear.
    let collected_enhanced = merged(
        "2026-W48",
        Level::Enhanced,
        vec![synthetic_set("B", Level::Basic, 1)],
    );
    let out = outbound(&collected_enhanced, &policy(Level::Full));
    assert_eq!(out.level, "Enhanced");
    assert_eq!(out.sites[0].site, hash_value("P01"));

    // A set whose level is not a level never leaves.
    let mut odd = period.clone();
    odd.sites[0].results[0].level = "Secret".into();
    let out = outbound(&odd, &policy(Level::Full));
    assert_eq!(out.sites[0].results.len(), 2);
}

#[tokio::test]
async fn export_writes_what_would_leave_at_the_level_configured_now() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = point_config(dir.path(), Mode::Offline, None);
    config.source = Some(dir.path().join("cp.toml"));
    let dest = dir.path().join("review/export.csv");

    let err = export_csv(&config, &dest).expect_err("no store yet");
    let text = err.to_string();
    assert!(
        text.contains("no connection point store at") && text.contains("cp.toml"),
        "{text}"
    );
    assert!(!config.store.exists(), "export must not create the store");

    let sets = vec![
        synthetic_set("B", Level::Basic, 2),
        synthetic_set("E", Level::Enhanced, 3),
        synthetic_set("F", Level::Full, 5),
    ];
    let w47 = merged("2026-W47", Level::Full, sets.clone());
    let w48 = merged("2026-W48", Level::Full, sets);
    {
        let store = SqliteOutbox::open(&config.store).expect("opens");
        assert_eq!(keep(&store, &w48, AT).await.expect("offers"), Offered::New);
        assert_eq!(keep(&store, &w47, AT).await.expect("offers"), Offered::New);
        assert_eq!(
            keep(&store, &w47, AT).await.expect("offers"),
            Offered::Duplicate
        );
    }

    let csv_at = |level: Level| {
        let mut rows = Vec::new();
        for period in [&w47, &w48] {
            let policy = Policy {
                mode: Mode::Offline,
                ..policy(level)
            };
            rows.extend(hrs_core::report::flatten(&outbound(period, &policy)));
        }
        let mut out = Vec::new();
        hrs_core::report::write(&mut out, &rows, hrs_core::report::Format::Csv).expect("writes");
        (rows.len(), String::from_utf8(out).expect("utf-8"))
    };

    let summary = export_csv(&config, &dest).expect("exports");
    let (rows, expected) = csv_at(Level::Enhanced);
    assert_eq!(summary, ExportSummary { periods: 2, rows });
    // Per period: the hierarchy row, then per site the collector's run row, one row per
    // query it ran (B and E), and the data rows.
    assert_eq!(rows, 2 * (1 + 2 * (1 + 2 + 2 + 3)));
    let written = std::fs::read_to_string(&dest).expect("reads export");
    assert_eq!(written, expected);
    assert_eq!(written.lines().count(), rows + 1);
    assert!(!written.contains("P01"));
    assert_eq!(export_rows(&config).expect("rows").len(), rows);

    config.level = Level::Basic;
    let summary = export_csv(&config, &dest).expect("exports");
    let (rows, expected) = csv_at(Level::Basic);
    assert_eq!(summary, ExportSummary { periods: 2, rows });
    assert_eq!(rows, 2 * (1 + 2 * (1 + 1 + 2)));
    assert_eq!(
        std::fs::read_to_string(&dest).expect("reads export"),
        expected
    );

    let states = periods(&config).expect("reads states");
    let names: Vec<String> = states.iter().map(|s| s.period.to_string()).collect();
    assert_eq!(names, ["2026-W47", "2026-W48"]);
    assert!(states.iter().all(|s| s.state == State::Pending));
}

#[tokio::test]
async fn a_delivery_recorded_for_an_older_version_does_not_mark_the_newer_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteOutbox::open(&dir.path().join("cp.sqlite")).expect("opens");
    let older = merged(
        "2026-W48",
        Level::Basic,
        vec![synthetic_set("B", Level::Basic, 1)],
    );
    let newer = merged(
        "2026-W48",
        Level::Basic,
        vec![synthetic_set("B", Level::Basic, 2)],
    );
    assert_eq!(
        keep(&store, &older, AT).await.expect("offers"),
        Offered::New
    );
    assert_eq!(
        keep(&store, &newer, AT).await.expect("offers"),
        Offered::Replaced
    );
    assert!(
        !store
            .mark_submitted(&week("2026-W48"), &older.digest, "x", AT)
            .await
            .expect("marks")
    );
    assert_eq!(store.pending().await.expect("pending"), vec![newer.clone()]);
    assert!(
        store
            .mark_submitted(&week("2026-W48"), &newer.digest, "y", AT)
            .await
            .expect("marks")
    );
    assert!(store.pending().await.expect("pending").is_empty());
    let states = store.states().await.expect("states");
    assert_eq!(states[0].submission_id.as_deref(), Some("y"));
    assert_eq!(store.stored().await.expect("stored"), vec![newer]);
}

/// Every text column of `table` in the outbox file at `path`, first row, by name.
fn raw_row(path: &Path, sql: &str) -> Vec<Option<String>> {
    let conn = rusqlite::Connection::open(path).expect("opens the file");
    conn.query_row(sql, [], |r| {
        (0..r.as_ref().column_count())
            .map(|i| r.get(i))
            .collect::<Result<Vec<_>, _>>()
    })
    .expect("reads the row")
}

#[tokio::test]
async fn times_are_stored_as_before_and_read_back_typed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cp.sqlite");
    let store = SqliteOutbox::open(&path).expect("opens");
    let period = merged(
        "2026-W48",
        Level::Basic,
        vec![synthetic_set("B", Level::Basic, 1)],
    );
    // A fraction of a second is not kept: times are stored to the second, as always.
    let at = AT + time::Duration::milliseconds(250);
    keep(&store, &period, at).await.expect("offers");
    assert!(
        store
            .mark_submitted(&week("2026-W48"), &period.digest, "s1", at + HOUR)
            .await
            .expect("marks")
    );
    let check = CheckRecord {
        last_check_at: at,
        last_error: Some("refused".into()),
        next_check_at: at + HOUR,
    };
    store.record_check(&check).await.expect("records");
    let manifest = pb::UpdateManifest {
        hierarchy_hash: hierarchy().hashed(),
        ..Default::default()
    };
    store
        .record_manifest(&manifest, ManifestSource::Online, at)
        .await
        .expect("keeps");

    // The text is what earlier versions wrote, so their files still read.
    assert_eq!(
        raw_row(
            &path,
            "SELECT period, received_at, answered_at FROM periods"
        ),
        [
            Some("2026-W48".to_owned()),
            Some("2026-11-30T06:00:00Z".to_owned()),
            Some("2026-11-30T07:00:00Z".to_owned())
        ]
    );
    assert_eq!(
        raw_row(
            &path,
            "SELECT last_check_at, next_check_at FROM update_checks"
        ),
        [
            Some("2026-11-30T06:00:00Z".to_owned()),
            Some("2026-11-30T07:00:00Z".to_owned())
        ]
    );
    assert_eq!(
        raw_row(&path, "SELECT received_at FROM manifests"),
        [Some("2026-11-30T06:00:00Z".to_owned())]
    );

    let states = store.states().await.expect("states");
    assert_eq!(states[0].period, week("2026-W48"));
    assert_eq!(states[0].received_at, AT);
    assert_eq!(states[0].answered_at, Some(AT + HOUR));
    assert_eq!(
        store.last_check().await.expect("reads"),
        Some(CheckRecord {
            last_check_at: AT,
            last_error: Some("refused".into()),
            next_check_at: AT + HOUR,
        })
    );
    let kept = store
        .latest_manifest_blocking()
        .expect("reads")
        .expect("a manifest");
    assert_eq!((kept.received_at, kept.manifest), (AT, manifest));
}

/// An hour, for times in the store tests.
const HOUR: time::Duration = time::Duration::hours(1);

#[tokio::test]
async fn a_stored_value_that_does_not_parse_is_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cp.sqlite");
    let store = SqliteOutbox::open(&path).expect("opens");
    let period = merged(
        "2026-W48",
        Level::Basic,
        vec![synthetic_set("B", Level::Basic, 1)],
    );
    keep(&store, &period, AT).await.expect("offers");
    store
        .record_check(&CheckRecord {
            last_check_at: AT,
            last_error: None,
            next_check_at: AT + HOUR,
        })
        .await
        .expect("records");
    store
        .record_manifest(&pb::UpdateManifest::default(), ManifestSource::Import, AT)
        .await
        .expect("keeps");
    let edit = |sql: &str| {
        rusqlite::Connection::open(&path)
            .expect("opens the file")
            .execute(sql, [])
            .expect("edits");
    };
    fn corrupt<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
        match result {
            Err(StoreError::Corrupt(problem)) => assert!(problem.contains(what), "{problem}"),
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    edit("UPDATE periods SET received_at = 'Monday morning'");
    corrupt(store.states().await, "Monday morning");
    edit("UPDATE periods SET received_at = '2026-11-30T06:00:00Z', answered_at = '2026-11-30'");
    corrupt(store.states_blocking(), "2026-11-30");
    edit("UPDATE periods SET answered_at = NULL, period = '2026-48'");
    corrupt(store.states().await, "2026-48");
    edit("UPDATE update_checks SET next_check_at = 'soon'");
    corrupt(store.last_check().await, "soon");
    edit("UPDATE manifests SET received_at = ''");
    corrupt(store.latest_manifest_blocking(), "stored time");
}

/// A valid Full-level period of two sites whose encoding is larger than any message may
/// be: one catalog query's set with `rows` rows, each carrying `text_bytes` of text in a
/// column the catalog does not hash.
fn large_period(rows: usize, text_bytes: usize) -> pb::MergedPeriod {
    let catalog = Catalog::builtin().expect("builtin catalog");
    let (query, column) = catalog
        .at_level(Level::Full)
        .find_map(|query| {
            // Output columns: the hierarchy hash, then every column not dropped.
            query
                .columns
                .iter()
                .filter(|c| c.privacy != hrs_core::Privacy::Drop)
                .position(|c| c.ty == ColumnType::Text && c.privacy != hrs_core::Privacy::Hash)
                .map(|column| (query.clone(), column + 1))
        })
        .expect("a Full query with a text column kept in clear");
    let mut set = catalog_set(&query);
    let row = set.rows[0].clone();
    let long: pb::Value = (&Value::Text("x".repeat(text_bytes))).into();
    set.rows = (0..rows)
        .map(|_| {
            let mut row = row.clone();
            row.values[column] = long.clone();
            row
        })
        .collect();
    merged("2026-W48", Level::Full, vec![set])
}

#[tokio::test]
async fn a_period_larger_than_a_message_arrives_in_chunks_and_resumes_after_a_cut() {
    use hrs_core::bytes::RunBytes;
    use hrs_rpc::chunks::{DEFAULT_CHUNK_BYTES, offer_period_chunks, period_chunks, period_offer};

    let period = large_period(4_400, 8 << 10);
    let encoded = period.encode_to_vec();
    assert!(encoded.len() > MAX_MESSAGE_BYTES, "{} bytes", encoded.len());
    let source: Arc<dyn RunBytes> = Arc::new(encoded);
    let base = pb::PeriodOffer {
        hierarchy_hash: period.hierarchy_hash.clone(),
        period: period.period.clone(),
        digest: period.digest.clone(),
        ..Default::default()
    };
    let offer = period_offer(&source, base.clone(), DEFAULT_CHUNK_BYTES)
        .await
        .expect("hashes");

    let dir = tempfile::tempdir().expect("tempdir");
    let config = point_config(dir.path(), Mode::Offline, None);
    let server = start_point(&config).await;
    let mut client = point_client(server.addr).await;

    // The first stream ends after ten chunks: what arrived is held, the offer answered as
    // incomplete, nothing stored.
    let (full, reader) = period_chunks(Arc::clone(&source), offer.clone(), 0, DEFAULT_CHUNK_BYTES);
    let cut = tokio_stream::StreamExt::take(full, 10);
    let status = client
        .offer_period_chunks(cut)
        .await
        .expect_err("an incomplete period is not stored");
    assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
    assert!(status.message().contains("resume"), "{status:?}");
    drop(reader);
    let resume = client
        .resume_period(pb::ResumePeriodRequest {
            offer: Some(offer.clone()),
        })
        .await
        .expect("resumes")
        .into_inner();
    assert_eq!(resume.held_bytes, 10 * DEFAULT_CHUNK_BYTES as u64);
    assert!(resume.committed.is_none());

    // Offered again, it goes on from the held bytes and is stored whole.
    let answer = offer_period_chunks(
        &mut client,
        base.clone(),
        Arc::clone(&source),
        DEFAULT_CHUNK_BYTES,
    )
    .await
    .expect("stored");
    assert!(!answer.duplicate);
    let again = offer_period_chunks(&mut client, base, Arc::clone(&source), DEFAULT_CHUNK_BYTES)
        .await
        .expect("answered");
    assert!(again.duplicate, "a stored period is a duplicate");
    let outbox = SqliteOutbox::open(&config.store).expect("opens");
    let stored = outbox.stored_blocking().expect("reads");
    assert_eq!(stored, [period]);
    server.stop().await;
}

/// A report that stops a step as a kill would, once the progress labelled `label` reaches
/// `at` units (at its start, for 0).
struct CutAt {
    label: &'static str,
    at: u64,
}

/// The progress of a step [`CutAt`] stops.
struct CutProgress {
    at: Option<u64>,
}

impl crate::offline::Report for CutAt {
    fn line(&self, _text: &str) {}
    fn progress(&self, label: &str, _total: u64) -> Box<dyn crate::offline::Progress> {
        let at = (label == self.label).then_some(self.at);
        assert!(at != Some(0), "cut at the start of {label}");
        Box::new(CutProgress { at })
    }
}

impl crate::offline::Progress for CutProgress {
    fn set(&mut self, done: u64) {
        if self.at.is_some_and(|at| done >= at) {
            panic!("cut at {done}");
        }
    }
    fn finish(&mut self) {}
}

/// Runs a step that a [`CutAt`] stops, and returns once it has stopped.
fn cut_short<T>(step: impl FnOnce() -> T) {
    let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(step));
    assert!(stopped.is_err(), "the step was not cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_period_larger_than_a_message_goes_out_offline_and_each_hop_resumes_after_a_cut() {
    use crate::offline::{self, ConnectOptions, Silent};
    use hrs_core::bytes::RunBytes as _;

    let dir = tempfile::tempdir().expect("tempdir");
    let (intake, intake_store) = start_intake(dir.path()).await;
    let config = point_config(dir.path(), Mode::Offline, Some(intake.addr));
    let period = large_period(5_000, 8 << 10);
    let store = SqliteOutbox::open(&config.store).expect("opens");
    keep(&store, &period, AT).await.expect("stored");
    drop(store);
    // The same store, for a prepare that is never cut.
    let uncut_config = ConnectionPointConfig {
        store: dir.path().join("uncut.sqlite"),
        ..config.clone()
    };
    std::fs::copy(&config.store, &uncut_config.store).expect("copies the store");

    // prepare: cut after 72 MiB of the bundle were written; the next prepare goes on from
    // the checkpoint at 64 MiB and writes the very bundle an uncut prepare writes.
    let media = dir.path().join("media");
    cut_short(|| {
        offline::prepare(
            &config,
            &media,
            &CutAt {
                label: "writing the bundle",
                at: 72 << 20,
            },
            &clock(),
        )
    });
    assert!(offline::find_bundles(&media).is_err(), "no bundle yet");
    let states = crate::periods(&config).expect("reads");
    assert_eq!(states[0].state, State::Pending);
    let prepared = offline::prepare(&config, &media, &Silent, &clock()).expect("prepares");
    assert_eq!(
        prepared.resumed_from,
        Some(512 + crate::bundle::CHECKPOINT_BYTES)
    );
    let path = prepared.path.expect("a bundle");
    let uncut = offline::prepare(&uncut_config, &dir.path().join("uncut"), &Silent, &clock())
        .expect("prepares");
    assert_eq!(uncut.resumed_from, None);
    let bytes = std::fs::read(&path).expect("reads");
    assert!(
        bytes == std::fs::read(uncut.path.expect("a bundle")).expect("reads"),
        "a resumed bundle is the bundle an uncut prepare writes"
    );
    drop(bytes);
    let bundle = offline::read_bundle_file(&path).expect("verifies");
    let size = bundle.periods[0].size();
    assert!(size > MAX_MESSAGE_BYTES as u64, "{size} bytes");

    // connect: the link to the intake is cut part-way through the period; the next
    // connect goes on where the intake's held bytes end.
    let cutting = hrs_chaos::Proxy::start(
        intake.addr,
        hrs_chaos::Faults {
            cut_chance: 1.0,
            cut_after_max_bytes: size / 2,
            ..hrs_chaos::Faults::none()
        },
        3,
    )
    .await
    .expect("starts");
    let downloads = dir.path().join("downloads");
    let options = |intake: std::net::SocketAddr| ConnectOptions {
        updates_dest: downloads.clone(),
        download: "all".into(),
        intake: Some(format!("http://{intake}")),
        intake_ca: None,
        token: None,
        proxy: None,
        ca: None,
        allow_unsigned: true,
    };
    let summary = offline::connect(&media, &options(cutting.addr()), &Silent, &clock())
        .await
        .expect("runs");
    assert!(summary.connected[0].acknowledged.is_empty(), "{summary:?}");
    assert_eq!(
        cutting
            .counters()
            .cut
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let entry = &bundle.manifest.periods[0];
    let offer = pb::PeriodOffer {
        hierarchy_hash: bundle.manifest.hierarchy_hash.clone(),
        period: entry.period.clone(),
        digest: entry.digest.clone(),
        size,
        sha256: entry.sha256.clone(),
        ..Default::default()
    };
    let mut intake_client =
        hrs_rpc::v1::intake_client::IntakeClient::connect(format!("http://{}", intake.addr))
            .await
            .expect("connects");
    let held = intake_client
        .resume_submission(pb::ResumePeriodRequest {
            offer: Some(offer.clone()),
        })
        .await
        .expect("answers")
        .into_inner();
    assert!(held.committed.is_none());
    assert!(
        held.held_bytes > 0 && held.held_bytes < size,
        "held {} of {size}",
        held.held_bytes
    );
    let summary = offline::connect(&media, &options(intake.addr), &Silent, &clock())
        .await
        .expect("runs");
    assert!(summary.failed.is_empty(), "{:?}", summary.failed);
    assert_eq!(
        summary.connected[0].acknowledged,
        std::slice::from_ref(&entry.period)
    );
    let intake_store = SqliteIntake::open(&intake_store).expect("opens");
    let submissions = intake_store.submissions().await.expect("lists");
    assert_eq!(submissions.len(), 1);
    let held = intake_store
        .payload(&submissions[0].submission_id)
        .await
        .expect("reads")
        .expect("held");
    assert_eq!(
        [held],
        bundle.decoded().expect("decodes")[..],
        "the intake holds what the bundle carries"
    );

    // import: cut before anything changed; the next import marks the period sent.
    cut_short(|| {
        offline::import(
            &config,
            &downloads,
            &CutAt {
                label: "verifying packages",
                at: 0,
            },
            &clock(),
        )
    });
    assert_eq!(
        crate::periods(&config).expect("reads")[0].state,
        State::Bundled
    );
    let imported = offline::import(&config, &downloads, &Silent, &clock()).expect("imports");
    assert_eq!(imported.outcome.accepted, [week("2026-W48")]);
    let states = crate::periods(&config).expect("reads");
    assert_eq!(states[0].state, State::Submitted);
    assert_eq!(
        states[0].submission_id.as_deref(),
        Some(submissions[0].submission_id.as_str())
    );
    intake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_edited_by_hand_imports_nothing() {
    use crate::offline::{self, ConnectOptions, OfflineError, Silent};

    let dir = tempfile::tempdir().expect("tempdir");
    let (intake, _) = start_intake(dir.path()).await;
    let config = point_config(dir.path(), Mode::Offline, Some(intake.addr));
    let store = SqliteOutbox::open(&config.store).expect("opens");
    keep(&store, &catalog_period("2026-W48"), AT)
        .await
        .expect("stored");
    let media = dir.path().join("media");
    offline::prepare(&config, &media, &Silent, &clock()).expect("prepares");
    let downloads = dir.path().join("downloads");
    let options = ConnectOptions {
        updates_dest: downloads.clone(),
        download: "all".into(),
        intake: None,
        intake_ca: None,
        token: None,
        proxy: None,
        ca: None,
        allow_unsigned: true,
    };
    let summary = offline::connect(&media, &options, &Silent, &clock())
        .await
        .expect("connects");
    let receipt = summary.connected[0].receipt.clone();
    let written = std::fs::read_to_string(&receipt).expect("reads");

    // The acknowledged period renamed, as a careless edit would: nothing is imported.
    std::fs::write(&receipt, written.replace("2026-W48", "2026-W47")).expect("edits");
    let err = offline::import(&config, &downloads, &Silent, &clock()).expect_err("refused");
    assert!(matches!(err, OfflineError::ReceiptTampered { .. }), "{err}");
    assert!(err.to_string().contains("sha256"), "{err}");
    assert_eq!(
        crate::periods(&config).expect("reads")[0].state,
        State::Bundled
    );

    std::fs::write(&receipt, written).expect("restores");
    let imported = offline::import(&config, &downloads, &Silent, &clock()).expect("imports");
    assert_eq!(imported.outcome.accepted, [week("2026-W48")]);
    intake.stop().await;
}

#[tokio::test]
async fn a_chunked_period_whose_bytes_are_not_its_offer_is_refused_naming_why() {
    use hrs_core::bytes::RunBytes;
    use hrs_rpc::chunks::{DEFAULT_CHUNK_BYTES, offer_period_chunks, period_chunks, period_offer};

    let dir = tempfile::tempdir().expect("tempdir");
    let config = point_config(dir.path(), Mode::Offline, None);
    let server = start_point(&config).await;
    let mut client = point_client(server.addr).await;
    let period = catalog_period("2026-W48");
    let base = pb::PeriodOffer {
        hierarchy_hash: period.hierarchy_hash.clone(),
        period: period.period.clone(),
        digest: period.digest.clone(),
        ..Default::default()
    };
    let source: Arc<dyn RunBytes> = Arc::new(period.encode_to_vec());

    // Bytes that hash to something else than the offer says.
    let offer = period_offer(&source, base.clone(), DEFAULT_CHUNK_BYTES)
        .await
        .expect("hashes");
    let lying = pb::PeriodOffer {
        sha256: "0".repeat(64),
        ..offer
    };
    let (chunks, _reader) = period_chunks(Arc::clone(&source), lying, 0, DEFAULT_CHUNK_BYTES);
    let status = client
        .offer_period_chunks(chunks)
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("hash to"), "{status:?}");

    // An offer naming another digest than the period carries.
    let other = pb::PeriodOffer {
        digest: "ab".repeat(32),
        ..base.clone()
    };
    let status = offer_period_chunks(&mut client, other, Arc::clone(&source), DEFAULT_CHUNK_BYTES)
        .await
        .expect_err("refused");
    assert!(status.to_string().contains("digest"), "{status}");

    // Another hierarchy's period is refused before a byte is kept.
    let foreign = pb::PeriodOffer {
        hierarchy_hash: OTHER_HIERARCHY
            .parse::<HierarchyId>()
            .expect("guid")
            .hashed(),
        ..base
    };
    let status = offer_period_chunks(&mut client, foreign, source, DEFAULT_CHUNK_BYTES)
        .await
        .expect_err("refused");
    assert!(status.to_string().contains("hierarchy"), "{status}");
    let outbox = SqliteOutbox::open(&config.store).expect("opens");
    assert!(outbox.stored_blocking().expect("reads").is_empty());
    let staged: i64 = outbox_count(&config.store, "SELECT COUNT(*) FROM staged_period_chunks");
    assert_eq!(staged, 0, "refused uploads leave no chunks behind");
    server.stop().await;
}

/// Runs a counting query on the outbox file.
fn outbox_count(path: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(path)
        .expect("opens")
        .query_row(sql, [], |r| r.get(0))
        .expect("counts")
}

#[tokio::test]
async fn a_period_stored_before_payloads_had_their_own_table_is_still_read_and_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cp.sqlite");
    let outbox = SqliteOutbox::open(&path).expect("opens");
    let period = catalog_period("2026-W48");
    // As an earlier version wrote it: the payload in the period's own row.
    rusqlite::Connection::open(&path)
        .expect("opens")
        .execute(
            "INSERT INTO periods (period, digest, level, payload, received_at, state)
             VALUES (?1, ?2, 'Full', ?3, '2026-11-30T06:00:00Z', 'pending')",
            rusqlite::params![period.period, period.digest, period.encode_to_vec()],
        )
        .expect("writes the old layout");
    assert_eq!(
        outbox.stored_blocking().expect("reads"),
        std::slice::from_ref(&period)
    );
    let unsent = outbox.unsent().await.expect("lists");
    assert_eq!(unsent.len(), 1);
    let bytes = outbox.payload(&unsent[0]);
    let read = bytes.read_at(0, unsent[0].size as usize).expect("reads");
    assert_eq!(read, period.encode_to_vec());
}

/// Asserts that a call was refused with `code`, showing its message when it was not.
fn refused_with<T: std::fmt::Debug>(answer: Result<T, tonic::Status>, code: tonic::Code) {
    let status = answer.expect_err("refused");
    assert_eq!(status.code(), code, "{}", status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_other_than_the_aggregator_is_refused_before_any_message_of_its_call_is_read() {
    use hrs_core::clock::{Clock as _, SystemClock};
    use hrs_pki::{Identity, Role};
    use hrs_rpc::chunks::{DEFAULT_CHUNK_BYTES, offer_period_chunks};

    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    // TLS judges certificates by the system's clock, so they are issued by it.
    hrs_pki::init(&pki, "test", 30, SystemClock.now()).expect("CA");
    let issue = |identity: Identity| {
        let issued = hrs_pki::issue(
            &pki,
            &identity,
            &["127.0.0.1".into()],
            30,
            SystemClock.now(),
        )
        .expect("issues");
        hrs_core::config::TlsFiles {
            cert: issued.cert,
            key: issued.key,
            ca: pki.join("ca.pem"),
        }
    };
    let server = issue(Identity::Role(Role::ConnectionPoint));
    let aggregator = issue(Identity::Role(Role::Aggregator));
    let site = issue(Identity::Site("P01".parse().expect("site code")));
    let mut config = point_config(dir.path(), Mode::Offline, None);
    config.tls = Some(server);
    config.limits.max_message_mb = 1;
    let point = start_point(&config).await;
    let client = |files: &hrs_core::config::TlsFiles| {
        let url = format!("https://{}", point.addr);
        let files = files.clone();
        async move {
            let channel = hrs_rpc::tls::endpoint(&url, Some(&files))
                .expect("endpoint")
                .connect()
                .await
                .expect("connects");
            ConnectionPointClient::new(channel)
        }
    };
    let period = catalog_period("2026-W48");
    let source: Arc<dyn hrs_core::bytes::RunBytes> = Arc::new(period.encode_to_vec());
    let offer = hrs_rpc::chunks::period_offer(&source, offer_of(&period), DEFAULT_CHUNK_BYTES)
        .await
        .expect("hashes");
    // Messages beyond max_message_mb, which would be refused `OutOfRange` once read.
    let oversize_resume = || pb::ResumePeriodRequest {
        offer: Some(pb::PeriodOffer {
            client_version: "v".repeat(2 << 20),
            ..offer.clone()
        }),
    };
    let oversize_chunk = || pb::PeriodChunk {
        offer: Some(offer.clone()),
        offset: 0,
        data: vec![0; 2 << 20],
    };

    // A site's certificate: a whole, valid period is refused, and so are messages too
    // large to read, before they are read.
    let mut by_site = client(&site).await;
    let status = offer_period_chunks(
        &mut by_site,
        offer_of(&period),
        Arc::clone(&source),
        DEFAULT_CHUNK_BYTES,
    )
    .await
    .expect_err("a site may not offer periods");
    assert!(
        matches!(&status, hrs_rpc::chunks::ChunkedPushError::Status(s) if s.code() == tonic::Code::PermissionDenied),
        "{status:?}"
    );
    refused_with(
        by_site
            .offer_period_chunks(tokio_stream::iter([oversize_chunk()]))
            .await,
        tonic::Code::PermissionDenied,
    );
    refused_with(
        by_site.resume_period(oversize_resume()).await,
        tonic::Code::PermissionDenied,
    );
    let outbox = SqliteOutbox::open(&config.store).expect("opens");
    assert!(outbox.stored_blocking().expect("reads").is_empty());
    for table in ["staged_periods", "staged_period_chunks"] {
        let rows = outbox_count(&config.store, &format!("SELECT COUNT(*) FROM {table}"));
        assert_eq!(rows, 0, "{table}: refused calls stage nothing");
    }

    // The aggregator's certificate: the same resume is read, and refused for its size;
    // the period is stored.
    let mut by_aggregator = client(&aggregator).await;
    refused_with(
        by_aggregator.resume_period(oversize_resume()).await,
        tonic::Code::OutOfRange,
    );
    let answer = offer_period_chunks(
        &mut by_aggregator,
        offer_of(&period),
        source,
        DEFAULT_CHUNK_BYTES,
    )
    .await
    .expect("the aggregator offers");
    assert!(!answer.duplicate);
    assert_eq!(outbox.stored_blocking().expect("reads"), [period]);

    drop((by_site, by_aggregator));
    point.stop().await;
}

/// Certificates valid from 2000 to 2099: TLS judges them by the system's clock and the
/// signatures by the pinned one, so they hold on any date either reads.
const PKI_FROM: time::OffsetDateTime = time::macros::datetime!(2000-01-01 00:00 UTC);
const PKI_UNTIL: time::OffsetDateTime = time::macros::datetime!(2099-12-31 00:00 UTC);

/// A hierarchy PKI in `dir`: its CA, and a certificate of `identity` for 127.0.0.1.
fn pki_for(dir: &Path, identities: &[hrs_pki::Identity]) -> Vec<hrs_core::config::TlsFiles> {
    // 36_500 days from 2000 reach past PKI_UNTIL.
    hrs_pki::init(dir, "test", 36_500, PKI_FROM).expect("CA");
    identities
        .iter()
        .map(|identity| {
            let issued =
                hrs_pki::issue_valid(dir, identity, &["127.0.0.1".into()], PKI_FROM, PKI_UNTIL)
                    .expect("issues");
            hrs_core::config::TlsFiles {
                cert: issued.cert,
                key: issued.key,
                ca: dir.join("ca.pem"),
            }
        })
        .collect()
}

/// An offline hierarchy with a PKI: an intake serving TLS (its answers signed with its
/// certificate's key), a connection point whose `[tls]` certificate signs its bundles, one
/// period stored, and `connect`'s options (the hierarchy's CA, the hierarchy's token).
struct Signing {
    dir: tempfile::TempDir,
    intake: Server<hrs_intake::IntakeError>,
    config: ConnectionPointConfig,
    options: crate::offline::ConnectOptions,
    /// The connection point's certificate and key, for forging with the right files.
    point: hrs_core::config::TlsFiles,
}

async fn signing() -> Signing {
    use hrs_pki::{Identity, Role};
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    let point = Identity::ConnectionPoint {
        hierarchy: hierarchy().hashed(),
    };
    let files = pki_for(&pki, &[Identity::Role(Role::Intake), point]);
    let token = hrs_core::token::Token::generate();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("local addr");
    let mut intake_config = IntakeConfig::new(addr, dir.path().join("intake.sqlite"));
    intake_config.tls = Some(files[0].clone());
    intake_config.hierarchy_tokens = vec![hrs_intake::HierarchyToken {
        hierarchy: hierarchy().hashed(),
        token_sha256: token.fingerprint(),
    }];
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(hrs_intake::serve_with_clock(
        intake_config,
        listener,
        async {
            drop(rx.await);
        },
        clock().shared(),
    ));
    let mut config = point_config(dir.path(), Mode::Offline, None);
    config.intake = Some(format!("https://{addr}"));
    config.tls = Some(files[1].clone());
    let store = SqliteOutbox::open(&config.store).expect("opens");
    keep(&store, &catalog_period("2026-W48"), AT)
        .await
        .expect("stored");
    let options = crate::offline::ConnectOptions {
        updates_dest: dir.path().join("downloads"),
        download: "all".into(),
        intake: config.intake.clone(),
        intake_ca: Some(pki.join("ca.pem")),
        token: Some(token),
        proxy: None,
        ca: Some(pki.join("ca.pem")),
        allow_unsigned: false,
    };
    Signing {
        dir,
        intake: Server { addr, stop, task },
        config,
        options,
        point: files[1].clone(),
    }
}

/// Every file of the bundle at `path`, in order.
fn unpack(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut archive = tar::Archive::new(std::fs::File::open(path).expect("opens"));
    for entry in archive.entries().expect("lists") {
        let mut entry = entry.expect("reads");
        let name = entry.path().expect("named").to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).expect("reads");
        files.push((name, bytes));
    }
    files
}

/// A tar of `files` at `path`.
fn pack(path: &Path, files: &[(String, Vec<u8>)]) {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, bytes) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, name, &bytes[..])
            .expect("packs");
    }
    std::fs::create_dir_all(path.parent().expect("a folder")).expect("folder");
    std::fs::write(path, builder.into_inner().expect("packs")).expect("writes");
}

/// The bundle's files with one value of its period changed and every digest and checksum
/// recomputed to match, as a careful forger would: what only the signature still shows.
fn rewritten(files: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    let hex = crate::bundle::sha256_hex;
    let mut files = files.to_vec();
    let mut period = pb::MergedPeriod::decode(&files[0].1[..]).expect("decodes");
    let value = &mut period.sites[0].results[0].rows[0].values[1];
    *value = match Value::from(&*value) {
        Value::Text(text) => (&Value::Text(format!("{text}x"))).into(),
        Value::Int(n) => (&Value::Int(n + 1)).into(),
        other => panic!("an unexpected value {other:?}"),
    };
    period.digest = merged_digest(&period);
    files[0].1 = period.encode_to_vec();
    let mut manifest: crate::offline::BundleManifest =
        serde_json::from_slice(&files[1].1).expect("manifest");
    manifest.periods[0].sha256 = hex(&files[0].1);
    manifest.periods[0].bytes = files[0].1.len() as u64;
    manifest.periods[0].digest = period.digest.clone();
    files[1].1 = serde_json::to_vec_pretty(&manifest).expect("json");
    files[2].1 = format!(
        "{}  manifest.json\n{}  {}\n",
        hex(&files[1].1),
        hex(&files[0].1),
        files[0].0
    )
    .into_bytes();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_rewritten_with_its_checksums_is_refused_by_connect_on_its_signature() {
    use crate::offline::{self, OfflineError, Silent};
    let s = signing().await;
    let media = s.dir.path().join("media");
    let path = offline::prepare(&s.config, &media, &Silent, &clock())
        .expect("prepares")
        .path
        .expect("a bundle");
    let files = unpack(&path);
    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "periods/2026-W48.pb",
            "manifest.json",
            "SHA256SUMS",
            "SHA256SUMS.sig",
            "signer.pem"
        ]
    );

    // Rewritten consistently, the bundle reads as whole; its signature no longer matches.
    let forged_media = s.dir.path().join("forged");
    let forged = forged_media.join("hrs-forged.tar");
    pack(&forged, &rewritten(&files));
    offline::read_bundle_file(&forged).expect("every checksum and digest matches");
    let summary = offline::connect(&forged_media, &s.options, &Silent, &clock())
        .await
        .expect("connect runs");
    assert!(summary.connected.is_empty(), "nothing uploaded");
    let [(_, error)] = summary.failed.as_slice() else {
        panic!("one refusal expected: {:?}", summary.failed);
    };
    assert!(
        matches!(error, OfflineError::BadSignature { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("signature does not match"),
        "{error}"
    );

    // Signed again by the forger's own connection point certificate, from another CA.
    let foreign = pki_for(
        &s.dir.path().join("foreign"),
        &[hrs_pki::Identity::ConnectionPoint {
            hierarchy: hierarchy().hashed(),
        }],
    );
    let signer = hrs_pki::Signer::load(&foreign[0].cert, &foreign[0].key).expect("loads");
    let mut resigned = rewritten(&files);
    resigned[3].1 = signer.sign(&resigned[2].1).expect("signs").signature;
    resigned[4].1 = signer.certificate_pem().into_bytes();
    pack(&forged, &resigned);
    let summary = offline::connect(&forged_media, &s.options, &Silent, &clock())
        .await
        .expect("connect runs");
    assert!(summary.connected.is_empty(), "nothing uploaded");
    let error = summary.failed[0].1.to_string();
    assert!(error.contains("not issued by the CA"), "{error}");

    // Without its signature, it is refused as unsigned.
    pack(&forged, &rewritten(&files)[..3]);
    let summary = offline::connect(&forged_media, &s.options, &Silent, &clock())
        .await
        .expect("connect runs");
    assert!(
        matches!(summary.failed[0].1, OfflineError::BundleUnsigned(_)),
        "{}",
        summary.failed[0].1
    );
    assert!(
        SqliteIntake::open(&s.dir.path().join("intake.sqlite"))
            .expect("opens")
            .last_accepted(&hierarchy().hashed())
            .await
            .expect("reads")
            .is_none(),
        "the intake received nothing forged"
    );

    // The bundle as prepared goes through, and its receipt imports.
    let summary = offline::connect(&media, &s.options, &Silent, &clock())
        .await
        .expect("connects");
    assert!(summary.failed.is_empty(), "{:?}", summary.failed);
    let imported =
        offline::import(&s.config, &s.options.updates_dest, &Silent, &clock()).expect("imports");
    assert_eq!(imported.outcome.accepted, [week("2026-W48")]);
    s.intake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_edited_with_its_sha256_recomputed_imports_nothing() {
    use crate::offline::{self, OfflineError, Receipt, ReceiptSignature, Silent};
    let s = signing().await;
    let media = s.dir.path().join("media");
    offline::prepare(&s.config, &media, &Silent, &clock()).expect("prepares");
    let summary = offline::connect(&media, &s.options, &Silent, &clock())
        .await
        .expect("connects");
    assert!(summary.failed.is_empty(), "{:?}", summary.failed);
    let path = summary.connected[0].receipt.clone();
    let written = std::fs::read_to_string(&path).expect("reads");
    let receipt: Receipt = serde_json::from_str(&written).expect("a receipt");
    assert!(receipt.submissions[0].signature.is_some(), "signed");
    assert!(receipt.manifest_signature.is_some(), "signed");
    let write = |receipt: &Receipt| {
        let mut receipt = receipt.clone();
        receipt.sha256 = receipt.checksum();
        std::fs::write(&path, serde_json::to_vec_pretty(&receipt).expect("json")).expect("edits");
    };
    let refused = |what: &str| {
        let err = offline::import(&s.config, &s.options.updates_dest, &Silent, &clock())
            .expect_err("refused");
        assert!(
            matches!(err, OfflineError::ReceiptTampered { .. }),
            "{what}: {err}"
        );
        assert!(err.to_string().contains("signature"), "{what}: {err}");
        let states = crate::periods(&s.config).expect("reads");
        assert_eq!(states[0].state, State::Bundled, "{what}: nothing changed");
        err
    };

    // The period renamed and the checksum recomputed: the intake acknowledged no such thing.
    let mut edited = receipt.clone();
    edited.submissions[0].period = "2026-W47".into();
    write(&edited);
    refused("period renamed");

    // The manifest given another update, its signature kept.
    let mut edited = receipt.clone();
    edited.manifest.as_mut().expect("a manifest").generated_at = "2030-01-01T00:00:00Z".into();
    write(&edited);
    refused("manifest edited");

    // The manifest signed by the connection point's certificate: another role.
    let manifest_bytes = |receipt: &Receipt| {
        hrs_rpc::signed::manifest_bytes(&pb::UpdateManifest::from(
            receipt.manifest.as_ref().expect("a manifest"),
        ))
    };
    let resigned = |signer: &hrs_pki::Signer| {
        let mut edited = receipt.clone();
        let signed = signer.sign(&manifest_bytes(&receipt)).expect("signs");
        edited.manifest_signature = Some(ReceiptSignature {
            signature: crate::bundle::hex_of(&signed.signature),
            certificate: hrs_pki::sign::der_to_pem(&signed.certificate),
        });
        edited
    };
    let point = hrs_pki::Signer::load(&s.point.cert, &s.point.key).expect("loads");
    write(&resigned(&point));
    let err = refused("signed by another role");
    assert!(err.to_string().contains("not by intake"), "{err}");

    // The manifest signed by an intake certificate of another CA.
    let foreign = pki_for(
        &s.dir.path().join("foreign"),
        &[hrs_pki::Identity::Role(hrs_pki::Role::Intake)],
    );
    let foreign = hrs_pki::Signer::load(&foreign[0].cert, &foreign[0].key).expect("loads");
    write(&resigned(&foreign));
    let err = refused("signed from another CA");
    assert!(err.to_string().contains("not issued by the CA"), "{err}");

    // No signature at all, where this connection point checks them.
    let mut edited = receipt.clone();
    edited.submissions[0].signature = None;
    write(&edited);
    let err = offline::import(&s.config, &s.options.updates_dest, &Silent, &clock())
        .expect_err("refused");
    assert!(matches!(err, OfflineError::ReceiptUnsigned { .. }), "{err}");

    std::fs::write(&path, written).expect("restores");
    let imported =
        offline::import(&s.config, &s.options.updates_dest, &Silent, &clock()).expect("imports");
    assert_eq!(imported.outcome.accepted, [week("2026-W48")]);
    s.intake.stop().await;
}
