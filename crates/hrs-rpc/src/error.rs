//! The one error boundary between the roles and their callers.
//!
//! Every role's error names its gRPC code through [`RpcError`]; [`status`] turns it into
//! the `Status` the caller reads (the error's own message, or for a fault of the server's
//! own a message saying what to do, while its cause goes to the log); and [`retry`] says,
//! for every client alike (the agent, a relaying aggregator, the connection point), whether
//! a call that failed with a code may succeed when it is made again unchanged.

use std::borrow::Cow;

pub use tonic::{Code, Status};

/// An error a role answers a call with.
pub trait RpcError: std::error::Error + 'static {
    /// The code the caller is answered with.
    fn code(&self) -> Code;

    /// What the caller is told. By default the error itself; a fault of the server's own
    /// (see [`is_fault`]) says instead what the caller may do, as its cause is the
    /// operator's to read, in the log.
    fn public_message(&self) -> Cow<'_, str> {
        if is_fault(self.code()) {
            Cow::Borrowed("the server failed; retry later")
        } else {
            Cow::Owned(self.to_string())
        }
    }
}

/// True for the codes of a server's own failure rather than a refusal of the call: their
/// cause is logged where they are answered.
pub fn is_fault(code: Code) -> bool {
    matches!(code, Code::Internal | Code::Unknown | Code::DataLoss)
}

/// The `Status` a role answers `error` with. A fault's cause is logged here, with its
/// chain; refusals are logged and counted once, by [`crate::refusals`].
pub fn status<E: RpcError>(error: &E) -> Status {
    let code = error.code();
    if is_fault(code) {
        tracing::error!(code = ?code, error = %hrs_core::error::chain(error), "request failed");
    }
    Status::new(code, error.public_message())
}

/// Whether a failed call may succeed when made again unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The link or the server failed, or was busy: try again later.
    Later,
    /// The server refused what was sent, or its sender: the same call meets the same
    /// answer until an operator acts, so it must not hold back what comes after it.
    Refused,
}

/// The one table of which codes a client retries.
pub fn retry(code: Code) -> Retry {
    match code {
        Code::InvalidArgument
        | Code::OutOfRange
        | Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::AlreadyExists
        | Code::NotFound => Retry::Refused,
        // Credentials that fail, or a peer of another version (or a proxy answering for
        // it), are the link failing, not the data: retried, so the link degrades and an
        // operator is alerted, while what was sent stays queued.
        Code::Unauthenticated
        | Code::Unimplemented
        | Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Internal
        | Code::Unavailable
        | Code::DataLoss => Retry::Later,
    }
}

/// True when `status` refuses the call: see [`Retry::Refused`].
pub fn refused(status: &Status) -> bool {
    retry(status.code()) == Retry::Refused
}

/// The runtime's own answers: what fails before a role's handler decides anything.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A message did not decode (truncated, invalid UTF-8 in a string, a bad varint):
    /// the caller's mistake, with prost's description naming the message and field.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The role serves its maximum of connections.
    #[error(
        "the {role} is serving its maximum of {max} connections (max_connections); retry later"
    )]
    TooManyConnections {
        /// The role.
        role: &'static str,
        /// Its `max_connections`.
        max: usize,
    },
    /// A request's handler panicked or was cancelled.
    #[error("the request handler stopped: {0}")]
    Handler(String),
}

impl RpcError for RuntimeError {
    fn code(&self) -> Code {
        match self {
            Self::Malformed(_) => Code::InvalidArgument,
            Self::TooManyConnections { .. } => Code::ResourceExhausted,
            Self::Handler(_) => Code::Internal,
        }
    }

    fn public_message(&self) -> Cow<'_, str> {
        match self {
            Self::Handler(_) => Cow::Borrowed("the request could not be handled"),
            _ => Cow::Owned(self.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_tells_the_caller_what_to_do_and_keeps_its_cause_out() {
        let answered = status(&RuntimeError::Handler("panicked at store.rs:12".into()));
        assert_eq!(answered.code(), Code::Internal);
        assert_eq!(answered.message(), "the request could not be handled");
        let refused = status(&RuntimeError::Malformed("Run.site: invalid string".into()));
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().contains("Run.site"), "{refused:?}");
    }

    #[test]
    fn every_refusal_code_is_final_and_every_failure_is_retried() {
        for code in [
            Code::InvalidArgument,
            Code::OutOfRange,
            Code::PermissionDenied,
            Code::FailedPrecondition,
            Code::AlreadyExists,
            Code::NotFound,
        ] {
            assert_eq!(retry(code), Retry::Refused, "{code:?}");
        }
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Aborted,
            Code::Internal,
            Code::Unknown,
            Code::Cancelled,
            Code::Unauthenticated,
            Code::Unimplemented,
            Code::DataLoss,
        ] {
            assert_eq!(retry(code), Retry::Later, "{code:?}");
        }
    }
}
