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

/// The chunks of `period`'s whole encoding under its completed offer: what a connection
/// point streams for a period the intake holds nothing of yet.
fn submission(
    period: &pb::MergedPeriod,
) -> tokio_stream::Iter<std::vec::IntoIter<pb::PeriodChunk>> {
    let bytes = period.encode_to_vec();
    let offer = completed(offer_of(period), &bytes);
    tokio_stream::iter(chunks(&offer, &bytes, 0, bytes.len()))
}

#[tokio::test]
async fn resend_is_a_duplicate_and_bad_input_changes_nothing() {
    let intake = start().await;
    let mut client = intake.client().await;
    let period = merged();

    // Content that does not match its digest, sent before the period itself: once a
    // submission is stored, an offer under its digest is answered from the stored record
    // without its bytes being read.
    let mut altered = period.clone();
    altered.sites[0].results[0].rows.clear();
    let status = client
        .submit_chunks(submission(&altered))
        .await
        .expect_err("content that does not match its digest refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("digest"), "{}", status.message());
    assert_eq!(
        staged_rows(&intake.store),
        (0, 0),
        "a refusal keeps nothing"
    );

    let first = client
        .submit_chunks(submission(&period))
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
        .submit_chunks(submission(&period))
        .await
        .expect("re-send accepted")
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(again.submission_id, first.submission_id);
    assert_eq!(again.accepted_at, first.accepted_at);
    let staged = staged_rows(&intake.store);

    let mut tampered = period.clone();
    tampered.digest = "0".repeat(64);
    let status = client
        .submit_chunks(submission(&tampered))
        .await
        .expect_err("tampered digest refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("digest"), "{}", status.message());

    let resent = client
        .submit_chunks(submission(&altered))
        .await
        .expect("answered from the stored record")
        .into_inner();
    assert!(resent.duplicate);
    assert_eq!(resent.submission_id, first.submission_id);

    let status = client
        .submit_chunks(tokio_stream::iter([pb::PeriodChunk::default()]))
        .await
        .expect_err("a stream without an offer refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "field chunk.offer: missing on the stream's first chunk"
    );

    let mut unknown = period.clone();
    unknown.catalog_version = "1999.1.1".into();
    unknown.digest = merged_digest(&unknown);
    let status = client
        .submit_chunks(submission(&unknown))
        .await
        .expect_err("unknown catalog refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);

    assert_eq!(staged_rows(&intake.store), staged, "refusals keep nothing");
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

/// Stores `period` in `store` as the intake stores a submission sent in chunks: staged
/// whole, checked from its encoding, committed as accepted `at`.
async fn accept(
    store: &SqliteIntake,
    period: &pb::MergedPeriod,
    at: OffsetDateTime,
) -> Result<Accepted, StoreError> {
    let bytes = period.encode_to_vec();
    let upload = hrs_store::staging::Offer {
        id: submission_id(&period.hierarchy_hash, &period.period, &period.digest),
        owner: period.hierarchy_hash.clone(),
        size: bytes.len() as u64,
        sha256: sha256_hex(&bytes),
    };
    if let Held::Stored(accepted) = store.stage(&upload, at, at).await? {
        return Ok(accepted);
    }
    let appended = store.stage_append(&upload.id, 0, bytes.clone()).await?;
    assert_eq!(
        appended,
        hrs_store::staging::Appended::Held(upload.size),
        "staged whole"
    );
    let summary = hrs_core::encoded_period::check_merged_encoded(&bytes).expect("a valid period");
    store.commit_staged(&upload, &summary, "test", at).await
}

#[tokio::test]
async fn latest_and_prune() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteIntake::open(&dir.path().join("intake.sqlite")).expect("opens");
    let older = merged();
    let mut newer = merged();
    newer.missing_sites = vec![hrs_core::hash::hash_value("site-c")];
    newer.digest = merged_digest(&newer);

    accept(&store, &older, NOW).await.expect("accepts older");
    accept(&store, &newer, NOW).await.expect("accepts newer");
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
async fn a_staged_submission_is_stored_once_and_starts_over_once_its_record_is_pruned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("intake.sqlite");
    let store = SqliteIntake::open(&path).expect("opens");
    let period = merged();
    let bytes = period.encode_to_vec();
    let summary =
        hrs_core::encoded_period::check_merged_encoded(&bytes.clone()).expect("a valid period");
    let upload = hrs_store::staging::Offer {
        id: submission_id(&period.hierarchy_hash, &period.period, &period.digest),
        owner: period.hierarchy_hash.clone(),
        size: bytes.len() as u64,
        sha256: sha256_hex(&bytes),
    };
    // Kept last, the zeroblob a staged submission is copied into is never made in memory.
    assert_eq!(last_column(&path), "payload");
    let stale = NOW - time::Duration::days(7);
    let open = |held, created| Held::Open { held, created };
    assert_eq!(
        store.stage(&upload, NOW, stale).await.expect("stages"),
        open(0, true)
    );
    let half = bytes.len() / 2;
    for (at, data) in [(0, &bytes[..half]), (half, &bytes[half..])] {
        store
            .stage_append(&upload.id, at as u64, data.to_vec())
            .await
            .expect("appends");
    }
    let staged = store.staged(&upload.id, upload.size);
    assert_eq!(staged.read_at(3, 10).expect("reads"), bytes[3..13]);
    let accepted = store
        .commit_staged(&upload, &summary, "test", NOW)
        .await
        .expect("commits");
    assert!(!accepted.duplicate);
    assert_eq!(accepted.submission_id, upload.id);
    let listed = store.submissions().await.expect("lists");
    assert_eq!((listed[0].rows, listed[0].level.as_str()), (2, "Enhanced"));
    assert_eq!(
        store.payload(&upload.id).await.expect("reads"),
        Some(period.clone())
    );
    match store.stage(&upload, NOW, stale).await.expect("stages") {
        Held::Stored(again) => assert_eq!(again.accepted_at, accepted.accepted_at),
        other => panic!("expected the stored record, got {other:?}"),
    }

    // Pruned, the submission is received afresh.
    assert_eq!(
        store
            .prune(NOW + time::Duration::days(1))
            .await
            .expect("prunes"),
        1
    );
    assert_eq!(
        store.stage(&upload, NOW, stale).await.expect("stages"),
        open(0, true)
    );
    store
        .stage_append(&upload.id, 0, bytes[..half].to_vec())
        .await
        .expect("appends");
    // Finished, it is stored afresh, and a re-offer gets the new record.
    store
        .stage_append(&upload.id, half as u64, bytes[half..].to_vec())
        .await
        .expect("appends");
    let afresh = store
        .commit_staged(&upload, &summary, "test", NOW)
        .await
        .expect("commits");
    assert!(!afresh.duplicate, "stored afresh");
    assert!(matches!(
        store.stage(&upload, NOW, stale).await.expect("stages"),
        Held::Stored(_)
    ));
    assert_eq!(staged_rows(&path).1, 0, "no chunk left behind");
}

/// The last column of the submissions table in the store file at `path`.
fn last_column(path: &std::path::Path) -> String {
    rusqlite::Connection::open(path)
        .expect("opens the file")
        .query_row(
            "SELECT name FROM pragma_table_info('submissions') ORDER BY cid DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("reads")
}

#[tokio::test]
async fn a_store_made_before_chunks_is_rebuilt_with_each_payload_last_keeping_its_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("intake.sqlite");
    let (older, newer) = (merged_at("2026-W48", &SITES_AT), merged());
    {
        // The layout stores had before: payload before accepted_at.
        let conn = rusqlite::Connection::open(&path).expect("opens the file");
        conn.execute_batch(
            "CREATE TABLE submissions (
                 submission_id TEXT PRIMARY KEY, hierarchy_hash TEXT NOT NULL,
                 period TEXT NOT NULL, digest TEXT NOT NULL, level TEXT NOT NULL,
                 catalog_version TEXT NOT NULL, client_version TEXT NOT NULL,
                 rows INTEGER NOT NULL, payload BLOB NOT NULL, accepted_at TEXT NOT NULL,
                 UNIQUE (hierarchy_hash, period, digest));
             CREATE INDEX submissions_accepted_at ON submissions (accepted_at);
             CREATE INDEX submissions_hierarchy ON submissions (hierarchy_hash, accepted_at);",
        )
        .expect("old schema");
        // Both in one second: the row ids order them, the older first.
        for (rowid, period) in [(7, &older), (9, &newer)] {
            conn.execute(
                "INSERT INTO submissions (rowid, submission_id, hierarchy_hash, period, digest,
                     level, catalog_version, client_version, rows, payload, accepted_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'Enhanced', ?6, 'old', 2, ?7, '2026-11-30T06:00:00Z')",
                rusqlite::params![
                    rowid,
                    submission_id(&period.hierarchy_hash, &period.period, &period.digest),
                    period.hierarchy_hash,
                    period.period,
                    period.digest,
                    period.catalog_version,
                    period.encode_to_vec()
                ],
            )
            .expect("old row");
        }
    }
    let store = SqliteIntake::open(&path).expect("opens and rebuilds");
    SqliteIntake::open(&path).expect("opens again, rebuilt already");
    assert_eq!(last_column(&path), "payload");
    let listed = store.submissions().await.expect("lists");
    assert_eq!(
        listed.iter().map(|s| s.digest.as_str()).collect::<Vec<_>>(),
        [older.digest.as_str(), newer.digest.as_str()]
    );
    let id = &listed[1].submission_id;
    assert_eq!(store.payload(id).await.expect("reads"), Some(newer.clone()));
    let last = store
        .last_accepted(&newer.hierarchy_hash)
        .await
        .expect("reads")
        .expect("stored");
    assert_eq!(
        site_versions_of(last.as_ref()).expect("reads"),
        [],
        "the newest of the second, by row id"
    );
    assert!(
        accept(&store, &newer, NOW)
            .await
            .expect("a re-send")
            .duplicate
    );
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
        .submit_chunks(submission(&merged()))
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
    let accepted = accept(&store, &merged(), at).await.expect("accepts");
    assert!(!accepted.duplicate);
    assert_eq!(accepted.accepted_at, whole);
    assert_eq!(accepted.accepted_at.offset(), time::UtcOffset::UTC);
    assert_eq!(
        raw_submission(&path),
        ("2026-W48".to_owned(), "2026-11-18T11:06:40Z".to_owned())
    );

    let again = accept(&store, &merged(), whole + time::Duration::hours(1))
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
    accept(&store, &merged(), NOW).await.expect("accepts");
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
    corrupt(accept(&store, &merged(), NOW).await, "last week");
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

    client
        .submit_chunks(submission(&first))
        .await
        .expect("accepted");
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
    client
        .submit_chunks(submission(&next))
        .await
        .expect("accepted");
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
    client
        .submit_chunks(submission(&period))
        .await
        .expect("accepted");
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
    client
        .submit_chunks(submission(&period))
        .await
        .expect("accepted");

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
    let period = merged_at("2026-W48", &SITES_AT);
    let hierarchy = period.hierarchy_hash.clone();
    let server = issue(Identity::Role(Role::Intake));
    let point = issue(Identity::ConnectionPoint {
        hierarchy: hierarchy.clone(),
    });
    // A connection point's certificate from before certificates named their hierarchy,
    // issued beside the other (the two would share a file name).
    let beside = dir.path().join("unbound");
    std::fs::create_dir_all(&beside).expect("dir");
    for file in ["ca.pem", "ca.key"] {
        std::fs::copy(pki.join(file), beside.join(file)).expect("copies the CA");
    }
    let unbound = hrs_pki::issue(
        &beside,
        &Identity::Role(Role::ConnectionPoint),
        &[],
        30,
        SystemClock.now(),
    )
    .expect("issues");
    let site = issue(Identity::Site("P01".parse().expect("site code")));
    let token = hrs_core::token::Token::generate();
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
    let mut by_unbound = client(Some(&unbound)).await;
    let mut by_site = client(Some(&site)).await;
    let good = Some(token.expose());
    let package = || pb::DownloadPackageRequest {
        hierarchy_hash: hierarchy.clone(),
        update_id: "2026.10".into(),
        name: "notes.txt".into(),
    };

    // The hierarchy's token submits, checks and downloads for its own hierarchy.
    anonymous
        .submit_chunks(with_token(submission(&period), good))
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
    // A connection point's certificate, for the hierarchy it names.
    by_point
        .check_updates(check(&hierarchy, "all"))
        .await
        .expect("certificate checks");
    by_point
        .download_package(package())
        .await
        .expect("certificate downloads");

    // Refused: another hierarchy's token, no token, a wrong token, a site's certificate, a
    // connection point's for another hierarchy or for none.
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
        (
            by_point.check_updates(other()).await,
            tonic::Code::PermissionDenied,
        ),
        (
            by_unbound.check_updates(check(&hierarchy, "all")).await,
            tonic::Code::PermissionDenied,
        ),
    ];
    for (i, (result, code)) in refusals.into_iter().enumerate() {
        assert_eq!(result.expect_err("refused").code(), code, "case {i}");
    }
    let status = by_point
        .check_updates(other())
        .await
        .expect_err("another hierarchy's");
    assert!(
        status.message().contains(&hierarchy) && status.message().contains("another"),
        "{}",
        status.message()
    );
    let status = by_unbound
        .check_updates(check(&hierarchy, "all"))
        .await
        .expect_err("no hierarchy");
    assert!(
        status.message().contains("names no hierarchy"),
        "{}",
        status.message()
    );
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
        (
            by_point
                .download_package(pb::DownloadPackageRequest {
                    hierarchy_hash: "another".into(),
                    ..package()
                })
                .await
                .map(drop),
            tonic::Code::PermissionDenied,
        ),
    ];
    for (i, (result, code)) in refusals.into_iter().enumerate() {
        assert_eq!(result.expect_err("refused").code(), code, "case {i}");
    }

    drop((anonymous, by_point, by_unbound, by_site, stream));
    intake.stop().await;
}

