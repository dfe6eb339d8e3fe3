//! Receiving a merged period in chunks of its encoding, whatever its size: each chunk is
//! stored durably as it arrives; once all bytes are held they are checked straight from the
//! staging (SHA-256, then the one period check, digest included) and stored, so the
//! connection point never holds more than a window of a period in memory.

use hrs_core::encoded::EncodedError;
use hrs_core::encoded_period::check_merged_encoded;
use hrs_core::validate::Invalid;
use hrs_core::{Level, Period};
use hrs_proto::v1 as pb;
use hrs_rpc::receive::{Placed, ReceiveError, first, receive};
use hrs_store::staging::{Appended, Staged};
use tracing::info;

use crate::store::{Offered, OutboxStore};
use crate::{ConnectionError, PointService};

/// Most bytes a merged period's encoding may take: the outbox keeps it as one SQLite
/// blob, which holds at most 10^9 bytes.
pub const MAX_PERIOD_BYTES: u64 = 1_000_000_000;

/// How long an unfinished upload is kept for its sender to resume.
const STAGING_KEPT: time::Duration = time::Duration::days(7);

/// How much of a staged period is read at once while it is checked.
const CHECK_WINDOW: usize = 1 << 20;

/// Refuses an offer naming a field wrongly, before any of its bytes are kept.
fn field(field: &str, problem: impl Into<String>) -> ConnectionError {
    ConnectionError::Invalid(Invalid::Field {
        field: field.into(),
        problem: problem.into(),
    })
}

/// Where an offered period's upload stands.
enum Upload {
    /// Already stored: the offer is answered as a duplicate.
    Stored,
    /// Being received: this many bytes are held; `created` when this offer started it.
    Open { held: u64, created: bool },
}

/// True for 64 lowercase or uppercase hex digits: a SHA-256 as sent.
fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

impl<S: OutboxStore> PointService<S> {
    /// Checks an offer: of this hierarchy, a period, a size the outbox can keep, and the
    /// digests' shape.
    fn check_offer(
        &self,
        offer: Option<pb::PeriodOffer>,
    ) -> Result<pb::PeriodOffer, ConnectionError> {
        let offer = offer.ok_or_else(|| field("offer", "missing"))?;
        if offer.hierarchy_hash != self.hierarchy_hash {
            return Err(ConnectionError::WrongHierarchy {
                got: offer.hierarchy_hash,
                expected: self.hierarchy_hash.clone(),
            });
        }
        offer
            .period
            .parse::<Period>()
            .map_err(|e| field("offer.period", e.to_string()))?;
        if offer.size == 0 {
            return Err(field("offer.size", "is zero"));
        }
        if offer.size > MAX_PERIOD_BYTES {
            return Err(ConnectionError::TooLarge {
                size: offer.size,
                max: MAX_PERIOD_BYTES,
            });
        }
        if !is_sha256_hex(&offer.sha256) {
            return Err(field("offer.sha256", "not 64 hex digits"));
        }
        if !is_sha256_hex(&offer.digest) {
            return Err(field("offer.digest", "not 64 hex digits"));
        }
        Ok(offer)
    }

    /// Finds or starts the staging of an offered period.
    async fn stage(&self, offer: &pb::PeriodOffer) -> Result<Upload, ConnectionError> {
        let now = self.clock.now();
        match self.store.stage(offer, now, now - STAGING_KEPT).await? {
            Staged::Conflict { stored, sent } => Err(ConnectionError::Conflict { stored, sent }),
            Staged::Settled(_) => Ok(Upload::Stored),
            Staged::Open { held, created } => Ok(Upload::Open { held, created }),
        }
    }

    /// Answers `ResumePeriod`: how much of the period is held, or that it is stored.
    pub(crate) async fn resume(
        &self,
        request: pb::ResumePeriodRequest,
    ) -> Result<pb::ResumePeriodResponse, ConnectionError> {
        let offer = self.check_offer(request.offer)?;
        Ok(match self.stage(&offer).await? {
            Upload::Stored => pb::ResumePeriodResponse {
                held_bytes: offer.size,
                committed: Some(pb::OfferPeriodResponse { duplicate: true }),
            },
            Upload::Open { held, .. } => pb::ResumePeriodResponse {
                held_bytes: held,
                committed: None,
            },
        })
    }

