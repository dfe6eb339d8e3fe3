//! The intake against real gRPC calls on loopback, and its store on its own.

use std::net::SocketAddr;
use std::path::PathBuf;

use hrs_core::digest::merged_digest;
use hrs_core::{Catalog, ColumnType, HierarchyId, Level, Value};
use hrs_proto::v1 as pb;
use hrs_proto::v1::intake_client::IntakeClient;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;

const HIERARCHY: &str = "6f9619ff-8b86-d011-b42d-00c04fc964ff";

fn sample(ty: ColumnType) -> Value {
    match ty {
        ColumnType::Text => Value::Text("sample".into()),
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

struct Running {
    addr: SocketAddr,
    store: PathBuf,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), IntakeError>>,
    _dir: tempfile::TempDir,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("local addr");
    let config = IntakeConfig::new(addr, dir.path().join("intake.sqlite"));
    let store = config.store.clone();
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(config, listener, async {
        drop(rx.await);
    }));
    Running {
        addr,
        store,
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

    store.accept(&older, "test").await.expect("accepts older");
    store.accept(&newer, "test").await.expect("accepts newer");
    let latest = store
        .latest(&newer.hierarchy_hash, &newer.period)
        .await
        .expect("reads")
        .expect("present");
    assert_eq!(latest.digest, newer.digest);
    assert!(
        store
            .latest(&newer.hierarchy_hash, "2026-W01")
            .await
            .expect("reads")
            .is_none()
    );

    let now = OffsetDateTime::now_utc();
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

#[test]
fn stored_times_are_fixed_width_utc() {
    let at = OffsetDateTime::from_unix_timestamp(1_795_000_000).expect("valid");
    assert_eq!(store::rfc3339(at), "2026-11-18T11:06:40Z");
}
