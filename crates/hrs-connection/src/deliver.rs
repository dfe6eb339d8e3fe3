//! The delivery task: takes each pending period out of the hierarchy, online to the intake
//! or offline into a bundle file, and records the outcome.
//!
//! It runs once at startup, whenever a new period is offered, and every `retry_seconds`
//! while anything is still pending, so an intake that is away for weeks only delays
//! delivery. Delivery is at-least-once: a period is marked delivered only after the intake
//! answered (or the bundle was renamed into place), and the intake is idempotent.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hrs_proto::v1 as pb;
use hrs_proto::v1::intake_client::IntakeClient;
use tokio::sync::{Notify, watch};
use tonic::transport::Channel;
use tracing::{error, info, warn};

use crate::bundle::write_bundle;
use crate::outbound::{Policy, outbound};
use crate::store::OutboxStore;
use crate::{ConnectionPointConfig, MAX_MESSAGE_BYTES, Mode};

/// How long to wait for the intake to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one submission may take, for a period of up to [`MAX_MESSAGE_BYTES`].
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(300);

/// Where delivered periods go.
#[derive(Debug, Clone)]
enum Target {
    /// Submit to the intake at this URL.
    Intake(String),
    /// Write bundles into this folder.
    Outbox(PathBuf),
}

/// What the delivery task needs from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    target: Target,
    policy: Policy,
    retry: Duration,
    tls: Option<hrs_proto::tls::ClientTls>,
    /// Sent with every submission when set (`intake_token_file`).
    token: Option<hrs_core::token::Token>,
}

impl Delivery {
    /// Returns the delivery settings of a checked configuration; `None` when the mode's
    /// destination is missing (which [`ConnectionPointConfig::load`] refuses).
    pub(crate) fn of(config: &ConnectionPointConfig) -> Option<Self> {
        let target = match config.mode {
            Mode::Online => Target::Intake(config.intake.clone()?),
            Mode::Offline => Target::Outbox(config.outbox.clone()?),
        };
        Some(Self {
            target,
            policy: Policy::of(config),
            retry: Duration::from_secs(config.retry_seconds.max(1)),
            tls: config.intake_tls(),
            token: config.intake_token.clone(),
        })
    }
}

/// Returns an error with all its causes, for logs: transport errors hide the useful part
/// in their sources.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Delivers pending periods until `stop` turns true.
pub(crate) async fn run<S: OutboxStore>(
    delivery: Delivery,
    store: Arc<S>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let left = tokio::select! {
            left = deliver_pending(&delivery, &*store) => left,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(delivery.retry), if left > 0 => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// Tries every pending period once; returns how many are still pending.
async fn deliver_pending<S: OutboxStore>(delivery: &Delivery, store: &S) -> usize {
    let pending = match store.pending().await {
        Ok(pending) => pending,
        Err(e) => {
            error!(error = %e, "cannot read pending periods, will retry");
            return 1;
        }
    };
    if pending.is_empty() {
        return 0;
    }
    match &delivery.target {
        Target::Intake(url) => submit_all(url, delivery, store, pending).await,
        Target::Outbox(folder) => bundle_all(folder, delivery, store, pending).await,
    }
}

async fn connect(
    url: &str,
    tls: Option<&hrs_proto::tls::ClientTls>,
) -> Result<IntakeClient<Channel>, hrs_proto::tls::TlsError> {
    let channel = hrs_proto::tls::endpoint_with(url, tls)?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(SUBMIT_TIMEOUT)
        .connect()
        .await?;
    Ok(IntakeClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

async fn submit_all<S: OutboxStore>(
    url: &str,
    delivery: &Delivery,
    store: &S,
    pending: Vec<pb::MergedPeriod>,
) -> usize {
    let mut client = match connect(url, delivery.tls.as_ref()).await {
        Ok(client) => client,
        Err(e) => {
            warn!(
                intake = %url,
                pending = pending.len(),
                retry_seconds = delivery.retry.as_secs(),
                error = %chain(&e),
                "intake unreachable, will retry"
            );
            return pending.len();
        }
    };
    let mut left = 0;
    for period in pending {
        let sent = outbound(&period, &delivery.policy);
        let mut request = tonic::Request::new(pb::SubmitRequest {
            period: Some(sent.clone()),
            client_version: hrs_core::VERSION.to_owned(),
        });
        if let Some(token) = &delivery.token {
            match format!("Bearer {}", token.expose()).parse() {
                Ok(value) => {
                    request.metadata_mut().insert("authorization", value);
                }
                // Checked at load: a token is visible ASCII, so this cannot happen.
                Err(_) => error!("the intake token is not a valid header value"),
            }
        }
        let answer = match client.submit(request).await {
            Ok(answer) => answer.into_inner(),
            Err(status) => {
                warn!(
                    period = %period.period,
                    intake = %url,
                    code = ?status.code(),
                    error = %status.message(),
                    retry_seconds = delivery.retry.as_secs(),
                    "submission failed, will retry"
                );
                left += 1;
                continue;
            }
        };
        match store
            .mark_submitted(&period.period, &period.digest, &answer.submission_id)
            .await
        {
            Ok(true) => info!(
                period = %period.period,
                level = %sent.level,
                digest = %sent.digest,
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
                error!(period = %period.period, error = %e, "cannot record submission, will retry");
                left += 1;
            }
        }
    }
    left
}

async fn bundle_all<S: OutboxStore>(
    folder: &std::path::Path,
    delivery: &Delivery,
    store: &S,
    pending: Vec<pb::MergedPeriod>,
) -> usize {
    let mut left = 0;
    for period in pending {
        let sent = outbound(&period, &delivery.policy);
        let dir = folder.to_owned();
        let written = tokio::task::spawn_blocking(move || write_bundle(&dir, &sent)).await;
        let path = match written {
            Ok(Ok(path)) => path,
            Ok(Err(e)) => {
                warn!(period = %period.period, error = %e, "cannot write bundle, will retry");
                left += 1;
                continue;
            }
            Err(e) => {
                error!(period = %period.period, error = %e, "bundle writer failed, will retry");
                left += 1;
                continue;
            }
        };
        match store
            .mark_bundled(&period.period, &period.digest, &path)
            .await
        {
            Ok(true) => info!(
                period = %period.period,
                level = %delivery.policy.level,
                path = %path.display(),
                "bundle written"
            ),
            Ok(false) => info!(
                period = %period.period,
                path = %path.display(),
                "bundle written, but a newer version arrived meanwhile and will be bundled too"
            ),
            Err(e) => {
                error!(period = %period.period, error = %e, "cannot record bundle, will retry");
                left += 1;
            }
        }
    }
    left
}
