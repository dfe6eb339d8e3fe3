//! The connection point: the one role that may send a hierarchy's data out of it.
//!
//! The top-level aggregator offers it merged periods; it checks and commits each one, then
//! delivers it: online with its next update check, which submits to the intake and keeps
//! the update manifest the intake answers; offline, the connection tool carries it out
//! (`prepare`, `connect`, `import`). Whatever leaves goes through [`outbound`], the single
//! definition of what the configured level lets out; the connection tool's
//! [`export_csv`] shows exactly that for review.

pub mod bundle;
mod config;
mod deliver;
pub mod intake;
mod offer;
pub mod offline;
mod outbound;
mod status;
mod store;
mod tool;

use std::borrow::Cow;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use hrs_core::clock::Clock;
use hrs_core::validate::Invalid;
use hrs_proto::v1 as pb;
use hrs_rpc::error::{Code, RpcError};
use hrs_rpc::receive::ReceiveError;
use hrs_rpc::serve::{Background, RoleService as _, RoleServing, ServeError, serve_role};
use hrs_rpc::tls::ClientCertificates;
use hrs_rpc::v1::connection_point_server::{ConnectionPoint, ConnectionPointServer};
use hrs_store::StoreError;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};
use tracing::{Instrument as _, info};

pub use config::{ConnectionPointConfig, Mode};
pub use outbound::{Policy, outbound};
pub use status::{PointPeriod, PointStatus, status};
pub use store::{
    Acknowledged, CheckRecord, ImportOutcome, ImportedPackage, ManifestSource, Offered,
    OutboxStore, PeriodState, SqliteOutbox, State, StoredManifest, Unsent,
};
pub use tool::{ExportSummary, export_csv, export_rows, periods};

/// Largest message sent to or taken from the intake, far above any of them (a chunk of a
/// period, a manifest, a chunk of a package); the intake enforces its own `max_message_mb`.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Calls one connection may have open at once; an aggregator offers one period at a time.
const CALLS_PER_CONNECTION: usize = 8;

/// Why the connection point refused a period, or a connection tool step failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The period is malformed, names an unknown catalog, or its digest is wrong.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The period belongs to another hierarchy.
    #[error(
        "period belongs to hierarchy {got:?}, this connection point serves {expected:?}: check hierarchy_id on both sides"
    )]
    WrongHierarchy {
        /// The hierarchy hash the period carries.
        got: String,
        /// The hash of the configured hierarchy.
        expected: String,
    },
    /// With TLS, a caller other than the aggregator offered a period.
    #[error("{caller} may not offer periods: only the aggregator's certificate may")]
    NotPermitted {
        /// Who called, as its certificate names it.
        caller: String,
    },
    /// A period's encoding is larger than the outbox keeps.
    #[error("period of {size} bytes; the connection point keeps periods of at most {max}")]
    TooLarge {
        /// The offered size.
        size: u64,
        /// The most it keeps.
        max: u64,
    },
    /// A period's bytes are not what its offer said (SHA-256, period or digest).
    #[error("{0}")]
    Corrupt(String),
    /// A period was already stored under this content with other bytes, or its upload
    /// belongs to another hierarchy.
    #[error("period upload conflicts: the connection point holds {stored}, the offer is {sent}")]
    Conflict {
        /// What is held.
        stored: String,
        /// What was offered.
        sent: String,
    },
    /// A chunk stream broke the protocol, or broke off.
    #[error(transparent)]
    Receive(#[from] ReceiveError<StoreError>),
    /// A staged period could not be read back for its check.
    #[error("cannot read the staged period: {0}")]
    Staged(String),
    /// The store could not be opened, read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A tool step needs the connection point's store, and there is none yet.
    #[error(
        "no connection point store at {}: run the connection point first or check `store` in {config}",
        store.display()
    )]
    NoStore {
        /// Where the store was expected.
        store: PathBuf,
        /// The configuration that names it.
        config: String,
    },
    /// The TLS certificates could not be loaded.
    #[error("tls: {0}")]
    Tls(#[from] hrs_rpc::tls::TlsError),
    /// A file or folder could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The configuration lacks what its mode needs (checked by [`ConnectionPointConfig::load`]).
    #[error("configuration: {0}")]
    Config(String),
    /// The gRPC server could not be set up or failed.
    #[error("connection point server: {0}")]
    Serve(#[from] ServeError),
}

impl RpcError for ConnectionError {
    fn code(&self) -> Code {
        match self {
            Self::Invalid(Invalid::UnknownCatalog(_)) => Code::FailedPrecondition,
            Self::Invalid(_) => Code::InvalidArgument,
            Self::WrongHierarchy { .. } | Self::NotPermitted { .. } => Code::PermissionDenied,
            Self::TooLarge { .. } | Self::Corrupt(_) => Code::InvalidArgument,
            Self::Conflict { .. } => Code::AlreadyExists,
            Self::Receive(error) => error.code().unwrap_or(Code::Internal),
            Self::Staged(_)
            | Self::Store(_)
            | Self::NoStore { .. }
            | Self::Tls(_)
            | Self::Io { .. }
            | Self::Config(_)
            | Self::Serve(_) => Code::Internal,
        }
    }

    fn public_message(&self) -> Cow<'_, str> {
        match self.code() {
            Code::Internal => "the connection point could not store the period; retry later".into(),
            _ => self.to_string().into(),
        }
    }
}

/// The gRPC service over a store.
struct PointService<S> {
    store: Arc<S>,
    /// Hash of the configured hierarchy; offered periods must carry it.
    hierarchy_hash: String,
    /// Wakes the delivery task when a period needs sending.
    wake: Arc<Notify>,
    /// Who may offer periods.
    offerers: Offerers,
    /// Stamps each period as it arrives.
    clock: Arc<dyn Clock>,
}

