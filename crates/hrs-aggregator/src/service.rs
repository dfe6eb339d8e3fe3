//! The gRPC service sites push their runs to.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use hrs_core::clock::SharedClock;
use hrs_core::encoded::{EncodedError, check_run};
use hrs_core::ids::IdError;
use hrs_core::validate::{Invalid, RunHeader, check_link_report, check_run_time};
use hrs_core::{HierarchyId, Period, SiteCode};
use hrs_proto::v1 as pb;
use hrs_rpc::error::{Code, RpcError};
use hrs_rpc::receive::{Placed, ReceiveError, receive};
use hrs_rpc::v1::aggregator_server::Aggregator;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use crate::config::{AggregatorConfig, RegionSites};
use crate::store::{Appended, Commit, Contact, MergeError, MergeStore, Staged};

/// Why a push was refused; each maps to one gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
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
    /// Every query of the run failed: it holds no data, and made current it would erase
    /// the site's data of its period, so it is refused whatever its sequence.
    #[error(
        "run {run_id}: every one of its {queries} queries failed at site {site}, so it holds \
         no data; the site's current run of {period} is kept: check the site's database \
         (its agent's site_db setting)"
    )]
    NothingCollected {
        /// The run.
        run_id: String,
        /// The sending site.
        site: String,
        /// Its period.
        period: String,
        /// Its queries, every one failed.
        queries: usize,
    },
    /// The store refused or failed the commit.
    #[error(transparent)]
    Merge(#[from] MergeError),
    /// The blocking task failed.
    #[error("commit task failed: {0}")]
    Task(String),
    /// A chunked run is larger than this aggregator takes.
    #[error("offer.size: {size} bytes; this aggregator takes runs up to {max} bytes (max_run_mb)")]
    TooLarge {
        /// The offered size.
        size: u64,
        /// The configured limit.
        max: u64,
    },
    /// A chunk does not start where the held bytes end.
    #[error("chunk.offset: {offset}, but {held} bytes are held; resume from {held}")]
    OutOfOrder {
        /// Where the chunk starts.
        offset: u64,
        /// Bytes held.
        held: u64,
    },
    /// A stream ended before the whole run arrived; what arrived is kept.
    #[error("the stream ended with {held} of {size} bytes held; resume from {held}")]
    Incomplete {
        /// Bytes held.
        held: u64,
        /// The offered size.
        size: u64,
    },
    /// A TLS client presented no certificate this aggregator can read an identity from.
    #[error("the client's certificate names no usable identity: {0}")]
    NoIdentity(String),
    /// A client's certificate is not for the site whose data it sends.
    #[error("the certificate of {caller} cannot write data of site {site}")]
    NotYours {
        /// Who the certificate is for.
        caller: String,
        /// The site whose data was sent.
        site: String,
    },
    /// An aggregator's certificate relayed a site this aggregator does not configure
    /// beneath it.
    #[error("the certificate of {caller} cannot relay data of site {site}: {reason}")]
    NotBeneath {
        /// Who the certificate is for.
        caller: String,
        /// The site whose data was relayed.
        site: String,
        /// Why the site is not the caller's to relay, and what would make it so.
        reason: String,
    },
    /// A site is already sending as many runs as it may at once.
    #[error(
        "site {site} is already sending {max} run(s) (max_runs_in_flight); send this one after"
    )]
    Busy {
        /// The site.
        site: String,
        /// The limit.
        max: u32,
    },
    /// A staged run could not be read back.
    #[error("cannot read the staged run: {0}")]
    Staged(String),
    /// A stream broke before its first chunk.
    #[error("the stream broke before its first chunk: {0}")]
    Broken(String),
    /// The bytes of a chunked run are not what was offered.
    #[error("{0}")]
    Corrupt(String),
    /// The stream carried a message that cannot be read (malformed, or over
    /// `max_message_mb`): answered with the stream's own status, as resending the same
    /// message would meet the same fate.
    #[error("{}", .0.message())]
    Unreadable(Status),
}

impl PushError {
    /// Why a chunk stream failed: a message that cannot be read is refused as such; any
    /// other failure (the link broke) is `otherwise`, left for the sender's resume.
    fn from_stream(status: Status, otherwise: impl FnOnce(Status) -> Self) -> Self {
        match status.code() {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => Self::Unreadable(status),
            _ => otherwise(status),
        }
    }
}

