//! The HRS agent: one per site. On schedule it runs the catalog against the site
//! database, writes the run to a durable spool, and pushes it to its aggregator; a run
//! leaves the spool only once the aggregator has acknowledged its durable commit.

pub mod check;
pub mod collect;
pub mod config;
pub mod metrics;
pub mod spool;

use std::future::Future;
use std::time::Duration;

use hrs_core::catalog::{Catalog, CatalogError};
use hrs_core::clock::SharedClock;
use hrs_core::link::LinkState;
use hrs_core::{Period, VERSION};
use hrs_proto::v1 as pb;
use hrs_rpc::v1::aggregator_client::AggregatorClient;
use hrs_store::StoreError;
use rand::Rng as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use config::{AgentConfig, SiteType};

/// Largest message the agent sends or accepts; runs are far smaller.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Why the agent could not collect or deliver.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The shipped catalog does not load.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] StoreError),
    /// A collection could not start (another holds the spool) or be spooled.
    #[error(transparent)]
    Collecting(#[from] spool::CollectingError),
    /// The hierarchy's hash key could not be loaded.
    #[error(transparent)]
    HashKey(#[from] hrs_core::hash::HashKeyError),
    /// The upstream could not be reached.
    #[error("upstream {upstream} unreachable: {source}")]
    Connect {
        /// The configured upstream.
        upstream: String,
        /// The cause.
        source: hrs_rpc::tls::TlsError,
    },
    /// The upstream refused or failed a push.
    #[error("upstream {upstream} did not commit run {run_id}: {status}")]
    Push {
        /// The configured upstream.
        upstream: String,
        /// The run that was pushed.
        run_id: String,
        /// The gRPC status it answered.
        status: Box<tonic::Status>,
    },
    /// A spooled run could not be read to send it.
    #[error("cannot send run {run_id}: {reason}")]
    Read {
        /// The run.
        run_id: String,
        /// Why.
        reason: String,
    },
    /// The upstream refused or failed a heartbeat.
    #[error("upstream {upstream} did not take the heartbeat: {status}")]
    Heartbeat {
        /// The configured upstream.
        upstream: String,
        /// The gRPC status it answered.
        status: Box<tonic::Status>,
    },
    /// The site database could not be opened to collect; nothing was spooled.
    #[error(
        "cannot open the site database {site_db} (the agent's site_db setting) to collect \
         {period}: {source}; nothing was spooled, so the site's data upstream stays as it was"
    )]
    Unopened {
        /// The site database, as logs may show it.
        site_db: String,
        /// The period that was to be collected.
        period: Period,
        /// Why it could not be opened.
        source: hrs_sitedb::SiteDbError,
    },
    /// Every query of a collection failed: the run would hold no data, and made current
    /// upstream it would erase the site's data there, so nothing was spooled.
    #[error(
        "every one of the {queries} queries failed at the site database {site_db} while \
         collecting {period}: {sample}; nothing was spooled, so the site's data upstream stays \
         as it was: check the agent's site_db setting, and that it names this site's \
         database and the agent can read it"
    )]
    NothingCollected {
        /// The site database, as logs may show it.
        site_db: String,
        /// The period collected.
        period: Period,
        /// Queries run, every one failed.
        queries: usize,
        /// A few of the errors they recorded.
        sample: String,
    },
    /// A run was spooled but held: too many of its queries failed for it to replace the
    /// site's current data without an operator's word.
    #[error(
        "run {run_id} of {period} is held in the spool, not delivered: {reason}; check the \
         site database and collect again (a run of {period} that is not held replaces this \
         one), or deliver it as it is with `{release}`"
    )]
    Held {
        /// The held run.
        run_id: String,
        /// Its period.
        period: Period,
        /// Why it is held.
        reason: String,
        /// The command that releases it.
        release: String,
    },
    /// Held runs could not be released.
    #[error(transparent)]
    Release(#[from] spool::ReleaseError),
    /// Runs were still spooled when the deadline of a one-shot delivery passed.
    #[error("{pending} run(s) still spooled after {seconds} s; the service delivers them later")]
    Undelivered {
        /// Runs left in the spool.
        pending: usize,
        /// The deadline that passed.
        seconds: u64,
    },
}

impl AgentError {
    /// Returns true when the upstream refused the run itself, so sending it again cannot
    /// succeed until an operator acts (wrong site, hierarchy, catalog or content).
    pub fn is_refusal(&self) -> bool {
        match self {
            Self::Push { status, .. } | Self::Heartbeat { status, .. } => {
                hrs_rpc::error::refused(status)
            }
            _ => false,
        }
    }
}

