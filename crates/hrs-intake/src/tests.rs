//! The intake against real gRPC calls on loopback, and its store on its own.

use std::net::SocketAddr;
use std::path::PathBuf;

use hrs_core::clock::{Clock as _, ManualClock, SystemClock};
use hrs_core::digest::merged_digest;
use hrs_core::{Catalog, ColumnType, HierarchyId, Level, Value};
use hrs_proto::v1 as pb;
use hrs_rpc::v1::intake_client::IntakeClient;
use prost::Message as _;
use time::OffsetDateTime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;

const HIERARCHY: &str = "6f9619ff-8b86-d011-b42d-00c04fc964ff";

fn sample(ty: ColumnType) -> Value {
    match ty {
        // A hash fits every text column, hashed ones included.
        ColumnType::Text => Value::Text(hrs_core::hash::hash_value("sample")),
        ColumnType::Int => Value::Int(7),
        ColumnType::Real => Value::Real(1.5),
        ColumnType::Bool => Value::Bool(true),
    }
}

/// Returns a merged period whose results are one row of the first Basic catalog query at
/// each site, with a correct digest.
fn merged() -> pb::MergedPeriod {
    let catalog = Catalog::builtin().expect("builtin catalog");
    let query = catalog
        .at_level(Level::Basic)
        .next()
        .expect("a Basic query");
    let columns = query.output_columns();
    let set = pb::ResultSet {
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
        duration_ms: 3,
    };
    let hierarchy: HierarchyId = HIERARCHY.parse().expect("guid");
    let mut period = pb::MergedPeriod {
        hierarchy_hash: hierarchy.hashed(),
        period: "2026-W48".into(),
        catalog_version: catalog.version.clone(),
        level: "Enhanced".into(),
        sites: ["site-a", "site-b"]
            .into_iter()
            .map(|site| pb::SiteResults {
                site: hrs_core::hash::hash_value(site),
                run_id: String::new(),
                sequence: 0,
                started_at: "2026-11-30T01:00:00Z".into(),
                finished_at: "2026-11-30T01:00:01Z".into(),
                results: vec![set.clone()],
            })
            .collect(),
        missing_sites: vec![],
        digest: String::new(),
        mode: "online".into(),
    };
    period.digest = merged_digest(&period);
    period
}

/// Where every test intake's clock starts: any fixed time will do.
const NOW: OffsetDateTime = time::macros::datetime!(2026-11-30 06:00 UTC);

struct Running {
    addr: SocketAddr,
    store: PathBuf,
    /// The intake's clock, pinned at [`NOW`] until a test moves it.
    clock: ManualClock,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), IntakeError>>,
    _dir: tempfile::TempDir,
}

async fn start() -> Running {
    start_in(tempfile::tempdir().expect("tempdir"), |_| {}).await
}

/// Starts an intake keeping its store in `dir`, its configuration adjusted by `adjust`.
async fn start_in(dir: tempfile::TempDir, adjust: impl FnOnce(&mut IntakeConfig)) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("local addr");
    let mut config = IntakeConfig::new(addr, dir.path().join("intake.sqlite"));
    adjust(&mut config);
    let store = config.store.clone();
    let (stop, rx) = oneshot::channel::<()>();
    let clock = ManualClock::new(NOW);
    let task = tokio::spawn(serve_with_clock(
        config,
        listener,
        async {
            drop(rx.await);
        },
        clock.shared(),
    ));
    Running {
        addr,
        store,
        clock,
        stop,
        task,
        _dir: dir,
    }
}

impl Running {
    async fn client(&self) -> IntakeClient<tonic::transport::Channel> {
        IntakeClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connects")
    }

    async fn stop(self) {
        self.stop.send(()).expect("server still running");
        self.task.await.expect("joins").expect("serves cleanly");
    }
}

fn request(period: &pb::MergedPeriod) -> pb::SubmitRequest {
    pb::SubmitRequest {
        period: Some(period.clone()),
        client_version: "test".into(),
    }
}

