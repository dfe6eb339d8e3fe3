//! Mutual TLS through the CONNECT proxy: the connection point's TLS runs inside the tunnel,
//! end to end with the intake, which sees the connection point's certificate; the server
//! name checked is the intake's, never the proxy's. (Here rather than in hrs-proto, whose
//! tests cannot use hrs-pki: hrs-pki depends on hrs-proto.)

// TLS judges certificates by the system's clock, so they are issued by it.
use hrs_core::clock::{Clock as _, SystemClock};
use std::net::SocketAddr;
use std::path::Path;

use hrs_chaos::ConnectProxy;
use hrs_pki::{Identity, Role};
use hrs_proto::v1 as pb;
use hrs_rpc::proxy::{self, Proxy, ProxyError};
use hrs_rpc::tls::{self, TlsFiles};
use hrs_rpc::v1::intake_client::IntakeClient;
use hrs_rpc::v1::intake_server::{Intake, IntakeServer};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

/// An intake that answers `CheckUpdates` with who its caller's certificate names.
struct WhoIntake;

#[tonic::async_trait]
impl Intake for WhoIntake {
    async fn submit_chunks(
        &self,
        _: Request<tonic::Streaming<pb::PeriodChunk>>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn resume_submission(
        &self,
        _: Request<pb::ResumePeriodRequest>,
    ) -> Result<Response<pb::ResumeSubmissionResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn check_updates(
        &self,
        request: Request<pb::CheckUpdatesRequest>,
    ) -> Result<Response<pb::UpdateManifest>, Status> {
        let caller = tls::peer_certificate(&request)
            .map(|der| hrs_pki::identity(&der).map(|who| who.to_string()))
            .transpose()
            .map_err(|e| Status::unauthenticated(e.to_string()))?
            .unwrap_or_else(|| "nobody".into());
        Ok(Response::new(pb::UpdateManifest {
            hierarchy_hash: caller,
            ..Default::default()
        }))
    }

    type DownloadPackageStream = tokio_stream::Empty<Result<pb::PackageChunk, Status>>;

    async fn download_package(
        &self,
        _: Request<pb::DownloadPackageRequest>,
    ) -> Result<Response<Self::DownloadPackageStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

fn issue(pki: &Path, role: Role, hosts: &[&str]) -> TlsFiles {
    let hosts: Vec<String> = hosts.iter().map(|host| (*host).to_owned()).collect();
    let issued =
        hrs_pki::issue(pki, &Identity::Role(role), &hosts, 1, SystemClock.now()).expect("issues");
    TlsFiles {
        cert: issued.cert,
        key: issued.key,
        ca: pki.join("ca.pem"),
    }
}

/// Serves the intake over TLS that requires a client certificate from the CA.
async fn intake(
    server: &TlsFiles,
) -> (
    SocketAddr,
    oneshot::Sender<()>,
    JoinHandle<Result<(), tonic::transport::Error>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("addr");
    let (shutdown, stopped) = oneshot::channel::<()>();
    let router = Server::builder()
        .tls_config(tls::server(server, tls::ClientCertificates::Required).expect("server TLS"))
        .expect("TLS accepted")
        .add_service(IntakeServer::new(WhoIntake));
    let task = tokio::spawn(router.serve_with_incoming_shutdown(
        TcpListenerStream::new(listener),
        async {
            drop(stopped.await);
        },
    ));
    (addr, shutdown, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_runs_end_to_end_through_an_authenticating_proxy() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = dir.path().join("pki");
    hrs_pki::init(&pki, "test", 1, SystemClock.now()).expect("CA");
    // The intake's certificate names "localhost" only: not the proxy's 127.0.0.1.
    let server = issue(&pki, Role::Intake, &["localhost"]);
    let client = issue(&pki, Role::ConnectionPoint, &[]);
    let (addr, shutdown, serving) = intake(&server).await;
    let proxy = ConnectProxy::start(Some(("hrs".into(), "pr0xy".into())))
        .await
        .expect("proxy starts");
    let to = Proxy::new(&proxy.url())
        .and_then(|to| to.with_credentials("hrs", SecretString::from("pr0xy")))
        .expect("valid proxy");

    let endpoint =
        tls::endpoint(&format!("https://localhost:{}", addr.port()), Some(&client)).expect("TLS");
    let channel = proxy::connect(endpoint, Some(&to))
        .await
        .expect("connects through the proxy");
    let caller = IntakeClient::new(channel)
        .check_updates(pb::CheckUpdatesRequest::default())
        .await
        .expect("answers")
        .into_inner()
        .hierarchy_hash;
    // The intake saw the connection point's own certificate: TLS ended at the intake.
    assert_eq!(caller, "connection-point");
    assert_eq!(proxy.tunnels(), 1);

    // Reached by the address instead, the intake's certificate does not match: the name
    // checked inside the tunnel is the endpoint's.
    let by_address =
        tls::endpoint(&format!("https://127.0.0.1:{}", addr.port()), Some(&client)).expect("TLS");
    let err = proxy::connect(by_address, Some(&to))
        .await
        .expect_err("the certificate names localhost only");
    assert!(matches!(err, ProxyError::Transport { .. }), "{err:?}");
    assert!(err.to_string().contains("certificate"), "{err}");
    assert_eq!(
        proxy.tunnels(),
        2,
        "the tunnel opened; TLS inside it failed"
    );

    proxy.stop().await;
    let _ = shutdown.send(());
    serving.await.expect("joins").expect("serves");
}
