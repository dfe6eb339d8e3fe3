//! Forwarding: each period goes upstream to the connection point as soon as every site
//! has reported, or at its deadline with the sites present; a change to a forwarded period
//! (a late site, a newer run) forwards it again. Every forward but a complete period's
//! first waits until the period has been quiet for the settling time, so a burst of
//! arrivals leaves as one submission (see [`ready_at`]). A region aggregator instead relays
//! every site's current runs, as they are, to the aggregator above it, so hierarchies
//! deeper than two tiers run the same code.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hrs_core::bytes::RunBytes;
use hrs_core::catalog::Catalog;
use hrs_core::clock::{Clock, SharedClock};
use hrs_core::merged_encoding::{MergedEncoding, MergedHeader};
use hrs_core::{Period, SiteCode};
use hrs_proto::v1 as pb;
use hrs_rpc::chunks::ChunkedPushError;
use hrs_rpc::v1::aggregator_client::AggregatorClient;
use hrs_rpc::v1::connection_point_client::ConnectionPointClient;
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};

use crate::config::{AggregatorConfig, Onward};
use crate::store::{MergeStore, StoredRun};

/// How often periods are re-examined when nothing else happens, in case the wall clock
/// jumped past a deadline the forwarder was sleeping towards.
const RECHECK: Duration = Duration::from_secs(15 * 60);

/// Runs until `stop` turns true: forwards every ready period whenever a run is merged or
/// a period's deadline or settling time passes on `clock`, and retries failures every
/// `retry_seconds`.
pub async fn run(
    config: Arc<AggregatorConfig>,
    store: Arc<dyn MergeStore>,
    catalog: Arc<Catalog>,
    merged: Arc<Notify>,
    clock: SharedClock,
    mut stop: watch::Receiver<bool>,
) {
    let (upstream, relay) = match &config.onward {
        Onward::ConnectionPoint(point) => (point.clone(), false),
        Onward::Upstream(aggregator) => (aggregator.clone(), true),
        Onward::Kept => return,
    };
    loop {
        let result = if relay {
            relay_ready(&store, &upstream, &config, &*clock)
                .await
                .map(|()| None)
        } else {
            forward_ready(&config, &store, &catalog, &upstream, &*clock).await
        };
        let (wait, next_due) = match result {
            Ok(next_due) => (RECHECK, next_due),
            Err(error) => {
                tracing::warn!(%error, upstream, "forwarding failed");
                (Duration::from_secs(config.retry_seconds), None)
            }
        };
        let due = async {
            match next_due {
                Some(at) => clock.sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.changed() => return,
            () = merged.notified() => {}
            () = tokio::time::sleep(wait) => {}
            () = due => {}
        }
    }
}

/// What decides when a merged period may go upstream.
#[derive(Debug, Clone, Copy)]
pub struct Readiness {
    /// Every expected site has a current run.
    pub complete: bool,
    /// Some version of the period was forwarded before.
    pub forwarded_before: bool,
    /// When its content last changed: the newest of its current runs arrived.
    pub last_change: Option<OffsetDateTime>,
}

/// Returns when a period whose merged content differs from what was last forwarded may be
/// forwarded: at once when it is complete for the first time; otherwise once it has been
/// quiet for `settle` and, while sites are missing, once `deadline` after the week closed
/// has passed. So a complete period leaves the moment its last site reports, a period past
/// its deadline leaves once with the sites present, and a late site or a re-send forwards
/// it again, a burst of them as one.
pub fn ready_at(
    period: Period,
    readiness: Readiness,
    deadline: time::Duration,
    settle: time::Duration,
) -> OffsetDateTime {
    if readiness.complete && !readiness.forwarded_before {
        return OffsetDateTime::UNIX_EPOCH;
    }
    let settled = readiness
        .last_change
        .map_or(OffsetDateTime::UNIX_EPOCH, |at| at.saturating_add(settle));
    if readiness.complete {
        settled
    } else {
        settled.max(period.closes_at().saturating_add(deadline))
    }
}

/// Pushes every current run the upstream aggregator has not committed yet, as stored. A
/// run it refuses is logged and tried again next time without holding back the others.
async fn relay_ready(
    store: &Arc<dyn MergeStore>,
    upstream: &str,
    config: &AggregatorConfig,
    clock: &dyn Clock,
) -> Result<(), String> {
    let reader = Arc::clone(store);
    let runs = tokio::task::spawn_blocking(move || reader.unrelayed())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if runs.is_empty() {
        return Ok(());
    }
    let channel = hrs_rpc::tls::connect(upstream, config.tls.as_ref())
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let mut client = AggregatorClient::new(channel)
        .max_encoding_message_size(crate::MAX_MESSAGE_BYTES)
        .max_decoding_message_size(crate::MAX_MESSAGE_BYTES);
    for run in runs {
        let bytes = store.payload(&run);
        let StoredRun {
            run_id,
            site,
            period,
            ..
        } = run;
        let outgoing = hrs_rpc::chunks::Outgoing {
            run_id: run_id.clone(),
            site: site.to_string(),
            // Every stored run was checked to be of this hierarchy when it arrived.
            hierarchy_id: config.hierarchy_id.to_string(),
        };
        let pushed = hrs_rpc::chunks::push_run_chunks(
            &mut client,
            outgoing,
            pb::LinkReport::default(),
            bytes,
            hrs_rpc::chunks::DEFAULT_CHUNK_BYTES,
        )
        .await;
        match pushed {
            Ok(_) => {
                let writer = Arc::clone(store);
                let at = clock.now();
                let id = run_id.clone();
                tokio::task::spawn_blocking(move || writer.mark_relayed(&id, at))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                tracing::info!(run_id, %site, %period, "run relayed upstream");
            }
            Err(ChunkedPushError::Status(status)) if hrs_rpc::error::refused(&status) => {
                tracing::error!(run_id, %site, %period, error = %status.message(), "upstream refused a relayed run");
            }
            // Anything else is the link or the upstream failing: try again later, from
            // where the upstream's held bytes end.
            Err(error) => return Err(format!("upstream did not take run {run_id}: {error}")),
        }
    }
    Ok(())
}

/// Names the current runs a period is merged from, with the level and catalog it is merged
/// under: equal names, equal merged period, so an unchanged period is passed over without
/// reading a payload.
fn runs_named(config: &AggregatorConfig, catalog: &Catalog, runs: &[StoredRun]) -> String {
    let mut names: Vec<String> = runs
        .iter()
        .map(|run| format!("{}={}", run.site, run.run_id))
        .collect();
    names.sort();
    format!("{} {} {}", config.level, catalog.version, names.join(","))
}

/// Builds a period's merged encoding from its current runs, read from the store a range at
/// a time, off the runtime.
async fn merged_encoding(
    config: &AggregatorConfig,
    catalog: &Catalog,
    store: &Arc<dyn MergeStore>,
    period: Period,
    runs: &[StoredRun],
    missing_sites: Vec<SiteCode>,
) -> Result<MergedEncoding, String> {
    let header = MergedHeader {
        hierarchy_hash: config.hierarchy_id.hashed(),
        period,
        catalog_version: catalog.version.clone(),
        level: config.level,
        missing_sites,
    };
    let sources: Vec<Arc<dyn RunBytes>> = runs.iter().map(|run| store.payload(run)).collect();
    tokio::task::spawn_blocking(move || MergedEncoding::build(header, sources))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("period {period} cannot be merged: {e}"))
}

