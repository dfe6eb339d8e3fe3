//! The reference intake: a stand-in for the vendor's cloud service that receives each
//! hierarchy's merged periods, so the whole upward path runs end to end here and in tests.
//!
//! It checks every submission as strictly as a real receiver would (shape, catalog, digest),
//! commits it before answering, answers a re-send with the stored record, and prunes what
//! is older than its retention. A period of any size arrives in resumable chunks
//! ([`chunked`]) and is held whole neither as it arrives nor when it is read again. It also
//! tells each hierarchy which updates of its update catalog apply, decided from the site
//! versions of its latest submission, and serves their packages.

mod chunked;
mod config;
mod store;
mod updates;

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hrs_core::clock::SharedClock;
use hrs_core::config::ConfigError;
use hrs_core::encoded::EncodedError;
use hrs_core::validate::{Invalid, MAX_NAME_BYTES};
use hrs_proto::v1 as pb;
use hrs_rpc::error::{Code, RpcError};
use hrs_rpc::serve::{Background, RoleService as _, RoleServing, ServeError, serve_role};
use hrs_rpc::tls::ClientCertificates;
use hrs_rpc::v1::intake_server::{Intake, IntakeServer};
use hrs_store::StoreError;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};
use tracing::{Instrument as _, info, warn};

pub use config::{HierarchyToken, IntakeConfig};
pub use store::{Accepted, Held, IntakeStore, SqliteIntake, SubmissionSummary, submission_id};
pub use updates::{
    BadVersion, CatalogUpdate, Download, PACKAGE_CHUNK_BYTES, PackageFile, SITE_LIST_QUERY,
    SITE_VERSION_COLUMN, UpdateCatalog, UpdateError, UpdateKind, Version, site_versions,
    site_versions_of,
};

/// Calls one connection may have open at once.
const CALLS_PER_CONNECTION: usize = 8;

/// How often retention is applied while the intake runs.
const PRUNE_EVERY: Duration = Duration::from_secs(24 * 60 * 60);

/// Room a package chunk's message needs beyond its data (field tag and length).
const CHUNK_FRAMING_BYTES: usize = 16;

