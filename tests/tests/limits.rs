//! Who may submit to the intake, and how many connections a role serves.
//!
//! With TLS the intake accepts a connection point's certificate for the hierarchy it names,
//! or, for a connection point that cannot hold one, its hierarchy's token; anything else
//! (another hierarchy's certificate or token among them) is refused and stores nothing. Every server role serves at most `max_connections` connections and tells a
//! caller beyond that why it was refused.

use std::path::Path;
use std::time::Duration;

use hrs_intake::{HierarchyToken, IntakeConfig, SqliteIntake};
use hrs_pki::{Identity, Role};
use hrs_proto::v1 as pb;
use hrs_rpc::tls::{ClientTls, TlsFiles};
use hrs_rpc::v1::aggregator_client::AggregatorClient;
use hrs_rpc::v1::intake_client::IntakeClient;
use hrs_tests::{Hierarchy, PERIOD, site, wall_now};
use tonic::Code;
use tonic::transport::Channel;

fn issue(dir: &Path, identity: Identity) -> TlsFiles {
    let issued =
        hrs_pki::issue(dir, &identity, &["127.0.0.1".into()], 30, wall_now()).expect("issues");
    TlsFiles {
        cert: issued.cert,
        key: issued.key,
        ca: dir.join("ca.pem"),
    }
}

/// Issues from the CA in `ca_dir` into `dir`, beside another certificate of the same role.
fn issue_in(dir: &Path, ca_dir: &Path, identity: Identity) -> TlsFiles {
    std::fs::create_dir_all(dir).expect("dir");
    for file in ["ca.pem", "ca.key"] {
        std::fs::copy(ca_dir.join(file), dir.join(file)).expect("copies the CA");
    }
    issue(dir, identity)
}

/// An intake started for one test; stops when dropped by `stop`.
struct Running {
    addr: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), hrs_intake::IntakeError>>,
}

async fn start_intake(config: IntakeConfig) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("addr").to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(hrs_intake::serve(config, listener, async {
        let _ = stopped.await;
    }));
    Running { addr, stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("joins").expect("serves");
    }
}

/// A channel to the intake at `addr` over TLS, presenting `tls`'s identity when given.
async fn intake_channel(addr: &str, tls: &ClientTls) -> Channel {
    hrs_rpc::tls::endpoint_with(&format!("https://{addr}"), Some(tls))
        .expect("endpoint")
        .connect()
        .await
        .expect("connects")
}