/// What one collection produced.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The run's id.
    pub run_id: String,
    /// The period collected.
    pub period: Period,
    /// Queries run.
    pub queries: usize,
    /// Queries that failed (recorded with their error).
    pub failed_queries: usize,
    /// Result rows across all queries.
    pub rows: usize,
    /// Why the run is held in the spool instead of delivered, when it is: more than
    /// `max_failed_share` of its queries failed.
    pub held: Option<String>,
}

/// One site's agent: its configuration, catalog, spool and clock.
#[derive(Debug)]
pub struct Agent {
    config: AgentConfig,
    catalog: Catalog,
    spool: spool::Spool,
    /// Decides which week is due and stamps every run and attempt.
    clock: SharedClock,
}

impl Agent {
    /// Opens the spool and loads the catalog; touches neither the site database nor the
    /// network.
    pub fn open(config: AgentConfig, clock: SharedClock) -> Result<Self, AgentError> {
        let catalog = Catalog::builtin()?;
        let spool = spool::Spool::open(&config.spool)?;
        Ok(Self {
            config,
            catalog,
            spool,
            clock,
        })
    }

    /// Returns the period a collection now covers: the configured one, else the last ISO
    /// week to have ended.
    pub fn due_period(&self) -> Period {
        self.config.period_at(self.clock.now())
    }

    /// Runs the catalog for `period` and spools the run; holds it (spooled, not delivered)
    /// when more than `max_failed_share` of its queries failed.
    ///
    /// A collection that cannot open the site database, or in which every query failed,
    /// spools nothing: it fails with [`AgentError::Unopened`] or
    /// [`AgentError::NothingCollected`], and is counted in the spool for `hrs status`.
    /// The period is not marked collected, so the service tries it again at its next check.
    ///
    /// Fails at once with [`spool::CollectingError::Busy`] while another collection (say
    /// the service, beside `--once`) runs on the same spool.
    pub async fn collect(&self, period: Period) -> Result<RunSummary, AgentError> {
        let outcome = self.collect_run(period).await;
        match &outcome {
            Err(error @ (AgentError::Unopened { .. } | AgentError::NothingCollected { .. })) => {
                let failure = spool::FailedCollection {
                    at: self.clock.stamp(),
                    period: period.to_string(),
                    error: error.to_string(),
                };
                if let Err(record) = self.spool.record_failed_collection(failure).await {
                    tracing::warn!(error = %record, "cannot count the failed collection in the spool");
                }
                self.write_metrics().await;
            }
            Ok(RunSummary {
                run_id,
                held: Some(reason),
                ..
            }) => {
                tracing::error!(
                    %run_id,
                    %period,
                    %reason,
                    release = %self.config.release_command(run_id),
                    "run held in the spool, not delivered: too many of its queries failed for it \
                     to replace the site's data upstream; fix the site database and collect \
                     again, or release the run"
                );
                self.write_metrics().await;
            }
            _ => {}
        }
        outcome
    }

    /// Collects `period` into the spool; see [`Agent::collect`].
    async fn collect_run(&self, period: Period) -> Result<RunSummary, AgentError> {
        let run_id = uuid::Uuid::new_v4();
        // Rows go to the spool as they are read, so memory stays flat however large the
        // run; the run becomes visible in the spool only once whole. Taken first: it holds
        // the spool's collection lock, so nothing is read while another collection runs.
        let mut sink = self.spool.begin(&run_id.to_string()).await?;
        let spec = self.config.site_db.clone();
        let mut db = hrs_sitedb::open(&spec)
            .await
            .map_err(|source| AgentError::Unopened {
                site_db: spec.to_string(),
                period,
                source,
            })?;
        let what = collect::Collection {
            site: self.config.site.clone(),
            site_type: self.config.site_type,
            hierarchy_id: self.config.hierarchy_id,
            level: self.config.level,
            period,
            hasher: self.config.hasher()?,
            clock: self.clock.clone(),
        };
        let sequence = self.spool.next_sequence(self.clock.now()).await?;
        let collected = collect::collect_into(
            &mut db,
            &self.catalog,
            &what,
            run_id,
            sequence,
            Some(self.config.max_run_bytes()),
            &mut sink,
        )
        .await?;
        if collected.nothing_collected() {
            sink.discard().await?;
            return Err(AgentError::NothingCollected {
                site_db: spec.to_string(),
                period,
                queries: collected.queries,
                sample: collect::error_sample(collected.errors.iter().map(String::as_str)),
            });
        }
        let held = self.hold_reason(collected.failed_queries, collected.queries);
        let collected_at = self.clock.stamp();
        let header = collected.header.clone();
        let finished = sink.finish(&header, collected_at, held.clone()).await?;
        for replaced in &finished.replaced {
            tracing::warn!(
                %replaced,
                run_id = %run_id,
                %period,
                "a held run of the period was replaced by this newer one"
            );
        }
        self.enforce_limits().await?;
        let summary = RunSummary {
            run_id: run_id.to_string(),
            period,
            queries: collected.queries,
            failed_queries: collected.failed_queries,
            rows: usize::try_from(collected.rows).unwrap_or(usize::MAX),
            held,
        };
        tracing::info!(
            run_id = %summary.run_id,
            %period,
            queries = summary.queries,
            failed = summary.failed_queries,
            rows = summary.rows,
            bytes = finished.size,
            held = summary.held.is_some(),
            site_db = %spec,
            "run spooled"
        );
        Ok(summary)
    }

