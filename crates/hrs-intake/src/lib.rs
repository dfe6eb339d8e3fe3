//! The reference intake: a stand-in for the vendor's cloud service that receives each
//! hierarchy's merged periods, so the whole upward path runs end to end here and in tests.
//!
//! It checks every submission as strictly as a real receiver would (shape, catalog, digest),
//! commits it before answering, answers a re-send with the stored record, and prunes what
//! is older than its retention.

mod config;
mod store;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hrs_core::validate::{Invalid, check_merged};
use hrs_proto::refusals::Refusals;
use hrs_proto::tls::ClientCertificates;
use hrs_proto::v1 as pb;
use hrs_proto::v1::intake_server::{Intake, IntakeServer};
use hrs_store::StoreError;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};
use tracing::{Instrument as _, error, info, warn};

pub use config::{HierarchyToken, IntakeConfig};
pub use store::{Accepted, IntakeStore, SqliteIntake, SubmissionSummary, submission_id};

/// Calls one connection may have open at once.
const CALLS_PER_CONNECTION: usize = 8;

/// How often retention is applied while the intake runs.
const PRUNE_EVERY: Duration = Duration::from_secs(24 * 60 * 60);

/// Why the intake refused a submission or could not run.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The submission is malformed, names an unknown catalog, or its digest is wrong.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The store could not be opened or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The gRPC server failed.
    #[error("intake server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The TLS certificates could not be loaded.
    #[error("tls: {0}")]
    Tls(#[from] hrs_proto::tls::TlsError),
}

impl From<IntakeError> for Status {
    fn from(e: IntakeError) -> Self {
        match e {
            // Refusals are logged and counted once, by `hrs_proto::refusals`.
            IntakeError::Invalid(Invalid::UnknownCatalog(_)) => {
                Status::failed_precondition(e.to_string())
            }
            IntakeError::Invalid(_) => Status::invalid_argument(e.to_string()),
            IntakeError::Store(_) | IntakeError::Transport(_) | IntakeError::Tls(_) => {
                error!(error = %e, "intake store failed");
                Status::internal("the intake could not store the submission; retry later")
            }
        }
    }
}

/// The gRPC service over a store.
struct IntakeService<S> {
    store: Arc<S>,
    /// With TLS, only connection points' certificates (or a hierarchy's token) may submit.
    tls: bool,
    /// Hashed hierarchy ID → SHA-256 of its token.
    tokens: Arc<HashMap<String, String>>,
}

impl<S> Clone for IntakeService<S> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            tls: self.tls,
            tokens: Arc::clone(&self.tokens),
        }
    }
}

/// Who submitted, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Submitter {
    /// Plaintext: nobody is authenticated.
    Anyone,
    /// A connection point's certificate.
    Certificate,
    /// A hierarchy's token.
    Token,
}

impl<S> IntakeService<S> {
    /// Decides whether the caller may submit this request's period.
    fn authenticate(&self, request: &Request<pb::SubmitRequest>) -> Result<Submitter, Status> {
        if !self.tls {
            return Ok(Submitter::Anyone);
        }
        if let Some(der) = hrs_proto::tls::peer_certificate(request) {
            return match hrs_pki::identity(&der) {
                Ok(hrs_pki::Identity::Role(hrs_pki::Role::ConnectionPoint)) => {
                    Ok(Submitter::Certificate)
                }
                Ok(other) => Err(Status::permission_denied(format!(
                    "{other} may not submit: only a connection point's certificate may"
                ))),
                Err(_) => Err(Status::permission_denied(
                    "a client certificate without an HRS identity may not submit",
                )),
            };
        }
        let Some(token) = bearer(request) else {
            return Err(Status::unauthenticated(
                "no client certificate and no token: a connection point presents its certificate or its hierarchy's token (authorization: Bearer)",
            ));
        };
        let hierarchy = request
            .get_ref()
            .period
            .as_ref()
            .map_or("", |p| p.hierarchy_hash.as_str());
        match self.tokens.get(hierarchy) {
            Some(expected) if *expected == hrs_core::token::fingerprint(token) => {
                Ok(Submitter::Token)
            }
            _ => Err(Status::unauthenticated(format!(
                "the token is not valid for hierarchy {hierarchy:?}"
            ))),
        }
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
    /// Checks, stores and answers one submission.
    async fn handle(&self, request: pb::SubmitRequest) -> Result<pb::SubmitResponse, IntakeError> {
        let period = request.period.ok_or_else(|| Invalid::Field {
            field: "period".into(),
            problem: "missing".into(),
        })?;
        let (when, level) = check_merged(&period)?;
        let accepted = self.store.accept(&period, &request.client_version).await?;
        info!(
            hierarchy = %period.hierarchy_hash,
            period = %when,
            %level,
            digest = %period.digest,
            submission_id = %accepted.submission_id,
            duplicate = accepted.duplicate,
            client_version = %request.client_version,
            "submission accepted"
        );
        Ok(pb::SubmitResponse {
            submission_id: accepted.submission_id,
            duplicate: accepted.duplicate,
            accepted_at: accepted.accepted_at,
        })
    }
}

#[tonic::async_trait]
impl<S: IntakeStore> Intake for IntakeService<S> {
    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let span = tracing::info_span!(
            "submit",
            peer = ?request.remote_addr(),
            submitter = tracing::field::Empty
        );
        let submitter = self.authenticate(&request)?;
        span.record("submitter", tracing::field::debug(&submitter));
        let request = request.into_inner();
        let service = self.clone();
        hrs_proto::serve::detached(
            async move { service.handle(request).await.map_err(Status::from) }.instrument(span),
        )
        .await
        .map(Response::new)
    }
}

