//! Sending a run upstream as a resumable stream of bounded chunks of its encoding: the
//! client side of `PushRunChunks` and `ResumeRun`, shared by agents and by aggregators
//! that relay to another aggregator.

use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use hrs_core::bytes::{RunBytes, chunk_len, sha256_of};
use hrs_proto::v1 as pb;

use crate::v1::aggregator_client::AggregatorClient;

/// Default size of one chunk: small enough to keep memory flat and a cut link cheap to
/// resume, large enough that per-chunk overhead does not matter.
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;

/// Largest chunk a receiver accepts.
pub const MAX_CHUNK_BYTES: usize = 4 << 20;

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
    let hashing = Arc::clone(&source);
    let sha256 = tokio::task::spawn_blocking(move || sha256_of(hashing.as_ref(), chunk_bytes))
        .await
        .map_err(|e| ChunkedPushError::Source(std::io::Error::other(e)))?
        .map_err(ChunkedPushError::Source)?;
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
    let start = resume.held_bytes;
    if start > size {
        return Err(ChunkedPushError::Inconsistent { held: start, size });
    }
    if start > 0 {
        tracing::info!(run_id = %offer.run_id, resumed_at = start, size, "resuming a broken upload");
    }

    // A reader off the runtime feeds a short queue, so at most a few chunks are in memory.
    let (chunks, queue) = tokio::sync::mpsc::channel::<pb::RunChunk>(2);
    let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut first = Some((offer, link));
        let mut offset = start;
        loop {
            let len = chunk_len(size, offset, chunk_bytes);
            let data = if len == 0 {
                Vec::new()
            } else {
                source.read_at(offset, len)?
            };
            let (offer, link) = first
                .take()
                .map_or((None, None), |(o, l)| (Some(o), Some(l)));
            let chunk = pb::RunChunk {
                offer,
                link,
                offset,
                data,
            };
            if chunks.blocking_send(chunk).is_err() {
                // The call ended (broken or refused); its status says why.
                return Ok(());
            }
            offset += len as u64;
            if offset >= size {
                return Ok(());
            }
        }
    });
    let answer = client.push_run_chunks(ReceiverStream::new(queue)).await;
    match reader.await {
        Ok(Err(error)) => return Err(ChunkedPushError::Source(error)),
        Err(error) => return Err(ChunkedPushError::Source(std::io::Error::other(error))),
        Ok(Ok(())) => {}
    }
    Ok(answer?.into_inner())
}
