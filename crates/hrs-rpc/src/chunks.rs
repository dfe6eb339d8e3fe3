//! Sending a run or a merged period upstream as a resumable stream of bounded chunks of its
//! encoding: the client side of `PushRunChunks` and `ResumeRun` (agents, and aggregators
//! that relay to another aggregator) and the pieces every period upload is made of.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use hrs_core::bytes::{RunBytes, chunk_len, sha256_of};
use hrs_proto::v1 as pb;

use crate::v1::aggregator_client::AggregatorClient;
use crate::v1::connection_point_client::ConnectionPointClient;

/// Default size of one chunk: small enough to keep memory flat and a cut link cheap to
/// resume, large enough that per-chunk overhead does not matter.
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;

/// Largest chunk a receiver accepts.
pub const MAX_CHUNK_BYTES: usize = 4 << 20;

// A chunk at its largest, with its offer and framing, fits in a role's default message
// limit, which is kept near it so that no larger message is ever decoded.
const _: () = assert!(
    MAX_CHUNK_BYTES + (64 << 10) <= (hrs_core::config::DEFAULT_MAX_MESSAGE_MB as usize) << 20
);

/// Why a chunked push did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ChunkedPushError {
    /// The upstream refused or failed a call, or the connection broke.
    #[error(transparent)]
    Status(#[from] tonic::Status),
    /// The run's bytes could not be read here.
    #[error("cannot read the run to send it: {0}")]
    Source(#[source] std::io::Error),
    /// The upstream claims to hold more than the run's size.
    #[error("the upstream holds {held} bytes of a {size}-byte run")]
    Inconsistent {
        /// What the upstream says it holds.
        held: u64,
        /// The run's size.
        size: u64,
    },
}

/// What is being sent: the run's identity, filled in with its size and SHA-256 here.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The run's id.
    pub run_id: String,
    /// The sending site.
    pub site: String,
    /// The hierarchy it belongs to.
    pub hierarchy_id: String,
}

/// Sends a run: asks the upstream what it already holds, then streams the rest in chunks
/// of `chunk_bytes`. Returns the upstream's answer once the run is committed, at once if
/// it already was. After a broken stream, calling this again resumes where it broke.
pub async fn push_run_chunks(
    client: &mut AggregatorClient<Channel>,
    run: Outgoing,
    link: pb::LinkReport,
    source: Arc<dyn RunBytes>,
    chunk_bytes: usize,
) -> Result<pb::PushRunResponse, ChunkedPushError> {
    let sha256 = sha256_off_runtime(&source, chunk_bytes).await?;
    let offer = pb::RunOffer {
        run_id: run.run_id,
        site: run.site,
        hierarchy_id: run.hierarchy_id,
        size: source.size(),
        sha256,
    };
    let resume = client
        .resume_run(pb::ResumeRunRequest {
            offer: Some(offer.clone()),
        })
        .await?
        .into_inner();
    if let Some(answer) = resume.committed {
        return Ok(answer);
    }
    let size = offer.size;
    let start = resume_at(resume.held_bytes, size)?;
    if start > 0 {
        tracing::info!(run_id = %offer.run_id, resumed_at = start, size, "resuming a broken upload");
    }

    let mut first = Some((offer, link));
    let (queue, reader) = stream_from(source, start, chunk_bytes, move |offset, data| {
        let (offer, link) = first
            .take()
            .map_or((None, None), |(o, l)| (Some(o), Some(l)));
        pb::RunChunk {
            offer,
            link,
            offset,
            data,
        }
    });
    let answer = client.push_run_chunks(queue).await;
    finished(reader).await?;
    Ok(answer?.into_inner())
}