#[tokio::test]
async fn resend_is_a_duplicate_and_bad_input_changes_nothing() {
    let intake = start().await;
    let mut client = intake.client().await;
    let period = merged();

    let first = client
        .submit(request(&period))
        .await
        .expect("accepted")
        .into_inner();
    assert!(!first.duplicate);
    assert_eq!(
        first.submission_id,
        submission_id(&period.hierarchy_hash, &period.period, &period.digest)
    );
    assert_eq!(first.submission_id.len(), 32);

    let again = client
        .submit(request(&period))
        .await
        .expect("re-send accepted")
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(again.submission_id, first.submission_id);
    assert_eq!(again.accepted_at, first.accepted_at);

    let mut tampered = period.clone();
    tampered.digest = "0".repeat(64);
    let status = client
        .submit(request(&tampered))
        .await
        .expect_err("tampered digest refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("digest"), "{}", status.message());

    let mut altered = period.clone();
    altered.sites[0].results[0].rows.clear();
    let status = client
        .submit(request(&altered))
        .await
        .expect_err("content that does not match its digest refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let status = client
        .submit(pb::SubmitRequest {
            period: None,
            client_version: "test".into(),
        })
        .await
        .expect_err("missing period refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), "field period: missing");

    let mut unknown = period.clone();
    unknown.catalog_version = "1999.1.1".into();
    unknown.digest = merged_digest(&unknown);
    let status = client
        .submit(request(&unknown))
        .await
        .expect_err("unknown catalog refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);

    let store = SqliteIntake::open(&intake.store).expect("opens store");
    let stored = store.submissions().await.expect("lists");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].digest, period.digest);
    assert_eq!(stored[0].rows, 2);
    let payload = store
        .payload(&first.submission_id)
        .await
        .expect("reads")
        .expect("stored");
    assert_eq!(payload, period);

    drop(client);
    intake.stop().await;
}

#[tokio::test]
async fn latest_and_prune() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteIntake::open(&dir.path().join("intake.sqlite")).expect("opens");
    let older = merged();
    let mut newer = merged();
    newer.missing_sites = vec![hrs_core::hash::hash_value("site-c")];
    newer.digest = merged_digest(&newer);

    store
        .accept(&older, "test", NOW)
        .await
        .expect("accepts older");
    store
        .accept(&newer, "test", NOW)
        .await
        .expect("accepts newer");
    let latest = store
        .latest(&newer.hierarchy_hash, &week(&newer.period))
        .await
        .expect("reads")
        .expect("present");
    assert_eq!(latest.digest, newer.digest);
    let last = store
        .last_accepted(&newer.hierarchy_hash)
        .await
        .expect("reads")
        .expect("present");
    assert_eq!(
        hrs_core::bytes::sha256_of(last.as_ref(), 1000).expect("reads in ranges"),
        sha256_hex(&newer.encode_to_vec()),
        "the newest submission's payload, read a range at a time"
    );
    assert!(
        store
            .last_accepted("another")
            .await
            .expect("reads")
            .is_none()
    );
    assert!(
        store
            .latest(&newer.hierarchy_hash, &week("2026-W01"))
            .await
            .expect("reads")
            .is_none()
    );

    let now = NOW;
    assert_eq!(
        store
            .prune(now - time::Duration::days(1))
            .await
            .expect("prunes"),
        0
    );
    assert_eq!(
        store
            .prune(now + time::Duration::days(1))
            .await
            .expect("prunes"),
        2
    );
    assert!(store.submissions().await.expect("lists").is_empty());
}

#[tokio::test]
async fn a_submission_is_kept_for_its_retention_by_the_intake_clock_then_deleted() {
    let intake = start_in(tempfile::tempdir().expect("tempdir"), |c| {
        c.retention_days = 30;
    })
    .await;
    let accepted = intake
        .client()
        .await
        .submit(request(&merged()))
        .await
        .expect("accepted")
        .into_inner();
    assert_eq!(accepted.accepted_at, "2026-11-30T06:00:00Z");
    let store = SqliteIntake::open(&intake.store).expect("opens");
    assert_eq!(store.submissions().await.expect("lists").len(), 1);

    // The daily pruning runs on the intake's clock: 31 days on, the submission is gone.
    intake
        .clock
        .advance(std::time::Duration::from_secs(31 * 24 * 3600));
    let mut left = 1;
    for _ in 0..500 {
        left = store.submissions().await.expect("lists").len();
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(left, 0, "a submission outlived its retention");
    intake.stop().await;
}

fn week(text: &str) -> hrs_core::Period {
    text.parse().expect("a period")
}

/// The text columns of the first submission in the store file at `path`.
fn raw_submission(path: &std::path::Path) -> (String, String) {
    rusqlite::Connection::open(path)
        .expect("opens the file")
        .query_row("SELECT period, accepted_at FROM submissions", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("reads the row")
}

#[tokio::test]
async fn stored_times_are_fixed_width_utc_and_read_back_typed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("intake.sqlite");
    let store = SqliteIntake::open(&path).expect("opens");
    let whole = OffsetDateTime::from_unix_timestamp(1_795_000_000).expect("valid");
    // Another offset and a fraction of a second: kept as UTC, to the second.
    let at = (whole + time::Duration::milliseconds(250)).to_offset(time::macros::offset!(+2));
    let accepted = store.accept(&merged(), "test", at).await.expect("accepts");
    assert!(!accepted.duplicate);
    assert_eq!(accepted.accepted_at, whole);
    assert_eq!(accepted.accepted_at.offset(), time::UtcOffset::UTC);
    assert_eq!(
        raw_submission(&path),
        ("2026-W48".to_owned(), "2026-11-18T11:06:40Z".to_owned())
    );

    let again = store
        .accept(&merged(), "test", whole + time::Duration::hours(1))
        .await
        .expect("accepts again");
    assert!(again.duplicate);
    assert_eq!(again.accepted_at, accepted.accepted_at);
    let listed = store.submissions().await.expect("lists");
    assert_eq!(listed[0].period, week("2026-W48"));
    assert_eq!(listed[0].accepted_at, whole);
}

#[tokio::test]
async fn a_stored_value_that_does_not_parse_is_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("intake.sqlite");
    let store = SqliteIntake::open(&path).expect("opens");
    store.accept(&merged(), "test", NOW).await.expect("accepts");
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

    edit("UPDATE submissions SET accepted_at = 'last week'");
    corrupt(store.submissions().await, "last week");
    // A re-send is answered from the stored record, so it reports the damage too.
    corrupt(store.accept(&merged(), "test", NOW).await, "last week");
    edit("UPDATE submissions SET accepted_at = '2026-11-30T06:00:00Z', period = 'W48'");
    corrupt(store.submissions().await, "W48");
}

// Updates: manifests and packages.

/// The site versions of the test hierarchy's first submission.
const SITES_AT: [&str; 2] = ["5.00.9128.1000", "5.00.9122.1018"];

/// Returns a merged period of `period` whose sites (one per version) each report their
/// version in a `B-SITE-LIST` row, with a correct digest.
fn merged_at(period: &str, versions: &[&str]) -> pb::MergedPeriod {
    let catalog = Catalog::builtin().expect("builtin catalog");
    let query = catalog.query(SITE_LIST_QUERY).expect("the site list");
    let columns = query.output_columns();
    let set = |version: &str| pb::ResultSet {
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
                .map(|(name, ty)| {
                    let value = if name == SITE_VERSION_COLUMN {
                        Value::Text(version.into())
                    } else {
                        sample(*ty)
                    };
                    (&value).into()
                })
                .collect(),
        }],
        error: String::new(),
        duration_ms: 2,
    };
    let mut merged = merged();
    merged.period = period.into();
    merged.sites = versions
        .iter()
        .enumerate()
        .map(|(i, version)| pb::SiteResults {
            site: hrs_core::hash::hash_value(&format!("site-{i}")),
            run_id: String::new(),
            sequence: 0,
            started_at: "2026-11-30T01:00:00Z".into(),
            finished_at: "2026-11-30T01:00:01Z".into(),
            results: vec![set(version)],
        })
        .collect();
    merged.digest = merged_digest(&merged);
    merged
}

