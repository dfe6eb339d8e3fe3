//! The HRS wire contract: message types and gRPC services generated from `proto/hrs/v1`,
//! and the one way every role serves them ([`serve::Serving`]).
//!
//! Generated code is fenced off from the workspace lints here and nowhere else.

pub mod chunks;
pub mod codec;
pub mod proxy;
pub mod refusals;
pub mod serve;
pub mod tls;

/// Version 1 of the contract, package `hrs.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod v1 {
    tonic::include_proto!("hrs.v1");
}