/// Submits `period` as a connection point does, in chunks of its encoding, with `token` as
/// a bearer token on every call when given.
async fn submit(
    channel: Channel,
    period: &pb::MergedPeriod,
    token: Option<&str>,
) -> Result<pb::SubmitResponse, tonic::Status> {
    let bearer: Option<tonic::metadata::AsciiMetadataValue> =
        token.map(|token| format!("Bearer {token}").parse().expect("header value"));
    let mut client =
        IntakeClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
            if let Some(bearer) = &bearer {
                request
                    .metadata_mut()
                    .insert("authorization", bearer.clone());
            }
            Ok(request)
        });
    let offer = pb::PeriodOffer {
        hierarchy_hash: period.hierarchy_hash.clone(),
        period: period.period.clone(),
        digest: period.digest.clone(),
        client_version: "test".into(),
        ..Default::default()
    };
    let source = std::sync::Arc::new(prost::Message::encode_to_vec(period));
    match hrs_rpc::submit::submit_period_chunks(
        &mut client,
        offer,
        source,
        hrs_rpc::chunks::DEFAULT_CHUNK_BYTES,
    )
    .await
    {
        Ok(answer) => Ok(answer),
        Err(hrs_rpc::chunks::ChunkedPushError::Status(status)) => Err(status),
        Err(other) => panic!("the submission could not be sent: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_intake_takes_a_connection_points_certificate_or_its_hierarchys_token() {
    // A real merged period, as the hierarchy's connection point submitted it.
    let h = Hierarchy::builder().primaries(1).start().await;
    h.collect_everywhere().await;
    h.wait_delivered(PERIOD).await;
    let submitted = h.intake_submissions().await;
    let period = h.intake_payload(&submitted[0].submission_id).await;
    let mut other_hierarchy = period.clone();
    other_hierarchy.hierarchy_hash = hrs_core::HierarchyId::new(uuid::Uuid::new_v4()).hashed();

    let pki = h.dir.path().join("pki");
    hrs_pki::init(&pki, "test", 30, wall_now()).expect("CA");
    let server = issue(&pki, Identity::Role(Role::Intake));
    let point = issue(
        &pki,
        Identity::ConnectionPoint {
            hierarchy: period.hierarchy_hash.clone(),
        },
    );
    let other_point = issue_in(
        &pki.join("other"),
        &pki,
        Identity::ConnectionPoint {
            hierarchy: other_hierarchy.hierarchy_hash.clone(),
        },
    );
    let a_site = issue(&pki, Identity::Site(site("P01")));
    let token = hrs_core::token::Token::generate();

    let mut config = IntakeConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        h.dir.path().join("token-intake.sqlite"),
    );
    config.tls = Some(server.clone());
    config.hierarchy_tokens = vec![HierarchyToken {
        hierarchy: period.hierarchy_hash.clone(),
        token_sha256: token.fingerprint(),
    }];
    let store_path = config.store.clone();
    let intake = start_intake(config).await;
    let anonymous = ClientTls {
        ca: pki.join("ca.pem"),
        identity: None,
    };
    let with = |files: &TlsFiles| ClientTls {
        ca: files.ca.clone(),
        identity: Some((files.cert.clone(), files.key.clone())),
    };

    // Refused, each with its own code, and nothing stored.
    let refusals = [
        (
            "no certificate, no token",
            anonymous.clone(),
            None,
            &period,
            Code::Unauthenticated,
        ),
        (
            "a wrong token",
            anonymous.clone(),
            Some("x".repeat(43)),
            &period,
            Code::Unauthenticated,
        ),
        (
            "the token of another hierarchy",
            anonymous.clone(),
            Some(token.expose().to_owned()),
            &other_hierarchy,
            Code::Unauthenticated,
        ),
        (
            "a site's certificate",
            with(&a_site),
            None,
            &period,
            Code::PermissionDenied,
        ),
        (
            "the certificate of this hierarchy's connection point, for another hierarchy",
            with(&point),
            None,
            &other_hierarchy,
            Code::PermissionDenied,
        ),
        (
            "the certificate of another hierarchy's connection point",
            with(&other_point),
            None,
            &period,
            Code::PermissionDenied,
        ),
    ];
    for (who, tls, token, period, code) in refusals {
        let channel = intake_channel(&intake.addr, &tls).await;
        let status = submit(channel, period, token.as_deref())
            .await
            .expect_err(who);
        assert_eq!(status.code(), code, "{who}: {}", status.message());
    }
    let store = SqliteIntake::open(&store_path).expect("opens");
    assert!(
        hrs_intake::IntakeStore::submissions(&store)
            .await
            .expect("lists")
            .is_empty(),
        "refused submissions stored nothing"
    );
    let staged: i64 = rusqlite::Connection::open(&store_path)
        .expect("opens the file")
        .query_row("SELECT COUNT(*) FROM staged_submissions", [], |r| r.get(0))
        .expect("counts");
    assert_eq!(staged, 0, "refused submissions staged nothing");

    // The hierarchy's token without a certificate, and a connection point's certificate
    // without a token, are both accepted; the second is the same submission.
    let channel = intake_channel(&intake.addr, &anonymous).await;
    let first = submit(channel, &period, Some(token.expose()))
        .await
        .expect("the token is accepted");
    assert!(!first.duplicate);
    let channel = intake_channel(&intake.addr, &with(&point)).await;
    let second = submit(channel, &period, None)
        .await
        .expect("a connection point's certificate is accepted");
    assert!(second.duplicate);
    assert_eq!(second.submission_id, first.submission_id);
    intake.stop().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_beyond_max_connections_is_told_why() {
    let h = Hierarchy::builder().primaries(1).start().await;
    let mut config = h.aggregator_config.clone();
    config.store = h.dir.path().join("limited-merge.sqlite");
    config.onward = hrs_aggregator::Onward::Kept;
    config.limits.max_connections = 1;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(hrs_aggregator::serve(config, listener, async {
        let _ = stopped.await;
    }));
    let heartbeat = |mut client: AggregatorClient<Channel>| {
        let hierarchy_id = h.hierarchy_id.to_string();
        async move {
            client
                .heartbeat(pb::HeartbeatRequest {
                    site: "P01".into(),
                    hierarchy_id,
                    link: None,
                })
                .await
                .map(drop)
        }
    };

    let first = AggregatorClient::connect(url.clone())
        .await
        .expect("connects");
    heartbeat(first.clone())
        .await
        .expect("the first connection is served");
    let second = AggregatorClient::connect(url.clone())
        .await
        .expect("a connection beyond the limit is still accepted");
    let status = heartbeat(second)
        .await
        .expect_err("a call beyond the limit is refused");
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("max_connections"),
        "{}",
        status.message()
    );

    // Once the first connection closes, a new one is served.
    drop(first);
    let mut served = false;
    for _ in 0..100 {
        let client = AggregatorClient::connect(url.clone())
            .await
            .expect("connects");
        if heartbeat(client).await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        served,
        "a place freed by a closed connection is given again"
    );
    let _ = stop.send(());
    server.await.expect("joins").expect("serves");
    h.shutdown().await;
}
