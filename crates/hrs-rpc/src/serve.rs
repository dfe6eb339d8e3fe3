//! Serving a role's gRPC services until shutdown, the same way for every server role.

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::{Connected, Router, TcpConnectInfo};
use tower_layer::Stack;

use hrs_core::config::{MetricsTable, ServerLimits, TlsFiles};

use crate::error::{self, RuntimeError};
use crate::hygiene::{Connections, Hygiene, Registered};
use crate::probes::{self, ProbeError, RoleHealth};
use crate::refusals::{RefusalLayer, Refusals};
use crate::tls::{self, ClientCertificates, TlsError};

/// How long requests in flight may take to finish once shutdown begins.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// Serves `router` on `incoming` until `shutdown` resolves, then lets requests in flight
/// finish for at most `drain`. Stopping at the deadline loses nothing acknowledged: every
/// role commits durably before it answers, and its callers retry what was not answered.
async fn serve_incoming(
    router: CountedRouter,
    incoming: ReceiverStream<io::Result<GatedStream>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> Result<(), tonic::transport::Error> {
    let (draining, drain_started) = tokio::sync::oneshot::channel::<()>();
    let server = router.serve_with_incoming_shutdown(incoming, async move {
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
    tokio::spawn(handler)
        .await
        .unwrap_or_else(|error| Err(error::status(&RuntimeError::Handler(error.to_string()))))
}

/// What a server role allows its callers: each limit is a setting of the role's
/// configuration, and each answers a clear status when exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once (`max_connections`); beyond it, calls are answered
    /// `RESOURCE_EXHAUSTED` and the connection is closed shortly after.
    pub max_connections: usize,
    /// Calls one connection may have open at once.
    pub calls_per_connection: usize,
    /// How long one call may take (`request_timeout_seconds`); beyond it, `CANCELLED`.
    pub request_timeout: Duration,
    /// Largest message received or sent (`max_message_mb`); beyond it, `OUT_OF_RANGE`.
    pub max_message_bytes: usize,
    /// The per-address cap and the deadlines of connections.
    pub hygiene: Hygiene,
}

impl Limits {
    /// Limits from a role's `[limits]`, in their configured units.
    pub(crate) fn of(settings: ServerLimits, calls_per_connection: usize) -> Self {
        Self {
            max_connections: usize::try_from(settings.max_connections).unwrap_or(usize::MAX),
            calls_per_connection,
            request_timeout: Duration::from_secs(settings.request_timeout_seconds),
            max_message_bytes: usize::try_from(settings.max_message_mb.saturating_mul(1 << 20))
                .unwrap_or(usize::MAX),
            hygiene: Hygiene {
                max_per_peer: usize::try_from(settings.max_connections_per_peer)
                    .unwrap_or(usize::MAX),
                first_call: Duration::from_secs(settings.first_call_seconds),
                idle: Duration::from_secs(settings.idle_seconds),
            },
        }
    }

    /// A server builder with these limits, every refusal logged and counted in
    /// `refusals`, every call counted on its connection among `connections`, and, when
    /// given, TLS.
    pub(crate) fn server(
        &self,
        tls: Option<tonic::transport::ServerTlsConfig>,
        refusals: &Arc<Refusals>,
        connections: &Arc<Connections>,
    ) -> Result<CountedServer, tonic::transport::Error> {
        // HTTP/2 pings find peers that vanished without closing, so their connections do
        // not hold places under `max_connections` for ever.
        let mut server = tonic::transport::Server::builder()
            .timeout(self.request_timeout)
            .concurrency_limit_per_connection(self.calls_per_connection)
            .http2_keepalive_interval(Some(Duration::from_secs(60)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)));
        if let Some(tls) = tls {
            server = server.tls_config(tls)?;
        }
        Ok(server.layer(refusals.layer(connections)))
    }
}

/// A server whose refusals are counted: what [`Limits::server`] builds.
pub type CountedServer = tonic::transport::Server<Stack<RefusalLayer, tower_layer::Identity>>;

/// The routes of a [`CountedServer`], served by [`Serving::serve`].
pub type CountedRouter = Router<Stack<RefusalLayer, tower_layer::Identity>>;

/// How long a connection beyond `max_connections` stays open to carry its refusal.
const OVERFLOW_LIFETIME: Duration = Duration::from_secs(5);

/// Bounds the connections a role serves at once.
///
/// A connection within the limit is served as usual. One beyond it is still accepted, so
/// its caller hears why (every call answered `RESOURCE_EXHAUSTED` naming the setting)
/// instead of a bare reset, and is closed after a few seconds. Beyond twice the
/// limit, connections are closed at once. [`serve_role`] installs it on every service
/// (see [`RoleService`]) and on the listener.
#[derive(Clone)]
pub struct Gate {
    role: &'static str,
    max: usize,
    permits: Arc<Semaphore>,
    /// Remote addresses of the connections beyond the limit that are still open.
    overflow: Arc<Mutex<HashSet<SocketAddr>>>,
    /// Every open connection, by address, with its calls.
    connections: Arc<Connections>,
    hygiene: Hygiene,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("role", &self.role)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// A gate for `role` (named in refusals) serving at most `max` connections, each
    /// address's and each connection's under `hygiene`.
    pub(crate) fn new(role: &'static str, max: usize, hygiene: Hygiene) -> Self {
        Self {
            role,
            max,
            permits: Arc::new(Semaphore::new(max)),
            overflow: Arc::default(),
            connections: Arc::default(),
            hygiene,
        }
    }

    fn overflow(&self) -> MutexGuard<'_, HashSet<SocketAddr>> {
        // The set holds plain addresses; a panic elsewhere cannot leave it inconsistent.
        self.overflow.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits an accepted connection within the limit, or marks it as overflow; closes
    /// it at once when its address already holds `max_connections_per_peer`.
    fn admit(&self, stream: TcpStream) -> Option<GatedStream> {
        let _ = stream.set_nodelay(true);
        let peer = stream.peer_addr().ok()?;
        let Some(registered) = self.connections.register(peer, self.hygiene) else {
            tracing::warn!(role = self.role, %peer, max_connections_per_peer = self.hygiene.max_per_peer, "connection closed: its address holds max_connections_per_peer");
            return None;
        };
        if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
            return Some(GatedStream {
                stream,
                admitted: Admitted::Within(permit),
                registered,
                role: self.role,
            });
        }
        let mut overflow = self.overflow();
        if overflow.len() >= self.max.max(1) {
            tracing::warn!(role = self.role, %peer, max_connections = self.max, "connection closed: far beyond max_connections");
            return None;
        }
        overflow.insert(peer);
        drop(overflow);
        tracing::warn!(role = self.role, %peer, max_connections = self.max, "connection beyond max_connections: its calls are refused");
        Some(GatedStream {
            stream,
            admitted: Admitted::Beyond {
                gate: self.clone(),
                peer,
                closes: Box::pin(tokio::time::sleep(OVERFLOW_LIFETIME)),
            },
            registered,
            role: self.role,
        })
    }
}