    /// Receives a period sent in chunks and stores it once whole and checked.
    pub(crate) async fn receive(
        &self,
        mut chunks: tonic::Streaming<pb::PeriodChunk>,
    ) -> Result<pb::OfferPeriodResponse, ConnectionError> {
        let first = first::<_, hrs_store::StoreError>(&mut chunks).await?;
        let offer = self.check_offer(first.offer.clone())?;
        let (mut held, created) = match self.stage(&offer).await? {
            Upload::Stored => return Ok(pb::OfferPeriodResponse { duplicate: true }),
            Upload::Open { held, created } => (held, created),
        };
        let store = &self.store;
        let append = |offset: u64, data: Vec<u8>| {
            let offer = &offer;
            async move {
                Ok(match store.stage_append(offer, offset, data).await? {
                    Appended::Held(after) => Placed::Held(after),
                    Appended::Elsewhere(held) => Placed::Elsewhere(held),
                    Appended::Gone => Placed::Gone,
                })
            }
        };
        let received = receive(&mut chunks, first, offer.size, &mut held, append).await;
        // A stream refused before a byte of it was kept leaves no trace.
        if let Err(error) = &received
            && held == 0
            && created
            && !matches!(error, ReceiveError::Store(_))
        {
            let _ = self.store.stage_discard(&offer).await;
        }
        received?;
        if held < offer.size {
            return Err(ReceiveError::<hrs_store::StoreError>::Incomplete {
                held,
                size: offer.size,
            }
            .into());
        }
        let stored = self.store_staged(&offer).await;
        // A period refused on its content is dropped, so a corrected resend starts afresh;
        // after a failure here, what arrived is kept for the retry.
        if let Err(error) = &stored
            && !matches!(
                error,
                ConnectionError::Store(_) | ConnectionError::Staged(_)
            )
        {
            let _ = self.store.stage_discard(&offer).await;
        }
        let offered = stored?;
        // A duplicate may be the re-send of an offer whose answer was lost; waking the
        // delivery task costs nothing when the period has already gone.
        self.wake.notify_one();
        Ok(pb::OfferPeriodResponse {
            duplicate: offered == Offered::Duplicate,
        })
    }

    /// Checks a whole staged period straight from the staging and stores it.
    async fn store_staged(&self, offer: &pb::PeriodOffer) -> Result<Offered, ConnectionError> {
        let source = self.store.staged_bytes(offer);
        let checked = tokio::task::spawn_blocking(move || {
            let sha256 = hrs_core::bytes::sha256_of(source.as_ref(), CHECK_WINDOW)?;
            Ok::<_, std::io::Error>((sha256, check_merged_encoded(source.as_ref())))
        })
        .await
        .map_err(|e| ConnectionError::Staged(e.to_string()))?
        .map_err(|e| ConnectionError::Staged(e.to_string()))?;
        let (sha256, checked) = checked;
        if !sha256.eq_ignore_ascii_case(&offer.sha256) {
            return Err(ConnectionError::Corrupt(format!(
                "period {}: the {} bytes received hash to {sha256}, the offer said {}",
                offer.period, offer.size, offer.sha256
            )));
        }
        let summary = checked.map_err(|error| match error {
            EncodedError::Invalid(invalid) => ConnectionError::Invalid(invalid),
            EncodedError::Read(error) => ConnectionError::Staged(error.to_string()),
        })?;
        if summary.hierarchy_hash != self.hierarchy_hash {
            return Err(ConnectionError::WrongHierarchy {
                got: summary.hierarchy_hash,
                expected: self.hierarchy_hash.clone(),
            });
        }
        if summary.period.to_string() != offer.period || summary.digest != offer.digest {
            return Err(ConnectionError::Corrupt(format!(
                "the bytes hold period {} with digest {}, the offer named period {} with digest {}",
                summary.period, summary.digest, offer.period, offer.digest
            )));
        }
        let level: Level = summary.level;
        let offered = self
            .store
            .commit_staged(offer, level, self.clock.now())
            .await?;
        info!(
            period = %summary.period,
            %level,
            digest = %summary.digest,
            sites = summary.sites.len(),
            missing = summary.missing_sites.len(),
            bytes = offer.size,
            outcome = ?offered,
            "period received"
        );
        Ok(offered)
    }
}