// Submissions in chunks.

/// An encoding read only in ranges no longer than a chunk may be, so a test fails if the
/// sending side ever reads a period whole.
struct Ranged(Vec<u8>);

impl hrs_core::bytes::RunBytes for Ranged {
    fn size(&self) -> u64 {
        self.0.size()
    }

    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        if len > hrs_rpc::chunks::MAX_CHUNK_BYTES {
            return Err(std::io::Error::other(format!(
                "a read of {len} bytes at once"
            )));
        }
        self.0.read_at(offset, len)
    }
}

/// Rows of filler per site in [`large_at`], and the bytes of each one's text.
const FILLER_ROWS: usize = 560;
const FILLER_BYTES: usize = 64 << 10;

/// Returns the encoding of a period over 64 MiB (more than one message may carry) and its
/// rows: [`merged_at`]'s sites, each also carrying a `B-ROLE-COUNTS` set of rows whose role
/// names are long filler text.
fn large_at(period: &str, versions: &[&str]) -> (Vec<u8>, u64) {
    let catalog = Catalog::builtin().expect("builtin catalog");
    let query = catalog.query("B-ROLE-COUNTS").expect("the role counts");
    let columns = query.output_columns();
    let mut merged = merged_at(period, versions);
    for (s, site) in merged.sites.iter_mut().enumerate() {
        let rows = (0..FILLER_ROWS)
            .map(|r| pb::Row {
                values: columns
                    .iter()
                    .map(|(name, ty)| {
                        let value = if name == "role_name" {
                            Value::Text(format!("{s}-{r}-{}", "x".repeat(FILLER_BYTES)))
                        } else {
                            sample(*ty)
                        };
                        (&value).into()
                    })
                    .collect(),
            })
            .collect();
        site.results.push(pb::ResultSet {
            query_id: query.id.clone(),
            level: query.level.as_str().into(),
            columns: columns
                .iter()
                .map(|(name, ty)| pb::Column {
                    name: name.clone(),
                    r#type: ty.as_str().into(),
                })
                .collect(),
            rows,
            error: String::new(),
            duration_ms: 9,
        });
    }
    merged.digest = merged_digest(&merged);
    let rows = merged
        .sites
        .iter()
        .flat_map(|s| &s.results)
        .map(|r| r.rows.len() as u64)
        .sum();
    let bytes = merged.encode_to_vec();
    assert!(bytes.len() > 64 << 20, "{} bytes", bytes.len());
    (bytes, rows)
}

