//! Submitting a merged period to the intake as a resumable stream of bounded chunks of its
//! encoding: the client side of `SubmitChunks` and `ResumeSubmission`, for the connection
//! point and the connection tool, so a period of any size leaves without being held whole.

use std::sync::Arc;

use hrs_core::bytes::RunBytes;
use hrs_proto::v1 as pb;
use tonic::codegen::{Body, Bytes, StdError};

use crate::chunks::{ChunkedPushError, finished, period_chunks, period_offer, resume_at};
use crate::v1::intake_client::IntakeClient;

/// Submits a period: completes `offer` with the size and SHA-256 of `source` (the period's
/// encoding), asks the intake what it already holds, then streams the rest in chunks of
/// `chunk_bytes`. Returns the intake's answer once the submission is committed, at once if
/// it already was. After a broken stream, calling this again resumes where it broke.
///
/// `T` is the client's transport, as tonic's generated clients take it: a `Channel`, or
/// one wrapped in an interceptor that adds the hierarchy's token to every call.
pub async fn submit_period_chunks<T>(
    client: &mut IntakeClient<T>,
    offer: pb::PeriodOffer,
    source: Arc<dyn RunBytes>,
    chunk_bytes: usize,
) -> Result<pb::SubmitResponse, ChunkedPushError>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    let offer = period_offer(&source, offer, chunk_bytes).await?;
    let resume = client
        .resume_submission(pb::ResumePeriodRequest {
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
        tracing::info!(
            hierarchy = %offer.hierarchy_hash,
            period = %offer.period,
            resumed_at = start,
            size,
            "resuming a broken submission"
        );
    }
    let (queue, reader) = period_chunks(source, offer, start, chunk_bytes);
    let answer = client.submit_chunks(queue).await;
    finished(reader).await?;
    Ok(answer?.into_inner())
}