impl<S> Clone for PointService<S> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            hierarchy_hash: self.hierarchy_hash.clone(),
            wake: Arc::clone(&self.wake),
            offerers: self.offerers,
            clock: Arc::clone(&self.clock),
        }
    }
}

#[tonic::async_trait]
impl<S: OutboxStore> ConnectionPoint for PointService<S> {
    async fn offer_period_chunks(
        &self,
        request: Request<tonic::Streaming<pb::PeriodChunk>>,
    ) -> Result<Response<pb::OfferPeriodResponse>, Status> {
        self.answer(
            "offer_period_chunks",
            request,
            |service, chunks| async move { service.receive(chunks).await },
        )
        .await
    }

    async fn resume_period(
        &self,
        request: Request<pb::ResumePeriodRequest>,
    ) -> Result<Response<pb::ResumePeriodResponse>, Status> {
        self.answer("resume_period", request, |service, request| async move {
            service.resume(request).await
        })
        .await
    }
}

/// Who may offer periods: with TLS, the aggregator's certificate only; without, anyone.
#[derive(Debug, Clone, Copy)]
struct Offerers {
    tls: bool,
}

impl Offerers {
    /// Refuses a caller that may not offer periods.
    fn permitted<T>(self, request: &Request<T>) -> Result<(), ConnectionError> {
        if !self.tls {
            return Ok(());
        }
        let caller =
            match hrs_rpc::tls::peer_certificate(request).map(|der| hrs_pki::identity(&der)) {
                Some(Ok(hrs_pki::Identity::Role(hrs_pki::Role::Aggregator))) => return Ok(()),
                Some(Ok(other)) => other.to_string(),
                // Named, so the operator of a certificate naming two identities learns why.
                Some(Err(error)) => format!("a client whose certificate is refused ({error})"),
                None => "a client without an identity".into(),
            };
        Err(ConnectionError::NotPermitted { caller })
    }
}

/// Refuses a caller that may not offer periods before any message of its call is read:
/// tonic decodes a unary request whole before its handler runs.
impl tonic::service::Interceptor for Offerers {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.permitted(&request)
            .map(|()| request)
            .map_err(|error| hrs_rpc::error::status(&error))
    }
}

impl<S: OutboxStore> PointService<S> {
    /// Answers one call from an aggregator that may offer periods, running `work` to
    /// completion even if the caller goes away.
    async fn answer<Req, Resp, Work, Fut>(
        &self,
        name: &'static str,
        request: Request<Req>,
        work: Work,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Send + 'static,
        Resp: Send + 'static,
        Work: FnOnce(Self, Req) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Resp, ConnectionError>> + Send + 'static,
    {
        let span = tracing::info_span!("call", name, peer = ?request.remote_addr());
        self.offerers
            .permitted(&request)
            .map_err(|error| hrs_rpc::error::status(&error))?;
        let (service, request) = (self.clone(), request.into_inner());
        hrs_rpc::serve::detached(
            async move {
                work(service, request)
                    .await
                    .map_err(|error| hrs_rpc::error::status(&error))
            }
            .instrument(span),
        )
        .await
        .map(Response::new)
    }
}

/// Runs the connection point on `listener` until `shutdown` completes: receives periods
/// and checks for updates in the background, then drains in-flight calls.
pub async fn serve(
    config: ConnectionPointConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ConnectionError> {
    serve_with_clock(config, listener, shutdown, hrs_core::clock::system()).await
}

/// [`serve`] with periods stamped, and the update-check schedule kept, by `clock` (tests
/// move it by hand).
pub async fn serve_with_clock(
    config: ConnectionPointConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    clock: Arc<dyn Clock>,
) -> Result<(), ConnectionError> {
    let delivery = deliver::Delivery::of(&config);
    let path = config.store.clone();
    let store = tokio::task::spawn_blocking(move || SqliteOutbox::open(&path))
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
    let store = Arc::new(store);

    let wake = Arc::new(Notify::new());
    let delivering = {
        let (store, wake, clock) = (store.clone(), wake.clone(), Arc::clone(&clock));
        Background::spawn("delivery", move |stop| {
            deliver::run(delivery, store, wake, clock, stop)
        })
    };

    info!(
        listen = ?listener.local_addr().ok(),
        mode = %config.mode,
        level = %config.level,
        intake = config.intake.as_deref().unwrap_or(""),
        store = %store.path().display(),
        "connection point listening"
    );
    let offerers = Offerers {
        tls: config.tls.is_some(),
    };
    let service = PointService {
        store,
        hierarchy_hash: config.hierarchy_id.hashed(),
        wake,
        offerers,
        clock: Arc::clone(&clock),
    };
    let role = RoleServing {
        role: "connection point",
        services: &[hrs_rpc::v1::connection_point_server::SERVICE_NAME],
        limits: config.limits,
        calls_per_connection: CALLS_PER_CONNECTION,
        tls: config.tls.as_ref(),
        clients: ClientCertificates::Required,
        plaintext_warning: "any client can offer periods",
        metrics: &config.metrics,
        now: clock.now(),
    };
    let result = serve_role(
        role,
        listener,
        |router, limits, gate| {
            // Outside the generated server, which decodes a message before its handler runs.
            router.add_service(InterceptedService::new(
                ConnectionPointServer::new(service).limited(limits, gate),
                offerers,
            ))
        },
        delivering,
        shutdown,
    )
    .await;
    Ok(result?)
}

#[cfg(test)]
mod tests;