impl RpcError for PushError {
    fn code(&self) -> Code {
        match self {
            Self::Invalid(Invalid::UnknownCatalog(_))
            | Self::HashKey { .. }
            | Self::NothingCollected { .. } => Code::FailedPrecondition,
            Self::Invalid(_) | Self::TooLarge { .. } | Self::Corrupt(_) => Code::InvalidArgument,
            Self::Busy { .. } => Code::ResourceExhausted,
            Self::Unreadable(status) => status.code(),
            Self::OutOfOrder { .. } | Self::Incomplete { .. } | Self::Broken(_) => Code::Aborted,
            Self::WrongHierarchy(_)
            | Self::UnknownSite(_)
            | Self::NoIdentity(_)
            | Self::NotYours { .. }
            | Self::NotBeneath { .. } => Code::PermissionDenied,
            Self::Merge(MergeError::Conflict { .. }) => Code::AlreadyExists,
            Self::Merge(MergeError::Store(_)) | Self::Task(_) | Self::Staged(_) => Code::Internal,
        }
    }

    fn public_message(&self) -> Cow<'_, str> {
        match self.code() {
            Code::Internal => "the aggregator could not store the run; it will be retried".into(),
            _ => self.to_string().into(),
        }
    }
}

/// Who is calling, as far as this aggregator can tell.
#[derive(Debug, Clone)]
enum Caller {
    /// Plaintext: no identity beyond what messages claim.
    Unverified,
    /// The identity the client's certificate names.
    Certified(hrs_pki::Identity),
}

impl Caller {
    /// A site's certificate writes that site's data only; a region aggregator's relays the
    /// sites `regions` configures beneath its region; nothing else writes.
    fn may_write(&self, site: &SiteCode, regions: &[RegionSites]) -> Result<(), PushError> {
        let identity = match self {
            Self::Unverified => return Ok(()),
            Self::Certified(identity) => identity,
        };
        let beneath = |reason: String| PushError::NotBeneath {
            caller: identity.to_string(),
            site: site.to_string(),
            reason,
        };
        match identity {
            hrs_pki::Identity::Site(own) if own == site => Ok(()),
            hrs_pki::Identity::Region(region) => {
                if regions.is_empty() {
                    return Err(beneath(
                        "this aggregator has no [[regions]], so it takes no relayed run; list \
                         the region's sites under [[regions]] to take them"
                            .into(),
                    ));
                }
                match regions.iter().find(|r| &r.name == region) {
                    Some(entry) if entry.sites.contains(site) => Ok(()),
                    Some(entry) => Err(beneath(format!(
                        "the sites beneath region {region} are {} ([[regions]])",
                        entry
                            .sites
                            .iter()
                            .map(SiteCode::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))),
                    None => Err(beneath(format!(
                        "no [[regions]] entry names region {region}"
                    ))),
                }
            }
            // Every aggregator presents the same certificate to its sites and upstream: one
            // that names no region would relay the whole hierarchy.
            hrs_pki::Identity::Role(hrs_pki::Role::Aggregator) => Err(beneath(
                "its certificate names no region; a region aggregator relays with one issued \
                 by `hrs pki issue --region NAME`, whose sites are listed here under \
                 [[regions]]"
                    .into(),
            )),
            other => Err(PushError::NotYours {
                caller: other.to_string(),
                site: site.to_string(),
            }),
        }
    }
}

/// The aggregator's service state.
#[derive(Clone)]
pub struct AggregatorService {
    config: Arc<AggregatorConfig>,
    store: Arc<dyn MergeStore>,
    merged: Arc<Notify>,
    /// Stamps every arrival and contact; staging ages by it.
    clock: SharedClock,
    /// Runs each site is sending now.
    in_flight: Arc<std::sync::Mutex<std::collections::HashMap<SiteCode, u32>>>,
}

/// One run a site is sending; counted until dropped.
struct InFlight {
    counts: Arc<std::sync::Mutex<std::collections::HashMap<SiteCode, u32>>>,
    site: SiteCode,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.site) {
            *count = count.saturating_sub(1);
        }
    }
}

impl AggregatorService {
    /// Creates the service; `merged` is notified whenever a run becomes current.
    pub fn new(
        config: Arc<AggregatorConfig>,
        store: Arc<dyn MergeStore>,
        merged: Arc<Notify>,
        clock: SharedClock,
    ) -> Self {
        Self {
            config,
            store,
            merged,
            clock,
            in_flight: Arc::default(),
        }
    }