/// Deletes submissions older than the retention now and then once a day until `stop`.
async fn prune_daily<S: IntakeStore>(
    store: Arc<S>,
    retention_days: u32,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let cutoff = OffsetDateTime::now_utc() - time::Duration::days(i64::from(retention_days));
        match store.prune(cutoff).await {
            Ok(0) => {}
            Ok(pruned) => info!(pruned, retention_days, "pruned expired submissions"),
            Err(e) => warn!(error = %e, "pruning expired submissions failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
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
    let path = config.store.clone();
    let store = tokio::task::spawn_blocking(move || SqliteIntake::open(&path))
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
    let store = Arc::new(store);

    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let pruner = tokio::spawn(prune_daily(store.clone(), config.retention_days, stop_rx));

    let local = listener.local_addr().ok();
    info!(
        listen = ?local,
        store = %store.path().display(),
        retention_days = config.retention_days,
        "intake listening"
    );
    let settings = config.limits();
    let limits = hrs_proto::serve::Limits::from_settings(
        settings.max_connections,
        CALLS_PER_CONNECTION,
        settings.request_timeout_seconds,
        settings.max_message_mb,
    );
    let tokens = config
        .hierarchy_tokens
        .iter()
        .map(|t| (t.hierarchy.clone(), t.token_sha256.clone()))
        .collect();
    let service = IntakeServer::new(IntakeService {
        store,
        tls: config.tls().is_some(),
        tokens: Arc::new(tokens),
    })
    .max_decoding_message_size(limits.max_message_bytes)
    .max_encoding_message_size(limits.max_message_bytes);
    let signal = stop_tx.clone();
    let tls = match config.tls() {
        Some(tls) => {
            hrs_pki::warn_if_expiring(&tls.cert);
            // A hierarchy with a token may connect without a client certificate.
            let clients = if config.hierarchy_tokens.is_empty() {
                ClientCertificates::Required
            } else {
                ClientCertificates::Optional
            };
            Some(tls.server_with(clients)?)
        }
        None => {
            warn!("serving without TLS");
            None
        }
    };
    let gate = hrs_proto::serve::Gate::new("intake", limits.max_connections);
    let refusals = Refusals::new("intake");
    let metrics = config
        .metrics_file
        .clone()
        .map(|file| tokio::spawn(Arc::clone(&refusals).keep_written(file, stop_tx.subscribe())));
    let router = limits
        .server(tls, &refusals)?
        .add_service(InterceptedService::new(service, gate.clone()));
    let result = hrs_proto::serve::serve_gated(
        router,
        listener,
        gate,
        async move {
            shutdown.await;
            info!("intake shutting down");
            signal.send_replace(true);
        },
        hrs_proto::serve::DRAIN_DEADLINE,
    )
    .await;
    stop_tx.send_replace(true);
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    if let Err(e) = pruner.await {
        warn!(error = %e, "retention task ended abnormally");
    }
    result?;
    info!("intake stopped");
    Ok(())
}

#[cfg(test)]
mod tests;
