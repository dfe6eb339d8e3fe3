//! The update check: online, the connection point checks for updates on a schedule, and
//! with each check submits every merged period the intake has not acknowledged, then asks
//! which updates apply and keeps the answer (the update manifest).
//!
//! Checks run at startup, whenever a new period is offered (usage data leaves after the
//! queries), every `check_hours` after a check that found updates, and `recheck_minutes`
//! after one that found none. A check that could not submit everything retries after
//! `retry_seconds`, so an intake that is away for weeks only delays delivery. Delivery is
//! at-least-once: a period is marked sent only after the intake answered, and the intake
//! is idempotent.
//!
//! Offline, nothing leaves here: the connection tool carries periods out (`prepare`,
//! `connect`, `import`).

use std::sync::Arc;
use std::time::Duration;

use hrs_core::Level;
use hrs_core::bytes::RunBytes as _;
use hrs_core::clock::{Clock, rfc3339};
use hrs_proto::v1 as pb;
use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use crate::intake::{IntakeCallError, IntakeLink, IntakeSession};
use crate::outbound::Policy;
#[cfg(doc)]
use crate::outbound::outbound;
use crate::store::{CheckRecord, ManifestSource, OutboxStore, Unsent};
use crate::{ConnectionPointConfig, Mode};

/// Which updates an online check asks for: everything that applies, for `hrs status`.
const CHECK_DOWNLOAD: &str = "all";

/// What the update check needs from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    /// The intake, when online.
    intake: Option<IntakeLink>,
    policy: Policy,
    hierarchy_hash: String,
    /// The CA the intake's manifests must be signed from; none without a PKI.
    signature_ca: Option<std::path::PathBuf>,
    retry: Duration,
    every: Duration,
    recheck: Duration,
}

impl Delivery {
    /// The update-check settings of a checked configuration.
    pub(crate) fn of(config: &ConnectionPointConfig) -> Self {
        let intake = match (config.mode, &config.intake) {
            (Mode::Online, Some(url)) => Some(IntakeLink {
                url: url.clone(),
                tls: config.intake_tls(),
                token: config.intake_token.clone(),
                proxy: config.intake_proxy.clone(),
            }),
            _ => None,
        };
        Self {
            intake,
            policy: Policy::of(config),
            hierarchy_hash: config.hierarchy_id.hashed(),
            signature_ca: config.intake_signature_ca().map(ToOwned::to_owned),
            retry: Duration::from_secs(config.retry_seconds.max(1)),
            every: Duration::from_secs(config.check_hours.max(1) * 3600),
            recheck: Duration::from_secs(config.recheck_minutes.max(1) * 60),
        }
    }
}