    /// Counts a run `site` starts sending, refusing it beyond `max_runs_in_flight`.
    fn start_run(&self, site: &SiteCode) -> Result<InFlight, PushError> {
        let mut counts = self
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(site.clone()).or_default();
        if *count >= self.config.max_runs_in_flight {
            return Err(PushError::Busy {
                site: site.to_string(),
                max: self.config.max_runs_in_flight,
            });
        }
        *count += 1;
        Ok(InFlight {
            counts: Arc::clone(&self.in_flight),
            site: site.clone(),
        })
    }

    /// Checks that a checked run may be written here: this hierarchy's, from one of its
    /// sites, hashed with its key.
    fn check_sender(&self, header: &RunHeader, hash_key_id: &str) -> Result<(), PushError> {
        if header.hierarchy_id != self.config.hierarchy_id {
            return Err(PushError::WrongHierarchy(header.hierarchy_id.to_string()));
        }
        if !self.config.sites.contains(&header.site) {
            return Err(PushError::UnknownSite(header.site.to_string()));
        }
        if hash_key_id != self.config.hash_key_id {
            return Err(PushError::HashKey {
                site: header.site.to_string(),
                got: hash_key_id.to_owned(),
                expected: self.config.hash_key_id.clone(),
            });
        }
        Ok(())
    }

    /// What follows a commit: the site's contact is recorded, the forwarder woken, a
    /// re-initialisation request answered; returns the commit and the periods the site is
    /// still asked to send again.
    async fn committed(
        &self,
        header: &RunHeader,
        commit: Commit,
        report: pb::LinkReport,
    ) -> (Commit, Vec<String>) {
        self.record_contact(Contact {
            site: header.site.clone(),
            at: self.clock.now(),
            delivered: Some((header.run_id.to_string(), header.period)),
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
            let (site, period) = (header.site.clone(), header.period);
            self.on_store(move |store| store.reinit_done(&site, &period))
                .await;
        }
        let reinit = self.reinit_for(&header.site).await;
        (commit, reinit)
    }
}

/// How much of a staged run is read at once while it is checked.
const CHECK_WINDOW: usize = 1 << 20;

/// A staged run's encoding, read back a range at a time.
struct StagedBytes {
    store: Arc<dyn MergeStore>,
    run_id: String,
    size: u64,
}

impl hrs_core::bytes::RunBytes for StagedBytes {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        self.store
            .staged_range(&self.run_id, offset, len)
            .map_err(std::io::Error::other)
    }
}

/// How long an unfinished chunked run is kept for its site to resume.
const STAGING_KEPT: time::Duration = time::Duration::days(7);

