//! Submissions sent in chunks (`SubmitChunks`, `ResumeSubmission`): the one way a period
//! arrives, never held whole.
//!
//! The caller is authenticated before a message is read and its offer checked before a
//! byte is kept; each chunk is appended durably where the held bytes end, so a cut stream
//! resumes there; once whole, the staged bytes are checked off the runtime a window at a
//! time (their SHA-256, then the merged period check, digest included, then against the
//! offer), committed, and only then answered. A re-sent offer of a stored submission is
//! answered at once with the stored record.

use hrs_core::Period;
use hrs_core::bytes::sha256_of;
use hrs_core::encoded::EncodedError;
use hrs_core::encoded_period::check_merged_encoded;
use hrs_core::validate::Invalid;
use hrs_proto::v1 as pb;
use hrs_rpc::receive::{Placed, ReceiveError, receive};
use hrs_store::StoreError;
use hrs_store::staging::{Appended, Offer};
use tracing::info;

use crate::store::{Accepted, Held, IntakeStore};
use crate::{Credentials, IntakeError, IntakeService, check_hierarchy, submission_id};

/// How much of a staged submission is read at once while it is hashed.
const CHECK_WINDOW: usize = 1 << 20;

/// How long an unfinished chunked submission is kept for its sender to resume.
const STAGING_KEPT: time::Duration = time::Duration::days(7);

/// A refusal of a field of the offer or of a chunk.
fn field(field: &str, problem: impl Into<String>) -> IntakeError {
    Invalid::Field {
        field: field.into(),
        problem: problem.into(),
    }
    .into()
}

/// True for lowercase hex of `len` digits, as SHA-256s and digests are written.
fn lowercase_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl IntakeError {
    /// Why a chunk stream failed: a message that cannot be read is refused as such; any
    /// other failure (the link broke) is `otherwise`, left for the sender's resume.
    fn from_stream(status: tonic::Status, otherwise: impl FnOnce(tonic::Status) -> Self) -> Self {
        match status.code() {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => Self::Unreadable(status),
            _ => otherwise(status),
        }
    }

    /// True when the intake itself failed, rather than refusing what was sent: what
    /// arrived is then kept for the retry.
    fn is_own_failure(&self) -> bool {
        matches!(self, Self::Store(_) | Self::Staged(_))
    }
}

impl<S: IntakeStore> IntakeService<S> {
    /// Checks an offer before anything of it is kept (the caller was matched to its
    /// hierarchy already): the period parses, the size is within `max_submission_mb`, the
    /// SHA-256 and digest are written as they must be. Returns its staging.
    fn check_offer(&self, offer: Option<&pb::PeriodOffer>) -> Result<Offer, IntakeError> {
        let offer = offer.ok_or_else(|| field("offer", "missing"))?;
        check_hierarchy("offer.hierarchy_hash", &offer.hierarchy_hash)?;
        offer
            .period
            .parse::<Period>()
            .map_err(|e| field("offer.period", e.to_string()))?;
        if !lowercase_hex(&offer.digest, 64) {
            return Err(field("offer.digest", "not 64 lowercase hex digits"));
        }
        if offer.size == 0 {
            return Err(field("offer.size", "is zero"));
        }
        if offer.size > self.max_submission_bytes {
            return Err(IntakeError::TooLarge {
                size: offer.size,
                max: self.max_submission_bytes,
            });
        }
        if !lowercase_hex(&offer.sha256, 64) {
            return Err(field("offer.sha256", "not 64 lowercase hex digits"));
        }
        Ok(Offer {
            id: submission_id(&offer.hierarchy_hash, &offer.period, &offer.digest),
            owner: offer.hierarchy_hash.clone(),
            size: offer.size,
            sha256: offer.sha256.clone(),
        })
    }

    /// Finds or starts the staging of an offered submission.
    async fn stage(&self, upload: &Offer) -> Result<Held, IntakeError> {
        let now = self.clock.now();
        Ok(self.store.stage(upload, now, now - STAGING_KEPT).await?)
    }

    /// Answers `ResumeSubmission`: how much of the submission is held, or the answer a
    /// re-send of it gets once it is stored.
    pub(crate) async fn resume_submission(
        &self,
        request: pb::ResumePeriodRequest,
    ) -> Result<pb::ResumeSubmissionResponse, IntakeError> {
        let upload = self.check_offer(request.offer.as_ref())?;
        let offer = request.offer.unwrap_or_default();
        Ok(match self.stage(&upload).await? {
            Held::Open { held, .. } => pb::ResumeSubmissionResponse {
                held_bytes: held,
                committed: None,
            },
            Held::Stored(accepted) => pb::ResumeSubmissionResponse {
                held_bytes: upload.size,
                committed: Some(self.answered(&offer, accepted)?),
            },
        })
    }