/// Why the intake refused a call or could not run.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The request is malformed (a submission's shape or digest, a download filter), or a
    /// submission names an unknown catalog.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// A package cannot be served.
    #[error(transparent)]
    Update(#[from] UpdateError),
    /// With TLS, a certificate of another role called.
    #[error("{caller} may not call the intake: only a connection point's certificate may")]
    NotPermitted {
        /// The role its certificate names.
        caller: String,
    },
    /// With TLS, a client certificate names no HRS identity, or more than one.
    #[error("the client certificate may not call the intake: {0}")]
    NoIdentity(String),
    /// With TLS, a connection point's certificate names no hierarchy, so it could act for
    /// any.
    #[error(
        "the connection point's certificate names no hierarchy: issue it with `hrs pki issue --role connection-point --hierarchy ID`"
    )]
    Unbound,
    /// With TLS, a connection point's certificate acted for another hierarchy than its own.
    #[error("the connection point's certificate is for hierarchy {bound}, not for {hierarchy}")]
    OtherHierarchy {
        /// The hierarchy its certificate names.
        bound: String,
        /// The hierarchy as it may be shown (quoted, or its length when too long).
        hierarchy: String,
    },
    /// With TLS, the caller presented neither a certificate nor a token.
    #[error(
        "no client certificate and no token: a connection point presents its certificate or its hierarchy's token (authorization: Bearer)"
    )]
    NoCredentials,
    /// The token is not the one configured for the hierarchy the request names.
    #[error("the token is not valid for {hierarchy}")]
    TokenRefused {
        /// The hierarchy as it may be shown (quoted, or its length when too long).
        hierarchy: String,
    },
    /// A submission offered in chunks is larger than this intake takes.
    #[error(
        "offer.size: {size} bytes; this intake takes submissions up to {max} bytes (max_submission_mb)"
    )]
    TooLarge {
        /// The offered size.
        size: u64,
        /// The configured limit.
        max: u64,
    },
    /// The bytes received do not hash to the offer's SHA-256.
    #[error("submission: the {size} bytes received hash to {actual}, the offer said {offered}")]
    Sha256Mismatch {
        /// Bytes received.
        size: u64,
        /// Their SHA-256.
        actual: String,
        /// The offer's.
        offered: String,
    },
    /// The period received is not the one offered.
    #[error("offer.{field}: the submission carries {carried:?}, the offer said {offered:?}")]
    NotAsOffered {
        /// The offer's field that differs (hierarchy_hash, period or digest).
        field: &'static str,
        /// What the offer said.
        offered: String,
        /// What the period's encoding carries.
        carried: String,
    },
    /// A chunk does not start where the held bytes end.
    #[error("chunk.offset: {offset}, but {held} bytes are held; resume from {held}")]
    OutOfOrder {
        /// Where the chunk starts.
        offset: u64,
        /// Bytes held.
        held: u64,
    },
    /// A stream ended before the whole submission arrived; what arrived is kept.
    #[error("the stream ended with {held} of {size} bytes held; resume from {held}")]
    Incomplete {
        /// Bytes held.
        held: u64,
        /// The offered size.
        size: u64,
    },
    /// A stream broke before its first chunk.
    #[error("the stream broke before its first chunk: {0}")]
    Broken(String),
    /// The stream carried a message that cannot be read (malformed, or over
    /// `max_message_mb`): answered with the stream's own status, as resending the same
    /// message would meet the same fate.
    #[error("{}", .0.message())]
    Unreadable(Status),
    /// A staged submission could not be read back.
    #[error("cannot read the staged submission: {0}")]
    Staged(String),
    /// The update catalog could not be loaded.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The gRPC server could not be set up or failed.
    #[error("intake server: {0}")]
    Serve(#[from] ServeError),
    /// The intake's key could not be read, or could not sign.
    #[error("the intake's signing key: {0}")]
    Sign(#[from] hrs_pki::PkiError),
}

impl RpcError for IntakeError {
    fn code(&self) -> Code {
        match self {
            Self::Invalid(Invalid::UnknownCatalog(_))
            | Self::Update(UpdateError::Changed { .. }) => Code::FailedPrecondition,
            Self::Invalid(_)
            | Self::TooLarge { .. }
            | Self::Sha256Mismatch { .. }
            | Self::NotAsOffered { .. } => Code::InvalidArgument,
            Self::Update(UpdateError::NotFound { .. }) => Code::NotFound,
            Self::NotPermitted { .. }
            | Self::NoIdentity(_)
            | Self::Unbound
            | Self::OtherHierarchy { .. } => Code::PermissionDenied,
            Self::NoCredentials | Self::TokenRefused { .. } => Code::Unauthenticated,
            Self::OutOfOrder { .. } | Self::Incomplete { .. } | Self::Broken(_) => Code::Aborted,
            Self::Unreadable(status) => status.code(),
            Self::Update(UpdateError::Read { .. })
            | Self::Staged(_)
            | Self::Store(_)
            | Self::Config(_)
            | Self::Serve(_)
            | Self::Sign(_) => Code::Internal,
        }
    }

    fn public_message(&self) -> Cow<'_, str> {
        match self {
            Self::Update(UpdateError::Read { .. }) => {
                "the intake could not read the package; retry later".into()
            }
            _ if self.code() == Code::Internal => "the intake's store failed; retry later".into(),
            _ => self.to_string().into(),
        }
    }
}

/// The gRPC service over a store.
struct IntakeService<S> {
    store: Arc<S>,
    /// Who may call, and for which hierarchy.
    callers: Callers,
    /// The updates manifests are decided from and packages served of.
    updates: Arc<UpdateCatalog>,
    /// Data bytes per package chunk: at most 1 MiB, and within the message limit.
    chunk_bytes: usize,
    /// Largest submission offered in chunks (`max_submission_mb`), in bytes.
    max_submission_bytes: u64,
    /// Stamps submissions and manifests.
    clock: SharedClock,
    /// Signs acknowledgements and manifests with the key of the intake's `[tls]`
    /// certificate; none in plaintext, where there is no key to sign with.
    signer: Option<Arc<hrs_pki::Signer>>,
}