impl tonic::service::Interceptor for Gate {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        match request.remote_addr() {
            Some(peer) if self.overflow().contains(&peer) => {
                Err(error::status(&RuntimeError::TooManyConnections {
                    role: self.role,
                    max: self.max,
                }))
            }
            _ => Ok(request),
        }
    }
}

/// Whether a connection was admitted within the limit.
enum Admitted {
    /// Holds one of the limit's places until the connection closes.
    Within(#[allow(dead_code)] OwnedSemaphorePermit),
    /// Beyond the limit: refused call by call, and closed when `closes` elapses.
    Beyond {
        gate: Gate,
        peer: SocketAddr,
        closes: Pin<Box<tokio::time::Sleep>>,
    },
}

/// An accepted connection and its place under the gate.
pub struct GatedStream {
    stream: TcpStream,
    admitted: Admitted,
    /// Its place among its address's connections, and its deadlines.
    registered: Registered,
    role: &'static str,
}

impl Drop for GatedStream {
    fn drop(&mut self) {
        if let Admitted::Beyond { gate, peer, .. } = &self.admitted {
            gate.overflow().remove(peer);
        }
    }
}

impl GatedStream {
    /// True once an overflow connection's time is up: it then reads as closed.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        match &mut self.admitted {
            Admitted::Within(_) => false,
            Admitted::Beyond { closes, .. } => closes.as_mut().poll(cx).is_ready(),
        }
    }
}