/// The big package: over two chunks, so chunking shows.
fn big_package() -> Vec<u8> {
    (0..PACKAGE_CHUNK_BYTES * 5 / 2)
        .map(|i| (i % 251) as u8)
        .collect()
}

/// Writes an update catalog and its packages into `dir`: an update that applies to
/// [`SITES_AT`], a hotfix that does, one no site is below, and two gated by
/// `min_version` (a site is below it). Returns the catalog file.
fn write_catalog(dir: &std::path::Path) -> PathBuf {
    let folder = dir.join("updates");
    std::fs::create_dir_all(folder.join("2026.10")).expect("folders");
    std::fs::write(folder.join("hrs-2026.10.cab"), big_package()).expect("package");
    for (name, text) in [
        ("2026.10/notes.txt", "release notes"),
        ("hrs-2026.03.cab", "old"),
        ("hrs-2026.10-hf1.cab", "hotfix one"),
        ("hrs-2026.12.cab", "the december update"),
        ("hrs-2026.12-hf1.cab", "its hotfix"),
    ] {
        std::fs::write(folder.join(name), text).expect("package");
    }
    let entry = |id: &str, version: &str, kind: &str, min: &str, packages: &str| {
        let min = if min.is_empty() {
            String::new()
        } else {
            format!("min_version = \"{min}\"\n")
        };
        format!(
            "[[updates]]\nid = \"{id}\"\nversion = \"{version}\"\nkind = \"{kind}\"\ntitle = \"HRS {id}\"\nreleased = \"2026-12-01\"\n{min}packages = [{packages}]\n\n"
        )
    };
    let text = [
        entry(
            "2026.12",
            "5.00.9135.1000",
            "update",
            "5.00.9128.1000",
            "\"hrs-2026.12.cab\"",
        ),
        entry(
            "2026.10",
            "5.00.9132.1000",
            "update",
            "",
            "\"hrs-2026.10.cab\", \"2026.10/notes.txt\"",
        ),
        entry(
            "2026.10-hf1",
            "5.00.9132.1010",
            "hotfix",
            "",
            "\"hrs-2026.10-hf1.cab\"",
        ),
        entry(
            "2026.12-hf1",
            "5.00.9135.1005",
            "hotfix",
            "5.00.9135.1000",
            "\"hrs-2026.12-hf1.cab\"",
        ),
        entry(
            "2026.03",
            "5.00.9106.1000",
            "update",
            "",
            "\"hrs-2026.03.cab\"",
        ),
    ]
    .concat();
    let path = folder.join("updates.toml");
    std::fs::write(&path, text).expect("catalog");
    path
}