impl<S> Clone for IntakeService<S> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            callers: self.callers.clone(),
            updates: Arc::clone(&self.updates),
            chunk_bytes: self.chunk_bytes,
            max_submission_bytes: self.max_submission_bytes,
            clock: Arc::clone(&self.clock),
            signer: self.signer.clone(),
        }
    }
}

/// A request that acts for one hierarchy, so every call is authenticated the same way.
trait ForHierarchy {
    /// The hashed hierarchy ID the request acts for ("" when it names none).
    fn hierarchy(&self) -> &str;
}

impl ForHierarchy for pb::ResumePeriodRequest {
    fn hierarchy(&self) -> &str {
        self.offer
            .as_ref()
            .map_or("", |o| o.hierarchy_hash.as_str())
    }
}

impl ForHierarchy for pb::CheckUpdatesRequest {
    fn hierarchy(&self) -> &str {
        &self.hierarchy_hash
    }
}

impl ForHierarchy for pb::DownloadPackageRequest {
    fn hierarchy(&self) -> &str {
        &self.hierarchy_hash
    }
}

/// Who called, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Caller {
    /// Plaintext: nobody is authenticated.
    Anyone,
    /// A connection point's certificate.
    Certificate,
    /// A hierarchy's token.
    Token,
}

/// What a caller presented, before it is matched to the hierarchy it acts for: a stream's
/// caller is checked before its first message is read, which names the hierarchy.
enum Credentials {
    /// Plaintext: nothing to check.
    Anyone,
    /// A connection point's certificate, which may act for the hierarchy it names only
    /// (its hashed ID).
    Certificate(String),
    /// The SHA-256 of a bearer token, which may act for its own hierarchy only.
    Token(String),
}

/// Who may call the intake: with TLS, a connection point's certificate for the hierarchy
/// it names, or a hierarchy's token for that hierarchy; either for no other.
#[derive(Debug, Clone)]
struct Callers {
    /// Without TLS anyone may call, for any hierarchy.
    tls: bool,
    /// Hashed hierarchy ID → SHA-256 of its token.
    tokens: Arc<HashMap<String, String>>,
}

impl Callers {
    /// Reads what the caller presented: with TLS, a connection point's certificate or a
    /// bearer token; anything else is refused.
    fn credentials<T>(&self, request: &Request<T>) -> Result<Credentials, IntakeError> {
        if !self.tls {
            return Ok(Credentials::Anyone);
        }
        if let Some(der) = hrs_rpc::tls::peer_certificate(request) {
            return match hrs_pki::identity(&der) {
                Ok(hrs_pki::Identity::ConnectionPoint { hierarchy }) => {
                    Ok(Credentials::Certificate(hierarchy))
                }
                Ok(hrs_pki::Identity::Role(hrs_pki::Role::ConnectionPoint)) => {
                    Err(IntakeError::Unbound)
                }
                Ok(other) => Err(IntakeError::NotPermitted {
                    caller: other.to_string(),
                }),
                Err(error) => Err(IntakeError::NoIdentity(error.to_string())),
            };
        }
        let Some(token) = bearer(request) else {
            return Err(IntakeError::NoCredentials);
        };
        Ok(Credentials::Token(hrs_core::token::fingerprint(token)))
    }

