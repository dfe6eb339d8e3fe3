//! The reference intake: a stand-in for the vendor's cloud service that receives each
//! hierarchy's merged periods, so the whole upward path runs end to end here and in tests.
//!
//! It checks every submission as strictly as a real receiver would (shape, catalog, digest),
//! commits it before answering, answers a re-send with the stored record, and prunes what
//! is older than its retention.

mod config;
mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hrs_core::validate::{Invalid, check_merged};
use hrs_proto::v1 as pb;
use hrs_proto::v1::intake_server::{Intake, IntakeServer};
use hrs_store::StoreError;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tracing::{Instrument as _, error, info, warn};

pub use config::IntakeConfig;
pub use store::{Accepted, IntakeStore, SqliteIntake, SubmissionSummary, submission_id};

/// Largest message the intake accepts or sends: a whole hierarchy's period in one message.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

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
            IntakeError::Invalid(Invalid::UnknownCatalog(_)) => {
                warn!(error = %e, "submission refused");
                Status::failed_precondition(e.to_string())
            }
            IntakeError::Invalid(_) => {
                warn!(error = %e, "submission refused");
                Status::invalid_argument(e.to_string())
            }
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
    /// With TLS, only connection points' certificates may submit.
    tls: bool,
}

impl<S> Clone for IntakeService<S> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            tls: self.tls,
        }
    }
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
        let span = tracing::info_span!("submit", peer = ?request.remote_addr());
        if self.tls {
            let caller = hrs_proto::tls::peer_certificate(&request)
                .and_then(|der| hrs_pki::identity(&der).ok());
            if caller != Some(hrs_pki::Identity::Role(hrs_pki::Role::ConnectionPoint)) {
                let caller =
                    caller.map_or("a client without an identity".into(), |c| c.to_string());
                warn!(%caller, "submission refused: not a connection point's certificate");
                return Err(Status::permission_denied(format!(
                    "{caller} may not submit: only a connection point's certificate may"
                )));
            }
        }
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
    let service = IntakeServer::new(IntakeService {
        store,
        tls: config.tls().is_some(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let signal = stop_tx.clone();
    let mut server = tonic::transport::Server::builder();
    match config.tls() {
        Some(tls) => {
            hrs_pki::warn_if_expiring(&tls.cert);
            server = server.tls_config(tls.server()?)?;
        }
        None => warn!("serving without TLS"),
    }
    let router = server.add_service(service);
    let result = hrs_proto::serve::serve_until(
        router,
        listener,
        async move {
            shutdown.await;
            info!("intake shutting down");
            signal.send_replace(true);
        },
        hrs_proto::serve::DRAIN_DEADLINE,
    )
    .await;
    stop_tx.send_replace(true);
    if let Err(e) = pruner.await {
        warn!(error = %e, "retention task ended abnormally");
    }
    result?;
    info!("intake stopped");
    Ok(())
}

#[cfg(test)]
mod tests;
