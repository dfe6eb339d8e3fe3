//! The aggregator's view of each site's replication link: when the site last made
//! contact and delivered, and what it reports of its own backlog.
//!
//! A site contacts its aggregator at every check (a push, or a heartbeat when it has
//! nothing to push). Each missed check counts as a failed attempt, so a silent site's link
//! goes `degraded`, then `failed`, on the same thresholds as the agent's own view.

use hrs_core::clock::rfc3339;
use hrs_core::link::LinkState;
use hrs_core::{Period, SiteCode};
use hrs_store::StoreError;
use serde::Serialize;
use time::OffsetDateTime;

use crate::config::AggregatorConfig;
use crate::store::{MergeStore, SqliteMergeStore};

/// One site's link as the aggregator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct SiteLink {
    /// The site.
    pub site: String,
    /// Its state, or none when the site has never made contact.
    pub state: Option<LinkState>,
    /// When the site last made contact (RFC 3339).
    pub last_contact_at: Option<String>,
    /// Checks missed since then.
    pub missed_checks: u32,
    /// When the site last delivered a run (RFC 3339).
    pub last_delivery_at: Option<String>,
    /// The period of the last run it delivered.
    pub last_period: Option<String>,
    /// Runs waiting in the site's spool, as it reported at its last contact.
    pub backlog_runs: u64,
    /// Their size in bytes.
    pub backlog_bytes: u64,
    /// When the oldest of them was collected.
    pub oldest_pending_at: Option<String>,
    /// Runs the site's spool dropped to stay within its limits, ever.
    pub dropped_runs: u64,
    /// Periods the site has been asked to send again and has not yet sent.
    pub reinit_pending: Vec<String>,
}

/// Returns every configured site's link, in configuration order, as of `now`.
pub fn site_links(
    config: &AggregatorConfig,
    store: &SqliteMergeStore,
    now: OffsetDateTime,
) -> Result<Vec<SiteLink>, StoreError> {
    let contacts = store.contacts()?;
    let thresholds = config.link_thresholds;
    let interval = i64::try_from(config.site_check_minutes.max(1)).unwrap_or(i64::MAX);
    let mut reinit = Vec::new();
    for site in &config.sites {
        reinit.push(
            store
                .reinit_pending(site)?
                .iter()
                .map(Period::to_string)
                .collect::<Vec<_>>(),
        );
    }
    Ok(config
        .sites
        .iter()
        .zip(reinit)
        .map(|(site, reinit_pending)| {
            let code = site.to_string();
            let Some(contact) = contacts.iter().find(|c| c.site == *site) else {
                return SiteLink {
                    site: code,
                    state: None,
                    last_contact_at: None,
                    missed_checks: 0,
                    last_delivery_at: None,
                    last_period: None,
                    backlog_runs: 0,
                    backlog_bytes: 0,
                    oldest_pending_at: None,
                    dropped_runs: 0,
                    reinit_pending,
                };
            };
            let minutes = (now - contact.at).whole_minutes().max(0);
            let missed = u32::try_from(minutes / interval).unwrap_or(u32::MAX);
            let report = &contact.report;
            let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
            SiteLink {
                reinit_pending,
                site: code,
                state: Some(thresholds.state(missed)),
                last_contact_at: Some(rfc3339(contact.at)),
                missed_checks: missed,
                last_delivery_at: contact.last_delivery_at.map(rfc3339),
                last_period: contact.delivered.as_ref().map(|(_, p)| p.to_string()),
                backlog_runs: report.backlog_runs,
                backlog_bytes: report.backlog_bytes,
                oldest_pending_at: non_empty(&report.oldest_pending_at),
                dropped_runs: report.dropped_runs,
            }
        })
        .collect())
}

/// Why a re-initialisation could not be requested.
#[derive(Debug, thiserror::Error)]
pub enum ReinitError {
    /// The site is not one of this aggregator's.
    #[error("site {0} is not one of this aggregator's sites")]
    UnknownSite(String),
    /// The site has delivered nothing to send again, and no period was named.
    #[error("site {0} has delivered no period yet; name one with --period")]
    NothingDelivered(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Asks `site` to collect and send `period` again (every period it has delivered, when
/// none is named) at its next contact, and returns the periods asked for. The site's new
/// runs replace its current ones; from the same data they merge to the same result.
pub fn request_reinit(
    config: &AggregatorConfig,
    site: &SiteCode,
    period: Option<&Period>,
    now: OffsetDateTime,
) -> Result<Vec<Period>, ReinitError> {
    if !config.sites.contains(site) {
        return Err(ReinitError::UnknownSite(site.to_string()));
    }
    let store = SqliteMergeStore::open(&config.store)?;
    let periods = match period {
        Some(period) => vec![*period],
        None => {
            let mut periods: Vec<Period> = store
                .current_runs()?
                .into_iter()
                .filter(|run| run.site == *site)
                .map(|run| run.period)
                .collect();
            periods.dedup();
            periods
        }
    };
    if periods.is_empty() {
        return Err(ReinitError::NothingDelivered(site.to_string()));
    }
    store.request_reinit(site, &periods, now)?;
    Ok(periods)
}