/// Offers every period that is ready (see [`ready_at`]) to the connection point; returns
/// when the next of those not yet ready will be. A period whose current runs are those of
/// its last forward is passed over without reading them.
async fn forward_ready(
    config: &AggregatorConfig,
    store: &Arc<dyn MergeStore>,
    catalog: &Catalog,
    upstream: &str,
    clock: &dyn Clock,
) -> Result<Option<OffsetDateTime>, String> {
    let reader = Arc::clone(store);
    let current = tokio::task::spawn_blocking(move || reader.current_runs())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let mut by_period: BTreeMap<Period, Vec<StoredRun>> = BTreeMap::new();
    for run in current {
        by_period.entry(run.period).or_default().push(run);
    }
    let mut client: Option<ConnectionPointClient<tonic::transport::Channel>> = None;
    let mut failed = Vec::new();
    let mut next_due: Option<OffsetDateTime> = None;
    for (period, runs) in by_period {
        let named = runs_named(config, catalog, &runs);
        let reader = Arc::clone(store);
        let (forwarded, last_change) = tokio::task::spawn_blocking(move || {
            Ok::<_, hrs_store::StoreError>((
                reader.forwarded(&period)?,
                reader.last_change(&period)?,
            ))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        if forwarded.as_ref().is_some_and(|f| f.runs == named) {
            continue;
        }
        let missing: Vec<SiteCode> = config
            .sites
            .iter()
            .filter(|site| !runs.iter().any(|run| run.site == **site))
            .cloned()
            .collect();
        let readiness = Readiness {
            complete: missing.is_empty(),
            forwarded_before: forwarded.is_some(),
            last_change,
        };
        let ready = ready_at(
            period,
            readiness,
            config.period_deadline(),
            config.period_settle(),
        );
        if ready > clock.now() {
            next_due = Some(next_due.map_or(ready, |due| due.min(ready)));
            continue;
        }
        let missing_count = missing.len();
        let merged = merged_encoding(config, catalog, store, period, &runs, missing).await?;
        let digest = merged.digest().to_owned();
        // A newer run with the same content (a re-sent period) changes nothing upstream.
        if forwarded.as_ref().is_none_or(|f| f.digest != digest) {
            let client = match &mut client {
                Some(client) => client,
                None => client.insert(
                    ConnectionPointClient::new(
                        hrs_rpc::tls::connect(upstream, config.tls.as_ref())
                            .await
                            .map_err(|e| format!("cannot connect: {e}"))?,
                    )
                    .max_encoding_message_size(crate::MAX_MESSAGE_BYTES)
                    .max_decoding_message_size(crate::MAX_MESSAGE_BYTES),
                ),
            };
            let offer = pb::PeriodOffer {
                hierarchy_hash: config.hierarchy_id.hashed(),
                period: period.to_string(),
                digest: digest.clone(),
                client_version: env!("CARGO_PKG_VERSION").to_owned(),
                ..Default::default()
            };
            let offered = hrs_rpc::chunks::offer_period_chunks(
                client,
                offer,
                Arc::new(merged),
                hrs_rpc::chunks::DEFAULT_CHUNK_BYTES,
            )
            .await;
            match offered {
                Ok(_) => {}
                // A period the connection point refuses must not hold back the periods after
                // it; it is offered again at the next retry.
                Err(ChunkedPushError::Status(status)) if hrs_rpc::error::refused(&status) => {
                    tracing::error!(%period, digest, error = %status.message(), "the connection point refused a period");
                    failed.push(period.to_string());
                    continue;
                }
                // Anything else is the link or the connection point failing: offered again
                // later, from where its held bytes end.
                Err(ChunkedPushError::Status(status)) => {
                    return Err(format!("period {period} not taken: {}", status.message()));
                }
                Err(error) => return Err(format!("period {period} not taken: {error}")),
            }
            tracing::info!(%period, digest, missing = missing_count, "period forwarded");
        }
        let writer = Arc::clone(store);
        let at = clock.now();
        tokio::task::spawn_blocking(move || writer.mark_forwarded(&period, &digest, &named, at))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    if failed.is_empty() {
        Ok(next_due)
    } else {
        Err(format!(
            "the connection point refused {}",
            failed.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const DEADLINE: time::Duration = time::Duration::hours(72);
    const SETTLE: time::Duration = time::Duration::minutes(5);

    fn w48() -> Period {
        "2026-W48".parse().expect("period")
    }

    fn ready(
        complete: bool,
        forwarded_before: bool,
        last_change: OffsetDateTime,
    ) -> OffsetDateTime {
        let readiness = Readiness {
            complete,
            forwarded_before,
            last_change: Some(last_change),
        };
        ready_at(w48(), readiness, DEADLINE, SETTLE)
    }

    #[test]
    fn a_complete_period_leaves_at_once_the_first_time() {
        let arrived = datetime!(2026-11-30 06:00 UTC);
        assert!(ready(true, false, arrived) <= arrived);
        // Long after its deadline, too: the last site completing it is no reason to wait.
        let late = datetime!(2027-03-01 00:00 UTC);
        assert!(ready(true, false, late) <= late);
    }

    #[test]
    fn an_incomplete_period_waits_for_its_deadline_counted_from_the_monday_after_it() {
        // W48 closes on Monday 30 November at 00:00 UTC; 72 hours later is Thursday.
        let arrived = datetime!(2026-11-30 06:00 UTC);
        assert_eq!(
            ready(false, false, arrived),
            datetime!(2026-12-03 00:00 UTC)
        );
    }

    #[test]
    fn past_the_deadline_a_change_leaves_once_the_period_is_quiet() {
        // Arrivals after the deadline: each pushes the forward back by the settling time,
        // so three arrivals within a second make one submission.
        let arrived = datetime!(2026-12-10 12:00:00 UTC);
        assert_eq!(ready(false, false, arrived), arrived + SETTLE);
        assert_eq!(ready(false, true, arrived), arrived + SETTLE);
        // A complete period already forwarded, changed by a late or re-sent run.
        assert_eq!(ready(true, true, arrived), arrived + SETTLE);
    }

    #[test]
    fn a_period_with_no_recorded_change_goes_by_its_deadline_alone() {
        let readiness = Readiness {
            complete: false,
            forwarded_before: false,
            last_change: None,
        };
        assert_eq!(
            ready_at(w48(), readiness, DEADLINE, SETTLE),
            datetime!(2026-12-03 00:00 UTC)
        );
    }

    #[test]
    fn deadlines_run_across_the_iso_year_boundary() {
        // 2026-W53 closes on Monday 4 January 2027, the day 2027-W01 opens.
        let w53: Period = "2026-W53".parse().expect("period");
        let readiness = Readiness {
            complete: false,
            forwarded_before: false,
            last_change: Some(datetime!(2027-01-04 00:00:30 UTC)),
        };
        assert_eq!(
            ready_at(w53, readiness, DEADLINE, SETTLE),
            datetime!(2027-01-07 00:00 UTC)
        );
    }
}