/// Offers a merged period to the connection point: asks what it already holds, then
/// streams the rest of the encoding `source` in chunks of `chunk_bytes`. Returns the
/// connection point's answer once the period is stored, at once if it already was. After a
/// broken stream, calling this again resumes where it broke.
pub async fn offer_period_chunks(
    client: &mut ConnectionPointClient<Channel>,
    offer: pb::PeriodOffer,
    source: Arc<dyn RunBytes>,
    chunk_bytes: usize,
) -> Result<pb::OfferPeriodResponse, ChunkedPushError> {
    let offer = period_offer(&source, offer, chunk_bytes).await?;
    let resume = client
        .resume_period(pb::ResumePeriodRequest {
            offer: Some(offer.clone()),
        })
        .await?
        .into_inner();
    if let Some(answer) = resume.committed {
        return Ok(answer);
    }
    let start = resume_at(resume.held_bytes, offer.size)?;
    if start > 0 {
        tracing::info!(period = %offer.period, resumed_at = start, size = offer.size, "resuming a broken period upload");
    }
    let (queue, reader) = period_chunks(source, offer, start, chunk_bytes);
    let answer = client.offer_period_chunks(queue).await;
    finished(reader).await?;
    Ok(answer?.into_inner())
}

/// Completes a period's offer with the size and SHA-256 of its encoding `source`.
pub async fn period_offer(
    source: &Arc<dyn RunBytes>,
    offer: pb::PeriodOffer,
    chunk_bytes: usize,
) -> Result<pb::PeriodOffer, ChunkedPushError> {
    Ok(pb::PeriodOffer {
        size: source.size(),
        sha256: sha256_off_runtime(source, chunk_bytes).await?,
        ..offer
    })
}

/// The chunks of a period's encoding from `start`, the first carrying its offer; see
/// [`stream_from`].
pub fn period_chunks(
    source: Arc<dyn RunBytes>,
    offer: pb::PeriodOffer,
    start: u64,
    chunk_bytes: usize,
) -> (
    ReceiverStream<pb::PeriodChunk>,
    JoinHandle<std::io::Result<()>>,
) {
    let mut first = Some(offer);
    stream_from(source, start, chunk_bytes, move |offset, data| {
        pb::PeriodChunk {
            offer: first.take(),
            offset,
            data,
        }
    })
}

/// Checks where a resumed upload starts: never past the end of what is sent.
pub fn resume_at(held: u64, size: u64) -> Result<u64, ChunkedPushError> {
    if held > size {
        return Err(ChunkedPushError::Inconsistent { held, size });
    }
    Ok(held)
}

/// The SHA-256 of `source`, read off the runtime.
pub async fn sha256_off_runtime(
    source: &Arc<dyn RunBytes>,
    chunk_bytes: usize,
) -> Result<String, ChunkedPushError> {
    let hashing = Arc::clone(source);
    tokio::task::spawn_blocking(move || sha256_of(hashing.as_ref(), chunk_bytes))
        .await
        .map_err(|e| ChunkedPushError::Source(std::io::Error::other(e)))?
        .map_err(ChunkedPushError::Source)
}

/// The chunks of `source` from `start` to its end, each made by `chunk(offset, data)`,
/// for a client-streaming call; at least one chunk is made, empty if nothing is left.
///
/// A reader off the runtime feeds a short queue, so at most a few chunks are in memory.
/// The reader ends when the call does (broken or refused: its status says why); await it
/// with [`finished`] to learn whether the source could be read.
pub fn stream_from<C: Send + 'static>(
    source: Arc<dyn RunBytes>,
    start: u64,
    chunk_bytes: usize,
    mut chunk: impl FnMut(u64, Vec<u8>) -> C + Send + 'static,
) -> (ReceiverStream<C>, JoinHandle<std::io::Result<()>>) {
    let (chunks, queue) = tokio::sync::mpsc::channel::<C>(2);
    let size = source.size();
    let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut offset = start;
        loop {
            let len = chunk_len(size, offset, chunk_bytes);
            let data = if len == 0 {
                Vec::new()
            } else {
                source.read_at(offset, len)?
            };
            if chunks.blocking_send(chunk(offset, data)).is_err() {
                return Ok(());
            }
            offset += len as u64;
            if offset >= size {
                return Ok(());
            }
        }
    });
    (ReceiverStream::new(queue), reader)
}

/// Waits for a [`stream_from`] reader: whether the source could be read.
pub async fn finished(reader: JoinHandle<std::io::Result<()>>) -> Result<(), ChunkedPushError> {
    match reader.await {
        Ok(Err(error)) => Err(ChunkedPushError::Source(error)),
        Err(error) => Err(ChunkedPushError::Source(std::io::Error::other(error))),
        Ok(Ok(())) => Ok(()),
    }
}
