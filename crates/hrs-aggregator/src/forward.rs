//! Forwarding: each period, once complete (or past its deadline), goes upstream to the
//! connection point; a newer run for a forwarded period forwards it again. A region
//! aggregator instead relays every site's current runs, as they are, to the aggregator
//! above it, so hierarchies deeper than two tiers run the same code.

use std::sync::Arc;
use std::time::Duration;

use hrs_core::Period;
use hrs_core::catalog::Catalog;
use hrs_proto::chunks::ChunkedPushError;
use hrs_proto::v1 as pb;
use hrs_proto::v1::aggregator_client::AggregatorClient;
use hrs_proto::v1::connection_point_client::ConnectionPointClient;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{Notify, watch};

use crate::config::AggregatorConfig;
use crate::merge::merge;
use crate::store::{MergeStore, StoredRun};

/// How often ready periods are re-examined when nothing else happens, so deadlines pass.
const RECHECK: Duration = Duration::from_secs(15 * 60);

/// Runs until `stop` turns true: forwards every ready period whenever a run is merged,
/// and retries failures every `retry_seconds`.
pub async fn run(
    config: Arc<AggregatorConfig>,
    store: Arc<dyn MergeStore>,
    catalog: Arc<Catalog>,
    merged: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let (upstream, relay) = match (&config.connection_point, &config.upstream) {
        (Some(point), _) => (point.clone(), false),
        (None, Some(aggregator)) => (aggregator.clone(), true),
        (None, None) => return,
    };
    loop {
        let result = if relay {
            relay_ready(&store, &upstream, &config).await
        } else {
            forward_ready(&config, &store, &catalog, &upstream).await
        };
        let wait = match result {
            Ok(()) => RECHECK,
            Err(error) => {
                tracing::warn!(%error, upstream, "forwarding failed");
                Duration::from_secs(config.retry_seconds)
            }
        };
        tokio::select! {
            _ = stop.changed() => return,
            () = merged.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// A stored run's encoding, read piece by piece from the merge store as it is relayed, so
/// a run of hundreds of megabytes never sits in memory whole.
struct StoredBytes {
    store: Arc<dyn MergeStore>,
    run_id: String,
    size: u64,
}

impl hrs_proto::chunks::RunBytes for StoredBytes {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        self.store
            .payload_range(&self.run_id, offset, len)
            .map_err(std::io::Error::other)
    }
}

/// Pushes every current run the upstream aggregator has not committed yet, as stored. A
/// run it refuses is logged and tried again next time without holding back the others.
async fn relay_ready(
    store: &Arc<dyn MergeStore>,
    upstream: &str,
    config: &AggregatorConfig,
) -> Result<(), String> {
    let reader = Arc::clone(store);
    let runs = tokio::task::spawn_blocking(move || reader.unrelayed())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if runs.is_empty() {
        return Ok(());
    }
    let channel = hrs_proto::tls::connect(upstream, config.tls().as_ref())
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let mut client = AggregatorClient::new(channel)
        .max_encoding_message_size(crate::MAX_MESSAGE_BYTES)
        .max_decoding_message_size(crate::MAX_MESSAGE_BYTES);
    for run in runs {
        let StoredRun {
            run_id,
            site,
            period,
            size,
        } = run;
        let outgoing = hrs_proto::chunks::Outgoing {
            run_id: run_id.clone(),
            site: site.clone(),
            // Every stored run was checked to be of this hierarchy when it arrived.
            hierarchy_id: config.hierarchy_id.to_string(),
        };
        let bytes = StoredBytes {
            store: Arc::clone(store),
            run_id: run_id.clone(),
            size,
        };
        let pushed = hrs_proto::chunks::push_run_chunks(
            &mut client,
            outgoing,
            pb::LinkReport::default(),
            Arc::new(bytes),
            hrs_proto::chunks::DEFAULT_CHUNK_BYTES,
        )
        .await;
        match pushed {
            Ok(_) => {
                let writer = Arc::clone(store);
                let at = OffsetDateTime::now_utc()
                    .format(&Rfc3339)
                    .unwrap_or_default();
                let id = run_id.clone();
                tokio::task::spawn_blocking(move || writer.mark_relayed(&id, &at))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                tracing::info!(run_id, site, period, "run relayed upstream");
            }
            Err(ChunkedPushError::Status(status)) if refused(&status) => {
                tracing::error!(run_id, site, period, error = %status.message(), "upstream refused a relayed run");
            }
            // Anything else is the link or the upstream failing: try again later, from
            // where the upstream's held bytes end.
            Err(error) => return Err(format!("upstream did not take run {run_id}: {error}")),
        }
    }
    Ok(())
}

/// True when the upstream refused what was sent, rather than failed to take it: sending it
/// again unchanged cannot succeed, so it must not hold back what comes after it.
fn refused(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::InvalidArgument
            | tonic::Code::PermissionDenied
            | tonic::Code::FailedPrecondition
            | tonic::Code::AlreadyExists
            | tonic::Code::OutOfRange
    )
}

fn past_deadline(period: &str, hours: u64) -> bool {
    let Ok(period) = period.parse::<Period>() else {
        return false;
    };
    let closes = period.end().midnight().assume_utc() + time::Duration::days(1);
    OffsetDateTime::now_utc() > closes + time::Duration::hours(hours as i64)
}

async fn forward_ready(
    config: &AggregatorConfig,
    store: &Arc<dyn MergeStore>,
    catalog: &Catalog,
    upstream: &str,
) -> Result<(), String> {
    let reader = Arc::clone(store);
    let periods = tokio::task::spawn_blocking(move || reader.periods())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let mut client: Option<ConnectionPointClient<tonic::transport::Channel>> = None;
    let mut failed = Vec::new();
    for period in periods {
        let reader = Arc::clone(store);
        let key = period.clone();
        let (runs, forwarded) = tokio::task::spawn_blocking(move || {
            Ok::<_, hrs_store::StoreError>((
                reader.current(Some(&key), None)?,
                reader.forwarded(&key)?,
            ))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let merged = merge(
            config.hierarchy_id,
            config.level,
            catalog,
            &config.sites,
            &period,
            runs,
        );
        if !merged.complete && !past_deadline(&period, config.period_deadline_hours) {
            continue;
        }
        if forwarded.as_deref() == Some(merged.period.digest.as_str()) {
            continue;
        }
        let client = match &mut client {
            Some(client) => client,
            None => client.insert(
                ConnectionPointClient::new(
                    hrs_proto::tls::connect(upstream, config.tls().as_ref())
                        .await
                        .map_err(|e| format!("cannot connect: {e}"))?,
                )
                .max_encoding_message_size(crate::MAX_MESSAGE_BYTES)
                .max_decoding_message_size(crate::MAX_MESSAGE_BYTES),
            ),
        };
        let digest = merged.period.digest.clone();
        let missing = merged.period.missing_sites.len();
        let offered = client
            .offer_period(pb::OfferPeriodRequest {
                period: Some(merged.period),
            })
            .await;
        match offered {
            Ok(_) => {}
            // A period the connection point refuses must not hold back the periods after
            // it; it is offered again at the next retry.
            Err(status) if refused(&status) => {
                tracing::error!(period, digest, error = %status.message(), "the connection point refused a period");
                failed.push(period.clone());
                continue;
            }
            Err(status) => return Err(format!("period {period} not taken: {}", status.message())),
        }
        let writer = Arc::clone(store);
        let at = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
        let (p, d) = (period.clone(), digest.clone());
        tokio::task::spawn_blocking(move || writer.mark_forwarded(&p, &d, &at))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        tracing::info!(period, digest, missing, "period forwarded");
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the connection point refused {}",
            failed.join(", ")
        ))
    }
}
