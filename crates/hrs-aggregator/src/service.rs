//! The gRPC service sites push their runs to.

use std::sync::Arc;

use hrs_core::ids::IdError;
use hrs_core::validate::{Invalid, check_run};
use hrs_core::{HierarchyId, SiteCode};
use hrs_proto::v1 as pb;
use hrs_proto::v1::aggregator_server::Aggregator;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use crate::config::AggregatorConfig;
use crate::store::{Commit, Contact, MergeError, MergeStore};

/// Why a push was refused; each maps to one gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The request has no run.
    #[error("field run: missing")]
    MissingRun,
    /// The run failed validation.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The run belongs to another hierarchy.
    #[error("run belongs to hierarchy {0}, not to the one this aggregator serves")]
    WrongHierarchy(String),
    /// The site is not configured here.
    #[error("site {0} is not one of this aggregator's sites")]
    UnknownSite(String),
    /// The site hashes with another key than the hierarchy's (or keyed when it is plain).
    #[error(
        "site {site} hashes with key {got:?}, this hierarchy uses {expected:?}: give every site the hierarchy's hash_key_file"
    )]
    HashKey {
        /// The site.
        site: String,
        /// The key fingerprint its run carries (empty: plain hash).
        got: String,
        /// The hierarchy's key fingerprint (empty: plain hash).
        expected: String,
    },
    /// The store refused or failed the commit.
    #[error(transparent)]
    Merge(#[from] MergeError),
    /// The blocking task failed.
    #[error("commit task failed: {0}")]
    Task(String),
}

impl From<PushError> for Status {
    fn from(error: PushError) -> Self {
        match &error {
            PushError::MissingRun => Status::invalid_argument(error.to_string()),
            PushError::Invalid(Invalid::UnknownCatalog(_)) | PushError::HashKey { .. } => {
                Status::failed_precondition(error.to_string())
            }
            PushError::Invalid(_) => Status::invalid_argument(error.to_string()),
            PushError::WrongHierarchy(_) | PushError::UnknownSite(_) => {
                Status::permission_denied(error.to_string())
            }
            PushError::Merge(MergeError::Conflict { .. }) => {
                Status::already_exists(error.to_string())
            }
            PushError::Merge(MergeError::Store(_)) | PushError::Task(_) => {
                tracing::error!(%error, "commit failed");
                Status::internal("the aggregator could not store the run; it will be retried")
            }
        }
    }
}

/// The aggregator's service state.
#[derive(Clone)]
pub struct AggregatorService {
    config: Arc<AggregatorConfig>,
    store: Arc<dyn MergeStore>,
    merged: Arc<Notify>,
}

impl AggregatorService {
    /// Creates the service; `merged` is notified whenever a run becomes current.
    pub fn new(
        config: Arc<AggregatorConfig>,
        store: Arc<dyn MergeStore>,
        merged: Arc<Notify>,
    ) -> Self {
        Self {
            config,
            store,
            merged,
        }
    }

    async fn push(&self, request: pb::PushRunRequest) -> Result<(Commit, Vec<String>), PushError> {
        let report = request.link.unwrap_or_default();
        let run = request.run.ok_or(PushError::MissingRun)?;
        let header = check_run(&run)?;
        if header.hierarchy_id != self.config.hierarchy_id {
            return Err(PushError::WrongHierarchy(header.hierarchy_id.to_string()));
        }
        if !self.config.sites.contains(&header.site) {
            return Err(PushError::UnknownSite(header.site.to_string()));
        }
        if run.hash_key_id != self.config.hash_key_id {
            return Err(PushError::HashKey {
                site: header.site.to_string(),
                got: run.hash_key_id.clone(),
                expected: self.config.hash_key_id.clone(),
            });
        }
        let store = Arc::clone(&self.store);
        let received_at = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
        let commit = tokio::task::spawn_blocking(move || {
            store
                .commit(&run, &header, &received_at)
                .map(|c| (c, header))
        })
        .await
        .map_err(|e| PushError::Task(e.to_string()))??;
        let (commit, header) = commit;
        self.record_contact(Contact {
            site: header.site.to_string(),
            at: received_at_now(),
            delivered: Some((header.run_id.to_string(), header.period.to_string())),
            last_delivery_at: None,
            report,
        })
        .await;
        tracing::info!(
            site = %header.site,
            period = %header.period,
            run_id = %header.run_id,
            outcome = ?commit,
            "run committed"
        );
        // A duplicate may be the re-send of a push whose answer was lost before the
        // forwarder was woken; waking it costs nothing when the period has already gone.
        if commit != Commit::Superseded {
            self.merged.notify_one();
        }
        if commit == Commit::Merged {
            // A new current run of a period answers a re-initialisation request for it.
            let (site, period) = (header.site.to_string(), header.period.to_string());
            self.on_store(move |store| store.reinit_done(&site, &period))
                .await;
        }
        let reinit = self.reinit_for(&header.site).await;
        Ok((commit, reinit))
    }
}

