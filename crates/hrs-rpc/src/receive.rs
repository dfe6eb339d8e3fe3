//! Receiving an upload sent in chunks: the server side every chunked call shares (a run at
//! the aggregator, a merged period at the connection point and the intake). Each chunk is
//! stored durably where the held bytes end before the next is read, so a broken stream
//! leaves what arrived for the sender's resume.

use std::future::Future;

use hrs_proto::v1 as pb;
use tonic::Status;

use crate::chunks::MAX_CHUNK_BYTES;

/// One chunk of an upload, as each chunked call's message carries it.
pub trait Chunk: Send + 'static {
    /// Where its data starts in the upload.
    fn offset(&self) -> u64;
    /// True when it carries an offer, which only a stream's first chunk may.
    fn has_offer(&self) -> bool;
    /// Its data, taken out.
    fn take_data(&mut self) -> Vec<u8>;
}

/// Both chunk messages name their fields alike.
macro_rules! chunk_message {
    ($($message:ty),*) => {$(
        impl Chunk for $message {
            fn offset(&self) -> u64 {
                self.offset
            }

            fn has_offer(&self) -> bool {
                self.offer.is_some()
            }

            fn take_data(&mut self) -> Vec<u8> {
                std::mem::take(&mut self.data)
            }
        }
    )*};
}

chunk_message!(pb::RunChunk, pb::PeriodChunk);

/// What storing one chunk did, as the receiver's staging reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// Stored; this many bytes are held now.
    Held(u64),
    /// Not stored: it does not start where the held bytes (this many) end.
    Elsewhere(u64),
    /// Not stored: the upload is no longer open (finished by another stream, or evicted).
    Gone,
}

/// Why receiving stopped before the stream ended.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError<E> {
    /// A chunk breaks the protocol: the field and what is wrong with it.
    #[error("{field}: {problem}")]
    Field {
        /// The chunk's field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A chunk does not start where the held bytes end.
    #[error("a chunk at offset {offset}, but {held} bytes are held: resume from there")]
    OutOfOrder {
        /// Where the chunk starts.
        offset: u64,
        /// Bytes held.
        held: u64,
    },
    /// The stream broke, or the upload was finished or evicted meanwhile; what arrived is
    /// held for the resume.
    #[error("the upload stopped at {held} of {size} bytes; resume it")]
    Incomplete {
        /// Bytes held.
        held: u64,
        /// The offered size.
        size: u64,
    },
    /// A message of the stream could not be read (refused by the codec).
    #[error("{}", .0.message())]
    Unreadable(Status),
    /// Storing a chunk failed.
    #[error(transparent)]
    Store(E),
}

impl<E> ReceiveError<E> {
    /// The status a receiver answers with, for the protocol's own failures; `None` for a
    /// store failure, which the receiver's own error names.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Field { .. } => Some(tonic::Code::InvalidArgument),
            Self::OutOfOrder { .. } | Self::Incomplete { .. } => Some(tonic::Code::Aborted),
            Self::Unreadable(status) => Some(status.code()),
            Self::Store(_) => None,
        }
    }
}

/// Reads a stream's first chunk, which carries the offer.
pub async fn first<C: Chunk, E>(chunks: &mut tonic::Streaming<C>) -> Result<C, ReceiveError<E>> {
    match chunks.message().await {
        Ok(Some(chunk)) => Ok(chunk),
        Ok(None) => Err(ReceiveError::Field {
            field: "chunk",
            problem: "the stream has no chunk".into(),
        }),
        Err(status) => Err(stream_failed(status, 0, 0)),
    }
}

/// A message that cannot be read is refused as such; any other failure is the link
/// breaking, left for the sender's resume.
fn stream_failed<E>(status: Status, held: u64, size: u64) -> ReceiveError<E> {
    match status.code() {
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => ReceiveError::Unreadable(status),
        _ => {
            tracing::debug!(error = %status.message(), held, size, "chunk stream broke");
            ReceiveError::Incomplete { held, size }
        }
    }
}

/// Receives `first` and the rest of `chunks` for an upload of `size` bytes, handing each
/// chunk's data to `append` at its offset and awaiting it before the next; keeps `held` at
/// the bytes held durably, also when it stops early. Returns when the stream ends, whole
/// or not: the caller checks `held` against `size`.
pub async fn receive<C, E, F, Fut>(
    chunks: &mut tonic::Streaming<C>,
    first: C,
    size: u64,
    held: &mut u64,
    mut append: F,
) -> Result<(), ReceiveError<E>>
where
    C: Chunk,
    F: FnMut(u64, Vec<u8>) -> Fut,
    Fut: Future<Output = Result<Placed, E>>,
{
    let mut next = Some(first);
    loop {
        let mut chunk = match next.take() {
            Some(chunk) => chunk,
            None => match chunks.message().await {
                Ok(Some(chunk)) if chunk.has_offer() => {
                    return Err(ReceiveError::Field {
                        field: "chunk.offer",
                        problem: "set on a chunk after the first".into(),
                    });
                }
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Ok(()),
                Err(status) => return Err(stream_failed(status, *held, size)),
            },
        };
        let data = chunk.take_data();
        if data.len() > MAX_CHUNK_BYTES {
            return Err(ReceiveError::Field {
                field: "chunk.data",
                problem: format!(
                    "{} bytes; a chunk holds at most {MAX_CHUNK_BYTES}",
                    data.len()
                ),
            });
        }
        let offset = chunk.offset();
        if offset != *held {
            return Err(ReceiveError::OutOfOrder {
                offset,
                held: *held,
            });
        }
        if *held + data.len() as u64 > size {
            return Err(ReceiveError::Field {
                field: "chunk.data",
                problem: format!("runs past the offered size of {size} bytes"),
            });
        }
        if data.is_empty() {
            continue;
        }
        *held = match append(offset, data).await.map_err(ReceiveError::Store)? {
            Placed::Held(after) => after,
            Placed::Elsewhere(actual) => {
                return Err(ReceiveError::OutOfOrder {
                    offset,
                    held: actual,
                });
            }
            Placed::Gone => {
                return Err(ReceiveError::Incomplete { held: *held, size });
            }
        };
    }
}