    /// Returns why a run with `failed` of `queries` queries failed is held, when more than
    /// `max_failed_share` of them failed.
    fn hold_reason(&self, failed: usize, queries: usize) -> Option<String> {
        if queries == 0 {
            return None;
        }
        let share = failed as f64 / queries as f64;
        (share > self.config.max_failed_share).then(|| {
            format!(
                "{failed} of {queries} queries failed ({:.0}%), more than max_failed_share = {} \
                 allows",
                share * 100.0,
                self.config.max_failed_share
            )
        })
    }

    /// Releases held runs, an operator's word (`hrs release`): the run `run_id`, or every
    /// held run when `None`, goes with the next delivery. Returns what was released.
    pub async fn release(&self, run_id: Option<&str>) -> Result<Vec<spool::HeldRun>, AgentError> {
        let released = self.spool.release(run_id).await?;
        for run in &released {
            tracing::info!(
                run_id = %run.run_id,
                period = %run.period,
                reason = %run.reason,
                "held run released by an operator; it goes with the next delivery"
            );
        }
        self.write_metrics().await;
        Ok(released)
    }

    /// Pushes every spooled run upstream, oldest first, removing each once committed, or
    /// checks in with a heartbeat when none waits; records the attempt in the link's
    /// health and acts on re-initialisation requests in the answer. Returns how many runs
    /// were delivered. A run the upstream refuses stays spooled and the others still go;
    /// the first refusal is returned. A transport failure stops at once.
    pub async fn deliver(&self) -> Result<usize, AgentError> {
        self.enforce_limits().await?;
        let pending = self.spool.waiting().await?;
        let report = self.link_report().await?;
        // With nothing to push the agent still checks in, so both ends know the link.
        let outcome = if pending.is_empty() {
            self.heartbeat(report).await.map(|reinit| (0, reinit))
        } else {
            self.push_all(pending, report).await
        };
        // The link worked if the upstream answered, even when it refused a run.
        let link = match &outcome {
            Err(error) if !error.is_refusal() => Err(error.to_string()),
            _ => Ok(()),
        };
        let record = self.spool.record_attempt(link, self.clock.stamp()).await?;
        let state = self
            .config
            .link_thresholds()
            .state(record.consecutive_failures);
        if state != LinkState::Active {
            tracing::warn!(
                upstream = %self.config.upstream,
                %state,
                consecutive_failures = record.consecutive_failures,
                "link to the upstream is {state}"
            );
        }
        self.write_metrics().await;
        let (delivered, reinit) = outcome?;
        self.reinitialise(reinit).await?;
        Ok(delivered)
    }

    /// Collects again the periods the upstream asked for (`hrs reinit`), unless a run of
    /// that period already waits in the spool; the new runs go with the next delivery.
    async fn reinitialise(&self, periods: Vec<String>) -> Result<(), AgentError> {
        if periods.is_empty() {
            return Ok(());
        }
        let waiting: Vec<String> = self
            .spool
            .waiting()
            .await?
            .into_iter()
            .map(|w| w.period)
            .collect();
        for text in periods {
            if waiting.contains(&text) {
                continue;
            }
            match text.parse::<Period>() {
                Ok(period) => {
                    tracing::info!(%period, "re-initialising: collecting again at the upstream's request");
                    // The delivery this follows succeeded; a collection that fails here is
                    // counted and logged, and the request, still pending upstream, is
                    // answered at a later check.
                    if let Err(error) = self.collect(period).await {
                        tracing::error!(%error, %period, "re-initialisation: collection failed");
                    }
                }
                Err(error) => tracing::warn!(%error, "ignoring a re-initialisation request"),
            }
        }
        Ok(())
    }