impl AggregatorService {
    /// Records a contact; a failure to record it is logged, never fails the push, since
    /// the run itself is already committed.
    async fn record_contact(&self, contact: Contact) {
        self.on_store(move |store| store.record_contact(&contact))
            .await;
    }

    /// Runs a store operation on the blocking pool; a failure is logged and yields the
    /// default, since it must not fail a contact whose run is already committed.
    async fn on_store<T: Default + Send + 'static>(
        &self,
        op: impl FnOnce(&dyn MergeStore) -> Result<T, hrs_store::StoreError> + Send + 'static,
    ) -> T {
        let store = Arc::clone(&self.store);
        match tokio::task::spawn_blocking(move || op(store.as_ref())).await {
            Ok(Ok(value)) => value,
            Ok(Err(error)) => {
                tracing::warn!(%error, "link bookkeeping failed");
                T::default()
            }
            Err(error) => {
                tracing::warn!(%error, "link bookkeeping failed");
                T::default()
            }
        }
    }

    /// The periods a site is asked to send again.
    async fn reinit_for(&self, site: &SiteCode) -> Vec<String> {
        let site = site.to_string();
        self.on_store(move |store| store.reinit_pending(&site))
            .await
    }

    async fn heartbeat(&self, request: pb::HeartbeatRequest) -> Result<Vec<String>, PushError> {
        let hierarchy: HierarchyId =
            request
                .hierarchy_id
                .parse()
                .map_err(|e: IdError| Invalid::Field {
                    field: "hierarchy_id".into(),
                    problem: e.to_string(),
                })?;
        if hierarchy != self.config.hierarchy_id {
            return Err(PushError::WrongHierarchy(hierarchy.to_string()));
        }
        let site: SiteCode = request.site.parse().map_err(|e: IdError| Invalid::Field {
            field: "site".into(),
            problem: e.to_string(),
        })?;
        if !self.config.sites.contains(&site) {
            return Err(PushError::UnknownSite(site.to_string()));
        }
        self.record_contact(Contact {
            site: site.to_string(),
            at: received_at_now(),
            delivered: None,
            last_delivery_at: None,
            report: request.link.unwrap_or_default(),
        })
        .await;
        Ok(self.reinit_for(&site).await)
    }
}

fn received_at_now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

#[tonic::async_trait]
impl Aggregator for AggregatorService {
    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let peer = request.remote_addr();
        let service = self.clone();
        hrs_proto::serve::detached(async move {
            match AggregatorService::heartbeat(&service, request.into_inner()).await {
                Ok(reinit_periods) => Ok(Response::new(pb::HeartbeatResponse { reinit_periods })),
                Err(error) => {
                    tracing::warn!(?peer, %error, "heartbeat refused");
                    Err(error.into())
                }
            }
        })
        .await
    }

    async fn push_run(
        &self,
        request: Request<pb::PushRunRequest>,
    ) -> Result<Response<pb::PushRunResponse>, Status> {
        let peer = request.remote_addr();
        let service = self.clone();
        hrs_proto::serve::detached(async move {
            match service.push(request.into_inner()).await {
                Ok((commit, reinit_periods)) => Ok(Response::new(pb::PushRunResponse {
                    duplicate: commit == Commit::Duplicate,
                    superseded: commit == Commit::Superseded,
                    reinit_periods,
                })),
                Err(error) => {
                    tracing::warn!(?peer, %error, "push refused");
                    Err(error.into())
                }
            }
        })
        .await
    }
}