/// The offer of `period`'s encoding as a connection point starts it; the sender completes
/// its size and SHA-256.
fn offer_of(period: &pb::MergedPeriod) -> pb::PeriodOffer {
    pb::PeriodOffer {
        hierarchy_hash: period.hierarchy_hash.clone(),
        period: period.period.clone(),
        digest: period.digest.clone(),
        client_version: "test".into(),
        ..Default::default()
    }
}

/// The fields of an encoded period other than its sites, read as a receiver reads them.
fn fields_of(bytes: &[u8]) -> pb::MergedPeriod {
    let summary =
        hrs_core::encoded_period::check_merged_encoded(&bytes.to_vec()).expect("a valid period");
    pb::MergedPeriod {
        hierarchy_hash: summary.hierarchy_hash,
        period: summary.period.to_string(),
        digest: summary.digest,
        ..Default::default()
    }
}

/// Rows of the staging tables: (uploads, chunks).
fn staged_rows(store: &std::path::Path) -> (i64, i64) {
    rusqlite::Connection::open(store)
        .expect("opens the file")
        .query_row(
            "SELECT (SELECT COUNT(*) FROM staged_submissions),
                    (SELECT COUNT(*) FROM staged_submission_chunks)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("counts")
}

/// Sends `bytes[from..to]` as one stream of chunks, the first carrying `offer`.
async fn send_chunks<T>(
    client: &mut IntakeClient<T>,
    offer: &pb::PeriodOffer,
    bytes: &[u8],
    from: usize,
    to: usize,
) -> Result<pb::SubmitResponse, tonic::Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    client
        .submit_chunks(tokio_stream::iter(chunks(offer, bytes, from, to)))
        .await
        .map(tonic::Response::into_inner)
}

