//! Connection hygiene: one address holds at most `max_connections_per_peer` connections,
//! and a connection that makes no call within `first_call_seconds`, or stays idle for
//! `idle_seconds` between calls, is closed; a caller that calls is served as before, and a
//! client whose idle connection was closed simply connects again.

use std::time::Duration;

use hrs_intake::IntakeConfig;
use hrs_proto::v1 as pb;
use hrs_rpc::v1::intake_client::IntakeClient;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tonic::Code;

/// Longest any step here waits for the server: far above the one-second deadlines.
const BOUND: Duration = Duration::from_secs(20);

/// An intake on loopback with a per-address cap of two and one-second deadlines.
async fn start() -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), hrs_intake::IntakeError>>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("addr");
    let mut config = IntakeConfig::new(addr, dir.path().join("intake.sqlite"));
    config.limits.max_connections_per_peer = 2;
    config.limits.first_call_seconds = 1;
    config.limits.idle_seconds = 1;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(hrs_intake::serve(config, listener, async {
        let _ = stopped.await;
    }));
    (addr.to_string(), stop, task, dir)
}

/// Waits (bounded) until the server closes `stream`: reads then end (what it sent before,
/// its HTTP/2 settings, is skipped).
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 1024];
    let ended = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(BOUND, ended).await.is_ok()
}

/// A call the intake answers at once: a resume that names no offer, refused as such.
async fn answered(client: &mut IntakeClient<tonic::transport::Channel>) -> Code {
    let status = client
        .resume_submission(pb::ResumePeriodRequest { offer: None })
        .await
        .expect_err("no offer");
    status.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_capped_per_address_and_closed_while_callers_are_served() {
    let (addr, stop, task, _dir) = start().await;

    // Two idle connections fill this address's places; a third is closed at once.
    let mut first = TcpStream::connect(&addr).await.expect("connects");
    let mut second = TcpStream::connect(&addr).await.expect("connects");
    let mut third = TcpStream::connect(&addr).await.expect("connects");
    assert!(closed(&mut third).await, "a third connection is closed");
    // The first two never call: they are closed once the first call is overdue.
    assert!(closed(&mut first).await, "an idle connection is closed");
    assert!(closed(&mut second).await, "an idle connection is closed");
    drop((first, second, third));

    // A caller is served; left idle, its connection is closed, and its next call connects
    // again and is served.
    let mut client = IntakeClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");
    assert_eq!(answered(&mut client).await, Code::InvalidArgument);
    let mut idle = TcpStream::connect(&addr).await.expect("connects");
    assert!(closed(&mut idle).await, "an idle connection is closed");
    let mut code = answered(&mut client).await;
    // A call that raced the close is retried, as every HRS client retries.
    for _ in 0..3 {
        if code != Code::Unavailable {
            break;
        }
        code = answered(&mut client).await;
    }
    assert_eq!(code, Code::InvalidArgument);

    let _ = stop.send(());
    task.await.expect("joins").expect("serves");
}