impl AggregatorService {
    /// Checks an offer before anything of it is stored: the site and hierarchy are this
    /// aggregator's, and the size within its limit.
    fn check_offer(
        &self,
        offer: Option<pb::RunOffer>,
        caller: &Caller,
    ) -> Result<(pb::RunOffer, SiteCode), PushError> {
        let field = |field: &str, problem: &str| Invalid::Field {
            field: field.into(),
            problem: problem.into(),
        };
        let offer = offer.ok_or_else(|| field("offer", "missing"))?;
        uuid::Uuid::parse_str(&offer.run_id).map_err(|_| field("offer.run_id", "not a UUID"))?;
        let hierarchy: HierarchyId = offer
            .hierarchy_id
            .parse()
            .map_err(|e: IdError| field("offer.hierarchy_id", &e.to_string()))?;
        if hierarchy != self.config.hierarchy_id {
            return Err(PushError::WrongHierarchy(hierarchy.to_string()));
        }
        let site: SiteCode = offer
            .site
            .parse()
            .map_err(|e: IdError| field("offer.site", &e.to_string()))?;
        if !self.config.sites.contains(&site) {
            return Err(PushError::UnknownSite(site.to_string()));
        }
        caller.may_write(&site, &self.config.regions)?;
        let max = self.config.max_run_mb.saturating_mul(1 << 20);
        if offer.size > max {
            return Err(PushError::TooLarge {
                size: offer.size,
                max,
            });
        }
        if offer.size == 0 {
            return Err(field("offer.size", "is zero").into());
        }
        if offer.sha256.len() != 64 || !offer.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(field("offer.sha256", "not 64 hex digits").into());
        }
        Ok((offer, site))
    }

    /// Finds or starts the staging of an offered run.
    async fn stage(&self, offer: &pb::RunOffer) -> Result<Staged, PushError> {
        let now = self.clock.now();
        let (store, offer) = (Arc::clone(&self.store), offer.clone());
        Ok(
            tokio::task::spawn_blocking(move || store.stage(&offer, now, now - STAGING_KEPT))
                .await
                .map_err(|e| PushError::Task(e.to_string()))??,
        )
    }

    /// Answers `ResumeRun`: how much of the run is held, or the answer its commit got.
    async fn resume(
        &self,
        request: pb::ResumeRunRequest,
        caller: &Caller,
    ) -> Result<pb::ResumeRunResponse, PushError> {
        let (offer, site) = self.check_offer(request.offer, caller)?;
        let staged = self.stage(&offer).await?;
        let committed = match staged.committed {
            Some(commit) => Some(pb::PushRunResponse {
                duplicate: true,
                superseded: commit == Commit::Superseded,
                reinit_periods: self.reinit_for(&site).await,
            }),
            None => None,
        };
        Ok(pb::ResumeRunResponse {
            held_bytes: staged.held,
            committed,
        })
    }

    /// Receives a run, the one way runs arrive: each chunk is stored durably as it
    /// arrives; once all bytes are held they are checked and committed.
    async fn push_chunks(
        &self,
        mut chunks: tonic::Streaming<pb::RunChunk>,
        caller: &Caller,
    ) -> Result<(Commit, Vec<String>), PushError> {
        let first = chunks
            .message()
            .await
            .map_err(|status| {
                PushError::from_stream(status, |status| {
                    PushError::Broken(status.message().to_owned())
                })
            })?
            .ok_or_else(|| Invalid::Field {
                field: "chunk".into(),
                problem: "the stream has no chunk".into(),
            })?;
        let link = first.link.clone().unwrap_or_default();
        check_link_report(&link)?;
        let (offer, site) = self.check_offer(first.offer.clone(), caller)?;
        let _sending = self.start_run(&site)?;
        let staged = self.stage(&offer).await?;
        if let Some(commit) = staged.committed {
            let outcome = if commit == Commit::Superseded {
                Commit::Superseded
            } else {
                Commit::Duplicate
            };
            return Ok((outcome, self.reinit_for(&site).await));
        }
        let mut held = staged.held;
        let received = self.receive_chunks(chunks, first, &offer, &mut held).await;
        // A stream refused before a byte of it was kept leaves no trace: the staging this
        // offer started goes with it.
        if let Err(error) = &received
            && held == 0
            && staged.created
            && !matches!(
                error,
                PushError::Merge(MergeError::Store(_)) | PushError::Task(_)
            )
        {
            let (store, run_id) = (Arc::clone(&self.store), offer.run_id.clone());
            let _ = tokio::task::spawn_blocking(move || store.stage_discard(&run_id)).await;
        }
        received?;
        if held < offer.size {
            return Err(PushError::Incomplete {
                held,
                size: offer.size,
            });
        }
        let outcome = self.commit_staged(&offer, link).await;
        // A run refused on its content is dropped, so a corrected resend starts afresh;
        // after a failure here, what arrived is kept for the retry.
        if let Err(error) = &outcome
            && !matches!(
                error,
                PushError::Merge(MergeError::Store(_)) | PushError::Task(_) | PushError::Staged(_)
            )
        {
            let (store, run_id) = (Arc::clone(&self.store), offer.run_id.clone());
            let _ = tokio::task::spawn_blocking(move || store.stage_discard(&run_id)).await;
        }
        outcome
    }

    /// Checks a fully staged run straight from its staged chunks (bytes against the offer,
    /// then the one run check, `check_run`, digest included, and the sender checks) and
    /// commits it, never holding more than a window of it in memory. A run in which every
    /// query failed is refused: it must never become a site's current run.
    async fn commit_staged(
        &self,
        offer: &pb::RunOffer,
        link: pb::LinkReport,
    ) -> Result<(Commit, Vec<String>), PushError> {
        let source = Arc::new(StagedBytes {
            store: Arc::clone(&self.store),
            run_id: offer.run_id.clone(),
            size: offer.size,
        });
        let checked = tokio::task::spawn_blocking(move || {
            let sha256 = hrs_core::bytes::sha256_of(source.as_ref(), CHECK_WINDOW)?;
            Ok::<_, std::io::Error>((sha256, check_run(source.as_ref())))
        })
        .await
        .map_err(|e| PushError::Task(e.to_string()))?
        .map_err(|e| PushError::Staged(e.to_string()))?;
        let (sha256, checked) = checked;
        if sha256 != offer.sha256 {
            return Err(PushError::Corrupt(format!(
                "run: the {} bytes received hash to {sha256}, the offer said {}",
                offer.size, offer.sha256
            )));
        }
        let checked = checked.map_err(|error| match error {
            EncodedError::Invalid(invalid) => PushError::Invalid(invalid),
            EncodedError::Read(error) => PushError::Staged(error.to_string()),
        })?;
        let nothing_collected = checked.nothing_collected();
        let (header, fields, queries) = (checked.header, checked.fields, checked.sets);
        if fields.run_id != offer.run_id || fields.site != offer.site {
            return Err(PushError::Corrupt(format!(
                "run: carries run {} of site {}, the offer named run {} of site {}",
                fields.run_id, fields.site, offer.run_id, offer.site
            )));
        }
        check_run_time(&header, self.clock.now())?;
        self.check_sender(&header, &fields.hash_key_id)?;
        if nothing_collected {
            return Err(PushError::NothingCollected {
                run_id: header.run_id.to_string(),
                site: header.site.to_string(),
                period: header.period.to_string(),
                queries,
            });
        }
        let (store, offer, received_at) =
            (Arc::clone(&self.store), offer.clone(), self.clock.now());
        let commit = tokio::task::spawn_blocking(move || {
            store
                .commit_staged(&fields, &header, &offer, received_at)
                .map(|c| (c, header))
        })
        .await
        .map_err(|e| PushError::Task(e.to_string()))??;
        let (commit, header) = commit;
        Ok(self.committed(&header, commit, link).await)
    }

    /// Reads the caller's identity from its TLS certificate; without TLS, it is unverified.
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, PushError> {
        if self.config.tls.is_none() {
            return Ok(Caller::Unverified);
        }
        let certs = request
            .peer_certs()
            .ok_or_else(|| PushError::NoIdentity("no certificate".into()))?;
        let leaf = certs
            .first()
            .ok_or_else(|| PushError::NoIdentity("no certificate".into()))?;
        hrs_pki::identity(leaf.as_ref())
            .map(Caller::Certified)
            .map_err(|e| PushError::NoIdentity(e.to_string()))
    }

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
        let site = site.clone();
        let periods: Vec<Period> = self
            .on_store(move |store| store.reinit_pending(&site))
            .await;
        periods.iter().map(Period::to_string).collect()
    }

    async fn heartbeat(
        &self,
        request: pb::HeartbeatRequest,
        caller: &Caller,
    ) -> Result<Vec<String>, PushError> {
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
        caller.may_write(&site, &self.config.regions)?;
        let report = request.link.unwrap_or_default();
        check_link_report(&report)?;
        self.record_contact(Contact {
            site: site.clone(),
            at: self.clock.now(),
            delivered: None,
            last_delivery_at: None,
            report,
        })
        .await;
        Ok(self.reinit_for(&site).await)
    }
}