    /// Decides whether `credentials` may act for `hierarchy`: a certificate or a token for
    /// its own hierarchy only.
    fn act_for(&self, credentials: &Credentials, hierarchy: &str) -> Result<Caller, IntakeError> {
        let fingerprint = match credentials {
            Credentials::Anyone => return Ok(Caller::Anyone),
            Credentials::Certificate(bound) if bound == hierarchy => {
                return Ok(Caller::Certificate);
            }
            Credentials::Certificate(bound) => {
                return Err(IntakeError::OtherHierarchy {
                    bound: bound.clone(),
                    hierarchy: shown(hierarchy),
                });
            }
            Credentials::Token(fingerprint) => fingerprint,
        };
        match self.tokens.get(hierarchy) {
            Some(expected) if expected == fingerprint => Ok(Caller::Token),
            _ => Err(IntakeError::TokenRefused {
                hierarchy: shown(hierarchy),
            }),
        }
    }

    /// Reads what the caller presented and refuses credentials that can act for no
    /// hierarchy: anything but a connection point's certificate or a configured token.
    fn admit<T>(&self, request: &Request<T>) -> Result<Credentials, IntakeError> {
        let credentials = self.credentials(request)?;
        match &credentials {
            Credentials::Token(fingerprint)
                if !self.tokens.values().any(|known| known == fingerprint) =>
            {
                Err(IntakeError::TokenRefused {
                    hierarchy: "any hierarchy this intake serves".into(),
                })
            }
            _ => Ok(credentials),
        }
    }

    /// Decides whether the caller may act for the request's hierarchy.
    fn authenticate<T: ForHierarchy>(&self, request: &Request<T>) -> Result<Caller, IntakeError> {
        let credentials = self.admit(request)?;
        self.act_for(&credentials, request.get_ref().hierarchy())
    }
}

/// Refuses a caller whose credentials can act for no hierarchy before any message of its
/// call is read: tonic decodes a unary request whole before its handler runs, so a check
/// there would come after an unauthenticated caller's message is in memory. The handlers
/// still match the credentials to the hierarchy a request names.
impl tonic::service::Interceptor for Callers {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.admit(&request)
            .map(|_| request)
            .map_err(|error| hrs_rpc::error::status(&error))
    }
}

/// A hierarchy a caller named, as a refusal shows it: it may be anything the caller sent,
/// so it is quoted only when it is as short as a real one.
fn shown(hierarchy: &str) -> String {
    if hierarchy.len() > hrs_core::validate::MAX_NAME_BYTES {
        format!("the hierarchy named ({} bytes)", hierarchy.len())
    } else {
        format!("hierarchy {hierarchy:?}")
    }
}