/// `bytes[from..to]` as the chunks of one stream, the first carrying `offer`.
fn chunks(offer: &pb::PeriodOffer, bytes: &[u8], from: usize, to: usize) -> Vec<pb::PeriodChunk> {
    let size = hrs_rpc::chunks::DEFAULT_CHUNK_BYTES;
    bytes[from..to]
        .chunks(size)
        .enumerate()
        .map(|(i, data)| pb::PeriodChunk {
            offer: (i == 0).then(|| offer.clone()),
            offset: (from + i * size) as u64,
            data: data.to_vec(),
        })
        .collect()
}

/// Completes an offer of `bytes` as the sender does (size and SHA-256).
fn completed(offer: pb::PeriodOffer, bytes: &[u8]) -> pb::PeriodOffer {
    pb::PeriodOffer {
        size: bytes.len() as u64,
        sha256: sha256_hex(bytes),
        ..offer
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_period_larger_than_a_message_arrives_in_chunks_and_resumes_where_it_broke() {
    let (intake, _folder) = start_with_updates().await;
    let mut client = intake.client().await;
    let (bytes, rows) = large_at("2026-W48", &SITES_AT);
    let offer = completed(offer_of(&fields_of(&bytes)), &bytes);
    let hierarchy = offer.hierarchy_hash.clone();

    // Nothing held yet; then a stream that stops after five chunks leaves them held.
    let resume = |client: &mut IntakeClient<tonic::transport::Channel>| {
        let mut client = client.clone();
        let offer = offer.clone();
        async move {
            client
                .resume_submission(pb::ResumePeriodRequest { offer: Some(offer) })
                .await
                .expect("resume answers")
                .into_inner()
        }
    };
    assert_eq!(resume(&mut client).await.held_bytes, 0);
    let cut = 5 * hrs_rpc::chunks::DEFAULT_CHUNK_BYTES;
    let status = send_chunks(&mut client, &offer, &bytes, 0, cut)
        .await
        .expect_err("an incomplete stream is not committed");
    assert_eq!(status.code(), tonic::Code::Aborted);
    assert!(
        status.message().contains(&format!("resume from {cut}")),
        "{}",
        status.message()
    );
    let held = resume(&mut client).await;
    assert_eq!((held.held_bytes, held.committed), (cut as u64, None));
    // A stream that does not start where the held bytes end is refused, and keeps them.
    let status = send_chunks(&mut client, &offer, &bytes, 0, cut)
        .await
        .expect_err("starts before the held bytes end");
    assert_eq!(status.code(), tonic::Code::Aborted);
    assert!(
        status.message().contains("chunk.offset"),
        "{}",
        status.message()
    );
    assert_eq!(resume(&mut client).await.held_bytes, cut as u64);

    // The sender resumes from the held bytes, reading the period a chunk at a time.
    let source: std::sync::Arc<dyn hrs_core::bytes::RunBytes> =
        std::sync::Arc::new(Ranged(bytes.clone()));
    let base = offer_of(&fields_of(&bytes));
    let first = hrs_rpc::submit::submit_period_chunks(
        &mut client,
        base.clone(),
        std::sync::Arc::clone(&source),
        hrs_rpc::chunks::DEFAULT_CHUNK_BYTES,
    )
    .await
    .expect("committed");
    assert!(!first.duplicate);
    assert_eq!(
        first.submission_id,
        submission_id(&hierarchy, "2026-W48", &offer.digest)
    );
    assert_eq!(first.accepted_at, "2026-11-30T06:00:00Z");
    assert_eq!(
        staged_rows(&intake.store).1,
        0,
        "the settled staging keeps no chunk"
    );

    // Sent again: answered at once with the stored record.
    let again = hrs_rpc::submit::submit_period_chunks(
        &mut client,
        base,
        source,
        hrs_rpc::chunks::DEFAULT_CHUNK_BYTES,
    )
    .await
    .expect("a duplicate");
    assert!(again.duplicate);
    assert_eq!(
        (again.submission_id.as_str(), again.accepted_at.as_str()),
        (first.submission_id.as_str(), first.accepted_at.as_str())
    );
    let resumed = resume(&mut client).await;
    assert_eq!(resumed.held_bytes, offer.size);
    assert!(resumed.committed.expect("stored").duplicate);
    // A stream of the whole is answered the same, without its bytes being kept again.
    let status = send_chunks(&mut client, &offer, &bytes, 0, cut)
        .await
        .expect("a duplicate stream");
    assert!(status.duplicate);

    let store = SqliteIntake::open(&intake.store).expect("opens");
    let listed = store.submissions().await.expect("lists");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].rows, listed[0].level.as_str()),
        (rows, "Enhanced")
    );
    let stored = store
        .last_accepted(&hierarchy)
        .await
        .expect("reads")
        .expect("stored");
    assert_eq!(
        hrs_core::bytes::sha256_of(stored.as_ref(), 1 << 20).expect("reads"),
        offer.sha256,
        "stored byte for byte"
    );

    // Updates are decided from the large submission's site list.
    let manifest = client
        .check_updates(check(&hierarchy, "latest"))
        .await
        .expect("manifest")
        .into_inner();
    assert_eq!(manifest.site_versions, ["5.00.9122.1018", "5.00.9128.1000"]);
    assert_eq!(ids(&manifest), ["2026.10"]);

    drop(client);
    intake.stop().await;
}