#[tonic::async_trait]
impl Aggregator for AggregatorService {
    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.answer(request, |service, caller, request| async move {
            let reinit_periods = AggregatorService::heartbeat(&service, request, &caller).await?;
            Ok(pb::HeartbeatResponse { reinit_periods })
        })
        .await
    }

    async fn resume_run(
        &self,
        request: Request<pb::ResumeRunRequest>,
    ) -> Result<Response<pb::ResumeRunResponse>, Status> {
        self.answer(request, |service, caller, request| async move {
            service.resume(request, &caller).await
        })
        .await
    }

    async fn push_run_chunks(
        &self,
        request: Request<tonic::Streaming<pb::RunChunk>>,
    ) -> Result<Response<pb::PushRunResponse>, Status> {
        self.answer(request, |service, caller, chunks| async move {
            service.push_chunks(chunks, &caller).await.map(pushed)
        })
        .await
    }
}

/// The answer to a push, fresh or a re-send.
fn pushed((commit, reinit_periods): (Commit, Vec<String>)) -> pb::PushRunResponse {
    pb::PushRunResponse {
        duplicate: commit == Commit::Duplicate,
        superseded: commit == Commit::Superseded,
        reinit_periods,
    }
}

impl AggregatorService {
    /// Stores the chunks of an offered run as they arrive, starting with `first`, and
    /// keeps `held` at the bytes held durably, also when it stops early.
    async fn receive_chunks(
        &self,
        mut chunks: tonic::Streaming<pb::RunChunk>,
        first: pb::RunChunk,
        offer: &pb::RunOffer,
        held: &mut u64,
    ) -> Result<(), PushError> {
        let store = &self.store;
        let append = |offset: u64, data: Vec<u8>| {
            let (store, run_id) = (Arc::clone(store), offer.run_id.clone());
            async move {
                let appended =
                    tokio::task::spawn_blocking(move || store.stage_append(&run_id, offset, &data))
                        .await
                        .map_err(|e| PushError::Task(e.to_string()))?
                        .map_err(MergeError::from)?;
                Ok(match appended {
                    Appended::Held(after) => Placed::Held(after),
                    Appended::Elsewhere(held) => Placed::Elsewhere(held),
                    // Another stream of the same run finished it, or a newer offer of the
                    // site evicted it: the sender's resume finds out which.
                    Appended::Gone => Placed::Gone,
                })
            }
        };
        receive(&mut chunks, first, offer.size, held, append)
            .await
            .map_err(|error| match error {
                ReceiveError::Field { field, problem } => PushError::Invalid(Invalid::Field {
                    field: field.into(),
                    problem,
                }),
                ReceiveError::OutOfOrder { offset, held } => PushError::OutOfOrder { offset, held },
                ReceiveError::Incomplete { held, size } => PushError::Incomplete { held, size },
                ReceiveError::Unreadable(status) => PushError::Unreadable(status),
                ReceiveError::Store(error) => error,
            })
    }

