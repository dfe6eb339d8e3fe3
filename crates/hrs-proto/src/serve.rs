//! Serving a role's gRPC services until shutdown, the same way for every server role.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::Router;

/// How long requests in flight may take to finish once shutdown begins.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` until `shutdown` resolves, then lets requests in flight
/// finish for at most `drain`. Stopping at the deadline loses nothing acknowledged: every
/// role commits durably before it answers, and its callers retry what was not answered.
pub async fn serve_until(
    router: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> Result<(), tonic::transport::Error> {
    let (draining, drain_started) = tokio::sync::oneshot::channel::<()>();
    let server =
        router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            shutdown.await;
            let _ = draining.send(());
        });
    tokio::pin!(server);
    let deadline = async {
        match drain_started.await {
            Ok(()) => tokio::time::sleep(drain).await,
            // The server ended by itself; its own result decides.
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        result = &mut server => result,
        () = deadline => {
            tracing::warn!(
                seconds = drain.as_secs(),
                "requests still in flight at the drain deadline; stopping without them"
            );
            Ok(())
        }
    }
}

/// Runs a request's handler to completion even when its caller goes away.
///
/// When a client disconnects, the server drops the request's future. A handler dropped
/// between its durable commit and its follow-up work (waking a delivery loop, recording
/// the contact) would leave the commit done and the follow-up lost, and the client's
/// re-send then finds a duplicate that does not redo it. Spawned, the handler finishes.
pub async fn detached<T, F>(handler: F) -> Result<T, tonic::Status>
where
    T: Send + 'static,
    F: Future<Output = Result<T, tonic::Status>> + Send + 'static,
{
    tokio::spawn(handler).await.unwrap_or_else(|error| {
        tracing::error!(%error, "request handler failed");
        Err(tonic::Status::internal("the request could not be handled"))
    })
}