#[tokio::test]
async fn a_chunked_submission_that_is_not_what_it_was_offered_as_is_refused_naming_why() {
    let intake = start_in(tempfile::tempdir().expect("tempdir"), |c| {
        c.max_submission_mb = 1;
    })
    .await;
    let mut client = intake.client().await;
    let period = merged_at("2026-W48", &SITES_AT);
    let bytes = period.encode_to_vec();
    let offer = completed(offer_of(&period), &bytes);

    let refused = |offer: pb::PeriodOffer, bytes: Vec<u8>| {
        let mut client = client.clone();
        async move {
            let len = bytes.len();
            send_chunks(&mut client, &offer, &bytes, 0, len)
                .await
                .expect_err("refused")
        }
    };
    let mut cases: Vec<(pb::PeriodOffer, Vec<u8>, tonic::Code, &str)> = Vec::new();
    // Bytes other than the offered ones.
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    cases.push((
        offer.clone(),
        flipped,
        tonic::Code::InvalidArgument,
        "hash to",
    ));
    // Another period's digest in the offer.
    let mut other = offer.clone();
    other.digest = "ab".repeat(32);
    cases.push((
        other,
        bytes.clone(),
        tonic::Code::InvalidArgument,
        "offer.digest",
    ));
    // Another period than the offer's.
    let mut week = offer.clone();
    week.period = "2026-W47".into();
    cases.push((
        week,
        bytes.clone(),
        tonic::Code::InvalidArgument,
        "offer.period",
    ));
    // A period whose content does not match its own digest.
    let mut tampered = period.clone();
    tampered.sites[0].results[0].rows[0] = tampered.sites[1].results[0].rows[0].clone();
    let tampered_bytes = tampered.encode_to_vec();
    cases.push((
        completed(offer_of(&tampered), &tampered_bytes),
        tampered_bytes,
        tonic::Code::InvalidArgument,
        "digest",
    ));
    // Offers refused before a byte is kept.
    let mut large = offer.clone();
    large.size = 2 << 20;
    cases.push((
        large,
        bytes.clone(),
        tonic::Code::InvalidArgument,
        "max_submission_mb",
    ));
    let mut sha = offer.clone();
    sha.sha256 = "not hex".into();
    cases.push((
        sha,
        bytes.clone(),
        tonic::Code::InvalidArgument,
        "offer.sha256",
    ));
    let mut when = offer.clone();
    when.period = "W48".into();
    cases.push((
        when,
        bytes.clone(),
        tonic::Code::InvalidArgument,
        "offer.period",
    ));
    let mut short = offer.clone();
    short.size -= 1;
    short.sha256 = sha256_hex(&bytes[..bytes.len() - 1]);
    cases.push((
        short,
        bytes.clone(),
        tonic::Code::InvalidArgument,
        "runs past the offered size",
    ));
    for (offer, bytes, code, reason) in cases {
        let status = refused(offer, bytes).await;
        assert_eq!(status.code(), code, "{reason}: {}", status.message());
        assert!(
            status.message().contains(reason),
            "{reason}: {}",
            status.message()
        );
        // Nothing refused is kept.
        assert_eq!(staged_rows(&intake.store), (0, 0), "{reason}");
    }
    let status = client
        .submit_chunks(tokio_stream::iter(vec![pb::PeriodChunk {
            offer: None,
            offset: 0,
            data: bytes.clone(),
        }]))
        .await
        .expect_err("no offer");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("chunk.offer"),
        "{}",
        status.message()
    );
    let store = SqliteIntake::open(&intake.store).expect("opens");
    assert!(store.submissions().await.expect("lists").is_empty());

    // The offered bytes themselves are stored, their rows counted.
    let accepted = send_chunks(&mut client, &offer, &bytes, 0, bytes.len())
        .await
        .expect("accepted");
    assert!(!accepted.duplicate);
    let listed = store.submissions().await.expect("lists");
    assert_eq!(listed[0].rows, 2);

    drop(client);
    intake.stop().await;
}

