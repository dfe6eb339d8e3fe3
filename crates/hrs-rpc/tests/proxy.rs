//! gRPC through an HTTP proxy: calls to a small intake on loopback go through the test
//! CONNECT proxy (its tunnel counter proves it), with and without proxy authentication,
//! and every refusal comes back as an error that says what to do.

use std::net::SocketAddr;

use hrs_chaos::ConnectProxy;
use hrs_proto::v1 as pb;
use hrs_rpc::proxy::{self, Proxy, ProxyError};
use hrs_rpc::v1::intake_client::IntakeClient;
use hrs_rpc::v1::intake_server::{Intake, IntakeServer};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status};

const USER: &str = "hrs";
const PASSWORD: &str = "pr0xy-Pa55";

/// An intake that answers `CheckUpdates` with the hash it was asked about.
struct EchoIntake;

#[tonic::async_trait]
impl Intake for EchoIntake {
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
        Ok(Response::new(pb::UpdateManifest {
            hierarchy_hash: request.into_inner().hierarchy_hash,
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

/// A running test intake; shut down and joined by [`TestIntake::stop`].
struct TestIntake {
    addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl TestIntake {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("addr");
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            Server::builder()
                .add_service(IntakeServer::new(EchoIntake))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    drop(stopped.await);
                }),
        );
        Self {
            addr,
            shutdown,
            task,
        }
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::from_shared(format!("http://{}", self.addr)).expect("endpoint")
    }

    async fn stop(self) {
        let _ = self.shutdown.send(());
        self.task.await.expect("joins").expect("serves");
    }
}

/// Asks for updates of `hash` over `channel`, returning the hash the intake echoed.
async fn check(channel: tonic::transport::Channel, hash: &str) -> Result<String, Status> {
    let manifest = IntakeClient::new(channel)
        .check_updates(pb::CheckUpdatesRequest {
            hierarchy_hash: hash.into(),
            ..Default::default()
        })
        .await?;
    Ok(manifest.into_inner().hierarchy_hash)
}

fn credentials() -> Option<(String, String)> {
    Some((USER.into(), PASSWORD.into()))
}

fn proxy_with(proxy: &ConnectProxy, password: Option<&str>) -> Proxy {
    let to = Proxy::new(&proxy.url()).expect("valid proxy");
    match password {
        Some(password) => to
            .with_credentials(USER, SecretString::from(password))
            .expect("valid user"),
        None => to,
    }
}

#[tokio::test]
async fn a_call_goes_through_an_open_proxy() {
    let intake = TestIntake::start().await;
    let proxy = ConnectProxy::start(None).await.expect("proxy starts");
    let channel = proxy::connect(intake.endpoint(), Some(&proxy_with(&proxy, None)))
        .await
        .expect("connects through the proxy");
    assert_eq!(check(channel, "h1").await.expect("answers"), "h1");
    assert_eq!(proxy.tunnels(), 1);
    assert_eq!(proxy.refused(), 0);
    proxy.stop().await;
    intake.stop().await;
}

#[tokio::test]
async fn a_call_goes_through_an_authenticating_proxy_with_the_right_credentials() {
    let intake = TestIntake::start().await;
    let proxy = ConnectProxy::start(credentials())
        .await
        .expect("proxy starts");
    let channel = proxy::connect(intake.endpoint(), Some(&proxy_with(&proxy, Some(PASSWORD))))
        .await
        .expect("connects through the proxy");
    assert_eq!(check(channel, "h2").await.expect("answers"), "h2");
    assert_eq!((proxy.tunnels(), proxy.refused()), (1, 0));
    proxy.stop().await;
    intake.stop().await;
}

#[tokio::test]
async fn missing_or_wrong_credentials_get_a_clear_407_error() {
    let intake = TestIntake::start().await;
    let proxy = ConnectProxy::start(credentials())
        .await
        .expect("proxy starts");

    let err = proxy::connect(intake.endpoint(), Some(&proxy_with(&proxy, None)))
        .await
        .expect_err("no credentials");
    assert!(
        matches!(&err, ProxyError::AuthenticationRequired { status, .. } if status.contains("407")),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("requires authentication: give the proxy user and its password"),
        "{err}"
    );

    let err = proxy::connect(intake.endpoint(), Some(&proxy_with(&proxy, Some("not-it"))))
        .await
        .expect_err("wrong password");
    assert!(
        matches!(err, ProxyError::CredentialsRefused { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("refused the credentials of user \"hrs\""),
        "{text}"
    );
    assert!(!text.contains("not-it") && !format!("{err:?}").contains("not-it"));

    assert_eq!((proxy.tunnels(), proxy.refused()), (0, 2));
    proxy.stop().await;
    intake.stop().await;
}

#[tokio::test]
async fn a_lazy_channel_surfaces_the_proxys_refusal_in_the_status() {
    let intake = TestIntake::start().await;
    let proxy = ConnectProxy::start(credentials())
        .await
        .expect("proxy starts");
    let channel = proxy::connect_lazy(&intake.endpoint(), Some(&proxy_with(&proxy, None)));
    let status = check(channel, "h3").await.expect_err("refused");
    assert!(
        matches!(
            proxy::find(&status),
            Some(ProxyError::AuthenticationRequired { .. })
        ),
        "{}",
        hrs_core::error::chain(&status)
    );
    assert!(
        hrs_core::error::chain(&status).contains("requires authentication"),
        "{}",
        hrs_core::error::chain(&status)
    );
    proxy.stop().await;
    intake.stop().await;
}

#[tokio::test]
async fn the_proxy_refusing_or_failing_the_target_is_told_with_its_reason() {
    let proxy = ConnectProxy::start(None).await.expect("proxy starts");
    let to = proxy_with(&proxy, None);

    // The test proxy refuses anything off loopback (and never looks it up).
    let far = Endpoint::from_static("https://intake.example.com");
    let err = proxy::connect(far, Some(&to))
        .await
        .expect_err("off loopback");
    assert!(
        matches!(&err, ProxyError::TargetRefused { target, status, .. }
            if target == "intake.example.com:443" && status.contains("403 Forbidden")),
        "{err:?}"
    );

    let closed = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let gone = Endpoint::from_shared(format!("http://{addr}")).expect("endpoint");
    let err = proxy::connect(gone, Some(&to))
        .await
        .expect_err("nothing there");
    assert!(
        matches!(&err, ProxyError::TargetUnreachable { status, .. } if status.contains("502")),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&format!("could not reach {addr}")),
        "{err}"
    );
    assert_eq!((proxy.tunnels(), proxy.refused()), (0, 2));
    proxy.stop().await;
}

#[tokio::test]
async fn an_unreachable_proxy_is_named() {
    let intake = TestIntake::start().await;
    let proxy = ConnectProxy::start(None).await.expect("proxy starts");
    let to = proxy_with(&proxy, None);
    let addr = proxy.addr();
    proxy.stop().await;
    let err = proxy::connect(intake.endpoint(), Some(&to))
        .await
        .expect_err("proxy stopped");
    assert!(matches!(err, ProxyError::Unreachable { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("cannot reach the proxy at http://{addr}")),
        "{err}"
    );
    intake.stop().await;
}

#[tokio::test]
async fn without_a_proxy_the_channel_is_direct() {
    let intake = TestIntake::start().await;
    let channel = proxy::connect(intake.endpoint(), None)
        .await
        .expect("connects");
    assert_eq!(check(channel, "h4").await.expect("answers"), "h4");
    let addr = intake.addr;
    intake.stop().await;
    let err = proxy::connect(
        Endpoint::from_shared(format!("http://{addr}")).expect("endpoint"),
        None,
    )
    .await
    .expect_err("nothing listens");
    assert!(matches!(err, ProxyError::Transport { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot connect to http://{addr}/: ")),
        "{err}"
    );
}