/// The token of an `authorization: Bearer` header, if the request carries one.
fn bearer<T>(request: &Request<T>) -> Option<&str> {
    let value = request.metadata().get("authorization")?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

impl<S: IntakeStore> IntakeService<S> {
    /// Returns the site versions of a hierarchy's latest submission (none when it has
    /// submitted nothing), read from its stored encoding a row at a time.
    async fn site_versions(
        &self,
        hierarchy_hash: &str,
    ) -> Result<Option<Vec<Version>>, IntakeError> {
        let Some(latest) = self.store.last_accepted(hierarchy_hash).await? else {
            return Ok(None);
        };
        let versions = tokio::task::spawn_blocking(move || site_versions_of(latest.as_ref()))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?;
        Ok(Some(versions.map_err(unreadable)?))
    }

    /// Decides a hierarchy's update manifest from its latest submission.
    async fn manifest(
        &self,
        request: pb::CheckUpdatesRequest,
    ) -> Result<pb::UpdateManifest, IntakeError> {
        check_hierarchy("hierarchy_hash", &request.hierarchy_hash)?;
        let download: Download = request.download.parse()?;
        let latest = self.site_versions(&request.hierarchy_hash).await?;
        let manifest = self.updates.manifest(
            &request.hierarchy_hash,
            latest.as_deref().unwrap_or_default(),
            &download,
            self.clock.now(),
        );
        let manifest = self.signed(manifest)?;
        info!(
            hierarchy = %request.hierarchy_hash,
            download = %request.download,
            submitted = latest.is_some(),
            site_versions = ?manifest.site_versions,
            updates = ?manifest.updates.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
            client_version = %request.client_version,
            "update manifest served"
        );
        Ok(manifest)
    }

    /// Finds a package the hierarchy may download and opens it, checked against the
    /// catalog; the stream reads it as the client takes it.
    async fn package(
        &self,
        request: pb::DownloadPackageRequest,
    ) -> Result<mpsc::Receiver<Result<pb::PackageChunk, Status>>, IntakeError> {
        check_hierarchy("hierarchy_hash", &request.hierarchy_hash)?;
        let latest = self.site_versions(&request.hierarchy_hash).await?;
        let not_found = || UpdateError::NotFound {
            update: request.update_id.clone(),
            package: request.name.clone(),
            hierarchy: request.hierarchy_hash.clone(),
        };
        let (update, package) = self
            .updates
            .package(
                latest.as_deref().unwrap_or_default(),
                &request.update_id,
                &request.name,
            )
            .map(|(u, p)| (u.id.clone(), p.clone()))
            .ok_or_else(not_found)?;
        let (file, package) = {
            let update = update.clone();
            tokio::task::spawn_blocking(move || {
                package.open_verified(&update).map(|file| (file, package))
            })
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??
        };
        info!(
            hierarchy = %request.hierarchy_hash,
            update = %update,
            package = %package.name,
            size = package.size,
            "package download started"
        );
        Ok(updates::stream_package(
            file,
            package,
            update,
            self.chunk_bytes,
        ))
    }
}

/// Why a stored payload did not read back: the store failed, or, as the intake checked the
/// payload before it stored it, something other than the intake changed it.
fn unreadable(error: EncodedError) -> StoreError {
    match error {
        EncodedError::Read(error) => match error.downcast::<StoreError>() {
            Ok(error) => error,
            Err(error) => StoreError::Corrupt(format!("stored submission: {error}")),
        },
        EncodedError::Invalid(invalid) => {
            StoreError::Corrupt(format!("stored submission: {invalid}"))
        }
    }
}

impl<S> IntakeService<S> {
    /// The answer to a submission of `offer`, fresh or a re-send, signed when the intake
    /// has a key: a receipt carried back offline is worth only what the intake signed.
    fn answered(
        &self,
        offer: &pb::PeriodOffer,
        accepted: Accepted,
    ) -> Result<pb::SubmitResponse, IntakeError> {
        let accepted_at = hrs_core::clock::rfc3339(accepted.accepted_at);
        let signature = match &self.signer {
            Some(signer) => Some(hrs_rpc::signed::to_wire(signer.sign(
                &hrs_rpc::signed::acknowledgement_bytes(
                    &offer.hierarchy_hash,
                    &offer.period,
                    &offer.digest,
                    &accepted.submission_id,
                    &accepted_at,
                ),
            )?)),
            None => None,
        };
        Ok(pb::SubmitResponse {
            submission_id: accepted.submission_id,
            duplicate: accepted.duplicate,
            accepted_at,
            signature,
        })
    }

    /// Signs `manifest` when the intake has a key.
    fn signed(&self, mut manifest: pb::UpdateManifest) -> Result<pb::UpdateManifest, IntakeError> {
        if let Some(signer) = &self.signer {
            let bytes = hrs_rpc::signed::manifest_bytes(&manifest);
            manifest.signature = Some(hrs_rpc::signed::to_wire(signer.sign(&bytes)?));
        }
        Ok(manifest)
    }
}

/// Refuses a request naming no hierarchy in `field`, or an oversize name, before any
/// store read.
fn check_hierarchy(field: &str, hierarchy_hash: &str) -> Result<(), Invalid> {
    let problem = if hierarchy_hash.is_empty() {
        "is empty".to_owned()
    } else if hierarchy_hash.len() > MAX_NAME_BYTES {
        format!("{} bytes; at most {MAX_NAME_BYTES}", hierarchy_hash.len())
    } else {
        return Ok(());
    };
    Err(Invalid::Field {
        field: field.into(),
        problem,
    })
}

impl<S: IntakeStore> IntakeService<S> {
    /// Answers one call: authenticates the caller for the request's hierarchy, then runs
    /// `work` to completion even if the caller goes away, inside `span`.
    async fn answer<Req, Resp, Work, Fut>(
        &self,
        span: tracing::Span,
        request: Request<Req>,
        work: Work,
    ) -> Result<Resp, Status>
    where
        Req: ForHierarchy + Send + 'static,
        Resp: Send + 'static,
        Work: FnOnce(Self, Req) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Resp, IntakeError>> + Send + 'static,
    {
        let caller = self
            .callers
            .authenticate(&request)
            .map_err(|error| hrs_rpc::error::status(&error))?;
        span.record("caller", tracing::field::debug(&caller));
        self.run(span, request.into_inner(), work).await
    }

    /// Answers a stream of chunks: refuses a caller whose credentials can act for no
    /// hierarchy before its first message is read, then runs `work` (which matches the
    /// credentials to the offer's hierarchy) as [`Self::answer`] does.
    async fn answer_stream<Req, Resp, Work, Fut>(
        &self,
        span: tracing::Span,
        request: Request<Req>,
        work: Work,
    ) -> Result<Resp, Status>
    where
        Req: Send + 'static,
        Resp: Send + 'static,
        Work: FnOnce(Self, Credentials, Req) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Resp, IntakeError>> + Send + 'static,
    {
        let credentials = self
            .callers
            .admit(&request)
            .map_err(|error| hrs_rpc::error::status(&error))?;
        self.run(span, request.into_inner(), move |service, request| {
            work(service, credentials, request)
        })
        .await
    }

    /// Runs `work` to completion even if the caller goes away, inside `span`.
    async fn run<Req, Resp, Work, Fut>(
        &self,
        span: tracing::Span,
        request: Req,
        work: Work,
    ) -> Result<Resp, Status>
    where
        Req: Send + 'static,
        Resp: Send + 'static,
        Work: FnOnce(Self, Req) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Resp, IntakeError>> + Send + 'static,
    {
        let service = self.clone();
        hrs_rpc::serve::detached(
            async move {
                work(service, request)
                    .await
                    .map_err(|error| hrs_rpc::error::status(&error))
            }
            .instrument(span),
        )
        .await
    }
}

#[tonic::async_trait]
impl<S: IntakeStore> Intake for IntakeService<S> {
    type DownloadPackageStream =
        tokio_stream::wrappers::ReceiverStream<Result<pb::PackageChunk, Status>>;

    async fn check_updates(
        &self,
        request: Request<pb::CheckUpdatesRequest>,
    ) -> Result<Response<pb::UpdateManifest>, Status> {
        let span = tracing::info_span!("check_updates", peer = ?request.remote_addr(), caller = tracing::field::Empty);
        self.answer(span, request, |service, request| async move {
            service.manifest(request).await
        })
        .await
        .map(Response::new)
    }

    async fn download_package(
        &self,
        request: Request<pb::DownloadPackageRequest>,
    ) -> Result<Response<Self::DownloadPackageStream>, Status> {
        let span = tracing::info_span!("download_package", peer = ?request.remote_addr(), caller = tracing::field::Empty);
        self.answer(span, request, |service, request| async move {
            service.package(request).await
        })
        .await
        .map(|rx| Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn submit_chunks(
        &self,
        request: Request<tonic::Streaming<pb::PeriodChunk>>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let span = tracing::info_span!("submit_chunks", peer = ?request.remote_addr(), caller = tracing::field::Empty);
        self.answer_stream(span, request, |service, credentials, chunks| async move {
            service.submit_chunks(chunks, &credentials).await
        })
        .await
        .map(Response::new)
    }

    async fn resume_submission(
        &self,
        request: Request<pb::ResumePeriodRequest>,
    ) -> Result<Response<pb::ResumeSubmissionResponse>, Status> {
        let span = tracing::info_span!("resume_submission", peer = ?request.remote_addr(), caller = tracing::field::Empty);
        self.answer(span, request, |service, request| async move {
            service.resume_submission(request).await
        })
        .await
        .map(Response::new)
    }
}

/// Deletes submissions older than the retention now and then once a day until `stop`.
async fn prune_daily<S: IntakeStore>(
    store: Arc<S>,
    retention_days: u32,
    clock: SharedClock,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let now = clock.now();
        let cutoff = now - time::Duration::days(i64::from(retention_days));
        match store.prune(cutoff).await {
            Ok(0) => {}
            Ok(pruned) => info!(pruned, retention_days, "pruned expired submissions"),
            Err(e) => warn!(error = %e, "pruning expired submissions failed"),
        }
        tokio::select! {
            () = clock.sleep_until(now + PRUNE_EVERY) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// Runs the intake on `listener` until `shutdown` completes, then drains in-flight calls.
pub async fn serve(
    config: IntakeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), IntakeError> {
    serve_with_clock(config, listener, shutdown, hrs_core::clock::system()).await
}

/// [`serve`] with submissions stamped, and retention kept, by `clock` (tests pin it).
pub async fn serve_with_clock(
    config: IntakeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    clock: SharedClock,
) -> Result<(), IntakeError> {
    let path = config.store.clone();
    let store = tokio::task::spawn_blocking(move || SqliteIntake::open(&path))
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
    let store = Arc::new(store);
    let updates = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || config.updates())
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??
    };

    let pruning = {
        let (store, days, clock) = (store.clone(), config.retention_days, Arc::clone(&clock));
        Background::spawn("retention", move |stop| {
            prune_daily(store, days, clock, stop)
        })
    };

    let local = listener.local_addr().ok();
    info!(
        listen = ?local,
        store = %store.path().display(),
        retention_days = config.retention_days,
        update_catalog = ?updates.path(),
        updates = updates.updates().len(),
        "intake listening"
    );
    let tokens = config
        .hierarchy_tokens
        .iter()
        .map(|t| (t.hierarchy.clone(), t.token_sha256.clone()))
        .collect();
    let role = RoleServing {
        role: "intake",
        services: &[hrs_rpc::v1::intake_server::SERVICE_NAME],
        limits: config.limits,
        calls_per_connection: CALLS_PER_CONNECTION,
        tls: config.tls.as_ref(),
        // A hierarchy with a token may connect without a client certificate.
        clients: if config.hierarchy_tokens.is_empty() {
            ClientCertificates::Required
        } else {
            ClientCertificates::Optional
        },
        plaintext_warning: "any client can submit for any hierarchy",
        metrics: &config.metrics,
        now: clock.now(),
    };
    let callers = Callers {
        tls: config.tls.is_some(),
        tokens: Arc::new(tokens),
    };
    let max_submission_bytes = config.max_submission_mb.saturating_mul(1 << 20);
    // The key of the intake's own certificate signs what a connection point acts on later.
    let signer = match &config.tls {
        Some(tls) => Some(Arc::new(hrs_pki::Signer::load(&tls.cert, &tls.key)?)),
        None => {
            warn!("no [tls]: acknowledgements and update manifests go out unsigned");
            None
        }
    };
    let result = serve_role(
        role,
        listener,
        |router, limits, gate| {
            let service = IntakeServer::new(IntakeService {
                store,
                callers: callers.clone(),
                updates,
                chunk_bytes: PACKAGE_CHUNK_BYTES.min(
                    limits
                        .max_message_bytes
                        .saturating_sub(CHUNK_FRAMING_BYTES)
                        .max(1),
                ),
                max_submission_bytes,
                clock: Arc::clone(&clock),
                signer,
            });
            // Outside the generated server, which decodes a message before its handler runs.
            router.add_service(InterceptedService::new(
                service.limited(limits, gate),
                callers,
            ))
        },
        pruning,
        shutdown,
    )
    .await;
    Ok(result?)
}

#[cfg(test)]
mod tests;