    /// Answers one call: reads the caller's identity and runs `work` to completion even if
    /// the caller goes away.
    async fn answer<Req, Resp, Work, Fut>(
        &self,
        request: Request<Req>,
        work: Work,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Send + 'static,
        Resp: Send + 'static,
        Work: FnOnce(AggregatorService, Caller, Req) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Resp, PushError>> + Send + 'static,
    {
        let caller = self.caller(&request);
        let service = self.clone();
        hrs_rpc::serve::detached(async move {
            let outcome = match caller {
                Ok(caller) => work(service, caller, request.into_inner()).await,
                Err(error) => Err(error),
            };
            // Refusals are logged and counted once, by `hrs_rpc::refusals`.
            outcome
                .map(Response::new)
                .map_err(|error| hrs_rpc::error::status(&error))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(code: &str) -> SiteCode {
        code.parse().expect("site code")
    }

    fn region(name: &str) -> hrs_pki::Region {
        name.parse().expect("region")
    }

    fn refusal(result: Result<(), PushError>) -> String {
        let error = result.expect_err("refused");
        assert_eq!(error.code(), Code::PermissionDenied, "{error}");
        error.to_string()
    }

    #[test]
    fn a_region_relays_only_the_sites_configured_beneath_it() {
        let regions = [RegionSites {
            name: region("EU"),
            sites: vec![site("P01"), site("P02")],
        }];
        let eu = Caller::Certified(hrs_pki::Identity::Region(region("EU")));
        assert!(eu.may_write(&site("P01"), &regions).is_ok());
        let message = refusal(eu.may_write(&site("P03"), &regions));
        assert!(
            message.contains("region aggregator EU")
                && message.contains("site P03")
                && message.contains("P01, P02"),
            "{message}"
        );
        let us = Caller::Certified(hrs_pki::Identity::Region(region("US")));
        let message = refusal(us.may_write(&site("P01"), &regions));
        assert!(
            message.contains("no [[regions]] entry names region US"),
            "{message}"
        );
        // With no regions, no relayed run is taken.
        let message = refusal(eu.may_write(&site("P01"), &[]));
        assert!(message.contains("has no [[regions]]"), "{message}");
        // An aggregator's certificate naming no region relays nothing.
        let top = Caller::Certified(hrs_pki::Identity::Role(hrs_pki::Role::Aggregator));
        let message = refusal(top.may_write(&site("P01"), &regions));
        assert!(message.contains("names no region"), "{message}");
    }

    #[test]
    fn a_site_writes_its_own_data_and_other_roles_none() {
        let p01 = Caller::Certified(hrs_pki::Identity::Site(site("P01")));
        assert!(p01.may_write(&site("P01"), &[]).is_ok());
        let message = refusal(p01.may_write(&site("P02"), &[]));
        assert!(
            message.contains("cannot write data of site P02"),
            "{message}"
        );
        for other in [
            hrs_pki::Identity::Role(hrs_pki::Role::Intake),
            hrs_pki::Identity::ConnectionPoint {
                hierarchy: "PDxzgm3WAZCP0IEufnsb636Mjt2HQtL17kLYvYQJlKs=".into(),
            },
        ] {
            refusal(Caller::Certified(other).may_write(&site("P01"), &[]));
        }
        assert!(Caller::Unverified.may_write(&site("P01"), &[]).is_ok());
    }
}