    /// Connects to the upstream aggregator.
    async fn client(&self) -> Result<AggregatorClient<tonic::transport::Channel>, AgentError> {
        let upstream = self.config.upstream.clone();
        let channel = hrs_rpc::tls::connect(&upstream, self.config.tls.as_ref())
            .await
            .map_err(|source| AgentError::Connect { upstream, source })?;
        Ok(AggregatorClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// This site's view of its link, as it tells the upstream with every contact.
    async fn link_report(&self) -> Result<pb::LinkReport, AgentError> {
        let link = self.spool.link().await?;
        let backlog = self.spool.backlog().await?;
        Ok(pb::LinkReport {
            consecutive_failures: link.consecutive_failures,
            last_success_at: link.last_success_at.unwrap_or_default(),
            backlog_runs: backlog.runs,
            backlog_bytes: backlog.bytes,
            oldest_pending_at: backlog.oldest_collected_at.unwrap_or_default(),
            dropped_runs: self.spool.dropped_runs().await?,
        })
    }

    /// Checks in with the upstream when there is nothing to push; returns the periods it
    /// asks this site to send again.
    async fn heartbeat(&self, report: pb::LinkReport) -> Result<Vec<String>, AgentError> {
        self.client()
            .await?
            .heartbeat(pb::HeartbeatRequest {
                site: self.config.site.to_string(),
                hierarchy_id: self.config.hierarchy_id.to_string(),
                link: Some(report),
            })
            .await
            .map(|answer| answer.into_inner().reinit_periods)
            .map_err(|status| AgentError::Heartbeat {
                upstream: self.config.upstream.clone(),
                status: Box::new(status),
            })
    }

    /// Pushes runs in order, each as a resumable stream of chunks read from the spool;
    /// see [`Agent::deliver`].
    async fn push_all(
        &self,
        pending: Vec<spool::Waiting>,
        report: pb::LinkReport,
    ) -> Result<(usize, Vec<String>), AgentError> {
        let upstream = self.config.upstream.clone();
        let mut client = self.client().await?;
        let chunk_bytes = self.config.push_chunk_kib as usize * 1024;
        let mut delivered = 0;
        let mut refused = None;
        let mut reinit = Vec::new();
        // Each push reports the backlog still waiting behind the run it carries.
        let mut behind = report;
        for waiting in pending {
            behind.backlog_runs = behind.backlog_runs.saturating_sub(1);
            behind.backlog_bytes = behind.backlog_bytes.saturating_sub(waiting.size);
            let source = std::sync::Arc::new(self.spool.bytes(&waiting.run_id).await?);
            let pushed = hrs_rpc::chunks::push_run_chunks(
                &mut client,
                hrs_rpc::chunks::Outgoing {
                    run_id: waiting.run_id.clone(),
                    site: self.config.site.to_string(),
                    hierarchy_id: self.config.hierarchy_id.to_string(),
                },
                behind.clone(),
                source,
                chunk_bytes,
            )
            .await
            .map_err(|error| match error {
                hrs_rpc::chunks::ChunkedPushError::Status(status) => AgentError::Push {
                    upstream: upstream.clone(),
                    run_id: waiting.run_id.clone(),
                    status: Box::new(status),
                },
                other => AgentError::Read {
                    run_id: waiting.run_id.clone(),
                    reason: other.to_string(),
                },
            });
            let answer = match pushed {
                Ok(answer) => answer,
                // A refused run stays spooled for an operator, and must not hold back the
                // runs behind it: merging goes by sequence, not by arrival order.
                Err(error) if error.is_refusal() => {
                    tracing::error!(%error, "run refused upstream; kept in the spool");
                    refused.get_or_insert(error);
                    continue;
                }
                Err(error) => return Err(error),
            };
            self.spool.remove(&waiting.run_id).await?;
            delivered += 1;
            // The last answer is the freshest view of what is still asked for.
            reinit = answer.reinit_periods.clone();
            tracing::info!(
                run_id = %waiting.run_id,
                bytes = waiting.size,
                duplicate = answer.duplicate,
                superseded = answer.superseded,
                "run committed upstream"
            );
        }
        match refused {
            Some(error) => Err(error),
            None => Ok((delivered, reinit)),
        }
    }

    /// Collects the configured period now and delivers the spool, retrying with backoff
    /// until `deadline`; what is left stays spooled for the service. A run held by
    /// [`Agent::collect`] stays in the spool while the rest is delivered, and is the error
    /// returned.
    pub async fn run_once(&self, deadline: Duration) -> Result<RunSummary, AgentError> {
        let summary = self.collect(self.due_period()).await?;
        let delivered = self.deliver_until(deadline).await;
        match summary.held.clone() {
            None => delivered.map(|()| summary),
            Some(reason) => {
                if let Err(error) = delivered {
                    tracing::error!(%error, "delivery failed");
                }
                Err(AgentError::Held {
                    release: self.config.release_command(&summary.run_id),
                    run_id: summary.run_id,
                    period: summary.period,
                    reason,
                })
            }
        }
    }

    /// Delivers the spool, retrying with backoff until `deadline`.
    async fn deliver_until(&self, deadline: Duration) -> Result<(), AgentError> {
        let started = tokio::time::Instant::now();
        let mut backoff = Backoff::new(self.config.retry_max_seconds);
        loop {
            match self.deliver().await {
                Ok(_) => return Ok(()),
                Err(error) if error.is_refusal() => return Err(error),
                Err(error) => {
                    let wait = backoff.next();
                    if started.elapsed() + wait > deadline {
                        tracing::error!(%error, "delivery failed");
                        let pending = self.spool.waiting().await?.len();
                        return Err(AgentError::Undelivered {
                            pending,
                            seconds: deadline.as_secs(),
                        });
                    }
                    tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "delivery failed");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Keeps the spool within its limits, saying loudly what it drops and why.
    async fn enforce_limits(&self) -> Result<(), AgentError> {
        let dropped = self
            .spool
            .enforce(self.config.spool_limits(), self.clock.now())
            .await?;
        for run in &dropped {
            tracing::error!(
                run_id = %run.run_id,
                period = %run.period,
                reason = %run.reason,
                "spool limit reached: dropped the oldest run, which will never be delivered"
            );
        }
        Ok(())
    }

    /// Rewrites the metrics file, when one is configured; a failure is logged, never
    /// fails the delivery it follows.
    async fn write_metrics(&self) {
        let Some(path) = &self.config.metrics.file else {
            return;
        };
        let written = match self.status().await {
            Ok(status) => metrics::render(&status)
                .map_err(|e| e.to_string())
                .and_then(|text| metrics::write(path, &text).map_err(|e| e.to_string())),
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = written {
            tracing::warn!(file = %path.display(), %error, "cannot write the metrics file");
        }
    }

    /// Returns the state of this site's link to its upstream and what waits to cross it.
    pub async fn status(&self) -> Result<AgentStatus, AgentError> {
        let now = self.clock.now();
        let link = self.spool.link().await?;
        let backlog = self.spool.backlog().await?;
        Ok(AgentStatus {
            site: self.config.site.to_string(),
            upstream: self.config.upstream.clone(),
            site_db: self.config.site_db_summary(),
            state: self
                .config
                .link_thresholds()
                .state(link.consecutive_failures),
            consecutive_failures: link.consecutive_failures,
            last_attempt_at: link.last_attempt_at,
            last_success_at: link.last_success_at,
            last_error: link.last_error,
            backlog_runs: backlog.runs,
            backlog_bytes: backlog.bytes,
            lag_seconds: backlog
                .oldest_collected_at
                .as_deref()
                .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
                .map(|t| (now - t).whole_seconds().max(0)),
            oldest_pending_at: backlog.oldest_collected_at,
            last_collected_period: self.spool.last_collected().await?,
            dropped_runs: self.spool.dropped_runs().await?,
            held_runs: self.spool.held().await?,
            failed_collections: self.spool.failed_collections().await?,
            certificate: self
                .config
                .tls
                .as_ref()
                .and_then(|tls| hrs_pki::Expiry::of(&tls.cert, now).ok()),
        })
    }

    /// Runs the agent as a service until `shutdown` resolves: collects each period once,
    /// and keeps delivering the spool, backing off while the upstream is away.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        tracing::info!(site = %self.config.site, version = VERSION, "agent started");
        if let Some(tls) = &self.config.tls {
            hrs_pki::warn_if_expiring(&tls.cert, self.clock.now());
        }
        let check = Duration::from_secs(self.config.check_minutes * 60);
        let mut backoff = Backoff::new(self.config.retry_max_seconds);
        tokio::pin!(shutdown);
        loop {
            // Taken before the check, so a week that closes while it runs is not missed.
            let week_ends = Period::last_ended(self.clock.now()).next().closes_at();
            let cycle = self.cycle(&mut backoff, check);
            tokio::pin!(cycle);
            let wait = tokio::select! {
                wait = &mut cycle => wait?,
                () = &mut shutdown => {
                    // Let the work in hand finish, up to the deadline; whatever it does not
                    // finish is still in the spool and goes with the next start.
                    let drain = hrs_rpc::serve::DRAIN_DEADLINE;
                    if tokio::time::timeout(drain, &mut cycle).await.is_err() {
                        tracing::warn!(seconds = drain.as_secs(), "stopping with a collection or delivery unfinished");
                    }
                    break;
                }
            };
            // The next check comes after `wait`, or as soon as the week in progress ends,
            // so a week is collected right after it closes.
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(wait) => {}
                () = self.clock.sleep_until(week_ends) => {}
            }
        }
        tracing::info!("agent stopped");
        Ok(())
    }

    /// One check: collects the period when it is due, delivers (or checks in), and returns
    /// how long to wait before the next check.
    async fn cycle(&self, backoff: &mut Backoff, check: Duration) -> Result<Duration, AgentError> {
        let period = self.due_period();
        let due = self.spool.last_collected().await?.as_deref() != Some(&period.to_string());
        if due {
            match self.collect(period).await {
                Ok(_) => {}
                // Another process (`--once`) is collecting on this spool: not a fault; if
                // it collects this period, the next check finds it done.
                Err(AgentError::Collecting(error @ spool::CollectingError::Busy { .. })) => {
                    tracing::warn!(%error, %period, "collection deferred to the next check");
                }
                Err(error) => tracing::error!(%error, %period, "collection failed"),
            }
        }
        Ok(match self.deliver().await {
            Ok(_) => {
                backoff.reset();
                check
            }
            Err(error) => {
                let wait = backoff.next();
                tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "delivery failed");
                wait.min(check)
            }
        })
    }
}

/// An agent's view of its link to the upstream, as `hrs status` prints it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentStatus {
    /// This site.
    pub site: String,
    /// The upstream it delivers to.
    pub upstream: String,
    /// The site database, as logs may show it.
    pub site_db: String,
    /// The link's state: active, degraded or failed.
    pub state: LinkState,
    /// Failed delivery attempts since the last success.
    pub consecutive_failures: u32,
    /// When delivery was last attempted.
    pub last_attempt_at: Option<String>,
    /// When delivery last succeeded.
    pub last_success_at: Option<String>,
    /// Why the last attempt failed, when it did.
    pub last_error: Option<String>,
    /// Runs waiting in the spool.
    pub backlog_runs: u64,
    /// Their size in bytes.
    pub backlog_bytes: u64,
    /// When the oldest waiting run was collected.
    pub oldest_pending_at: Option<String>,
    /// How long the oldest waiting run has waited, in seconds.
    pub lag_seconds: Option<i64>,
    /// The last period collected.
    pub last_collected_period: Option<String>,
    /// Runs dropped, ever, to keep the spool within its limits; never delivered.
    pub dropped_runs: u64,
    /// Runs kept in the spool but not delivered until an operator releases them.
    pub held_runs: Vec<spool::HeldRun>,
    /// Collections that spooled nothing (site database unopened, every query failed).
    pub failed_collections: spool::FailedCollections,
    /// This site's TLS certificate and when it expires, with TLS.
    pub certificate: Option<hrs_pki::Expiry>,
}

/// Exponential backoff with full jitter and a cap, so many sites reconnecting after an
/// outage do not arrive at once.
#[derive(Debug)]
struct Backoff {
    attempt: u32,
    cap: Duration,
}

impl Backoff {
    fn new(cap_seconds: u64) -> Self {
        Self {
            attempt: 0,
            cap: Duration::from_secs(cap_seconds),
        }
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }

    fn next(&mut self) -> Duration {
        let ceiling = Duration::from_millis(500)
            .saturating_mul(1 << self.attempt.min(16))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An agent configuration for tests: site P01 of a fixed hierarchy, collecting
    /// `site_db` into a spool in `dir`, with an upstream never called.
    fn config_for(dir: &std::path::Path, site_db: std::path::PathBuf) -> AgentConfig {
        AgentConfig {
            site: "P01".parse().expect("site code"),
            site_type: SiteType::Primary,
            hierarchy_id: "3b1f7a52-9c4e-4d7a-8f0e-2a6c5d9e1b47".parse().expect("id"),
            level: hrs_core::Level::Enhanced,
            site_db: hrs_sitedb::SiteDbSpec::Sqlite(site_db),
            hash_key_file: None,
            spool: dir.join("spool.sqlite"),
            tls: None,
            metrics: hrs_core::config::MetricsTable {
                file: Some(dir.join("agent.prom")),
            },
            // Never called: runs are only collected and spooled.
            upstream: "http://127.0.0.1:9".into(),
            period: None,
            check_minutes: 60,
            retry_max_seconds: 1,
            spool_max_mb: 1024,
            spool_max_age_days: 365,
            max_run_mb: 953,
            push_chunk_kib: 1024,
            link_degraded_after: 12,
            link_failed_after: 24,
            max_failed_share: config::DEFAULT_MAX_FAILED_SHARE,
            file: Some(dir.join("agent.toml")),
        }
    }

    /// The clock of these tests: the Monday after 2026-W48.
    fn monday() -> hrs_core::clock::ManualClock {
        hrs_core::clock::ManualClock::new(time::macros::datetime!(2026-11-30 06:00 UTC))
    }

    #[tokio::test]
    async fn a_run_past_max_run_mb_is_spooled_with_the_overflowing_query_failed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let site_db = dir.path().join("site.sqlite");
        collect::tests::seed_large_site(&site_db);
        let config = AgentConfig {
            level: hrs_core::Level::Full,
            metrics: hrs_core::config::MetricsTable::default(),
            max_run_mb: 1,
            ..config_for(dir.path(), site_db.clone())
        };
        let agent = Agent::open(config, monday().shared()).expect("opens");
        let period: Period = "2026-W48".parse().expect("period");
        let summary = agent.collect(period).await.expect("collects");
        assert_eq!(summary.failed_queries, 1);
        assert_eq!(summary.held, None);

        // Spooled whole, within the limit, its digest that of its content, so the
        // aggregator takes it; the other queries kept their rows.
        let spooled = agent.spool.pending().await.expect("pending");
        assert_eq!(spooled.len(), 1);
        let run = &spooled[0].run;
        let waiting = agent.spool.waiting().await.expect("waiting");
        assert!(waiting[0].size <= 1 << 20, "{} bytes", waiting[0].size);
        assert_eq!(run.digest, hrs_core::digest::run_digest(run));
        assert_eq!(
            agent
                .spool
                .last_collected()
                .await
                .expect("reads")
                .as_deref(),
            Some("2026-W48")
        );
        let failed: Vec<&pb::ResultSet> =
            run.results.iter().filter(|s| !s.error.is_empty()).collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].query_id, "F-UPDATE-STATUS");
        assert!(failed[0].rows.is_empty());
        assert!(
            failed[0]
                .error
                .contains("limit of 1048576 bytes (max_run_mb)"),
            "{}",
            failed[0].error
        );
        let kept = |id: &str| {
            run.results
                .iter()
                .find(|s| s.query_id == id)
                .map_or(0, |s| s.rows.len())
        };
        // One before the overflowing query, one after it.
        assert!(kept("F-UPDATE-ERRORS") > 1_000);
        assert!(kept("F-ALERTS") > 0);
        assert_eq!(run.results.len(), summary.queries);
    }