/// Starts an intake with the test catalog, and returns it with the catalog's folder.
async fn start_with_updates() -> (Running, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = write_catalog(dir.path());
    let folder = catalog.parent().expect("folder").to_owned();
    let intake = start_in(dir, |config| config.update_catalog = Some(catalog)).await;
    (intake, folder)
}

fn check(hierarchy: &str, download: &str) -> pb::CheckUpdatesRequest {
    pb::CheckUpdatesRequest {
        hierarchy_hash: hierarchy.into(),
        client_version: "test".into(),
        download: download.into(),
    }
}

fn ids(manifest: &pb::UpdateManifest) -> Vec<&str> {
    manifest.updates.iter().map(|u| u.id.as_str()).collect()
}

#[tokio::test]
async fn update_manifests_follow_the_latest_submission_and_the_filter() {
    let (intake, _folder) = start_with_updates().await;
    let mut client = intake.client().await;
    let first = merged_at("2026-W48", &SITES_AT);
    let hierarchy = first.hierarchy_hash.clone();

    // Nothing submitted yet: nothing applies, and that is no error.
    let manifest = client
        .check_updates(check(&hierarchy, "all"))
        .await
        .expect("manifest")
        .into_inner();
    assert_eq!(manifest.hierarchy_hash, hierarchy);
    assert!(manifest.site_versions.is_empty() && manifest.updates.is_empty());

    client.submit(request(&first)).await.expect("accepted");
    let checker = client.clone();
    let manifest_of = |download: &'static str| {
        let mut client = checker.clone();
        let hierarchy = hierarchy.clone();
        async move {
            client
                .check_updates(check(&hierarchy, download))
                .await
                .expect("manifest")
                .into_inner()
        }
    };
    let latest = manifest_of("latest").await;
    assert_eq!(latest.site_versions, ["5.00.9122.1018", "5.00.9128.1000"]);
    assert_eq!(ids(&latest), ["2026.10"], "2026.12 needs 5.00.9128.1000");
    let generated = time::OffsetDateTime::parse(
        &latest.generated_at,
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    assert_eq!(generated, NOW, "stamped by the intake's clock");
    let update = &latest.updates[0];
    assert_eq!(
        (
            update.version.as_str(),
            update.kind.as_str(),
            update.title.as_str()
        ),
        ("5.00.9132.1000", "update", "HRS 2026.10")
    );
    assert_eq!(update.released, "2026-12-01");
    let packages: Vec<(&str, u64)> = update
        .packages
        .iter()
        .map(|p| (p.name.as_str(), p.size))
        .collect();
    assert_eq!(
        packages,
        [
            ("hrs-2026.10.cab", big_package().len() as u64),
            ("notes.txt", 13)
        ]
    );
    assert_eq!(ids(&manifest_of("").await), ["2026.10"]);
    assert_eq!(ids(&manifest_of("all").await), ["2026.10", "2026.10-hf1"]);
    assert_eq!(ids(&manifest_of("hotfixes").await), ["2026.10-hf1"]);
    assert_eq!(
        ids(&manifest_of("version=5.0.9132.1010").await),
        ["2026.10-hf1"]
    );
    assert!(ids(&manifest_of("version=5.00.9135.1000").await).is_empty());
    for bad in ["everything", "version=next"] {
        let status = client
            .check_updates(check(&hierarchy, bad))
            .await
            .expect_err("unknown filter");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad}");
        assert!(
            status.message().contains("download"),
            "{}",
            status.message()
        );
    }
    let status = client
        .check_updates(check("", "latest"))
        .await
        .expect_err("no hierarchy");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("hierarchy_hash"));

    // The next submission has every site at 5.00.9128.1000: the gated update applies, and
    // is the latest.
    let next = merged_at("2026-W49", &["5.00.9128.1000", "5.00.9128.1000"]);
    client.submit(request(&next)).await.expect("accepted");
    let latest = manifest_of("latest").await;
    assert_eq!(latest.site_versions, ["5.00.9128.1000"]);
    assert_eq!(ids(&latest), ["2026.12"]);
    assert_eq!(
        ids(&manifest_of("all").await),
        ["2026.10", "2026.10-hf1", "2026.12"]
    );

    drop((client, checker));
    intake.stop().await;
}