impl AsyncRead for GatedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let role = self.role;
        if self.expired(cx) || self.registered.overdue(cx, role) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for GatedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Connected for GatedStream {
    // The TCP stream's own information, so peer addresses and certificates read as usual.
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// Accepts connections on `listener` through `gate` until the server stops taking them.
fn gated_incoming(listener: TcpListener, gate: Gate) -> ReceiverStream<io::Result<GatedStream>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let item = match accepted {
                Ok((stream, _)) => match gate.admit(stream) {
                    Some(gated) => Ok(gated),
                    None => continue,
                },
                Err(error) => {
                    // Out of file descriptors and the like: the next accept may succeed.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if tx.send(item).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Serves `router` on `listener`, admitting connections through `gate`, until `shutdown`
/// resolves; then lets requests in flight finish for at most `drain`.
async fn serve_gated(
    router: CountedRouter,
    listener: TcpListener,
    gate: Gate,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> Result<(), tonic::transport::Error> {
    serve_incoming(router, gated_incoming(listener, gate), shutdown, drain).await
}

/// What every server role sets up the same way around its services: its limits, the gate
/// on its connections, and its refusal counts, kept in its `[metrics] file` while it serves.
#[derive(Debug)]
pub(crate) struct Serving {
    limits: Limits,
    gate: Gate,
    refusals: Arc<Refusals>,
    metrics_file: Option<std::path::PathBuf>,
}

impl Serving {
    /// The serving of `role` (named in refusals and metrics) under `limits`.
    pub(crate) fn new(
        role: &'static str,
        limits: Limits,
        metrics_file: Option<std::path::PathBuf>,
    ) -> Self {
        Self {
            gate: Gate::new(role, limits.max_connections, limits.hygiene),
            refusals: Refusals::new(role),
            limits,
            metrics_file,
        }
    }

    /// The gate, to install on every service.
    pub(crate) fn gate(&self) -> Gate {
        self.gate.clone()
    }

    /// A server builder with the limits, refusal counting and, when given, TLS.
    pub(crate) fn server(
        &self,
        tls: Option<tonic::transport::ServerTlsConfig>,
    ) -> Result<CountedServer, tonic::transport::Error> {
        self.limits
            .server(tls, &self.refusals, &self.gate.connections)
    }

    /// Serves `router` on `listener` until `shutdown` resolves and requests in flight
    /// finish (at most `drain`), keeping the metrics file meanwhile and once more at the end.
    pub(crate) async fn serve(
        self,
        router: CountedRouter,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
        drain: Duration,
    ) -> Result<(), tonic::transport::Error> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let metrics = self
            .metrics_file
            .map(|file| tokio::spawn(Arc::clone(&self.refusals).keep_written(file, stopped)));
        let result = serve_gated(router, listener, self.gate, shutdown, drain).await;
        stop.send_replace(true);
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        result
    }
}

/// What sets one server role apart when it is served: everything else about serving (the
/// limits, TLS or the warning without it, the gate, refusal counting, the metrics file,
/// draining at shutdown) is the same for every role, in [`serve_role`].
#[derive(Debug)]
pub struct RoleServing<'a> {
    /// The role, as refusals, metrics and logs name it.
    pub role: &'static str,
    /// The fully qualified names of the services the role adds (`hrs.v1.Aggregator`):
    /// what health reports SERVING and reflection lists.
    pub services: &'static [&'static str],
    /// Its `[limits]`.
    pub limits: ServerLimits,
    /// Calls one connection may have open at once.
    pub calls_per_connection: usize,
    /// Its `[tls]`, when set.
    pub tls: Option<&'a TlsFiles>,
    /// Whether a client must present a certificate when TLS is on.
    pub clients: ClientCertificates,
    /// What an operator is told when the role serves without TLS.
    pub plaintext_warning: &'static str,
    /// Its `[metrics]`.
    pub metrics: &'a MetricsTable,
    /// Now, to warn of a certificate that expires soon.
    pub now: time::OffsetDateTime,
}

/// Why a role could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The TLS certificates could not be loaded.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// The gRPC server failed.
    #[error("server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Health or reflection could not be set up.
    #[error(transparent)]
    Probes(#[from] ProbeError),
}

/// A role's work beside serving (forwarding, delivery, retention): told to stop when the
/// role begins shutting down, and awaited before [`serve_role`] returns.
#[derive(Debug)]
pub struct Background {
    name: &'static str,
    stop: Arc<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Background {
    /// Spawns `work`, given the receiver that turns true when it is to stop.
    pub fn spawn<Work, Fut>(name: &'static str, work: Work) -> Self
    where
        Work: FnOnce(tokio::sync::watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopping) = tokio::sync::watch::channel(false);
        Self {
            name,
            stop: Arc::new(stop),
            task: tokio::spawn(work(stopping)),
        }
    }
}

/// Serves a role on `listener` until `shutdown` resolves and calls in flight finish (at
/// most [`DRAIN_DEADLINE`]), then stops its `background` work and waits for it.
/// `services` adds the role's services to the routes it is given (health and reflection
/// already), each sized to the limits and behind the gate. Health answers SERVING from
/// the start and NOT_SERVING once `shutdown` resolves.
pub async fn serve_role(
    role: RoleServing<'_>,
    listener: TcpListener,
    services: impl FnOnce(CountedRouter, &Limits, Gate) -> CountedRouter,
    background: Background,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let name = role.role;
    let limits = Limits::of(role.limits, role.calls_per_connection);
    let tls = match role.tls {
        Some(files) => {
            hrs_pki::warn_if_expiring(&files.cert, role.now);
            Some(tls::server(files, role.clients)?)
        }
        None => {
            tracing::warn!(
                role = name,
                "serving without TLS: {}",
                role.plaintext_warning
            );
            None
        }
    };
    let serving = Serving::new(name, limits, role.metrics.file.clone());
    let health = RoleHealth::new(role.services);
    let (reflection, reflection_v1alpha) = probes::reflection(role.services)?;
    // Outside the gate and the role's callers' checks: a probe needs no identity beyond
    // what the listener's TLS asks, and hears that a busy role is alive.
    let router = serving
        .server(tls)?
        .add_service(health.server())
        .add_service(reflection)
        .add_service(reflection_v1alpha);
    let router = services(router, &limits, serving.gate());
    let stop = Arc::clone(&background.stop);
    let shutting_down = async move {
        shutdown.await;
        tracing::info!(role = name, "shutting down");
        health.stop();
        stop.send_replace(true);
    };
    let result = serving
        .serve(router, listener, shutting_down, DRAIN_DEADLINE)
        .await;
    background.stop.send_replace(true);
    if let Err(error) = background.task.await {
        tracing::warn!(role = name, task = background.name, %error, "background work ended abnormally");
    }
    tracing::info!(role = name, "stopped");
    Ok(result?)
}

/// A generated server that receives and sends messages up to a role's `max_message_mb`,
/// behind the role's gate: how every role's service is added in [`serve_role`].
pub trait RoleService: Sized {
    /// This service sized to `limits` and wrapped in `gate`.
    fn limited(self, limits: &Limits, gate: Gate) -> InterceptedService<Self, Gate>;
}

macro_rules! role_service {
    ($($module:ident::$server:ident),*) => {$(
        impl<T> RoleService for crate::v1::$module::$server<T> {
            fn limited(self, limits: &Limits, gate: Gate) -> InterceptedService<Self, Gate> {
                InterceptedService::new(
                    self.max_decoding_message_size(limits.max_message_bytes)
                        .max_encoding_message_size(limits.max_message_bytes),
                    gate,
                )
            }
        }
    )*};
}

role_service!(
    aggregator_server::AggregatorServer,
    connection_point_server::ConnectionPointServer,
    intake_server::IntakeServer
);