    /// Bytes that are no SQLite database, as a garbled or overwritten site database file
    /// holds: a fixed pseudo-random sequence, so every run of the test sees the same.
    fn garbage(len: usize) -> Vec<u8> {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect()
    }

    #[tokio::test]
    async fn a_site_database_that_is_garbage_empty_or_missing_spools_nothing_and_is_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let garbled = dir.path().join("garbage.sqlite");
        std::fs::write(&garbled, garbage(64 << 10)).expect("writes");
        let empty = dir.path().join("empty.sqlite");
        std::fs::write(&empty, b"").expect("writes");
        let missing = dir.path().join("missing.sqlite");
        let period: Period = "2026-W48".parse().expect("period");
        let cases = [
            (garbled, "file is not a database"),
            (empty, "no such table"),
            (missing, "does not exist"),
        ];
        for (n, (site_db, names)) in cases.into_iter().enumerate() {
            let agent = Agent::open(config_for(dir.path(), site_db.clone()), monday().shared())
                .expect("opens");
            let error = agent
                .collect(period)
                .await
                .expect_err("a failed collection");
            let message = error.to_string();
            assert!(
                matches!(
                    error,
                    AgentError::NothingCollected { .. } | AgentError::Unopened { .. }
                ),
                "{message}"
            );
            // It says what to check: the setting, the database, and what the queries hit.
            for part in [
                "site_db",
                &site_db.display().to_string(),
                names,
                "nothing was spooled",
            ] {
                assert!(message.contains(part), "{part:?} missing from: {message}");
            }
            // Nothing spooled, the period not marked collected, so the service tries again.
            assert!(agent.spool.pending().await.expect("pending").is_empty());
            assert_eq!(agent.spool.last_collected().await.expect("reads"), None);
            let status = agent.status().await.expect("status");
            assert_eq!(status.failed_collections.count, n as u64 + 1);
            let last = status.failed_collections.last.expect("the last failure");
            assert_eq!(last.period, "2026-W48");
            assert_eq!(last.at, "2026-11-30T06:00:00Z");
            assert!(last.error.contains(names), "{}", last.error);
            let metrics = std::fs::read_to_string(dir.path().join("agent.prom")).expect("metrics");
            let line = format!("hrs_agent_failed_collections_total {}", n + 1);
            assert!(
                metrics.lines().any(|l| l == line),
                "{line} missing from\n{metrics}"
            );
        }
        // The next collection's lock is free and nothing of the failed ones is left.
        let seeded = dir.path().join("site.sqlite");
        hrs_sitedb::seed(&seeded, &"P01".parse().expect("site"), 20, 1).expect("seeds");
        let agent = Agent::open(config_for(dir.path(), seeded), monday().shared()).expect("opens");
        let summary = agent.collect(period).await.expect("collects");
        assert_eq!((summary.failed_queries, summary.held), (0, None));
        assert_eq!(agent.spool.waiting().await.expect("waiting").len(), 1);
    }

    /// Seeds a site database at `path`, then drops every view but `v_R_System`, so most
    /// queries fail and a few still return rows.
    fn seed_mostly_missing(path: &std::path::Path) {
        hrs_sitedb::seed(path, &"P01".parse().expect("site"), 20, 1).expect("seeds");
        let conn = rusqlite::Connection::open(path).expect("opens");
        let names: Vec<(String, String)> = conn
            .prepare(
                "SELECT type, name FROM sqlite_master
                 WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%'
                   AND name <> 'v_R_System'",
            )
            .expect("prepares")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("lists")
            .collect::<Result<_, _>>()
            .expect("reads");
        for (kind, name) in names {
            conn.execute_batch(&format!("DROP {kind} IF EXISTS \"{name}\""))
                .expect("drops");
        }
    }

    #[tokio::test]
    async fn a_run_with_most_queries_failed_is_held_until_released_or_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broken_db = dir.path().join("broken.sqlite");
        seed_mostly_missing(&broken_db);
        let good_db = dir.path().join("good.sqlite");
        hrs_sitedb::seed(&good_db, &"P01".parse().expect("site"), 20, 1).expect("seeds");
        let clock = monday();
        let broken = Agent::open(config_for(dir.path(), broken_db), clock.shared()).expect("opens");
        let period: Period = "2026-W48".parse().expect("period");

        let first = broken.collect(period).await.expect("collects");
        assert!(
            first.failed_queries * 2 > first.queries && first.failed_queries < first.queries,
            "{} of {} failed",
            first.failed_queries,
            first.queries
        );
        let reason = first.held.clone().expect("held");
        assert!(
            reason.contains(&format!(
                "{} of {} queries failed",
                first.failed_queries, first.queries
            )) && reason.contains("max_failed_share = 0.5"),
            "{reason}"
        );
        // Spooled, the period collected, but not for delivery nor in the backlog.
        let spooled = broken.spool.pending().await.expect("pending");
        assert_eq!(spooled.len(), 1);
        assert!(broken.spool.waiting().await.expect("waiting").is_empty());
        assert_eq!(
            broken
                .spool
                .last_collected()
                .await
                .expect("reads")
                .as_deref(),
            Some("2026-W48")
        );
        let status = broken.status().await.expect("status");
        assert_eq!(status.backlog_runs, 0);
        assert_eq!(status.held_runs.len(), 1);
        assert_eq!(status.held_runs[0].run_id, first.run_id);
        assert_eq!(status.held_runs[0].reason, reason);
        let metrics = std::fs::read_to_string(dir.path().join("agent.prom")).expect("metrics");
        assert!(
            metrics.lines().any(|l| l == "hrs_agent_held_runs 1"),
            "{metrics}"
        );

        // An operator's word: an unknown id is refused naming what is held; then released.
        let unknown = broken
            .release(Some("no-such-run"))
            .await
            .expect_err("unknown");
        assert!(
            unknown.to_string().contains("no-such-run is not held")
                && unknown.to_string().contains(&first.run_id),
            "{unknown}"
        );
        let released = broken.release(None).await.expect("releases");
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].run_id, first.run_id);
        let waiting = broken.spool.waiting().await.expect("waiting");
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].run_id, first.run_id);
        let nothing = broken.release(None).await.expect_err("nothing held");
        assert!(nothing.to_string().contains("no run is held"), "{nothing}");

        // A newer held run of the period replaces an older held one, and a run that is
        // not held replaces both; the released run is delivered as any other.
        let second = broken.collect(period).await.expect("collects");
        let third = broken.collect(period).await.expect("collects");
        assert!(second.held.is_some() && third.held.is_some());
        let held = broken.spool.held().await.expect("held");
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].run_id, third.run_id);
        let good = Agent::open(config_for(dir.path(), good_db), clock.shared()).expect("opens");
        let fourth = good.collect(period).await.expect("collects");
        assert_eq!((fourth.failed_queries, fourth.held), (0, None));
        assert!(good.spool.held().await.expect("held").is_empty());
        let waiting = good.spool.waiting().await.expect("waiting");
        assert_eq!(waiting.len(), 2);
        assert_eq!(
            (&waiting[0].run_id, &waiting[1].run_id),
            (&first.run_id, &fourth.run_id)
        );
        assert_eq!(good.spool.pending().await.expect("pending").len(), 2);
    }

    #[test]
    fn backoff_grows_to_its_cap() {
        let mut b = Backoff::new(4);
        let waits: Vec<Duration> = (0..8).map(|_| b.next()).collect();
        assert!(waits[0] <= Duration::from_millis(500));
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(4)));
        assert!(waits[7] >= Duration::from_secs(2));
        b.reset();
        assert!(b.next() <= Duration::from_millis(500));
    }
}