    /// Receives a submission in chunks: each is stored durably as it arrives; once all
    /// bytes are held they are checked and committed.
    pub(crate) async fn submit_chunks(
        &self,
        mut chunks: tonic::Streaming<pb::PeriodChunk>,
        credentials: &Credentials,
    ) -> Result<pb::SubmitResponse, IntakeError> {
        let first = chunks
            .message()
            .await
            .map_err(|status| {
                IntakeError::from_stream(status, |status| {
                    IntakeError::Broken(status.message().to_owned())
                })
            })?
            .ok_or_else(|| field("chunk", "the stream has no chunk"))?;
        let offer = first
            .offer
            .clone()
            .ok_or_else(|| field("chunk.offer", "missing on the stream's first chunk"))?;
        let caller = self.callers.act_for(credentials, &offer.hierarchy_hash)?;
        tracing::Span::current().record("caller", tracing::field::debug(&caller));
        let upload = self.check_offer(Some(&offer))?;
        let (mut held, created) = match self.stage(&upload).await? {
            Held::Stored(accepted) => return self.answered(&offer, accepted),
            Held::Open { held, created } => (held, created),
        };
        if held > 0 {
            info!(submission_id = %upload.id, resumed_at = held, size = upload.size, "resuming a chunked submission");
        }
        let received = self.receive_chunks(chunks, first, &upload, &mut held).await;
        // A stream refused before a byte of it was kept leaves no trace: the staging this
        // offer started goes with it.
        if let Err(error) = &received
            && held == 0
            && created
            && !error.is_own_failure()
        {
            self.discard(&upload.id).await;
        }
        received?;
        if held < upload.size {
            return Err(IntakeError::Incomplete {
                held,
                size: upload.size,
            });
        }
        let outcome = self.commit_staged(&offer, &upload).await;
        // A submission refused on its content is dropped, so a corrected re-send starts
        // afresh; after a failure of the intake's own, what arrived is kept for the retry.
        if let Err(error) = &outcome
            && !error.is_own_failure()
        {
            self.discard(&upload.id).await;
        }
        self.answered(&offer, outcome?)
    }

    /// Drops a staging; a failure only leaves it for the stale sweep, so it is logged.
    async fn discard(&self, submission_id: &str) {
        if let Err(error) = self.store.stage_discard(submission_id).await {
            tracing::warn!(%submission_id, %error, "dropping a refused staging failed");
        }
    }

    /// Stores the chunks of an offered submission as they arrive, starting with `first`,
    /// and keeps `held` at the bytes held durably, also when it stops early.
    async fn receive_chunks(
        &self,
        mut chunks: tonic::Streaming<pb::PeriodChunk>,
        first: pb::PeriodChunk,
        upload: &Offer,
        held: &mut u64,
    ) -> Result<(), IntakeError> {
        let store = &self.store;
        let append = |offset: u64, data: Vec<u8>| async move {
            Ok::<_, IntakeError>(match store.stage_append(&upload.id, offset, data).await? {
                Appended::Held(after) => Placed::Held(after),
                Appended::Elsewhere(held) => Placed::Elsewhere(held),
                // Another stream of the same submission finished it, or a newer offer of
                // the hierarchy evicted it: the sender's resume finds out which.
                Appended::Gone => Placed::Gone,
            })
        };
        receive(&mut chunks, first, upload.size, held, append)
            .await
            .map_err(|error| match error {
                ReceiveError::Field {
                    field: name,
                    problem,
                } => field(name, problem),
                ReceiveError::OutOfOrder { offset, held } => {
                    IntakeError::OutOfOrder { offset, held }
                }
                ReceiveError::Incomplete { held, size } => IntakeError::Incomplete { held, size },
                ReceiveError::Unreadable(status) => IntakeError::Unreadable(status),
                ReceiveError::Store(error) => error,
            })
    }

    /// Checks a whole staged submission straight from its staged chunks, never holding more
    /// than a window of it (its SHA-256 against the offer, then `check_merged_encoded`, the
    /// one merged period check, then its hierarchy, period and digest against the offer),
    /// and commits it.
    async fn commit_staged(
        &self,
        offer: &pb::PeriodOffer,
        upload: &Offer,
    ) -> Result<Accepted, IntakeError> {
        let source = self.store.staged(&upload.id, upload.size);
        let hashing = std::sync::Arc::clone(&source);
        let sha256 = tokio::task::spawn_blocking(move || sha256_of(hashing.as_ref(), CHECK_WINDOW))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
            .map_err(|e| IntakeError::Staged(e.to_string()))?;
        if sha256 != upload.sha256 {
            return Err(IntakeError::Sha256Mismatch {
                size: upload.size,
                actual: sha256,
                offered: upload.sha256.clone(),
            });
        }
        let summary = tokio::task::spawn_blocking(move || check_merged_encoded(source.as_ref()))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
            .map_err(|error| match error {
                EncodedError::Invalid(invalid) => IntakeError::Invalid(invalid),
                EncodedError::Read(error) => IntakeError::Staged(error.to_string()),
            })?;
        for (name, offered, carried) in [
            (
                "hierarchy_hash",
                offer.hierarchy_hash.as_str(),
                summary.hierarchy_hash.clone(),
            ),
            ("period", offer.period.as_str(), summary.period.to_string()),
            ("digest", offer.digest.as_str(), summary.digest.clone()),
        ] {
            if offered != carried {
                return Err(IntakeError::NotAsOffered {
                    field: name,
                    offered: offered.to_owned(),
                    carried,
                });
            }
        }
        let accepted = self
            .store
            .commit_staged(upload, &summary, &offer.client_version, self.clock.now())
            .await?;
        info!(
            hierarchy = %summary.hierarchy_hash,
            period = %summary.period,
            level = %summary.level,
            digest = %summary.digest,
            size = upload.size,
            rows = summary.rows,
            submission_id = %accepted.submission_id,
            duplicate = accepted.duplicate,
            client_version = %offer.client_version,
            "chunked submission accepted"
        );
        Ok(accepted)
    }
}