/// Runs update checks until `stop` turns true (online); offline, only waits for `stop`.
pub(crate) async fn run<S: OutboxStore>(
    delivery: Delivery,
    store: Arc<S>,
    wake: Arc<Notify>,
    clock: Arc<dyn Clock>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(intake) = delivery.intake.clone() else {
        let _ = stop.wait_for(|stopped| *stopped).await;
        return;
    };
    let mut next = Next {
        at: clock.now(),
        retry: None,
    };
    loop {
        // A retry is also timed on the monotonic clock: it is seconds of backing off, not a
        // point in the schedule, and must come even while a test holds the clock still.
        let retry = async {
            match next.retry {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = clock.sleep_until(next.at) => {}
            () = retry => {}
            () = wake.notified() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        next = tokio::select! {
            next = check(&intake, &delivery, &*store, &*clock) => next,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
    }
}

/// When the next update check is due.
struct Next {
    /// On the schedule, by the clock.
    at: time::OffsetDateTime,
    /// After an incomplete check: the wait before retrying.
    retry: Option<Duration>,
}

/// One update check: submits what is unsent, asks for the manifest, records both; returns
/// when the next is due, counted from when this one started (as recorded).
async fn check<S: OutboxStore>(
    intake: &IntakeLink,
    delivery: &Delivery,
    store: &S,
    clock: &dyn Clock,
) -> Next {
    let started = clock.now();
    let outcome = submit_and_ask(intake, delivery, store, clock).await;
    let (wait, last_error) = match &outcome {
        Ok(0) => (delivery.recheck, None),
        Ok(_) => (delivery.every, None),
        Err(e) => (delivery.retry, Some(e.clone())),
    };
    let record = CheckRecord {
        last_check_at: started,
        last_error,
        next_check_at: started + wait,
    };
    if let Err(e) = store.record_check(&record).await {
        error!(error = %e, "cannot record the update check");
    }
    let retry = match outcome {
        Ok(applicable) => {
            info!(
                applicable,
                next_check_at = %rfc3339(record.next_check_at),
                "update check done"
            );
            None
        }
        Err(e) => {
            warn!(
                error = %e,
                retry_seconds = delivery.retry.as_secs(),
                "update check incomplete, will retry"
            );
            Some(delivery.retry)
        }
    };
    Next {
        at: started + wait,
        retry,
    }
}

/// Submits every unacknowledged period, then fetches and keeps the manifest; returns how
/// many updates apply, or why the check is incomplete.
async fn submit_and_ask<S: OutboxStore>(
    intake: &IntakeLink,
    delivery: &Delivery,
    store: &S,
    clock: &dyn Clock,
) -> Result<usize, String> {
    let unsent = store
        .unsent()
        .await
        .map_err(|e| format!("cannot read unsent periods: {e}"))?;
    let mut session = intake.connect().await.map_err(|e| e.to_string())?;
    let mut failed = Vec::new();
    for period in unsent {
        let submitted = submit(&mut session, delivery, store, &period).await;
        let (answer, sent) = match submitted {
            Ok(submitted) => submitted,
            Err(e) => {
                warn!(period = %period.period, intake = %intake.url, error = %e, "submission failed");
                failed.push(format!("{}: {e}", period.period));
                if e.is_transient() {
                    // The intake is away or overloaded: the whole check is tried again.
                    return Err(format!("not submitted: {}", failed.join("; ")));
                }
                // Refused for good: it must not keep the others, or the update check, back.
                continue;
            }
        };
        let recorded = store
            .mark_submitted(
                &period.period,
                &period.digest,
                &answer.submission_id,
                clock.now(),
            )
            .await;
        match recorded {
            Ok(true) => info!(
                period = %period.period,
                level = %sent.level,
                digest = %sent.digest,
                bytes = sent.size,
                submission_id = %answer.submission_id,
                duplicate = answer.duplicate,
                "period submitted"
            ),
            Ok(false) => info!(
                period = %period.period,
                "period submitted, but a newer version arrived meanwhile and will be sent too"
            ),
            Err(e) => {
                // The intake has it; the re-send after the retry is answered as a duplicate.
                error!(period = %period.period, error = %e, "cannot record submission");
                failed.push(format!(
                    "{}: cannot record its submission: {e}",
                    period.period
                ));
            }
        }
    }
    let manifest = session
        .check_updates(&delivery.hierarchy_hash, CHECK_DOWNLOAD)
        .await
        .map_err(|e| e.to_string())?;
    // A manifest is kept only when the intake signed it: what it lists is what gets
    // downloaded and installed.
    if let Some(ca) = &delivery.signature_ca {
        let trust = hrs_pki::Trust::load(ca).map_err(|e| e.to_string())?;
        hrs_rpc::signed::verify_manifest(&trust, &manifest, clock.now())
            .map_err(|e| format!("the update manifest is refused: {e}"))?;
    }
    let applicable = manifest.updates.len();
    store
        .record_manifest(&manifest, ManifestSource::Online, clock.now())
        .await
        .map_err(|e| format!("cannot keep the update manifest: {e}"))?;
    if !failed.is_empty() {
        return Err(format!("refused by the intake: {}", failed.join("; ")));
    }
    Ok(applicable)
}

/// What left for the intake: the reshaped period's level, digest and size.
struct Sent {
    level: Level,
    digest: String,
    size: u64,
}

/// Reshapes one stored period as it may leave (see [`outbound`]), read from the store a
/// range at a time, and submits it in chunks.
async fn submit<S: OutboxStore>(
    session: &mut IntakeSession,
    delivery: &Delivery,
    store: &S,
    period: &Unsent,
) -> Result<(pb::SubmitResponse, Sent), IntakeCallError> {
    let source = store.payload(period);
    let policy = delivery.policy.clone();
    let level = period.level.min(policy.level);
    let leaving = tokio::task::spawn_blocking(move || policy.reshape(source))
        .await
        .map_err(|e| IntakeCallError::Source(e.to_string()))?
        .map_err(|e| IntakeCallError::Source(e.to_string()))?;
    let sent = Sent {
        level,
        digest: leaving.digest().to_owned(),
        size: leaving.size(),
    };
    let offer = pb::PeriodOffer {
        hierarchy_hash: delivery.hierarchy_hash.clone(),
        period: period.period.to_string(),
        digest: sent.digest.clone(),
        ..Default::default()
    };
    let answer = session.submit_chunks(offer, Arc::new(leaving)).await?;
    Ok((answer, sent))
}