#[tokio::test]
async fn a_caller_is_refused_before_any_message_is_read_unless_it_may_act_for_the_hierarchy() {
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
    let period = merged_at("2026-W48", &SITES_AT);
    let server = issue(Identity::Role(Role::Intake));
    let point = issue(Identity::ConnectionPoint {
        hierarchy: period.hierarchy_hash.clone(),
    });
    let site = issue(Identity::Site("P01".parse().expect("site code")));
    let token = hrs_core::token::Token::generate();
    let bytes = period.encode_to_vec();
    let offer = completed(offer_of(&period), &bytes);
    let hierarchy = period.hierarchy_hash.clone();
    let ca = pki.join("ca.pem");
    let intake = start_in(dir, |config| {
        config.tls = Some(hrs_core::config::TlsFiles {
            cert: server.cert.clone(),
            key: server.key.clone(),
            ca: ca.clone(),
        });
        config.hierarchy_tokens = vec![HierarchyToken {
            hierarchy: hierarchy.clone(),
            token_sha256: token.fingerprint(),
        }];
        // Small, so that a message beyond it is cheap to send.
        config.limits.max_message_mb = 1;
    })
    .await;
    let channel = |identity: Option<&hrs_pki::Issued>| {
        let tls = ClientTls {
            ca: ca.clone(),
            identity: identity.map(|i| (i.cert.clone(), i.key.clone())),
        };
        let url = format!("https://{}", intake.addr);
        async move {
            hrs_rpc::tls::endpoint_with(&url, Some(&tls))
                .expect("endpoint")
                .connect()
                .await
                .expect("connects")
        }
    };
    let with_token = |channel, token: Option<String>| {
        IntakeClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
            if let Some(token) = &token {
                request.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {token}").parse().expect("header value"),
                );
            }
            Ok(request)
        })
    };
    let good = Some(token.expose().to_owned());

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

    // No credentials, or a token of no hierarchy: refused before any message is read, so
    // a stream that never sends a chunk is answered, and messages too large to read are
    // refused as unauthenticated; a whole, valid period is refused too, and nothing is
    // staged or stored.
    for token in [None, Some("wrong".to_owned())] {
        let mut client = with_token(channel(None).await, token);
        refused_with(
            client
                .submit_chunks(tokio_stream::pending::<pb::PeriodChunk>())
                .await,
            tonic::Code::Unauthenticated,
        );
        refused_with(
            client
                .submit_chunks(tokio_stream::iter([oversize_chunk()]))
                .await,
            tonic::Code::Unauthenticated,
        );
        refused_with(
            client.resume_submission(oversize_resume()).await,
            tonic::Code::Unauthenticated,
        );
        refused_with(
            send_chunks(&mut client, &offer, &bytes, 0, bytes.len()).await,
            tonic::Code::Unauthenticated,
        );
    }
    assert_eq!(staged_rows(&intake.store), (0, 0), "nothing staged");
    let store = SqliteIntake::open(&intake.store).expect("opens");
    assert!(store.submissions().await.expect("lists").is_empty());
    // A site's certificate, and the hierarchy's token offering another hierarchy's period.
    let mut by_site = IntakeClient::new(channel(Some(&site)).await);
    let status = send_chunks(&mut by_site, &offer, &bytes, 0, bytes.len())
        .await
        .expect_err("a site may not submit");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    let mut by_token = with_token(channel(None).await, good.clone());
    // The hierarchy's token: the oversize resume is read, and refused for its size.
    refused_with(
        by_token.resume_submission(oversize_resume()).await,
        tonic::Code::OutOfRange,
    );
    let mut elsewhere = offer.clone();
    elsewhere.hierarchy_hash = "another".into();
    let status = send_chunks(&mut by_token, &elsewhere, &bytes, 0, bytes.len())
        .await
        .expect_err("another hierarchy's");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(status.message().contains("another"), "{}", status.message());
    let status = by_token
        .resume_submission(pb::ResumePeriodRequest {
            offer: Some(elsewhere.clone()),
        })
        .await
        .expect_err("another hierarchy's");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    // The hierarchy's connection point offering another hierarchy's period, by stream or
    // resume: refused on the offer, before a byte of it is kept.
    let mut by_point = IntakeClient::new(channel(Some(&point)).await);
    let status = send_chunks(&mut by_point, &elsewhere, &bytes, 0, bytes.len())
        .await
        .expect_err("another hierarchy's");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(status.message().contains("another"), "{}", status.message());
    let status = by_point
        .resume_submission(pb::ResumePeriodRequest {
            offer: Some(elsewhere),
        })
        .await
        .expect_err("another hierarchy's");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(staged_rows(&intake.store), (0, 0), "nothing staged");

    // The hierarchy's token, through an intercepted client, and a connection point's
    // certificate submit.
    let source: std::sync::Arc<dyn hrs_core::bytes::RunBytes> = std::sync::Arc::new(bytes);
    let accepted = hrs_rpc::submit::submit_period_chunks(
        &mut by_token,
        offer_of(&period),
        std::sync::Arc::clone(&source),
        hrs_rpc::chunks::DEFAULT_CHUNK_BYTES,
    )
    .await
    .expect("the token submits");
    assert!(!accepted.duplicate);
    let again = hrs_rpc::submit::submit_period_chunks(
        &mut by_point,
        offer_of(&period),
        source,
        hrs_rpc::chunks::DEFAULT_CHUNK_BYTES,
    )
    .await
    .expect("the certificate submits");
    assert!(again.duplicate);

    drop((by_site, by_token, by_point));
    intake.stop().await;
}

/// Asserts that a call was refused with `code`, showing its message when it was not.
fn refused_with<T: std::fmt::Debug>(answer: Result<T, tonic::Status>, code: tonic::Code) {
    let status = answer.expect_err("refused");
    assert_eq!(status.code(), code, "{}", status.message());
}