/// Downloads a package whole, keeping each chunk's size.
async fn download(
    client: &mut IntakeClient<tonic::transport::Channel>,
    hierarchy: &str,
    update: &str,
    name: &str,
) -> Result<(Vec<u8>, Vec<usize>), tonic::Status> {
    let mut stream = client
        .download_package(pb::DownloadPackageRequest {
            hierarchy_hash: hierarchy.into(),
            update_id: update.into(),
            name: name.into(),
        })
        .await?
        .into_inner();
    let (mut data, mut chunks) = (Vec::new(), Vec::new());
    while let Some(chunk) = stream.message().await? {
        chunks.push(chunk.data.len());
        data.extend_from_slice(&chunk.data);
    }
    Ok((data, chunks))
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn packages_download_in_chunks_matching_the_manifest() {
    let (intake, _folder) = start_with_updates().await;
    let mut client = intake.client().await;
    let period = merged_at("2026-W48", &SITES_AT);
    client.submit(request(&period)).await.expect("accepted");
    let manifest = client
        .check_updates(check(&period.hierarchy_hash, "all"))
        .await
        .expect("manifest")
        .into_inner();

    for update in &manifest.updates {
        for package in &update.packages {
            let (data, chunks) = download(
                &mut client,
                &period.hierarchy_hash,
                &update.id,
                &package.name,
            )
            .await
            .expect("downloads");
            assert_eq!(data.len() as u64, package.size, "{}", package.name);
            assert_eq!(sha256_hex(&data), package.sha256, "{}", package.name);
            assert!(
                chunks.iter().all(|c| *c <= PACKAGE_CHUNK_BYTES),
                "{chunks:?}"
            );
        }
    }
    let (data, chunks) = download(
        &mut client,
        &period.hierarchy_hash,
        "2026.10",
        "hrs-2026.10.cab",
    )
    .await
    .expect("downloads");
    assert_eq!(data, big_package());
    assert_eq!(
        chunks,
        [
            PACKAGE_CHUNK_BYTES,
            PACKAGE_CHUNK_BYTES,
            PACKAGE_CHUNK_BYTES / 2
        ]
    );

    drop(client);
    intake.stop().await;
}

#[tokio::test]
async fn packages_that_do_not_apply_or_changed_on_disk_are_refused() {
    let (intake, folder) = start_with_updates().await;
    let mut client = intake.client().await;
    let period = merged_at("2026-W48", &SITES_AT);
    let hierarchy = period.hierarchy_hash.clone();
    client.submit(request(&period)).await.expect("accepted");

    for (hierarchy, update, name) in [
        // Gated by min_version: a site is below it.
        (hierarchy.as_str(), "2026.12", "hrs-2026.12.cab"),
        // No site is below it.
        (hierarchy.as_str(), "2026.03", "hrs-2026.03.cab"),
        // Another update's package, an unknown update, the folder as written.
        (hierarchy.as_str(), "2026.10", "hrs-2026.10-hf1.cab"),
        (hierarchy.as_str(), "2027.01", "hrs-2027.01.cab"),
        (hierarchy.as_str(), "2026.10", "2026.10/notes.txt"),
        // A hierarchy that never submitted.
        ("another", "2026.10", "hrs-2026.10.cab"),
    ] {
        let status = download(&mut client, hierarchy, update, name)
            .await
            .expect_err("not applicable");
        assert_eq!(status.code(), tonic::Code::NotFound, "{update} {name}");
        assert!(
            status.message().contains(update) && status.message().contains(name),
            "{}",
            status.message()
        );
    }

    // Same size, other bytes: refused rather than served.
    std::fs::write(folder.join("hrs-2026.10-hf1.cab"), "hotfix 0ne").expect("tampers");
    let status = download(
        &mut client,
        &hierarchy,
        "2026.10-hf1",
        "hrs-2026.10-hf1.cab",
    )
    .await
    .expect_err("tampered");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("SHA-256"), "{}", status.message());
    std::fs::write(folder.join("hrs-2026.10-hf1.cab"), "a longer hotfix").expect("tampers");
    let status = download(
        &mut client,
        &hierarchy,
        "2026.10-hf1",
        "hrs-2026.10-hf1.cab",
    )
    .await
    .expect_err("resized");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    std::fs::remove_file(folder.join("2026.10/notes.txt")).expect("removes");
    let status = download(&mut client, &hierarchy, "2026.10", "notes.txt")
        .await
        .expect_err("gone");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("gone"), "{}", status.message());

    drop(client);
    intake.stop().await;
}

/// A request carrying `token` as a bearer token, when given.
fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header value"),
        );
    }
    request
}

#[tokio::test]
async fn every_call_takes_a_connection_points_certificate_or_its_hierarchys_token() {
    use hrs_pki::{Identity, Role};
    use hrs_rpc::tls::ClientTls;

    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    hrs_pki::init(&pki, "test", 30, SystemClock.now()).expect("CA");
    let issue = |identity: Identity| {
        hrs_pki::issue(
            &pki,
            &identity,
            &["127.0.0.1".into()],
            30,
            SystemClock.now(),
        )
        .expect("issues")
    };
    let server = issue(Identity::Role(Role::Intake));
    let point = issue(Identity::Role(Role::ConnectionPoint));
    let site = issue(Identity::Site("P01".parse().expect("site code")));
    let token = hrs_core::token::Token::generate();
    let period = merged_at("2026-W48", &SITES_AT);
    let hierarchy = period.hierarchy_hash.clone();
    let catalog = write_catalog(dir.path());
    let ca = pki.join("ca.pem");
    let intake = start_in(dir, |config| {
        config.update_catalog = Some(catalog);
        config.tls = Some(hrs_core::config::TlsFiles {
            cert: server.cert.clone(),
            key: server.key.clone(),
            ca: ca.clone(),
        });
        config.hierarchy_tokens = vec![HierarchyToken {
            hierarchy: hierarchy.clone(),
            token_sha256: token.fingerprint(),
        }];
    })
    .await;
    let client = |identity: Option<&hrs_pki::Issued>| {
        let tls = ClientTls {
            ca: ca.clone(),
            identity: identity.map(|i| (i.cert.clone(), i.key.clone())),
        };
        let url = format!("https://{}", intake.addr);
        async move {
            let channel = hrs_rpc::tls::endpoint_with(&url, Some(&tls))
                .expect("endpoint")
                .connect()
                .await
                .expect("connects");
            IntakeClient::new(channel)
        }
    };
    let mut anonymous = client(None).await;
    let mut by_point = client(Some(&point)).await;
    let mut by_site = client(Some(&site)).await;
    let good = Some(token.expose());
    let package = || pb::DownloadPackageRequest {
        hierarchy_hash: hierarchy.clone(),
        update_id: "2026.10".into(),
        name: "notes.txt".into(),
    };

    // The hierarchy's token submits, checks and downloads for its own hierarchy.
    anonymous
        .submit(with_token(request(&period), good))
        .await
        .expect("token submits");
    let manifest = anonymous
        .check_updates(with_token(check(&hierarchy, "latest"), good))
        .await
        .expect("token checks")
        .into_inner();
    assert_eq!(ids(&manifest), ["2026.10"]);
    let mut stream = anonymous
        .download_package(with_token(package(), good))
        .await
        .expect("token downloads")
        .into_inner();
    assert_eq!(
        stream.message().await.expect("chunk").expect("data").data,
        b"release notes"
    );
    // A connection point's certificate, for any hierarchy.
    by_point
        .check_updates(check("another", "all"))
        .await
        .expect("certificate checks");
    by_point
        .download_package(package())
        .await
        .expect("certificate downloads");

    // Refused: another hierarchy's token, no token, a wrong token, a site's certificate.
    let other = || check("another", "all");
    let refusals = [
        (
            anonymous.check_updates(with_token(other(), good)).await,
            tonic::Code::Unauthenticated,
        ),
        (
            anonymous
                .check_updates(with_token(check(&hierarchy, "all"), None))
                .await,
            tonic::Code::Unauthenticated,
        ),
        (
            anonymous
                .check_updates(with_token(check(&hierarchy, "all"), Some("wrong")))
                .await,
            tonic::Code::Unauthenticated,
        ),
        (
            by_site.check_updates(check(&hierarchy, "all")).await,
            tonic::Code::PermissionDenied,
        ),
    ];
    for (i, (result, code)) in refusals.into_iter().enumerate() {
        assert_eq!(result.expect_err("refused").code(), code, "case {i}");
    }
    let mut elsewhere = package();
    elsewhere.hierarchy_hash = "another".into();
    let refusals = [
        (
            anonymous
                .download_package(with_token(elsewhere, good))
                .await
                .map(drop),
            tonic::Code::Unauthenticated,
        ),
        (
            by_site.download_package(package()).await.map(drop),
            tonic::Code::PermissionDenied,
        ),
    ];
    for (i, (result, code)) in refusals.into_iter().enumerate() {
        assert_eq!(result.expect_err("refused").code(), code, "case {i}");
    }

    drop((anonymous, by_point, by_site, stream));
    intake.stop().await;
}
